"""The hashed lock files (requirements/*.txt, written by scripts/lock.sh): one per image flavour
plus dev (CI). Each must satisfy pyproject.toml's requirements for its flavour (a dependency bumped
without refreshing the lock fails here), pin every package to one version with hashes, agree with
the dev lock CI installs, and keep CUDA wheels and torch where they belong."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.conftest import DOCKER, REPO

LOCKS = REPO / "requirements"
FLAVOURS = ("service", "service-gpu", "train", "dev")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\]+)")


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """{normalised name: (version, [sha256 hashes])}; fails on a line that is neither a pin, a
    hash continuation nor a comment (an unpinned or URL requirement)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash=sha256:"):
            assert current is not None, f"hash without a requirement: {raw!r}"
            pins[current][1].append(line.split(":", 1)[1].rstrip(" \\"))
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {raw!r}"
        current = canonicalize_name(match.group(1))
        assert current not in pins, f"{current} pinned twice"
        pins[current] = (match.group(2), [])
    return pins


def lock(flavour: str) -> dict[str, tuple[str, list[str]]]:
    return parse_lock((LOCKS / f"{flavour}.txt").read_text(encoding="utf-8"))


def inputs(flavour: str) -> list[Requirement]:
    out = subprocess.run([sys.executable, str(DOCKER / "requirements.py"), flavour],
                         capture_output=True, text=True, check=True, timeout=30)
    return [Requirement(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_package_is_pinned_with_hashes(flavour: str) -> None:
    pins = lock(flavour)
    assert pins
    for name, (_version, hashes) in pins.items():
        assert hashes, f"{flavour}: {name} has no hash (pip --require-hashes would refuse the lock)"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{flavour}: {name}: bad hash"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lock_satisfies_pyproject(flavour: str) -> None:
    pins = lock(flavour)
    for req in inputs(flavour):
        name = canonicalize_name(req.name)
        assert name in pins, f"{flavour}: {req} is not in the lock: run `bash scripts/lock.sh`"
        version = Version(pins[name][0])
        # pyproject pins torch==X; the lock has its CPU build X+cpu (a local version label)
        assert req.specifier.contains(version, prereleases=True) or (
            version.local and req.specifier.contains(Version(version.public), prereleases=True)), \
            f"{flavour}: lock has {name}=={version}, pyproject wants {req}: run `bash scripts/lock.sh`"


@pytest.mark.parametrize("flavour", ("service", "service-gpu", "train"))
def test_images_ship_the_versions_ci_tests(flavour: str) -> None:
    dev = lock("dev")
    for name, (version, hashes) in lock(flavour).items():
        if name in dev:
            assert dev[name][0] == version, f"{flavour} has {name}=={version}, dev has {dev[name][0]}"
            assert set(hashes) <= set(dev[name][1]), f"{flavour}: {name}: hashes differ from dev's"


def test_torch_is_the_cpu_build_and_no_cuda_wheels_come_along() -> None:
    for flavour in FLAVOURS:
        pins = lock(flavour)
        assert not [n for n in pins if n.startswith(("nvidia-", "triton", "cuda-"))], flavour
        if flavour in ("train", "dev"):
            assert pins["torch"][0].endswith("+cpu"), pins["torch"]
        else:
            assert "torch" not in pins, f"the {flavour} image must not carry torch"
    assert "onnxruntime-gpu" in lock("service-gpu") and "onnxruntime" not in lock("service-gpu")
    assert "onnxruntime" in lock("service") and "onnxruntime-gpu" not in lock("service")


def test_parse_lock_rejects_unpinned_and_unhashed_lines() -> None:
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_lock("numpy>=1.26\n")
    pins = parse_lock("numpy==2.0.0 \\\n    --hash=sha256:" + "a" * 64 + "\nidna==3.7\n")
    assert pins == {"numpy": ("2.0.0", ["a" * 64]), "idna": ("3.7", [])}


def test_setup_and_ci_install_from_the_lock() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "lock=requirements/dev.txt" in setup
    assert re.search(r"pip install -q --require-hashes .*-r \"\$lock\"", setup), "setup.sh: hashed install"
    assert "--no-deps -e ." in setup, "the project itself, without re-resolving its dependencies"
    lock_sh = (REPO / "scripts" / "lock.sh").read_text(encoding="utf-8")
    assert "--generate-hashes" in lock_sh
    for flavour in FLAVOURS:
        assert f"compile {flavour}" in lock_sh, f"lock.sh does not write requirements/{flavour}.txt"


def test_lock_script_and_helpers_pass_shellcheck() -> None:
    from tests.deploy.conftest import require_tool
    shellcheck = require_tool("shellcheck")
    scripts = [REPO / "scripts" / n for n in ("lock.sh", "setup.sh", "torch-source.sh")]
    result = subprocess.run([shellcheck, *map(str, scripts), str(DOCKER / "redis" / "start-sentinel.sh")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_source_skips_the_index_when_a_find_links_folder_has_the_wheel(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null", "PIP_FIND_LINKS": str(wheel_dir),
           "PYTHON": sys.executable, "TORCH_INDEX": "https://torch.example/cpu"}
    script = str(REPO / "scripts" / "torch-source.sh")

    def run() -> list[str]:
        return subprocess.run(["bash", script, "2.13.0+cpu"], env=env, capture_output=True, text=True,
                              check=True, timeout=30).stdout.split()

    assert run() == ["--find-links", str(wheel_dir), "--extra-index-url", "https://torch.example/cpu"]
    (wheel_dir / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert run() == ["--find-links", str(wheel_dir)]
