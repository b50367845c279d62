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
for sentinel in ${SENTINEL_HOSTS:-}; do
  primary=$(REDISCLI_AUTH="$pw" timeout 5 redis-cli -h "$sentinel" -p 26379 --raw \
    SENTINEL get-master-addr-by-name "${SENTINEL_MASTER:?}" 2>/dev/null | head -n 1) || primary=""
  [ -n "$primary" ] && break
done
[ -n "$primary" ] || primary="${pod%-*}-0.${service}"
set -- "$@" --replica-announce-ip "$me"
if [ "$primary" != "$me" ]; then
  echo "redis: $me replicates $primary"
  set -- "$@" --replicaof "$primary" 6379
fi
exec redis-server - "$@" <<CONF
requirepass "$pw"
masterauth "$pw"
CONF
