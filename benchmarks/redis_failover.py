"""Redis failover under ingest: outage seconds and acknowledged readings lost, with and without
the WAIT durability setting, and what WAIT costs in steady ingest (a script, not a test).

Each run starts real Redis on loopback (``benchmarks/redis_topology.py``: a primary, a replica,
three sentinels, quorum 2, primary down after 1 s, one password) and the service in this
process (its ASGI app over ``httpx.ASGITransport``, lifespan included) configured with
``HIMNET_REDIS_SENTINELS`` and ``HIMNET_REDIS_PASSWORD_FILE``. Four clients post one snapshot
per ``POST /readings``, each for a slot of its own, so every acknowledged reading can be checked
afterwards. After ``--steady`` seconds (the steady-state latency and throughput) the fault:

* ``kill``: kill -9 the primary;
* ``partition``: the replica is cut off for ``--lag`` seconds (SIGSTOP, and the primary drops
  its link, as it does after ``repl-timeout``), then the primary is killed and the replica
  resumes: the writes of that interval never reached it. (A replica that merely stalls loses
  nothing on loopback: what the primary sent waits in the replica's socket buffer.)
* ``switchover``: ``SENTINEL FAILOVER``: the replica is promoted while the old primary lives on
  and accepts writes until the sentinels turn it into a replica (~10 s later), discarding them.

Once the sentinels name the promoted replica, the dead node is restarted as its replica (what
the k8s component's start-redis.sh does). The run ends when writes have succeeded for 1.5 s
after the last failure; then every acknowledged snapshot is read back through the service.

The cost of WAIT is measured apart, on one healthy topology: two apps (default and WAIT) take
turns, ``--burst`` seconds each for ``--rounds`` rounds, so both see the same machine load.

Outage: from the start of the first failed write to the end of the first successful write
after it. Lost: acknowledged snapshots (200) whose row is not what was sent. WAIT mode:
``HIMNET_REDIS_MIN_REPLICAS_ACK=1``, ``HIMNET_REDIS_REPLICA_ACK_TIMEOUT_MS=200``.

    python benchmarks/redis_failover.py [--bundle DIR] [--repeats 3] [--only cost|failover]
                                        [--scenarios kill,partition,switchover]
                                        [--json FILE]

Without ``--bundle`` the 207-sensor bundle of ``benchmarks/load_service.py`` is used (exported
once, needs torch). tests/service/test_failover.py runs the scenarios on the tiny bundle.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.redis_topology import RedisTopology, wait_for  # noqa: E402
from model.bundle import read_manifest  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

API_KEY = "failover-key"
WORKERS = 4
SETTLED_S = 1.5  # successes for this long after the last failure end a run
FOLLOW_S = 1.0  # the service re-asks the sentinels every 0.5 s (service/stores.py)


@dataclass(frozen=True)
class Attempt:
    """One POST /readings: when it was sent and answered (monotonic s), its slot, its status."""

    start: float
    end: float
    slot: int
    status: int


@dataclass
class Outcome:
    """What one failover run measured (seconds relative to the fault where noted)."""

    mode: str
    scenario: str
    steady_requests_per_s: float
    steady_p50_ms: float
    steady_p99_ms: float
    outage_s: float
    failed_writes: int
    acknowledged: int
    lost: int
    acknowledged_after_kill: int  # written to the promoted replica
    lost_after_kill: int
    lost_after_promotion: int  # sent over FOLLOW_S after the sentinels named the new primary
    promoted_after_s: float
    rejoined_after_s: float
    statuses: dict[str, int] = field(default_factory=dict)


def expected_row(i: int, num_nodes: int) -> np.ndarray:
    """The values request ``i`` sends (exact in float32, within the default plausible range)."""
    return (i % 4000 + np.arange(num_nodes) * 0.25).astype(np.float32)


async def drive(http: httpx.AsyncClient, sensors: list[str], first_slot: int, interval_s: int,
                stop: asyncio.Event, attempts: list[Attempt]) -> None:
    """``WORKERS`` clients posting one snapshot each, slot ``first_slot - i`` for request i."""
    counter = itertools.count()

    async def client() -> None:
        while not stop.is_set():
            i = next(counter)
            slot = first_slot - i
            stamp = datetime.fromtimestamp(slot * interval_s, tz=timezone.utc).isoformat()
            values = dict(zip(sensors, expected_row(i, len(sensors)).tolist()))
            t0 = time.monotonic()
            r = await http.post("/readings", json={"readings": [{"timestamp": stamp,
                                                                 "values": values}]})
            attempts.append(Attempt(t0, time.monotonic(), slot, r.status_code))
            if r.status_code != 200:
                await asyncio.sleep(0.01)  # a client's pause before it sends again

    await asyncio.gather(*(client() for _ in range(WORKERS)))


def outage(attempts: list[Attempt], fault: float) -> tuple[float, int]:
    """(outage seconds, failed writes) among the writes sent after ``fault``."""
    after = sorted((a for a in attempts if a.start >= fault), key=lambda a: a.start)
    failed = [a for a in after if a.status != 200]
    if not failed:
        return 0.0, 0
    first = failed[0]
    recovered = [a.end for a in after if a.status == 200 and a.start > first.start]
    return (min(recovered) if recovered else float("nan")) - first.start, len(failed)


def settled(attempts: list[Attempt], since: float) -> bool:
    """Writes have succeeded for ``SETTLED_S`` after the last failure (and after ``since``)."""
    last_failure = max((a.end for a in attempts if a.status != 200), default=since)
    recent = [a for a in attempts if a.start > max(last_failure, since)]
    return bool(recent) and recent[-1].end - max(last_failure, since) >= SETTLED_S and \
        all(a.status == 200 for a in recent)


async def lost_slots(app: Any, attempts: list[Attempt], first_slot: int) -> set[int]:
    """Slots of acknowledged snapshots not read back as sent, through the service's buffer."""
    acked = {a.slot for a in attempts if a.status == 200}
    if not acked:
        return set()
    buffer = app.state.components.buffer
    oldest = min(a.slot for a in attempts)
    window = await buffer.read_window(first_slot, first_slot - oldest + 1)  # rows: oldest … first
    return {slot for slot in acked
            if not np.array_equal(window[slot - oldest],
                                  expected_row(first_slot - slot, window.shape[1]))}


async def inject(topo: RedisTopology, scenario: str, lag_s: float) -> tuple[float, float, int]:
    """The fault; (its start, the kill, the dead primary's port). Blocking calls in a thread."""
    primary = topo.node_at(await asyncio.to_thread(topo.master_port) or topo.primary_port)
    replica = next(n for n in topo.data if n is not primary)
    start = time.monotonic()
    if scenario == "switchover":
        await asyncio.to_thread(topo.sentinels[0].client().execute_command,
                                "SENTINEL", "FAILOVER", "himnet")
        return start, start, primary.port
    if scenario == "partition":
        topo.pause(replica, True)
        await asyncio.to_thread(primary.client().client_kill_filter, _type="replica")
        await asyncio.sleep(lag_s)
    topo.kill(primary)
    killed = time.monotonic()
    if scenario == "partition":
        topo.pause(replica, False)
    return start, killed, primary.port


async def recover(topo: RedisTopology, dead_port: int, deadline: float,
                  restart: bool = True) -> tuple[float, float]:
    """Wait for the promotion, restart the dead node as replica (``restart``; else wait until
    the sentinels have demoted it); (promoted, rejoined) times."""
    def promoted() -> bool:
        port = topo.master_port()
        return port is not None and port != dead_port

    await asyncio.to_thread(wait_for, promoted, deadline - time.monotonic(), "a promoted replica")
    t_promoted = time.monotonic()
    if restart:
        await asyncio.to_thread(topo.rejoin, topo.node_at(dead_port))

    def replicated() -> bool:  # whichever node the sentinels name now (a loaded machine may
        port = topo.master_port()  # see a second failover) has a replica in sync
        info = topo.node_at(port).client().info("replication") if port else {}
        return info.get("role") == "master" and any(
            isinstance(v, dict) and v.get("state") == "online" for v in info.values())

    await asyncio.to_thread(wait_for, replicated, deadline - time.monotonic(),
                            "a primary with a replica in sync again")
    return t_promoted, time.monotonic()


def service_settings(bundle: Path, topo: RedisTopology, min_replicas: int) -> Settings:
    return Settings(bundle_dir=bundle, redis_sentinels=topo.sentinel_hosts,
                    redis_sentinel_master="himnet", redis_password_file=topo.password_file,
                    redis_prefix=f"failover-{uuid.uuid4().hex[:8]}", api_key=API_KEY,
                    retention_minutes=60 * 24 * 60.0, redis_min_replicas_ack=min_replicas,
                    redis_replica_ack_timeout_ms=200)


async def run(bundle: Path, work: Path, *, wait: bool, scenario: str = "kill",
              steady_s: float = 3.0, lag_s: float = 0.5, budget_s: float = 40.0,
              down_after_ms: int = 1000) -> Outcome:
    """One failover run (see the module docstring); everything started is stopped."""
    manifest = read_manifest(bundle)
    interval_s = int(manifest.interval_minutes * 60)
    first_slot = int(time.time() // interval_s)
    attempts: list[Attempt] = []
    stop = asyncio.Event()
    with RedisTopology(work, down_after_ms=down_after_ms) as topo:
        app = create_app(service_settings(bundle, topo, 1 if wait else 0))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://service",
                headers={"X-API-Key": API_KEY}, timeout=10) as http:
            deadline = time.monotonic() + budget_s  # from the first write on
            ingest = asyncio.create_task(drive(http, list(manifest.sensor_ids), first_slot,
                                               interval_s, stop, attempts))
            try:
                await asyncio.sleep(steady_s)
                steady = [a for a in attempts if a.status == 200]
                fault, killed, dead = await inject(topo, scenario, lag_s)
                t_promoted, t_rejoined = await recover(topo, dead, deadline,
                                                       restart=scenario != "switchover")
                while not settled(attempts, t_rejoined) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await ingest
            lost = await lost_slots(app, attempts, first_slot)
    late = [a.slot for a in attempts if a.status == 200 and a.start > killed]
    followed = [a.slot for a in attempts
                if a.status == 200 and a.start > t_promoted + FOLLOW_S]
    speed = latency_summary([a.end - a.start for a in steady], steady_s)
    out_s, failed = outage(attempts, fault)
    return Outcome(
        mode="wait" if wait else "default", scenario=scenario,
        steady_requests_per_s=speed["requests_per_s"], steady_p50_ms=speed["p50_ms"],
        steady_p99_ms=speed["p99_ms"],
        outage_s=out_s, failed_writes=failed,
        acknowledged=sum(a.status == 200 for a in attempts), lost=len(lost),
        acknowledged_after_kill=len(late), lost_after_kill=len(lost.intersection(late)),
        lost_after_promotion=len(lost.intersection(followed)),
        promoted_after_s=t_promoted - fault, rejoined_after_s=t_rejoined - fault,
        statuses={str(k): v for k, v in sorted(Counter(a.status for a in attempts).items())})


def latency_summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"requests_per_s": len(ordered) / seconds,
            "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


async def cost(bundle: Path, work: Path, *, rounds: int = 10,
               burst_s: float = 0.5) -> dict[str, dict[str, float]]:
    """Steady ingest with and without WAIT, in alternating bursts against one topology."""
    manifest = read_manifest(bundle)
    interval_s = int(manifest.interval_minutes * 60)
    first_slot = int(time.time() // interval_s)
    modes = {"default": 0, "wait": 1}
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    seconds = dict.fromkeys(modes, 0.0)
    with RedisTopology(work) as topo:
        async with AsyncExitStack() as stack:
            clients = {}
            for mode, replicas in modes.items():
                app = create_app(service_settings(bundle, topo, replicas))
                await stack.enter_async_context(app.router.lifespan_context(app))
                clients[mode] = await stack.enter_async_context(httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://service",
                    headers={"X-API-Key": API_KEY}, timeout=10))
            for r in range(rounds):
                for mode in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
                    attempts: list[Attempt] = []
                    stop = asyncio.Event()
                    started = time.monotonic()
                    task = asyncio.create_task(drive(clients[mode], list(manifest.sensor_ids),
                                                     first_slot, interval_s, stop, attempts))
                    await asyncio.sleep(burst_s)
                    stop.set()
                    await task
                    seconds[mode] += time.monotonic() - started
                    latencies[mode] += [a.end - a.start for a in attempts if a.status == 200]
    return {mode: latency_summary(latencies[mode], seconds[mode]) for mode in modes}


def medians(outcomes: list[Outcome]) -> dict[str, Any]:
    """Median of every number over repeats of one (mode, scenario)."""
    first = asdict(outcomes[0])
    return {k: (statistics.median(asdict(o)[k] for o in outcomes)
                if isinstance(v, (int, float)) else v) for k, v in first.items()
            if k != "statuses"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steady", type=float, default=3.0)
    parser.add_argument("--lag", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst", type=float, default=0.5)
    parser.add_argument("--only", choices=("cost", "failover"), default=None)
    parser.add_argument("--scenarios", default="kill,partition,switchover")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.bundle is None:
        from benchmarks.load_service import ensure_bundle
        args.bundle = ensure_bundle(REPO / "artifacts" / "bench-metr-la")
    report: dict[str, Any] = {}
    if args.only != "failover":
        with tempfile.TemporaryDirectory(prefix="himnet-wait-cost-") as work:
            report["wait_cost"] = asyncio.run(cost(args.bundle, Path(work), rounds=args.rounds,
                                                   burst_s=args.burst))
        print(json.dumps(report["wait_cost"]), flush=True)
    if args.only != "cost":
        report.update(failovers(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


def failovers(args: argparse.Namespace) -> dict[str, Any]:
    """Every (scenario, mode) ``--repeats`` times: each run, then the medians."""
    results: dict[str, list[Outcome]] = {}
    scenarios = args.scenarios.split(",")
    for _, scenario, wait in itertools.product(range(args.repeats), scenarios, (False, True)):
        with tempfile.TemporaryDirectory(prefix="himnet-failover-") as work:
            o = asyncio.run(run(args.bundle, Path(work), wait=wait, scenario=scenario,
                                steady_s=args.steady, lag_s=args.lag))
        print(json.dumps(asdict(o)), flush=True)
        results.setdefault(f"{scenario}/{o.mode}", []).append(o)
    summary = {key: medians(runs) for key, runs in results.items()}
    print(json.dumps(summary, indent=2))
    return {"runs": {k: [asdict(o) for o in v] for k, v in results.items()}, "medians": summary}


if __name__ == "__main__":
    main()
