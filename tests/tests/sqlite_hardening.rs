//! The SQLite client against the findings of security review issue 9:
//!
//! 1. an object named `sync_clock` never makes a write silently not
//!    captured, and synced tables cannot take the names the client reserves;
//! 2. identifiers and documents have bounded sizes;
//! 3. a pull page (or push result) whose values contradict the schema is
//!    malformed and changes nothing;
//! 4. values are stored and sent exactly (numeric, bigint, -0.0, NaN,
//!    timestamps, text in every plane), and a device built by the previous
//!    layout is upgraded in place.
//!
//! Needs `cargo build --manifest-path sqlite_sync/Cargo.toml` first (the tests load the library).

use std::time::{Duration, Instant};

/// The device layout this build writes (`schema/ddl.rs` `LAYOUT`).
const LAYOUT: i64 = 5;

use serde_json::{json, Value};
use sync_tests::sqlite::{hlc, page, tasks_schema, upsert, ver_all, TestClient};

fn err_of(c: &TestClient, sql: &str, arg: &str) -> String {
    match c.try_text(sql, Some(arg)) {
        Ok(v) => panic!("{sql} succeeded: {v:?}"),
        Err(e) => e,
    }
}

fn schema_with(tables: Vec<Value>) -> Value {
    json!({"format": 1, "version": 1, "tables": tables})
}

fn table(name: &str) -> Value {
    json!({"name": name, "pk": ["id"], "columns": [
        {"name": "id", "type": "text", "nullable": false}, {"name": "v", "type": "text"}]})
}

fn queued(c: &TestClient) -> i64 {
    c.int("SELECT count(*) FROM _changes WHERE op <> 'mark'")
}

// ---------------------------------------------------------------------------
// 1. sync_clock and reserved names

#[test]
fn an_app_object_named_sync_clock_before_init_is_refused() {
    for ddl in [
        "CREATE TABLE sync_clock(hlc INTEGER, x)",
        "CREATE TABLE SYNC_CLOCK(hlc INTEGER, x)",
        "CREATE VIEW sync_clock AS SELECT 1 AS hlc, 2 AS x",
    ] {
        let c = TestClient::new();
        c.exec(ddl);
        let before = c.snapshot();
        let e = err_of(&c, "SELECT sync_init(?1)", &tasks_schema(1).to_string());
        assert!(e.to_lowercase().contains("sync_clock"), "{ddl}: {e}");
        assert_eq!(c.snapshot(), before, "{ddl}: sync_init changed something");
    }
}

#[test]
fn an_app_object_named_sync_clock_after_init_makes_writes_fail_loudly() {
    for ddl in [
        // A stamp row the triggers would otherwise read as theirs.
        "CREATE TABLE sync_clock(hlc INTEGER); INSERT INTO sync_clock VALUES (42)",
        "CREATE TABLE Sync_Clock(x)",
        "CREATE VIEW sync_clock AS SELECT 7 AS hlc",
    ] {
        let c = TestClient::with_schema(&tasks_schema(1));
        c.exec("INSERT INTO tasks (id, title) VALUES ('before', 'x')");
        assert_eq!(queued(&c), 1);
        c.exec(ddl);
        for write in [
            "INSERT INTO tasks (id, title) VALUES ('t1', 'x')",
            "UPDATE tasks SET title = 'y' WHERE id = 'before'",
            "DELETE FROM tasks WHERE id = 'before'",
        ] {
            let e = c.db.execute_batch(write).unwrap_err().to_string();
            assert!(
                e.contains("'sync_clock' is not a function"),
                "{ddl} / {write}: {e}"
            );
        }
        // Nothing was written without being queued.
        assert_eq!(
            c.rows("SELECT id, title FROM tasks"),
            vec![vec![json!("before"), json!("x")]],
            "{ddl}"
        );
        assert_eq!(queued(&c), 1, "{ddl}");
        // The sync functions say what is wrong.
        let e = c.try_text("SELECT sync_changes()", None).unwrap_err();
        assert!(
            e.to_lowercase().contains("named \"sync_clock\""),
            "{ddl}: {e}"
        );
        let p = page(1, "c1", false, vec![]).to_string();
        let e = err_of(&c, "SELECT sync_apply(?1)", &p);
        assert!(
            e.to_lowercase().contains("named \"sync_clock\""),
            "{ddl}: {e}"
        );
        // Once the object is gone, writes are captured again.
        let drop = if ddl.contains("VIEW") {
            "DROP VIEW sync_clock"
        } else {
            "DROP TABLE sync_clock"
        };
        c.exec(drop);
        c.exec("UPDATE tasks SET title = 'y' WHERE id = 'before'");
        assert_eq!(queued(&c), 2, "{ddl}");
        let b = c.changes();
        assert_eq!(b["changes"][0]["cols"]["title"], "y");
    }
}

#[test]
fn a_temp_table_named_sync_clock_does_not_hide_the_clock() {
    let c = TestClient::with_schema(&tasks_schema(1));
    c.exec("CREATE TEMP TABLE sync_clock(hlc INTEGER)");
    c.exec("INSERT INTO tasks (id) VALUES ('t1')");
    assert_eq!(queued(&c), 1);
    let stamp = c.int("SELECT hlc FROM _changes");
    assert!(stamp > 1 << 40, "a real HLC stamp, got {stamp}");
}

#[test]
fn schemas_naming_reserved_or_colliding_tables_are_refused() {
    let cases: Vec<(Vec<Value>, &str)> = vec![
        (vec![table("sync_clock")], "reserved"),
        (vec![table("SYNC_CLOCK")], "reserved"),
        (vec![table("_changes")], "reserved"),
        (vec![table("_CHANGES")], "reserved"),
        (vec![table("_sync_meta")], "reserved"),
        (vec![table("_Sync_Errors")], "reserved"),
        (vec![table("_sync_whatever")], "reserved"),
        (vec![table("sqlite_x")], "sqlite_"),
        (vec![table("tasks"), table("Tasks")], "case"),
        (vec![table("tasks"), table("tasks_synced")], "_synced"),
        (vec![table("tasks_LOCAL"), table("TASKS")], "_local"),
        (vec![table("tasks"), table("tasks_pending")], "_pending"),
        (vec![table("")], "empty"),
        (vec![table("a\u{0}b")], "NUL"),
    ];
    for (tables, expect) in cases {
        let names: Vec<Value> = tables.iter().map(|t| t["name"].clone()).collect();
        let schema = schema_with(tables.clone());
        // By sync_init on a fresh database...
        let c = TestClient::new();
        let before = c.snapshot();
        let e = err_of(&c, "SELECT sync_init(?1)", &schema.to_string());
        assert!(e.contains(expect), "{names:?}: {e}");
        assert_eq!(c.snapshot(), before, "{names:?}");
        // ...and by a pull page carrying the schema.
        let c = TestClient::with_schema(&tasks_schema(1));
        c.exec("INSERT INTO tasks (id) VALUES ('mine')");
        let before = c.snapshot();
        let mut v2 = schema.clone();
        v2["version"] = json!(2);
        let mut p = page(2, "c2", false, vec![]);
        p["schema"] = v2;
        let e = err_of(&c, "SELECT sync_apply(?1)", &p.to_string());
        assert!(e.contains(expect), "page with {names:?}: {e}");
        assert_eq!(c.snapshot(), before, "page with {names:?}");
    }
    // Columns the device keeps in T_synced, and columns equal up to case.
    for cols in [
        json!([{"name": "id", "type": "text"}, {"name": "_FULL", "type": "text"}]),
        json!([{"name": "id", "type": "text"}, {"name": "_ver", "type": "text"}]),
        json!([{"name": "id", "type": "text"}, {"name": "ID", "type": "text"}]),
        json!([{"name": "id", "type": "text"}, {"name": "_sync_x", "type": "text"}]),
    ] {
        let c = TestClient::new();
        let s = schema_with(vec![json!({"name": "t", "pk": ["id"], "columns": cols})]);
        let e = err_of(&c, "SELECT sync_init(?1)", &s.to_string());
        assert!(e.contains("reserved") || e.contains("twice"), "{cols}: {e}");
    }
}

// ---------------------------------------------------------------------------
// 2. Bounded identifiers and documents

#[test]
fn identifiers_and_documents_are_bounded() {
    let n63 = "n".repeat(63);
    let n64 = "n".repeat(64);
    let huge = "x".repeat(5 << 20);
    let big = "b".repeat(100_000);
    // 63 bytes is fine (Postgres' limit), in table and column names.
    let c = TestClient::new();
    let ok = schema_with(vec![json!({"name": n63, "pk": [n63], "columns": [
        {"name": n63, "type": "text"}]})]);
    c.init(&ok);
    assert_eq!(c.int(&format!("SELECT count(*) FROM \"{n63}\"")), 0);

    let bad_schemas = [
        (schema_with(vec![table(&huge)]), "limit of 1048576"),
        (schema_with(vec![table(&n64)]), "64 bytes"),
        (
            schema_with(vec![json!({"name": "t", "pk": ["id"], "columns": [
                {"name": "id", "type": "text"}, {"name": n64, "type": "text"}]})]),
            "64 bytes",
        ),
        (
            schema_with(vec![json!({"name": "t", "pk": [n64], "columns": [
                {"name": n64, "type": "text"}]})]),
            "64 bytes",
        ),
        (
            schema_with(vec![json!({"name": "t", "pk": [huge], "columns": [
                {"name": "id", "type": "text"}]})]),
            "limit",
        ),
        // Many small tables: the document itself is too large.
        (
            schema_with((0..20_000).map(|i| table(&format!("t{i}"))).collect()),
            "limit of 1048576",
        ),
    ];
    for (schema, expect) in bad_schemas {
        let c = TestClient::new();
        let before = c.snapshot();
        let started = Instant::now();
        let e = err_of(&c, "SELECT sync_init(?1)", &schema.to_string());
        assert!(started.elapsed() < Duration::from_secs(2), "slow refusal");
        assert!(e.contains(expect), "{e:.300}");
        assert!(
            e.len() < 400,
            "the error repeats the input: {} bytes",
            e.len()
        );
        assert_eq!(c.snapshot(), before);
    }

    // Local-only column names and declarations.
    let c = TestClient::with_schema(&tasks_schema(1));
    let before = c.snapshot();
    for (spec, expect) in [
        (
            json!({"columns": {"tasks": {n64.clone(): "TEXT"}}}),
            "64 bytes",
        ),
        (
            json!({"columns": {"tasks": {big.clone(): "TEXT"}}}),
            "100000 bytes",
        ),
        (
            json!({"columns": {"tasks": {huge.clone(): "TEXT"}}}),
            "limit of 1048576",
        ),
        (
            json!({"columns": {"tasks": {"c": format!("TEXT DEFAULT '{}'", "d".repeat(5000))}}}),
            "limit of 4096",
        ),
        (
            json!({"columns": {big.clone(): {"c": "TEXT"}}}),
            "not a synced table",
        ),
        (
            json!({"columns": {"tasks": {"_SYNC_x": "TEXT"}}}),
            "reserved",
        ),
    ] {
        let e =
            c.db.query_row(
                "SELECT sync_init(?1, ?2)",
                [tasks_schema(1).to_string(), spec.to_string()],
                |r| r.get::<_, String>(0),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains(expect), "{e:.300}");
        assert!(e.len() < 400, "{} bytes", e.len());
        assert_eq!(c.snapshot(), before);
    }

    // A page naming a huge table or column, or carrying a huge cursor.
    let h = hlc(5, 0, 1);
    for (p, expect) in [
        (
            page(
                1,
                "c",
                false,
                vec![upsert(&huge, json!({"id": "a"}), &ver_all(&h))],
            ),
            "is not synced",
        ),
        (
            page(
                1,
                "c",
                false,
                vec![upsert(
                    "tasks",
                    json!({"id": "a", huge.clone(): 1}),
                    &ver_all(&h),
                )],
            ),
            "has no synced column",
        ),
        (page(1, &huge, false, vec![]), "cursor"),
        (
            {
                let mut p = page(2, "c", false, vec![]);
                p["schema"] = schema_with(vec![table(&big)]);
                p["schema"]["version"] = json!(2);
                p
            },
            "100000 bytes, more than the limit of 63",
        ),
        (
            {
                let mut p = page(2, "c", false, vec![]);
                p["schema"] = schema_with((0..20_000).map(|i| table(&format!("t{i}"))).collect());
                p["schema"]["version"] = json!(2);
                p
            },
            "schema is",
        ),
    ] {
        let e = err_of(&c, "SELECT sync_apply(?1)", &p.to_string());
        assert!(e.contains(expect), "{e:.300}");
        assert!(e.len() < 400, "{} bytes", e.len());
        assert_eq!(c.snapshot(), before);
    }
}

// ---------------------------------------------------------------------------
// 3. Pages that contradict their schema

/// One table with a column of every type.
fn vals_schema() -> Value {
    schema_with(vec![json!({"name": "vals", "pk": ["id"], "columns": [
        {"name": "id", "type": "text", "nullable": false},
        {"name": "i", "type": "integer"},
        {"name": "n", "type": "numeric"},
        {"name": "r", "type": "real"},
        {"name": "b", "type": "boolean"},
        {"name": "t", "type": "text"},
        {"name": "ts", "type": "timestamptz"},
        {"name": "tn", "type": "timestamp"},
        {"name": "d", "type": "date"},
        {"name": "j", "type": "json"},
        {"name": "x", "type": "blob"}]})])
}

fn vals_upsert(row: Value) -> Value {
    let h = hlc(9, 0, 3);
    json!({"table": "vals", "op": "upsert", "pk": {"id": row["id"].clone()}, "row": row,
           "ver": vec![h; 11]})
}

/// A page as text, with `value` spliced in verbatim (serde_json would not
/// write some of these literals).
fn page_with_raw(col: &str, value: &str) -> String {
    let good = vals_upsert(json!({"id": "good", "i": 1, "n": 1.5, "t": "fine"}));
    let bad = vals_upsert(json!({"id": "bad", col: "@@"}));
    page(1, "c2", false, vec![good, bad])
        .to_string()
        .replace("\"@@\"", value)
}

#[test]
fn a_page_contradicting_its_schema_is_refused_whole() {
    let c = TestClient::with_schema(&vals_schema());
    c.apply(&page(
        1,
        "c1",
        false,
        vec![vals_upsert(json!({"id": "old", "i": 7}))],
    ));
    let before = c.snapshot();
    let cases = [
        ("i", "1e400"),
        ("i", "12.5"),
        ("i", "\"12\""),
        ("i", "9223372036854775808"),
        ("i", "true"),
        ("n", "1e400000"),
        ("n", "\"12.5\""),
        ("n", "\"lots\""),
        ("r", "1e400"),
        ("r", "-1e400"),
        ("r", "\"1.5\""),
        ("b", "\"yes\""),
        ("b", "1"),
        ("t", "5"),
        ("t", "{\"a\":1}"),
        ("t", "\"nul \\u0000 inside\""),
        ("ts", "\"yesterday\""),
        ("ts", "\"2026-02-30T10:00:00+00:00\""),
        ("ts", "\"2026-01-01T10:00:00\""),
        ("tn", "\"2026-01-01T25:00:00\""),
        ("d", "\"2026-13-01\""),
        ("d", "20260101"),
        ("x", "\"zz\""),
        ("x", "\"\\\\xabc\""),
    ];
    for (col, value) in cases {
        let p = page_with_raw(col, value);
        let e = err_of(&c, "SELECT sync_apply(?1)", &p);
        let shown = value.chars().take(10).collect::<String>();
        assert!(
            e.contains(&format!("column \"{col}\" of table \"vals\"")) && e.contains(&shown),
            "{col} = {value}: {e}"
        );
        assert_eq!(c.snapshot(), before, "{col} = {value} changed something");
    }
    // The same values are fine where the type allows them.
    c.apply(
        &serde_json::from_str(&page_with_raw("n", "1e400").replace("\"c2\"", "\"c3\"")).unwrap(),
    );
    assert_eq!(
        c.rows("SELECT length(n), substr(n, 1, 3), typeof(n) FROM vals WHERE id = 'bad'"),
        vec![vec![json!(401), json!("100"), json!("text")]]
    );
}

#[test]
fn a_push_result_row_contradicting_the_schema_is_refused() {
    let c = TestClient::with_schema(&vals_schema());
    c.exec("INSERT INTO vals (id, i) VALUES ('a', 1)");
    let batch = c.changes();
    let before = c.snapshot();
    let h = hlc(9, 0, 3);
    let result = json!({"format": 1, "client_id": batch["client_id"], "results": [
        {"seq": batch["changes"][0]["seq"], "table": "vals", "pk": {"id": "a"},
         "status": "applied", "row": {"id": "a", "i": "one"}, "ver": vec![h; 11]}]});
    let e = err_of(&c, "SELECT sync_ack(?1)", &result.to_string());
    assert!(e.contains("column \"i\" of table \"vals\""), "{e}");
    assert_eq!(c.snapshot(), before);
}

// ---------------------------------------------------------------------------
// 4. Exact values on the device

#[test]
fn values_are_stored_and_sent_exactly() {
    let c = TestClient::with_schema(&vals_schema());
    let text = "\u{10FFFF} \u{1F600} \u{800} e\u{301} \u{7F}";
    let row = format!(
        r#"{{"id": "s", "i": -9223372036854775808, "n": 1234567890.012345678901, "r": -0.0,
            "b": true, "t": {t}, "ts": "2026-06-30T23:59:59.123456+02:00",
            "tn": "2026-06-30T23:59:59.000001", "d": "2026-02-28", "j": {{"a": 0.1000000000000000000001}},
            "x": "\\x00ff"}}"#,
        t = serde_json::to_string(text).unwrap()
    );
    let p = format!(
        r#"{{"format": 1, "schema_version": 1, "cursor": "c1", "has_more": false, "changes": [
            {{"table": "vals", "op": "upsert", "pk": {{"id": "s"}}, "row": {row},
              "ver": {ver}}},
            {{"table": "vals", "op": "upsert", "pk": {{"id": "nan"}},
              "row": {{"id": "nan", "n": "NaN", "r": "NaN", "i": 9007199254740993}}, "ver": {ver}}},
            {{"table": "vals", "op": "upsert", "pk": {{"id": "scale"}},
              "row": {{"id": "scale", "n": 1.10, "r": 1.7976931348623157e308}}, "ver": {ver}}}]}}"#,
        ver = json!(vec![hlc(9, 0, 3); 11])
    );
    c.call("SELECT sync_apply(?1)", Some(&p));
    assert_eq!(
        c.rows("SELECT i, n, typeof(n), t, ts, tn, j FROM vals WHERE id = 's'"),
        vec![vec![
            json!(i64::MIN),
            json!("1234567890.012345678901"),
            json!("text"),
            json!(text),
            json!("2026-06-30T23:59:59.123456+02:00"),
            json!("2026-06-30T23:59:59.000001"),
            json!("{\"a\":0.1000000000000000000001}"),
        ]]
    );
    let r: f64 =
        c.db.query_row("SELECT r FROM vals WHERE id = 's'", [], |r| r.get(0))
            .unwrap();
    assert!(
        r == 0.0 && r.is_sign_negative(),
        "-0.0 keeps its sign, got {r}"
    );
    assert_eq!(
        c.rows("SELECT n, r, typeof(r), i FROM vals WHERE id = 'nan'"),
        vec![vec![
            json!("NaN"),
            json!("NaN"),
            json!("text"),
            json!(9_007_199_254_740_993_i64)
        ]]
    );
    assert_eq!(
        c.rows("SELECT n FROM vals WHERE id = 'scale'"),
        vec![vec![json!("1.10")]]
    );

    // Copies of the pulled rows and local writes go back out exactly
    // (compared as text).
    c.exec(
        "INSERT INTO vals SELECT 'copy ' || id, i, n, r, b, t, ts, tn, d, j, x FROM vals;
         INSERT INTO vals (id, n, r) VALUES ('w1', '98765432109876543210.000000000001', -0.0);
         INSERT INTO vals (id, n, r) VALUES ('w2', 0.1, 1e-300);
         INSERT INTO vals (id, n, i) VALUES ('w3', 12, 9223372036854775807);",
    );
    let batch = c.changes_text();
    for want in [
        r#""n":1234567890.012345678901"#,
        r#""r":"-0""#,
        r#""i":-9223372036854775808"#,
        r#""ts":"2026-06-30T23:59:59.123456+02:00""#,
        r#""n":"NaN","r":"NaN""#,
        r#""i":9007199254740993"#,
        r#""n":1.10,"r":1.7976931348623157e+308"#,
        r#""n":98765432109876543210.000000000001,"r":"-0""#,
        r#""n":0.1,"r":1e-300"#,
        r#""i":9223372036854775807,"id":"w3""#,
        r#""n":12,"r":null"#,
    ] {
        assert!(batch.contains(want), "{want} missing from {batch}");
    }
    assert!(batch.contains(&serde_json::to_string(text).unwrap()));
}

// ---------------------------------------------------------------------------
// Upgrade of a device built by the previous layout

const LAYOUT1: &str = include_str!("fixtures/layout1_device.sql");

#[test]
fn a_device_of_the_previous_layout_is_upgraded_in_place() {
    let c = TestClient::new();
    c.exec(LAYOUT1);
    c.exec("PRAGMA foreign_keys = ON");
    let schema = c
        .try_text("SELECT value FROM _sync_meta WHERE key = 'schema'", None)
        .unwrap()
        .unwrap();
    let rowids = c.rows("SELECT rowid, id FROM items ORDER BY id");
    let r = c.call("SELECT sync_init(?1)", Some(&schema));
    assert_eq!(r["changed"], false);

    // Declared types, in the app table, the server copy and confirmed mode.
    let types = |t: &str| {
        c.rows(&format!(
            "SELECT name, type FROM pragma_table_info('{t}') ORDER BY cid"
        ))
    };
    assert_eq!(
        types("items"),
        vec![
            vec![json!("id"), json!("TEXT")],
            vec![json!("amount"), json!("TEXT")],
            vec![json!("price"), json!("")],
            vec![json!("qty"), json!("INTEGER")],
            vec![json!("note"), json!("TEXT")],
            vec![json!("starred"), json!("INTEGER")],
        ]
    );
    assert_eq!(
        types("items_synced")[1],
        vec![json!("amount"), json!("TEXT")]
    );
    assert_eq!(
        types("orders_pending")[1],
        vec![json!("total"), json!("TEXT")]
    );
    assert_eq!(
        types("orders_synced")[1],
        vec![json!("total"), json!("TEXT")]
    );
    // Rows, rowids and local values are kept; stored numbers become the
    // exact text of what the device held.
    assert_eq!(c.rows("SELECT rowid, id FROM items ORDER BY id"), rowids);
    assert_eq!(
        c.rows("SELECT id, amount, price, qty, note, starred FROM items ORDER BY id"),
        vec![
            vec![
                json!("a"),
                json!("3.141592653589793"),
                json!(0.1),
                json!(9_007_199_254_740_993_i64),
                json!("local"),
                json!(0)
            ],
            vec![
                json!("b"),
                json!("12"),
                json!(2.5),
                json!(1),
                json!("y"),
                json!(1)
            ],
        ]
    );
    assert_eq!(
        c.rows("SELECT amount FROM items_synced WHERE id = 'a'"),
        vec![vec![json!("1234567890.0123458")]]
    );
    assert_eq!(
        c.rows("SELECT total FROM orders"),
        vec![vec![json!("99.95")]]
    );
    // The app's objects survive: index, trigger, view, and the child rows
    // of a foreign key with ON DELETE CASCADE (enforced on this connection).
    assert_eq!(
        c.int("SELECT count(*) FROM sqlite_master WHERE name IN ('items_amount', 'items_audit', 'big_items')"),
        3
    );
    assert_eq!(c.int("SELECT count(*) FROM lines"), 2);
    assert_eq!(c.int("SELECT count(*) FROM big_items"), 1);
    // The layout is current: triggers read sync_clock(), the old index name
    // is free.
    assert_eq!(
        c.int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%FROM sync_clock;%'"),
        0
    );
    assert_eq!(
        c.int("SELECT count(*) FROM sqlite_master WHERE name = '_changes_batch'"),
        0
    );
    assert_eq!(
        c.int("SELECT value FROM _sync_meta WHERE key = 'layout'"),
        LAYOUT
    );

    // The pending write survives and goes out; new writes are exact and
    // still fire the app's trigger.
    c.exec(
        "UPDATE items SET amount = '1234567890.012345678901', note = 'again' WHERE id = 'b';
         INSERT INTO orders (id, total) VALUES (8, '0.30000000000000000001');",
    );
    assert_eq!(c.int("SELECT count(*) FROM audit"), 2);
    let batch = c.changes_text();
    for want in [
        r#""amount":3.141592653589793,"note":"local""#,
        r#""amount":1234567890.012345678901,"note":"again""#,
        r#""total":0.30000000000000000001"#,
    ] {
        assert!(batch.contains(want), "{want} missing from {batch}");
    }
    // Deleting the parent row now cascades, as the app declared.
    c.exec("DELETE FROM items WHERE id = 'a'");
    assert_eq!(c.int("SELECT count(*) FROM lines"), 1);
    // A second sync_init changes nothing.
    let before = c.snapshot();
    c.call("SELECT sync_init(?1)", Some(&schema));
    assert_eq!(c.snapshot(), before);
}

#[test]
fn a_pull_upgrades_a_device_of_the_previous_layout_too() {
    let c = TestClient::new();
    c.exec(LAYOUT1);
    // Written as text: json! would take the number through an f64.
    let p: Value = serde_json::from_str(&format!(
        r#"{{"format": 1, "schema_version": 1, "cursor": "c2", "has_more": false,
            "changes": [{{"table": "items", "op": "upsert", "pk": {{"id": "c"}},
                          "row": {{"id": "c", "amount": 1234567890.012345678901, "price": -0.0}},
                          "ver": {}}}]}}"#,
        json!(vec![hlc(9, 0, 3); 5])
    ))
    .unwrap();
    c.apply(&p);
    assert_eq!(
        c.int("SELECT value FROM _sync_meta WHERE key = 'layout'"),
        LAYOUT
    );
    assert_eq!(
        c.rows("SELECT amount, typeof(amount), typeof(price) FROM items WHERE id = 'c'"),
        vec![vec![
            json!("1234567890.012345678901"),
            json!("text"),
            json!("real")
        ]]
    );
    let price: f64 =
        c.db.query_row("SELECT price FROM items WHERE id = 'c'", [], |r| r.get(0))
            .unwrap();
    assert!(price == 0.0 && price.is_sign_negative());
    // A write is captured through the new triggers.
    c.exec("UPDATE items SET qty = 5 WHERE id = 'c'");
    assert_eq!(c.int("SELECT count(*) FROM _changes WHERE pk = 'c'"), 1);
}

#[test]
fn a_device_of_layout_2_is_upgraded_to_the_current_layout() {
    for via_pull in [false, true] {
        let c = TestClient::with_schema(&tasks_schema(1));
        c.exec("INSERT INTO tasks (id, title) VALUES ('a', 'x')");
        // What a device of the previous layout looks like.
        c.exec(
            "DROP INDEX _sync_changes_mark;
             UPDATE _sync_meta SET value = 2 WHERE key = 'layout';",
        );
        if via_pull {
            c.apply(&page(1, "c1", false, vec![]));
        } else {
            c.call("SELECT sync_init(?1)", Some(&tasks_schema(1).to_string()));
        }
        assert_eq!(
            c.int("SELECT count(*) FROM sqlite_master WHERE name = '_sync_changes_mark'"),
            1
        );
        assert_eq!(
            c.int("SELECT value FROM _sync_meta WHERE key = 'layout'"),
            LAYOUT
        );
        // The pending insert survives and goes out.
        let batch = c.changes();
        assert_eq!(batch["changes"][0]["pk"]["id"], "a");
        assert_eq!(batch["changes"][0]["op"], "insert");
    }
}

// ---------------------------------------------------------------------------
// Errors keep SQLite's code

/// An error SQLite reports under a sync function is raised with SQLite's
/// own result code (an app can tell a read-only or full database from bad
/// input), the function named in the message; bad input is SQLITE_ERROR.
#[test]
fn an_error_sqlite_reports_keeps_its_code() {
    let db = rusqlite::Connection::open_in_memory().unwrap();
    sync_tests::sqlite::load(&db);
    db.execute_batch("PRAGMA query_only = 1").unwrap();
    let schema = tasks_schema(1).to_string();
    let err = db
        .query_row("SELECT sync_init(?1)", [&schema], |r| r.get::<_, String>(0))
        .unwrap_err();
    match err {
        rusqlite::Error::SqliteFailure(e, Some(msg)) => {
            assert_eq!(e.code, rusqlite::ErrorCode::ReadOnly, "{msg}");
            assert!(msg.starts_with("sync_init: "), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    db.execute_batch("PRAGMA query_only = 0").unwrap();
    let err = db
        .query_row("SELECT sync_init('{')", [], |r| r.get::<_, String>(0))
        .unwrap_err();
    match err {
        rusqlite::Error::SqliteFailure(e, Some(msg)) => {
            assert_eq!(e.code, rusqlite::ErrorCode::Unknown, "{msg}");
            assert!(msg.contains("malformed JSON in schema"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

/// A device of layout 3 (before the conflict inbox and the subscriptions
/// to streams) gets `_sync_conflicts`, `_sync_subscriptions`,
/// `_sync_members` and the `sync_subscriptions` view from its next sync call.
#[test]
fn a_device_of_layout_3_gets_the_conflict_inbox() {
    for via_pull in [false, true] {
        let c = TestClient::with_schema(&tasks_schema(1));
        c.exec(
            "DROP TABLE _sync_conflicts; DROP VIEW sync_subscriptions;
             DROP TABLE _sync_members; DROP TABLE _sync_subscriptions;
             UPDATE _sync_meta SET value = 3 WHERE key = 'layout';",
        );
        if via_pull {
            c.apply(&page(1, "c1", false, vec![]));
        } else {
            c.call("SELECT sync_init(?1)", Some(&tasks_schema(1).to_string()));
        }
        assert_eq!(
            c.int(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('_sync_conflicts', \
                   '_sync_subscriptions', '_sync_members', 'sync_subscriptions')"
            ),
            4
        );
        assert_eq!(
            c.call("SELECT sync_status()", None)["streams"],
            serde_json::json!([])
        );
        assert_eq!(
            c.int("SELECT value FROM _sync_meta WHERE key = 'layout'"),
            LAYOUT
        );
        assert_eq!(c.call("SELECT sync_status()", None)["conflicts"], 0);
    }
}
