//! Streams end to end: DBA-defined filters, device subscriptions, rows
//! moving in and out (by their own columns, through a parent, by time),
//! unsubscribing, writes outside the subscriptions, pending writes kept
//! through a move-out, progress, hostile parameters, and writers moving
//! rows while a device pulls.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sync_tests::e2e::Device;
use sync_tests::{err_text, eventually, TestDb};

fn setup(c: &mut postgres::Client) {
    c.batch_execute(
        "CREATE TABLE tasks (id int PRIMARY KEY, project_id int NOT NULL, title text NOT NULL);
         CREATE TABLE comments (id int PRIMARY KEY, task_id int NOT NULL REFERENCES tasks(id), body text);
         SELECT sync_enable('tasks'); SELECT sync_enable('comments');
         INSERT INTO tasks VALUES (1, 1, 'one'), (2, 1, 'two'), (3, 2, 'three');
         INSERT INTO comments VALUES (1, 1, 'on one'), (2, 3, 'on three');
         SELECT sync_stream('project_tasks', 'tasks', 'project_id = :project_id');
         SELECT sync_stream('task_comments', 'comments',
                            'task_id IN (SELECT id FROM tasks WHERE project_id = :project_id)');",
    )
    .unwrap();
}

fn ids(d: &Device, table: &str) -> BTreeSet<i64> {
    d.rows(&format!("SELECT id FROM {table}"))
        .into_iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

fn set(v: &[i64]) -> BTreeSet<i64> {
    v.iter().copied().collect()
}

fn subscribe(d: &Device, project: i64) {
    for s in ["project_tasks", "task_comments"] {
        d.db.query_row(
            "SELECT sync_subscribe(?1, ?2)",
            [s, &format!("{{\"project_id\": {project}}}")],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    }
}

/// Pulls until `check` holds (the horizon may hold changes back briefly).
fn pull_until(d: &Device, c: &mut postgres::Client, check: impl Fn(&Device) -> bool) {
    assert!(
        eventually(30, || {
            d.pull(c);
            check(d)
        }),
        "tasks {:?} comments {:?}",
        ids(d, "tasks"),
        ids(d, "comments")
    );
}

#[test]
fn devices_hold_exactly_their_subscriptions_as_rows_move() {
    let db = TestDb::new("streams_e2e");
    let mut c = db.connect();
    setup(&mut c);
    let a = Device::new(&mut c, "streams_a");
    let b = Device::new(&mut c, "streams_b");
    subscribe(&a, 1);
    subscribe(&b, 2);
    pull_until(&a, &mut c, |d| {
        ids(d, "tasks") == set(&[1, 2]) && ids(d, "comments") == set(&[1])
    });
    pull_until(&b, &mut c, |d| {
        ids(d, "tasks") == set(&[3]) && ids(d, "comments") == set(&[2])
    });
    // Progress: both downloads complete, sent = total.
    let st = a.call("SELECT sync_status()", None);
    let streams = st["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{st}");
    for s in streams {
        assert_eq!(s["state"], "synced", "{st}");
        assert_eq!(s["sent"], s["total"], "{st}");
    }
    let tasks_sub = streams
        .iter()
        .find(|s| s["stream"] == "project_tasks")
        .unwrap();
    assert_eq!(tasks_sub["total"], 2);

    // Task 1 moves to project 2: it and its comment move from A to B
    // (the comment did not change: it moves through its parent).
    c.batch_execute("UPDATE tasks SET project_id = 2 WHERE id = 1")
        .unwrap();
    pull_until(&a, &mut c, |d| {
        ids(d, "tasks") == set(&[2]) && ids(d, "comments").is_empty()
    });
    pull_until(&b, &mut c, |d| {
        ids(d, "tasks") == set(&[1, 3]) && ids(d, "comments") == set(&[1, 2])
    });

    // Unsubscribing removes what no other subscription covers; subscribing
    // again downloads only that stream.
    let r: String =
        b.db.query_row(
            "SELECT sync_unsubscribe('task_comments', '{\"project_id\": 2}')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(r.contains("\"removed_rows\":2"), "{r}");
    assert!(ids(&b, "comments").is_empty());
    assert_eq!(ids(&b, "tasks"), set(&[1, 3]));
    subscribe(&b, 2);
    pull_until(&b, &mut c, |d| ids(d, "comments") == set(&[1, 2]));

    // A writes into a project it does not subscribe to: pushed, accepted,
    // then it leaves A like any move-out, and reaches B.
    a.db.execute("INSERT INTO tasks VALUES (10, 2, 'from a')", [])
        .unwrap();
    let r = a.push(&mut c);
    assert_eq!(r["results"][0]["status"], "applied", "{r}");
    pull_until(&a, &mut c, |d| ids(d, "tasks") == set(&[2]));
    pull_until(&b, &mut c, |d| ids(d, "tasks") == set(&[1, 3, 10]));

    // A pending write survives a move-out until its push is settled.
    a.db.execute("UPDATE tasks SET title = 'edited offline' WHERE id = 2", [])
        .unwrap();
    c.batch_execute("UPDATE tasks SET project_id = 3 WHERE id = 2")
        .unwrap();
    for _ in 0..3 {
        a.pull(&mut c);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        a.rows("SELECT title FROM tasks WHERE id = 2"),
        vec![vec![Value::from("edited offline")]]
    );
    let r = a.push(&mut c);
    assert_eq!(r["results"][0]["status"], "applied", "{r}");
    pull_until(&a, &mut c, |d| ids(d, "tasks").is_empty());
    let title: String = c
        .query_one("SELECT title FROM tasks WHERE id = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(title, "edited offline");
}

#[test]
fn hostile_subscriptions_are_refused_and_change_nothing() {
    let db = TestDb::new("streams_hostile");
    let mut c = db.connect();
    setup(&mut c);
    let d = Device::new(&mut c, "streams_hostile");
    for (stream, params) in [
        ("project_tasks", "{\"project_id\": \"1; DROP TABLE tasks\"}"),
        ("project_tasks", "{\"project_id\": 1.5}"),
        ("project_tasks", "{\"project_id\": 1, \"extra\": 2}"),
        ("project_tasks", "{}"),
        ("project_tasks", "not json"),
        ("project_tasks", "[1]"),
        ("no_such_stream", "{\"project_id\": 1}"),
    ] {
        let e =
            d.db.query_row("SELECT sync_subscribe(?1, ?2)", [stream, params], |r| {
                r.get::<_, String>(0)
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("sync_subscribe"), "{e}");
    }
    let huge = format!("{{\"project_id\": \"{}\"}}", "9".repeat(20_000));
    assert!(d
        .db
        .query_row("SELECT sync_subscribe('project_tasks', ?1)", [&huge], |r| {
            r.get::<_, String>(0)
        })
        .is_err());
    assert_eq!(
        d.call("SELECT sync_status()", None)["streams"],
        Value::Array(vec![])
    );
    // A forged cursor carrying SQL text as a parameter: the server does
    // not take it either; the subscription ends, and no row is sent.
    let forged = sync_core::cursor::Cursor {
        v: 1,
        q: vec![sync_core::cursor::Sub {
            i: 1,
            s: "project_tasks".into(),
            p: serde_json::from_str("{\"project_id\": \"0) OR (true\"}").unwrap(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode();
    let page: Value = c
        .query_one("SELECT sync_pull_json($1, 100)", &[&forged])
        .unwrap()
        .get(0);
    assert_eq!(page["changes"].as_array().map(Vec::len), Some(0), "{page}");
    assert_eq!(page["members"][0]["table"], "", "{page}");
    // Oversized cursors are refused before they are read.
    let huge_cursor = format!("c1.{}", "A".repeat(2 << 20));
    let e = c
        .query_one("SELECT sync_pull_json($1, 100)", &[&huge_cursor])
        .unwrap_err();
    assert!(err_text(&e).contains("longer than"), "{}", err_text(&e));
    let n: i64 = c
        .query_one("SELECT count(*) FROM tasks", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // A filter with SQL after it, or $n parameters, is refused at definition.
    for bad in [
        "project_id = 1; DROP TABLE tasks",
        "project_id = $1",
        "no_such_col = 1",
    ] {
        assert!(
            c.query_one("SELECT sync_stream('bad', 'tasks', $1)", &[&bad])
                .is_err(),
            "{bad}"
        );
    }
}

/// Defining a stream sends the DBA no notice: its probe of the filter's
/// dependencies leaves nothing behind and, in a session that has no
/// temporary objects yet, does not report a missing `pg_temp`.
#[test]
fn defining_a_stream_sends_no_notice() {
    let db = TestDb::new("streams_quiet");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE tasks (id int PRIMARY KEY, project_id int NOT NULL, title text NOT NULL);
         SELECT sync_enable('tasks');",
    )
    .unwrap();
    let notices = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    let mut config: postgres::Config = db.conn_str().parse().unwrap();
    config.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()));
    let mut fresh = config.connect(postgres::NoTls).unwrap();
    fresh
        .batch_execute(
            "SET client_min_messages = notice;
             SELECT sync_stream('by_project', 'tasks', 'project_id = :project_id');
             SELECT sync_stream('by_project_again', 'tasks', 'project_id = :project_id');",
        )
        .unwrap();
    assert_eq!(*notices.lock().unwrap(), Vec::<String>::new());
    let left: i64 = fresh
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'pg_sync_stream_probe_v'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the probe view is dropped");
    // A table of the session in the probe's place gets a clear error.
    fresh
        .batch_execute("CREATE TEMP TABLE pg_sync_stream_probe_v (x int)")
        .unwrap();
    let e = fresh
        .batch_execute("SELECT sync_stream('by_project_3', 'tasks', 'project_id = :project_id')")
        .unwrap_err();
    assert!(err_text(&e).contains("is not a view"), "{}", err_text(&e));
}

#[test]
fn a_new_column_and_a_dropped_stream_reach_subscribers() {
    let db = TestDb::new("streams_ddl");
    let mut c = db.connect();
    setup(&mut c);
    let d = Device::new(&mut c, "streams_ddl");
    subscribe(&d, 1);
    pull_until(&d, &mut c, |d| {
        ids(d, "tasks") == set(&[1, 2]) && ids(d, "comments") == set(&[1])
    });
    // A column added with a default changes every row without writing it:
    // the subscription downloads again.
    c.batch_execute("ALTER TABLE tasks ADD COLUMN prio int NOT NULL DEFAULT 7")
        .unwrap();
    pull_until(&d, &mut c, |d| {
        d.rows("SELECT DISTINCT prio FROM tasks") == vec![vec![Value::from(7)]]
            && ids(d, "tasks") == set(&[1, 2])
    });
    // The DBA drops a stream: its subscriptions end and their rows leave
    // (comments keep another stream, so they stay streamed; dropping a
    // table's last stream makes it whole again, and devices resync).
    c.batch_execute(
        "SELECT sync_stream('one_task', 'comments', 'task_id = :task_id');
         SELECT sync_stream_drop('task_comments');",
    )
    .unwrap();
    pull_until(&d, &mut c, |d| ids(d, "comments").is_empty());
    let st = d.call("SELECT sync_status()", None);
    let ended: Vec<&Value> = st["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "ended")
        .collect();
    assert_eq!(ended.len(), 1, "{st}");
    assert_eq!(ended[0]["stream"], "task_comments");
    assert_eq!(ids(&d, "tasks"), set(&[1, 2]));
    let e = c
        .query_one("SELECT sync_stream_drop('task_comments')", &[])
        .unwrap_err();
    assert!(err_text(&e).contains("no stream"), "{}", err_text(&e));
}

#[test]
fn rows_age_out_of_a_time_window() {
    let db = TestDb::new("streams_time");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL);
         SELECT sync_enable('events');
         SELECT sync_stream('recent', 'events', 'at > now() - make_interval(secs => :secs)');
         ALTER ROLE CURRENT_USER SET pg_sync.stream_refresh = 0;",
    )
    .unwrap();
    let mut c = db.connect();
    c.batch_execute("INSERT INTO events VALUES (1, now()), (2, now() - interval '1 day')")
        .unwrap();
    let d = Device::new(&mut c, "streams_time");
    d.db.query_row(
        "SELECT sync_subscribe('recent', '{\"secs\": 3}')",
        [],
        |r| r.get::<_, String>(0),
    )
    .unwrap();
    pull_until(&d, &mut c, |d| ids(d, "events") == set(&[1]));
    std::thread::sleep(Duration::from_secs(4));
    // Nothing was written: the row leaves because time passed.
    pull_until(&d, &mut c, |d| ids(d, "events").is_empty());
}

#[test]
fn a_device_pulling_while_writers_move_rows_ends_with_exactly_its_rows() {
    let db = TestDb::new("streams_concurrent");
    let mut c = db.connect();
    setup(&mut c);
    c.batch_execute(
        "INSERT INTO tasks SELECT g, g % 4, 't' || g FROM generate_series(100, 300) g;
         INSERT INTO comments SELECT g, 100 + g % 200, 'c' || g FROM generate_series(100, 700) g;",
    )
    .unwrap();
    let d = Device::new(&mut c, "streams_conc");
    subscribe(&d, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let conn = db.conn_str();
        writers.push(std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            for i in 0..150u64 {
                let mut tx = c.transaction().unwrap();
                let task = 100 + ((w * 71 + i * 13) % 200) as i32;
                let project = ((w + i) % 4) as i32;
                tx.execute(
                    "UPDATE tasks SET project_id = $2 WHERE id = $1",
                    &[&task, &project],
                )
                .unwrap();
                let cid = (1000 + w * 1000 + i) as i32;
                tx.execute(
                    "INSERT INTO comments VALUES ($1, $2, 'new')",
                    &[&cid, &task],
                )
                .unwrap();
                if i % 7 == 0 {
                    tx.execute(
                        "DELETE FROM comments WHERE id = $1",
                        &[&(100 + (i as i32 * 3) % 600)],
                    )
                    .unwrap();
                }
                if w == 0 && i % 25 == 0 {
                    // A transaction held open while others commit.
                    std::thread::sleep(Duration::from_millis(300));
                }
                tx.commit().unwrap();
            }
        }));
    }
    let puller = {
        let stop = stop.clone();
        let conn = db.conn_str();
        let path = d.path.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            let dev = Device::reopen(&path);
            while !stop.load(Ordering::SeqCst) {
                dev.pull(&mut c);
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    puller.join().unwrap();
    let want_tasks: BTreeSet<i64> = c
        .query("SELECT id FROM tasks WHERE project_id = 1", &[])
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect();
    let want_comments: BTreeSet<i64> = c
        .query(
            "SELECT c.id FROM comments c JOIN tasks t ON t.id = c.task_id WHERE t.project_id = 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect();
    assert!(want_tasks.len() > 10 && want_comments.len() > 10);
    pull_until(&d, &mut c, |d| {
        ids(d, "tasks") == want_tasks && ids(d, "comments") == want_comments
    });
    let _ = err_text;
}

/// The device's cursor, decoded (None before its first pull).
fn cursor(d: &Device) -> Option<sync_core::cursor::Cursor> {
    let text: Option<String> =
        d.db.query_row("SELECT sync_cursor()", [], |r| r.get(0))
            .unwrap();
    text.map(|t| sync_core::cursor::Cursor::decode(&t).unwrap())
}

/// One page of at most `max` changes, applied; returns the device's cursor
/// after it, decoded.
fn pull_page(d: &Device, c: &mut postgres::Client, max: i32) -> sync_core::cursor::Cursor {
    pull_page_json(d, c, max).0
}

/// [`pull_page`], also returning the page.
fn pull_page_json(
    d: &Device,
    c: &mut postgres::Client,
    max: i32,
) -> (sync_core::cursor::Cursor, Value) {
    let text = cursor(d).map(|c| c.encode());
    let page: Value = c
        .query_one("SELECT sync_pull_json($1, $2)", &[&text, &max])
        .unwrap_or_else(|e| panic!("sync_pull: {}", err_text(&e)))
        .get(0);
    d.call("SELECT sync_apply(?1)", Some(&page.to_string()));
    (cursor(d).expect("a cursor after a pull"), page)
}

/// Whether a page carries a key list for subscription `sub`.
fn lists(page: &Value, sub: u32) -> bool {
    page["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|l| l["sub"] == sub))
}

/// Ids of the rows a device lacks after its download's key list.
fn wanted(d: &Device) -> BTreeSet<i64> {
    cursor(d).expect("a cursor").q[0]
        .w
        .iter()
        .map(|k| {
            k.as_i64()
                .or_else(|| k.get("id").and_then(Value::as_i64))
                .or_else(|| k.get(0).and_then(Value::as_i64))
                .unwrap_or_else(|| panic!("key {k}"))
        })
        .collect()
}

/// Creates `items` (3,000 rows of about 240 bytes, `grp` computed by
/// `grp`) and the stream `items_by_group`.
fn items_table(c: &mut postgres::Client, grp: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, pad text NOT NULL);
         SELECT sync_enable('items');
         INSERT INTO items SELECT g, {grp}, repeat('x', 200) FROM generate_series(1, 3000) g;
         SELECT sync_stream('items_by_group', 'items', 'grp = :g');"
    ))
    .unwrap();
}

/// Subscribes a device to group 1 of `items_by_group`.
fn subscribe_group_one(d: &Device) {
    d.db.query_row(
        "SELECT sync_subscribe('items_by_group', '{\"g\": 1}')",
        [],
        |r| r.get::<_, String>(0),
    )
    .unwrap();
}

/// How a download's device starts.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// As `sync_subscribe` leaves it: the device holds none of the
    /// subscription's rows (`Sub::e`), so no key list ends the download.
    Fresh,
    /// As a device that held rows of the subscription (or a build from
    /// before `Sub::e`): the download ends with the key list.
    Holding,
}

/// Subscribes a new device to one group and pulls pages of 40 until its
/// first download ends, running `during(n, boot)` after the download's
/// n-th page (from 0). Returns the device and whether the page that ended
/// the download carried the subscription's key list.
fn download(
    c: &mut postgres::Client,
    name: &str,
    start: Start,
    mut during: impl FnMut(&mut postgres::Client, usize, &sync_core::cursor::Boot),
) -> (Device, bool) {
    let d = Device::new(c, name);
    subscribe_group_one(&d);
    let mut stored = cursor(&d).expect("a cursor after sync_subscribe");
    assert!(
        stored.q[0].e,
        "sync_subscribe did not mark the device as holding none"
    );
    if start == Start::Holding {
        stored.q[0].e = false;
        d.db.execute(
            "UPDATE _sync_meta SET value = ?1 WHERE key = 'cursor'",
            [stored.encode()],
        )
        .unwrap();
    }
    let mut page = 0;
    for _ in 0..400 {
        let (cur, json) = pull_page_json(&d, c, 40);
        let sub = &cur.q[0];
        match &sub.b {
            Some(b) => {
                assert!(!lists(&json, sub.i), "a key list before the download ended");
                during(c, page, b);
                page += 1;
            }
            // Not started yet (the page was taken by other work).
            None if sub.r == sync_core::cursor::Pos::Start => {}
            None => {
                assert!(!sub.e, "the server kept `e` after the download");
                return (d, lists(&json, sub.i));
            }
        }
    }
    panic!("the download did not end");
}

/// Pulls until the device holds exactly `want` of `items`.
fn pull_items_until(d: &Device, c: &mut postgres::Client, want: &BTreeSet<i64>) {
    let ok = eventually(30, || {
        d.pull(c);
        ids(d, "items") == *want
    });
    let held = ids(d, "items");
    assert!(
        ok,
        "the device holds {} rows not selected ({:?}) and lacks {} ({:?})",
        held.difference(want).count(),
        held.difference(want).take(10).collect::<Vec<_>>(),
        want.difference(&held).count(),
        want.difference(&held).take(10).collect::<Vec<_>>(),
    );
}

fn group_one(c: &mut postgres::Client) -> BTreeSet<i64> {
    c.query("SELECT id FROM items WHERE grp = 1", &[])
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect()
}

#[test]
fn a_large_subset_downloads_by_row_id_through_moves_and_a_table_rewrite() {
    let db = TestDb::new("streams_tid");
    let mut c = db.connect();
    // About 1,000 of 3,000 rows over about 100 blocks (fewer in the
    // middle), in pages of 40: choosing each page by key would read most
    // blocks every time, so the download goes by row id.
    items_table(
        &mut c,
        "CASE WHEN g BETWEEN 1001 AND 2200 THEN (g % 10 = 3)::int ELSE g % 2 END",
    );

    // Rows move in and out and to other blocks (the longer pad does not
    // fit in place), some go, some come, while the download runs.
    let mut by_tid = 0;
    let (d, listed) = download(&mut c, "streams_tid_moves", Start::Holding, |c, page, b| {
        by_tid += usize::from(b.c.is_some() && b.f != 0);
        if page == 3 {
            c.batch_execute(
                "UPDATE items SET grp = 1 - grp, pad = repeat('y', 300) WHERE id % 7 = 0;
                 UPDATE items SET pad = repeat('z', 400) WHERE id % 5 = 1;
                 DELETE FROM items WHERE id % 11 = 0;
                 INSERT INTO items SELECT g, g % 2, 'new' FROM generate_series(3001, 3100) g;",
            )
            .unwrap();
        }
    });
    assert!(by_tid > 10, "the download did not go by row id");
    assert!(
        listed,
        "no key list ended the download of a device holding rows"
    );
    // The download's pages missed only rows written after it started (they
    // come with the incremental pulls).
    let written = |id: i64| id % 7 == 0 || id % 5 == 1 || id > 3000;
    let lacking = wanted(&d);
    assert!(
        lacking.iter().all(|&id| written(id)),
        "rows missing after the download: {lacking:?}"
    );
    let want = group_one(&mut c);
    assert!(want.len() > 500);
    pull_items_until(&d, &mut c, &want);

    // A device that held none of the subscription's rows: the same kind of
    // writes during its download (rows already sent move out, go, grow;
    // others move in or come), no key list at its end, and the incremental
    // pulls alone bring it to exactly the subset.
    let (d, listed) = download(&mut c, "streams_tid_fresh", Start::Fresh, |c, page, _| {
        if page == 3 {
            c.batch_execute(
                "UPDATE items SET grp = 1 - grp, pad = repeat('w', 350) WHERE id % 13 = 0;
                 UPDATE items SET pad = repeat('v', 420) WHERE id % 9 = 2;
                 DELETE FROM items WHERE id % 17 = 0;
                 INSERT INTO items SELECT g, g % 2, 'new' FROM generate_series(3101, 3200) g;",
            )
            .unwrap();
        }
    });
    assert!(
        !listed,
        "a key list ended the download of a device holding none"
    );
    let want = group_one(&mut c);
    pull_items_until(&d, &mut c, &want);
    assert!(wanted(&d).is_empty());

    // The table is rewritten during a download: every row gets another row
    // id, and the download starts over, in key order.
    let (mut sent_before, mut restarted) = (0, false);
    let mut seen = Vec::new();
    let (d, listed) = download(&mut c, "streams_tid_rewrite", Start::Fresh, |c, page, b| {
        seen.push((page, b.c, b.f, b.n));
        match page {
            5 => {
                assert!(b.c.is_some() && b.f != 0, "not by row id");
                sent_before = b.n;
                // Rows already sent leave the subset first, unwritten
                // after the download starts over: only the key list
                // ending it can take them off the device.
                let [block, off] = b.c.unwrap_or_default();
                let moved = c
                    .execute(
                        &format!(
                            "UPDATE items SET grp = 0 WHERE grp = 1 AND ctid < '({block},{off})'"
                        ),
                        &[],
                    )
                    .unwrap();
                assert!(moved > 20, "only {moved} rows sent before the rewrite");
                c.batch_execute("VACUUM FULL items").unwrap();
            }
            6 => restarted = b.c.is_none() && b.f == 0 && b.n <= 40 && b.n < sent_before,
            _ => {}
        }
    });
    assert!(restarted, "the download did not start over: {seen:?}");
    // Started over from a later horizon, it ends with the key list even on
    // a device that held none of its rows when it subscribed.
    assert!(listed, "no key list after the download started over");
    // Nothing was written since it started over: its pages and its key
    // list brought exactly the subset.
    let want = group_one(&mut c);
    assert_eq!(ids(&d, "items"), want);
    assert!(wanted(&d).is_empty());
}

/// A change a hostile device makes to its download's position.
type Forge = Box<dyn Fn(&mut sync_core::cursor::Boot)>;

#[test]
fn forged_download_positions_stay_inside_the_filter() {
    let db = TestDb::new("streams_forged");
    let mut c = db.connect();
    items_table(&mut c, "g % 2");
    let d = Device::new(&mut c, "streams_forged");
    subscribe_group_one(&d);
    // Pull until the download is under way by row id.
    let mut cur = pull_page(&d, &mut c, 40);
    for _ in 0..20 {
        if cur.q[0].b.as_ref().is_some_and(|b| b.c.is_some()) {
            break;
        }
        cur = pull_page(&d, &mut c, 40);
    }
    let boot = cur.q[0].b.clone().expect("a download under way");
    assert!(boot.c.is_some(), "not by row id");
    // A device may send any values in its cursor: a row id past the end
    // or with an offset beyond 16 bits, counts at their limits, another
    // file node, a horizon of 0. Each pull answers, and sends only rows
    // the filter selects.
    let forged: Vec<Forge> = vec![
        Box::new(|b| b.c = Some([u32::MAX, u32::MAX])),
        Box::new(|b| b.c = Some([3, 1_000_000])),
        Box::new(|b| {
            b.n = u64::MAX;
            b.t = u64::MAX;
        }),
        Box::new(|b| b.t = 0),
        Box::new(|b| b.f = 12_345),
        Box::new(|b| b.h = 0),
    ];
    for forge in forged {
        let mut fc = cur.clone();
        let mut b = boot.clone();
        forge(&mut b);
        fc.q[0].b = Some(b.clone());
        let page: Value = c
            .query_one("SELECT sync_pull_json($1, 40)", &[&fc.encode()])
            .unwrap_or_else(|e| panic!("{b:?}: {}", err_text(&e)))
            .get(0);
        for ch in sync_tests::page_changes(&page) {
            if ch.table == "items" && ch.op == sync_core::wire::PullOp::Upsert {
                assert_eq!(ch.row.as_ref().unwrap()["grp"], 1, "{b:?}: {ch:?}");
            }
        }
    }
}

#[test]
fn a_stream_defined_again_during_a_first_download_ends_it_with_the_key_list() {
    let db = TestDb::new("streams_redefined");
    let mut c = db.connect();
    items_table(&mut c, "g % 2");
    // A device that held none of the subscription's rows when it
    // subscribed; after two pages the stream selects only ids 4k + 1: the
    // download starts over, and the ids 4k + 3 sent before must leave. Only
    // the key list ending the download can say so (nothing wrote them).
    let (d, listed) = download(&mut c, "streams_redefined", Start::Fresh, |c, page, _| {
        if page == 1 {
            c.batch_execute(
                "SELECT sync_stream_drop('items_by_group');
                 SELECT sync_stream('items_by_group', 'items', 'grp = :g AND id % 4 = 1');",
            )
            .unwrap();
        }
    });
    assert!(listed, "no key list after the stream was defined again");
    let want: BTreeSet<i64> = group_one(&mut c)
        .into_iter()
        .filter(|id| id % 4 == 1)
        .collect();
    assert!(want.len() > 500);
    pull_items_until(&d, &mut c, &want);
}

#[test]
fn two_pulls_from_one_cursor_end_with_exactly_the_subscription() {
    let db = TestDb::new("streams_twice");
    let mut c = db.connect();
    items_table(&mut c, "g % 2");
    // Two pull loops send the same cursor (a new subscription): the first
    // answer's rows then leave the subset, the second answer starts its
    // download after that, and the device applies both. Pages of 40 (the
    // download goes on) and of 5,000 (each answer is a whole download).
    for (name, max) in [("streams_twice_paged", 40), ("streams_twice_whole", 5000)] {
        let d = Device::new(&mut c, name);
        subscribe_group_one(&d);
        let c0 = cursor(&d).map(|c| c.encode());
        let pull = |c: &mut postgres::Client| -> Value {
            c.query_one("SELECT sync_pull_json($1, $2)", &[&c0, &max])
                .unwrap_or_else(|e| panic!("sync_pull: {}", err_text(&e)))
                .get(0)
        };
        let a = pull(&mut c);
        let moved: Vec<i32> = sync_tests::page_changes(&a)
            .iter()
            .filter_map(|ch| ch.row.as_ref()?.get("id")?.as_i64())
            .take(40)
            .map(|id| id as i32)
            .collect();
        assert_eq!(moved.len(), 40, "{a}");
        c.execute("UPDATE items SET grp = 0 WHERE id = ANY($1)", &[&moved])
            .unwrap();
        let b = pull(&mut c);
        d.call("SELECT sync_apply(?1)", Some(&a.to_string()));
        d.call("SELECT sync_apply(?1)", Some(&b.to_string()));
        let want = group_one(&mut c);
        pull_items_until(&d, &mut c, &want);
        c.execute("UPDATE items SET grp = 1 WHERE id = ANY($1)", &[&moved])
            .unwrap();
    }
}

#[test]
fn a_table_start_over_reaches_every_subscription_of_the_table() {
    let db = TestDb::new("streams_start_over");
    let mut c = db.connect();
    items_table(&mut c, "g % 2");
    let d = Device::new(&mut c, "streams_start_over");
    for g in [1, 0] {
        d.db.query_row(
            "SELECT sync_subscribe('items_by_group', ?1)",
            [format!("{{\"g\": {g}}}")],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    }
    let all: BTreeSet<i64> = (1..=3000).collect();
    pull_items_until(&d, &mut c, &all);
    // Every row changes without being written (a volatile default): both
    // subscriptions download again, though the first fills each page of 40
    // for a while and the second is not planned in those pages.
    c.batch_execute("ALTER TABLE items ADD COLUMN r int DEFAULT (random() * 1000000)::int")
        .unwrap();
    let server = || {
        let mut c = db.connect();
        c.query("SELECT id, r FROM items ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|row| {
                (
                    i64::from(row.get::<_, i32>(0)),
                    row.get::<_, Option<i32>>(1).map(i64::from),
                )
            })
            .collect::<Vec<_>>()
    };
    let want = server();
    let held = || {
        d.rows("SELECT id, r FROM items ORDER BY id")
            .into_iter()
            .map(|r| (r[0].as_i64().unwrap_or(-1), r[1].as_i64()))
            .collect::<Vec<_>>()
    };
    let ok = eventually(60, || {
        for _ in 0..20 {
            pull_page(&d, &mut c, 40);
        }
        held() == want
    });
    let stale = held().iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(ok, "{stale} rows of the device differ from the server's");
}

/// Pulls a page of at most 40 changes from `cur` (no device), returning the
/// page's cursor and whether it carried the key list of subscription 1.
fn raw_pull(
    c: &mut postgres::Client,
    cur: &sync_core::cursor::Cursor,
) -> (sync_core::cursor::Cursor, bool) {
    let page: Value = c
        .query_one("SELECT sync_pull_json($1, 40)", &[&cur.encode()])
        .unwrap_or_else(|e| panic!("sync_pull: {}", err_text(&e)))
        .get(0);
    let next = page["cursor"].as_str().expect("a cursor");
    (
        sync_core::cursor::Cursor::decode(next).unwrap(),
        lists(&page, 1),
    )
}

#[test]
fn the_server_keeps_the_no_list_mark_only_for_one_uninterrupted_download() {
    let db = TestDb::new("streams_mark");
    let mut c = db.connect();
    items_table(&mut c, "g % 2");
    let fresh = sync_core::cursor::Cursor {
        v: 1,
        w: Some(sync_core::PAGE_FORMAT),
        q: vec![sync_core::cursor::Sub {
            i: 1,
            s: "items_by_group".into(),
            p: serde_json::from_str("{\"g\": 1}").unwrap(),
            e: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    // Downloads to the end from `cur`, running `during` after the first
    // two pages; returns whether the last page listed the keys, and the
    // mark after the first two pages.
    let run = |c: &mut postgres::Client,
               mut cur: sync_core::cursor::Cursor,
               during: &dyn Fn(&mut postgres::Client)|
     -> (bool, bool) {
        let mut kept = true;
        for page in 0..200 {
            if page == 2 {
                during(c);
            }
            let (next, listed) = raw_pull(c, &cur);
            if page == 2 {
                kept = next.q[0].e;
            }
            cur = next;
            if cur.q[0].b.is_none() && cur.q[0].r != sync_core::cursor::Pos::Start {
                assert!(!cur.q[0].e, "the mark outlived the download");
                return (listed, kept);
            }
        }
        panic!("the download did not end");
    };
    // One download from start to end: no list, the mark kept throughout.
    assert_eq!(run(&mut c, fresh.clone(), &|_| {}), (false, true));
    // Without the mark, the list ends it.
    let mut holding = fresh.clone();
    holding.q[0].e = false;
    assert!(
        run(&mut c, holding, &|_| {}).0,
        "no list ended a download without the mark"
    );
    // A rewrite of the table during a row-id download starts it over:
    // the list ends it.
    let rewrite = |c: &mut postgres::Client| c.batch_execute("VACUUM FULL items").unwrap();
    assert_eq!(run(&mut c, fresh.clone(), &rewrite), (true, false));
    // So does the stream defined again with another filter.
    let redefine = |c: &mut postgres::Client| {
        c.batch_execute(
            "SELECT sync_stream_drop('items_by_group');
             SELECT sync_stream('items_by_group', 'items', 'grp = :g AND id > 10');",
        )
        .unwrap()
    };
    assert_eq!(run(&mut c, fresh.clone(), &redefine), (true, false));
    // And a change of every row without a write (a column added with a
    // volatile default).
    let add = |c: &mut postgres::Client| {
        c.batch_execute("ALTER TABLE items ADD COLUMN r int DEFAULT (random() * 100)::int")
            .unwrap()
    };
    assert_eq!(run(&mut c, fresh, &add), (true, false));
}

#[test]
fn a_page_applied_over_a_stored_cursor_this_build_cannot_read_is_taken() {
    let db = TestDb::new("streams_unreadable");
    let mut c = db.connect();
    items_table(&mut c, "g % 2");
    let d = Device::new(&mut c, "streams_unreadable");
    subscribe_group_one(&d);
    let c0 = cursor(&d).map(|c| c.encode());
    let page: Value = c
        .query_one("SELECT sync_pull_json($1, 40)", &[&c0])
        .unwrap()
        .get(0);
    // A cursor of a format this build does not know (a newer server's)
    // is stored when the page arrives: the page is applied all the same,
    // without the no-key-list mark, which nothing vouches for any more.
    d.db.execute(
        "UPDATE _sync_meta SET value = 'c9.unreadable' WHERE key = 'cursor'",
        [],
    )
    .unwrap();
    d.call("SELECT sync_apply(?1)", Some(&page.to_string()));
    assert!(!cursor(&d).expect("a cursor").q[0].e);
    let want = group_one(&mut c);
    pull_items_until(&d, &mut c, &want);
}
