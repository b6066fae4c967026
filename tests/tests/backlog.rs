//! A long offline backlog: `sync_changes` costs what the batch costs, not
//! what the queue holds.
//!
//! A sync call that finds more than 5000 writes queued indexes the queue by
//! row (`_sync_changes_row` on `_changes(tbl, pk)`); the index is dropped
//! when the queue is empty again, so ordinary writes never maintain it.
//! With it, `sync_changes` reads the queue in seq order only until it has
//! `max` rows and fetches their other writes through the index, and
//! `sync_ack` and `sync_apply` look rows up the same way. The tests here
//! check the structure (the index comes and goes, the plans use it, a small
//! batch from a large queue is correct); the timing is a measurement, not a
//! test: run it with
//!
//! ```sh
//! cargo build --manifest-path sqlite_sync/Cargo.toml --release
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
fn queue_writes(d: &Device, n: usize, prefix: &str) {
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
                upd.execute([format!("{prefix}{:06}", (i * 7919) % inserted)])
                    .unwrap();
            } else {
                ins.execute(rusqlite::params![
                    format!("{prefix}{inserted:06}"),
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

fn has_row_index(d: &Device) -> bool {
    d.rows("SELECT count(*) FROM sqlite_master WHERE name = '_sync_changes_row'")[0][0] == 1
}

#[test]
fn a_backlog_is_read_through_the_row_index() {
    let (_db, mut c) = server_with_notes("backlog_plan");
    let d = Device::new(&mut c, "backlog_plan");
    // A short queue is not indexed: writes do not maintain an index.
    queue_writes(&d, 100, "s");
    d.call("SELECT sync_changes()", None);
    assert!(!has_row_index(&d));
    d.push(&mut c);
    // A backlog is, from the first sync call on.
    queue_writes(&d, 6000, "n");
    assert!(!has_row_index(&d));
    d.call("SELECT sync_changes(10)", None);
    assert!(has_row_index(&d), "the first sync call indexes the backlog");
    // The shapes of the statements sync_changes, sync_ack, sync_apply and
    // the migrations run against the queue.
    for (sql, want) in [
        // All writes of one row, in seq order.
        (
            "SELECT seq, op, mask, hlc, batch FROM _changes \
             WHERE tbl = 'notes' AND pk IS 'n1' AND op <> 'mark' ORDER BY seq",
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
            "SELECT seq, op, mask, pk FROM _changes WHERE batch = 5",
            "USING INDEX _sync_changes_batch (batch=?)",
        ),
        // The high-water marks.
        (
            "DELETE FROM _changes WHERE op = 'mark' AND seq < 9",
            "USING INDEX _sync_changes_mark (seq<?)",
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
    // The batch scan reads the queue in seq order (its rowid) and stops
    // after max rows: no sort.
    let p = plan(
        &d,
        "SELECT seq, tbl, pk FROM _changes WHERE batch IS NULL AND op <> 'mark' ORDER BY seq",
    );
    assert_eq!(p, vec!["SCAN _changes".to_string()], "{p:?}");
    // Synced to the end, the queue is empty and the index gone.
    loop {
        d.push(&mut c);
        if d.call("SELECT sync_status()", None)["pending"] == 0 {
            break;
        }
    }
    assert!(!has_row_index(&d), "dropped once the queue is empty");
    assert_eq!(
        d.rows("SELECT count(*) FROM _changes WHERE op <> 'mark'")[0][0],
        0
    );
}

/// A push finds the rows it names by key, one index probe each, however
/// big the table has grown since its statements were planned. Postgres
/// caches a generic plan of a statement from its sixth run on; a join of
/// the pushed rows with the table, planned while the table was small,
/// hashes the whole table on every later push (and a lookup of the stored
/// results hashes every result the client ever had), so each push cost
/// what the table holds. The plans are read with auto_explain.
#[test]
fn a_push_probes_its_rows_by_key_however_big_the_table_grew() {
    let (db, mut c) = server_with_notes("push_probe");
    let d = Device::new(&mut c, "push_probe");
    let plans = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = plans.clone();
    let mut config: postgres::Config = db.conn_str().parse().unwrap();
    config.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()));
    let mut traced = config.connect(postgres::NoTls).unwrap();
    // Seven small pushes from one backend: its plans are cached while the
    // table is small. Each push updates and deletes rows of earlier ones.
    for i in 0..7 {
        queue_writes(&d, 20, &format!("w{i}_"));
        if i > 0 {
            d.db.execute_batch(&format!(
                "UPDATE notes SET body = 'again' WHERE id = 'w{p}_000001';
                 DELETE FROM notes WHERE id = 'w{p}_000002';",
                p = i - 1
            ))
            .unwrap();
        }
        d.push(&mut traced);
    }
    // The table grows well past those plans (no ANALYZE runs).
    c.batch_execute(
        "INSERT INTO notes (id, body, n) SELECT 'big' || g, 'x', g FROM generate_series(1, 30000) g",
    )
    .unwrap();
    traced
        .batch_execute(
            "LOAD 'auto_explain';
             SET auto_explain.log_min_duration = 0;
             SET auto_explain.log_nested_statements = on;
             SET client_min_messages = log;",
        )
        .unwrap();
    queue_writes(&d, 20, "w7_");
    d.db.execute_batch(
        "UPDATE notes SET body = 'again' WHERE id IN ('w6_000001', 'w5_000003');
         DELETE FROM notes WHERE id IN ('w6_000002', 'w4_000004');",
    )
    .unwrap();
    let before = plans.lock().unwrap().len();
    let r = d.push(&mut traced);
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "applied"),
        "{r}"
    );
    let got: Vec<String> = plans.lock().unwrap()[before..].to_vec();
    let of_sync: Vec<&String> = got
        .iter()
        .filter(|p| {
            p.contains("public.notes")
                || p.contains("pg_sync.push_results")
                || p.contains("pg_sync.tombstones")
        })
        .collect();
    // Read, lock, update, delete, insert and the results: all seen.
    for kind in [
        "FOR UPDATE",
        "UPDATE public.notes",
        "DELETE FROM public.notes",
        "INSERT INTO public.notes",
        "pg_sync.push_results",
    ] {
        assert!(
            of_sync.iter().any(|p| p.contains(kind)),
            "no traced statement with {kind:?} in {got:#?}"
        );
    }
    for p in &of_sync {
        for bad in [
            "Seq Scan on notes",
            "Seq Scan on push_results",
            "Seq Scan on tombstones",
            "Hash Join",
            "Merge Join",
            "Filter: (seq = ANY",
        ] {
            assert!(!p.contains(bad), "a push statement does {bad:?}:\n{p}");
        }
    }
    // The device and the server agree.
    d.pull(&mut c);
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes", &[])
        .unwrap()
        .get(0);
    assert_eq!(d.rows("SELECT count(*) FROM notes")[0][0], n);
}

#[test]
fn a_small_batch_from_a_large_queue_takes_the_oldest_rows_whole() {
    let (_db, mut c) = server_with_notes("backlog_small");
    let d = Device::new(&mut c, "backlog_small");
    queue_writes(&d, 7000, "n");
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
    assert_eq!(pushed, 6300, "one change per row");
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 6300);
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

/// Times of one backlog synced with `max`.
struct Run {
    /// sync_changes and sync_ack together.
    device: Duration,
    /// sync_ack alone.
    ack: Duration,
    /// sync_push (the server).
    push: Duration,
    /// Everything, sync_push included.
    total: Duration,
    calls: usize,
    /// The first sync_changes (the whole backlog queued).
    first_changes: Duration,
}

fn sync_backlog(writes: usize, max: i64, tag: &str) -> Run {
    let (_db, mut c) = server_with_notes(&format!("backlog_{tag}"));
    let d = Device::new(&mut c, &format!("backlog_{tag}"));
    // An app's usual settings: each sync call is one transaction, and WAL
    // with synchronous=NORMAL makes its commit cheap.
    d.db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    queue_writes(&d, writes, "n");
    let mut run = Run {
        device: Duration::ZERO,
        ack: Duration::ZERO,
        push: Duration::ZERO,
        total: Duration::ZERO,
        calls: 0,
        first_changes: Duration::ZERO,
    };
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        let text: String =
            d.db.query_row("SELECT sync_changes(?1)", [max], |r| r.get(0))
                .unwrap();
        let built = t0.elapsed();
        if run.calls == 0 {
            run.first_changes = built;
        }
        run.device += built;
        // The documents go from one database to the other as text, as an
        // app forwards them.
        if text.contains("\"changes\":[]") {
            break;
        }
        run.calls += 1;
        let t2 = Instant::now();
        let r: String = c
            .query_one("SELECT sync_push($1::text::jsonb)::text", &[&text])
            .unwrap_or_else(|e| panic!("sync_push: {}", err_text(&e)))
            .get(0);
        run.push += t2.elapsed();
        let t1 = Instant::now();
        let _: String =
            d.db.query_row("SELECT sync_ack(?1)", [&r], |row| row.get(0))
                .unwrap();
        run.device += t1.elapsed();
        run.ack += t1.elapsed();
    }
    run.total = start.elapsed();
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    run
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// A count from the environment, or `default`.
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn summary(what: &str, rs: &[Run], f: impl Fn(&Run) -> Duration) -> String {
    format!(
        "median {what} {} ms [{}]",
        ms(median(rs.iter().map(&f).collect())),
        rs.iter().map(|r| ms(f(r))).collect::<Vec<_>>().join(", ")
    )
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (see the module doc)"]
fn backlog_timing() {
    let (writes, runs) = (
        env_usize("BACKLOG_WRITES", 50_000),
        env_usize("BACKLOG_RUNS", 5),
    );
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
                "run {run} max {max}: {} calls, device {} ms (sync_ack {} ms, first \
                 sync_changes {} ms), sync_push {} ms, total {} ms",
                r.calls,
                ms(r.device),
                ms(r.ack),
                ms(r.first_changes),
                ms(r.push),
                ms(r.total)
            );
            by_max[k].1.push(r);
        }
    }
    for (max, rs) in &by_max {
        println!(
            "max {max}: {}; {}; {}; {}; {}",
            summary("device", rs, |r| r.device),
            summary("sync_ack", rs, |r| r.ack),
            summary("sync_push", rs, |r| r.push),
            summary("total", rs, |r| r.total),
            summary("first sync_changes", rs, |r| r.first_changes),
        );
    }
}

/// The device's side alone: the same backlog, each batch answered by the
/// test itself (every change applied, its values as the row), so the
/// server's time and its noise stay out of the figures.
fn device_only(writes: usize, max: i64) -> Run {
    let dir = std::env::temp_dir().join(format!("pg_sync_backlog_{}_{max}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", dir.display()));
    }
    let d = Device::open_new(&dir);
    let db = &d.db;
    let schema = serde_json::json!({"format": 1, "version": 1, "tables": [{"name": "notes",
        "pk": ["id"], "columns": [{"name": "id", "type": "text", "nullable": false},
        {"name": "body", "type": "text"}, {"name": "n", "type": "integer"}]}]});
    let _: String = db
        .query_row("SELECT sync_init(?1)", [schema.to_string()], |r| r.get(0))
        .unwrap();
    db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    queue_writes(&d, writes, "n");
    let mut run = Run {
        device: Duration::ZERO,
        ack: Duration::ZERO,
        push: Duration::ZERO,
        total: Duration::ZERO,
        calls: 0,
        first_changes: Duration::ZERO,
    };
    loop {
        let t0 = Instant::now();
        let text: String =
            d.db.query_row("SELECT sync_changes(?1)", [max], |r| r.get(0))
                .unwrap();
        let built = t0.elapsed();
        if run.calls == 0 {
            run.first_changes = built;
        }
        run.device += built;
        let batch: Value = serde_json::from_str(&text).unwrap();
        let changes = batch["changes"].as_array().unwrap();
        if changes.is_empty() {
            break;
        }
        run.calls += 1;
        let results: Vec<Value> = changes
            .iter()
            .map(|c| {
                serde_json::json!({"seq": c["seq"], "table": "notes", "pk": c["pk"],
                    "status": "applied", "row": c["cols"], "ver": vec![c["hlc"].clone(); 3]})
            })
            .collect();
        let r = serde_json::json!({"format": 1, "client_id": batch["client_id"],
            "results": results, "columns": {"notes": ["id", "body", "n"]}})
        .to_string();
        let t1 = Instant::now();
        let _: String =
            d.db.query_row("SELECT sync_ack(?1)", [&r], |row| row.get(0))
                .unwrap();
        run.device += t1.elapsed();
        run.ack += t1.elapsed();
    }
    run.total = run.device;
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    run
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (see the module doc)"]
fn backlog_timing_device_only() {
    let (writes, runs) = (
        env_usize("BACKLOG_WRITES", 50_000),
        env_usize("BACKLOG_RUNS", 5),
    );
    println!(
        "backlog of {writes} writes, device only, library {}",
        sync_tests::sqlite::lib_path().display()
    );
    let mut by_max: Vec<(i64, Vec<Run>)> = vec![(1000, Vec::new()), (5000, Vec::new())];
    for run in 0..runs {
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for k in order {
            let max = by_max[k].0;
            let r = device_only(writes, max);
            println!(
                "run {run} max {max}: {} calls, device {} ms (sync_ack {} ms, first \
                 sync_changes {} ms)",
                r.calls,
                ms(r.device),
                ms(r.ack),
                ms(r.first_changes),
            );
            by_max[k].1.push(r);
        }
    }
    for (max, rs) in &by_max {
        println!(
            "max {max}: {}; {}; {}",
            summary("device", rs, |r| r.device),
            summary("sync_ack", rs, |r| r.ack),
            summary("first sync_changes", rs, |r| r.first_changes),
        );
    }
}
