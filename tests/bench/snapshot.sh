#!/usr/bin/env bash
# Initial-snapshot throughput (docs/snapshot.md): loads ROWS rows into a
# throwaway PostgreSQL, then in one run measures
#   1. psql COPY (SELECT ... ORDER BY id) TO STDOUT > /dev/null  (the floor: what
#      PostgreSQL can hand out, text format, one connection)
#   2. walbus snapshot = "initial" into the stdout sink > /dev/null
#   3. walbus snapshot = "initial" into Redis Streams (id = "lsn"; ~450 MB of
#      Redis memory per million rows; Redis, single-threaded, is the limit
#      there: its own CPU time is printed)
# and prints rows/s for each and the ratio walbus / COPY (target >= 0.7).
# walbus's time is the snapshot's own (its "initial snapshot complete" line:
# from the first row read to the last row acknowledged by the sink); the wall
# time from start (slot creation included) is printed too.
#
#   tests/bench/snapshot.sh [ROWS]        (default 1000000)
#
# Servers on loopback ports 56010 (PostgreSQL) and 56011 (Redis), state under
# /tmp/walbus-snapbench; both are stopped at the end. WALBUS_BIN picks the
# binary (default build/walbus).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rows=${1:-1000000}
bin=${WALBUS_BIN:-$root/build/walbus}
[ -x "$bin" ] || { echo "snapshot.sh: no walbus binary at $bin (set WALBUS_BIN)" >&2; exit 2; }
pgport=56010
redisport=56011
work=/tmp/walbus-snapbench
export WALBUS_PG_DIR=$work/pg WALBUS_REDIS_DIR=$work/redis
mkdir -p "$work"
cleanup() {
  "$root/compose/redis.sh" stop $redisport >/dev/null 2>&1 || true
  "$root/compose/pg.sh" stop $pgport >/dev/null 2>&1 || true
}
trap cleanup EXIT

dsn=$("$root/compose/pg.sh" start $pgport)
echo "loading $rows rows ..."
psql "$dsn" -q -o /dev/null <<SQL
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots;
DROP SCHEMA IF EXISTS walbus CASCADE;
DROP PUBLICATION IF EXISTS snapbench;
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2),
  created_at timestamptz, paid bool, meta jsonb);
INSERT INTO orders SELECT g, 'customer-' || g, (g % 100000) / 7.0, '2026-01-01'::timestamptz
  + g * interval '1 second', g % 2 = 0, jsonb_build_object('n', g, 'tag', 'x')
  FROM generate_series(1, $rows) g;
VACUUM ANALYZE orders;
CREATE PUBLICATION snapbench FOR TABLE orders;
SQL
cols="id, customer, amount, created_at, paid, meta"

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# 1. COPY, twice (the first warms the cache; the second is reported).
psql "$dsn" -c "COPY (SELECT $cols FROM orders ORDER BY id) TO STDOUT" >/dev/null
t0=$(now)
psql "$dsn" -c "COPY (SELECT $cols FROM orders ORDER BY id) TO STDOUT" >/dev/null
t1=$(now)
copy_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
copy_rate=$(rate "$rows" "$copy_s")

# 2./3. walbus; prints "seconds rows_per_s wall_seconds".
run_walbus() {
  local name=$1 sink=$2
  psql "$dsn" -q -o /dev/null -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" \
    -c "DROP SCHEMA IF EXISTS walbus CASCADE"
  local cfg=$work/$name.toml log=$work/$name.log
  cat >"$cfg" <<TOML
[source]
dsn = "$dsn"
slot = "snapbench"
publication = "snapbench"
snapshot = "initial"
[metrics]
listen = ""
[[sink]]
name = "$name"
$sink
TOML
  local start end pid
  start=$(now)
  "$bin" run -c "$cfg" >/dev/null 2>"$log" &
  pid=$!
  while ! grep -q "initial snapshot complete" "$log"; do
    if ! kill -0 $pid 2>/dev/null; then echo "walbus exited:" >&2; cat "$log" >&2; exit 1; fi
    sleep 0.02
  done
  end=$(now)
  kill -TERM $pid
  wait $pid || true
  local line secs
  line=$(grep "initial snapshot complete" "$log")
  secs=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")
  echo "$secs $(rate "$rows" "$secs") $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')"
}

read -r out_s out_rate out_wall < <(run_walbus stdout 'type = "stdout"')
redis_url=$("$root/compose/redis.sh" start $redisport)
redis-cli -p $redisport flushall >/dev/null
redis_pid=$(cat "$WALBUS_REDIS_DIR/redis.pid")
cpu0=$(awk '{ print $14 + $15 }' /proc/$redis_pid/stat)
read -r red_s red_rate red_wall < <(run_walbus redis "type = \"redis\"
url = \"$redis_url\"
id = \"lsn\"")
cpu1=$(awk '{ print $14 + $15 }' /proc/$redis_pid/stat)
redis_cpu=$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "initial snapshot of $rows rows ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
printf "%-32s %8s s %10s rows/s\n" "COPY ... TO STDOUT > /dev/null" "$copy_s" "$copy_rate"
printf "%-32s %8s s %10s rows/s  ratio %s  (wall %s s)\n" "walbus -> stdout > /dev/null" \
  "$out_s" "$out_rate" "$(ratio "$out_rate" "$copy_rate")" "$out_wall"
printf "%-32s %8s s %10s rows/s  ratio %s  (wall %s s; redis-server CPU %s s)\n" \
  "walbus -> redis (id=lsn)" "$red_s" "$red_rate" "$(ratio "$red_rate" "$copy_rate")" \
  "$red_wall" "$redis_cpu"
