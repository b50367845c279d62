#!/bin/sh
# Entrypoint of the training image.
#
#   pipeline        train, then export the checkpoint as a bundle (compose's `train` profile):
#                   himnet train --data "$HIMNET_TRAIN_DATA" --output "$HIMNET_RUN_DIR" $HIMNET_TRAIN_ARGS
#                   himnet export "$HIMNET_RUN_DIR/checkpoint.pt" --out "$HIMNET_BUNDLE_OUT" --force
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
  train|evaluate|export|replay|ablation)
    exec "${HIMNET_PYTHON:-python}" -m himnet "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
