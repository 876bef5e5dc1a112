#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for SECONDS (default 60).
#
#   tests/fuzz/run.sh [SECONDS]
#
# Environment:
#   BUILD_DIR      build directory (default <repo>/build-fuzz)
#   FUZZ_TARGETS   targets to run (default: fuzz_pgoutput fuzz_array_literal fuzz_config)
#   FUZZ_JOBS      how many targets run at once (default 1; the build uses -j2)
#   FUZZ_KEEP_MAX  largest new corpus entry kept, in bytes (default 2048)
#   FUZZ_CORPUS_BUDGET  bytes one target's corpus may hold before it is
#                  minimized (libFuzzer -merge into an empty dir; default 600000,
#                  so the three stay under 2 MB)
#
# A crash, sanitizer report, leak or timeout leaves its reproducer in
# tests/fuzz/crashes/<target>/ and makes the script exit 1 (after every target
# ran). New inputs that are at most FUZZ_KEEP_MAX bytes and add coverage are
# merged into tests/fuzz/corpus/<target>/; the rest are dropped. Reproduce one
# crash with: $BUILD_DIR/tests/fuzz/<target> tests/fuzz/crashes/<target>/<file>
set -euo pipefail

SECONDS_PER_TARGET=${1:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-fuzz}
TARGETS=${FUZZ_TARGETS:-"fuzz_pgoutput fuzz_array_literal fuzz_config"}
JOBS=${FUZZ_JOBS:-1}
KEEP_MAX=${FUZZ_KEEP_MAX:-2048}
BUDGET=${FUZZ_CORPUS_BUDGET:-600000}
CXX=${CXX:-clang++}

if ! command -v "$CXX" >/dev/null; then
  echo "run.sh: $CXX not found (apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 2
fi

cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWALBUS_FUZZ=ON -DWALBUS_SANITIZE=ON \
  -DWALBUS_BROKERS= >/dev/null
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j2 --target $TARGETS

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

LOGS="$BUILD_DIR/tests/fuzz/logs"
mkdir -p "$LOGS"

# run_one TARGET: fuzzes into a scratch dir, then merges the small new inputs.
run_one() {
  local t=$1
  local bin="$BUILD_DIR/tests/fuzz/$t"
  local seeds="$HERE/corpus/$t"
  local crashes="$HERE/crashes/$t"
  local scratch="$BUILD_DIR/tests/fuzz/new/$t"
  local log="$LOGS/$t.log"
  local dict=()
  [[ -f "$HERE/${t#fuzz_}.dict" ]] && dict=(-dict="$HERE/${t#fuzz_}.dict")
  mkdir -p "$seeds" "$crashes" "$scratch"
  rm -f "$scratch"/*
  local rc=0
  # The first directory receives new inputs; the seed corpus is only read.
  "$bin" "${dict[@]}" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$crashes/" \
    "$scratch" "$seeds" >"$log" 2>&1 || rc=$?
  # Keep only small new inputs, and of those only the ones that add coverage.
  find "$scratch" -type f -size +"${KEEP_MAX}"c -delete
  if [[ -n "$(ls -A "$scratch")" ]]; then
    "$bin" -merge=1 "$seeds" "$scratch" >"$LOGS/$t.merge.log" 2>&1 || true
  fi
  rm -rf "$scratch"
  # Over budget: keep only a minimal set with the same coverage.
  local bytes
  bytes=$(find "$seeds" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  if (( bytes > BUDGET )); then
    local min="$BUILD_DIR/tests/fuzz/min/$t"
    rm -rf "$min" && mkdir -p "$min"
    if "$bin" -merge=1 "$min" "$seeds" >"$LOGS/$t.minimize.log" 2>&1 &&
       [[ -n "$(ls -A "$min")" ]]; then
      rm -f "$seeds"/* && mv "$min"/* "$seeds"/
    fi
    rm -rf "$min"
  fi
  local summary
  summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  [[ -z "$summary" ]] && summary=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)
  local execs
  execs=$(grep -E 'stat::average_exec_per_sec' "$log" | tail -1 | awk '{print $2}' || true)
  if [[ $rc -ne 0 ]]; then
    echo "$t: CRASH (exit $rc) after: $summary"
    grep -E 'ERROR: |runtime error|invariant broken|Test unit written to' "$log" | head -5 | sed 's/^/    /'
    echo "    full log: $log"
  else
    echo "$t: ok, ${SECONDS_PER_TARGET}s, ${execs:-?} exec/s; $summary;" \
      "corpus $(find "$seeds" -type f | wc -l) files"
  fi
  return $rc
}

status=0
pids=()
names=()
for t in $TARGETS; do
  run_one "$t" &
  pids+=($!)
  names+=("$t")
  if (( ${#pids[@]} >= JOBS )); then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for p in "${pids[@]}"; do
  wait "$p" || status=1
done
exit $status
