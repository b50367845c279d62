"""The objects one app instance shares between requests, built by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from service.buffer import ReadingBuffer
from service.cache import LRU
from service.embeddings import EmbeddingIndex
from service.forecasting import Forecaster
from service.inference import InferenceEngine
from service.metrics import Metrics
from service.settings import Settings
from service.timeslots import SlotClock


@dataclass
class Services:
    """Everything a route needs; one per app, stored on ``app.state.services``."""

    settings: Settings
    manifest: Any  # model.bundle.Manifest
    runtime: Any  # service.runtime.Runtime
    clock: SlotClock
    buffer: ReadingBuffer
    engine: InferenceEngine
    forecaster: Forecaster
    embeddings: EmbeddingIndex
    metrics: Metrics
    api_key: str | None
    position: dict[str, int]
    bodies: LRU = field(default_factory=lambda: LRU(512))  # rendered forecast bodies
    ready: bool = False


async def get_services(request: Request) -> Services:
    """FastAPI dependency: the app's services (present once startup has finished).

    ``async`` on purpose: FastAPI runs plain ``def`` dependencies in its threadpool, which
    costs a thread hop on every request.
    """
    services = getattr(request.app.state, "services", None)
    if services is None:  # pragma: no cover - uvicorn serves only after startup
        raise RuntimeError("the service has not started")
    return services
