"""Every bad input gets a 4xx/5xx problem+json with a message that says what is wrong."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from datetime import datetime, timezone
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import StartupError, create_app
from tests.service.conftest import API_KEY, AUTH, current_slot, iso, serve, snapshot

REPO = Path(__file__).resolve().parents[2]


def _problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in r.text
    if slug:
        assert body["type"] == f"urn:himnet:problem:{slug}", body
    return body


def _off(slot: int, seconds: int) -> str:
    """A timestamp ``seconds`` after the start of ``slot`` (misaligned unless 0)."""
    return datetime.fromtimestamp(slot * 300 + seconds, tz=timezone.utc).isoformat()


@pytest.fixture(scope="module")
def sensors(tiny_bundle: Path) -> list[str]:
    return json.loads((tiny_bundle / "manifest.json").read_text())["sensor_ids"]


@pytest.fixture
def client(make_settings):
    with serve(make_settings(value_min=0.0, value_max=200.0, clock_skew_s=30.0)) as c:
        yield c


def test_readings_rejections(client: httpx.Client, sensors: list[str]) -> None:
    now = current_slot()
    ok = {sensors[0]: 50.0}

    def post(*snaps: dict[str, Any]) -> httpx.Response:
        return client.post("/readings", json={"readings": list(snaps)}, headers=AUTH)

    body = _problem(post(snapshot(now, {"nope": 1.0, sensors[1]: 2.0, "ghost": 3.0})), 422,
                    "unknown-sensors")
    assert body["unknown_sensors"] == ["ghost", "nope"]
    assert "ghost" in body["detail"] and "nope" in body["detail"]

    misaligned = _off(now, 150)  # 2.5 minutes into the slot
    body = _problem(post({"timestamp": misaligned, "values": ok}), 422, "invalid-readings")
    assert body["errors"][0]["reason"] == "misaligned"
    assert iso(now) in body["errors"][0]["hint"]

    body = _problem(post(snapshot(now + 2, ok)), 422, "invalid-readings")
    assert body["errors"][0]["reason"] == "in_future"
    body = _problem(post(snapshot(now - 24, ok)), 422, "invalid-readings")  # 2 h retention
    assert body["errors"][0]["reason"] == "too_old"
    body = _problem(post(snapshot(now - 1, ok), snapshot(now - 1, ok)), 422)
    assert body["errors"][0]["reason"] == "duplicate_timestamp"
    body = _problem(post(snapshot(now - 1, {sensors[0]: 500.0})), 422)
    assert body["errors"][0] == {"reason": "out_of_range", "timestamp": body["errors"][0][
        "timestamp"], "sensor": sensors[0], "value": 500.0, "allowed": [0.0, 200.0]}

    # NaN / Infinity are not JSON, but Python clients emit them: they must be refused too
    for token in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = ('{"readings":[{"timestamp":"%s","values":{"%s":%s}}]}'
               % (iso(now - 1), sensors[0], token))
        body = _problem(client.post("/readings", content=raw, headers={
            **AUTH, "content-type": "application/json"}), 422)
        assert body["errors"][0]["reason"] == "not_finite", token

    # one bad reading refuses the whole batch: nothing of it is stored
    _problem(post(snapshot(now - 1, ok), snapshot(now - 2, {"nope": 1.0})), 422)
    assert client.post("/forecast").status_code == 404

    # null is no reading (one rule with stateless windows): accepted, nothing stored
    r = post(snapshot(now - 1, {sensors[0]: None}))  # type: ignore[dict-item]
    assert r.status_code == 200 and r.json() == {"accepted": 0, "slots": 0, "latest": None}
    assert client.post("/forecast").status_code == 404
    _problem(post(snapshot(now - 1, {sensors[0]: "61.5"})), 422, "invalid-request")  # type: ignore[dict-item]
    body = _problem(post({"timestamp": iso(now - 1), "values": ok, "unit": "mph"}), 422,
                    "invalid-request")
    assert "unit" in body["detail"]
    _problem(client.post("/readings", json={"readings": []}, headers=AUTH), 422)
    _problem(client.post("/readings", json={"values": ok}, headers=AUTH), 422)
    _problem(client.post("/readings", content=b"{not json", headers={  # issue 13: 400, not 422
        **AUTH, "content-type": "application/json"}), 400, "invalid-json")

    metrics = client.get("/metrics").text
    for reason in ("unknown_sensor", "misaligned", "in_future", "too_old", "duplicate_timestamp",
                   "out_of_range", "not_finite"):
        assert f'himnet_readings_rejected_total{{reason="{reason}"}}' in metrics, reason


def test_forecast_rejections(client: httpx.Client, sensors: list[str]) -> None:
    last = current_slot() - 1
    stamps = [iso(s) for s in range(last - 11, last + 1)]
    row = [50.0] * len(sensors)

    def fc(body: dict[str, Any]) -> httpx.Response:
        return client.post("/forecast", json=body)

    _problem(fc({}), 404, "no-readings")
    body = _problem(fc({"sensors": ["x1", sensors[0]]}), 422, "unknown-sensors")
    assert body["unknown_sensors"] == ["x1"] and "GET /embeddings" in body["detail"]
    _problem(fc({"horizons": [0]}), 422, "invalid-horizon")
    _problem(fc({"horizons": [13]}), 422, "invalid-horizon")
    _problem(fc({"horizon_minutes": [7]}), 422, "invalid-horizon")
    _problem(fc({"horizons": [1], "horizon_minutes": [5]}), 422, "invalid-request")
    _problem(fc({"as_of": _off(last, 60)}), 422, "invalid-as-of")
    _problem(fc({"as_of": iso(last + 3)}), 422, "invalid-as-of")
    _problem(fc({"as_of": iso(last - 40)}), 422, "invalid-as-of")
    _problem(fc({"bogus": 1}), 422, "invalid-request")

    # stateless windows: shapes, order, alignment, values
    win = {"timestamps": stamps, "values": [row] * 12}
    assert fc({"window": win}).status_code == 200
    body = _problem(fc({"window": {**win, "values": [row] * 11}}), 422, "invalid-window")
    assert "12 rows" in body["detail"]
    _problem(fc({"window": {**win, "values": [row[:-1]] * 12}}), 422, "invalid-window")
    _problem(fc({"window": {"timestamps": stamps[:-1], "values": [row] * 11}}), 422,
             "invalid-window")
    shuffled = stamps[:5] + [stamps[6], stamps[5]] + stamps[7:]
    body = _problem(fc({"window": {**win, "timestamps": shuffled}}), 422, "invalid-window")
    assert "increasing" in body["detail"]
    gap = [iso(s) for s in range(last - 12, last + 1) if s != last - 6]  # 12 stamps, one hole
    _problem(fc({"window": {**win, "timestamps": gap}}), 422, "invalid-window")
    future = [iso(s) for s in range(last - 8, last + 4)]
    body = _problem(fc({"window": {**win, "timestamps": future}}), 422, "invalid-window")
    assert "future" in body["detail"]
    off = [_off(s, 10) for s in range(last - 11, last + 1)]
    _problem(fc({"window": {**win, "timestamps": off}}), 422, "invalid-window")
    _problem(fc({"window": {"timestamps": stamps, "series": {"zz": [1.0] * 12}}}), 422,
             "unknown-sensors")
    _problem(fc({"window": {"timestamps": stamps, "series": {sensors[0]: [1.0] * 5}}}), 422,
             "invalid-window")
    _problem(fc({"window": {"timestamps": stamps, "series": {sensors[0]: [None] * 12}}}), 422,
             "invalid-window")
    _problem(fc({"window": {"timestamps": stamps}}), 422, "invalid-request")
    _problem(fc({"window": win, "as_of": stamps[-1]}), 422, "invalid-request")
    raw = json.dumps({"window": {"timestamps": stamps, "values": [row] * 12}}).replace(
        "50.0", "Infinity", 1)
    _problem(client.post("/forecast", content=raw, headers={"content-type": "application/json"}),
             422, "invalid-window")
    _problem(fc({"window": {"timestamps": stamps, "values": [[1e6] * len(sensors)] * 12}}), 422,
             "invalid-window")


def test_body_limit(make_settings, sensors: list[str]) -> None:
    with serve(make_settings(max_body_bytes=4096)) as client:
        big = {"readings": [snapshot(current_slot() - 1, {sensors[0]: 1.0})] * 200}
        body = _problem(client.post("/readings", json=big, headers=AUTH), 413, "body-too-large")
        assert "4096" in body["detail"]

        def chunks():  # no Content-Length: the limit must hold for chunked bodies too
            for _ in range(10):
                yield b" " * 1000

        _problem(client.post("/forecast", content=chunks(),
                             headers={"content-type": "application/json"}), 413)
        small = client.post("/readings", json={"readings": [snapshot(current_slot() - 1,
                                                                     {sensors[0]: 1.0})]},
                            headers=AUTH)
        assert small.status_code == 200


def test_auth(make_settings, sensors: list[str], tmp_path: Path) -> None:
    snap = {"readings": [snapshot(current_slot() - 1, {sensors[0]: 1.0})]}
    key_file = tmp_path / "key"
    key_file.write_text("from-a-secret-file\n")
    with serve(make_settings(api_key=None, api_key_file=key_file, protect_reads=True)) as client:
        _problem(client.post("/readings", json=snap), 401, "unauthorized")
        _problem(client.post("/readings", json=snap, headers={"X-API-Key": "wrong"}), 401)
        assert client.post("/readings", json=snap, headers={
            "Authorization": "Bearer from-a-secret-file"}).status_code == 200
        _problem(client.post("/forecast"), 401)
        _problem(client.get("/embeddings"), 401)
        assert client.get("/embeddings", headers={"X-API-Key": "from-a-secret-file"}).status_code == 200
        assert client.get("/livez").status_code == 200  # probes stay open
        _problem(client.delete("/admin/cache"), 401)
        assert client.delete("/admin/cache", headers={"X-API-Key": "from-a-secret-file"}
                             ).status_code == 204
    with serve(make_settings(api_key=None)) as client:
        body = _problem(client.post("/readings", json=snap, headers=AUTH), 403, "writes-disabled")
        assert "HIMNET_API_KEY" in body["detail"]
        assert client.post("/forecast").status_code == 200  # reads open by default
    with serve(make_settings(api_key=None, auth_disabled=True)) as client:
        assert client.post("/readings", json=snap).status_code == 200
    assert API_KEY  # the default test settings do configure a key


def test_unknown_route_and_method(client: httpx.Client) -> None:
    _problem(client.get("/nowhere"), 404, "not-found")
    _problem(client.get("/readings"), 405, "method-not-allowed")


def _start(settings: Any) -> None:
    """Run the app's lifespan (startup and shutdown) once."""
    app = create_app(settings)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(go())


def test_missing_or_corrupt_bundle_at_startup(make_settings, tiny_bundle: Path,
                                              tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="no such bundle directory"):
        _start(make_settings(bundle_dir=tmp_path / "absent"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    with open(broken / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    with pytest.raises(StartupError, match=r"model\.onnx.*does not match"):
        _start(make_settings(bundle_dir=broken))
    (broken / "model.onnx").unlink()
    with pytest.raises(StartupError, match=r"model\.onnx: missing"):
        _start(make_settings(bundle_dir=broken))
    with pytest.raises(RuntimeError, match="server did not start"):  # uvicorn refuses to serve
        with serve(make_settings(bundle_dir=broken)):
            pass


def test_python_m_service_explains_startup_errors(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HIMNET_BUNDLE_DIR": str(tmp_path / "absent"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot start" in proc.stderr and "absent" in proc.stderr
    assert "Traceback" not in proc.stderr
    env.pop("HIMNET_BUNDLE_DIR")
    proc = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "HIMNET_BUNDLE_DIR" in proc.stderr
