"""Service configuration, read from the environment (prefix ``HIMNET_``) by pydantic-settings.

Everything an operator may need to change lives here so that a container is configured by its
environment alone; ``REDIS_URL`` is also accepted without the prefix because that is the name
most platforms inject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MissingPolicy = Literal["missing_value", "locf"]

# The smallest coverage of the newest slot at which forecasting from it (the rest imputed by the
# policy) beat waiting for the previous complete slot, on LOS-LOOP (docs/performance.md).
MEASURED_MIN_SLOT_COVERAGE: dict[str, float] = {"missing_value": 0.99, "locf": 0.1}


class Settings(BaseSettings):
    """All knobs of the forecast service; defaults are the README's local run."""

    model_config = SettingsConfigDict(env_prefix="HIMNET_", extra="ignore")

    # --- model -------------------------------------------------------------------------------
    bundle_dir: Path = Field(description="Directory of the exported model bundle to serve.")
    models_dir: Path | None = Field(
        None, description="Directory of versioned bundles (one subdirectory per version) that "
        "POST /admin/reload may name; unset: reload re-reads bundle_dir only.")
    watch_interval_s: float | None = Field(
        None, gt=0, description="Look at models_dir every N seconds and serve the newest version "
        "when a new one appears (service/watcher.py); unset: off.")
    backend: Literal["onnx", "torchscript"] = "onnx"
    device: str = "cpu"
    threads: int = Field(2, ge=1, description="Intra-op threads of the runtime.")

    # --- buffer ------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("HIMNET_REDIS_URL", "REDIS_URL"),
        description="Redis for the shared reading buffer and forecast cache; unset = in-process.",
    )
    redis_sentinels: str | None = Field(
        None, description="Redis Sentinel instead of a URL: comma-separated host:port list.")
    redis_sentinel_master: str | None = Field(
        None, min_length=1, description="The master name the sentinels monitor.")
    redis_password_file: Path | None = Field(
        None, description="File holding the Redis password (data nodes and sentinels alike).")
    redis_prefix: str = Field("himnet", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    redis_timeout_s: float = Field(1.0, gt=0)
    redis_min_replicas_ack: int = Field(
        0, ge=0, description="After each write, WAIT for this many replicas; fewer = 503.")
    redis_replica_ack_timeout_ms: int = Field(
        200, ge=1, description="How long a write waits for the replicas' acknowledgement.")
    retention_minutes: float = Field(120.0, gt=0, description="How far back readings are kept.")
    clock_skew_s: float = Field(60.0, ge=0, description="Tolerated lead of reading timestamps.")
    value_min: float = Field(0.0, description="Smallest plausible reading (raw units).")
    value_max: float = Field(10_000.0, description="Largest plausible reading (raw units).")
    max_batch_timestamps: int = Field(2_048, ge=1)

    # --- forecasting -------------------------------------------------------------------------
    missing_policy: MissingPolicy = Field(
        "missing_value",
        description="missing_value: fill gaps with the manifest's missing value (the training "
        "convention, 0); locf: last observation in the window carried forward, "
        "leading gaps filled with the missing value.",
    )
    min_slot_coverage: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Without as_of the window ends at the newest slot where at least this share "
        "of the sensors reported (a ragged newest slot waits); 0 = the newest slot with any "
        "reading. Unset: the value measured on LOS-LOOP for the missing-data policy "
        "(MEASURED_MIN_SLOT_COVERAGE; docs/performance.md, benchmarks/ragged_slot.py).",
    )
    coverage_lookback_slots: int = Field(
        2, ge=0, le=12,
        description="How many slots before the newest one the default window end may step back "
        "to find that coverage; when none has it, the window ends at the best-covered of them.",
    )
    cache_entries: int = Field(4_096, ge=0, description="In-process cache size (entries).")
    inference_queue: int = Field(8, ge=1, description="Forecasts running or waiting; more → 503.")
    # --- serving under pressure (docs/performance.md says how the defaults were measured) ----
    max_batch: int = Field(4, ge=1, description="Most windows in one model run (micro-batching).")
    batch_wait_ms: float = Field(
        0.0, ge=0, description="How long an idle engine holds a forecast for company; 0 = run at "
        "once, batch only what queued while the model was busy.")
    start_deadline_ms: float = Field(
        40.0, ge=0, description="A forecast that cannot start its model run this soon gets 503 "
        "at once; 0 = no deadline (wait as long as the queue bound allows).")
    inference_nice: int = Field(
        0, ge=0, le=19, description="Lower the inference thread's CPU priority by this much "
        "(Linux nice; ONNX Runtime's threads inherit it), so that on a saturated machine the "
        "event loop (parsing, shedding, rendering) runs first; 0 = same priority.")
    gc_freeze: bool = Field(
        True, description="After startup, exempt every object loaded so far from Python's cyclic "
        "garbage collector (gc.freeze): a full collection then walks only what requests create, "
        "not the ~90,000 startup objects (a 24 ms pause of the event loop each time).")
    max_in_flight: int = Field(16, ge=1, description="Forecast requests in flight per worker "
                               "(HTTP layer); more get 503 before their body is read.")
    workers: int = Field(1, ge=1, description="Worker processes (each loads the bundle); more "
                         "than one needs Redis (readings and caches shared).")
    retry_after_s: int = Field(1, ge=1)
    response_decimals: int | None = Field(
        4, ge=0, le=9, description="Round forecasts in responses; unset = full float32 precision."
    )

    # --- live accuracy and replay (service/accuracy.py, service/refclock.py) ----------------
    live_accuracy: bool = Field(True, description="Score served forecasts when their targets "
                                "arrive (GET /accuracy, himnet_live_* metrics).")
    accuracy_grace_slots: int = Field(
        2, ge=0, le=288, description="A target slot is scored once, when a reading this many "
        "slots newer arrives; later readings for it are not scored.")
    accuracy_retention_minutes: float = Field(
        1440.0, gt=0, le=20160, description="How far back scored slots are kept (GET /accuracy).")
    accuracy_alert_factor: float = Field(
        1.5, gt=0, description="The drift alert fires when live MAE at the longest horizon "
        "exceeds this many times the test-split MAE (exported as a threshold series).")
    replay_mode: bool = Field(
        False, description="Judge retention and accuracy windows against the newest reading "
        "instead of the wall clock (for replays of past days).")

    # --- embeddings --------------------------------------------------------------------------
    clusters: int = Field(8, ge=1)
    cluster_seed: int = 0
    neighbours: int = Field(10, ge=1)

    # --- security ----------------------------------------------------------------------------
    api_key: SecretStr | None = None
    api_key_file: Path | None = Field(None, description="File holding the API key (a secret).")
    protect_reads: bool = Field(False, description="Require the API key on read endpoints too.")
    auth_disabled: bool = Field(False, description="Accept writes without a key (local use).")
    max_body_bytes: int = Field(1_048_576, ge=1_024)

    # --- server ------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.value_min >= self.value_max:
            raise ValueError("value_min must be smaller than value_max")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set api_key or api_key_file, not both")
        self._check_redis()
        if self.workers > 1 and not (self.redis_url or self.redis_sentinels):
            raise ValueError("workers > 1 needs Redis (HIMNET_REDIS_URL or HIMNET_REDIS_SENTINELS):"
                             " each worker would keep its own in-memory reading buffer and cache, "
                             "and they would diverge")
        if self.watch_interval_s is not None and self.models_dir is None:
            raise ValueError("watch_interval_s needs models_dir (the directory to watch)")
        return self

    def slot_coverage(self) -> float:
        """The coverage the default window end needs: as set, or measured for the policy."""
        if self.min_slot_coverage is not None:
            return self.min_slot_coverage
        return MEASURED_MIN_SLOT_COVERAGE[self.missing_policy]

    def _check_redis(self) -> None:
        """One way to find Redis, one place for its password, a WAIT that can succeed."""
        if self.redis_url and self.redis_sentinels:
            raise ValueError("set redis_url or redis_sentinels, not both")
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("redis_sentinels needs redis_sentinel_master (the master name)")
        if self.redis_url and self.redis_password_file and urlsplit(self.redis_url).password:
            raise ValueError("the redis_url carries a password: set it there or in "
                             "redis_password_file, not both")
        if self.redis_min_replicas_ack and not (self.redis_url or self.redis_sentinels):
            raise ValueError("redis_min_replicas_ack needs Redis (redis_url or redis_sentinels)")
        if self.redis_min_replicas_ack and \
                self.redis_replica_ack_timeout_ms >= self.redis_timeout_s * 1000:
            raise ValueError("redis_replica_ack_timeout_ms must be shorter than redis_timeout_s, "
                             "or the socket gives up before WAIT answers")

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_list(cls, value: str | None) -> str | None:
        """``host:port,host:port`` with valid ports (normalised: no blanks)."""
        if value is None or not value.strip():
            return None
        hosts = [part.strip() for part in value.split(",") if part.strip()]
        for part in hosts:
            host, _, port = part.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{part!r} is not host:port")
        return ",".join(hosts)

    @field_validator("redis_password_file")
    @classmethod
    def _readable_password(cls, path: Path | None) -> Path | None:
        """Fail at startup, naming the file, when the password cannot be read."""
        if path is not None:
            try:
                _read_secret(path, "redis_password_file")
            except RuntimeError as exc:
                raise ValueError(str(exc)) from None
        return path

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs; empty when Sentinel is not used."""
        if not self.redis_sentinels:
            return []
        pairs = [part.rpartition(":") for part in self.redis_sentinels.split(",")]
        return [(host, int(port)) for host, _, port in pairs]

    def resolved_redis_password(self) -> str | None:
        """The Redis password from its secret file (at startup), or None when none is set."""
        if self.redis_password_file is None:
            return None
        return _read_secret(self.redis_password_file, "redis_password_file")

    def resolved_api_key(self) -> str | None:
        """The configured key, read from the secret file when one is named (at startup)."""
        if self.api_key is not None:
            key = self.api_key.get_secret_value().strip()
            return key or None
        if self.api_key_file is not None:
            try:
                key = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise RuntimeError(f"cannot read api_key_file {self.api_key_file}: {exc}") from exc
            if not key:
                raise RuntimeError(f"api_key_file {self.api_key_file} is empty")
            return key
        return None


def _read_secret(path: Path, setting: str) -> str:
    """The first line of a secret file (as the Redis start scripts read it), or RuntimeError
    naming the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeError(f"cannot read {setting} {path}: {exc}") from exc
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise RuntimeError(f"{setting} {path} is empty")
    return secret
