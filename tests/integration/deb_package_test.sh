#!/bin/bash
# Debian package test: builds walbus_<version>_<arch>.deb with cpack and checks
# it without installing it on this machine.
#
#   tests/integration/deb_package_test.sh [BUILD_DIR]
#
# BUILD_DIR: an already-configured build directory (ctest passes its own);
# without it, one is configured and built in a temporary directory.
# Checks: control fields and Depends (dpkg-deb -I), the file list, owners and
# modes (dpkg-deb -c), conffiles and maintainer scripts, the extracted binary
# (version, command-line errors, the shipped configuration parses, the unit's
# ExecStart line is accepted), the unit's directives and `systemd-analyze
# verify` when available. Exits non-zero when any check fails.
set -u

SRC=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/walbus-deb-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() {  # check DESCRIPTION COMMAND...: passes when the command succeeds
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
die() { echo "FAIL $*"; exit 1; }

# cpack's DEB generator computes Depends with dpkg-shlibdeps (package
# dpkg-dev) on the files `file` (package file) reports as ELF.
for tool in cmake cpack dpkg-deb dpkg-shlibdeps file; do
  command -v "$tool" >/dev/null ||
    die "$tool not found (install the Debian packages dpkg-dev and file)"
done

# --- the build directory ---------------------------------------------------
if [ $# -ge 1 ] && [ -n "$1" ]; then
  BUILD=$(cd "$1" && pwd) || die "no build directory $1"
  echo "---- build directory: $BUILD"
else
  BUILD=$TMP/build
  echo "---- configuring and building walbus in $BUILD"
  cmake -S "$SRC" -B "$BUILD" -DWALBUS_TESTS=OFF >"$TMP/configure.log" 2>&1 ||
    { cat "$TMP/configure.log"; die "cmake configure failed"; }
  cmake --build "$BUILD" -j2 --target walbus >"$TMP/build.log" 2>&1 ||
    { tail -50 "$TMP/build.log"; die "build failed"; }
fi
[ -f "$BUILD/CPackConfig.cmake" ] ||
  die "$BUILD/CPackConfig.cmake missing: re-run cmake (compose/deb/packaging.cmake is included by CMakeLists.txt)"

VERSION=$(sed -n 's/^project(walbus VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
ARCH=$(dpkg --print-architecture)
[ -n "$VERSION" ] || die "cannot read the project version from $SRC/CMakeLists.txt"
DEB_NAME=walbus_${VERSION}_${ARCH}.deb

# --- build the package -------------------------------------------------------
echo "---- cpack -G DEB into $TMP/pkg"
start=$(date +%s)
(cd "$BUILD" && cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$TMP/pkg") \
  >"$TMP/cpack.log" 2>&1 || { cat "$TMP/cpack.log"; die "cpack -G DEB failed"; }
echo "     ($(($(date +%s) - start)) s)"
DEB=$TMP/pkg/$DEB_NAME
[ -f "$DEB" ] || { ls -la "$TMP/pkg"; die "cpack did not produce $DEB_NAME"; }
pass "cpack produced $DEB_NAME ($(stat -c %s "$DEB") bytes)"

# --- control fields ----------------------------------------------------------
echo "---- dpkg-deb -I"
dpkg-deb -I "$DEB" >"$TMP/info" || die "dpkg-deb -I failed"
sed 's/^/     /' "$TMP/info"
field() { dpkg-deb -f "$DEB" "$1"; }
check "Package is walbus" test "$(field Package)" = walbus
check "Version is the CMake project version $VERSION" test "$(field Version)" = "$VERSION"
check "Architecture is $ARCH" test "$(field Architecture)" = "$ARCH"
for f in Maintainer Homepage Section Description; do
  check "$f is filled ($(field "$f" | head -1))" test -n "$(field "$f")"
done

DEPENDS=$(field Depends)
has_dep() {  # the package name appears as a dependency (alone or with a version)
  echo "$DEPENDS" | tr ',' '\n' | sed 's/^ *//; s/[ (].*//' | grep -qx "$1"
}
check "Depends has adduser (postinst creates the walbus user)" has_dep adduser
check "Depends has libc6 (computed by dpkg-shlibdeps)" has_dep libc6
check "Depends has libstdc++6" has_dep libstdc++6
check "Depends has libpq5" has_dep libpq5
# Every shared library the binary needs must come from a package in Depends:
# Debian 12 gives libnats3.4, libhiredis0.14, libcpp-httplib0.11, libssl3, ...
BIN=$BUILD/walbus
if [ -x "$BIN" ] && command -v objdump >/dev/null; then
  for lib in $(objdump -p "$BIN" | awk '$1 == "NEEDED" { print $2 }'); do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64|x32|64/ { print $NF; exit }')
    [ -n "$path" ] || path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
    if [ -z "$pkg" ]; then
      pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
    fi
    if [ -z "$pkg" ]; then
      fail "NEEDED $lib: no Debian package owns $path"
    else
      check "NEEDED $lib -> Depends has $pkg" has_dep "$pkg"
    fi
  done
else
  echo "skip per-library Depends check (no objdump or no $BIN)"
fi

# --- control archive: conffiles and maintainer scripts ------------------------
dpkg-deb -e "$DEB" "$TMP/control" || die "dpkg-deb -e failed"
check "conffiles lists /etc/walbus/walbus.toml" grep -qx /etc/walbus/walbus.toml "$TMP/control/conffiles"
for s in postinst prerm postrm; do
  check "$s is executable" test -x "$TMP/control/$s"
  check "$s is valid sh (sh -n)" sh -n "$TMP/control/$s"
done
check "postinst creates the system user (adduser --system --group --no-create-home)" \
  grep -q 'adduser --system --group --no-create-home .*walbus' "$TMP/control/postinst"
check "postinst only creates it when missing (getent passwd walbus)" \
  grep -q 'getent passwd walbus' "$TMP/control/postinst"
check "postinst makes the config root:walbus 0640 (dpkg-statoverride)" \
  grep -q 'dpkg-statoverride --update --add root walbus 0640' "$TMP/control/postinst"

# postinst run against stubs (nothing on this machine is changed): the first
# configure creates the user and the stat override, a second one (user and
# override present) does neither.
STUBS=$TMP/stubs
mkdir -p "$STUBS"
cat >"$STUBS/getent" <<'EOF'
#!/bin/sh
[ -f "$STUB_STATE/$1" ] && echo "walbus:x:999:999::/nonexistent:/usr/sbin/nologin"
[ -f "$STUB_STATE/$1" ]
EOF
cat >"$STUBS/adduser" <<'EOF'
#!/bin/sh
echo "adduser $*" >>"$STUB_STATE/log"; touch "$STUB_STATE/passwd" "$STUB_STATE/group"
EOF
cat >"$STUBS/dpkg-statoverride" <<'EOF'
#!/bin/sh
echo "dpkg-statoverride $*" >>"$STUB_STATE/log"
case "$1" in --list) [ -f "$STUB_STATE/override" ] ;; *) touch "$STUB_STATE/override" ;; esac
EOF
cat >"$STUBS/systemctl" <<'EOF'
#!/bin/sh
echo "systemctl $*" >>"$STUB_STATE/log"
EOF
chmod 755 "$STUBS"/*
mkdir -p "$TMP/state"
postinst() {
  STUB_STATE=$TMP/state PATH="$STUBS:$PATH" sh "$TMP/control/postinst" "$@" >/dev/null &&
    { sed 's/^/     | /' "$TMP/state/log"; true; }
}
: >"$TMP/state/log"
check "postinst configure (fresh install): exit 0" postinst configure
check "  ... ran adduser --system --group --no-create-home ... walbus" \
  grep -q '^adduser --system --group --no-create-home .*walbus$' "$TMP/state/log"
check "  ... ran dpkg-statoverride --update --add root walbus 0640 /etc/walbus/walbus.toml" \
  grep -qx 'dpkg-statoverride --update --add root walbus 0640 /etc/walbus/walbus.toml' "$TMP/state/log"
: >"$TMP/state/log"
check "postinst configure $VERSION (again, user exists): exit 0" postinst configure "$VERSION"
check "  ... no adduser, no new stat override (idempotent)" \
  test -z "$(grep -E '^adduser|--add' "$TMP/state/log")"

# --- files, owners, modes ----------------------------------------------------
echo "---- dpkg-deb -c"
dpkg-deb -c "$DEB" >"$TMP/contents" || die "dpkg-deb -c failed"
sed 's/^/     /' "$TMP/contents"
has_file() {  # has_file MODE PATH
  awk -v m="$1" -v p="$2" '$1 == m && $2 == "root/root" && $6 == p { found = 1 }
                           END { exit !found }' "$TMP/contents"
}
check "/usr/bin/walbus, -rwxr-xr-x root" has_file -rwxr-xr-x ./usr/bin/walbus
check "/etc/walbus/walbus.toml, -rw-r----- (group walbus set by postinst)" \
  has_file -rw-r----- ./etc/walbus/walbus.toml
check "/lib/systemd/system/walbus.service, -rw-r--r--" \
  has_file -rw-r--r-- ./lib/systemd/system/walbus.service
check "/usr/share/man/man1/walbus.1.gz" has_file -rw-r--r-- ./usr/share/man/man1/walbus.1.gz
check "no file outside /usr, /etc/walbus, /lib/systemd/system" \
  test -z "$(awk '{ print $6 }' "$TMP/contents" |
             grep -Ev '^\./(usr/|etc/$|etc/walbus/|lib/$|lib/systemd/$|lib/systemd/system/)')"
check "directories are 0755" \
  test -z "$(awk '$1 ~ /^d/ && $1 != "drwxr-xr-x"' "$TMP/contents")"

# --- the extracted package ------------------------------------------------------
ROOT=$TMP/root
dpkg-deb -x "$DEB" "$ROOT" || die "dpkg-deb -x failed"
W=$ROOT/usr/bin/walbus
check "/etc/walbus/walbus.toml is conf/walbus.example.toml" \
  cmp -s "$ROOT/etc/walbus/walbus.toml" "$SRC/conf/walbus.example.toml"
check "man page is valid gzip" gzip -t "$ROOT/usr/share/man/man1/walbus.1.gz"

echo "---- extracted usr/bin/walbus (host libraries)"
run() {  # run EXPECTED_RC ARGS...: runs the extracted binary, output in $TMP/out
  local want=$1; shift
  timeout 30 "$@" >"$TMP/out" 2>&1
  local rc=$?
  sed 's/^/     | /' "$TMP/out"
  if [ "$rc" = "$want" ]; then return 0; fi
  echo "     exit $rc, expected $want"
  return 1
}
check "walbus version: exit 0" run 0 "$W" version
check "walbus version prints 'walbus $VERSION'" grep -qx "walbus $VERSION" "$TMP/out"
check "walbus (no command): exit 2" run 2 "$W"
check "walbus check (no -c): exit 2" run 2 "$W" check
check "walbus check -c /nonexistent: exit 2" run 2 "$W" check -c "$TMP/nonexistent.toml"
printf '[source]\ndsn = "host=127.0.0.1 port=1"\nmax_inflight = 1\n' >"$TMP/bad.toml"
check "walbus check -c (unknown key): exit 2" run 2 "$W" check -c "$TMP/bad.toml"
check "  ... reported as FILE:LINE:COL" grep -q "bad.toml:3:1:" "$TMP/out"
# The shipped configuration parses; PostgreSQL is pointed at port 1 (nothing
# listens) so the check stops at the connection: exit 1, never 2.
sed 's/port=5432/port=1/' "$ROOT/etc/walbus/walbus.toml" >"$TMP/shipped.toml"
export PGCONNECT_TIMEOUT=5
check "walbus check -c shipped walbus.toml (no PostgreSQL): exit 1" \
  run 1 "$W" check -c "$TMP/shipped.toml"
check "  ... the shipped configuration is valid" grep -q '^ok *config:' "$TMP/out"

# --- the systemd unit ------------------------------------------------------------
echo "---- lib/systemd/system/walbus.service"
UNIT=$ROOT/lib/systemd/system/walbus.service
for d in 'User=walbus' 'DynamicUser=no' 'Restart=on-failure' 'RestartSec=5' \
         'ProtectSystem=strict' 'ProtectHome=true' 'PrivateTmp=true' \
         'NoNewPrivileges=true' 'ProtectKernelTunables=true' 'ProtectKernelModules=true' \
         'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
         'ExecStart=/usr/bin/walbus run -c /etc/walbus/walbus.toml' \
         'KillSignal=SIGTERM' 'TimeoutStopSec=15' 'WantedBy=multi-user.target'; do
  check "unit: $d" grep -qx "$d" "$UNIT"
done
# The ExecStart command line is one walbus accepts (its config is missing
# here, so exit 2 "cannot read", not a usage error).
exec_args=$(sed -n 's#^ExecStart=/usr/bin/walbus ##p' "$UNIT" |
            sed "s#/etc/walbus/walbus.toml#$TMP/nonexistent.toml#")
# shellcheck disable=SC2086  # split the command line like systemd does
check "ExecStart arguments accepted by walbus (exit 2: config file missing)" run 2 "$W" $exec_args
check "  ... it failed on reading the file, not on the command line" grep -q 'cannot read' "$TMP/out"

if command -v systemd-analyze >/dev/null; then
  # Verify a copy whose ExecStart points at the extracted binary (walbus is
  # not installed here); --man=no: the man page is not installed either.
  mkdir -p "$TMP/unit"
  sed "s#/usr/bin/walbus#$W#" "$UNIT" >"$TMP/unit/walbus.service"
  systemd-analyze verify --man=no "$TMP/unit/walbus.service" >"$TMP/verify" 2>&1
  rc=$?
  sed 's/^/     | /' "$TMP/verify"
  check "systemd-analyze verify: exit 0" test "$rc" = 0
  check "systemd-analyze verify: no warning about walbus.service" \
    test -z "$(grep 'walbus' "$TMP/verify")"
else
  echo "skip systemd-analyze verify: systemd-analyze not installed"
fi

echo "----"
if [ "$failures" -ne 0 ]; then
  echo "deb_package: $failures check(s) FAILED"
  exit 1
fi
echo "deb_package: all checks passed"
