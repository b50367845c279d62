"""The manifest of an exported bundle, built from a checkpoint and what the export measured.

The format itself (fields, checks, writing with a self-checksum) is ``model.bundle.Manifest``;
this module only maps a training checkpoint onto it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from model.bundle import BUNDLE_FORMAT, Manifest, utc_now_iso
from model.scaling import LOG1P, gap_readings
from training.checkpoint import Checkpoint


def jsonable(value: Any) -> Any:
    """Metrics and the like as plain JSON (numpy/torch scalars to Python, NaN/inf to None)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray)):
        return jsonable(np.asarray(value.tolist() if isinstance(value, Tensor) else value).tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def build_manifest(checkpoint: Checkpoint, *, contraction: str, files: dict[str, str],
                   parity: dict[str, dict[str, float]], export: dict[str, Any],
                   version: str | None = None,
                   intervals: dict[str, Any] | None = None) -> Manifest:
    """The bundle's manifest. ``export['weights_sha256']`` gives the default model version;
    ``contraction`` is the decoder order the graphs were exported with (recorded in config)."""
    config = checkpoint.config
    coords = checkpoint.coords
    return Manifest(
        format_version=BUNDLE_FORMAT,
        model_name="himnet",
        model_version=version or export["weights_sha256"][:12],
        dataset=checkpoint.dataset,
        created_at=utc_now_iso(),
        config=config.replace(contraction=contraction).to_dict(),
        num_nodes=config.num_nodes,
        in_steps=config.in_steps,
        out_steps=config.out_steps,
        interval_minutes=float(checkpoint.interval_minutes),
        steps_per_day=config.steps_per_day,
        timezone=checkpoint.timezone,
        sensor_ids=[str(s) for s in checkpoint.sensor_ids],
        coords=None if coords is None else [[float(a), float(b)] for a, b in coords],
        scaler_mean=float(checkpoint.scaler_mean),
        scaler_std=float(checkpoint.scaler_std),
        # under per_sensor: the global figure's gap reading, for readers of the scalar field
        missing_value=float(gap_readings(checkpoint.rule, checkpoint.scaler_mean, checkpoint.transform == LOG1P)),
        scaling=checkpoint.scaling,
        transform=checkpoint.transform,
        sensor_means=None if checkpoint.sensor_means is None else [float(v) for v in checkpoint.sensor_means],
        sensor_stds=None if checkpoint.sensor_stds is None else [float(v) for v in checkpoint.sensor_stds],
        missing_rule=checkpoint.rule.spec,
        st_embedding_dim=config.st_embedding_dim,
        metrics=jsonable(checkpoint.metrics),
        parity=parity,
        files=files,
        export=export,
        intervals=intervals,
        training=training_options(checkpoint),
    )


def training_options(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The training options that shaped the weights (loss, weight averaging), with only the
    settings that apply to them; None for a checkpoint without loop settings."""
    loop = checkpoint.train_settings.get("loop")
    if not isinstance(loop, Mapping) or "loss" not in loop:
        return None
    out: dict[str, Any] = {"loss": loop["loss"], "average": loop.get("average", "none")}
    if out["loss"] == "mae_mse":
        out["mse_weight"] = loop["mse_weight"]
    if out["average"] == "ema":
        out["ema_decay"] = loop["ema_decay"]
    if out["average"] == "swa":
        out.update(swa_epochs=loop["swa_epochs"], swa_start=loop["swa_start"])
    return jsonable(out)
