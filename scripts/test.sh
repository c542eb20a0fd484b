#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs, starts Redis if needed, lints, type-checks, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k effects).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bash scripts/ensure-redis.sh
bash scripts/ensure-chromium.sh
bash scripts/ensure-prometheus.sh
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy"
mypy .
echo "==> baking the worker's checkpoint (as Dockerfile.worker does)"
env -u CUTFX_MODEL_CKPT CUTFX_MODEL_MODE=fast bash scripts/bake-worker.sh
# With four cores or more, two test processes (pytest-xdist), a module's tests in one of
# them, each with Redis databases and ports of its own (tests/conftest.py). On two cores the
# suite is CPU-bound (real models in real workers) and one process is faster: 695 s
# against 747 s for two. CUTFX_TEST_PROCESSES chooses (0: one process).
processes="${CUTFX_TEST_PROCESSES:-$(( $(nproc) >= 4 ? 2 : 0 ))}"
echo "==> pytest ($processes test processes; 0 is one)"
exec python -m pytest -n "$processes" --dist loadfile --durations=25 "$@"
