"""Near-duplicates: the same photo cropped, mirrored, slightly rotated, recoloured,
downscaled or re-encoded.

Pooled features alone cannot tell a copy from a look-alike (measured on flowers5: a
planted copy's cosine to its original has median 0.86-0.92, ordinary photos' nearest
neighbours reach 0.89 at the 95th percentile), so they only propose candidates: each
image's few nearest neighbours (`candidate_pairs`). `verify_pairs` then checks each
candidate as image retrieval does: ORB keypoints (OpenCV) of both images, the second
also mirrored, matched and fitted with a RANSAC similarity transform (rotation, scale,
shift: a crop is a shift and a scale); the inliers count, and the first image warped
onto the second must agree with it pixel for pixel (normalized cross-correlation of
the overlap, blind to brightness and contrast). Look-alike flowers share a few
keypoints by chance, never an alignment under which their pixels agree.

Groups are the connected components of the kept pairs, merged with the audit's exact
duplicates (same bytes), so the split keeps each group in one split.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from transferkit.data.images import load_image

SIDE = 192        # px of the shorter side keypoints are found at (small photos upscaled)
KEYPOINTS = 300   # ORB keypoints per image and orientation
RATIO = 0.8       # Lowe's ratio test of a match
MIN_OVERLAP = 0.25  # of the second image that the aligned first must cover
CACHED_IMAGES = 4096  # images held at once (~50 KB each: gray, keypoints)


def candidate_pairs(indices: np.ndarray, similarities: np.ndarray, floor: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of neighbours at least `floor` similar, each once.

    Args:
        indices: `[N, k]` neighbours (`neighbours.nearest`).
        similarities: `[N, k]` their similarities.
        floor: The lowest similarity kept.

    Returns:
        `(pairs, sims)`: int `[P, 2]` and float `[P]`, ordered by pair.
    """
    rows, cols = np.nonzero(similarities >= floor)
    i, j = rows, indices[rows, cols]
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1).reshape(-1, 2)
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    return pairs, similarities[rows, cols][first]


def verify_pairs(paths: Sequence[str | Path], pairs: np.ndarray, min_inliers: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Geometric and photometric agreement of each pair, mirrors allowed.

    Args:
        paths: Image files, indexed by the pairs.
        pairs: `[P, 2]` indices into `paths` (ordered by the first: decoded images are
            cached).
        min_inliers: Pairs with fewer inliers are not compared pixel by pixel.

    Returns:
        `(inliers, agreement)`: int `[P]` RANSAC inliers of the orientation with more,
        and float `[P]` in [-1, 1], the correlation of the pixels it aligns (0 when no
        alignment was found or too few inliers).
    """
    import cv2

    cv2.setNumThreads(1)  # small images: threads only contend
    orb = cv2.ORB_create(KEYPOINTS, fastThreshold=5, edgeThreshold=15, patchSize=15)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    @lru_cache(maxsize=CACHED_IMAGES)
    def views(i: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        gray = cv2.cvtColor(load_image(paths[i]), cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        scale = SIDE / min(h, w)
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        out = []
        for image in (gray, cv2.flip(gray, 1)):
            points, descriptors = orb.detectAndCompute(image, None)
            out.append((image, np.float32([p.pt for p in points]).reshape(-1, 2),
                        descriptors))
        return out

    inliers = np.zeros(len(pairs), np.int64)
    agreement = np.zeros(len(pairs))
    for p, (a, b) in enumerate(np.asarray(pairs, np.int64)):
        first = views(int(a))[0]
        # As it is and mirrored: the orientation whose alignment more keypoints agree on.
        found = [_align(first, second, matcher, cv2) for second in views(int(b))]
        count, transform, second = max(
            ((c, t, s) for (c, t), s in zip(found, views(int(b)))), key=lambda f: f[0])
        inliers[p] = count
        if count >= max(min_inliers, 1):
            agreement[p] = _correlation(first[0], second[0], transform, cv2)
    return inliers, agreement


def _align(first, second, matcher, cv2) -> tuple[int, np.ndarray | None]:
    """RANSAC inliers of the similarity transform first → second, and the transform
    (0 and None: too few matches, no transform)."""
    (_, points_a, desc_a), (_, points_b, desc_b) = first, second
    if desc_a is None or desc_b is None or len(desc_a) < 2 or len(desc_b) < 2:
        return 0, None
    matches = [m[0] for m in matcher.knnMatch(desc_a, desc_b, k=2)
               if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(matches) < 3:
        return 0, None
    source = points_a[[m.queryIdx for m in matches]]
    target = points_b[[m.trainIdx for m in matches]]
    transform, kept = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=0.02 * SIDE)
    if transform is None or kept is None:
        return 0, None
    return int(kept.sum()), transform


def _correlation(image_a: np.ndarray, image_b: np.ndarray, transform: np.ndarray,
                 cv2) -> float:
    """Correlation of image_b with image_a warped by `transform`, over their overlap
    (0 when it covers less than `MIN_OVERLAP` of image_b)."""
    h, w = image_b.shape
    warped = cv2.warpAffine(image_a.astype(np.float32), transform, (w, h))
    covered = cv2.warpAffine(np.ones(image_a.shape, np.uint8), transform, (w, h),
                             flags=cv2.INTER_NEAREST)
    covered = cv2.erode(covered, np.ones((5, 5), np.uint8)) > 0  # no resampled border
    if covered.mean() < MIN_OVERLAP:
        return 0.0
    # A light blur: JPEG blocks and resampling are not what tells two photos apart.
    x = cv2.GaussianBlur(warped, (0, 0), 1.5)[covered]
    y = cv2.GaussianBlur(image_b.astype(np.float32), (0, 0), 1.5)[covered]
    x, y = x - x.mean(), y - y.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y) + 1e-9))


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
