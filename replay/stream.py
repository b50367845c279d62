"""The replay itself: post the re-based rows at ``speedup`` × real time, ask forecasts as it goes
and score them when their truth arrives."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from replay.accuracy import OnlineAccuracy
from training.datasets import MissingRule, parse_rule
from replay.client import ModelInfo, ServiceClient
from replay.errors import ReplayError
from replay.timeline import choose_start, iso_utc, projected_end_slot, rebase

API_KEY_ENV = "HIMNET_API_KEY"


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


@dataclass
class _Plan:
    """What is sent when: the replayed rows re-based onto the wall clock."""

    model: ModelInfo
    ids: list[str]  # model sensor id per replayed column
    start: int  # first dataset row
    epochs: np.ndarray  # slots: epoch seconds of each replayed row
    values: np.ndarray  # slots × C readings
    offsets: np.ndarray  # slots: send time of each row, seconds after t0
    t0: float


def replay(client: ServiceClient, data: Any, *, slots: int, speedup: float, start: int | None = None,
           by_position: bool = False, forecast_every: int = 1, api_key: str | None = None,
           log: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep, progress_every: int = 0) -> ReplayResult:
    """Stream ``slots`` rows of ``data`` (a ``SensorData``) into the service; see the package doc."""
    plan = _plan(client, data, slots, speedup, start, by_position, clock)
    epochs = plan.epochs
    lag_min = (epochs[-1] - epochs[0]) * (1 - (1 / speedup if math.isfinite(speedup) else 0)) / 60
    log(f"replay: {slots} slots of {data.name} (rows {plan.start}…{plan.start + slots - 1}, {len(plan.ids)} "
        f"sensors) as {iso_utc(epochs[0])} … {iso_utc(epochs[-1])} at {speedup:g}× real time; the first "
        f"slot is ~{lag_min:.0f} min old when sent (the service must retain that much)")
    headers = {"X-API-Key": api_key} if api_key else {}
    result = ReplayResult(first_timestamp=iso_utc(epochs[0]), last_timestamp=iso_utc(epochs[-1]),
                          dataset_rows=(plan.start, plan.start + slots - 1))
    acc = OnlineAccuracy(plan.model.out_steps, parse_rule(plan.model.missing_rule))
    _send_all(client, plan, acc, result, headers, forecast_every=forecast_every, log=log, clock=clock,
              sleep=sleep, progress_every=progress_every)
    result.wall_s = clock() - plan.t0
    result.accuracy = acc.report(plan.model.interval_s)
    result.unscored_forecasts = acc.unscored()
    return result


def _plan(client: ServiceClient, data: Any, slots: int, speedup: float, start: int | None,
          by_position: bool, clock: Callable[[], float]) -> _Plan:
    """Check the request against the model, choose the rows and their new timestamps."""
    if slots < 1:
        raise ReplayError("--slots must be at least 1")
    if not speedup > 0:
        raise ReplayError("--speedup must be positive")
    model = client.model()
    if abs(data.interval_minutes * 60 - model.interval_s) > 1e-6:
        raise ReplayError(f"the dataset's interval ({data.interval_minutes:g} min) differs from the "
                          f"model's ({model.interval_s / 60:g} min)")
    columns, ids = column_mapping(list(data.sensor_ids), model.sensor_ids, by_position)
    rule = parse_rule(model.missing_rule)
    if getattr(data, "missing", rule) != rule:
        raise ReplayError(f"the model counts {rule.spec!r} readings as missing, the dataset was read under "
                          f"{data.missing.spec!r}: pass --data-option missing={rule.spec}")

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
    # send times, relative to t0: uniform in data time
    offsets = (epochs - epochs[0]) / speedup if math.isfinite(speedup) else np.zeros(slots)
    return _Plan(model=model, ids=ids, start=start, epochs=epochs, values=values, offsets=offsets, t0=t0)


def _send_all(client: ServiceClient, plan: _Plan, acc: OnlineAccuracy, result: ReplayResult,
              headers: dict[str, str], *, forecast_every: int, log: Callable[[str], None],
              clock: Callable[[], float], sleep: Callable[[float], None], progress_every: int) -> None:
    """Post every row at its send time (rows already due go in one request), forecast, score."""
    model, slots, offsets, t0 = plan.model, len(plan.epochs), plan.offsets, plan.t0
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
        _post_readings(client, batch, plan.epochs, plan.values, plan.ids, parse_rule(model.missing_rule), headers, result)
        for row in batch:
            acc.truth_arrived(row, plan.values[row])
            result.slots_sent += 1
            if row >= model.in_steps - 1 and (row - (model.in_steps - 1)) % forecast_every == 0:
                forecast = _forecast(client, plan.epochs[row], plan.ids, model, headers, result)
                if forecast is not None:
                    acc.add_forecast(row, forecast)
            if progress_every and result.slots_sent % progress_every == 0:
                log(f"replay: {result.slots_sent}/{slots} slots, {result.forecasts} forecasts")
        k = due_until + 1


def _post_readings(client: ServiceClient, batch: range, epochs: np.ndarray, values: np.ndarray,
                   ids: list[str], rule: MissingRule, headers: dict[str, str],
                   result: ReplayResult) -> None:
    snapshots = []
    for row in batch:
        v = values[row]
        present = np.isfinite(v) & rule.observed(v)  # the model's "missing": not a reading
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
