//! sqlite_sync on its own: every SQL function of the client contract,
//! driven with fabricated Schema / PullPage / PushResult documents.
//!
//! Needs the built extension: `cargo build --manifest-path sqlite_sync/Cargo.toml` first.

use serde_json::{json, Map, Value};
use sync_tests::sqlite::{
    delete, hlc, page, task, tasks_schema, tasks_schema_mode, upsert, ver_all, FakeServer,
    TestClient, Verdict,
};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A client holding server rows `ids` (pulled, clean).
fn client_with(ids: &[&str]) -> (TestClient, FakeServer) {
    let c = TestClient::with_schema(&tasks_schema(1));
    let mut s = FakeServer::tasks();
    for id in ids {
        s.write(id, obj(task(id, &format!("server {id}"))));
    }
    c.apply(&s.pull(None));
    (c, s)
}

fn changes_rows(c: &TestClient) -> Vec<Vec<Value>> {
    c.rows("SELECT tbl, pk, op, mask FROM _changes WHERE op <> 'mark' ORDER BY seq")
}

#[test]
fn init_creates_the_objects_and_is_idempotent() {
    let c = TestClient::new();
    let e = c.try_text("SELECT sync_changes()", None).unwrap_err();
    assert!(e.contains("sync_init"), "{e}");
    let r = c.init(&tasks_schema(1));
    assert_eq!(r["changed"], true);
    assert_eq!(r["schema_version"], 1);
    let id = r["client_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "a UUID v4: {id}");
    assert_eq!(
        c.try_text("SELECT sync_client_id()", None)
            .unwrap()
            .unwrap(),
        id
    );

    let objects = c.rows(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    );
    let names: Vec<String> = objects
        .iter()
        .map(|r| format!("{} {}", r[0].as_str().unwrap(), r[1].as_str().unwrap()))
        .collect();
    for want in [
        "table tasks",
        "table tasks_synced",
        "view tasks_local",
        "table _changes",
        "table _sync_meta",
        "table _sync_errors",
        "table _sync_base",
        "trigger tasks__sync_ins",
        "trigger tasks__sync_upd",
        "trigger tasks__sync_del",
        "trigger tasks__sync_pk",
        "trigger tasks__sync_save",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing: {names:?}"
        );
    }
    let types = c.rows("SELECT name, type FROM pragma_table_info('tasks') ORDER BY cid");
    assert_eq!(
        types,
        vec![
            vec![json!("id"), json!("TEXT")],
            vec![json!("title"), json!("TEXT")],
            vec![json!("done"), json!("INTEGER")],
            vec![json!("priority"), json!("INTEGER")],
            // No declared type (no affinity): SQLite keeps the exact double,
            // -0.0 included (REAL affinity stores integral values as integers).
            vec![json!("estimate"), json!("")],
            vec![json!("due"), json!("TEXT")],
            vec![json!("meta"), json!("TEXT")],
            vec![json!("tags"), json!("TEXT")],
            vec![json!("data"), json!("BLOB")],
        ]
    );
    let synced_cols: Vec<String> = c
        .rows("SELECT name FROM pragma_table_info('tasks_synced')")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert!(synced_cols.contains(&"_ver".to_string()));
    assert!(synced_cols.contains(&"_full".to_string()));

    let st = c.status();
    assert_eq!(st["client_id"], json!(id));
    assert_eq!(st["pending"], 0);
    assert_eq!(st["in_flight"], false);
    assert_eq!(st["cursor"], Value::Null);
    assert_eq!(st["schema_version"], 1);
    assert_eq!(st["errors"], 0);
    assert_eq!(
        c.try_text("SELECT sync_cursor()", None).unwrap(),
        Some(sync_tests::device_cursor())
    );
    assert_eq!(
        c.try_text("SELECT sync_version()", None).unwrap().unwrap(),
        env!("CARGO_PKG_VERSION")
    );

    // Same or older version: nothing happens.
    let before = c.snapshot();
    let again = c.init(&tasks_schema(1));
    assert_eq!(again["changed"], false);
    assert_eq!(again["client_id"], json!(id));
    let older = c.init(&tasks_schema(0));
    assert_eq!(older["changed"], false);
    assert_eq!(older["schema_version"], 1);
    assert_eq!(c.snapshot(), before);
}

#[test]
fn local_writes_show_at_once_and_are_queued() {
    let (c, _s) = client_with(&["s1"]);
    c.exec(
        "INSERT INTO tasks (id, title, done, priority) VALUES ('t1', 'one', 0, 1);
         INSERT INTO tasks (id, title) VALUES ('t2', 'two');
         UPDATE tasks SET title = 'one!' WHERE id = 't1';
         DELETE FROM tasks WHERE id = 't2';
         UPDATE tasks SET done = 1 WHERE id = 's1';",
    );
    let rows = c.rows("SELECT id, title, done FROM tasks ORDER BY id");
    assert_eq!(
        rows,
        vec![
            vec![json!("s1"), json!("server s1"), json!(1)],
            vec![json!("t1"), json!("one!"), json!(0)],
        ]
    );
    assert_eq!(
        changes_rows(&c),
        vec![
            vec![json!("tasks"), json!("t1"), json!("insert"), json!(511)],
            vec![json!("tasks"), json!("t2"), json!("insert"), json!(511)],
            vec![json!("tasks"), json!("t1"), json!("update"), json!(2)],
            vec![json!("tasks"), json!("t2"), json!("delete"), json!(0)],
            vec![json!("tasks"), json!("s1"), json!("update"), json!(4)],
        ]
    );
    // t2 was created and deleted locally: nothing to confirm.
    assert_eq!(c.status()["pending"], 2);
    assert_eq!(c.pending("tasks", "t1"), 1);
    assert_eq!(c.pending("tasks", "s1"), 1);
    assert_eq!(c.pending("tasks", "t2"), 0);
    assert_eq!(c.pending("tasks", r#"{"id": "t1"}"#), 1);
    assert_eq!(c.pending("tasks", "nope"), 0);
    // The overlay view lists rows with unconfirmed writes.
    let local = c.rows("SELECT id, _mask, _deleted FROM tasks_local ORDER BY id");
    assert_eq!(local[0], vec![json!("s1"), json!(4), json!(0)]);
    assert_eq!(local[1], vec![json!("t1"), json!(511), json!(0)]);
    assert_eq!(local[2], vec![json!("t2"), json!(511), json!(1)]);

    // A duplicate key is an ordinary UNIQUE error.
    let e =
        c.db.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'dup')", [])
            .unwrap_err()
            .to_string();
    assert!(e.contains("UNIQUE"), "{e}");
    let e =
        c.db.execute("INSERT INTO tasks (id, title) VALUES ('s1', 'dup')", [])
            .unwrap_err()
            .to_string();
    assert!(e.contains("UNIQUE"), "{e}");
    // An update that changes nothing queues nothing.
    let n = c.int("SELECT count(*) FROM _changes");
    c.exec("UPDATE tasks SET title = title, done = done WHERE id = 't1'");
    assert_eq!(c.int("SELECT count(*) FROM _changes"), n);
    // Changing a key is a delete of the old key and an insert of the new.
    c.exec("UPDATE tasks SET id = 's1b' WHERE id = 's1'");
    let tail: Vec<Vec<Value>> = changes_rows(&c).split_off(5);
    assert_eq!(
        tail,
        vec![
            vec![json!("tasks"), json!("s1"), json!("delete"), json!(0)],
            vec![json!("tasks"), json!("s1b"), json!("insert"), json!(511)],
        ]
    );
    let b = c.changes();
    let ops: Vec<(String, String)> = b["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["pk"]["id"].as_str().unwrap().to_string(),
                x["op"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("t1".to_string(), "insert".to_string()),
            ("s1".to_string(), "delete".to_string()),
            ("s1b".to_string(), "insert".to_string()),
        ]
    );
}

#[test]
fn a_rolled_back_transaction_leaves_no_trace() {
    let (c, _s) = client_with(&["s1"]);
    c.exec("UPDATE tasks SET title = 'kept' WHERE id = 's1'");
    let before = c.snapshot();
    c.exec(
        "BEGIN;
         INSERT INTO tasks (id, title) VALUES ('t1', 'gone');
         UPDATE tasks SET title = 'gone too', priority = 9 WHERE id = 's1';
         DELETE FROM tasks WHERE id = 's1';
         ROLLBACK;",
    );
    assert_eq!(c.snapshot(), before);
    c.exec(
        "BEGIN;
         INSERT INTO tasks (id, title) VALUES ('t2', 'stays');
         SAVEPOINT sp;
         INSERT INTO tasks (id, title) VALUES ('t3', 'gone');
         ROLLBACK TO sp;
         RELEASE sp;
         COMMIT;",
    );
    let ids: Vec<Value> = c
        .rows("SELECT pk FROM _changes WHERE op = 'insert'")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(ids, vec![json!("t2")]);
}

#[test]
fn many_writes_to_a_row_coalesce_into_one_change() {
    let (c, s) = client_with(&["s1", "s2", "s3"]);
    let server_ver = s.rows["s1"].1.clone();
    c.exec("INSERT INTO tasks (id, title, priority) VALUES ('n1', 'new', 0)");
    for i in 1..=50 {
        c.exec(&format!(
            "UPDATE tasks SET title = 'new {i}', priority = {i} WHERE id = 'n1'"
        ));
    }
    c.exec("UPDATE tasks SET title = 'a' WHERE id = 's1'");
    c.exec("UPDATE tasks SET title = 'b' WHERE id = 's1'");
    c.exec("UPDATE tasks SET done = 1 WHERE id = 's1'");
    c.exec("UPDATE tasks SET tags = '[\"a\",\"z\"]' WHERE id = 's1'");
    c.exec("UPDATE tasks SET title = 'x' WHERE id = 's2'");
    c.exec("DELETE FROM tasks WHERE id = 's2'");
    c.exec("DELETE FROM tasks WHERE id = 's3'");
    c.exec("INSERT INTO tasks (id, title) VALUES ('n2', 'short-lived')");
    c.exec("UPDATE tasks SET title = 'still short' WHERE id = 'n2'");
    c.exec("DELETE FROM tasks WHERE id = 'n2'");

    let b = c.changes();
    let ch = b["changes"].as_array().unwrap();
    assert_eq!(ch.len(), 4, "{b}");
    let seqs: Vec<i64> = ch.iter().map(|x| x["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases: {seqs:?}"
    );
    let by_id = |id: &str| ch.iter().find(|x| x["pk"]["id"] == id).unwrap().clone();

    let n1 = by_id("n1");
    assert_eq!(n1["op"], "insert");
    assert_eq!(n1["cols"]["title"], "new 50");
    assert_eq!(n1["cols"]["priority"], 50);
    assert_eq!(n1["cols"]["id"], "n1");
    assert_eq!(n1["cols"].as_object().unwrap().len(), 9);
    assert!(n1.get("base").is_none(), "a new row has no base: {n1}");
    assert!(n1["ver"]["title"].as_str() > n1["ver"]["done"].as_str());
    assert_eq!(n1["hlc"], n1["ver"]["title"]);

    let s1 = by_id("s1");
    assert_eq!(s1["op"], "update");
    assert_eq!(
        s1["cols"],
        json!({"title": "b", "done": true, "tags": ["a", "z"]})
    );
    let ver = s1["ver"].as_object().unwrap();
    assert_eq!(ver.len(), 3);
    assert!(ver["tags"].as_str() > ver["done"].as_str());
    assert!(ver["done"].as_str() > ver["title"].as_str());
    // base: the server versions the edits were made on.
    assert_eq!(s1["base"]["title"], json!(server_ver[1]));
    assert_eq!(s1["base"]["done"], json!(server_ver[2]));
    assert_eq!(s1["base"]["tags"], json!(server_ver[7]));
    // base_values only for the set_union column.
    assert_eq!(s1["base_values"], json!({"tags": ["a"]}));
    assert_eq!(s1["hlc"], ver["tags"]);

    for id in ["s2", "s3"] {
        let d = by_id(id);
        assert_eq!(d["op"], "delete");
        assert!(d.get("cols").is_none());
        assert_eq!(d["base"].as_object().unwrap().len(), 8, "{d}");
    }
    // The insert + delete of n2 sent nothing and left nothing queued.
    assert!(ch.iter().all(|x| x["pk"]["id"] != "n2"));
    assert_eq!(c.int("SELECT count(*) FROM _changes WHERE pk = 'n2'"), 0);
    // The change seq is the highest queued seq of its row.
    let max_s1 = c.int("SELECT max(seq) FROM _changes WHERE pk = 's1'");
    assert_eq!(s1["seq"], max_s1);
}

#[test]
fn sync_changes_is_retry_safe_until_acknowledged() {
    let (c, mut s) = client_with(&["s1"]);
    c.exec("UPDATE tasks SET title = 'first' WHERE id = 's1'");
    c.exec("INSERT INTO tasks (id, title) VALUES ('a', 'A'), ('b', 'B'), ('c', 'C')");
    let b1 = c.changes_text();
    assert_eq!(c.status()["in_flight"], true);
    c.exec("UPDATE tasks SET title = 'second' WHERE id = 's1'");
    c.exec("INSERT INTO tasks (id, title) VALUES ('d', 'D')");
    let b2 = c.changes_text();
    assert_eq!(b1, b2, "the stored batch comes back byte for byte");
    let e = c.try_text("SELECT sync_changes(5)", None).unwrap();
    assert_eq!(e.unwrap(), b1);
    let batch: Value = serde_json::from_str(&b1).unwrap();
    let r = s.push(&batch, |_| Verdict::Apply);
    let summary = c.ack(&r);
    assert_eq!(summary["confirmed"], 4);
    assert_eq!(c.status()["in_flight"], false);
    // Later writes go in the next batch, on top of the confirmed state.
    let next = c.changes();
    let ch = next["changes"].as_array().unwrap();
    assert_eq!(ch.len(), 2, "{next}");
    assert_eq!(ch[0]["pk"]["id"], "s1");
    assert_eq!(ch[0]["cols"], json!({"title": "second"}));
    assert_eq!(
        ch[0]["base"]["title"], batch["changes"][0]["ver"]["title"],
        "based on the confirmed first edit"
    );
    assert_eq!(ch[1]["op"], "insert");
    let r = s.push(&next, |_| Verdict::Apply);
    c.ack(&r);
    // Nothing pending: an empty batch, nothing stored.
    let empty = c.changes();
    assert_eq!(empty["changes"], json!([]));
    assert_eq!(empty["format"], 1);
    assert_eq!(c.status()["in_flight"], false);
    // max limits the number of changes.
    c.exec("INSERT INTO tasks (id, title) VALUES ('x1', '1'), ('x2', '2'), ('x3', '3')");
    let one = c.call("SELECT sync_changes(2)", None);
    assert_eq!(one["changes"].as_array().unwrap().len(), 2);
    let r = s.push(&one, |_| Verdict::Apply);
    c.ack(&r);
    let rest = c.changes();
    assert_eq!(rest["changes"].as_array().unwrap().len(), 1);
    assert_eq!(rest["changes"][0]["pk"]["id"], "x3");
}

#[test]
fn ack_confirms_applied_changes_and_rolls_back_rejected_ones() {
    let (c, mut s) = client_with(&["a", "b", "c", "e"]);
    c.exec(
        "UPDATE tasks SET title = 'local a' WHERE id = 'a';
         UPDATE tasks SET title = 'local b', priority = 7 WHERE id = 'b';
         DELETE FROM tasks WHERE id = 'c';
         INSERT INTO tasks (id, title) VALUES ('d', 'new d');
         DELETE FROM tasks WHERE id = 'e';",
    );
    let batch = c.changes();
    // Writes made while the batch is in flight.
    c.exec("UPDATE tasks SET priority = 42 WHERE id = 'a'");
    c.exec("UPDATE tasks SET done = 1 WHERE id = 'b'");
    let result = s.push(&batch, |ch| {
        if ch["pk"]["id"] == "b" || ch["pk"]["id"] == "e" {
            Verdict::Reject
        } else {
            Verdict::Apply
        }
    });
    let summary = c.ack(&result);
    assert_eq!(
        summary,
        json!({"confirmed": 3, "rejected": 2, "conflicts": 0, "ignored": 0})
    );
    let view = c.tasks("tasks");
    assert_eq!(view["a"]["title"], "local a");
    assert_eq!(view["a"]["priority"], 42, "the later local write stays");
    assert_eq!(
        view["b"]["title"], "server b",
        "rejected: back to server state"
    );
    assert_eq!(view["b"]["priority"], 1);
    assert_eq!(
        view["b"]["done"], false,
        "later writes of a rejected row go too"
    );
    assert!(!view.contains_key("c"));
    assert_eq!(view["d"]["title"], "new d");
    assert_eq!(
        view["e"]["title"], "server e",
        "a rejected delete brings the row back"
    );
    let synced = c.rows("SELECT id, _full FROM tasks_synced ORDER BY id");
    assert_eq!(
        synced,
        vec![
            vec![json!("a"), json!(1)],
            vec![json!("b"), json!(0)],
            vec![json!("d"), json!(0)],
            vec![json!("e"), json!(0)],
        ]
    );
    let st = c.status();
    assert_eq!(st["pending"], 1);
    assert_eq!(st["errors"], 2);
    assert!(st["last_push"].is_string());
    assert_eq!(c.pending("tasks", "a"), 1);
    assert_eq!(c.pending("tasks", "b"), 0);
    let errs = c.rows(
        "SELECT seq, tbl, pk, op, reason, constraint_name, at IS NOT NULL FROM _sync_errors ORDER BY id",
    );
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0][1], "tasks");
    assert_eq!(errs[0][2], r#"{"id":"b"}"#);
    assert_eq!(errs[0][3], "update");
    assert_eq!(errs[0][4], "rejected by the fake server");
    assert_eq!(errs[0][5], "fake_check");
    assert_eq!(errs[0][6], 1);
    assert_eq!(errs[1][3], "delete");

    // The same answer again changes nothing.
    let before = c.snapshot();
    let again = c.ack(&result);
    assert_eq!(again["ignored"], 5);
    assert_eq!(again["confirmed"], 0);
    assert_eq!(c.snapshot(), before);

    // The remaining write of a: only priority, based on the confirmed row.
    let next = c.changes();
    let ch = &next["changes"][0];
    assert_eq!(ch["cols"], json!({"priority": 42}));
    assert_eq!(ch["base"]["priority"], json!(s.rows["a"].1[3]));
    // A rejected insert disappears.
    let r = s.push(&next, |_| Verdict::Apply);
    c.ack(&r);
    c.exec("INSERT INTO tasks (id, title) VALUES ('z', 'nope')");
    let b = c.changes();
    let r = s.push(&b, |_| Verdict::Reject);
    assert_eq!(c.ack(&r)["rejected"], 1);
    assert!(!c.tasks("tasks").contains_key("z"));
    assert_eq!(c.status()["pending"], 0);
    // Every server row matches the client.
    c.apply(&s.pull(None));
    let server: Vec<Value> = s
        .rows
        .values()
        .map(|(m, _)| Value::Object(m.clone()))
        .collect();
    let client: Vec<Value> = c.tasks("tasks").into_values().collect();
    assert_eq!(client, server);
}

#[test]
fn ack_rejects_a_result_for_another_change() {
    let (c, mut s) = client_with(&["a"]);
    c.exec("UPDATE tasks SET title = 'x' WHERE id = 'a'");
    let batch = c.changes();
    let mut r = s.push(&batch, |_| Verdict::Apply);
    r["results"][0]["pk"] = json!({"id": "other"});
    let before = c.snapshot();
    let e = c
        .try_text("SELECT sync_ack(?1)", Some(&r.to_string()))
        .unwrap_err();
    assert!(e.contains("pk"), "{e}");
    assert_eq!(c.snapshot(), before);
}

#[test]
fn apply_upserts_deletes_is_idempotent_and_keeps_local_writes_on_top() {
    let c = TestClient::with_schema(&tasks_schema(1));
    let h1 = hlc(1000, 0, 1);
    let p1 = page(
        1,
        "c1",
        true,
        vec![
            upsert("tasks", task("t1", "one"), &ver_all(&h1)),
            upsert("tasks", task("t2", "two"), &ver_all(&h1)),
            upsert("tasks", task("t3", "three"), &ver_all(&h1)),
        ],
    );
    let r = c.apply(&p1);
    assert_eq!(
        r,
        json!({"upserts": 3, "deletes": 0, "cursor": "c1", "has_more": true})
    );
    assert_eq!(
        c.try_text("SELECT sync_cursor()", None).unwrap().unwrap(),
        "c1"
    );
    assert_eq!(c.tasks("tasks")["t1"], task("t1", "one"));
    assert_eq!(
        c.int("SELECT count(*) FROM _changes"),
        0,
        "pulled rows are not queued"
    );
    assert_eq!(c.int("SELECT sum(_full) FROM tasks_synced"), 0);
    assert_eq!(
        c.try_text(
            "SELECT sync_ver_json(_ver, 9) FROM tasks_synced WHERE id = 't1'",
            None
        )
        .unwrap()
        .unwrap(),
        serde_json::to_string(&ver_all(&h1)).unwrap()
    );
    let tables = |c: &TestClient| {
        (
            c.rows("SELECT * FROM tasks ORDER BY id"),
            c.rows("SELECT * FROM tasks_synced ORDER BY id"),
            c.rows("SELECT * FROM _changes"),
        )
    };
    let once = tables(&c);
    c.apply(&p1);
    assert_eq!(tables(&c), once, "the same page twice changes nothing");

    // Local writes, then the server changes the same rows.
    c.exec("UPDATE tasks SET title = 'mine' WHERE id = 't1'");
    c.exec("UPDATE tasks SET priority = 5 WHERE id = 't2'");
    let h2 = hlc(2000, 0, 1);
    let mut t1 = task("t1", "theirs");
    t1["done"] = json!(true);
    let mut t2 = task("t2", "two v2");
    t2["priority"] = json!(3);
    let p2 = page(
        1,
        "c2",
        false,
        vec![
            upsert("tasks", t1.clone(), &ver_all(&h2)),
            upsert("tasks", t2, &ver_all(&h2)),
            delete("tasks", "t3"),
        ],
    );
    let r = c.apply(&p2);
    assert_eq!(r["upserts"], 2);
    assert_eq!(r["deletes"], 1);
    assert_eq!(r["has_more"], false);
    let view = c.tasks("tasks");
    assert_eq!(view["t1"]["title"], "mine", "the local write stays on top");
    assert_eq!(view["t1"]["done"], true, "other columns follow the server");
    assert_eq!(view["t2"]["priority"], 5);
    assert_eq!(view["t2"]["title"], "two v2");
    assert!(!view.contains_key("t3"));
    assert_eq!(c.pending("tasks", "t1"), 1);
    // The server copy of a pending row holds the server's values.
    let s1 = c.rows("SELECT title, done, _full FROM tasks_synced WHERE id = 't1'");
    assert_eq!(s1, vec![vec![json!("theirs"), json!(1), json!(1)]]);
    // The push says which version the edit was made on: the first one.
    let b = c.changes();
    let ch1 = b["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["pk"]["id"] == "t1")
        .unwrap()
        .clone();
    assert_eq!(ch1["base"]["title"], json!(h1));
    assert_eq!(ch1["cols"], json!({"title": "mine"}));
    let once = tables(&c);
    c.apply(&p2);
    assert_eq!(tables(&c), once, "the same page twice changes nothing");

    // A server delete of a row with a pending write keeps the local row.
    let p3 = page(1, "c3", false, vec![delete("tasks", "t2")]);
    c.apply(&p3);
    assert_eq!(c.tasks("tasks")["t2"]["priority"], 5);
    assert_eq!(
        c.int("SELECT count(*) FROM tasks_synced WHERE id = 't2'"),
        0
    );
    // Values and versions of pulled rows feed the clock: later local stamps
    // are newer than anything seen.
    c.exec("UPDATE tasks SET title = 'after' WHERE id = 't1'");
    let last: i64 = c.int("SELECT max(hlc) FROM _changes");
    assert!(last as u64 > sync_core::Hlc::new(2000, 0, 1).0);
}

#[test]
fn a_local_insert_then_delete_does_not_hide_a_pulled_row() {
    let c = TestClient::with_schema(&tasks_schema(1));
    c.exec("INSERT INTO tasks (id, title) VALUES ('x', 'mine'); DELETE FROM tasks WHERE id = 'x';");
    c.apply(&page(
        1,
        "c1",
        false,
        vec![upsert(
            "tasks",
            task("x", "theirs"),
            &ver_all(&hlc(5, 0, 1)),
        )],
    ));
    assert_eq!(c.tasks("tasks")["x"]["title"], "theirs");
    assert_eq!(c.status()["pending"], 0);
    assert_eq!(c.changes()["changes"], json!([]));
}

#[test]
fn resync_required_drops_server_state_and_keeps_pending_writes() {
    let (c, mut s) = client_with(&["a", "b"]);
    c.exec("UPDATE tasks SET title = 'local b' WHERE id = 'b'");
    c.exec("INSERT INTO tasks (id, title) VALUES ('n', 'new')");
    assert!(c.try_text("SELECT sync_cursor()", None).unwrap().is_some());
    let mut p = page(1, "ignored", false, vec![]);
    p["resync_required"] = json!(true);
    let r = c.apply(&p);
    assert_eq!(r["resync_required"], true);
    assert_eq!(r["cursor"], Value::Null);
    assert_eq!(
        c.try_text("SELECT sync_cursor()", None).unwrap(),
        Some(sync_tests::device_cursor())
    );
    assert_eq!(c.int("SELECT count(*) FROM tasks_synced"), 0);
    let ids: Vec<String> = c.tasks("tasks").into_keys().collect();
    assert_eq!(ids, vec!["b".to_string(), "n".to_string()]);
    assert_eq!(c.status()["pending"], 2);
    // Pull again from scratch.
    s.write("a", obj(json!({"title": "a v2"})));
    c.apply(&s.pull(None));
    let view = c.tasks("tasks");
    assert_eq!(view["a"]["title"], "a v2");
    assert_eq!(view["b"]["title"], "local b");
    // The pending edit keeps the base it was made on.
    let b = c.changes();
    let ch = b["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["pk"]["id"] == "b")
        .unwrap()
        .clone();
    assert_eq!(ch["base"]["title"], json!(s.rows["b"].1[1]));
}

#[test]
fn a_newer_schema_migrates_in_place_and_keeps_pending_changes() {
    let (c, _s) = client_with(&["a", "b"]);
    c.exec("UPDATE tasks SET title = 'local a', estimate = 9.5 WHERE id = 'a'");
    c.exec("INSERT INTO tasks (id, title, estimate) VALUES ('n', 'new', 1.0)");
    // v2: `notes` added after title, `estimate` dropped, a new table.
    let mut v2 = tasks_schema(2);
    let cols = v2["tables"][0]["columns"].as_array_mut().unwrap();
    cols.retain(|c| c["name"] != "estimate");
    cols.insert(2, json!({"name": "notes", "type": "text"}));
    v2["tables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "tags_catalog", "pk": ["name"], "columns": [
            {"name": "name", "type": "text"}, {"name": "color", "type": "integer"}]}));
    let r = c.init(&v2);
    assert_eq!(r["changed"], true);
    assert_eq!(r["schema_version"], 2);
    assert_eq!(c.status()["schema_version"], 2);
    let cols: Vec<String> = c
        .rows("SELECT name FROM pragma_table_info('tasks')")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert!(cols.contains(&"notes".to_string()));
    assert!(!cols.contains(&"estimate".to_string()));
    assert_eq!(c.int("SELECT count(*) FROM tags_catalog"), 0);
    assert_eq!(
        c.rows("SELECT title FROM tasks WHERE id = 'a'"),
        vec![vec![json!("local a")]]
    );
    // Versions follow the new column order.
    let ver: Vec<String> = serde_json::from_str(
        &c.try_text(
            "SELECT sync_ver_json(_ver, 9) FROM tasks_synced WHERE id = 'b'",
            None,
        )
        .unwrap()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(ver.len(), 9);
    assert_eq!(
        ver[2], "0000000000000000",
        "the new column has no version yet"
    );
    // Pending changes survive, masks remapped by name.
    let b = c.changes();
    let ch = b["changes"].as_array().unwrap();
    let a = ch.iter().find(|x| x["pk"]["id"] == "a").unwrap();
    assert_eq!(a["cols"], json!({"title": "local a"}));
    let n = ch.iter().find(|x| x["pk"]["id"] == "n").unwrap();
    assert_eq!(n["op"], "insert");
    assert_eq!(n["cols"]["notes"], Value::Null);
    assert!(n["cols"].get("estimate").is_none());
    // New writes use the new columns.
    c.exec("UPDATE tasks SET notes = 'hello' WHERE id = 'b'");
    c.exec("INSERT INTO tags_catalog VALUES ('red', 1)");
    assert_eq!(
        c.int("SELECT count(*) FROM _changes WHERE mask = 4 AND pk = 'b'"),
        1
    );
    // Same or older schema: no-op.
    let before = c.snapshot();
    assert_eq!(c.init(&v2)["changed"], false);
    assert_eq!(c.init(&tasks_schema(1))["changed"], false);
    assert_eq!(c.snapshot(), before);

    // A page may carry a newer schema: applied first.
    let mut v3 = v2.clone();
    v3["version"] = json!(3);
    v3["tables"][1]["columns"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "rank", "type": "real"}));
    let mut p = page(
        3,
        "c9",
        false,
        vec![
            json!({"table": "tags_catalog", "op": "upsert", "pk": {"name": "blue"},
                     "row": {"name": "blue", "color": 2, "rank": 0.5},
                     "ver": ver_all(&hlc(9, 0, 1))[..3].to_vec()}),
        ],
    );
    p["schema"] = v3;
    c.apply(&p);
    assert_eq!(c.status()["schema_version"], 3);
    assert_eq!(
        c.rows("SELECT name, color, rank FROM tags_catalog ORDER BY name"),
        vec![
            vec![json!("blue"), json!(2), json!(0.5)],
            vec![json!("red"), json!(1), Value::Null],
        ]
    );
    // A page of another schema version without the schema is refused.
    let e = c
        .try_text(
            "SELECT sync_apply(?1)",
            Some(&page(4, "c10", false, vec![]).to_string()),
        )
        .unwrap_err();
    assert!(e.contains("schema version"), "{e}");
    // Dropping a table from the schema drops its objects and queued writes.
    let mut v5 = tasks_schema(5);
    v5["tables"][0] = c_tasks_table(&c);
    c.init(&v5);
    assert_eq!(
        c.int("SELECT count(*) FROM sqlite_master WHERE name LIKE 'tags_catalog%'"),
        0
    );
    assert_eq!(
        c.int("SELECT count(*) FROM _changes WHERE tbl = 'tags_catalog'"),
        0
    );
}

/// The `tasks` table definition as the client stores it.
fn c_tasks_table(c: &TestClient) -> Value {
    let s: Value = serde_json::from_str(
        &c.try_text("SELECT value FROM _sync_meta WHERE key = 'schema'", None)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    s["tables"][0].clone()
}

#[test]
fn confirmed_tables_show_only_accepted_state() {
    let c = TestClient::with_schema(&tasks_schema_mode(1, "confirmed"));
    let mut s = FakeServer::tasks();
    s.write("a", obj(task("a", "server a")));
    c.apply(&s.pull(None));
    assert_eq!(
        c.int("SELECT count(*) FROM sqlite_master WHERE name = 'tasks' AND type = 'view'"),
        1
    );
    c.exec("INSERT INTO tasks (id, title) VALUES ('b', 'mine')");
    c.exec("UPDATE tasks SET title = 'edited' WHERE id = 'a'");
    let shown = c.tasks("tasks");
    assert_eq!(shown.len(), 1, "not accepted yet");
    assert_eq!(shown["a"]["title"], "server a");
    let pending = c.tasks("tasks_pending");
    assert_eq!(pending["a"]["title"], "edited");
    assert_eq!(pending["b"]["title"], "mine");
    let b = c.changes();
    assert_eq!(b["changes"].as_array().unwrap().len(), 2);
    let r = s.push(&b, |ch| {
        if ch["pk"]["id"] == "b" {
            Verdict::Reject
        } else {
            Verdict::Apply
        }
    });
    c.ack(&r);
    let shown = c.tasks("tasks");
    assert_eq!(shown["a"]["title"], "edited");
    assert!(!shown.contains_key("b"));
    assert!(!c.tasks("tasks_pending").contains_key("b"));
    // Deletes through the view wait for the server as well.
    c.exec("DELETE FROM tasks WHERE id = 'a'");
    assert!(c.tasks("tasks").contains_key("a"));
    assert!(!c.tasks("tasks_pending").contains_key("a"));
    let b = c.changes();
    c.ack(&s.push(&b, |_| Verdict::Apply));
    assert!(!c.tasks("tasks").contains_key("a"));
}

#[test]
fn values_of_every_type_round_trip_exactly() {
    let c = TestClient::with_schema(&tasks_schema(1));
    let title = "Ünïcode ✓ \"quoted\" 'single' \\ back\nline\ttab";
    let data: Vec<u8> = (0..=255u8).collect();
    c.db.execute(
        "INSERT INTO tasks (id, title, done, priority, estimate, due, meta, tags, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        rusqlite::params![
            "k1",
            title,
            true,
            i64::MAX,
            0.1f64,
            "2026-06-30T23:59:59.123456+02:00",
            r#"{"a": [1, 2.5, null, true], "b": {"c": "d"}, "e": -0.0001}"#,
            r#"["x","y"]"#,
            data.clone()
        ],
    )
    .unwrap();
    c.db.execute(
        "INSERT INTO tasks (id, priority, estimate) VALUES ('k2', ?1, ?2)",
        rusqlite::params![i64::MIN, 1e-300f64],
    )
    .unwrap();
    c.exec("INSERT INTO tasks (id, done, estimate) VALUES ('k3', 0, -2.5)");
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let b = c.changes();
    let ch = b["changes"].as_array().unwrap();
    assert_eq!(
        ch[0]["cols"],
        json!({"id": "k1", "title": title, "done": true, "priority": i64::MAX,
               "estimate": 0.1, "due": "2026-06-30T23:59:59.123456+02:00",
               "meta": {"a": [1, 2.5, null, true], "b": {"c": "d"}, "e": -0.0001},
               "tags": ["x", "y"], "data": format!("\\x{hex}")})
    );
    assert_eq!(
        ch[1]["cols"],
        json!({"id": "k2", "title": null, "done": null, "priority": i64::MIN,
               "estimate": 1e-300, "due": null, "meta": null, "tags": null, "data": null})
    );
    assert_eq!(ch[2]["cols"]["done"], false);
    assert_eq!(ch[2]["cols"]["estimate"], -2.5);

    // The same wire values pulled by another client are stored identically.
    let other = TestClient::with_schema(&tasks_schema(1));
    let h = hlc(77, 0, 2);
    let changes: Vec<Value> = ch
        .iter()
        .map(|x| upsert("tasks", x["cols"].clone(), &ver_all(&h)))
        .collect();
    other.apply(&page(1, "c", false, changes));
    let q = "SELECT id, title, typeof(title), done, typeof(done), priority, typeof(priority),
                    estimate, typeof(estimate), due, json(meta), tags, data, typeof(data)
             FROM tasks ORDER BY id";
    assert_eq!(other.rows(q), c.rows(q));
    let exact = "SELECT estimate = 0.1, priority = 9223372036854775807, data = ?1 FROM tasks WHERE id = 'k1'";
    let row: (bool, bool, bool) = other
        .db
        .query_row(exact, [data.clone()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(row, (true, true, true));
    // And the round trip back out gives the same wire values.
    other.exec("UPDATE tasks SET priority = priority WHERE id = 'k1'");
    let t = other.tasks("tasks");
    assert_eq!(t["k1"], ch[0]["cols"]);
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let (c, mut s) = client_with(&["a", "b"]);
    c.exec("UPDATE tasks SET title = 'pending' WHERE id = 'a'");
    let inflight = c.changes();
    c.exec("UPDATE tasks SET title = 'unsent' WHERE id = 'b'");
    let good = s.push(&inflight, |_| Verdict::Apply);
    let before = c.snapshot();
    let mut wrong_table = good.clone();
    wrong_table["results"][0]["table"] = json!("other");
    let mut wrong_format = good.clone();
    wrong_format["format"] = json!(2);
    let h = hlc(5, 0, 1);
    // Pages of format 2 whose block is not the table's row: its columns in
    // another order (the version stamps would land on other columns), one
    // column missing, one twice.
    let block_page = |cols: Vec<&str>| {
        let row = task("z", "z");
        let mut vals: Vec<Value> = cols.iter().map(|c| row[*c].clone()).collect();
        vals.push(json!(vec![h.clone(); cols.len()]));
        json!({"format": 2, "schema_version": 1, "cursor": "x", "has_more": false,
               "changes": [{"table": "tasks", "op": "upsert", "cols": cols, "key": ["id"],
                            "rows": [vals]}]})
        .to_string()
    };
    let names: Vec<&str> = sync_tests::sqlite::TASK_COLS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let mut reordered = names.clone();
    reordered.swap(1, 2);
    let mut missing = names.clone();
    missing.pop();
    let mut twice = names.clone();
    twice[2] = "title";
    let cases: Vec<(&str, String, &str)> = vec![
        ("SELECT sync_apply(?1)", block_page(reordered), "in this order"),
        ("SELECT sync_apply(?1)", block_page(missing), "has 9 synced columns"),
        ("SELECT sync_apply(?1)", block_page(twice), "appears twice"),
        ("SELECT sync_init(?1)", "{not json".into(), "JSON"),
        (
            "SELECT sync_init(?1)",
            json!({"format": 2, "version": 9, "tables": []}).to_string(),
            "format",
        ),
        (
            "SELECT sync_init(?1)",
            json!({"format": 1, "version": 9, "tables": [
                {"name": "x", "pk": [], "columns": [{"name": "a", "type": "text"}]}]})
            .to_string(),
            "primary key",
        ),
        (
            "SELECT sync_init(?1)",
            json!({"format": 1, "version": 9, "tables": [
                {"name": "x", "pk": ["b"], "columns": [{"name": "a", "type": "text"}]}]})
            .to_string(),
            "primary key",
        ),
        (
            "SELECT sync_init(?1)",
            json!({"format": 1, "version": 9, "tables": [
                {"name": "x", "pk": ["a"], "columns": [{"name": "a", "type": "uuid7"}]}]})
            .to_string(),
            "JSON",
        ),
        (
            "SELECT sync_init(?1)",
            json!({"format": 1, "version": 9, "tables": [
                {"name": "x", "pk": ["a"], "columns": [{"name": "a", "type": "text"},
                                                      {"name": "a", "type": "text"}]}]})
            .to_string(),
            "twice",
        ),
        ("SELECT sync_apply(?1)", "{not json".into(), "JSON"),
        (
            "SELECT sync_apply(?1)",
            json!({"format": 9, "schema_version": 1, "cursor": "x", "has_more": false, "changes": []})
                .to_string(),
            "format",
        ),
        (
            "SELECT sync_apply(?1)",
            page(1, "x", false, vec![upsert("nope", task("z", "z"), &ver_all(&h))]).to_string(),
            "nope",
        ),
        (
            "SELECT sync_apply(?1)",
            page(
                1,
                "x",
                false,
                vec![
                    upsert("tasks", task("ok", "fine"), &ver_all(&h)),
                    upsert("tasks", json!({"id": "z", "colour": 1}), &ver_all(&h)),
                ],
            )
            .to_string(),
            "colour",
        ),
        (
            "SELECT sync_apply(?1)",
            page(1, "x", false, vec![upsert("tasks", task("z", "z"), std::slice::from_ref(&h))]).to_string(),
            "ver",
        ),
        (
            "SELECT sync_apply(?1)",
            page(
                1,
                "x",
                false,
                vec![upsert(
                    "tasks",
                    json!({"id": "z", "data": "not hex"}),
                    &ver_all(&h),
                )],
            )
            .to_string(),
            "data",
        ),
        (
            "SELECT sync_apply(?1)",
            page(1, "x", false, vec![json!({"table": "tasks", "op": "upsert", "pk": {"nid": "z"},
                                            "row": {"id": "z"}, "ver": ver_all(&h)})])
            .to_string(),
            "nid",
        ),
        (
            "SELECT sync_apply(?1)",
            page(7, "x", false, vec![]).to_string(),
            "schema version",
        ),
        ("SELECT sync_ack(?1)", "[]".into(), "JSON"),
        (
            "SELECT sync_ack(?1)",
            json!({"format": 1, "client_id": "someone-else", "results": []}).to_string(),
            "client",
        ),
        ("SELECT sync_ack(?1)", wrong_format.to_string(), "format"),
        ("SELECT sync_ack(?1)", wrong_table.to_string(), "table"),
        ("SELECT sync_changes(?1)", "many".into(), "integer"),
        ("SELECT sync_changes(?1)", "0".into(), "at least 1"),
        ("SELECT sync_pending('nope', ?1)", "a".into(), "nope"),
    ];
    for (sql, arg, expect) in &cases {
        let e = c.try_text(sql, Some(arg)).unwrap_err();
        assert!(
            e.to_lowercase().contains(&expect.to_lowercase()),
            "{sql} with {arg}: error {e:?} does not mention {expect:?}"
        );
        assert_eq!(c.snapshot(), before, "{sql} with {arg} changed something");
    }
    for sql in [
        "SELECT sync_init(NULL)",
        "SELECT sync_apply(NULL)",
        "SELECT sync_ack(NULL)",
        "SELECT sync_apply(42)",
    ] {
        let e = c.try_text(sql, None).unwrap_err();
        assert!(e.contains("must"), "{sql}: {e}");
    }
    assert_eq!(c.snapshot(), before);
    // Still fully usable afterwards.
    assert_eq!(c.ack(&good)["confirmed"], 1);
    // The same block in the schema's order is the server's row.
    let r = c.call("SELECT sync_apply(?1)", Some(&block_page(names)));
    assert_eq!(r["upserts"], 1, "{r}");
    assert_eq!(
        c.rows("SELECT title FROM tasks WHERE id = 'z'"),
        vec![vec![json!("z")]]
    );
}

#[test]
fn functions_work_inside_an_application_transaction() {
    let (c, _s) = client_with(&["a"]);
    // A failing sync_apply rolls back only its own work.
    c.exec("BEGIN; INSERT INTO tasks (id, title) VALUES ('mine', 'kept')");
    let e = c
        .try_text("SELECT sync_apply(?1)", Some("{broken"))
        .unwrap_err();
    assert!(e.contains("JSON"));
    c.exec("COMMIT");
    assert!(c.tasks("tasks").contains_key("mine"));
    // A rolled-back app transaction undoes a sync_apply made inside it.
    let before = c.tasks("tasks");
    c.exec("BEGIN");
    c.apply(&page(
        1,
        "c2",
        false,
        vec![upsert("tasks", task("x", "x"), &ver_all(&hlc(9, 0, 1)))],
    ));
    c.exec("ROLLBACK");
    assert_eq!(c.tasks("tasks"), before);
}

#[test]
fn composite_and_integer_keys() {
    let schema = json!({"format": 1, "version": 1, "tables": [
        {"name": "cells", "pk": ["sheet", "pos", "raw"], "columns": [
            {"name": "sheet", "type": "text"}, {"name": "pos", "type": "integer"},
            {"name": "raw", "type": "blob"}, {"name": "v", "type": "real"}]},
        {"name": "nums", "pk": ["n"], "columns": [
            {"name": "n", "type": "integer"}, {"name": "label", "type": "text"},
            {"name": "counter", "type": "integer", "strategy": "counter"}]}]});
    let c = TestClient::with_schema(&schema);
    let h = hlc(3, 0, 1);
    c.apply(&page(
        1,
        "c1",
        false,
        vec![
            json!({"table": "cells", "op": "upsert", "pk": {"sheet": "s", "pos": 1, "raw": "\\x01"},
                   "row": {"sheet": "s", "pos": 1, "raw": "\\x01", "v": 1.5}, "ver": [h, h, h, h]}),
            json!({"table": "nums", "op": "upsert", "pk": {"n": 7},
                   "row": {"n": 7, "label": "seven", "counter": 10}, "ver": [h, h, h]}),
        ],
    ));
    c.exec("UPDATE cells SET v = 2.5 WHERE sheet = 's' AND pos = 1");
    c.exec("INSERT INTO cells VALUES ('s', 2, x'ff00', 3.0)");
    c.exec("UPDATE nums SET counter = counter + 5 WHERE n = 7");
    assert_eq!(
        c.pending("cells", r#"{"sheet": "s", "pos": 1, "raw": "\\x01"}"#),
        1
    );
    assert_eq!(c.pending("nums", "7"), 1);
    assert_eq!(c.pending("nums", r#"{"n": 7}"#), 1);
    let e = c
        .try_text("SELECT sync_pending('cells', 's')", None)
        .unwrap_err();
    assert!(e.contains("composite"), "{e}");
    let b = c.changes();
    let ch = b["changes"].as_array().unwrap();
    assert_eq!(ch[0]["pk"], json!({"sheet": "s", "pos": 1, "raw": "\\x01"}));
    assert_eq!(ch[0]["cols"], json!({"v": 2.5}));
    assert_eq!(ch[1]["op"], "insert");
    assert_eq!(
        ch[1]["pk"],
        json!({"sheet": "s", "pos": 2, "raw": "\\xff00"})
    );
    assert_eq!(ch[2]["pk"], json!({"n": 7}));
    assert_eq!(ch[2]["cols"], json!({"counter": 15}));
    assert_eq!(ch[2]["base_values"], json!({"counter": 10}));
    let local = c.rows("SELECT sheet, pos, raw, _mask FROM cells_local ORDER BY pos");
    assert_eq!(local.len(), 2);
    assert_eq!(local[0][3], json!(8));
    // Confirm: the server echoes the rows.
    let results: Vec<Value> = ch
        .iter()
        .map(|x| {
            let row = match x["table"].as_str().unwrap() {
                "cells" if x["op"] == "insert" => x["cols"].clone(),
                "cells" => json!({"sheet": "s", "pos": 1, "raw": "\\x01", "v": 2.5}),
                _ => json!({"n": 7, "label": "seven", "counter": 15}),
            };
            let n = row.as_object().unwrap().len();
            json!({"seq": x["seq"], "table": x["table"], "pk": x["pk"], "status": "applied",
                   "row": row, "ver": vec![hlc(4, 0, 9); n]})
        })
        .collect();
    let r = c.ack(&json!({"format": 1, "client_id": b["client_id"], "results": results}));
    assert_eq!(r["confirmed"], 3);
    assert_eq!(c.status()["pending"], 0);
    assert_eq!(
        c.rows("SELECT sheet, pos, hex(raw), v FROM cells ORDER BY pos"),
        vec![
            vec![json!("s"), json!(1), json!("01"), json!(2.5)],
            vec![json!("s"), json!(2), json!("FF00"), json!(3.0)],
        ]
    );
}

#[test]
fn identifiers_are_quoted() {
    let schema = json!({"format": 1, "version": 1, "tables": [
        {"name": "odd \"table\" name", "pk": ["key col"], "columns": [
            {"name": "key col", "type": "text"}, {"name": "select", "type": "integer"},
            {"name": "it's", "type": "text"}]}]});
    let c = TestClient::with_schema(&schema);
    c.exec(
        r#"INSERT INTO "odd ""table"" name" ("key col", "select", "it's") VALUES ('k', 1, 'v')"#,
    );
    c.exec(r#"UPDATE "odd ""table"" name" SET "select" = 2 WHERE "key col" = 'k'"#);
    let b = c.changes();
    let ch = &b["changes"][0];
    assert_eq!(ch["table"], "odd \"table\" name");
    assert_eq!(
        ch["cols"],
        json!({"key col": "k", "select": 2, "it's": "v"})
    );
    assert_eq!(c.pending("odd \"table\" name", "k"), 1);
    let h = hlc(1, 0, 1);
    c.apply(&page(
        1,
        "c",
        false,
        vec![
            json!({"table": "odd \"table\" name", "op": "upsert", "pk": {"key col": "z"},
                    "row": {"key col": "z", "select": 5, "it's": "w"}, "ver": [h, h, h]}),
        ],
    ));
    assert_eq!(
        c.rows(r#"SELECT "key col", "select", "it's" FROM "odd ""table"" name" ORDER BY 1"#),
        vec![
            vec![json!("k"), json!(2), json!("v")],
            vec![json!("z"), json!(5), json!("w")],
        ]
    );
    assert_eq!(
        c.int(r#"SELECT count(*) FROM "odd ""table"" name_local""#),
        1
    );
}

const LOCAL_SPEC: &str =
    r#"{"columns": {"tasks": {"local_notes": "TEXT", "starred": "INTEGER DEFAULT 0"}}}"#;

/// `sync_init(schema, local)`; `Err` carries SQLite's message.
fn init_local(c: &TestClient, schema: &Value, local: Option<&str>) -> Result<Value, String> {
    c.db.query_row(
        "SELECT sync_init(?1, ?2)",
        rusqlite::params![schema.to_string(), local],
        |r| r.get::<_, String>(0),
    )
    .map(|s| serde_json::from_str(&s).unwrap())
    .map_err(|e| e.to_string())
}

/// A client with the local spec holding server rows `ids` (pulled, clean).
fn client_with_local(ids: &[&str]) -> (TestClient, FakeServer) {
    let c = TestClient::new();
    init_local(&c, &tasks_schema(1), Some(LOCAL_SPEC)).unwrap();
    let mut s = FakeServer::tasks();
    for id in ids {
        s.write(id, obj(task(id, &format!("server {id}"))));
    }
    c.apply(&s.pull(None));
    (c, s)
}

fn table_cols(c: &TestClient, table: &str) -> Vec<String> {
    c.rows(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

fn local_vals(c: &TestClient, id: &str) -> Vec<Vec<Value>> {
    c.rows(&format!(
        "SELECT local_notes, starred FROM tasks WHERE id = '{id}'"
    ))
}

#[test]
fn local_columns_exist_and_are_never_pushed() {
    let (c, mut s) = client_with_local(&["a", "b"]);
    let cols = table_cols(&c, "tasks");
    assert!(cols.contains(&"local_notes".to_string()));
    assert!(cols.contains(&"starred".to_string()));
    assert!(!table_cols(&c, "tasks_synced").contains(&"local_notes".to_string()));
    // Pulled rows get the default.
    assert_eq!(local_vals(&c, "a"), vec![vec![Value::Null, json!(0)]]);
    // A write of local columns only queues nothing.
    c.exec("UPDATE tasks SET local_notes = 'mine', starred = 1 WHERE id = 'a'");
    assert!(changes_rows(&c).is_empty());
    assert_eq!(c.pending("tasks", "a"), 0);
    assert_eq!(c.changes()["changes"], json!([]));
    // Mixed writes push only the synced columns.
    c.exec("UPDATE tasks SET title = 'x', starred = 2 WHERE id = 'b'");
    c.exec("INSERT INTO tasks (id, title, local_notes, starred) VALUES ('n', 'new', 'ln', 5)");
    let b = c.changes();
    let text = b.to_string();
    assert!(
        !text.contains("local_notes") && !text.contains("starred"),
        "{text}"
    );
    let ch = b["changes"].as_array().unwrap();
    assert_eq!(ch.len(), 2);
    let bc = ch.iter().find(|x| x["pk"]["id"] == "b").unwrap();
    assert_eq!(bc["cols"], json!({"title": "x"}));
    let r = s.push(&b, |_| Verdict::Apply);
    c.ack(&r);
    assert_eq!(local_vals(&c, "b"), vec![vec![Value::Null, json!(2)]]);
    assert_eq!(local_vals(&c, "n"), vec![vec![json!("ln"), json!(5)]]);
    assert_eq!(local_vals(&c, "a"), vec![vec![json!("mine"), json!(1)]]);
}

#[test]
fn pulls_and_rejections_keep_local_values() {
    let (c, mut s) = client_with_local(&["a", "b", "d"]);
    c.exec("UPDATE tasks SET local_notes = 'keep a', starred = 1 WHERE id IN ('a', 'b', 'd')");
    // A pull updating clean row a keeps its local values.
    s.write("a", obj(json!({"title": "server changed"})));
    let cursor = c.try_text("SELECT sync_cursor()", None).unwrap();
    c.apply(&s.pull(cursor.as_deref()));
    assert_eq!(
        c.rows("SELECT title, local_notes, starred FROM tasks WHERE id = 'a'"),
        vec![vec![json!("server changed"), json!("keep a"), json!(1)]]
    );
    // A pull under a pending write (rebase) keeps them too.
    c.exec("UPDATE tasks SET priority = 7 WHERE id = 'd'");
    s.write("d", obj(json!({"title": "server d"})));
    let cursor = c.try_text("SELECT sync_cursor()", None).unwrap();
    c.apply(&s.pull(cursor.as_deref()));
    assert_eq!(
        c.rows("SELECT title, priority, local_notes, starred FROM tasks WHERE id = 'd'"),
        vec![vec![json!("server d"), json!(7), json!("keep a"), json!(1)]]
    );
    // A rejected update and a rejected delete roll back, keeping them.
    c.exec("UPDATE tasks SET title = 'doomed' WHERE id = 'b'");
    c.exec("DELETE FROM tasks WHERE id = 'd'");
    let b = c.changes();
    let r = s.push(&b, |_| Verdict::Reject);
    let out = c.ack(&r);
    assert_eq!(out["rejected"], 2);
    assert_eq!(
        c.rows("SELECT title, local_notes, starred FROM tasks WHERE id = 'b'"),
        vec![vec![json!("server b"), json!("keep a"), json!(1)]]
    );
    assert_eq!(c.int("SELECT count(*) FROM tasks WHERE id = 'd'"), 1);
    assert!(changes_rows(&c).is_empty());
    // An accepted change with a server row keeps them as well.
    c.exec("UPDATE tasks SET title = 'ok' WHERE id = 'b'");
    let b = c.changes();
    c.ack(&s.push(&b, |_| Verdict::Apply));
    assert_eq!(
        c.rows("SELECT title, local_notes FROM tasks WHERE id = 'b'"),
        vec![vec![json!("ok"), json!("keep a")]]
    );
}

#[test]
fn local_columns_survive_migrations_and_reinit() {
    let (c, _s) = client_with_local(&["a"]);
    c.exec("UPDATE tasks SET local_notes = 'n', starred = 3 WHERE id = 'a'");
    // Same schema, no second argument: nothing changes.
    let r = c.init(&tasks_schema(1));
    assert_eq!(r["changed"], false);
    // Same spec again: idempotent.
    init_local(&c, &tasks_schema(1), Some(LOCAL_SPEC)).unwrap();
    assert_eq!(local_vals(&c, "a"), vec![vec![json!("n"), json!(3)]]);
    // Newer schema through sync_init, without the second argument.
    let mut v2 = tasks_schema(2);
    v2["tables"][0]["columns"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "notes", "type": "text"}));
    assert_eq!(c.init(&v2)["changed"], true);
    assert_eq!(local_vals(&c, "a"), vec![vec![json!("n"), json!(3)]]);
    // A migration through a pull page that drops a synced column.
    let mut v3 = v2.clone();
    v3["version"] = json!(3);
    v3["tables"][0]["columns"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] != "estimate");
    let mut p = page(3, "c3", false, vec![]);
    p["schema"] = v3;
    c.apply(&p);
    assert_eq!(local_vals(&c, "a"), vec![vec![json!("n"), json!(3)]]);
    c.exec("UPDATE tasks SET starred = 4 WHERE id = 'a'");
    assert!(changes_rows(&c).is_empty());
    // A later spec adds columns; the old ones stay.
    init_local(
        &c,
        &tasks_schema(1),
        Some(r#"{"columns": {"tasks": {"color": "TEXT DEFAULT 'red'"}}}"#),
    )
    .unwrap();
    assert_eq!(
        c.rows("SELECT local_notes, starred, color FROM tasks WHERE id = 'a'"),
        vec![vec![json!("n"), json!(4), json!("red")]]
    );
    let stored: Value = serde_json::from_str(
        &c.try_text("SELECT value FROM _sync_meta WHERE key = 'local'", None)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored,
        json!({"tasks": {"local_notes": "TEXT", "starred": "INTEGER DEFAULT 0",
                         "color": "TEXT DEFAULT 'red'"}})
    );
    // A newer schema that adds a synced column named like a local one takes
    // the local column over (its values become synced, it leaves the spec).
    let mut v4 = tasks_schema(4);
    v4["tables"][0]["columns"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "starred", "type": "integer"}));
    assert_eq!(c.init(&v4)["changed"], true);
    assert_eq!(local_vals(&c, "a"), vec![vec![json!("n"), json!(4)]]);
    c.exec("UPDATE tasks SET starred = 5, local_notes = 'm' WHERE id = 'a'");
    assert_eq!(c.changes()["changes"][0]["cols"], json!({"starred": 5}));
    assert!(!c
        .try_text("SELECT value FROM _sync_meta WHERE key = 'local'", None)
        .unwrap()
        .unwrap()
        .contains("starred"));
}

#[test]
fn a_bad_local_spec_is_a_clear_error_and_changes_nothing() {
    // On a fresh database: nothing is created.
    let fresh = TestClient::new();
    let e = init_local(&fresh, &tasks_schema(1), Some("{nope")).unwrap_err();
    assert!(e.contains("invalid local spec: malformed JSON"), "{e}");
    assert_eq!(fresh.int("SELECT count(*) FROM sqlite_master"), 0);
    let (c, _s) = client_with_local(&["a"]);
    let before = c.snapshot();
    let cases: Vec<(&str, &str)> = vec![
        ("{nope", "malformed JSON"),
        ("[]", "expected a JSON object"),
        (r#"{"cols": {}}"#, "unknown key"),
        (r#"{"columns": []}"#, "must be an object"),
        (
            r#"{"columns": {"other": {"x": "TEXT"}}}"#,
            "not a synced table",
        ),
        (r#"{"columns": {"tasks": []}}"#, "must be an object"),
        (
            r#"{"columns": {"tasks": {"title": "TEXT"}}}"#,
            "synced column",
        ),
        (
            r#"{"columns": {"tasks": {"TITLE": "TEXT"}}}"#,
            "synced column",
        ),
        (r#"{"columns": {"tasks": {"x": 1}}}"#, "must be a string"),
        (
            r#"{"columns": {"tasks": {"x": "TEXT; DROP TABLE tasks"}}}"#,
            "may not contain",
        ),
        (
            r#"{"columns": {"tasks": {"x": "TEXT NOT NULL"}}}"#,
            "cannot add local column",
        ),
        (
            r#"{"columns": {"tasks": {"ok": "TEXT", "y": "BOGUS((("}}}"#,
            "cannot add local column",
        ),
    ];
    for (spec, want) in cases {
        let e = init_local(&c, &tasks_schema(1), Some(spec)).unwrap_err();
        assert!(e.contains(want), "{spec}: {e}");
        assert_eq!(c.snapshot(), before, "{spec} changed something");
        assert!(!table_cols(&c, "tasks").contains(&"ok".to_string()));
    }
    let e =
        c.db.query_row(
            "SELECT sync_init(?1, 5)",
            [tasks_schema(1).to_string()],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("local must be text"), "{e}");
}

#[test]
fn app_tables_outside_the_schema_are_never_touched() {
    let (c, mut s) = client_with(&["a"]);
    c.exec(
        "CREATE TABLE drafts(id TEXT PRIMARY KEY, body TEXT);
         INSERT INTO drafts VALUES ('a', 'draft a'), ('z', 'draft z');",
    );
    let drafts = c.rows("SELECT * FROM drafts ORDER BY id");
    c.exec("UPDATE drafts SET body = 'edited' WHERE id = 'z'");
    c.exec("UPDATE tasks SET title = 'x' WHERE id = 'a'");
    let b = c.changes();
    assert!(!b.to_string().contains("drafts"));
    assert_eq!(b["changes"].as_array().unwrap().len(), 1);
    c.ack(&s.push(&b, |_| Verdict::Apply));
    s.write("a", obj(json!({"title": "server"})));
    s.remove("a");
    let cursor = c.try_text("SELECT sync_cursor()", None).unwrap();
    c.apply(&s.pull(cursor.as_deref()));
    let mut resync = page(1, "c9", false, vec![]);
    resync["resync_required"] = json!(true);
    c.apply(&resync);
    assert_eq!(
        c.rows("SELECT * FROM drafts ORDER BY id"),
        vec![drafts[0].clone(), vec![json!("z"), json!("edited")]]
    );
    let e = c
        .try_text(
            "SELECT sync_apply(?1)",
            Some(
                &page(
                    1,
                    "c",
                    false,
                    vec![upsert("drafts", json!({"id": "a"}), &[])],
                )
                .to_string(),
            ),
        )
        .unwrap_err();
    assert!(e.contains("is not synced"), "{e}");
    assert_eq!(
        c.int("SELECT count(*) FROM _changes WHERE tbl = 'drafts'"),
        0
    );
}

/// The FakeServer's answer as a schema-aware server gives it: `columns`
/// names the server's columns; `extra` (absent on the device) is added to
/// every row, and `drop` (present on the device) is left out.
fn with_columns(result: &Value, extra: Option<&str>, drop: Option<&str>) -> Value {
    let mut r = result.clone();
    let mut cols: Vec<String> = sync_tests::sqlite::TASK_COLS
        .iter()
        .map(|c| c.0.to_string())
        .collect();
    let drop_at = drop.and_then(|d| cols.iter().position(|c| c == d));
    if let Some(i) = drop_at {
        cols.remove(i);
    }
    if let Some(x) = extra {
        cols.push(x.to_string());
    }
    for res in r["results"].as_array_mut().unwrap() {
        let Some(row) = res.get_mut("row").and_then(|v| v.as_object_mut()) else {
            continue;
        };
        if let Some(d) = drop {
            row.remove(d);
        }
        if let Some(x) = extra {
            row.insert(x.to_string(), json!(7));
        }
        let ver = res["ver"].as_array_mut().unwrap();
        if let Some(i) = drop_at {
            ver.remove(i);
        }
        if extra.is_some() {
            let last = ver[0].clone();
            ver.push(last);
        }
    }
    r["columns"] = json!({"tasks": cols});
    r
}

#[test]
fn ack_adopts_the_servers_row_by_column_name() {
    // The server is ahead (a column the device does not know yet).
    let (c, mut s) = client_with(&["a"]);
    c.exec("UPDATE tasks SET title = 'local a' WHERE id = 'a'");
    c.exec("INSERT INTO tasks (id, title) VALUES ('n', 'new')");
    let batch = c.changes();
    let result = with_columns(&s.push(&batch, |_| Verdict::Apply), Some("prio"), None);
    assert_eq!(c.ack(&result)["confirmed"], 2);
    assert_eq!(c.status()["pending"], 0);
    assert_eq!(c.tasks("tasks")["a"]["title"], "local a");
    assert_eq!(c.tasks("tasks")["n"]["title"], "new");
    // The server is behind (or dropped a column the device still has):
    // the device keeps what it holds for that column.
    c.exec("UPDATE tasks SET title = 'again', priority = 3 WHERE id = 'a'");
    let batch = c.changes();
    let mut result = with_columns(&s.push(&batch, |_| Verdict::Apply), None, Some("priority"));
    result["results"][0]["ignored"] = json!(["priority"]);
    assert_eq!(c.ack(&result)["confirmed"], 1);
    let a = &c.tasks("tasks")["a"];
    assert_eq!(a["title"], "again");
    assert_eq!(c.status()["pending"], 0);
    // A `ver` that does not match `columns` is malformed.
    c.exec("UPDATE tasks SET title = 'bad' WHERE id = 'a'");
    let batch = c.changes();
    let mut result = with_columns(&s.push(&batch, |_| Verdict::Apply), None, None);
    result["results"][0]["ver"].as_array_mut().unwrap().pop();
    let before = c.snapshot();
    let e = c
        .try_text("SELECT sync_ack(?1)", Some(&result.to_string()))
        .unwrap_err();
    assert!(
        e.contains("ver has 8 entries but the result names 9 columns"),
        "{e}"
    );
    assert_eq!(c.snapshot(), before);
}

#[test]
fn an_insert_sends_only_the_columns_it_wrote() {
    let c = TestClient::with_schema(&tasks_schema(1));
    c.exec("INSERT INTO tasks (id, title) VALUES ('n', 'new')");
    // A column added by a newer schema is not the device's write.
    let mut schema = tasks_schema(2);
    schema["tables"][0]["columns"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "prio", "type": "integer"}));
    c.init(&schema);
    let batch = c.changes();
    let ch = &batch["changes"][0];
    assert_eq!(ch["op"], "insert");
    assert!(ch["cols"].get("prio").is_none(), "{ch}");
    assert!(ch["cols"].get("title").is_some(), "{ch}");
    assert!(
        ch["cols"].get("done").is_some(),
        "{ch}: written (NULL) at insert time"
    );
    assert_eq!(
        c.rows("SELECT _mask & (1 << 9) FROM tasks_local WHERE id = 'n'"),
        vec![vec![json!(0)]]
    );
    // A pull of the row (the answer to a push was lost) gives the new
    // column the server's value; the written ones stay on top.
    let row = json!({"id": "n", "title": "theirs", "prio": 7});
    c.apply(&page(
        2,
        "c9",
        false,
        vec![upsert("tasks", row, &vec![hlc(5, 0, 1); 10])],
    ));
    assert_eq!(
        c.rows("SELECT title, prio FROM tasks WHERE id = 'n'"),
        vec![vec![json!("new"), json!(7)]]
    );
    // Written after the migration, the column is the device's.
    c.exec("UPDATE tasks SET prio = 8 WHERE id = 'n'");
    let fresh = c.changes();
    assert_eq!(fresh, batch, "the stored batch is sent again");
}

#[test]
fn a_stored_answer_after_a_pull_keeps_the_pulled_state_and_the_counter_delta() {
    // A counter column, incremented locally; the batch's answer is lost,
    // another client's increment arrives by a pull, the device increments
    // again; then the retried push gets the stored answer (no row).
    let mut schema = tasks_schema(1);
    schema["tables"][0]["columns"][3]["strategy"] = json!("counter");
    let c = TestClient::with_schema(&schema);
    let h0 = hlc(5, 0, 1);
    c.apply(&page(
        1,
        "c1",
        false,
        vec![upsert(
            "tasks",
            json!({"id": "a", "priority": 10}),
            &ver_all(&h0),
        )],
    ));
    c.exec("UPDATE tasks SET priority = priority + 1 WHERE id = 'a'");
    let batch = c.changes();
    let ch = batch["changes"][0].clone();
    assert_eq!(ch["base_values"]["priority"], 10);
    // The server applied it (11), then another client's +1 (12).
    let mut ver = ver_all(&h0);
    let stamp: sync_core::Hlc = ch["ver"]["priority"].as_str().unwrap().parse().unwrap();
    ver[3] = stamp.next_with_tag(2).to_string();
    c.apply(&page(
        1,
        "c2",
        false,
        vec![upsert("tasks", json!({"id": "a", "priority": 12}), &ver)],
    ));
    c.exec("UPDATE tasks SET priority = priority + 1 WHERE id = 'a'");
    // The stored answer, without a row.
    let result = json!({"format": 1, "client_id": batch["client_id"], "results": [
        {"seq": ch["seq"], "table": "tasks", "pk": {"id": "a"}, "status": "merged"}]});
    c.ack(&result);
    // The device shows the server's 12 plus its own pending +1.
    assert_eq!(c.tasks("tasks")["a"]["priority"], 12);
    assert_eq!(
        c.rows("SELECT priority FROM tasks_synced"),
        vec![vec![json!(12)]]
    );
    // The next change adds exactly the second increment: base is what the
    // first change carried (11), the value 12.
    let next = c.changes();
    let ch2 = &next["changes"][0];
    assert_eq!(ch2["cols"]["priority"], 12, "{ch2}");
    assert_eq!(ch2["base_values"]["priority"], 11, "{ch2}");
    assert_eq!(c.status()["pending"], 1);
}

#[test]
fn a_changed_primary_key_creates_the_table_again_and_resyncs() {
    let (c, _s) = client_with(&["a", "b"]);
    c.exec("UPDATE tasks SET title = 'local' WHERE id = 'a'");
    c.exec("INSERT INTO tasks (id, title) VALUES ('n', 'new')");
    let schema = json!({"format": 1, "version": 2, "tables": [
        {"name": "tasks", "pk": ["id", "title"], "columns": [
            {"name": "id", "type": "text", "nullable": false},
            {"name": "title", "type": "text", "nullable": false}]}]});
    let r = c.apply(&json!({"format": 1, "schema_version": 2, "schema": schema,
        "cursor": "c9", "has_more": false,
        "changes": [{"table": "tasks", "op": "upsert", "pk": {"id": "a", "title": "t"},
                     "row": {"id": "a", "title": "t"}, "ver": [hlc(9, 0, 1), hlc(9, 0, 1)]}]}));
    // The page's rows wait for the pull from scratch.
    assert_eq!(r["resync_required"], true, "{r}");
    assert_eq!(r["has_more"], true, "{r}");
    assert_eq!(
        c.try_text("SELECT sync_cursor()", None).unwrap(),
        Some(sync_tests::device_cursor())
    );
    assert_eq!(c.int("SELECT count(*) FROM tasks"), 0);
    assert_eq!(c.status()["pending"], 0);
    // The dropped writes are reported.
    assert_eq!(
        c.rows("SELECT pk, op, constraint_name FROM _sync_errors ORDER BY pk"),
        vec![
            vec![
                json!("{\"id\":\"a\"}"),
                json!("update"),
                json!("key_mismatch")
            ],
            vec![
                json!("{\"id\":\"n\"}"),
                json!("insert"),
                json!("key_mismatch")
            ],
        ]
    );
    // The table works with its new key.
    c.exec("INSERT INTO tasks (id, title) VALUES ('a', 'x'), ('a', 'y')");
    let batch = c.changes();
    assert_eq!(batch["changes"][1]["pk"], json!({"id": "a", "title": "y"}));
}

/// A page of many changes maps the file for the call only: an app
/// trigger sees the map during the apply, the app's `mmap_size` is back
/// afterwards, also when the page is refused (and then nothing changed); a
/// small page, or `apply_mmap` = 0 in `_sync_meta`, maps nothing.
#[test]
fn a_big_apply_maps_the_file_for_the_call_only() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let path = std::env::temp_dir().join(format!("pg_sync_mmap_{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let c = TestClient {
        db: sync_tests::sqlite::open(&path),
    };
    c.init(&tasks_schema(1));
    // The largest map an app trigger saw during a write.
    let seen = Arc::new(AtomicI64::new(-1));
    let s2 = seen.clone();
    c.db.create_scalar_function(
        "probe_mmap",
        0,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8,
        move |ctx| {
            // SAFETY: the connection is only read, within this call.
            let conn = unsafe { ctx.get_connection()? };
            let v: i64 = conn.query_row("PRAGMA main.mmap_size", [], |r| r.get(0))?;
            s2.fetch_max(v, Ordering::SeqCst);
            Ok(v)
        },
    )
    .unwrap();
    c.exec(
        "CREATE TRIGGER probe_ins AFTER INSERT ON tasks BEGIN SELECT probe_mmap(); END;
         CREATE TRIGGER probe_upd AFTER UPDATE ON tasks BEGIN SELECT probe_mmap(); END;
         PRAGMA mmap_size = 4096;",
    );
    let mmap = |c: &TestClient| c.int("PRAGMA main.mmap_size");
    let h = hlc(1, 0, 1);
    let rows = |title: &str| -> Vec<Value> {
        (0..1500)
            .map(|i| upsert("tasks", task(&format!("r{i:04}"), title), &ver_all(&h)))
            .collect()
    };
    let out = c.apply(&page(1, "c1", false, rows("first")));
    assert_eq!(out["upserts"], 1500);
    assert_eq!(seen.swap(-1, Ordering::SeqCst), 1 << 30);
    assert_eq!(mmap(&c), 4096);
    // A refused big page: nothing changes, and the setting is back.
    let mut bad = rows("second");
    bad.push(upsert("no_such_table", task("x", "x"), &ver_all(&h)));
    let err = c
        .try_text(
            "SELECT sync_apply(?1)",
            Some(&page(1, "c2", false, bad).to_string()),
        )
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    assert_eq!(mmap(&c), 4096);
    assert_eq!(
        c.int("SELECT count(*) FROM tasks WHERE title = 'first'"),
        1500
    );
    // A small page.
    seen.store(-1, Ordering::SeqCst);
    c.apply(&page(1, "c3", false, rows("third")[..10].to_vec()));
    assert_eq!(seen.load(Ordering::SeqCst), 4096);
    assert_eq!(mmap(&c), 4096);
    assert_eq!(
        c.int("SELECT count(*) FROM tasks WHERE title = 'third'"),
        10
    );
    // The app turned the map off for applies.
    c.exec("INSERT OR REPLACE INTO _sync_meta(key, value) VALUES ('apply_mmap', 0)");
    seen.store(-1, Ordering::SeqCst);
    let out = c.apply(&page(1, "c4", false, rows("fourth")));
    assert_eq!(out["upserts"], 1500);
    assert_eq!(seen.load(Ordering::SeqCst), 4096);
    assert_eq!(mmap(&c), 4096);
    drop(c);
    let _ = std::fs::remove_file(&path);
}

/// One page that updates rows the device holds and inserts rows it lacks,
/// in any order (existing rows are updated in place until the first
/// missing row): every row ends as the server's, and nothing is queued.
#[test]
fn a_page_of_updates_and_inserts_in_any_order() {
    // Applied in key order: "a" is updated, "b" is missing (the switch).
    let (c, _s) = client_with(&["a", "c"]);
    let h = hlc(5, 0, 1);
    let ids = ["c", "b", "a", "d"];
    let rows: Vec<Value> = ids
        .iter()
        .map(|id| upsert("tasks", task(id, &format!("new {id}")), &ver_all(&h)))
        .collect();
    let out = c.apply(&page(1, "c9", false, rows));
    assert_eq!(out["upserts"], 4);
    assert_eq!(
        c.rows("SELECT id, title FROM tasks ORDER BY id"),
        vec![
            vec![json!("a"), json!("new a")],
            vec![json!("b"), json!("new b")],
            vec![json!("c"), json!("new c")],
            vec![json!("d"), json!("new d")],
        ]
    );
    assert!(changes_rows(&c).is_empty());
}
