"""The model bundle: the one contract between offline (``training/``) and online (``service/``).

A bundle is a directory::

    manifest.json    what this module reads and writes (``Manifest``), with sha256 checksums
    model.onnx       serving graph, dynamic batch (primary backend)
    model.ts         the same graph as TorchScript (optional backend)
    weights.pt       state dict in the official HimNet layout (``torch.save`` of a dict)
    embeddings.npz   node_embedding, adjacency, tod_embedding / dow_embedding (when present)
    intervals.npz    (format 2, optional) conformal interval half-widths, ``model/intervals.py``

An ensemble bundle (``himnet ensemble``, ``model/ensemble.py``) has the same files; its manifest's
``ensemble`` entry (absent or null otherwise) says so, and its ``model.onnx``/``model.ts`` have two
more outputs: ``spread`` (B × T_out × N, the members' standard deviation) and
``member_forecasts`` (B × K × T_out × N). ``forecast`` is the members' mean, so a reader that
asks only for the two outputs below serves it unchanged.

Both graphs take RAW readings and return RAW forecasts; scaling and time-feature broadcasting
are inside them::

    readings     B × T_in × N   float32, missing readings already replaced by ``missing_value``
                                (the rule of ``model/missing.py``; per sensor under per-sensor
                                scaling: :meth:`Manifest.gap_readings`)
    input_time   B × T_in × 2   float32, (time-of-day fraction, day of week 0 = Monday)
    target_time  B × T_out × 2  float32, same encoding, for the steps to forecast
    forecast     B × T_out × N  float32 (output)
    st_embedding B × N × d_st   float32 (output)

This module imports only the standard library and numpy: the service reads bundles without
torch. Any problem is a :class:`BundleError` whose message names the offending file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from model.missing import parse_rule
from model.scaling import GLOBAL, LOG1P, NO_TRANSFORM, SCALINGS, TRANSFORMS, gap_readings, to_raw_space

BUNDLE_FORMAT = 2  # 2: optional prediction intervals (``intervals``); format 1 still loads
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.ts"
WEIGHTS_FILE = "weights.pt"
EMBEDDINGS_FILE = "embeddings.npz"
BUNDLE_FILES = (ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, EMBEDDINGS_FILE)  # all but the manifest

INPUT_NAMES = ("readings", "input_time", "target_time")
OUTPUT_NAMES = ("forecast", "st_embedding")
SPREAD_OUTPUT, MEMBERS_OUTPUT = "spread", "member_forecasts"  # ensemble bundles only

# Key under which manifest.json stores the sha256 of its own canonical content (every other
# key), so that an edited manifest is noticed like any other edited file.
_SELF_CHECKSUM = "manifest_sha256"


class BundleError(ValueError):
    """A bundle is missing, damaged, of another format version or inconsistent."""


@dataclass(frozen=True)
class Manifest:
    format_version: int
    model_name: str
    model_version: str
    dataset: str
    created_at: str  # ISO-8601, UTC
    config: dict[str, Any]  # HimNetConfig.to_dict() of the exported graph
    num_nodes: int
    in_steps: int
    out_steps: int
    interval_minutes: float
    steps_per_day: int
    timezone: str | None  # IANA zone of the sensors' wall clock; None = timestamps already local
    sensor_ids: list[str]  # model order
    coords: list[list[float]] | None  # [latitude, longitude] per sensor, model order
    scaler_mean: float
    scaler_std: float
    missing_value: float  # the raw reading the model gets in a gap (model.missing: MissingRule.gap_input)
    st_embedding_dim: int
    metrics: dict[str, Any]  # test-split metrics from training
    parity: dict[str, dict[str, float]]  # backend -> batch size -> max |exported - eager| (raw units)
    files: dict[str, str]  # file name -> sha256 hex digest
    export: dict[str, Any] = field(default_factory=dict)  # how it was exported (opset, choices, timings)
    missing_rule: str = "zero"  # model.missing spelling of what marks a gap; older bundles lack it: zero
    # format 2: how the prediction intervals were calibrated (levels, split, rule); None = none
    intervals: dict[str, Any] | None = None
    # how the weights were trained: loss (+ mae_mse weight), weight averaging (+ its settings);
    # None = not recorded (bundles exported before the field existed still load)
    training: dict[str, Any] | None = None
    # model.scaling; absent (older bundles, and every bundle of the defaults) = global / none.
    # Under per_sensor, scaler_mean/scaler_std are the global fallback figures; with log1p all
    # four are in log1p space. The graph applies them; the service needs only gap_readings().
    scaling: str = GLOBAL
    transform: str = NO_TRANSFORM
    sensor_means: list[float] | None = None
    sensor_stds: list[float] | None = None
    # seed ensembles: {"members": K, "seeds": [...], "spread_output": "spread",
    # "member_output": "member_forecasts", ...}; None = a single model
    ensemble: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON body. The scaling fields are written only when they differ from
        the defaults, and ``ensemble`` only for an ensemble, so a default bundle reads as before
        (also by code that predates them)."""
        body = dataclasses.asdict(self)
        for name, default in _SCALING_DEFAULTS.items():
            if body[name] == default:
                del body[name]
        if body["ensemble"] is None:  # a single model's manifest stays as it was before ensembles
            del body["ensemble"]
        return body

    def gap_readings(self) -> float | np.ndarray:
        """What the service puts in a gap: ``missing_value``, or under per-sensor scaling and the
        ``nan`` rule each sensor's own (N float32, the reading its scaling maps to 0)."""
        if self.sensor_means is None:
            return float(self.missing_value)
        return gap_readings(parse_rule(self.missing_rule), np.asarray(self.sensor_means), self.transform == LOG1P)

    def typical_reading(self) -> float:
        """A plausible raw reading for every sensor (warm-up input, baseline fallback): the
        global mean in raw units."""
        return float(to_raw_space(np.float64(self.scaler_mean), self.transform == LOG1P))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = MANIFEST) -> Manifest:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = {n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise BundleError(f"{source}: missing fields {missing}")
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise BundleError(f"{source}: unknown fields {unknown}")
        manifest = cls(**d)
        manifest.check(source)
        return manifest

    def check(self, source: str = MANIFEST) -> None:
        """Internal consistency: raises BundleError naming ``source``."""
        def bad(msg: str) -> BundleError:
            return BundleError(f"{source}: {msg}")

        if self.format_version not in READABLE_FORMATS:
            raise bad(f"bundle format {self.format_version!r}, this code reads format "
                      f"{BUNDLE_FORMAT} (and older: 1)")
        for name in ("num_nodes", "in_steps", "out_steps", "steps_per_day", "st_embedding_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(f"{name} must be a positive integer, got {value!r}")
            if name in self.config and self.config[name] != value:
                raise bad(f"{name} = {value} disagrees with config.{name} = {self.config[name]}")
        if not isinstance(self.sensor_ids, list) or len(self.sensor_ids) != self.num_nodes:
            raise bad(f"{len(self.sensor_ids)} sensor ids for {self.num_nodes} nodes")
        if len(set(self.sensor_ids)) != len(self.sensor_ids):
            raise bad("sensor ids are not unique")
        if self.coords is not None and (len(self.coords) != self.num_nodes
                                        or any(len(c) != 2 for c in self.coords)):
            raise bad(f"coords must be {self.num_nodes} [lat, lon] pairs")
        if not (isinstance(self.scaler_std, (int, float)) and self.scaler_std > 0):
            raise bad(f"scaler_std must be positive, got {self.scaler_std!r}")
        if not (isinstance(self.interval_minutes, (int, float)) and self.interval_minutes > 0):
            raise bad(f"interval_minutes must be positive, got {self.interval_minutes!r}")
        try:
            rule = parse_rule(self.missing_rule)
        except ValueError as exc:
            raise bad(str(exc)) from exc
        if not (isinstance(self.missing_value, (int, float)) and np.isfinite(self.missing_value)):
            raise bad(f"missing_value must be a finite number, got {self.missing_value!r}")
        if not rule.nan_only and self.missing_value != rule.value:
            raise bad(f"missing_value {self.missing_value!r} is not the sentinel of rule {rule.spec!r}")
        self._check_scaling(bad)
        if self.ensemble is not None:
            _check_ensemble(self.ensemble, bad)
        for name, digest in self.files.items():
            if Path(name).name != name or name in ("", ".", "..", MANIFEST):
                raise bad(f"file entry {name!r} is not a plain file name inside the bundle")
            if not (isinstance(digest, str) and len(digest) == 64):
                raise bad(f"checksum of {name} is not a sha256 hex digest")


    def _check_scaling(self, bad: Any) -> None:
        if self.scaling not in SCALINGS or self.transform not in TRANSFORMS:
            raise bad(f"scaling {self.scaling!r} / transform {self.transform!r}: expected one of "
                      f"{SCALINGS} / {TRANSFORMS}")
        figures = (self.sensor_means, self.sensor_stds)
        if self.scaling == GLOBAL:
            if figures != (None, None):
                raise bad("sensor_means/sensor_stds are only for per_sensor scaling")
            return
        for name, values in zip(("sensor_means", "sensor_stds"), figures):
            if not (isinstance(values, list) and len(values) == self.num_nodes
                    and all(isinstance(v, (int, float)) and np.isfinite(v) for v in values)):
                raise bad(f"per_sensor scaling needs {name}: {self.num_nodes} finite numbers")
        if min(self.sensor_stds) <= 0:  # type: ignore[type-var]
            raise bad("sensor_stds must all be positive")


_SCALING_DEFAULTS = {"scaling": GLOBAL, "transform": NO_TRANSFORM, "sensor_means": None, "sensor_stds": None}


def _check_ensemble(entry: Any, bad) -> None:
    """The manifest's ``ensemble`` entry: K >= 2 members and the graph outputs it names."""
    if not isinstance(entry, dict):
        raise bad(f"ensemble must be an object, got {type(entry).__name__}")
    k = entry.get("members")
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise bad(f"ensemble.members must be an integer >= 2, got {k!r}")
    if entry.get("spread_output") != SPREAD_OUTPUT or entry.get("member_output") != MEMBERS_OUTPUT:
        raise bad(f"ensemble outputs must be {SPREAD_OUTPUT!r} and {MEMBERS_OUTPUT!r}, got "
                  f"{entry.get('spread_output')!r} and {entry.get('member_output')!r}")
    seeds = entry.get("seeds")
    if not isinstance(seeds, list) or len(seeds) != k:
        raise bad(f"ensemble.seeds must list one seed (or null) per member, got {seeds!r}")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksums(bundle_dir: str | Path, names: Iterable[str]) -> dict[str, str]:
    """The manifest's ``files`` entry: file name -> sha256 of that file in ``bundle_dir``."""
    return {name: sha256_file(Path(bundle_dir) / name) for name in names}


def _canonical(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (with its self-checksum) atomically; returns its path."""
    manifest.check()
    bundle_dir = Path(bundle_dir)
    body = manifest.to_dict()
    body[_SELF_CHECKSUM] = hashlib.sha256(_canonical(body)).hexdigest()
    path = bundle_dir / MANIFEST
    fd, tmp = tempfile.mkstemp(dir=bundle_dir, prefix=".manifest-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and check ``manifest.json``: format version, self-checksum, consistency."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: no such bundle directory")
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing ({bundle_dir} is not a model bundle)")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise BundleError(f"{path}: expected a JSON object")
    version = body.get("format_version")
    if version not in READABLE_FORMATS:  # checked first: another format may differ in everything
        raise BundleError(f"{path}: bundle format {version!r}, this code reads format "
                          f"{BUNDLE_FORMAT} (and older: 1)")
    stored = body.pop(_SELF_CHECKSUM, None)
    if stored is None:
        raise BundleError(f"{path}: no {_SELF_CHECKSUM}; write manifests with write_manifest()")
    if hashlib.sha256(_canonical(body)).hexdigest() != stored:
        raise BundleError(f"{path}: content does not match its {_SELF_CHECKSUM} (edited or damaged)")
    try:
        return Manifest.from_dict(body, source=str(path))
    except TypeError as exc:
        raise BundleError(f"{path}: {exc}") from exc


def verify_bundle(bundle_dir: str | Path, files: Iterable[str] | None = None) -> Manifest:
    """Read the manifest and check that each file (default: all listed) exists with its sha256."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    names = list(manifest.files) if files is None else list(files)
    for name in names:
        if name not in manifest.files:
            raise BundleError(f"{bundle_dir / name}: not listed in {bundle_dir / MANIFEST}")
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        digest = sha256_file(path)
        if digest != manifest.files[name]:
            raise BundleError(f"{path}: sha256 {digest[:12]}… does not match the manifest's "
                              f"{manifest.files[name][:12]}… (file damaged or replaced)")
    return manifest


def load_embeddings(bundle_dir: str | Path) -> dict[str, np.ndarray]:
    """The verified ``embeddings.npz`` as plain arrays (node_embedding, adjacency, time tables)."""
    bundle_dir = Path(bundle_dir)
    verify_bundle(bundle_dir, [EMBEDDINGS_FILE])
    path = bundle_dir / EMBEDDINGS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable npz ({exc})") from exc
