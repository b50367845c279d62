"""The served model and the one kept for rollback: what ``POST /admin/reload`` swaps.

A :class:`ServedModel` is one loaded bundle with everything that depends on its weights: the
manifest, the runtime with its own inference thread (:class:`~service.inference.InferenceEngine`),
the embedding index and the forecast cache namespaced by its version. Requests take the active
model ONCE (:attr:`ModelSlot.active`) and use that object to the end, so a swap — one attribute
assignment on the event loop — is atomic: a request that started on the old model finishes on
it, the next one starts on the new. A model that is neither active nor previous is retired: its
thread is closed once the requests still running on it have finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.bundle import Manifest
from service.cache import ForecastCache
from service.embeddings import EmbeddingIndex
from service.inference import InferenceEngine
from service.runtime import Runtime

log = logging.getLogger("service")

RETIRE_WAIT_S = 30.0  # how long a retired model's requests may still run before its thread closes


@dataclass(frozen=True)
class ServedModel:
    """One loaded, verified and warmed bundle and the parts built from it."""

    bundle_dir: Path
    manifest: Manifest
    runtime: Runtime
    engine: InferenceEngine
    embeddings: EmbeddingIndex
    cache: ForecastCache  # namespaced by this model's version
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.manifest.model_version


class ModelSlot:
    """The active model, the previous one (for rollback), and the retiring ones."""

    def __init__(self, active: ServedModel) -> None:
        self.active = active
        self.previous: ServedModel | None = None
        self.lock = asyncio.Lock()  # one reload or rollback at a time
        self._retiring: set[asyncio.Task[None]] = set()

    def swap_in(self, model: ServedModel) -> None:
        """Serve ``model`` from the next request on; the active one becomes the previous."""
        dropped, self.previous, self.active = self.previous, self.active, model
        if dropped is not None:
            self._retire(dropped)

    def rollback(self) -> ServedModel:
        """Serve the previous model again (the active one becomes the previous); returns it."""
        if self.previous is None:
            raise LookupError("no previous model to roll back to")
        self.active, self.previous = self.previous, self.active
        return self.active

    def _retire(self, model: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(_retire(model))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Close every model's inference thread (shutdown)."""
        for task in list(self._retiring):
            await task
        for model in (self.active, self.previous):
            if model is not None:
                model.engine.close()


async def _retire(model: ServedModel, wait_s: float = RETIRE_WAIT_S) -> None:
    """Close ``model``'s thread once nothing runs on it (bounded wait)."""
    deadline = time.monotonic() + wait_s
    while model.engine.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.to_thread(model.engine.close)
    log.info("retired model %s %s", model.manifest.model_name, model.version)
