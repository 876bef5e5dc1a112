#!/usr/bin/env bash
# The realtime recipe in five minutes: PostgreSQL + nats-server with its
# WebSocket listener on loopback, walbus publishing public.orders changes, and
# realtime.html to open in a browser; then orders keep changing every couple
# of seconds until you press Enter.
#
#   compose/recipes/realtime/run.sh                    # open the printed URL in your browser
#   compose/recipes/realtime/run.sh --screenshot F.png # headless Chromium takes a picture instead
set -euo pipefail
# shellcheck source=compose/recipes/lib.sh
source "$(dirname "$0")/../lib.sh"
shot=""
[ "${1:-}" = --screenshot ] && shot=$(realpath -m "${2:?--screenshot needs a file name}")
recipe_init realtime

recipe_pg
export WALBUS_NATS_DIR=$recipe_work/nats WALBUS_NATS_HTTP_PORT=0
export WALBUS_NATS_CONF=$recipe_dir/nats-websocket.conf REALTIME_WS_PORT=$RECIPE_WS_PORT
compose_nats=$recipe_root/compose/nats.sh
NATS_URL=$("$compose_nats" start "$RECIPE_NATS_PORT")
export NATS_URL
recipe_stops+=("WALBUS_NATS_DIR='$WALBUS_NATS_DIR' '$compose_nats' stop $RECIPE_NATS_PORT")

echo "== walbus"
recipe_walbus

page="file://$recipe_dir/realtime.html?ws=ws://127.0.0.1:$RECIPE_WS_PORT"
if [ -n "$shot" ]; then
  rm -f "$recipe_work/stop"
  recipe_bg python3 "$recipe_dir/browser.py" --url "$page" \
    --ready 'window.walbus && window.walbus.subscribed' --stop-file "$recipe_work/stop" \
    --screenshot "$shot" --timeout 60 >"$recipe_work/browser.out"
  for _ in $(seq 1 100); do grep -q ready "$recipe_work/browser.out" && break; sleep 0.2; done
else
  echo
  echo "Open this in a browser (Chromium, Firefox...):"
  echo "  $page"
  echo
  sleep 3
fi

psql "$SHOP_DSN" -q <<'SQL'
INSERT INTO orders (customer, amount) VALUES ('Ada Lovelace', 12.50), ('Bob Stone', 99.99),
  ('Chen Wei', 7.20), ('Dana Ruiz', 42.00), ('Eli Park', 130.00);
UPDATE orders SET status = 'paid' WHERE customer IN ('Ada Lovelace', 'Eli Park');
DELETE FROM orders WHERE customer = 'Bob Stone';
SQL

if [ -n "$shot" ]; then
  sleep 1
  touch "$recipe_work/stop"
  wait "${recipe_pids[-1]}" || true
  echo "screenshot: $shot"
  exit 0
fi

if [ -t 0 ]; then
  echo "Orders keep changing every 2 s; press Enter to stop."
  names=(Grace Hugo Ines Jonas Kemal Lena Mateo Nora Omar Priya)
  statuses=(paid packed shipped delivered)
  while true; do
    i=$((RANDOM % 10))
    psql "$SHOP_DSN" -q -c "INSERT INTO orders (customer, amount) VALUES ('${names[$i]}', $((RANDOM % 200)).$((RANDOM % 90 + 10)))" \
      -c "UPDATE orders SET status = '${statuses[$((RANDOM % 4))]}' WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)" \
      -c "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE (SELECT count(*) FROM orders) > 8 ORDER BY id LIMIT 1)"
    if read -r -t 2 _; then break; fi
  done
fi
