#!/usr/bin/env bash
# Debian splits venv out of python3; install it when creating a venv would fail.
set -euo pipefail
py="${1:-python3}"
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "ensure_python: installing python3-venv" >&2
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-venv python3-pip >/dev/null
fi
