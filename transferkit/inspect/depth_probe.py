"""Linear separability by depth: the manifold hypothesis, measured on the run's images.

Each block of the backbone re-represents the image; the lecture's claim is that the
classes, tangled in pixel space, become linearly separable with depth. The probe: the
global-average-pooled output of each block (or 6 evenly spaced ones), a logistic
regression per depth fit on the training split and scored on the test split, for the
ImageNet backbone (before fine-tuning) and the fine-tuned one. One forward pass per
image and model collects every depth (the pooling is inside the graph, so no feature
map is ever held). A small t-SNE of the test images per depth shows the same story.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import keras
import numpy as np

from transferkit.errors import ConfigError
from transferkit.fileio import subplots
from transferkit.inspect.base import Output, as_model, check_layer

DEPTHS = 6
TSNE_IMAGES = 300      # test images in each per-depth t-SNE


def probe_layers(model: keras.Model, n_depths: int | None = DEPTHS) -> list[str]:
    """The last layer of each backbone block (`model.backbone_blocks`), or `n_depths`
    of them evenly spaced (the first and the last block always included)."""
    from transferkit.model import backbone_blocks

    ends = [block[-1].name for block in backbone_blocks(model) if block]
    if n_depths is None or n_depths >= len(ends):
        return ends
    picks = np.unique(np.rint(np.linspace(0, len(ends) - 1, max(2, n_depths))).astype(int))
    return [ends[i] for i in picks]


def pooled_features(model: keras.Model, images: Any, layers: Sequence[str],
                    verbose: int = 0) -> list[np.ndarray]:
    """Global-average-pooled outputs of `layers` `[N, C_l]`, in one pass over `images`.

    Args:
        model: The classifier.
        images: A float32 batch `[N, S, S, 3]` or a `tf.data.Dataset` of batches.
        layers: Layers with a spatial map.
        verbose: Keras progress bar.
    """
    names = [check_layer(model, name) for name in layers]
    outputs = [keras.ops.mean(model.get_layer(n).output, axis=(1, 2)) for n in names]
    pooled = keras.Model(model.inputs[0], outputs).predict(images, verbose=verbose)
    return [np.asarray(p, np.float32) for p in (pooled if len(names) > 1 else [pooled])]


def probe_accuracy(x_train: np.ndarray, y_train: Sequence[int], x_test: np.ndarray,
                   y_test: Sequence[int], seed: int = 0) -> float:
    """Test accuracy of a logistic regression (on standardized features) fit on train."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000,
                                                               random_state=seed))
    return float(probe.fit(x_train, y_train).score(x_test, y_test))


def imagenet_model(run: Any) -> keras.Model | None:
    """The run's classifier with the backbone's pretrained weights (None: `--weights none`)."""
    from transferkit.backbones import get_backbone
    from transferkit.model import build_classifier

    if run.config.weights == "none":
        return None
    return build_classifier(get_backbone(run.config.backbone), len(run.class_names),
                            run.image_size, run.config.weights)


def depth_probe(source: Any, layers: Sequence[str] | None = None,
                n_depths: int | None = DEPTHS, max_images: int | None = 3000,
                seed: int = 0, verbose: int = 0) -> dict:
    """The probe's accuracy at each depth, for the ImageNet and the fine-tuned backbone.

    Args:
        source: A run or run directory.
        layers: The depths (default `probe_layers(model, n_depths)`).
        n_depths: How many evenly spaced blocks (None: every block).
        max_images: Training and test images read (a stratified sample; None: all).
        seed: Seed of the sample and the probes.
        verbose: Keras progress bar while the features are computed.

    Returns:
        `{"layers", "labels", "test" (mask), "sets": {name: {"features": [per depth],
        "accuracy": [per depth]}}, "notes", "seconds"}`.
    """
    from transferkit.data.pipeline import image_dataset
    from transferkit.inspect.embedding import stratified_sample

    model, run = as_model(source)
    if run is None:
        raise ConfigError("the depth probe reads a run's images: pass a run directory")
    start = time.perf_counter()
    layers = list(layers) if layers else probe_layers(model, n_depths)
    splits = run.splits[run.splits["split"].isin(["train", "test"])]
    labels = splits["class"].map(run.class_names.index).to_numpy()
    picked = stratified_sample(labels, max_images, seed)
    notes = [] if len(picked) == len(splits) else \
        [f"a stratified sample of {len(picked)} of the {len(splits)} training and test "
         f"images (--max-images {max_images})"]
    rows = splits.iloc[picked]
    root = run.data_folder
    models = {"fine-tuned": model}
    frozen = (run.plan or {}).get("unfreeze_blocks") == 0
    if run.config.weights == "none":
        notes.append("trained from scratch (--weights none): no ImageNet backbone")
    elif frozen:
        notes.append("feature extraction: the backbone was never fine-tuned, so it is "
                     "the ImageNet one (one set)")
        models = {"imagenet": model}
    else:
        models = {"imagenet": imagenet_model(run), "fine-tuned": model}
    test = (rows["split"] == "test").to_numpy()
    y = labels[picked]
    sets = {}
    for name, net in models.items():
        images = image_dataset([root / p for p in rows["path"]], None, run.image_size,
                               run.config.batch_size, workers=run.config.workers)
        features = pooled_features(net, images, layers, verbose)
        if len(features[0]) != len(rows):
            raise ConfigError(f"{len(rows) - len(features[0])} of the run's images can no "
                              f"longer be read under {root}; restore them")
        sets[name] = {"features": features, "accuracy": [
            probe_accuracy(f[~test], y[~test], f[test], y[test], seed) for f in features]}
    return {"layers": layers, "labels": y, "test": test, "sets": sets, "notes": notes,
            "seconds": time.perf_counter() - start}


def depth_probe_view(source: Any, out: Any = None, n_depths: int | None = DEPTHS,
                     max_images: int | None = 3000, seed: int = 0,
                     progress: Callable[[float], None] | None = None,
                     verbose: int = 0) -> dict:
    """`transferkit inspect depth-probe`: the accuracy-vs-depth curve and a t-SNE per depth.

    Args:
        source: A run or run directory.
        out: Output folder (default `RUN/inspect/`).
        n_depths: Evenly spaced blocks probed (None: every block).
        max_images: Training and test images read (a stratified sample; None: all).
        seed: Seed of the sample, the probes and t-SNE.
        progress: Called with the fraction of the per-depth t-SNE maps done.
        verbose: Keras progress bar while the features are computed.

    Returns:
        `{"view": "depth-probe", "files", "records": [{"features", "depth", "layer",
        "accuracy", "channels"}], "chance", "notes", "seconds"}`.
    """
    start = time.perf_counter()
    _, run = as_model(source)
    result = depth_probe(source, None, n_depths, max_images, seed, verbose)
    output = Output(out, run)
    test_labels = result["labels"][result["test"]]
    chance = float(np.bincount(test_labels).max() / len(test_labels))
    output.png("depth_probe", probe_figure(result["layers"], {
        name: s["accuracy"] for name, s in result["sets"].items()}, chance))
    output.png("depth_tsne", _tsne_figure(result, run.class_names, seed, progress))
    records = [{"features": name, "depth": d + 1, "layer": layer,
                "accuracy": s["accuracy"][d], "channels": int(s["features"][d].shape[1])}
               for name, s in result["sets"].items()
               for d, layer in enumerate(result["layers"])]
    return {"view": "depth-probe", "files": output.files, "records": records,
            "chance": chance, "notes": result["notes"],
            "seconds": time.perf_counter() - start}


def probe_figure(layers: Sequence[str], accuracies: dict[str, Sequence[float]],
                 chance: float | None = None):
    """The accuracy-vs-depth curve of each feature set (a matplotlib figure)."""
    fig, ax = subplots(figsize=(7, 3.6))
    depth = np.arange(1, len(layers) + 1)
    for name, values in accuracies.items():
        ax.plot(depth, values, "o-", label=f"{name} backbone")
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", label="chance (largest class)")
    ax.set_xticks(depth, [f"{d}\n{n}" for d, n in zip(depth, layers)], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel("depth (block output, global-average-pooled)")
    ax.set_ylabel("linear probe test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _tsne_figure(result: dict, class_names: Sequence[str], seed: int,
                 progress: Callable[[float], None] | None):
    from matplotlib.lines import Line2D

    from transferkit.inspect.embedding import class_color, stratified_sample, tsne

    test = np.flatnonzero(result["test"])
    shown = test[stratified_sample(result["labels"][test], TSNE_IMAGES, seed)]
    y = result["labels"][shown]
    sets, layers = result["sets"], result["layers"]
    colors = np.array([class_color(label) for label in y]) / 255.0
    fig, axes = subplots(len(sets), len(layers), squeeze=False,
                         figsize=(2.2 * len(layers), 2.3 * len(sets)))
    done, total = 0, len(sets) * len(layers)
    for row, (name, s) in zip(axes, sets.items()):
        for d, ax in enumerate(row):
            positions = tsne(s["features"][d][shown], seed)
            ax.scatter(positions[:, 0], positions[:, 1], c=colors, s=5)
            ax.set_title(f"{name} {d + 1}: {s['accuracy'][d]:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            done += 1
            if progress:
                progress(done / total)
    handles = [Line2D([], [], marker="o", lw=0, color=np.array(class_color(i)) / 255,
                      label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
