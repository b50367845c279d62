"""Ragged newest slot: is a forecast from a partly reported last slot better than waiting?

For every test window of a data set (LOS-LOOP by default) the newest slot ``t+1`` is given for a
random share ``c`` of the sensors only; the others are imputed as the service imputes them
(``service.forecasting.impute`` with the chosen policy and the bundle's missing value). That
forecast is compared with the one from the previous, complete slot ``t`` (one step staler) on
the same target times ``t+2 … t+T_out`` (ragged step ``h`` against stale step ``h+1``). Both
run through the exported bundle in ONNX Runtime, as the service runs it.

The service's ``HIMNET_MIN_SLOT_COVERAGE`` should be the smallest coverage at which the ragged
forecast beats the stale one.

    PYTHONPATH=$PWD python benchmarks/ragged_slot.py --bundle /tmp/feed-ll-bundle
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from model.time_features import time_features
from service.forecasting import impute
from service.runtime import load_runtime
from training.datasets import load_dataset
from training.windows import parse_split, split_windows


def _forecast(runtime, windows: np.ndarray, t_in: np.ndarray, t_out: np.ndarray,
              batch: int = 64) -> np.ndarray:
    """``B × T_out × N`` forecasts of imputed ``B × T_in × N`` raw windows."""
    outs = [runtime.predict(windows[i:i + batch], t_in[i:i + batch], t_out[i:i + batch])[0]
            for i in range(0, len(windows), batch)]
    return np.concatenate(outs)


def _mae(pred: np.ndarray, target: np.ndarray) -> float:
    """MAE over targets that are not missing (0 = missing in LOS-LOOP's convention)."""
    mask = target != 0
    return float(np.abs(pred - target)[mask].mean())


def measure(args: argparse.Namespace) -> dict:
    runtime = load_runtime(args.bundle, "onnx", threads=args.threads)
    m = runtime.manifest
    data = load_dataset(args.data)
    t_in, t_out = m.in_steps, m.out_steps
    starts = split_windows(data.num_steps, t_in, t_out, parse_split(args.split),
                          data.index)["test"]
    starts = starts[starts >= 1][:: args.stride]  # the stale window starts one row earlier
    values = data.values.astype(np.float32)  # T × N raw, 0 = missing
    feats = time_features(data.timestamps, m.steps_per_day)  # T × 2, local wall clock
    rows_in = starts[:, None] + np.arange(t_in)  # B × T_in: ragged window, last row = t+1
    rows_out = starts[:, None] + t_in + np.arange(t_out)  # B × T_out: t+2 … t+T_out+1
    target = values[rows_out][:, : t_out - 1]  # B × (T_out-1) × N: what both can forecast
    stale_in = np.where(values[rows_in - 1] == 0, np.nan, values[rows_in - 1])
    stale = _forecast(runtime, impute_all(stale_in, args.policy, m.missing_value),
                      feats[rows_in - 1], feats[rows_in - 1 + t_in])[:, 1:]
    result = {"data": args.data, "windows": int(len(starts)), "policy": args.policy,
              "bundle": str(args.bundle), "stale_mae": _mae(stale, target),
              "stale_mae_step1": _mae(stale[:, :1], target[:, :1]), "ragged": []}
    rng = np.random.default_rng(args.seed)
    n = m.num_nodes
    for c in args.coverages:
        maes, step1 = [], []
        for _ in range(args.draws):
            win = np.where(values[rows_in] == 0, np.nan, values[rows_in])  # B × T_in × N
            keep = max(0, min(n, math.ceil(c * n)))
            for b in range(len(starts)):
                dropped = rng.permutation(n)[keep:]
                win[b, -1, dropped] = np.nan
            pred = _forecast(runtime, impute_all(win, args.policy, m.missing_value),
                             feats[rows_in], feats[rows_out])[:, : t_out - 1]
            maes.append(_mae(pred, target))
            step1.append(_mae(pred[:, :1], target[:, :1]))
        result["ragged"].append({"coverage": c, "mae": float(np.mean(maes)),
                                 "mae_step1": float(np.mean(step1))})
        print(f"coverage {c:g}: MAE {np.mean(maes):.4f} (stale {result['stale_mae']:.4f})",
              flush=True)
    better = [r["coverage"] for r in result["ragged"] if r["mae"] < result["stale_mae"]]
    result["threshold"] = min(better) if better else None
    return result


def impute_all(windows: np.ndarray, policy: str, missing_value: float) -> np.ndarray:
    """``impute`` per window, as the service does it for one window."""
    return np.stack([impute(w, policy, missing_value) for w in windows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle of a model of --data")
    p.add_argument("--data", default="los-loop")
    p.add_argument("--split", default="los-loop")
    p.add_argument("--policy", default="missing_value", choices=["missing_value", "locf"])
    p.add_argument("--coverages", type=lambda s: [float(x) for x in s.split(",")],
                   default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0])
    p.add_argument("--draws", type=int, default=2, help="random sensor draws per coverage")
    p.add_argument("--stride", type=int, default=1, help="use every k-th test window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    result = measure(args)
    print(json.dumps(result, indent=1))
    print(f"stale (previous complete slot): MAE {result['stale_mae']:.4f}")
    for r in result["ragged"]:
        mark = "<" if r["mae"] < result["stale_mae"] else ">="
        print(f"coverage {r['coverage']:g}: MAE {r['mae']:.4f} {mark} stale")
    print(f"smallest coverage where imputing beats waiting: {result['threshold']}")


if __name__ == "__main__":
    main()
