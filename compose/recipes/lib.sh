# shellcheck shell=bash
# Shared by compose/recipes/*/run.sh (sourced, not run). Builds walbus when
# needed, starts a throwaway PostgreSQL 15 and brokers through compose/*.sh on
# loopback ports, runs walbus in the background, and stops everything it
# started (by PID) on exit.
#
# Ports (override with the environment): RECIPE_PG_PORT 56250,
# RECIPE_NATS_PORT 56251 (its monitoring port 56252), RECIPE_WS_PORT 56253,
# RECIPE_REDIS_PORT 56254, RECIPE_MQTT_PORT 56255.

recipe_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RECIPE_PG_PORT=${RECIPE_PG_PORT:-56250}
RECIPE_NATS_PORT=${RECIPE_NATS_PORT:-56251}
RECIPE_WS_PORT=${RECIPE_WS_PORT:-56253}
RECIPE_REDIS_PORT=${RECIPE_REDIS_PORT:-56254}
RECIPE_MQTT_PORT=${RECIPE_MQTT_PORT:-56255}
recipe_pids=()
recipe_stops=()

# recipe_init NAME: installs what is missing, builds walbus, sets the work directory.
recipe_init() {
  recipe_name=$1
  recipe_dir=$recipe_root/compose/recipes/$recipe_name
  recipe_work=/tmp/walbus-recipe-$recipe_name
  mkdir -p "$recipe_work"
  if [ -z "${WALBUS:-}" ]; then
    "$recipe_root/compose/install-deps.sh"
    cmake -S "$recipe_root" -B "$recipe_root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$recipe_root/build" -j"$(nproc)" --target walbus
    WALBUS=$recipe_root/build/walbus
  fi
  trap recipe_cleanup EXIT
  trap 'exit 130' INT TERM
}

recipe_cleanup() {
  local p s
  for p in "${recipe_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${recipe_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for s in "${recipe_stops[@]}"; do eval "$s" >/dev/null 2>&1 || true; done
}

# recipe_bg CMD...: runs CMD in the background, stopped (SIGTERM) at exit.
recipe_bg() {
  "$@" &
  recipe_pids+=($!)
}

# recipe_pg: a fresh PostgreSQL with a database "shop" holding schema.sql;
# exports SHOP_DSN and PG_ADMIN (the postgres role on database shop).
recipe_pg() {
  export WALBUS_PG_DIR=$recipe_work/pg
  "$recipe_root/compose/pg.sh" stop "$RECIPE_PG_PORT" >/dev/null 2>&1 || true
  rm -rf "$WALBUS_PG_DIR"
  "$recipe_root/compose/pg.sh" start "$RECIPE_PG_PORT" >/dev/null
  recipe_stops+=("WALBUS_PG_DIR='$WALBUS_PG_DIR' '$recipe_root/compose/pg.sh' stop $RECIPE_PG_PORT")
  psql "host=127.0.0.1 port=$RECIPE_PG_PORT user=postgres dbname=postgres" -qc "CREATE DATABASE shop"
  export SHOP_DSN="host=127.0.0.1 port=$RECIPE_PG_PORT user=postgres dbname=shop"
  export PG_ADMIN=$SHOP_DSN
  psql "$SHOP_DSN" -q -v ON_ERROR_STOP=1 -f "$recipe_dir/schema.sql"
}

# recipe_walbus: `walbus run` on the recipe's walbus.toml, log in $recipe_work/walbus.log;
# waits until it streams.
recipe_walbus() {
  export METRICS_LISTEN=${METRICS_LISTEN:-}
  "$WALBUS" check -c "$recipe_dir/walbus.toml"
  recipe_bg "$WALBUS" run -c "$recipe_dir/walbus.toml" 2>"$recipe_work/walbus.log"
  local _
  for _ in $(seq 1 100); do grep -q 'INFO streaming' "$recipe_work/walbus.log" && return 0; sleep 0.1; done
  echo "walbus did not start streaming, see $recipe_work/walbus.log:" >&2
  cat "$recipe_work/walbus.log" >&2
  exit 1
}

# recipe_wait: keeps the servers up until Enter or Ctrl-C when run from a terminal.
recipe_wait() {
  if [ -t 0 ]; then
    echo
    echo "Everything keeps running: make more changes with  psql \"$SHOP_DSN\""
    echo "Press Enter (or Ctrl-C) to stop and clean up."
    read -r _ || true
  fi
}
