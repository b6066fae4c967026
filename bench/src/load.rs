//! P10: a load test of many devices.
//!
//! `BENCH_LOAD_DEVICES` (100) simulated devices, each a real SQLite
//! database with sqlite_sync loaded, each driven by its own thread, write
//! offline and sync at random intervals for `BENCH_LOAD_SECS` (120, times
//! `BENCH_SCALE`), while server-side writers run on the primary. Pushes go
//! through PgBouncer (transaction pooling) to the primary; pulls go through
//! the same PgBouncer to a streaming hot standby of the bench cluster. The
//! baseline is the same work with the pulls on the primary.
//!
//! Measured per topology: pushes/s and pulls/s (server calls), the sync round
//! trip (push + pull until caught up, as the device sees it) p50/p99, the
//! primary's CPU time (all its processes, from /proc) and the part of it
//! spent inside pg_sync's functions (`pg_stat_user_functions.self_time`
//! with `track_functions = all`: the SQL functions and the tracking
//! triggers). At the end every device must equal the server and every
//! counter must equal the increments made; a figure that fails that says so.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use postgres::types::Type;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_tests::pgbouncer::{PgBouncer, Target};
use sync_tests::{Client, NoTls};

use crate::cluster::BenchCluster;
use crate::pg;
use crate::results::{quantile, Check, Figure};
use crate::sqlite::{open_client, SqliteState};
use crate::Config;

/// Shared rows every device updates (seeded on the server).
const SEED_ROWS: u64 = 1000;
/// Counters every device and writer bumps.
const COUNTERS: u64 = 20;
/// Server-side writers and their rate (single-row transactions per second
/// each).
const WRITERS: usize = 2;
const WRITER_RATE: f64 = 25.0;
/// Changes per pull page.
const PAGE: i32 = 1000;

/// Where pulls go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topology {
    /// Pulls on the hot standby.
    Standby,
    /// Pulls on the primary (the baseline).
    Primary,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Topology::Standby => "standby",
            Topology::Primary => "primary",
        }
    }
}

/// What one device thread did.
#[derive(Default)]
struct DeviceOut {
    pushes: u64,
    pulls: u64,
    rounds: u64,
    pushed: u64,
    pulled: u64,
    behind: u64,
    errors: u64,
    error_samples: Vec<String>,
    statuses: BTreeMap<String, u64>,
    sync_ms: Vec<f64>,
    push_ms: Vec<f64>,
    pull_ms: Vec<f64>,
    converged: bool,
    diff: String,
}

/// A row of `items`: id, title, n, note.
type Item = (String, Option<String>, Option<i64>, Option<String>);

/// The server's final state, in a comparable form.
#[derive(PartialEq, Eq, Clone, Debug)]
struct Truth {
    items: Vec<Item>,
    counters: Vec<(i64, i64)>,
}

/// What the threads share.
struct Shared {
    lib: PathBuf,
    dir: PathBuf,
    push_conn: String,
    pull_conn: String,
    interval_ms: f64,
    ready: Barrier,
    go: Barrier,
    timed_done: Barrier,
    release_final: Barrier,
    pushed: Barrier,
    truth_ready: Barrier,
    deadline: OnceLock<Instant>,
    truth: OnceLock<Truth>,
    incs: AtomicU64,
}

/// Results of one topology.
struct Run {
    secs: f64,
    devices: Vec<DeviceOut>,
    /// CPU seconds of all the primary's processes in the window.
    primary_cpu: f64,
    /// ... of the backends serving device syncs (PgBouncer's).
    primary_sync_cpu: f64,
    /// ... of the server-side writers' backends.
    primary_writer_cpu: f64,
    /// pg_sync's functions on the primary: (name, calls, self seconds).
    funcs: Vec<(String, i64, f64)>,
    standby_cpu: f64,
    standby_sync_cpu: f64,
    sfuncs: Vec<(String, i64, f64)>,
    /// What sampled sync calls on the primary were waiting for.
    waits: BTreeMap<String, u64>,
    server_writes: u64,
    counters_expected: i64,
    counters_found: i64,
    setup_s: f64,
}

impl Run {
    fn sum(&self, f: impl Fn(&DeviceOut) -> u64) -> u64 {
        self.devices.iter().map(f).sum()
    }
    fn all(&self, f: impl Fn(&DeviceOut) -> &Vec<f64>) -> Vec<f64> {
        self.devices
            .iter()
            .flat_map(|d| f(d).iter().copied())
            .collect()
    }
    fn converged(&self) -> usize {
        self.devices.iter().filter(|d| d.converged).count()
    }
    fn ok(&self) -> bool {
        self.converged() == self.devices.len() && self.counters_expected == self.counters_found
    }
}

// ------------------------------------------------------------- CPU

/// CPU seconds of a process tree: the postmaster (its own time and that of
/// the children it has reaped) plus its live children.
fn tree_cpu(postmaster: i32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold blanks).
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] = state (field 3), f[1] = ppid, f[11..15] = utime stime cutime cstime.
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let ppid = f.get(1).and_then(|x| x.parse::<i32>().ok()).unwrap_or(0);
        if pid == postmaster {
            ticks += num(11) + num(12) + num(13) + num(14);
        } else if ppid == postmaster {
            ticks += num(11) + num(12);
        }
    }
    ticks as f64 / hz
}

/// CPU seconds (utime + stime) of one process.
fn proc_cpu(pid: i32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / hz)
        })
        .unwrap_or(0.0)
}

/// The bench's own connections and the server-side writers name
/// themselves; every other client backend of the database is one of
/// PgBouncer's server connections, which serve nothing but device syncs.
const META_APP: &str = "bench_meta";
const WRITER_APP: &str = "bench_writer";

/// Client backends of `db`: pid -> (application_name, CPU seconds so far).
fn backend_cpu(c: &mut Client, db: &str) -> HashMap<i32, (String, f64)> {
    c.query(
        "SELECT pid, coalesce(application_name, '') FROM pg_stat_activity
         WHERE datname = $1 AND backend_type = 'client backend'",
        &[&db],
    )
    .map(|rows| {
        rows.iter()
            .map(|r| {
                let pid: i32 = r.get(0);
                (pid, (r.get::<_, String>(1), proc_cpu(pid)))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// CPU seconds the sync backends and the writers' backends used between
/// two [`backend_cpu`] snapshots.
fn split_cpu(
    before: &HashMap<i32, (String, f64)>,
    after: &HashMap<i32, (String, f64)>,
) -> (f64, f64) {
    let (mut sync, mut writers) = (0.0, 0.0);
    for (pid, (app, cpu)) in after {
        let d = cpu - before.get(pid).map_or(0.0, |b| b.1);
        if app == WRITER_APP {
            writers += d;
        } else if app != META_APP {
            sync += d;
        }
    }
    (sync, writers)
}

/// Seconds spent in pg_sync's functions of `db` so far (self time), per
/// function: (name, calls, seconds).
fn pg_sync_function_time(c: &mut Client) -> Vec<(String, i64, f64)> {
    c.query(
        "SELECT p.proname::text, f.calls, f.self_time / 1000.0
         FROM pg_stat_user_functions f
         JOIN pg_proc p ON p.oid = f.funcid
         JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = f.funcid AND d.deptype = 'e'
         JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_sync'
         ORDER BY 1",
        &[],
    )
    .map(|rows| {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    })
    .unwrap_or_default()
}

fn fn_delta(
    before: &[(String, i64, f64)],
    after: &[(String, i64, f64)],
) -> Vec<(String, i64, f64)> {
    after
        .iter()
        .map(|(n, calls, t)| {
            let (c0, t0) = before
                .iter()
                .find(|(m, _, _)| m == n)
                .map(|(_, c, t)| (*c, *t))
                .unwrap_or((0, 0.0));
            (n.clone(), calls - c0, t - t0)
        })
        .filter(|(_, c, _)| *c > 0)
        .collect()
}

// ------------------------------------------------------------- server

fn setup_db(cluster: &BenchCluster, db: &str) -> Client {
    let mut c = pg::create_db(cluster, db);
    c.batch_execute(&format!("SET application_name = {META_APP};"))
        .unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE items (id text PRIMARY KEY, title text, n int, note text);
         CREATE TABLE counters (id int PRIMARY KEY, cnt bigint NOT NULL DEFAULT 0);
         SELECT sync_enable('items');
         SELECT sync_enable('counters', '{{\"columns\": {{\"cnt\": {{\"strategy\": \"counter\"}}}}}}');
         INSERT INTO items SELECT 's-' || g, 'seed ' || g, g, repeat('n', 60 + g % 80)
           FROM generate_series(1, {SEED_ROWS}) g;
         INSERT INTO counters SELECT g, 0 FROM generate_series(1, {COUNTERS}) g;
         ALTER DATABASE {db} SET track_functions = 'all';"
    ))
    .expect("load schema");
    c
}

fn wait_replayed(primary: &mut Client, standby: &BenchCluster, db: &str) -> bool {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let ok = Client::connect(&standby.conn_str(db), NoTls)
            .ok()
            .and_then(|mut s| {
                s.query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&lsn],
                )
                .ok()
            })
            .is_some_and(|r| r.get::<_, bool>(0));
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn truth(c: &mut Client) -> Truth {
    let mut items: Vec<_> = c
        .query("SELECT id, title, n::bigint, note FROM items", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    items.sort();
    let counters = c
        .query("SELECT id::bigint, cnt FROM counters ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Truth { items, counters }
}

/// A server-side writer: single-row autocommit writes at a fixed rate on a
/// direct connection to the primary. Returns (writes, counter increments).
fn writer(conn: String, w: usize, stop: Arc<AtomicBool>) -> (u64, u64) {
    let Ok(mut c) = Client::connect(&conn, NoTls) else {
        return (0, 0);
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1000 + w as u64);
    let upd = c
        .prepare("UPDATE items SET title = $1, n = n + 1 WHERE id = $2")
        .unwrap();
    let ins = c
        .prepare("INSERT INTO items VALUES ($1, $2, 0, 'from the server')")
        .unwrap();
    let del = c.prepare("DELETE FROM items WHERE id = $1").unwrap();
    let bump = c
        .prepare("UPDATE counters SET cnt = cnt + 1 WHERE id = $1")
        .unwrap();
    let (mut writes, mut incs, mut k) = (0u64, 0u64, 0u64);
    let period = Duration::from_secs_f64(1.0 / WRITER_RATE);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let r = rng.next_u64() % 100;
        let ok = if r < 50 {
            let id = format!("s-{}", 1 + rng.next_u64() % SEED_ROWS);
            c.execute(&upd, &[&format!("server {w}/{k}"), &id]).is_ok()
        } else if r < 75 {
            c.execute(&ins, &[&format!("w{w}-{k}"), &format!("server row {k}")])
                .is_ok()
        } else if r < 85 {
            let id = format!("w{w}-{}", 1 + rng.next_u64() % k);
            c.execute(&del, &[&id]).is_ok()
        } else {
            let id = (1 + rng.next_u64() % COUNTERS) as i32;
            let ok = c.execute(&bump, &[&id]).is_ok();
            if ok {
                incs += 1;
            }
            ok
        };
        writes += ok as u64;
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    (writes, incs)
}

// ------------------------------------------------------------- devices

struct Dev {
    db: rusqlite::Connection,
    push: Client,
    pull: Client,
}

fn connect(conn: &str) -> Result<Client, String> {
    Client::connect(conn, NoTls).map_err(|e| e.to_string())
}

fn db_err(e: postgres::Error) -> String {
    sync_tests::err_text(&e)
}

fn text(db: &rusqlite::Connection, sql: &str, arg: Option<&str>) -> Result<String, String> {
    match arg {
        Some(a) => db.query_row(sql, [a], |r| r.get(0)),
        None => db.query_row(sql, [], |r| r.get(0)),
    }
    .map_err(|e| format!("{sql}: {e}"))
}

fn flag(page: &str, key: &str) -> bool {
    page.contains(&format!("\"{key}\": true")) || page.contains(&format!("\"{key}\":true"))
}

impl Dev {
    fn open(sh: &Shared, ix: usize) -> Result<Dev, String> {
        let push = connect(&sh.push_conn)?;
        let mut pull = connect(&sh.pull_conn)?;
        let schema: String = pull
            .query_typed_one("SELECT sync_schema()::text", &[])
            .map_err(db_err)?
            .get(0);
        let path = sh.dir.join(format!("device_{ix}.db"));
        // open_client panics on a failed load or sync_init: keep the thread
        // alive (the barriers count on it) and report the failure.
        let db = std::panic::catch_unwind(|| open_client(&sh.lib, &path, Some(&schema)))
            .map_err(|_| format!("opening device {ix} failed"))?;
        Ok(Dev { db, push, pull })
    }

    /// Pushes the queue; returns (changes pushed, statuses).
    fn push(&mut self, out: &mut DeviceOut) -> Result<(), String> {
        let batch = text(&self.db, "SELECT sync_changes()", None)?;
        let v: serde_json::Value = serde_json::from_str(&batch).map_err(|e| e.to_string())?;
        let n = v["changes"].as_array().map_or(0, |a| a.len());
        if n == 0 {
            return Ok(());
        }
        let result: String = self
            .push
            .query_typed_one("SELECT sync_push($1::jsonb)::text", &[(&batch, Type::TEXT)])
            .map_err(db_err)?
            .get(0);
        out.pushes += 1;
        out.pushed += n as u64;
        let r: serde_json::Value = serde_json::from_str(&result).map_err(|e| e.to_string())?;
        for x in r["results"].as_array().into_iter().flatten() {
            let s = x["status"].as_str().unwrap_or("?").to_string();
            *out.statuses.entry(s).or_default() += 1;
        }
        text(&self.db, "SELECT sync_ack(?1)", Some(&result))?;
        Ok(())
    }

    /// Pulls until caught up (or the server answers `behind`).
    fn pull(&mut self, out: &mut DeviceOut) -> Result<(), String> {
        out.rounds += 1;
        for _ in 0..10_000 {
            let cursor: Option<String> = self
                .db
                .query_row("SELECT sync_cursor()", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            let page: String = self
                .pull
                .query_typed_one(
                    "SELECT sync_pull_json($1, $2)::text",
                    &[(&cursor, Type::TEXT), (&PAGE, Type::INT4)],
                )
                .map_err(db_err)?
                .get(0);
            out.pulls += 1;
            if flag(&page, "behind") {
                out.behind += 1;
                return Ok(());
            }
            out.pulled += pg::page_changes(&page) as u64;
            let res = text(&self.db, "SELECT sync_apply(?1)", Some(&page))?;
            if flag(&page, "resync_required") {
                continue;
            }
            if !flag(&res, "has_more") {
                return Ok(());
            }
        }
        Err("pull did not end".into())
    }

    fn reconnect(&mut self, sh: &Shared) {
        if let Ok(c) = connect(&sh.push_conn) {
            self.push = c;
        }
        if let Ok(c) = connect(&sh.pull_conn) {
            self.pull = c;
        }
    }

    /// One to three offline writes.
    fn write(&self, ix: usize, rng: &mut ChaCha8Rng, next: &mut u64, sh: &Shared) {
        for _ in 0..1 + rng.next_u64() % 3 {
            let r = rng.next_u64() % 100;
            let res = if r < 35 {
                let id = if rng.next_u64() % 10 < 7 || *next == 0 {
                    format!("s-{}", 1 + rng.next_u64() % SEED_ROWS)
                } else {
                    format!("d{ix}-{}", 1 + rng.next_u64() % *next)
                };
                self.db.execute(
                    "UPDATE items SET title = ?1, n = coalesce(n, 0) + 1 WHERE id = ?2",
                    rusqlite::params![format!("device {ix}"), id],
                )
            } else if r < 65 {
                *next += 1;
                self.db.execute(
                    "INSERT INTO items (id, title, n, note) VALUES (?1, ?2, 0, ?3)",
                    rusqlite::params![
                        format!("d{ix}-{next}"),
                        format!("new on device {ix}"),
                        "written offline".repeat(1 + (*next % 6) as usize)
                    ],
                )
            } else if r < 75 {
                if *next == 0 {
                    continue;
                }
                self.db.execute(
                    "DELETE FROM items WHERE id = ?1",
                    [format!("d{ix}-{}", 1 + rng.next_u64() % *next)],
                )
            } else {
                let id = 1 + rng.next_u64() % COUNTERS;
                let res = self
                    .db
                    .execute("UPDATE counters SET cnt = cnt + 1 WHERE id = ?1", [id]);
                if res.is_ok() {
                    sh.incs.fetch_add(1, Ordering::Relaxed);
                }
                res
            };
            if let Err(e) = res {
                eprintln!("  device {ix}: local write failed: {e}");
            }
        }
    }

    fn state(&self) -> Result<Truth, String> {
        let q = |sql: &str| -> Result<Vec<Item>, String> {
            let mut st = self.db.prepare(sql).map_err(|e| e.to_string())?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        };
        let mut items = q("SELECT id, title, n, note FROM items")?;
        items.sort();
        let mut st = self
            .db
            .prepare("SELECT id, cnt FROM counters ORDER BY id")
            .map_err(|e| e.to_string())?;
        let counters = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Truth { items, counters })
    }
}

fn note_err(out: &mut DeviceOut, e: String) {
    out.errors += 1;
    if out.error_samples.len() < 3 {
        out.error_samples.push(e);
    }
}

/// One device's life: set up and catch up, sync at random intervals until
/// the deadline, push what is left, then pull until equal to the server.
fn device(ix: usize, sh: Arc<Shared>) -> DeviceOut {
    let mut out = DeviceOut::default();
    let mut dev = match Dev::open(&sh, ix) {
        Ok(d) => Some(d),
        Err(e) => {
            note_err(&mut out, format!("setup: {e}"));
            None
        }
    };
    if let Some(d) = dev.as_mut() {
        if let Err(e) = d.pull(&mut out) {
            note_err(&mut out, format!("first pull: {e}"));
        }
    }
    out = DeviceOut {
        errors: out.errors,
        error_samples: out.error_samples,
        ..Default::default()
    };
    sh.ready.wait();
    sh.go.wait();
    let deadline = *sh.deadline.get().expect("deadline set before go");
    let mut rng = ChaCha8Rng::seed_from_u64(ix as u64);
    let mut next = 0u64;
    if let Some(d) = dev.as_mut() {
        // Devices start out of phase.
        let first = Duration::from_secs_f64(
            sh.interval_ms / 1000.0 * (rng.next_u64() % 1000) as f64 / 1000.0,
        );
        std::thread::sleep(first.min(deadline.saturating_duration_since(Instant::now())));
        while Instant::now() < deadline {
            d.write(ix, &mut rng, &mut next, &sh);
            let t0 = Instant::now();
            let pushed = d.push(&mut out);
            let t1 = Instant::now();
            let pulled = pushed.and_then(|()| d.pull(&mut out));
            let t2 = Instant::now();
            match pulled {
                Ok(()) => {
                    out.push_ms.push((t1 - t0).as_secs_f64() * 1e3);
                    out.pull_ms.push((t2 - t1).as_secs_f64() * 1e3);
                    out.sync_ms.push((t2 - t0).as_secs_f64() * 1e3);
                }
                Err(e) => {
                    note_err(&mut out, e);
                    d.reconnect(&sh);
                }
            }
            // Uniform in [0.5, 1.5] x the mean interval.
            let f = 0.5 + (rng.next_u64() % 1000) as f64 / 1000.0;
            let pause = Duration::from_secs_f64(sh.interval_ms / 1000.0 * f);
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(pause.min(left));
        }
    }
    sh.timed_done.wait();
    sh.release_final.wait();
    let mut scratch = DeviceOut::default();
    if let Some(d) = dev.as_mut() {
        for _ in 0..20 {
            match d.push(&mut scratch) {
                Ok(()) => {
                    let pending = text(&d.db, "SELECT sync_status()", None)
                        .ok()
                        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                        .and_then(|v| v["pending"].as_u64());
                    if pending == Some(0) {
                        break;
                    }
                }
                Err(e) => {
                    note_err(&mut out, format!("final push: {e}"));
                    d.reconnect(&sh);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    sh.pushed.wait();
    sh.truth_ready.wait();
    let want = sh.truth.get().expect("truth set");
    if let Some(d) = dev.as_mut() {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Err(e) = d.pull(&mut scratch) {
                note_err(&mut out, format!("final pull: {e}"));
                d.reconnect(&sh);
            }
            match d.state() {
                Ok(s) if &s == want => {
                    out.converged = true;
                    break;
                }
                Ok(s) => {
                    if Instant::now() > until {
                        out.diff = describe_diff(&s, want);
                        break;
                    }
                }
                Err(e) => {
                    out.diff = e;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    out
}

fn describe_diff(dev: &Truth, srv: &Truth) -> String {
    let d: HashMap<_, _> = dev.items.iter().map(|r| (&r.0, r)).collect();
    let s: HashMap<_, _> = srv.items.iter().map(|r| (&r.0, r)).collect();
    let missing = s.keys().filter(|k| !d.contains_key(*k)).count();
    let extra = d.keys().filter(|k| !s.contains_key(*k)).count();
    let differ = s
        .iter()
        .filter(|(k, v)| d.get(*k).is_some_and(|x| x != *v))
        .count();
    format!(
        "{missing} rows missing, {extra} extra, {differ} different; counters {}",
        if dev.counters == srv.counters {
            "equal"
        } else {
            "differ"
        }
    )
}

// ------------------------------------------------------------- a run

fn run(
    primary: &BenchCluster,
    standby: &BenchCluster,
    cfg: &Config,
    lib: &Path,
    topo: Topology,
) -> Run {
    let t_setup = Instant::now();
    let db = format!("load_{}", topo.name());
    let mut c = setup_db(primary, &db);
    if !wait_replayed(&mut c, standby, &db) {
        eprintln!("  the standby did not replay the setup of {db}");
    }
    let pull_port = match topo {
        Topology::Standby => standby.port(),
        Topology::Primary => primary.port(),
    };
    let bouncer = PgBouncer::start(
        &[
            Target::new("push", primary.port(), &db, cfg.load_pool),
            Target::new("pull", pull_port, &db, cfg.load_pool),
        ],
        "transaction",
        &[],
    );
    let dir = std::env::temp_dir().join(format!(
        "pg_sync_bench_load_{}_{}",
        std::process::id(),
        topo.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let n = cfg.load_devices;
    let sh = Arc::new(Shared {
        lib: lib.to_path_buf(),
        dir: dir.clone(),
        push_conn: bouncer.conn_str("push"),
        pull_conn: bouncer.conn_str("pull"),
        interval_ms: cfg.load_interval_ms,
        ready: Barrier::new(n + 1),
        go: Barrier::new(n + 1),
        timed_done: Barrier::new(n + 1),
        release_final: Barrier::new(n + 1),
        pushed: Barrier::new(n + 1),
        truth_ready: Barrier::new(n + 1),
        deadline: OnceLock::new(),
        truth: OnceLock::new(),
        incs: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let sh = sh.clone();
            std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || device(i, sh))
                .expect("spawn device thread")
        })
        .collect();
    sh.ready.wait();
    let setup_s = t_setup.elapsed().as_secs_f64();
    eprintln!(
        "  {n} devices caught up in {setup_s:.1}s; running for {:.0}s",
        cfg.load_secs
    );

    // Start of the window: stats and CPU. An idle backend flushes its
    // function statistics within 10 s (PGSTAT_IDLE_INTERVAL).
    let mut sc = Client::connect(
        &format!("{} application_name={META_APP}", standby.conn_str(&db)),
        NoTls,
    )
    .expect("connect to the standby");
    std::thread::sleep(Duration::from_secs(11));
    let f0 = pg_sync_function_time(&mut c);
    let s0 = pg_sync_function_time(&mut sc);
    let ppid = primary.postmaster_pid().unwrap_or(0);
    let spid = standby.postmaster_pid().unwrap_or(0);
    let b0 = backend_cpu(&mut c, &db);
    let sb0 = backend_cpu(&mut sc, &db);
    let cpu0 = tree_cpu(ppid);
    let scpu0 = tree_cpu(spid);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let conn = format!("{} application_name={WRITER_APP}", primary.conn_str(&db));
            let stop = stop.clone();
            std::thread::spawn(move || writer(conn, w, stop))
        })
        .collect();
    // Samples what the primary's sync calls are doing: running (or
    // runnable) or waiting, and for what.
    let sampler = {
        let conn = format!("{} application_name={META_APP}", primary.conn_str(&db));
        let (stop, db) = (stop.clone(), db.clone());
        std::thread::spawn(move || {
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let Ok(mut s) = Client::connect(&conn, NoTls) else {
                return seen;
            };
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rows) = s.query(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'running')
                     FROM pg_stat_activity
                     WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()
                       AND query LIKE '%sync_p%'",
                    &[&db],
                ) {
                    for r in rows {
                        *seen.entry(r.get(0)).or_default() += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };
    let t0 = Instant::now();
    sh.deadline
        .set(t0 + Duration::from_secs_f64(cfg.load_secs))
        .unwrap();
    sh.go.wait();
    sh.timed_done.wait();
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = tree_cpu(ppid);
    let scpu1 = tree_cpu(spid);
    let b1 = backend_cpu(&mut c, &db);
    let sb1 = backend_cpu(&mut sc, &db);
    stop.store(true, Ordering::Relaxed);
    let (mut server_writes, mut server_incs) = (0, 0);
    for w in writers {
        let (a, b) = w.join().unwrap_or((0, 0));
        server_writes += a;
        server_incs += b;
    }
    let waits = sampler.join().unwrap_or_default();
    std::thread::sleep(Duration::from_secs(11));
    let funcs = fn_delta(&f0, &pg_sync_function_time(&mut c));
    let sfuncs = fn_delta(&s0, &pg_sync_function_time(&mut sc));
    sh.release_final.wait();
    sh.pushed.wait();
    if !wait_replayed(&mut c, standby, &db) {
        eprintln!("  the standby did not replay the final pushes");
    }
    let t = truth(&mut c);
    let found: i64 = t.counters.iter().map(|x| x.1).sum();
    let expected = (sh.incs.load(Ordering::Relaxed) + server_incs) as i64;
    sh.truth.set(t).unwrap();
    sh.truth_ready.wait();
    let devices: Vec<DeviceOut> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| DeviceOut {
                errors: 1,
                error_samples: vec!["device thread panicked".into()],
                ..Default::default()
            })
        })
        .collect();
    drop(bouncer);
    drop(sc);
    let _ = std::fs::remove_dir_all(&dir);
    let (primary_sync_cpu, primary_writer_cpu) = split_cpu(&b0, &b1);
    let (standby_sync_cpu, _) = split_cpu(&sb0, &sb1);
    Run {
        secs,
        devices,
        primary_cpu: cpu1 - cpu0,
        primary_sync_cpu,
        primary_writer_cpu,
        funcs,
        standby_cpu: scpu1 - scpu0,
        standby_sync_cpu,
        sfuncs,
        waits,
        server_writes,
        counters_expected: expected,
        counters_found: found,
        setup_s,
    }
}

fn describe(r: &Run, topo: Topology) -> String {
    let statuses = {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for d in &r.devices {
            for (k, v) in &d.statuses {
                *m.entry(k.clone()).or_default() += v;
            }
        }
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let errors = r.sum(|d| d.errors);
    let samples: Vec<&String> = r
        .devices
        .iter()
        .flat_map(|d| d.error_samples.iter())
        .take(2)
        .collect();
    let fmt_funcs = |f: &[(String, i64, f64)]| {
        f.iter()
            .map(|(n, c, t)| format!("{n} {c} calls {t:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total: u64 = r.waits.values().sum();
    let mut waits: Vec<(&String, &u64)> = r.waits.iter().collect();
    waits.sort_by(|x, y| y.1.cmp(x.1));
    let waits = waits
        .iter()
        .take(4)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "pulls on the {}: {:.0}s, {} pushes ({} changes: {statuses}), {} pull calls in {} rounds \
         ({} changes), {} behind answers, {} server writes; primary CPU {:.1}s ({:.2} cores): \
         sync backends {:.1}s, writers {:.1}s, the rest (WAL, walsender, checkpointer, ...) \
         {:.1}s; standby CPU {:.1}s ({:.2} cores), sync backends {:.1}s; wall time inside \
         pg_sync's functions on the primary: {} and on the standby: {}; sync calls on the \
         primary sampled every 50 ms ({total}): {waits}",
        topo.name(),
        r.secs,
        r.sum(|d| d.pushes),
        r.sum(|d| d.pushed),
        r.sum(|d| d.pulls),
        r.sum(|d| d.rounds),
        r.sum(|d| d.pulled),
        r.sum(|d| d.behind),
        r.server_writes,
        r.primary_cpu,
        r.primary_cpu / r.secs,
        r.primary_sync_cpu,
        r.primary_writer_cpu,
        r.primary_cpu - r.primary_sync_cpu - r.primary_writer_cpu,
        r.standby_cpu,
        r.standby_cpu / r.secs,
        r.standby_sync_cpu,
        fmt_funcs(&r.funcs),
        fmt_funcs(&r.sfuncs),
    );
    s.push_str(&format!(
        "; {errors} errors{}",
        if samples.is_empty() {
            String::new()
        } else {
            format!(
                " (e.g. {})",
                samples
                    .iter()
                    .map(|x| x.chars().take(120).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    ));
    s
}

/// P10 figures; `warnings` gets a line when devices did not converge.
pub fn p10(
    primary: &BenchCluster,
    cfg: &Config,
    sqlite: &SqliteState,
    warnings: &mut Vec<String>,
) -> Vec<Figure> {
    let what = "Load: devices syncing through PgBouncer, pulls on a hot standby";
    let lib = match sqlite {
        SqliteState::Ready { lib, .. } => lib.clone(),
        SqliteState::Missing(why) => {
            return vec![Figure::new("P10", what, "")
                .not_measured(format!("not measured: sqlite_sync not usable ({why})"))]
        }
    };
    if !sync_tests::pgbouncer::available() {
        return vec![Figure::new("P10", what, "")
            .not_measured("not measured: pgbouncer is not installed (scripts/deps.sh)")];
    }
    eprintln!("  starting a hot standby");
    let standby = primary.standby();
    let mut runs = Vec::new();
    for topo in [Topology::Standby, Topology::Primary] {
        eprintln!("  pulls on the {}", topo.name());
        let r = run(primary, &standby, cfg, &lib, topo);
        eprintln!("  {}", describe(&r, topo));
        runs.push(r);
    }
    drop(standby);
    let (a, b) = (&runs[0], &runs[1]);
    let n = cfg.load_devices;
    let per_s = |r: &Run, f: &dyn Fn(&DeviceOut) -> u64| r.sum(f) as f64 / r.secs;
    let base = "the same devices, writes and intervals with the pulls on the primary (through the same PgBouncer)";
    let mut figs = Vec::new();
    figs.push(
        Figure::new(
            "P10",
            &format!("{n} devices, each a SQLite file on its own thread, syncing every {:.1} s on average for {:.0} s while {WRITERS} server writers run: sync_push calls/s through PgBouncer (transaction pooling, {} server connections) to the primary", cfg.load_interval_ms / 1000.0, cfg.load_secs, cfg.load_pool),
            "pushes/s",
        )
        .throughput(vec![per_s(a, &|d| d.pushes)], vec![per_s(b, &|d| d.pushes)])
        .label("P10 load: pushes/s")
        .baseline_is(base)
        .note(describe(a, Topology::Standby)),
    );
    figs.push(
        Figure::new(
            "P10",
            &format!("Same run: sync_pull_json calls/s (pages of up to {PAGE} changes) through PgBouncer to the hot standby"),
            "pulls/s",
        )
        .throughput(vec![per_s(a, &|d| d.pulls)], vec![per_s(b, &|d| d.pulls)])
        .label("P10 load: pulls/s")
        .baseline_is(base)
        .note(describe(b, Topology::Primary)),
    );
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let mut f = Figure::new(
            "P10",
            &format!("Same run: sync round trip (sync_changes, sync_push, sync_ack, then pull and apply until caught up), {name}"),
            "ms",
        )
        .label(format!("P10 load: sync round trip {name}"))
        .baseline_is(base);
        f.value = Some(quantile(&a.all(|d| &d.sync_ms), q));
        f.baseline = Some(quantile(&b.all(|d| &d.sync_ms), q));
        f.extra = vec![
            ("push".into(), quantile(&a.all(|d| &d.push_ms), q)),
            ("pull".into(), quantile(&a.all(|d| &d.pull_ms), q)),
            ("baseline push".into(), quantile(&b.all(|d| &d.push_ms), q)),
            ("baseline pull".into(), quantile(&b.all(|d| &d.pull_ms), q)),
        ];
        f.note = format!(
            "{name} of the push part {:.1} ms, of the pull part {:.1} ms (baseline {:.1} / {:.1} ms); {} syncs",
            f.extra[0].1,
            f.extra[1].1,
            f.extra[2].1,
            f.extra[3].1,
            a.all(|d| &d.sync_ms).len()
        );
        figs.push(f);
    }
    let share = |r: &Run| 100.0 * r.primary_sync_cpu / r.primary_cpu;
    let mut f = Figure::new(
        "P10",
        "Same run: share of the primary's CPU time spent in the backends serving device syncs (PgBouncer's server connections: sync_push, and in the baseline sync_pull_json)",
        "%",
    )
    .label("P10 load: primary CPU serving syncs")
    .baseline_is(base);
    f.value = Some(share(a));
    f.baseline = Some(share(b));
    f.extra = vec![
        ("primary cores".into(), a.primary_cpu / a.secs),
        ("baseline primary cores".into(), b.primary_cpu / b.secs),
        ("standby cores".into(), a.standby_cpu / a.secs),
        ("baseline standby cores".into(), b.standby_cpu / b.secs),
    ];
    let trig = |r: &Run| -> f64 {
        r.funcs
            .iter()
            .filter(|(n, _, _)| !n.starts_with("sync_"))
            .map(|f| f.2)
            .sum()
    };
    f.note = format!(
        "CPU time (utime + stime from /proc) of PgBouncer's server connections to the primary \
         over that of all the primary's processes (the postmaster, its live children and those \
         it reaped) in the same window: {:.1}s of {:.1}s, the primary busy {:.2} cores (baseline \
         {:.1}s of {:.1}s, {:.2} cores); the standby busy {:.2} cores ({:.2} in the baseline, \
         replay only). The sync backends' CPU includes parsing the call and committing it, and \
         leaves out the tracking triggers run by the server writers' own transactions \
         ({:.2}s / {:.2}s of wall time by pg_stat_user_functions). Wall time inside pg_sync's \
         functions is not used as CPU: on 2 cores shared with {} device threads it is mostly \
         time runnable but not running (the waits sampled in pg_stat_activity are the commit's \
         WAL flush, outside the functions)",
        a.primary_sync_cpu,
        a.primary_cpu,
        a.primary_cpu / a.secs,
        b.primary_sync_cpu,
        b.primary_cpu,
        b.primary_cpu / b.secs,
        a.standby_cpu / a.secs,
        b.standby_cpu / b.secs,
        trig(a),
        trig(b),
        n,
    );
    figs.push(f);
    // Convergence: fails loudly.
    let mut f = Figure::new(
        "P10",
        "At the end: devices equal to the server (rows and counters), and counters equal to the increments made",
        "devices",
    )
    .label("P10 load: devices converged")
    .baseline_is("the baseline run's devices")
    .target(Check::value_ge(n as f64));
    let conv = |r: &Run| {
        if r.counters_expected == r.counters_found {
            r.converged() as f64
        } else {
            0.0
        }
    };
    f.value = Some(conv(a));
    f.baseline = Some(conv(b));
    let mut notes = Vec::new();
    for (r, topo) in [(a, Topology::Standby), (b, Topology::Primary)] {
        notes.push(format!(
            "pulls on the {}: {} of {} devices equal, counters {} (made {}), setup {:.0}s",
            topo.name(),
            r.converged(),
            r.devices.len(),
            r.counters_found,
            r.counters_expected,
            r.setup_s
        ));
        if !r.ok() {
            let diffs: Vec<String> = r
                .devices
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.converged)
                .take(3)
                .map(|(i, d)| format!("device {i}: {}", d.diff))
                .collect();
            let w = format!(
                "P10 (pulls on the {}): NOT CONVERGED: {} of {} devices differ from the server, counters {} vs {} increments made; {}",
                topo.name(),
                r.devices.len() - r.converged(),
                r.devices.len(),
                r.counters_found,
                r.counters_expected,
                diffs.join("; ")
            );
            eprintln!("bench: {w}");
            warnings.push(w);
        }
    }
    f.note = notes.join("; ");
    figs.push(f);
    figs
}
