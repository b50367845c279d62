"""Each reader parses a small file written here, and rejects a malformed one naming the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.time_features import time_features
from training.datasets import (
    DatasetError,
    SensorData,
    generate_synthetic,
    load_dataset,
    read_hdf5,
    read_official_npz,
    read_pems_npz,
    read_wide_csv,
)

IDS = ["101", "102", "103"]


def _values(t: int = 30, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    v = rng.uniform(20, 70, (t, n)).astype(np.float32)
    v[4, 1] = 0.0  # a missing reading
    return v


def _write_adj_pickle(path: Path, ids: list[str], adj: np.ndarray) -> None:
    with path.open("wb") as fh:
        pickle.dump([ids, {s: i for i, s in enumerate(ids)}, adj], fh, protocol=2)


# --- official data.npz + index.npz ------------------------------------------------------------

def test_official_npz_rebuilds_clock_and_index(tmp_path: Path) -> None:
    t, spd = 30, 288
    stamps = np.datetime64("2012-03-01T23:00", "s") + np.timedelta64(300, "s") * np.arange(t)
    feats = time_features(stamps, spd)  # T × 2
    vals = _values(t)
    data = np.concatenate([vals[..., None], np.broadcast_to(feats[:, None, :], (t, 3, 2))], axis=-1)
    np.savez(tmp_path / "data.npz", data=data)
    np.savez(tmp_path / "index.npz", train=np.array([[0, 12, 24]]), val=np.array([[3, 15, 27]]),
             test=np.array([[6, 18, 30]]))
    d = load_dataset(tmp_path)  # a directory holding data.npz
    assert d.values.shape == (t, 3) and d.values[4, 1] == 0
    assert d.interval_minutes == 5
    np.testing.assert_allclose(time_features(d.timestamps, spd), feats)  # same clock as the file
    assert d.index is not None and d.index["test"].tolist() == [[6, 18, 30]]


def test_official_npz_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "data.npz"
    np.savez(bad, data=np.zeros((10, 3)))  # 2-D: no time channels
    with pytest.raises(DatasetError, match="data.npz.*T × N × 3"):
        read_official_npz(bad)
    (tmp_path / "garbage" ).mkdir()
    junk = tmp_path / "garbage" / "data.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        read_official_npz(junk)


def test_official_npz_rejects_non_contiguous_time(tmp_path: Path) -> None:
    t = 20
    stamps = np.datetime64("2012-03-01T00:00", "s") + np.timedelta64(300, "s") * np.arange(t)
    feats = time_features(stamps, 288)
    feats[10:, 1] = (feats[10:, 1] + 2) % 7  # day of week jumps mid-series
    data = np.concatenate([_values(t)[..., None], np.broadcast_to(feats[:, None], (t, 3, 2))], -1)
    np.savez(tmp_path / "data.npz", data=data)
    with pytest.raises(DatasetError, match="row 10"):
        read_official_npz(tmp_path / "data.npz")


# --- pandas HDF5 + adj_mx.pkl -----------------------------------------------------------------

def test_hdf5_with_adjacency_pickle(tmp_path: Path) -> None:
    t = 30
    index = pd.date_range("2012-03-01", periods=t, freq="5min")
    vals = _values(t).astype(np.float64)
    vals[7, 2] = np.nan  # NaN is another spelling of missing
    frame = pd.DataFrame(vals, index=index, columns=IDS)
    frame = frame.drop(index[10])  # a gap in time: becomes a row of zeros
    path = tmp_path / "metr-la.h5"
    frame.to_hdf(path, key="df")
    adj = np.arange(9, dtype=np.float32).reshape(3, 3)
    _write_adj_pickle(tmp_path / "adj_mx.pkl", ["103", "101", "102"], adj)  # other order
    d = load_dataset(path)
    assert d.sensor_ids == IDS and d.num_steps == t and d.interval_minutes == 5
    assert d.values[7, 2] == 0 and np.all(d.values[10] == 0)
    assert d.timestamps[0] == np.datetime64("2012-03-01T00:00")
    # rows/cols permuted into the data's order: 101 was index 1 in the pickle
    assert d.adjacency[0, 0] == adj[1, 1] and d.adjacency[0, 1] == adj[1, 2]


def test_hdf5_tz_aware_index_becomes_wall_clock(tmp_path: Path) -> None:
    index = pd.date_range("2012-03-01T08:00", periods=12, freq="5min", tz="UTC")
    pd.DataFrame(_values(12), index=index, columns=IDS).to_hdf(tmp_path / "x.h5", key="df")
    d = read_hdf5(tmp_path / "x.h5", timezone="America/Los_Angeles")
    assert d.timestamps[0] == np.datetime64("2012-03-01T00:00") and d.timezone == "America/Los_Angeles"


def test_hdf5_rejects_bad_files(tmp_path: Path) -> None:
    pd.DataFrame(_values(5), columns=IDS).to_hdf(tmp_path / "noclock.h5", key="df")
    with pytest.raises(DatasetError, match="noclock.h5: index must be a DatetimeIndex"):
        read_hdf5(tmp_path / "noclock.h5")
    (tmp_path / "junk.h5").write_bytes(b"\x00" * 64)
    with pytest.raises(DatasetError, match="junk.h5: not a readable pandas HDF5"):
        read_hdf5(tmp_path / "junk.h5")


def test_adjacency_pickle_refuses_code(tmp_path: Path) -> None:
    index = pd.date_range("2012-03-01", periods=12, freq="5min")
    pd.DataFrame(_values(12), index=index, columns=IDS).to_hdf(tmp_path / "m.h5", key="df")
    with (tmp_path / "adj_mx.pkl").open("wb") as fh:
        pickle.dump([IDS, {}, pd.Timestamp("2020-01-01")], fh)  # a global outside the allow-list
    with pytest.raises(DatasetError, match="adj_mx.pkl: not a readable adjacency pickle"):
        read_hdf5(tmp_path / "m.h5")


# --- PEMS0X.npz -------------------------------------------------------------------------------

def test_pems_npz_flow_channel_and_edges(tmp_path: Path) -> None:
    data = np.stack([_values(30), _values(30) * 0 + 0.5, _values(30) * 0 + 60], axis=-1)  # T × N × 3
    np.savez(tmp_path / "PEMS04.npz", data=data)
    (tmp_path / "PEMS04.csv").write_text("from,to,cost\n0,2,100.5\n")
    d = load_dataset(tmp_path / "PEMS04.npz")
    np.testing.assert_array_equal(d.values, data[..., 0])
    assert d.timestamps[0] == np.datetime64("2018-01-01T00:00") and d.interval_minutes == 5
    assert d.adjacency[0, 2] == 1 and d.adjacency[2, 0] == 1 and d.adjacency[0, 1] == 0
    d2 = read_pems_npz(tmp_path / "PEMS04.npz", start="2020-05-01T06:00", channel=2, interval_minutes=10)
    assert d2.values[0, 0] == 60 and d2.timestamps[1] == np.datetime64("2020-05-01T06:10")


def test_pems_npz_rejects_bad_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "PEMS08.npz", flow=np.zeros((5, 2, 1)))
    with pytest.raises(DatasetError, match="PEMS08.npz: no 'data' array"):
        read_pems_npz(tmp_path / "PEMS08.npz")
    np.savez(tmp_path / "PEMS03.npz", data=np.zeros((5, 2, 1)))
    with pytest.raises(DatasetError, match="channel 3 out of range"):
        read_pems_npz(tmp_path / "PEMS03.npz", channel=3)


# --- wide CSV ---------------------------------------------------------------------------------

def test_wide_csv_with_sibling_graph_files(tmp_path: Path) -> None:
    vals = _values(24)
    path = tmp_path / "city_speed.csv"
    pd.DataFrame(vals, columns=IDS).to_csv(path, index=False)
    (tmp_path / "graph_sensor_locations.csv").write_text(
        "index,sensor_id,latitude,longitude\n0,103,34.3,-118.3\n1,101,34.1,-118.1\n2,102,34.2,-118.2\n")
    np.savetxt(tmp_path / "city_adj.csv", np.eye(3) * 2, delimiter=",")
    d = load_dataset(path, start="2012-03-01T00:00", interval_minutes="5", timezone="America/Los_Angeles")
    np.testing.assert_allclose(d.values, vals, rtol=1e-6)
    assert d.sensor_ids == IDS and d.timestamps[-1] == np.datetime64("2012-03-01T01:55")
    np.testing.assert_allclose(d.coords[0], [34.1, -118.1])  # looked up by id, not by row
    assert d.adjacency[1, 1] == 2


def test_wide_csv_with_timestamp_column(tmp_path: Path) -> None:
    path = tmp_path / "speeds.csv"
    path.write_text("timestamp,a,b\n2024-01-01 00:00,50,\n2024-01-01 00:15,51,40\n2024-01-01 00:45,52,41\n")
    d = read_wide_csv(path)
    assert d.interval_minutes == 15 and d.num_steps == 4  # 00:30 was missing -> zeros
    assert d.values[0, 1] == 0 and np.all(d.values[2] == 0) and d.values[3, 0] == 52


def test_wide_csv_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,fast\n")
    with pytest.raises(DatasetError, match="bad.csv: non-numeric reading"):
        read_wide_csv(bad, start="2024-01-01")
    dup = tmp_path / "dup.csv"
    dup.write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "dup_adj.csv").write_text("1,0\n")  # wrong shape
    with pytest.raises(DatasetError, match="dup_adj.csv: adjacency is 1 × 2"):
        read_wide_csv(dup, start="2024-01-01")


def test_load_dataset_unknown_inputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere.h5: no such file"):
        load_dataset(tmp_path / "nowhere.h5")
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(tmp_path / "x.parquet")


def test_sensor_data_validates() -> None:
    stamps = np.datetime64("2024-01-01", "s") + np.arange(3) * np.timedelta64(300, "s")
    with pytest.raises(DatasetError, match="NaN"):
        SensorData(np.full((3, 2), np.nan), stamps, ["a", "b"], 5, "x")
    with pytest.raises(DatasetError, match="duplicate sensor ids"):
        SensorData(np.ones((3, 2)), stamps, ["a", "a"], 5, "x")
    with pytest.raises(DatasetError, match="does not divide a day"):
        SensorData(np.ones((3, 2)), stamps, ["a", "b"], 7, "x")


# --- synthetic --------------------------------------------------------------------------------

def test_synthetic_is_seeded_and_realistic() -> None:
    a = generate_synthetic(num_sensors=12, days=14, seed=3)
    b = generate_synthetic(num_sensors=12, days=14, seed=3)
    c = generate_synthetic(num_sensors=12, days=14, seed=4)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert a.values.shape == (14 * 288, 12) and a.adjacency.shape == (12, 12) and a.coords.shape == (12, 2)
    v = np.where(a.values == 0, np.nan, a.values)
    missing = (a.values == 0).mean()
    assert 0.001 < missing < 0.1  # some readings missing, stored as 0
    feats = time_features(a.timestamps, 288)
    hour = feats[:, 0] * 24
    weekday = feats[:, 1] < 5
    rush = np.nanmean(v[weekday & (hour >= 7.5) & (hour < 9)])
    night = np.nanmean(v[weekday & (hour >= 1) & (hour < 4)])
    weekend_rush = np.nanmean(v[~weekday & (hour >= 7.5) & (hour < 9)])
    assert rush < night - 5  # weekday rush hour is congested
    assert weekend_rush > rush + 3  # weekly cycle: weekends are not
    per_sensor_night = np.nanmean(v[weekday & (hour >= 1) & (hour < 4)], axis=0)
    assert per_sensor_night.std() > 2  # sensors differ


def test_synthetic_congestion_spreads_upstream() -> None:
    d = generate_synthetic(num_sensors=30, days=7, seed=0, num_corridors=1, missing_rate=0, outages=0)
    feats = time_features(d.timestamps, 288)
    weekday = feats[:, 1] < 5
    # position along the corridor is encoded by the coordinates; the downstream end jams first
    hour = feats[:, 0] * 24
    morning = weekday & (hour >= 5) & (hour < 12)
    v = d.values[morning].reshape(5, -1, 30)  # day × slot × sensor
    trough = v.mean(0).argmin(0)  # slot of the worst speed per sensor
    heavy = v.mean(0).min(0) < 0.8 * v.mean(0).max(0)
    assert heavy.sum() >= 5
    # upstream sensors (far from the bottleneck) reach their trough later
    lon = d.coords[:, 1]
    order = np.argsort(lon)
    corr = np.corrcoef(np.arange(30)[np.argsort(order)][heavy], trough[heavy])[0, 1]
    assert abs(corr) > 0.5
