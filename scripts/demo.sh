#!/usr/bin/env bash
# make demo: a throwaway Postgres with a task tracker (tasks, comments), two
# offline SQLite devices editing it, synced with nothing but psql and the
# sqlite3 shell passing JSON between the SQL functions.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PG_BIN=/usr/lib/postgresql/15/bin
unset RUST_BACKTRACE

echo "== building pg_sync and sqlite_sync"
(cd pg_sync && cargo pgrx install --pg-config "${PG_CONFIG:-/usr/bin/pg_config}" >/dev/null 2>&1) \
    || { echo "building pg_sync failed; run: cd pg_sync && cargo pgrx install" >&2; exit 1; }
cargo build -q --manifest-path sqlite_sync/Cargo.toml
LIB="$ROOT/target/debug/libsqlite_sync"

WORK=$(mktemp -d /tmp/pg_sync_demo.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK"
cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting a throwaway Postgres 15 on port $PORT"
as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$WORK" -w start >/dev/null

psql_() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }
sql_() { local db=$1; shift; sqlite3 -bail -cmd ".load $LIB" "$WORK/$db.db" "$@"; }

echo "== server: schema, sync enabled, some tasks"
psql_ -o /dev/null <<'SQL'
CREATE EXTENSION pg_sync;
CREATE TABLE tasks (
    id          text PRIMARY KEY,
    title       text NOT NULL,
    description text,
    done        boolean NOT NULL DEFAULT false,
    points      int,
    due         timestamptz,
    tags        jsonb NOT NULL DEFAULT '[]'
);
CREATE TABLE comments (
    id      text PRIMARY KEY,
    task_id text NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    body    text NOT NULL
);
SELECT sync_enable('tasks', '{"columns": {"description": {"strategy": "text_merge"},
                                          "tags": {"strategy": "set_union"},
                                          "points": {"strategy": "counter"}}}');
SELECT sync_enable('comments');
INSERT INTO tasks (id, title, description, points, due, tags) VALUES
  ('t1', 'Write the spec', 'Draft the sync design. Review it with the team.', 3, '2026-12-01T09:00:00Z', '["docs"]'),
  ('t2', 'Fix login bug', 'Users are logged out after a minute.', 5, '2026-11-25T17:00:00Z', '["bug"]'),
  ('t3', 'Plan the offsite', NULL, 1, NULL, '[]');
INSERT INTO comments VALUES ('c1', 't2', 'Reproduced on Android.');
SQL

# JSON goes from one database's function to the other's through files.
pull() { # device
    local dev=$1 more=true
    while [ "$more" = true ]; do
        local cursor
        cursor=$(sql_ "$dev" "SELECT coalesce(sync_cursor(), '')")
        psql_ -At -v cursor="$cursor" > "$WORK/page.json" <<'SQL'
SELECT sync_pull_json(nullif(:'cursor', ''), 1000);
SQL
        local res
        res=$(sql_ "$dev" "SELECT sync_apply(CAST(readfile('$WORK/page.json') AS TEXT))")
        more=$(python3 -c 'import json,sys; print(str(json.loads(sys.argv[1])["has_more"]).lower())' "$res")
    done
}
push() { # device
    local dev=$1
    sql_ "$dev" "SELECT sync_changes()" > "$WORK/batch.json"
    psql_ -At -v batch="$(cat "$WORK/batch.json")" > "$WORK/result.json" <<'SQL'
SELECT sync_push(:'batch');
SQL
    local ack
    ack=$(sql_ "$dev" "SELECT sync_ack(CAST(readfile('$WORK/result.json') AS TEXT))")
    echo "   $dev push: $ack"
}
sync_dev() { push "$1"; pull "$1"; }

echo "== two devices: sync_init from the server's schema, then the first pull"
psql_ -At -c "SELECT sync_schema()" > "$WORK/schema.json"
for dev in device_a device_b; do
    sql_ "$dev" "SELECT sync_init(CAST(readfile('$WORK/schema.json') AS TEXT))" >/dev/null
    pull "$dev"
done
sql_ device_a "SELECT 'device_a sees ' || count(*) || ' tasks' FROM tasks"

echo "== offline edits"
echo "   device_a: edits the first sentence of t1's description, renames t2, adds a comment, adds a tag, +2 points on t2"
sql_ device_a <<'SQL'
UPDATE tasks SET description = 'Draft the sync design carefully. Review it with the team.' WHERE id = 't1';
UPDATE tasks SET title = 'Fix login timeout', points = points + 2, tags = '["bug","auth"]' WHERE id = 't2';
INSERT INTO comments (id, task_id, body) VALUES ('c2', 't2', 'Session cookie expires too early.');
SQL
echo "   device_b: edits the last sentence of t1's description, renames t2 too (a conflict), marks it done, +1 point, deletes t3, creates t4"
sql_ device_b <<'SQL'
UPDATE tasks SET description = 'Draft the sync design. Review it with the whole team.' WHERE id = 't1';
UPDATE tasks SET title = 'Fix session timeout', done = 1, points = points + 1, tags = '["bug","p1"]' WHERE id = 't2';
DELETE FROM tasks WHERE id = 't3';
INSERT INTO tasks (id, title, done, points, tags) VALUES ('t4', 'Write release notes', 0, 2, '[]');
SQL
echo "   server: somebody renames t1 meanwhile"
psql_ -c "UPDATE tasks SET title = 'Write the sync spec' WHERE id = 't1'"
sql_ device_a "SELECT 'device_a pending: ' || json_extract(sync_status(), '$.pending')"
sql_ device_b "SELECT 'device_b pending: ' || json_extract(sync_status(), '$.pending')"

echo "== back online: device_a syncs, device_b syncs, device_a pulls again"
sync_dev device_a
sync_dev device_b
pull device_a

Q_TASKS="SELECT id, title, coalesce(description, ''), done, points, tags FROM tasks ORDER BY id"
Q_COMMENTS="SELECT id, task_id, body FROM comments ORDER BY id"
psql_ -At -F '|' -c "SELECT id, title, coalesce(description, ''), done::int, points, tags::text FROM tasks ORDER BY id" > "$WORK/server_tasks.txt"
psql_ -At -F '|' -c "$Q_COMMENTS" > "$WORK/server_comments.txt"
for dev in device_a device_b; do
    sql_ "$dev" -separator '|' "SELECT id, title, coalesce(description, ''), done, points, replace(json(tags), ',', ', ') FROM tasks ORDER BY id" > "$WORK/${dev}_tasks.txt"
    sql_ "$dev" -separator '|' "$Q_COMMENTS" > "$WORK/${dev}_comments.txt"
done

echo
echo "== converged state"
for who in server device_a device_b; do
    echo "-- $who: tasks (id|title|description|done|points|tags)"
    cat "$WORK/${who}_tasks.txt"
    echo "-- $who: comments"
    cat "$WORK/${who}_comments.txt"
done
echo
ok=true
for dev in device_a device_b; do
    diff -u "$WORK/server_tasks.txt" "$WORK/${dev}_tasks.txt" || ok=false
    diff -u "$WORK/server_comments.txt" "$WORK/${dev}_comments.txt" || ok=false
done
echo "-- server: conflict log"
psql_ -c "SELECT table_name, pk, column_name, strategy, outcome, server_value, client_value FROM pg_sync.conflicts ORDER BY id"
if $ok; then
    echo "== all three databases agree"
else
    echo "== MISMATCH: the databases differ" >&2
    exit 1
fi
