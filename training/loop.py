"""The optimisation loop: teacher-forced HimNet training with early stopping and resume.

Follows the official protocol (``../shared/docs/himnet-model.md``): loss on inverse-scaled
outputs, Adam(lr, eps=1e-3, weight decay), MultiStepLR ×0.1, grad-norm clip 5, early stopping
on the validation loss with the best weights restored. A resume file written after every
epoch lets an interrupted run continue where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm import tqdm

from training.averaging import DEFAULT_EMA_DECAY, DEFAULT_SWA_EPOCHS, Averager, make_averager
from training.distributed import DistInfo, all_reduce_sum, broadcast_flag
from training.metrics import DEFAULT_MSE_WEIGHT, loss_terms
from training.windows import PreparedData, WindowDataset

log = logging.getLogger("himnet.train")
RESUME_FILE = "resume.pt"


@dataclass
class LoopSettings:
    """Optimisation settings, resolved from a preset plus overrides."""

    loss: str = "masked_mae"
    mse_weight: float = DEFAULT_MSE_WEIGHT  # the MSE part's weight in the mae_mse loss
    lr: float = 1e-3
    eps: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    clip_grad_norm: float = 5.0
    average: str = "none"  # weight averaging (training.averaging): none | ema | swa
    ema_decay: float = DEFAULT_EMA_DECAY
    swa_epochs: int = DEFAULT_SWA_EPOCHS
    swa_start: int = 1
    batch_size: int = 16
    eval_batch_size: int = 64
    max_epochs: int = 200
    patience: int = 20
    max_steps: int | None = None  # optimiser steps in total, across epochs
    max_time: float | None = None  # seconds of wall clock for the loop
    seed: int = 0
    progress: bool = True
    log_every: int = 50  # log the running loss every this many steps when there is no progress bar


@dataclass
class FitResult:
    epochs: int
    batches_seen: int
    best_epoch: int
    best_val_loss: float
    stopped_because: str
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(ds: WindowDataset, batch_size: int, sampler) -> DataLoader:
    """Whole batches gathered by ``WindowDataset.__getitem__(list)``; no per-sample collation."""
    return DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)


def shard_batches(ds: WindowDataset, batch_size: int, info: DistInfo) -> DataLoader:
    """This process's share of an evaluation split, without the padding DistributedSampler adds,
    so summed results over processes count every window exactly once."""
    indices = list(range(info.rank, len(ds), info.world_size))
    return _batches(ds, batch_size, indices)


@torch.no_grad()
def validation_loss(model: nn.Module, ds: WindowDataset, prepared: PreparedData, settings: LoopSettings,
                    info: DistInfo, device: torch.device) -> float:
    """The training loss on a split (eval mode, no teacher forcing), summed over processes."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, count
    for batch in shard_batches(ds, settings.eval_batch_size, info):
        batch = batch.to(device)
        pred = prepared.scaler.inverse(model(batch.x, batch.y_cov))  # B × T_out × N × 1
        total, count = loss_terms(settings.loss, pred, batch.target, prepared.data.missing,
                                   settings.mse_weight)
        sums += torch.stack([total.double(), count.double()])
    all_reduce_sum(sums, info)
    return float(sums[0] / sums[1]) if sums[1] > 0 else math.nan


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@dataclass
class _Progress:
    """Where the loop stands; what ``resume.pt`` saves besides model, optimiser and scheduler."""

    epoch: int = 0
    batches_seen: int = 0
    wait: int = 0  # epochs without improvement
    best_val: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0  # seconds spent in earlier runs of a resumed training
    early_stopped: bool = False  # read from resume.pt: the run it continues had stopped early


@dataclass
class _Run:
    """The pieces one training run uses."""

    model: nn.Module
    net: nn.Module  # the model, wrapped in DistributedDataParallel when distributed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    sampler: DistributedSampler
    loader: DataLoader
    prepared: PreparedData
    settings: LoopSettings
    info: DistInfo
    device: torch.device
    start_time: float
    averager: Averager | None = None  # what is validated and kept when weights are averaged

    def elapsed(self, progress: _Progress) -> float:
        return progress.elapsed_before + time.monotonic() - self.start_time


def fit(model: nn.Module, prepared: PreparedData, settings: LoopSettings, run_dir: Path, info: DistInfo,
        device: torch.device, resume: bool = False) -> FitResult:
    """Train ``model`` in place; on return it holds the best validation weights."""
    run = _start(model, prepared, settings, info, device)
    progress = _Progress(best_state=copy.deepcopy(model.state_dict()))
    resume_path = run_dir / RESUME_FILE
    if resume and resume_path.is_file():
        progress = _load_resume(run, resume_path)
        if progress.early_stopped:
            model.load_state_dict(progress.best_state)
            return FitResult(progress.epoch, progress.batches_seen, progress.best_epoch, progress.best_val,
                             "already early-stopped", progress.history, progress.elapsed_before)
    elif resume:
        log.info("no %s yet: starting from scratch", resume_path)

    stopped = "max epochs"
    while progress.epoch < settings.max_epochs:
        out_of_budget = _run_epoch(run, progress)
        if out_of_budget:
            stopped = out_of_budget
        elif progress.wait >= settings.patience:
            stopped = f"early stop ({settings.patience} epochs without improvement)"
        finished = bool(out_of_budget) or progress.wait >= settings.patience or progress.epoch >= settings.max_epochs
        if info.is_main:
            _save_resume(resume_path, _resume_state(run, progress))
        if finished:
            break
    model.load_state_dict(progress.best_state)
    seconds = run.elapsed(progress)
    if info.is_main:
        log.info("stopped: %s; best epoch %d (val %.4f); %.1fs", stopped, progress.best_epoch,
                 progress.best_val, seconds)
    return FitResult(progress.epoch, progress.batches_seen, progress.best_epoch, progress.best_val, stopped,
                     progress.history, seconds)


def _start(model: nn.Module, prepared: PreparedData, settings: LoopSettings, info: DistInfo,
           device: torch.device) -> _Run:
    """Model on its device (DDP-wrapped when distributed), Adam, the LR schedule, the train batches."""
    start_time = time.monotonic()
    train_ds = prepared.splits["train"]
    if len(prepared.splits["val"]) == 0:
        log.warning("no validation windows: early stopping watches the training loss")
    model.to(device)
    net: nn.Module = model
    if info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, eps=settings.eps,
                                 weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(settings.lr_milestones),
                                                     gamma=settings.lr_decay)
    sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=settings.seed)
    loader = _batches(train_ds, settings.batch_size, sampler)
    averager = make_averager(settings.average, model, settings.ema_decay, settings.swa_epochs, settings.swa_start)
    return _Run(model, net, optimizer, scheduler, sampler, loader, prepared, settings, info, device, start_time,
                averager)


def _load_resume(run: _Run, path: Path) -> _Progress:
    """Model, optimiser, scheduler, RNG and loop position from ``resume.pt``."""
    # Our own file, written by fit; it holds optimizer/scheduler objects, hence weights_only=False.
    state = torch.load(path, map_location="cpu", weights_only=False)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    progress = _Progress(epoch=state["epoch"], batches_seen=state["batches_seen"], wait=state["wait"],
                         best_val=state["best_val"], best_epoch=state["best_epoch"],
                         best_state=state["best_state"], history=state["history"],
                         elapsed_before=state.get("seconds", 0.0), early_stopped=bool(state.get("early_stopped")))
    _load_averager(run, state.get("averager"), path)
    torch.set_rng_state(state["rng"])
    log.info("resumed from %s after epoch %d (%d batches seen, best val %.4f)", path, progress.epoch,
             progress.batches_seen, progress.best_val)
    return progress


def _load_averager(run: _Run, state: dict[str, Any] | None, path: Path) -> None:
    """The averager's state from ``resume.pt``; refuses a resume under another ``--average``."""
    had = state["kind"] if state else "none"
    if had != run.settings.average:
        raise ValueError(f"{path} was written with --average {had}; resume with the same, "
                         f"not --average {run.settings.average}")
    if run.averager is not None and state is not None:
        run.averager.load_state_dict(state)


def _resume_state(run: _Run, progress: _Progress) -> dict[str, Any]:
    return {
        "averager": run.averager.state_dict() if run.averager is not None else None,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "epoch": progress.epoch, "batches_seen": progress.batches_seen,
        "wait": progress.wait, "best_val": progress.best_val, "best_epoch": progress.best_epoch,
        "best_state": progress.best_state, "history": progress.history, "rng": torch.get_rng_state(),
        "seconds": run.elapsed(progress),
        # epoch/step/time budgets may be extended on --resume; an early stop is final
        "early_stopped": progress.wait >= run.settings.patience,
    }


def _run_epoch(run: _Run, progress: _Progress) -> str | None:
    """One epoch of training, then validation and bookkeeping; the budget that ran out, if any."""
    epoch_start = time.monotonic()
    run_sum, run_n, out_of_budget = _train_batches(run, progress, epoch_start)
    progress.epoch += 1
    run.scheduler.step()
    judged = run.model  # the weights validated and kept: the averaged ones once there are any
    if run.averager is not None:
        run.averager.after_epoch(run.model, progress.epoch)
        averaged = run.averager.averaged()
        judged = averaged if averaged is not None else run.model
    train_loss = torch.tensor([run_sum, float(run_n)], dtype=torch.float64, device=run.device)
    all_reduce_sum(train_loss, run.info)
    train_loss_value = float(train_loss[0] / train_loss[1]) if train_loss[1] > 0 else math.nan
    val_ds = run.prepared.splits["val"]
    val_loss = validation_loss(judged, val_ds, run.prepared, run.settings, run.info, run.device) \
        if len(val_ds) else train_loss_value
    improved = val_loss < progress.best_val
    if improved:
        progress.best_val, progress.best_epoch, progress.wait = val_loss, progress.epoch, 0
        progress.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in judged.state_dict().items()})
    else:
        progress.wait += 1
    row = {"epoch": progress.epoch, "train_loss": train_loss_value, "val_loss": val_loss,
           "lr": run.optimizer.param_groups[0]["lr"], "batches_seen": progress.batches_seen,
           "seconds": time.monotonic() - epoch_start}
    if run.averager is not None:
        row["validated"] = run.averager.kind if judged is not run.model else "raw"
    progress.history.append(row)
    if run.info.is_main:
        log.info("epoch %3d  train %.4f  val %.4f%s  lr %.1e  %d steps  %.1fs", progress.epoch, train_loss_value,
                 val_loss, " *" if improved else "", row["lr"], progress.batches_seen, row["seconds"])
    return out_of_budget


def _train_batches(run: _Run, progress: _Progress, epoch_start: float) -> tuple[float, int, str | None]:
    """The optimiser steps of one epoch: (loss sum, steps, the budget that ran out or None)."""
    settings, info = run.settings, run.info
    run.net.train()
    run.sampler.set_epoch(progress.epoch)
    run_sum, run_n, out_of_budget = 0.0, 0, None
    bar = tqdm(run.loader, desc=f"epoch {progress.epoch + 1}", leave=False, dynamic_ncols=True,
               disable=not (settings.progress and info.is_main))
    for batch in bar:
        loss = _step(run, batch.to(run.device), progress.batches_seen)
        progress.batches_seen += 1
        run_sum += loss
        run_n += 1
        bar.set_postfix(loss=f"{run_sum / run_n:.4f}", lr=f"{run.optimizer.param_groups[0]['lr']:.0e}")
        if info.is_main and not settings.progress and settings.log_every and run_n % settings.log_every == 0:
            log.info("epoch %d step %d/%d  loss %.4f  %.1fs", progress.epoch + 1, run_n, len(run.loader),
                     run_sum / run_n, time.monotonic() - epoch_start)
        if settings.max_steps is not None and progress.batches_seen >= settings.max_steps:
            out_of_budget = "max steps"
        if settings.max_time is not None and run.elapsed(progress) >= settings.max_time:
            out_of_budget = "max time"
        if broadcast_flag(out_of_budget is not None, info, run.device):
            out_of_budget = out_of_budget or "max steps/time (rank 0)"
            break
    bar.close()
    return run_sum, run_n, out_of_budget


def _step(run: _Run, batch: Any, batches_seen: int) -> float:
    """One optimiser step on ``batch``; its loss."""
    out = run.net(batch.x, batch.y_cov, batch.labels, batches_seen)  # B × T_out × N × 1, scaled
    pred = run.prepared.scaler.inverse(out)
    loss_sum, count = loss_terms(run.settings.loss, pred, batch.target, run.prepared.data.missing,
                                 run.settings.mse_weight)
    loss = loss_sum / count.clamp_min(1.0)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.settings.clip_grad_norm:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.settings.clip_grad_norm)
    run.optimizer.step()
    if run.averager is not None:
        run.averager.after_step(run.model)
    return float(loss.detach())


def seed_everything(seed: int) -> None:
    """Same initial weights and data order for the same seed (CPU and CUDA)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
