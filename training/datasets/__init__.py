"""Dataset readers producing :class:`SensorData`, and :func:`load_dataset` that picks one.

``load_dataset("synthetic")`` needs nothing on disk; ``load_dataset("los-loop")`` reads the
shared LOS-LOOP copy (``../shared/data/los-loop`` beside the repository, or ``$HIMNET_DATA_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model.missing import MissingRule, parse_rule
from training.datasets.base import DatasetError, SensorData, regular_timestamps
from training.datasets.readers import read_hdf5, read_official_npz, read_pems_npz, read_wide_csv
from training.datasets.synthetic import generate_synthetic

__all__ = [
    "DatasetError",
    "MissingRule",
    "SensorData",
    "generate_synthetic",
    "load_dataset",
    "los_loop_dir",
    "read_hdf5",
    "read_official_npz",
    "read_pems_npz",
    "parse_rule",
    "read_wide_csv",
    "regular_timestamps",
    "shared_data_dir",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOS_LOOP = {"start": "2012-03-01T00:00", "interval_minutes": 5, "timezone": "America/Los_Angeles",
            "name": "los-loop"}


def shared_data_dir() -> Path:
    """Where shared real datasets live: ``$HIMNET_DATA_DIR`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("HIMNET_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def los_loop_dir() -> Path:
    return shared_data_dir() / "los-loop"


def load_dataset(source: str | Path, **options: Any) -> SensorData:
    """See :func:`_load`; also records how the data was loaded (for checkpoints).

    ``missing`` (every reader): what marks a missing reading, ``zero`` (default), ``nan`` or
    ``value:<x>`` (``model.missing``); recorded in its canonical spelling.
    """
    if options.get("missing") is not None:
        options = {**options, "missing": parse_rule(options["missing"]).spec}
    data = _load(source, **dict(options))
    if str(source).lower() != "synthetic" and options.get("format") != "synthetic":
        data.source = str(source)
        data.load_options = {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                             for k, v in options.items()}
    return data


def _load(source: str | Path, **options: Any) -> SensorData:
    """Load a dataset by name or path; ``options`` go to the reader (``start``, ``interval_minutes``,
    ``timezone``, ``adjacency``, ``locations``, ``format`` = official|pems|hdf5|csv, ...).

    Names: ``synthetic`` (options: num_sensors, days, seed, kind=speed|counts, ...), ``los-loop``. Paths: a directory
    holding ``data.npz`` (official) or ``los_speed.csv``; ``data.npz``; ``*.npz`` (PEMS0X);
    ``*.h5``/``*.hdf5``; ``*.csv``.
    """
    fmt = options.pop("format", None)
    text = str(source)
    key = text.lower()
    if key == "synthetic" or fmt == "synthetic":
        return generate_synthetic(**options)
    if key in ("los-loop", "los_loop", "losloop"):
        directory = los_loop_dir()
        if not (directory / "los_speed.csv").is_file():
            raise DatasetError(directory, "LOS-LOOP not found (expected los_speed.csv; set HIMNET_DATA_DIR)")
        return read_wide_csv(directory / "los_speed.csv", **{**LOS_LOOP, **options})
    path = Path(source)
    if path.is_dir():
        if (path / "data.npz").is_file():
            return read_official_npz(path / "data.npz", **options)
        if (path / "los_speed.csv").is_file():
            return read_wide_csv(path / "los_speed.csv", **{**LOS_LOOP, **options})
        raise DatasetError(path, "directory holds neither data.npz nor los_speed.csv")
    if not path.exists():
        raise DatasetError(path, "no such file (names: 'synthetic', 'los-loop')")
    suffix = path.suffix.lower()
    if fmt == "official" or (fmt is None and path.name == "data.npz"):
        return read_official_npz(path, **options)
    if fmt == "pems" or (fmt is None and suffix == ".npz"):
        return read_pems_npz(path, **options)
    if fmt == "hdf5" or (fmt is None and suffix in (".h5", ".hdf5", ".hdf")):
        return read_hdf5(path, **options)
    if fmt == "csv" or (fmt is None and suffix == ".csv"):
        if path.name == "los_speed.csv":
            options = {**LOS_LOOP, **options}
        return read_wide_csv(path, **options)
    raise DatasetError(path, f"unknown dataset format {suffix or path.name!r}; use format=official|pems|hdf5|csv")
