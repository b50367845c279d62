"""``python -m service``: check the configuration and bundle, then run uvicorn.

Configuration errors end the process with exit status 2 and a one-line reason instead of a
traceback, so a crash-looping container says what to fix.

``HIMNET_WORKERS`` > 1 runs that many uvicorn worker processes on the one port; each loads the
bundle itself (:func:`worker_app`), readings and caches are shared through Redis (required:
the settings refuse several workers without it), and the Prometheus metrics of every worker
are merged through files in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary directory unless
set; emptied at start so a previous run's values do not count).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI

import uvicorn
from pydantic import ValidationError

from model.bundle import BundleError, verify_bundle
from service.app import create_app
from service.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()  # type: ignore[call-arg]  # filled from the environment
    except ValidationError as exc:
        problems = "; ".join(
            f"HIMNET_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors())
        print(f"service: invalid configuration: {problems}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Entry point."""
    settings = _settings()
    try:
        manifest = verify_bundle(settings.bundle_dir)  # the one verification: handed to the app
        settings.resolved_api_key()
    except (BundleError, RuntimeError) as exc:
        print(f"service: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _configure_logging(settings)
    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level,
                   access_log=False, server_header=False)
    if settings.workers == 1:
        uvicorn.run(create_app(settings, manifest), workers=1, **options)  # type: ignore[arg-type]
        return
    prepare_multiprocess_metrics()
    uvicorn.run("service.__main__:worker_app", factory=True, workers=settings.workers,
                **options)  # type: ignore[arg-type]


def worker_app() -> FastAPI:
    """One worker's app (uvicorn calls this in each worker process): settings from the same
    environment; the bundle is verified and loaded by the worker's own startup."""
    settings = _settings()
    _configure_logging(settings)
    return create_app(settings)


def prepare_multiprocess_metrics() -> Path:
    """The directory where every worker writes its metrics, emptied of an earlier run's files."""
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(named) if named else Path(tempfile.mkdtemp(prefix="himnet-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # inherited by the workers
    return directory


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()
