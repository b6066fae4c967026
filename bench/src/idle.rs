//! P12: what a pull costs when nothing (or one table) changed, with 1, 50
//! and 500 synced tables, and what `sync_schema()` costs with 500.
//!
//! Each table count gets a database of its own (10 rows per table). A
//! device catches up, then pulls in a loop from the end: the round trip of
//! `sync_pull_json(cursor, 1000, client_id)` as a client sees it, against a
//! `SELECT 1` round trip on the same connection in the same run (the floor
//! of any call). Then one table is written before each pull: the pull's
//! cost should follow the tables that changed, not those synced.

use std::time::{Duration, Instant};

use postgres::Client;

use crate::cluster::BenchCluster;
use crate::pg::{create_db, page_meta};
use crate::results::{median, quantile, Check, Figure};
use crate::Config;

/// Table counts measured.
const COUNTS: [usize; 3] = [1, 50, 500];
/// Timed calls per measurement.
const CALLS: usize = 300;

/// Creates `n` synced tables of 10 rows each.
fn setup(c: &mut Client, n: usize) {
    let sql = format!(
        "DO $$ BEGIN FOR i IN 1..{n} LOOP
           EXECUTE format('CREATE TABLE idle_%s (id bigint PRIMARY KEY, title text, n int)', i);
           EXECUTE format('INSERT INTO idle_%s SELECT g, ''row '' || g, g FROM generate_series(1, 10) g', i);
           PERFORM sync_enable(format('idle_%s', i)::regclass);
         END LOOP; END $$"
    );
    c.batch_execute(&sql).expect("create the synced tables");
}

/// Pulls from `cursor` to the end; returns the last cursor and the changes.
fn catch_up(c: &mut Client, cursor: Option<String>) -> (String, usize) {
    let stmt = c
        .prepare("SELECT sync_pull_json($1, 1000, 'idle-bench')::text")
        .unwrap();
    let mut cursor = cursor;
    let mut n = 0;
    loop {
        let text: String = c.query_one(&stmt, &[&cursor]).unwrap().get(0);
        n += crate::pg::page_changes(&text);
        let (cur, more) = page_meta(&text);
        cursor = Some(cur);
        if !more {
            return (cursor.unwrap_or_default(), n);
        }
    }
}

/// Times `CALLS` calls of `f`, in ms.
fn timed(mut f: impl FnMut()) -> Vec<f64> {
    (0..CALLS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// The P12 figures.
pub fn p12(cluster: &BenchCluster, _cfg: &Config) -> Vec<Figure> {
    let mut figs = Vec::new();
    let mut one_changed_small = None;
    for n in COUNTS {
        let db = format!("bench_idle_{n}");
        let mut c = create_db(cluster, &db);
        setup(&mut c, n);
        let (mut cursor, rows) = catch_up(&mut c, Some(crate::pg::device_cursor()));
        assert_eq!(rows, n * 10, "P12: the first sync of {n} tables");
        // Until the horizon has passed the transactions that enabled the
        // tables, their marks are above the cursor and they are read again.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let (next, _) = catch_up(&mut c, Some(cursor.clone()));
            cursor = next;
            std::thread::sleep(Duration::from_millis(50));
            let (again, _) = catch_up(&mut c, Some(cursor.clone()));
            if again == cursor {
                break;
            }
            cursor = again;
        }
        let pull = c
            .prepare("SELECT sync_pull_json($1, 1000, 'idle-bench')::text")
            .unwrap();
        let one = c.prepare("SELECT 1").unwrap();
        // Warm both statements, then interleave blocks of each.
        for _ in 0..20 {
            let _: String = c.query_one(&pull, &[&cursor]).unwrap().get(0);
            c.query_one(&one, &[]).unwrap();
        }
        let mut idle = Vec::new();
        let mut floor = Vec::new();
        for _ in 0..3 {
            idle.extend(timed(|| {
                let text: String = c.query_one(&pull, &[&cursor]).unwrap().get(0);
                debug_assert_eq!(crate::pg::page_changes(&text), 0);
            }));
            floor.extend(timed(|| {
                c.query_one(&one, &[]).unwrap();
            }));
        }
        let cursor_kb = cursor.len() as f64 / 1024.0;
        let mut f = Figure::new(
            "P12",
            &format!(
                "Idle pull: sync_pull_json(cursor, 1000, client_id) with nothing new, {n} synced table{} (round trip, p50)",
                if n == 1 { "" } else { "s" }
            ),
            "ms",
        )
        .label(format!("P12 idle pull, {n} tables"))
        .baseline_is("`SELECT 1` round trip on the same connection")
        .target(Check::value_lt(2.0))
        .note(format!(
            "{} calls, p99 {:.2} ms; the cursor is {cursor_kb:.1} kB (sent and returned by every call)",
            idle.len(),
            quantile(&idle, 0.99)
        ));
        f.value = Some(median(&idle));
        f.baseline = Some(median(&floor));
        f.extra.push(("p99".into(), quantile(&idle, 0.99)));
        f.runs = idle;
        f.baseline_runs = floor;
        figs.push(f);

        // One table written before each pull: the pull reads that table.
        let mut k = 0usize;
        let mut changed = Vec::new();
        for _ in 0..CALLS {
            k += 1;
            let t = 1 + k % n;
            c.execute(&format!("UPDATE idle_{t} SET n = n + 1 WHERE id = 1"), &[])
                .unwrap();
            // The horizon passes the update almost at once on a quiet
            // cluster; a pull that does not see it yet is timed too.
            let t0 = Instant::now();
            let text: String = c.query_one(&pull, &[&cursor]).unwrap().get(0);
            changed.push(t0.elapsed().as_secs_f64() * 1000.0);
            let (cur, _) = page_meta(&text);
            cursor = cur;
        }
        if n == COUNTS[0] {
            one_changed_small = Some(changed.clone());
        }
        let mut f = Figure::new(
            "P12",
            &format!(
                "Pull after one table was written, {n} synced table{} (round trip, p50)",
                if n == 1 { "" } else { "s" }
            ),
            "ms",
        )
        .label(format!("P12 one table changed, {n} tables"))
        .baseline_is("the same with 1 synced table")
        .note(format!(
            "{} pulls, each after an autocommit UPDATE of one row of one table (round robin); p99 {:.2} ms",
            changed.len(),
            quantile(&changed, 0.99)
        ));
        f.value = Some(median(&changed));
        if let Some(b) = &one_changed_small {
            f.baseline = Some(median(b));
            f.ratio = Some(median(&changed) / median(b));
            f.baseline_runs = b.clone();
        }
        f.runs = changed;
        figs.push(f);

        if n == *COUNTS.last().unwrap() {
            let schema = c.prepare("SELECT sync_schema()::text").unwrap();
            let _: String = c.query_one(&schema, &[]).unwrap().get(0);
            let runs: Vec<f64> = (0..50)
                .map(|_| {
                    let t = Instant::now();
                    let _: String = c.query_one(&schema, &[]).unwrap().get(0);
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            let mut f = Figure::new(
                "P12",
                &format!("sync_schema() with {n} synced tables (round trip, p50)"),
                "ms",
            )
            .label(format!("P12 sync_schema, {n} tables"))
            .note("50 calls; the description of the synced tables is kept per backend until the schema version moves");
            f.value = Some(median(&runs));
            f.runs = runs;
            figs.push(f);
        }
        drop(c);
        let mut admin = cluster.connect("postgres");
        let _ = admin.batch_execute(&format!("DROP DATABASE {db}"));
    }
    figs
}
