#!/usr/bin/env bash
# Refresh the hashed lock files under requirements/ from pyproject.toml: the one command to run
# after changing a dependency (commit pyproject.toml and requirements/ together).
#   bash scripts/lock.sh            re-resolve; keeps the pins that still satisfy pyproject.toml
#   bash scripts/lock.sh --upgrade  re-resolve every package to its newest allowed release
#
# dev.txt (CI and developers: the train and dev extras) is resolved first; the image locks
# (service, service-gpu, train) are resolved against it as constraints, so the images ship the
# versions CI tested. Target: CPython 3.11 on x86_64 Linux (glibc 2.28+), what the images run.
# torch resolves to its CPU build (+cpu, no CUDA wheels): from the PyTorch CPU index
# (TORCH_INDEX), or from a pip find-links folder that already holds that wheel.
# The resolver (uv) is installed into a throwaway virtual environment, not into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
TOOL_VENV=${LOCK_TOOL_VENV:-${TMPDIR:-/tmp}/himnet-lock-tool}
UV_VERSION=0.13.9
OUT=requirements

if [ ! -x "$TOOL_VENV/bin/uv" ]; then
  "$PY" -m venv "$TOOL_VENV"
  "$TOOL_VENV/bin/python" -m pip install -q "uv==$UV_VERSION"
fi
uv=$TOOL_VENV/bin/uv

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
torch_pin=$("$PY" docker/requirements.py train | grep -E '^torch==' | head -n 1)
echo "${torch_pin}+cpu" > "$work/torch-cpu.txt"

# Where the torch CPU wheel comes from (find-links folders and/or the PyTorch CPU index).
mapfile -t sources < <(bash scripts/torch-source.sh "${torch_pin#torch==}+cpu")
case " ${sources[*]} " in
  *" --extra-index-url "*) sources+=(--index-strategy unsafe-best-match) ;;
esac

compile() {  # compile FLAVOUR [extra uv arguments...]
  local flavour=$1
  shift
  "$PY" docker/requirements.py "$flavour" > "$work/$flavour.in"
  UV_CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$uv" pip compile --quiet \
    --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-annotate "${sources[@]}" "$@" --output-file "$OUT/$flavour.txt" "$work/$flavour.in"
  echo "lock: $OUT/$flavour.txt ($(grep -cE '^[A-Za-z0-9]' "$OUT/$flavour.txt") packages)"
}

mkdir -p "$OUT"
compile dev --constraint "$work/torch-cpu.txt" "$@"
compile train --constraint "$OUT/dev.txt"
compile service --constraint "$OUT/dev.txt"
compile service-gpu --constraint "$OUT/dev.txt"
