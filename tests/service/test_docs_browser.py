"""/docs and /redoc render the API in a real headless browser (Chromium), with no internet: the
page's scripts come from the service (fastapi-offline), and Chromium is kept off the network
except for loopback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.service.conftest import serve
from tests.tools import require_tool

pytestmark = pytest.mark.slow


def chromium(binary: str, url: str, profile: Path, *extra: str) -> str:
    """Run headless Chromium on ``url`` until its scripts have rendered; the DOM it printed."""
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-extensions", "--disable-background-networking",
        f"--user-data-dir={profile}",
        # nothing but loopback: the page must not need a CDN (or anything else outside)
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
        "--virtual-time-budget=15000", "--window-size=1280,2400", *extra, url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("page,marker", [("/docs", "opblock-summary-path"),
                                         ("/redoc", "operation-type")])
def test_the_docs_page_renders_the_operations(make_settings, tmp_path: Path, page: str,
                                              marker: str) -> None:
    binary = require_tool("chromium")
    with serve(make_settings()) as client:
        dom = chromium(binary, f"{client.base_url}{page}", tmp_path / "profile", "--dump-dom")
        shots = os.environ.get("HIMNET_DOCS_SCREENSHOTS")  # a folder: also keep a picture
        if shots:
            picture = Path(shots) / f"{page.strip('/')}.png"
            chromium(binary, f"{client.base_url}{page}", tmp_path / "profile",
                     f"--screenshot={picture}")
            assert picture.stat().st_size > 10_000
    assert marker in dom, dom[-2000:]  # the UI built its operation list (not a blank page)
    for path in ("/forecast", "/readings", "/embeddings/{node}"):
        assert path in dom, path
    assert "Failed to load API definition" not in dom
