"""Writing the torch-side files of a bundle: ``weights.pt`` and ``embeddings.npz``.

Kept apart from ``model/bundle.py`` (manifest, checksums, reading) because it needs torch,
which the service never imports; the format of both files is described there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.himnet import HimNet, adaptive_graph


def write_weights(model: HimNet, path: Path) -> dict[str, Tensor]:
    """``torch.save`` the state dict (official layout, CPU, contiguous); returns what was saved."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return state


def weights_digest(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 over keys, dtypes, shapes and bytes of the tensors: a stable model version."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def write_embeddings(model: HimNet, path: Path) -> None:
    """node_embedding (N, d_s), adjacency (N, N) and, when the model has them, the time tables."""
    with torch.no_grad():
        arrays = {
            "node_embedding": model.node_embedding.detach().cpu().numpy(),
            "adjacency": adaptive_graph(model.node_embedding).cpu().numpy(),
        }
        if model.uses_time_tables:
            arrays["tod_embedding"] = model.tod_embedding.weight.detach().cpu().numpy()
            arrays["dow_embedding"] = model.dow_embedding.weight.detach().cpu().numpy()
    np.savez(path, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})
