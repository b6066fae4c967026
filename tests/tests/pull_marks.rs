//! Write marks (pg_sync.last_writes): a pull reads only the tables written
//! since its cursor, and never skips a change for it, whatever the order in
//! which transactions write their tables, roll back savepoints, bypass the
//! tracking triggers or commit while pulls run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sync_tests::{eventually, pg_json, TestDb};

/// Rows of every table as a device built from pull pages would hold them.
#[derive(Default)]
struct Replica {
    cursor: Option<String>,
    rows: BTreeMap<(String, String), Value>,
}

impl Replica {
    /// Pulls until has_more is false.
    fn pull_all(&mut self, c: &mut postgres::Client) {
        loop {
            let p = pg_json(c, "SELECT sync_pull($1, 1000)", &[&self.cursor]);
            assert_eq!(p["resync_required"], false);
            for ch in p["changes"].as_array().unwrap() {
                let key = (
                    ch["table"].as_str().unwrap().to_string(),
                    ch["pk"]["id"].to_string(),
                );
                match ch["op"].as_str().unwrap() {
                    "upsert" => {
                        self.rows.insert(key, ch["row"].clone());
                    }
                    _ => {
                        self.rows.remove(&key);
                    }
                }
            }
            self.cursor = Some(p["cursor"].as_str().unwrap().to_string());
            if !p["has_more"].as_bool().unwrap() {
                return;
            }
        }
    }
}

/// Every row of tables t0..t{n-1}, keyed as the replica keys them.
fn server_rows(c: &mut postgres::Client, n: usize) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        for r in c
            .query(
                &format!("SELECT id::text, to_jsonb(t) - '_sync_xid' - '_sync_ver' FROM t{i} t"),
                &[],
            )
            .unwrap()
        {
            out.insert((format!("t{i}"), r.get::<_, String>(0)), r.get(1));
        }
    }
    out
}

fn tables(c: &mut postgres::Client, n: usize) {
    for i in 0..n {
        c.batch_execute(&format!(
            "CREATE TABLE t{i} (id int PRIMARY KEY, v text); SELECT sync_enable('t{i}');"
        ))
        .unwrap();
    }
}

#[test]
fn a_pull_reads_only_the_tables_written_since_its_cursor() {
    let db = TestDb::new("marks_reads");
    let mut c = db.connect();
    tables(&mut c, 30);
    c.batch_execute("INSERT INTO t3 VALUES (1, 'a'); INSERT INTO t17 VALUES (1, 'b');")
        .unwrap();
    let mut r = Replica::default();
    assert!(eventually(30, || {
        r.pull_all(&mut c);
        r.rows.len() == 2
    }));
    // The scans of this transaction's pull, per table.
    // (pg_stat_xact_user_tables also counts the backend's earlier
    // transactions until its statistics are flushed: the counts are taken
    // before and after the pull, in one transaction.)
    let scanned = |c: &mut postgres::Client, cursor: &Option<String>| -> (Vec<String>, Value) {
        let counts = |tx: &mut postgres::Transaction| -> BTreeMap<String, i64> {
            tx.query(
                "SELECT relname::text, idx_scan + seq_scan FROM pg_stat_xact_user_tables \
                 WHERE relname ~ '^t[0-9]+$'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        };
        let mut tx = c.transaction().unwrap();
        let before = counts(&mut tx);
        let p: Value = tx
            .query_one("SELECT sync_pull($1, 1000)::json", &[cursor])
            .unwrap()
            .get(0);
        let after = counts(&mut tx);
        tx.commit().unwrap();
        let names = after
            .into_iter()
            .filter(|(t, n)| before.get(t).copied().unwrap_or(0) < *n)
            .map(|(t, _)| t)
            .collect();
        (names, p)
    };
    // Once the horizon has passed the transactions that enabled the tables
    // (other tests' open transactions hold it back), a pull with nothing
    // new reads no synced table at all.
    assert!(eventually(30, || {
        let (names, p) = scanned(&mut c, &r.cursor);
        assert_eq!(p["changes"].as_array().unwrap().len(), 0);
        r.cursor = Some(p["cursor"].as_str().unwrap().to_string());
        names.is_empty()
    }));
    c.batch_execute("UPDATE t17 SET v = 'changed' WHERE id = 1")
        .unwrap();
    let mut got = None;
    assert!(eventually(30, || {
        let (names, p) = scanned(&mut c, &r.cursor);
        let n = p["changes"].as_array().unwrap().len();
        if n == 1 {
            got = Some((names, p));
        }
        n == 1
    }));
    let (names, p) = got.unwrap();
    assert_eq!(p["changes"][0]["row"]["v"], "changed");
    assert_eq!(names, vec!["t17"], "only the written table is read");
    r.cursor = Some(p["cursor"].as_str().unwrap().to_string());
    // Nothing written since: again no table is read.
    let (names, p) = scanned(&mut c, &r.cursor);
    assert_eq!(p["changes"].as_array().unwrap().len(), 0);
    assert!(names.is_empty(), "an idle pull read {names:?}");
}

#[test]
fn a_transaction_that_writes_a_table_after_a_pull_passed_it_is_not_skipped() {
    let db = TestDb::new("marks_late");
    let mut c = db.connect();
    tables(&mut c, 3);
    c.batch_execute("INSERT INTO t1 VALUES (2, 'old')").unwrap();
    let mut r = Replica::default();
    r.pull_all(&mut c);
    // The writer takes its xid on t0, then a pull moves every other table's
    // position up to a horizon at or below that xid...
    let mut w = db.connect();
    let mut tx = w.transaction().unwrap();
    tx.execute("INSERT INTO t0 VALUES (1, 'first')", &[])
        .unwrap();
    c.batch_execute("INSERT INTO t2 VALUES (9, 'other')")
        .unwrap();
    r.pull_all(&mut c);
    // ...and only then it updates t1 (the tracking trigger raises the
    // mark), in a savepoint it rolls back and again after it: the mark
    // raised in the savepoint stays.
    tx.batch_execute(
        "SAVEPOINT s; UPDATE t1 SET v = 'rolled back' WHERE id = 2; ROLLBACK TO SAVEPOINT s;
         UPDATE t1 SET v = 'kept' WHERE id = 2;",
    )
    .unwrap();
    r.pull_all(&mut c);
    tx.commit().unwrap();
    let server = server_rows(&mut c, 3);
    assert_eq!(server.len(), 3);
    assert!(eventually(30, || {
        r.pull_all(&mut c);
        r.rows == server
    }));
}

#[test]
fn rows_inserted_with_the_tracking_triggers_disabled_still_arrive() {
    let db = TestDb::new("marks_bypass");
    let mut c = db.connect();
    tables(&mut c, 2);
    let mut r = Replica::default();
    r.pull_all(&mut c);
    // The owner bypasses the tracking triggers: the _sync_xid default
    // still stamps the row and raises the table's mark.
    c.batch_execute(
        "ALTER TABLE t1 DISABLE TRIGGER USER;
         INSERT INTO t1 VALUES (5, 'bulk');
         ALTER TABLE t1 ENABLE ALWAYS TRIGGER zz_pg_sync_track,
             ENABLE ALWAYS TRIGGER zz_pg_sync_delete, ENABLE ALWAYS TRIGGER zz_pg_sync_truncate;",
    )
    .unwrap();
    assert!(eventually(30, || {
        r.pull_all(&mut c);
        r.rows.contains_key(&("t1".into(), "5".into()))
    }));
}

#[test]
fn a_renamed_schema_or_table_is_read_under_its_new_name() {
    let db = TestDb::new("marks_rename");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA app; CREATE TABLE app.notes (id int PRIMARY KEY, v text);
         SELECT sync_enable('app.notes'); INSERT INTO app.notes VALUES (1, 'a');",
    )
    .unwrap();
    let mut r = Replica::default();
    assert!(eventually(30, || {
        r.pull_all(&mut c);
        r.rows.len() == 1
    }));
    // The backend's description of the synced tables follows the rename.
    c.batch_execute("ALTER SCHEMA app RENAME TO app2; INSERT INTO app2.notes VALUES (2, 'b');")
        .unwrap();
    assert!(eventually(30, || {
        r.pull_all(&mut c);
        r.rows.len() == 2
    }));
    let s = pg_json(&mut c, "SELECT sync_schema()", &[]);
    assert_eq!(s["tables"][0]["name"], "notes");
}

#[test]
fn writers_across_many_tables_with_long_transactions_lose_nothing() {
    const TABLES: usize = 12;
    const WRITERS: usize = 4;
    let db = TestDb::new("marks_concurrent");
    let mut c = db.connect();
    tables(&mut c, TABLES);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let conn = db.conn_str();
        handles.push(std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            for i in 0..120u64 {
                // Each transaction writes a few tables in turn, some of them
                // long after it took its xid, so pulls pass the tables it
                // has not written yet.
                let mut tx = c.transaction().unwrap();
                for k in 0..3u64 {
                    let t = ((w as u64) * 5 + i * 7 + k * 3) % TABLES as u64;
                    let id = ((i * 13 + k) % 40) as i32;
                    if (i + k) % 6 == 0 {
                        tx.execute(&format!("DELETE FROM t{t} WHERE id = $1"), &[&id])
                            .unwrap();
                    } else {
                        tx.execute(
                            &format!(
                                "INSERT INTO t{t} VALUES ($1, $2) \
                                 ON CONFLICT (id) DO UPDATE SET v = excluded.v"
                            ),
                            &[&id, &format!("w{w}-{i}-{k}")],
                        )
                        .unwrap();
                    }
                    if w == 0 && i % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(150));
                    }
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
                r.pull_all(&mut c);
            }
            r
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let mut r = reader.join().unwrap();
    let server = server_rows(&mut c, TABLES);
    assert!(server.len() > 100);
    assert!(eventually(30, || {
        r.pull_all(&mut c);
        r.rows == server
    }));
}
