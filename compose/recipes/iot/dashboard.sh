#!/usr/bin/env bash
# The smallest dashboard: prints every device's current state at once (the
# retained messages), then each change as it happens. A deleted device shows
# up once with an empty state.
#
#   compose/recipes/iot/dashboard.sh [HOST] [PORT]
host=${1:-127.0.0.1}
port=${2:-1883}
exec mosquitto_sub -h "$host" -p "$port" -q 1 -t 'shop/public/devices/state/+' \
  -F '%I  %t  %p'
