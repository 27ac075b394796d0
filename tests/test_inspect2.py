"""Inside the network (2): the embedding, the depth probe and the transfer experiment,
each against a known answer (synthetic clusters, a toy model, a tiny folder)."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from transferkit.errors import ConfigError
from transferkit.inspect import (
    embedding_view, grid_cells, knn_accuracy, perplexity_for, probe_accuracy,
    pooled_features, tsne)
from transferkit.inspect.embedding import stratified_sample

L = keras.layers


def clusters(n_per: int = 40, k: int = 5, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    x = np.concatenate([rng.normal(c, 1.0, (n_per, dim)) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


# 1. t-SNE and the grid.

def test_tsne_of_gaussian_clusters_is_faithful():
    from sklearn.manifold import trustworthiness

    x, y = clusters()
    positions = tsne(x, seed=0)
    assert positions.shape == (len(x), 2)
    assert trustworthiness(x, positions, n_neighbors=5) >= 0.9
    train = np.arange(len(x)) % 3 != 0
    assert knn_accuracy(positions[train], y[train], positions[~train], y[~train]) >= 0.95
    assert knn_accuracy(x[train], y[train], x[~train], y[~train]) >= 0.95


def test_perplexity_never_reaches_the_sample_size():
    assert perplexity_for(1000) == 30.0
    for n in range(2, 200):
        assert perplexity_for(n) < n
    tiny = np.random.default_rng(0).normal(size=(5, 8))
    assert tsne(tiny).shape == (5, 2)  # scikit-learn refuses perplexity >= n
    assert np.array_equal(tsne(tiny, seed=3), tsne(tiny, seed=3))  # seeded
    with pytest.raises(ConfigError, match="at least 4"):
        tsne(tiny[:3])


def test_grid_is_a_bijection_and_nearest_is_the_argmin():
    rng = np.random.default_rng(1)
    positions = rng.random((36, 2))
    cells = grid_cells(positions, 6, 6, "assign")
    assert sorted(cells) == list(range(36))
    # Points exactly on the cell centres, shuffled: the assignment finds each one's cell.
    r, c = np.divmod(np.arange(20), 5)
    centres = np.stack([(c + 0.5) / 5, 1 - (r + 0.5) / 4], axis=1)
    order = rng.permutation(20)
    assert list(grid_cells(centres[order], 4, 5)) == list(np.argsort(order))
    # Nearest mode: each cell's brute-force argmin (normalized positions, as it lays out).
    nearest = grid_cells(positions, 5, 7, "nearest")
    p = (positions - positions.min(0)) / (positions.max(0) - positions.min(0))
    for cell, image in enumerate(nearest):
        row, col = divmod(cell, 7)
        centre = np.array([(col + 0.5) / 7, 1 - (row + 0.5) / 5])
        assert image == int(np.argmin(((p - centre) ** 2).sum(axis=1)))
    assert len(set(grid_cells(positions, 5, 7, "assign"))) == 35  # rectangular, distinct
    with pytest.raises(ConfigError, match="needs at least 49 images"):
        grid_cells(positions, 7, 7)


def test_stratified_sample_keeps_the_class_proportions():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    picked = stratified_sample(labels, 100, seed=0)
    assert len(picked) == 100 and list(picked) == sorted(picked)
    assert list(np.bincount(labels[picked])) == [60, 30, 10]
    assert len(stratified_sample(labels, None)) == 1000


# 2. The depth probe.

def halves(n: int, seed: int):
    """16x16 images whose halves are red or blue; the class: the halves differ (XOR).
    Their mean colour cannot tell the classes apart linearly; a trained network can."""
    rng = np.random.default_rng(seed)
    red, blue = np.array([220, 30, 30]), np.array([30, 30, 220])
    top, bottom = rng.integers(0, 2, n), rng.integers(0, 2, n)
    images = np.empty((n, 16, 16, 3), np.float32)
    for i in range(n):
        images[i, :8] = red if top[i] else blue
        images[i, 8:] = red if bottom[i] else blue
    images = np.clip(images + rng.normal(0, 20, images.shape), 0, 255)
    return images, (top != bottom).astype(int)


def test_depth_probe_separability_grows_with_depth():
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 255, name="pixels")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c3")(x)
    outputs = L.Dense(2, activation="softmax")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x_train, y_train = halves(160, 0)
    x_test, y_test = halves(80, 1)
    model.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0)
    layers = ["pixels", "c1", "c3"]
    train, test = pooled_features(model, x_train, layers), pooled_features(model, x_test,
                                                                           layers)
    assert [f.shape[1] for f in train] == [3, 8, 16]
    assert np.allclose(train[0], x_train.mean(axis=(1, 2)) / 255, atol=1e-5)
    accuracy = [probe_accuracy(a, y_train, b, y_test) for a, b in zip(train, test)]
    assert accuracy[0] < 0.85          # pixel means: XOR is not linearly separable
    assert accuracy[-1] >= 0.9 and accuracy[-1] >= accuracy[0]


def test_depth_probe_view_on_a_fine_tuned_run(fine_tuned_run, tmp_path):
    from transferkit.inspect import depth_probe_view, probe_layers

    layers = probe_layers(fine_tuned_run.model, 3)
    assert len(layers) == 3 and layers[-1] == "out_relu"
    record = depth_probe_view(fine_tuned_run, tmp_path, n_depths=3)
    assert {(r["features"], r["depth"]) for r in record["records"]} == \
        {(f, d) for f in ("imagenet", "fine-tuned") for d in (1, 2, 3)}
    for r in record["records"]:
        assert r["layer"] == layers[r["depth"] - 1]
        assert r["channels"] == fine_tuned_run.model.get_layer(r["layer"]).output.shape[-1]
    # Colours are told apart by the pooled features of every depth (chance is 1/3): a
    # probe fit on features not aligned with their labels would be near chance.
    assert all(r["accuracy"] > 2 / 3 for r in record["records"])
    assert [p.rsplit("/", 1)[-1] for p in record["files"]] == ["depth_probe.png",
                                                                "depth_tsne.png"]


# 3. The embedding view, from the run's feature store.

def test_embedding_reads_the_feature_store_and_marks_one_set(tiny_run, tmp_path, capsys):
    from transferkit.cli import main
    from transferkit.inspect import embedding

    assert main(["inspect", "embedding", str(tiny_run.path), "--out", str(tmp_path),
                 "--json", "--max-images", "0", "--grid", "4"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["view"] == "embedding" and len(record["files"]) == 2
    assert all((tmp_path / f.rsplit("/", 1)[-1]).is_file() for f in record["files"])
    (only,) = record["records"]  # feature extraction: one set, and it says so
    assert only["features"] == "imagenet" and only["n_images"] == 36
    assert set(only) == {"features", "n_images", "trustworthiness", "knn_accuracy",
                         "knn_accuracy_2d"}
    assert any("never fine-tuned" in n for n in record["notes"])
    # The kNN accuracy is of the store's own codes, fit on train, scored on test.
    names, codes = tiny_run.features("final")
    split = tiny_run.splits.set_index("path").loc[names]
    train, test = (split["split"] == "train").to_numpy(), (split["split"] == "test").to_numpy()
    y = split["class"].to_numpy()
    assert only["knn_accuracy"] == knn_accuracy(codes[train], y[train], codes[test], y[test])
    sampled = embedding(tiny_run, max_images=30)
    assert len(sampled["paths"]) == 30 and "sample of 30 of the 36" in sampled["notes"][-1]


def test_embedding_of_a_fine_tuned_and_a_scratch_run(fine_tuned_run, tmp_path):
    from transferkit.inspect.embedding import feature_sets
    from transferkit.run import load_run

    record = embedding_view(fine_tuned_run, tmp_path, grid=4)
    assert [r["features"] for r in record["records"]] == ["imagenet", "fine-tuned"]
    sets, _, _ = feature_sets(fine_tuned_run)
    assert not np.allclose(sets["imagenet"], sets["fine-tuned"])
    scratch = shutil.copytree(fine_tuned_run.path, tmp_path / "scratch")
    config = json.loads((scratch / "config.json").read_text())
    (scratch / "config.json").write_text(json.dumps({**config, "weights": "none"}))
    sets, _, notes = feature_sets(load_run(scratch))
    assert list(sets) == ["fine-tuned"] and "no ImageNet features" in notes[0]


# 4. The transfer experiment.

def test_nested_stratified_subsets():
    from transferkit.experiments import nested_subsets

    splits = pd.DataFrame({"path": [f"{i}.png" for i in range(300)],
                           "class": np.repeat(["a", "b", "c"], [150, 100, 50]),
                           "split": np.tile(["train", "train", "val", "test", "train"], 60)})
    subsets = nested_subsets(splits, [0.05, 0.1, 0.5, 1.0], seed=0)
    for small, large in [(0.05, 0.1), (0.1, 0.5), (0.5, 1.0)]:
        assert set(subsets[small]) <= set(subsets[large])
    train = splits.index[splits["split"] == "train"]
    assert subsets[1.0] == list(train)
    counts = splits.loc[subsets[0.1], "class"].value_counts()
    assert dict(counts) == {"a": 9, "b": 6, "c": 3}  # ceil(10% of 90, 60, 30)


def test_transfer_experiment_rows_and_resume(tmp_path, monkeypatch):
    from transferkit.experiments import transfer_experiment
    from transferkit.experiments.cells import Cells
    from transferkit.testing import make_color_folder

    data = make_color_folder(tmp_path / "data", n_per_class=12, size=40, seed=2)
    out = tmp_path / "transfer"
    options = dict(image_size=32, max_epochs=1, patience=1, min_steps=1, batch_size=8)
    first = transfer_experiment(data, out, progress=False, fractions=(1,),
                                methods=("fine-tune",), **options)
    assert list(first["method"]) == ["fine-tune"]
    # The accuracy is the share of the test split the cell got right.
    cell = json.loads((out / "cells" / "1_fine-tune.json").read_text())
    n_test = int((pd.read_csv(out / "splits.csv")["split"] == "test").sum())
    assert len(cell["correct"]) == n_test and set(cell["correct"]) <= {0, 1}
    assert first["accuracy"][0] == pytest.approx(sum(cell["correct"]) / n_test)
    assert (out / "features" / "imagenet_32px_plain" / "features.npy").is_file()
    trained = []

    def fake(self, method, fraction, rows):
        trained.append((fraction, method, len(rows)))
        return {"correct": [1] * len(self.test), "epochs": 1}

    monkeypatch.setattr(Cells, "train", fake)
    table = transfer_experiment(data, out, progress=False, fractions=(0.5, 1),
                                **options)
    assert [(f, m) for f, m in zip(table["fraction"], table["method"])] == \
        [(f, m) for f in (0.5, 1.0) for m in ("scratch", "frozen", "fine-tune")]
    assert (0.5, "fine-tune", 12) in trained and (1.0, "fine-tune", 24) not in trained
    assert len(trained) == 5  # the finished cell is skipped
    assert table["accuracy"].iloc[0] == 1.0 and table["plan_choice"].sum() == 2
    assert list(pd.read_csv(out / "transfer.csv").columns[:5]) == [
        "fraction", "images_per_class", "method", "accuracy", "ci_low"]
    assert (out / "transfer.png").is_file()
    with pytest.raises(ConfigError, match="other options .*image_size"):
        transfer_experiment(data, out, progress=False, **{**options, "image_size": 48})


def test_the_inside_tab_maps_the_codes_and_probes_the_depths(tiny_run):
    from types import SimpleNamespace

    from transferkit.demo.inside_tab import InsideViews

    views = InsideViews(SimpleNamespace(run=tiny_run))
    quiet = lambda *a, **k: None  # noqa: E731  (gradio's progress, outside an event)
    tsne_map, grid, numbers = views.embedding(progress=quiet)
    assert tsne_map.endswith("embedding_tsne.png") and grid.endswith("embedding_grid.png")
    assert "**imagenet** codes of 36 images" in numbers and "never fine-tuned" in numbers
    curve, maps, numbers = views.probe(progress=quiet)
    assert curve.endswith("depth_probe.png") and numbers.count("→") == 5  # 6 depths


def test_experiment_command_rejects_bad_options_in_one_line(tmp_path, capsys):
    from transferkit.cli import main

    for fractions, message in [("0.1,2", "in (0, 1]"), ("a,b", "separated by commas")]:
        assert main(["experiment", "transfer", str(tmp_path), "--out",
                     str(tmp_path / "out"), "--fractions", fractions]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["experiment", "transfer", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--methods", "frozen,magic"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
