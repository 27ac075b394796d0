"""Every export format vs the Keras model: parity on unseen photos, batch-1 latency, size.

    .venv/bin/python benchmarks/export_latency.py                 # trains on flowers5 first
    .venv/bin/python benchmarks/export_latency.py --run runs/flowers

Trains (or reuses, or takes `--run`) a MobileNetV2-0.35 run on the flowers folder
(`$TRANSFERKIT_FLOWERS`, default `../shared/data/flowers5`), exports it (SavedModel +
TFLite + ONNX; the exporter checks parity on 200 test-split images the model never saw,
ONNX in ONNX Runtime) and the full-integer TFLite model (checked on the whole test split;
if the export refuses it, the same conversion is made here so that it can still be
timed, and the refusal is printed), then times batch-1 calls with
`transferkit.export.latency_ms` (interleaved round-robin, so that background load hits
every method alike) and reports medians and ratios against the Keras model's plain call,
and each file's size against the float TFLite model's:

    keras_call             model(x, training=False), x float32 [1, S, S, 3] (resized)
    keras_tf_function      the same call wrapped in a tf.function (traced once)
    savedmodel_uint8       serving_default on the original uint8 image (resize inside)
    savedmodel_bytes       serve_bytes on the JPEG file's bytes (decode + resize inside)
    tflite_invoke          the TFLite interpreter on x (float32)
    tflite_int8_invoke     the full-integer TFLite model on x rounded to uint8
    onnx_uint8             ONNX Runtime on the original uint8 image (resize inside)

Acceptance target: savedmodel_uint8 <= 1.2 x keras_call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from transferkit.testing import flowers_dir, use_local_weights

use_local_weights()  # Before the first `import keras`.

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import transferkit  # noqa: E402
from transferkit import layout  # noqa: E402
from transferkit.data.images import load_image  # noqa: E402
from transferkit.errors import RunError  # noqa: E402
from transferkit.export import convert_to_tflite_int8, export_run, latency_ms  # noqa: E402
from transferkit.export.int8 import representative_images  # noqa: E402
from transferkit.predictor import (ONNXPredictor, SavedModelPredictor,  # noqa: E402
                                   TFLitePredictor)
from transferkit.run import load_run, run_state  # noqa: E402

TARGET_RATIO = 1.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run directory (default: "
                        "train one on the flowers folder)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/transferkit-bench/export"),
                        help="work folder: the trained run and the export go here")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=100, help="timed calls per method")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--n-parity", type=int, default=200)
    args = parser.parse_args(argv)

    run_dir = args.run or args.out / "run"
    if args.run is None and run_state(run_dir) != "complete":
        print(f"Training on {flowers_dir()} into {run_dir}", flush=True)
        transferkit.train(flowers_dir(), run_dir, backbone="mobilenet_v2_0.35",
                          image_size=args.image_size, quiet=True)  # Resumes if killed.
    run = load_run(run_dir)
    metrics = run.metrics or {}
    print(f"Run {run_dir}: {run.config.backbone} at {run.image_size} px, test accuracy "
          f"{metrics.get('accuracy', float('nan')):.3f}")

    export_dir = args.out / "export" if args.run is None else args.out / "export_of_run"
    start = time.perf_counter()
    report = export_run(run_dir, export_dir, formats=("savedmodel", "tflite", "onnx"),
                        overwrite=True, n_parity=args.n_parity, verbose=False)
    export_seconds = time.perf_counter() - start
    int8_file, int8 = export_int8(run, run_dir, args.out)
    print(f"\nExported to {export_dir} in {export_seconds:.1f} s; parity on "
          f"{report['images']}:")
    for name, result in report["savedmodel"].items():
        print(f"  SavedModel {name:16s} max |diff| {result['max_abs_diff']:.2e}  "
              f"top-1 agreement {result['top1_agreement']:.1%}")
    print(f"  TFLite float32              max |diff| {report['tflite']['max_abs_diff']:.2e}"
          f"  top-1 agreement {report['tflite']['top1_agreement']:.1%}")
    print(f"  ONNX (ONNX Runtime)         max |diff| {report['onnx']['max_abs_diff']:.2e}"
          f"  top-1 agreement {report['onnx']['top1_agreement']:.1%}")
    print(f"  TFLite int8 ({int8['verdict']}): {int8['message']}")

    sizes = {"savedmodel": sum(p.stat().st_size for p in
                               (export_dir / layout.SAVED_MODEL_DIR).rglob("*") if p.is_file()),
             "tflite": report["tflite_bytes"], "tflite_int8": int8_file.stat().st_size,
             "onnx": report["onnx_bytes"]}
    print("\nFile sizes:")
    for name, size in sizes.items():
        print(f"  {name:12s} {size / 2**20:7.2f} MiB  {size / sizes['tflite']:5.2f}x tflite")

    latency = measure_latency(run, export_dir, int8_file, args.calls, args.warmup)
    base, graph = latency["keras_call"]["median_ms"], latency["keras_tf_function"]["median_ms"]
    print(f"\nBatch-1 latency, median (p90) of {args.calls} interleaved calls after "
          f"{args.warmup} warm-up, {os.cpu_count()} CPUs:")
    for name, stats in latency.items():
        print(f"  {name:20s} {stats['median_ms']:8.2f} ms ({stats['p90_ms']:7.2f})  "
              f"{stats['median_ms'] / base:5.2f}x keras_call  "
              f"{stats['median_ms'] / graph:5.2f}x keras_tf_function")
    ratio = latency["savedmodel_uint8"]["median_ms"] / base
    passed = ratio <= TARGET_RATIO
    print(f"\nSavedModel serving_default / keras_call = {ratio:.2f} (target <= "
          f"{TARGET_RATIO}): {'PASS' if passed else 'FAIL'}")

    results = {"run": str(run_dir), "image_size": run.image_size, "parity": report,
               "tflite_int8": int8, "bytes": sizes,
               "export_seconds": round(export_seconds, 1), "latency": latency,
               "savedmodel_over_keras_call": round(ratio, 3), "target": TARGET_RATIO,
               "passed": passed, "cpus": os.cpu_count(), "python": platform.python_version(),
               "tensorflow": tf.__version__}
    (args.out / "latency.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"Results: {args.out / 'latency.json'}")
    return 0 if passed else 1


def export_int8(run, run_dir: Path, work: Path) -> tuple[Path, dict]:
    """The full-integer model: exported if kept, else converted here to be timed."""
    out = work / "export_int8"
    try:
        report = export_run(run_dir, out, formats=("tflite-int8",), overwrite=True,
                            verbose=False)
    except RunError as e:  # Refused: make the same model anyway, for its size and speed.
        path = work / "refused_int8.tflite"
        path.write_bytes(convert_to_tflite_int8(run.model, run.image_size,
                                                representative_images(run)))
        return path, {"verdict": "refused by the export", "message": str(e)}
    result = report["tflite_int8"]
    return out / layout.TFLITE_INT8_FILE, {
        "verdict": "kept", **result,
        "message": f"top-1 agreement {result['top1_agreement']:.1%}, accuracy "
                   f"{result['accuracy_keras']:.3f} -> {result['accuracy_int8']:.3f}"}


def measure_latency(run, export_dir: Path, int8_file: Path, calls: int,
                    warmup: int) -> dict[str, dict]:
    """Median and p90 wall time (ms) of batch-1 calls of each method, interleaved."""
    data = run.split_paths("test")[0].read_bytes()
    pixels = load_image(data)
    x = tf.constant(run.preprocess([pixels]))
    model = run.model
    graph_call = tf.function(lambda images: model(images, training=False),
                             input_signature=[tf.TensorSpec(x.shape, tf.float32)])
    saved_model = SavedModelPredictor(export_dir / layout.SAVED_MODEL_DIR)
    serve = saved_model.loaded.signatures["serving_default"]
    serve_bytes = saved_model.loaded.signatures["serve_bytes"]
    uint8 = tf.constant(pixels[None])
    encoded = tf.constant([data])
    tflite = TFLitePredictor(export_dir / layout.TFLITE_FILE)
    tflite_int8 = TFLitePredictor(int8_file, run.class_names)
    onnx = ONNXPredictor(export_dir / layout.ONNX_FILE).session
    x_numpy = x.numpy()

    methods = {
        "keras_call": lambda: model(x, training=False).numpy(),
        "keras_tf_function": lambda: graph_call(x).numpy(),
        "savedmodel_uint8": lambda: serve(images=uint8)["probabilities"].numpy(),
        "savedmodel_bytes": lambda: serve_bytes(image_bytes=encoded)["probabilities"]
        .numpy(),
        "tflite_invoke": lambda: tflite.invoke(x_numpy),
        "tflite_int8_invoke": lambda: tflite_int8.invoke(x_numpy),
        "onnx_uint8": lambda: onnx.run(["probabilities"], {"images": pixels[None]})[0],
    }
    reference = methods["keras_call"]()
    for name, method in methods.items():  # Same answers, or the timing means nothing.
        if name != "tflite_int8_invoke":  # Quantized: checked on the test split instead.
            np.testing.assert_allclose(method(), reference, atol=1e-4, err_msg=name)
    stats = latency_ms(methods, n=calls, warmup=warmup)
    return {name: {**stats[name], "input": _INPUTS[name].format(
        s=run.image_size, h=pixels.shape[0], w=pixels.shape[1])} for name in methods}


_INPUTS = {
    "keras_call": "float32 [1, {s}, {s}, 3]",
    "keras_tf_function": "float32 [1, {s}, {s}, 3]",
    "savedmodel_uint8": "uint8 [1, {h}, {w}, 3], resized inside",
    "savedmodel_bytes": "one JPEG file ({h}x{w}), decoded and resized inside",
    "tflite_invoke": "float32 [1, {s}, {s}, 3]",
    "tflite_int8_invoke": "uint8 [1, {s}, {s}, 3] (x rounded)",
    "onnx_uint8": "uint8 [1, {h}, {w}, 3], resized inside",
}


if __name__ == "__main__":
    sys.exit(main())
