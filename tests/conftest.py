"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

torch.set_num_threads(2)


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the calling test with a reason saying why."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared (real data and fixtures) is not beside this checkout")
    return path
