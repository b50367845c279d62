"""Typed model config and the official presets (``../shared/docs/himnet-model.md``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Ablation = Literal["none", "no_e_t", "no_e_s", "no_e_st", "no_tmp", "no_smp", "no_stmp"]
ABLATIONS: tuple[str, ...] = ("none", "no_e_t", "no_e_s", "no_e_st", "no_tmp", "no_smp", "no_stmp")
Contraction = Literal["auto", "generate", "pool", "pool_all"]
# The orders an export can choose between (``auto`` is the in-training rule).
CONTRACTIONS: tuple[str, ...] = ("generate", "pool", "pool_all")


@dataclass(frozen=True)
class HimNetConfig:
    """Everything that fixes the network's shapes and behaviour.

    Field names follow the official constructor arguments so that an official
    ``model_args`` dict loads with :meth:`from_dict`.
    """

    num_nodes: int = 207
    input_dim: int = 3
    output_dim: int = 1
    in_steps: int = 12
    out_steps: int = 12
    hidden_dim: int = 64
    num_layers: int = 1
    cheb_k: int = 2
    ycov_dim: int = 2
    tod_embedding_dim: int = 8
    dow_embedding_dim: int = 8
    node_embedding_dim: int = 16
    st_embedding_dim: int = 16
    tf_decay_steps: float = 6000
    use_teacher_forcing: bool = True
    steps_per_day: int = 288
    ablation: Ablation = "none"
    # How a per-node convolution contracts input, embedding and pool: "generate" builds the
    # per-node weights (spatial ones once per model, ST ones once per forward); "pool" multiplies
    # the decoder's (ST) input with the pool first (smaller intermediate, D× the FLOPs);
    # "pool_all" does so in the spatial encoder too (wins at batch 1 once the N·KC·O spatial
    # weights outgrow the caches); "auto" keeps spatial weights generated and picks the ST order
    # by the size of the generated weights.
    contraction: Contraction = "auto"

    def __post_init__(self) -> None:
        if self.cheb_k < 2:
            raise ValueError(f"cheb_k must be >= 2, got {self.cheb_k}")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {self.ablation!r}; choose one of {ABLATIONS}")
        if self.contraction not in ("auto", *CONTRACTIONS):
            raise ValueError(f"unknown contraction {self.contraction!r}")
        for name in ("num_nodes", "input_dim", "output_dim", "in_steps", "out_steps", "hidden_dim",
                     "num_layers", "steps_per_day"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_dim < 3:
            raise ValueError("input_dim must be >= 3 (value, time of day, day of week)")

    @property
    def temporal_embedding_dim(self) -> int:
        return self.tod_embedding_dim + self.dow_embedding_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HimNetConfig:
        """Build from a dict, accepting the official argument names (``out_steps`` etc.)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown HimNet config keys: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> HimNetConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Preset:
    """An official configuration: the model plus the training settings that go with it."""

    name: str
    model: HimNetConfig
    weight_decay: float
    lr_milestones: tuple[int, ...]
    loss: Literal["masked_mae", "huber"]
    split: tuple[float, float, float]
    lr: float = 1e-3
    eps: float = 1e-3
    lr_decay: float = 0.1
    clip_grad_norm: float = 5.0
    batch_size: int = 16
    max_epochs: int = 200
    patience: int = 20
    extra: dict[str, Any] = field(default_factory=dict)


def _preset(name: str, n: int, *, hidden: int = 64, tod: int = 8, dow: int = 8, d_s: int = 16,
            d_st: int = 16, tau: float = 6000, wd: float, milestones: tuple[int, ...],
            loss: Literal["masked_mae", "huber"], split: tuple[float, float, float]) -> Preset:
    cfg = HimNetConfig(num_nodes=n, hidden_dim=hidden, tod_embedding_dim=tod, dow_embedding_dim=dow,
                       node_embedding_dim=d_s, st_embedding_dim=d_st, tf_decay_steps=tau)
    return Preset(name=name, model=cfg, weight_decay=wd, lr_milestones=milestones, loss=loss,
                  split=split)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset("metr-la", 207, wd=5e-4, milestones=(30, 40), loss="masked_mae", split=(0.7, 0.1, 0.2)),
        _preset("pems-bay", 325, wd=1e-4, milestones=(25, 35), loss="masked_mae", split=(0.7, 0.1, 0.2)),
        _preset("pems03", 358, tau=4000, wd=3e-4, milestones=(30, 50), loss="huber", split=(0.6, 0.2, 0.2)),
        _preset("pems04", 307, tod=12, dow=4, tau=4000, wd=1e-4, milestones=(30, 50), loss="huber",
                split=(0.6, 0.2, 0.2)),
        _preset("pems07", 883, wd=1e-4, milestones=(40, 60), loss="huber", split=(0.6, 0.2, 0.2)),
        _preset("pems08", 170, hidden=96, tod=10, dow=2, d_s=14, d_st=10, wd=0.0, milestones=(40, 60, 80),
                loss="huber", split=(0.6, 0.2, 0.2)),
    )
}


def get_preset(name: str) -> Preset:
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[key]
