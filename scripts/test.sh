#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs, starts Redis if needed, lints, type-checks, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k effects).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bash scripts/ensure-redis.sh
bash scripts/ensure-chromium.sh
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy"
mypy .
echo "==> baking the worker's checkpoint (as Dockerfile.worker does)"
env -u CUTFX_MODEL_CKPT CUTFX_MODEL_MODE=fast bash scripts/bake-worker.sh
echo "==> pytest"
exec python -m pytest "$@"
