"""Runs the model off the event loop, on ONE dedicated thread, with a bounded queue.

One thread because a runtime called from a thread other than the one that warmed it can run
twice as slow (tooling notes: TorchScript 47 vs 23 ms), and FastAPI's default threadpool hops
between threads; loading and warm-up therefore also happen on this thread. The bound keeps
latency honest under overload: beyond it callers get :class:`Overloaded` (→ 503 Retry-After)
instead of an ever-growing queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import Manifest
from service.metrics import Metrics


class Overloaded(RuntimeError):
    """Too many forecasts running or waiting."""


class InferenceEngine:
    """Owns the runtime and the single thread that is allowed to call it."""

    def __init__(self, max_pending: int, metrics: Metrics) -> None:
        self.max_pending = max_pending
        self.metrics = metrics
        self.runtime: Any = None
        self.thread_ident: int | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pending = 0
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
                   manifest: Manifest | None = None) -> Any:
        """Load and warm the bundle's runtime on the inference thread.

        ``manifest``: the bundle's manifest if the caller verified it already, else None.
        """
        from service.runtime import load_runtime  # the runtime module owns onnxruntime/torch

        def _load() -> Any:
            self.thread_ident = threading.get_ident()
            self._thread = threading.current_thread()
            return load_runtime(bundle_dir, backend=backend, device=device, threads=threads,
                                warmup=True, manifest=manifest)

        loop = asyncio.get_running_loop()
        self.runtime = await loop.run_in_executor(self._executor, _load)
        return self.runtime

    async def predict(
        self, readings: np.ndarray, input_time: np.ndarray, target_time: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch-of-one forecast; raises :class:`Overloaded` when the queue is full."""
        if self.runtime is None:
            raise RuntimeError("the model is not loaded")
        if self._pending >= self.max_pending:
            self.metrics.inference_rejected.inc()
            raise Overloaded(f"{self._pending} forecasts already running or queued")
        self._pending += 1
        self.metrics.inference_pending.set(self._pending)
        queued = time.perf_counter()
        runtime = self.runtime

        def _run() -> tuple[np.ndarray, np.ndarray, float]:
            started = time.perf_counter()
            self.metrics.inference_wait_seconds.observe(started - queued)
            forecast, st = runtime.predict(readings[None], input_time[None], target_time[None])
            took = time.perf_counter() - started
            return forecast, st, took

        try:
            loop = asyncio.get_running_loop()
            forecast, st, took = await loop.run_in_executor(self._executor, _run)
        finally:
            self._pending -= 1
            self.metrics.inference_pending.set(self._pending)
        self.metrics.inference_seconds.observe(took)
        return np.asarray(forecast[0], dtype=np.float32), np.asarray(st[0], dtype=np.float32)

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
