#!/usr/bin/env bash
# The walbus benchmark, one command (docs/benchmarks.md):
#
#   tests/bench/run.sh [--quick] [--sinks stdout,redis,...] [--workloads narrow,wide,bigtx,mix,latency,memory,profile]
#   tests/bench/run.sh --help
#
# Builds walbus (Release, build-bench/) unless WALBUS_BIN names a binary, installs
# the Node.js peer's npm modules under /tmp when ../shared/bench is there, then
# runs tests/bench/bench.py: private PostgreSQL 15 + nats-server + redis-server +
# mosquitto on loopback ports 56600-56604 (state in /tmp/walbus-pbench, stopped by
# PID), every contender x sink draining the same slot data, latency, memory and a
# callgrind profile. Results: tests/bench/out/results.json; a full (not --quick)
# run of everything also rewrites docs/benchmarks.md and docs/img/bench-*.png
# (tests/bench/render.py does that from any results file).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

command -v python3 >/dev/null || { echo "bench: python3 not found (run compose/install-deps.sh)" >&2; exit 2; }
for a in "$@"; do
  case "$a" in -h|--help) exec python3 "$here/bench.py" --help ;; esac
done
if [ "$(id -u)" != 0 ]; then
  echo "bench: must run as root (PostgreSQL runs as the OS user postgres via su)" >&2
  exit 2
fi

start=$SECONDS
if [ -z "${WALBUS_BIN:-}" ]; then
  echo "bench: building walbus (Release) in $root/build-bench" >&2
  cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
  nice cmake --build "$root/build-bench" -j"$(nproc)" --target walbus >/dev/null
  export WALBUS_BIN=$root/build-bench/walbus
fi

# The Node.js peer (../shared/bench/lib/peer.js) runs from where it is, with its
# pinned npm modules: its own node_modules if installed, else installed once
# from its package-lock.json under /tmp (the shared directory may be read-only).
peer_dir=${WALBUS_PEER_DIR:-$root/../shared/bench}
if [ -f "$peer_dir/lib/peer.js" ] && [ -f "$peer_dir/package-lock.json" ] && command -v node >/dev/null; then
  if [ -d "$peer_dir/node_modules/pg-logical-replication" ]; then
    export WALBUS_PEER_NODE_MODULES=$peer_dir/node_modules
  elif command -v npm >/dev/null; then
    nm=/tmp/walbus-pbench/node
    if [ ! -d "$nm/node_modules/pg-logical-replication" ] || ! cmp -s "$peer_dir/package-lock.json" "$nm/package-lock.json"; then
      echo "bench: installing the peer's npm modules into $nm" >&2
      mkdir -p "$nm"
      cp "$peer_dir/package.json" "$peer_dir/package-lock.json" "$nm/"
      (cd "$nm" && npm_config_cache=/tmp/walbus-pbench/npm-cache npm_config_update_notifier=false \
        npm ci --no-audit --no-fund --loglevel=error >&2) \
        || echo "bench: npm ci failed: the peer column will be empty" >&2
    fi
    export WALBUS_PEER_NODE_MODULES=$nm/node_modules
  fi
  export WALBUS_PEER_DIR=$peer_dir
elif [ ! -f "$peer_dir/lib/peer.js" ]; then
  echo "peer: ../shared/bench not found ($peer_dir): the peer column will be empty" >&2
fi

rc=0
python3 "$here/bench.py" "$@" || rc=$?
echo "total time including the build: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
exit $rc
