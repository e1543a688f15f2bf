#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs kbuild with its test
# dependencies, starts what the tests need, then runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k zipapp).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --disable-pip-version-check -q -e '.[test]'
bash scripts/docker-setup.sh
tools="$(bash scripts/test-tools.sh)"
export PATH="$tools:$PATH"

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
