"""CNN codes: the pooled features of the run's images, mapped to 2-D with t-SNE.

The lecture's t-SNE of the penultimate layer, on the user's images: each image at its
t-SNE position, framed by its class colour, the misclassified test images marked; the
same map as a grid (every cell an image: a one-to-one assignment of images to cells with
`scipy.optimize.linear_sum_assignment`, or each cell's nearest image); and the ImageNet
backbone's codes (before fine-tuning) beside the fine-tuned ones.

The codes are the run's feature store (`Run.features`): `imagenet` as training started,
`final` as trained. How faithful a map is, is measured, not judged by eye:
`sklearn.manifold.trustworthiness` (are a point's map neighbours its true neighbours?)
and the accuracy of a k-nearest-neighbour classifier fit on the training split and
scored on the test split, in the original space and in 2-D.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from transferkit.errors import ConfigError, RunError
from transferkit.fileio import subplots
from transferkit.inspect.base import Output, as_model, tile_grid

PCA_DIMS = 50          # t-SNE on the first 50 principal components (the usual practice)
PERPLEXITY = 30.0
NEIGHBOURS = 5         # kNN classifier and trustworthiness
THUMB = 32             # thumbnail side in the pictures, frame included
FRAME = 3


def perplexity_for(n: int, wanted: float = PERPLEXITY) -> float:
    """t-SNE's perplexity for `n` points: `wanted`, but at most (n - 1) / 3.

    A perplexity is an effective number of neighbours; it must stay below the number of
    other points (scikit-learn refuses perplexity >= n), and 3 perplexities of
    neighbours are what its nearest-neighbour search looks at.
    """
    return float(min(wanted, max(1.0, (n - 1) / 3.0)))


def tsne(features: np.ndarray, seed: int = 0, perplexity: float = PERPLEXITY
         ) -> np.ndarray:
    """2-D t-SNE positions `[N, 2]`: PCA to 50 dimensions first, seeded.

    Raises:
        ConfigError: Fewer than 4 points.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, np.float32)
    if len(x) < 4:
        raise ConfigError(f"a t-SNE map needs at least 4 images, got {len(x)}")
    dims = min(PCA_DIMS, len(x), x.shape[1])
    if x.shape[1] > dims:
        x = PCA(dims, random_state=seed).fit_transform(x)
    # One OpenMP thread: on a few shared cores t-SNE's spinning threads wait for each
    # other (2,000 points: 62 s with the default threads, 12 s with one, on 2 busy cores).
    with threadpool_limits(1, user_api="openmp"):
        return TSNE(2, perplexity=perplexity_for(len(x), perplexity), init="pca",
                    learning_rate="auto", random_state=seed).fit_transform(x).astype(
                        np.float32)


def grid_cells(positions: np.ndarray, rows: int, columns: int, mode: str = "assign"
               ) -> np.ndarray:
    """The image shown in each cell of a `rows` x `columns` grid laid over a 2-D map.

    Args:
        positions: `[N, 2]` map positions (x, y); y grows upwards, row 0 is the top.
        rows: Grid rows.
        columns: Grid columns.
        mode: `"assign"`: each cell a different image, the total squared distance of
            images to their cells minimal (`linear_sum_assignment`; needs N >= cells);
            `"nearest"`: each cell its nearest image (images may repeat).

    Returns:
        `[rows * columns]` image indices, row by row.

    Raises:
        ConfigError: An unknown mode, or fewer images than cells in assign mode.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    p = np.asarray(positions, np.float64)
    span = np.maximum(p.max(axis=0) - p.min(axis=0), 1e-12)
    p = (p - p.min(axis=0)) / span
    r, c = np.divmod(np.arange(rows * columns), columns)
    centres = np.stack([(c + 0.5) / columns, 1.0 - (r + 0.5) / rows], axis=1)
    cost = cdist(centres, p, "sqeuclidean")
    if mode == "nearest":
        return cost.argmin(axis=1)
    if mode != "assign":
        raise ConfigError(f"unknown grid mode {mode!r}; choose assign or nearest")
    if len(p) < len(centres):
        raise ConfigError(f"a one-to-one grid of {rows}x{columns} cells needs at least "
                          f"{len(centres)} images, got {len(p)}; use a smaller grid")
    cells, images = linear_sum_assignment(cost)
    picked = np.empty(len(centres), np.int64)
    picked[cells] = images
    return picked


def knn_accuracy(x_train: np.ndarray, y_train: Sequence[int], x_test: np.ndarray,
                 y_test: Sequence[int], k: int = NEIGHBOURS) -> float:
    """Test accuracy of a k-nearest-neighbour classifier fit on the training rows."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(x_train)))
    return float(knn.fit(x_train, y_train).score(x_test, y_test))


def stratified_sample(labels: Sequence[Any], max_images: int | None, seed: int = 0
                      ) -> np.ndarray:
    """Sorted positions of at most `max_images` rows, each class in proportion."""
    labels = np.asarray(labels)
    if max_images is None or len(labels) <= max_images:
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    picked, _ = train_test_split(np.arange(len(labels)), train_size=max_images,
                                 stratify=labels, random_state=seed)
    return np.sort(picked)


def feature_sets(run: Any, verbose: int = 0
                 ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """The run's CNN codes from its feature store: `{"imagenet", "fine-tuned"}` → `[N, D]`.

    A feature-extraction run has one set (its backbone never changed: `imagenet`), a
    run trained from scratch one too (`fine-tuned`: there are no ImageNet codes), and so
    does a run whose ImageNet codes were never stored. Each case is said in the notes.

    Args:
        run: The run.
        verbose: Keras progress bar when the final features are computed (first use).

    Returns:
        `(sets, names, notes)`: the sets, the image paths (`splits.csv` order), notes.
    """
    notes: list[str] = []
    names, final = run.features("final", verbose=verbose)
    if run.config.weights == "none":
        notes.append("trained from scratch (--weights none): there are no ImageNet "
                     "features, only the trained model's")
        return {"fine-tuned": final}, names, notes
    if (run.plan or {}).get("unfreeze_blocks") == 0:
        notes.append("feature extraction: the backbone was never fine-tuned, so its "
                     "codes are the ImageNet ones (one set)")
        return {"imagenet": final}, names, notes
    try:
        _, initial = run.features("imagenet")
    except RunError as e:
        notes.append(f"{e}; showing the fine-tuned features only")
        return {"fine-tuned": final}, names, notes
    return {"imagenet": initial, "fine-tuned": final}, names, notes


def embedding(source: Any, max_images: int | None = 2000, seed: int = 0,
              perplexity: float = PERPLEXITY, k: int = NEIGHBOURS,
              progress: Callable[[float], None] | None = None, verbose: int = 0) -> dict:
    """t-SNE maps and their numbers for each of the run's feature sets.

    Args:
        source: A run or run directory.
        max_images: Images mapped (a stratified, seeded sample of all splits); None: all.
        seed: Seed of the sample and of t-SNE.
        perplexity: Wanted perplexity (bounded by `perplexity_for`).
        k: Neighbours of the kNN classifier and of trustworthiness.
        progress: Called with the fraction done.
        verbose: Keras progress bar when the final features are computed (first use).

    Returns:
        `{"paths", "labels", "splits", "correct" (test rows: the model right or not;
        others None), "sets": {name: {"positions", "trustworthiness", "knn_accuracy",
        "knn_accuracy_2d"}}, "n_total", "notes", "seconds"}`.
    """
    from sklearn.manifold import trustworthiness

    model, run = as_model(source)
    if run is None:
        raise ConfigError("the embedding reads a run's feature store: pass a run directory")
    start = time.perf_counter()
    sets, names, notes = feature_sets(run, verbose)
    splits = run.splits.set_index("path").loc[names]
    labels = splits["class"].map(run.class_names.index).to_numpy()
    picked = stratified_sample(labels, max_images, seed)
    if len(picked) < len(names):
        notes.append(f"a stratified sample of {len(picked)} of the {len(names)} images "
                     f"(--max-images {max_images})")
    labels, split = labels[picked], splits["split"].to_numpy()[picked]
    train, test = split == "train", split == "test"
    if not train.any() or not test.any():
        raise RunError(f"{run.path}: the sample has no training or no test image")
    # The run's own predictions, from its final codes through its dense head.
    final = np.asarray(sets.get("fine-tuned", sets.get("imagenet")))[picked]
    predicted = np.asarray(model.get_layer("predictions")(final)).argmax(axis=1)
    correct = [bool(p == y) if t else None for p, y, t in zip(predicted, labels, test)]
    result: dict[str, Any] = {"sets": {}}
    for i, (name, values) in enumerate(sets.items()):
        x = np.asarray(values, np.float32)[picked]
        positions = tsne(x, seed, perplexity)
        result["sets"][name] = {
            "positions": positions,
            "trustworthiness": float(trustworthiness(x, positions,
                                                     n_neighbors=min(k, len(x) // 2 - 1))),
            "knn_accuracy": knn_accuracy(x[train], labels[train], x[test], labels[test], k),
            "knn_accuracy_2d": knn_accuracy(positions[train], labels[train],
                                            positions[test], labels[test], k)}
        if progress:
            progress((i + 1) / len(sets))
    root = run.data_folder
    result.update(paths=[str(root / names[i]) for i in picked], labels=labels,
                  splits=split, correct=correct, n_total=len(names), notes=notes,
                  class_names=list(run.class_names),
                  seconds=time.perf_counter() - start)
    return result


def thumbnails(paths: Sequence[str], labels: Sequence[int], side: int = THUMB,
               progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
    """Each image as a `side` x `side` uint8 tile framed by its class colour."""
    from PIL import Image

    from transferkit.data.images import load_image
    from transferkit.errors import ImageError

    tiles = []
    inner = side - 2 * FRAME
    for i, (path, label) in enumerate(zip(paths, labels)):
        tile = np.zeros((side, side, 3), np.uint8)
        tile[:] = class_color(label)
        try:
            image = Image.fromarray(load_image(path)).resize((inner, inner),
                                                             Image.BILINEAR)
            tile[FRAME:FRAME + inner, FRAME:FRAME + inner] = np.asarray(image)
        except ImageError:
            tile[FRAME:FRAME + inner, FRAME:FRAME + inner] = 128  # gone since training
        tiles.append(tile)
        if progress and (i + 1) % 100 == 0:
            progress((i + 1) / len(paths))
    return tiles


def class_color(label: int) -> tuple[int, int, int]:
    """The class's colour (matplotlib's tab10), as uint8 RGB."""
    import matplotlib

    rgb = matplotlib.colormaps["tab10"](int(label) % 10)[:3]
    return tuple(int(round(255 * v)) for v in rgb)  # type: ignore[return-value]


def map_canvas(positions: np.ndarray, tiles: Sequence[np.ndarray], side: int = 900
               ) -> tuple[np.ndarray, np.ndarray]:
    """Tiles pasted at their normalized 2-D positions on a white canvas.

    Returns:
        `(canvas, centres)`: the uint8 picture and each tile's centre `[N, 2]` (x, y px).
    """
    tile = tiles[0].shape[0] if len(tiles) else THUMB
    p = np.asarray(positions, np.float64)
    p = (p - p.min(axis=0)) / np.maximum(p.max(axis=0) - p.min(axis=0), 1e-12)
    left = np.rint(p[:, 0] * (side - tile)).astype(int)
    top = np.rint((1.0 - p[:, 1]) * (side - tile)).astype(int)  # y up on the page
    canvas = np.full((side, side, 3), 255, np.uint8)
    for x, y, t in zip(left, top, tiles):
        canvas[y:y + tile, x:x + tile] = t
    return canvas, np.stack([left + tile / 2, top + tile / 2], axis=1)


def embedding_view(source: Any, out: Any = None, max_images: int | None = 2000,
                   grid: int = 24, mode: str = "assign", seed: int = 0,
                   progress: Callable[[float], None] | None = None, verbose: int = 0
                   ) -> dict:
    """`transferkit inspect embedding`: the t-SNE map and the grid of each feature set.

    Args:
        source: A run or run directory.
        out: Output folder (default `RUN/inspect/`).
        max_images: Images mapped (a stratified sample; None: all).
        grid: Cells per side of the grid view (fewer when there are fewer images).
        mode: Grid filling, `assign` (one-to-one) or `nearest`.
        seed: Seed of the sample and of t-SNE.
        progress: Called with the fraction done.
        verbose: Keras progress bar when the final features are computed (first use).

    Returns:
        `{"view": "embedding", "files", "records": [{"features", "n_images",
        "trustworthiness", "knn_accuracy", "knn_accuracy_2d"}], "n_total", "notes",
        "seconds"}`.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    _, run = as_model(source)
    result = embedding(source, max_images, seed,
                       progress=(lambda f: progress(0.7 * f)) if progress else None,
                       verbose=verbose)
    output = Output(out, run)
    tiles = thumbnails(result["paths"], result["labels"],
                       progress=(lambda f: progress(0.7 + 0.3 * f)) if progress else None)
    sets = result["sets"]
    wrong = np.array([c is False for c in result["correct"]])
    legend = [Patch(color=np.array(class_color(i)) / 255, label=name)
              for i, name in enumerate(result["class_names"])]
    fig, axes = subplots(1, len(sets), figsize=(5.0 * len(sets), 5.3), squeeze=False)
    for ax, (name, s) in zip(axes[0], sets.items()):
        canvas, centres = map_canvas(s["positions"], tiles)
        ax.imshow(canvas)
        ax.scatter(centres[wrong, 0], centres[wrong, 1], marker="x", s=40, c="black",
                   linewidths=2.2)
        ax.scatter(centres[wrong, 0], centres[wrong, 1], marker="x", s=30, c="white",
                   linewidths=0.9)
        ax.set_title(f"{name} codes: trustworthiness {s['trustworthiness']:.3f}\nkNN "
                     f"accuracy {s['knn_accuracy']:.3f} (2-D: {s['knn_accuracy_2d']:.3f})",
                     fontsize=9)
        ax.axis("off")
    legend.append(Line2D([], [], marker="x", color="black", lw=0,
                         label="misclassified test image"))
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    output.png("embedding_tsne", fig)
    side = max(2, min(grid, int(np.sqrt(len(tiles)))))
    fig, axes = subplots(1, len(sets), figsize=(5.0 * len(sets), 5.3), squeeze=False)
    for ax, (name, s) in zip(axes[0], sets.items()):
        cells = grid_cells(s["positions"], side, side, mode)
        ax.imshow(tile_grid([tiles[i] for i in cells], side, gap=0))
        ax.set_title(f"{name} codes: t-SNE grid, {side}x{side} ({mode})", fontsize=9)
        ax.axis("off")
    fig.legend(handles=legend[:-1], loc="lower center", ncol=len(legend), fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    output.png("embedding_grid", fig)
    records = [{"features": name, "n_images": len(tiles),
                **{k: s[k] for k in ("trustworthiness", "knn_accuracy", "knn_accuracy_2d")}}
               for name, s in sets.items()]
    return {"view": "embedding", "files": output.files, "records": records,
            "n_total": result["n_total"], "notes": result["notes"],
            "seconds": result["seconds"]}

