"""Near-duplicates: the same photo re-encoded, resized, cropped, flipped or colour-shifted.

Candidate pairs are nearest neighbours in centred ImageNet features
(`neighbours.normalized`); `findings.find_issues` keeps those whose features (CSLS score,
cosine) and perceptual hash (`imagehash.phash` of the image and of its mirror image: a
flip changes the hash, not the photo) agree, or whose hashes are all but equal. Groups are the connected components of the
pairs, merged with the audit's exact duplicates (same bytes), so the split keeps each
group in one split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from transferkit.data.images import load_image


def candidate_pairs(indices: np.ndarray, similarities: np.ndarray, floor: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of neighbours at least `floor` similar, each once.

    Args:
        indices: `[N, k]` neighbours (`neighbours.nearest`).
        similarities: `[N, k]` their similarities.
        floor: The lowest similarity kept.

    Returns:
        `(pairs, sims)`: int `[P, 2]` and float `[P]`, most similar first.
    """
    rows, cols = np.nonzero(similarities >= floor)
    i, j = rows, indices[rows, cols]
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)
    sims = similarities[rows, cols]
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    sims = sims[first]
    order = np.argsort(-sims, kind="stable")
    return pairs[order], sims[order]


def phash_distance(paths: Sequence[str | Path], pairs: np.ndarray) -> np.ndarray:
    """Hamming distance of the perceptual hashes of each pair, flips allowed.

    Args:
        paths: Image files, indexed by the pairs.
        pairs: `[P, 2]` indices into `paths`.

    Returns:
        int `[P]`: the smaller of distance(a, b) and distance(a, mirror(b)), of 64 bits.
    """
    import imagehash
    from PIL import Image, ImageOps

    hashes: dict[int, tuple] = {}

    def hashed(i: int):
        if i not in hashes:
            image = Image.fromarray(load_image(paths[i]))
            hashes[i] = (imagehash.phash(image), imagehash.phash(ImageOps.mirror(image)))
        return hashes[i]

    out = np.zeros(len(pairs), np.int64)
    for p, (a, b) in enumerate(pairs):
        ha, hb = hashed(int(a)), hashed(int(b))
        out[p] = min(ha[0] - hb[0], ha[0] - hb[1])
    return out


def groups_of(n: int, pairs: np.ndarray, keys: Sequence[str] | None = None) -> np.ndarray:
    """Connected components of `pairs` over n items, exact duplicates (equal keys) joined.

    Args:
        n: Number of items.
        pairs: `[P, 2]` index pairs of the same photo.
        keys: Optional key per item (the audit's sha256): equal keys join a group.

    Returns:
        int `[n]`: a component id per item (a lone item has a component of its own).
    """
    edges = [np.asarray(pairs, np.int64).reshape(-1, 2)]
    if keys is not None:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key:
                edges.append(np.array([[first.setdefault(key, i), i]]))
    edges = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]
