"""Phase 1 on cached features vs the plain recipe that recomputes the frozen backbone.

    python benchmarks/phase1_speed.py [--n 1024] [--image-size 224]

Both are measured in this run, on the same images: one epoch of `model.fit` on images
with the backbone frozen (what the Keras guide does every epoch), and one epoch of the
head on cached features (what transferkit does after computing them once).
"""

from __future__ import annotations

import argparse
import time

from transferkit.testing import flowers_dir, use_local_weights

use_local_weights()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from transferkit.backbones import get_backbone  # noqa: E402
from transferkit.data.pipeline import image_dataset  # noqa: E402
from transferkit.features import feature_extractor  # noqa: E402
from transferkit.model import build_classifier, set_trainable_blocks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1024, help="training images")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="mobilenet_v2_0.35")
    args = parser.parse_args()

    classes = sorted(p.name for p in flowers_dir().iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((flowers_dir() / c).glob("*"))]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(files), size=min(args.n, len(files)), replace=False)
    paths = [str(files[i][0]) for i in pick]
    labels = keras.utils.to_categorical([files[i][1] for i in pick], len(classes))

    model = build_classifier(get_backbone(args.backbone), len(classes), args.image_size)
    set_trainable_blocks(model, 0)
    model.compile("adam", "categorical_crossentropy")
    ds = image_dataset(paths, labels, args.image_size, 32).cache()
    model.fit(ds.take(2), epochs=1, verbose=0)  # warm-up: tracing, thread pools
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    recompute = time.perf_counter() - start

    start = time.perf_counter()
    features = feature_extractor(model).predict(image_dataset(paths, None, args.image_size,
                                                              32), verbose=0)
    caching = time.perf_counter() - start
    head = keras.Sequential([keras.Input(features.shape[1:]), keras.layers.Dropout(0.2),
                             keras.layers.Dense(len(classes), activation="softmax")])
    head.compile("adam", "categorical_crossentropy")
    head.fit(features, labels, epochs=1, batch_size=64, verbose=0)  # warm-up
    start = time.perf_counter()
    epochs = 10
    head.fit(features, labels, epochs=epochs, batch_size=64, verbose=0)
    cached = (time.perf_counter() - start) / epochs

    print(f"{len(paths)} images at {args.image_size} px, {args.backbone}")
    print(f"epoch recomputing the frozen backbone: {recompute:8.3f} s")
    print(f"epoch on cached features:              {cached:8.3f} s "
          f"({recompute / cached:.0f}x faster)")
    print(f"one-off feature caching:               {caching:8.3f} s "
          f"(pays for itself after {caching / max(recompute - cached, 1e-9):.1f} epochs)")


if __name__ == "__main__":
    main()
