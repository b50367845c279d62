"""One-file training checkpoint: weights (official layout), config, scaler, sensors, time settings,
metrics. Loading a file that does not fit fails with a message naming the file and the field."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model import HimNet, HimNetConfig
from model.missing import MissingRule, parse_rule

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
    format_version: int = CHECKPOINT_FORMAT

    @property
    def rule(self) -> MissingRule:
        """What marked a missing reading in the data this model was trained on."""
        return parse_rule(self.missing_rule)

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
                                           "missing_rule"}
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
