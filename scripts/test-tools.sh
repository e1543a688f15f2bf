#!/usr/bin/env bash
# Outside tools the tests use as a user would, beside the engine of
# docker-setup.sh; idempotent and cheap when done. Each comes from Debian's
# packages and is unpacked (not installed) into a folder of the machine's
# cache, so no service starts and nothing else on the machine changes:
#   - promtool (package prometheus): checks the artifacts' /metrics text;
#   - mosquitto, mosquitto_passwd, mosquitto_pub, mosquitto_sub (packages
#     mosquitto, mosquitto-clients and the libraries they need): the MQTT
#     broker, its password files, and the outside clients of the MQTT tests.
# Supported: Debian 12 (bookworm). Prints the folder to put on PATH; a step
# that fails names itself and exits non-zero.
set -Eeuo pipefail

TOOLS="${KBUILD_TEST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/kbuild-test/tools}"
STEP="starting"
say() { echo "test-tools: $*" >&2; }
die() { say "$STEP: $*"; exit 1; }
trap 'status=$?; say "failed while $STEP (exit $status)"; exit $status' ERR

for program in apt-get dpkg-deb; do
  command -v "$program" >/dev/null || die "$program not found: this setup supports Debian 12 (bookworm)"
done

apt_updated=
unpack_package() {  # unpack_package PACKAGE: its files under $TOOLS/root
  local work
  if [ -z "$apt_updated" ]; then
    # a stale list only matters if the download below fails, which says so
    apt-get update -qq >&2 || say "apt-get update failed; trying the lists this machine has"
    apt_updated=1
  fi
  work="$(mktemp -d)"
  (cd "$work" && apt-get download -qq "$1" >&2) || { rm -rf "$work"; die "apt-get download $1 failed"; }
  mkdir -p "$TOOLS/root"
  dpkg-deb -x "$work"/"$1"_*.deb "$TOOLS/root" || { rm -rf "$work"; die "dpkg-deb could not unpack $1"; }
  rm -rf "$work"
}

mkdir -p "$TOOLS/bin"
STEP="unpacking promtool"
if [ ! -x "$TOOLS/bin/promtool" ]; then
  say "unpacking promtool from Debian's prometheus package (once per machine)"
  unpack_package prometheus
  ln -sf "$TOOLS/root/usr/bin/promtool" "$TOOLS/bin/promtool"
fi
STEP="unpacking mosquitto and its clients"
if [ ! -x "$TOOLS/bin/mosquitto" ] || [ ! -x "$TOOLS/bin/mosquitto_passwd" ]; then
  say "unpacking mosquitto and its clients from Debian's packages (once per machine)"
  for package in mosquitto mosquitto-clients libmosquitto1 libcjson1 libdlt2 libwrap0; do
    unpack_package "$package"
  done
  for program in usr/sbin/mosquitto usr/bin/mosquitto_passwd usr/bin/mosquitto_pub usr/bin/mosquitto_sub; do
    name="$(basename "$program")"
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
      "$TOOLS/root/usr/lib/$(uname -m)-linux-gnu" "$TOOLS/root/$program" > "$TOOLS/bin/$name"
    chmod +x "$TOOLS/bin/$name"
  done
fi
STEP="checking the unpacked tools"
"$TOOLS/bin/promtool" --version >/dev/null 2>&1 || die "promtool does not run"
# both print their usage and exit non-zero: what matters is that they run
{ "$TOOLS/bin/mosquitto" -h 2>&1 || true; } | grep -q "mosquitto version" || die "mosquitto does not run"
{ "$TOOLS/bin/mosquitto_pub" --help 2>&1 || true; } | grep -q "mosquitto_pub" || die "mosquitto_pub does not run"
echo "$TOOLS/bin"
