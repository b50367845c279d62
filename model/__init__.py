"""HimNet network, config presets, time encoding and the bundle format (no FastAPI, no Redis).

``HimNet`` (torch) is imported lazily, on first use of ``model.HimNet``: the service imports
``model.bundle`` and ``model.time_features`` from this package and must not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from model.config import ABLATIONS, PRESETS, HimNetConfig, Preset, get_preset
from model.time_features import encode_time, time_features

if TYPE_CHECKING:
    from model.himnet import HimNet

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "HimNet",
    "HimNetConfig",
    "Preset",
    "encode_time",
    "get_preset",
    "time_features",
]


def __getattr__(name: str) -> Any:
    if name == "HimNet":
        from model.himnet import HimNet

        return HimNet
    raise AttributeError(f"module 'model' has no attribute {name!r}")
