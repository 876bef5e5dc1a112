#!/usr/bin/env bash
# The five-minute demo: installs what is missing, builds walbus, starts a
# throwaway PostgreSQL 15 (and a broker), runs walbus, makes some changes and
# shows the envelopes arriving. Everything runs on loopback and is stopped by
# PID at the end.
#
#   compose/demo.sh            # mosquitto (MQTT), envelopes shown live by mosquitto_sub
#   compose/demo.sh stdout     # no broker: walbus prints TOPIC<TAB>ENVELOPE lines
#   compose/demo.sh redis      # redis-server, shown with XRANGE
#   compose/demo.sh nats       # nats-server, shown by a subscriber speaking NATS over /dev/tcp
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sink=${1:-mqtt}

compose/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target walbus

pg_port=55440
export WALBUS_PG_DIR=/tmp/walbus-demo-pg
work=$(mktemp -d /tmp/walbus-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  case "$sink" in
    mqtt) compose/mosquitto.sh stop 55441 >/dev/null 2>&1 || true ;;
    redis) compose/redis.sh stop 55442 >/dev/null 2>&1 || true ;;
    nats) compose/nats.sh stop 55443 >/dev/null 2>&1 || true ;;
  esac
  compose/pg.sh stop $pg_port
}
trap cleanup EXIT

rm -rf "$WALBUS_PG_DIR"
dsn=$(compose/pg.sh start $pg_port)
psql "$dsn" -qc "CREATE DATABASE shop" >/dev/null
shop_dsn="host=127.0.0.1 port=$pg_port user=postgres dbname=shop"
psql "$shop_dsn" -q -o /dev/null <<'SQL'
CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL,
  amount numeric(12,2), paid boolean DEFAULT false, items jsonb, tags text[],
  created_at timestamptz DEFAULT now());
SQL

sink_conf=""
case "$sink" in
  stdout) sink_conf=$'type = "stdout"' ;;
  mqtt)
    url=$(compose/mosquitto.sh start 55441)
    sink_conf=$'type = "mqtt"\nurl = "'"$url"$'"'
    mosquitto_sub -h 127.0.0.1 -p 55441 -q 1 -v -t 'shop/#' &
    pids+=($!) ;;
  redis)
    url=$(compose/redis.sh start 55442)
    sink_conf=$'type = "redis"\nurl = "'"$url"$'"' ;;
  nats)
    url=$(compose/nats.sh start 55443)
    sink_conf=$'type = "nats"\nurl = "'"$url"$'"'
    # A subscriber in plain NATS protocol: CONNECT, SUB, then print MSG payloads.
    ( exec 3<>/dev/tcp/127.0.0.1/55443
      printf 'CONNECT {"verbose":false}\r\nSUB shop.> 1\r\nPING\r\n' >&3
      while IFS= read -r line <&3; do
        line=${line%$'\r'}
        case "$line" in
          MSG*) set -- $line; IFS= read -r payload <&3; echo "$2 ${payload%$'\r'}" ;;
          PING) printf 'PONG\r\n' >&3 ;;
        esac
      done ) &
    pids+=($!) ;;
  *) echo "demo: unknown sink $sink (stdout, mqtt, redis, nats)" >&2; exit 2 ;;
esac

sleep 0.3  # let the subscriber connect
cat > "$work/walbus.toml" <<TOML
[source]
dsn = "$shop_dsn"
slot = "walbus_demo"
publication = "walbus_demo"
status_interval_ms = 200
messages = true

[[sink]]
name = "demo"
$sink_conf

[metrics]
listen = ""   # off in the demo, so a busy port 9187 cannot get in the way
TOML

echo "== walbus check"
build/walbus check -c "$work/walbus.toml"
echo "== walbus run (envelopes appear below as PostgreSQL commits)"
build/walbus run -c "$work/walbus.toml" 2>"$work/walbus.log" &
wpid=$!
pids=("$wpid" "${pids[@]}")
for _ in $(seq 1 50); do grep -q streaming "$work/walbus.log" && break; sleep 0.1; done

psql "$shop_dsn" -q -o /dev/null <<'SQL'
INSERT INTO orders (customer, amount, items, tags) VALUES
  ('ada', 12.50, '[{"sku":"tea","qty":2}]', '{gift,"next day"}'),
  ('bob', 99.99, '[{"sku":"pot","qty":1}]', '{}');
BEGIN;
UPDATE orders SET paid = true WHERE customer = 'ada';
DELETE FROM orders WHERE customer = 'bob';
SELECT pg_logical_emit_message(true, 'audit', 'ada paid');
COMMIT;
SQL
sleep 1.5
if [ "$sink" = redis ]; then
  echo "== XRANGE shop.public.orders"
  redis-cli -p 55442 XRANGE shop.public.orders - + | sed -n '1,40p'
fi
kill -TERM "$wpid"; wait "$wpid" || true
echo "== walbus log"
cat "$work/walbus.log"
echo "== walbus slot status"
build/walbus slot status -c "$work/walbus.toml"
build/walbus slot drop -c "$work/walbus.toml" --yes >/dev/null
