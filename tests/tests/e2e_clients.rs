//! Client scenarios through the real Postgres and SQLite extensions: a
//! server-side rejection rolled back only where it must be, a confirmed-mode
//! table, a schema change on the server with pending local changes, and a
//! process killed in the middle of `sync_apply`.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sync_tests::e2e::{server_rows, Device};
use sync_tests::{eventually, TestDb};

fn pull_until(dev: &Device, c: &mut postgres::Client, done: impl Fn(&Device) -> bool) {
    assert!(eventually(30, || {
        dev.pull(c);
        done(dev)
    }));
}

#[test]
fn a_rejected_change_rolls_back_only_its_own_row() {
    let db = TestDb::new("e2e_reject");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE tasks (id text PRIMARY KEY, title text NOT NULL CHECK (title <> ''), done boolean NOT NULL DEFAULT false);
         CREATE TABLE comments (id text PRIMARY KEY, task_id text NOT NULL REFERENCES tasks(id), body text);
         SELECT sync_enable('tasks'); SELECT sync_enable('comments');
         INSERT INTO tasks VALUES ('t1', 'one', false), ('t2', 'two', false);",
    )
    .unwrap();
    let a = Device::new(&mut c, "reject_a");
    let b = Device::new(&mut c, "reject_b");
    for d in [&a, &b] {
        pull_until(d, &mut c, |d| d.rows("SELECT id FROM tasks").len() == 2);
    }
    a.db.execute_batch(
        "UPDATE tasks SET done = 1 WHERE id = 't1';
         UPDATE tasks SET title = '' WHERE id = 't2';
         INSERT INTO comments (id, task_id, body) VALUES ('c1', 'nope', 'orphan');
         INSERT INTO comments (id, task_id, body) VALUES ('c2', 't1', 'fine');",
    )
    .unwrap();
    let r = a.push(&mut c);
    let by_pk = |id: &str| -> Value {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["pk"]["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_pk("t1")["status"], "applied", "{r}");
    assert_eq!(by_pk("t2")["status"], "rejected");
    assert_eq!(by_pk("t2")["constraint"], "tasks_title_check");
    assert_eq!(by_pk("c1")["status"], "rejected");
    assert_eq!(by_pk("c1")["constraint"], "comments_task_id_fkey");
    assert_eq!(by_pk("c2")["status"], "applied");
    // Device A: t1 and c2 kept, t2 back to the server's title, c1 gone.
    assert_eq!(
        a.rows("SELECT id, title, done FROM tasks ORDER BY id"),
        vec![
            vec![json!("t1"), json!("one"), json!(1)],
            vec![json!("t2"), json!("two"), json!(0)]
        ]
    );
    assert_eq!(
        a.rows("SELECT id FROM comments ORDER BY id"),
        vec![vec![json!("c2")]]
    );
    // _sync_errors holds exactly the two rejected changes.
    let errors = a.rows("SELECT tbl, constraint_name FROM _sync_errors ORDER BY tbl");
    assert_eq!(
        errors,
        vec![
            vec![json!("comments"), json!("comments_task_id_fkey")],
            vec![json!("tasks"), json!("tasks_title_check")]
        ]
    );
    assert_eq!(a.call("SELECT sync_status()", None)["pending"], 0);
    // Everybody converges.
    let q_server =
        "SELECT to_jsonb(id), to_jsonb(title), to_jsonb(done::int) FROM tasks ORDER BY id";
    let expected = server_rows(&mut c, q_server);
    for d in [&a, &b] {
        pull_until(d, &mut c, |d| {
            d.rows("SELECT id, title, done FROM tasks ORDER BY id") == expected
        });
        assert_eq!(
            d.rows("SELECT id FROM comments ORDER BY id"),
            vec![vec![json!("c2")]]
        );
    }
}

#[test]
fn a_confirmed_table_shows_writes_once_accepted() {
    let db = TestDb::new("e2e_confirmed");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE payments (id text PRIMARY KEY, amount numeric NOT NULL CHECK (amount > 0));
         SELECT sync_enable('payments', '{\"mode\": \"confirmed\"}');",
    )
    .unwrap();
    let d = Device::new(&mut c, "confirmed");
    d.pull(&mut c);
    d.db.execute_batch(
        "INSERT INTO payments (id, amount) VALUES ('p1', 10);
         INSERT INTO payments (id, amount) VALUES ('p2', -5);",
    )
    .unwrap();
    // Pending: not in payments yet, shown in payments_pending.
    assert!(d.rows("SELECT id FROM payments").is_empty());
    assert_eq!(
        d.rows("SELECT id FROM payments_pending ORDER BY id").len(),
        2
    );
    let r = d.push(&mut c);
    assert_eq!(r["results"][0]["status"], "applied", "{r}");
    assert_eq!(r["results"][1]["status"], "rejected");
    // Accepted: p1 shows in payments; the rejected p2 is gone. (A numeric
    // column holds its exact decimal text on the device.)
    assert_eq!(
        d.rows("SELECT id, amount FROM payments"),
        vec![vec![json!("p1"), json!("10")]]
    );
    assert_eq!(
        d.rows("SELECT id FROM payments_pending"),
        vec![vec![json!("p1")]]
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM payments", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn a_schema_change_mid_way_keeps_pending_changes() {
    let db = TestDb::new("e2e_schema");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE tasks (id text PRIMARY KEY, title text NOT NULL);
         SELECT sync_enable('tasks');
         INSERT INTO tasks VALUES ('t1', 'one'), ('t2', 'two');",
    )
    .unwrap();
    let d = Device::new(&mut c, "schema");
    pull_until(&d, &mut c, |d| d.rows("SELECT id FROM tasks").len() == 2);
    // Offline edits, then the server adds a column and a new synced table.
    d.db.execute_batch("UPDATE tasks SET title = 'one, edited offline' WHERE id = 't1'; INSERT INTO tasks (id, title) VALUES ('t3', 'three');")
        .unwrap();
    c.batch_execute(
        "ALTER TABLE tasks ADD COLUMN priority int NOT NULL DEFAULT 1;
         UPDATE tasks SET priority = 5 WHERE id = 't2';
         CREATE TABLE tags (id text PRIMARY KEY, name text); SELECT sync_enable('tags');
         INSERT INTO tags VALUES ('g1', 'urgent');",
    )
    .unwrap();
    // The pull carries the new schema: the device migrates and keeps its edits.
    pull_until(&d, &mut c, |d| d.rows("SELECT id FROM tags").len() == 1);
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 2);
    assert_eq!(
        d.rows("SELECT id, title, priority FROM tasks ORDER BY id"),
        vec![
            vec![json!("t1"), json!("one, edited offline"), json!(1)],
            vec![json!("t2"), json!("two"), json!(5)],
            vec![json!("t3"), json!("three"), Value::Null],
        ]
    );
    d.sync(&mut c);
    let expected = server_rows(
        &mut c,
        "SELECT to_jsonb(id), to_jsonb(title), to_jsonb(priority) FROM tasks ORDER BY id",
    );
    pull_until(&d, &mut c, |d| {
        d.rows("SELECT id, title, priority FROM tasks ORDER BY id") == expected
    });
    assert_eq!(expected.len(), 3);
    assert_eq!(expected[2], vec![json!("t3"), json!("three"), json!(1)]);
}

#[test]
fn a_process_killed_mid_apply_leaves_the_database_as_before() {
    let db = TestDb::new("e2e_kill");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, body text);
         SELECT sync_enable('items');
         INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 10) g;",
    )
    .unwrap();
    let d = Device::new(&mut c, "kill");
    pull_until(&d, &mut c, |d| d.rows("SELECT id FROM items").len() == 10);
    d.db.execute_batch("UPDATE items SET body = 'local' WHERE id = 1")
        .unwrap();
    // One page of 100000 rows (about 40 MB): past the default byte budget.
    c.batch_execute(
        "INSERT INTO items SELECT g, repeat('y', 300) FROM generate_series(11, 200000) g;
         SET pg_sync.max_page_size = '256MB';",
    )
    .unwrap();
    let cursor: Option<String> =
        d.db.query_row("SELECT sync_cursor()", [], |r| r.get(0))
            .unwrap();
    let mut page = Value::Null;
    assert!(eventually(30, || {
        page = c
            .query_one("SELECT sync_pull_json($1, 100000)", &[&cursor])
            .unwrap()
            .get(0);
        sync_tests::page_changes(&page).len() == 100000
    }));
    let page_file = d.path.with_extension("page.json");
    std::fs::write(&page_file, page.to_string()).unwrap();
    let before_rows = d.rows("SELECT count(*), sum(id) FROM items");
    // Apply in a separate sqlite3 process and kill it while it works.
    let killed_mid_way = kill_mid_way(
        &d.path,
        &format!(
            "SELECT sync_apply(CAST(readfile('{}') AS TEXT))",
            page_file.display()
        ),
    );
    assert!(
        killed_mid_way,
        "sync_apply finished before it could be killed"
    );
    // As before the call: same rows, same cursor, the local edit pending.
    let d2 = Device::reopen(&d.path);
    assert_eq!(d2.rows("SELECT count(*), sum(id) FROM items"), before_rows);
    let cursor_after: Option<String> = d2
        .db
        .query_row("SELECT sync_cursor()", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cursor_after, cursor);
    assert_eq!(
        d2.rows("SELECT body FROM items WHERE id = 1"),
        vec![vec![json!("local")]]
    );
    // The next sync converges.
    d2.sync(&mut c);
    pull_until(&d2, &mut c, |d| {
        d.rows("SELECT count(*) FROM items") == vec![vec![json!(200000)]]
    });
    assert_eq!(
        d2.rows("SELECT body FROM items WHERE id = 1"),
        vec![vec![json!("local")]]
    );
    let server_body: String = c
        .query_one("SELECT body FROM items WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(server_body, "local");
    let _ = std::fs::remove_file(page_file);
}

/// Runs `sql` on the device file in a separate sqlite3 shell process and
/// kills it while it works; returns whether it was killed mid-way.
fn kill_mid_way(path: &std::path::Path, sql: &str) -> bool {
    for delay_ms in [150u64, 60, 20, 400] {
        let mut child = Command::new("sqlite3")
            .arg(path)
            .arg(format!(
                ".load {}",
                sync_tests::sqlite::lib_path().with_extension("").display()
            ))
            .arg(sql)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sqlite3 shell");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
    }
    false
}

#[test]
fn a_process_killed_mid_ack_or_mid_write_leaves_the_database_as_before() {
    let db = TestDb::new("e2e_kill_ack");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, body text); SELECT sync_enable('items');",
    )
    .unwrap();
    let d = Device::new(&mut c, "kill_ack");
    d.pull(&mut c);
    // Many offline inserts, pushed in one batch; the answer is acknowledged
    // by a process that is killed while it works.
    d.db.execute_batch(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 30000)
         INSERT INTO items (id, body) SELECT n, 'offline ' || n FROM g;",
    )
    .unwrap();
    let batch = d.call("SELECT sync_changes(30000)", None);
    assert_eq!(batch["changes"].as_array().unwrap().len(), 30000);
    let result: Value = c
        .query_one("SELECT sync_push($1)", &[&batch])
        .unwrap()
        .get(0);
    let result_file = d.path.with_extension("result.json");
    std::fs::write(&result_file, result.to_string()).unwrap();
    let before = (
        d.call("SELECT sync_status()", None)["pending"].clone(),
        d.rows("SELECT count(*) FROM items"),
    );
    assert_eq!(before.0, 30000);
    let killed = kill_mid_way(
        &d.path,
        &format!(
            "SELECT sync_ack(CAST(readfile('{}') AS TEXT))",
            result_file.display()
        ),
    );
    assert!(killed, "sync_ack finished before it could be killed");
    let d2 = Device::reopen(&d.path);
    assert_eq!(d2.call("SELECT sync_status()", None)["pending"], before.0);
    assert_eq!(d2.rows("SELECT count(*) FROM items"), before.1);
    // The batch is still in flight and the same; acknowledging again works.
    assert_eq!(d2.call("SELECT sync_changes(30000)", None), batch);
    d2.call("SELECT sync_ack(?1)", Some(&result.to_string()));
    assert_eq!(d2.call("SELECT sync_status()", None)["pending"], 0);

    // A local write killed mid-way leaves no trace, in the table or the queue.
    let rows_before = d2.rows("SELECT count(*), coalesce(sum(id), 0) FROM items");
    let queued_before = d2.rows("SELECT count(*) FROM _changes");
    let killed = kill_mid_way(
        &d2.path,
        "WITH RECURSIVE g(n) AS (SELECT 100001 UNION ALL SELECT n + 1 FROM g WHERE n < 400000) \
         INSERT INTO items (id, body) SELECT n, 'doomed ' || n FROM g;",
    );
    assert!(killed, "the write finished before it could be killed");
    let d3 = Device::reopen(&d.path);
    assert_eq!(
        d3.rows("SELECT count(*), coalesce(sum(id), 0) FROM items"),
        rows_before
    );
    assert_eq!(d3.rows("SELECT count(*) FROM _changes"), queued_before);
    // And the device converges with the server.
    d3.sync(&mut c);
    let n: i64 = c
        .query_one("SELECT count(*) FROM items", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 30000);
    let _ = std::fs::remove_file(result_file);
}
