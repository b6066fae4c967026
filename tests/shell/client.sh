#!/usr/bin/env bash
# sqlite_sync from the sqlite3 command-line shell (.load).
#
#   SQLITE_SYNC_LIB=target/debug/libsqlite_sync.so bash tests/shell/client.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
lib="${SQLITE_SYNC_LIB:-$here/../../target/debug/libsqlite_sync.so}"
lib="${lib%.so}"
sqlite="${SQLITE3:-sqlite3}"
command -v "$sqlite" >/dev/null || { echo "sqlite3 shell not found" >&2; exit 2; }
[ -e "$lib.so" ] || { echo "$lib.so is missing: run cargo build --manifest-path sqlite_sync/Cargo.toml" >&2; exit 2; }

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
db="$dir/client.db"

run() { "$sqlite" -batch -bail "$db" -cmd ".load $lib" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { # expect <what> <got> <want>
  [ "$2" = "$3" ] || fail "$1: got [$2], want [$3]"
  echo "ok - $1"
}

schema='{"format":1,"version":1,"tables":[{"name":"tasks","pk":["id"],"columns":[
 {"name":"id","type":"text","nullable":false},{"name":"title","type":"text"},
 {"name":"done","type":"boolean"},{"name":"tags","type":"json","strategy":"set_union"},
 {"name":"data","type":"blob"}]}]}'

out="$(run "SELECT json_extract(sync_init('$schema'), '\$.changed');")"
expect "sync_init creates the tables" "$out" "1"
client="$(run "SELECT sync_client_id();")"
[ "${#client}" -eq 36 ] || fail "client id $client"
echo "ok - client id $client"

# The database keeps working across shell sessions (the extension is loaded per connection).
run "INSERT INTO tasks (id, title, done, tags, data) VALUES ('t1', 'from the shell', 1, '[\"x\"]', x'00ff');
     UPDATE tasks SET title = 'edited' WHERE id = 't1';"
expect "write through the table" "$(run "SELECT title || '|' || done FROM tasks;")" "edited|1"
expect "pending" "$(run "SELECT sync_pending('tasks', 't1');")" "1"

batch="$(run "SELECT sync_changes();")"
again="$(run "SELECT sync_changes();")"
expect "retry returns the same batch" "$again" "$batch"
expect "one insert" "$(run "SELECT json_extract('$batch', '\$.changes[0].op') || ' ' || json_extract('$batch', '\$.changes[0].cols.data');")" 'insert \x00ff'

seq="$(run "SELECT json_extract('$batch', '\$.changes[0].seq');")"
result="{\"format\":1,\"client_id\":\"$client\",\"results\":[{\"seq\":$seq,\"table\":\"tasks\",\"pk\":{\"id\":\"t1\"},\"status\":\"applied\",\"row\":{\"id\":\"t1\",\"title\":\"edited\",\"done\":true,\"tags\":[\"x\"],\"data\":\"\\\\x00ff\"},\"ver\":[\"0000000000400001\",\"0000000000400001\",\"0000000000400001\",\"0000000000400001\",\"0000000000400001\"]}]}"
expect "ack" "$(run "SELECT json_extract(sync_ack('$result'), '\$.confirmed');")" "1"
expect "nothing pending" "$(run "SELECT json_extract(sync_status(), '\$.pending');")" "0"

page='{"format":1,"schema_version":1,"cursor":"c7","has_more":false,"changes":[
 {"table":"tasks","op":"upsert","pk":{"id":"s1"},"row":{"id":"s1","title":"server","done":false,"tags":["a","b"],"data":null},
  "ver":["0000000000500001","0000000000500001","0000000000500001","0000000000500001","0000000000500001"]},
 {"table":"tasks","op":"delete","pk":{"id":"t1"}}]}'
expect "apply" "$(run "SELECT sync_apply('$page');")" '{"cursor":"c7","deletes":1,"has_more":false,"upserts":1}'
expect "pulled rows" "$(run "SELECT group_concat(id || ':' || title || ':' || tags, ',') FROM tasks;")" 's1:server:["a","b"]'
expect "cursor" "$(run "SELECT sync_cursor();")" "c7"

# Errors are ordinary SQL errors with a message.
if err="$(run "SELECT sync_apply('{nope');" 2>&1)"; then fail "bad JSON accepted"; fi
case "$err" in *"malformed JSON"*) echo "ok - error: $err" ;; *) fail "unexpected error: $err" ;; esac
if err="$(run "INSERT INTO tasks (id) VALUES ('s1');" 2>&1)"; then fail "duplicate accepted"; fi
case "$err" in *UNIQUE*) echo "ok - duplicate key: $err" ;; *) fail "unexpected error: $err" ;; esac

echo "all shell checks passed"
