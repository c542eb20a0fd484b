#!/usr/bin/env bash
# Checkpoint in place, model and effects proven to run: run by Dockerfile.worker at build time and by
# scripts/test.sh (CI), so the image and CI prove the same steps.
#   CUTFX_CHECKPOINT_URL + CUTFX_CHECKPOINT_SHA256 set: fetch and verify the real checkpoint
#   (into CUTFX_MODEL_CKPT); unset: generate the random stand-in (offline machines, CI).
# Extra arguments go to `cutfx bake` (e.g. --remeasure).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${CUTFX_MODEL_MODE:-fast}"
if [ -n "${CUTFX_CHECKPOINT_URL:-}" ]; then
  exec python -m cli bake --mode "$mode" --url "$CUTFX_CHECKPOINT_URL" \
    --sha256 "${CUTFX_CHECKPOINT_SHA256:?set CUTFX_CHECKPOINT_SHA256}" --dest "${CUTFX_MODEL_CKPT:?}" "$@"
elif [ -n "${CUTFX_MODEL_CKPT:-}" ]; then
  exec python -m cli bake --mode "$mode" --random --dest "$CUTFX_MODEL_CKPT" "$@"
else
  exec python -m cli bake --mode "$mode" --random "$@"
fi
