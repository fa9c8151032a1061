#!/usr/bin/env bash
# Install the test suite's tools from Debian's packages when missing:
#   promtool  (the prometheus package) for the alert rules' unit tests, without leaving a
#             Prometheus server running: policy-rc.d forbids the package's service from starting;
#   chromium  for the viewer's headless-browser test (driven by playwright with the system browser);
#   pushgateway  (prometheus-pushgateway) that `shems import --pushgateway` is tested against;
#             the tests start their own, the package's service is not left running.
# Usage: ensure_tools.sh [promtool] [chromium] [pushgateway]   (no argument: all)
set -euo pipefail
want=("$@"); [ ${#want[@]} -gt 0 ] || want=(promtool chromium pushgateway)
sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  $sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Install a package whose service must not start (policy-rc.d forbids it), then stop any
# process it left anyway.
apt_install_quiet_service() {
  local package=$1 process=$2 policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null && $sudo_cmd chmod +x "$policy" && created=1
  fi
  apt_install "$package"
  [ $created -eq 1 ] && $sudo_cmd rm -f "$policy"
  pkill -x "$process" 2>/dev/null || true
}

ensure_promtool() {
  command -v promtool >/dev/null && return 0
  apt_install_quiet_service prometheus prometheus
  command -v promtool >/dev/null
}

ensure_pushgateway() {
  command -v prometheus-pushgateway >/dev/null && return 0
  apt_install_quiet_service prometheus-pushgateway prometheus-pushgateway
  command -v prometheus-pushgateway >/dev/null
}

ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  echo "ensure_tools: installing Debian's chromium" >&2
  # fonts-liberation: readable text in screenshots on a machine without desktop fonts.
  apt_install chromium fonts-liberation
  [ -x /usr/bin/chromium ]
}

for t in "${want[@]}"; do "ensure_$t"; done
