"""The training engine on a tiny model: best weights, resume, the time stop, the rate.

A Dense softmax layer on random arrays, trained at learning rate 0 while a callback
sets its bias at the start of each epoch: the validation loss of every epoch is then
known in advance (the bias alone decides the predictions).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from transferkit.engine import Recipe, TimeLimit, backup, run_phase

X = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
Y = keras.utils.to_categorical(np.zeros(16), 2)  # every image of class 0
# The bias at each epoch: class 0's logit 0, 3, 1, -1, -2, -3 above class 1's; the
# validation loss is lowest at epoch 2 and never improves after it.
BIASES = [0.0, 3.0, 1.0, -1.0, -2.0, -3.0]


def tiny_model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, activation="softmax", kernel_initializer="zeros")])


class SetBias(keras.callbacks.Callback):
    """Sets the bias each epoch; raises at the start of epoch `kill_at` (1-based)."""

    def __init__(self, kill_at: int | None = None):
        super().__init__()
        self.kill_at, self.epochs = kill_at, []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.kill_at:
            raise KeyboardInterrupt  # as a kill after the previous epoch's backup
        self.epochs.append(epoch + 1)
        kernel, _ = self.model.get_weights()
        self.model.set_weights([kernel, np.array([BIASES[epoch], 0.0], "float32")])


def recipe(**kw) -> Recipe:
    return Recipe(**{**dict(epochs=6, learning_rate=0.0,
                            loss=keras.losses.CategoricalCrossentropy(), patience=2,
                            batch_size=8), **kw})


def val_loss(bias: float) -> float:
    return math.log(1 + math.exp(-bias))  # -log softmax([bias, 0])[0]


def test_the_best_epoch_is_restored_and_early_stopping_counts_from_it():
    model = tiny_model()
    rows = run_phase(model, (X, Y), (X, Y), recipe(), None, callbacks=[SetBias()])
    # Epoch 2 is best; epochs 3 and 4 do not improve: patience 2 stops after epoch 4.
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["val_loss"] for r in rows] == pytest.approx([val_loss(b) for b in BIASES[:4]],
                                                          abs=1e-5)
    assert model.get_weights()[1] == pytest.approx([3.0, 0.0])


def test_a_killed_phase_resumes_with_each_epoch_once_and_the_best_of_the_whole_run(
        tmp_path):
    path = tmp_path / "phase.npz"
    first = SetBias(kill_at=4)
    with pytest.raises(KeyboardInterrupt):
        run_phase(tiny_model(), (X, Y), (X, Y), recipe(), path, callbacks=[first])
    saved = backup.load(path)
    assert (saved.state.epoch, saved.state.best, saved.state.wait) == \
        (3, pytest.approx(val_loss(3.0)), 1)
    model, again = tiny_model(), SetBias()
    rows = run_phase(model, (X, Y), (X, Y), recipe(), path, callbacks=[again])
    assert first.epochs == [1, 2, 3] and again.epochs == [4]  # patience left: 1 epoch
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert model.get_weights()[1] == pytest.approx([3.0, 0.0])  # epoch 2, before the kill
    # Finished: the same call again trains nothing and gives the same rows and weights.
    other = tiny_model()
    assert run_phase(other, (X, Y), (X, Y), recipe(), path, callbacks=[SetBias()]) == rows
    assert other.get_weights()[1] == pytest.approx([3.0, 0.0])


def test_an_unreadable_backup_starts_the_phase_again(tmp_path):
    path = tmp_path / "phase.npz"
    path.write_bytes(b"PK\x03\x04 cut short")
    said = []
    rows = run_phase(tiny_model(), (X, Y), (X, Y), recipe(), path, callbacks=[SetBias()],
                     say=said.append)
    assert len(rows) == 4
    assert said == [f"{path}: this backup cannot be read; starting its phase again"]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_time_stop_ends_before_the_deadline():
    clock = FakeClock()

    class Step(keras.callbacks.Callback):  # each step takes 10 s: 2 steps an epoch
        def on_train_batch_begin(self, batch, logs=None):
            clock.now += 10

    # After epochs 1 and 2 (20 s each) the next, padded to 23 s, ends by 63 <= 65;
    # after epoch 3 (at 60 s) it would end at 83: stop.
    limit = TimeLimit(clock, deadline=65, safety=1.15)
    rows = run_phase(tiny_model(), (X, Y), (X, Y),
                     recipe(epochs=50, patience=None, learning_rate=1e-3, time_limit=limit),
                     None, callbacks=[Step()])
    assert len(rows) == 3 and clock.now == 60
    assert [r["seconds"] for r in rows] == [20, 20, 20]


def test_the_rate_warms_up_then_follows_the_cosine():
    peak, per_epoch, epochs = 1e-3, 10, 5  # warm-up: the first 10 of 50 steps
    schedule = recipe(epochs=epochs, learning_rate=peak, steps_per_epoch=per_epoch,
                      cosine=True).rate()
    formula = lambda s: peak * 0.5 * (1 + math.cos(math.pi * (s - 10) / 40))  # noqa: E731
    assert float(schedule(0)) == pytest.approx(peak / 10)
    assert float(schedule(5)) == pytest.approx(peak / 10 + 0.5 * (peak - peak / 10))
    assert float(schedule(10)) == pytest.approx(peak)
    assert float(schedule(30)) == pytest.approx(formula(30)) == pytest.approx(peak / 2)
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-12)


def test_class_weights_only_when_the_classes_are_imbalanced():
    from transferkit.engine import class_weight

    # 15 images, 2 classes: n / (C * count) = 15 / 20 and 15 / 10.
    assert class_weight([0] * 10 + [1] * 5, 2) == {0: 0.75, 1: 1.5}
    assert class_weight([0] * 6 + [1] * 5, 2) is None  # 6 / 5 <= 1.5
