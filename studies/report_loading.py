"""What ``himnet report`` reads: the learned embeddings of a checkpoint or bundle, the data to
describe them with, and the other models to compare with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets import DatasetError, SensorData, load_dataset
from training.evaluate import data_from_settings


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


def load_others(source: str | Path, learned: Learned,
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
