"""Request and response bodies (pydantic), which are also the OpenAPI documentation.

Checks that need the model (sensor names, alignment, the clock) happen in ``service/ingest.py``
and ``service/inputs.py`` (with ``service/timeslots.py``); these models only fix shapes and
types so FastAPI can document and parse them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ProblemDetail(BaseModel):
    """RFC 9457 problem document; extension members vary by problem type."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["urn:himnet:problem:unknown-sensors"])
    title: str
    status: int
    detail: str
    instance: str | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json answers."""
    return {
        code: {"model": ProblemDetail, "content": {"application/problem+json": {}},
               "description": "Problem details (RFC 9457)"}
        for code in codes
    }


# --- readings ----------------------------------------------------------------------------------
class Snapshot(BaseModel):
    """Readings of some sensors at one slot; other sensors of that slot are left untouched."""

    model_config = ConfigDict(extra="forbid")
    timestamp: datetime = Field(
        description="ISO-8601 start of the slot; must lie on the model's interval. With an offset "
        "it is converted; without one it is the model's local wall-clock time.",
        examples=["2026-11-25T21:35:00Z"],
    )
    values: dict[str, float] = Field(
        min_length=1, description="sensor id → reading in raw units", examples=[{"773869": 61.5}]
    )


class ReadingsIn(BaseModel):
    """One or many snapshots, in any order (late readings are normal)."""

    model_config = ConfigDict(extra="forbid")
    readings: list[Snapshot] = Field(min_length=1)


class ReadingsAck(BaseModel):
    accepted: int = Field(description="Readings stored.")
    slots: int = Field(description="Distinct time slots written.")
    latest: str = Field(description="Newest slot written (UTC).")


# --- forecasts ---------------------------------------------------------------------------------
class InputWindow(BaseModel):
    """A caller-supplied input window (stateless mode): exactly T_in consecutive slots.

    Give ``values`` (T_in rows × N sensors in model order) or ``series`` (sensor id → T_in
    values); ``null`` marks a missing reading, sensors absent from ``series`` are all missing.
    """

    model_config = ConfigDict(extra="forbid")
    timestamps: list[datetime] = Field(min_length=1)
    values: list[list[float | None]] | None = None
    series: dict[str, list[float | None]] | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> InputWindow:
        if (self.values is None) == (self.series is None):
            raise ValueError("give exactly one of 'values' (T_in × N) or 'series' (sensor → T_in)")
        return self


class ForecastRequest(BaseModel):
    """Which forecasts to return. An empty body means every sensor and horizon, latest window."""

    model_config = ConfigDict(extra="forbid")
    sensors: list[str] | None = Field(None, min_length=1, description="Default: all sensors.")
    horizons: list[int] | None = Field(
        None, min_length=1, description="Steps ahead (1 … T_out). Default: all."
    )
    horizon_minutes: list[float] | None = Field(
        None, min_length=1, description="Minutes ahead (multiples of the interval); "
        "alternative to 'horizons'."
    )
    as_of: datetime | None = Field(
        None, description="Last input slot. Default: the newest slot with readings."
    )
    window: InputWindow | None = Field(
        None, description="Forecast from this window instead of the buffer (stateless mode)."
    )
    include: list[Literal["st_embedding"]] = Field(default_factory=list)
    interval: float | None = Field(
        None, gt=0, lt=1, description="Also return the prediction interval of this nominal "
        "coverage (one of the bundle's calibrated levels, e.g. 0.9).", examples=[0.9])

    @model_validator(mode="after")
    def _exclusive(self) -> ForecastRequest:
        if self.horizons is not None and self.horizon_minutes is not None:
            raise ValueError("give 'horizons' (steps) or 'horizon_minutes', not both")
        if self.window is not None and self.as_of is not None:
            raise ValueError("'as_of' is the last timestamp of 'window'; give one or the other")
        return self


class Horizon(BaseModel):
    step: int
    minutes: float
    timestamp: str


class InputQuality(BaseModel):
    observed_fraction: float = Field(description="Observed share of the T_in × N input window.")
    missing_policy: str
    sensors_missing: list[str] = Field(
        description="Requested sensors without a single reading in the window."
    )
    sensors_missing_total: int = Field(description="All sensors without a reading in the window.")


class PredictionIntervals(BaseModel):
    level: float = Field(description="Nominal coverage (split-conformal, calibrated at export).")
    lower: dict[str, list[float]] = Field(description="sensor id → lower bound per horizon")
    upper: dict[str, list[float]] = Field(description="sensor id → upper bound per horizon")


class ForecastResponse(BaseModel):
    model_version: str
    as_of: str = Field(description="Last input slot (UTC).")
    source: Literal["buffer", "request"]
    units: str = "raw"
    horizons: list[Horizon]
    forecasts: dict[str, list[float]] = Field(
        description="sensor id → one value per entry of 'horizons', raw units"
    )
    quality: InputQuality
    intervals: PredictionIntervals | None = None
    st_embedding: dict[str, list[float]] | None = None


# --- embeddings and model ----------------------------------------------------------------------
class SensorSummary(BaseModel):
    id: str
    index: int
    cluster: int
    coords: list[float] | None = None


class SensorList(BaseModel):
    count: int
    clusters: int
    sensors: list[SensorSummary]


class Neighbour(BaseModel):
    id: str
    index: int
    weight: float


class SpatiotemporalEmbedding(BaseModel):
    as_of: str
    vector: list[float]


class SensorEmbedding(BaseModel):
    id: str
    index: int
    cluster: int
    coords: list[float] | None = None
    spatial: list[float]
    self_weight: float = Field(description="Weight of the sensor's own edge in the learned graph.")
    neighbours: list[Neighbour] = Field(description="Strongest other sensors in the learned graph.")
    spatiotemporal: SpatiotemporalEmbedding | None = None


class ModelInfo(BaseModel):
    model_name: str
    model_version: str
    dataset: str
    created_at: str
    backend: str
    provider: str
    num_nodes: int
    in_steps: int
    out_steps: int
    interval_minutes: float
    timezone: str | None
    missing_value: float
    missing_policy: str
    day_of_week: bool = Field(True, description="Whether the model's time features use the day "
                              "of week (a replay then shifts data by whole weeks, else days).")
    metrics: dict[str, Any]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
