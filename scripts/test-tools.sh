#!/usr/bin/env bash
# Outside tools the tests use as a user would, beside the engine of
# docker-setup.sh; idempotent and cheap when done. Each comes from Debian's
# packages and is unpacked (not installed) into a folder of the machine's
# cache, so no service starts and nothing else on the machine changes:
#   - promtool (package prometheus): checks the artifacts' /metrics text.
# Prints the folder to put on PATH.
set -euo pipefail

TOOLS="${KBUILD_TEST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/kbuild-test/tools}"
say() { echo "test-tools: $*" >&2; }

apt_updated=
unpack_package() {  # unpack_package PACKAGE: its files under $TOOLS/root
  local work
  if [ -z "$apt_updated" ]; then
    apt-get update -qq >&2 || true
    apt_updated=1
  fi
  work="$(mktemp -d)"
  (cd "$work" && apt-get download -qq "$1" >&2)
  mkdir -p "$TOOLS/root"
  dpkg-deb -x "$work"/"$1"_*.deb "$TOOLS/root"
  rm -rf "$work"
}

mkdir -p "$TOOLS/bin"
if [ ! -x "$TOOLS/bin/promtool" ]; then
  say "unpacking promtool from Debian's prometheus package (once per machine)"
  unpack_package prometheus
  ln -sf "$TOOLS/root/usr/bin/promtool" "$TOOLS/bin/promtool"
fi
"$TOOLS/bin/promtool" --version >/dev/null 2>&1 || { say "promtool does not run"; exit 1; }
echo "$TOOLS/bin"
