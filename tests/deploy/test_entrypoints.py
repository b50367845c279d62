"""The images' entrypoint scripts, run natively: the service's bundle wait and its one-line
refusals, and the training image's `pipeline` (train, then export a bundle the service accepts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.bundle import verify_bundle
from tests.deploy.conftest import DOCKER, REPO, require_tool

SERVICE = DOCKER / "entrypoint-service.sh"
TRAIN = DOCKER / "entrypoint-train.sh"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIMNET_")}
    env.update(PYTHONPATH=str(REPO), HIMNET_PYTHON=sys.executable, **extra)
    return env


def test_service_entrypoint_waits_for_the_bundle_then_names_the_problem(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "current"
    started = time.monotonic()
    result = subprocess.run([str(SERVICE)], env=base_env(HIMNET_BUNDLE_DIR=str(missing),
                                                         HIMNET_BUNDLE_WAIT_S="2"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started >= 2
    assert f"waiting up to 2s for a bundle in {missing}" in result.stderr
    assert "service: cannot start" in result.stderr and str(missing) in result.stderr


def test_service_entrypoint_refuses_bad_settings(tmp_path: Path) -> None:
    result = subprocess.run([str(SERVICE)], env=base_env(HIMNET_BUNDLE_DIR=str(tmp_path),
                                                         HIMNET_BUNDLE_WAIT_S="soon"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "HIMNET_BUNDLE_WAIT_S" in result.stderr
    env = base_env()
    result = subprocess.run([str(SERVICE)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "HIMNET_BUNDLE_DIR" in result.stderr


def test_service_entrypoint_runs_a_given_command() -> None:
    result = subprocess.run([str(SERVICE), "echo", "one-off"], env=base_env(), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "one-off"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_train_entrypoint_pipeline_exports_a_servable_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "models" / "current"
    env = base_env(
        HIMNET_RUN_DIR=str(tmp_path / "runs" / "latest"),
        HIMNET_BUNDLE_OUT=str(bundle),
        HIMNET_TRAIN_DATA="synthetic",
        HIMNET_TRAIN_ARGS="--data-option num_sensors=5 --data-option days=3 --max-steps 2 --epochs 1 "
                          "--hidden 8 --batch-size 8 --threads 1",
        HIMNET_EXPORT_ARGS="--contraction generate --threads 1",
    )
    result = subprocess.run([str(TRAIN)], env=env, capture_output=True, text=True, timeout=220, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = verify_bundle(bundle)  # checksums, format: what the service checks at startup
    assert manifest.num_nodes == 5 and manifest.dataset.startswith("synthetic")
    assert (tmp_path / "runs" / "latest" / "checkpoint.pt").is_file()
    # a second run replaces the bundle in place (--force), as a retraining job does
    result = subprocess.run([str(TRAIN), "export", str(tmp_path / "runs" / "latest" / "checkpoint.pt"),
                             "--out", str(bundle), "--force", "--contraction", "generate"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    verify_bundle(bundle)
    _publish_a_version_to_a_running_service(tmp_path, bundle, env)


def _publish_a_version_to_a_running_service(tmp_path: Path, bundle: Path,
                                            env: dict[str, str]) -> None:
    """`publish VERSION` exports beside `current` and the real service swaps to it."""
    from service.settings import Settings
    from tests.service.conftest import serve

    key = tmp_path / "api_key"
    key.write_text("publish-key\n", encoding="utf-8")
    settings = Settings(bundle_dir=bundle, models_dir=bundle.parent, api_key_file=key)
    with serve(settings) as client:
        before = client.get("/model").json()["model_version"]
        publish = {**env, "HIMNET_MODELS_DIR": str(bundle.parent),
                   "HIMNET_SERVICE_URL": str(client.base_url), "HIMNET_API_KEY_FILE": str(key)}
        result = subprocess.run([str(TRAIN), "publish", "v2", "--contraction", "generate"],
                                env=publish, capture_output=True, text=True, timeout=180,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert verify_bundle(bundle.parent / "v2").model_version == "v2"
        info = client.get("/model").json()
        assert info["model_version"] == "v2" and info["previous"]["model_version"] == before
        again = subprocess.run([str(TRAIN), "publish", "v2"], env=publish, capture_output=True,
                               text=True, timeout=60, cwd=tmp_path)
        assert again.returncode != 0 and "exists" in again.stderr  # a version is never rewritten


def test_shellcheck_finds_nothing_in_the_deployment_scripts() -> None:
    shellcheck = require_tool("shellcheck")
    scripts = [SERVICE, TRAIN, REPO / "scripts" / "ensure-tools.sh"]
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
