#!/usr/bin/env bash
# Runs the #[pg_test]s. Postgres refuses to run as root, so as root the test
# cluster runs as the postgres OS user in a fresh data dir.
set -euo pipefail
cd "$(dirname "$0")/../pg_sync"
if [ "$(id -u)" = 0 ]; then
    pgdata=$(mktemp -d /tmp/pg_sync_pgrx_test.XXXXXX)
    rmdir "$pgdata"
    mkdir -p "$pgdata" && chown postgres:postgres "$pgdata"
    trap 'rm -rf "$pgdata"' EXIT
    cargo pgrx test pg15 --runas postgres --pgdata "$pgdata"
else
    cargo pgrx test pg15
fi
