#!/usr/bin/env bash
# The IoT / MQTT recipe in five minutes: PostgreSQL + mosquitto on loopback,
# walbus publishing device changes with retained per-row state, some changes,
# and then a dashboard that subscribes late and still gets every device's
# current state at once.
set -euo pipefail
# shellcheck source=compose/recipes/lib.sh
source "$(dirname "$0")/../lib.sh"
recipe_init iot

recipe_pg
export WALBUS_MQTT_DIR=$recipe_work/mosquitto
compose_mqtt=$recipe_root/compose/mosquitto.sh
MQTT_URL=$("$compose_mqtt" start "$RECIPE_MQTT_PORT")
export MQTT_URL
recipe_stops+=("WALBUS_MQTT_DIR='$WALBUS_MQTT_DIR' '$compose_mqtt' stop $RECIPE_MQTT_PORT")

echo "== walbus"
recipe_walbus

echo "== changes (nobody is subscribed yet)"
psql "$SHOP_DSN" -q <<'SQL'
INSERT INTO devices (id, name, room, temperature, setpoint) VALUES
  ('thermo-kitchen', 'Kitchen thermostat', 'kitchen', 19.50, 21.00),
  ('thermo-office', 'Office thermostat', 'office', 20.00, 20.50),
  ('plug-garage', 'Garage plug', 'garage', NULL, NULL);
UPDATE devices SET temperature = 20.75, updated_at = now() WHERE id = 'thermo-kitchen';
UPDATE devices SET setpoint = 22.00, updated_at = now() WHERE id = 'thermo-office';
DELETE FROM devices WHERE id = 'plug-garage';      -- its retained state is cleared
SQL
sleep 1

echo "== a dashboard subscribing now: mosquitto_sub -t 'shop/public/devices/state/+' -v"
mosquitto_sub -h 127.0.0.1 -p "$RECIPE_MQTT_PORT" -t 'shop/public/devices/state/+' -v \
  --retained-only -W 2 2>/dev/null || true
if [ -t 0 ]; then
  echo
  echo "== live: every change from now on (make some with psql \"$SHOP_DSN\")"
  recipe_bg "$recipe_dir/dashboard.sh" "127.0.0.1" "$RECIPE_MQTT_PORT"
fi
recipe_wait
