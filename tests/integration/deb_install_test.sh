#!/bin/bash
# Install test of the Debian package in a fresh Debian 12 (bookworm) root:
# builds walbus_<version>_<arch>.deb with cpack, installs it with
# `apt-get install ./walbus_*.deb` inside a minimal debootstrap root (so its
# runtime libraries come in as dependencies from the archive, not from this
# machine), then runs the installed walbus there: version, --help, its shipped
# configuration as the walbus user, and finally purges the package.
#
#   tests/integration/deb_install_test.sh [BUILD_DIR]
#
# BUILD_DIR: a configured build directory (ctest passes its own); without it,
# one is configured and built in a temporary directory.
# Needs root (debootstrap, chroot, mount), the Debian package debootstrap and
# network access to a Debian mirror. Exit 77 (skipped) when not root or when
# the mirror does not answer.
#
# The first run downloads ~60 MB (debootstrap --variant=minbase) and keeps the
# root as a tarball in the cache; later runs only fetch walbus's dependencies
# (kept in the cache too). Environment:
#   WALBUS_DEBOOTSTRAP_CACHE  cache directory (default /var/cache/walbus-debootstrap)
#   WALBUS_DEBIAN_MIRROR      Debian mirror (default: the one this machine's apt
#                             sources use for bookworm, else http://deb.debian.org/debian)
#   WALBUS_DEBIAN_SECURITY    security mirror (default: likewise, for bookworm-security)
set -u

SRC=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${WALBUS_DEBOOTSTRAP_CACHE:-/var/cache/walbus-debootstrap}
SUITE=bookworm
t_start=$(date +%s)

failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
die() { echo "FAIL $*"; exit 1; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }

if [ "$(id -u)" != 0 ]; then
  echo "skip: deb_install needs root (debootstrap, chroot, mount)"
  exit 77
fi
for tool in debootstrap chroot mount umount tar cmake cpack dpkg-deb dpkg-shlibdeps file; do
  command -v "$tool" >/dev/null ||
    die "$tool not found (apt-get install debootstrap dpkg-dev file cmake)"
done
ARCH=$(dpkg --print-architecture)

# --- the mirror this machine uses ----------------------------------------------
# First URI of an apt source (deb822 .sources or one-line .list) whose suites
# include exactly $1.
apt_uri_for() {
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      function done_stanza() { if (ok && uri != "" && !found) { print uri; found = 1 } ok = 0; uri = "" }
      /^[ \t]*$/ { done_stanza(); next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
      tolower($1) == "enabled:" && tolower($2) == "no" { ok = -1000 }
      END { done_stanza() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == s) print $i }' "$f"
  done
}
MIRROR=${WALBUS_DEBIAN_MIRROR:-$(apt_uri_for "$SUITE" | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
MIRROR=${MIRROR%/}
SECURITY=${WALBUS_DEBIAN_SECURITY:-$(apt_uri_for "$SUITE-security" | head -1)}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
SECURITY=${SECURITY%/}
echo "---- mirror $MIRROR, security $SECURITY"
if command -v curl >/dev/null; then
  if ! curl -fsSI --max-time 20 "$MIRROR/dists/$SUITE/Release" >/dev/null; then
    echo "skip: the Debian mirror $MIRROR is not reachable (set WALBUS_DEBIAN_MIRROR)"
    exit 77
  fi
  pass "mirror reachable: $MIRROR/dists/$SUITE/Release"
fi

TMP=$(mktemp -d /tmp/walbus-deb-install.XXXXXX)
ROOT=$TMP/root
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"; done
  # Never delete through a mount point that is still there (the apt cache is bind-mounted).
  if [ -z "$(awk -v r="$ROOT" 'index($2, r) == 1' /proc/mounts)" ]; then
    rm -rf "$TMP"
  else
    echo "warning: mounts under $ROOT remain; left $TMP in place" >&2
  fi
}
trap cleanup EXIT

# --- the package -------------------------------------------------------------
t0=$(date +%s)
if [ $# -ge 1 ] && [ -n "$1" ]; then
  BUILD=$(cd "$1" && pwd) || die "no build directory $1"
else
  BUILD=$TMP/build
  echo "---- configuring and building walbus in $BUILD"
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWALBUS_TESTS=OFF >"$TMP/configure.log" 2>&1 ||
    { cat "$TMP/configure.log"; die "cmake configure failed"; }
  cmake --build "$BUILD" -j"$(nproc)" --target walbus >"$TMP/build.log" 2>&1 ||
    { tail -50 "$TMP/build.log"; die "build failed"; }
fi
[ -f "$BUILD/CPackConfig.cmake" ] || die "$BUILD/CPackConfig.cmake missing: re-run cmake"
VERSION=$(sed -n 's/^project(walbus VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
DEB_NAME=walbus_${VERSION}_${ARCH}.deb
(cd "$BUILD" && cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$TMP/pkg") \
  >"$TMP/cpack.log" 2>&1 || { cat "$TMP/cpack.log"; die "cpack -G DEB failed"; }
[ -f "$TMP/pkg/$DEB_NAME" ] || { ls -la "$TMP/pkg"; die "cpack did not produce $DEB_NAME"; }
pass "cpack produced $DEB_NAME, Depends: $(dpkg-deb -f "$TMP/pkg/$DEB_NAME" Depends) ($(elapsed "$t0"))"

# --- the fresh root, from the cache or from debootstrap ------------------------
mkdir -p "$CACHE/archives/partial"
exec 9>"$CACHE/lock"
flock 9 || die "cannot lock $CACHE/lock"
TARBALL=$CACHE/$SUITE-minbase-$ARCH.tar.gz
t0=$(date +%s)
if [ -f "$TARBALL" ]; then
  mkdir -p "$ROOT"
  tar -xpzf "$TARBALL" -C "$ROOT" --numeric-owner || die "cannot unpack $TARBALL"
  root_kind=cached
  pass "fresh $SUITE root unpacked from $TARBALL ($(elapsed "$t0"))"
else
  echo "---- debootstrap --variant=minbase $SUITE (no cached root yet: downloads ~60 MB)"
  keyring=()
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
    keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  if ! debootstrap --variant=minbase "${keyring[@]}" "$SUITE" "$ROOT" "$MIRROR" \
       >"$TMP/debootstrap.log" 2>&1; then
    tail -30 "$TMP/debootstrap.log"
    die "debootstrap failed (full log above, last 30 lines)"
  fi
  root_kind=cold
  pass "debootstrap --variant=minbase $SUITE ($(elapsed "$t0"))"
  t1=$(date +%s)
  tar -czf "$TARBALL.tmp" -C "$ROOT" --numeric-owner . && mv "$TARBALL.tmp" "$TARBALL" ||
    { rm -f "$TARBALL.tmp"; die "cannot write $TARBALL"; }
  pass "cached the root as $TARBALL ($(du -h "$TARBALL" | cut -f1), $(elapsed "$t1"))"
fi

# apt sources as on this machine (updates and security too, so the versions
# dpkg-shlibdeps saw here are installable), DNS, /proc, the shared apt cache.
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc") || die "cannot mount /proc in the root"
mount --bind "$CACHE/archives" "$ROOT/var/cache/apt/archives" &&
  MOUNTS+=("$ROOT/var/cache/apt/archives") || die "cannot bind-mount the apt cache"
cp "$TMP/pkg/$DEB_NAME" "$ROOT/tmp/$DEB_NAME"
chmod 644 "$ROOT/tmp/$DEB_NAME"

# in_root CMD...: runs a shell command line in the root; output in $TMP/out.
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive /bin/sh -c "$*" >"$TMP/out" 2>&1
}
show() { sed 's/^/     | /' "$TMP/out"; }
run_check() {  # run_check DESCRIPTION EXPECTED_RC COMMAND: runs it in the root
  local what=$1 want=$2 rc
  in_root "$3"
  rc=$?
  show
  if [ "$rc" = "$want" ]; then pass "$what"; else fail "$what (exit $rc, expected $want)"; fi
}

# --- install ---------------------------------------------------------------------
t0=$(date +%s)
in_root "apt-get update -q" || { show; die "apt-get update failed in the root"; }
pass "apt-get update in the root ($(elapsed "$t0"))"
in_root "dpkg-query -W -f='\${Package}\n' | LC_ALL=C sort" && cp "$TMP/out" "$TMP/before"
t0=$(date +%s)
run_check "apt-get install ./$DEB_NAME in the fresh root: exit 0" 0 \
  "cd /tmp && apt-get install -y -q --no-install-recommends ./$DEB_NAME"
install_time=$(elapsed "$t0")
echo "     (install took $install_time)"
in_root "dpkg-query -W -f='\${Package}\n' | LC_ALL=C sort" && cp "$TMP/out" "$TMP/after"
echo "     packages the install pulled in: $(LC_ALL=C comm -13 "$TMP/before" "$TMP/after" | tr '\n' ' ')"
in_root "dpkg-query -W -f='\${Status}' walbus"
check_status=$(cat "$TMP/out")
[ "$check_status" = "install ok installed" ] && pass "dpkg: walbus is installed" ||
  fail "dpkg: walbus status is '$check_status'"

# --- run it ----------------------------------------------------------------------
run_check "ldd /usr/bin/walbus: every library found" 0 "! ldd /usr/bin/walbus | grep 'not found'"
run_check "walbus version (in the fresh root): exit 0" 0 "walbus version"
grep -qx "walbus $VERSION" "$TMP/out" && pass "  ... prints 'walbus $VERSION'" ||
  fail "  ... does not print 'walbus $VERSION'"
cp "$TMP/out" "$TMP/version.out"
run_check "walbus --help: exit 0" 0 "walbus --help"
grep -q '^usage: walbus' "$TMP/out" && pass "  ... prints the usage" || fail "  ... no usage line"
run_check "the walbus system user exists" 0 "id walbus"
run_check "/etc/walbus/walbus.toml is root:walbus 0640" 0 \
  "test \"\$(stat -c '%U:%G %a' /etc/walbus/walbus.toml)\" = 'root:walbus 640'"
# The shipped configuration, as the service user (as postinst suggests):
# valid, readable; PostgreSQL is pointed at a port where nothing listens, so
# check stops at the connection (exit 1, never 2).
run_check "walbus check -c /etc/walbus/walbus.toml as user walbus (no PostgreSQL): exit 1" 1 \
  "sed -i 's/port=5432/port=1/' /etc/walbus/walbus.toml && PGCONNECT_TIMEOUT=5 \
   setpriv --reuid=walbus --regid=walbus --init-groups walbus check -c /etc/walbus/walbus.toml"
grep -q '^ok *config:' "$TMP/out" && pass "  ... the shipped configuration is readable and valid" ||
  fail "  ... the configuration line is not ok"

# --- remove ----------------------------------------------------------------------
run_check "apt-get purge walbus: exit 0" 0 "apt-get purge -y -q walbus"
run_check "  ... /usr/bin/walbus and /etc/walbus are gone" 0 \
  "test ! -e /usr/bin/walbus && test ! -e /etc/walbus"

echo "----"
echo "walbus version in the fresh $SUITE root:"
sed 's/^/  /' "$TMP/version.out"
echo "timings: root $root_kind, install $install_time, total $(elapsed "$t_start")"
if [ "$failures" -ne 0 ]; then
  echo "deb_install: $failures check(s) FAILED"
  exit 1
fi
echo "deb_install: all checks passed"
