"""What every model call shares: batching, and probabilities → ranked labels.

`Run`, the predictors, the exporter's parity check and the explainers all call their
model through `in_batches`, and rank classes with `top_k`, so two of them never order
the same probabilities differently.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_BATCH = 32


def in_batches(predict: Callable[[Any], Any], items: Sequence[Any] | np.ndarray,
               batch_size: int = DEFAULT_BATCH, n_outputs: int | None = None
               ) -> np.ndarray:
    """Calls `predict` on consecutive slices of `items` and stacks the results.

    Args:
        predict: Slice of `items` (a list or an array) → array `[n, ...]`.
        items: The inputs, e.g. a batch of images `[N, H, W, 3]` or a list of files.
        batch_size: Items per call.
        n_outputs: For empty `items`: the width of the `[0, n_outputs]` result.

    Returns:
        float32 `[N, ...]`, rows in input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    parts = [np.asarray(predict(items[i:i + batch_size]), np.float32)
             for i in range(0, len(items), batch_size)]
    if not parts:
        return np.zeros((0, n_outputs or 0), np.float32)
    return np.concatenate(parts)


def by_shape(images: Sequence[np.ndarray], predict: Callable[[np.ndarray], Any],
             batch_size: int = DEFAULT_BATCH, n_outputs: int | None = None) -> np.ndarray:
    """`in_batches` over images of mixed sizes: same-sized images are stacked together.

    Args:
        images: `[H, W, 3]` arrays, any sizes.
        predict: Stacked batch `[n, H, W, 3]` → `[n, C]`.
        batch_size: Images per call.
        n_outputs: C, for an empty list.

    Returns:
        float32 `[N, C]`, rows in input order.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    out: np.ndarray | None = None
    for rows in groups.values():
        part = in_batches(lambda idx: predict(np.stack([images[i] for i in idx])), rows,
                          batch_size)
        if out is None:
            out = np.zeros((len(images), part.shape[1]), np.float32)
        out[rows] = part
    return out if out is not None else np.zeros((0, n_outputs or 0), np.float32)


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int = 3
          ) -> list[list[dict[str, Any]]]:
    """The k most probable labels of each row, most probable first.

    Ties keep the class order (a stable sort), so every caller ranks alike.

    Args:
        probabilities: `[N, C]`.
        class_names: The C names, in output order.
        k: Labels per row (at most C).

    Returns:
        One list per row of `{"label", "probability"}`.
    """
    probabilities = np.asarray(probabilities)
    k = min(int(k), len(class_names))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[{"label": class_names[j], "probability": float(p[j])} for j in row]
            for p, row in zip(probabilities, order)]
