"""Serving latency of the exported model: eager PyTorch, TorchScript, ONNX Runtime, naive form.

One run, one process, N = 207 (METR-LA preset), 2 threads everywhere, batch 1 and 16. The
contenders run in blocks whose order rotates over three passes, so that drift in machine load
hits them alike; each figure is the median over all timed calls (the minimum is printed too: it
is the figure least disturbed by other processes on a shared box). A script, not a test:

    python benchmarks/export_latency.py [--rounds 30] [--rounds16 5] [--contraction measure]
    python benchmarks/export_latency.py --device cuda     # CUDA: eager/naive on the GPU, ORT's CUDA EP

On CUDA, eager and naive get their inputs already on the GPU; TorchScript and ONNX Runtime take
numpy arrays in and give numpy arrays out, as the service calls them, so their figures include
the host-device copies.

- eager:       ``model.HimNet`` in eval mode (its own caching), fed x / y_cov as training feeds it
- torchscript: ``model.ts`` of the bundle via ``service.runtime`` (called from the loading thread)
- onnx:        ``model.onnx`` of the bundle via ``service.runtime`` (ONNX Runtime, CPU provider)
- naive:       ``studies/naive_himnet.py``: parameters regenerated at every step, Einsum

``--histograms`` also prints the ONNX op histogram of the shipped graph next to two "before"
graphs (the naive form exported as is, and the project model exported the plain way: EVAL mode,
so graph A and the spatial weights are recomputed inside the graph) and their ORT latency at
batch 1. Weights: the official fixture's when ``../shared/fixtures`` is present, else random.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import HimNet, get_preset  # noqa: E402
from service.runtime import load_runtime  # noqa: E402
from studies.naive_himnet import NaiveHimNet  # noqa: E402
from training.checkpoint import Checkpoint  # noqa: E402
from training.export import export_bundle  # noqa: E402
from training.parity import ort_session, synthetic_parity_data  # noqa: E402

FIXTURE = REPO.parent / "shared" / "fixtures" / "himnet_reference_metr_la.npz"
THREADS = 2


def metr_la_checkpoint() -> tuple[Checkpoint, str]:
    cfg = get_preset("metr-la").model
    if FIXTURE.exists():
        d = np.load(FIXTURE)
        state = {k[len("param/"):]: torch.from_numpy(d[k]) for k in d.files if k.startswith("param/")}
        source = "official fixture weights"
    else:
        torch.manual_seed(0)
        state = HimNet(cfg).state_dict()
        source = "random weights (fixture absent)"
    ckpt = Checkpoint(config=cfg, state_dict=state, scaler_mean=54.4, scaler_std=19.5,
                      sensor_ids=[f"s{i:03d}" for i in range(cfg.num_nodes)], interval_minutes=5,
                      dataset="metr-la (benchmark)", timezone="America/Los_Angeles")
    return ckpt, source


def model_inputs(ckpt: Checkpoint, r: np.ndarray, ti: np.ndarray, tt: np.ndarray, device: str = "cpu"):
    b, t, n = r.shape
    x = np.empty((b, t, n, 3), np.float32)
    x[..., 0] = (r - ckpt.scaler_mean) / ckpt.scaler_std
    x[..., 1:] = ti[:, :, None]
    y = np.ascontiguousarray(np.broadcast_to(tt[:, :, None], (b, tt.shape[1], n, 2)))
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def interleaved_blocks(contenders: dict, rounds: int, passes: int = 3, warmup: int = 2) -> dict[str, list[float]]:
    """ms per call for each contender: ``passes`` passes, each running every contender for a block
    of rounds/passes calls, the order rotating from pass to pass.

    Blocks, not call-by-call alternation: ONNX Runtime's and OpenMP's worker threads spin for a
    while after each call, and an alternating schedule measures one runtime's spinning threads
    slowing the next (eager at batch 1 came out 40x slower that way on 2 cores). Rotating blocks
    still spread slow drift in machine load over all contenders.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    per_block = max(1, -(-rounds // passes))
    for p in range(passes):
        for name in names[p % len(names):] + names[:p % len(names)]:
            contenders[name]()  # one untimed call: let the previous runtime's threads go idle
            for _ in range(per_block):
                t0 = time.perf_counter()
                contenders[name]()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def op_histogram(path: Path) -> collections.Counter:
    import onnx

    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def before_graphs(ckpt: Checkpoint, workdir: Path, data) -> dict[str, Path]:
    """The 'before' graphs: naive form, and the model exported without any serving care."""
    cfg = ckpt.config
    x, y = model_inputs(ckpt, *data.take(2))
    out = {}
    naive = NaiveHimNet(cfg)
    naive.load_state_dict(ckpt.state_dict)
    plain = ckpt.build_model()
    for name, module in (("naive form", naive.eval()), ("plain export", plain)):
        path = workdir / f"{name.replace(' ', '_')}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x, y), str(path), dynamo=False, opset_version=17,
                              input_names=["x", "y_cov"], output_names=["out"],
                              dynamic_axes={"x": {0: "b"}, "y_cov": {0: "b"}, "out": {0: "b"}})
        out[name] = path
    return out


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="rounds at batch 1 (default 30)")
    ap.add_argument("--rounds16", type=int, default=6, help="rounds at batch 16 (default 6)")
    ap.add_argument("--contraction", default="measure", choices=("measure", "generate", "pool"))
    ap.add_argument("--histograms", action="store_true", help="also export and time the 'before' graphs")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    return ap.parse_args()


def _load_backends(ckpt: Checkpoint, bundle: Path, device: str) -> tuple[Any, Any, torch.nn.Module, torch.nn.Module]:
    """Phase 2: (ONNX runtime, TorchScript runtime or None, eager HimNet, naive HimNet) on ``device``."""
    onnx_rt = load_runtime(bundle, backend="onnx", device=device, threads=THREADS)
    try:
        ts_rt = load_runtime(bundle, backend="torchscript", device=device, threads=THREADS)
    except Exception as exc:  # noqa: BLE001 - report it and time the others
        ts_rt = None
        print(f"torchscript cannot run on {device}: {exc}", flush=True)
    eager = ckpt.build_model().to(device)
    naive = NaiveHimNet(ckpt.config)
    naive.load_state_dict(ckpt.state_dict)
    naive.to(device).eval()
    return onnx_rt, ts_rt, eager, naive


def _time_backends(ckpt: Checkpoint, data: Any, backends: tuple[Any, Any, torch.nn.Module, torch.nn.Module],
                   device: str, rounds_by_batch: tuple[tuple[int, int], ...]
                   ) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]:
    """Phase 3: (median, fastest) ms per batch size and backend, interleaved rounds."""
    onnx_rt, ts_rt, eager, naive = backends
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    results: dict[int, dict[str, float]] = {}
    fastest: dict[int, dict[str, float]] = {}  # min over rounds: least disturbed by other load
    for batch, rounds in rounds_by_batch:
        raw = data.take(batch)
        x, y = model_inputs(ckpt, *raw, device=device)

        def run_model(m: torch.nn.Module, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            with torch.no_grad():
                m(x, y)
            sync()

        contenders = {
            "eager": lambda: run_model(eager),
            "torchscript": lambda raw=raw: ts_rt.predict(*raw),
            "onnx": lambda raw=raw: onnx_rt.predict(*raw),
            "naive": lambda: run_model(naive),
        }
        if ts_rt is None:
            del contenders["torchscript"]
        times = interleaved_blocks(contenders, rounds)
        results[batch] = {k: statistics.median(v) for k, v in times.items()}
        fastest[batch] = {k: min(v) for k, v in times.items()}
        print(f"batch {batch}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in results[batch].items()),
              flush=True)
    return results, fastest


def _before_histograms(ckpt: Checkpoint, tmp: Path, data: Any) -> dict[str, tuple[collections.Counter, float]]:
    """Phase 4 (--histograms): op histogram and batch-1 ORT latency of each 'before' graph."""
    before = {}
    for name, path in before_graphs(ckpt, tmp, data).items():
        sess = ort_session(path, THREADS)
        x, y = model_inputs(ckpt, *data.take(1))
        feed = {"x": x.numpy(), "y_cov": y.numpy()}
        ms = statistics.median(interleaved_blocks({name: lambda s=sess, f=feed: s.run(None, f)}, 10)[name])
        before[name] = (op_histogram(path), ms)
    return before


def _print_summary(args: argparse.Namespace, ckpt: Checkpoint, source: str, manifest: Any, export_s: float,
                   backends: tuple[Any, ...], loads: tuple[tuple[float, ...], tuple[float, ...]],
                   results: dict[int, dict[str, float]], fastest: dict[int, dict[str, float]]) -> None:
    """Phase 5: the setting, the latency table and whether the targets are met."""
    device, (onnx_rt, ts_rt), (load_before, load_after) = args.device, backends[:2], loads
    e, o, n = (results[1][k] for k in ("eager", "onnx", "naive"))
    print()
    print(f"HimNet METR-LA preset, N={ckpt.config.num_nodes}, {source}; {THREADS} threads; "
          f"torch {torch.__version__}, onnxruntime {manifest.export['onnxruntime_version']}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    gpu = f" ({torch.cuda.get_device_name(torch.device(device))})" if device.startswith("cuda") else ""
    print(f"device {device}{gpu}: onnx runs on {onnx_rt.provider}, "
          f"torchscript on {ts_rt.provider if ts_rt else 'nothing (failed to load)'}")
    print(f"load average before {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}")
    print(f"export: {export_s:.1f} s, contraction {manifest.export['contraction']} "
          f"(ORT ms at batch 1 / 16: {manifest.export['contraction_latency_ms'] or 'not measured'}), "
          f"parity {manifest.parity}")
    print(f"medians over {args.rounds} calls (batch 1) and {args.rounds16} calls (batch 16) per backend, ms")
    print(f"{'backend':<14}{'batch 1':>10}{'batch 16':>10}{'vs naive b1':>13}"
          f"{'min b1':>10}{'min b16':>10}")
    for k in results[1]:
        print(f"{k:<14}{results[1][k]:>10.1f}{results[16][k]:>10.1f}{n / results[1][k]:>12.1f}x"
              f"{fastest[1][k]:>10.1f}{fastest[16][k]:>10.1f}")
    print(f"target ORT <= eager at batch 1: {'met' if o <= e else 'NOT met'} ({o:.1f} vs {e:.1f} ms); "
          f"at batch 16: {'met' if results[16]['onnx'] <= results[16]['eager'] else 'NOT met'}")
    print(f"target ORT >= 3x faster than naive at batch 1: {'met' if n / o >= 3 else 'NOT met'} ({n / o:.1f}x)")
    if "torchscript" in results[1]:
        print(f"torchscript at batch 1: {results[1]['torchscript']:.1f} ms (called from the thread that loaded it)")


def main() -> None:
    args = _parse_args()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    ckpt, source = metr_la_checkpoint()  # phase 1: the model
    data = synthetic_parity_data(ckpt, batch=16)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        t0 = time.perf_counter()
        manifest = export_bundle(ckpt, bundle, contraction=args.contraction, threads=THREADS)
        export_s = time.perf_counter() - t0
        backends = _load_backends(ckpt, bundle, args.device)
        results, fastest = _time_backends(ckpt, data, backends, args.device,
                                          ((1, args.rounds), (16, args.rounds16)))
        shipped = op_histogram(bundle / "model.onnx")
        before = _before_histograms(ckpt, Path(tmp), data) if args.histograms else {}
    _print_summary(args, ckpt, source, manifest, export_s, backends, (load_before, os.getloadavg()),
                   results, fastest)
    print("\nONNX op histogram, shipped graph: " + ", ".join(f"{k} {v}" for k, v in shipped.most_common()))
    for name, (hist, ms) in before.items():
        print(f"ONNX op histogram, {name} ({ms:.1f} ms at batch 1 in ORT): "
              + ", ".join(f"{k} {v}" for k, v in hist.most_common()))


if __name__ == "__main__":
    main()
