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


# --- trained tiny model and its bundle (export and serving tests; helpers in tests/tiny_model.py) ---
@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``training.checkpoint.Checkpoint`` of an 8-sensor HimNet (hidden 8) after 15 training steps
    of the real pipeline on synthetic data. Shared by the session: do not modify it."""
    from tests.tiny_model import train_tiny

    return train_tiny(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    """Bundle directory exported from ``tiny_checkpoint`` by ``training.export.export_bundle``.

    Shared by the whole session: tests that damage a bundle must copy it first.
    """
    from training.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(tiny_checkpoint, out)
    return out


@pytest.fixture(scope="session")
def scaled_checkpoint(tmp_path_factory):
    """Checkpoint of the tiny model trained with per-sensor scaling and log1p on counts under
    the ``nan`` rule (``tests.tiny_model.train_tiny_scaled``). Shared: do not modify it."""
    from tests.tiny_model import train_tiny_scaled

    return train_tiny_scaled(tmp_path_factory.mktemp("scaled-run"))


@pytest.fixture(scope="session")
def scaled_bundle(scaled_checkpoint, tmp_path_factory) -> Path:
    """Bundle of ``scaled_checkpoint`` (export parity checked). Shared: copy before damaging."""
    from training.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "scaled"
    export_bundle(scaled_checkpoint, out, contraction="generate")
    return out


# --- a 3-member seed ensemble of tiny models and its bundle (model/ensemble.py, himnet ensemble) ---
@pytest.fixture(scope="session")
def tiny_members(tiny_checkpoint, tmp_path_factory):
    """``tiny_checkpoint`` (seed 0) and two shorter runs of the same pipeline with seeds 1 and 2:
    same data, scaler and config, different weights. Shared by the session: do not modify them."""
    from tests.tiny_model import train_tiny

    return [tiny_checkpoint] + [train_tiny(tmp_path_factory.mktemp(f"tiny-seed{s}"), steps=5, seed=s)
                                for s in (1, 2)]


@pytest.fixture(scope="session")
def tiny_ensemble_bundle(tiny_members, tmp_path_factory) -> Path:
    """Ensemble bundle of ``tiny_members`` written by ``training.ensemble_export.export_ensemble``."""
    from training.ensemble_export import export_ensemble

    out = tmp_path_factory.mktemp("bundles") / "tiny-ensemble"
    export_ensemble(tiny_members, out)
    return out
