"""What the inspection endpoints serve: spatial embeddings, learned-graph neighbours, clusters.

Computed once at startup from the bundle's ``embeddings.npz``; clusters come from
``model.clustering.kmeans`` so the offline report assigns the same clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.clustering import kmeans


@dataclass(frozen=True)
class EmbeddingIndex:
    """Per-sensor embedding, cluster and strongest neighbours, in model order."""

    sensor_ids: list[str]
    position: dict[str, int]
    spatial: np.ndarray  # N × d_s
    adjacency: np.ndarray  # N × N, rows sum to 1
    clusters: np.ndarray  # N
    n_clusters: int
    neighbours: np.ndarray  # N × k, positions by descending weight, self excluded
    coords: list[list[float]] | None

    @classmethod
    def build(
        cls,
        arrays: dict[str, np.ndarray],
        sensor_ids: list[str],
        coords: list[list[float]] | None,
        *,
        n_clusters: int,
        seed: int,
        k_neighbours: int,
    ) -> EmbeddingIndex:
        spatial = np.asarray(arrays["node_embedding"], dtype=np.float64)
        adjacency = np.asarray(arrays["adjacency"], dtype=np.float64)
        n = len(sensor_ids)
        if spatial.shape[0] != n or adjacency.shape != (n, n):
            raise ValueError(f"embeddings.npz shapes {spatial.shape} / {adjacency.shape} do not "
                             f"match {n} sensors")
        k_clusters = min(n_clusters, n)
        labels = kmeans(spatial, k_clusters, seed=seed).labels
        others = adjacency.copy()
        np.fill_diagonal(others, -np.inf)
        k = min(k_neighbours, n - 1)
        # stable sort on negated weights: ties broken by model order, deterministically
        order = np.argsort(-others, axis=1, kind="stable")[:, :k]
        return cls(
            sensor_ids=list(sensor_ids),
            position={s: i for i, s in enumerate(sensor_ids)},
            spatial=spatial,
            adjacency=adjacency,
            clusters=labels,
            n_clusters=k_clusters,
            neighbours=order,
            coords=coords,
        )

    def coords_of(self, i: int) -> list[float] | None:
        return None if self.coords is None else [float(c) for c in self.coords[i]]
