"""`export_run`: write the requested formats, check their parity, then move them in place.

The export is written to a hidden sibling folder and renamed into place only once
complete and checked, so a failed or interrupted export never leaves a half-written
folder or harms an earlier export.
"""

from __future__ import annotations

import datetime
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from transferkit import layout
from transferkit.errors import ConfigError, RunError
from transferkit.export import int8, onnx, parity, savedmodel, tflite
from transferkit.export.int8 import Int8Tolerance
from transferkit.fileio import replace_dir, write_json, write_text
from transferkit.report.model_card import write_model_card
from transferkit.run import Run, load_run

FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx", "keras")


def export_run(run_dir: str | Path, out: str | Path | None = None,
               formats: Sequence[str] = ("savedmodel",), quantize: str | None = None,
               overwrite: bool = False, n_parity: int = 200,
               int8_tolerance: Int8Tolerance = Int8Tolerance(),
               verbose: int = 1) -> dict[str, Any]:
    """Exports a finished run and checks that the exported models give its answers.

    Args:
        run_dir: A finished run directory.
        out: The export folder (default `<run_dir>/export`).
        formats: Any of `"savedmodel"`, `"tflite"`, `"tflite-int8"` (full-integer,
            `model_int8.tflite`), `"onnx"`, `"keras"`.
        quantize: TFLite only: None (float32), `"dynamic"` (int8 weights) or
            `"float16"` (float16 weights).
        overwrite: Replace an existing export folder.
        n_parity: Images of the run's test split on which each exported float model is
            compared with the Keras model (0 skips the check). The int8 model is always
            checked, on the whole test split.
        int8_tolerance: When the int8 model is kept (top-1 agreement, accuracy drop).
        verbose: 0 is silent, 1 (or more) prints progress lines.

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
    out = Path(out) if out is not None else run_dir / layout.EXPORT_DIR
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
        report = _export_into(run, tmp, formats, quantize, n_parity, int8_tolerance, say)
        report["path"] = str(out)
        write_json(tmp / layout.PARITY_FILE, report)
        _check_destination(out, overwrite, run_dir)  # It may have appeared meanwhile.
        replace_dir(tmp, out)
    except OSError as e:
        raise RunError(f"cannot write the export to {out}: {e.strerror or e}; free some "
                       "space or choose another --out (nothing was written)") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # Gone already after a successful rename.
    say(f"Export written to {out}")
    return report


def _export_into(run: Run, folder: Path, formats: tuple[str, ...], quantize: str | None,
                 n_parity: int, int8_tolerance: Int8Tolerance,
                 say: Callable[..., None]) -> dict[str, Any]:
    """Writes every requested format into `folder`, checks parity, returns the report."""
    labels, config = folder / layout.LABELS_TXT, folder / layout.CONFIG_FILE
    write_text(labels, "".join(f"{name}\n" for name in run.class_names))
    write_json(config, run.config.to_dict())
    card = run.path / layout.MODEL_CARD_FILE  # every export carries the run's own card
    if card.exists():
        shutil.copyfile(card, folder / layout.MODEL_CARD_FILE)
    else:  # a run from before the card
        write_model_card(run, folder / layout.MODEL_CARD_FILE)
    trust = run.trust_graph()  # None: an uncalibrated run exports as before
    if "keras" in formats:
        shutil.copyfile(run.path / layout.MODEL_FILE, folder / layout.MODEL_FILE)
    if trust is not None and "keras" in formats:  # the Keras model's trust, whole
        for name in (layout.TRUST_FILE, layout.TRUST_ARRAYS):
            shutil.copyfile(run.path / name, folder / name)
    elif trust is not None and {"tflite", "tflite-int8"} & set(formats):
        trust.params.save_thresholds(folder)  # what the TFLite predictors read
    if "savedmodel" in formats:
        say("Writing the SavedModel")
        savedmodel.write_saved_model(run.model, run.image_size, labels, config,
                                     folder / layout.SAVED_MODEL_DIR, trust)
    if "tflite" in formats:
        say("Converting to TFLite" + (f" ({quantize} quantization)" if quantize else ""))
        (folder / layout.TFLITE_FILE).write_bytes(
            tflite.convert_to_tflite(run.model, run.image_size, quantize, trust))
    if "tflite-int8" in formats:
        say(f"Converting to full-integer TFLite (calibrating on {int8.N_REPRESENTATIVE} "
            "train images)")
        (folder / layout.TFLITE_INT8_FILE).write_bytes(tflite.convert_to_tflite_int8(
            run.model, run.image_size, int8.representative_images(run)))
    if "onnx" in formats:
        say("Converting to ONNX")
        (folder / layout.ONNX_FILE).write_bytes(
            onnx.convert_to_onnx(run.model, run.image_size, run.class_names, trust))

    n_classes = len(run.class_names)
    trusted = trust is not None
    signatures = {"savedmodel": savedmodel.signature_doc(n_classes, trusted),
                  "tflite": tflite.signature_doc(n_classes, run.image_size, trusted),
                  "tflite-int8": tflite.int8_signature_doc(n_classes, run.image_size),
                  "onnx": onnx.signature_doc(n_classes, trusted)}
    report: dict[str, Any] = {
        "run": str(run.path),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "formats": list(formats),
        "quantize": quantize,
        "image_size": run.image_size,
        "class_names": list(run.class_names),
        "tolerance": {"max_abs_diff": parity.MAX_ABS_DIFF,
                      "min_top1_agreement": parity.MIN_TOP1_AGREEMENT},
        "signatures": {name: signatures[name] for name in formats if name in signatures},
        "trust": layout.TRUST_FILE if (folder / layout.TRUST_FILE).is_file() else None,
    }
    for name, file in (("tflite", layout.TFLITE_FILE), ("tflite-int8",
                       layout.TFLITE_INT8_FILE), ("onnx", layout.ONNX_FILE)):
        if name in formats:
            report[f"{name.replace('-', '_')}_bytes"] = (folder / file).stat().st_size
    if "tflite-int8" in formats:  # Always checked: it is the only guard on int8.
        say("Checking the int8 TFLite model on the run's test split")
        report["tflite_int8"] = int8.check_int8(run, folder / layout.TFLITE_INT8_FILE,
                                                int8_tolerance)
        say(f"  {int8.summary(report['tflite_int8'])}")
    if {"savedmodel", "tflite", "onnx"} & set(formats) and n_parity > 0:
        report.update(parity.check_parity(run, folder, formats, quantize, n_parity, say))
    elif "tflite-int8" in formats:
        report.update(checked=True, n_images=report["tflite_int8"]["n_images"],
                      sample="test", images="the run's whole test split")
    else:
        report.update(checked=False, why="n_parity=0" if n_parity == 0 else
                      f"{layout.MODEL_FILE} is a copy of the run's model")
    return report


def _check_options(formats: Sequence[str], quantize: str | None,
                   n_parity: int) -> tuple[str, ...]:
    """The formats, lower-cased and deduplicated; ConfigError for a bad option."""
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(dict.fromkeys(f.lower() for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"unknown export format {unknown or formats!r}; choose from "
                          f"{', '.join(FORMATS)}")
    if quantize not in tflite.QUANTIZATIONS:
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
            any(out.iterdir()) and not (out / layout.PARITY_FILE).is_file()):
        raise RunError(f"{out} is not a transferkit export folder; --overwrite only "
                       "replaces an earlier export. Choose another --out")


def _check_class_names(class_names: Sequence[str]) -> None:
    bad = [name for name in class_names if "\n" in name or "\r" in name or not name]
    if bad:
        raise RunError(f"class names {bad!r} cannot be written one per line in "
                       f"{layout.LABELS_TXT}; rename those class folders and retrain")
