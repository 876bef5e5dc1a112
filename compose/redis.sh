#!/usr/bin/env bash
# Starts/stops a throwaway Redis on a loopback port, from the Debian package
# (no Docker). No persistence (`--save ""`) unless WALBUS_REDIS_AOF=1, which
# turns on the append-only file. Stops only the redis-server it started (PID
# from its own pidfile).
#
#   compose/redis.sh start [PORT]   -> prints the URL on stdout
#   compose/redis.sh stop  [PORT]
#   compose/redis.sh url   [PORT]
#
# Environment: WALBUS_REDIS_PORT (default 56379), WALBUS_REDIS_DIR (default
# /tmp/walbus-redis-PORT), WALBUS_REDIS_AOF=1 (appendonly yes),
# WALBUS_REDIS_OPTS (extra `--name value` options, e.g. `--requirepass s3cret`).
set -euo pipefail

cmd=${1:-}
port=${2:-${WALBUS_REDIS_PORT:-56379}}
dir=${WALBUS_REDIS_DIR:-/tmp/walbus-redis-$port}
pidfile=$dir/redis.pid
server=$(command -v redis-server || echo /usr/bin/redis-server)
cli=$(command -v redis-cli || echo /usr/bin/redis-cli)

url() { echo "redis://127.0.0.1:$port"; }

# A killed daemon stays a zombie until init reaps it: that counts as gone.
alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -n "$stat" ] && [[ "$stat" != Z* ]]
}

running() { [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; }

# PING answers PONG, or NOAUTH when the server was started with a password:
# either way it is up and serving.
answers() {
  local out
  out=$("$cli" -h 127.0.0.1 -p "$port" ping 2>&1 || true)
  [ "$out" = PONG ] || [[ "$out" == *NOAUTH* ]]
}

case "$cmd" in
  start)
    if running; then url; exit 0; fi
    [ -x "$server" ] || { echo "redis.sh: redis-server not found (apt-get install redis-server)" >&2; exit 1; }
    mkdir -p "$dir"
    rm -f "$pidfile"
    aof=no
    [ "${WALBUS_REDIS_AOF:-0}" = 1 ] && aof=yes
    # shellcheck disable=SC2086  # WALBUS_REDIS_OPTS is a list of options
    "$server" --port "$port" --bind 127.0.0.1 --daemonize yes \
      --pidfile "$pidfile" --dir "$dir" --logfile "$dir/redis.log" \
      --save "" --appendonly "$aof" ${WALBUS_REDIS_OPTS:-} \
      || { echo "redis.sh: redis-server did not start on port $port, see $dir/redis.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
      if running && answers; then url; exit 0; fi
      sleep 0.05
    done
    echo "redis.sh: redis-server did not answer PING on port $port, see $dir/redis.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.05; done
      if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.05; done
      fi
      rm -f "$pidfile"
    fi
    ;;
  url) url ;;
  *) echo "usage: compose/redis.sh start|stop|url [PORT]" >&2; exit 2 ;;
esac
