"""Parity: do the exported models, reloaded as users load them, give the run's answers?

Float exports (SavedModel, TFLite, ONNX in ONNX Runtime) must reproduce the Keras
model's probabilities to `MAX_ABS_DIFF`; weight-quantized TFLite models must agree with
it on the top class at least `MIN_TOP1_AGREEMENT` of the time (the full-integer model has
its own check, `transferkit.export.int8`). The exported models are called through
`transferkit.predictors`, as users call them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from transferkit import layout
from transferkit.errors import RunError
from transferkit.export.sample import Sample, parity_sample
from transferkit.export.savedmodel import decode_image_bytes
from transferkit.inference import in_batches
from transferkit.predictors import ONNXPredictor, SavedModelPredictor, TFLitePredictor
from transferkit.run import Run

MAX_ABS_DIFF = 1e-4
MIN_TOP1_AGREEMENT = 0.99


def check_parity(run: Run, folder: Path, formats: tuple[str, ...], quantize: str | None,
                 n_parity: int, say: Callable[..., None]) -> dict[str, Any]:
    """Compares the exported models in `folder` with the run's Keras model.

    Args:
        run: The exported run.
        folder: The (temporary) export folder, holding the exported models.
        formats: The formats exported; `"savedmodel"`, `"tflite"` and `"onnx"` are
            checked here.
        quantize: The TFLite quantization, or None.
        n_parity: The most images to compare on (at least 1).
        say: Prints progress.

    Returns:
        The parity part of the report: `checked`, `n_images`, `sample`, `images`, and
        the comparison of each exported model.

    Raises:
        RunError: A float export differs by more than `MAX_ABS_DIFF`, or a quantized
            TFLite model agrees on the top class less than `MIN_TOP1_AGREEMENT`.
    """
    sample = parity_sample(run, n_parity)
    say(f"Checking parity on {sample.source}")
    batch = run.preprocess(sample.pixels)  # What the Keras model sees: Pillow + resize.
    reference = in_batches(run.model.predict_on_batch, batch)
    report: dict[str, Any] = {"checked": True, "n_images": len(sample.pixels),
                              "sample": sample.kind, "images": sample.source}
    if "savedmodel" in formats:
        report["savedmodel"] = _savedmodel_parity(run, folder / layout.SAVED_MODEL_DIR,
                                                  sample, reference)
    if "tflite" in formats:
        tflite = TFLitePredictor(folder / layout.TFLITE_FILE)
        report["tflite"] = {**compare(reference, in_batches(tflite.invoke, batch, 1)),
                            "quantize": quantize}
    if "onnx" in formats:
        onnx = ONNXPredictor(folder / layout.ONNX_FILE)
        report["onnx"] = {**compare(reference, onnx.predict(sample.pixels)),
                          "runtime": "onnxruntime",
                          "fed": "Pillow-decoded uint8 pixels at their original sizes"}
    for line in summary(report):
        say(f"  {line}")
    failures = problems(report, quantize)
    if failures:
        hint = ("export without quantization (drop --quantize) or try --quantize "
                "float16" if quantize and all(p.startswith("TFLite (") for p in failures)
                else "this is a bug: please report it with these numbers")
        raise RunError(f"parity check failed on {sample.source}: {'; '.join(failures)}. "
                       f"Nothing was exported; {hint}")
    return report


def compare(reference: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Max and mean absolute difference and top-1 agreement of two `[N, C]` arrays."""
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(probabilities, np.float64))
    agree = np.argmax(reference, axis=1) == np.argmax(probabilities, axis=1)
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "top1_agreement": float(agree.mean()) if agree.size else 1.0}


def problems(report: dict[str, Any], quantize: str | None) -> list[str]:
    """What fails the tolerances, one line each (NaN fails every comparison)."""
    failures = []
    for name, result in (report.get("savedmodel") or {}).items():
        if not result["max_abs_diff"] <= MAX_ABS_DIFF:
            failures.append(f"SavedModel {name}: max abs diff {result['max_abs_diff']:.3g} "
                            f"> {MAX_ABS_DIFF:g}")
    result = report.get("tflite")
    if result and quantize is None and not result["max_abs_diff"] <= MAX_ABS_DIFF:
        failures.append(f"TFLite: max abs diff {result['max_abs_diff']:.3g} > "
                        f"{MAX_ABS_DIFF:g}")
    if result and quantize is not None and \
            not result["top1_agreement"] >= MIN_TOP1_AGREEMENT:
        failures.append(f"TFLite ({quantize}): top-1 agreement "
                        f"{result['top1_agreement']:.1%} < {MIN_TOP1_AGREEMENT:.0%}")
    result = report.get("onnx")
    if result and not result["max_abs_diff"] <= MAX_ABS_DIFF:
        failures.append(f"ONNX (in ONNX Runtime): max abs diff "
                        f"{result['max_abs_diff']:.3g} > {MAX_ABS_DIFF:g}")
    return failures


def summary(report: dict[str, Any]) -> list[str]:
    """One line per compared model: max abs diff and top-1 agreement."""
    rows = [(f"SavedModel {name}", result)
            for name, result in (report.get("savedmodel") or {}).items()]
    if "tflite" in report:
        rows.append((f"TFLite ({report['tflite']['quantize'] or 'float32'})",
                     report["tflite"]))
    if "onnx" in report:
        rows.append(("ONNX (ONNX Runtime)", report["onnx"]))
    return [f"{name}: max abs diff {result['max_abs_diff']:.2g}, top-1 agreement "
            f"{result['top1_agreement']:.1%}" for name, result in rows]


def _savedmodel_parity(run: Run, path: Path, sample: Sample,
                       reference: np.ndarray) -> dict[str, Any]:
    """Both signatures of the SavedModel against the Keras model's `reference`."""
    saved_model = SavedModelPredictor(path)
    if saved_model.class_names != run.class_names:
        raise RunError(f"the SavedModel's class names {saved_model.class_names} differ "
                       f"from the run's {run.class_names}; this is a bug, please report "
                       "it")
    by_images = compare(reference, saved_model.predict(sample.pixels))
    by_images["fed"] = "Pillow-decoded uint8 pixels at their original sizes"
    return {"serving_default": by_images,
            "serve_bytes": _bytes_parity(run, saved_model, sample, reference)}


def _bytes_parity(run: Run, saved_model: SavedModelPredictor, sample: Sample,
                  reference: np.ndarray) -> dict[str, Any]:
    """`serve_bytes` (TensorFlow decodes) against the Keras model on the same pixels.

    Where TensorFlow's pixels differ from Pillow's (EXIF rotation, transparency...), the
    Keras model is fed TensorFlow's: parity is about the graph, not the decoders. Files
    TensorFlow cannot decode at all (TIFF, CMYK JPEG) are left out and counted.
    """
    decodable, tf_pixels, differ = [], [], []
    for i, data in enumerate(sample.data):
        try:
            pixels = decode_image_bytes(tf.constant(data)).numpy()
        except tf.errors.InvalidArgumentError:
            continue
        if pixels.shape != sample.pixels[i].shape or \
                not np.array_equal(pixels, sample.pixels[i]):
            differ.append(len(decodable))
        decodable.append(i)
        tf_pixels.append(pixels)
    expected = reference[decodable]
    if differ:
        expected[differ] = in_batches(run.model.predict_on_batch,
                                      run.preprocess([tf_pixels[j] for j in differ]))
    encoded = saved_model.predict_encoded([sample.data[i] for i in decodable])
    result = compare(expected, encoded)
    if differ:  # For information: how much the decoders' differences matter.
        result["max_abs_diff_vs_pillow_decoding"] = compare(
            reference[decodable], encoded)["max_abs_diff"]
    result.update(
        fed="the encoded files' bytes",
        n_images=len(decodable),
        not_decodable_by_tensorflow=len(sample.data) - len(decodable),
        decoder_mismatches=len(differ),
        reference="the Keras model on the same pixels (TensorFlow decoded every image "
                  "exactly as Pillow did)" if not differ else
                  f"the Keras model on TensorFlow-decoded pixels for the {len(differ)} "
                  "images TensorFlow decodes differently from Pillow, on Pillow's pixels "
                  "for the others")
    return result
