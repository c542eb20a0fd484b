#!/usr/bin/env bash
# The main job on a fresh machine: install, start Redis if needed, start a worker and the API,
# submit a sample photo, save every result to a folder and print how long each took.
# Extra arguments go to `cutfx demo` (e.g. scripts/demo.sh --image my-dog.jpg).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bash scripts/ensure-redis.sh
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/var/numba-cache}"
exec cutfx demo "$@"
