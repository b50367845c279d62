"""HimNet: heterogeneity-informed meta-parameter network (KDD 2024), as specified in
``../shared/docs/himnet-model.md``.

Parameters of a meta-parameter convolution depend only on an embedding, never on the recurrent
step, so they are generated once per forward pass (spatial ones once per model in eval mode)
and applied at every step with plain batched matrix products; ONNX Runtime turns those into
MatMul/Gemm rather than Einsum. State-dict keys and shapes are the official ones.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import HimNetConfig

Axis = Literal["none", "S", "T", "ST"]

# Contraction order of an ST convolution (``contraction="auto"``). Applying generated per-(sample,
# node) weights is a batched mat-vec bound by memory bandwidth: it wins only while one pass's
# weights (B·N·KC·O floats) stay in cache, i.e. at batch 1 for METR-LA (3.6 M floats). Past that,
# and always in training (where every step would also write a B·N·KC·O weight gradient), the
# pool-first order — one GEMM (B·N, D·KC) @ (D·KC, O) per step — is faster and lighter.
GENERATE_LIMIT = 4 * 1024 * 1024


class Generated(NamedTuple):
    """Parameters of one convolution for one forward pass, in the layout its axis applies.

    none: weight KC, O; S: N, KC, O; T: B, KC, O; ST: B, N, KC, O (or, in the pool-first order,
    ``weight`` the pool as KC, D·O and ``pool_emb`` the embedding as N, 1, D for S and B, N, 1, D
    for ST). ``bias`` matches without the KC axis.
    """

    weight: Tensor
    bias: Tensor
    pool_emb: Tensor | None = None


def chebyshev_terms(x: Tensor, graph: Tensor, cheb_k: int) -> Tensor:
    """Concatenate ``T_k(S) x`` for k = 0..K-1 along features (k-major): B, N, K·C.

    ``graph`` is N, N (shared) or B, N, N (per sample). ``T_0 x = x`` needs no identity matrix.
    """
    terms = [x, torch.matmul(graph, x)]  # B, N, C each
    for _ in range(2, cheb_k):
        terms.append(2 * torch.matmul(graph, terms[-1]) - terms[-2])
    return torch.cat(terms, dim=-1)


def adaptive_graph(emb: Tensor) -> Tensor:
    """Row-softmax of relu(E Eᵀ): N, D -> N, N or B, N, D -> B, N, N."""
    return torch.softmax(F.relu(torch.matmul(emb, emb.transpose(-1, -2))), dim=-1)


class HimGCN(nn.Module):
    """Graph convolution whose weights are plain (axis none) or generated from an embedding."""

    def __init__(self, in_dim: int, out_dim: int, cheb_k: int, embed_dim: int, axis: Axis,
                 contraction: str = "auto") -> None:
        super().__init__()
        self.axis, self.cheb_k, self.out_dim, self.contraction = axis, cheb_k, out_dim, contraction
        kc = cheb_k * in_dim
        self.kc = kc
        if axis == "none":
            self.weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(kc, out_dim)))
            self.bias = nn.Parameter(torch.zeros(out_dim))
        else:
            self.weights_pool = nn.Parameter(nn.init.xavier_normal_(torch.empty(embed_dim, kc, out_dim)))
            self.bias_pool = nn.Parameter(nn.init.xavier_normal_(torch.empty(embed_dim, out_dim)))

    def generate(self, emb: Tensor | None) -> Generated:
        """Weights for this pass. emb: None (none), N, D (S), B, D (T) or B, N, D (ST)."""
        if self.axis == "none":
            return Generated(self.weights, self.bias)
        assert emb is not None
        d, kc, o = self.weights_pool.shape
        bias = torch.matmul(emb, self.bias_pool)  # ..., O
        if self._pool_first(emb):
            # Pool-first order: (X_g @ P) then the embedding, never materialising (B·)N·KC·O weights.
            pool = self.weights_pool.permute(1, 0, 2).reshape(kc, d * o)  # KC, D·O
            return Generated(pool, bias, emb.unsqueeze(-2))  # pool_emb: N, 1, D (S) or B, N, 1, D (ST)
        weight = torch.matmul(emb, self.weights_pool.reshape(d, kc * o))  # ..., KC·O
        return Generated(weight.reshape(emb.shape[:-1] + (kc, o)), bias)

    def _pool_first(self, emb: Tensor) -> bool:
        if self.axis == "S":
            return self.contraction == "pool_all"
        if self.axis != "ST":
            return False
        if self.contraction != "auto":
            return self.contraction in ("pool", "pool_all")
        b, n, _ = emb.shape
        return self.training or b * n * self.kc * self.out_dim > GENERATE_LIMIT

    def forward(self, x: Tensor, graph: Tensor, p: Generated) -> Tensor:
        """x: B, N, C -> B, N, O."""
        xg = chebyshev_terms(x, graph, self.cheb_k)  # B, N, KC
        if self.axis == "none":
            return torch.matmul(xg, p.weight) + p.bias
        if p.pool_emb is not None:  # S or ST, pool first
            b, n, kc = xg.shape
            per_d = torch.matmul(xg.reshape(b * n, kc), p.weight)  # B·N, D·O: one GEMM
            per_d = per_d.reshape(b, n, p.pool_emb.shape[-1], self.out_dim)  # B, N, D, O
            # (N or B, N), 1, D @ B, N, D, O -> B, N, 1, O
            return torch.matmul(p.pool_emb, per_d).squeeze(-2) + p.bias
        if self.axis == "S":  # weight N, KC, O
            return torch.matmul(xg.transpose(0, 1), p.weight).transpose(0, 1) + p.bias
        if self.axis == "T":  # weight B, KC, O
            return torch.matmul(xg, p.weight) + p.bias.unsqueeze(1)
        # ST, generated: B, N, 1, KC @ B, N, KC, O
        return torch.matmul(xg.unsqueeze(-2), p.weight).squeeze(-2) + p.bias


class HimGCRU(nn.Module):
    """Graph-convolutional GRU cell built from two HimGCNs of the same axis."""

    def __init__(self, in_dim: int, hidden_dim: int, cheb_k: int, embed_dim: int, axis: Axis,
                 contraction: str = "auto") -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.gate = HimGCN(in_dim + hidden_dim, 2 * hidden_dim, cheb_k, embed_dim, axis, contraction)
        self.update = HimGCN(in_dim + hidden_dim, hidden_dim, cheb_k, embed_dim, axis, contraction)

    def generate(self, emb: Tensor | None) -> tuple[Generated, Generated]:
        return self.gate.generate(emb), self.update.generate(emb)

    def forward(self, x: Tensor, h: Tensor, graph: Tensor, params: tuple[Generated, Generated]) -> Tensor:
        """x: B, N, C; h: B, N, H -> new h: B, N, H."""
        zr = torch.sigmoid(self.gate(torch.cat([x, h], dim=-1), graph, params[0]))  # B, N, 2H
        z, r = zr.split(self.hidden_dim, dim=-1)
        c = torch.tanh(self.update(torch.cat([x, z * h], dim=-1), graph, params[1]))  # B, N, H
        return r * h + (1 - r) * c


class Encoder(nn.Module):
    """``num_layers`` stacked cells over the input steps; returns the top layer's last state."""

    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int, cheb_k: int, embed_dim: int,
                 axis: Axis, contraction: str = "auto") -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.cells = nn.ModuleList(
            HimGCRU(in_dim if i == 0 else hidden_dim, hidden_dim, cheb_k, embed_dim, axis, contraction)
            for i in range(num_layers)
        )

    def generate(self, emb: Tensor | None) -> list[tuple[Generated, Generated]]:
        return [cell.generate(emb) for cell in self.cells]

    def forward(self, x: Tensor, graph: Tensor, params: list[tuple[Generated, Generated]]) -> Tensor:
        """x: B, T, N, C -> B, N, H."""
        b, _, n, _ = x.shape
        seq = list(x.unbind(1))  # T × (B, N, C): layer l+1 reads layer l's states
        for cell, p in zip(self.cells, params):
            h = x.new_zeros(b, n, self.hidden_dim)
            states = []
            for inp in seq:
                h = cell(inp, h, graph, p)
                states.append(h)
            seq = states
        return seq[-1]


class Decoder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int, cheb_k: int, embed_dim: int,
                 axis: Axis, contraction: str) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            HimGCRU(in_dim if i == 0 else hidden_dim, hidden_dim, cheb_k, embed_dim, axis, contraction)
            for i in range(num_layers)
        )

    def generate(self, emb: Tensor | None) -> list[tuple[Generated, Generated]]:
        return [cell.generate(emb) for cell in self.cells]


class HimNet(nn.Module):
    """Encoder (spatial + temporal) / decoder (spatiotemporal) HimNet.

    forward(x: B, T_in, N, 3; y_cov: B, T_out, N, 2) -> B, T_out, N, output_dim (scaled units).
    """

    def __init__(self, config: HimNetConfig) -> None:
        super().__init__()
        self.config = c = config
        ab = c.ablation
        self.uses_time_tables = ab not in ("no_e_t", "no_tmp")
        if self.uses_time_tables:
            self.tod_embedding = nn.Embedding(c.steps_per_day, c.tod_embedding_dim)
            self.dow_embedding = nn.Embedding(7, c.dow_embedding_dim)
        if ab == "no_e_s":
            self.register_buffer("node_embedding", torch.ones(c.num_nodes, c.node_embedding_dim),
                                 persistent=False)
        else:
            self.node_embedding = nn.Parameter(
                nn.init.xavier_normal_(torch.empty(c.num_nodes, c.node_embedding_dim)))
        self.encoder_s = Encoder(c.input_dim, c.hidden_dim, c.num_layers, c.cheb_k, c.node_embedding_dim,
                                 "none" if ab == "no_smp" else "S", c.contraction)
        self.encoder_t = Encoder(c.input_dim, c.hidden_dim, c.num_layers, c.cheb_k,
                                 c.temporal_embedding_dim, "none" if ab == "no_tmp" else "T")
        self.decoder = Decoder(c.output_dim + c.ycov_dim, c.hidden_dim, c.num_layers, c.cheb_k,
                               c.st_embedding_dim, "none" if ab == "no_stmp" else "ST", c.contraction)
        self.out_proj = nn.Linear(c.hidden_dim, c.output_dim)
        if ab != "no_e_st":
            self.st_proj = nn.Linear(c.hidden_dim, c.st_embedding_dim)
        self._static: tuple[Tensor, list] | None = None

    # --- caching of what depends on parameters only (graph A, S-axis weights) -------------------
    def train(self, mode: bool = True) -> HimNet:
        self._static = None
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):  # .to(), .cuda(), .half() invalidate the cache
        self._static = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._static = None
        super()._load_from_state_dict(*args, **kwargs)

    def static_parts(self) -> tuple[Tensor, list[tuple[Generated, Generated]]]:
        """Learned graph A (N, N) and the spatial encoder's generated weights.

        Cached in eval mode without autograd (they depend on parameters only); recomputed
        otherwise so gradients flow.
        """
        if self._static is not None:
            return self._static
        emb = self.node_embedding  # N, D_s
        parts = (adaptive_graph(emb), self.encoder_s.generate(emb))
        if not self.training and not torch.is_grad_enabled():
            self._static = parts
        return parts

    def temporal_embedding(self, x: Tensor) -> Tensor:
        """e_t from the last input step at node 0: B, d_tod + d_dow."""
        c = self.config
        if not self.uses_time_tables:
            return x.new_ones(x.shape[0], c.temporal_embedding_dim)
        slot = (x[:, -1, 0, 1] * c.steps_per_day).long()  # float32 product, truncated
        dow = x[:, -1, 0, 2].long()
        return torch.cat([self._lookup(self.tod_embedding, slot), self._lookup(self.dow_embedding, dow)], dim=-1)

    @staticmethod
    def _lookup(table: nn.Embedding, index: Tensor) -> Tensor:
        """Rows of ``table`` for ``index`` (B) -> B, d; a width-0 table is skipped, not indexed.

        A (7, 0) day-of-week table (``dow_embedding_dim = 0``) keeps the official state-dict
        layout, but CUDA's embedding backward on it hits an illegal memory access (H200, torch 2.11).
        """
        if table.embedding_dim == 0:
            return index.new_zeros(index.shape[0], 0, dtype=table.weight.dtype)
        return table(index)

    def encode(self, x: Tensor) -> Tensor:
        """x: B, T_in, N, 3 -> h = H_s + H_t at the last step: B, N, H."""
        graph, s_params = self.static_parts()
        e_t = self.temporal_embedding(x)
        h_s = self.encoder_s(x, graph, s_params)
        h_t = self.encoder_t(x, graph, self.encoder_t.generate(e_t))
        return h_s + h_t

    def st_embedding(self, h: Tensor) -> Tensor:
        """E_st: B, N, d_st."""
        if self.config.ablation == "no_e_st":
            return h.new_ones(h.shape[0], h.shape[1], self.config.st_embedding_dim)
        return self.st_proj(h)

    def decode(self, h: Tensor, y_cov: Tensor, labels: Tensor | None = None,
               p_teacher: float = 0.0) -> tuple[Tensor, Tensor]:
        """The decoder loop, shared by training's ``forward`` and the served graph.

        h: B, N, H (encoder state); y_cov: B, T_out, N, ycov; labels: B, T_out, N, out (scaled, used
        with probability ``p_teacher`` per step) -> (B, T_out, N, out scaled forecast, E_st B, N, d_st).
        E_st is returned because serving outputs it and must not encode twice to get it.
        """
        e_st = self.st_embedding(h)  # B, N, d_st
        graph_st = adaptive_graph(e_st)  # B, N, N
        params = self.decoder.generate(e_st)
        states = [h] * len(self.decoder.cells)
        go = h.new_zeros(h.shape[0], h.shape[1], self.config.output_dim)  # B, N, out
        outputs = []
        for t in range(self.config.out_steps):
            inp = torch.cat([go, y_cov[:, t]], dim=-1)  # B, N, out + ycov
            for i, cell in enumerate(self.decoder.cells):
                states[i] = cell(inp, states[i], graph_st, params[i])
                inp = states[i]
            go = self.out_proj(inp)  # B, N, out
            outputs.append(go)
            if labels is not None and float(torch.rand(())) < p_teacher:  # one draw per step, as before
                go = labels[:, t]
        return torch.stack(outputs, dim=1), e_st  # B, T_out, N, out

    def forward(self, x: Tensor, y_cov: Tensor, labels: Tensor | None = None,
                batches_seen: int = 0) -> Tensor:
        """x: B, T_in, N, 3; y_cov: B, T_out, N, 2 -> B, T_out, N, out (scaled units).

        Teacher forcing (training only) feeds the label instead of the forecast with a
        probability that decays with ``batches_seen``, as the official code does.
        """
        c = self.config
        teacher = self.training and c.use_teacher_forcing and labels is not None
        p_teacher = c.tf_decay_steps / (c.tf_decay_steps + math.exp(batches_seen / c.tf_decay_steps)) \
            if teacher else 0.0
        out, _ = self.decode(self.encode(x), y_cov, labels if teacher else None, p_teacher)
        return out

    @classmethod
    def from_official(cls, state_dict: dict[str, Tensor], model_args: dict, **overrides) -> HimNet:
        """Build from official constructor arguments and load an official state dict unchanged."""
        args = dict(model_args)
        args.setdefault("in_steps", 12)
        model = cls(HimNetConfig.from_dict({**args, **overrides}))
        model.load_state_dict(state_dict)
        return model
