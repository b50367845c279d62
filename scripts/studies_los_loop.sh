#!/usr/bin/env bash
# Acceptance runs of the paper's studies on LOS-LOOP (not CI): ablation, a second training seed of
# the full model, the embedding report and the efficiency study. CPU-friendly budget: every variant
# trains for MAX_STEPS optimiser steps (default 450 = 5 epochs; 7 variants in about 40 minutes on one
# core). A step budget, not a time budget: cheaper variants would otherwise get more steps.
# One torch thread by default: on a shared 2-core machine two threads spin against other jobs and
# ran ~2.5x slower per step (THREADS=2 to change). Heavy steps wait for /tmp/himnet-heavy.lock
# (shared with other long runs on this machine).
#   scripts/studies_los_loop.sh [OUT_DIR] [REPORT_CHECKPOINT]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && source .venv/bin/activate
OUT=${1:-runs/studies}
MAX_STEPS=${MAX_STEPS:-450}
# Day-of-week embedding size 0: one week of LOS-LOOP leaves the test days (Tue, Wed) out of training.
EMBEDDING_DIMS=${EMBEDDING_DIMS:-8,0,16,16}
COMMON=(--data los-loop --split los-loop --hidden "${HIDDEN:-16}" --embedding-dims "$EMBEDDING_DIMS"
        --tf-decay-steps "${TAU:-60}" --max-steps "$MAX_STEPS" --threads "${THREADS:-1}")
heavy() { flock /tmp/himnet-heavy.lock nice -n 5 "$@"; }
mkdir -p "$OUT"

echo "== ablation (seed 0), $(date -u +%FT%TZ)"
start=$(date +%s)
heavy himnet ablation "${COMMON[@]}" --seed 0 --output "$OUT/ablation" --json "$OUT/ablation/table.json" | tee "$OUT/ablation.txt"
echo "ablation wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/ablation.txt"

echo "== full model, seed 1 (cluster stability across training seeds), $(date -u +%FT%TZ)"
heavy himnet ablation "${COMMON[@]}" --seed 1 --variants none --output "$OUT/seed1" | tee "$OUT/seed1.txt"

CKPT=${2:-$OUT/ablation/none/checkpoint.pt}
echo "== report on $CKPT, $(date -u +%FT%TZ)"
heavy himnet report "$CKPT" --out "$OUT/report" --compare "$OUT/seed1/none/checkpoint.pt"
heavy himnet report "$OUT/ablation/none/checkpoint.pt" --out "$OUT/report-seed0" \
    --compare "$OUT/seed1/none/checkpoint.pt" > /dev/null

echo "== efficiency, $(date -u +%FT%TZ)"
heavy himnet efficiency --data los-loop --split los-loop --repeats 3 --naive-repeats 1 --threads "${THREADS:-1}" \
    --json "$OUT/efficiency.json" | tee "$OUT/efficiency.txt"
