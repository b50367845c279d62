"""A second HimNet, written straight from ``../shared/docs/himnet-model.md`` and nothing else.

Deliberately naive, like the straightforward implementation the spec describes: every
convolution regenerates its parameters from the embedding at every recurrent step, builds the
Chebyshev matrices including the identity ``T_0 = I`` and multiplies by them, and contracts with
``einsum``. It shares only the state-dict layout with ``model.himnet`` (so one state dict drives
both) and serves as the independent oracle for tests and the baseline for benchmarks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.config import HimNetConfig


class NaiveGCN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, d: int, axis: str) -> None:
        super().__init__()
        self.k, self.axis = k, axis
        if axis == "none":
            self.weights = nn.Parameter(torch.randn(k * c_in, c_out) * 0.1)
            self.bias = nn.Parameter(torch.zeros(c_out))
        else:
            self.weights_pool = nn.Parameter(torch.randn(d, k * c_in, c_out) * 0.1)
            self.bias_pool = nn.Parameter(torch.randn(d, c_out) * 0.1)

    def forward(self, x: Tensor, graph: Tensor, emb: Tensor | None) -> Tensor:
        # Chebyshev matrices, identity included: T_0 = I, T_1 = S, T_k = 2 S T_{k-1} - T_{k-2}
        n = x.shape[1]
        eye = torch.eye(n, dtype=x.dtype, device=x.device).expand_as(graph)
        mats = [eye, graph]
        for _ in range(2, self.k):
            mats.append(2 * graph @ mats[-1] - mats[-2])
        if graph.dim() == 2:
            x_g = torch.cat([torch.einsum("nm,bmc->bnc", t, x) for t in mats], dim=-1)
        else:
            x_g = torch.cat([torch.einsum("bnm,bmc->bnc", t, x) for t in mats], dim=-1)
        if self.axis == "none":
            return torch.einsum("bni,io->bno", x_g, self.weights) + self.bias
        if self.axis == "S":
            w = torch.einsum("nd,dio->nio", emb, self.weights_pool)
            return torch.einsum("bni,nio->bno", x_g, w) + emb @ self.bias_pool
        if self.axis == "T":
            w = torch.einsum("bd,dio->bio", emb, self.weights_pool)
            return torch.einsum("bni,bio->bno", x_g, w) + (emb @ self.bias_pool)[:, None, :]
        w = torch.einsum("bnd,dio->bnio", emb, self.weights_pool)
        return torch.einsum("bni,bnio->bno", x_g, w) + emb @ self.bias_pool


class NaiveCell(nn.Module):
    def __init__(self, c_in: int, hidden: int, k: int, d: int, axis: str) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate = NaiveGCN(c_in + hidden, 2 * hidden, k, d, axis)
        self.update = NaiveGCN(c_in + hidden, hidden, k, d, axis)

    def forward(self, x: Tensor, h: Tensor, graph: Tensor, emb: Tensor | None) -> Tensor:
        zr = torch.sigmoid(self.gate(torch.cat((x, h), -1), graph, emb))
        z, r = zr[..., : self.hidden], zr[..., self.hidden :]
        cand = torch.tanh(self.update(torch.cat((x, z * h), -1), graph, emb))
        return r * h + (1 - r) * cand


class NaiveStack(nn.Module):
    def __init__(self, c_in: int, hidden: int, layers: int, k: int, d: int, axis: str) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            NaiveCell(c_in if i == 0 else hidden, hidden, k, d, axis) for i in range(layers)
        )


class NaiveHimNet(nn.Module):
    """Same constructor config, same state-dict keys, same function as ``model.HimNet``."""

    def __init__(self, config: HimNetConfig) -> None:
        super().__init__()
        c = self.config = config
        ab = c.ablation
        d_t = c.tod_embedding_dim + c.dow_embedding_dim
        if ab not in ("no_e_t", "no_tmp"):
            self.tod_embedding = nn.Embedding(c.steps_per_day, c.tod_embedding_dim)
            self.dow_embedding = nn.Embedding(7, c.dow_embedding_dim)
        if ab != "no_e_s":
            self.node_embedding = nn.Parameter(torch.randn(c.num_nodes, c.node_embedding_dim))
        self.encoder_s = NaiveStack(c.input_dim, c.hidden_dim, c.num_layers, c.cheb_k,
                                    c.node_embedding_dim, "none" if ab == "no_smp" else "S")
        self.encoder_t = NaiveStack(c.input_dim, c.hidden_dim, c.num_layers, c.cheb_k, d_t,
                                    "none" if ab == "no_tmp" else "T")
        self.decoder = NaiveStack(c.output_dim + c.ycov_dim, c.hidden_dim, c.num_layers, c.cheb_k,
                                  c.st_embedding_dim, "none" if ab == "no_stmp" else "ST")
        self.out_proj = nn.Linear(c.hidden_dim, c.output_dim)
        if ab != "no_e_st":
            self.st_proj = nn.Linear(c.hidden_dim, c.st_embedding_dim)

    def _run_encoder(self, stack: NaiveStack, x: Tensor, graph: Tensor, emb: Tensor | None) -> Tensor:
        seq = x
        for cell in stack.cells:
            h = x.new_zeros(x.shape[0], x.shape[2], self.config.hidden_dim)
            out = []
            for t in range(seq.shape[1]):
                h = cell(seq[:, t], h, graph, emb)
                out.append(h)
            seq = torch.stack(out, 1)
        return seq[:, -1]

    def forward(self, x: Tensor, y_cov: Tensor, labels: Tensor | None = None,
                batches_seen: int = 0) -> Tensor:
        c = self.config
        b = x.shape[0]
        if c.ablation == "no_e_s":
            e_s = x.new_ones(c.num_nodes, c.node_embedding_dim)
        else:
            e_s = self.node_embedding
        graph = torch.softmax(torch.relu(e_s @ e_s.T), dim=1)
        if c.ablation in ("no_e_t", "no_tmp"):
            e_t = x.new_ones(b, c.tod_embedding_dim + c.dow_embedding_dim)
        else:
            slot = (x[:, -1, 0, 1] * c.steps_per_day).long()
            e_t = torch.cat((self.tod_embedding(slot), self.dow_embedding(x[:, -1, 0, 2].long())), -1)
        h = self._run_encoder(self.encoder_s, x, graph, e_s) + self._run_encoder(self.encoder_t, x, graph, e_t)
        if c.ablation == "no_e_st":
            e_st = x.new_ones(b, c.num_nodes, c.st_embedding_dim)
        else:
            e_st = self.st_proj(h)
        graph_st = torch.softmax(torch.relu(torch.einsum("bnd,bmd->bnm", e_st, e_st)), dim=2)
        hs = [h for _ in range(c.num_layers)]
        go = x.new_zeros(b, c.num_nodes, c.output_dim)
        outs = []
        for t in range(c.out_steps):
            inp = torch.cat((go, y_cov[:, t]), -1)
            for i, cell in enumerate(self.decoder.cells):
                hs[i] = cell(inp, hs[i], graph_st, e_st)
                inp = hs[i]
            go = self.out_proj(inp)
            outs.append(go)
            if self.training and c.use_teacher_forcing and labels is not None:
                tau = c.tf_decay_steps
                if float(torch.rand(())) < tau / (tau + math.exp(batches_seen / tau)):
                    go = labels[:, t]
        return torch.stack(outs, 1)
