#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs, starts Redis if needed, lints, type-checks, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k effects).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# The suite starts some hundred interpreters (test processes, workers, APIs, CLIs): they
# share the bytecode the first one compiles, whatever the environment asked (a test
# process collects in 8.4 s with it, 13.7 s without).
unset PYTHONDONTWRITEBYTECODE
# pymatting, the reference two foreground tests compare with, compiles all its numba
# kernels the first time a venv imports it: 45 CPU-seconds on one core, which inside the
# suite took a core from the tests. It compiles them here, into the installed package's
# own cache, while the set-up below (Redis, Chromium, ruff, mypy on one core) runs; later
# runs find them there.
python -c "import pymatting" &
compiling_pymatting=$!
# Three test processes (pytest-xdist) on two cores or more, a module's tests in one of
# them, each with Redis databases and ports of its own (tests/conftest.py). The suite
# waits (restarts, timeouts, browsers) as well as computes: a third process fills the
# cores while another waits. CUTFX_TEST_PROCESSES chooses (0: one process).
processes="${CUTFX_TEST_PROCESSES:-$(( $(nproc) >= 2 ? 3 : 0 ))}"
# The bake measures the engines at the thread count each test process and its workers
# run (tests/conftest.py gives each its share of the cores), so that they find its record
# and none of them bakes again. A later run keeps the engines' record where this machine
# has one made under the engine packages installed now (a minute or two of forwards on
# two cores); CI measures them anew, as the image build does.
threads="$(python -c "from cli.stack import threads_per_process; print(threads_per_process(max(1, $processes)))")"
bake=(env -u CUTFX_MODEL_CKPT CUTFX_MODEL_MODE=fast OMP_NUM_THREADS="$threads"
  MKL_NUM_THREADS="$threads" bash scripts/bake-worker.sh)
# The bake's ONNX export (40 s on one thread) runs beside the set-up as well; the
# engines are measured after it, when their forwards have the cores to themselves.
exporting_log="$(mktemp)"
"${bake[@]}" --export-only >"$exporting_log" 2>&1 &
exporting=$!
# A failed step below leaves neither of the two running.
trap 'kill "$compiling_pymatting" "$exporting" 2>/dev/null || true; rm -f "$exporting_log"' EXIT
bash scripts/ensure-redis.sh
bash scripts/ensure-chromium.sh
bash scripts/ensure-prometheus.sh
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy"
mypy .
wait "$compiling_pymatting" \
  || { echo "importing pymatting failed (its traceback is above): the install is broken" >&2; exit 1; }
echo "==> the worker's checkpoint and ONNX export, made meanwhile (as Dockerfile.worker does)"
wait "$exporting" && cat "$exporting_log" && rm -f "$exporting_log" \
  || { cat "$exporting_log"; echo "the export failed (its log is above)" >&2; exit 1; }
echo "==> the engines measured (in CI, or where this machine has no current record of them); threads per test process: $threads"
"${bake[@]}" ${CI:+--remeasure}
echo "==> pytest ($processes test processes; 0 is one)"
exec python -m pytest -n "$processes" --dist loadfile --no-loadscope-reorder --durations=25 "$@"
