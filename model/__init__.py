"""HimNet network, config presets, the served graph, time encoding, the missing-value rule and
the bundle format (no FastAPI, no Redis).

``HimNet`` (torch) is imported lazily, on first use of ``model.HimNet``: the service imports
``model.bundle``, ``model.time_features`` and ``model.missing`` from this package and must not
pull in torch. The torch side: ``model.himnet`` (network), ``model.serving`` (what
``model.onnx`` computes, and the one helper that assembles model inputs), ``model.bundle_files``
(writing weights.pt and embeddings.npz).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from model.config import ABLATIONS, PRESETS, HimNetConfig, Preset, get_preset
from model.missing import DEFAULT_RULE, MISSING_VALUE, MissingRule, missing_mask, observed_mask, parse_rule
from model.time_features import encode_time, time_features

if TYPE_CHECKING:
    from model.himnet import HimNet

__all__ = [
    "ABLATIONS",
    "DEFAULT_RULE",
    "MISSING_VALUE",
    "MissingRule",
    "PRESETS",
    "HimNet",
    "HimNetConfig",
    "Preset",
    "encode_time",
    "get_preset",
    "missing_mask",
    "observed_mask",
    "parse_rule",
    "time_features",
]


def __getattr__(name: str) -> Any:
    if name == "HimNet":
        from model.himnet import HimNet

        return HimNet
    raise AttributeError(f"module 'model' has no attribute {name!r}")
