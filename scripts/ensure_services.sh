#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Mosquitto (127.0.0.1:1883) answer, starting them if
# they are installed but stopped, installing them from Debian's packages if they are missing.
# Usage: ensure_services.sh [postgres] [mosquitto]   (no argument: both)
set -euo pipefail
want=("$@"); [ ${#want[@]} -gt 0 ] || want=(postgres mosquitto)
sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done; return 1; }

ensure_postgres() {
  port_open 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "ensure_services: installing PostgreSQL" >&2
    apt_install postgresql
  fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -n1)
  if ! pg_lsclusters -h | grep -q .; then $sudo_cmd pg_createcluster "$version" main >/dev/null; fi
  local conf="/etc/postgresql/$version/main/pg_hba.conf"
  # Tests connect over loopback as postgres without a password (trust), like the CI machine.
  if ! grep -q "shems-trust" "$conf"; then
    printf '# shems-trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust\n' \
      | cat - "$conf" | $sudo_cmd tee "$conf.new" >/dev/null && $sudo_cmd mv "$conf.new" "$conf"
  fi
  $sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 || { echo "ensure_services: PostgreSQL did not come up" >&2; exit 1; }
}

ensure_mosquitto() {
  port_open 1883 && return 0
  if ! command -v mosquitto >/dev/null; then
    echo "ensure_services: installing Mosquitto" >&2
    apt_install mosquitto
  fi
  $sudo_cmd mkdir -p /run/mosquitto && $sudo_cmd chown mosquitto: /run/mosquitto 2>/dev/null || true
  $sudo_cmd mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_port 1883 || { echo "ensure_services: Mosquitto did not come up" >&2; exit 1; }
}

for s in "${want[@]}"; do "ensure_$s"; done
