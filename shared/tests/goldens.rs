//! The golden wire documents (`shared/goldens/*.json`) against the shared
//! readers and writers. The server and the device read and reproduce the
//! same files through the real databases in `tests/tests/goldens.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use sync_core::schema::Schema;
use sync_core::wire::page::{read_page, write_page, PageHead};
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
                schema_version: typed.schema_version,
                schema: schema.as_deref(),
                cursor: &typed.cursor,
                has_more: typed.has_more,
                resync_required: typed.resync_required,
                behind: typed.behind,
                members: (!typed.members.is_empty()).then_some(members.as_str()),
                progress: (!typed.progress.is_empty()).then_some(progress.as_str()),
            },
            changes.iter().map(String::as_str),
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
