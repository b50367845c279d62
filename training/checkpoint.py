"""One-file training checkpoint: weights (official layout), config, scaler, sensors, time settings,
metrics. Loading a file that does not fit fails with a message naming the file and the field."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import HimNet, HimNetConfig
from model.missing import MissingRule, parse_rule
from model.scaling import GLOBAL, LOG1P, NO_TRANSFORM, PER_SENSOR, parse_scaling, parse_transform
from training.windows import Scaler

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not match what the caller expects."""


@dataclass
class Checkpoint:
    config: HimNetConfig
    state_dict: dict[str, torch.Tensor]
    scaler_mean: float
    scaler_std: float
    sensor_ids: list[str]
    interval_minutes: float
    dataset: str
    coords: list[tuple[float, float]] | None = None  # (latitude, longitude) per sensor
    timezone: str | None = None  # IANA zone of the sensors' wall clock; None = naive local time
    metrics: dict[str, Any] = field(default_factory=dict)
    train_settings: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    missing_rule: str = "zero"  # model.missing spelling; checkpoints written before the rule existed: zero
    # model.scaling: older checkpoints lack these and load as the paper's global z-score. Under
    # per_sensor, scaler_mean/std are the global fallback figures and sensor_means/stds the scaler.
    scaling: str = GLOBAL
    transform: str = NO_TRANSFORM
    sensor_means: list[float] | None = None
    sensor_stds: list[float] | None = None
    format_version: int = CHECKPOINT_FORMAT

    @property
    def rule(self) -> MissingRule:
        """What marked a missing reading in the data this model was trained on."""
        return parse_rule(self.missing_rule)

    @staticmethod
    def scaler_fields(scaler: Scaler) -> dict[str, Any]:
        """The checkpoint's scaler fields for a fitted :class:`Scaler` (keyword arguments)."""
        per_sensor = scaler.per_sensor
        return {"scaler_mean": scaler.scalar_mean, "scaler_std": scaler.scalar_std,
                "scaling": scaler.scaling, "transform": scaler.transform_name,
                "sensor_means": [float(v) for v in scaler.mean] if per_sensor else None,  # type: ignore[union-attr]
                "sensor_stds": [float(v) for v in scaler.std] if per_sensor else None}  # type: ignore[union-attr]

    def scaler(self) -> Scaler:
        """The training scaler: global or per sensor, with the transform."""
        log1p = self.transform == LOG1P
        if self.scaling == PER_SENSOR:
            return Scaler(np.asarray(self.sensor_means, dtype=np.float64),
                          np.asarray(self.sensor_stds, dtype=np.float64), log1p,
                          float(self.scaler_mean), float(self.scaler_std))
        return Scaler(self.scaler_mean, self.scaler_std, log1p)

    def _check_scaling(self) -> None:
        """Scaling and transform spelt right; per-sensor figures present, N long, finite, std > 0."""
        self.scaling, self.transform = parse_scaling(self.scaling), parse_transform(self.transform)
        n = self.config.num_nodes
        if self.scaling == GLOBAL:
            if self.sensor_means is not None or self.sensor_stds is not None:
                raise CheckpointError("sensor_means/sensor_stds given under global scaling")
            return
        for name in ("sensor_means", "sensor_stds"):
            figures = getattr(self, name)
            if figures is None or len(figures) != n or not np.isfinite(figures).all():
                raise CheckpointError(f"per_sensor scaling needs {n} finite {name}")
        if not (np.asarray(self.sensor_stds) > 0).all():
            raise CheckpointError("per_sensor scaling needs every sensor std > 0")

    def build_model(self) -> HimNet:
        """A HimNet with these weights, in eval mode."""
        model = HimNet(self.config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"weights do not fit the checkpoint's config: {exc}") from exc
        return model.eval()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = dataclasses.asdict(self)
        payload["config"] = self.config.to_dict()
        payload["state_dict"] = {k: v.detach().cpu() for k, v in self.state_dict.items()}
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)  # never leave a half-written checkpoint behind
        return path

    @classmethod
    def load(cls, path: str | Path, *, num_nodes: int | None = None) -> Checkpoint:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from exc
        if not isinstance(payload, dict) or payload.get("format_version") != CHECKPOINT_FORMAT:
            got = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
            raise CheckpointError(f"{path}: checkpoint format {got!r}, expected {CHECKPOINT_FORMAT}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = known - set(payload) - {"coords", "timezone", "metrics", "train_settings", "created_at",
                                           "missing_rule", "scaling", "transform", "sensor_means",
                                           "sensor_stds"}
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
        try:
            payload["config"] = HimNetConfig.from_dict(payload["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: bad config: {exc}") from exc
        if payload.get("coords") is not None:
            payload["coords"] = [tuple(c) for c in payload["coords"]]
        try:
            payload["missing_rule"] = parse_rule(payload.get("missing_rule", "zero")).spec
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        ckpt = cls(**{k: v for k, v in payload.items() if k in known})
        try:
            ckpt._check_scaling()
        except (CheckpointError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        n = ckpt.config.num_nodes
        if len(ckpt.sensor_ids) != n:
            raise CheckpointError(f"{path}: {len(ckpt.sensor_ids)} sensor ids for a {n}-node model")
        if num_nodes is not None and n != num_nodes:
            raise CheckpointError(f"{path}: model has {n} nodes, data has {num_nodes}")
        try:
            ckpt.build_model()
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        return ckpt
