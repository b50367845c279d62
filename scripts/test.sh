#!/usr/bin/env bash
# The test command: install what is missing, make sure Redis runs, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure-redis.sh
bash scripts/ensure-tools.sh
export REDIS_TEST_URL=${REDIS_TEST_URL:-redis://127.0.0.1:${REDIS_PORT:-6379}/15}
exec .venv/bin/python -m pytest "$@"
