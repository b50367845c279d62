"""Runs the model off the event loop, on ONE dedicated thread, in micro-batches, with deadlines.

One thread because a runtime called from a thread other than the one that warmed it can run
twice as slow (tooling notes: TorchScript 47 vs 23 ms), and FastAPI's default threadpool hops
between threads; loading and warm-up therefore also happen on this thread.

Micro-batching: a forecast that finds the engine idle runs at once, alone (it never waits for
a batch that may not fill); forecasts that arrive while a batch runs queue up and go together
as the next batch (up to ``max_batch`` windows: the graph has a dynamic batch axis), their
outputs split back per request. ``max_wait_ms`` > 0 additionally holds an idle engine's first
forecast that long for company (worth it where a batch costs what one window does: a GPU).

Latency stays bounded: a forecast that cannot *start* its model run within ``start_deadline_ms``
is refused with :class:`Overloaded` (→ 503 Retry-After) at once — on admission when the time
it has already spent in the request path plus the estimated wait (the running batch's remainder
plus the batches queued ahead, from a running mean of the cost per window) exceeds the deadline,
else when the deadline passes while it waits. The deadline counts from the request's arrival
(``request_arrival``, set by the HTTP middleware), not from its queueing: under overload the
path to the queue (body, Redis, window) is slow too, and a refusal counted from the queue came
20–30 ms late on the 2-core box. A forecast that finds the engine idle is judged from its
queueing instead: what can start now, runs.
``max_pending`` bounds running plus queued forecasts as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import Manifest
from service.metrics import Metrics

log = logging.getLogger("service.inference")

Output = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # forecast T_out×N, st N×d_st, spread T_out×N


@dataclass(frozen=True)
class RunTiming:
    """The model run behind this request's forecast (the ``Server-Timing`` header reports it)."""

    wait_s: float  # queued until its batch started
    model_s: float  # the batch's runtime call
    batch: int  # windows in that call


# Set by :meth:`InferenceEngine.predict` in the calling request's context; None: no model run.
last_run: contextvars.ContextVar[RunTiming | None] = contextvars.ContextVar("himnet_last_run",
                                                                            default=None)


# perf_counter() when the HTTP layer received the request (``service.middleware.RequestMetrics``);
# None outside a request (a direct caller): the deadline then counts from the call to predict.
request_arrival: contextvars.ContextVar[float | None] = contextvars.ContextVar("himnet_request_arrival",
                                                                              default=None)


class Overloaded(RuntimeError):
    """Too many forecasts running or waiting, or this one could not start in time."""


@dataclass
class _Job:
    """One queued forecast: its inputs, the future its caller awaits, when it was queued."""

    readings: np.ndarray  # T_in × N
    input_time: np.ndarray  # T_in × 2
    target_time: np.ndarray  # T_out × 2
    future: asyncio.Future[Output]
    queued: float
    counts_from: float  # its start deadline counts from here: arrival, or queueing if the engine was idle
    started: float = field(default=0.0)
    took: float = field(default=0.0)  # the batch's runtime call, seconds
    batch: int = field(default=0)


@dataclass(frozen=True)
class BatchPolicy:
    """How forecasts are grouped and how long one may wait to start (settings)."""

    max_batch: int = 8
    max_wait_ms: float = 0.0
    start_deadline_ms: float | None = None  # None: wait as long as the queue bound allows


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux: nice is per thread, and
    threads created afterwards, such as ONNX Runtime's pool, inherit it). Elsewhere a no-op."""
    if nice <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # a sandbox may forbid it: serve anyway, at normal priority
        log.warning("could not lower the inference thread's priority: %s", exc)


class InferenceEngine:
    """Owns the runtime and the single thread that is allowed to call it."""

    def __init__(self, max_pending: int, metrics: Metrics,
                 policy: BatchPolicy | None = None) -> None:
        self.max_pending = max_pending
        self.metrics = metrics
        self.policy = policy or BatchPolicy()
        self.runtime: Any = None
        self.thread_ident: int | None = None
        self.native_thread_id: int | None = None  # the OS's id of the inference thread
        self._queue: deque[_Job] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pending = 0
        self._running = 0  # windows in the batch on the inference thread (0: idle)
        self._running_since = 0.0
        self._per_window_s: float | None = None  # running mean of a batch's cost per window
        self._timer: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="himnet-inference")

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def alive(self) -> bool:
        """The runtime is loaded and warmed and its thread still runs (readiness)."""
        return (self.runtime is not None and not self._closed and self._thread is not None
                and self._thread.is_alive())

    async def load(self, bundle_dir: Path, backend: str, device: str, threads: int,
                   manifest: Manifest | None = None, nice: int = 0) -> Any:
        """Load and warm the bundle's runtime on the inference thread.

        ``manifest``: the bundle's manifest if the caller verified it already, else None.
        ``nice``: lower this thread's priority first, so the runtime's threads inherit it.
        """
        from service.runtime import load_runtime  # the runtime module owns onnxruntime/torch

        def _load() -> Any:
            self.thread_ident = threading.get_ident()
            self._thread = threading.current_thread()
            self.native_thread_id = threading.get_native_id()
            lower_priority(nice)
            runtime = load_runtime(bundle_dir, backend=backend, device=device, threads=threads,
                                   warmup=True, manifest=manifest)
            started = time.perf_counter()
            runtime.predict(*runtime.example_inputs(1))  # a first cost estimate for admission
            self._per_window_s = time.perf_counter() - started
            return runtime

        loop = asyncio.get_running_loop()
        self.runtime = await loop.run_in_executor(self._executor, _load)
        return self.runtime

    async def predict(self, readings: np.ndarray, input_time: np.ndarray,
                      target_time: np.ndarray) -> Output:
        """One window's forecast (run alone or in a batch); raises :class:`Overloaded`."""
        if self.runtime is None:
            raise RuntimeError("the model is not loaded")
        if self._pending >= self.max_pending:
            self._refuse("queue_full")
            raise Overloaded(f"{self._pending} forecasts already running or queued")
        deadline = self.policy.start_deadline_ms
        now = time.perf_counter()
        arrived = min(request_arrival.get() or now, now)
        wait = self.estimated_wait_s()  # 0 when idle: a forecast that can start now always runs
        if deadline is not None and wait > 0 and (now - arrived + wait) * 1e3 > deadline:
            self._refuse("start_deadline")
            raise Overloaded(f"a forecast could not start within {deadline:g} ms")
        loop = asyncio.get_running_loop()
        counts_from = arrived if wait > 0 else now
        job = _Job(readings, input_time, target_time, loop.create_future(), now, counts_from)
        self._queue.append(job)
        self._pending += 1
        self.metrics.inference_pending.set(self._pending)
        try:
            self._dispatch()
            out = await job.future
            last_run.set(RunTiming(job.started - job.queued, job.took, job.batch))
            return out
        finally:
            self._pending -= 1
            self.metrics.inference_pending.set(self._pending)

    def estimated_wait_s(self) -> float:
        """How long a forecast queued now would wait before its model run starts."""
        if not self._running:
            return 0.0
        per_window = self._per_window_s or 0.0
        left = max(0.0, self._running * per_window - (time.perf_counter() - self._running_since))
        batches_ahead = len(self._queue) // self.policy.max_batch
        return left + batches_ahead * self.policy.max_batch * per_window

    def _refuse(self, reason: str) -> None:
        self.metrics.inference_rejected.inc()
        self.metrics.inference_shed.labels(reason).inc()

    def _dispatch(self) -> None:
        """Start the next batch if the engine is idle (on the event loop)."""
        if self._closed:  # a retired model: nothing queued on it will run any more
            while self._queue:
                job = self._queue.popleft()
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the model was closed"))
            return
        self._expire()
        if self._running or not self._queue:
            if self._running:  # re-armed: a newcomer may have arrived before the oldest queued
                self._arm_deadline()  # a forecast queued behind the running batch
            return
        policy = self.policy
        held = (time.perf_counter() - self._queue[0].queued) * 1e3
        if len(self._queue) < policy.max_batch and held < policy.max_wait_ms:
            self._arm(policy.max_wait_ms - held)
            return
        jobs = [self._queue.popleft() for _ in range(min(policy.max_batch, len(self._queue)))]
        self._running = len(jobs)
        self._running_since = time.perf_counter()
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._run_batch, jobs)
        done.add_done_callback(lambda f: self._finish(jobs, f))
        self._arm_deadline()

    def _run_batch(self, jobs: list[_Job]) -> tuple[Output, float]:
        """On the inference thread: one runtime call for every job (batch axis first)."""
        started = time.perf_counter()
        for job in jobs:
            job.started = started
        if len(jobs) == 1:
            job = jobs[0]
            args = (job.readings[None], job.input_time[None], job.target_time[None])
        else:
            args = (np.stack([j.readings for j in jobs]), np.stack([j.input_time for j in jobs]),
                    np.stack([j.target_time for j in jobs]))
        out = self.runtime.predict_full(*args)
        return out, time.perf_counter() - started

    def _finish(self, jobs: list[_Job], done: asyncio.Future[tuple[Output, float]]) -> None:
        """Back on the event loop: hand each caller its slice, then start the next batch."""
        self._running = 0
        if done.cancelled() or done.exception() is not None:
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
        else:
            (forecast, st, spread), took = done.result()
            self._observe(jobs, took)
            for i, job in enumerate(jobs):
                job.took, job.batch = took, len(jobs)
                if not job.future.done():  # a caller may have gone (client disconnected)
                    job.future.set_result((np.asarray(forecast[i], dtype=np.float32),
                                           np.asarray(st[i], dtype=np.float32),
                                           None if spread is None else np.asarray(spread[i], dtype=np.float32)))
        self._dispatch()

    def _observe(self, jobs: list[_Job], took: float) -> None:
        m = self.metrics
        m.inference_seconds.observe(took)
        m.inference_batch_size.observe(len(jobs))
        for job in jobs:
            m.inference_wait_seconds.observe(job.started - job.queued)
        per_window = took / len(jobs)
        previous = self._per_window_s
        self._per_window_s = per_window if previous is None else 0.8 * previous + 0.2 * per_window

    def _arm(self, delay_ms: float) -> None:
        """Call :meth:`_dispatch` again in ``delay_ms`` (one timer at a time)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay_ms) / 1e3,
                                                            self._on_timer)

    def _arm_deadline(self) -> None:
        """While a batch runs, wake up when the oldest queued forecast's start deadline passes."""
        deadline = self.policy.start_deadline_ms
        if deadline is None or not self._queue:
            return
        oldest = min(job.counts_from for job in self._queue)
        self._arm(deadline - (time.perf_counter() - oldest) * 1e3)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()
        if self._running:
            self._arm_deadline()

    def _expire(self) -> None:
        """Drop queued forecasts whose caller left, refuse those whose start deadline passed."""
        deadline = self.policy.start_deadline_ms
        now = time.perf_counter()
        kept: deque[_Job] = deque()
        for job in self._queue:  # the whole queue: arrival order need not be queue order
            if job.future.done():  # cancelled: the client went away
                continue
            if deadline is not None and (now - job.counts_from) * 1e3 > deadline:
                self._refuse("start_deadline")
                job.future.set_exception(
                    Overloaded(f"the forecast could not start within {deadline:g} ms"))
                continue
            kept.append(job)
        self._queue = kept

    def close(self) -> None:
        """Stop the thread (any thread may call this); forecasts still queued get an error."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._queue:  # their futures belong to the event loop: fail them there
            self._queue[0].future.get_loop().call_soon_threadsafe(self._dispatch)
