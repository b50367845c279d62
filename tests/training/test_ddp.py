"""The data-parallel path: two CPU processes with the gloo backend train in lock-step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.ports import free_port


def _worker(rank: int, world: int, port: int, out: str, options: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from training.datasets import generate_synthetic
    from training.train import train_model

    data = generate_synthetic(num_sensors=5, days=3, seed=1)
    ckpt = train_model(data, hidden=8, embedding_dims=(4, 4, 4, 4), batch_size=8, max_steps=3, epochs=1,
                       device="cpu", progress=False, output=out, split="7:1:2", **options)
    torch.save({"state": ckpt.state_dict, "world": ckpt.train_settings["world_size"],
                "steps": ckpt.metrics["batches_seen"], "val": ckpt.metrics["best_val_loss"]},
               Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


# the paper's training, and the mixed loss with an EMA (each process keeps the same average)
@pytest.mark.parametrize("options", [{}, {"loss": "mae_mse", "average": "ema", "ema_decay": 0.5}])
def test_two_process_gloo_training(tmp_path: Path, options: dict) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), options), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 3
    assert r0["val"] == r1["val"]  # validation loss reduced over both processes
    for k in r0["state"]:
        torch.testing.assert_close(r0["state"][k], r1["state"][k])  # gradients were averaged
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.json").is_file()
    log = (tmp_path / "train.log").read_text()
    assert "2 process(es)" in log
