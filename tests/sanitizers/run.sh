#!/usr/bin/env bash
# Builds walbus and its tests with a sanitizer and runs ctest under it.
#
#   tests/sanitizers/run.sh asan [CTEST ARGS...]   # ASan + UBSan (+ LSan), build-asan/
#   tests/sanitizers/run.sh tsan [CTEST ARGS...]   # ThreadSanitizer, build-tsan/
#
# e.g.  tests/sanitizers/run.sh asan -L unit
#       tests/sanitizers/run.sh tsan -R 'redis_sink|nats_sink'
#
# Every sanitizer report, from a test binary or from a walbus process a test
# started, is written to $BUILD_DIR/sanitizer-logs/ (log_path), so a finding in
# a child whose exit code a test does not look at still counts: the script
# exits 1 when ctest failed or when any report was written, and prints them.
# Known third-party reports are suppressed in tests/sanitizers/*.supp.
#
# Environment:
#   BUILD_DIR    build directory (default <repo>/build-asan or build-tsan)
#   BUILD_TYPE   CMake build type (default RelWithDebInfo)
#   JOBS         build parallelism (default: nproc)
#   SKIP_BUILD=1 run ctest on an existing build
set -euo pipefail

flavour=${1:-}
case "$flavour" in
  asan) option=WALBUS_SANITIZE ;;
  tsan) option=WALBUS_TSAN ;;
  *)
    echo "usage: tests/sanitizers/run.sh asan|tsan [ctest arguments]" >&2
    exit 2
    ;;
esac
shift

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-$flavour}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
JOBS=${JOBS:-$(nproc)}

if [[ "${SKIP_BUILD:-}" != 1 ]]; then
  # No -Werror: optimised sanitizer builds make GCC warn falsely
  # (-Wmaybe-uninitialized, -Wstringop-*); the Release build checks warnings.
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
    -D$option=ON -DWALBUS_WERROR=OFF >/dev/null
  cmake --build "$BUILD_DIR" -j"$JOBS"
fi

logs="$BUILD_DIR/sanitizer-logs"
rm -rf "$logs"
mkdir -p "$logs"

# The options reach every process the tests start (walbus children too).
common="log_path=$logs/report:log_exe_name=1:print_suppressions=0"
if [[ $flavour == asan ]]; then
  export ASAN_OPTIONS="$common:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:abort_on_error=0"
  export LSAN_OPTIONS="suppressions=$HERE/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="$common:print_stacktrace=1:halt_on_error=1:suppressions=$HERE/ubsan.supp"
else
  export TSAN_OPTIONS="$common:suppressions=$HERE/tsan.supp:second_deadlock_stack=1:history_size=4"
fi

# As compose/test.sh: keep the tests' fixed ports out of the ephemeral range.
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$reserved" ] && ! grep -q '55400-56999' "$reserved" 2>/dev/null; then
  current=$(cat "$reserved" 2>/dev/null || true)
  echo "${current:+$current,}55400-56999" > "$reserved" 2>/dev/null || true
fi

status=0
# Sanitized code runs 2-5x slower: a longer default timeout than test.sh's.
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 1800 "$@" || status=1

shopt -s nullglob
reports=("$logs"/report.*)
if (( ${#reports[@]} > 0 )); then
  echo "run.sh: ${#reports[@]} sanitizer report(s) in $logs:" >&2
  for r in "${reports[@]}"; do
    echo "==== $r" >&2
    head -60 "$r" >&2
  done
  status=1
fi
if (( status == 0 )); then
  echo "run.sh: $flavour clean"
fi
exit $status
