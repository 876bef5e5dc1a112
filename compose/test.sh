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

# The tests' servers listen on fixed loopback ports 55400-56999, inside
# Linux's ephemeral range (32768-60999): a test client's outgoing connection
# could take one of them and a later server start would fail to bind. Reserve
# the range from ephemeral allocation when we may (root, writable /proc/sys).
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$reserved" ] && ! grep -q '55400-56999' "$reserved" 2>/dev/null; then
  current=$(cat "$reserved" 2>/dev/null || true)
  echo "${current:+$current,}55400-56999" > "$reserved" 2>/dev/null \
    || echo "test.sh: could not reserve ports 55400-56999 (tests may rarely collide)" >&2
fi

# Integration tests share loopback ports per file, so they run one at a time.
ctest --test-dir "$build" --output-on-failure --timeout 900 "$@"

# In CI (or with WALBUS_CI_SANITIZE=1; =0 skips it) the same tests again under
# ASan+UBSan in build-asan/ (without the packaging tests), then each fuzz target
# for 60 s: about 35 minutes more on 2 cores (docs/sanitizers.md).
sanitize=${WALBUS_CI_SANITIZE:-0}
[ "${CI:-}" = "true" ] && sanitize=${WALBUS_CI_SANITIZE:-1}
if [ "$sanitize" = 1 ]; then
  tests/sanitizers/run.sh asan -E '^deb_' "$@"
  tests/fuzz/run.sh 60
fi
