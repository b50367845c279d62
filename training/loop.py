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

from training.distributed import DistInfo, all_reduce_sum, broadcast_flag
from training.metrics import loss_terms
from training.windows import PreparedData, WindowDataset

log = logging.getLogger("himnet.train")
RESUME_FILE = "resume.pt"


@dataclass
class LoopSettings:
    """Optimisation settings, resolved from a preset plus overrides."""

    loss: str = "masked_mae"
    lr: float = 1e-3
    eps: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    clip_grad_norm: float = 5.0
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
        total, count = loss_terms(settings.loss, pred, batch.target)
        sums += torch.stack([total.double(), count.double()])
    all_reduce_sum(sums, info)
    return float(sums[0] / sums[1]) if sums[1] > 0 else math.nan


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def fit(model: nn.Module, prepared: PreparedData, settings: LoopSettings, run_dir: Path, info: DistInfo,
        device: torch.device, resume: bool = False) -> FitResult:
    """Train ``model`` in place; on return it holds the best validation weights."""
    start_time = time.monotonic()
    train_ds, val_ds = prepared.splits["train"], prepared.splits["val"]
    if len(val_ds) == 0:
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

    epoch, batches_seen, wait = 0, 0, 0
    best_val, best_epoch = math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, Any]] = []
    elapsed_before = 0.0
    resume_path = run_dir / RESUME_FILE
    if resume and resume_path.is_file():
        # Our own file, written below; it holds optimizer/scheduler objects, hence weights_only=False.
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, batches_seen, wait = state["epoch"], state["batches_seen"], state["wait"]
        best_val, best_epoch, best_state = state["best_val"], state["best_epoch"], state["best_state"]
        history, elapsed_before = state["history"], state.get("seconds", 0.0)
        torch.set_rng_state(state["rng"])
        log.info("resumed from %s after epoch %d (%d batches seen, best val %.4f)", resume_path, epoch,
                 batches_seen, best_val)
        if state.get("early_stopped"):
            model.load_state_dict(best_state)
            return FitResult(epoch, batches_seen, best_epoch, best_val, "already early-stopped", history,
                             elapsed_before)
    elif resume:
        log.info("no %s yet: starting from scratch", resume_path)

    stopped = "max epochs"
    while epoch < settings.max_epochs:
        epoch_start = time.monotonic()
        net.train()
        sampler.set_epoch(epoch)
        run_sum, run_n, out_of_budget = 0.0, 0, None
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True,
                   disable=not (settings.progress and info.is_main))
        for batch in bar:
            batch = batch.to(device)
            out = net(batch.x, batch.y_cov, batch.labels, batches_seen)  # B × T_out × N × 1, scaled
            pred = prepared.scaler.inverse(out)
            loss_sum, count = loss_terms(settings.loss, pred, batch.target)
            loss = loss_sum / count.clamp_min(1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad_norm)
            optimizer.step()
            batches_seen += 1
            run_sum += float(loss.detach())
            run_n += 1
            bar.set_postfix(loss=f"{run_sum / run_n:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.0e}")
            if info.is_main and not settings.progress and settings.log_every and run_n % settings.log_every == 0:
                log.info("epoch %d step %d/%d  loss %.4f  %.1fs", epoch + 1, run_n, len(loader), run_sum / run_n,
                         time.monotonic() - epoch_start)
            if settings.max_steps is not None and batches_seen >= settings.max_steps:
                out_of_budget = "max steps"
            elapsed = elapsed_before + time.monotonic() - start_time
            if settings.max_time is not None and elapsed >= settings.max_time:
                out_of_budget = "max time"
            if broadcast_flag(out_of_budget is not None, info, device):
                out_of_budget = out_of_budget or "max steps/time (rank 0)"
                break
        bar.close()
        epoch += 1
        scheduler.step()
        train_loss = torch.tensor([run_sum, float(run_n)], dtype=torch.float64, device=device)
        all_reduce_sum(train_loss, info)
        train_loss_value = float(train_loss[0] / train_loss[1]) if train_loss[1] > 0 else math.nan
        val_loss = validation_loss(model, val_ds, prepared, settings, info, device) if len(val_ds) \
            else train_loss_value
        improved = val_loss < best_val
        if improved:
            best_val, best_epoch, wait = val_loss, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            wait += 1
        row = {"epoch": epoch, "train_loss": train_loss_value, "val_loss": val_loss,
               "lr": optimizer.param_groups[0]["lr"], "batches_seen": batches_seen,
               "seconds": time.monotonic() - epoch_start}
        history.append(row)
        if info.is_main:
            log.info("epoch %3d  train %.4f  val %.4f%s  lr %.1e  %d steps  %.1fs", epoch, train_loss_value,
                     val_loss, " *" if improved else "", row["lr"], batches_seen, row["seconds"])
        if out_of_budget:
            stopped = out_of_budget
        elif wait >= settings.patience:
            stopped = f"early stop ({settings.patience} epochs without improvement)"
        finished = bool(out_of_budget) or wait >= settings.patience or epoch >= settings.max_epochs
        if info.is_main:
            _save_resume(resume_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "batches_seen": batches_seen,
                "wait": wait, "best_val": best_val, "best_epoch": best_epoch, "best_state": best_state,
                "history": history, "rng": torch.get_rng_state(),
                "seconds": elapsed_before + time.monotonic() - start_time,
                # epoch/step/time budgets may be extended on --resume; an early stop is final
                "early_stopped": wait >= settings.patience,
            })
        if finished:
            break
    model.load_state_dict(best_state)
    seconds = elapsed_before + time.monotonic() - start_time
    if info.is_main:
        log.info("stopped: %s; best epoch %d (val %.4f); %.1fs", stopped, best_epoch, best_val, seconds)
    return FitResult(epoch, batches_seen, best_epoch, best_val, stopped, history, seconds)


def seed_everything(seed: int) -> None:
    """Same initial weights and data order for the same seed (CPU and CUDA)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
