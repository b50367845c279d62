"""k-means: recovers obvious clusters, is deterministic per seed, and rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest

from model.clustering import kmeans


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 5.0]])
    truth = rng.integers(0, 3, size=90)
    return centres[truth] + rng.normal(scale=0.3, size=(90, 3)), truth


def test_recovers_separated_blobs() -> None:
    x, truth = _blobs()
    res = kmeans(x, 3, seed=1)
    # same partition as the truth, up to renaming
    pairs = {(int(a), int(b)) for a, b in zip(truth, res.labels)}
    assert len(pairs) == 3
    assert res.labels[0] == 0  # canonical numbering: first point is in cluster 0
    assert sorted(set(res.labels.tolist())) == [0, 1, 2]
    expected = sum(((x[truth == c] - x[truth == c].mean(0)) ** 2).sum() for c in range(3))
    assert res.inertia == pytest.approx(expected, rel=1e-9)


def test_deterministic_given_seed() -> None:
    x = np.random.default_rng(3).normal(size=(200, 16))
    a = kmeans(x, 7, seed=42)
    b = kmeans(x.copy(), 7, seed=42)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.inertia == b.inertia


def test_every_point_nearest_its_centre() -> None:
    x = np.random.default_rng(5).normal(size=(150, 4))
    res = kmeans(x, 5, seed=0)
    d = ((x[:, None, :] - res.centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(d.argmin(1), res.labels)
    for j in range(5):
        np.testing.assert_allclose(res.centers[j], x[res.labels == j].mean(0), atol=1e-9)


def test_k_equals_n_and_duplicates() -> None:
    x = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    assert kmeans(x, 3, seed=0).inertia == pytest.approx(0.0)
    assert kmeans(x, 2, seed=0).inertia == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("points", "k", "message"),
    [
        (np.zeros(5), 1, "2-D"),
        (np.zeros((4, 2)), 5, "k must be"),
        (np.zeros((4, 2)), 0, "k must be"),
        (np.array([[np.nan, 0.0], [0.0, 0.0]]), 1, "NaN"),
    ],
)
def test_rejects_bad_input(points: np.ndarray, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kmeans(points, k)
