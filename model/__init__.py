"""HimNet network, config presets, time encoding and the bundle format (no FastAPI, no Redis)."""

from model.config import ABLATIONS, PRESETS, HimNetConfig, Preset, get_preset
from model.himnet import HimNet
from model.time_features import encode_time, time_features

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
