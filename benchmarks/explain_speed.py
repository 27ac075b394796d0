"""Cost of each explanation method, in forward passes of the model it explains.

    .venv/bin/python benchmarks/explain_speed.py
    .venv/bin/python benchmarks/explain_speed.py --backbone mobilenet_v2_0.5 --image-size 160

Builds a classifier (ImageNet backbone weights from the local weights folder, random
head: speed does not depend on the head's training), makes every explainer with
`make_explainers` (one shared graph), and reports:

- the one-time cost: building and tracing the shared gradient graph (the first call);
- batch-1 wall time per method, median of interleaved round-robin calls (background
  load hits every method alike), and its ratio to one forward pass (`predict_on_batch`);
  Grad-CAM also alone, with its own graph, whose backward pass stops at the feature map
  (the shared one continues to the pixels for the pixel-space methods).

Expected: Grad-CAM at most about 3 forward passes (a backward pass costs about two
forwards); Score-CAM top_k / batch_size forward batches more; SmoothGrad and Integrated
Gradients a backward pass per noisy copy or path point.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from transferkit.testing import use_local_weights

use_local_weights()  # Before the first `import keras`.

import numpy as np  # noqa: E402

from transferkit.backbones import get_backbone  # noqa: E402
from transferkit.explain import GradCAM, make_explainers  # noqa: E402
from transferkit.model import build_classifier  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2_0.35")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per method")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    model = build_classifier(get_backbone(args.backbone), 5, args.image_size)
    image = np.random.default_rng(0).uniform(0, 255, (1, args.image_size, args.image_size, 3)
                                             ).astype(np.float32)
    start = time.perf_counter()
    explainers = make_explainers(model)
    explainers["gradcam"](image)  # builds and traces the shared graph
    setup = time.perf_counter() - start
    print(f"{args.backbone} at {args.image_size} px, {os.cpu_count()} CPUs: shared graph "
          f"built and traced in {setup:.1f} s")

    alone = GradCAM(model)  # its own graph: the backward pass stops at the feature map
    alone(image)
    methods = {"forward": lambda: model.predict_on_batch(image),
               "gradcam (own graph)": lambda: alone(image)}
    methods.update({name: (lambda e=explainer: e(image)) for name, explainer in
                    explainers.items()})
    times: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(args.warmup + args.calls):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    forward = float(np.median(times["forward"]))
    print(f"\nBatch-1 wall time, median of {args.calls} interleaved calls after "
          f"{args.warmup} warm-up:")
    for name, values in times.items():
        median = float(np.median(values))
        print(f"  {name:22s} {median * 1000:9.1f} ms  {median / forward:7.1f}x forward")
    ratio = float(np.median(times["gradcam (own graph)"])) / forward
    print(f"\nGrad-CAM (own graph) / forward = {ratio:.1f} (one forward + one backward: "
          "about 3 at most)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
