"""Service configuration, read from the environment (prefix ``HIMNET_``) by pydantic-settings.

Everything an operator may need to change lives here so that a container is configured by its
environment alone; ``REDIS_URL`` is also accepted without the prefix because that is the name
most platforms inject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MissingPolicy = Literal["missing_value", "locf"]


class Settings(BaseSettings):
    """All knobs of the forecast service; defaults are the README's local run."""

    model_config = SettingsConfigDict(env_prefix="HIMNET_", extra="ignore")

    # --- model -------------------------------------------------------------------------------
    bundle_dir: Path = Field(description="Directory of the exported model bundle to serve.")
    backend: Literal["onnx", "torchscript"] = "onnx"
    device: str = "cpu"
    threads: int = Field(2, ge=1, description="Intra-op threads of the runtime.")

    # --- buffer ------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("HIMNET_REDIS_URL", "REDIS_URL"),
        description="Redis for the shared reading buffer and forecast cache; unset = in-process.",
    )
    redis_prefix: str = Field("himnet", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    redis_timeout_s: float = Field(1.0, gt=0)
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
    max_in_flight: int = Field(16, ge=1, description="Forecast requests in flight per worker "
                               "(HTTP layer); more get 503 before their body is read.")
    workers: int = Field(1, ge=1, description="Worker processes (each loads the bundle); more "
                         "than one needs Redis (readings and caches shared).")
    retry_after_s: int = Field(1, ge=1)
    response_decimals: int | None = Field(
        4, ge=0, le=9, description="Round forecasts in responses; unset = full float32 precision."
    )

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
        if self.workers > 1 and not self.redis_url:
            raise ValueError("workers > 1 needs Redis (HIMNET_REDIS_URL): each worker would keep "
                             "its own in-memory reading buffer and cache, and they would diverge")
        return self

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
