"""K-means over learned embeddings, numpy only, deterministic given a seed.

The service's ``/embeddings`` endpoints and the offline embedding report must assign the same
clusters to the same sensors, so both call this one function instead of a library whose
initialisation or tie-breaking could differ between versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    """Cluster labels (``N``), centres (``k × d``) and the within-cluster sum of squares."""

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int


def kmeans(
    points: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_init: int = 25,
    max_iter: int = 300,
    tol: float = 1e-8,
) -> KMeansResult:
    """Lloyd's k-means with k-means++ starts; the best of ``n_init`` runs wins.

    Learned embeddings cluster weakly, so k-means has many near-equal optima: on a LOS-LOOP model
    (207 sensors, k = 8) the agreement between two seeds' partitions (adjusted Rand index) rose
    from about 0.4 with 4 starts to about 0.5 with 25, at 23 ms per call.

    Labels are renumbered in order of first appearance (sensor 0 is always in cluster 0), so two
    runs that find the same partition report the same numbers. Computation is in float64.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"points must be 2-D (n × d), got shape {x.shape}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}")
    if not np.isfinite(x).all():
        raise ValueError("points contain NaN or infinite values")
    if n_init < 1 or max_iter < 1:
        raise ValueError("n_init and max_iter must be >= 1")
    rng = np.random.default_rng(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        result = _lloyd(x, _plus_plus(x, k, rng), max_iter, tol)
        if best is None or result.inertia < best.inertia - 1e-12:
            best = result
    assert best is not None
    return _canonical(x, best)


def _sq_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``n × k``, clipped at 0 against rounding."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each new centre drawn with probability ∝ squared distance."""
    n = x.shape[0]
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    closest = _sq_dist(x, centers[:1])[:, 0]
    for j in range(1, k):
        total = closest.sum()
        if total <= 0.0:  # fewer distinct points than k: any remaining point will do
            idx = int(rng.integers(n))
        else:
            idx = int(np.searchsorted(np.cumsum(closest), rng.random() * total, side="right"))
            idx = min(idx, n - 1)
        centers[j] = x[idx]
        closest = np.minimum(closest, _sq_dist(x, centers[j : j + 1])[:, 0])
    return centers


def _lloyd(x: np.ndarray, centers: np.ndarray, max_iter: int, tol: float) -> KMeansResult:
    """Alternate assignment and mean update until the centres stop moving."""
    k = centers.shape[0]
    labels = np.zeros(x.shape[0], dtype=np.int64)
    it = 0
    for it in range(1, max_iter + 1):
        dist = _sq_dist(x, centers)
        labels = dist.argmin(1)
        new = centers.copy()
        for j in range(k):
            members = labels == j
            if members.any():
                new[j] = x[members].mean(0)
            else:  # empty cluster: move it to the point farthest from its centre
                far = int(dist[np.arange(x.shape[0]), labels].argmax())
                new[j] = x[far]
                labels[far] = j
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= tol:
            break
    dist = _sq_dist(x, centers)
    labels = dist.argmin(1)
    inertia = float(dist[np.arange(x.shape[0]), labels].sum())
    return KMeansResult(labels=labels, centers=centers, inertia=inertia, n_iter=it)


def _canonical(x: np.ndarray, result: KMeansResult) -> KMeansResult:
    """Renumber clusters by first appearance; drop nothing (unused centres go last)."""
    order: list[int] = []
    for label in result.labels.tolist():
        if label not in order:
            order.append(label)
    order += [j for j in range(result.centers.shape[0]) if j not in order]
    remap = np.empty(len(order), dtype=np.int64)
    remap[np.asarray(order)] = np.arange(len(order))
    return KMeansResult(
        labels=remap[result.labels],
        centers=result.centers[np.asarray(order)],
        inertia=result.inertia,
        n_iter=result.n_iter,
    )
