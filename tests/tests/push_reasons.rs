//! Exact reasons: a change rejected because its row left the caller's
//! visible set says so with its own reason and record (distinct from a
//! delete), and a clamped clock is one record per change whose status tells
//! the device.

use serde_json::json;
use sync_core::hlc::{node_tag, unix_to_epoch_ms, wall_clock_unix_ms};
use sync_core::Hlc;
use sync_tests::{eventually, pg_json, TestDb};

fn stamp_ahead(ms: u64) -> String {
    Hlc::new(
        unix_to_epoch_ms(wall_clock_unix_ms() + ms),
        0,
        node_tag("dev"),
    )
    .to_string()
}

#[test]
fn a_row_that_moved_out_of_view_is_rejected_as_moved_not_as_deleted() {
    let db = TestDb::new("reasons_moved");
    let mut admin = db.connect();
    let role = format!("{}_app", db.name);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role};
             CREATE TABLE docs (id text PRIMARY KEY, tenant text NOT NULL, body text);
             SELECT sync_enable('docs');
             ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_isolation ON docs USING (tenant = current_setting('app.tenant'));
             GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO {role};
             INSERT INTO docs VALUES ('a1', 'A', 'hello'), ('b1', 'B', 'other');"
        ))
        .unwrap();
    let mut a = db.connect();
    a.batch_execute(&format!("SET ROLE {role}; SET app.tenant = 'A'"))
        .unwrap();
    assert!(eventually(30, || {
        let p = pg_json(&mut a, "SELECT sync_pull(NULL)", &[]);
        p["changes"].as_array().unwrap().len() == 1
    }));
    admin
        .batch_execute("UPDATE docs SET tenant = 'B' WHERE id = 'a1'")
        .unwrap();
    let r = pg_json(
        &mut a,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "dev-a", "changes": [
            {"seq": 1, "table": "docs", "op": "update", "pk": {"id": "a1"}, "cols": {"body": "mine"},
             "hlc": stamp_ahead(0)},
            {"seq": 2, "table": "docs", "op": "update", "pk": {"id": "b1"}, "cols": {"body": "probe"},
             "hlc": stamp_ahead(0)}]})],
    );
    let moved = &r["results"][0];
    assert_eq!(moved["status"], "rejected", "{r}");
    assert_eq!(moved["constraint"], "row_not_visible", "{r}");
    assert!(moved["reason"]
        .as_str()
        .unwrap()
        .contains("no longer among the rows this role may see"));
    let id = moved["conflicts"][0].as_i64().expect("a record");
    let (strategy, outcome): (String, String) = {
        let row = admin
            .query_one(
                "SELECT strategy, outcome FROM pg_sync.conflicts WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (strategy.as_str(), outcome.as_str()),
        ("visibility", "moved_out")
    );
    // A key this role never saw gets the plain answer: no existence oracle.
    let never = &r["results"][1];
    assert_eq!(never["status"], "rejected");
    assert!(
        never["reason"].as_str().unwrap().contains("does not exist"),
        "{r}"
    );
    assert!(never.get("constraint").is_none_or(|c| c.is_null()), "{r}");
    let body: String = admin
        .query_one("SELECT body FROM docs WHERE id = 'a1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(body, "hello");
}

#[test]
fn a_clamped_clock_is_one_record_and_the_device_is_told() {
    let db = TestDb::new("reasons_clamp");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE t (id text PRIMARY KEY, title text, n int, note text);
         SELECT sync_enable('t');
         INSERT INTO t VALUES ('a', 'x', 1, 'y');",
    )
    .unwrap();
    let ahead = stamp_ahead(3_600_000);
    let r = pg_json(
        &mut c,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "dev", "changes": [
            {"seq": 1, "table": "t", "op": "insert", "pk": {"id": "b"},
             "cols": {"id": "b", "title": "t", "n": 2, "note": "z"}, "hlc": ahead},
            {"seq": 2, "table": "t", "op": "update", "pk": {"id": "a"},
             "cols": {"title": "new", "n": 5}, "ver": {"title": ahead, "n": ahead}, "hlc": ahead}]})],
    );
    for (i, res) in r["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(res["status"], "conflict", "{r}");
        let seq = i as i64 + 1;
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_sync.conflicts WHERE seq = $1 AND strategy = 'hlc'",
                &[&seq],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "seq {seq}");
    }
    // The insert's only record is the clamp, and its reason says so.
    let insert = &r["results"][0];
    assert!(
        insert["reason"]
            .as_str()
            .unwrap()
            .contains("ahead of the server"),
        "{r}"
    );
    assert_eq!(insert["conflicts"].as_array().unwrap().len(), 1, "{r}");
    let columns: Option<String> = c
        .query_one(
            "SELECT column_name FROM pg_sync.conflicts WHERE seq = 2 AND strategy = 'hlc'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(columns.as_deref(), Some("title, n"));
    // The writes stand, with clamped (not future) versions.
    let row: (String, i32) = {
        let r = c
            .query_one("SELECT title, n FROM t WHERE id = 'a'", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(row, ("new".to_string(), 5));
}
