"""The one in-memory form every dataset reader produces, and the error a bad file raises.

Readers differ in layout (npz, HDF5, CSV, generated); everything after them (windows, scaler,
baselines, checkpoint metadata) only ever sees :class:`SensorData`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.missing import DEFAULT_RULE, MissingRule, parse_rule


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


@dataclass
class SensorData:
    """Readings of ``N`` sensors over ``T`` equally spaced steps.

    ``values`` is ``T × N`` float32; ``missing`` says which readings mean "no reading": 0 under
    the public benchmarks' convention (the default), NaN only, or a sentinel (``model.missing``).
    NaN may appear only under the NaN rule (readers store empty cells as the sentinel otherwise).
    ``timestamps`` are local wall-clock ``datetime64[s]`` of each row, which is what
    the time features are computed from. ``index`` optionally carries official split windows as
    ``{"train"|"val"|"test": K × 3 (start, mid, end)}`` rows.
    """

    values: np.ndarray  # T × N float32, gaps hold the rule's sentinel (0 by default) or NaN
    timestamps: np.ndarray  # T datetime64[s], local wall clock
    sensor_ids: list[str]
    interval_minutes: float
    name: str
    coords: np.ndarray | None = None  # N × 2 (latitude, longitude)
    adjacency: np.ndarray | None = None  # N × N
    timezone: str | None = None  # IANA zone of the wall clock, when known
    index: dict[str, np.ndarray] | None = None  # official split windows, when the format has them
    source: str = ""  # where it came from (path or "synthetic"), for checkpoint metadata
    # How to get it again: ``load_dataset(source, **load_options)`` then ``reselect(selection)``;
    # recorded in checkpoints so evaluation can re-read exactly the data a model was trained on.
    load_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    selection: dict[str, Any] | None = None  # {"nodes": [column...], "rows": [start, stop]} of the source
    missing: MissingRule = DEFAULT_RULE  # what marks a missing reading in ``values``

    def __post_init__(self) -> None:
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        self.timestamps = np.asarray(self.timestamps, dtype="datetime64[s]")
        self.sensor_ids = [str(s) for s in self.sensor_ids]
        where = self.source or self.name
        if self.values.ndim != 2:
            raise DatasetError(where, f"values must be T × N, got shape {self.values.shape}")
        t, n = self.values.shape
        if t == 0 or n == 0:
            raise DatasetError(where, f"empty data (shape {self.values.shape})")
        if self.timestamps.shape != (t,):
            raise DatasetError(where, f"{self.timestamps.shape[0]} timestamps for {t} rows")
        if len(self.sensor_ids) != n:
            raise DatasetError(where, f"{len(self.sensor_ids)} sensor ids for {n} columns")
        if len(set(self.sensor_ids)) != n:
            raise DatasetError(where, "duplicate sensor ids")
        self.missing = parse_rule(self.missing)
        if np.isinf(self.values).any():
            raise DatasetError(where, "values contain infinity")
        if not self.missing.nan_only and np.isnan(self.values).any():
            raise DatasetError(where, f"values contain NaN under the {self.missing.spec!r} missing-value rule "
                                      f"(store missing readings as {self.missing.value:g}, or use missing=nan)")
        if self.interval_minutes <= 0:
            raise DatasetError(where, f"interval must be positive, got {self.interval_minutes}")
        if 1440 % self.interval_minutes:
            raise DatasetError(where, f"interval {self.interval_minutes} min does not divide a day")
        if t > 1 and np.any(np.diff(self.timestamps) <= np.timedelta64(0, "s")):
            raise DatasetError(where, "timestamps are not strictly increasing")
        if self.coords is not None:
            self.coords = np.asarray(self.coords, dtype=np.float64)
            if self.coords.shape != (n, 2):
                raise DatasetError(where, f"coords must be {n} × 2, got {self.coords.shape}")
        if self.adjacency is not None:
            self.adjacency = np.asarray(self.adjacency, dtype=np.float32)
            if self.adjacency.shape != (n, n):
                raise DatasetError(where, f"adjacency must be {n} × {n}, got {self.adjacency.shape}")

    @property
    def num_steps(self) -> int:
        return self.values.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.values.shape[1]

    @property
    def steps_per_day(self) -> int:
        return int(round(1440 / self.interval_minutes))

    def subset(self, nodes: int | list[int] | None = None, steps: slice | None = None) -> SensorData:
        """A copy restricted to some sensors (first ``nodes`` or an index list) and/or rows.

        Official split indices refer to the full series, so they are dropped when rows change.
        """
        cols = list(range(nodes)) if isinstance(nodes, int) else nodes
        rows = steps if steps is not None else slice(None)
        if rows.step not in (None, 1):
            raise ValueError("subset rows must be a contiguous slice")
        lo, hi, _ = rows.indices(self.num_steps)
        prev = self.selection or {}
        base_nodes = prev.get("nodes", list(range(self.num_nodes)))
        base_lo = prev.get("rows", [0, self.num_steps])[0]
        selection = {"nodes": [int(base_nodes[i]) for i in cols] if cols is not None else list(base_nodes),
                     "rows": [base_lo + lo, base_lo + max(lo, hi)]}
        vals = self.values[rows]
        adj, coords = self.adjacency, self.coords
        ids = self.sensor_ids
        if cols is not None:
            vals = vals[:, cols]
            ids = [self.sensor_ids[i] for i in cols]
            coords = None if coords is None else coords[cols]
            adj = None if adj is None else adj[np.ix_(cols, cols)]
        return dataclasses.replace(
            self, values=vals.copy(), timestamps=self.timestamps[rows].copy(), sensor_ids=ids,
            coords=coords, adjacency=adj, index=self.index if steps is None else None, selection=selection)

    def reselect(self, selection: dict[str, Any] | None) -> SensorData:
        """Apply a recorded :attr:`selection` (from a checkpoint) to freshly loaded data."""
        if not selection:
            return self
        a, b = selection.get("rows", [0, self.num_steps])
        return self.subset(nodes=list(selection.get("nodes", range(self.num_nodes))), steps=slice(a, b))

    def describe(self) -> dict[str, Any]:
        """Small JSON-able summary (for logs and checkpoint metadata)."""
        return {
            "name": self.name,
            "source": self.source,
            "num_steps": self.num_steps,
            "num_nodes": self.num_nodes,
            "interval_minutes": self.interval_minutes,
            "start": str(self.timestamps[0]),
            "end": str(self.timestamps[-1]),
            "timezone": self.timezone,
            "missing_rule": self.missing.spec,
            "missing_fraction": float(self.missing.mask(self.values).mean()),
        }


def regular_timestamps(start: str | np.datetime64, count: int, interval_minutes: float) -> np.ndarray:
    """``count`` wall-clock timestamps from ``start`` every ``interval_minutes``: datetime64[s]."""
    try:
        t0 = np.datetime64(start, "s")
    except ValueError as exc:
        raise DatasetError(None, f"bad start time {start!r}: {exc}") from exc
    step = np.timedelta64(int(round(interval_minutes * 60)), "s")
    return t0 + step * np.arange(count)
