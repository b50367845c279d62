"""The bundle format (model/bundle.py): what an export writes, and what a reader refuses.

Every refusal is a ``BundleError`` whose message names the offending file: that is what an
operator sees when the service will not start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from model.config import CONTRACTIONS
from model.bundle import (
    BUNDLE_FILES,
    BUNDLE_FORMAT,
    BundleError,
    Manifest,
    checksums,
    load_embeddings,
    read_manifest,
    sha256_file,
    verify_bundle,
    write_manifest,
)
from model.himnet import adaptive_graph
from model.missing import MISSING_VALUE


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the session's bundle, free to damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _edit_manifest_json(bundle: Path, **changes) -> Path:
    """Change manifest.json by hand (as an operator might), keeping its stale self-checksum."""
    path = bundle / "manifest.json"
    body = json.loads(path.read_text())
    body.update(changes)
    path.write_text(json.dumps(body, indent=2))
    return path


# --- what an export writes ---------------------------------------------------------------------
def test_bundle_holds_the_contract_files(tiny_bundle, tiny_checkpoint):
    assert sorted(p.name for p in tiny_bundle.iterdir()) == [
        "embeddings.npz", "intervals.npz", "manifest.json", "model.onnx", "model.ts", "weights.pt"]
    m = verify_bundle(tiny_bundle)
    assert m.format_version == BUNDLE_FORMAT == 2 and m.model_name == "himnet"
    assert set(m.files) - {"intervals.npz"} == {"model.onnx", "model.ts", "weights.pt",
                                                "embeddings.npz"} == set(BUNDLE_FILES)
    assert m.intervals is not None and m.intervals["levels"] == [0.5, 0.8, 0.9, 0.95]
    for name, digest in m.files.items():
        assert sha256_file(tiny_bundle / name) == digest
    c = tiny_checkpoint
    assert (m.num_nodes, m.in_steps, m.out_steps, m.st_embedding_dim) == (8, 12, 12, 5)
    assert m.sensor_ids == c.sensor_ids
    assert c.coords is not None and m.coords == [list(xy) for xy in c.coords]
    assert (m.scaler_mean, m.scaler_std) == (c.scaler_mean, c.scaler_std)
    assert (m.interval_minutes, m.steps_per_day, m.timezone) == (5, 288, c.timezone)
    assert m.missing_value == 0.0 == MISSING_VALUE and m.dataset == c.dataset
    assert m.metrics == json.loads(json.dumps(c.metrics))  # test metrics travel with the model
    assert m.metrics["test"]["model"]["all"]["mae"] > 0
    created = datetime.fromisoformat(m.created_at)
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    assert len(m.model_version) == 12 and int(m.model_version, 16) >= 0  # weights digest by default
    assert m.model_version == m.export["weights_sha256"][:12]
    assert m.export["contraction"] in CONTRACTIONS
    assert m.config["contraction"] == m.export["contraction"]
    assert set(m.export["contraction_latency_ms"]) == set(CONTRACTIONS)


def test_written_manifest_is_canonical_json_with_a_self_checksum(tiny_bundle):
    path = tiny_bundle / "manifest.json"
    body = json.loads(path.read_text())
    assert body["format_version"] == BUNDLE_FORMAT
    assert len(body["manifest_sha256"]) == 64
    assert list(body) == sorted(body)  # sorted keys: a stable, diffable file
    assert path.read_text().endswith("\n")
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # readable by the service's user
    assert read_manifest(tiny_bundle).to_dict() == {k: v for k, v in body.items() if k != "manifest_sha256"}


def test_checksums_are_the_files_sha256(tiny_bundle):
    from model.intervals import INTERVALS_FILE

    got = checksums(tiny_bundle, [*BUNDLE_FILES, INTERVALS_FILE])
    assert got == read_manifest(tiny_bundle).files
    assert set(got) == set(BUNDLE_FILES) | {INTERVALS_FILE}


def test_write_then_read_round_trips(bundle_copy):
    m = read_manifest(bundle_copy)
    changed = dataclasses.replace(m, model_version="2024.03-b", metrics={"note": "rewritten"})
    assert write_manifest(bundle_copy, changed) == bundle_copy / "manifest.json"
    assert read_manifest(bundle_copy) == changed
    assert not [p for p in bundle_copy.iterdir() if p.name.startswith(".manifest-")]  # no temp file left


def test_embeddings(tiny_bundle, tiny_checkpoint):
    emb = load_embeddings(tiny_bundle)
    assert set(emb) == {"node_embedding", "adjacency", "tod_embedding", "dow_embedding"}
    sd = tiny_checkpoint.state_dict
    np.testing.assert_array_equal(emb["node_embedding"], sd["node_embedding"].numpy())
    np.testing.assert_array_equal(emb["tod_embedding"], sd["tod_embedding.weight"].numpy())
    np.testing.assert_array_equal(emb["dow_embedding"], sd["dow_embedding.weight"].numpy())
    assert emb["adjacency"].shape == (8, 8)
    np.testing.assert_allclose(emb["adjacency"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb["adjacency"], adaptive_graph(sd["node_embedding"]).numpy(), rtol=1e-6)


# --- format version ------------------------------------------------------------------------------
def test_other_format_version_is_refused_naming_the_manifest(bundle_copy):
    _edit_manifest_json(bundle_copy, format_version=BUNDLE_FORMAT + 1)
    with pytest.raises(BundleError, match=rf"manifest\.json: bundle format {BUNDLE_FORMAT + 1}, "
                                          rf"this code reads format {BUNDLE_FORMAT}"):
        read_manifest(bundle_copy)


def test_writer_refuses_a_manifest_of_another_format(bundle_copy):
    m = dataclasses.replace(read_manifest(bundle_copy), format_version=BUNDLE_FORMAT + 1)
    with pytest.raises(BundleError, match=rf"bundle format {BUNDLE_FORMAT + 1}"):
        write_manifest(bundle_copy, m)


# --- checksums -----------------------------------------------------------------------------------
def test_flipped_byte_is_refused_naming_the_file(bundle_copy):
    path = bundle_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    verify_bundle(bundle_copy, ["weights.pt"])  # the other files still check out
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 \w+… does not match the manifest's"):
        verify_bundle(bundle_copy)


def test_hand_edited_manifest_is_refused(bundle_copy):
    _edit_manifest_json(bundle_copy, scaler_mean=read_manifest(bundle_copy).scaler_mean + 1.0)
    with pytest.raises(BundleError, match=r"manifest\.json: content does not match its manifest_sha256"):
        read_manifest(bundle_copy)


def test_manifest_without_self_checksum_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    body = json.loads(path.read_text())
    del body["manifest_sha256"]
    path.write_text(json.dumps(body))
    with pytest.raises(BundleError, match=r"manifest\.json: no manifest_sha256"):
        read_manifest(bundle_copy)


def test_missing_and_unlisted_files_are_refused_naming_them(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="nowhere: no such bundle directory"):
        read_manifest(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"empty/manifest\.json: missing \(.* is not a model bundle\)"):
        read_manifest(tmp_path / "empty")
    with pytest.raises(BundleError, match=r"extra\.bin: not listed in .*manifest\.json"):
        verify_bundle(bundle_copy, ["extra.bin"])
    os.unlink(bundle_copy / "model.ts")
    with pytest.raises(BundleError, match=r"model\.ts: missing from the bundle"):
        verify_bundle(bundle_copy)


def test_unreadable_manifest_and_embeddings_are_refused(bundle_copy):
    (bundle_copy / "embeddings.npz").write_bytes(b"not an npz")
    m = read_manifest(bundle_copy)  # a consistent manifest for the damaged file: the checksum passes
    write_manifest(bundle_copy, dataclasses.replace(m, files={**m.files, "embeddings.npz":
                                                              sha256_file(bundle_copy / "embeddings.npz")}))
    with pytest.raises(BundleError, match=r"embeddings\.npz: not a readable npz"):
        load_embeddings(bundle_copy)
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json: not readable JSON"):
        read_manifest(bundle_copy)


# --- consistency ---------------------------------------------------------------------------------
def test_missing_and_unknown_fields_are_refused(tiny_bundle):
    body = read_manifest(tiny_bundle).to_dict()
    with pytest.raises(BundleError, match=r"manifest\.json: missing fields \['scaler_std'\]"):
        Manifest.from_dict({k: v for k, v in body.items() if k != "scaler_std"})
    with pytest.raises(BundleError, match=r"manifest\.json: unknown fields \['colour'\]"):
        Manifest.from_dict({**body, "colour": "blue"})


@pytest.mark.parametrize(("change", "message"), [
    ({"num_nodes": 9}, "9 sensor ids|num_nodes = 9 disagrees with config.num_nodes = 8"),
    ({"sensor_ids": ["a"] * 8}, "sensor ids are not unique"),
    ({"scaler_std": 0.0}, "scaler_std must be positive"),
    ({"interval_minutes": -5.0}, "interval_minutes must be positive"),
    ({"coords": [[1.0, 2.0]]}, r"coords must be 8 \[lat, lon\] pairs"),
    ({"files": {"../model.onnx": "0" * 64}}, r"file entry '\.\./model\.onnx' is not a plain file name"),
    ({"files": {"model.onnx": "abc"}}, "checksum of model.onnx is not a sha256 hex digest"),
    ({"ensemble": [3]}, "ensemble must be an object, got list"),
    ({"ensemble": {"members": 1, "seeds": [0], "spread_output": "spread", "member_output": "member_forecasts"}},
     "ensemble.members must be an integer >= 2, got 1"),
    ({"ensemble": {"members": 2, "seeds": [0, 1], "spread_output": "std", "member_output": "member_forecasts"}},
     "ensemble outputs must be 'spread' and 'member_forecasts'"),
    ({"ensemble": {"members": 2, "seeds": [0], "spread_output": "spread", "member_output": "member_forecasts"}},
     r"ensemble.seeds must list one seed \(or null\) per member"),
])
def test_inconsistent_manifest_is_refused(tiny_bundle, change, message):
    m = dataclasses.replace(read_manifest(tiny_bundle), **change)
    with pytest.raises(BundleError, match=rf"^manifest\.json: ({message})"):
        m.check()
