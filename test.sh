#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then integration tests against a real tritonserver
# that the tests start on free loopback ports. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
