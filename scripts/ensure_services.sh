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

# Debian's stock Mosquitto queues 1,000 messages for an offline client and drops the rest without
# a word; give it the queue settings deploy/mosquitto/mosquitto.conf recommends (a conf.d
# snippet). Mosquitto 2.0 does not apply them on a reload (SIGHUP), whatever its manual says, so a
# broker already running without them is restarted, once (with persistence on, as Debian ships
# it, sessions and queues survive). SHEMS_MOSQUITTO_CONF/SHEMS_MOSQUITTO_PORT point at another
# broker (tests); SHEMS_MOSQUITTO_RESTART=no only warns instead of restarting.
mosquitto_conf=${SHEMS_MOSQUITTO_CONF:-/etc/mosquitto/mosquitto.conf}
mosquitto_port=${SHEMS_MOSQUITTO_PORT:-1883}
queue_settings='# Written by shems scripts/ensure_services.sh: the queue settings deploy/mosquitto recommends.
max_queued_messages 6000000
max_queued_bytes 0
'

mosquitto_pid() {
  local pid_file; pid_file=$(awk '$1 == "pid_file" {print $2}' "$mosquitto_conf" | tail -n1)
  local pid; pid=$(cat "$pid_file" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

started_at() {  # a process's start, in seconds since the epoch
  local ticks; ticks=$(awk '{print $22}' "/proc/$1/stat")
  echo $(( $(awk '/^btime/ {print $2}' /proc/stat) + ticks / $(getconf CLK_TCK) ))
}

start_mosquitto() {
  $sudo_cmd mkdir -p /run/mosquitto && $sudo_cmd chown mosquitto: /run/mosquitto 2>/dev/null || true
  $sudo_cmd mosquitto -d -c "$mosquitto_conf"
  wait_port "$mosquitto_port" || { echo "ensure_services: Mosquitto did not come up" >&2; exit 1; }
}

ensure_mosquitto_queues() {
  local dir; dir="$(dirname "$mosquitto_conf")/conf.d"
  local snippet="$dir/shems.conf"
  if [ ! -f "$snippet" ] || [ "$(cat "$snippet")" != "${queue_settings%$'\n'}" ]; then
    $sudo_cmd mkdir -p "$dir"
    printf '%s' "$queue_settings" | $sudo_cmd tee "$snippet" >/dev/null
  fi
  if ! grep -Eq "^[[:space:]]*include_dir[[:space:]]+$dir/?[[:space:]]*$" "$mosquitto_conf"; then
    printf '\ninclude_dir %s\n' "$dir" | $sudo_cmd tee -a "$mosquitto_conf" >/dev/null
  fi
  port_open "$mosquitto_port" || return 0
  local pid; pid=$(mosquitto_pid) || {
    echo "ensure_services: cannot find the running Mosquitto's pid; restart it to apply $snippet" >&2
    return 0; }
  local written; written=$(stat -c %Y "$snippet" "$mosquitto_conf" | sort -n | tail -n1)
  # Started after both files were written: it has them (1 s of slack: /proc/stat's btime is whole
  # seconds, so a start computed from it can read a second early).
  [ $(( $(started_at "$pid") + 1 )) -ge "$written" ] && return 0
  if [ "${SHEMS_MOSQUITTO_RESTART:-yes}" = no ]; then  # a broker others are using right now
    echo "ensure_services: Mosquitto (pid $pid) runs without the queue settings of $snippet; restart it" >&2
    return 0
  fi
  echo "ensure_services: restarting Mosquitto (pid $pid) to apply the queue settings of $snippet" >&2
  if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null \
      && [ "$mosquitto_conf" = /etc/mosquitto/mosquitto.conf ]; then
    $sudo_cmd systemctl restart mosquitto
    wait_port "$mosquitto_port" || { echo "ensure_services: Mosquitto did not come up" >&2; exit 1; }
    return 0
  fi
  $sudo_cmd kill -TERM "$pid"
  for _ in $(seq 1 100); do  # gone, or a zombie its parent has yet to reap
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)" = X ] && break
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.1
  done
  start_mosquitto
}

ensure_mosquitto() {
  if ! command -v mosquitto >/dev/null && ! port_open "$mosquitto_port"; then
    echo "ensure_services: installing Mosquitto" >&2
    apt_install mosquitto
  fi
  [ -f "$mosquitto_conf" ] && ensure_mosquitto_queues
  port_open "$mosquitto_port" || start_mosquitto
}

for s in "${want[@]}"; do "ensure_$s"; done
