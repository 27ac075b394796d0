"""`ONNXPredictor`: an exported `.onnx` model, run by ONNX Runtime (imported lazily)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit.errors import RunError
from transferkit.inference import by_shape
from transferkit.layout import LABELS_TXT
from transferkit.predictors.base import (TRUST_OUTPUTS, Predictor, as_uint8, check_classes,
                                        pack, read_labels, unpack)


class ONNXPredictor(Predictor):
    """An exported ONNX model: uint8 `images` `[N, H, W, 3]` of any size, resized inside;
    its trust outputs (`abstained`, `is_unknown`, `unknown_score`) when it has them.

    Images of the same size go in one call; each size is its own call.

    Args:
        path: The `.onnx` file.
        class_names: Defaults to the model's `class_names` metadata, else `labels.txt`
            beside it.
        num_threads: ONNX Runtime's intra-op threads (None: its default).

    Raises:
        RunError: Not an ONNX model exported by transferkit, or no class names.
    """

    kind = "onnx"

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None,
                 num_threads: int | None = None):
        import onnxruntime

        path = Path(path)
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  ONNX Runtime raises its own types.
            raise RunError(f"cannot load the ONNX model {path}: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        if ([(i.name, i.type) for i in inputs] != [("images", "tensor(uint8)")]
                or "probabilities" not in outputs):
            raise RunError(f"{path} is not an ONNX model exported by transferkit "
                           "(expected one uint8 `images` input and `probabilities`)")
        if class_names is None:
            metadata = self.session.get_modelmeta().custom_metadata_map
            class_names = (json.loads(metadata["class_names"]) if "class_names" in
                           metadata else read_labels(path.parent / LABELS_TXT))
        n_outputs = outputs["probabilities"].shape[-1]
        check_classes(class_names, n_outputs if isinstance(n_outputs, int) else None, path)
        self._outputs = ["probabilities"] + [name for name in TRUST_OUTPUTS
                                             if name in outputs]
        super().__init__(class_names, path)

    @property
    def has_trust(self) -> bool:
        return len(self._outputs) == 1 + len(TRUST_OUTPUTS)

    def _assess_pixels(self, pixels: list[np.ndarray], batch_size: int
                       ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        n = len(self.class_names)

        def run(group: list[np.ndarray]) -> np.ndarray:
            values = self.session.run(self._outputs, {"images": np.asarray(group)})
            return pack(dict(zip(self._outputs, values))) if self.has_trust else values[0]

        result = by_shape([as_uint8(p) for p in pixels], run, batch_size,
                          n + 3 if self.has_trust else n)
        return unpack(result, n) if self.has_trust else (result, None)
