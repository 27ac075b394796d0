"""Parity: do the exported models, reloaded as users load them, give the run's answers?

Float exports (SavedModel, TFLite, ONNX in ONNX Runtime) must reproduce the Keras
model's probabilities to `MAX_ABS_DIFF`; weight-quantized TFLite models must agree with
it on the top class at least `MIN_TOP1_AGREEMENT` of the time (the full-integer model has
its own check, `transferkit.export.int8`). The exported models are called through
`transferkit.predictors`, as users call them.

For a run with trust, each export's `abstained` and `is_unknown` flags are compared
with the Keras run's (`Run.trust_graph`): a float export may disagree only on an image
whose confidence is within `FLAG_MARGIN` of the abstain threshold, or whose unknown
score is within `SCORE_MARGIN` (relative) of the unknown threshold; the counts are
reported (quantized TFLite models: reported, not enforced).
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
FLAG_MARGIN = MAX_ABS_DIFF   # probabilities may differ this much: so may confidences
SCORE_MARGIN = 1e-4          # relative: TFLite's Mahalanobis score differs by ~1e-6


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
    graph = run.trust_graph()
    expected = None if graph is None else _graph_outputs(graph, batch)
    reference = in_batches(run.model.predict_on_batch, batch) if expected is None \
        else expected["probabilities"]
    report: dict[str, Any] = {"checked": True, "n_images": len(sample.pixels),
                              "sample": sample.kind, "images": sample.source}
    if "savedmodel" in formats:
        report["savedmodel"] = _savedmodel_parity(run, folder / layout.SAVED_MODEL_DIR,
                                                  sample, reference, expected)
    if "tflite" in formats:
        tflite = TFLitePredictor(folder / layout.TFLITE_FILE)
        probabilities, fields = tflite.assess_resized(batch)
        report["tflite"] = {**compare(reference, probabilities), "quantize": quantize,
                            **compare_flags(expected, fields)}
    if "onnx" in formats:
        onnx = ONNXPredictor(folder / layout.ONNX_FILE)
        probabilities, fields = onnx.assess(sample.pixels)
        report["onnx"] = {**compare(reference, probabilities), "runtime": "onnxruntime",
                          "fed": "Pillow-decoded uint8 pixels at their original sizes",
                          **compare_flags(expected, fields)}
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


def compare_flags(expected: dict[str, np.ndarray] | None,
                  fields: list[dict[str, Any]] | None) -> dict[str, Any]:
    """How an export's trust flags agree with the Keras run's (`{}` without trust).

    Args:
        expected: `TrustGraph` outputs of the Keras model, plus `confidence` (max
            probability) and the thresholds, or None.
        fields: The export's per-image fields (`Predictor.assess`).

    Returns:
        Per flag (`abstained`, `unknown`): `<flag>_agreement`, `<flag>_disagreements`
        and `<flag>_unexplained` (disagreements not within the margin of the
        threshold); `unknown_score_max_abs_diff` and `..._max_rel_diff`; or
        `trust_missing` when the export claims no trust fields.
    """
    if expected is None:
        return {}
    if fields is None:
        return {"trust_missing": True}
    result: dict[str, Any] = {}
    abstained = np.array([f["abstained"] for f in fields])
    near = np.abs(expected["confidence"] - expected["abstain_threshold"]) <= FLAG_MARGIN
    result.update(_agreement("abstained", expected["abstained"], abstained, near))
    if fields and "unknown_score" in fields[0]:
        score = np.array([f["unknown_score"] for f in fields], np.float64)
        ref = expected["unknown_score"].astype(np.float64)
        threshold = expected["unknown_threshold"]
        near = np.abs(ref - threshold) <= SCORE_MARGIN * max(1.0, abs(threshold))
        result.update(_agreement("unknown", expected["is_unknown"],
                                 np.array([f["unknown"] for f in fields]), near))
        diff = np.abs(score - ref)
        result.update(unknown_score_max_abs_diff=float(diff.max()) if diff.size else 0.0,
                      unknown_score_max_rel_diff=float(
                          (diff / np.maximum(np.abs(ref), 1.0)).max()) if diff.size else 0.0)
    return result


def problems(report: dict[str, Any], quantize: str | None) -> list[str]:
    """What fails the tolerances, one line each (NaN fails every comparison)."""
    failures = []
    for name, result in (report.get("savedmodel") or {}).items():
        if not result["max_abs_diff"] <= MAX_ABS_DIFF:
            failures.append(f"SavedModel {name}: max abs diff {result['max_abs_diff']:.3g} "
                            f"> {MAX_ABS_DIFF:g}")
        failures += _flag_problems(f"SavedModel {name}", result)
    result = report.get("tflite")
    if result and quantize is None and not result["max_abs_diff"] <= MAX_ABS_DIFF:
        failures.append(f"TFLite: max abs diff {result['max_abs_diff']:.3g} > "
                        f"{MAX_ABS_DIFF:g}")
    if result and quantize is None:
        failures += _flag_problems("TFLite", result)
    if result and quantize is not None and \
            not result["top1_agreement"] >= MIN_TOP1_AGREEMENT:
        failures.append(f"TFLite ({quantize}): top-1 agreement "
                        f"{result['top1_agreement']:.1%} < {MIN_TOP1_AGREEMENT:.0%}")
    result = report.get("onnx")
    if result and not result["max_abs_diff"] <= MAX_ABS_DIFF:
        failures.append(f"ONNX (in ONNX Runtime): max abs diff "
                        f"{result['max_abs_diff']:.3g} > {MAX_ABS_DIFF:g}")
    if result:
        failures += _flag_problems("ONNX", result)
    return failures


def _flag_problems(name: str, result: dict[str, Any]) -> list[str]:
    """Trust flags missing from an export, or disagreeing away from the threshold."""
    if result.get("trust_missing"):
        return [f"{name}: the run has trust but the export gives no abstained flag"]
    return [f"{name}: {result[f'{flag}_unexplained']} images where `{flag}` differs from "
            "the Keras run away from the threshold" for flag in ("abstained", "unknown")
            if result.get(f"{flag}_unexplained", 0)]


def _agreement(flag: str, expected: np.ndarray, got: np.ndarray, near: np.ndarray
               ) -> dict[str, Any]:
    differ = np.asarray(expected, bool) != np.asarray(got, bool)
    return {f"{flag}_agreement": float(1 - differ.mean()) if differ.size else 1.0,
            f"{flag}_disagreements": int(differ.sum()),
            f"{flag}_unexplained": int((differ & ~near).sum())}


def _graph_outputs(graph, batch: np.ndarray) -> dict[str, Any]:
    """The Keras run's trust outputs on a preprocessed batch, with what the flags need."""
    parts = [graph(batch[i:i + 32]) for i in range(0, len(batch), 32)]
    out: dict[str, Any] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["confidence"] = out["probabilities"].max(axis=1).astype(np.float64)
    out.update(abstain_threshold=float(np.float32(graph.params.abstain_threshold)),
               unknown_threshold=float(np.float32(graph.params.unknown_threshold)))
    return out


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
            f"{result['top1_agreement']:.1%}" + "".join(
                f", {flag} agreement {result[f'{flag}_agreement']:.1%}"
                for flag in ("abstained", "unknown") if f"{flag}_agreement" in result)
            for name, result in rows]


def _savedmodel_parity(run: Run, path: Path, sample: Sample, reference: np.ndarray,
                       expected: dict[str, Any] | None) -> dict[str, Any]:
    """Both signatures of the SavedModel against the Keras model's `reference`."""
    saved_model = SavedModelPredictor(path)
    if saved_model.class_names != run.class_names:
        raise RunError(f"the SavedModel's class names {saved_model.class_names} differ "
                       f"from the run's {run.class_names}; this is a bug, please report "
                       "it")
    probabilities, fields = saved_model.assess(sample.pixels)
    by_images = {**compare(reference, probabilities), **compare_flags(expected, fields),
                 "fed": "Pillow-decoded uint8 pixels at their original sizes"}
    return {"serving_default": by_images,
            "serve_bytes": _bytes_parity(run, saved_model, sample, reference, expected)}


def _bytes_parity(run: Run, saved_model: SavedModelPredictor, sample: Sample,
                  reference: np.ndarray, expected: dict[str, Any] | None
                  ) -> dict[str, Any]:
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
    wanted = reference[decodable]
    flags = None if expected is None else {
        k: v[decodable] if isinstance(v, np.ndarray) else v for k, v in expected.items()}
    if differ:
        redone = run.preprocess([tf_pixels[j] for j in differ])
        if flags is None:
            wanted[differ] = in_batches(run.model.predict_on_batch, redone)
        else:  # the Keras run's flags on TensorFlow's pixels too
            again = _graph_outputs(run.trust_graph(), redone)
            for k, v in again.items():
                if isinstance(v, np.ndarray):
                    flags[k][differ] = v
            wanted[differ] = again["probabilities"]
    encoded, fields = saved_model.assess_encoded([sample.data[i] for i in decodable])
    result = {**compare(wanted, encoded), **compare_flags(flags, fields)}
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
