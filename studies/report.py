"""``himnet report``: what a trained HimNet learned, as figures and a short Markdown summary.

From a checkpoint (``himnet train``) or a model bundle (``himnet export``) it computes:

- clusters of the spatial embeddings with ``model.clustering.kmeans`` (the very function and
  defaults behind the service's ``GET /embeddings/{node}``, so both name the same clusters) and how
  reproducible they are (``studies/stability.py``): adjusted Rand index across k-means seeds and,
  with ``--compare``, across other trained models, for every k from 3 to 10, the k that comes back
  best, each cluster's best match in the other models, and how much of the embedding's geometry
  the models share;
- 2-D projections of the spatial embeddings (PCA and t-SNE), and the clusters on a map when the
  sensors' coordinates are known;
- the temporal embedding of every (day of week, hour) context: cosine similarities and whether
  rush hours, nights and weekends form groups;
- the learned adjacency against the road graph (overlap of top-k neighbours, against random
  neighbours) when the data has one;
- each cluster's mean daily profile of the data (weekdays and weekends), to show what it means.

Computation lives here; drawing in ``studies/report_plots.py``. Python API: :func:`build_report`.
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from himnet.args import add_data_option, int_list, parse_data_options
from model.time_features import time_features
from training.datasets import DatasetError, SensorData, load_dataset
from training.evaluate import data_from_settings
from studies.stability import (
    DEFAULT_KS,
    SEED_PAIRS,
    adjusted_rand_index,
    cluster_labels,
    cluster_stability,
    recommend_k,
    stability_over_k,
)

# Defaults of the service (service/settings.py: clusters = 8, cluster_seed = 0).
DEFAULT_CLUSTERS = 8
DEFAULT_SEED = 0
# Hour ranges (start inclusive, end exclusive) of the temporal groups; days 0 = Monday.
TEMPORAL_GROUPS: dict[str, tuple[tuple[int, ...], tuple[int, int]]] = {
    "weekday AM rush (7-10h)": ((0, 1, 2, 3, 4), (7, 10)),
    "weekday midday (11-15h)": ((0, 1, 2, 3, 4), (11, 15)),
    "weekday PM rush (16-19h)": ((0, 1, 2, 3, 4), (16, 19)),
    "night (0-5h, all days)": ((0, 1, 2, 3, 4, 5, 6), (0, 5)),
    "weekend day (10-18h)": ((5, 6), (10, 18)),
}
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class ReportError(ValueError):
    """The source cannot be read or does not fit the data."""


@dataclass
class Learned:
    """What the report reads from a checkpoint or bundle (model order throughout)."""

    source: str
    kind: str  # "checkpoint" or "bundle"
    sensor_ids: list[str]
    node_embedding: np.ndarray  # N × d_s
    adjacency: np.ndarray  # N × N, rows sum to 1
    tod_embedding: np.ndarray | None  # steps_per_day × d_tod
    dow_embedding: np.ndarray | None  # 7 × d_dow
    coords: np.ndarray | None  # N × 2 (latitude, longitude)
    steps_per_day: int
    dataset: str
    ablation: str = "none"
    train_settings: dict[str, Any] = field(default_factory=dict)


def load_learned(path: str | Path) -> Learned:
    """A checkpoint file or a bundle directory -> :class:`Learned`."""
    path = Path(path)
    if path.is_dir():
        from model.bundle import BundleError, load_embeddings, read_manifest

        try:
            manifest = read_manifest(path)
            arrays = load_embeddings(path)
        except BundleError as exc:
            raise ReportError(str(exc)) from exc
        coords = np.asarray(manifest.coords, dtype=np.float64) if manifest.coords else None
        return Learned(
            source=str(path), kind="bundle", sensor_ids=list(manifest.sensor_ids),
            node_embedding=np.asarray(arrays["node_embedding"]), adjacency=np.asarray(arrays["adjacency"]),
            tod_embedding=arrays.get("tod_embedding"), dow_embedding=arrays.get("dow_embedding"),
            coords=coords, steps_per_day=int(manifest.steps_per_day), dataset=manifest.dataset,
            ablation=str(manifest.config.get("ablation", "none")))
    import torch

    from model.himnet import adaptive_graph
    from training.checkpoint import Checkpoint, CheckpointError

    try:
        ckpt = Checkpoint.load(path)
    except CheckpointError as exc:
        raise ReportError(str(exc)) from exc
    model = ckpt.build_model()
    with torch.no_grad():
        emb = model.node_embedding.detach().float()
        adjacency = adaptive_graph(emb).numpy()
        tod = model.tod_embedding.weight.detach().numpy() if model.uses_time_tables else None
        dow = model.dow_embedding.weight.detach().numpy() if model.uses_time_tables else None
    return Learned(
        source=str(path), kind="checkpoint", sensor_ids=list(ckpt.sensor_ids),
        node_embedding=emb.numpy(), adjacency=adjacency, tod_embedding=tod, dow_embedding=dow,
        coords=np.asarray(ckpt.coords, dtype=np.float64) if ckpt.coords else None,
        steps_per_day=ckpt.config.steps_per_day, dataset=ckpt.dataset, ablation=ckpt.config.ablation,
        train_settings=dict(ckpt.train_settings or {}))


def load_report_data(learned: Learned, data: str | Path | SensorData | None,
                     data_options: dict[str, Any] | None = None) -> tuple[SensorData | None, str]:
    """The data to read profiles, road graph and coordinates from, in model order, and a note.

    ``data`` None: the dataset recorded in the checkpoint (or named in the bundle's manifest).
    Returns (None, why) when it cannot be found or does not hold the model's sensors.
    """
    try:
        if isinstance(data, SensorData):
            d = data
        elif data is not None:
            d = load_dataset(data, **(data_options or {}))
        elif learned.train_settings.get("data"):
            d = data_from_settings(learned.train_settings)
        else:
            d = load_dataset(learned.dataset, **(data_options or {}))
    except (DatasetError, ValueError, OSError) as exc:
        return None, f"no data ({exc})"
    if d.sensor_ids == learned.sensor_ids:
        return d, f"data: {d.name} ({d.num_nodes} sensors, {d.num_steps} steps)"
    position = {s: i for i, s in enumerate(d.sensor_ids)}
    missing = [s for s in learned.sensor_ids if s not in position]
    if missing:
        return None, f"data {d.name!r} lacks {len(missing)} of the model's sensors (e.g. {missing[0]!r})"
    d = d.subset(nodes=[position[s] for s in learned.sensor_ids])
    return d, f"data: {d.name} (the model's {d.num_nodes} sensors, {d.num_steps} steps)"


# --- spatial embeddings ---------------------------------------------------------------------------
def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N × 2 projection on the first two principal axes, explained-variance ratios of both)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = var.sum()
    ratios = var[:2] / total if total > 0 else np.zeros(min(2, len(var)))
    proj = centred @ vt[:2].T
    if proj.shape[1] < 2:  # one-dimensional embedding: pad with zeros
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
        ratios = np.pad(ratios, (0, 2 - len(ratios)))
    return proj, ratios


def tsne_2d(x: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """(N × 2 t-SNE embedding, perplexity used); perplexity adapted to small N."""
    from sklearn.manifold import TSNE

    n = x.shape[0]
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    if np.allclose(x, x[0]):  # all points equal (w/o E_s): nothing to separate
        return np.zeros((n, 2)), perplexity
    out = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
               learning_rate="auto").fit_transform(np.asarray(x, dtype=np.float64))
    return out, perplexity


# --- temporal embeddings --------------------------------------------------------------------------
def temporal_contexts(tod: np.ndarray, dow: np.ndarray) -> np.ndarray:
    """The temporal embedding ``concat(tod[slot], dow[day])`` of every (day, slot) context, as
    HimNet builds e_t: (7 · slots) × D, day-major."""
    steps = tod.shape[0]
    return np.concatenate([np.tile(tod, (7, 1)), np.repeat(dow, steps, axis=0)], axis=1)


def hour_membership(steps: int) -> np.ndarray:
    """168 × (7 · steps) matrix averaging slot contexts into (day, hour) contexts, day-major.

    An hour with no slot of its own (fewer than 24 slots a day) takes the slot it falls in.
    """
    hour_of_slot = (np.arange(steps) * 24) // steps
    day_block = np.zeros((24, steps))
    for h in range(24):
        members = hour_of_slot == h
        if members.any():
            day_block[h, members] = 1.0 / members.sum()
        else:
            day_block[h, h * steps // 24] = 1.0
    return np.kron(np.eye(7), day_block)


def hourly_similarity(tod: np.ndarray, dow: np.ndarray) -> np.ndarray:
    """168 × 168 mean cosine similarity between the slot contexts of two (day, hour) contexts.

    Averaging similarities (not vectors) keeps an untrained, noisy time-of-day table from
    averaging away and leaving the day-of-week part to dominate.
    """
    m = hour_membership(tod.shape[0])
    return m @ cosine_similarity(temporal_contexts(tod, dow)) @ m.T


def cosine_similarity(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norm > 0, norm, 1.0)
    return unit @ unit.T


def group_similarity(sim: np.ndarray) -> dict[str, Any]:
    """Mean cosine similarity within and between the ``TEMPORAL_GROUPS`` of hourly contexts.

    ``sim`` is the 168 × 168 similarity of (day, hour) contexts in day-major order. Within-group
    means leave out the diagonal (an hour with itself).
    """
    index = {name: np.array([d * 24 + h for d in days for h in range(*hours)])
             for name, (days, hours) in TEMPORAL_GROUPS.items()}
    names = list(index)
    table = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            block = sim[np.ix_(index[a], index[b])]
            if i == j:
                n = len(index[a])
                table[i, j] = (block.sum() - np.trace(block)) / max(n * (n - 1), 1)
            else:
                table[i, j] = block.mean()
    within = np.diag(table)
    between = np.array([np.delete(table[i], i).mean() for i in range(len(names))])
    return {"groups": names, "table": table.tolist(), "within": within.tolist(), "between": between.tolist(),
            "separation": float((within - between).mean())}


# --- learned graph vs road graph ------------------------------------------------------------------
def top_k(weights: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row: the up-to-k strongest positive-weight columns, self excluded (stable tie order)."""
    w = np.asarray(weights, dtype=np.float64).copy()
    np.fill_diagonal(w, -np.inf)
    order = np.argsort(-w, axis=1, kind="stable")[:, :k]
    return [row[w[i, row] > 0] for i, row in enumerate(order)]


def neighbour_overlap(learned: np.ndarray, road: np.ndarray, k: int, seed: int = 0,
                      draws: int = 200) -> dict[str, float]:
    """Share of each sensor's top-k road neighbours that are among its top-k learned neighbours.

    The road graph is symmetrised (``max(W, Wᵀ)``) like the learned one (``relu(E Eᵀ)`` is
    symmetric before the row softmax); sensors without road neighbours are left out. Random
    baseline: the same count with k neighbours drawn at random (expected ``k / (N − 1)``),
    estimated over ``draws`` draws as mean and standard deviation.
    """
    n = learned.shape[0]
    k = min(k, n - 1)
    road_sym = np.maximum(road, road.T)
    road_nb, learned_nb = top_k(road_sym, k), top_k(learned + 1e-30, k)  # learned weights are > 0
    rows = [i for i in range(n) if len(road_nb[i])]
    if not rows:
        return {"k": k, "sensors": 0, "overlap": float("nan"), "random_mean": float("nan"),
                "random_std": float("nan"), "random_expected": k / (n - 1)}
    overlap = np.mean([len(np.intersect1d(learned_nb[i], road_nb[i])) / len(road_nb[i]) for i in rows])
    rng = np.random.default_rng(seed)
    sims = []
    for _ in range(draws):
        vals = []
        for i in rows:
            others = np.delete(np.arange(n), i)
            pick = rng.choice(others, size=k, replace=False)
            vals.append(len(np.intersect1d(pick, road_nb[i])) / len(road_nb[i]))
        sims.append(np.mean(vals))
    return {"k": k, "sensors": len(rows), "overlap": float(overlap), "random_mean": float(np.mean(sims)),
            "random_std": float(np.std(sims)), "random_expected": k / (n - 1)}


# --- what a cluster means -------------------------------------------------------------------------
def daily_profiles(data: SensorData) -> dict[str, np.ndarray]:
    """Per sensor and time-of-day slot, the mean reading over weekdays and over weekends
    (missing readings, 0, left out): ``{"weekday": N × S, "weekend": N × S}``; NaN where none."""
    feats = time_features(data.timestamps, data.steps_per_day)
    slot = np.minimum((feats[:, 0] * data.steps_per_day).astype(np.int64), data.steps_per_day - 1)
    weekend = feats[:, 1] >= 5
    out = {}
    for name, rows in (("weekday", ~weekend), ("weekend", weekend)):
        vals = data.values[rows].astype(np.float64)
        valid = vals != 0
        sums = np.zeros((data.steps_per_day, data.num_nodes))
        counts = np.zeros((data.steps_per_day, data.num_nodes))
        np.add.at(sums, slot[rows], np.where(valid, vals, 0.0))
        np.add.at(counts, slot[rows], valid)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = (sums / counts).T  # N × S
    return out


def cluster_profiles(profiles: dict[str, np.ndarray], labels: np.ndarray, steps_per_day: int
                     ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Mean profile per cluster (``{"weekday": k × S, "weekend": k × S}``) and a summary row each."""
    k = int(labels.max()) + 1
    means = {name: np.stack([_nanmean(p[labels == c], 0) for c in range(k)]) for name, p in profiles.items()}
    hours = np.arange(steps_per_day) * 24.0 / steps_per_day
    night = hours < 5
    rows = []
    for c in range(k):
        wd, we = means["weekday"][c], means["weekend"][c]
        row: dict[str, Any] = {"cluster": c, "sensors": int((labels == c).sum())}
        if np.isfinite(wd).any():
            low = int(np.nanargmin(wd))
            row.update(weekday_mean=float(np.nanmean(wd)), weekday_min=float(wd[low]),
                       weekday_min_at=f"{int(hours[low]):02d}:{int(round((hours[low] % 1) * 60)):02d}",
                       night_mean=float(_nanmean(wd[night], 0)),
                       am_rush_mean=float(_nanmean(wd[(hours >= 7) & (hours < 10)], 0)),
                       pm_rush_mean=float(_nanmean(wd[(hours >= 16) & (hours < 19)], 0)))
        if np.isfinite(we).any():
            row["weekend_mean"] = float(np.nanmean(we))
        rows.append(row)
    return means, rows


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": NaN is the answer
        return np.nanmean(x, axis=axis)


# --- the report -----------------------------------------------------------------------------------
@dataclass
class Report:
    out_dir: Path
    figures: dict[str, Path]
    summary: Path
    numbers: dict[str, Any]


def build_report(source: str | Path, out_dir: str | Path, *, data: str | Path | SensorData | None = None,
                 data_options: dict[str, Any] | None = None, clusters: int | str = DEFAULT_CLUSTERS,
                 seed: int = DEFAULT_SEED, compare: str | Path | Sequence[str | Path] | None = None,
                 top_ks: tuple[int, ...] = (5, 10), temporal_clusters: int = 6,
                 stability_ks: Sequence[int] = DEFAULT_KS) -> Report:
    """Compute everything, draw the figures, write ``report.md`` and ``report.json`` in ``out_dir``.

    ``clusters``: k of the spatial k-means, or "auto" for the k that the stability analysis finds
    most reproducible. ``compare``: other checkpoints or bundles of the same sensors (e.g. other
    training seeds) to measure reproducibility against.
    """
    from studies import report_plots as plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    learned = load_learned(source)
    d, data_note = load_report_data(learned, data, data_options)
    coords = learned.coords if learned.coords is not None else (d.coords if d is not None else None)
    n = len(learned.sensor_ids)
    emb = learned.node_embedding
    others = _load_others(source, learned, compare)
    if clusters != "auto" and (not isinstance(clusters, int) or clusters < 1):
        raise ReportError(f"clusters must be a positive number or 'auto', got {clusters!r}")
    other_embs = [o.node_embedding for o in others]
    constant = not np.ptp(emb, axis=0).any()  # w/o E_s: every sensor has the same embedding
    ks = set(stability_ks) | ({clusters} if isinstance(clusters, int) else set())
    by_k = [] if constant else stability_over_k([emb, *other_embs], sorted(ks), seed)
    if clusters == "auto":
        clusters = recommend_k(by_k) if by_k else 1
    labels = cluster_labels(emb, clusters, seed)
    k = int(labels.max()) + 1
    numbers: dict[str, Any] = {"source": learned.source, "kind": learned.kind, "dataset": learned.dataset,
                               "ablation": learned.ablation, "sensors": n, "clusters": k, "seed": seed,
                               "data": data_note, "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
                               "labels": labels.tolist()}
    numbers["ari_kmeans_seeds"] = {"seeds": [seed, seed + 1],
                                   "ari": adjusted_rand_index(labels, cluster_labels(emb, k, seed + 1))}
    figures: dict[str, Path] = {}
    notes: list[str] = []
    numbers["ari_models"] = []
    if constant:
        notes.append("the spatial embedding is the same for every sensor (ablation w/o E_s): one cluster, "
                     "no reproducibility to measure")
    else:
        stability = cluster_stability(emb, other_embs, k, seed, by_k)
        numbers["stability"] = stability
        numbers["ari_models"] = [
            {"other": o.source, "other_seed": o.train_settings.get("seed"), "ari": ari, "distance_correlation": rho}
            for o, ari, rho in zip(others, stability.get("ari", []), stability.get("distance_correlation", []))]
        figures["cluster_stability"] = plots.plot_cluster_stability(
            stability["by_k"], k, stability["recommended_k"], out / "cluster_stability.png")

    pca, ratios = pca_2d(emb)
    tsne, perplexity = tsne_2d(emb, seed)
    numbers["pca_explained"] = ratios.tolist()
    numbers["tsne_perplexity"] = perplexity
    figures["spatial_embeddings"] = plots.plot_projections(pca, ratios, tsne, perplexity, labels,
                                                           out / "spatial_embeddings.png")
    if coords is not None:
        figures["cluster_map"] = plots.plot_cluster_map(np.asarray(coords), labels, out / "cluster_map.png")
    else:
        notes.append("no sensor coordinates: no map")

    if learned.tod_embedding is not None and learned.dow_embedding is not None:
        contexts = temporal_contexts(learned.tod_embedding, learned.dow_embedding)  # 7·S × D
        sim = hourly_similarity(learned.tod_embedding, learned.dow_embedding)  # 168 × 168
        tod_sim = cosine_similarity(learned.tod_embedding)
        groups = group_similarity(sim)
        t_labels = cluster_labels(contexts, temporal_clusters, seed).reshape(7, -1)  # 7 × S
        has_dow = learned.dow_embedding.shape[1] > 0
        dow_sim = cosine_similarity(learned.dow_embedding) if has_dow else None
        if not has_dow:
            notes.append("no day-of-week embedding (d_dow = 0): temporal contexts are time of day only")
        numbers["temporal"] = {**groups, "clusters": t_labels.tolist(),
                               "dow_similarity": dow_sim.tolist() if dow_sim is not None else None}
        figures["temporal_similarity"] = plots.plot_temporal_similarity(
            sim, tod_sim, dow_sim, DAY_NAMES, out / "temporal_similarity.png")
        figures["temporal_clusters"] = plots.plot_temporal_clusters(t_labels, DAY_NAMES,
                                                                    out / "temporal_clusters.png")
    else:
        notes.append(f"no temporal embedding tables (ablation {learned.ablation!r}): no temporal figures")

    road = d.adjacency if d is not None else None
    if road is not None:
        overlaps = [neighbour_overlap(learned.adjacency, road, kk, seed) for kk in top_ks]
        numbers["adjacency_overlap"] = overlaps
        figures["adjacency"] = plots.plot_adjacency(learned.adjacency, road, labels, overlaps, out / "adjacency.png")
    else:
        notes.append("no road graph in the data: no adjacency comparison")

    if d is not None:
        means, rows = cluster_profiles(daily_profiles(d), labels, d.steps_per_day)
        numbers["cluster_profiles"] = rows
        figures["cluster_profiles"] = plots.plot_cluster_profiles(means, d.steps_per_day, labels,
                                                                  out / "cluster_profiles.png")
    else:
        notes.append(f"{data_note}: no cluster profiles")
    numbers["notes"] = notes
    numbers["figures"] = {name: path.name for name, path in figures.items()}
    (out / "report.json").write_text(json.dumps(numbers, indent=2))
    summary = out / "report.md"
    summary.write_text(render_summary(numbers))
    return Report(out, figures, summary, numbers)


def _load_others(source: str | Path, learned: Learned,
                 compare: str | Path | Sequence[str | Path] | None) -> list[Learned]:
    """The models to compare with, checked to describe the same sensors in the same order."""
    if compare is None:
        return []
    paths = [compare] if isinstance(compare, (str, Path)) else list(compare)
    others = []
    for path in paths:
        other = load_learned(path)
        if other.sensor_ids != learned.sensor_ids:
            raise ReportError(f"{path}: other sensors than {source}; cannot compare clusters")
        others.append(other)
    return others


def _stability_lines(nb: dict[str, Any]) -> list[str]:
    """The reproducibility part of the summary."""
    st, k = nb["stability"], nb["clusters"]
    many = "models_ari" in st["by_k"][0]
    lines = ["", f"How often the partition comes back (median adjusted Rand index; 1 = identical, 0 = chance). "
             f"K-means seeds: {nb['seed']} vs the next {SEED_PAIRS} on "
             f"{'each model' if many else 'this model'}"
             + (f"; models: every pair of the {len(nb['ari_models']) + 1} models (minimum in brackets)." if many
                else "; give `--compare` other trained models to measure reproducibility across training."), "",
             "| k | k-means seeds | " + ("models |" if many else ""), "| --- | --- |" + (" --- |" if many else "")]
    for r in st["by_k"]:
        mark = " (shown)" if r["k"] == k else ""
        mark += " (most reproducible)" if r["k"] == st["recommended_k"] else ""
        row = f"| {r['k']}{mark} | {r['seeds_ari']:.3f} |"
        if many:
            row += f" {r['models_ari']:.3f} ({r['models_ari_min']:.3f}) |"
        lines.append(row)
    lines += ["", f"Most reproducible across {st['basis']}: k = {st['recommended_k']} "
              f"(`himnet report --clusters {st['recommended_k']}`; the service takes it as `HIMNET_CLUSTERS`)."]
    if many:
        lines += ["", "| compared with | training seed | ARI at k = " + str(k) + " | geometry (Spearman ρ of "
                  "pairwise distances) |", "| --- | --- | --- | --- |"]
        for m in nb["ari_models"]:
            seed = "-" if m["other_seed"] is None else m["other_seed"]  # bundles do not record it
            lines.append(f"| `{m['other']}` | {seed} | {m['ari']:.3f} | {m['distance_correlation']:.3f} |")
        jac = ", ".join(f"{c}: {j:.2f}" for c, j in enumerate(st["cluster_jaccard"]))
        lines += ["", f"Each cluster's best match in the other models (median Jaccard index, 1 = found again "
                  f"whole): {jac}."]
        rho = float(np.median(st["distance_correlation"]))
        best = max(r["models_ari"] for r in st["by_k"])
        if rho >= 0.6 and best < 0.6:
            lines += ["", f"The models agree on the geometry (median ρ = {rho:.2f}) far more than on any "
                      f"partition (best median ARI {best:.2f}): the sensors lie on a continuum, not in "
                      "separate groups, so cluster boundaries move from model to model; read the clusters "
                      "as regions of that continuum."]
    return lines


def render_summary(nb: dict[str, Any]) -> str:
    """The Markdown summary: what was read, the numbers, the figures."""
    lines = [f"# HimNet embedding report: {nb['dataset']}", "",
             f"Source: `{nb['source']}` ({nb['kind']}, ablation `{nb['ablation']}`), {nb['sensors']} sensors; "
             f"{nb['data']}.", "",
             "## Spatial clusters", "",
             f"k-means (`model.clustering.kmeans`, k = {nb['clusters']}, seed {nb['seed']}: the service's "
             f"`GET /embeddings` clusters) sizes: {nb['cluster_sizes']}."]
    if "stability" in nb:
        lines += _stability_lines(nb)
    lines += ["", f"PCA explains {100 * nb['pca_explained'][0]:.1f}% + {100 * nb['pca_explained'][1]:.1f}% "
              f"of the variance; t-SNE perplexity {nb['tsne_perplexity']:.1f}.", ""]
    if "cluster_profiles" in nb:
        lines += ["## What each cluster means (mean daily profile of the data)", "",
                  "| cluster | sensors | weekday mean | night 0-5h | AM rush 7-10h | PM rush 16-19h | weekday min (at) "
                  "| weekend mean |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in nb["cluster_profiles"]:
            def f(key: str) -> str:
                return f"{r[key]:.1f}" if key in r and np.isfinite(r[key]) else "-"
            at = f" ({r['weekday_min_at']})" if "weekday_min_at" in r else ""
            lines.append(f"| {r['cluster']} | {r['sensors']} | {f('weekday_mean')} | {f('night_mean')} | "
                         f"{f('am_rush_mean')} | {f('pm_rush_mean')} | {f('weekday_min')}{at} | {f('weekend_mean')} |")
        lines.append("")
    if "temporal" in nb:
        t = nb["temporal"]
        lines += ["## Temporal embeddings (time of day × day of week)", "",
                  "Mean cosine similarity of (day, slot) contexts, averaged by (day, hour), within each group and to the other groups "
                  f"(separation, mean of within − between: {t['separation']:+.3f}; > 0 means the groups are "
                  "told apart):", "", "| group | within | between |", "| --- | --- | --- |"]
        for g, w, b in zip(t["groups"], t["within"], t["between"]):
            lines.append(f"| {g} | {w:.3f} | {b:.3f} |")
        lines.append("")
    if "adjacency_overlap" in nb:
        lines += ["## Learned adjacency vs road graph", "",
                  "Share of each sensor's top-k road neighbours (symmetrised road graph) found among its top-k "
                  "learned neighbours, against k random neighbours:", "",
                  "| k | sensors | learned | random (mean ± sd) |", "| --- | --- | --- | --- |"]
        for o in nb["adjacency_overlap"]:
            lines.append(f"| {o['k']} | {o['sensors']} | {o['overlap']:.3f} | {o['random_mean']:.3f} ± "
                         f"{o['random_std']:.3f} |")
        lines.append("")
    lines += ["## Figures", ""] + [f"- `{name}`: ![{key}]({name})" for key, name in nb["figures"].items()]
    if nb["notes"]:
        lines += ["", "Notes: " + "; ".join(nb["notes"]) + "."]
    return "\n".join(lines) + "\n"


# what `himnet report` reports as the user's mistake (himnet.cli.run_command)
USER_ERRORS = (ReportError, DatasetError)


def _clusters_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("examples:  himnet report runs/los/checkpoint.pt --out runs/los/report\n"
                     "           himnet report runs/s0/checkpoint.pt --out report --compare runs/s1/checkpoint.pt "
                     "runs/s2/checkpoint.pt --clusters auto")
    parser.add_argument("source", type=Path, help="checkpoint file (himnet train) or bundle directory (himnet export)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNG figures and report.md")
    parser.add_argument("--data", help="dataset (default: the one the checkpoint was trained on / the bundle names)")
    add_data_option(parser)
    parser.add_argument("--clusters", type=_clusters_arg, default=DEFAULT_CLUSTERS,
                        help="k of the spatial k-means (the service's default), or 'auto': the most reproducible k")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="k-means / t-SNE seed")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="MODEL",
                        help="other checkpoints or bundles of the same sensors (e.g. other training seeds): "
                             "how reproducible the clusters and the embedding are across them")
    parser.add_argument("--stability-k", type=int_list, default=DEFAULT_KS, metavar="K,K,...",
                        help="cluster counts to measure reproducibility at")
    parser.add_argument("--top-k", type=int_list, default=(5, 10), help="neighbour counts for the graph overlap")
    parser.add_argument("--temporal-clusters", type=int, default=6)


def run(args: argparse.Namespace) -> int:
    report = build_report(args.source, args.out, data=args.data, data_options=parse_data_options(args.data_option),
                          clusters=args.clusters, seed=args.seed, compare=args.compare, top_ks=args.top_k,
                          temporal_clusters=args.temporal_clusters, stability_ks=args.stability_k)
    print(report.summary.read_text())
    print(f"wrote {report.summary} and {len(report.figures)} figures to {report.out_dir}")
    return 0
