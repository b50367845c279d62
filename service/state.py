"""The objects one app instance shares between requests, built once by ``service/startup.py``.

Routes never see this container: they ask for single, typed pieces through ``service/deps.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.bundle import Manifest
from model.intervals import IntervalTable
from service.accuracy import LiveAccuracy
from service.buffer import ReadingBuffer
from service.embeddings import EmbeddingIndex
from service.forecasting import Forecaster
from service.inference import InferenceEngine
from service.ingest import Ingest
from service.inputs import ForecastInputs
from service.metrics import Metrics
from service.rendering import ForecastRenderer
from service.runtime import Runtime
from service.security import Access
from service.settings import Settings
from service.timeslots import SlotClock


@dataclass
class Components:
    """Everything startup built for one bundle; stored on ``app.state.components``."""

    settings: Settings
    manifest: Manifest
    runtime: Runtime
    clock: SlotClock
    engine: InferenceEngine
    buffer: ReadingBuffer
    forecaster: Forecaster
    ingest: Ingest
    inputs: ForecastInputs
    renderer: ForecastRenderer
    embeddings: EmbeddingIndex
    access: Access
    metrics: Metrics
    live: LiveAccuracy | None = None  # live accuracy (None when switched off)
    intervals: IntervalTable | None = None  # the bundle's prediction intervals, if any
    ready: bool = False

    async def close(self) -> None:
        """Stop answering ready, release the store's connections and the inference thread."""
        self.ready = False
        if self.live is not None:
            await self.live.close()
        await self.buffer.close()
        self.engine.close()
