"""Reproducibility measures of the report's clusters, on embeddings whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from studies.stability import (
    best_match_jaccard,
    cluster_stability,
    distance_correlation,
    recommend_k,
    stability_over_k,
)


def three_blobs(rng: np.random.Generator, per_blob: int = 20, spread: float = 0.15) -> np.ndarray:
    """Three equally distant, tight groups in 4-D (which two merge at k = 2 is arbitrary)."""
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    pts = np.concatenate([c + spread * rng.standard_normal((per_blob, 2)) for c in centres])
    return np.concatenate([pts, 0.05 * rng.standard_normal((len(pts), 2))], 1)  # N = 60, 4


def rotated(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((x.shape[1], x.shape[1])))
    return 3.0 * x @ q


def test_distance_correlation_ignores_rotation_and_scale_only():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6))
    assert distance_correlation(x, rotated(x, rng)) == pytest.approx(1.0)
    assert abs(distance_correlation(x, rng.standard_normal((40, 6)))) < 0.15
    with pytest.raises(ValueError, match="cannot be compared"):
        distance_correlation(x, x[:30])


def test_best_match_jaccard():
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert best_match_jaccard(labels, np.array([5, 5, 5, 2, 2, 2])).tolist() == [1.0, 1.0]
    assert best_match_jaccard(labels, np.array([0, 0, 1, 1, 1, 1])).tolist() == pytest.approx([2 / 3, 3 / 4])


def test_real_groups_come_back_at_their_k_and_only_there():
    rng = np.random.default_rng(1)
    base = three_blobs(rng)
    models = [rotated(base + 0.04 * rng.standard_normal(base.shape), rng) for _ in range(3)]
    rows = stability_over_k(models, [3, 4, 5, 6], seed=0)
    by_k = {r["k"]: r for r in rows}
    assert by_k[3]["models_ari"] == pytest.approx(1.0) and by_k[3]["models_ari_min"] == pytest.approx(1.0)
    assert max(by_k[k]["models_ari"] for k in (4, 5, 6)) < 0.95  # splitting a tight group is arbitrary
    assert recommend_k(rows) == 3
    out = cluster_stability(models[0], models[1:], 3, 0, rows)
    assert out["recommended_k"] == 3 and out["basis"] == "trained models"
    assert out["ari"] == pytest.approx([1.0, 1.0])
    assert out["cluster_jaccard"] == pytest.approx([1.0, 1.0, 1.0])
    assert min(out["distance_correlation"]) > 0.9


def test_unrelated_models_do_not_agree():
    rng = np.random.default_rng(2)
    models = [rng.standard_normal((60, 8)) for _ in range(3)]
    rows = stability_over_k(models, [3, 5, 8], seed=0)
    assert all(abs(r["models_ari"]) < 0.15 for r in rows)
    out = cluster_stability(models[0], [], 5, 0, stability_over_k(models[:1], [3, 5, 8], seed=0))
    assert out["basis"] == "k-means seeds" and "cluster_jaccard" not in out
    assert all("models_ari" not in r for r in out["by_k"])


def test_ties_go_to_the_smaller_k():
    rows = [{"k": 3, "seeds_ari": 0.9}, {"k": 4, "seeds_ari": 0.9}, {"k": 5, "seeds_ari": 0.5}]
    assert recommend_k(rows) == 3
