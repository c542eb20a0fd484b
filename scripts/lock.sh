#!/usr/bin/env bash
# Upgrade the lock: resolve cutfx[dev] afresh from setup.cfg's ranges in a throwaway venv and
# write every package's exact version to requirements.lock, which the scripts, both
# Dockerfiles and CI install with (`pip install -c requirements.lock ...`).
# Run it, then the tests (scripts/test.sh), and commit both files together.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
{
  echo "# Exact versions of everything cutfx[dev] installs (Linux x86_64, Python 3.11)."
  echo "# Made by scripts/lock.sh from setup.cfg's ranges; used as pip constraints."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check
} > requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) packages"
