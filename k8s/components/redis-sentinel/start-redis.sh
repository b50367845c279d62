#!/bin/sh
# Start a Redis data node of the Sentinel setup. The sentinels know the current primary: replicate
# it unless it is this pod. When no sentinel answers (the very first start), pod 0 is the primary.
# The password ($REDIS_PASSWORD_FILE) reaches redis-server on standard input, never in argv.
#   start-redis.sh [redis-server options...]
set -eu
pw=""
read -r pw < "$REDIS_PASSWORD_FILE" || :
[ -n "$pw" ] || { echo "redis: no password in $REDIS_PASSWORD_FILE" >&2; exit 1; }
service=${REDIS_SERVICE:?}
pod=${POD_NAME:?}
me="${pod}.${service}"
primary=""
primary_port=6379
for sentinel in ${SENTINEL_HOSTS:-}; do
  answer=$(REDISCLI_AUTH="$pw" timeout 5 redis-cli -h "$sentinel" -p "${SENTINEL_PORT:-26379}" --raw \
    SENTINEL get-master-addr-by-name "${SENTINEL_MASTER:?}" 2>/dev/null) || answer=""
  host=$(printf '%s\n' "$answer" | sed -n 1p)
  port=$(printf '%s\n' "$answer" | sed -n 2p)
  case "$port" in
    '' | *[!0-9]*) continue ;;  # no answer, an error, or no primary known yet
  esac
  primary=$host
  primary_port=$port
  break
done
[ -n "$primary" ] || primary="${pod%-*}-0.${service}"
set -- "$@" --replica-announce-ip "$me"
if [ "$primary" != "$me" ]; then
  echo "redis: $me replicates $primary:$primary_port"
  set -- "$@" --replicaof "$primary" "$primary_port"
else
  echo "redis: $me starts as the primary"
fi
exec redis-server - "$@" <<CONF
requirepass "$pw"
masterauth "$pw"
CONF
