"""System tools the tests need (chromium, promtool, redis-server, ...): found, or fail in CI.

``scripts/ensure-tools.sh`` installs them. A missing tool FAILS the test under ``CI=true`` (a
green CI must mean the check ran) and skips it, saying why, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Absolute path of ``name`` (PATH or this interpreter's bin/), else fail in CI / skip."""
    found = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if found:
        return found
    message = f"{name} is not installed (scripts/ensure-tools.sh installs it)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
