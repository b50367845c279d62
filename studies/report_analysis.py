"""The report's computations on the learned embeddings: projections, temporal contexts and their
groups, learned graph against the road graph, and what each cluster means in the data."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from model.time_features import time_features
from training.datasets import SensorData

# Hour ranges (start inclusive, end exclusive) of the temporal groups; days 0 = Monday.
TEMPORAL_GROUPS: dict[str, tuple[tuple[int, ...], tuple[int, int]]] = {
    "weekday AM rush (7-10h)": ((0, 1, 2, 3, 4), (7, 10)),
    "weekday midday (11-15h)": ((0, 1, 2, 3, 4), (11, 15)),
    "weekday PM rush (16-19h)": ((0, 1, 2, 3, 4), (16, 19)),
    "night (0-5h, all days)": ((0, 1, 2, 3, 4, 5, 6), (0, 5)),
    "weekend day (10-18h)": ((5, 6), (10, 18)),
}
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


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
    (missing readings, as the data's rule marks them, left out): ``{"weekday": N × S, "weekend": N × S}``;
    NaN where none."""
    feats = time_features(data.timestamps, data.steps_per_day)
    slot = np.minimum((feats[:, 0] * data.steps_per_day).astype(np.int64), data.steps_per_day - 1)
    weekend = feats[:, 1] >= 5
    out = {}
    for name, rows in (("weekday", ~weekend), ("weekend", weekend)):
        vals = data.values[rows].astype(np.float64)
        valid = data.missing.observed(vals)
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
