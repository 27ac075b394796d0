"""`SavedModelPredictor`: an exported SavedModel, through its signatures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from transferkit.errors import RunError
from transferkit.inference import by_shape, in_batches
from transferkit.layout import LABELS_TXT, SAVED_MODEL_DIR
from transferkit.predictors.base import (TRUST_OUTPUTS, Predictor, as_uint8, check_classes,
                                        pack, read_labels, unpack)


class SavedModelPredictor(Predictor):
    """An exported SavedModel, through its `serving_default` signature (with its trust
    outputs `abstained`, `is_unknown` and `unknown_score` when it has them).

    Args:
        path: The SavedModel folder.
        class_names: Defaults to its `assets/labels.txt`, else `labels.txt` beside it.

    Raises:
        RunError: Not a SavedModel written by `transferkit.export`, or no class names.
    """

    kind = "savedmodel"

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None):
        path = Path(path)
        try:
            self.loaded = tf.saved_model.load(str(path))
            self._serve = self.loaded.signatures["serving_default"]
            self._serve_bytes = self.loaded.signatures.get("serve_bytes")
        except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
            raise RunError(f"cannot load the SavedModel {path}: {e}; point to the "
                           f"export's {SAVED_MODEL_DIR}/ folder") from e
        spec = self._serve.structured_input_signature[1].get("images")
        outputs = self._serve.structured_outputs
        if spec is None or spec.dtype != tf.uint8 or "probabilities" not in outputs:
            raise RunError(f"{path} is not a SavedModel exported by transferkit (its "
                           "serving_default signature does not take uint8 `images`)")
        if class_names is None:
            inside = path / "assets" / LABELS_TXT
            class_names = read_labels(inside if inside.is_file() else path.parent /
                                      LABELS_TXT)
        check_classes(class_names, outputs["probabilities"].shape[-1], path)
        self._trusted = all(name in outputs for name in TRUST_OUTPUTS)
        super().__init__(class_names, path)

    @property
    def has_trust(self) -> bool:
        return self._trusted

    def predict_encoded(self, data: Sequence[bytes], batch_size: int = 32) -> np.ndarray:
        """Probabilities of encoded files, decoded inside the graph (`serve_bytes`).

        TensorFlow decodes here, not Pillow: the EXIF orientation is not applied and
        transparency is dropped (see `transferkit.export.decode_image_bytes`).

        Args:
            data: The files' bytes (JPEG, PNG, GIF, BMP or WebP).
            batch_size: Files per call.

        Returns:
            float32 `[N, C]` probabilities.

        Raises:
            tf.errors.InvalidArgumentError: A file is not an image TensorFlow decodes.
        """
        return self.assess_encoded(data, batch_size)[0]

    def assess_encoded(self, data: Sequence[bytes], batch_size: int = 32
                       ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """`predict_encoded` with the trust fields (as `assess`; None without trust)."""
        if self._serve_bytes is None:
            raise RunError(f"{self.source} has no serve_bytes signature; re-export it")
        n = len(self.class_names)

        def call(part: list[bytes]) -> np.ndarray:
            out = self._serve_bytes(image_bytes=tf.constant(list(part), tf.string))
            return pack(out) if self._trusted else out["probabilities"].numpy()

        result = in_batches(call, list(data), batch_size, n + 3 if self._trusted else n)
        return unpack(result, n) if self._trusted else (result, None)

    def _assess_pixels(self, pixels: list[np.ndarray], batch_size: int
                       ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        # The signature takes uint8: float pixels (0-255) are rounded to it.
        n = len(self.class_names)
        if not self._trusted:
            return by_shape([as_uint8(p) for p in pixels], lambda group: self._serve(
                images=tf.constant(group))["probabilities"].numpy(), batch_size, n), None
        return unpack(by_shape([as_uint8(p) for p in pixels], lambda group: pack(
            self._serve(images=tf.constant(group))), batch_size, n + 3), n)
