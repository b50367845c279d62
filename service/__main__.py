"""``python -m service``: check the configuration and bundle, then run uvicorn (one worker).

Configuration errors end the process with exit status 2 and a one-line reason instead of a
traceback, so a crash-looping container says what to fix.
"""

from __future__ import annotations

import logging
import sys

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
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings, manifest), host=settings.host, port=settings.port, workers=1,
                log_level=settings.log_level, access_log=False, server_header=False)


if __name__ == "__main__":
    main()
