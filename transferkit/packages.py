"""The installed TensorFlow: exactly one of its packages.

`tensorflow`, `tensorflow-cpu` and the nightly builds all install the same `tensorflow`
module: with two of them the later install silently overwrites files of the earlier one,
and a GPU user can end up running the CPU-only build. transferkit depends on
`tensorflow` (CUDA libraries via `pip install 'transferkit[gpu]'`), so a machine that
already had `tensorflow-cpu` gets both; this says so once, with the fix.
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel",
                            "tf-nightly", "tf-nightly-cpu")


def installed_tensorflows() -> list[str]:
    """The TensorFlow distributions pip has installed here, as `name==version`."""
    found = []
    for name in TENSORFLOW_DISTRIBUTIONS:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def tensorflow_conflict() -> str | None:
    """A one-line warning when more than one TensorFlow package is installed, else None."""
    found = installed_tensorflows()
    if len(found) < 2:
        return None
    names = [f.split("==")[0] for f in found]
    keep = "tensorflow" if "tensorflow" in names else names[0]
    others = " ".join(n for n in names if n != keep)
    return (f"{' and '.join(found)} are installed; they share one `tensorflow` module and "
            f"overwrite each other's files. Keep one: pip uninstall -y {others} && pip "
            f"install --force-reinstall --no-deps {found[names.index(keep)]}")


# What a run's results depend on, in the order `transferkit --version` prints them.
REPORTED = ("transferkit", "keras", "numpy", "scikit-learn", "scipy", "pillow", "gradio",
            "onnxruntime", "tf2onnx")


def package_versions() -> dict[str, str]:
    """Python's and the packages' versions that a run depends on (`name: version`):
    recorded in `config.json` when training starts, printed by `transferkit --version`,
    listed in the model card. A package that is not installed is left out."""
    versions = {"python": platform.python_version()}
    tensorflows = installed_tensorflows()
    if tensorflows:  # whichever distribution provides the `tensorflow` module
        name, version = tensorflows[0].split("==")
        versions[name] = version
    for name in REPORTED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class VersionAction(argparse.Action):
    """`--version`: every version of `package_versions`, one `name version` a line
    (collected only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the versions of transferkit, Python and its packages"):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write("".join(f"{name} {version}\n"
                                 for name, version in package_versions().items()))
        parser.exit()
