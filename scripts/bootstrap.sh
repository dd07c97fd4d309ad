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
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root[server,client,perf,dev]" -e "$root/client"
  # The "cache" extra (para-attn), which pip refuses to install: see pyproject.toml.
  para_attn="$("$venv/bin/python" -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["cache"])' "$root/pyproject.toml")"
  "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --no-deps "$para_attn"
  echo "$want" > "$stamp"
fi
