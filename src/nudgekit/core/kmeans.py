"""Deterministic k-means: k-means++ seeding, then Lloyd iterations (numpy only).

Used for the out-of-distribution split (k = 2 on training queries) and for per-cluster γ
(k-means of the tracked records). :func:`kmeans` works on points in memory;
:func:`kmeans_fit` fits on a seeded sample of a possibly memory-mapped matrix and
:func:`kmeans_assign` labels its rows block by block, so memory stays bounded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nudgekit.core.checks import check_rows


def kmeans(
    x: np.ndarray, k: int = 2, *, seed: int = 0, max_iter: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means: k-means++ seeding, then Lloyd iterations to convergence.

    Parameters
    ----------
    x : ndarray [n, d]
        Points (computed on in float64).
    k : int
        Number of clusters, ``1 <= k <= n``.
    seed : int
        Seed of ``np.random.default_rng`` for the k-means++ seeding (the only randomness).
    max_iter : int
        Upper bound on Lloyd iterations; they stop earlier once no assignment changes.

    Returns
    -------
    centroids : ndarray [k, d]
        float64 means of the clusters (a centroid that loses all its points stays put).
    labels : ndarray [n]
        int64 index of each point's nearest centroid (ties: the lower index).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"k-means needs a 2-D array of points, got shape {x.shape}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means with k={k} needs at least k points, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("k-means: the points contain NaN or infinite values")
    rng = np.random.default_rng(seed)
    sq_norms = np.einsum("ij,ij->i", x, x)

    def sq_dist(centroids: np.ndarray) -> np.ndarray:
        return _sq_distances(x, centroids, sq_norms)

    # k-means++: each next seed drawn with probability ∝ squared distance to the nearest seed
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[rng.integers(n)]
    closest = sq_dist(centroids[:1])[:, 0]
    for j in range(1, k):
        total = closest.sum()
        pick = rng.integers(n) if total <= 0 else rng.choice(n, p=closest / total)
        centroids[j] = x[pick]
        closest = np.minimum(closest, sq_dist(centroids[j : j + 1])[:, 0])

    labels = sq_dist(centroids).argmin(axis=1)
    for _ in range(max_iter):
        for j in range(k):
            members = labels == j
            if members.any():
                centroids[j] = x[members].mean(axis=0)
        new_labels = sq_dist(centroids).argmin(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return centroids, labels.astype(np.int64)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean, ties: the lower index) per row."""
    x = np.asarray(x, dtype=np.float64)
    return _sq_distances(x, np.asarray(centroids, dtype=np.float64)).argmin(axis=1)


def _sq_distances(
    x: np.ndarray, centroids: np.ndarray, sq_norms: np.ndarray | None = None
) -> np.ndarray:
    # ‖x‖² − 2x·c + ‖c‖²: one BLAS product instead of an n × k × d difference array; the
    # same formula everywhere, so a point's cluster never depends on who computed it
    if sq_norms is None:
        sq_norms = np.einsum("ij,ij->i", x, x)
    c_norms = np.einsum("ij,ij->i", centroids, centroids)
    return np.maximum(sq_norms[:, None] - 2.0 * (x @ centroids.T) + c_norms, 0.0)


def kmeans_fit(
    x: Any,
    r: int,
    *,
    seed: int = 0,
    sample_size: int = 16384,
    max_iter: int = 300,
) -> np.ndarray:
    """Centroids of ``r`` k-means clusters of the L2-normalised rows of ``x``, from a sample.

    :func:`kmeans` on a seeded sample of at most ``sample_size`` rows (all rows when there
    are fewer): deterministic for a given ``seed``, and memory is bounded by the sample
    whatever the number of rows. Assign rows with :func:`kmeans_assign`.

    Parameters
    ----------
    x : array-like (N, d)
        May be a read-only memory map: only the sampled rows are read.
    r : int
        Number of clusters; capped at the number of sampled rows.
    seed, sample_size, max_iter : int

    Returns
    -------
    float64 (min(r, sample), d)
        Centroids (Euclidean k-means on unit vectors: not themselves unit-norm).
    """
    if int(r) != r or r < 1:
        raise ValueError(f"r (number of clusters) must be a positive integer, got {r!r}")
    n = int(x.shape[0])
    if n > sample_size:
        # its own stream, so the k-means++ seeding draws from default_rng(seed) unchanged
        rows = np.sort(np.random.default_rng([seed, 1]).choice(n, size=sample_size, replace=False))
        pts = np.array(x[rows], dtype=np.float64)
    else:
        rows = None
        pts = np.array(x[:n], dtype=np.float64)
    pts /= check_rows(pts, "k-means input", rows=rows)[:, None]
    return kmeans(pts, min(int(r), len(pts)), seed=seed, max_iter=max_iter)[0]


def kmeans_assign(x: Any, centroids: np.ndarray, *, block_rows: int = 8192) -> np.ndarray:
    """The nearest centroid of each L2-normalised row of ``x``, read in blocks (int64)."""
    centroids = np.asarray(centroids, dtype=np.float64)
    n = int(x.shape[0])
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, block_rows):
        block = np.array(x[start : start + block_rows], dtype=np.float64)
        block /= check_rows(block, "k-means input", offset=start)[:, None]
        labels[start : start + len(block)] = _sq_distances(block, centroids).argmin(axis=1)
    return labels
