"""The feature store: computed once per key, chunked, resumable, read memory-mapped."""

import shutil

import keras
import numpy as np
import pytest

from transferkit.data.pipeline import image_dataset
from transferkit.errors import DataError
from transferkit.features import BATCHES_PER_CHUNK, FeatureKey, FeatureStore, \
    feature_extractor


class CountingExtractor:
    """Stands in for the backbone: decodes the images, gives each image's row number."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def predict(self, ds, verbose=0):
        if self.fail_after is not None and self.calls == self.fail_after:
            raise KeyboardInterrupt  # as a kill in the middle of the computation
        self.calls += 1
        n = sum(int(batch.shape[0]) for batch in ds)
        return np.tile(np.arange(n, dtype=np.float32)[:, None] + 100 * self.calls, (1, 4))


@pytest.fixture()
def names(color_folder):
    return sorted(str(p.relative_to(color_folder)) for p in color_folder.glob("*/*.png"))


def test_computed_once_then_read_back_memory_mapped(color_folder, names, tmp_path):
    store = FeatureStore(tmp_path / "features")
    key = FeatureKey("imagenet", 32)
    extractor = CountingExtractor()
    first = store.get(key, names, color_folder, extractor, seed=0)
    assert isinstance(first, np.memmap) and first.shape == (len(names), 4)
    np.testing.assert_array_equal(first[:, 0], np.arange(len(names)) + 100)
    again = store.get(key, names, color_folder, extractor, seed=0)
    assert extractor.calls == 1
    np.testing.assert_array_equal(again, first)
    entry = tmp_path / "features" / "imagenet_32px_plain"
    assert sorted(p.name for p in entry.iterdir()) == ["features.npy", "meta.json",
                                                       "names.txt"]
    assert store.names(key) == names and store.keys() == [key]


def test_fewer_rows_are_served_other_rows_seed_or_key_computed_again(color_folder, names, tmp_path):
    store = FeatureStore(tmp_path / "features")
    key = FeatureKey("imagenet", 32)
    extractor = CountingExtractor()
    full = np.array(store.get(key, names, color_folder, extractor, seed=0))
    # Fewer rows (the doctor stored every image, `--exclude-flagged` trains on fewer):
    # served from the stored ones, and the entry keeps just those.
    subset = store.get(key, names[3:8], color_folder, extractor, seed=0)
    assert extractor.calls == 1 and store.names(key) == names[3:8]
    np.testing.assert_array_equal(subset, full[3:8])
    store.get(key, names[:5], color_folder, extractor, seed=0)  # rows it does not hold
    assert extractor.calls == 2 and store.names(key) == names[:5]
    store.get(key, names[:5], color_folder, extractor, seed=1)  # other seed
    assert extractor.calls == 3
    assert store.load(key, names[:5], seed=0) is None
    store.get(FeatureKey("final", 32), names[:5], color_folder, extractor, seed=1)
    assert extractor.calls == 4 and len(store.keys()) == 2


def test_a_killed_computation_resumes_from_its_last_chunk(color_folder, names, tmp_path):
    store = FeatureStore(tmp_path / "features")
    key = FeatureKey("imagenet", 32)
    batch = 1  # a chunk is BATCHES_PER_CHUNK images
    assert len(names) > BATCHES_PER_CHUNK
    with pytest.raises(KeyboardInterrupt):
        store.get(key, names, color_folder, CountingExtractor(fail_after=1), seed=0,
                  batch_size=batch)
    assert store.load(key) is None
    chunks = sorted((tmp_path / "features" / key.name / "chunks").glob("*.npy"))
    assert [c.name for c in chunks] == ["00000.npy"]
    resumed = CountingExtractor()
    features = store.get(key, names, color_folder, resumed, seed=0, batch_size=batch)
    n_chunks = -(-len(names) // BATCHES_PER_CHUNK)
    assert resumed.calls == n_chunks - 1  # every chunk but the finished one
    # The first chunk is the killed run's (its values), the others are new.
    np.testing.assert_array_equal(features[:BATCHES_PER_CHUNK, 0],
                                  np.arange(BATCHES_PER_CHUNK) + 100)
    assert features[BATCHES_PER_CHUNK, 0] == 100 * 1
    assert not (tmp_path / "features" / key.name / "chunks").exists()


def test_a_cut_short_chunk_is_computed_again(color_folder, names, tmp_path):
    store = FeatureStore(tmp_path / "features")
    key = FeatureKey("imagenet", 32)
    with pytest.raises(KeyboardInterrupt):
        store.get(key, names, color_folder, CountingExtractor(fail_after=1), seed=0,
                  batch_size=1)
    chunk = tmp_path / "features" / key.name / "chunks" / "00000.npy"
    chunk.write_bytes(b"\x93NUMPY\x01\x00 cut short")
    extractor = CountingExtractor()
    assert store.get(key, names, color_folder, extractor, seed=0,
                     batch_size=1).shape == (len(names), 4)
    assert extractor.calls == -(-len(names) // BATCHES_PER_CHUNK)


def test_augmented_views_in_chunks_equal_the_view_computed_whole(color_folder, names,
                                                                 tmp_path):
    extractor = keras.Sequential([keras.Input((32, 32, 3)),
                                  keras.layers.GlobalAveragePooling2D()])
    store = FeatureStore(tmp_path / "features")
    batch = 2  # 36 images: two chunks of 32 and 4 rows
    view = store.get(FeatureKey("imagenet", 32, view=1), names, color_folder, extractor,
                     seed=7, batch_size=batch)
    whole = extractor.predict(image_dataset([color_folder / n for n in names], None, 32,
                                            batch, augment_seed=8), verbose=0)
    np.testing.assert_allclose(view, whole, rtol=1e-6)
    plain = store.get(FeatureKey("imagenet", 32), names, color_folder, extractor, seed=7,
                      batch_size=batch)
    assert not np.allclose(plain, view)  # the view is augmented


def test_images_deleted_since_the_audit_are_a_clear_error(color_folder, names, tmp_path):
    """A resumed run reuses its split: "run it again" would fail again the same way."""
    folder = tmp_path / "data"
    shutil.copytree(color_folder, folder)
    (folder / names[1]).unlink()
    store = FeatureStore(tmp_path / "features")
    with pytest.raises(DataError, match="1 of 36 images can no longer be decoded.*"
                                        "--overwrite"):
        store.get(FeatureKey("imagenet", 32), names, folder, CountingExtractor(), seed=0)
    assert store.load(FeatureKey("imagenet", 32)) is None


def test_drop_augmented_keeps_the_plain_features(color_folder, names, tmp_path):
    store = FeatureStore(tmp_path / "features")
    for view in (0, 1, 2):
        store.get(FeatureKey("imagenet", 32, view), names[:4], color_folder,
                  CountingExtractor(), seed=0)
    store.drop_augmented()
    assert store.keys() == [FeatureKey("imagenet", 32)]


def test_bad_keys_are_refused():
    with pytest.raises(ValueError, match="weights must be one of"):
        FeatureKey("random", 32)
    with pytest.raises(ValueError, match="view must be 0 or more"):
        FeatureKey("final", 32, view=-1)


def test_a_run_keeps_the_features_of_every_image(tiny_run, color_folder):
    """Phase 1 stored every split's plain features; the augmented views are gone."""
    names, features = tiny_run.features("imagenet")
    assert names == tiny_run.splits["path"].tolist() and len(names) == 36
    assert FeatureStore(tiny_run.path / "features").keys() == [FeatureKey("imagenet", 96)]
    # They are the pooled features of the images: recompute three of them.
    expected = feature_extractor(tiny_run.model).predict(
        tiny_run.preprocess([color_folder / n for n in names[:3]]), verbose=0)
    np.testing.assert_allclose(features[:3], expected, rtol=1e-4, atol=1e-5)
    # The backbone of a feature-extraction run never changed: final = ImageNet features.
    final_names, final = tiny_run.features("final")
    assert final_names == names
    np.testing.assert_array_equal(final, features)


def test_final_features_of_a_fine_tuned_run_are_computed_once(fine_tuned_run):
    run = fine_tuned_run
    data = run.data_folder
    names, initial = run.features("imagenet")
    _, final = run.features("final")
    assert final.shape == initial.shape and not np.allclose(final, initial)
    expected = feature_extractor(run.model).predict(
        run.preprocess([data / n for n in names[:2]]), verbose=0)
    np.testing.assert_allclose(final[:2], expected, rtol=1e-4, atol=1e-5)
    store = FeatureStore(run.path / "features")
    assert sorted(k.name for k in store.keys()) == ["final_64px_plain",
                                                    "imagenet_64px_plain"]
    with pytest.raises(Exception, match="unknown feature weights"):
        run.features("random")
