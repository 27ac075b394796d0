"""The `transferkit` command: argument parsing and nothing else; the work is in the API.

Every error transferkit raises on purpose (`TransferkitError`), and any OSError (a full
disk, a folder that cannot be written), is printed as one line, `transferkit: error: ...`,
with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
from typing import Sequence

# Before TensorFlow is first imported (through transferkit.config): hide its C++ info and
# warning banners, which mean nothing to a user of the command line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transferkit.compare import add_compare, backbone_list, run_compare  # noqa: E402
from transferkit.accelerator import MIXED_PRECISION  # noqa: E402
from transferkit.budget.parse import PRESETS  # noqa: E402
from transferkit.config import DISTRIBUTE_CHOICES, TrainConfig  # noqa: E402
from transferkit.errors import TransferkitError  # noqa: E402
from transferkit.explain.registry import DEFAULT_METHOD, METHODS  # noqa: E402
from transferkit.doctor.command import add_doctor, run_doctor  # noqa: E402
from transferkit.experiments.command import add_experiment, run_experiment  # noqa: E402
from transferkit.inspect.command import add_inspect, run_inspect  # noqa: E402
from transferkit.packages import VersionAction  # noqa: E402
from transferkit.predict_command import add_predict, run_predict  # noqa: E402
from transferkit.report.command import add_report, run_report  # noqa: E402
from transferkit.serve_command import add_serve, run_serve  # noqa: E402
from transferkit.trust.command import add_calibrate, run_calibrate  # noqa: E402

_DEFAULTS = TrainConfig()


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier from a folder (or tfds:NAME)")
    p.add_argument("data", help="folder with one subfolder per class, or tfds:NAME")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--backbone", default=_DEFAULTS.backbone,
                   help=f"registry name (default {_DEFAULTS.backbone}; see `backbones`)")
    p.add_argument("--weights", default=_DEFAULTS.weights,
                   help="imagenet (default), none, or a path to a .h5/.weights.h5 file")
    p.add_argument("--image-size", type=int, help="input side (default: the backbone's)")
    p.add_argument("--val-split", type=_fraction, default=_DEFAULTS.val_split)
    p.add_argument("--test-split", type=_fraction, default=_DEFAULTS.test_split)
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--strategy", choices=["auto", "feature-extract", "fine-tune"],
                   default="auto", help="override the plan")
    p.add_argument("--unfreeze", type=int, help="fine-tune this many top blocks")
    p.add_argument("--distribute", choices=DISTRIBUTE_CHOICES,
                   default="auto", help="tf.distribute strategy (multi-worker: TF_CONFIG)")
    p.add_argument("--batch-size", type=int, help="per GPU (default: 32 on CPU, 128 on GPU)")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="auto")
    p.add_argument("--head-epochs", type=int, default=_DEFAULTS.head_epochs)
    p.add_argument("--fine-tune-epochs", type=int, default=_DEFAULTS.fine_tune_epochs)
    p.add_argument("--augment-copies", type=int, default=_DEFAULTS.augment_copies)
    p.add_argument("--min-per-class", type=int, default=_DEFAULTS.min_per_class)
    p.add_argument("--workers", type=int, default=_DEFAULTS.workers)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run (an unfinished run with the same options "
                        "is resumed without it)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="skip the trust outputs (see `transferkit calibrate`)")
    p.add_argument("--time-limit", help="budget for the whole command, e.g. 90s, 20m, 1h, "
                   "1h30m: the plan measures this machine and fits the default recipe into it "
                   "(fewer epochs or a smaller size when short, never more); time left "
                   "buys ensemble members, kept when validation prefers them")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="fast: the default recipe (~5 CPU minutes); balanced: 20m; best: 1h "
                   "(--time-limit wins over the preset's budget)")
    p.add_argument("--exclude-flagged", action="store_true",
                   help="leave the doctor's label issues and outliers out of the split")
    p.add_argument("--ensemble", type=int, default=1,
                   help="train K members and save their average as one model")
    p.add_argument("--backbones", type=backbone_list,
                   help="an ensemble of backbones: a,b,c (one per member)")
    p.add_argument("--split-seed", type=int, help="seed of the split (default --seed)")
    p.add_argument("--teacher", help="a finished run (e.g. an ensemble) to distill: this "
                   "run trains on its soft labels, on its split")
    p.add_argument("--distill", action="store_true", help="with --ensemble/--backbones: "
                   "then train one student of member 1's backbone into RUN/student")
    p.add_argument("--distill-alpha", type=float, default=_DEFAULTS.distill_alpha,
                   help="weight of the teacher's soft labels (the rest: the labels)")
    p.add_argument("--distill-temperature", type=float,
                   default=_DEFAULTS.distill_temperature,
                   help="temperature softening the teacher's probabilities")
    p.add_argument("--no-extra-members", dest="extra_members", action="store_false",
                   help="a --time-limit stops after the default run instead of spending "
                   "the time left on ensemble members")


def _train(args) -> int:
    from transferkit.training import train

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
               if f.name != "data" and hasattr(args, f.name)}
    run = train(args.data, args.out, overwrite=args.overwrite, **options)
    if args.quiet and run is not None:  # None: a multi-worker run's other worker
        print(json.dumps(run.metrics))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run or an exported model on a folder")
    p.add_argument("run", help="run directory, export folder, SavedModel directory, "
                               ".tflite or .onnx file")
    p.add_argument("--data", required=True, help="folder whose classes are a subset of the run's")
    p.add_argument("--unknown", help="folder of images of none of the run's classes "
                                     "(searched recursively): how well they are flagged")
    p.add_argument("--json", action="store_true", help="print JSON")


def _evaluate(args) -> int:
    from transferkit.predictor import load_predictor

    m = load_predictor(args.run).evaluate(args.data, unknown=args.unknown)
    if args.json:  # strict JSON: a measure with nothing to measure (NaN) is null
        print(json.dumps({k: None if isinstance(v, float) and v != v else v
                          for k, v in m.items()}))
        return 0
    print(f"accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ECE {m['ece']:.4f}  "
          f"on {m['n_images']} images ({m['n_skipped']} skipped)")
    if "coverage" in m:
        print(f"answered {m['coverage']:.1%} (not sure on the rest), of which "
              f"{m['selective_accuracy']:.1%} right")
    if "auroc" in m:
        print(f"unknown images: {m['n_flagged_unknown']} of {m['n_unknown']} flagged; "
              f"AUROC {m['auroc']:.3f}, FPR at 95% TPR {m['fpr_at_95_tpr']:.3f}")
    return 0


def _add_audit(sub) -> None:
    p = sub.add_parser("audit", help="what would be used or skipped, and why")
    p.add_argument("data", help="folder with one subfolder per class")
    p.add_argument("--csv", help="also write the audit to this CSV file")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.add_argument("--workers", type=int, default=_DEFAULTS.workers)


def _audit(args) -> int:
    from transferkit.data.scan import audit_report, scan_folder, summarize_classes, \
        write_audit_csv

    index = scan_folder(args.data, workers=args.workers, progress=not args.json)
    if args.csv:
        write_audit_csv(index, args.csv)
    if args.json:
        print(index[["path", "class", "status", "reason"]].to_json(orient="records"))
        return 0
    print(audit_report(index, max_files=None))
    classes, warnings = summarize_classes(index)
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"usable classes: {', '.join(classes)}")
    return 0


def _add_backbones(sub) -> None:
    p = sub.add_parser("backbones", help="the backbone zoo, and which weights are cached")
    p.add_argument("--json", action="store_true")


def _backbones(args) -> int:
    from transferkit.backbones import BACKBONES, is_cached, keras_cache_dir

    rows = [{"name": b.name, "keras": b.constructor, "default_size": b.default_size,
             "preprocessing": b.preprocessing, "last_conv_layer": b.last_conv_layer,
             "cached": is_cached(b)} for b in BACKBONES.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Keras weight cache: {keras_cache_dir()}")
    print(f"{'name':22} {'keras.applications':20} {'size':>4}  cached")
    for r in rows:
        cached = {True: "yes", False: "no", None: "?"}[r["cached"]]
        print(f"{r['name']:22} {r['keras']:20} {r['default_size']:>4}  {cached}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a SavedModel / TFLite / ONNX / Keras file")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", default="savedmodel",
                   help="comma-separated: savedmodel,tflite,tflite-int8,onnx,keras "
                        "(default savedmodel)")
    p.add_argument("--quantize", choices=["dynamic", "float16"], help="TFLite quantization")
    p.add_argument("--int8-min-agreement", type=float, default=0.98,
                   help="tflite-int8 is kept only if its top-1 answers agree with the "
                        "float model's on this share of the test images (default 0.98)")
    p.add_argument("--int8-max-drop", type=float, default=0.01,
                   help="... and its test accuracy drops at most this much (default 0.01)")
    p.add_argument("--out", help="export folder (default RUN/export)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")


def _export(args) -> int:
    from transferkit.export import export_run
    from transferkit.export.int8 import Int8Tolerance

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    tolerance = Int8Tolerance(args.int8_min_agreement, args.int8_max_drop)
    report = export_run(args.run, out=args.out, formats=formats, quantize=args.quantize,
                        overwrite=args.overwrite, int8_tolerance=tolerance,
                        verbose=0 if args.json else 1)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="heat maps: which pixels drove a prediction")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--method", action="append", help=_method_help(DEFAULT_METHOD))
    p.add_argument("--class", dest="class_name", help="class to explain (default: top)")
    p.add_argument("--out", default="explain", help="output folder (default ./explain)")
    p.add_argument("--member", type=int, help="an ensemble's member, from 1 (default: "
                                              "the mean of the members' maps)")
    p.add_argument("--json", action="store_true")


def _explain(args) -> int:
    from transferkit.ensemble.members import member_argument
    from transferkit.explain.report import explain_files

    records = explain_files(args.run, args.images,
                            methods=_methods(args.method, DEFAULT_METHOD),
                            class_name=args.class_name, out=args.out,
                            member=member_argument(args.member))
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            print(f"{r['path']}: {r['method']}: {r['label']} {r['probability']:.3f} "
                  f"→ {r['overlay']}")
    return 0


def _method_help(default: str) -> str:
    names = ", ".join(f"{m} (default)" if m == default else m for m in METHODS)
    return f"{names}, or all{' (default)' if default == 'all' else ''}; comma-separated " \
        "or repeated"


def _methods(values: list[str] | None, default: str) -> list[str]:
    """`--method` values, repeated and/or comma-separated, as one list of names."""
    return [m.strip() for value in (values or [default]) for m in value.split(",")
            if m.strip()]


def _add_explain_check(sub) -> None:
    p = sub.add_parser("explain-check", help="are the heat maps faithful to the model?")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", required=True, help="folder of images the model never saw")
    p.add_argument("--n", type=int, default=50, help="number of images")
    p.add_argument("--method", action="append", help=_method_help("all"))
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the image sample, random maps and randomized model")
    p.add_argument("--out", help="folder for explain_check.csv (default: the run directory)")
    p.add_argument("--json", action="store_true")


def _explain_check(args) -> int:
    from transferkit.explain.faithfulness import explain_check

    table = explain_check(args.run, args.data, n=args.n, methods=_methods(args.method, "all"),
                          seed=args.seed, out=args.out)
    if args.json:
        print(table.to_json(orient="records"))
    else:
        print(table.to_string(index=False))
    return 0


COMMANDS = {
    "train": (_add_train, _train), "evaluate": (_add_evaluate, _evaluate),
    "predict": (add_predict, run_predict), "audit": (_add_audit, _audit),
    "backbones": (_add_backbones, _backbones), "export": (_add_export, _export),
    "explain": (_add_explain, _explain), "explain-check": (_add_explain_check, _explain_check),
    "serve": (add_serve, run_serve),  # transferkit/serve_command.py
    "inspect": (add_inspect, run_inspect),  # transferkit/inspect/command.py
    "calibrate": (add_calibrate, run_calibrate),  # transferkit/trust/command.py
    "experiment": (add_experiment, run_experiment),  # transferkit/experiments/command.py
    "doctor": (add_doctor, run_doctor), "report": (add_report, run_report),
    "compare": (add_compare, run_compare),  # transferkit/compare.py
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferkit",
        description="A folder of images → a trustworthy, explainable, deployable classifier.")
    parser.add_argument("--version", action=VersionAction)  # transferkit/packages.py
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `transferkit` and `python -m transferkit`."""
    args = build_parser().parse_args(argv)
    from transferkit.packages import tensorflow_conflict

    if conflict := tensorflow_conflict():
        print(f"transferkit: warning: {conflict}", file=sys.stderr)
    try:
        return COMMANDS[args.command][1](args)
    except TransferkitError as e:
        print(f"transferkit: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # Disk full, permissions... raised outside transferkit.fileio.
        from transferkit.fileio import readable_error

        message = readable_error(e) if e.errno == errno.ENOSPC else \
            f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        print(f"transferkit: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = " (run the same command again to resume)" if args.command == "train" \
            else ""
        print(f"transferkit: interrupted{resumable}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
