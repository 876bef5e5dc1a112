#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what is missing, builds,
# and runs ctest. Integration tests start their own throwaway servers
# (PostgreSQL, nats-server, mosquitto, redis-server) on loopback ports via the
# scripts beside this one, and stop them by PID.
#
#   compose/test.sh              # everything
#   compose/test.sh -L unit      # extra arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

compose/install-deps.sh

build=${WALBUS_BUILD_DIR:-build}
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DWALBUS_WERROR=$werror >/dev/null
cmake --build "$build" -j"$(nproc)"

# Integration tests share loopback ports per file, so they run one at a time.
ctest --test-dir "$build" --output-on-failure --timeout 900 "$@"
