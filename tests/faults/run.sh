#!/usr/bin/env bash
# The walbus fault-injection suite (docs/faults.md), in one command:
#
#   tests/faults/run.sh [--short] [--seconds N] [--seed S] [--rate TX_PER_S] [--out DIR] [--keep]
#                       [--build-dir DIR]
#
# --short is the CI form (about 100 s of faults, under 4 minutes in all); the
# default long form runs 900 s of faults (more than 100 of them). Builds
# walbus and the suite's two helper programs when they are missing (build dir:
# --build-dir, else $WALBUS_BUILD_DIR, else build/); $WALBUS_BIN overrides the
# walbus binary. Exits 0 when nothing was lost, reordered, duplicated where the
# broker deduplicates, or delivered from an aborted transaction, and walbus
# never hung; prints the fault table and writes DIR/result.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

build=${WALBUS_BUILD_DIR:-$root/build}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
build=$(cd "$root" && mkdir -p "$build" && cd "$build" && pwd)

if [ ! -x "$build/tests/faults/faults_load" ] || [ ! -x "$build/tests/faults/faults_reader" ] ||
   { [ -z "${WALBUS_BIN:-}" ] && [ ! -x "$build/walbus" ]; }; then
  echo "run.sh: building walbus and the fault suite's helpers in $build" >&2
  [ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  nice cmake --build "$build" -j"$(nproc)" --target walbus faults_load faults_reader >/dev/null
fi
walbus=${WALBUS_BIN:-$build/walbus}

# The suite's ports (56150-56299) lie in Linux's ephemeral range: keep client
# connections off them when we may (compose/test.sh reserves a wider range).
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$reserved" ] && ! grep -qE '(^|,)(55400-56999|56150-56299)(,|$)' "$reserved" 2>/dev/null; then
  current=$(cat "$reserved" 2>/dev/null || true)
  echo "${current:+$current,}56150-56299" > "$reserved" 2>/dev/null || true
fi

python=$(command -v python3 || true)
[ -x /usr/bin/python3 ] && python=/usr/bin/python3
[ -n "$python" ] || { echo "run.sh: python3 is needed (apt-get install python3)" >&2; exit 1; }
exec "$python" "$here/faults.py" --walbus "$walbus" --tools "$build/tests/faults" "${args[@]}"
