#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs kbuild with its test
# dependencies, starts what the tests need, then runs pytest.
# Supported: Debian 12 (bookworm), as root or with sudo (see README).
# Extra arguments go to pytest (e.g. scripts/test.sh -k zipapp).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
STEP="starting"
trap 'status=$?; echo "test.sh: failed while $STEP (exit $status)" >&2; exit $status' ERR

STEP="installing kbuild and its test dependencies (pip)"
python3 -m pip install --disable-pip-version-check -q -e '.[test]'
STEP="setting up the engine, registry, skopeo, mmdebstrap, kubectl and qemu (scripts/docker-setup.sh)"
bash scripts/docker-setup.sh
STEP="unpacking promtool and mosquitto (scripts/test-tools.sh)"
tools="$(bash scripts/test-tools.sh)"
export PATH="$tools:$PATH"
trap - ERR

set +e
python3 -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
# pytest's 5 means it collected no test; the suite must never pass that way
if [ "$status" -eq 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit "$status"
