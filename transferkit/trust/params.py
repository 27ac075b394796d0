"""What a run knows about its own confidence: one dataclass, `trust.json` + `trust.npz`.

`trust.json` holds the scalars (temperature, thresholds and how they were chosen);
`trust.npz` beside it holds the unknown score's fitted arrays and the head's weights
before calibration (so that calibrating again starts from the uncalibrated logits).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from transferkit import layout
from transferkit.errors import RunError
from transferkit.fileio import atomic_path, read_json, write_json

FORMAT_VERSION = 1


@dataclasses.dataclass
class TrustParams:
    """Calibration, the "not sure" threshold and the "not one of my classes" score.

    Attributes:
        temperature: T folded into the head (the model outputs softmax(logits / T)).
        abstain_threshold: The model answers when its max probability is >= this;
            below it, it abstains ("not sure").
        abstain_rule: `"target_precision"` or `"target_coverage"`.
        abstain_target: The target value of that rule.
        abstain_met: Whether the validation split met a precision target.
        unknown_kind: The out-of-distribution score (`transferkit.trust.unknown.KINDS`).
        unknown_threshold: Inputs whose score is above this are "unknown".
        false_rejection: The share of validation images of known classes flagged
            unknown at that threshold (its target).
        chosen_on: The split the thresholds and T were fitted on.
        unknown_constants: The score's arrays (`center`, `projection`, `means`), in
            `trust.npz`.
        raw_head: The head's `kernel` and `bias` before calibration, in `trust.npz`.
    """

    temperature: float
    abstain_threshold: float
    abstain_rule: str
    abstain_target: float
    abstain_met: bool
    unknown_kind: str
    unknown_threshold: float
    false_rejection: float
    chosen_on: str = "val"
    unknown_constants: dict[str, np.ndarray] = dataclasses.field(default_factory=dict,
                                                                 repr=False)
    raw_head: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The scalars, as written to `trust.json`."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("unknown_constants", "raw_head")}
        return {"version": FORMAT_VERSION, **values, "arrays": layout.TRUST_ARRAYS}

    def save_thresholds(self, folder: Path) -> None:
        """Writes `trust.json` alone (`"arrays": null`): what an export folder carries
        beside its `.tflite` models, whose predictors need only the thresholds."""
        write_json(Path(folder) / layout.TRUST_FILE, {**self.to_dict(), "arrays": None})

    def save(self, run_dir: Path) -> None:
        """Writes `trust.npz`, then `trust.json` (each atomically)."""
        arrays = {f"unknown_{k}": v for k, v in self.unknown_constants.items()}
        arrays.update({f"head_{k}": v for k, v in self.raw_head.items()})
        with atomic_path(Path(run_dir) / layout.TRUST_ARRAYS, suffix=".tmp.npz") as tmp:
            np.savez(tmp, **arrays)
        write_json(Path(run_dir) / layout.TRUST_FILE, self.to_dict())


def load_trust(folder: Path) -> TrustParams | None:
    """Reads `trust.json` and `trust.npz` from a run directory (or an export folder).

    An export folder's `trust.json` says `"arrays": null`: it holds the thresholds
    only (`TrustParams.save_thresholds`), and no `trust.npz` is read.

    Returns:
        The parameters, or None when the folder has no `trust.json` (a run made before
        calibration, or trained with `--no-calibrate`).

    Raises:
        RunError: `trust.json` exists but it or `trust.npz` cannot be read.
    """
    path = Path(folder) / layout.TRUST_FILE
    if not path.is_file():
        return None
    try:
        values = read_json(path)
        names = {f.name for f in dataclasses.fields(TrustParams)}
        params = TrustParams(**{k: v for k, v in values.items() if k in names})
        if values.get("arrays", layout.TRUST_ARRAYS) is None:
            return params
        with np.load(Path(folder) / layout.TRUST_ARRAYS, allow_pickle=False) as arrays:
            for name in arrays.files:
                group, _, key = name.partition("_")
                target = params.unknown_constants if group == "unknown" else params.raw_head
                target[key] = arrays[name]
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise RunError(f"cannot read {path} or {layout.TRUST_ARRAYS} beside it ({e}); run "
                       f"`transferkit calibrate {folder}` to write them again") from e
    return params
