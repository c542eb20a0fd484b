#!/usr/bin/env bash
# The main job on a fresh machine: install, start Redis if needed, start a worker and the API,
# submit a sample photo, save every result to a folder and print how long each took.
# Extra arguments go to `cutfx demo` (e.g. scripts/demo.sh --image my-dog.jpg).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
# What the demo runs, not the development tools (scripts/test.sh adds those).
CUTFX_EXTRAS="${CUTFX_EXTRAS:-model,serve}" source scripts/bootstrap.sh
# The install leaves the packages' bytecode to their first import (scripts/bootstrap.sh),
# which keeps it for the workers and every later start, whatever the environment asked.
unset PYTHONDONTWRITEBYTECODE
bash scripts/ensure-redis.sh
install_s=$((SECONDS - started))
status=0
cutfx demo "$@" || status=$?
echo "total: $((SECONDS - started)) s from the start of this script (install and Redis $install_s s)"
exit "$status"
