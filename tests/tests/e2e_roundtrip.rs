//! One table round-trips between Postgres and a SQLite device through the
//! SQL functions only: server inserts, updates and deletes reach the device;
//! offline inserts, updates and deletes on the device reach the server and
//! come back confirmed; tombstones on both sides; bad input changes nothing.

use serde_json::{json, Value};
use sync_tests::e2e::{server_rows, Device};
use sync_tests::{eventually, TestDb};

const SERVER_Q: &str = "SELECT to_jsonb(id), to_jsonb(title), to_jsonb(n), to_jsonb(est), \
     to_jsonb(done::int), to_jsonb(due), meta FROM tasks ORDER BY id";
const DEVICE_Q: &str = "SELECT id, title, n, est, done, due, meta FROM tasks ORDER BY id";

fn device_rows(d: &Device) -> Vec<Vec<Value>> {
    d.rows(DEVICE_Q)
        .into_iter()
        .map(|mut r| {
            if let Value::String(s) = &r[6] {
                r[6] = serde_json::from_str(s).unwrap();
            }
            r
        })
        .collect()
}

fn setup() -> (TestDb, postgres::Client) {
    let db = TestDb::new("e2e_roundtrip");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE tasks (id text PRIMARY KEY, title text NOT NULL, n integer, est double precision,
                             done boolean NOT NULL DEFAULT false, due timestamptz, meta jsonb);
         SELECT sync_enable('tasks');",
    )
    .unwrap();
    (db, c)
}

#[test]
fn one_table_round_trips_both_ways() {
    let (_db, mut c) = setup();
    let dev = Device::new(&mut c, "roundtrip");

    // Server writes reach the device.
    c.batch_execute(
        "INSERT INTO tasks VALUES
           ('t1', 'Write spec', 3, 1.5, false, '2026-01-01T10:00:00Z', '{\"labels\": [\"a\", \"b\"]}'),
           ('t2', 'Fix bug', 5, 0.25, true, NULL, NULL),
           ('t3', 'Ünïcode ✓ \"quoted\"', NULL, NULL, false, '2026-06-30T23:59:59.123456+02:00', '[1, 2.5, null]');",
    )
    .unwrap();
    assert!(eventually(30, || {
        dev.pull(&mut c);
        device_rows(&dev).len() == 3
    }));
    assert_eq!(device_rows(&dev), server_rows(&mut c, SERVER_Q));
    assert_eq!(
        device_rows(&dev)[0],
        vec![
            json!("t1"),
            json!("Write spec"),
            json!(3),
            json!(1.5),
            json!(0),
            json!("2026-01-01T10:00:00+00:00"),
            json!({"labels": ["a", "b"]})
        ]
    );

    c.batch_execute("UPDATE tasks SET title = 'Write the spec', done = true WHERE id = 't1'; DELETE FROM tasks WHERE id = 't2';")
        .unwrap();
    assert!(eventually(30, || {
        dev.pull(&mut c);
        device_rows(&dev).len() == 2
    }));
    assert_eq!(device_rows(&dev), server_rows(&mut c, SERVER_Q));
    let synced: i64 = dev
        .db
        .query_row(
            "SELECT count(*) FROM tasks_synced WHERE id = 't2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        synced, 0,
        "the server's tombstone removes the row from tasks_synced"
    );

    // Offline writes on the device through the view.
    dev.db
        .execute_batch(
            "INSERT INTO tasks (id, title, n, est, done, due, meta)
               VALUES ('d1', 'From device', 7, 2.75, 1, '2026-03-01T08:00:00+00:00', '{\"k\": \"v\"}');
             UPDATE tasks SET n = 42, meta = '{\"edited\": true}' WHERE id = 't1';
             DELETE FROM tasks WHERE id = 't3';",
        )
        .unwrap();
    let local = device_rows(&dev);
    assert_eq!(local.len(), 2);
    assert_eq!(local[0][0], "d1");
    assert_eq!(local[1][2], 42);
    let status = dev.call("SELECT sync_status()", None);
    assert_eq!(status["pending"], 3, "{status}");
    assert_eq!(
        dev.db
            .query_row("SELECT sync_pending('tasks', 't1')", [], |r| r
                .get::<_, i64>(0))
            .unwrap(),
        1
    );

    let result = dev.push(&mut c);
    let statuses: Vec<&str> = result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "applied", "applied"], "{result}");
    assert_eq!(dev.call("SELECT sync_status()", None)["pending"], 0);
    assert_eq!(
        dev.db
            .query_row("SELECT sync_pending('tasks', 't1')", [], |r| r
                .get::<_, i64>(0))
            .unwrap(),
        0
    );
    // The server has exactly the device's rows, with a tombstone for t3.
    assert_eq!(server_rows(&mut c, SERVER_Q), local);
    let tomb: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_sync.tombstones WHERE pk = '{\"id\": \"t3\"}'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tomb, 1);
    // Confirmed: the overlays are gone and the server state is in _synced.
    let overlays: i64 = dev
        .db
        .query_row("SELECT count(*) FROM tasks_local", [], |r| r.get(0))
        .unwrap();
    assert_eq!(overlays, 0);
    dev.pull(&mut c);
    assert_eq!(device_rows(&dev), server_rows(&mut c, SERVER_Q));
    let synced: Vec<Vec<Value>> = dev.rows("SELECT id FROM tasks_synced ORDER BY id");
    assert_eq!(synced, vec![vec![json!("d1")], vec![json!("t1")]]);
}

#[test]
fn bad_input_to_each_function_is_a_clear_error_and_changes_nothing() {
    let (_db, mut c) = setup();
    c.batch_execute("INSERT INTO tasks (id, title) VALUES ('t1', 'x')")
        .unwrap();
    let dev = Device::new(&mut c, "badinput");
    eventually(30, || dev.pull(&mut c) > 0 || !device_rows(&dev).is_empty());
    dev.db
        .execute_batch("UPDATE tasks SET title = 'local' WHERE id = 't1'")
        .unwrap();
    let before_rows = device_rows(&dev);
    let before_changes: i64 = dev
        .db
        .query_row("SELECT count(*) FROM _changes", [], |r| r.get(0))
        .unwrap();
    let before_cursor: Option<String> = dev
        .db
        .query_row("SELECT sync_cursor()", [], |r| r.get(0))
        .unwrap();

    let v: i64 = c
        .query_one("SELECT (sync_schema()->>'version')::bigint", &[])
        .unwrap()
        .get(0);
    let unknown_table = format!(
        r#"{{"format":1,"schema_version":{v},"cursor":"c","has_more":false,"changes":[{{"table":"nope","op":"upsert","pk":{{"id":"z"}},"row":{{"id":"z"}},"ver":[]}}]}}"#
    );
    let cases: &[(&str, &str, &str)] = &[
        ("SELECT sync_init(?1)", "{not json", "JSON"),
        (
            "SELECT sync_init(?1)",
            r#"{"format":1,"version":99,"tables":[{"name":"x","pk":[],"columns":[{"name":"a","type":"text"}]}]}"#,
            "primary key",
        ),
        ("SELECT sync_apply(?1)", "{not json", "JSON"),
        ("SELECT sync_apply(?1)", &unknown_table, "nope"),
        (
            "SELECT sync_apply(?1)",
            r#"{"format":7,"schema_version":1,"cursor":"c","has_more":false,"changes":[]}"#,
            "format",
        ),
        ("SELECT sync_ack(?1)", "[]", "JSON"),
        (
            "SELECT sync_ack(?1)",
            r#"{"format":1,"client_id":"someone-else","results":[]}"#,
            "client",
        ),
    ];
    for (sql, arg, expect) in cases {
        let e = dev
            .db
            .query_row(sql, [arg], |r| r.get::<_, Option<String>>(0))
            .unwrap_err();
        assert!(
            e.to_string()
                .to_lowercase()
                .contains(&expect.to_lowercase()),
            "{sql} with {arg}: error {e:?} does not mention {expect:?}"
        );
    }
    assert_eq!(device_rows(&dev), before_rows);
    let after_changes: i64 = dev
        .db
        .query_row("SELECT count(*) FROM _changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(after_changes, before_changes);
    let after_cursor: Option<String> = dev
        .db
        .query_row("SELECT sync_cursor()", [], |r| r.get(0))
        .unwrap();
    assert_eq!(after_cursor, before_cursor);
    // The server side: bad input to its functions changes nothing either.
    let e = c
        .query_one("SELECT sync_enable('tasks_missing')", &[])
        .unwrap_err();
    assert!(sync_tests::err_text(&e).contains("does not exist"));
    c.batch_execute("CREATE TABLE nopk (a int)").unwrap();
    let e = c.query_one("SELECT sync_enable('nopk')", &[]).unwrap_err();
    assert!(sync_tests::err_text(&e).contains("has no primary key"));
    let cols: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'nopk'::regclass AND attnum > 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cols, 1, "a rejected sync_enable leaves the table untouched");
}
