#!/bin/sh
# Entrypoint of the training image.
#
#   pipeline        train, then export the checkpoint as a bundle (compose's `train` profile):
#                   himnet train --data "$HIMNET_TRAIN_DATA" --output "$HIMNET_RUN_DIR" $HIMNET_TRAIN_ARGS
#                   himnet export "$HIMNET_RUN_DIR/checkpoint.pt" --out "$HIMNET_BUNDLE_OUT" --force
#   publish VERSION [export options]
#                   export the last run's checkpoint as a new version the running service can
#                   switch to without a restart, then ask it to (when HIMNET_SERVICE_URL is set):
#                   himnet export "$HIMNET_RUN_DIR/checkpoint.pt" --out "$HIMNET_MODELS_DIR/VERSION" --version VERSION
#                   POST $HIMNET_SERVICE_URL/admin/reload {"version": VERSION}  (key: HIMNET_API_KEY_FILE)
#   train|evaluate|export|replay|...   any `himnet` subcommand with its arguments
#   anything else   run as a command (a shell, python, ...)
#
# The bundle is exported next to its destination and renamed into place, so a service waiting
# on the same volume never reads half a bundle.
set -eu

himnet() { "${HIMNET_PYTHON:-python}" -m himnet "$@"; }

if [ "$#" -eq 0 ]; then
  set -- pipeline
fi

case "$1" in
  pipeline)
    shift
    data="${HIMNET_TRAIN_DATA:-synthetic}"
    run_dir="${HIMNET_RUN_DIR:-/runs/latest}"
    bundle_out="${HIMNET_BUNDLE_OUT:-/models/current}"
    echo "train: data=$data run=$run_dir bundle=$bundle_out args=${HIMNET_TRAIN_ARGS:-}" >&2
    # HIMNET_TRAIN_ARGS is split on blanks on purpose: it holds several options.
    # shellcheck disable=SC2086
    himnet train --data "$data" --output "$run_dir" --no-progress ${HIMNET_TRAIN_ARGS:-} "$@"
    # shellcheck disable=SC2086
    himnet export "$run_dir/checkpoint.pt" --out "$bundle_out" --force ${HIMNET_EXPORT_ARGS:-}
    ;;
  publish)
    shift
    version="${1:?publish needs a version name, e.g. publish 2026-12-03.1}"
    shift
    run_dir="${HIMNET_RUN_DIR:-/runs/latest}"
    out="${HIMNET_MODELS_DIR:-/models}/$version"
    echo "publish: $run_dir/checkpoint.pt -> $out" >&2
    # shellcheck disable=SC2086
    himnet export "$run_dir/checkpoint.pt" --out "$out" --version "$version" ${HIMNET_EXPORT_ARGS:-} "$@"
    if [ -n "${HIMNET_SERVICE_URL:-}" ]; then
      "${HIMNET_PYTHON:-python}" - "$HIMNET_SERVICE_URL" "$version" <<'PY'
import json, os, sys, urllib.error, urllib.request
url, version = sys.argv[1].rstrip("/") + "/admin/reload", sys.argv[2]
key = open(os.environ["HIMNET_API_KEY_FILE"], encoding="utf-8").read().strip()
req = urllib.request.Request(url, json.dumps({"version": version}).encode(), method="POST",
                             headers={"Content-Type": "application/json", "X-API-Key": key})
try:
    with urllib.request.urlopen(req, timeout=300) as answer:
        print(f"publish: {url}: {answer.read().decode()}", file=sys.stderr)
except urllib.error.HTTPError as exc:
    sys.exit(f"publish: the service refused {version}: {exc.code} {exc.read().decode()}")
except OSError as exc:
    sys.exit(f"publish: cannot reach {url}: {exc}")
PY
    fi
    ;;
  train|evaluate|export|replay|ablation)
    exec "${HIMNET_PYTHON:-python}" -m himnet "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
