#!/usr/bin/env bash
# Creates .venv with every pinned dependency (pyproject.toml is the one place versions live).
# Idempotent: reinstalls only when pyproject.toml or client/pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.installed"
want="$(cat "$root/pyproject.toml" "$root/client/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # pip > 25.0 refuses para-attn's sdist (it names a git URL in a dev extra).
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pip==25.0.1"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root[server,cache,client,perf,dev]" -e "$root/client"
  echo "$want" > "$stamp"
fi
