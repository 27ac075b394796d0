"""Shared forward passes: concurrent `/predict` requests go through the model together.

On a busy demo, eight clients asking at once would otherwise make eight forward passes
of one image each; one pass of eight costs far less (one graph launch, one pass over the
weights). `Batcher` collects the images that arrive while a pass runs and sends them
through the next pass together, up to `max_batch` at a time.

Why not Gradio's `batch=True`: Gradio fails every request of a batch when its function
raises, so one bad upload would fail the other clients' requests with its error. Here
each request decodes its own image in its own thread (a bad file is that request's
error, as without batching) and only the forward pass is shared.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

MAX_BATCH = 8


class _Slot:
    """One request's image, and its answer once a pass has computed it."""

    __slots__ = ("item", "result", "error", "done")

    def __init__(self, item: Any):
        self.item = item
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class Batcher:
    """Calls `predict` on the items of concurrent callers together.

    No thread of its own: the first caller that finds no pass running runs one, for
    every item waiting (up to `max_batch`), then the callers take their rows. A caller
    whose item missed the running pass waits for it and runs (or joins) the next one.

    Args:
        predict: A list of items → array `[N, ...]`, row i for item i.
        max_batch: Most items in one pass (the activations of each are held at once).
    """

    def __init__(self, predict: Callable[[Sequence[Any]], Any], max_batch: int = MAX_BATCH):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._predict = predict
        self.max_batch = max_batch
        self._pending: list[_Slot] = []
        self._busy = False
        self._changed = threading.Condition()
        self.passes = 0  # forward passes run so far (for tests and tools)

    def __call__(self, item: Any) -> np.ndarray:
        """The row of `predict([item, ...])` that belongs to `item`.

        Raises:
            Exception: What `predict` raised for the pass that held `item`.
        """
        slot = _Slot(item)
        with self._changed:
            self._pending.append(slot)
        while True:
            with self._changed:
                while not slot.done and self._busy:
                    self._changed.wait()
                if slot.done:
                    break
                self._busy = True
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
            self._run(batch)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run(self, batch: list[_Slot]) -> None:
        """One pass for `batch`; answers (or the error) go to each slot."""
        try:
            rows = np.asarray(self._predict([slot.item for slot in batch]))
            if len(rows) != len(batch):
                raise ValueError(f"predict returned {len(rows)} rows for {len(batch)} "
                                 "items")
            for slot, row in zip(batch, rows):
                slot.result = row
        except BaseException as e:  # noqa: BLE001  each waiting request raises it
            for slot in batch:
                slot.error = e
            raise
        finally:
            with self._changed:
                self.passes += 1
                for slot in batch:
                    slot.done = True
                self._busy = False
                self._changed.notify_all()
