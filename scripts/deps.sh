#!/usr/bin/env bash
# Installs what building and testing need, skipping what is already there:
# Postgres 15 server headers (pinned to the installed server), sudo, the
# sqlite3 shell, pgbouncer (tests/tests/pgbouncer.rs and the load figure of
# make bench start their own), cargo-pgrx 0.18.1 and its init for Postgres 15.
set -euo pipefail
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
need_apt=()
[ -f /usr/include/postgresql/15/server/postgres.h ] || need_apt+=(pgdev)
command -v sudo >/dev/null || need_apt+=(sudo)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v psql >/dev/null || need_apt+=(postgresql-client-15)
[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || need_apt+=(pgbouncer)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    pkgs=()
    for p in "${need_apt[@]}"; do
        if [ "$p" = pgdev ]; then
            pkgs+=("postgresql-server-dev-15=$(dpkg-query -W -f='${Version}' postgresql-15)")
        else
            pkgs+=("$p")
        fi
    done
    echo "deps: installing ${pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
    echo "deps: installing cargo-pgrx 0.18.1 (about 4 minutes)"
    cargo install cargo-pgrx --version 0.18.1 --locked
fi
if [ ! -f "${PGRX_HOME:-$HOME/.pgrx}/config.toml" ] || ! grep -q pg15 "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi
