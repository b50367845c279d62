#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with everything training and tests need:
# the exact versions and hashes of requirements/dev.txt (the lock; `bash scripts/lock.sh`
# refreshes it), then the project itself without dependencies.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "setup: Python 3.11 is required (found $(.venv/bin/python -V))" >&2; exit 1; }
stamp=.venv/.himnet-installed
lock=requirements/dev.txt
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The lock pins torch's CPU build (+cpu), so no multi-GB CUDA wheels come along; pip finds it
  # in a configured find-links folder or on the PyTorch CPU index ($TORCH_INDEX).
  torch=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$lock")
  mapfile -t sources < <(bash scripts/torch-source.sh "$torch")
  .venv/bin/python -m pip install -q --require-hashes "${sources[@]}" -r "$lock"
  .venv/bin/python -m pip install -q --no-deps -e .
  touch "$stamp"
fi
