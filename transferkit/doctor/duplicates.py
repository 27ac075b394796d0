"""Near-duplicates: the same photo cropped, mirrored, slightly rotated, recoloured,
downscaled or re-encoded.

Pooled features alone cannot tell a copy from a look-alike (measured on flowers5: a
planted copy's cosine to its original has median 0.86-0.92, ordinary photos' nearest
neighbours reach 0.89 at the 95th percentile), so they only propose candidates: each
image's few nearest neighbours (`candidate_pairs`) in the features joined with a tiny
colour thumbnail averaged with its mirror image (`Looks`: a mirrored copy can sit far
from its original in features, never in the thumbnail). The thumbnails also say which
way round to compare a pair. `Looks.verify` then checks each candidate as image
retrieval does: ORB keypoints (OpenCV) of both images, the second mirrored when the
thumbnails say so, matched and fitted with a RANSAC similarity transform (rotation,
scale, shift: a crop is a shift and a scale); the inliers count, and the first image
warped onto the second must agree with it pixel for pixel (normalized cross-correlation
of the overlap, blind to brightness and contrast). Look-alike flowers share a few
keypoints by chance, never an alignment under which their pixels agree.

Groups are the connected components of the kept pairs, merged with the audit's exact
duplicates (same bytes), so the split keeps each group in one split."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from transferkit.data.images import load_image

SIDE = 128        # px of the shorter side keypoints are found at (resized to it)
KEYPOINTS = 150   # ORB keypoints per image and orientation
RATIO = 0.8       # Lowe's ratio test of a match
MIN_OVERLAP = 0.25  # of the second image that the aligned first must cover
THUMB = 8         # px side of the thumbnail
THUMB_CROP = 0.8  # of the shorter side the thumbnail shows (the centre: what crops keep)


def candidate_pairs(indices: np.ndarray, similarities: np.ndarray, floor: float = -1.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of neighbours at least `floor` similar, each once.

    Args:
        indices: `[N, k]` neighbours (`neighbours.nearest`).
        similarities: `[N, k]` their similarities.
        floor: The lowest similarity kept (default: every neighbour).

    Returns:
        `(pairs, sims)`: int `[P, 2]` and float `[P]`, ordered by pair.
    """
    rows, cols = np.nonzero(similarities >= floor)
    i, j = rows, indices[rows, cols]
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1).reshape(-1, 2)
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    return pairs, similarities[rows, cols][first]


class Looks:
    """What the near-duplicate check needs of each image, each decoded once: a tiny
    colour thumbnail of its centre (blind to brightness and contrast) and its ORB
    keypoints; those of its mirror image only when a pair asks for them.

    Args:
        paths: Image files.
        workers: Threads (OpenCV releases the GIL).
    """

    def __init__(self, paths: Sequence[str | Path], workers: int = 2):
        import cv2

        cv2.setNumThreads(1)  # small images: parallel over images and pairs instead
        self.paths, self.workers = list(paths), workers
        with ThreadPoolExecutor(workers) as pool:
            looked = list(pool.map(self._look, self.paths))
        # float32 [N, THUMB, THUMB, 3]: CIELAB, each channel of each image standardized.
        self.thumbs = np.array([t for t, _ in looked], np.float32).reshape(
            -1, THUMB, THUMB, 3)
        self._keypoints = {(i, False): k for i, (_, k) in enumerate(looked)}

    def mirror_invariant(self) -> np.ndarray:
        """`[N, THUMB * THUMB * 3]`: each thumbnail averaged with its mirror image."""
        return ((self.thumbs + self.thumbs[:, :, ::-1]) / 2).reshape(len(self.thumbs), -1)

    def mirrored_better(self, pairs: np.ndarray) -> np.ndarray:
        """bool `[P]`: the second image of each pair's mirrored thumbnail correlates more
        with the first's than the second's own does."""
        a, b = self.thumbs[pairs[:, 0]], self.thumbs[pairs[:, 1]]
        return (a * b[:, :, ::-1]).sum((1, 2, 3)) > (a * b).sum((1, 2, 3))

    def verify(self, pairs: np.ndarray, min_inliers: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
        """Geometric and photometric agreement of each pair, compared the way round its
        thumbnails prefer (`mirrored_better`).

        Args:
            pairs: `[P, 2]` indices into the paths.
            min_inliers: Pairs with fewer inliers are not compared pixel by pixel.

        Returns:
            `(inliers, agreement)`: int `[P]` RANSAC inliers of the alignment, and float
            `[P]` in [-1, 1], the correlation of the pixels it aligns (0 when no
            alignment was found or too few inliers).
        """
        import cv2

        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        mirrored = self.mirrored_better(pairs)
        wanted = sorted({int(b) for (_, b), m in zip(pairs, mirrored) if m} -
                        {i for i, m in self._keypoints if m})

        def mirror_keypoints(i: int):
            return _keypoints(cv2.flip(_gray(self.paths[i], cv2), 1), cv2)

        def check(p: int) -> tuple[int, float]:
            (a, b), flip = pairs[p], bool(mirrored[p])
            count, transform = _align(self._keypoints[a, False], self._keypoints[b, flip],
                                      cv2)
            if count < max(min_inliers, 1):
                return count, 0.0
            second = _gray(self.paths[b], cv2)
            return count, _correlation(_gray(self.paths[a], cv2),
                                       cv2.flip(second, 1) if flip else second,
                                       transform, cv2)

        with ThreadPoolExecutor(self.workers) as pool:
            self._keypoints.update(
                {(i, True): k for i, k in zip(wanted, pool.map(mirror_keypoints, wanted))})
            found = list(pool.map(check, range(len(pairs))))
        return (np.array([c for c, _ in found], np.int64).reshape(-1),
                np.array([r for _, r in found], np.float64).reshape(-1))

    @staticmethod
    def _look(path: str | Path):
        """The thumbnail and the keypoints of one image."""
        import cv2

        rgb = load_image(path)
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        h, w = lab.shape[:2]
        side = max(1, int(min(h, w) * THUMB_CROP))
        y, x = (h - side) // 2, (w - side) // 2
        small = cv2.resize(lab[y:y + side, x:x + side], (THUMB, THUMB),
                           interpolation=cv2.INTER_AREA)
        thumb = (small - small.mean((0, 1))) / (small.std((0, 1)) + 1e-3)
        return thumb, _keypoints(_gray(path, cv2, rgb), cv2)


def _keypoints(gray: np.ndarray, cv2) -> tuple[np.ndarray, np.ndarray | None]:
    """ORB keypoint positions `[K, 2]` and descriptors `[K, 32]` (None: none found)."""
    orb = cv2.ORB_create(KEYPOINTS, fastThreshold=5, edgeThreshold=15, patchSize=15)
    points, descriptors = orb.detectAndCompute(gray, None)
    return np.float32([p.pt for p in points]).reshape(-1, 2), descriptors


def _gray(path: str | Path, cv2, rgb: np.ndarray | None = None) -> np.ndarray:
    """The image (`rgb`, else decoded) in gray, its shorter side resized to `SIDE`."""
    gray = cv2.cvtColor(load_image(path) if rgb is None else rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    scale = SIDE / min(h, w)
    return cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _align(first, second, cv2) -> tuple[int, np.ndarray | None]:
    """RANSAC inliers of the similarity transform first → second (each `(points,
    descriptors)`), and the transform (0 and None: too few matches, no transform)."""
    (points_a, desc_a), (points_b, desc_b) = first, second
    if desc_a is None or desc_b is None or len(desc_a) < 2 or len(desc_b) < 2:
        return 0, None
    matches = [m[0] for m in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc_a, desc_b, k=2)
               if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(matches) < 3:
        return 0, None
    cv2.setRNGSeed(0)  # RANSAC's draws (this thread's generator): the same answer every run
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
