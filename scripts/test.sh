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
# Two test processes (pytest-xdist), a module's tests in one of them, each with Redis
# databases and ports of its own (tests/conftest.py). Since the workers run an exported
# engine the suite waits as much as it computes, and two processes overlap the waits:
# on a 2-core AVX2 EPYC 799 s against 949 s for one (both cores 95 % busy).
# CUTFX_TEST_PROCESSES chooses (0: one process).
processes="${CUTFX_TEST_PROCESSES:-$(( $(nproc) >= 2 ? 2 : 0 ))}"
echo "==> pytest ($processes test processes; 0 is one)"
exec python -m pytest -n "$processes" --dist loadfile --durations=25 "$@"
