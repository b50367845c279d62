"""A bundle exported before the manifest had a ``training`` block still loads and serves."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from model.bundle import _SELF_CHECKSUM, _canonical, read_manifest
from tests.service.conftest import AUTH, current_slot, serve, snapshot


def _without_training(tiny_bundle: Path, tmp_path: Path) -> Path:
    """The tiny bundle with its manifest as older exports wrote it: no ``training`` key at all."""
    old = Path(shutil.copytree(tiny_bundle, tmp_path / "old"))
    path = old / "manifest.json"
    body = json.loads(path.read_text())
    body.pop(_SELF_CHECKSUM)
    body.pop("training")
    body[_SELF_CHECKSUM] = hashlib.sha256(_canonical(body)).hexdigest()
    path.write_text(json.dumps(body, indent=2, sort_keys=True))
    return old


def test_a_bundle_without_training_block_loads(make_settings, tiny_bundle, tmp_path) -> None:
    old = _without_training(tiny_bundle, tmp_path)
    assert "training" not in json.loads((old / "manifest.json").read_text())
    manifest = read_manifest(old)
    assert manifest.training is None
    with serve(make_settings(bundle_dir=old)) as client:
        client.post("/readings", json={"readings": [snapshot(current_slot() - 1,
                                                             {manifest.sensor_ids[0]: 50.0})]}, headers=AUTH)
        reply = client.post("/forecast", json={})
    assert reply.status_code == 200 and manifest.sensor_ids[0] in reply.json()["forecasts"]
