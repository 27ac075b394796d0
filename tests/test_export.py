"""Export for deployment (issue 3): SavedModel and TFLite give the run's answers.

The exported SavedModel and TFLite model are checked in a separate Python process that
never imports transferkit: what a deployment has. The tiny run is exported once, in
every format, once for the whole session (`tiny_export`, conftest.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from transferkit.cli import main
from transferkit.errors import ConfigError, RunError
from transferkit.export import export_run, latency_ms
from transferkit.trust import load_trust
from transferkit.predictor import load_predictor

TOLERANCE = 1e-4

# Runs in a fresh interpreter with only TensorFlow and NumPy: argv = saved_model dir,
# .tflite file, inputs .npz, Keras reference probabilities .npy, output .json.
STANDALONE = textwrap.dedent('''
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    saved_model, tflite, inputs, reference, out = sys.argv[1:]
    inputs = np.load(inputs)
    reference = np.load(reference)
    n = len(reference)
    pixels = [inputs[f"pixels_{i}"] for i in range(n)]
    files = [inputs[f"bytes_{i}"].tobytes() for i in range(n)]
    size = int(inputs["image_size"])
    result = {}

    loaded = tf.saved_model.load(saved_model)
    signatures = {}
    for name in ("serving_default", "serve_bytes"):
        fn = loaded.signatures[name]
        signatures[name] = {
            "inputs": {k: [v.dtype.name, v.shape.as_list()]
                       for k, v in fn.structured_input_signature[1].items()},
            "outputs": {k: [v.dtype.name, v.shape.as_list()]
                        for k, v in fn.structured_outputs.items()}}
    result["signatures"] = signatures

    # serving_default: decoded uint8 pixels, one image (of its own size) per call.
    serve = loaded.signatures["serving_default"]
    outputs = [serve(images=tf.constant(p[None])) for p in pixels]
    probabilities = np.concatenate([o["probabilities"].numpy() for o in outputs])
    result["serving_default"] = {
        "max_abs_diff": float(np.abs(probabilities - reference).max()),
        "abstained": [bool(o["abstained"][0]) for o in outputs],
        "is_unknown": [bool(o["is_unknown"][0]) for o in outputs],
        "class_index": [int(o["class_index"][0]) for o in outputs],
        "class_name": [o["class_name"][0].numpy().decode() for o in outputs]}

    # serve_bytes: every encoded file, of assorted formats and sizes, in one call.
    serve_bytes = loaded.signatures["serve_bytes"]
    output = serve_bytes(image_bytes=tf.constant(files))
    result["serve_bytes"] = {
        "max_abs_diff": float(np.abs(output["probabilities"].numpy() - reference).max()),
        "abstained": output["abstained"].numpy().tolist(),
        "is_unknown": output["is_unknown"].numpy().tolist(),
        "class_index": output["class_index"].numpy().tolist(),
        "class_name": [c.decode() for c in output["class_name"].numpy()]}

    # Corrupt bytes: a clear error, and the process (and the model) carry on.
    try:
        serve_bytes(image_bytes=tf.constant([files[0], b"this is not an image"]))
        result["corrupt"] = None
    except Exception as e:  # noqa: BLE001
        result["corrupt"] = [type(e).__name__, str(e)]
    result["empty"] = []
    for fn, inputs in ((serve, {"images": tf.zeros((0, 8, 8, 3), tf.uint8)}),
                       (serve_bytes, {"image_bytes": tf.constant([], tf.string)})):
        try:
            fn(**inputs)
        except Exception as e:  # noqa: BLE001
            result["empty"].append([type(e).__name__, str(e)])
    result["after_corrupt"] = serve_bytes(
        image_bytes=tf.constant(files[:1]))["class_index"].numpy().tolist()

    # TFLite: the client resizes (bilinear, antialiased) to the fixed input size.
    interpreter = tf.lite.Interpreter(model_path=tflite)
    interpreter.allocate_tensors()
    (image,) = interpreter.get_input_details()
    # [1, C] probabilities and [1] unknown score; the thresholds are in trust.json.
    probs, score = sorted(interpreter.get_output_details(), key=lambda o: -len(o["shape"]))
    with open(tflite.rsplit("/", 1)[0] + "/trust.json") as f:
        trust = json.load(f)
    result["tflite_input"] = [image["dtype"].__name__, image["shape"].tolist()]
    rows, flags = [], []
    for p in pixels:
        x = tf.image.resize(tf.cast(p, tf.float32), (size, size), method="bilinear",
                            antialias=True)
        interpreter.set_tensor(image["index"], x.numpy()[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(probs["index"]).copy())
        flags.append([bool(rows[-1].max() < np.float32(trust["abstain_threshold"])),
                      bool(interpreter.get_tensor(score["index"])[0]
                           > np.float32(trust["unknown_threshold"]))])
    result["tflite"] = {"max_abs_diff": float(np.abs(np.concatenate(rows) - reference)
                                              .max()),
                        "abstained": [a for a, _ in flags],
                        "is_unknown": [u for _, u in flags]}

    result["transferkit_imported"] = "transferkit" in sys.modules
    with open(out, "w") as f:
        json.dump(result, f)
''')


@pytest.fixture(scope="module")
def exported(tiny_export):
    """The tiny run exported in every format: (export folder, parity report)."""
    return tiny_export


@pytest.fixture(scope="module")
def assorted_images(tmp_path_factory):
    """Images of assorted formats, sizes and colour modes a client might send."""
    root = tmp_path_factory.mktemp("assorted")
    rng = np.random.default_rng(3)

    def noise(height, width, color):
        return np.clip(rng.normal(color, 40, (height, width, 3)), 0, 255).astype(np.uint8)

    paths = []
    specs = [("red.png", (50, 70), (200, 40, 40), "RGB"),
             ("green.jpg", (150, 200), (40, 180, 60), "RGB"),
             ("gray.jpg", (120, 80), (90, 90, 90), "L"),
             ("blue.bmp", (33, 45), (40, 60, 200), "RGB"),
             ("red.gif", (64, 64), (200, 40, 40), "P"),
             ("blue_small.jpg", (17, 300), (40, 60, 200), "RGB")]
    for name, (height, width), color, mode in specs:
        image = Image.fromarray(noise(height, width, color))
        if mode != "RGB":
            image = image.convert(mode)
        image.save(root / name)
        paths.append(root / name)
    return paths


def test_export_layout_and_report(exported, tiny_run):
    out, report = exported
    for name in ("saved_model/saved_model.pb", "saved_model/assets/labels.txt",
                 "saved_model/assets/config.json", "model.tflite", "model.keras",
                 "labels.txt", "config.json", "parity.json", "trust.json", "trust.npz"):
        assert (out / name).is_file(), name
    assert (out / "labels.txt").read_text().splitlines() == tiny_run.class_names
    assert (out / "saved_model/assets/labels.txt").read_text() == \
        (out / "labels.txt").read_text()
    assert json.loads((out / "saved_model/assets/config.json").read_text())[
        "image_size"] == 96
    assert json.loads((out / "parity.json").read_text()) == report
    assert report["checked"] and report["sample"] == "test"
    assert report["n_images"] == (tiny_run.path / "splits.csv").read_text().count(",test")
    for result in (*report["savedmodel"].values(), report["tflite"]):
        assert result["max_abs_diff"] <= TOLERANCE
        assert result["top1_agreement"] == 1.0
        # The flags match the Keras run's (disagreement only at the threshold itself).
        assert result["abstained_unexplained"] == result["unknown_unexplained"] == 0
        assert result["unknown_score_max_rel_diff"] < 1e-4
    assert report["trust"] == "trust.json"
    assert load_trust(out).abstain_threshold == tiny_run.trust.abstain_threshold
    assert "unknown_score" in report["signatures"]["tflite"]["outputs"]
    assert report["savedmodel"]["serve_bytes"]["decoder_mismatches"] == 0
    assert "latency_ms" not in report  # Exports do not time anything (benchmarks do).
    assert not [p for p in out.parent.iterdir() if p.name != "export"]  # no temp folders


def test_standalone_process_matches_keras(exported, tiny_run, assorted_images, tmp_path):
    from transferkit.data.images import load_image

    out, _ = exported
    pixels = [load_image(p) for p in assorted_images]
    reference = np.asarray(tiny_run.model.predict_on_batch(tiny_run.preprocess(
        assorted_images)))
    np.save(tmp_path / "reference.npy", reference)
    np.savez(tmp_path / "inputs.npz", image_size=tiny_run.image_size,
             **{f"pixels_{i}": p for i, p in enumerate(pixels)},
             **{f"bytes_{i}": np.frombuffer(p.read_bytes(), np.uint8)
                for i, p in enumerate(assorted_images)})
    (tmp_path / "standalone.py").write_text(STANDALONE)
    process = subprocess.run(
        [sys.executable, str(tmp_path / "standalone.py"), str(out / "saved_model"),
         str(out / "model.tflite"), str(tmp_path / "inputs.npz"),
         str(tmp_path / "reference.npy"), str(tmp_path / "result.json")],
        capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())

    assert result["transferkit_imported"] is False
    outputs = {"probabilities": ["float32", [None, 3]], "class_index": ["int64", [None]],
               "class_name": ["string", [None]], "unknown_score": ["float32", [None]],
               "is_unknown": ["bool", [None]], "abstained": ["bool", [None]]}
    assert result["signatures"] == {
        "serving_default": {"inputs": {"images": ["uint8", [None, None, None, 3]]},
                            "outputs": outputs},
        "serve_bytes": {"inputs": {"image_bytes": ["string", [None]]},
                        "outputs": outputs}}
    expected_index = reference.argmax(axis=1).tolist()
    expected_name = [tiny_run.class_names[i] for i in expected_index]
    for name in ("serving_default", "serve_bytes"):
        assert result[name]["max_abs_diff"] <= TOLERANCE, name
        assert result[name]["class_index"] == expected_index, name
        assert result[name]["class_name"] == expected_name, name
    assert result["tflite_input"] == ["float32", [1, 96, 96, 3]]
    assert result["tflite"]["max_abs_diff"] <= TOLERANCE
    # "Not sure" and "not one of my classes": the same in the Keras run, both
    # signatures and TFLite (its thresholds read from trust.json by a plain client).
    _, fields = tiny_run.assess(assorted_images)
    for flag, key in (("abstained", "abstained"), ("is_unknown", "unknown")):
        expected_flags = [f[key] for f in fields]
        for name in ("serving_default", "serve_bytes", "tflite"):
            assert result[name][flag] == expected_flags, (name, flag)

    error_type, message = result["corrupt"]
    assert error_type == "InvalidArgumentError"
    assert "Unknown image file format" in message
    assert result["after_corrupt"] == expected_index[:1]
    assert [error for error, _ in result["empty"]] == ["InvalidArgumentError"] * 2
    assert all("must hold at least one" in message for _, message in result["empty"])


def test_predictors_agree(exported, tiny_run, assorted_images):
    out, _ = exported
    images = [*assorted_images[:3], assorted_images[3].read_bytes(),
              assorted_images[4].read_bytes(), np.asarray(Image.open(assorted_images[5]))]
    reference = tiny_run.predict(images)
    predictors = [load_predictor(p) for p in (
        tiny_run.path, out, out / "saved_model", out / "model.tflite")]
    assert [p.kind for p in predictors] == ["run", "savedmodel", "savedmodel", "tflite"]
    expected = tiny_run.top_k(reference, k=2)
    for predictor in predictors:
        assert predictor.class_names == tiny_run.class_names
        probabilities = predictor.predict(images)
        np.testing.assert_allclose(probabilities, reference, atol=TOLERANCE)
        top = predictor.top_k(probabilities, k=2)
        assert [[x["label"] for x in row] for row in top] == \
            [[x["label"] for x in row] for row in expected], predictor
        assert np.allclose([[x["probability"] for x in row] for row in top],
                           [[x["probability"] for x in row] for row in expected],
                           atol=TOLERANCE)
    # Every predictor's records carry the run's trust fields.
    _, fields = tiny_run.assess(assorted_images)
    for predictor in predictors:
        records = predictor.predict_files(assorted_images, k=1)
        assert [(r["abstained"], r["unknown"]) for r in records] == [
            (f["abstained"], f["unknown"]) for f in fields], predictor
        assert [r["unknown_score"] for r in records] == pytest.approx(
            [f["unknown_score"] for f in fields], rel=1e-4)
    # serve_bytes through the predictor: TensorFlow decodes these exactly as Pillow.
    encoded = [p.read_bytes() for p in assorted_images]
    np.testing.assert_allclose(predictors[1].predict_encoded(encoded),
                               tiny_run.predict(assorted_images), atol=TOLERANCE)


def test_load_predictor_errors(exported, tmp_path):
    out, _ = exported
    with pytest.raises(RunError, match="run directory, an export folder"):
        load_predictor(tmp_path)
    shutil.copy(out / "model.tflite", tmp_path / "alone.tflite")
    with pytest.raises(RunError, match="unknown score but no trust.json beside it"):
        load_predictor(tmp_path / "alone.tflite")
    for name in ("trust.json", "trust.npz"):
        shutil.copy(out / name, tmp_path / name)
    with pytest.raises(RunError, match="labels.txt"):
        load_predictor(tmp_path / "alone.tflite")


def test_existing_export_needs_overwrite(exported, tiny_run):
    out, _ = exported
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RunError, match="--overwrite"):
        export_run(tiny_run.path, out, verbose=0)
    assert sorted(p.name for p in out.iterdir()) == before


def test_overwrite_replaces_only_an_export(tiny_run, tmp_path):
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("precious")
    for out in (documents, tiny_run.path):
        with pytest.raises(RunError, match="not a transferkit export folder"):
            export_run(tiny_run.path, out, formats=("keras",), overwrite=True,
                       verbose=0)
    assert (documents / "thesis.txt").read_text() == "precious"
    assert (tiny_run.path / "run.json").is_file()


def test_failed_parity_leaves_no_export_and_keeps_the_old_one(exported, tiny_run,
                                                              tmp_path, monkeypatch):
    out = tmp_path / "export"
    export_run(tiny_run.path, out, formats=("keras",), verbose=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def wrong(reference, probabilities):
        return {"max_abs_diff": 0.5, "mean_abs_diff": 0.1, "top1_agreement": 0.5}

    # The failure comes late, after the TFLite model is written (reused here, to save
    # the conversion's time) and compared.
    tflite = (exported[0] / "model.tflite").read_bytes()
    monkeypatch.setattr("transferkit.export.tflite.convert_to_tflite", lambda *args: tflite)
    monkeypatch.setattr("transferkit.export.parity.compare", wrong)
    with pytest.raises(RunError, match=r"TFLite: max abs diff 0\.5 > 0\.0001"):
        export_run(tiny_run.path, out, formats=("tflite", "keras"), overwrite=True,
                   verbose=0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old one intact
    with pytest.raises(RunError, match="parity check failed"):
        export_run(tiny_run.path, tmp_path / "new", formats=("tflite",), verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no new, no temp


# Upper bounds on a quantized model's size, as a fraction of the float32 model's:
# int8 weights take a quarter of float32's bytes, float16 weights half (plus the graph).
QUANTIZED_SIZE = {"dynamic": 0.35, "float16": 0.6}


@pytest.mark.parametrize("quantize", ["dynamic", "float16"])
def test_quantized_tflite(exported, tiny_run, tmp_path, quantize):
    out = tmp_path / "export"
    report = export_run(tiny_run.path, out, formats=("tflite",), quantize=quantize,
                        verbose=0)
    assert report["sample"] == "test"
    assert report["tflite"]["quantize"] == quantize
    assert report["tflite"]["top1_agreement"] == 1.0
    float32_bytes = (exported[0] / "model.tflite").stat().st_size
    assert report["tflite_bytes"] == (out / "model.tflite").stat().st_size
    assert report["tflite_bytes"] <= QUANTIZED_SIZE[quantize] * float32_bytes


def test_moved_data_falls_back_to_synthetic_images(exported, tiny_run, tmp_path,
                                                   monkeypatch):
    # A copy of the run whose data folder has gone: parity falls back to synthetic
    # images, and says so. The float32 TFLite model is reused, to save a conversion.
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir, ignore=shutil.ignore_patterns("export"))
    config = json.loads((run_dir / "config.json").read_text())
    config["data"] = str(tmp_path / "moved")
    (run_dir / "config.json").write_text(json.dumps(config))
    tflite = (exported[0] / "model.tflite").read_bytes()
    monkeypatch.setattr("transferkit.export.tflite.convert_to_tflite", lambda *args: tflite)

    report = export_run(run_dir, formats=("tflite",), n_parity=12, verbose=0)
    assert report["sample"] == "synthetic"
    assert report["images"] == (f"12 SYNTHETIC random images (no image of the run's data "
                                f"({tmp_path / 'moved'}) was found)")
    assert report["n_images"] == 12
    assert report["tflite"]["max_abs_diff"] <= TOLERANCE
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == [
        "MODEL_CARD.md", "config.json", "labels.txt", "model.tflite", "parity.json",
        "trust.json"]


def test_tfds_run_is_checked_on_its_real_test_images(tfds_run, tmp_path):
    test_images = tfds_run.split_paths("test")
    assert len(test_images) > 1 and all(p.is_file() for p in test_images)
    n_parity = len(test_images) - 1  # Capped: one fewer than the split holds.
    report = export_run(tfds_run.path, tmp_path / "export", n_parity=n_parity,
                        verbose=0)
    assert json.loads((tmp_path / "export/parity.json").read_text()) == report
    assert report["checked"] and report["sample"] == "test"
    assert report["n_images"] == n_parity
    assert report["images"] == (f"{n_parity} images (of {len(test_images)}) of the test "
                                f"split of {tfds_run.data_folder}")
    assert report["savedmodel"]["serve_bytes"]["n_images"] == n_parity
    for result in report["savedmodel"].values():
        assert result["max_abs_diff"] <= TOLERANCE
        assert result["top1_agreement"] == 1.0


@pytest.mark.parametrize("options, message", [
    ({"formats": ("torchscript",)}, "unknown export format"),
    ({"formats": ("savedmodel",), "quantize": "int8"}, "unknown --quantize"),
    ({"formats": ("savedmodel",), "quantize": "dynamic"}, "TFLite model only"),
])
def test_bad_options(tiny_run, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        export_run(tiny_run.path, tmp_path / "export", verbose=0, **options)
    assert not (tmp_path / "export").exists()


def test_cli_export(tiny_run, tmp_path, capsys):
    out = tmp_path / "cli"
    status = main(["export", str(tiny_run.path), "--format", "keras", "--out", str(out),
                   "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "parity.json").read_text())
    assert report["formats"] == ["keras"] and report["checked"] is False
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md", "config.json", "labels.txt", "model.keras", "parity.json", "trust.json",
        "trust.npz"]  # the Keras model's trust goes with it


@pytest.mark.parametrize("args, message", [
    (["--format", "torchscript"], "unknown export format ['torchscript']; choose from "
                                  "savedmodel, tflite, tflite-int8, onnx, keras"),
    (["--format", "savedmodel", "--quantize", "dynamic"], "--quantize applies to the "
                                                          "TFLite model only"),
    ([], "already exists; pass --overwrite to replace it"),
])
def test_cli_export_errors(exported, tiny_run, capsys, args, message):
    out, _ = exported
    before = sorted(p.name for p in out.iterdir())
    status = main(["export", str(tiny_run.path), "--out", str(out), *args])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    (line,) = captured.err.splitlines()  # One line, no traceback.
    assert line.startswith("transferkit: error: ") and message in line
    assert sorted(p.name for p in out.iterdir()) == before


def test_latency_ms_calls_each_function_warmup_plus_n_times():
    counts = {"a": 0, "b": 0}

    def call(name):
        counts[name] += 1

    result = latency_ms({"a": lambda: call("a"), "b": lambda: call("b")}, n=4, warmup=2)
    assert counts == {"a": 6, "b": 6}
    assert sorted(result) == ["a", "b"]
    assert all(sorted(stats) == ["median_ms", "p90_ms"] for stats in result.values())
    with pytest.raises(ValueError, match="n >= 1"):
        latency_ms({"a": lambda: None}, n=0)
