#!/usr/bin/env bash
# Make .venv and install cutfx with everything the demo and the tests need.
# Re-installs only when setup.cfg or pyproject.toml changed. Sourced by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CUTFX_VENV:-$ROOT/.venv}"
PYTHON_FOR_VENV="${PYTHON:-python3}"

"$PYTHON_FOR_VENV" - <<'PY' || { echo "cutfx needs Python >= 3.11 (torch 2.14.1 wheels)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON_FOR_VENV" -m venv "$VENV"
fi
stamp="$VENV/.cutfx-install-stamp"
wanted="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  echo "==> installing cutfx and its dependencies into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
  echo "$wanted" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
