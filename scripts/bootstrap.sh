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
# uv installs the same packages as pip, unpacking them in parallel: a fresh install takes
# seconds where pip takes minutes. pip stays the fallback, and `pip install -e .` works as
# ever. Neither byte-compiles the packages: compiling every module of every package took
# 39 of a 45 s install on a slow 2-core EPYC, and Python compiles only what the service
# imports, on its first import, and keeps it: 17 s there, inside the demo's checkpoint
# step, which imports torch and the network before the workers start (demo.sh and
# test.sh unset PYTHONDONTWRITEBYTECODE so that it is kept).
UV_VERSION="0.13.9"

install_with_uv() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" \
    || return 1
  local sources=()
  mapfile -t sources < <("$VENV/bin/python" "$ROOT/scripts/pip_to_uv.py")
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" "${sources[@]}" \
    --index-strategy unsafe-best-match \
    -c "$ROOT/requirements.lock" -e "$ROOT[$EXTRAS]" \
    || { echo "==> uv could not install; trying pip" >&2; return 1; }
}

install_with_pip() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
    -c "$ROOT/requirements.lock" -e "$ROOT[$EXTRAS]"
}

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
  echo "==> installing cutfx[$EXTRAS] into $VENV (pinned by requirements.lock)"
  started=$SECONDS
  install_with_uv || install_with_pip
  echo "$wanted $EXTRAS" > "$stamp"
  echo "==> installed in $((SECONDS - started)) s"
fi
export PATH="$VENV/bin:$PATH"
