//! sync_pull against a real cluster: snapshot paging, the splice to
//! incremental pulls, tombstones, and concurrent writers with long
//! transactions (no committed change is ever skipped).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sync_tests::{err_text, eventually, pg_json, TestDb};

/// A client replica built only from pull pages.
#[derive(Default)]
struct Replica {
    cursor: Option<String>,
    rows: BTreeMap<String, Value>,
}

impl Replica {
    /// Pulls until has_more is false; returns the number of changes seen.
    fn pull_all(&mut self, c: &mut postgres::Client, page: i32) -> usize {
        let mut seen = 0;
        loop {
            let p = pg_json(c, "SELECT sync_pull($1, $2)", &[&self.cursor, &page]);
            assert_eq!(p["format"], 1);
            assert_eq!(p["resync_required"], false);
            let changes = p["changes"].as_array().unwrap();
            assert!(changes.len() <= page as usize);
            for ch in changes {
                let id = ch["pk"]["id"].to_string();
                match ch["op"].as_str().unwrap() {
                    "upsert" => {
                        self.rows.insert(id, ch["row"].clone());
                    }
                    "delete" => {
                        self.rows.remove(&id);
                    }
                    other => panic!("unknown op {other}"),
                }
            }
            seen += changes.len();
            self.cursor = Some(p["cursor"].as_str().unwrap().to_string());
            if !p["has_more"].as_bool().unwrap() {
                return seen;
            }
        }
    }
}

fn server_rows(c: &mut postgres::Client, table: &str) -> BTreeMap<String, Value> {
    c.query(
        &format!("SELECT to_jsonb(t) - '_sync_xid' - '_sync_ver' FROM {table} t"),
        &[],
    )
    .unwrap()
    .into_iter()
    .map(|r| {
        let v: Value = r.get(0);
        (v["id"].to_string(), v)
    })
    .collect()
}

fn jsonb_rows_equal(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) {
    assert_eq!(a.len(), b.len(), "row counts differ");
    for (k, v) in a {
        assert_eq!(Some(v), b.get(k), "row {k} differs");
    }
}

#[test]
fn snapshot_paging_and_splice() {
    let db = TestDb::new("pull_splice");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
         INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 2500) g;
         SELECT sync_enable('items');",
    )
    .unwrap();
    let mut r = Replica::default();
    // The first pull pages through the existing rows.
    assert_eq!(r.pull_all(&mut c, 1000), 2500);
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
    // Nothing new: an incremental pull is empty.
    assert_eq!(r.pull_all(&mut c, 1000), 0);
    c.batch_execute(
        "UPDATE items SET qty = qty + 1 WHERE id <= 10;
         DELETE FROM items WHERE id BETWEEN 11 AND 15;
         INSERT INTO items VALUES (9999, 'new', 1);",
    )
    .unwrap();
    // Each row's latest state once: 10 updates, 5 deletes, 1 insert.
    let mut seen = 0;
    assert!(eventually(30, || {
        seen += r.pull_all(&mut c, 3);
        seen >= 16
    }));
    assert_eq!(seen, 16);
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
    // Delete and re-insert in one transaction: tombstone first, then row.
    c.batch_execute(
        "BEGIN; DELETE FROM items WHERE id = 1; INSERT INTO items VALUES (1, 'again', 7); COMMIT;",
    )
    .unwrap();
    assert!(eventually(30, || {
        r.pull_all(&mut c, 1);
        r.rows["1"]["name"] == "again"
    }));
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
}

#[test]
fn open_transaction_is_not_skipped() {
    let db = TestDb::new("pull_open_tx");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text); SELECT sync_enable('items');",
    )
    .unwrap();
    let mut r = Replica::default();
    r.pull_all(&mut c, 100);
    // A transaction takes an xid, writes, and stays open...
    let mut slow = db.connect();
    let mut tx = slow.transaction().unwrap();
    tx.execute("INSERT INTO items VALUES (1, 'slow')", &[])
        .unwrap();
    // ...while later transactions commit.
    c.batch_execute("INSERT INTO items VALUES (2, 'fast')")
        .unwrap();
    r.pull_all(&mut c, 100);
    // The fast row is held back: handing it out would move the cursor past
    // the open transaction.
    assert!(!r.rows.contains_key("1"));
    tx.commit().unwrap();
    assert!(eventually(30, || {
        r.pull_all(&mut c, 100);
        r.rows.len() == 2
    }));
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
}

#[test]
fn concurrent_writers_never_lose_a_change() {
    const WRITERS: usize = 8;
    const WRITES_PER_WRITER: usize = 12_500;
    let db = TestDb::new("pull_concurrent");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, n int);
         SELECT sync_enable('items');",
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let conn = db.conn_str();
        handles.push(std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            let mut written = 0;
            let mut i = 0u64;
            while written < WRITES_PER_WRITER {
                i += 1;
                // Some transactions stay open for seconds (writers 0 and 1
                // hold one every 40 batches), others are short batches.
                let mut tx = c.transaction().unwrap();
                let batch = 1 + (i % 50) as usize;
                for k in 0..batch {
                    let id = ((w * 1_000_003 + (i as usize) * 7919 + k * 31) % 20_000) as i32;
                    match (i + k as u64) % 10 {
                        0 => {
                            tx.execute("DELETE FROM items WHERE id = $1", &[&id]).unwrap();
                        }
                        _ => {
                            tx.execute(
                                "INSERT INTO items VALUES ($1, $2, 1) ON CONFLICT (id) DO UPDATE SET name = excluded.name, n = items.n + 1",
                                &[&id, &format!("w{w}-{i}-{k}")],
                            )
                            .unwrap();
                        }
                    }
                }
                written += batch;
                if w < 2 && i.is_multiple_of(40) {
                    std::thread::sleep(Duration::from_millis(500 + (i * 37 % 2000)));
                }
                tx.commit().unwrap();
            }
        }));
    }
    let reader = {
        let conn = db.conn_str();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            let mut r = Replica::default();
            while !stop.load(Ordering::SeqCst) {
                r.pull_all(&mut c, 500);
            }
            r
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let mut r = reader.join().unwrap();
    // Pull after all writers committed, until the horizon passes them.
    let server = server_rows(&mut c, "items");
    eventually(30, || {
        r.pull_all(&mut c, 5000);
        r.rows == server
    });
    assert!(server.len() > 1000);
    jsonb_rows_equal(&server, &r.rows);
}

#[test]
fn bad_cursor_and_page_size_are_clear_errors() {
    let db = TestDb::new("pull_bad");
    let mut c = db.connect();
    let e = c
        .query_one("SELECT sync_pull('not-a-cursor')", &[])
        .unwrap_err();
    assert!(err_text(&e).contains("invalid cursor"), "{e}");
    let e = c.query_one("SELECT sync_pull(NULL, 0)", &[]).unwrap_err();
    assert!(err_text(&e).contains("max_changes must be between"), "{e}");
}
