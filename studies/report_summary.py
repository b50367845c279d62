"""The report's numbers (:class:`ReportNumbers`, written as ``report.json``) and the Markdown
summary rendered from them (``report.md``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studies.stability import SEED_PAIRS


@dataclass
class ReportNumbers:
    """Everything the report measured. Sections that do not apply (no other models, no temporal
    tables, no road graph, no data) are None and left out of ``report.json``."""

    source: str
    kind: str  # "checkpoint" or "bundle"
    dataset: str
    ablation: str
    sensors: int
    clusters: int  # k of the spatial k-means shown
    seed: int
    data: str  # what data was read, or why none
    cluster_sizes: list[int]
    labels: list[int]  # spatial cluster per sensor (model order)
    ari_kmeans_seeds: dict[str, Any]  # {"seeds": [s, s+1], "ari": float}
    ari_models: list[dict[str, Any]] = field(default_factory=list)
    stability: dict[str, Any] | None = None  # studies.stability.cluster_stability
    pca_explained: list[float] = field(default_factory=list)
    tsne_perplexity: float = 0.0
    temporal: dict[str, Any] | None = None
    adjacency_overlap: list[dict[str, Any]] | None = None
    cluster_profiles: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  # figure -> file name

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def _stability_lines(nb: ReportNumbers) -> list[str]:
    """The reproducibility part of the summary."""
    st, k = nb.stability, nb.clusters
    many = "models_ari" in st["by_k"][0]
    lines = ["", f"How often the partition comes back (median adjusted Rand index; 1 = identical, 0 = chance). "
             f"K-means seeds: {nb.seed} vs the next {SEED_PAIRS} on "
             f"{'each model' if many else 'this model'}"
             + (f"; models: every pair of the {len(nb.ari_models) + 1} models (minimum in brackets)." if many
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
        for m in nb.ari_models:
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


def render_summary(nb: ReportNumbers) -> str:
    """The Markdown summary: what was read, the numbers, the figures."""
    lines = [f"# HimNet embedding report: {nb.dataset}", "",
             f"Source: `{nb.source}` ({nb.kind}, ablation `{nb.ablation}`), {nb.sensors} sensors; "
             f"{nb.data}.", "",
             "## Spatial clusters", "",
             f"k-means (`model.clustering.kmeans`, k = {nb.clusters}, seed {nb.seed}: the service's "
             f"`GET /embeddings` clusters) sizes: {nb.cluster_sizes}."]
    if nb.stability is not None:
        lines += _stability_lines(nb)
    lines += ["", f"PCA explains {100 * nb.pca_explained[0]:.1f}% + {100 * nb.pca_explained[1]:.1f}% "
              f"of the variance; t-SNE perplexity {nb.tsne_perplexity:.1f}.", ""]
    if nb.cluster_profiles is not None:
        lines += ["## What each cluster means (mean daily profile of the data)", "",
                  "| cluster | sensors | weekday mean | night 0-5h | AM rush 7-10h | PM rush 16-19h | weekday min (at) "
                  "| weekend mean |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in nb.cluster_profiles:
            def f(key: str) -> str:
                return f"{r[key]:.1f}" if key in r and np.isfinite(r[key]) else "-"
            at = f" ({r['weekday_min_at']})" if "weekday_min_at" in r else ""
            lines.append(f"| {r['cluster']} | {r['sensors']} | {f('weekday_mean')} | {f('night_mean')} | "
                         f"{f('am_rush_mean')} | {f('pm_rush_mean')} | {f('weekday_min')}{at} | {f('weekend_mean')} |")
        lines.append("")
    if nb.temporal is not None:
        t = nb.temporal
        lines += ["## Temporal embeddings (time of day × day of week)", "",
                  "Mean cosine similarity of (day, slot) contexts, averaged by (day, hour), within each group and to the other groups "
                  f"(separation, mean of within − between: {t['separation']:+.3f}; > 0 means the groups are "
                  "told apart):", "", "| group | within | between |", "| --- | --- | --- |"]
        for g, w, b in zip(t["groups"], t["within"], t["between"]):
            lines.append(f"| {g} | {w:.3f} | {b:.3f} |")
        lines.append("")
    if nb.adjacency_overlap is not None:
        lines += ["## Learned adjacency vs road graph", "",
                  "Share of each sensor's top-k road neighbours (symmetrised road graph) found among its top-k "
                  "learned neighbours, against k random neighbours:", "",
                  "| k | sensors | learned | random (mean ± sd) |", "| --- | --- | --- | --- |"]
        for o in nb.adjacency_overlap:
            lines.append(f"| {o['k']} | {o['sensors']} | {o['overlap']:.3f} | {o['random_mean']:.3f} ± "
                         f"{o['random_std']:.3f} |")
        lines.append("")
    lines += ["## Figures", ""] + [f"- `{name}`: ![{key}]({name})" for key, name in nb.figures.items()]
    if nb.notes:
        lines += ["", "Notes: " + "; ".join(nb.notes) + "."]
    return "\n".join(lines) + "\n"
