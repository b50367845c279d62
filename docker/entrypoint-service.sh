#!/bin/sh
# Entrypoint of the service images (CPU and GPU); the end-to-end test starts the service through
# this same script. Configuration is the environment (HIMNET_*, see service/settings.py).
#
#   (no arguments)  wait for the bundle if asked to, then run `python -m service`
#   CMD ...         run that command instead (a shell, a one-off check)
#
# HIMNET_BUNDLE_WAIT_S (default 0): how long to wait for $HIMNET_BUNDLE_DIR/manifest.json to
# appear, for stacks where a training job writes the first bundle (compose's `train` profile).
# The exporter writes a bundle into a temporary directory and renames it into place, so once the
# manifest is there the bundle is complete.
set -eu

if [ "$#" -gt 0 ]; then
  exec "$@"
fi

: "${HIMNET_BUNDLE_DIR:?HIMNET_BUNDLE_DIR must name the model bundle directory}"
wait_s="${HIMNET_BUNDLE_WAIT_S:-0}"
case "$wait_s" in
  ''|*[!0-9]*) echo "entrypoint: HIMNET_BUNDLE_WAIT_S must be a whole number of seconds, got '$wait_s'" >&2; exit 2 ;;
esac

waited=0
while [ ! -f "$HIMNET_BUNDLE_DIR/manifest.json" ] && [ "$waited" -lt "$wait_s" ]; do
  if [ "$waited" -eq 0 ]; then
    echo "entrypoint: waiting up to ${wait_s}s for a bundle in $HIMNET_BUNDLE_DIR" >&2
  fi
  sleep 1
  waited=$((waited + 1))
done

# python -m service checks the settings and the bundle and exits 2 with a one-line reason.
exec "${HIMNET_PYTHON:-python}" -m service
