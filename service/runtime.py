"""Run a model bundle: ONNX Runtime (default, no torch) or TorchScript (optional).

``load_runtime(bundle_dir)`` verifies the bundle (format version, sha256 of every file, graph
inputs/outputs against the manifest) and returns a :class:`Runtime` whose ``predict`` takes
numpy arrays in raw units and returns numpy arrays in raw units (shapes in ``model/bundle.py``).

torch is imported only by the TorchScript backend, inside :class:`TorchScriptRuntime`.

Threading: a ``Runtime`` is not meant to be called from many threads at once. For TorchScript it
matters for speed too: a TorchScript model called from a thread other than the one that warmed
it up ran 2× slower on our 2-core boxes (≈ 47 vs 23 ms, ``shared/docs/tooling-notes.md``), and
FastAPI's default threadpool does exactly that. Load, warm up and call the runtime from one
dedicated inference thread (or process). The TorchScript runtime logs a warning the first time
it is called from a thread other than the one that loaded it.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import (
    INPUT_NAMES,
    MEMBERS_OUTPUT,
    ONNX_FILE,
    OUTPUT_NAMES,
    SPREAD_OUTPUT,
    TORCHSCRIPT_FILE,
    BundleError,
    Manifest,
    verify_bundle,
)

log = logging.getLogger(__name__)

# forecast B×T_out×N, st_embedding B×N×d_st, spread B×T_out×N (seed ensembles; else None)
RunOutputs = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]

BACKENDS = ("onnx", "torchscript")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class ProviderError(RuntimeError):
    """The requested device/execution provider is not the one that would run the model."""


class Runtime(ABC):
    """A loaded bundle that turns raw windows into raw forecasts.

    Attributes: ``manifest`` (the verified :class:`~model.bundle.Manifest`), ``backend``
    ("onnx" | "torchscript"), ``provider`` (what actually runs it: an ONNX Runtime execution
    provider such as "CPUExecutionProvider" / "CUDAExecutionProvider", or "torch:cpu" /
    "torch:cuda:0" for TorchScript), ``bundle_dir``.
    """

    backend: str
    provider: str
    model_file: str  # the bundle file this backend runs

    def __init__(self, bundle_dir: Path, manifest: Manifest) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest

    @property
    def has_spread(self) -> bool:
        """A seed-ensemble bundle: its graph also returns the members' spread."""
        return self.manifest.ensemble is not None

    def predict(self, readings: Any, input_time: Any, target_time: Any) -> tuple[np.ndarray, np.ndarray]:
        """readings B×T_in×N (raw, missing = ``manifest.missing_value``), input_time B×T_in×2,
        target_time B×T_out×2 (time-of-day fraction, day of week) ->
        (forecast B×T_out×N raw units, st_embedding B×N×d_st), both float32.

        Raises ValueError when an input has the wrong type, dtype, shape or values.
        """
        forecast, st, _ = self.predict_full(readings, input_time, target_time)
        return forecast, st

    def predict_full(self, readings: Any, input_time: Any, target_time: Any) -> RunOutputs:
        """:meth:`predict` plus the members' spread B×T_out×N (raw units) of an ensemble bundle
        (None for a single model)."""
        inputs = self.check_inputs(readings, input_time, target_time)
        return self._run(*inputs)

    def check_inputs(self, readings: Any, input_time: Any,
                     target_time: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.manifest
        arrays = []
        for name, value in zip(INPUT_NAMES, (readings, input_time, target_time)):
            if not isinstance(value, np.ndarray):
                raise ValueError(f"{name} must be a numpy array, got {type(value).__name__}")
            if not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"{name} must be a float array (float32 preferred), got dtype {value.dtype}")
            if value.ndim != 3:
                raise ValueError(f"{name} must be 3-dimensional, got shape {value.shape}")
            arrays.append(np.ascontiguousarray(value, dtype=np.float32))
        readings, input_time, target_time = arrays
        batch = readings.shape[0]
        expected = {
            "readings": (batch, m.in_steps, m.num_nodes),
            "input_time": (batch, m.in_steps, 2),
            "target_time": (batch, m.out_steps, 2),
        }
        if batch < 1:
            raise ValueError("readings must hold at least one window (batch size 0)")
        for name, arr in zip(INPUT_NAMES, arrays):
            if arr.shape != expected[name]:
                raise ValueError(f"{name} has shape {arr.shape}, expected {expected[name]} "
                                 "(batch, steps, nodes|2) for this bundle")
        if not np.isfinite(readings).all():
            raise ValueError(f"readings contain NaN or infinite values: replace missing readings with "
                             f"the bundle's missing_value ({m.missing_value}) before predicting")
        for name, arr in (("input_time", input_time), ("target_time", target_time)):
            tod, dow = arr[..., 0], arr[..., 1]
            if not (np.isfinite(tod).all() and (tod >= 0).all() and (tod < 1).all()):
                raise ValueError(f"{name}[..., 0] (time of day) must be a fraction in [0, 1)")
            if not (np.isfinite(dow).all() and (dow >= 0).all() and (dow <= 6).all()
                    and (dow == np.floor(dow)).all()):
                raise ValueError(f"{name}[..., 1] (day of week) must be a whole number 0..6 (0 = Monday)")
        return readings, input_time, target_time

    @abstractmethod
    def _run(self, readings: np.ndarray, input_time: np.ndarray, target_time: np.ndarray) -> RunOutputs:
        """Inputs already validated and float32."""

    def warmup(self, repeats: int = 2) -> None:
        """Run a few plausible windows so the first real request does not pay for allocation."""
        example = self.example_inputs(1)
        for _ in range(repeats):
            self._check_outputs(self._run(*example), 1)

    def example_inputs(self, batch: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Valid inputs: every reading at the training mean, Monday 00:00 onwards."""
        m = self.manifest
        readings = np.full((batch, m.in_steps, m.num_nodes), m.typical_reading(), np.float32)
        slots = np.arange(m.in_steps + m.out_steps) % m.steps_per_day
        times = np.stack([slots / m.steps_per_day, np.zeros_like(slots)], -1).astype(np.float32)
        times = np.broadcast_to(times, (batch, *times.shape))
        return readings, np.ascontiguousarray(times[:, :m.in_steps]), np.ascontiguousarray(times[:, m.in_steps:])

    def _check_outputs(self, outputs: RunOutputs, batch: int) -> None:
        m = self.manifest
        want = {"forecast": (batch, m.out_steps, m.num_nodes),
                "st_embedding": (batch, m.num_nodes, m.st_embedding_dim),
                SPREAD_OUTPUT: (batch, m.out_steps, m.num_nodes)}
        names = (*OUTPUT_NAMES, SPREAD_OUTPUT) if self.has_spread else OUTPUT_NAMES
        for name, arr in zip(names, outputs):
            if tuple(arr.shape) != want[name]:
                raise BundleError(f"{self.bundle_dir / self.model_file}: output {name} has shape "
                                  f"{tuple(arr.shape)}, the manifest implies {want[name]}")

    def __repr__(self) -> str:
        m = self.manifest
        return (f"{type(self).__name__}({str(self.bundle_dir)!r}, {m.model_name} {m.model_version}, "
                f"N={m.num_nodes}, provider={self.provider})")


# --------------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------------
class OnnxRuntime(Runtime):
    backend = "onnx"
    model_file = ONNX_FILE

    def __init__(self, bundle_dir: Path, manifest: Manifest, *, device: str = "cpu", threads: int = 2,
                 allow_fallback: bool = False) -> None:
        super().__init__(bundle_dir, manifest)
        import onnxruntime as ort

        kind, index = _parse_device(device)
        path = bundle_dir / ONNX_FILE
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers: list[Any] = [CPU_PROVIDER]
        want_cuda = False
        if kind == "cuda":
            if CUDA_PROVIDER in ort.get_available_providers():
                # TF32 off: with it ORT's CUDA matmuls moved forecasts by up to 6.5e-3 (raw units)
                # from eager PyTorch on an H200; this small model is launch-bound, so it buys nothing.
                providers = [(CUDA_PROVIDER, {"device_id": index, "use_tf32": "0"}), CPU_PROVIDER]
                want_cuda = True
            elif not allow_fallback:
                raise ProviderError(f"device {device!r} asked for, but this onnxruntime "
                                    f"({ort.__version__}) offers {ort.get_available_providers()}: install "
                                    "onnxruntime-gpu, or pass allow_fallback=True to run on CPU")
            else:
                log.warning("device %r asked for but %s is not available in onnxruntime %s; running on CPU",
                            device, CUDA_PROVIDER, ort.__version__)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several private types
            raise BundleError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        active = self.session.get_providers()
        self.provider = active[0]
        if want_cuda and self.provider != CUDA_PROVIDER:
            if not allow_fallback:
                raise ProviderError(f"device {device!r} asked for, but the session runs on {active} "
                                    "(CUDA provider failed to initialise?); pass allow_fallback=True to accept CPU")
            log.warning("device %r asked for but ONNX Runtime is using %s", device, active)
        self._check_graph(path)
        # member_forecasts is never fetched: ORT computes it for the mean, a copy would be waste
        self._outputs = [*OUTPUT_NAMES, SPREAD_OUTPUT] if self.has_spread else list(OUTPUT_NAMES)

    def _check_graph(self, path: Path) -> None:
        m = self.manifest
        want_in = {"readings": [m.in_steps, m.num_nodes], "input_time": [m.in_steps, 2],
                   "target_time": [m.out_steps, 2]}
        want_out = {"forecast": [m.out_steps, m.num_nodes], "st_embedding": [m.num_nodes, m.st_embedding_dim]}
        if m.ensemble is not None:  # seed ensemble (model/ensemble.py): spread and each member too
            want_out[SPREAD_OUTPUT] = [m.out_steps, m.num_nodes]
            want_out[MEMBERS_OUTPUT] = [m.ensemble["members"], m.out_steps, m.num_nodes]
        for kind, args, want in (("input", self.session.get_inputs(), want_in),
                                 ("output", self.session.get_outputs(), want_out)):
            got = {a.name: a for a in args}
            if set(got) != set(want):
                raise BundleError(f"{path}: graph {kind}s are {sorted(got)}, expected {sorted(want)}")
            for name, dims in want.items():
                arg = got[name]
                if arg.type != "tensor(float)":
                    raise BundleError(f"{path}: {kind} {name} is {arg.type}, expected tensor(float)")
                shape = list(arg.shape)
                if len(shape) != 1 + len(dims) or isinstance(shape[0], int) or shape[1:] != dims:
                    raise BundleError(f"{path}: {kind} {name} has shape {shape}, the manifest "
                                      f"implies [batch, {', '.join(map(str, dims))}] with a dynamic batch")

    def _run(self, readings: np.ndarray, input_time: np.ndarray, target_time: np.ndarray) -> RunOutputs:
        out = self.session.run(self._outputs, {"readings": readings, "input_time": input_time,
                                               "target_time": target_time})
        return out[0], out[1], out[2] if self.has_spread else None


# --------------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------------
class TorchScriptRuntime(Runtime):
    """TorchScript backend. ``torch.set_num_threads(threads)`` is process-wide.

    Call it from the thread that loaded it (see the module docstring): another thread ran 2×
    slower in our measurements.
    """

    backend = "torchscript"
    model_file = TORCHSCRIPT_FILE

    def __init__(self, bundle_dir: Path, manifest: Manifest, *, device: str = "cpu", threads: int = 2,
                 allow_fallback: bool = False) -> None:
        super().__init__(bundle_dir, manifest)
        import torch

        self._torch = torch
        kind, index = _parse_device(device)
        if kind == "cuda" and not torch.cuda.is_available():
            if not allow_fallback:
                raise ProviderError(f"device {device!r} asked for, but torch {torch.__version__} sees no "
                                    "CUDA device; pass allow_fallback=True to run on CPU")
            log.warning("device %r asked for but torch sees no CUDA device; running on CPU", device)
            kind = "cpu"
        self.device = torch.device("cuda", index) if kind == "cuda" else torch.device("cpu")
        self.provider = f"torch:{self.device}"
        torch.set_num_threads(threads)
        path = bundle_dir / TORCHSCRIPT_FILE
        try:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and friends
            raise BundleError(f"{path}: torch.jit cannot load it ({exc})") from exc
        self.owner_thread = threading.get_ident()
        self._warned_thread = False
        # A traced module has no shape metadata: one call proves it fits the manifest.
        try:
            outputs = self._run(*self.example_inputs(1))
        except RuntimeError as exc:
            raise BundleError(f"{path}: does not run on inputs shaped by the manifest "
                              f"(1 × {manifest.in_steps} × {manifest.num_nodes}): {_first_line(exc)}") from exc
        self._check_outputs(outputs, 1)

    def _run(self, readings: np.ndarray, input_time: np.ndarray, target_time: np.ndarray) -> RunOutputs:
        torch = self._torch
        if not self._warned_thread and threading.get_ident() != self.owner_thread:
            self._warned_thread = True
            log.warning("TorchScript runtime called from a thread other than the one that loaded it: "
                        "expect it to run up to 2x slower; pin inference to one dedicated thread")
        with torch.inference_mode():
            args = [torch.from_numpy(a if a.flags.writeable else a.copy()).to(self.device)
                    for a in (readings, input_time, target_time)]
            outputs = self.module(*args)  # an ensemble's graph returns spread and members too
            spread = outputs[2].cpu().numpy() if self.has_spread else None
        return outputs[0].cpu().numpy(), outputs[1].cpu().numpy(), spread


# --------------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _parse_device(device: str) -> tuple[str, int]:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return kind, int(index or 0)


def load_runtime(bundle_dir: str | Path, backend: str = "onnx", device: str = "cpu", threads: int = 2,
                 warmup: bool = True, allow_fallback: bool = False,
                 manifest: Manifest | None = None) -> Runtime:
    """Verify the bundle at ``bundle_dir`` and load it for inference.

    backend: "onnx" (ONNX Runtime; no torch) or "torchscript". device: "cpu", "cuda" or
    "cuda:N"; CUDA is used when asked for and available; otherwise ProviderError, unless
    ``allow_fallback`` (then CPU with a logged warning). threads: intra-op threads.
    Raises BundleError (naming the file) for a missing, damaged or mismatching bundle.
    ``manifest``: what :func:`~model.bundle.verify_bundle` returned for this bundle when the
    caller has verified it already (the files are not hashed a second time).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _parse_device(device)
    bundle_dir = Path(bundle_dir)
    if manifest is None:
        manifest = verify_bundle(bundle_dir)
    needed = ONNX_FILE if backend == "onnx" else TORCHSCRIPT_FILE
    if needed not in manifest.files:
        raise BundleError(f"{bundle_dir / needed}: the bundle's manifest does not list it")
    cls = OnnxRuntime if backend == "onnx" else TorchScriptRuntime
    runtime = cls(bundle_dir, manifest, device=device, threads=threads, allow_fallback=allow_fallback)
    if warmup:
        runtime.warmup()
    log.info("loaded %r", runtime)
    return runtime
