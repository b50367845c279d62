"""Images you can roll back to: every image the compose stack and the Kubernetes manifests run
has a release tag (no `:latest`, `:cpu` or `:7.2`), and our own images carry the project version
from pyproject.toml, so a version bump that forgets a manifest fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import K8S, REPO
from tests.deploy.test_k8s import render

# name:TAG where TAG starts with an exact release (v1.2.3, 1.2.3, 1.2.3-suffix)
RELEASE_TAG = re.compile(r"^[^:@\s]+:v?\d+\.\d+\.\d+(?:[-+][A-Za-z0-9._-]+)?$")
KUSTOMIZATIONS = [K8S / "base", K8S / "overlays" / "cpu", K8S / "overlays" / "gpu"]


def version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def expected_own_images() -> dict[str, str]:
    v = version()
    return {"forecast": f"himnet-service:{v}-cpu", "forecast-gpu": f"himnet-service:{v}-gpu",
            "forecast-sentinel": f"himnet-service:{v}-cpu", "train": f"himnet-train:{v}",
            "replay": f"himnet-train:{v}"}


def test_release_tag_pattern() -> None:
    for good in ("redis:7.2.11-bookworm", "prom/prometheus:v2.55.1", "himnet-service:0.1.0-cpu",
                 "oliver006/redis_exporter:v1.67.0-alpine"):
        assert RELEASE_TAG.match(good), good
    for moving in ("himnet-service:cpu", "himnet-train", "redis:7.2-bookworm", "grafana/grafana:latest",
                   "himnet-service:0.1-cpu"):
        assert not RELEASE_TAG.match(moving), moving


def test_compose_images_are_versioned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        assert RELEASE_TAG.match(svc["image"]), f"{name}: {svc['image']} is not a release tag"
    for name, image in expected_own_images().items():
        assert services[name]["image"] == image, f"{name}: tag differs from pyproject's version"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomize_image_tags_carry_the_version(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    flavour = "gpu" if directory.name == "gpu" else "cpu"
    (entry,) = [i for i in kustomization["images"] if i["name"] == "himnet-service"]
    assert entry["newTag"] == f"{version()}-{flavour}"


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "sentinel"])
def test_rendered_images_are_release_tags(overlay: str) -> None:
    images = []
    for doc in render(K8S / "overlays" / overlay):
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        images += [c["image"] for c in pod.get("containers", []) + pod.get("initContainers", [])]
    assert images
    for image in images:
        assert RELEASE_TAG.match(image), f"{overlay}: {image} is not a release tag"
    flavour = "gpu" if overlay == "gpu" else "cpu"
    assert f"himnet-service:{version()}-{flavour}" in images
