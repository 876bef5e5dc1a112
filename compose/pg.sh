#!/usr/bin/env bash
# Starts/stops a throwaway PostgreSQL 15 with wal_level=logical on a loopback
# port, from the Debian package (no Docker). Runs the server as the OS user
# `postgres` when invoked as root. Stops only the postmaster it started (PID
# from its own data directory).
#
#   compose/pg.sh start  [PORT]   -> prints the DSN on stdout
#   compose/pg.sh stop   [PORT]
#   compose/pg.sh stop-immediate [PORT]  -> immediate shutdown (SIGQUIT): a
#                                 crash; the next start runs WAL recovery
#   compose/pg.sh dsn    [PORT]
#
# Environment: WALBUS_PG_PORT (default 55432), WALBUS_PG_DIR (default
# /tmp/walbus-pg-PORT), WALBUS_PG_OPTS (extra `-c name=value` options).
# Opt-in, both applied at every start:
#   WALBUS_PG_SSL_DIR  a directory made by compose/tls-certs.sh: ssl = on with
#                      its server.crt/server.key, and ca.crt to verify client
#                      certificates (copied into PG_DIR/ssl, owned by the server)
#   WALBUS_PG_HBA      the whole pg_hba.conf (lines separated by newlines), e.g.
#                      "hostssl all all 127.0.0.1/32 scram-sha-256"; unset keeps
#                      initdb's trust-everything file
set -euo pipefail

cmd=${1:-}
port=${2:-${WALBUS_PG_PORT:-55432}}
dir=${WALBUS_PG_DIR:-/tmp/walbus-pg-$port}
bindir=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v pg_ctl)")

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    # cd first: su keeps the cwd, which the postgres user may not be able to read.
    (cd / && su postgres -s /bin/sh -c "$*")
  else
    sh -c "$*"
  fi
}

dsn() { echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"; }

case "$cmd" in
  start)
    if [ -f "$dir/data/postmaster.pid" ] && kill -0 "$(head -1 "$dir/data/postmaster.pid")" 2>/dev/null; then
      dsn; exit 0
    fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$bindir/initdb -D '$dir/data' -U postgres -A trust -E UTF8 --locale=C.UTF-8 >'$dir/initdb.log' 2>&1" \
        || { echo "pg.sh: initdb failed, see $dir/initdb.log" >&2; exit 1; }
    fi
    opts="-c wal_level=logical -c max_replication_slots=32 -c max_wal_senders=32 \
-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' \
-c fsync=off -c synchronous_commit=on -c full_page_writes=off -c autovacuum=off \
-c wal_sender_timeout=60s -c logging_collector=off ${WALBUS_PG_OPTS:-}"
    if [ -n "${WALBUS_PG_SSL_DIR:-}" ]; then
      for f in server.crt server.key ca.crt; do
        [ -f "$WALBUS_PG_SSL_DIR/$f" ] || { echo "pg.sh: $WALBUS_PG_SSL_DIR/$f is missing (make it with compose/tls-certs.sh)" >&2; exit 1; }
      done
      mkdir -p "$dir/ssl"
      cp "$WALBUS_PG_SSL_DIR/server.crt" "$WALBUS_PG_SSL_DIR/server.key" "$WALBUS_PG_SSL_DIR/ca.crt" "$dir/ssl/"
      chmod 600 "$dir/ssl/server.key"
      [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir/ssl"
      opts="$opts -c ssl=on -c ssl_cert_file='$dir/ssl/server.crt' -c ssl_key_file='$dir/ssl/server.key' -c ssl_ca_file='$dir/ssl/ca.crt'"
    fi
    if [ -n "${WALBUS_PG_HBA:-}" ]; then
      printf '%s\n' "$WALBUS_PG_HBA" >"$dir/data/pg_hba.conf"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/data/pg_hba.conf"
    fi
    as_pg "$bindir/pg_ctl -D '$dir/data' -l '$dir/server.log' -w -t 60 -o \"$opts\" start >/dev/null" \
      || { echo "pg.sh: PostgreSQL did not start on port $port, see $dir/server.log" >&2; exit 1; }
    dsn
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      pid=$(head -1 "$dir/data/postmaster.pid")
      kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    ;;
  stop-immediate)
    if [ -f "$dir/data/postmaster.pid" ]; then
      pid=$(head -1 "$dir/data/postmaster.pid")
      kill -QUIT "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    ;;
  dsn) dsn ;;
  *) echo "usage: compose/pg.sh start|stop|dsn [PORT]" >&2; exit 2 ;;
esac
