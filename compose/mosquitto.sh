#!/usr/bin/env bash
# Starts/stops a throwaway Mosquitto 2.0 broker on a loopback port, from the
# Debian package (no Docker). When invoked as root the broker drops to the OS
# user `mosquitto`, so its directory is handed to that user. Stops only the
# broker it started (PID from its own pid file).
#
#   compose/mosquitto.sh start [PORT]   -> prints the URL on stdout
#   compose/mosquitto.sh stop  [PORT]
#   compose/mosquitto.sh url   [PORT]
#
# Environment: WALBUS_MQTT_PORT (default 1883), WALBUS_MQTT_DIR (default
# /tmp/walbus-mosquitto-PORT), WALBUS_MQTT_PASSWD ("user:password": anonymous
# clients are refused and that user is the only one), WALBUS_MQTT_PERSIST=1
# (keep retained messages and sessions on disk in the directory),
# WALBUS_MQTT_EXTRA (extra mosquitto.conf lines, e.g. "message_size_limit 1000").
# TLS (opt-in): WALBUS_MQTT_TLS_DIR, a directory made by compose/tls-certs.sh,
# makes the listener TLS-only with its server.crt/server.key (copied into the
# broker's directory); WALBUS_MQTT_TLS_REQUIRE_CERT=1 also requires a client
# certificate signed by its ca.crt (require_certificate true).
set -euo pipefail

cmd=${1:-}
port=${2:-${WALBUS_MQTT_PORT:-1883}}
dir=${WALBUS_MQTT_DIR:-/tmp/walbus-mosquitto-$port}
pidfile=$dir/mosquitto.pid

url() { if [ -n "${WALBUS_MQTT_TLS_DIR:-}" ]; then echo "ssl://127.0.0.1:$port"; else echo "tcp://127.0.0.1:$port"; fi; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

case "$cmd" in
  start)
    if running; then url; exit 0; fi
    mkdir -p "$dir"
    rm -f "$pidfile"
    {
      echo "listener $port 127.0.0.1"
      if [ -n "${WALBUS_MQTT_TLS_DIR:-}" ]; then
        for f in server.crt server.key ca.crt; do
          [ -f "$WALBUS_MQTT_TLS_DIR/$f" ] || { echo "mosquitto.sh: $WALBUS_MQTT_TLS_DIR/$f is missing (make it with compose/tls-certs.sh)" >&2; exit 1; }
          cp "$WALBUS_MQTT_TLS_DIR/$f" "$dir/tls-$f"
        done
        echo "certfile $dir/tls-server.crt"
        echo "keyfile $dir/tls-server.key"
        echo "cafile $dir/tls-ca.crt"
        if [ "${WALBUS_MQTT_TLS_REQUIRE_CERT:-0}" = 1 ]; then
          echo "require_certificate true"
        fi
      fi
      echo "pid_file $pidfile"
      echo "log_dest file $dir/mosquitto.log"
      echo "log_type error"
      echo "log_type warning"
      echo "log_type notice"
      echo "max_inflight_messages 0"
      echo "max_queued_messages 0"
      if [ -n "${WALBUS_MQTT_PASSWD:-}" ]; then
        echo "allow_anonymous false"
        echo "password_file $dir/passwd"
      else
        echo "allow_anonymous true"
      fi
      if [ "${WALBUS_MQTT_PERSIST:-0}" = 1 ]; then
        echo "persistence true"
        echo "persistence_location $dir/"
      else
        echo "persistence false"
      fi
      [ -n "${WALBUS_MQTT_EXTRA:-}" ] && printf '%s\n' "$WALBUS_MQTT_EXTRA"
    } >"$dir/mosquitto.conf"
    if [ -n "${WALBUS_MQTT_PASSWD:-}" ]; then
      rm -f "$dir/passwd"
      mosquitto_passwd -b -c "$dir/passwd" "${WALBUS_MQTT_PASSWD%%:*}" "${WALBUS_MQTT_PASSWD#*:}"
      chmod 600 "$dir/passwd"
    fi
    # As root, mosquitto writes its pid file as root and then runs as
    # `mosquitto`, which must be able to read the password file and write the
    # log and the persistence file.
    if [ "$(id -u)" = 0 ] && getent passwd mosquitto >/dev/null; then
      chown -R mosquitto: "$dir"
    fi
    mosquitto -d -c "$dir/mosquitto.conf" \
      || { echo "mosquitto.sh: mosquitto did not start on port $port, see $dir/mosquitto.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
      if running && port_open; then url; exit 0; fi
      sleep 0.05
    done
    echo "mosquitto.sh: mosquitto is not listening on 127.0.0.1:$port, see $dir/mosquitto.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
      rm -f "$pidfile"
    fi
    ;;
  url) url ;;
  *) echo "usage: compose/mosquitto.sh start|stop|url [PORT]" >&2; exit 2 ;;
esac
