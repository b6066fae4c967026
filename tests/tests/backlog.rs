//! A long offline backlog: `sync_changes` costs what the batch costs, not
//! what the queue holds.
//!
//! `sync_changes` reads the queue in seq order only until it has `max` rows
//! and fetches the other writes of those rows through the index on
//! `_changes(tbl, pk)`; `sync_ack` and `sync_apply` look rows up through the
//! same index. The tests here check the structure (the plans use the
//! index, a small batch from a large queue is correct); the timing is a
//! measurement, not a test: run it with
//!
//! ```sh
//! cargo build -p sqlite_sync --release
//! SQLITE_SYNC_LIB=$PWD/target/release/libsqlite_sync.so \
//!   cargo test -p sync_tests --test backlog -- --ignored --nocapture
//! ```
//!
//! (`BACKLOG_WRITES`, default 50000, and `BACKLOG_RUNS`, default 5.)

use std::time::{Duration, Instant};

use postgres::Client;
use serde_json::Value;
use sync_tests::e2e::Device;
use sync_tests::{err_text, TestDb};

/// Rows of `EXPLAIN QUERY PLAN sql` (the `detail` column).
fn plan(d: &Device, sql: &str) -> Vec<String> {
    d.rows(&format!("EXPLAIN QUERY PLAN {sql}"))
        .into_iter()
        .map(|r| r[3].as_str().unwrap_or_default().to_string())
        .collect()
}

fn server_with_notes(prefix: &str) -> (TestDb, Client) {
    let db = TestDb::new(prefix);
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE notes (id text PRIMARY KEY, body text, n int);
         SELECT sync_enable('notes');",
    )
    .unwrap();
    (db, c)
}

/// Queues `n` writes on the device: inserts of new rows, and every tenth
/// write an update of an earlier one.
fn queue_writes(d: &Device, n: usize) {
    d.db.execute_batch("BEGIN").unwrap();
    {
        let mut ins =
            d.db.prepare("INSERT INTO notes (id, body, n) VALUES (?1, ?2, ?3)")
                .unwrap();
        let mut upd =
            d.db.prepare("UPDATE notes SET n = n + 1 WHERE id = ?1")
                .unwrap();
        let mut inserted = 0usize;
        for i in 0..n {
            if i % 10 == 9 && inserted > 0 {
                upd.execute([format!("n{:06}", (i * 7919) % inserted)])
                    .unwrap();
            } else {
                ins.execute(rusqlite::params![
                    format!("n{inserted:06}"),
                    format!("body of note {inserted}"),
                    i as i64
                ])
                .unwrap();
                inserted += 1;
            }
        }
    }
    d.db.execute_batch("COMMIT").unwrap();
}

#[test]
fn the_queue_is_read_through_its_indexes() {
    let (_db, mut c) = server_with_notes("backlog_plan");
    let d = Device::new(&mut c, "backlog_plan");
    let idx: Vec<Vec<Value>> =
        d.rows("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '_changes' ORDER BY name");
    let names: Vec<&str> = idx.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert!(
        names.contains(&"_sync_changes_row"),
        "the queue has an index by row: {names:?}"
    );
    // The shapes of the statements sync_changes, sync_ack, sync_apply and
    // the migrations run against the queue.
    for (sql, want) in [
        // All writes of one row, in seq order.
        (
            "SELECT seq, op, mask, hlc, batch FROM _changes \
             WHERE tbl = 'notes' AND pk = 'n1' AND op <> 'mark' ORDER BY seq",
            "USING INDEX _sync_changes_row (tbl=? AND pk=?)",
        ),
        // A composite key is looked up by the expression the triggers store.
        (
            "SELECT seq FROM _changes WHERE tbl = 'notes' AND pk = json_array('a', 1) \
             AND op <> 'mark' ORDER BY seq",
            "USING INDEX _sync_changes_row (tbl=? AND pk=?)",
        ),
        // The rows a batch carried.
        (
            "SELECT seq, op, mask, tbl, pk FROM _changes WHERE batch = 5",
            "USING INDEX _sync_changes_batch (batch=?)",
        ),
        // The high-water marks.
        (
            "DELETE FROM _changes WHERE tbl = '' AND op = 'mark' AND seq < 9",
            "USING INDEX _sync_changes_row (tbl=?)",
        ),
        // The writes of one table (migrations).
        (
            "SELECT seq, mask, op FROM _changes WHERE tbl = 'notes' AND op <> 'mark'",
            "USING INDEX _sync_changes_row (tbl=?)",
        ),
    ] {
        let p = plan(&d, sql);
        assert!(
            p.iter().any(|l| l.contains(want)),
            "{sql}\nplan: {p:?}\nwant: {want}"
        );
        assert!(
            !p.iter()
                .any(|l| l.starts_with("SCAN") || l.contains("TEMP B-TREE")),
            "{sql}\nplan: {p:?}"
        );
    }
    // The batch scan reads the queue in seq order (its rowid), and stops
    // after max rows: no sort, no scan of anything else.
    let p = plan(
        &d,
        "SELECT seq, tbl, pk FROM _changes WHERE batch IS NULL AND op <> 'mark' ORDER BY seq",
    );
    assert_eq!(p, vec!["SCAN _changes".to_string()], "{p:?}");
}

#[test]
fn a_small_batch_from_a_large_queue_takes_the_oldest_rows_whole() {
    let (_db, mut c) = server_with_notes("backlog_small");
    let d = Device::new(&mut c, "backlog_small");
    queue_writes(&d, 3000);
    // A row written first and last: its later writes go with it.
    d.db.execute_batch(
        "UPDATE notes SET body = 'last' WHERE id = 'n000000';
         INSERT INTO notes (id, body) VALUES ('gone', 'x');
         DELETE FROM notes WHERE id = 'gone';",
    )
    .unwrap();
    let mut pushed = 0usize;
    let mut first = true;
    loop {
        let batch = d.call("SELECT sync_changes(100)", None);
        let ch = batch["changes"].as_array().unwrap().clone();
        if ch.is_empty() {
            break;
        }
        assert!(ch.len() <= 100);
        let seqs: Vec<i64> = ch.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs increase");
        if first {
            // The oldest rows go first, each with all its writes (so the
            // row written first and last is the batch's last change: a
            // change's seq is its row's latest write).
            assert_eq!(ch.last().unwrap()["pk"]["id"], "n000000");
            let n0 = ch.iter().find(|c| c["pk"]["id"] == "n000000").unwrap();
            assert_eq!(n0["op"], "insert");
            assert_eq!(n0["cols"]["body"], "last", "with its later writes");
            first = false;
        }
        assert!(
            ch.iter().all(|c| c["pk"]["id"] != "gone"),
            "an insert and delete of a row the server never saw sends nothing"
        );
        pushed += ch.len();
        let result: Value = c
            .query_one("SELECT sync_push($1)", &[&batch])
            .unwrap_or_else(|e| panic!("sync_push: {}", err_text(&e)))
            .get(0);
        let summary = d.call("SELECT sync_ack(?1)", Some(&result.to_string()));
        assert_eq!(summary["rejected"], 0, "{summary}");
    }
    assert_eq!(pushed, 2700, "one change per row");
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2700);
    let last: String = c
        .query_one("SELECT body FROM notes WHERE id = 'n000000'", &[])
        .unwrap()
        .get(0);
    assert_eq!(last, "last");
    assert_eq!(
        d.rows("SELECT count(*) FROM _changes WHERE op <> 'mark'")[0][0],
        0
    );
}

/// Times on the device and in all for one backlog synced with `max`.
struct Run {
    device: Duration,
    total: Duration,
    calls: usize,
    per_call_first: Duration,
}

fn sync_backlog(writes: usize, max: i64, tag: &str) -> Run {
    let (_db, mut c) = server_with_notes(&format!("backlog_{tag}"));
    let d = Device::new(&mut c, &format!("backlog_{tag}"));
    queue_writes(&d, writes);
    let mut device = Duration::ZERO;
    let mut calls = 0usize;
    let mut per_call_first = Duration::ZERO;
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        let text: String =
            d.db.query_row("SELECT sync_changes(?1)", [max], |r| r.get(0))
                .unwrap();
        let built = t0.elapsed();
        if calls == 0 {
            per_call_first = built;
        }
        device += built;
        let batch: Value = serde_json::from_str(&text).unwrap();
        if batch["changes"].as_array().unwrap().is_empty() {
            break;
        }
        calls += 1;
        let result: Value = c
            .query_one("SELECT sync_push($1)", &[&batch])
            .unwrap_or_else(|e| panic!("sync_push: {}", err_text(&e)))
            .get(0);
        let t1 = Instant::now();
        let r = result.to_string();
        let _: String =
            d.db.query_row("SELECT sync_ack(?1)", [&r], |row| row.get(0))
                .unwrap();
        device += t1.elapsed();
    }
    let total = start.elapsed();
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    Run {
        device,
        total,
        calls,
        per_call_first,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (see the module doc)"]
fn backlog_timing() {
    let writes: usize = std::env::var("BACKLOG_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let runs: usize = std::env::var("BACKLOG_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "backlog of {writes} writes, library {}",
        sync_tests::sqlite::lib_path().display()
    );
    let mut by_max: Vec<(i64, Vec<Run>)> = vec![(1000, Vec::new()), (5000, Vec::new())];
    for run in 0..runs {
        // Alternate the order so neither setting always runs first.
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for k in order {
            let max = by_max[k].0;
            let r = sync_backlog(writes, max, &format!("{max}_{run}"));
            println!(
                "run {run} max {max}: {} calls, device {} ms (first sync_changes {} ms), total {} ms",
                r.calls,
                ms(r.device),
                ms(r.per_call_first),
                ms(r.total)
            );
            by_max[k].1.push(r);
        }
    }
    for (max, rs) in &by_max {
        println!(
            "max {max}: median device {} ms [{}], median total {} ms [{}], median first sync_changes {} ms",
            ms(median(rs.iter().map(|r| r.device).collect())),
            rs.iter().map(|r| ms(r.device)).collect::<Vec<_>>().join(", "),
            ms(median(rs.iter().map(|r| r.total).collect())),
            rs.iter().map(|r| ms(r.total)).collect::<Vec<_>>().join(", "),
            ms(median(rs.iter().map(|r| r.per_call_first).collect())),
        );
    }
}
