"""Helpers of the deployment checks: repository paths, required tools, waiting (free ports:
``tests/ports.py``).

A tool these tests need (promtool, prometheus, redis-server, kubectl, hadolint, ...) is installed
by ``scripts/ensure-tools.sh`` and the dev extra. When one is missing the test FAILS under
``CI=true`` (a green CI must mean the checks ran) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.tools import VENV_BIN, in_ci, require_tool  # noqa: F401 - the deploy tests import them here

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = REPO / "docker-compose.yml"
K8S = REPO / "k8s"


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout_s`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported if it never succeeds
            last_error = exc
        if time.monotonic() >= deadline:
            reason = f" (last error: {last_error!r})" if last_error else ""
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}{reason}")
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)
