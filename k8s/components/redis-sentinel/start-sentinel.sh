#!/bin/sh
# Start redis-sentinel from a read-only template plus the password in $REDIS_PASSWORD_FILE.
# Sentinel rewrites its configuration file (failovers, known replicas and peers), so it gets a
# private copy in a writable directory ($SENTINEL_DIR); the password never appears in a command line.
# $SENTINEL_ANNOUNCE (optional): the stable name this sentinel gives its peers (Kubernetes: the
# pod's DNS name), instead of an IP that changes when it restarts.
# k8s/components/redis-sentinel/start-sentinel.sh is a copy of this file (tests/deploy checks).
#   start-sentinel.sh TEMPLATE
set -eu
template=${1:?usage: start-sentinel.sh TEMPLATE}
dir=${SENTINEL_DIR:-/data}
pw=""
read -r pw < "$REDIS_PASSWORD_FILE" || :
[ -n "$pw" ] || { echo "sentinel: no password in $REDIS_PASSWORD_FILE" >&2; exit 1; }
masters=$(awk '$1 == "sentinel" && $2 == "monitor" { print $3 }' "$template")
[ -n "$masters" ] || { echo "sentinel: $template monitors nothing" >&2; exit 1; }
umask 077
{
  cat "$template"
  for master in $masters; do
    printf 'sentinel auth-pass %s "%s"\n' "$master" "$pw"
  done
  printf 'requirepass "%s"\ndir "%s"\n' "$pw" "$dir"
  if [ -n "${SENTINEL_ANNOUNCE:-}" ]; then
    printf 'sentinel announce-ip "%s"\n' "$SENTINEL_ANNOUNCE"
  fi
} > "$dir/sentinel.conf"
exec redis-sentinel "$dir/sentinel.conf"
