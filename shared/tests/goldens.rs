//! The golden wire documents (`shared/goldens/*.json`) against the shared
//! readers and writers. The server and the device read and reproduce the
//! same files through the real databases in `tests/tests/goldens.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use sync_core::schema::Schema;
use sync_core::wire::page::{block_head, read_page, write_page, PageHead};
use sync_core::wire::{Change, Op, PullOp, PullPage, PushBatch, PushResult, Status};
use sync_core::Hlc;

fn text(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("goldens")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(&serde_json::to_value(v).unwrap()).unwrap() + "\n"
}

fn h(s: &str) -> Hlc {
    s.parse().unwrap()
}

fn row(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// The golden push batch, as the device writes it for the writes of
/// `tests/tests/goldens.rs`.
fn golden_batch() -> PushBatch {
    let (s1, s2, s3, s4, s5) = (
        h("0cb2819aebc0037f"),
        h("0cb2819aec00037f"),
        h("0cb2819aec40037f"),
        h("0cb2819aed40037f"),
        h("0cb2819aed80037f"),
    );
    let one = h("0000000000000001");
    let t4_cols = ["done", "due", "id", "points", "project_id", "tags", "title"];
    let p3_cols = ["budget", "id", "name"];
    let base_all = |cols: &[&str]| -> BTreeMap<String, Hlc> {
        cols.iter().map(|c| (c.to_string(), one)).collect()
    };
    let change = |seq, table: &str, op, pk: Value| Change {
        seq,
        table: table.into(),
        op,
        pk: row(pk),
        cols: Default::default(),
        ver: Default::default(),
        base: Default::default(),
        base_values: Default::default(),
        hlc: Hlc::ZERO,
        resolves: Vec::new(),
    };
    PushBatch {
        format: 1,
        client_id: "golden-device".into(),
        changes: vec![
            Change {
                cols: row(json!({"done": false, "due": null, "id": "t4", "points": 1,
                                  "project_id": 2, "tags": ["x"], "title": "new task"})),
                ver: t4_cols.iter().map(|c| (c.to_string(), s1)).collect(),
                hlc: s1,
                ..change(1, "tasks", Op::Insert, json!({"id": "t4"}))
            },
            Change {
                cols: row(json!({"title": "write the plan now"})),
                ver: [("title".to_string(), s2)].into(),
                base: [("title".to_string(), one)].into(),
                base_values: row(json!({"title": "write the plan"})),
                hlc: s2,
                ..change(2, "tasks", Op::Update, json!({"id": "t1"}))
            },
            Change {
                cols: row(json!({"points": 5})),
                ver: [("points".to_string(), s3)].into(),
                base: [("points".to_string(), one)].into(),
                base_values: row(json!({"points": 0})),
                hlc: s3,
                ..change(3, "tasks", Op::Update, json!({"id": "t2"}))
            },
            Change {
                cols: row(json!({"budget": null, "id": 3, "name": ""})),
                ver: p3_cols.iter().map(|c| (c.to_string(), s4)).collect(),
                hlc: s4,
                ..change(4, "projects", Op::Insert, json!({"id": 3}))
            },
            Change {
                base: base_all(&["done", "due", "points", "project_id", "tags", "title"]),
                hlc: s5,
                ..change(5, "tasks", Op::Delete, json!({"id": "t3"}))
            },
        ],
    }
}

#[test]
fn the_push_batch_is_what_the_device_writes() {
    let file = text("push_batch.json");
    assert_eq!(pretty(&golden_batch()), file);
    assert_eq!(PushBatch::parse(&file).unwrap(), golden_batch());
}

#[test]
fn the_push_result_has_every_status_and_reads_back() {
    let file = text("push_result.json");
    let r = PushResult::parse(&file).unwrap();
    assert_eq!(pretty(&r), file, "the result is in canonical form");
    let statuses: Vec<Status> = r.results.iter().map(|x| x.status).collect();
    for s in [
        Status::Applied,
        Status::Merged,
        Status::Conflict,
        Status::Rejected,
    ] {
        assert!(statuses.contains(&s), "no {s:?} in the golden result");
    }
    for res in &r.results {
        if let (Some(ver), Some(cols)) = (&res.ver, r.columns.get(&res.table)) {
            assert_eq!(ver.len(), cols.len(), "ver follows columns[{}]", res.table);
        }
    }
}

#[test]
fn the_schema_reads_back() {
    let file = text("schema.json");
    let s = Schema::parse(&file).unwrap();
    assert_eq!(pretty(&s), file);
    let names: Vec<&str> = s.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["projects", "tasks"]);
}

/// Both readers agree on every page, and the shared writer reproduces it.
#[test]
fn the_pages_read_back_and_the_writer_reproduces_them() {
    for name in [
        "page_first.json",
        "page_incremental.json",
        "page_resync.json",
        "page_streams.json",
    ] {
        let file = text(name);
        let typed = PullPage::parse(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(pretty(&typed), file, "{name} is in canonical form");
        let borrowed = read_page(&file).unwrap();
        assert_eq!(borrowed.changes.len(), typed.changes.len(), "{name}");
        for (b, t) in borrowed.changes.iter().zip(&typed.changes) {
            assert_eq!(b.table.0, t.table, "{name}");
            assert_eq!(b.op, t.op, "{name}");
            assert_eq!(Value::Object(b.pk.to_map()), Value::Object(t.pk.clone()));
            assert_eq!(b.ver.as_ref().map(|v| v.0.clone()), t.ver.clone());
        }
        // The server's writer, around the same changes.
        let schema = typed
            .schema
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap());
        let changes: Vec<String> = typed
            .changes
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        let members = serde_json::to_string(&typed.members).unwrap();
        let progress = serde_json::to_string(&typed.progress).unwrap();
        let written = write_page(
            &PageHead {
                format: 1,
                schema_version: typed.schema_version,
                schema: schema.as_deref(),
                cursor: &typed.cursor,
                has_more: typed.has_more,
                resync_required: typed.resync_required,
                behind: typed.behind,
                members: (!typed.members.is_empty()).then_some(members.as_str()),
                progress: (!typed.progress.is_empty()).then_some(progress.as_str()),
            },
            changes.iter().map(|c| ["", c.as_str(), ""]),
        );
        assert_eq!(PullPage::parse(&written).unwrap(), typed, "{name}");
    }
    let incr = PullPage::parse(&text("page_incremental.json")).unwrap();
    assert!(incr.changes.iter().any(|c| c.op == PullOp::Delete));
    assert!(incr.schema.is_none());
    // Streams: an upsert and a leave for a subscription, its key list and
    // its download progress, read alike by both readers.
    let streams = PullPage::parse(&text("page_streams.json")).unwrap();
    assert!(streams.changes.iter().any(|c| c.op == PullOp::Leave));
    assert_eq!(streams.changes[0].subs, Some(vec![1]));
    assert_eq!(streams.members[0].keys.len(), 2);
    assert!(streams.progress[0].done);
    let streams_text = text("page_streams.json");
    let borrowed = read_page(&streams_text).unwrap();
    assert_eq!(borrowed.members, streams.members);
    assert_eq!(borrowed.progress, streams.progress);
    assert_eq!(borrowed.changes[1].subs, Some(vec![1]));
    let resync = PullPage::parse(&text("page_resync.json")).unwrap();
    assert!(resync.resync_required && resync.cursor.is_empty() && resync.changes.is_empty());
}

/// The pages of format 2 carry the same changes as their format-1 twins,
/// and the shared writer, given each block's head and list, reproduces them.
#[test]
fn the_pages_of_format_2_read_as_their_twins_and_the_writer_reproduces_them() {
    for (two, one) in [
        ("page2_first.json", "page_first.json"),
        ("page2_incremental.json", "page_incremental.json"),
        ("page2_streams.json", "page_streams.json"),
    ] {
        let file = text(two);
        let p2 = PullPage::parse(&file).unwrap_or_else(|e| panic!("{two}: {e}"));
        let p1 = PullPage::parse(&text(one)).unwrap();
        assert_eq!(p2.format, 2, "{two}");
        assert_eq!(p2.changes, p1.changes, "{two}");
        assert_eq!(p2.members, p1.members, "{two}");
        assert_eq!(p2.progress, p1.progress, "{two}");
        assert_eq!(p2.schema, p1.schema, "{two}");
        // Every upsert block has rows, every other block keys.
        let doc: Value = serde_json::from_str(&file).unwrap();
        let blocks = doc["changes"].as_array().unwrap();
        let mut heads = Vec::new();
        let mut lists = Vec::new();
        for b in blocks {
            let strs = |k: &str| -> Vec<String> {
                b[k].as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            let (cols, key) = (strs("cols"), strs("key"));
            let op: PullOp = serde_json::from_value(b["op"].clone()).unwrap();
            heads.push(block_head(
                b["table"].as_str().unwrap(),
                op,
                b["sub"].as_u64().map(|s| s as u32),
                &cols.iter().map(String::as_str).collect::<Vec<_>>(),
                &key.iter().map(String::as_str).collect::<Vec<_>>(),
            ));
            let list = if op == PullOp::Upsert {
                &b["rows"]
            } else {
                &b["keys"]
            };
            lists.push(list.to_string());
        }
        let schema = p2
            .schema
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap());
        let members = serde_json::to_string(&p2.members).unwrap();
        let progress = serde_json::to_string(&p2.progress).unwrap();
        let written = write_page(
            &PageHead {
                format: 2,
                schema_version: p2.schema_version,
                schema: schema.as_deref(),
                cursor: &p2.cursor,
                has_more: p2.has_more,
                resync_required: p2.resync_required,
                behind: p2.behind,
                members: (!p2.members.is_empty()).then_some(members.as_str()),
                progress: (!p2.progress.is_empty()).then_some(progress.as_str()),
            },
            heads
                .iter()
                .zip(&lists)
                .map(|(h, l)| [h.as_str(), l.as_str(), "}"]),
        );
        let written: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(written, doc, "{two}");
    }
}

/// A page of format 2 that breaks its shape is refused as a whole, naming
/// what is wrong.
#[test]
fn malformed_pages_of_format_2_are_refused() {
    let page = |changes: &str| {
        format!(
            r#"{{"format": 2, "schema_version": 1, "cursor": "c", "has_more": false, "changes": [{changes}]}}"#
        )
    };
    let err = |changes: &str| read_page(&page(changes)).unwrap_err().to_string();
    let ok = r#"{"table": "t", "op": "upsert", "cols": ["id", "v"], "key": ["id"], "rows": [[1, "a", "0000000000000001"]]}"#;
    assert!(read_page(&page(ok)).is_ok());
    let cases = [
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id", "v"], "key": ["id"], "rows": [[1, "a"]]}"#,
            "has 2 values; its block has 2 columns and a version",
        ),
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id", "v"], "key": ["k"], "rows": []}"#,
            "key column \"k\" of table \"t\" is not in its cols",
        ),
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id", "v"], "key": ["id"], "rows": [[1, "a", "xyz"]]}"#,
            "the version of a row of table \"t\"",
        ),
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id", "v"], "key": ["id"], "rows": [[1, "a", ["0000000000000001", 7]]]}"#,
            "the version of a row of table \"t\"",
        ),
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id"], "rows": []}"#,
            "needs cols, key and rows",
        ),
        (r#"{"table": "t", "op": "delete", "keys": 5}"#, "pull page"),
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id", "v", "id"], "key": ["id"], "rows": []}"#,
            "column \"id\" appears twice in a block of table \"t\"",
        ),
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id", "v"], "key": ["id", "id"], "rows": []}"#,
            "key column \"id\" appears twice",
        ),
        (
            r#"{"table": "t", "op": "upsert", "cols": ["id", "v"], "key": ["id"], "rows": [[1, "a", ["0000000000000001"]]]}"#,
            "1 stamps for 2 columns",
        ),
        (
            r#"{"table": "t", "op": "delete", "pk": {"id": 1}}"#,
            "a page of format 2 holds single changes (format 1)",
        ),
    ];
    for (changes, want) in cases {
        let e = err(changes);
        assert!(e.contains(want), "{changes}: {e}");
    }
    // Long names are refused before any row is expanded.
    let long = format!(
        r#"{{"table": "t\u0061{}", "op": "delete", "keys": [{{"id": 1}}]}}"#,
        "x".repeat(100)
    );
    assert!(
        err(&long).contains("a block's table name is 102 bytes, more than 63"),
        "{}",
        err(&long)
    );
    let long_col = format!(
        r#"{{"table": "t", "op": "upsert", "cols": ["id", "{}"], "key": ["id"], "rows": []}}"#,
        "c".repeat(64)
    );
    assert!(err(&long_col).contains("a column name of table \"t\" is 64 bytes"));
    // A block in a page of format 1, and a format this build does not read.
    let one = page(ok).replace(r#""format": 2"#, r#""format": 1"#);
    assert!(read_page(&one)
        .unwrap_err()
        .to_string()
        .contains("a page of format 1 holds blocks of rows (format 2)"));
    let three = page(ok).replace(r#""format": 2"#, r#""format": 3"#);
    assert_eq!(
        read_page(&three).unwrap_err().to_string(),
        "unsupported pull page format 3; this build reads formats 1 and 2"
    );
}
