//! Golden wire documents (`shared/goldens/*.json`), read and reproduced by
//! both extensions through the real databases:
//!
//! - the server writes the schema, a first page, an incremental page with
//!   deletes, a resync page and the result of the golden push batch, each
//!   equal to its golden file once the values that differ per run (cursor,
//!   stamps) are normalized;
//! - the server reads the golden push batch;
//! - the device reads the golden schema, pages and push result, and ends
//!   with exactly the rows the documents say.
//!
//! Pages come in both formats: `page_*.json` in format 1 (a cursor that
//! does not ask for more, e.g. `NULL`), `page2_*.json` in format 2 (a
//! device's cursor); the two of each pull carry the same changes.
//!
//! `UPDATE_GOLDENS=1 cargo test -p sync_tests --test goldens` rewrites the
//! server-written files; review the diff like any change of the format.
//! `shared/tests/goldens.rs` checks the same files against the shared
//! readers and writers.

use std::path::PathBuf;

use postgres::Client;
use serde_json::Value;
use sync_tests::e2e::Device;
use sync_tests::{eventually, pg_json, workspace_root, TestDb};

const STAMP: &str = "0000000000000001";
const CURSOR: &str = "c1.GOLDEN";

fn golden_path(name: &str) -> PathBuf {
    workspace_root().join("shared/goldens").join(name)
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(golden_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compares a server-written document (normalized) with its golden file,
/// or rewrites the file under UPDATE_GOLDENS=1.
fn check(name: &str, doc: &Value) {
    let text = serde_json::to_string_pretty(doc).unwrap() + "\n";
    if std::env::var("UPDATE_GOLDENS").is_ok() {
        std::fs::write(golden_path(name), &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(golden_path(name)).unwrap();
    assert_eq!(
        text, want,
        "{name}: the server wrote another document (UPDATE_GOLDENS=1 rewrites it)"
    );
}

/// Stamps and cursors differ per run: every stamp becomes STAMP, a
/// non-empty cursor CURSOR.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), &mut *x) {
                    ("cursor", Value::String(s)) if !s.is_empty() => *s = CURSOR.into(),
                    ("ver", Value::Array(a)) => {
                        for s in a.iter_mut() {
                            *s = Value::from(STAMP);
                        }
                    }
                    // Format 2: each row ends with its version, one stamp
                    // or one per column.
                    ("rows", Value::Array(rows)) => {
                        for r in rows.iter_mut() {
                            match r.as_array_mut().and_then(|r| r.last_mut()) {
                                Some(Value::Array(a)) => {
                                    a.iter_mut().for_each(|s| *s = Value::from(STAMP))
                                }
                                Some(v) => *v = Value::from(STAMP),
                                None => {}
                            }
                        }
                    }
                    _ => normalize(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

const SETUP: &str = "
    CREATE TABLE projects (id int PRIMARY KEY, name text NOT NULL CHECK (name <> ''), budget numeric(12,2));
    CREATE TABLE tasks (id text PRIMARY KEY, project_id int REFERENCES projects,
                        title text, done boolean NOT NULL DEFAULT false,
                        points int, tags jsonb, due timestamptz);
    SELECT sync_enable('projects');
    SELECT sync_enable('tasks', '{\"columns\": {\"title\": {\"strategy\": \"text_merge\"},
        \"points\": {\"strategy\": \"counter\"}, \"tags\": {\"strategy\": \"set_union\"}}}');
    INSERT INTO projects VALUES (1, 'Website', 1234.50), (2, 'App', NULL);
    INSERT INTO tasks VALUES
        ('t1', 1, 'write the plan', false, 3, '[\"a\"]', '2026-11-21T10:00:00.123456+00'),
        ('t2', 1, 'review', true, 0, '[]', NULL),
        ('t3', 2, 'ship it', false, NULL, NULL, NULL);";

/// The scenario's server edits after the first pull.
const SERVER_EDITS: &str = "
    UPDATE tasks SET title = replace(title, 'the plan', 'the whole plan'), points = points + 2 WHERE id = 't1';
    DELETE FROM tasks WHERE id = 't3';
    INSERT INTO tasks (id, project_id, title) VALUES ('t9', 2, 'from the server');";

fn pull_page(c: &mut Client, cursor: Option<&str>) -> Value {
    let mut page = Value::Null;
    assert!(eventually(30, || {
        page = pg_json(c, "SELECT sync_pull_json($1, 1000)::jsonb", &[&cursor]);
        page["has_more"] == false
    }));
    page
}

/// Checks that a page of format 2 and one of format 1 of the same pull
/// carry the same changes.
fn same_changes(two: &Value, one: &Value) {
    assert_eq!(two["format"], 2, "{two}");
    assert_eq!(one["format"], 1, "{one}");
    let two = sync_core::wire::PullPage::parse(&two.to_string()).unwrap();
    let one = sync_core::wire::PullPage::parse(&one.to_string()).unwrap();
    assert_eq!(two.changes, one.changes);
    assert_eq!(two.schema, one.schema);
}

#[test]
fn the_server_writes_and_reads_the_golden_documents() {
    let db = TestDb::new("goldens_server");
    let mut c = db.connect();
    c.batch_execute(SETUP).unwrap();
    // Schema and first page.
    let mut schema = pg_json(&mut c, "SELECT sync_schema()", &[]);
    normalize(&mut schema);
    check("schema.json", &schema);
    let first = pull_page(&mut c, None);
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let mut doc = first.clone();
    normalize(&mut doc);
    check("page_first.json", &doc);
    let first2 = pull_page(&mut c, Some(&sync_tests::device_cursor()));
    same_changes(&first2, &first);
    let cursor2 = first2["cursor"].as_str().unwrap().to_string();
    let mut doc = first2.clone();
    normalize(&mut doc);
    check("page2_first.json", &doc);
    // The golden push batch, read by the server.
    let batch = golden("push_batch.json");
    let mut result = pg_json(&mut c, "SELECT sync_push($1)", &[&batch]);
    normalize(&mut result);
    check("push_result.json", &result);
    // The server's own edits, then the incremental page (the push's rows
    // and the server's, deletes included).
    c.batch_execute(SERVER_EDITS).unwrap();
    let mut incr = pull_page(&mut c, Some(&cursor));
    // A device asks for format 2 with every pull (sync_cursor()).
    let cursor2 = sync_core::cursor::Cursor::with_page_format(&cursor2, 2).unwrap();
    let incr2 = pull_page(&mut c, Some(&cursor2));
    same_changes(&incr2, &incr);
    normalize(&mut incr);
    check("page_incremental.json", &incr);
    let mut incr2 = incr2;
    normalize(&mut incr2);
    check("page2_incremental.json", &incr2);
    // A resync.
    c.batch_execute("SELECT sync_resync_all()").unwrap();
    let mut resync = pg_json(&mut c, "SELECT sync_pull_json($1)::jsonb", &[&cursor]);
    normalize(&mut resync);
    check("page_resync.json", &resync);
}

/// Rows of a device table as text (for exact comparisons).
fn rows(d: &Device, sql: &str) -> Vec<String> {
    d.rows(sql)
        .into_iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[test]
fn the_device_reads_the_golden_documents() {
    device_reads("page_first.json", "page_incremental.json", "1");
}

#[test]
fn the_device_reads_the_golden_documents_of_format_2() {
    device_reads("page2_first.json", "page2_incremental.json", "2");
}

/// The golden scenario on a new device, with the first and incremental
/// pages of one format.
fn device_reads(first: &str, incremental: &str, tag: &str) {
    let path = std::env::temp_dir().join(format!("pg_sync_golden_{}_{tag}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let d = Device::open_new(&path);
    let call = |sql: &str, arg: &Value| -> Value { d.call(sql, Some(&arg.to_string())) };
    call("SELECT sync_init(?1)", &golden("schema.json"));
    call("SELECT sync_apply(?1)", &golden(first));
    assert_eq!(
        rows(&d, "SELECT id, name, budget FROM projects ORDER BY id"),
        ["1|Website|1234.50", "2|App|null"]
    );
    assert_eq!(
        rows(
            &d,
            "SELECT id, project_id, title, done, points, tags, due FROM tasks ORDER BY id"
        ),
        [
            "t1|1|write the plan|0|3|[\"a\"]|2026-11-21T10:00:00.123456+00:00",
            "t2|1|review|1|0|[]|null",
            "t3|2|ship it|0|null|null|null",
        ]
    );
    // The device makes the golden batch's writes, in its order; the
    // golden result answers them.
    d.db.execute_batch(
        "INSERT INTO tasks (id, project_id, title, done, points, tags) VALUES ('t4', 2, 'new task', 0, 1, '[\"x\"]');
         UPDATE tasks SET title = 'write the plan now' WHERE id = 't1';
         UPDATE tasks SET points = points + 5 WHERE id = 't2';
         INSERT INTO projects (id, name) VALUES (3, '');
         DELETE FROM tasks WHERE id = 't3';",
    )
    .unwrap();
    let batch = d.call("SELECT sync_changes()", None);
    let golden_batch = golden("push_batch.json");
    let shape = |b: &Value| -> Vec<(Value, Value, Value, Value)> {
        b["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| {
                (
                    ch["seq"].clone(),
                    ch["table"].clone(),
                    ch["op"].clone(),
                    ch["pk"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(shape(&batch), shape(&golden_batch), "{batch}");
    let mut result = golden("push_result.json");
    result["client_id"] = batch["client_id"].clone();
    call("SELECT sync_ack(?1)", &result);
    assert_eq!(
        d.call("SELECT sync_status()", None)["pending"],
        Value::from(0)
    );
    assert_eq!(
        rows(&d, "SELECT id, name FROM projects ORDER BY id"),
        ["1|Website", "2|App"],
        "the rejected rename is rolled back"
    );
    call("SELECT sync_apply(?1)", &golden(incremental));
    assert_eq!(
        rows(
            &d,
            "SELECT id, title, done, points, tags FROM tasks ORDER BY id"
        ),
        [
            "t1|write the whole plan now|0|5|[\"a\"]",
            "t2|review|1|5|[]",
            "t4|new task|0|1|[\"x\"]",
            "t9|from the server|0|null|null",
        ]
    );
    let resync = call("SELECT sync_apply(?1)", &golden("page_resync.json"));
    assert_eq!(resync["resync_required"], true, "{resync}");
    let cursor: String =
        d.db.query_row("SELECT sync_cursor()", [], |r| r.get(0))
            .unwrap();
    assert_eq!(cursor, sync_tests::device_cursor(), "a resync starts over");
}
