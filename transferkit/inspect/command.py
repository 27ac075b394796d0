"""`transferkit inspect VIEW [RUN]`: argument parsing for the views; the work is in the API.

Registered by `transferkit.cli` (`COMMANDS["inspect"] = (add_inspect, run_inspect)`).
Each view prints one JSON object with `--json` (`view`, `files` and its records), else a
short summary and the pictures it wrote.
"""

from __future__ import annotations

import json
import sys
from typing import Any

OUT_HELP = "output folder (default RUN/inspect; case-studies: ./inspect)"


def _add(views, name: str, help: str, run: bool = True, image: bool = False):
    p = views.add_parser(name, help=help)
    if run:
        p.add_argument("run", help="run directory")
        p.add_argument("--member", type=int, help="an ensemble's member, from 1 "
                                                  "(default 1)")
    if image:
        p.add_argument("image", help="an image file")
    p.add_argument("--out", help=OUT_HELP)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    return p


def add_inspect(sub) -> None:
    """Adds the `inspect` command and its views to the CLI's subparsers."""
    from transferkit.inspect.dream import OBJECTIVES

    p = sub.add_parser("inspect", help="inside the network: what each layer computes")
    views = p.add_subparsers(dest="view", required=True, metavar="VIEW")
    _add(views, "architecture", "layer table: shapes, padding, params, receptive fields")
    f = _add(views, "filters", "first-layer filters and effective filters")
    f.add_argument("--fold-bn", action="store_true", help="fold BatchNorm's scale in")
    f = _add(views, "feature-maps", "feature maps of an image", image=True)
    f.add_argument("--layer", action="append", help="layer (repeatable; default: one per "
                                                    "resolution)")
    f.add_argument("--channels", type=int, default=16, help="most active channels shown")
    f = _add(views, "pooling", "max pooling of a feature map, and the model's own",
             image=True)
    f.add_argument("--layer")
    f.add_argument("--channel", type=int, help="default: the most active")
    f.add_argument("--size", type=int, default=2, help="pooling window and stride")
    f = _add(views, "top-patches", "image patches that excite a channel most")
    f.add_argument("--layer", help="default: the last feature map")
    f.add_argument("--channels", default="0-7", help="e.g. 0-7 or 1,5,9")
    f.add_argument("--top", type=int, default=6, help="patches per channel")
    f.add_argument("--max-images", type=int, default=400,
                   help="images of the run searched (0: all)")
    f = _add(views, "dream", "activation maximization (and DeepDream)")
    f.add_argument("--objective", choices=OBJECTIVES, default="channel")
    f.add_argument("--layer", help="default: the last feature map")
    f.add_argument("--channel", type=int)
    f.add_argument("--neuron", help="Y,X of the unit (neuron objective; default centre)")
    f.add_argument("--class", dest="class_name", help="class (logit, probability)")
    f.add_argument("--steps", type=int, default=96)
    f.add_argument("--size", type=int, help="input side (default the run's)")
    f.add_argument("--image", help="start from this photo, at its size (DeepDream)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-fourier", action="store_true",
                   help="plain gradient steps (no decorrelated Fourier preconditioner)")
    f = _add(views, "invariance", "class probability as the object moves", image=True)
    f.add_argument("--max-shift", type=int, help="pixels (default twice the stride)")
    f.add_argument("--step", type=int, default=1)
    f = _add(views, "gradients", "gradient norms through depth, and the toy experiment")
    f.add_argument("--n", type=int, default=16, help="test images in the batch")
    f.add_argument("--toy-steps", type=int, default=5,
                   help="training steps of the 20-layer toy networks")
    _add(views, "case-studies", "LeNet-5, AlexNet, inception module, residual block",
         run=False)
    f = _add(views, "embedding", "t-SNE map and grid of the CNN codes, before vs after "
                                 "fine-tuning")
    f.add_argument("--max-images", type=int, default=2000,
                   help="images mapped, a stratified sample (0: all)")
    f.add_argument("--grid", type=int, default=24, help="cells per side of the grid view")
    f.add_argument("--mode", choices=("assign", "nearest"), default="assign",
                   help="grid cells: one image each (assign) or each its nearest")
    f.add_argument("--seed", type=int, default=0)
    f = _add(views, "depth-probe", "linear separability of the classes by depth")
    f.add_argument("--depths", type=int, default=6, help="evenly spaced blocks (0: all)")
    f.add_argument("--max-images", type=int, default=3000,
                   help="training and test images read, a stratified sample (0: all)")
    f.add_argument("--seed", type=int, default=0)


def _progress(enabled: bool):
    if not enabled:
        return None

    def show(fraction: float) -> None:
        print(f"\r  {fraction:6.1%}", end="" if fraction < 1 else "\n", file=sys.stderr,
              flush=True)
    return show


def _call(args) -> dict[str, Any]:
    import transferkit.inspect as ins

    view, out = args.view, args.out
    if view == "case-studies":
        return ins.case_studies_view(out)
    if view == "architecture":
        return ins.architecture_view(args.run, out)
    if view == "filters":
        return ins.filters_view(args.run, fold_batchnorm=args.fold_bn, out=out)
    if view == "feature-maps":
        return ins.feature_maps_view(args.run, args.image, args.layer, args.channels, out)
    if view == "pooling":
        return ins.pooling_view(args.run, args.image, args.layer, args.channel, args.size,
                                out)
    if view == "top-patches":
        return ins.top_patches_view(args.run, args.layer, args.channels, args.top,
                                    args.max_images or None, out,
                                    progress=_progress(not args.json))
    if view == "dream":
        return ins.dream_view(args.run, out, objective=args.objective, layer=args.layer,
                              channel=args.channel, position=_position(args.neuron),
                              class_name=args.class_name, steps=args.steps,
                              size=args.size, photo=args.image, seed=args.seed,
                              fourier=not args.no_fourier,
                              progress=_progress(not args.json))
    if view == "embedding":
        return ins.embedding_view(args.run, out, max_images=args.max_images or None,
                                  grid=args.grid, mode=args.mode, seed=args.seed,
                                  progress=_progress(not args.json),
                                  verbose=0 if args.json else 1)
    if view == "depth-probe":
        return ins.depth_probe_view(args.run, out, n_depths=args.depths or None,
                                    max_images=args.max_images or None, seed=args.seed,
                                    progress=_progress(not args.json),
                                    verbose=0 if args.json else 1)
    if view == "invariance":
        return ins.invariance_view(args.run, args.image, out, max_shift=args.max_shift,
                                   step=args.step)
    return ins.gradients_view(args.run, n_images=args.n, toy_steps=args.toy_steps, out=out)


def _position(text: str | None):
    from transferkit.errors import ConfigError

    if text is None:
        return None
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--neuron {text!r}: give the unit as Y,X, e.g. 2,3") from None
    return y, x


def _summary(record: dict) -> list[str]:
    view = record["view"]
    if view == "dream":
        return [f"{record['objective']} {record['target']}: {record['start']:.4g} → "
                f"{record['end']:.4g} in {record['steps']} steps ({record['seconds']:.1f} s)"]
    if view == "top-patches":
        return [f"{record['layer']} channel {c['channel']}: top {c['top_mean']:.3g}, random "
                f"95th percentile {c['random_p95']:.3g}" for c in record["channels"]]
    if view == "invariance":
        return [f"P({record['class']}) over {len(record['shifts'])} shifts: amplitude "
                f"{record['amplitude']:.3f}; total stride {record['total_stride']} px"]
    if view == "gradients":
        toy = ", ".join(f"{k} {v['ratio']:.2e}" for k, v in record["toy"].items())
        return [f"first/last gradient norm: this model {record['ratio']:.3g}; 20-layer toy "
                f"networks: {toy}"]
    if view == "embedding":
        return record["notes"] + [
            f"{r['features']} codes of {r['n_images']} images: trustworthiness "
            f"{r['trustworthiness']:.3f}, kNN accuracy {r['knn_accuracy']:.3f} "
            f"(2-D: {r['knn_accuracy_2d']:.3f})" for r in record["records"]]
    if view == "depth-probe":
        return record["notes"] + [
            f"{r['features']} depth {r['depth']} ({r['layer']}, {r['channels']} channels): "
            f"probe accuracy {r['accuracy']:.3f}" for r in record["records"]]
    if view == "architecture":
        return [f"{len(record['layers'])} layers, "
                f"{sum(r['params'] for r in record['layers']):,} parameters"]
    return []


def run_inspect(args) -> int:
    """Runs one view; prints its JSON record or a summary and the files written."""
    if getattr(args, "member", None) is not None:  # an ensemble's member N (1-based)
        from transferkit.ensemble.members import inspected_run, member_argument
        from transferkit.run import load_run

        args.run = inspected_run(load_run(args.run), member_argument(args.member))
    record = _call(args)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    for line in _summary(record):
        print(line)
    for path in record["files"]:
        print(f"wrote {path}")
    return 0
