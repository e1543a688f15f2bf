#!/usr/bin/env bash
# What the image tests need on this machine, idempotent and cheap when done:
#   - a Docker Engine: Debian's docker.io, started in the background when none
#     answers (no iptables, no bridge, vfs storage: it runs inside containers);
#   - Debian's docker-registry, which the push tests start on a loopback port;
#   - Debian's skopeo, the outside client that reads and copies kbuild's images;
#   - mmdebstrap, which makes Debian roots (the base image, arm64 roots);
#   - kubectl (Debian's kubernetes-client), whose `kubectl kustomize` renders
#     the k8s/ folders kbuild writes;
#   - qemu-user-static 8 or later, from bookworm-backports (bookworm's 7.2
#     crashes in onnxruntime on aarch64), for the emulated checks; no binfmt
#     registration is needed or used;
#   - the local base image kbuild-test/python:3.11-bookworm: Debian bookworm
#     with python3 and no pip, made with mmdebstrap because no registry is
#     reachable from the tests. Built once per machine.
# Supported: Debian 12 (bookworm), as root or with sudo. Every step first
# looks for what it needs, so a missing tool is installed, never fatal; a step
# that fails names itself and exits non-zero.
set -Eeuo pipefail

BASE_IMAGE="${KBUILD_TEST_BASE_IMAGE:-kbuild-test/python:3.11-bookworm}"
SUITE=bookworm
MIRROR="${KBUILD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKERD_LOG="${KBUILD_DOCKERD_LOG:-/var/log/kbuild-dockerd.log}"
# where apt's sources live (the setup tests point this at a folder of their own)
APT_ETC="${KBUILD_APT_ETC:-/etc/apt}"
REGISTRY_PROGRAM="${KBUILD_REGISTRY_PROGRAM:-/usr/bin/docker-registry}"
WAIT_S="${KBUILD_DOCKERD_WAIT_S:-60}"

STEP="starting"
say() { echo "docker-setup: $*" >&2; }
die() { say "$STEP: $*"; exit 1; }
trap 'status=$?; say "failed while $STEP (exit $status)"; exit $status' ERR

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "needs root (or sudo) to run: $*"
  fi
}

apt_updated=
apt_update() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
}
apt_install() {  # apt_install [-t SUITE] PACKAGE...
  command -v apt-get >/dev/null || die "apt-get not found: this setup supports Debian 12 (bookworm)"
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

engine_answers() { command -v docker >/dev/null && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# empty when qemu-aarch64-static is absent or prints no version: never a failure
qemu_major() {
  command -v qemu-aarch64-static >/dev/null || return 0
  { qemu-aarch64-static --version 2>/dev/null || true; } | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n1
}

ensure_packages() {
  STEP="installing the engine and the OCI tools"
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  # /usr/local/bin may hold a docker CLI without the engine; docker.io brings both
  command -v docker >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || [ -x "$REGISTRY_PROGRAM" ] || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v kubectl >/dev/null || missing+=(kubernetes-client)
  if [ "${#missing[@]}" -gt 0 ]; then
    # docker.io may be listed twice
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  for program in dockerd docker skopeo mmdebstrap kubectl; do
    command -v "$program" >/dev/null || die "$program is still missing after the install"
  done
}

ensure_backports_qemu() {
  STEP="installing qemu-user-static 8 or later"
  local major
  major="$(qemu_major)"
  if [ -n "$major" ] && [ "$major" -ge 8 ]; then
    return
  fi
  if [ -n "$major" ]; then say "qemu-user-static is version $major; installing 8 or later from bookworm-backports"
  else say "qemu-user-static is missing; installing it from bookworm-backports"
  fi
  if ! grep -rqs "bookworm-backports" "$APT_ETC/sources.list" "$APT_ETC/sources.list.d/"; then
    say "adding Debian bookworm-backports to $APT_ETC/sources.list.d"
    as_root mkdir -p "$APT_ETC/sources.list.d"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$MIRROR" | as_root tee "$APT_ETC/sources.list.d/kbuild-bookworm-backports.sources" >/dev/null
    apt_updated=
  fi
  apt_install -t bookworm-backports qemu-user-static
  major="$(qemu_major)"
  [ -n "$major" ] && [ "$major" -ge 8 ] || die "qemu-user-static is ${major:-missing} after the install, not 8 or later"
}

ensure_engine() {
  STEP="starting the Docker engine"
  if engine_answers; then
    return
  fi
  if [ -n "${DOCKER_HOST:-}" ]; then
    die "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine or unset DOCKER_HOST"
  fi
  say "starting dockerd (log: $DOCKERD_LOG)"
  as_root mkdir -p "$(dirname "$DOCKERD_LOG")"
  # setsid: the engine outlives this script and the test run's process group
  as_root setsid dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
    >>"$DOCKERD_LOG" 2>&1 </dev/null &
  local waited=0
  until engine_answers; do
    if [ "$waited" -ge "$WAIT_S" ]; then
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      die "dockerd did not answer within ${WAIT_S} s"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "engine $(docker version --format '{{.Server.Version}}') is up"
}

ensure_base_image() {
  STEP="building the base image $BASE_IMAGE"
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  command -v mmdebstrap >/dev/null || apt_install mmdebstrap
  say "building $BASE_IMAGE from Debian $SUITE (once per machine)"
  local tarball
  tarball="$(mktemp --suffix=.tar)"
  # minbase + python3 only: no pip, no docs, no apt lists, no locales beyond C
  as_root mmdebstrap --mode=root --variant=minbase --include=python3 \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$tarball" "$MIRROR" >&2 || { rm -f "$tarball"; die "mmdebstrap failed"; }
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null || { rm -f "$tarball"; die "docker import failed"; }
  rm -f "$tarball"
  docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || die "$BASE_IMAGE has no Python 3.11"
  if docker run --rm --network none "$BASE_IMAGE" python3 -m pip --version >/dev/null 2>&1; then
    die "$BASE_IMAGE unexpectedly has pip"
  fi
  say "built $BASE_IMAGE"
}

ensure_packages
ensure_backports_qemu
ensure_engine
ensure_base_image
STEP="done"
