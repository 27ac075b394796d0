"""The inspect views on a real run: quality numbers and the time of each view.

    KERAS_HOME=/work/keras-home nice -n 10 python benchmarks/inspect_views.py \\
        /work/runs/flowers5 --out /work/runs/inspect12

Prints, for 8 channels of the last block, the dream objective (start → end, and the
mean ± std of 8 random starts) and the top-patch activation against the 95th percentile
of random positions; the translation-invariance amplitude; the gradient-norm ratios;
and the seconds each view took (wall clock: on a shared machine, read them as rough),
first as the `inspect` commands (figures written to files), then as the demo's Inside tab
answers a user (warm handlers: the median of 5 calls after the first).
Writes every view's pictures and `benchmark.json` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--out", required=True)
    parser.add_argument("--layer", default="block_16_project_BN", help="the last block")
    parser.add_argument("--channels", default="0-7")
    parser.add_argument("--dream-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--max-images", type=int, default=400)
    args = parser.parse_args()

    import transferkit
    import transferkit.inspect as ins
    from transferkit.inspect.base import parse_channels

    out = Path(args.out)
    run = transferkit.load_run(args.run)
    photo = str(sorted(run.split_paths("test"))[0])
    report: dict = {"run": args.run, "photo": photo, "seconds": {}}

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        report["seconds"][name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {report['seconds'][name]} s", flush=True)
        return result

    timed("architecture", lambda: ins.architecture_view(run, out))
    timed("calculator", lambda: ins.calculator(32, 5, 0, 1, 20))
    timed("feature-maps", lambda: ins.feature_maps_view(run, photo, out=out))
    timed("feature-maps (one layer)", lambda: ins.feature_maps_view(
        run, photo, ["block_5_add"], out=out))
    timed("pooling", lambda: ins.pooling_view(run, photo, out=out))
    timed("filters", lambda: ins.filters_view(run, out=out))
    timed("filters (BN folded)", lambda: ins.filters_view(run, fold_batchnorm=True,
                                                          out=out / "folded"))
    patches = timed("top-patches", lambda: ins.top_patches_view(
        run, args.layer, args.channels, max_images=args.max_images, out=out))
    timed("top-patches block_12_add", lambda: ins.top_patches_view(
        run, "block_12_add", args.channels, max_images=args.max_images, out=out))
    report["top_patches"] = [{k: c[k] for k in ("channel", "top_mean", "random_p95")}
                             for c in patches["channels"]]
    dreams = []
    for channel in parse_channels(args.channels, run.model, args.layer):
        r = timed(f"dream channel {channel}", lambda: ins.dream_view(
            run, out, objective="channel", layer=args.layer, channel=channel,
            steps=args.steps, size=args.dream_size))
        dreams.append({k: r[k] for k in ("target", "start", "end", "random_mean",
                                         "random_std", "seconds")})
    report["dreams"] = dreams
    report["dream_classes"] = []
    for name in run.class_names:
        for objective in ("logit", "probability"):
            r = timed(f"dream {objective} {name}", lambda: ins.dream_view(
                run, out, objective=objective, class_name=name, steps=args.steps,
                size=args.dream_size))
            report["dream_classes"].append({k: r[k] for k in (
                "objective", "target", "start", "end", "random_mean", "random_std")})
    r = timed("dream neuron", lambda: ins.dream_view(
        run, out, objective="neuron", layer="block_12_add", channel=3, steps=args.steps,
        size=args.dream_size))
    report["dream_neuron"] = {k: r[k] for k in ("target", "start", "end")}
    r = timed("deepdream photo", lambda: ins.dream_view(
        run, out, objective="layer", layer="block_5_add", photo=photo, steps=32))
    report["deepdream"] = {k: r[k] for k in ("target", "start", "end", "size")}
    inv = timed("invariance", lambda: ins.invariance_view(run, photo, out))
    report["invariance"] = {"amplitude": inv["amplitude"], "class": inv["class"],
                            "max_feature_change": max(inv["feature_change"]),
                            "total_stride": inv["total_stride"]}
    grads = timed("gradients", lambda: ins.gradients_view(run, out=out))
    report["gradients"] = {"model_ratio": grads["ratio"],
                           "toy": {k: v["ratio"] for k, v in grads["toy"].items()}}
    timed("case-studies", lambda: ins.case_studies_view(out))
    report["tab_seconds"] = tab_timings(args.run, photo, args.layer)
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "seconds"}, indent=2))


def tab_timings(run_dir: str, photo: str, layer: str) -> dict[str, float]:
    """The Inside tab's handlers as the demo calls them: median seconds of 5 warm calls."""
    import statistics

    from transferkit.demo.inside_tab import InsideViews
    from transferkit.demo.session import Session
    from transferkit.inspect.feature_maps import default_layers

    views = InsideViews(Session(run_dir))
    payload = {"path": photo}
    calls = {"calculator": lambda: views.calculate(32, 5, 0, 1, 20, 3),
             "filters": views.filters}
    for name in default_layers(views.model):
        calls[f"feature maps + pooling {name}"] = lambda name=name: views.maps(payload, name)
    calls["dream channel 0, 64 steps"] = lambda: views.dream(
        "channel", layer, 0, views.run.class_names[0], 64, progress=lambda *a, **k: None)
    seconds = {}
    for name, call in calls.items():
        call()
        times = []
        for _ in range(1 if name.startswith("dream") else 5):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        seconds[name] = round(statistics.median(times), 3)
        print(f"tab {name}: {seconds[name]} s", flush=True)
    return seconds


if __name__ == "__main__":
    main()
