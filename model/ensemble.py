"""What an ensemble bundle's ``model.onnx`` computes: K HimNet members run together, in one graph.

``EnsembleHimNet`` takes K :class:`~model.serving.ServingHimNet` members (same config, scaler and
sensors; different seeds) and stacks every weight on a leading member axis K. Each operation of
``HimNet.encode``/``decode`` is then one batched op over all members (matmul broadcasting over
K), not K sequential calls: the graph has the size of one member's graph, with K-times larger
tensors.

Why not ``torch.func.vmap(functional_call)`` over ``stack_module_state``: it runs in eager
PyTorch (forecasts within 1.2e-5 of the members' own), but neither exporter path we ship can
trace it: ``functional_call`` refuses to run under ``torch.jit.trace`` ("The stateless API
can't be used with Jitted modules"), and with the weights swapped in by hand the tracer fails
on the batched tensors' shapes (``x.shape`` -> "Unsupported value kind: Tensor"; torch 2.13).

Each member computes what it computes alone: the same operations in the same order, with its
own weights; the static parts (graph A, the spatial encoder's generated weights) are the ones
each member's ``ServingHimNet`` cached, stacked, so they are constants of the graph.
``tests/model/test_ensemble.py`` checks every member against its own ``ServingHimNet``.

Outputs (``forward``):

- ``forecast`` B × T_out × N: the members' mean (raw units), so a service that knows nothing of
  ensembles serves the ensemble unchanged;
- ``st_embedding`` B × N × d_st: member 0's. Members trained from different seeds learn
  embedding spaces that are not aligned (any rotation of one is as good), so an average of them
  is no embedding of any model; member 0's is a real one, consistent with member 0's forecast;
- ``spread`` B × T_out × N: the members' standard deviation (population form, divisor K, so
  it is defined for every K and is 0 when the members agree), for interval work;
- ``member_forecasts`` B × K × T_out × N: each member's forecast, so the export's parity
  check can compare every member in the exported file against eager PyTorch. ONNX Runtime
  computes them anyway (the mean needs them); a caller that does not ask gets no copy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.himnet import GENERATE_LIMIT, Generated, HimGCN, HimNet, chebyshev_terms, adaptive_graph
from model.scaling import to_model_space, to_raw_space
from model.serving import ServingConfigError, ServingHimNet, assemble_inputs

ENSEMBLE_OUTPUTS = ("forecast", "st_embedding", "spread", "member_forecasts")


def _stack(tensors: list[Tensor]) -> Tensor:
    return torch.stack([t.detach() for t in tensors]).contiguous()


class StackedGCN(nn.Module):
    """K members' :class:`~model.himnet.HimGCN` (one axis), weights stacked on a leading K.

    Layouts of :class:`Generated` with the member axis first: none: K, KC, O; S: K, N, KC, O
    (pool first: ``weight`` K, KC, D·O and ``pool_emb`` K, N, 1, D); T: K, B, KC, O; ST: K, B, N, KC, O (pool first: ``weight`` K, KC, D·O and ``pool_emb``
    K·B·N, 1, D). ``bias`` matches without the KC axis.
    """

    def __init__(self, gcns: list[HimGCN]) -> None:
        super().__init__()
        g = gcns[0]
        self.axis, self.cheb_k, self.kc, self.out_dim, self.contraction = (
            g.axis, g.cheb_k, g.kc, g.out_dim, g.contraction)
        if self.axis == "none":
            self.register_buffer("weights", _stack([m.weights for m in gcns]))  # K, KC, O
            self.register_buffer("bias", _stack([m.bias for m in gcns]))  # K, O
        elif self.axis != "S":  # S-axis weights come precomputed (the static parts)
            self.register_buffer("weights_pool", _stack([m.weights_pool for m in gcns]))  # K, D, KC, O
            self.register_buffer("bias_pool", _stack([m.bias_pool for m in gcns]))  # K, D, O

    def generate(self, emb: Tensor | None) -> Generated:
        """Weights for this pass. emb: None (none), K, B, D (T) or K, B, N, D (ST)."""
        if self.axis == "none":
            return Generated(self.weights, self.bias)
        assert emb is not None and self.axis in ("T", "ST")
        k, d, kc, o = self.weights_pool.shape
        lead = emb.shape[:-1]  # K, B (T) or K, B, N (ST)
        flat = emb.reshape(k, -1, d)  # K, B(·N), D
        bias = torch.matmul(flat, self.bias_pool).reshape(lead + (o,))  # K, B(, N), O
        if self.axis == "ST" and self._pool_first(emb):
            pool = self.weights_pool.permute(0, 2, 1, 3).reshape(k, kc, d * o)  # K, KC, D·O
            return Generated(pool, bias, emb.reshape(-1, 1, d))  # pool_emb K·B·N, 1, D
        weight = torch.matmul(flat, self.weights_pool.reshape(k, d, kc * o))  # K, B(·N), KC·O
        return Generated(weight.reshape(lead + (kc, o)), bias)

    def _pool_first(self, emb: Tensor) -> bool:
        """HimGCN's rule, judged on one member's tensors (what the member alone would choose)."""
        if self.contraction != "auto":
            return self.contraction in ("pool", "pool_all")
        _, b, n, _ = emb.shape
        return b * n * self.kc * self.out_dim > GENERATE_LIMIT

    def forward(self, x: Tensor, graph: Tensor, p: Generated) -> Tensor:
        """x: K, B, N, C; graph: K, 1, N, N or K, B, N, N -> K, B, N, O."""
        xg = chebyshev_terms(x, graph, self.cheb_k)  # K, B, N, KC
        if self.axis == "none":
            return torch.matmul(xg, p.weight.unsqueeze(1)) + p.bias[:, None, None]
        if self.axis == "S" and p.pool_emb is not None:  # pool first: weight K, KC, D·O; pool_emb K, N, 1, D
            k, b, n, kc = xg.shape
            per_d = torch.matmul(xg.reshape(k, b * n, kc), p.weight)  # K, B·N, D·O
            per_d = per_d.reshape(k, b, n, p.pool_emb.shape[-1], self.out_dim)  # K, B, N, D, O
            return torch.matmul(p.pool_emb.unsqueeze(1), per_d).squeeze(-2) + p.bias.unsqueeze(1)
        if self.axis == "S":  # weight K, N, KC, O
            return torch.matmul(xg.transpose(1, 2), p.weight).transpose(1, 2) + p.bias.unsqueeze(1)
        if self.axis == "T":  # weight K, B, KC, O
            return torch.matmul(xg, p.weight) + p.bias.unsqueeze(2)
        if p.pool_emb is not None:  # ST, pool first
            k, b, n, kc = xg.shape
            per_d = torch.matmul(xg.reshape(k, b * n, kc), p.weight)  # K, B·N, D·O
            per_d = per_d.reshape(k * b * n, p.pool_emb.shape[-1], self.out_dim)  # K·B·N, D, O
            return torch.bmm(p.pool_emb, per_d).reshape(k, b, n, self.out_dim) + p.bias
        return torch.matmul(xg.unsqueeze(-2), p.weight).squeeze(-2) + p.bias  # ST, generated


class StackedGCRU(nn.Module):
    """K members' graph-convolutional GRU cells (``HimGCRU``'s arithmetic, member axis first)."""

    def __init__(self, cells: list[nn.Module]) -> None:
        super().__init__()
        self.hidden_dim = cells[0].hidden_dim
        self.gate = StackedGCN([c.gate for c in cells])
        self.update = StackedGCN([c.update for c in cells])

    def generate(self, emb: Tensor | None) -> tuple[Generated, Generated]:
        return self.gate.generate(emb), self.update.generate(emb)

    def forward(self, x: Tensor, h: Tensor, graph: Tensor, params: tuple[Generated, Generated]) -> Tensor:
        """x: K, B, N, C; h: K, B, N, H -> new h: K, B, N, H."""
        zr = torch.sigmoid(self.gate(torch.cat([x, h], dim=-1), graph, params[0]))  # K, B, N, 2H
        z, r = zr.split(self.hidden_dim, dim=-1)
        c = torch.tanh(self.update(torch.cat([x, z * h], dim=-1), graph, params[1]))  # K, B, N, H
        return r * h + (1 - r) * c


def _stacked_cells(modules: list[nn.Module]) -> nn.ModuleList:
    return nn.ModuleList(StackedGCRU([m.cells[i] for m in modules]) for i in range(len(modules[0].cells)))


def _run_encoder(cells: nn.ModuleList, x: Tensor, graph: Tensor, params: list) -> Tensor:
    """``Encoder.forward`` with the member axis: x K, B, T, N, C -> K, B, N, H."""
    k, b, _, n, _ = x.shape
    seq = list(x.unbind(2))  # T × (K, B, N, C)
    for cell, p in zip(cells, params):
        h = x.new_zeros(k, b, n, cell.hidden_dim)
        states = []
        for inp in seq:
            h = cell(inp, h, graph, p)
            states.append(h)
        seq = states
    return seq[-1]


class StackedLinear(nn.Module):
    """K members' ``nn.Linear`` applied to K, B, N, I -> K, B, N, O."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.register_buffer("weight_t", _stack([m.weight.t() for m in layers]).unsqueeze(1))  # K, 1, I, O
        self.register_buffer("bias", _stack([m.bias for m in layers])[:, None, None])  # K, 1, 1, O

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x, self.weight_t) + self.bias


def _same_scaling(a: ServingHimNet, b: ServingHimNet) -> bool:
    """The same scaling in two serving modules: global floats or per-sensor buffers, and log1p."""
    if a.log1p != b.log1p or isinstance(a.mean, Tensor) != isinstance(b.mean, Tensor):
        return False
    if isinstance(a.mean, Tensor):
        return bool(torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std))
    return (a.mean, a.std) == (b.mean, b.std)


class EnsembleHimNet(nn.Module):
    """K HimNet members in serving form, run as one batched graph (outputs: module docstring).

    forward(readings B×T_in×N, input_time B×T_in×2, target_time B×T_out×2)
        -> (forecast B×T_out×N, st_embedding B×N×d_st, spread B×T_out×N, member_forecasts B×K×T_out×N)
    """

    def __init__(self, members: list[ServingHimNet]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ServingConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            if m.model.config != first.model.config:
                raise ServingConfigError(f"member {i} has another model config than member 0")
            if not _same_scaling(m, first):
                raise ServingConfigError(f"member {i} has another scaler than member 0 (mean, std "
                                         "or log1p differ)")
        models: list[HimNet] = [m.model for m in members]
        self.config = first.model.config
        self.members = len(members)
        self.log1p = first.log1p
        if isinstance(first.mean, Tensor):  # per sensor: 1×1×N buffers, as in ServingHimNet
            self.register_buffer("mean", first.mean.detach().clone())
            self.register_buffer("std", first.std.detach().clone())
        else:
            self.mean, self.std = first.mean, first.std
        self.uses_time_tables = models[0].uses_time_tables
        self.register_buffer("node_zeros", torch.zeros(1, 1, self.config.num_nodes, 1))
        self._register_static_parts(members)
        if self.uses_time_tables:
            self.register_buffer("tod_table", _stack([m.tod_embedding.weight for m in models]))  # K, S, d_tod
            self.register_buffer("dow_table", _stack([m.dow_embedding.weight for m in models]))  # K, 7, d_dow
        self.encoder_s = _stacked_cells([m.encoder_s for m in models])
        self.encoder_t = _stacked_cells([m.encoder_t for m in models])
        self.decoder = _stacked_cells([m.decoder for m in models])
        self.out_proj = StackedLinear([m.out_proj for m in models])
        self.st_proj = StackedLinear([m.st_proj for m in models]) if self.config.ablation != "no_e_st" else None

    def _register_static_parts(self, members: list[ServingHimNet]) -> None:
        """Each member's cached graph A and spatial weights (``ServingHimNet`` computed them once),
        stacked as buffers: constants of the graph, stored once, shared by every step."""
        statics = [m.model.static_parts() for m in members]  # cached: eval mode, no grad
        self.register_buffer("static_graph", _stack([g for g, _ in statics]).unsqueeze(1))  # K, 1, N, N
        self._static_names: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        for layer in range(len(statics[0][1])):
            names = []
            for which in range(2):  # gate, update
                fields = [f for f in Generated._fields if getattr(statics[0][1][layer][which], f) is not None]
                for field in fields:  # weight, bias (and pool_emb in the pool-first order)
                    self.register_buffer(f"static_s{layer}_{which}_{field}",
                                         _stack([getattr(s[layer][which], field) for _, s in statics]))
                names.append(tuple(f"static_s{layer}_{which}_{field}" for field in fields))
            self._static_names.append(tuple(names))  # type: ignore[arg-type]

    def _spatial_params(self) -> list[tuple[Generated, Generated]]:
        return [tuple(Generated(*(getattr(self, name) for name in names)) for names in layer)  # type: ignore[misc]
                for layer in self._static_names]

    def _temporal_embedding(self, x: Tensor) -> Tensor:
        """e_t per member from the last input step at node 0: x B, T, N, 3 -> K, B, d_tod + d_dow."""
        c = self.config
        if not self.uses_time_tables:
            return x.new_ones(self.members, x.shape[0], c.temporal_embedding_dim)
        slot = (x[:, -1, 0, 1] * c.steps_per_day).long()  # float32 product, truncated (as HimNet)
        dow = x[:, -1, 0, 2].long()
        parts = [table.index_select(1, index) if table.shape[-1] else
                 x.new_zeros(self.members, x.shape[0], 0)  # width-0 table: skipped, as HimNet does
                 for table, index in ((self.tod_table, slot), (self.dow_table, dow))]
        return torch.cat(parts, dim=-1)  # K, B, d_t

    def encode(self, x: Tensor) -> Tensor:
        """x: B, T_in, N, 3 -> h = H_s + H_t: K, B, N, H."""
        xk = x.unsqueeze(0).expand((self.members,) + x.shape)  # K, B, T_in, N, 3
        e_t = self._temporal_embedding(x)  # K, B, d_t
        h_s = _run_encoder(self.encoder_s, xk, self.static_graph, self._spatial_params())
        h_t = _run_encoder(self.encoder_t, xk, self.static_graph, [c.generate(e_t) for c in self.encoder_t])
        return h_s + h_t

    def decode(self, h: Tensor, y_cov: Tensor) -> tuple[Tensor, Tensor]:
        """``HimNet.decode`` without teacher forcing: h K, B, N, H; y_cov B, T_out, N, 2
        -> (K, B, T_out, N scaled forecasts, E_st K, B, N, d_st)."""
        k, b, n, _ = h.shape
        if self.st_proj is None:
            e_st = h.new_ones(k, b, n, self.config.st_embedding_dim)
        else:
            e_st = self.st_proj(h)  # K, B, N, d_st
        graph_st = adaptive_graph(e_st)  # K, B, N, N
        params = [cell.generate(e_st) for cell in self.decoder]
        states = [h] * len(self.decoder)
        go = h.new_zeros(k, b, n, self.config.output_dim)  # K, B, N, 1
        cov = y_cov.unsqueeze(0).expand((k,) + y_cov.shape)  # K, B, T_out, N, 2
        outputs = []
        for t in range(self.config.out_steps):
            inp = torch.cat([go, cov[:, :, t]], dim=-1)  # K, B, N, 3
            for i, cell in enumerate(self.decoder):
                states[i] = cell(inp, states[i], graph_st, params[i])
                inp = states[i]
            go = self.out_proj(inp)  # K, B, N, 1
            outputs.append(go[..., 0])
        return torch.stack(outputs, dim=2), e_st  # K, B, T_out, N

    def forward(self, readings: Tensor, input_time: Tensor,
                target_time: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        scaled = (to_model_space(readings, self.log1p) - self.mean) / self.std  # B, T_in, N
        x, y_cov = assemble_inputs(scaled, input_time, target_time, self.node_zeros)
        out, e_st = self.decode(self.encode(x), y_cov)  # K, B, T_out, N; K, B, N, d_st
        raw = to_raw_space(out * self.std + self.mean, self.log1p)  # K, B, T_out, N raw units
        mean = raw.mean(dim=0)  # B, T_out, N
        spread = ((raw - mean) ** 2).mean(dim=0).sqrt()  # B, T_out, N, divisor K
        return mean, e_st[0], spread, raw.transpose(0, 1)
