#!/usr/bin/env bash
# Install promtool (Debian's prometheus package) when missing, without leaving a Prometheus
# server running: policy-rc.d forbids the package's service from starting.
set -euo pipefail
command -v promtool >/dev/null && exit 0
sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null && $sudo_cmd chmod +x "$policy" && created=1
fi
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
[ $created -eq 1 ] && $sudo_cmd rm -f "$policy"
pkill -x prometheus 2>/dev/null || true
command -v promtool >/dev/null
