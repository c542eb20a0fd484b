#!/usr/bin/env bash
# The monitoring tests run Debian's Prometheus and its promtool (deploy/monitoring/):
# install them when missing. Debian's package starts a service on :9090 where an init
# system runs; policy-rc.d keeps it from starting, since the tests start their own.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing Debian's prometheus (and promtool) for the monitoring tests"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
policy=/usr/sbin/policy-rc.d
made_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  made_policy=yes
fi
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if [ "$made_policy" = yes ]; then $SUDO rm -f "$policy"; fi
