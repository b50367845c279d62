"""Live accuracy acceptance runs (a script, not a test). Two measurements:

``replay``: export is done beforehand (``himnet export CKPT --out BUNDLE``) and ``himnet
evaluate CKPT --intervals BUNDLE --json EVAL`` has written the offline figures. This starts
``python -m service`` in replay mode (grace 0, accuracy retention two days) on a fresh Redis
prefix, replays LOS-LOOP's test rows (``--start 1612 --slots 404 --speedup inf
--full-horizons``: forecasts for the windows ending at rows 1623 … 2003, exactly the 381 test
windows ``himnet evaluate`` scores) and compares ``GET /accuracy`` per horizon with EVAL::

    python benchmarks/live_accuracy.py replay --bundle BUNDLE --eval EVAL [--redis-url URL]

``ingest``: ingest throughput with live scoring on and off, in one run: two services (on,
off) on the same Redis run side by side and get the same S past slots of 207 readings, one
POST /readings per slot, in turn (alternating which goes first), each followed by a POST
/forecast (so every slot has forecasts to score); only the POST /readings time counts::

    python benchmarks/live_accuracy.py ingest --bundle BUNDLE [--slots 300]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def service(bundle: Path, redis_url: str, **env: str) -> Iterator[httpx.Client]:
    """``python -m service`` on loopback with a fresh Redis prefix; yields a client."""
    port = _free_port()
    environ = {**os.environ, "PYTHONPATH": str(REPO), "HIMNET_BUNDLE_DIR": str(bundle),
               "HIMNET_REDIS_URL": redis_url, "HIMNET_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
               "HIMNET_API_KEY": KEY, "HIMNET_PORT": str(port), "HIMNET_LOG_LEVEL": "warning",
               "HIMNET_RESPONSE_DECIMALS": "6", **env}
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=environ, cwd=REPO)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"X-API-Key": KEY})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode}")
            time.sleep(0.5)
        else:
            raise RuntimeError("the service did not become ready in 120 s")
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)


def run_replay(args: argparse.Namespace) -> int:
    env = {"HIMNET_REPLAY_MODE": "true", "HIMNET_ACCURACY_GRACE_SLOTS": "0",
           "HIMNET_ACCURACY_RETENTION_MINUTES": "2880"}
    report = Path(args.out) / "replay-report.json"
    with service(Path(args.bundle), args.redis_url, **env) as client:
        cmd = [sys.executable, "-m", "replay", "--url", str(client.base_url), "--data", "los-loop",
               "--start", "1612", "--slots", "404", "--speedup", "inf", "--full-horizons",
               "--api-key", KEY, "--report", str(report)]
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        live = client.get("/accuracy", params={"minutes": 2880}).json()
    offline = json.loads(Path(args.eval).read_text())
    rows = live["windows"]["2880m"]["horizons"]
    cov_off = {r["level"]: r["coverage"] for r in offline["intervals"]["levels"]}
    ok = True
    print(f"{'step':>4} {'live n':>7} {'live MAE':>9} {'eval MAE':>9} {'diff %':>7} "
          f"{'live skill':>10} {'live cov0.9':>11} {'eval cov0.9':>11}")
    for r, e in zip(rows, offline["model"]["horizon"]):
        diff = 100 * (r["mae"] - e["mae"]) / e["mae"]
        cov = r.get("coverage", {}).get("0.9")
        ok &= abs(diff) <= 2.0 and cov is not None and 0.87 <= cov <= 0.93
        print(f"{r['step']:>4} {r['scored_targets']:>7} {r['mae']:9.4f} {e['mae']:9.4f} {diff:7.3f} "
              f"{r['skill']:10.4f} {cov:11.4f} {cov_off[0.9][r['step'] - 1]:11.4f}")
    Path(args.out, "live-accuracy.json").write_text(json.dumps(live, indent=2))
    print("within 2 % and coverage bounds" if ok else "OUTSIDE the acceptance bounds")
    return 0 if ok else 1


def _post_slot(client: httpx.Client, ids: list[str], row: np.ndarray, slot: int,
               forecast: bool) -> float:
    """Seconds spent in POST /readings for one slot; then a forecast (untimed)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(slot * 300))
    body = {"readings": [{"timestamp": stamp, "values": {
        s: float(v) for s, v in zip(ids, row) if v > 0}}]}
    t0 = time.perf_counter()
    response = client.post("/readings", json=body)
    spent = time.perf_counter() - t0
    if response.status_code != 200:
        raise RuntimeError(f"POST /readings: {response.status_code} {response.text[:200]}")
    if forecast:
        client.post("/forecast", json={"as_of": stamp})
    return spent


def run_ingest(args: argparse.Namespace) -> int:
    """Both services run at once and get each slot in turn (alternating which goes first), so
    the load of a shared machine falls on both alike: a paired measurement."""
    from training.datasets import load_dataset

    data = load_dataset("los-loop")
    values = data.values[1612:1612 + args.slots]
    first = int(time.time() // 300) - args.slots - 2  # past slots, within the retention below
    spent = {"on": 0.0, "off": 0.0}
    common = {"HIMNET_RETENTION_MINUTES": str((args.slots + 30) * 5)}
    with service(Path(args.bundle), args.redis_url, HIMNET_LIVE_ACCURACY="true", **common) as on, \
            service(Path(args.bundle), args.redis_url, HIMNET_LIVE_ACCURACY="false", **common) as off:
        ids = [s["id"] for s in sorted(on.get("/embeddings").json()["sensors"],
                                       key=lambda s: s["index"])]
        clients = {"on": on, "off": off}
        for k, row in enumerate(values):
            order = ("on", "off") if k % 2 == 0 else ("off", "on")
            for mode in order:
                spent[mode] += _post_slot(clients[mode], ids, row, first + k, k >= 11)
        scored = on.get("/accuracy").json()["windows"]["day"]["slots_scored"]
    readings = int((values > 0).sum())
    rate = {mode: readings / seconds for mode, seconds in spent.items()}
    print(f"{args.slots} slots, {readings} readings each; scoring on: {scored} slots scored")
    for mode in ("on", "off"):
        print(f"{mode:>3}: {rate[mode]:8.0f} readings/s ({args.slots / spent[mode]:.1f} POST/s, "
              f"{1000 * spent[mode] / args.slots:.2f} ms per POST)")
    print(f"on/off = {rate['on'] / rate['off']:.3f}")
    return 0 if rate["on"] >= 0.8 * rate["off"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("replay", "ingest"))
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--eval", help="himnet evaluate --json output (replay)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/6"))
    parser.add_argument("--out", default="artifacts/live-accuracy")
    parser.add_argument("--slots", type=int, default=200)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return run_replay(args) if args.what == "replay" else run_ingest(args)


if __name__ == "__main__":
    sys.exit(main())
