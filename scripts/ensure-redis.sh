#!/usr/bin/env bash
# Start a local Redis when none answers at CUTFX_REDIS_URL (default 127.0.0.1:6379).
set -euo pipefail
URL="${CUTFX_REDIS_URL:-redis://127.0.0.1:6379/0}"

redis_answers() {
  python - "$URL" <<'PY'
import sys, redis
try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
except redis.RedisError:
    sys.exit(1)
PY
}

if redis_answers; then
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
port="$(python -c 'import sys; from urllib.parse import urlparse; print(urlparse(sys.argv[1]).port or 6379)' "$URL")"
# Append-only persistence, fsynced every second: a restart keeps every queued job,
# job record and idempotency key (at most one second of writes is at risk).
data="${CUTFX_REDIS_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/cutfx/redis-$port}"
echo "==> starting redis-server on port $port (data in $data)"
mkdir -p "$data"
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" \
  --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
  --dir "$data" --logfile "$data/redis.log"
for _ in $(seq 50); do
  redis_answers && exit 0
  sleep 0.1
done
echo "redis-server did not answer on port $port" >&2
exit 1
