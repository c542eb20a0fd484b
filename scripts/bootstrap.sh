#!/usr/bin/env bash
# Make .venv and install cutfx with the extras the caller needs, pinned by requirements.lock.
# Sourced by demo.sh (CUTFX_EXTRAS=model,serve: what the demo runs) and test.sh (dev: the
# tests and their tools as well). Re-installs only when setup.cfg, pyproject.toml or the
# lock changed, or when the extras asked for are not installed yet.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CUTFX_VENV:-$ROOT/.venv}"
PYTHON_FOR_VENV="${PYTHON:-python3}"
EXTRAS="${CUTFX_EXTRAS:-dev}"

"$PYTHON_FOR_VENV" - <<'PY' || { echo "cutfx needs Python >= 3.11 (torch 2.14.1 wheels)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON_FOR_VENV" -m venv "$VENV"
fi
stamp="$VENV/.cutfx-install-stamp"
wanted="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/requirements.lock" | sha256sum | cut -d' ' -f1)"
installed_hash="$(cut -d' ' -f1 "$stamp" 2>/dev/null || true)"
installed_extras="$(cut -d' ' -f2 "$stamp" 2>/dev/null || true)"
# dev holds every other extra; otherwise each extra asked for must be among those installed.
satisfied=no
if [ "$installed_hash" = "$wanted" ]; then
  satisfied=yes
  if [ "$installed_extras" != "dev" ]; then
    for extra in ${EXTRAS//,/ }; do
      case ",$installed_extras," in *",$extra,"*) ;; *) satisfied=no ;; esac
    done
  fi
fi
if [ "$satisfied" != yes ]; then
  echo "==> installing cutfx[$EXTRAS] into $VENV (pinned by requirements.lock; a few minutes the first time)"
  started=$SECONDS
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$ROOT/requirements.lock" -e "$ROOT[$EXTRAS]"
  echo "$wanted $EXTRAS" > "$stamp"
  echo "==> installed in $((SECONDS - started)) s"
fi
export PATH="$VENV/bin:$PATH"
