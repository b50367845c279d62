"""The bundle runtime (service/runtime.py) on a real exported bundle, real ONNX Runtime."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model.bundle import BundleError, read_manifest, write_manifest
from service.runtime import ProviderError, load_runtime
from tests.tiny_model import model_inputs, tiny_eval_windows

REPO = Path(__file__).resolve().parents[2]
HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def eager(checkpoint, readings, input_time, target_time):
    """The trained model itself, fed the way training feeds it, in raw units."""
    model = checkpoint.build_model()
    x, y_cov = model_inputs(readings, input_time, target_time, checkpoint.scaler_mean, checkpoint.scaler_std)
    with torch.no_grad():
        forecast = model(x, y_cov)[..., 0] * checkpoint.scaler_std + checkpoint.scaler_mean
        st = model.st_embedding(model.encode(x))
    return forecast.numpy(), st.numpy()


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the session's bundle, for tests that damage it."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
@pytest.mark.parametrize("batch", [1, 7])
def test_round_trip_matches_eager(tiny_bundle, tiny_checkpoint, backend, batch):
    runtime = load_runtime(tiny_bundle, backend=backend, threads=2)
    assert runtime.backend == backend
    assert runtime.provider == ("CPUExecutionProvider" if backend == "onnx" else "torch:cpu")
    readings, input_time, target_time = tiny_eval_windows(batch)
    forecast, st = runtime.predict(readings, input_time, target_time)
    want_forecast, want_st = eager(tiny_checkpoint, readings, input_time, target_time)
    assert forecast.shape == (batch, 12, 8) and forecast.dtype == np.float32
    assert st.shape == (batch, 8, 5) and st.dtype == np.float32
    np.testing.assert_allclose(forecast, want_forecast, atol=1e-4, rtol=0)
    np.testing.assert_allclose(st, want_st, atol=1e-4, rtol=0)
    # A forecast in raw units (mph here), not z-scores.
    assert 20 < float(forecast.mean()) < 90


def test_missing_readings_use_the_manifest_convention(tiny_bundle, tiny_checkpoint):
    runtime = load_runtime(tiny_bundle)
    assert runtime.manifest.missing_value == 0.0
    readings, input_time, target_time = tiny_eval_windows(2)
    readings[:, -3:, :2] = runtime.manifest.missing_value
    forecast, _ = runtime.predict(readings, input_time, target_time)
    np.testing.assert_allclose(forecast, eager(tiny_checkpoint, readings, input_time, target_time)[0],
                               atol=1e-4, rtol=0)


def test_onnx_backend_never_imports_torch(tiny_bundle):
    code = (
        "import sys, numpy as np\n"
        "from service.runtime import load_runtime\n"
        f"rt = load_runtime({str(tiny_bundle)!r})\n"
        "f, e = rt.predict(*rt.example_inputs(3))\n"
        "assert f.shape == (3, 12, 8) and e.shape == (3, 8, 5)\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_flipped_byte_in_model_onnx_is_refused(bundle_copy):
    path = bundle_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx.*sha256"):
        load_runtime(bundle_copy)


def test_replaced_embeddings_are_refused_by_both_backends(bundle_copy):
    np.savez(bundle_copy / "embeddings.npz", node_embedding=np.zeros((8, 4), np.float32))
    for backend in ("onnx", "torchscript"):
        with pytest.raises(BundleError, match=r"embeddings\.npz"):
            load_runtime(bundle_copy, backend=backend)


def test_hand_edited_manifest_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    body = json.loads(path.read_text())
    body["scaler_mean"] += 1.0  # would silently shift every forecast
    path.write_text(json.dumps(body, indent=2))
    with pytest.raises(BundleError, match=r"manifest\.json.*(edited|damaged)"):
        load_runtime(bundle_copy)


def test_wrong_format_version_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    body = json.loads(path.read_text())
    body["format_version"] = 3
    path.write_text(json.dumps(body))
    with pytest.raises(BundleError, match=r"manifest\.json: bundle format 3, this code reads format 2"):
        load_runtime(bundle_copy)


def test_missing_bundle_and_missing_files_are_refused(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_runtime(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_runtime(empty)
    (bundle_copy / "model.ts").unlink()
    with pytest.raises(BundleError, match=r"model\.ts: missing"):
        load_runtime(bundle_copy, backend="torchscript")


def test_graph_that_does_not_fit_the_manifest_is_refused(bundle_copy):
    """A consistent, correctly checksummed manifest for 9 sensors next to an 8-sensor graph."""
    m = read_manifest(bundle_copy)
    ids = m.sensor_ids + ["extra"]
    coords = m.coords + [[34.5, -118.0]]
    config = {**m.config, "num_nodes": 9}
    write_manifest(bundle_copy, m.__class__(**{**m.to_dict(), "num_nodes": 9, "sensor_ids": ids,
                                               "coords": coords, "config": config}))
    with pytest.raises(BundleError, match=r"model\.onnx: input readings has shape"):
        load_runtime(bundle_copy)
    with pytest.raises(BundleError, match=r"model\.ts: does not run on inputs shaped by the manifest"):
        load_runtime(bundle_copy, backend="torchscript")


@pytest.mark.parametrize("case, message", [
    ("list", "readings must be a numpy array"),
    ("int", "readings must be a float array"),
    ("nodes", r"readings has shape \(2, 12, 7\), expected \(2, 12, 8\)"),
    ("batch", r"target_time has shape \(1, 12, 2\), expected \(2, 12, 2\)"),
    ("steps", r"input_time has shape \(2, 11, 2\)"),
    ("nan", "NaN or infinite.*missing_value"),
    ("tod", r"time of day\) must be a fraction"),
    ("dow", r"day of week\) must be a whole number 0..6"),
    ("empty", "at least one window"),
])
def test_predict_rejects_bad_inputs(tiny_bundle, case, message):
    runtime = load_runtime(tiny_bundle, warmup=False)
    r, ti, tt = tiny_eval_windows(2)
    if case == "list":
        r = r.tolist()
    elif case == "int":
        r = r.astype(np.int64)
    elif case == "nodes":
        r = r[:, :, :7]
    elif case == "batch":
        tt = tt[:1]
    elif case == "steps":
        ti = ti[:, :11]
    elif case == "nan":
        r[0, 3, 1] = np.nan
    elif case == "tod":
        ti[0, 0, 0] = 1.0
    elif case == "dow":
        tt[1, 4, 1] = 7
    elif case == "empty":
        r, ti, tt = r[:0], ti[:0], tt[:0]
    with pytest.raises(ValueError, match=message):
        runtime.predict(r, ti, tt)


def test_float64_inputs_are_accepted(tiny_bundle):
    runtime = load_runtime(tiny_bundle, warmup=False)
    r, ti, tt = tiny_eval_windows(1)
    f64 = runtime.predict(r.astype(np.float64), ti.astype(np.float64), tt.astype(np.float64))
    f32 = runtime.predict(r, ti, tt)
    np.testing.assert_array_equal(f64[0], f32[0])


def test_bad_arguments(tiny_bundle):
    with pytest.raises(ValueError, match="backend"):
        load_runtime(tiny_bundle, backend="tensorrt")
    with pytest.raises(ValueError, match="device"):
        load_runtime(tiny_bundle, device="gpu")


@pytest.mark.skipif(HAS_ORT_CUDA, reason="this onnxruntime has CUDA: the no-fallback path is not reachable")
def test_cuda_asked_without_cuda_is_an_error_unless_fallback_allowed(tiny_bundle, caplog):
    with pytest.raises(ProviderError, match="allow_fallback"):
        load_runtime(tiny_bundle, device="cuda")
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        runtime = load_runtime(tiny_bundle, device="cuda", allow_fallback=True)
    assert runtime.provider == "CPUExecutionProvider"
    assert any("running on CPU" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a GPU: the no-fallback path is not reachable")
def test_torchscript_cuda_without_gpu_is_an_error(tiny_bundle):
    with pytest.raises(ProviderError, match="no CUDA device"):
        load_runtime(tiny_bundle, backend="torchscript", device="cuda")


@pytest.mark.skipif(not HAS_ORT_CUDA, reason="needs onnxruntime-gpu with a working CUDA device (none here)")
def test_onnx_on_cuda(tiny_bundle, tiny_checkpoint):
    runtime = load_runtime(tiny_bundle, device="cuda")
    assert runtime.provider == "CUDAExecutionProvider"
    r, ti, tt = tiny_eval_windows(4)
    np.testing.assert_allclose(runtime.predict(r, ti, tt)[0], eager(tiny_checkpoint, r, ti, tt)[0], atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch (none here)")
def test_torchscript_on_cuda(tiny_bundle, tiny_checkpoint):
    runtime = load_runtime(tiny_bundle, backend="torchscript", device="cuda")
    assert runtime.provider == "torch:cuda:0"
    r, ti, tt = tiny_eval_windows(4)
    np.testing.assert_allclose(runtime.predict(r, ti, tt)[0], eager(tiny_checkpoint, r, ti, tt)[0], atol=1e-4)


def test_torchscript_warns_when_called_from_another_thread(tiny_bundle, caplog):
    runtime = load_runtime(tiny_bundle, backend="torchscript")
    r, ti, tt = tiny_eval_windows(1)
    results = []
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        runtime.predict(r, ti, tt)
        assert not caplog.records
        worker = threading.Thread(target=lambda: results.append(runtime.predict(r, ti, tt)))
        worker.start()
        worker.join()
    assert results and results[0][0].shape == (1, 12, 8)
    assert any("dedicated thread" in rec.getMessage() for rec in caplog.records)
