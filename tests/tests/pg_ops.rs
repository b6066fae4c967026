//! Operations against a real cluster: compaction with a stale client that
//! must resync, manual conflict resolution, the status view, NOTIFY on
//! commit, and schema versions following ALTER TABLE.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use serde_json::{json, Value};
use sync_core::hlc::{node_tag, unix_to_epoch_ms, wall_clock_unix_ms};
use sync_core::Hlc;
use sync_tests::{err_text, eventually, pg_json, TestDb};

fn pull(c: &mut postgres::Client, cursor: &Option<String>) -> Value {
    pg_json(c, "SELECT sync_pull($1, 10000)", &[cursor])
}

#[test]
fn compaction_makes_a_stale_client_resync() {
    let db = TestDb::new("ops_compact");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); SELECT sync_enable('t');
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;",
    )
    .unwrap();
    let mut cursor = None;
    assert!(eventually(30, || {
        let p = pull(&mut c, &cursor);
        cursor = Some(p["cursor"].as_str().unwrap().to_string());
        p["changes"].as_array().unwrap().len() == 10
    }));
    let stale = cursor.clone();
    c.batch_execute("DELETE FROM t WHERE id <= 5").unwrap();
    // A fresh client pulls past the deletes, then they are compacted.
    assert!(eventually(30, || {
        let p = pull(&mut c, &cursor);
        cursor = Some(p["cursor"].as_str().unwrap().to_string());
        p["changes"].as_array().unwrap().len() == 5
    }));
    let r = pg_json(&mut c, "SELECT sync_compact('0 seconds')", &[]);
    assert_eq!(r["tombstones_removed"], 5);
    // The stale client would never learn of the deletes: it must resync.
    let p = pull(&mut c, &stale);
    assert_eq!(p["resync_required"], true, "{p}");
    assert!(p["changes"].as_array().unwrap().is_empty());
    // The up-to-date client is unaffected.
    let p = pull(&mut c, &cursor);
    assert_eq!(p["resync_required"], false);
    // Resync: a pull from no cursor converges on the 5 remaining rows.
    let p = pull(&mut c, &None);
    let ids: Vec<i64> = p["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| ch["pk"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|id| *id > 5));
}

#[test]
fn manual_conflict_is_resolved_by_an_ordinary_write() {
    let db = TestDb::new("ops_resolve");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE t (id text PRIMARY KEY, v text);
         SELECT sync_enable('t', '{\"strategy\": \"manual\"}');
         INSERT INTO t VALUES ('a', 'base');
         UPDATE t SET v = 'server' WHERE id = 'a';",
    )
    .unwrap();
    let stamp = Hlc::new(unix_to_epoch_ms(wall_clock_unix_ms()), 0, node_tag("dev")).to_string();
    let r = pg_json(
        &mut c,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "dev", "changes": [
            {"seq": 1, "table": "t", "op": "update", "pk": {"id": "a"}, "cols": {"v": "mine"},
             "base": {"v": "0000000000000001"}, "hlc": stamp}]})],
    );
    assert_eq!(r["results"][0]["status"], "conflict");
    assert_eq!(r["results"][0]["row"]["v"], "server");
    let id = r["results"][0]["conflicts"][0].as_i64().unwrap();
    let (outcome, client_value): (String, Value) = {
        let row = c
            .query_one(
                "SELECT outcome, client_value FROM pg_sync.conflicts WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(outcome, "pending");
    assert_eq!(client_value, json!("mine"));
    c.query_one("SELECT sync_resolve($1, 'use_client')", &[&id])
        .unwrap();
    let v: String = c.query_one("SELECT v FROM t", &[]).unwrap().get(0);
    assert_eq!(v, "mine");
    let e = c
        .query_one("SELECT sync_resolve($1, 'use_client')", &[&id])
        .unwrap_err();
    assert!(err_text(&e).contains("already resolved"));
    let open: i64 = c
        .query_one("SELECT count(*) FROM pg_sync.conflicts WHERE resolved_at IS NULL AND strategy = 'manual'", &[])
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
}

#[test]
fn status_view_and_notify_on_commit() {
    let db = TestDb::new("ops_notify");
    let mut c = db.connect();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); SELECT sync_enable('t');")
        .unwrap();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN pg_sync").unwrap();
    // Off by default: nothing is announced.
    c.batch_execute("INSERT INTO t VALUES (100, 'quiet')")
        .unwrap();
    assert!(listener
        .notifications()
        .timeout_iter(Duration::from_millis(300))
        .next()
        .unwrap()
        .is_none());
    c.batch_execute("SET pg_sync.notify = on").unwrap();
    // A rolled-back write notifies nobody; a committed one does, once.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1, 'x'); ROLLBACK;")
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO t VALUES (2, 'y'); INSERT INTO t VALUES (3, 'z'); COMMIT;")
        .unwrap();
    let mut got = Vec::new();
    let mut n = listener.notifications();
    let mut it = n.timeout_iter(Duration::from_secs(5));
    while let Ok(Some(note)) = it.next() {
        got.push((note.channel().to_string(), note.payload().to_string()));
        if got.len() == 1 {
            break;
        }
    }
    drop(it);
    assert_eq!(got, [("pg_sync".to_string(), "t".to_string())]);
    let rows = c
        .query(
            "SELECT kind, name, tombstones FROM pg_sync.status WHERE kind = 'table'",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "t");
}

#[test]
fn alter_table_bumps_schema_version_and_keeps_tracking() {
    let db = TestDb::new("ops_alter");
    let mut c = db.connect();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); SELECT sync_enable('t');")
        .unwrap();
    let p = pull(&mut c, &None);
    let v1 = p["schema_version"].as_i64().unwrap();
    let cursor = Some(p["cursor"].as_str().unwrap().to_string());
    c.batch_execute("ALTER TABLE t ADD COLUMN extra int DEFAULT 7; INSERT INTO t (id, v, extra) VALUES (1, 'a', 8);").unwrap();
    let mut page = Value::Null;
    assert!(eventually(30, || {
        page = pull(&mut c, &cursor);
        !page["changes"].as_array().unwrap().is_empty()
    }));
    assert!(page["schema_version"].as_i64().unwrap() > v1);
    let cols: Vec<&str> = page["schema"]["tables"][0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["id", "v", "extra"]);
    assert_eq!(
        page["changes"][0]["row"],
        json!({"id": 1, "v": "a", "extra": 8})
    );
    assert_eq!(page["changes"][0]["ver"].as_array().unwrap().len(), 3);
}
