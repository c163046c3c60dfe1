#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, database `test`) and Mosquitto (127.0.0.1:1883) answer;
# start them, or install and start them on a fresh Debian machine; `timescaledb` adds the
# vendored TimescaleDB to PostgreSQL 15 (ensure_timescaledb says when); `chromium` and `node`
# install the console's browser and JavaScript test tools when missing. Idempotent.
set -uo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $*: no apt-get here; install them by hand" >&2
    return 1
  fi
  [ -n "${PW_APT_UPDATED:-}" ] || { as_root apt-get update -qq; PW_APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done; return 1; }

ensure_postgres() {
  if ! port_open 5432; then
    command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql || return 1
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    if [ -z "$ver" ]; then
      ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
      as_root pg_createcluster "$ver" main >/dev/null
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_port 5432 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; return 1; }
  fi
  # trust auth and a `test` database are what the machine provides; create the database if absent
  if command -v psql >/dev/null 2>&1; then
    if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
      as_root su postgres -c "psql -qc 'create database test'" >/dev/null 2>&1 || true
    fi
  fi
}

ensure_postgis() {
  ver=$(psql -h 127.0.0.1 -U postgres -d test -Atc 'show server_version_num' 2>/dev/null | cut -c1-2)
  [ -n "$ver" ] || return 1
  if [ ! -f "/usr/share/postgresql/$ver/extension/postgis.control" ]; then
    apt_install "postgresql-$ver-postgis-3" || return 1
  fi
}

ensure_mosquitto() {
  port_open 1883 && return 0
  command -v mosquitto >/dev/null 2>&1 || apt_install mosquitto || return 1
  conf=/etc/mosquitto/mosquitto.conf
  if [ -f "$conf" ]; then as_root mosquitto -d -c "$conf"; else as_root mosquitto -d -p 1883; fi
  wait_port 1883 || { echo "Mosquitto did not come up on 127.0.0.1:1883" >&2; return 1; }
}

# TimescaleDB for the tests' private clusters (tests/conftest.py, `timescale_dsn`): the build
# in ../shared/vendor/timescaledb, added to PostgreSQL 15's extension files by its install.sh.
# It only adds files; no running server loads it. Skipped quietly without that directory or
# PostgreSQL 15 (the TimescaleDB tests then skip, saying what is missing); a no-op once
# every file of the build is in place.
ensure_timescaledb() {
  vendor=$(cd "$(dirname "$0")/../.." && pwd)/shared/vendor/timescaledb
  [ -f "$vendor/install.sh" ] && [ -x /usr/lib/postgresql/15/bin/postgres ] || return 0
  tarball=$(ls "$vendor"/timescaledb-*-pg15-amd64.tar.gz 2>/dev/null | head -n1)
  [ -n "$tarball" ] || { echo "no TimescaleDB build for PostgreSQL 15 in $vendor" >&2; return 1; }
  missing=0
  while read -r f; do
    case "$f" in */) ;; *) [ -e "/$f" ] || missing=1 ;; esac
  done < <(tar tzf "$tarball")
  [ "$missing" = 1 ] || return 0
  as_root bash "$vendor/install.sh" >/dev/null \
    || { echo "installing TimescaleDB from $vendor failed" >&2; return 1; }
}

# Debian's Chromium and its driver for the console's browser tests (tests/test_console_browser.py
# drives /usr/bin/chromium through /usr/bin/chromedriver: no browser download), and Node.js for
# the console's JavaScript unit tests (`node --test web/console/test/`).
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    apt_install chromium chromium-driver || return 1
  fi
}

ensure_node() {
  command -v node >/dev/null 2>&1 || apt_install nodejs || return 1
}

for what in "$@"; do
  "ensure_$what" || exit 1
done
