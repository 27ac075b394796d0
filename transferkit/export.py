"""Export a finished run for deployment: SavedModel, TFLite and Keras files that agree.

    export/
      saved_model/       TensorFlow SavedModel (needs nothing but TensorFlow to load)
        assets/labels.txt, assets/config.json
      model.tflite       TFLite model ("tflite" format)
      model.keras        a copy of the run's model ("keras" format)
      labels.txt         class names, one a line, in output order
      config.json        the run's training options
      parity.json        how closely each exported model matches the Keras model

SavedModel signatures (the names are part of the contract; they never change):

- `serving_default`: `images`, uint8 `[N, H, W, 3]` RGB of any size. Resized inside
  with `transferkit.data.pipeline.resize`, the function training used.
- `serve_bytes`: `image_bytes`, string `[N]`: encoded JPEG, PNG, GIF, BMP or WebP files,
  decoded and resized one by one inside the graph (`decode_image_bytes`).

Both return `probabilities` float32 `[N, C]`, `class_index` int64 `[N]` and
`class_name` string `[N]`.

The TFLite model takes float32 `[1, S, S, 3]` raw RGB in [0, 255], already resized to
the training size S with `resize` (`transferkit.predictor` does it), and returns the
probabilities `[1, C]`. Float32 (not uint8) input, because antialiased resizing gives
fractional pixel values: rounding them to uint8 would change the answers.

Every export is checked before it is kept: the exported models' probabilities on test
images must match the Keras model's (`parity.json`). The export is written to a hidden
sibling folder and renamed into place only once complete and checked, so a failed or
interrupted export never leaves a half-written folder or harms an earlier export.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from transferkit.data.images import load_image
from transferkit.data.pipeline import resize
from transferkit.errors import ConfigError, ImageError, RunError
from transferkit.fileio import replace_dir
from transferkit.predictor import (CONFIG_FILE, KERAS_FILE, LABELS_FILE, PARITY_FILE,
                                   SAVED_MODEL_DIR, TFLITE_FILE, SavedModelPredictor,
                                   TFLitePredictor)
from transferkit.run import MODEL_FILE, Run, load_run

FORMATS = ("savedmodel", "tflite", "keras")
QUANTIZATIONS = (None, "dynamic", "float16")

# Float exports must reproduce the Keras model's probabilities to this absolute
# difference; quantized TFLite models must agree on the top class this often.
MAX_ABS_DIFF = 1e-4
MIN_TOP1_AGREEMENT = 0.99

_SAMPLE_SEED = 0
_LATENCY_CALLS = 20  # Latencies in parity.json are indicative: see benchmarks/.
_BATCH = 32


def export_run(run_dir: str | Path, out: str | Path | None = None,
               formats: Sequence[str] = ("savedmodel",), quantize: str | None = None,
               overwrite: bool = False, n_parity: int = 200,
               verbose: bool = True) -> dict[str, Any]:
    """Exports a finished run and checks that the exported models give its answers.

    Args:
        run_dir: A finished run directory.
        out: The export folder (default `<run_dir>/export`).
        formats: Any of `"savedmodel"`, `"tflite"`, `"keras"`.
        quantize: TFLite only: None (float32), `"dynamic"` (int8 weights) or
            `"float16"` (float16 weights).
        overwrite: Replace an existing export folder.
        n_parity: Images of the run's test split on which each exported model is compared
            with the Keras model (0 skips the check).
        verbose: Print progress.

    Returns:
        The parity report, also written to `<out>/parity.json`.

    Raises:
        ConfigError: Unknown format or quantization, or `quantize` without `"tflite"`.
        RunError: The run cannot be loaded, `out` exists (without `overwrite`), writing
            fails, or an exported model disagrees with the Keras model (the message
            gives the numbers); nothing is written then.
    """
    formats = _check_options(formats, quantize, n_parity)
    say = print if verbose else (lambda *args, **kwargs: None)
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    _check_destination(out, overwrite, run_dir)
    run = load_run(run_dir)
    _check_class_names(run.class_names)

    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise RunError(f"cannot create the export folder {out}: {e.strerror or e}; "
                       "choose another --out") from e
    try:
        report = _export_into(run, tmp, formats, quantize, n_parity, say)
        report["path"] = str(out)
        _write_json(tmp / PARITY_FILE, report)
        _check_destination(out, overwrite, run_dir)  # It may have appeared meanwhile.
        replace_dir(tmp, out)
    except OSError as e:
        raise RunError(f"cannot write the export to {out}: {e.strerror or e}; free some "
                       "space or choose another --out (nothing was written)") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # Gone already after a successful rename.
    say(f"Export written to {out}")
    return report


def decode_image_bytes(data: tf.Tensor) -> tf.Tensor:
    """Decodes one encoded image inside a TensorFlow graph, as training decodes it.

    JPEGs go through `tf.io.decode_jpeg` with `dct_method="INTEGER_ACCURATE"`: the
    default (`tf.io.decode_image`) uses libjpeg's fast, less accurate inverse DCT and
    differs from Pillow (training) by up to 4 levels per pixel on real photos; the
    accurate one gives Pillow's pixels exactly. PNG, GIF (first frame), BMP and WebP
    go through `tf.io.decode_image`. Unlike training (Pillow), the EXIF orientation is
    not applied and transparency is dropped rather than composited on white.

    Args:
        data: A scalar string tensor: the file's bytes.

    Returns:
        uint8 `[H, W, 3]` RGB.

    Raises:
        tf.errors.InvalidArgumentError: Not a JPEG, PNG, GIF, BMP or WebP file, or a
            corrupt one (when the graph runs).
    """
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    return tf.ensure_shape(image, (None, None, 3))


# ----------------------------------------------------------------------------------------
# Writing the formats.


def _export_into(run: Run, folder: Path, formats: tuple[str, ...], quantize: str | None,
                 n_parity: int, say: Callable[..., None]) -> dict[str, Any]:
    """Writes every requested format into `folder`, checks parity, returns the report."""
    # Plain writes: the whole folder is renamed into place once complete.
    (folder / LABELS_FILE).write_text("".join(f"{name}\n" for name in run.class_names),
                                      encoding="utf-8")
    _write_json(folder / CONFIG_FILE, run.config.to_dict())
    if "keras" in formats:
        shutil.copyfile(run.path / MODEL_FILE, folder / KERAS_FILE)
    if "savedmodel" in formats:
        say("Writing the SavedModel")
        write_saved_model(run.model, run.image_size, folder / LABELS_FILE,
                          folder / CONFIG_FILE, folder / SAVED_MODEL_DIR)
    if "tflite" in formats:
        say("Converting to TFLite" + (f" ({quantize} quantization)" if quantize else ""))
        (folder / TFLITE_FILE).write_bytes(
            convert_to_tflite(run.model, run.image_size, quantize))

    report: dict[str, Any] = {
        "run": str(run.path),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "formats": list(formats),
        "quantize": quantize,
        "image_size": run.image_size,
        "class_names": list(run.class_names),
        "tolerance": {"max_abs_diff": MAX_ABS_DIFF, "min_top1_agreement": MIN_TOP1_AGREEMENT},
        "signatures": _signature_doc(formats, len(run.class_names), run.image_size),
    }
    if "tflite" in formats:
        report["tflite_bytes"] = (folder / TFLITE_FILE).stat().st_size
    if {"savedmodel", "tflite"} & set(formats) and n_parity > 0:
        report.update(_check_parity(run, folder, formats, quantize, n_parity, say))
    else:
        report.update(checked=False, why="n_parity=0" if n_parity == 0 else
                      "model.keras is a copy of the run's model")
    return report


def write_saved_model(model: keras.Model, image_size: int, labels_file: Path,
                      config_file: Path, directory: Path) -> None:
    """Writes the SavedModel with its two signatures (see the module docstring).

    The class names and the training options travel inside as SavedModel assets
    (`assets/labels.txt`, `assets/config.json`): each is the source of a tracked lookup
    table, which is how `keras.export.ExportArchive` carries files. The labels table
    also maps `class_index` to `class_name` inside the graph.

    Args:
        model: The classifier (float32 `[N, S, S, 3]` raw RGB → probabilities).
        image_size: S, the side images are resized to.
        labels_file: Class names, one a line, in output order.
        config_file: The run's `config.json`.
        directory: The SavedModel folder to create.
    """
    labels = _line_table(labels_file)
    config = _line_table(config_file)

    def outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(images, training=False)
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {"probabilities": probabilities, "class_index": class_index,
                "class_name": labels.lookup(class_index)}

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Without these checks an empty batch fails deep inside the model, unreadably.
        tf.debugging.assert_positive(
            tf.shape(images)[:3], message="serving_default: `images` must hold at least "
            "one image, of at least 1x1 pixels")
        return outputs(resize(images, image_size))

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_positive(
            tf.size(image_bytes), message="serve_bytes: `image_bytes` must hold at least "
            "one encoded image")
        images = tf.map_fn(
            lambda data: resize(decode_image_bytes(data), image_size), image_bytes,
            fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.float32))
        return outputs(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(labels)
    archive.track(config)
    archive.add_endpoint("serving_default", serve_images, input_signature=[
        tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")])
    archive.add_endpoint("serve_bytes", serve_bytes, input_signature=[
        tf.TensorSpec((None,), tf.string, name="image_bytes")])
    archive.write_out(str(directory), verbose=False)


def convert_to_tflite(model: keras.Model, image_size: int,
                      quantize: str | None = None) -> bytes:
    """Converts the classifier to a TFLite flatbuffer with a fixed `[1, S, S, 3]` input.

    Args:
        model: The classifier.
        image_size: S.
        quantize: None (float32), `"dynamic"` or `"float16"`.

    Returns:
        The `.tflite` file's content: input `image` float32 `[1, S, S, 3]` raw RGB in
        [0, 255]; output `probabilities` float32 `[1, C]`.
    """
    # ExportArchive → SavedModel → converter, as `keras.Model.export(format="litert")`
    # does: converting a concrete function directly keeps Keras 3's variables as
    # resource variables, which the TFLite interpreter then cannot read.
    with tempfile.TemporaryDirectory(prefix="transferkit-tflite-") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serving_default",
            lambda image: {"probabilities": model(image, training=False)},
            input_signature=[tf.TensorSpec((1, image_size, image_size, 3), tf.float32,
                                           name="image")])
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def _line_table(path: Path) -> tf.lookup.StaticHashTable:
    """Line number (int64) → line (string) of a text file, which becomes an asset."""
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(path), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="")


def _signature_doc(formats: tuple[str, ...], n_classes: int, size: int) -> dict[str, Any]:
    outputs = {"probabilities": f"float32 [N, {n_classes}]", "class_index": "int64 [N]",
               "class_name": "string [N]"}
    doc = {
        "savedmodel": {
            "serving_default": {"inputs": {"images": "uint8 [N, H, W, 3] RGB, any size"},
                                "outputs": outputs},
            "serve_bytes": {"inputs": {"image_bytes": "string [N] encoded JPEG/PNG/GIF/"
                                                      "BMP/WebP"},
                            "outputs": outputs}},
        "tflite": {"inputs": {"image": f"float32 [1, {size}, {size}, 3] raw RGB 0-255, "
                                       "resized with transferkit's resize"},
                   "outputs": {"probabilities": f"float32 [1, {n_classes}]"}},
    }
    return {name: doc[name] for name in formats if name in doc}


# ----------------------------------------------------------------------------------------
# Parity.


class _Sample:
    """The parity images: Pillow-decoded pixels and the encoded files' bytes."""

    def __init__(self, pixels: list[np.ndarray], data: list[bytes], kind: str,
                 source: str):
        self.pixels = pixels
        self.data = data
        self.kind = kind  # "test", "other" or "synthetic"
        self.source = source


def _check_parity(run: Run, folder: Path, formats: tuple[str, ...], quantize: str | None,
                  n_parity: int, say: Callable[..., None]) -> dict[str, Any]:
    """Compares the exported models, reloaded from `folder`, with the Keras model.

    The exported models are called through `transferkit.predictor`, as users call them.

    Raises:
        RunError: A float export differs by more than `MAX_ABS_DIFF`, or a quantized
            TFLite model agrees on the top class less than `MIN_TOP1_AGREEMENT`.
    """
    sample = _parity_sample(run, n_parity)
    say(f"Checking parity on {sample.source}")
    batch = run.preprocess(sample.pixels)  # What the Keras model sees: Pillow + resize.
    reference = _predict_batches(run.model, batch)
    report: dict[str, Any] = {"checked": True, "n_images": len(sample.pixels),
                              "sample": sample.kind, "images": sample.source}
    one = batch[:1]
    latency = {"keras_predict_on_batch": _latency_ms(
        lambda: run.model.predict_on_batch(one))}

    if "savedmodel" in formats:
        saved_model = SavedModelPredictor(folder / SAVED_MODEL_DIR)
        if saved_model.class_names != run.class_names:
            raise RunError(f"the SavedModel's class names {saved_model.class_names} differ "
                           f"from the run's {run.class_names}; this is a bug, please "
                           "report it")
        by_images = _compare(reference, saved_model.predict(sample.pixels))
        by_images["fed"] = "Pillow-decoded uint8 pixels at their original sizes"

        # serve_bytes decodes with TensorFlow. Where its pixels differ from Pillow's
        # (EXIF rotation, transparency...), compare with the Keras model fed the
        # TensorFlow-decoded pixels: parity is about the graph, not the decoders. Files
        # TensorFlow cannot decode at all (TIFF, CMYK JPEG) are left out and counted.
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
        bytes_reference = reference[decodable]
        if differ:
            bytes_reference[differ] = _predict_batches(
                run.model, run.preprocess([tf_pixels[j] for j in differ]))
        encoded = saved_model.predict_encoded([sample.data[i] for i in decodable])
        by_bytes = _compare(bytes_reference, encoded)
        if differ:  # For information: how much the decoders' differences matter.
            by_bytes["max_abs_diff_vs_pillow_decoding"] = _compare(
                reference[decodable], encoded)["max_abs_diff"]
        by_bytes.update(
            fed="the encoded files' bytes",
            n_images=len(decodable),
            not_decodable_by_tensorflow=len(sample.data) - len(decodable),
            decoder_mismatches=len(differ),
            reference="the Keras model on the same pixels (TensorFlow decoded every "
                      "image exactly as Pillow did)" if not differ else
                      f"the Keras model on TensorFlow-decoded pixels for the {len(differ)} "
                      "images TensorFlow decodes differently from Pillow, on Pillow's "
                      "pixels for the others")
        report["savedmodel"] = {"serving_default": by_images, "serve_bytes": by_bytes}
        first = [sample.pixels[0]]
        latency["savedmodel_serving_default"] = _latency_ms(
            lambda: saved_model.predict(first))

    if "tflite" in formats:
        tflite = TFLitePredictor(folder / TFLITE_FILE)
        report["tflite"] = {**_compare(reference, np.concatenate(
            [tflite.invoke(x[None]) for x in batch])), "quantize": quantize}
        latency["tflite_invoke"] = _latency_ms(lambda: tflite.invoke(one))

    report["latency_ms"] = {"batch_size": 1, "calls": _LATENCY_CALLS,
                            "statistic": "median", **latency}
    for line in _summary(report):
        say(f"  {line}")
    problems = _problems(report, quantize)
    if problems:
        hint = ("export without quantization (drop --quantize) or try --quantize "
                "float16" if quantize and all(p.startswith("TFLite (") for p in problems)
                else "this is a bug: please report it with these numbers")
        raise RunError(f"parity check failed on {sample.source}: {'; '.join(problems)}. "
                       f"Nothing was exported; {hint}")
    return report


def _problems(report: dict[str, Any], quantize: str | None) -> list[str]:
    """What fails the tolerances, one line each (NaN fails every comparison)."""
    problems = []
    for name, result in (report.get("savedmodel") or {}).items():
        if not result["max_abs_diff"] <= MAX_ABS_DIFF:
            problems.append(f"SavedModel {name}: max abs diff {result['max_abs_diff']:.3g} "
                            f"> {MAX_ABS_DIFF:g}")
    result = report.get("tflite")
    if result and quantize is None and not result["max_abs_diff"] <= MAX_ABS_DIFF:
        problems.append(f"TFLite: max abs diff {result['max_abs_diff']:.3g} > "
                        f"{MAX_ABS_DIFF:g}")
    if result and quantize is not None and \
            not result["top1_agreement"] >= MIN_TOP1_AGREEMENT:
        problems.append(f"TFLite ({quantize}): top-1 agreement "
                        f"{result['top1_agreement']:.1%} < {MIN_TOP1_AGREEMENT:.0%}")
    return problems


def _parity_sample(run: Run, n: int) -> _Sample:
    """Up to `n` test-split images; other images of the run, or synthetic ones, if gone.

    The data folder may have moved since training: then any of the run's images still
    found is used, and if none is, random images (PNG and JPEG) stand in.
    """
    root = Path(run.config.data)
    rows = _read_splits(run.path)
    candidates = []
    if rows is not None and not run.config.data.startswith("tfds:"):
        test = rows[rows["split"] == "test"]
        other = rows[rows["split"] != "test"]
        candidates = [(test, "test", f"of the test split of {root}"),
                      (other, "other", f"of the train/val splits of {root} (its test "
                                       "images were not found)")]
    for frame, kind, source in candidates:
        order = np.random.default_rng(_SAMPLE_SEED).permutation(len(frame))
        pixels, data = [], []
        for i in order:
            path = root / frame["path"].iloc[i]
            try:
                data.append(path.read_bytes())
                pixels.append(load_image(data[-1]))
            except (OSError, ImageError):
                del data[len(pixels):]
                continue
            if len(pixels) == n:
                break
        if pixels:
            return _Sample(pixels, data, kind,
                           f"{len(pixels)} images (of {len(frame)}) {source}")
    return _synthetic_sample(n, f"no image of the run's data ({run.config.data}) was "
                                "found")


def _read_splits(run_dir: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(run_dir / "splits.csv", keep_default_na=False)
    except (OSError, ValueError):
        return None


def _synthetic_sample(n: int, why: str) -> _Sample:
    """Random images of assorted sizes, encoded alternately as PNG and JPEG."""
    import io

    from PIL import Image

    rng = np.random.default_rng(_SAMPLE_SEED)
    pixels, data = [], []
    for i in range(min(n, 32)):
        height, width = rng.integers(24, 300, 2)
        base = rng.integers(0, 256, 3)
        noise = rng.normal(0, 60, (height, width, 3))
        array = np.clip(base + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG" if i % 2 == 0 else "JPEG")
        data.append(buffer.getvalue())
        pixels.append(load_image(data[-1]))
    return _Sample(pixels, data, "synthetic",
                   f"{len(pixels)} SYNTHETIC random images ({why})")


def _predict_batches(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(model.predict_on_batch(batch[i:i + _BATCH]))
                           for i in range(0, len(batch), _BATCH)])


def _compare(reference: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Max absolute difference and top-1 agreement of two `[N, C]` probability arrays."""
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(probabilities, np.float64))
    agree = np.argmax(reference, axis=1) == np.argmax(probabilities, axis=1)
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "top1_agreement": float(agree.mean()) if agree.size else 1.0}


def _latency_ms(call: Callable[[], Any], calls: int = _LATENCY_CALLS,
                warmup: int = 3) -> float:
    """Median wall time of `call()` in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def _summary(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, result in (report.get("savedmodel") or {}).items():
        lines.append(f"SavedModel {name}: max abs diff {result['max_abs_diff']:.2g}, "
                     f"top-1 agreement {result['top1_agreement']:.1%}")
    if "tflite" in report:
        result = report["tflite"]
        kind = result["quantize"] or "float32"
        lines.append(f"TFLite ({kind}): max abs diff {result['max_abs_diff']:.2g}, "
                     f"top-1 agreement {result['top1_agreement']:.1%}")
    return lines


# ----------------------------------------------------------------------------------------
# Checks.


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def _check_options(formats: Sequence[str], quantize: str | None,
                   n_parity: int) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(dict.fromkeys(f.lower() for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"unknown export format {unknown or formats!r}; choose from "
                          f"{', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown --quantize {quantize!r}; choose dynamic or float16 "
                          "(or leave it out for float32)")
    if quantize is not None and "tflite" not in formats:
        raise ConfigError("--quantize applies to the TFLite model only; add tflite to "
                          "the formats")
    if n_parity < 0:
        raise ConfigError(f"the number of parity images must be 0 or more, got {n_parity}")
    return formats


def _check_destination(out: Path, overwrite: bool, run_dir: Path) -> None:
    """Refuses an existing `out` unless `overwrite`, and anything but an old export."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RunError(f"{out} is a file; choose a folder for the export")
    if not overwrite:
        raise RunError(f"{out} already exists; pass --overwrite to replace it, or choose "
                       "another --out")
    # --overwrite replaces a whole folder: never a run directory or someone's documents.
    if run_dir.resolve().is_relative_to(out.resolve()) or (
            any(out.iterdir()) and not (out / PARITY_FILE).is_file()):
        raise RunError(f"{out} is not a transferkit export folder; --overwrite only "
                       "replaces an earlier export. Choose another --out")


def _check_class_names(class_names: Sequence[str]) -> None:
    bad = [name for name in class_names if "\n" in name or "\r" in name or not name]
    if bad:
        raise RunError(f"class names {bad!r} cannot be written one per line in "
                       f"{LABELS_FILE}; rename those class folders and retrain")
