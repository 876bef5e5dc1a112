#!/usr/bin/env bash
# Installs every Debian 12 package walbus needs to build, test and run the
# demo. Does nothing (and needs no root) when everything is present;
# otherwise runs `apt-get update` once and `apt-get install -y` as root.
set -euo pipefail

PACKAGES=(
  # build
  g++ cmake make pkg-config
  libpq-dev libnats-dev libpaho-mqttpp-dev libpaho-mqtt-dev libhiredis-dev
  libtomlplusplus-dev libgtest-dev rapidjson-dev libcpp-httplib-dev
  # servers for the tests and the demo
  postgresql-15 postgresql-client-15 nats-server mosquitto mosquitto-clients
  redis-server redis-tools
  # test tools
  procps iproute2 openssl docker-compose dpkg-dev file chromium  # chromium: recipe_realtime_test
  debootstrap  # deb_install_test.sh: installs the .deb in a fresh Debian 12 root
  python3 gnuplot-nox  # tests/bench/run.sh and its charts
  clang clang-14 libclang-rt-14-dev  # tests/fuzz (libFuzzer), run by test.sh in CI
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: missing packages (${missing[*]}); run this script as root" >&2
    exit 1
  fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# Installing a server package must not start the system-wide service where
# there is an init system: the tests start their own on other ports.
policy_added=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  policy_added=1
fi
trap '[ -n "$policy_added" ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
