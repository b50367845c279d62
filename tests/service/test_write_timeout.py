"""A Redis write that times out (issue 13, §3): 503 "may have been stored", retry is safe.

A real Redis behind a loopback proxy that can hold Redis's replies: the transaction reaches
Redis and is applied, but its answer arrives after the client's timeout, as in the trial.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import redis

from tests.ports import loopback_socket
from tests.service.conftest import AUTH, current_slot, serve, snapshot


class HoldingProxy:
    """TCP proxy to Redis; while ``hold`` is set, each reply waits ``delay_s`` first."""

    def __init__(self, host: str, port: int, delay_s: float = 1.5) -> None:
        self.target = (host, port)
        self.delay_s = delay_s
        self.hold = False
        self.sock = loopback_socket()
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    replies: bool) -> None:
        try:
            while data := await src.read(65536):
                if replies and self.hold:
                    await asyncio.sleep(self.delay_s)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer, False),
                             self._pipe(up_reader, writer, True))

    def __enter__(self) -> HoldingProxy:
        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_server(self._client, sock=self.sock)

        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[tuple[HoldingProxy, str]]:
    url = urlparse(redis_url)
    with HoldingProxy(url.hostname or "127.0.0.1", url.port or 6379) as p:
        yield p, f"redis://127.0.0.1:{p.port}{url.path or '/0'}"


def test_unconfirmed_write_is_a_safe_to_retry_503(make_settings, reference, proxy,
                                                  redis_url: str, prefix: str) -> None:
    holding, via_proxy = proxy
    sensor = reference.manifest.sensor_ids[0]
    slot = current_slot() - 1
    body = {"readings": [snapshot(slot, {sensor: 42.5})]}
    with serve(make_settings(redis_url=via_proxy, redis_timeout_s=0.3)) as client:
        holding.hold = True
        r = client.post("/readings", json=body, headers=AUTH)
        holding.hold = False
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "1"
        problem = r.json()
        assert problem["type"] == "urn:himnet:problem:store-write-uncertain"
        assert "MAY have been stored" in problem["detail"] and "safe" in problem["detail"]
        metrics = client.get("/metrics").text
        assert 'himnet_readings_rejected_total{reason="store_unavailable"} 0.0' in metrics
        again = client.post("/readings", json=body, headers=AUTH)  # the retry
        assert again.status_code == 200, again.text
        forecast = client.post("/forecast", json={"as_of": snapshot(slot, {})["timestamp"]})
        assert forecast.status_code == 200
    direct = redis.Redis.from_url(redis_url)
    try:
        assert direct.zscore(next(iter(direct.scan_iter(match=f"{prefix}:*:slots"))), slot)
    finally:
        direct.close()
