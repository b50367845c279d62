"""How reproducible the spatial clusters of ``himnet report`` are.

A cluster label means something only if it comes back: with another k-means seed (the same
model) and with another trained model (another training seed). The report asks both for every k
in a range, and how much of the embedding's *geometry* two models share: the rank correlation of
all pairwise sensor distances, which ignores the rotation, reflection and scale that training is
free to pick. Geometry that agrees while partitions do not means the sensors lie on a continuum:
the embedding is reproducible, a hard cut through it is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from model.clustering import kmeans

DEFAULT_KS = tuple(range(3, 11))  # k = 2 only halves the sensors: nearly always "stable", rarely telling
SEED_PAIRS = 3  # k-means seeds compared with the main one, per model and k


def adjusted_rand_index(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """Agreement of two partitions of the same sensors: 1 identical, ~0 chance, < 0 worse than chance."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(a), np.asarray(b)))


def cluster_labels(embedding: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels exactly as the service computes them (``min(k, N)`` clusters)."""
    return kmeans(np.asarray(embedding, dtype=np.float64), min(k, embedding.shape[0]), seed=seed).labels


def distance_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of the N(N-1)/2 pairwise Euclidean distances of two embeddings of the
    same N sensors (any widths): 1 when one is a rotated, reflected or scaled copy of the other."""
    from scipy.stats import spearmanr

    if a.shape[0] != b.shape[0]:
        raise ValueError(f"embeddings of {a.shape[0]} and {b.shape[0]} sensors cannot be compared")
    iu = np.triu_indices(a.shape[0], 1)
    return float(spearmanr(_distances(a)[iu], _distances(b)[iu])[0])


def _distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sq = (x * x).sum(1)
    return np.sqrt(np.maximum(sq[:, None] - 2.0 * x @ x.T + sq[None, :], 0.0))  # N, N


def best_match_jaccard(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each cluster of ``labels``: the Jaccard index of its best-matching cluster in ``other``
    (1.0 = the same sensors found again as one cluster)."""
    labels, other = np.asarray(labels), np.asarray(other)
    out = np.zeros(int(labels.max()) + 1)
    for c in range(out.size):
        mine = labels == c
        if mine.any():
            out[c] = max((mine & (other == d)).sum() / (mine | (other == d)).sum() for d in np.unique(other))
    return out


def stability_over_k(embeddings: Sequence[np.ndarray], ks: Sequence[int], seed: int) -> list[dict[str, Any]]:
    """Per k: median ARI across k-means seeds (``seed`` vs the next ``SEED_PAIRS``, every model)
    and, with two or more models, median and minimum ARI across every pair of models."""
    n = embeddings[0].shape[0]
    rows = []
    for k in sorted({min(int(k), n) for k in ks}):
        main = [cluster_labels(e, k, seed) for e in embeddings]
        seeds = [adjusted_rand_index(m, cluster_labels(e, k, seed + j))
                 for e, m in zip(embeddings, main) for j in range(1, SEED_PAIRS + 1)]
        row: dict[str, Any] = {"k": k, "seeds_ari": float(np.median(seeds))}
        if len(embeddings) > 1:
            pairs = [adjusted_rand_index(main[i], main[j]) for i, j in combinations(range(len(main)), 2)]
            row |= {"models_ari": float(np.median(pairs)), "models_ari_min": float(np.min(pairs))}
        rows.append(row)
    return rows


def recommend_k(rows: Sequence[dict[str, Any]]) -> int:
    """The k whose partition comes back best: across models when there are several, else across
    k-means seeds; ties go to the smaller k."""
    key = "models_ari" if "models_ari" in rows[0] else "seeds_ari"
    return int(max(rows, key=lambda r: (round(r[key], 3), -r["k"]))["k"])


def cluster_stability(main: np.ndarray, others: Sequence[np.ndarray], k: int, seed: int,
                      by_k: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Everything the report says about reproducibility: the per-k table ``by_k`` (from
    :func:`stability_over_k` over ``[main, *others]``), the k that comes back best and, with other
    models, how the main model's k clusters and geometry compare with each of them."""
    out: dict[str, Any] = {"by_k": list(by_k), "recommended_k": recommend_k(by_k),
                           "basis": "trained models" if others else "k-means seeds"}
    if others:
        labels = cluster_labels(main, k, seed)
        other_labels = [cluster_labels(e, k, seed) for e in others]
        out["ari"] = [adjusted_rand_index(labels, o) for o in other_labels]
        out["cluster_jaccard"] = np.median([best_match_jaccard(labels, o) for o in other_labels], 0).tolist()
        out["distance_correlation"] = [distance_correlation(main, e) for e in others]
    return out
