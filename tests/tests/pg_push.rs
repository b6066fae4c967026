//! sync_push against a real cluster: results per change, idempotent
//! retries, constraint rejections with the constraint's name, merge rules,
//! and clear errors for bad input that change nothing.

use serde_json::{json, Value};
use sync_core::hlc::{node_tag, unix_to_epoch_ms, wall_clock_unix_ms};
use sync_core::Hlc;
use sync_tests::{err_text, pg_json, TestDb};

fn now_stamp(client: &str, bump: u64) -> String {
    Hlc::new(
        unix_to_epoch_ms(wall_clock_unix_ms()),
        bump,
        node_tag(client),
    )
    .to_string()
}

fn setup(prefix: &str) -> (TestDb, postgres::Client) {
    let db = TestDb::new(prefix);
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE tasks (id text PRIMARY KEY, title text NOT NULL CHECK (title <> ''),
                             done boolean DEFAULT false, points int, tags jsonb);
         CREATE TABLE comments (id text PRIMARY KEY,
                                task_id text NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
                                body text);
         SELECT sync_enable('tasks', '{\"columns\": {\"points\": {\"strategy\": \"counter\"}, \"tags\": {\"strategy\": \"set_union\"}}}');
         SELECT sync_enable('comments');
         INSERT INTO tasks VALUES ('t1', 'first', false, 10, '[\"a\"]');",
    )
    .unwrap();
    (db, c)
}

fn push(c: &mut postgres::Client, batch: &Value) -> Value {
    pg_json(c, "SELECT sync_push($1)", &[batch])
}

/// The stored version of one column, in wire form.
fn ver_of(c: &mut postgres::Client, id: &str, col: &str) -> String {
    c.query_one(
        "SELECT lpad(to_hex(coalesce(t._sync_ver[a.attnum], 0)), 16, '0') FROM tasks t, pg_attribute a \
         WHERE t.id = $1 AND a.attrelid = 'tasks'::regclass AND a.attname = $2",
        &[&id, &col],
    )
    .unwrap()
    .get(0)
}

#[test]
fn insert_update_delete_and_retry_is_idempotent() {
    let (_db, mut c) = setup("push_basic");
    let base = ver_of(&mut c, "t1", "points");
    let batch = json!({"format": 1, "client_id": "dev-a", "changes": [
        {"seq": 1, "table": "tasks", "op": "insert", "pk": {"id": "t2"},
         "cols": {"id": "t2", "title": "second", "done": true, "points": 3, "tags": ["x"]},
         "hlc": now_stamp("dev-a", 1)},
        {"seq": 2, "table": "tasks", "op": "update", "pk": {"id": "t1"},
         "cols": {"points": 15}, "base": {"points": base}, "base_values": {"points": 10},
         "ver": {"points": now_stamp("dev-a", 2)}, "hlc": now_stamp("dev-a", 2)},
        {"seq": 3, "table": "comments", "op": "insert", "pk": {"id": "c1"},
         "cols": {"id": "c1", "task_id": "t2", "body": "hello"}, "hlc": now_stamp("dev-a", 3)},
    ]});
    let r1 = push(&mut c, &batch);
    let statuses: Vec<&str> = r1["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "applied", "applied"], "{r1}");
    assert_eq!(r1["results"][0]["row"]["title"], "second");
    // The retried batch changes nothing twice: the counter delta (+5) is
    // applied once.
    let r2 = push(&mut c, &batch);
    let statuses2: Vec<&str> = r2["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses2, statuses);
    let points: i32 = c
        .query_one("SELECT points FROM tasks WHERE id = 't1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(points, 15);
    let n: i64 = c
        .query_one("SELECT count(*) FROM comments", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // Delete, retried.
    let del = json!({"format": 1, "client_id": "dev-a", "changes": [
        {"seq": 4, "table": "comments", "op": "delete", "pk": {"id": "c1"}, "hlc": now_stamp("dev-a", 4)}]});
    assert_eq!(push(&mut c, &del)["results"][0]["status"], "applied");
    assert_eq!(push(&mut c, &del)["results"][0]["status"], "applied");
    let n: i64 = c
        .query_one("SELECT count(*) FROM comments", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let tomb: i64 = c
        .query_one("SELECT count(*) FROM pg_sync.tombstones", &[])
        .unwrap()
        .get(0);
    assert_eq!(tomb, 1);
}

#[test]
fn constraint_violations_are_rejected_alone_with_their_name() {
    let (_db, mut c) = setup("push_reject");
    let batch = json!({"format": 1, "client_id": "dev-b", "changes": [
        {"seq": 1, "table": "comments", "op": "insert", "pk": {"id": "c1"},
         "cols": {"id": "c1", "task_id": "nope", "body": "orphan"}, "hlc": now_stamp("dev-b", 1)},
        {"seq": 2, "table": "tasks", "op": "insert", "pk": {"id": "t9"},
         "cols": {"id": "t9", "title": ""}, "hlc": now_stamp("dev-b", 2)},
        {"seq": 3, "table": "tasks", "op": "insert", "pk": {"id": "t8"},
         "cols": {"id": "t8"}, "hlc": now_stamp("dev-b", 3)},
        {"seq": 4, "table": "tasks", "op": "insert", "pk": {"id": "t7"},
         "cols": {"id": "t7", "title": "fine", "points": "not a number"}, "hlc": now_stamp("dev-b", 4)},
        {"seq": 5, "table": "tasks", "op": "insert", "pk": {"id": "t6"},
         "cols": {"id": "t6", "title": "ok"}, "hlc": now_stamp("dev-b", 5)},
    ]});
    let r = push(&mut c, &batch);
    let res = r["results"].as_array().unwrap();
    assert_eq!(res[0]["status"], "rejected");
    assert_eq!(res[0]["constraint"], "comments_task_id_fkey");
    assert_eq!(res[1]["status"], "rejected");
    assert_eq!(res[1]["constraint"], "tasks_title_check");
    assert_eq!(res[2]["status"], "rejected");
    assert_eq!(res[2]["constraint"], "title_not_null");
    assert_eq!(res[3]["status"], "rejected");
    assert!(res[3]["reason"]
        .as_str()
        .unwrap()
        .contains("invalid input syntax for type integer"));
    assert_eq!(res[4]["status"], "applied");
    let ids: Vec<String> = c
        .query("SELECT id FROM tasks ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["t1", "t6"]);
}

#[test]
fn update_of_a_row_deleted_on_the_server_is_a_recorded_conflict() {
    let (_db, mut c) = setup("push_deleted");
    let base = ver_of(&mut c, "t1", "title");
    c.batch_execute("DELETE FROM tasks WHERE id = 't1'")
        .unwrap();
    let batch = json!({"format": 1, "client_id": "dev-c", "changes": [
        {"seq": 1, "table": "tasks", "op": "update", "pk": {"id": "t1"},
         "cols": {"title": "edited offline"}, "base": {"title": base}, "hlc": now_stamp("dev-c", 1)}]});
    let r = push(&mut c, &batch);
    assert_eq!(r["results"][0]["status"], "rejected", "{r}");
    let id = r["results"][0]["conflicts"][0].as_i64().unwrap();
    let row = c
        .query_one(
            "SELECT strategy, outcome, client_value::text FROM pg_sync.conflicts WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "delete_wins");
    assert_eq!(row.get::<_, String>(1), "rejected");
    assert!(row.get::<_, String>(2).contains("edited offline"));
    let n: i64 = c
        .query_one("SELECT count(*) FROM tasks", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn concurrent_lww_edit_keeps_newer_and_logs_both() {
    let (_db, mut c) = setup("push_lww");
    let base = ver_of(&mut c, "t1", "title");
    // The server edits after the client's base.
    std::thread::sleep(std::time::Duration::from_millis(5));
    c.batch_execute("UPDATE tasks SET title = 'server edit' WHERE id = 't1'")
        .unwrap();
    // An older client edit loses, a newer one wins; both are logged.
    let old = Hlc::from_i64(
        "0000000000000000".parse::<Hlc>().unwrap().as_i64()
            + Hlc::new(unix_to_epoch_ms(wall_clock_unix_ms()) - 60_000, 0, 1).as_i64(),
    );
    let batch = json!({"format": 1, "client_id": "dev-d", "changes": [
        {"seq": 1, "table": "tasks", "op": "update", "pk": {"id": "t1"},
         "cols": {"title": "stale client edit"}, "base": {"title": base},
         "ver": {"title": old.to_string()}, "hlc": old.to_string()}]});
    let r = push(&mut c, &batch);
    assert_eq!(r["results"][0]["status"], "conflict", "{r}");
    assert_eq!(r["results"][0]["row"]["title"], "server edit");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let batch = json!({"format": 1, "client_id": "dev-d", "changes": [
        {"seq": 2, "table": "tasks", "op": "update", "pk": {"id": "t1"},
         "cols": {"title": "newer client edit"}, "base": {"title": base},
         "ver": {"title": now_stamp("dev-d", 0)}, "hlc": now_stamp("dev-d", 0)}]});
    let r = push(&mut c, &batch);
    assert_eq!(r["results"][0]["status"], "conflict", "{r}");
    assert_eq!(r["results"][0]["row"]["title"], "newer client edit");
    let logged: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_sync.conflicts WHERE column_name = 'title'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(logged, 2);
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let (_db, mut c) = setup("push_bad");
    let cases = [
        (
            json!({"format": 2, "client_id": "x", "changes": []}),
            "unsupported wire format 2",
        ),
        (json!({"client_id": "x"}), "malformed JSON"),
        (
            json!({"format": 1, "client_id": "x", "changes": [
            {"seq": 0, "table": "tasks", "op": "update", "pk": {"id": "t1"}, "cols": {"title": "t"}, "hlc": now_stamp("x", 0)}]}),
            "is not positive",
        ),
    ];
    for (batch, expect) in cases {
        let e = c.query_one("SELECT sync_push($1)", &[&batch]).unwrap_err();
        assert!(
            err_text(&e).contains(expect),
            "{} does not contain {expect}",
            err_text(&e)
        );
    }
    let e = c
        .query_one("SELECT sync_push('{not json')", &[])
        .unwrap_err();
    assert!(
        err_text(&e).contains("invalid input syntax for type json"),
        "{}",
        err_text(&e)
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM tasks", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let r: i64 = c
        .query_one("SELECT count(*) FROM pg_sync.push_results", &[])
        .unwrap()
        .get(0);
    assert_eq!(r, 0);
}

/// A change naming what the server does not have (a table no longer
/// synced, a dropped column, a key that does not match) gets its own
/// answer naming the problem; the rest of the batch applies.
#[test]
fn changes_naming_what_the_server_lacks_get_their_own_answer() {
    let (_db, mut c) = setup("push_lacks");
    let batch = json!({"format": 1, "client_id": "x", "changes": [
        {"seq": 1, "table": "nope", "op": "insert", "pk": {"id": "a"}, "cols": {"id": "a"}, "hlc": now_stamp("x", 0)},
        {"seq": 2, "table": "tasks", "op": "update", "pk": {"id": "t1"},
         "cols": {"color": "red", "title": "kept"}, "ver": {"color": now_stamp("x", 0)}, "hlc": now_stamp("x", 0)},
        {"seq": 3, "table": "tasks", "op": "update", "pk": {"id\"; DROP TABLE tasks; --": "a"},
         "cols": {"title": "t"}, "hlc": now_stamp("x", 0)},
        {"seq": 4, "table": "tasks", "op": "insert", "pk": {"id": "n"},
         "cols": {"id": "n", "title": "new", "old_col": 5}, "hlc": now_stamp("x", 0)}]});
    let r = push(&mut c, &batch);
    let res = r["results"].as_array().unwrap();
    assert_eq!(res[0]["status"], "rejected");
    assert_eq!(res[0]["constraint"], "table_not_synced");
    assert!(res[0]["reason"]
        .as_str()
        .unwrap()
        .contains("\"nope\" is not synced"));
    assert_ne!(res[1]["status"], "rejected", "{r}");
    assert_eq!(res[1]["ignored"], json!(["color"]));
    assert_eq!(res[1]["row"]["title"], "kept");
    assert_eq!(res[2]["status"], "rejected");
    assert_eq!(res[2]["constraint"], "key_mismatch");
    assert!(res[2]["reason"]
        .as_str()
        .unwrap()
        .contains("is not a key column"));
    assert_eq!(res[3]["status"], "applied", "{r}");
    assert_eq!(res[3]["ignored"], json!(["old_col"]));
    // The result names the server's columns, the order of every `ver`.
    assert_eq!(
        r["columns"]["tasks"].as_array().unwrap().len(),
        res[1]["ver"].as_array().unwrap().len()
    );
    // A retry answers the same, and the unknown table stored nothing.
    let again = push(&mut c, &batch);
    assert_eq!(again["results"][1]["ignored"], json!(["color"]));
    assert_eq!(again["results"][0]["constraint"], "table_not_synced");
    let stored: Vec<i64> = c
        .query("SELECT seq FROM pg_sync.push_results ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, vec![2, 3, 4]);
    let n: i64 = c
        .query_one("SELECT count(*) FROM tasks", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[test]
fn killed_connection_mid_push_applies_all_or_nothing() {
    let (db, mut c) = setup("push_kill");
    let base = ver_of(&mut c, "t1", "title");
    // A push that blocks on a row lock held by another session, then its
    // backend is terminated.
    let mut locker = db.connect();
    let mut tx = locker.transaction().unwrap();
    tx.execute("SELECT 1 FROM tasks WHERE id = 't1' FOR UPDATE", &[])
        .unwrap();
    let batch = json!({"format": 1, "client_id": "dev-k", "changes": [
        {"seq": 1, "table": "tasks", "op": "insert", "pk": {"id": "k1"}, "cols": {"id": "k1", "title": "before lock"}, "hlc": now_stamp("dev-k", 1)},
        {"seq": 2, "table": "tasks", "op": "update", "pk": {"id": "t1"}, "cols": {"title": "blocked"},
         "base": {"title": base}, "hlc": now_stamp("dev-k", 2)}]});
    let conn_str = db.conn_str();
    let b2 = batch.clone();
    let pusher = std::thread::spawn(move || {
        let mut p = postgres::Client::connect(&conn_str, postgres::NoTls).unwrap();
        p.query_one("SELECT sync_push($1)", &[&b2]).map(|_| ())
    });
    assert!(sync_tests::eventually(10, || {
        let n: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT sync_push%' AND wait_event_type = 'Lock' AND datname = current_database()", &[])
            .unwrap()
            .get(0);
        n == 1
    }));
    c.batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT sync_push%' AND datname = current_database()")
        .unwrap();
    assert!(pusher.join().unwrap().is_err());
    tx.rollback().unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM tasks WHERE id = 'k1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the first change must not survive a killed push");
    // The retry succeeds and applies everything once.
    let r = push(&mut c, &batch);
    assert_eq!(r["results"][0]["status"], "applied");
    assert_eq!(r["results"][1]["status"], "applied");
    let title: String = c
        .query_one("SELECT title FROM tasks WHERE id = 't1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(title, "blocked");
}

/// A cancel (statement_timeout, pg_cancel_backend, a pooler's timeout)
/// stops the whole push: it is never taken for one change's failure.
#[test]
fn a_cancelled_push_stops_and_applies_nothing() {
    let (_db, mut c) = setup("push_cancel");
    let changes: Vec<Value> = (1..=40_000)
        .map(|i| {
            json!({"seq": i, "table": "tasks", "op": "insert", "pk": {"id": format!("c{i}")},
                   "cols": {"id": format!("c{i}"), "title": "t"}, "hlc": now_stamp("x", 0)})
        })
        .collect();
    let batch = json!({"format": 1, "client_id": "slow", "changes": changes});
    c.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let e = c.query_one("SELECT sync_push($1)", &[&batch]).unwrap_err();
    assert_eq!(
        e.code().map(|s| s.code()),
        Some("57014"),
        "{}",
        err_text(&e)
    );
    c.batch_execute("RESET statement_timeout").unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM tasks", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let stored: i64 = c
        .query_one("SELECT count(*) FROM pg_sync.push_results", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}
