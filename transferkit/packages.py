"""The installed TensorFlow: exactly one of its packages.

`tensorflow`, `tensorflow-cpu` and the nightly builds all install the same `tensorflow`
module: with two of them the later install silently overwrites files of the earlier one,
and a GPU user can end up running the CPU-only build. transferkit depends on
`tensorflow` (CUDA libraries via `pip install 'transferkit[gpu]'`), so a machine that
already had `tensorflow-cpu` gets both; this says so once, with the fix.
"""

from __future__ import annotations

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
