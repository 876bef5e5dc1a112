#!/usr/bin/env bash
# Quick profiling loop: loads N rows into a throwaway PostgreSQL (port 56690)
# with a fresh slot, then drains the slot with walbus into one sink and prints
# wall time, events/s and walbus CPU. For the side-by-side figures use
# tests/bench/run.sh; this is for perf/callgrind iterations. Servers on
# loopback ports 56690-56693, state under /tmp/walbus-pbench/drain-*; they are
# left running for the next iteration (stop: compose/<server>.sh stop PORT with
# the same WALBUS_*_DIR).
#   tests/bench/drain.sh [stdout|redis|nats|jetstream|mqtt] [ROWS] [-- WRAPPER...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sink=${1:-stdout}; rows=${2:-200000}; shift 2 || true
[ "${1:-}" = "--" ] && shift
wrapper=("$@")
bin=${WALBUS_BIN:-$root/build-bench/walbus}
[ -x "$bin" ] || bin=$root/build/walbus
port=56690
export WALBUS_PG_DIR=/tmp/walbus-pbench/drain-pg WALBUS_REDIS_DIR=/tmp/walbus-pbench/drain-redis
export WALBUS_NATS_DIR=/tmp/walbus-pbench/drain-nats WALBUS_NATS_HTTP_PORT=0 WALBUS_MQTT_DIR=/tmp/walbus-pbench/drain-mqtt
mkdir -p /tmp/walbus-pbench
dsn=$("$root/compose/pg.sh" start $port)
psql "$dsn" -q -o /dev/null <<SQL
DROP TABLE IF EXISTS orders;
CREATE TABLE orders(id bigserial primary key, customer text, amount numeric(12,2),
  created_at timestamptz, paid bool, meta jsonb);
DROP PUBLICATION IF EXISTS drain_pub; CREATE PUBLICATION drain_pub FOR TABLE orders;
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name='drain';
SELECT pg_create_logical_replication_slot('drain', 'pgoutput');
DO \$\$ BEGIN FOR i IN 1..($rows/1000) LOOP
  INSERT INTO orders(customer, amount, created_at, paid, meta)
  SELECT 'customer-'||g, (g%1000)/7.0, now(), g%2=0, jsonb_build_object('n', g, 'tag', 'x')
  FROM generate_series(1,1000) g; COMMIT; END LOOP; END \$\$;
SQL
endpos=$(psql "$dsn" -Atc "select pg_current_wal_lsn()")
extra=""
case "$sink" in
  redis) url=$("$root/compose/redis.sh" start 56691); redis-cli -p 56691 flushall >/dev/null
         extra=$'url = "'"$url"$'"' ;;
  nats) url=$("$root/compose/nats.sh" start 56692); extra=$'url = "'"$url"$'"' ;;
  jetstream) url=$("$root/compose/nats.sh" start 56692)
         extra=$'url = "'"$url"$'"\nstream = "DRAIN"\ntopic = "js.{db}.{schema}.{table}.{op}"' ;;
  mqtt) url=$("$root/compose/mosquitto.sh" start 56693); extra=$'url = "'"$url"$'"' ;;
esac
cfg=/tmp/walbus-pbench/drain.toml
cat > $cfg <<TOML
[source]
dsn = "$dsn"
slot = "drain"
publication = "drain_pub"
create_slot = false
create_publication = false
status_interval_ms = 100
[[sink]]
name = "s"
type = "$sink"
$extra
[metrics]
listen = ""
TOML
start=$(date +%s.%N)
/usr/bin/time -f "%e %U %S %M" -o /tmp/walbus-pbench/drain.time "${wrapper[@]}" "$bin" run -c $cfg >/tmp/walbus-pbench/drain.out 2>/tmp/walbus-pbench/drain.err &
pid=$!
while :; do
  c=$(psql "$dsn" -Atc "select confirmed_flush_lsn >= '$endpos' from pg_replication_slots where slot_name='drain'")
  [ "$c" = t ] && break
  kill -0 $pid 2>/dev/null || { echo "walbus exited"; cat /tmp/walbus-pbench/drain.err; exit 1; }
  sleep 0.05
done
end=$(date +%s.%N)
pkill -TERM -P $pid 2>/dev/null || true; wait $pid || true
t=$(tail -1 /tmp/walbus-pbench/drain.time); set -- $t; user=$2; sys=$3; rss=$4
awk -v s="$start" -v e="$end" -v n="$rows" -v u="$user" -v y="$sys" -v r="$rss" 'BEGIN{w=e-s;
  printf "sink=%s rows=%d wall=%.2fs events/s=%.0f cpu=%.2fs us/event=%.2f rss=%.1fMB\n", "'"$sink"'", n, w, n/w, u+y, (u+y)*1e6/n, r/1024}'
