"""Request and response bodies (pydantic), which are also the OpenAPI documentation.

Checks that need the model (sensor names, alignment, the clock) happen in ``service/ingest.py``
and ``service/inputs.py`` (with ``service/timeslots.py``); these models only fix shapes and
types so FastAPI can document and parse them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StrictInt,
                      model_validator)


class ProblemDetail(BaseModel):
    """RFC 9457 problem document; extension members vary by problem type."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["urn:himnet:problem:unknown-sensors"])
    title: str
    status: int
    detail: str
    instance: str | None = None


_ANSWERS = {
    400: "The body is not valid JSON (or not UTF-8): type urn:himnet:problem:invalid-json",
    401: "No API key, or a wrong one (send X-API-Key or Authorization: Bearer)",
    403: "No API key is configured on the server, so writes are refused",
    404: "Nothing there (unknown sensor, or no readings for the window)",
    413: "The body is larger than the server's limit",
    415: "The body is not sent as Content-Type: application/json",
    422: "The request breaks a rule; 'errors' lists what",
    503: "The buffer (Redis) is unreachable or the model is busy; see Retry-After",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json answers (the media type and
    schema are set for every error answer by ``service/openapi.py``)."""
    return {
        code: {"model": ProblemDetail, "content": {"application/problem+json": {}},
               "description": "Problem details (RFC 9457): " + _ANSWERS.get(code, "error")}
        for code in codes
    }


# --- input types -------------------------------------------------------------------------------
NAIVE_RULE = ("An ISO-8601 string (numbers are refused). With an offset (Z, +02:00) it is "
              "converted; without one it is the model's local wall-clock time (the manifest's "
              "time zone, GET /model 'timezone'; UTC when it names none), the first of a "
              "repeated hour. Dates from 1900 up to 2200 (UTC).")
MISSING_RULE = ("JSON numbers (integers allowed; strings and booleans are refused); null marks "
                "a missing reading. NaN and Infinity are not JSON and are refused.")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_8601(value: Any) -> Any:
    """Timestamps are ISO-8601 strings: pydantic alone would read a number (or a string of
    digits) as Unix time in UTC, while a naive ISO string is local time."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise ValueError("must be an ISO-8601 string such as 2026-11-25T21:35:00Z")


Timestamp = Annotated[datetime, BeforeValidator(_iso_8601)]
Reading = StrictFloat | None  # a JSON number or null (missing); non-finite ones: InputRules


# --- readings ----------------------------------------------------------------------------------
class Snapshot(BaseModel):
    """Readings of some sensors at one slot; other sensors of that slot are left untouched."""

    model_config = ConfigDict(extra="forbid")
    timestamp: Timestamp = Field(
        description="Start of the slot; must lie on the model's interval. " + NAIVE_RULE,
        examples=["2026-11-25T21:35:00Z"],
    )
    values: dict[str, Reading] = Field(
        min_length=1, description="sensor id → reading in raw units. " + MISSING_RULE
        + " A null stores nothing (an earlier value of that sensor and slot stays).",
        examples=[{"773869": 61.5}]
    )


class ReadingsIn(BaseModel):
    """One or many snapshots, in any order (late readings are normal)."""

    model_config = ConfigDict(extra="forbid")
    readings: list[Snapshot] = Field(min_length=1)


class ReadingsAck(BaseModel):
    accepted: int = Field(description="Readings stored.")
    slots: int = Field(description="Distinct time slots written.")
    latest: str | None = Field(description="Newest slot written (UTC); null when every value "
                               "was null.")


# --- forecasts ---------------------------------------------------------------------------------
class InputWindow(BaseModel):
    """A caller-supplied input window (stateless mode): exactly T_in consecutive slots.

    Give ``values`` (T_in rows × N sensors in model order) or ``series`` (sensor id → T_in
    values); ``null`` marks a missing reading, sensors absent from ``series`` are all missing.
    """

    model_config = ConfigDict(extra="forbid")
    timestamps: list[Timestamp] = Field(min_length=1, description="T_in consecutive slot "
                                        "starts, oldest first. " + NAIVE_RULE)
    values: list[list[Reading]] | None = Field(None, description=MISSING_RULE)
    series: dict[str, list[Reading]] | None = Field(None, description=MISSING_RULE)

    @model_validator(mode="after")
    def _one_layout(self) -> InputWindow:
        if (self.values is None) == (self.series is None):
            raise ValueError("give exactly one of 'values' (T_in × N) or 'series' (sensor → T_in)")
        return self


class ForecastRequest(BaseModel):
    """Which forecasts to return. An empty body means every sensor and horizon, latest window."""

    model_config = ConfigDict(extra="forbid")
    sensors: list[str] | None = Field(None, min_length=1, description="Default: all sensors.")
    horizons: list[StrictInt] | None = Field(
        None, min_length=1, description="Steps ahead (1 … T_out). Default: all."
    )
    horizon_minutes: list[StrictFloat] | None = Field(
        None, min_length=1, description="Minutes ahead (multiples of the interval); "
        "alternative to 'horizons'."
    )
    as_of: Timestamp | None = Field(
        None, description="Last input slot. Default: the newest slot where at least "
        "HIMNET_MIN_SLOT_COVERAGE of the sensors reported (see 'window_end_reason'). "
        + NAIVE_RULE
    )
    window: InputWindow | None = Field(
        None, description="Forecast from this window instead of the buffer (stateless mode)."
    )
    include: list[Literal["st_embedding", "spread"]] = Field(
        default_factory=list, description="Extras: 'st_embedding' (the model's spatiotemporal "
        "embedding of each sensor), 'spread' (a seed-ensemble bundle only: the members' standard "
        "deviation per sensor and horizon).")
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
    slot_coverage: list[float] = Field(
        description="Share of the sensors that reported, per input slot (oldest first).")
    last_slot_coverage: float = Field(description="Share of the sensors in the last input slot.")
    missing_policy: str
    sensors_missing: list[str] = Field(
        description="Requested sensors without a single reading in the window."
    )
    sensors_missing_total: int = Field(description="All sensors without a reading in the window.")
    sensors_imputed: list[str] = Field(
        description="Requested sensors with at least one imputed slot in the window.")
    sensors_imputed_total: int = Field(description="All sensors with an imputed slot.")
    sensors_imputed_last_slot: list[str] = Field(
        description="Requested sensors imputed in the last input slot.")
    sensors_imputed_last_slot_total: int = Field(
        description="All sensors imputed in the last input slot.")


class PredictionIntervals(BaseModel):
    level: float = Field(description="Nominal coverage (split-conformal, calibrated at export).")
    lower: dict[str, list[float]] = Field(description="sensor id → lower bound per horizon")
    upper: dict[str, list[float]] = Field(description="sensor id → upper bound per horizon")


class ForecastResponse(BaseModel):
    model_version: str
    as_of: str = Field(description="Last input slot (UTC): the window end.")
    window_end_reason: str = Field(
        description="Why the window ends there: 'as_of' (asked for), 'window' (the last "
        "timestamp of a window sent with the request), 'newest slot with coverage >= X' (the "
        "default, HIMNET_MIN_SLOT_COVERAGE), 'best-covered of the newest K slot(s) (none "
        "reached coverage X)' or 'newest slot' (threshold 0).",
        examples=["newest slot with coverage >= 0.9"])
    newest_reading: str | None = Field(
        description="Newest slot with a reading (UTC): in the buffer for a default window "
        "end (it may be newer than as_of), in the window otherwise.")
    newest_reading_age_s: float | None = Field(
        description="Seconds from the start of that slot to this answer.")
    source: Literal["buffer", "request"]
    units: str = "raw"
    horizons: list[Horizon]
    forecasts: dict[str, list[float]] = Field(
        description="sensor id → one value per entry of 'horizons', raw units"
    )
    quality: InputQuality
    intervals: PredictionIntervals | None = None
    st_embedding: dict[str, list[float]] | None = None
    spread: dict[str, list[float]] | None = Field(
        None, description="Seed ensembles, when asked: sensor id → the members' standard "
        "deviation (population form, raw units) per entry of 'horizons': how much the "
        "independently trained members disagree, not a calibrated interval.")


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


class ModelRef(BaseModel):
    """One loaded model, as the admin actions and ``/model`` name it."""

    model_name: str
    model_version: str
    created_at: str = Field(description="When the bundle was exported (ISO-8601, UTC).")
    loaded_at: datetime = Field(description="When this replica loaded and warmed it.")


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
    missing_rule: str = Field("zero", description="What marks a missing reading (zero, nan or value:<x>): "
                              "under zero a posted 0 counts as missing.")
    missing_policy: str
    scaling: str = Field("global", description="How readings are standardised inside the graph: "
                         "global (one mean/std) or per_sensor.")
    transform: str = Field("none", description="Transform before standardising: none or log1p.")
    missing_values: list[float] | None = Field(
        None, description="Per-sensor gap readings (per_sensor scaling under the nan rule; model "
        "order); None: every gap gets missing_value.")
    day_of_week: bool = Field(True, description="Whether the model's time features use the day "
                              "of week (a replay then shifts data by whole weeks, else days).")
    metrics: dict[str, Any]
    loaded_at: datetime = Field(description="When this replica loaded and warmed the model.")
    previous: ModelRef | None = Field(
        None, description="The model kept for POST /admin/rollback (None: nothing reloaded yet).")


class ReloadRequest(BaseModel):
    """Which bundle ``POST /admin/reload`` loads."""

    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", examples=["2026-12-03.1"],
        description="A version directory of HIMNET_MODELS_DIR; unset: the configured bundle "
        "directory (HIMNET_BUNDLE_DIR) as it is on disk now.")


class ReloadResult(BaseModel):
    outcome: Literal["loaded", "unchanged", "rolled_back"]
    active: ModelRef
    previous: ModelRef | None = None
    took_s: float = Field(description="Seconds to verify, load, warm and swap.")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
