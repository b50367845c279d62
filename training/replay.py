"""``himnet replay``: stream a dataset into a running service and measure online accuracy.

Talks to the service over HTTP only (httpx): ``GET /readyz``, ``GET /model``, ``GET /embeddings``,
``POST /readings`` (API key), ``POST /forecast``. Any dataset ``training.datasets`` loads works
(default: ``synthetic``).

Timeline (how dataset time becomes service time)
    The service accepts readings no later than "now" (plus a small clock skew) and no older than
    its retention. The replay maps the dataset's LAST replayed row to the wall-clock slot in which
    that row will be sent (the replay's projected end, floored to the model's interval) and keeps
    the dataset's spacing for the rows before it. Rows are sent at ``speedup`` × real time, so
    row ``k`` of ``N`` is ``(N-1-k) · interval · (1 - 1/speedup)`` older than the clock when it
    is sent: at speedup 1 the replay is a live feed, and at speedup S the service must retain
    about ``N · interval`` of readings (``HIMNET_RETENTION_MINUTES``) for the first rows to be
    accepted. Unless ``--start`` is given, the first row is chosen so that the replayed rows keep
    their day of week and time of day in the model's time zone (else their time features, which
    the service computes from the new timestamps, would not match the data).

Accuracy
    After each posted slot (every ``--forecast-every`` slots, once the input window is full) the
    replay asks ``POST /forecast`` with ``as_of`` = that slot and keeps the forecast. When the
    slot a horizon points at is posted later, its readings are the truth: MAE, RMSE and MAPE per
    horizon over the readings that are present (the dataset's missing value, 0, is skipped, as
    in training's masked metrics). Horizons whose truth lies beyond the replay stay unscored.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

API_KEY_ENV = "HIMNET_API_KEY"
API_KEY_FILE_ENV = "HIMNET_API_KEY_FILE"


class ReplayError(RuntimeError):
    """The replay cannot start or cannot go on; the message says why."""


# --- timeline ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    sensor_ids: list[str]
    interval_s: int
    in_steps: int
    out_steps: int
    missing_value: float
    timezone: str | None


def _zone(name: str | None) -> Any:
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReplayError(f"unknown time zone {name!r}") from exc


def projected_end_slot(now: float, rows: int, interval_s: int, speedup: float) -> int:
    """Epoch seconds of the slot in which the last of ``rows`` rows will be sent."""
    duration = (rows - 1) * interval_s / speedup if math.isfinite(speedup) else 0.0
    return int((now + duration) // interval_s) * interval_s


def choose_start(local_stamps: np.ndarray, rows: int, end_epoch: int, zone_name: str | None,
                 interval_s: int) -> int:
    """First row of a ``rows``-long range whose last row has the same day of week and time of day
    (model zone) as ``end_epoch``; falls back to the same time of day, then to row 0."""
    total = len(local_stamps)
    if rows > total:
        raise ReplayError(f"asked for {rows} slots but the dataset has only {total} rows")
    end_local = datetime.fromtimestamp(end_epoch, _zone(zone_name)).replace(tzinfo=None)
    end_seconds = np.datetime64(end_local.replace(microsecond=0), "s").astype(np.int64)
    seconds = local_stamps.astype("datetime64[s]").astype(np.int64)
    candidates = np.arange(rows - 1, total)
    tod = (seconds[candidates] % 86400) // interval_s
    dow = (seconds[candidates] // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    want_tod = (end_seconds % 86400) // interval_s
    want_dow = (end_seconds // 86400 + 3) % 7
    for mask in ((tod == want_tod) & (dow == want_dow), tod == want_tod):
        hits = candidates[mask]
        if len(hits):
            return int(hits[0]) - (rows - 1)
    return 0


def rebase(local_stamps: np.ndarray, start: int, rows: int, end_epoch: int) -> np.ndarray:
    """Epoch seconds for rows ``start … start+rows-1``: the last maps to ``end_epoch``, the
    others keep their spacing from the dataset."""
    span = local_stamps[start:start + rows].astype("datetime64[s]").astype(np.int64)
    return end_epoch - (span[-1] - span)


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


# --- accuracy ----------------------------------------------------------------------------------
@dataclass
class HorizonStats:
    count: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    pct_sum: float = 0.0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        err = pred.astype(np.float64) - truth.astype(np.float64)
        self.count += int(err.size)
        self.abs_sum += float(np.abs(err).sum())
        self.sq_sum += float((err ** 2).sum())
        self.pct_sum += float((np.abs(err) / np.abs(truth)).sum())

    def summary(self) -> dict[str, float | int | None]:
        if self.count == 0:
            return {"n": 0, "mae": None, "rmse": None, "mape": None}
        return {"n": self.count, "mae": self.abs_sum / self.count,
                "rmse": math.sqrt(self.sq_sum / self.count), "mape": self.pct_sum / self.count}


@dataclass
class OnlineAccuracy:
    """Forecasts waiting for their truth, and error sums per horizon (1-based steps)."""

    out_steps: int
    missing_value: float
    horizons: dict[int, HorizonStats] = field(default_factory=dict)
    pending: dict[int, np.ndarray] = field(default_factory=dict)  # as_of row -> T_out × C

    def __post_init__(self) -> None:
        self.horizons = {h: HorizonStats() for h in range(1, self.out_steps + 1)}

    def add_forecast(self, row: int, forecast: np.ndarray) -> None:
        """``forecast``: T_out × C predictions for rows ``row+1 … row+T_out`` (NaN = not asked)."""
        self.pending[row] = forecast

    def truth_arrived(self, row: int, values: np.ndarray) -> None:
        """Score every pending forecast that predicted ``row``; ``values``: C readings."""
        present = np.isfinite(values) & (values != self.missing_value)
        for h in range(1, self.out_steps + 1):
            pred = self.pending.get(row - h)
            if pred is None:
                continue
            ok = present & np.isfinite(pred[h - 1])
            if ok.any():
                self.horizons[h].add(pred[h - 1][ok], values[ok])
        self.pending.pop(row - self.out_steps, None)  # its last horizon is now scored

    def unscored(self) -> int:
        return len(self.pending)

    def report(self, interval_s: int) -> list[dict[str, Any]]:
        return [{"horizon": h, "minutes": h * interval_s / 60.0, **s.summary()}
                for h, s in self.horizons.items()]


def format_report(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.2f}%" if pct else f"{v:.4f}"
    lines = [f"{'horizon':>7} {'minutes':>7} {'n':>7} {'MAE':>10} {'RMSE':>10} {'MAPE':>9}"]
    for r in rows:
        lines.append(f"{r['horizon']:>7} {r['minutes']:>7g} {r['n']:>7} {cell(r['mae']):>10} "
                     f"{cell(r['rmse']):>10} {cell(r['mape'], pct=True):>9}")
    return "\n".join(lines)


# --- HTTP --------------------------------------------------------------------------------------
def resolve_api_key(key: str | None, key_file: Path | None) -> str | None:
    """--api-key, --api-key-file, then $HIMNET_API_KEY, $HIMNET_API_KEY_FILE (a mounted secret)."""
    if key:
        return key.strip()
    path = key_file or (Path(os.environ[API_KEY_FILE_ENV]) if os.environ.get(API_KEY_FILE_ENV) else None)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ReplayError(f"cannot read the API key file {path}: {exc}") from exc
        if not text:
            raise ReplayError(f"the API key file {path} is empty")
        return text
    env = os.environ.get(API_KEY_ENV, "").strip()
    return env or None


class ServiceClient:
    """The few calls the replay makes, with bounded retries on connection errors and 503."""

    def __init__(self, client: Any, retries: int = 3, backoff_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.http = client
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ReplayError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
            else:
                if response.status_code != 503 or attempt == self.retries:
                    return response
            self.sleep(self.backoff_s * (2 ** attempt))
        raise AssertionError("unreachable")

    def wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            try:
                response = self.http.get("/readyz")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = f"{exc.__class__.__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ReplayError(f"the service is not ready after {timeout_s:g} s ({last})")
            self.sleep(0.5)

    def model(self) -> ModelInfo:
        info = _json(self.call("GET", "/model"), "GET /model")
        sensors = _json(self.call("GET", "/embeddings"), "GET /embeddings")
        ids = [s["id"] for s in sorted(sensors["sensors"], key=lambda s: s["index"])]
        interval_s = float(info["interval_minutes"]) * 60.0
        if abs(interval_s - round(interval_s)) > 1e-9:
            raise ReplayError(f"model interval of {info['interval_minutes']} minutes is not whole seconds")
        return ModelInfo(sensor_ids=ids, interval_s=int(round(interval_s)), in_steps=int(info["in_steps"]),
                         out_steps=int(info["out_steps"]), missing_value=float(info["missing_value"]),
                         timezone=info.get("timezone"))


def _json(response: Any, what: str) -> Any:
    if response.status_code != 200:
        raise ReplayError(f"{what} answered HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


# --- the replay --------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    slots_sent: int = 0
    readings_sent: int = 0
    readings_refused: dict[str, int] = field(default_factory=dict)
    forecasts: int = 0
    forecast_errors: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    first_timestamp: str = ""
    last_timestamp: str = ""
    dataset_rows: tuple[int, int] = (0, 0)
    wall_s: float = 0.0
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    unscored_forecasts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def column_mapping(data_ids: list[str], model_ids: list[str], by_position: bool) -> tuple[np.ndarray, list[str]]:
    """(dataset column per replayed sensor, model sensor id per replayed sensor)."""
    if by_position:
        n = min(len(data_ids), len(model_ids))
        return np.arange(n), list(model_ids[:n])
    where = {s: i for i, s in enumerate(data_ids)}
    common = [s for s in model_ids if s in where]
    if not common:
        raise ReplayError(f"no sensor of the dataset ({data_ids[0]}, … {len(data_ids)} in all) is one of the "
                          f"model's ({model_ids[0]}, … {len(model_ids)}); pass --by-position to map "
                          "dataset columns to the model's sensors in order")
    return np.array([where[s] for s in common]), common


def replay(client: ServiceClient, data: Any, *, slots: int, speedup: float, start: int | None = None,
           by_position: bool = False, forecast_every: int = 1, api_key: str | None = None,
           log: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep, progress_every: int = 0) -> ReplayResult:
    """Stream ``slots`` rows of ``data`` (a ``SensorData``) into the service; see the module doc."""
    if slots < 1:
        raise ReplayError("--slots must be at least 1")
    if not speedup > 0:
        raise ReplayError("--speedup must be positive")
    model = client.model()
    if abs(data.interval_minutes * 60 - model.interval_s) > 1e-6:
        raise ReplayError(f"the dataset's interval ({data.interval_minutes:g} min) differs from the "
                          f"model's ({model.interval_s / 60:g} min)")
    columns, ids = column_mapping(list(data.sensor_ids), model.sensor_ids, by_position)

    interval = model.interval_s
    t0 = clock()
    end_epoch = projected_end_slot(t0, slots, interval, speedup)
    if start is None:
        start = choose_start(data.timestamps, slots, end_epoch, model.timezone, interval)
    if not 0 <= start <= len(data.timestamps) - slots:
        raise ReplayError(f"rows {start} … {start + slots - 1} are not all in the dataset "
                          f"({len(data.timestamps)} rows)")
    epochs = rebase(data.timestamps, start, slots, end_epoch)
    values = data.values[start:start + slots][:, columns].astype(np.float64)
    lag_min = (epochs[-1] - epochs[0]) * (1 - (1 / speedup if math.isfinite(speedup) else 0)) / 60
    log(f"replay: {slots} slots of {data.name} (rows {start}…{start + slots - 1}, {len(ids)} sensors) "
        f"as {iso_utc(epochs[0])} … {iso_utc(epochs[-1])} at {speedup:g}× real time; the first "
        f"slot is ~{lag_min:.0f} min old when sent (the service must retain that much)")

    headers = {"X-API-Key": api_key} if api_key else {}
    result = ReplayResult(first_timestamp=iso_utc(epochs[0]), last_timestamp=iso_utc(epochs[-1]),
                          dataset_rows=(start, start + slots - 1))
    acc = OnlineAccuracy(model.out_steps, model.missing_value)
    # send times, relative to t0: uniform in data time
    offsets = (epochs - epochs[0]) / speedup if math.isfinite(speedup) else np.zeros(slots)

    k = 0
    while k < slots:
        delay = t0 + offsets[k] - clock()
        if delay > 0:
            sleep(delay)
        due_until = k
        now_rel = clock() - t0
        while due_until + 1 < slots and offsets[due_until + 1] <= now_rel and due_until - k < 63:
            due_until += 1  # behind schedule: send what is due in one request
        batch = range(k, due_until + 1)
        _post_readings(client, batch, epochs, values, ids, model.missing_value, headers, result)
        for row in batch:
            acc.truth_arrived(row, values[row])
            result.slots_sent += 1
            if row >= model.in_steps - 1 and (row - (model.in_steps - 1)) % forecast_every == 0:
                forecast = _forecast(client, epochs[row], ids, model, headers, result)
                if forecast is not None:
                    acc.add_forecast(row, forecast)
            if progress_every and result.slots_sent % progress_every == 0:
                log(f"replay: {result.slots_sent}/{slots} slots, {result.forecasts} forecasts")
        k = due_until + 1

    result.wall_s = clock() - t0
    result.accuracy = acc.report(interval)
    result.unscored_forecasts = acc.unscored()
    return result


def _post_readings(client: ServiceClient, batch: range, epochs: np.ndarray, values: np.ndarray,
                   ids: list[str], missing_value: float, headers: dict[str, str],
                   result: ReplayResult) -> None:
    snapshots = []
    for row in batch:
        v = values[row]
        present = np.isfinite(v) & (v != missing_value)  # the datasets' "missing": not a reading
        if present.any():
            snapshots.append({"timestamp": iso_utc(epochs[row]),
                              "values": {ids[i]: float(v[i]) for i in np.flatnonzero(present)}})
    if not snapshots:
        return
    for attempt in range(2):
        response = client.call("POST", "/readings", json={"readings": snapshots}, headers=headers)
        if response.status_code == 200:
            result.readings_sent += int(response.json()["accepted"])
            return
        if response.status_code in (401, 403):
            raise ReplayError(f"POST /readings refused ({response.status_code}): "
                              f"{_detail(response)}; give the key with --api-key, --api-key-file "
                              f"or ${API_KEY_ENV}")
        if response.status_code != 422:
            raise ReplayError(f"POST /readings answered HTTP {response.status_code}: {_detail(response)}")
        problem = response.json()
        errors = problem.get("errors", [])
        if attempt == 0 and errors and all(e.get("reason") == "out_of_range" for e in errors):
            # implausible values (outside the service's range): drop them and send the rest
            bad = {(e.get("timestamp"), e.get("sensor")) for e in errors}
            dropped = 0
            for snap in snapshots:
                stamp = snap["timestamp"].replace("Z", "+00:00")
                for sensor in [s for s in snap["values"] if (stamp, s) in bad]:
                    del snap["values"][sensor]
                    dropped += 1
            snapshots = [s for s in snapshots if s["values"]]
            result.readings_refused["out_of_range"] = result.readings_refused.get("out_of_range", 0) + dropped
            if snapshots and dropped:
                continue
        reasons = {e.get("reason", "invalid") for e in errors} or {problem.get("type", "invalid")}
        count = sum(len(s["values"]) for s in snapshots)
        for reason in reasons:
            result.readings_refused[reason] = result.readings_refused.get(reason, 0) + count
        return


def _forecast(client: ServiceClient, epoch: float, ids: list[str], model: ModelInfo,
              headers: dict[str, str], result: ReplayResult) -> np.ndarray | None:
    response = client.call("POST", "/forecast", json={"as_of": iso_utc(epoch), "sensors": ids},
                           headers=headers)
    if response.status_code != 200:
        key = str(response.status_code)
        result.forecast_errors[key] = result.forecast_errors.get(key, 0) + 1
        return None
    body = response.json()
    result.forecasts += 1
    if response.headers.get("x-cache") == "hit":
        result.cache_hits += 1
    out = np.full((model.out_steps, len(ids)), np.nan)
    steps = [h["step"] for h in body["horizons"]]
    for j, sensor in enumerate(ids):
        series = body["forecasts"].get(sensor)
        if series is not None:
            out[np.asarray(steps) - 1, j] = series
    return out


def _detail(response: Any) -> str:
    try:
        return str(response.json().get("detail", response.text[:300]))
    except ValueError:
        return response.text[:300]


# --- command line ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("stream a dataset's readings into a running forecast service at a chosen "
                          "speed-up, ask forecasts as it goes and report online accuracy per horizon")
    parser.add_argument("--url", default=os.environ.get("HIMNET_URL", "http://127.0.0.1:8000"),
                        help="base URL of the service ($HIMNET_URL)")
    parser.add_argument("--data", default="synthetic", help="dataset name or path (as `himnet train --data`)")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option (repeatable), e.g. num_sensors=24 for synthetic")
    parser.add_argument("--slots", type=int, default=288, help="how many time slots (rows) to replay")
    parser.add_argument("--start", type=int, default=None,
                        help="first dataset row (default: keep day of week and time of day)")
    parser.add_argument("--speedup", type=float, default=60.0,
                        help="data time per wall-clock time; 1 = live, 'inf' = as fast as possible")
    parser.add_argument("--forecast-every", type=int, default=1, help="ask a forecast every K slots")
    parser.add_argument("--by-position", action="store_true",
                        help="map dataset columns to the model's sensors in order instead of by id")
    parser.add_argument("--api-key", default=None, help="API key (default: $HIMNET_API_KEY)")
    parser.add_argument("--api-key-file", type=Path, default=None,
                        help="file holding the API key (default: $HIMNET_API_KEY_FILE)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for /readyz")
    parser.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout per request, seconds")
    parser.add_argument("--report", type=Path, default=None, help="also write the result as JSON here")
    parser.add_argument("--progress-every", type=int, default=0, help="print progress every K slots")


def run(args: argparse.Namespace) -> int:
    import httpx

    from training.datasets import DatasetError, load_dataset
    from training.evaluate import parse_options

    if args.forecast_every < 1:
        print("himnet replay: --forecast-every must be at least 1", file=sys.stderr)
        return 2
    try:
        data = load_dataset(args.data, **_typed(parse_options(args.data_option)))
        key = resolve_api_key(args.api_key, args.api_key_file)
    except (DatasetError, ReplayError, TypeError, ValueError) as exc:
        print(f"himnet replay: {exc}", file=sys.stderr)
        return 2
    try:
        # the key goes with every request: reads need it too when the service protects them
        with httpx.Client(base_url=args.url, timeout=args.timeout,
                          headers={"X-API-Key": key} if key else None) as http:
            client = ServiceClient(http)
            client.wait_ready(args.wait)
            result = replay(client, data, slots=args.slots, speedup=args.speedup, start=args.start,
                            by_position=args.by_position, forecast_every=args.forecast_every,
                            api_key=key, progress_every=args.progress_every)
    except ReplayError as exc:
        print(f"himnet replay: {exc}", file=sys.stderr)
        return 1
    print(f"sent {result.slots_sent} slots ({result.readings_sent} readings accepted"
          + (f", refused: {result.readings_refused}" if result.readings_refused else "")
          + f") in {result.wall_s:.1f} s; {result.forecasts} forecasts ({result.cache_hits} from the cache)"
          + (f", failed: {result.forecast_errors}" if result.forecast_errors else "")
          + f"; {result.unscored_forecasts} forecast(s) with horizons beyond the replay")
    print(format_report(result.accuracy))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def _typed(options: dict[str, str]) -> dict[str, Any]:
    """Reader options arrive as strings; numbers become numbers (readers also cast)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out
