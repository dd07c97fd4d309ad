#!/usr/bin/env bash
# Starts tritonserver on 127.0.0.1 (gRPC 8001, HTTP 8000, metrics 8002) with model_repository/.
# Extra arguments go to kontext-serve (see --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/kontext-serve" "$@"
