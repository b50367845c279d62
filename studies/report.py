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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from himnet.args import add_data_option, int_list, parse_data_options
from studies.report_analysis import (  # noqa: F401  (re-exported: the report's Python API)
    DAY_NAMES,
    TEMPORAL_GROUPS,
    cluster_profiles,
    cosine_similarity,
    daily_profiles,
    group_similarity,
    hour_membership,
    hourly_similarity,
    neighbour_overlap,
    pca_2d,
    temporal_contexts,
    top_k,
    tsne_2d,
)
from studies.report_loading import Learned, ReportError, load_learned, load_others, load_report_data  # noqa: F401
from studies.report_summary import ReportNumbers, render_summary
from studies.stability import (  # noqa: F401
    DEFAULT_KS,
    adjusted_rand_index,
    cluster_labels,
    cluster_stability,
    recommend_k,
    stability_over_k,
)
from training.datasets import DatasetError, SensorData

# Defaults of the service (service/settings.py: clusters = 8, cluster_seed = 0).
DEFAULT_CLUSTERS = 8
DEFAULT_SEED = 0


@dataclass
class Report:
    out_dir: Path
    figures: dict[str, Path]
    summary: Path
    numbers: ReportNumbers


@dataclass
class _Draft:
    """A report while it is being built: its numbers, figures so far and notes go into ``numbers``."""

    out: Path
    numbers: ReportNumbers
    figures: dict[str, Path]


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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    learned = load_learned(source)
    d, data_note = load_report_data(learned, data, data_options)
    others = load_others(source, learned, compare)
    if clusters != "auto" and (not isinstance(clusters, int) or clusters < 1):
        raise ReportError(f"clusters must be a positive number or 'auto', got {clusters!r}")
    draft = _spatial_clusters(learned, others, out, clusters, seed, stability_ks, data_note)
    labels = np.asarray(draft.numbers.labels)
    _projections(draft, learned, d, labels, seed)
    _temporal(draft, learned, temporal_clusters, seed)
    _graph_and_profiles(draft, learned, d, labels, top_ks, seed, data_note)
    numbers = draft.numbers
    numbers.figures = {name: path.name for name, path in draft.figures.items()}
    (out / "report.json").write_text(json.dumps(numbers.to_dict(), indent=2))
    summary = out / "report.md"
    summary.write_text(render_summary(numbers))
    return Report(out, draft.figures, summary, numbers)


def _spatial_clusters(learned: Learned, others: list[Learned], out: Path, clusters: int | str, seed: int,
                      stability_ks: Sequence[int], data_note: str) -> _Draft:
    """k-means of the spatial embeddings (k chosen by stability with "auto") and how reproducible."""
    from studies import report_plots as plots

    emb = learned.node_embedding
    other_embs = [o.node_embedding for o in others]
    constant = not np.ptp(emb, axis=0).any()  # w/o E_s: every sensor has the same embedding
    ks = set(stability_ks) | ({clusters} if isinstance(clusters, int) else set())
    by_k = [] if constant else stability_over_k([emb, *other_embs], sorted(ks), seed)
    if clusters == "auto":
        clusters = recommend_k(by_k) if by_k else 1
    labels = cluster_labels(emb, int(clusters), seed)
    k = int(labels.max()) + 1
    numbers = ReportNumbers(
        source=learned.source, kind=learned.kind, dataset=learned.dataset, ablation=learned.ablation,
        sensors=len(learned.sensor_ids), clusters=k, seed=seed, data=data_note,
        cluster_sizes=np.bincount(labels, minlength=k).tolist(), labels=labels.tolist(),
        ari_kmeans_seeds={"seeds": [seed, seed + 1],
                          "ari": adjusted_rand_index(labels, cluster_labels(emb, k, seed + 1))})
    draft = _Draft(out, numbers, {})
    if constant:
        numbers.notes.append("the spatial embedding is the same for every sensor (ablation w/o E_s): one "
                             "cluster, no reproducibility to measure")
        return draft
    stability = cluster_stability(emb, other_embs, k, seed, by_k)
    numbers.stability = stability
    numbers.ari_models = [
        {"other": o.source, "other_seed": o.train_settings.get("seed"), "ari": ari, "distance_correlation": rho}
        for o, ari, rho in zip(others, stability.get("ari", []), stability.get("distance_correlation", []))]
    draft.figures["cluster_stability"] = plots.plot_cluster_stability(
        stability["by_k"], k, stability["recommended_k"], out / "cluster_stability.png")
    return draft


def _projections(draft: _Draft, learned: Learned, d: SensorData | None, labels: np.ndarray, seed: int) -> None:
    """PCA and t-SNE of the spatial embeddings; the clusters on a map when coordinates are known."""
    from studies import report_plots as plots

    emb, out = learned.node_embedding, draft.out
    pca, ratios = pca_2d(emb)
    tsne, perplexity = tsne_2d(emb, seed)
    draft.numbers.pca_explained = ratios.tolist()
    draft.numbers.tsne_perplexity = perplexity
    draft.figures["spatial_embeddings"] = plots.plot_projections(pca, ratios, tsne, perplexity, labels,
                                                                 out / "spatial_embeddings.png")
    coords = learned.coords if learned.coords is not None else (d.coords if d is not None else None)
    if coords is not None:
        draft.figures["cluster_map"] = plots.plot_cluster_map(np.asarray(coords), labels, out / "cluster_map.png")
    else:
        draft.numbers.notes.append("no sensor coordinates: no map")


def _temporal(draft: _Draft, learned: Learned, temporal_clusters: int, seed: int) -> None:
    """Similarities and clusters of the (day of week, time of day) contexts."""
    from studies import report_plots as plots

    tod, dow, out = learned.tod_embedding, learned.dow_embedding, draft.out
    if tod is None or dow is None:
        draft.numbers.notes.append(f"no temporal embedding tables (ablation {learned.ablation!r}): "
                                   "no temporal figures")
        return
    contexts = temporal_contexts(tod, dow)  # 7·S × D
    sim = hourly_similarity(tod, dow)  # 168 × 168
    tod_sim = cosine_similarity(tod)
    groups = group_similarity(sim)
    t_labels = cluster_labels(contexts, temporal_clusters, seed).reshape(7, -1)  # 7 × S
    has_dow = dow.shape[1] > 0
    dow_sim = cosine_similarity(dow) if has_dow else None
    if not has_dow:
        draft.numbers.notes.append("no day-of-week embedding (d_dow = 0): temporal contexts are time of day only")
    draft.numbers.temporal = {**groups, "clusters": t_labels.tolist(),
                              "dow_similarity": dow_sim.tolist() if dow_sim is not None else None}
    draft.figures["temporal_similarity"] = plots.plot_temporal_similarity(
        sim, tod_sim, dow_sim, DAY_NAMES, out / "temporal_similarity.png")
    draft.figures["temporal_clusters"] = plots.plot_temporal_clusters(t_labels, DAY_NAMES,
                                                                      out / "temporal_clusters.png")


def _graph_and_profiles(draft: _Draft, learned: Learned, d: SensorData | None, labels: np.ndarray,
                        top_ks: tuple[int, ...], seed: int, data_note: str) -> None:
    """Learned adjacency against the road graph, and each cluster's mean daily profile."""
    from studies import report_plots as plots

    out, numbers = draft.out, draft.numbers
    road = d.adjacency if d is not None else None
    if road is not None:
        overlaps = [neighbour_overlap(learned.adjacency, road, kk, seed) for kk in top_ks]
        numbers.adjacency_overlap = overlaps
        draft.figures["adjacency"] = plots.plot_adjacency(learned.adjacency, road, labels, overlaps,
                                                          out / "adjacency.png")
    else:
        numbers.notes.append("no road graph in the data: no adjacency comparison")
    if d is not None:
        means, rows = cluster_profiles(daily_profiles(d), labels, d.steps_per_day)
        numbers.cluster_profiles = rows
        draft.figures["cluster_profiles"] = plots.plot_cluster_profiles(means, d.steps_per_day, labels,
                                                                        out / "cluster_profiles.png")
    else:
        numbers.notes.append(f"{data_note}: no cluster profiles")


# what `himnet report` reports as the user's mistake (himnet.args.run_command)
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
