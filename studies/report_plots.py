"""Figures of ``himnet report`` (matplotlib, Agg backend: no display needed).

Each function draws precomputed arrays (``studies/report.py`` computes them) into one PNG and
returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

DPI = 110


def cluster_colors(k: int) -> list[Any]:
    """One distinct colour per cluster (tab10, then tab20, then a sampled colormap)."""
    if k <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(k)]
    if k <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(k)]
    return [plt.get_cmap("hsv")(i / k) for i in range(k)]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _scatter_clusters(ax: plt.Axes, xy: np.ndarray, labels: np.ndarray, size: float = 28) -> None:
    k = int(labels.max()) + 1
    colors = cluster_colors(k)
    for c in range(k):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colors[c], label=f"{c} ({int(m.sum())})",
                   edgecolors="black", linewidths=0.3)


def plot_projections(pca: np.ndarray, ratios: np.ndarray, tsne: np.ndarray, perplexity: float,
                     labels: np.ndarray, path: Path) -> Path:
    """Spatial embeddings in 2-D: PCA (left) and t-SNE (right), coloured by k-means cluster."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    _scatter_clusters(axes[0], pca, labels)
    axes[0].set_title("spatial embeddings, PCA")
    axes[0].set_xlabel(f"PC1 ({100 * ratios[0]:.1f}% of variance)")
    axes[0].set_ylabel(f"PC2 ({100 * ratios[1]:.1f}%)")
    _scatter_clusters(axes[1], tsne, labels)
    axes[1].set_title(f"spatial embeddings, t-SNE (perplexity {perplexity:.0f})")
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    axes[1].legend(title="cluster (sensors)", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def plot_cluster_map(coords: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """Sensors at their (latitude, longitude), coloured by cluster."""
    fig, ax = plt.subplots(figsize=(8, 7))
    xy = np.column_stack([coords[:, 1], coords[:, 0]])  # x = longitude, y = latitude
    _scatter_clusters(ax, xy, labels, size=34)
    ax.set_aspect(1.0 / np.cos(np.deg2rad(float(np.mean(coords[:, 0])))))  # metres alike on both axes
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title("spatial-embedding clusters on the sensor map")
    ax.legend(title="cluster (sensors)", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_temporal_similarity(sim: np.ndarray, tod_sim: np.ndarray, dow_sim: np.ndarray | None,
                             day_names: Sequence[str], path: Path) -> Path:
    """Cosine similarity of (day, hour) temporal contexts (168 × 168, day-major), of the
    time-of-day table alone (slot × slot) and of the day-of-week table (7 × 7; None when the
    model has no day-of-week embedding)."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6), gridspec_kw={"width_ratios": [1.25, 1.0, 0.6]})
    im = axes[0].imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    for d in range(1, 7):
        axes[0].axhline(d * 24 - 0.5, color="black", lw=0.6)
        axes[0].axvline(d * 24 - 0.5, color="black", lw=0.6)
    ticks = np.arange(7) * 24 + 12
    axes[0].set_xticks(ticks, day_names)
    axes[0].set_yticks(ticks, day_names)
    axes[0].set_title("temporal embedding, (day, hour) contexts\n(mean cosine similarity of their slots)")
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04)
    steps = tod_sim.shape[0]
    im = axes[1].imshow(tod_sim, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    hour_ticks = np.arange(0, 25, 3) * steps / 24 - 0.5
    axes[1].set_xticks(hour_ticks, [f"{h:02d}" for h in range(0, 25, 3)])
    axes[1].set_yticks(hour_ticks, [f"{h:02d}" for h in range(0, 25, 3)])
    axes[1].set_xlabel("hour of day")
    axes[1].set_title("time-of-day table (slot × slot)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    if dow_sim is None:
        axes[2].text(0.5, 0.5, "no day-of-week\nembedding (d_dow = 0)", ha="center", va="center")
        axes[2].set_axis_off()
        return _save(fig, path)
    im = axes[2].imshow(dow_sim, cmap="RdBu_r", vmin=-1, vmax=1)
    axes[2].set_xticks(range(7), day_names, rotation=90)
    axes[2].set_yticks(range(7), day_names)
    for i in range(7):
        for j in range(7):
            axes[2].text(j, i, f"{dow_sim[i, j]:.1f}", ha="center", va="center", fontsize=6)
    axes[2].set_title("day-of-week table")
    return _save(fig, path)


def plot_temporal_clusters(t_labels: np.ndarray, day_names: Sequence[str], path: Path) -> Path:
    """k-means clusters of the (day, time-of-day slot) temporal contexts as a day × slot grid."""
    k = int(t_labels.max()) + 1
    steps = t_labels.shape[1]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    cmap = ListedColormap(cluster_colors(k))
    norm = BoundaryNorm(np.arange(-0.5, k + 0.5), k)
    im = ax.imshow(t_labels, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(7), day_names)
    ax.set_xticks(np.arange(25) * steps / 24 - 0.5, [f"{h:02d}" for h in range(25)], fontsize=8)
    ax.set_xlabel("hour of day")
    ax.set_title("clusters of the temporal embedding (k-means over day × time-of-day contexts)")
    cb = fig.colorbar(im, ax=ax, ticks=range(k))
    cb.set_label("temporal cluster")
    return _save(fig, path)


def plot_adjacency(learned: np.ndarray, road: np.ndarray, labels: np.ndarray, overlaps: list[dict[str, Any]],
                   path: Path) -> Path:
    """Learned adjacency and road graph (sensors ordered by cluster) and the top-k overlap
    against random neighbours."""
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels))[:-1] - 0.5
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    lw = learned[np.ix_(order, order)].copy()
    np.fill_diagonal(lw, np.nan)  # the self weight would dominate the colour scale
    im = axes[0].imshow(lw, cmap="viridis", interpolation="nearest")
    axes[0].set_title("learned adjacency softmax(relu(E Eᵀ))\n(sensors ordered by cluster; diagonal hidden)")
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04)
    rw = np.maximum(road, road.T)[np.ix_(order, order)].astype(np.float64)
    np.fill_diagonal(rw, 0.0)  # self-loops say nothing about neighbours
    im = axes[1].imshow(np.where(rw > 0, rw, np.nan), cmap="magma_r", interpolation="nearest")
    axes[1].set_title("road graph max(W, Wᵀ) (same order; zero = blank)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    for ax in axes[:2]:
        for b in bounds:
            ax.axhline(b, color="red", lw=0.5)
            ax.axvline(b, color="red", lw=0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    ks = [o["k"] for o in overlaps]
    x = np.arange(len(ks))
    axes[2].bar(x - 0.2, [o["overlap"] for o in overlaps], width=0.4, label="learned", color="tab:blue")
    axes[2].bar(x + 0.2, [o["random_mean"] for o in overlaps], width=0.4, yerr=[o["random_std"] for o in overlaps],
                label="random", color="tab:gray")
    axes[2].set_xticks(x, [f"top-{k}" for k in ks])
    axes[2].set_ylabel("share of road neighbours recovered")
    axes[2].set_title("top-k neighbour overlap with the road graph")
    axes[2].legend()
    return _save(fig, path)


def plot_cluster_profiles(means: dict[str, np.ndarray], steps_per_day: int, labels: np.ndarray,
                          path: Path) -> Path:
    """Each cluster's mean daily profile: weekdays (solid) and weekends (dashed)."""
    k = means["weekday"].shape[0]
    colors = cluster_colors(k)
    hours = np.arange(steps_per_day) * 24.0 / steps_per_day
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for c in range(k):
        n = int((labels == c).sum())
        axes[0].plot(hours, means["weekday"][c], color=colors[c], lw=1.6, label=f"{c} ({n})")
        axes[1].plot(hours, means["weekend"][c], color=colors[c], lw=1.6, ls="--", label=f"{c} ({n})")
    for ax, title in zip(axes, ("weekdays", "weekends")):
        ax.set_xlim(0, 24)
        ax.set_xticks(range(0, 25, 3))
        ax.set_xlabel("hour of day")
        ax.set_title(f"mean daily profile per cluster, {title}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean reading (missing left out)")
    axes[1].legend(title="cluster (sensors)", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def plot_cluster_stability(rows: Sequence[dict[str, Any]], shown_k: int, best_k: int, path: Path) -> Path:
    """Median adjusted Rand index against k: across k-means seeds and, when measured, across
    trained models (band down to the worst pair); the k shown in the report and the best marked."""
    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(ks, [r["seeds_ari"] for r in rows], "o-", color="tab:blue", label="k-means seeds (same model)")
    if "models_ari" in rows[0]:
        ax.plot(ks, [r["models_ari"] for r in rows], "s-", color="tab:red", label="trained models (median pair)")
        ax.fill_between(ks, [r["models_ari_min"] for r in rows], [r["models_ari"] for r in rows],
                        color="tab:red", alpha=0.15, label="down to the worst pair")
    ax.axvline(shown_k, color="grey", linestyle=":", label=f"k shown (k = {shown_k})")
    ax.axvline(best_k, color="black", linestyle="--", label=f"most reproducible (k = {best_k})")
    ax.set_xlabel("clusters k")
    ax.set_ylabel("adjusted Rand index")
    ax.set_ylim(min(0.0, *(r.get("models_ari_min", 0.0) for r in rows)) - 0.02, 1.02)
    ax.set_xticks(ks)
    ax.set_title("how often the spatial clusters come back")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    return _save(fig, path)
