#!/usr/bin/env bash
# The main job: install everything, train and export a model on the built-in synthetic dataset
# when no bundle exists yet, then serve it, seed it with live-looking readings and print a curl.
#
#   HIMNET_BUNDLE_DIR  bundle to serve (default artifacts/bundle; trained here when missing)
#   HIMNET_PORT        port (default 8000)        REDIS_URL  shared buffer (default in-process)
#   TRAIN_ARGS         extra `himnet train` arguments, e.g. "--data los-loop --max-time 1800"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

export HIMNET_BUNDLE_DIR=${HIMNET_BUNDLE_DIR:-artifacts/bundle}
export HIMNET_PORT=${HIMNET_PORT:-8000}
run_dir=artifacts/run
if [ ! -f "$HIMNET_BUNDLE_DIR/manifest.json" ]; then
  echo "== no model bundle at $HIMNET_BUNDLE_DIR: training one on the built-in synthetic dataset"
  # shellcheck disable=SC2086
  himnet train --data synthetic --output "$run_dir" --epochs 30 --patience 5 --max-time 300 \
    --hidden 32 ${TRAIN_ARGS:-}
  himnet export "$run_dir/checkpoint.pt" --out "$HIMNET_BUNDLE_DIR" --force
fi

# An API key for writes: the caller's, else one generated once and kept beside the artifacts.
if [ -z "${HIMNET_API_KEY:-}" ]; then
  key_file=artifacts/api-key
  [ -s "$key_file" ] || python -c 'import secrets; print(secrets.token_urlsafe(24))' >"$key_file"
  HIMNET_API_KEY=$(cat "$key_file")
  export HIMNET_API_KEY
fi

url="http://127.0.0.1:$HIMNET_PORT"
if python -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $HIMNET_PORT)) != 0)"; then
  echo "port $HIMNET_PORT is already in use: stop what runs there or set HIMNET_PORT" >&2
  exit 1
fi
python -m service &
server=$!
trap 'kill $server 2>/dev/null || true' INT TERM
for _ in $(seq 120); do
  curl -fs "$url/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "the service exited; see its messages above" >&2; exit 1; }
  sleep 0.5
done

echo "== seeding the buffer with the last hour of the synthetic dataset (himnet replay)"
himnet replay --url "$url" --slots 24 --speedup 600 --data synthetic

cat <<MSG

== HimNet is serving $HIMNET_BUNDLE_DIR at $url  (API docs: $url/docs, metrics: $url/metrics)
Forecast every sensor for the next hour from the buffered readings:

  curl -s -X POST $url/forecast -H 'content-type: application/json' -d '{"horizons": [3, 6, 12]}'

Post readings (API key in artifacts/api-key unless HIMNET_API_KEY was set):

  curl -s -X POST $url/readings -H "x-api-key: \$HIMNET_API_KEY" -H 'content-type: application/json' \\
       -d '{"readings": [{"timestamp": "<ISO-8601 slot time>", "values": {"<sensor id>": 61.5}}]}'

Ctrl-C stops the service.
MSG
wait $server
