"""The Dockerfiles: hadolint-clean, parsed with dockerfile-parse and checked for what the
deployment relies on (bases, no torch in service images, non-root, healthcheck, layer order,
entrypoints from the repository, a build context that holds every copied file)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import DOCKER, REPO, require_tool

DOCKERFILES = {
    "service": DOCKER / "Dockerfile.service",
    "service-gpu": DOCKER / "Dockerfile.service-gpu",
    "train": DOCKER / "Dockerfile.train",
}
SERVICE_IMAGES = ("service", "service-gpu")


def parse(name: str) -> DockerfileParser:
    parser = DockerfileParser(fileobj=DOCKERFILES[name].open("rb"))
    return parser


def final_stage(parser: DockerfileParser) -> list[dict]:
    instructions = parser.structure
    last_from = max(i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM")
    return instructions[last_from:]


def requirements(flavour: str) -> list[str]:
    out = subprocess.run([sys.executable, str(DOCKER / "requirements.py"), flavour],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name: str) -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILES[name])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = require_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install httpx\n", encoding="utf-8")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout  # :latest


# Base images pinned to a release: a CPython patch version, an exact CUDA version (no `:3.11-slim`,
# `:13.0-...` or `:latest`, which move under a rebuild).
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")
PINNED_CUDA = re.compile(r"^nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+$")


def test_base_images() -> None:
    slim_311 = re.compile(r"^python:3\.11[.-].*slim")
    assert slim_311.match(parse("service").baseimage)
    assert slim_311.match(parse("train").baseimage)
    gpu = parse("service-gpu")
    args = dict(i["value"].split("=", 1) for i in gpu.structure if i["instruction"] == "ARG")
    froms = [i["value"].split()[0] for i in gpu.structure if i["instruction"] == "FROM"]
    assert froms == ["${PYTHON_IMAGE}", "${CUDA_IMAGE}"]
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:13.")  # onnxruntime-gpu 1.31 needs CUDA 13
    assert "cudnn-runtime" in args["CUDA_IMAGE"]
    assert slim_311.match(args["PYTHON_IMAGE"])


def test_base_images_are_pinned_to_a_release() -> None:
    assert PINNED_PYTHON.match(parse("service").baseimage), parse("service").baseimage
    assert PINNED_PYTHON.match(parse("train").baseimage), parse("train").baseimage
    gpu = parse("service-gpu")
    args = dict(i["value"].split("=", 1) for i in gpu.structure if i["instruction"] == "ARG")
    assert PINNED_PYTHON.match(args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    assert PINNED_CUDA.match(args["CUDA_IMAGE"]), args["CUDA_IMAGE"]
    # one CPython release in every image
    assert len({parse("service").baseimage, parse("train").baseimage, args["PYTHON_IMAGE"]}) == 1


def test_pin_patterns_reject_moving_tags() -> None:
    for moving in ("python:3.11-slim-bookworm", "python:3.11-slim", "python:latest", "python:3.11.x-slim-bookworm"):
        assert not PINNED_PYTHON.match(moving), moving
    for moving in ("nvidia/cuda:13.0-cudnn-runtime-ubuntu24.04", "nvidia/cuda:latest"):
        assert not PINNED_CUDA.match(moving), moving


def test_service_images_have_no_torch_and_the_right_onnxruntime() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base_names = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "pandas", "onnx>", "matplotlib"):
        assert heavy not in base_names, f"{heavy} is a base dependency: the service image would carry it"
    cpu, gpu = requirements("service"), requirements("service-gpu")
    assert "onnxruntime==1.32.0" in cpu and not any(r.startswith("onnxruntime-gpu") for r in cpu)
    assert "onnxruntime-gpu==1.31.1" in gpu and not any(r.startswith("onnxruntime=") for r in gpu)
    for reqs in (cpu, gpu):
        assert not any(r.startswith("torch") for r in reqs)
    train = requirements("train")
    assert "torch==2.13.0" in train and "httpx>=0.27" in train


@pytest.mark.parametrize("name", DOCKERFILES)
def test_non_root_user_and_entrypoint_from_the_repository(name: str) -> None:
    stage = final_stage(parse(name))
    users = [i["value"] for i in stage if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0].isdigit(), "numeric USER lets Kubernetes verify runAsNonRoot"
    entry = [i["value"] for i in stage if i["instruction"] == "ENTRYPOINT"][-1]
    script = json.loads(entry)[0]
    assert script.startswith("/app/docker/")
    local = DOCKER / Path(script).name
    assert local.is_file() and os.access(local, os.X_OK), f"{local} missing or not executable"
    copied = " ".join(i["value"] for i in stage if i["instruction"] == "COPY")
    assert f"docker/{local.name}" in copied


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_image_healthcheck_and_environment(name: str) -> None:
    parser = parse(name)
    stage = final_stage(parser)
    health = [i["value"] for i in stage if i["instruction"] == "HEALTHCHECK"]
    assert health and "/readyz" in health[-1] and "healthcheck.py" in health[-1]
    env = parser.envs
    assert env["HIMNET_HOST"] == "0.0.0.0" and env["HIMNET_PORT"] == "8000"
    assert env["HIMNET_DEVICE"] == ("cuda" if name == "service-gpu" else "cpu")
    assert env["PYTHONPATH"] == "/app"
    copied = [i["value"].split()[0] for i in stage if i["instruction"] == "COPY" and "--from" not in i["value"]]
    assert "training/" not in copied, "the service image needs no training code"
    for room in ("studies/", "replay/", "himnet/"):
        assert room not in copied, f"the service image needs no offline code ({room})"


def test_training_image_holds_every_offline_room() -> None:
    stage = final_stage(parse("train"))
    copied = [i["value"].split()[0] for i in stage if i["instruction"] == "COPY" and "--from" not in i["value"]]
    for room in ("model/", "training/", "studies/", "replay/", "himnet/"):
        assert room in copied, f"the training image lacks {room}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependency_layer_comes_before_the_code(name: str) -> None:
    stage = final_stage(parse(name))
    pip_at = [n for n, i in enumerate(stage) if i["instruction"] == "RUN" and "pip install" in i["value"]]
    code_at = [n for n, i in enumerate(stage) if i["instruction"] == "COPY"
               and any(p in i["value"].split() for p in ("model/", "service/", "training/"))]
    assert pip_at and code_at and max(pip_at) < min(code_at)
    # the dependencies come from the image's hashed lock (pyproject.toml -> scripts/lock.sh)
    dep_copy = [i["value"] for i in stage[:min(code_at)] if i["instruction"] == "COPY"]
    assert any(v.split()[0] == f"requirements/{name}.txt" for v in dep_copy), dep_copy
    installs = [stage[n]["value"] for n in pip_at]
    assert all("--require-hashes" in v and "-r /build/requirements.txt" in v for v in installs), installs


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes) or (
                pat.startswith("**/") and fnmatch.fnmatchcase(parts[-1], pat[3:])):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_is_in_the_build_context(name: str) -> None:
    patterns = dockerignore()
    for ins in final_stage(parse(name)):
        if ins["instruction"] != "COPY" or "--from" in ins["value"]:
            continue
        for src in ins["value"].split()[:-1]:
            path = REPO / src
            assert path.exists(), f"{name}: COPY {src}: no such path"
            files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
            for f in files:
                rel = f.relative_to(REPO).as_posix()
                assert not _ignored(rel, patterns), f"{name}: {rel} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_artifacts_out() -> None:
    patterns = dockerignore()
    for rel in ("secrets/api_key", ".venv/bin/python", "runs/latest/checkpoint.pt",
                "model/__pycache__/bundle.cpython-311.pyc", "bundles/x/model.onnx", ".git/config",
                "tests/conftest.py"):
        assert _ignored(rel, patterns), f"{rel} would be sent to the Docker daemon"


@pytest.mark.parametrize("script", ["entrypoint-service.sh", "entrypoint-train.sh"])
def test_entrypoint_scripts_parse(script: str) -> None:
    result = subprocess.run(["sh", "-n", str(DOCKER / script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
