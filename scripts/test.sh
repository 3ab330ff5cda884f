#!/usr/bin/env bash
# Run the whole test suite. Creates the virtual environment ($VENV, default ./.venv) and
# installs the project with its test extras when absent or when pyproject.toml changed.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "crmledger needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
stamp="$VENV/.crmledger-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up $VENV ..." >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi

scripts/system_deps.sh

jobs=${TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
run() {
    local rc=0
    "$VENV/bin/python" -m pytest "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "no tests were collected: that is a failure" >&2
        rc=1
    fi
    return "$rc"
}
if [ $# -gt 0 ]; then
    run -n "$jobs" -q "$@"
    exit
fi
# the whole suite: everything in parallel, then the tests that measure latency under
# load alone, so that the other tests do not load the machine they measure
rc=0
run -n "$jobs" -q -m "not solo" || rc=$?
run -q -m solo || rc=$?
exit "$rc"
