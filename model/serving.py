"""What ``model.onnx`` computes: HimNet in serving form, and the one way model inputs are built.

Training windows, the served graph and the export's parity check all build HimNet's
``(x, y_cov)`` with :func:`assemble_inputs`, so they cannot drift apart in feature order or
broadcasting; the served graph runs ``HimNet.encode`` and ``HimNet.decode``, the very code
training's ``forward`` runs. See ``model/bundle.py`` for the contract of the graph's inputs and
outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from model.himnet import HimNet
from model.scaling import to_model_space, to_raw_space


class ServingConfigError(ValueError):
    """The model cannot be served in the bundle's form (wrong channels, or in training mode)."""


def assemble_inputs(scaled: Tensor, input_time: Tensor, target_time: Tensor,
                    node_zeros: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Model inputs from z-scored readings and per-step time features.

    scaled: B, T_in, N; input_time: B, T_in, 2; target_time: B, T_out, 2 (tod fraction, dow)
        -> x: B, T_in, N, 3 (value, tod, dow); y_cov: B, T_out, N, 2.

    Time features are the same for every node; they are broadcast by adding ``node_zeros``
    (1, 1, N, 1): one Add in ONNX instead of Shape/Expand per use, and a served graph passes its
    own buffer so N is a constant of the graph. Default: zeros of the readings' N.
    """
    if node_zeros is None:
        node_zeros = scaled.new_zeros(1, 1, scaled.shape[-1], 1)
    x = torch.cat([scaled.unsqueeze(-1), input_time.unsqueeze(2) + node_zeros], dim=-1)  # B, T_in, N, 3
    y_cov = target_time.unsqueeze(2) + node_zeros  # B, T_out, N, 2
    return x, y_cov


class ServingHimNet(nn.Module):
    """HimNet in serving form: raw units in and out, time features per sample, eval semantics.

    forward(readings B×T_in×N, input_time B×T_in×2, target_time B×T_out×2)
        -> (forecast B×T_out×N, st_embedding B×N×d_st)

    Scaling, input assembly (:func:`assemble_inputs`) and the decoder without teacher forcing
    (``HimNet.decode``) happen inside, so a bundle needs no torch-side preprocessing. Scaling is
    global (floats, traced as constants) or per sensor (N-vectors, held as 1×1×N buffers), with
    the optional log1p transform (``model.scaling``).
    """

    def __init__(self, model: HimNet, scaler_mean: float | Sequence[float],
                 scaler_std: float | Sequence[float], log1p: bool = False) -> None:
        super().__init__()
        c = model.config
        if c.output_dim != 1 or c.input_dim != 3 or c.ycov_dim != 2:
            raise ServingConfigError("serving export needs output_dim = 1, input_dim = 3 and ycov_dim = 2 "
                                     f"(got {c.output_dim}, {c.input_dim}, {c.ycov_dim})")
        if model.training:
            raise ServingConfigError("export a model in eval mode")
        self.model = model
        self._register_static_parts(model)
        self.register_buffer("node_zeros", torch.zeros(1, 1, c.num_nodes, 1))
        self.log1p = bool(log1p)
        if np.ndim(scaler_mean) == 0:
            self.mean = float(scaler_mean)  # type: ignore[arg-type]
            self.std = float(scaler_std)  # type: ignore[arg-type]
        else:
            shape = (1, 1, c.num_nodes)
            self.register_buffer("mean", torch.tensor(np.asarray(scaler_mean), dtype=torch.float32).reshape(shape))
            self.register_buffer("std", torch.tensor(np.asarray(scaler_std), dtype=torch.float32).reshape(shape))

    def _register_static_parts(self, model: HimNet) -> None:
        """Hold graph A and the spatial weights (parameters only) as buffers of this module.

        The tracers then see them as module state, stored once in the file and shared by every
        step that reads them; as plain Python attributes they would be traced as a separate
        constant at every use (a 270 MB ONNX file for METR-LA). Persistent: the exporters keep
        only state-dict entries as shared tensors.
        """
        with torch.no_grad():
            graph, s_params = model.static_parts()  # cached by HimNet (eval mode, no grad)
        own = {id(p) for p in model.parameters()}
        tensors = [graph] + [t for pair in s_params for g in pair for t in g if t is not None]
        for i, t in enumerate(tensors):
            if id(t) not in own:
                self.register_buffer(f"static_{i}", t)

    def forward(self, readings: Tensor, input_time: Tensor, target_time: Tensor) -> tuple[Tensor, Tensor]:
        scaled = (to_model_space(readings, self.log1p) - self.mean) / self.std  # B, T_in, N
        x, y_cov = assemble_inputs(scaled, input_time, target_time, self.node_zeros)
        out, e_st = self.model.decode(self.model.encode(x), y_cov)  # B, T_out, N, 1; B, N, d_st
        return to_raw_space(out[..., 0] * self.std + self.mean, self.log1p), e_st  # B, T_out, N raw units
