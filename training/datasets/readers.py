"""File readers: official ``data.npz``/``index.npz``, pandas HDF5, ``PEMS0X.npz`` and wide CSV.

Each returns a :class:`SensorData`; any file that cannot be understood raises
:class:`DatasetError` naming the file, so a user sees which file is wrong and why.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.missing import MissingRule, parse_rule
from model.time_features import time_features
from training.datasets.base import DatasetError, SensorData, regular_timestamps
from training.datasets.graph_files import (
    read_adj_csv,
    read_adj_pickle,
    read_edge_csv,
    read_locations,
    reorder_adjacency,
)

log = logging.getLogger(__name__)

# First recorded day of the PEMS0X files as commonly distributed (local time).
PEMS_STARTS = {"pems03": "2018-09-01", "pems04": "2018-01-01", "pems07": "2017-05-01", "pems08": "2016-07-01"}
DEFAULT_START = "2000-01-03T00:00"  # a Monday; used (with a warning) when a file has no clock
_TIME_COLUMNS = {"", "time", "timestamp", "date", "datetime", "unnamed: 0"}


def _float_opt(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise DatasetError(None, f"option {name}={value!r} is not a number") from exc


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError(path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(path, f"not a readable .npz archive ({exc.__class__.__name__}: {exc})") from exc


def _clean(path: Path, values: np.ndarray, rule: MissingRule) -> np.ndarray:
    """Numeric T × N float32 with NaN (missing) stored as the rule's sentinel (kept under ``nan``)."""
    try:
        vals = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DatasetError(path, f"values are not numeric ({exc})") from exc
    if vals.ndim != 2:
        raise DatasetError(path, f"expected T × N values, got shape {vals.shape}")
    if np.isinf(vals).any():
        raise DatasetError(path, "values contain infinity")
    return vals if rule.nan_only else np.nan_to_num(vals, nan=rule.value)


def _regularise(path: Path, stamps: np.ndarray, values: np.ndarray, interval_minutes: float | None,
                rule: MissingRule) -> tuple[np.ndarray, np.ndarray, float]:
    """Place rows on a regular grid (absent rows become missing); infer the interval if not given."""
    stamps = np.asarray(stamps, dtype="datetime64[s]")
    if len(stamps) > 1 and np.any(np.diff(stamps) <= np.timedelta64(0, "s")):
        raise DatasetError(path, "timestamps are not strictly increasing")
    if interval_minutes is None:
        if len(stamps) < 2:
            raise DatasetError(path, "cannot infer the interval from fewer than 2 rows")
        interval_minutes = float(np.diff(stamps).astype(np.int64).min()) / 60.0
    step = int(round(interval_minutes * 60))
    offsets = (stamps - stamps[0]).astype(np.int64)
    if np.any(offsets % step):
        raise DatasetError(path, f"timestamps are not on a {interval_minutes:g}-minute grid")
    rows = offsets // step
    if len(rows) and rows[-1] + 1 == len(rows):
        return stamps, values, interval_minutes
    full = np.full((int(rows[-1]) + 1, values.shape[1]), rule.value, dtype=np.float32)
    full[rows] = values
    log.info("%s: %d missing time steps filled with %g", path, len(full) - len(rows), rule.value)
    return regular_timestamps(stamps[0], len(full), interval_minutes), full, interval_minutes


def _sibling(path: Path, names: list[str]) -> Path | None:
    for name in names:
        cand = path.parent / name
        if cand.is_file():
            return cand
    return None


def _attach_graph(path: Path, ids: list[str], n: int, adjacency: str | Path | None,
                  locations: str | Path | None, adj_names: list[str],
                  loc_names: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Adjacency and coordinates from explicit paths, else from sibling files when present."""
    adj_path = Path(adjacency) if adjacency else _sibling(path, adj_names)
    loc_path = Path(locations) if locations else _sibling(path, loc_names)
    adj = coords = None
    if adj_path is not None:
        if adj_path.suffix == ".pkl":
            adj_ids, raw = read_adj_pickle(adj_path)
            adj = reorder_adjacency(adj_path, adj_ids, raw, ids)
        else:
            adj = read_adj_csv(adj_path, n)
        log.info("%s: adjacency from %s", path, adj_path)
    if loc_path is not None:
        coords = read_locations(loc_path, ids)
        log.info("%s: sensor locations from %s", path, loc_path)
    return adj, coords


def read_official_npz(path: str | Path, *, index: str | Path | None = None, start: str | None = None,
                      sensor_ids: list[str] | None = None, name: str | None = None,
                      timezone: str | None = None, adjacency: str | Path | None = None,
                      check_time: bool = True, missing: MissingRule | str | None = None) -> SensorData:
    """Official HimNet ``data.npz`` (``data``: T × N × 3 = value, tod fraction, dow) + ``index.npz``.

    The file stores time features, not timestamps; the clock is rebuilt from them (first row's
    day of week and slot, or ``start``) and checked against every row so that
    :func:`model.time_features.time_features` reproduces the stored channels.
    """
    path = Path(path)
    arrays = _load_npz(path)
    if "data" not in arrays:
        raise DatasetError(path, f"no 'data' array (keys: {sorted(arrays)})")
    data = arrays["data"]
    if data.ndim != 3 or data.shape[2] < 3:
        raise DatasetError(path, f"'data' must be T × N × 3 (value, tod, dow), got {data.shape}")
    rule = parse_rule(missing)
    values = _clean(path, data[..., 0], rule)
    tod = data[:, 0, 1].astype(np.float64)
    dow = data[:, 0, 2].astype(np.float64)
    if tod.min() < 0 or tod.max() >= 1 or dow.min() < 0 or dow.max() > 6:
        raise DatasetError(path, "channel 1 must be a time-of-day fraction in [0, 1) and channel 2 a day of week 0..6")
    stamps, interval = _official_clock(path, tod, dow, len(values), start, check_time)
    index_path = Path(index) if index else path.parent / "index.npz"
    splits = _read_index(index_path, len(values)) if index_path.is_file() else None
    n = values.shape[1]
    adj = None
    adj_path = Path(adjacency) if adjacency else _sibling(path, ["adj_mx.pkl"])
    if adj_path is not None:
        adj_ids, raw = read_adj_pickle(adj_path)
        if raw.shape[0] == n:
            sensor_ids = sensor_ids or adj_ids
            adj = reorder_adjacency(adj_path, adj_ids, raw, [str(s) for s in sensor_ids])
    ids = [str(s) for s in sensor_ids] if sensor_ids else [str(i) for i in range(n)]
    return SensorData(values=values, timestamps=stamps, sensor_ids=ids, interval_minutes=interval,
                      name=name or path.parent.name or path.stem, adjacency=adj, timezone=timezone,
                      index=splits, source=str(path), missing=rule)


def _official_clock(path: Path, tod: np.ndarray, dow: np.ndarray, rows: int, start: str | None,
                    check_time: bool) -> tuple[np.ndarray, float]:
    """Timestamps rebuilt from the stored time channels (T each), checked row by row: (stamps, interval)."""
    steps = np.mod(np.diff(tod), 1.0)
    steps = steps[steps > 1e-9]
    if not len(steps):
        raise DatasetError(path, "cannot infer the interval: time of day never changes")
    interval = float(round(float(np.median(steps)) * 1440))
    if interval <= 0 or 1440 % interval:
        raise DatasetError(path, f"inferred interval {interval} min does not divide a day")
    spd = int(1440 // interval)
    if start is None:
        monday = np.datetime64("2000-01-03T00:00", "s")
        slot0 = int(round(tod[0] * spd))
        start = monday + np.timedelta64(int(dow[0]), "D") + np.timedelta64(int(slot0 * interval * 60), "s")
    stamps = regular_timestamps(start, rows, interval)
    if check_time:
        feats = time_features(stamps, spd)
        bad = np.flatnonzero((np.abs(feats[:, 0] - tod) > 0.5 / spd) | (feats[:, 1] != np.trunc(dow)))
        if len(bad):
            raise DatasetError(path, f"time channels are not one contiguous {interval:g}-minute series "
                                     f"(first mismatch at row {bad[0]}); pass check_time=False to ignore")
    return stamps, interval


def _read_index(index_path: Path, num_rows: int) -> dict[str, np.ndarray]:
    """The official ``index.npz``: K × 3 (start, mid, end) window rows per split, checked."""
    idx = _load_npz(index_path)
    splits = {}
    for key in ("train", "val", "test"):
        if key not in idx:
            raise DatasetError(index_path, f"no {key!r} array (keys: {sorted(idx)})")
        rows = np.asarray(idx[key], dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise DatasetError(index_path, f"{key!r} must be K × 3 (start, mid, end), got {rows.shape}")
        if len(rows) and (rows.min() < 0 or rows[:, 2].max() > num_rows
                          or np.any(rows[:, 0] >= rows[:, 1]) or np.any(rows[:, 1] >= rows[:, 2])):
            raise DatasetError(index_path, f"{key!r} rows must satisfy 0 <= start < mid < end <= {num_rows}")
        splits[key] = rows
    return splits


def read_hdf5(path: str | Path, *, key: str | None = None, name: str | None = None,
              timezone: str | None = None, adjacency: str | Path | None = None,
              locations: str | Path | None = None, missing: MissingRule | str | None = None) -> SensorData:
    """METR-LA / PEMS-BAY style pandas HDF5: one DataFrame, DatetimeIndex × sensor ids.

    A tz-aware index is converted to ``timezone`` (or its own zone) and stored as wall clock.
    Sibling ``adj_mx*.pkl`` and ``graph_sensor_locations*.csv`` are attached when present.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such file")
    try:
        frame = pd.read_hdf(path, key=key)
    except Exception as exc:  # noqa: BLE001 - PyTables raises its own error types for a bad file
        raise DatasetError(path, f"not a readable pandas HDF5 file ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(path, f"expected a DataFrame, found {type(frame).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DatasetError(path, f"index must be a DatetimeIndex, found {type(frame.index).__name__}")
    index = frame.index
    if index.tz is not None:
        timezone = timezone or str(index.tz)
        index = index.tz_convert(timezone).tz_localize(None)
    ids = [str(c) for c in frame.columns]
    rule = parse_rule(missing)
    values = _clean(path, frame.to_numpy(), rule)
    stamps, values, interval = _regularise(path, index.to_numpy().astype("datetime64[s]"), values, None, rule)
    suffix = path.stem.split("-")[-1] if "-" in path.stem else ""
    adj, coords = _attach_graph(
        path, ids, len(ids), adjacency, locations,
        ["adj_mx.pkl", f"adj_mx_{suffix}.pkl"] if suffix else ["adj_mx.pkl"],
        ["graph_sensor_locations.csv", f"graph_sensor_locations_{suffix}.csv"] if suffix
        else ["graph_sensor_locations.csv"])
    return SensorData(values=values, timestamps=stamps, sensor_ids=ids, interval_minutes=interval,
                      name=name or path.stem, coords=coords, adjacency=adj, timezone=timezone,
                      source=str(path), missing=rule)


def read_pems_npz(path: str | Path, *, start: str | None = None, interval_minutes: float = 5,
                  channel: int = 0, name: str | None = None, timezone: str | None = "America/Los_Angeles",
                  adjacency: str | Path | None = None, missing: MissingRule | str | None = None) -> SensorData:
    """``PEMS0X.npz`` (key ``data``: T × N × C, flow in channel 0, 5-minute steps).

    The file has no clock: ``start`` defaults to the dataset's known first day for PEMS03/04/07/08.
    A sibling ``PEMS0X.csv`` edge list (``from,to,cost``) becomes a 0/1 adjacency.
    """
    path = Path(path)
    arrays = _load_npz(path)
    if "data" not in arrays:
        raise DatasetError(path, f"no 'data' array (keys: {sorted(arrays)})")
    data = arrays["data"]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise DatasetError(path, f"'data' must be T × N × C, got shape {data.shape}")
    channel = int(channel)
    if not 0 <= channel < data.shape[2]:
        raise DatasetError(path, f"channel {channel} out of range for {data.shape[2]} channels")
    rule = parse_rule(missing)
    values = _clean(path, data[..., channel], rule)
    key = path.stem.lower()
    if start is None:
        start = PEMS_STARTS.get(key)
        if start is None:
            start = DEFAULT_START
            log.warning("%s: no start time given; assuming %s (pass start=...)", path, start)
    interval = _float_opt(interval_minutes, "interval_minutes")
    n = values.shape[1]
    adj = None
    edge_path = Path(adjacency) if adjacency else _sibling(path, [f"{path.stem}.csv"])
    if edge_path is not None:
        adj = read_edge_csv(edge_path, n)
    return SensorData(values=values, timestamps=regular_timestamps(start, len(values), interval),
                      sensor_ids=[str(i) for i in range(n)], interval_minutes=interval,
                      name=name or key, adjacency=adj, timezone=timezone, source=str(path), missing=rule)


def read_wide_csv(path: str | Path, *, start: str | None = None, interval_minutes: float | None = None,
                  name: str | None = None, timezone: str | None = None,
                  adjacency: str | Path | None = None, locations: str | Path | None = None,
                  missing: MissingRule | str | None = None) -> SensorData:
    """Wide CSV: header = sensor ids, one row per step (LOS-LOOP's ``los_speed.csv``).

    A first column named time/timestamp/date (or unnamed) holds the clock; otherwise rows start
    at ``start`` every ``interval_minutes`` (default 5). Empty cells are missing (stored as the
    rule's sentinel, 0 by default; NaN under ``missing=nan``). Sibling
    ``<prefix>_adj.csv`` / ``adj_mx.pkl`` and ``graph_sensor_locations.csv`` /
    ``<prefix>_locations.csv`` are attached when present or given.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"not a readable CSV ({exc.__class__.__name__}: {exc})") from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DatasetError(path, "no data rows")
    stamps = None
    first = str(frame.columns[0]).strip().lower()
    if first in _TIME_COLUMNS:
        try:
            stamps = pd.to_datetime(frame.iloc[:, 0]).to_numpy().astype("datetime64[s]")
        except (ValueError, TypeError) as exc:
            raise DatasetError(path, f"first column {frame.columns[0]!r} is not a timestamp column ({exc})") from exc
        frame = frame.iloc[:, 1:]
    ids = [str(c).strip() for c in frame.columns]
    if any(i.startswith("Unnamed:") for i in ids):
        raise DatasetError(path, "header has an empty sensor id")
    cells = frame.replace({"": "nan"})
    try:
        values = cells.to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(path, f"non-numeric reading ({exc})") from exc
    rule = parse_rule(missing)
    values = _clean(path, values, rule)
    if stamps is not None:
        stamps, values, interval = _regularise(
            path, stamps, values, None if interval_minutes is None else _float_opt(interval_minutes, "interval_minutes"),
            rule)
    else:
        interval = 5.0 if interval_minutes is None else _float_opt(interval_minutes, "interval_minutes")
        if start is None:
            start = DEFAULT_START
            log.warning("%s: no start time given; assuming %s (pass start=...)", path, start)
        stamps = regular_timestamps(start, len(values), interval)
    prefix = path.stem.split("_")[0]
    adj, coords = _attach_graph(path, ids, len(ids), adjacency, locations,
                                [f"{prefix}_adj.csv", "adj.csv", "adj_mx.pkl"],
                                ["graph_sensor_locations.csv", f"{prefix}_locations.csv", "locations.csv"])
    return SensorData(values=values, timestamps=stamps, sensor_ids=ids, interval_minutes=interval,
                      name=name or path.stem, coords=coords, adjacency=adj, timezone=timezone,
                      source=str(path), missing=rule)
