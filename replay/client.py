"""The few HTTP calls the replay makes to a running service (httpx), with bounded retries."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from replay.errors import ReplayError


@dataclass(frozen=True)
class ModelInfo:
    sensor_ids: list[str]
    interval_s: int
    in_steps: int
    out_steps: int
    missing_value: float
    timezone: str | None
    missing_rule: str = "zero"  # what the model counts as missing; services before the rule: zero


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
                         timezone=info.get("timezone"), missing_rule=str(info.get("missing_rule", "zero")))


def _json(response: Any, what: str) -> Any:
    if response.status_code != 200:
        raise ReplayError(f"{what} answered HTTP {response.status_code}: {response.text[:300]}")
    return response.json()
