"""Choosing a graph's contraction order at export: every candidate timed in ONNX Runtime.

The orders (``model.config.CONTRACTIONS``) compute the same function; they differ in where the
time goes (memory-bound mat-vecs over generated per-node weights, or D-times-larger GEMMs over
the pools), and which wins depends on N, H, d, K members and the machine. So the export measures
instead of guessing, on the very graph it is about to write (a single model or an ensemble).

Rule: batch 1 decides (a forecast request is one window of all sensors); every order within
10 % of the fastest at batch 1 is a tie, and among the tied ones batch 16 decides; a remaining
tie goes to the earlier order in ``CONTRACTIONS`` (the simpler one).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.config import CONTRACTIONS
from training.parity import ParityData, ort_session

TIE = 0.10  # batch-1 latencies within 10 % of the fastest are a tie
BATCHES = ((1, 15), (16, 5))  # (batch, timed calls)


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def pick_contraction(timings: dict[str, dict[str, float]]) -> str:
    """The order the rule above picks from ``{order: {"1": ms, "16": ms}}``."""
    orders = [c for c in CONTRACTIONS if c in timings]
    fastest = min(timings[c]["1"] for c in orders)
    tied = [c for c in orders if timings[c]["1"] <= (1 + TIE) * fastest]
    return min(tied, key=lambda c: timings[c]["16"])  # min keeps the first of equal ones


def choose_contraction(write_candidate: Callable[[str, Path], None],
                       run: Callable[[Any, tuple[np.ndarray, ...]], Any], data: ParityData, work: Path,
                       threads: int) -> tuple[str, dict[str, dict[str, float]]]:
    """Write each order's graph with ``write_candidate(order, path)``, time ``run(session,
    inputs)`` at batch 1 and 16, and return (the picked order, every timing in ms)."""
    timings: dict[str, dict[str, float]] = {}
    for order in CONTRACTIONS:
        path = work / f"candidate-{order}.onnx"
        write_candidate(order, path)
        session = ort_session(path, threads)
        timings[order] = {}
        for batch, repeats in BATCHES:
            inputs = data.take(batch)
            timings[order][str(batch)] = round(median_ms(lambda: run(session, inputs), repeats), 3)
        del session
        path.unlink()
    return pick_contraction(timings), timings
