"""The objects one app instance shares between requests, built once by ``service/startup.py``.

Routes never see this container: they ask for single, typed pieces through ``service/deps.py``.
The model-dependent pieces (manifest, runtime, engine, embeddings) are read from the ACTIVE
model of :class:`~service.models.ModelSlot` at the moment a request asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.bundle import Manifest
from service.buffer import ReadingBuffer
from service.embeddings import EmbeddingIndex
from service.forecasting import Forecaster
from service.inference import InferenceEngine
from service.ingest import Ingest
from service.inputs import ForecastInputs
from service.live_setup import LiveScoring
from service.metrics import Metrics
from service.models import ModelSlot
from service.reload import Reloader
from service.rendering import ForecastRenderer
from service.runtime import Runtime
from service.security import Access
from service.settings import Settings
from service.timeslots import SlotClock


@dataclass
class Components:
    """Everything startup built; stored on ``app.state.components``."""

    settings: Settings
    models: ModelSlot
    reloader: Reloader
    clock: SlotClock
    buffer: ReadingBuffer
    forecaster: Forecaster
    ingest: Ingest
    inputs: ForecastInputs
    renderer: ForecastRenderer
    access: Access
    metrics: Metrics
    live: LiveScoring | None = None  # live accuracy per model version (None when switched off)
    ready: bool = False

    @property
    def manifest(self) -> Manifest:
        return self.models.active.manifest

    @property
    def runtime(self) -> Runtime:
        return self.models.active.runtime

    @property
    def engine(self) -> InferenceEngine:
        return self.models.active.engine

    @property
    def embeddings(self) -> EmbeddingIndex:
        return self.models.active.embeddings

    def serving(self) -> bool:
        """Readiness: the model is loaded and warmed, its inference thread alive, and the app
        is not shutting down. Redis is deliberately not part of it: one shared Redis blip must
        not take every replica out of the Service (the routes that need Redis answer 503)."""
        return self.ready and self.engine.alive

    async def close(self) -> None:
        """Stop answering ready, release the store's connections and the inference threads."""
        self.ready = False
        await self.forecaster.background.drain()  # cache and live-accuracy writes in flight
        if self.live is not None:
            await self.live.close()
        await self.buffer.close()
        await self.models.close()
