"""Side files that describe a sensor network: adjacency pickles/CSVs and sensor locations.

``adj_mx.pkl`` is a pickle; a pickle can run code, so it is read with an unpickler that only
admits the handful of numpy/codecs globals such files contain.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from training.datasets.base import DatasetError

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    ("builtins", "dict"),
    ("builtins", "list"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_adj_pickle(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``adj_mx.pkl`` (latin1 pickle of ``[sensor_ids, id_to_index, adjacency]``) -> ids, N × N."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            obj = _SafeUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise DatasetError(path, "no such adjacency file") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DatasetError(path, f"not a readable adjacency pickle ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(obj, (list, tuple)) or len(obj) != 3:
        raise DatasetError(path, "expected a pickled [sensor_ids, id_to_index, adjacency] list")
    ids, _, adj = obj
    adj = np.asarray(adj, dtype=np.float32)
    ids = [str(s) for s in ids]
    if adj.shape != (len(ids), len(ids)):
        raise DatasetError(path, f"adjacency shape {adj.shape} does not match {len(ids)} sensor ids")
    return ids, adj


def read_adj_csv(path: str | Path, num_nodes: int) -> np.ndarray:
    """Headerless ``N × N`` adjacency CSV (same sensor order as the data) -> float32 N × N."""
    path = Path(path)
    try:
        adj = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except FileNotFoundError as exc:
        raise DatasetError(path, "no such adjacency file") from exc
    except ValueError as exc:
        raise DatasetError(path, f"not a numeric N × N adjacency CSV ({exc})") from exc
    if adj.shape != (num_nodes, num_nodes):
        raise DatasetError(path, f"adjacency is {adj.shape[0]} × {adj.shape[1]}, data has {num_nodes} sensors")
    return adj


def read_edge_csv(path: str | Path, num_nodes: int) -> np.ndarray:
    """PEMS-style edge list ``from,to,cost`` -> symmetric 0/1 adjacency with self-loops."""
    path = Path(path)
    try:
        edges = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise DatasetError(path, "no such edge file") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(path, f"not a CSV edge list ({exc})") from exc
    if edges.shape[1] < 2:
        raise DatasetError(path, "edge list needs at least the columns from,to")
    try:
        src = edges.iloc[:, 0].to_numpy(dtype=np.int64)
        dst = edges.iloc[:, 1].to_numpy(dtype=np.int64)
    except (ValueError, TypeError) as exc:
        raise DatasetError(path, f"edge endpoints must be integers ({exc})") from exc
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
        raise DatasetError(path, f"edge endpoint outside 0..{num_nodes - 1}")
    adj = np.eye(num_nodes, dtype=np.float32)
    adj[src, dst] = 1.0
    adj[dst, src] = 1.0
    return adj


def read_locations(path: str | Path, sensor_ids: list[str]) -> np.ndarray:
    """``sensor_id,latitude,longitude`` CSV (extra columns allowed) -> N × 2 in ``sensor_ids`` order."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"sensor_id": str})
    except FileNotFoundError as exc:
        raise DatasetError(path, "no such locations file") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(path, f"not a CSV locations file ({exc})") from exc
    cols = {c.lower().strip(): c for c in table.columns}
    need = [k for k in ("sensor_id", "latitude", "longitude") if k not in cols]
    if need:
        raise DatasetError(path, f"locations file lacks column(s) {need}")
    table = table.rename(columns={v: k for k, v in cols.items()})
    table["sensor_id"] = table["sensor_id"].astype(str).str.strip()
    by_id = table.drop_duplicates("sensor_id").set_index("sensor_id")
    missing = [s for s in sensor_ids if s not in by_id.index]
    if missing:
        raise DatasetError(path, f"no location for {len(missing)} sensor(s), e.g. {missing[:3]}")
    try:
        coords = by_id.loc[sensor_ids, ["latitude", "longitude"]].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(path, f"latitude/longitude must be numbers ({exc})") from exc
    return coords


def reorder_adjacency(path: str | Path, ids: list[str], adj: np.ndarray, sensor_ids: list[str]) -> np.ndarray:
    """Permute an adjacency keyed by ``ids`` into ``sensor_ids`` order (error if any is absent)."""
    pos = {s: i for i, s in enumerate(ids)}
    missing = [s for s in sensor_ids if s not in pos]
    if missing:
        raise DatasetError(path, f"adjacency lacks {len(missing)} of the data's sensors, e.g. {missing[:3]}")
    order = [pos[s] for s in sensor_ids]
    return adj[np.ix_(order, order)]
