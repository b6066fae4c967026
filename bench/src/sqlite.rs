//! SQLite figures: P3 (initial sync), P4 / P5 (local writes and their
//! latency), P6 (applying incoming changes), P8 (file size), and the SQLite
//! client of P9.
//!
//! Every database file (synced or plain) uses the same pragmas:
//! `journal_mode=WAL`, `synchronous=NORMAL`, SQLite's default page cache.

use crate::pg::JsonText;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};
use sync_tests::Client;

use crate::data::{self, Task};
use crate::pg::{self, page_meta, BIG, BIG_PLAIN};
use crate::results::{median, quantile, Check, Figure};
use crate::Config;

/// Whether the extension can be used.
pub enum SqliteState {
    /// Loaded and answered `sync_version()`.
    Ready {
        /// Library path.
        lib: PathBuf,
        /// `sync_version()`.
        version: String,
    },
    /// Why not.
    Missing(String),
}

impl SqliteState {
    /// For logs and the report.
    pub fn describe(&self) -> String {
        match self {
            SqliteState::Ready { lib, version } => {
                format!("sqlite_sync {version} ({})", lib.display())
            }
            SqliteState::Missing(why) => format!("not available: {why}"),
        }
    }
}

fn load(conn: &Connection, lib: &Path) -> rusqlite::Result<()> {
    // SAFETY: loading the extension built from this workspace.
    unsafe {
        conn.load_extension_enable()?;
        let r = conn.load_extension(lib, Some("sqlite3_sqlitesync_init"));
        conn.load_extension_disable()?;
        r
    }
}

/// Loads the extension into a scratch connection and asks its version.
pub fn probe(cfg: &Config) -> SqliteState {
    let lib = cfg.sqlite_lib.clone();
    if !lib.exists() {
        return SqliteState::Missing(format!("{} is not built", lib.display()));
    }
    let conn = match Connection::open_in_memory() {
        Ok(c) => c,
        Err(e) => return SqliteState::Missing(e.to_string()),
    };
    if let Err(e) = load(&conn, &lib) {
        return SqliteState::Missing(format!("loading {} failed: {e}", lib.display()));
    }
    match conn.query_row("SELECT sync_version()", [], |r| r.get::<_, String>(0)) {
        Ok(version) => SqliteState::Ready { lib, version },
        Err(e) => SqliteState::Missing(format!("sync_version() failed: {e}")),
    }
}

/// SQLite version linked into this binary.
pub fn sqlite_version() -> String {
    rusqlite::version().to_string()
}

fn pragmas(conn: &Connection) {
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
}

fn fresh(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A new synced client database at `path` (initialised with `schema`).
pub(crate) fn open_client(lib: &Path, path: &Path, schema: Option<&str>) -> Connection {
    let conn = Connection::open(path).unwrap();
    pragmas(&conn);
    load(&conn, lib).expect("load sqlite_sync");
    if let Some(s) = schema {
        let _: String = conn
            .query_row("SELECT sync_init(?1)", [s], |r| r.get(0))
            .expect("sync_init");
    }
    conn
}

/// A new plain database at `path` with a `tasks_plain` table.
fn open_plain(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    pragmas(&conn);
    conn.execute_batch(&data::create_sqlite_table_sql("tasks_plain"))
        .unwrap();
    conn
}

fn file_bytes(conn: &Connection, path: &Path) -> f64 {
    let _: (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    let wal = std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    (std::fs::metadata(path).unwrap().len() + wal) as f64
}

fn apply(conn: &Connection, page: &str) -> String {
    conn.query_row("SELECT sync_apply(?1)", [page], |r| r.get(0))
        .unwrap_or_else(|e| panic!("sync_apply: {e}"))
}

fn count(conn: &Connection, table: &str) -> u64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}

/// The synced client after P3, reused by P9 and P6.
pub struct ClientDb {
    conn: Connection,
    path: PathBuf,
    plain: Connection,
}

fn not_measured(id: &str, what: &str, why: &str) -> Figure {
    Figure::new(id, what, "").not_measured(why)
}

/// All SQLite figures, or "not measured" rows when the extension is missing.
pub fn figures(
    pgc: &mut Client,
    cfg: &Config,
    state: &SqliteState,
) -> (Vec<Figure>, Option<ClientDb>) {
    let lib = match state {
        SqliteState::Ready { lib, .. } => lib.clone(),
        SqliteState::Missing(why) => {
            let why = format!("not measured: sqlite_sync not usable ({why})");
            let mut v = Vec::new();
            for (id, what) in [
                (
                    "P3",
                    "Initial sync of the big table into an empty SQLite client",
                ),
                ("P4", "Local writes through the synced table"),
                ("P5", "Single-row local write latency"),
                ("P6", "sync_apply of incoming changes onto a 1M-row client"),
                ("P8", "SQLite file with the synced rows vs a plain table"),
            ] {
                if cfg.wants(id) {
                    v.push(not_measured(id, what, &why));
                }
            }
            return (v, None);
        }
    };
    let dir = std::env::temp_dir().join(format!("pg_sync_bench_sqlite_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema: String = pgc
        .query_one("SELECT sync_schema()::text", &[])
        .unwrap()
        .get(0);
    let mut figs = Vec::new();
    let mut client = None;
    if cfg.wants("P3") || cfg.wants("P6") || cfg.wants("P8") || cfg.wants("P9") {
        eprintln!("bench: P3");
        let (f, c) = p3(pgc, cfg, &lib, &dir, &schema);
        if cfg.wants("P3") {
            figs.push(f);
        }
        if cfg.wants("P8") {
            figs.push(p8(&c));
        }
        client = Some(c);
    }
    if cfg.wants("P4") || cfg.wants("P5") {
        eprintln!("bench: P4/P5");
        let v = p4(cfg, &lib, &dir, &schema);
        figs.extend(v.into_iter().filter(|f| cfg.wants(&f.id)));
    }
    (figs, client)
}

/// Removes the scratch directory of the SQLite files.
pub fn cleanup() {
    let dir = std::env::temp_dir().join(format!("pg_sync_bench_sqlite_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- P3

/// Pulls everything from `cursor` and applies it; returns (pull seconds,
/// apply seconds, upserts, pages).
fn pull_apply_all(pgc: &mut Client, conn: &Connection, page: i32) -> (f64, f64, u64, usize) {
    let stmt = pgc.prepare("SELECT sync_pull_json($1, $2)").unwrap();
    let mut cursor: Option<String> = conn
        .query_row("SELECT sync_cursor()", [], |r| r.get(0))
        .optional()
        .unwrap()
        .flatten();
    let (mut pull_s, mut apply_s, mut n, mut pages) = (0.0, 0.0, 0u64, 0usize);
    loop {
        let t = Instant::now();
        // The page is read where the driver received it, not copied.
        let row = pgc.query_one(&stmt, &[&cursor, &page]).unwrap();
        let text: &str = row.get::<_, JsonText>(0).0;
        pull_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = apply(conn, text);
        apply_s += t.elapsed().as_secs_f64();
        pages += 1;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        n += v["upserts"].as_u64().unwrap_or(0);
        let (cur, more) = page_meta(text);
        drop(row);
        cursor = Some(cur);
        if !more {
            break;
        }
    }
    (pull_s, apply_s, n, pages)
}

/// As [`pull_apply_all`], as a client that fetches the next page while it
/// applies the current one (a second thread pulls with each page's cursor,
/// one page ahead; the cursor `sync_apply` stores is checked to be the
/// page's, which holds for tables synced whole). Returns (seconds in
/// sync_pull calls, seconds in sync_apply calls, upserts, pages).
fn pull_apply_overlapped(pgc: &mut Client, conn: &Connection, page: i32) -> (f64, f64, u64, usize) {
    let start: Option<String> = conn
        .query_row("SELECT sync_cursor()", [], |r| r.get(0))
        .optional()
        .unwrap()
        .flatten();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, f64, String)>(1);
    let (mut pull_s, mut apply_s, mut n, mut pages) = (0.0, 0.0, 0u64, 0usize);
    std::thread::scope(|s| {
        s.spawn(move || {
            let stmt = pgc.prepare("SELECT sync_pull_json($1, $2)").unwrap();
            let mut cursor = start;
            loop {
                let t = Instant::now();
                let row = pgc.query_one(&stmt, &[&cursor, &page]).unwrap();
                let text = row.get::<_, JsonText>(0).0.to_string();
                let secs = t.elapsed().as_secs_f64();
                let (cur, more) = page_meta(&text);
                if tx.send((text, secs, cur.clone())).is_err() || !more {
                    break;
                }
                cursor = Some(cur);
            }
        });
        for (text, secs, page_cursor) in rx {
            pull_s += secs;
            let t = Instant::now();
            let out = apply(conn, &text);
            apply_s += t.elapsed().as_secs_f64();
            pages += 1;
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            n += v["upserts"].as_u64().unwrap_or(0);
            assert_eq!(
                v["cursor"].as_str(),
                Some(page_cursor.as_str()),
                "the device stores the page's cursor"
            );
        }
    });
    (pull_s, apply_s, n, pages)
}

/// COPY t TO STDOUT into a plain SQLite table, one transaction.
fn copy_into_plain(pgc: &mut Client, conn: &mut Connection) -> u64 {
    let r = pgc
        .copy_out(&format!("COPY {BIG_PLAIN} ({}) TO STDOUT", data::COLUMNS))
        .unwrap();
    let tx = conn.transaction().unwrap();
    let mut n = 0;
    {
        let mut ins = tx
            .prepare("INSERT INTO tasks_plain VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
            .unwrap();
        for line in BufReader::with_capacity(1 << 20, r).lines() {
            let line = line.unwrap();
            let f: Vec<Option<&str>> = line
                .split('\t')
                .map(|v| if v == "\\N" { None } else { Some(v) })
                .collect();
            ins.execute(rusqlite::params_from_iter(f.iter())).unwrap();
            n += 1;
        }
    }
    tx.commit().unwrap();
    n
}

fn p3(pgc: &mut Client, cfg: &Config, lib: &Path, dir: &Path, schema: &str) -> (Figure, ClientDb) {
    let n = cfg.big_rows as f64;
    let (mut sync, mut base) = (Vec::new(), Vec::new());
    let (mut pull_total, mut apply_total) = (Vec::new(), Vec::new());
    let mut last = None;
    for rep in 0..cfg.runs {
        let path = dir.join(format!("p3_client_{rep}.db"));
        fresh(&path);
        let t = Instant::now();
        let conn = open_client(lib, &path, Some(schema));
        let (ps, aps, upserts, _pages) = pull_apply_overlapped(pgc, &conn, cfg.page);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(upserts, cfg.big_rows, "P3 applied every row");
        assert_eq!(count(&conn, BIG), cfg.big_rows);
        sync.push(n / secs);
        pull_total.push(ps);
        apply_total.push(aps);
        let ppath = dir.join(format!("p3_plain_{rep}.db"));
        fresh(&ppath);
        let t = Instant::now();
        let mut plain = open_plain(&ppath);
        let copied = copy_into_plain(pgc, &mut plain);
        let bsecs = t.elapsed().as_secs_f64();
        assert_eq!(copied, cfg.big_rows);
        base.push(n / bsecs);
        eprintln!(
            "  P3 rep {rep}: initial sync {:.0} rows/s ({secs:.1}s: pull {ps:.1}s, apply {aps:.1}s); COPY + insert {:.0} rows/s",
            n / secs,
            n / bsecs
        );
        last = Some((conn, path, plain));
    }
    let (conn, path, plain) = last.expect("at least one run");
    let f = Figure::new(
        "P3",
        &format!(
            "Initial sync of {} rows into an empty SQLite client (sync_pull + sync_apply, pages of {}; the next page is fetched while one is applied)",
            cfg.big_rows, cfg.page
        ),
        "rows/s",
    )
    .throughput(sync, base)
    .label("P3 initial sync")
    .baseline_is("COPY t TO STDOUT + plain SQLite INSERT, one transaction")
    .target(Check::ratio_ge(0.5))
    .target(Check::value_ge(150_000.0))
    .note(format!(
        "time in calls (medians; they overlap): sync_pull {:.1}s, sync_apply {:.1}s",
        median(&pull_total),
        median(&apply_total)
    ));
    (f, ClientDb { conn, path, plain })
}

// ---------------------------------------------------------------- P8

fn p8(c: &ClientDb) -> Figure {
    let synced = file_bytes(&c.conn, &c.path);
    let plain_path: String = c
        .plain
        .query_row("PRAGMA database_list", [], |r| r.get(2))
        .unwrap();
    let plain = file_bytes(&c.plain, Path::new(&plain_path));
    let rows = count(&c.conn, BIG) as f64;
    let mut f = Figure::new(
        "P8",
        "SQLite: file size with the synced rows (state table + server copy + versions)",
        "MB",
    );
    f.value = Some(synced / 1e6);
    f.baseline = Some(plain / 1e6);
    f.ratio = Some(synced / plain);
    f.runs = vec![synced / 1e6];
    f.baseline_runs = vec![plain / 1e6];
    f.label("P8 SQLite file size")
        .baseline_is("the same rows in a plain SQLite table")
        .target(Check::ratio_le(1.5))
        .note(format!(
            "{:.0} vs {:.0} bytes per row; objects: {}",
            synced / rows,
            plain / rows,
            object_sizes(&c.conn)
        ))
}

/// Bytes per table / index from dbstat when compiled in, else page counts.
fn object_sizes(conn: &Connection) -> String {
    let q = "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 6";
    match conn.prepare(q) {
        Ok(mut st) => st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map(|rows| {
                rows.filter_map(Result::ok)
                    .map(|(n, b)| format!("{n} {:.0} MB", b as f64 / 1e6))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        Err(_) => "dbstat not available".into(),
    }
}

// ---------------------------------------------------------------- P4 / P5

const INSERT_COLS: &str =
    "(id, title, description, status, assignee, due_at, tags, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// One pass of inserts, updates and deletes of `rows` into `table`;
/// returns seconds per op and per-statement latencies (µs) when per_row.
fn write_pass(
    conn: &mut Connection,
    table: &str,
    rows: &[Task],
    per_row: bool,
) -> ([f64; 3], [Vec<f64>; 3]) {
    let ins = format!("INSERT INTO {table} {INSERT_COLS}");
    let upd = format!("UPDATE {table} SET title = ?1, status = ?2, updated_at = ?3 WHERE id = ?4");
    let del = format!("DELETE FROM {table} WHERE id = ?1");
    let mut secs = [0.0; 3];
    let mut lat: [Vec<f64>; 3] = Default::default();
    for (k, sql) in [ins, upd, del].iter().enumerate() {
        let t = Instant::now();
        if !per_row {
            conn.execute_batch("BEGIN").unwrap();
        }
        {
            let mut st = conn.prepare_cached(sql).unwrap();
            for r in rows {
                let t1 = Instant::now();
                let changed = match k {
                    0 => st
                        .execute(params![
                            r.id,
                            r.title,
                            r.description,
                            r.status,
                            r.assignee,
                            r.due_at.map(data::wire_ts),
                            r.tags_json(),
                            data::wire_ts(r.created_at),
                            data::wire_ts(r.updated_at)
                        ])
                        .unwrap(),
                    1 => {
                        let e = r.edited(1);
                        st.execute(params![
                            e.title,
                            e.status,
                            data::wire_ts(e.updated_at),
                            r.id
                        ])
                        .unwrap()
                    }
                    _ => st.execute(params![r.id]).unwrap(),
                };
                debug_assert_eq!(changed, 1);
                if per_row {
                    lat[k].push(t1.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        if !per_row {
            conn.execute_batch("COMMIT").unwrap();
        }
        secs[k] = t.elapsed().as_secs_f64();
    }
    (secs, lat)
}

fn p4(cfg: &Config, lib: &Path, dir: &Path, schema: &str) -> Vec<Figure> {
    const OPS: [&str; 3] = ["insert", "update", "delete"];
    let mut figs = Vec::new();
    let mut lat_view: [Vec<f64>; 3] = Default::default();
    let mut lat_plain: [Vec<f64>; 3] = Default::default();
    for (mode, k) in [
        ("one transaction", cfg.local_rows),
        ("one row per transaction", cfg.local_rows_per_txn),
    ] {
        let per_row = mode != "one transaction";
        let rows: Vec<Task> = (1..=k).map(|i| Task::gen(cfg.big_rows + i)).collect();
        let mut view: [Vec<f64>; 3] = Default::default();
        let mut plain: [Vec<f64>; 3] = Default::default();
        for rep in 0..cfg.runs {
            let vpath = dir.join(format!("p4_client_{rep}.db"));
            let ppath = dir.join(format!("p4_plain_{rep}.db"));
            fresh(&vpath);
            fresh(&ppath);
            let mut vc = open_client(lib, &vpath, Some(schema));
            let mut pc = open_plain(&ppath);
            // Alternate which side goes first.
            let order: [bool; 2] = if rep % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for synced in order {
                let (secs, lat) = if synced {
                    write_pass(&mut vc, BIG, &rows, per_row)
                } else {
                    write_pass(&mut pc, "tasks_plain", &rows, per_row)
                };
                for i in 0..3 {
                    let rate = k as f64 / secs[i];
                    if synced {
                        view[i].push(rate);
                        lat_view[i].extend(&lat[i]);
                    } else {
                        plain[i].push(rate);
                        lat_plain[i].extend(&lat[i]);
                    }
                }
            }
            eprintln!(
                "  P4 rep {rep} {mode}: synced {:?} rows/s, plain {:?} rows/s",
                view.iter()
                    .map(|v| v.last().copied().unwrap_or(0.0) as u64)
                    .collect::<Vec<_>>(),
                plain
                    .iter()
                    .map(|v| v.last().copied().unwrap_or(0.0) as u64)
                    .collect::<Vec<_>>()
            );
            drop(vc);
            drop(pc);
            fresh(&vpath);
            fresh(&ppath);
        }
        for i in 0..3 {
            figs.push(
                Figure::new(
                    "P4",
                    &format!(
                        "Local {} of {k} rows through the synced table, {mode}",
                        OPS[i]
                    ),
                    "rows/s",
                )
                .throughput(view[i].clone(), plain[i].clone())
                .label(format!(
                    "P4 {} {}",
                    OPS[i],
                    if per_row { "per row" } else { "1 txn" }
                ))
                .baseline_is("same writes into a plain SQLite table")
                .target(Check::ratio_ge(0.5)),
            );
        }
    }
    for i in 0..3 {
        let (v, p) = (&lat_view[i], &lat_plain[i]);
        let mut f = Figure::new(
            "P5",
            &format!(
                "Single-row local {} latency through the synced table, p99",
                OPS[i]
            ),
            "ms",
        )
        .label(format!("P5 {} p99", OPS[i]))
        .baseline_is("plain table p99")
        .target(Check::value_lt(1.0))
        .note(format!(
            "p50 {:.3} ms vs plain {:.3} ms; {} statements per side (autocommit)",
            quantile(v, 0.5) / 1000.0,
            quantile(p, 0.5) / 1000.0,
            v.len()
        ));
        f.value = Some(quantile(v, 0.99) / 1000.0);
        f.baseline = Some(quantile(p, 0.99) / 1000.0);
        f.extra.push(("p50".into(), quantile(v, 0.5) / 1000.0));
        f.extra
            .push(("plain p50".into(), quantile(p, 0.5) / 1000.0));
        figs.push(f);
    }
    figs
}

// ---------------------------------------------------------------- P6

/// Changes `rows` on the server (title, status, updated_at to edit `edit`)
/// with one UPDATE from a COPY-loaded temp table.
fn server_edit(pgc: &mut Client, rows: &[u64], edit: u64) {
    pgc.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS p6_edits (id text, title text, status text, updated_at timestamptz); \
         TRUNCATE p6_edits",
    )
    .unwrap();
    let mut w = pgc.copy_in("COPY p6_edits FROM STDIN").unwrap();
    let mut buf = String::new();
    for &n in rows {
        let e = Task::gen(n).edited(edit);
        buf.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            e.id,
            e.title,
            e.status,
            data::pg_ts(e.updated_at)
        ));
    }
    use std::io::Write;
    w.write_all(buf.as_bytes()).unwrap();
    w.finish().unwrap();
    let n = pgc
        .execute(
            &format!(
                "UPDATE {BIG} t SET title = e.title, status = e.status, updated_at = e.updated_at \
                 FROM p6_edits e WHERE t.id = e.id"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(n as usize, rows.len());
}

/// P6: applying `local_rows` incoming changes onto the client holding the
/// big table.
pub fn p6(pgc: &mut Client, cfg: &Config, c: &mut ClientDb) -> Figure {
    let k = cfg.local_rows;
    let step = (cfg.big_rows / k).max(1);
    let (mut sync, mut base) = (Vec::new(), Vec::new());
    let stmt = pgc.prepare("SELECT sync_pull_json($1, $2)").unwrap();
    for rep in 0..cfg.runs {
        // Each run changes rows no run before it changed: INSERT OR REPLACE
        // moves a replaced row to the end of the table, so a run repeating
        // the rows of the one before would find them side by side there
        // (the baseline read 2-3x faster from its second run on for that
        // reason alone, while the synced table updates rows in place).
        let rows: Vec<u64> = (0..k)
            .map(|i| 2 + (rep as u64 % step) + i * step)
            .filter(|&n| n <= cfg.big_rows)
            .collect();
        let kf = rows.len() as f64;
        let edit = 100 + rep as u64;
        server_edit(pgc, &rows, edit);
        // Fetch the pages first (not timed): P6 times the client only.
        let mut cursor: Option<String> = c
            .conn
            .query_row("SELECT sync_cursor()", [], |r| r.get(0))
            .unwrap();
        let mut pages = Vec::new();
        loop {
            let row = pgc.query_one(&stmt, &[&cursor, &cfg.page]).unwrap();
            let text = row.get::<_, JsonText>(0).0.to_string();
            let (cur, more) = page_meta(&text);
            cursor = Some(cur);
            pages.push(text);
            if !more {
                break;
            }
        }
        let changes: usize = pages.iter().map(|p| pg::page_changes(p)).sum();
        let t = Instant::now();
        let mut upserts = 0;
        for p in &pages {
            let out = apply(&c.conn, p);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            upserts += v["upserts"].as_u64().unwrap_or(0);
        }
        let secs = t.elapsed().as_secs_f64();
        assert!(
            upserts as usize >= rows.len(),
            "P6 applied {upserts} of {} changes",
            rows.len()
        );
        sync.push(changes as f64 / secs);
        // Baseline: the same rows, INSERT OR REPLACE into the plain 1M-row table.
        let edits: Vec<Task> = rows.iter().map(|&n| Task::gen(n).edited(edit)).collect();
        let t = Instant::now();
        let tx = c.plain.transaction().unwrap();
        {
            let mut st = tx
                .prepare(&format!("INSERT OR REPLACE INTO tasks_plain {INSERT_COLS}"))
                .unwrap();
            for r in &edits {
                st.execute(params![
                    r.id,
                    r.title,
                    r.description,
                    r.status,
                    r.assignee,
                    r.due_at.map(data::wire_ts),
                    r.tags_json(),
                    data::wire_ts(r.created_at),
                    data::wire_ts(r.updated_at)
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
        let bsecs = t.elapsed().as_secs_f64();
        base.push(kf / bsecs);
        eprintln!(
            "  P6 rep {rep}: sync_apply {:.0} rows/s ({changes} changes in {} pages), INSERT OR REPLACE {:.0} rows/s",
            changes as f64 / secs,
            pages.len(),
            kf / bsecs
        );
    }
    Figure::new(
        "P6",
        &format!(
            "sync_apply of {} incoming changes onto a client holding {} rows",
            k.min(cfg.big_rows),
            cfg.big_rows
        ),
        "rows/s",
    )
    .throughput(sync, base)
    .label("P6 sync_apply")
    .baseline_is("plain INSERT OR REPLACE of the same rows, one transaction")
    .target(Check::ratio_ge(0.6))
    .target(Check::value_ge(150_000.0))
    .note("pages fetched from the server beforehand; only sync_apply is timed")
}

// ---------------------------------------------------------------- P9 client

/// The P9 client: applies pulled pages and reads the probe back.
pub struct P9Sqlite {
    /// The client (moved into the listener thread and back).
    pub db: ClientDb,
}

impl pg::P9Client for P9Sqlite {
    fn cursor(&mut self) -> Option<String> {
        self.db
            .conn
            .query_row("SELECT sync_cursor()", [], |r| r.get(0))
            .unwrap()
    }

    fn apply(&mut self, page: &str) {
        apply(&self.db.conn, page);
    }

    fn sees(&mut self, id: &str, marker: &str) -> bool {
        let title: Option<String> = self
            .db
            .conn
            .query_row(
                &format!("SELECT title FROM {BIG} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        title.as_deref() == Some(marker)
    }

    fn describe(&self) -> &'static str {
        "pulled + applied + read back from the SQLite table"
    }
}

// ---------------------------------------------------------------- P14 (client)

/// Run by the bench binary re-executed as a client (`BENCH_CLIENT_SYNC`
/// set to `sync` or `plain`): the initial sync of the big table into a new
/// SQLite file (or its baseline, COPY + plain insert), then the process's
/// peak resident memory on stdout (`VmHWM` and `RssAnon` kB).
pub fn client_child(mode: &str) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let mut pgc = postgres::Client::connect(&var("BENCH_CLIENT_CONN"), postgres::NoTls).unwrap();
    let path = std::path::PathBuf::from(var("BENCH_CLIENT_DB"));
    fresh(&path);
    let page: i32 = var("BENCH_CLIENT_PAGE").parse().unwrap();
    let rows = if mode == "sync" {
        let schema: String = pgc
            .query_one("SELECT sync_schema()::text", &[])
            .unwrap()
            .get(0);
        let conn = open_client(Path::new(&var("BENCH_CLIENT_LIB")), &path, Some(&schema));
        pull_apply_all(&mut pgc, &conn, page).2
    } else {
        let mut plain = open_plain(&path);
        copy_into_plain(&mut pgc, &mut plain)
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
            .unwrap_or_default()
    };
    println!(
        "rows {rows} hwm {} anon {}",
        field("VmHWM:"),
        field("RssAnon:")
    );
    fresh(&path);
}

/// Peak RSS (MB) of a client process doing `mode` (`sync` or `plain`).
fn client_run(conn: &str, lib: &Path, db: &Path, cfg: &Config, mode: &str) -> Option<f64> {
    let out = std::process::Command::new(std::env::current_exe().ok()?)
        .env("BENCH_CLIENT_SYNC", mode)
        .env("BENCH_CLIENT_CONN", conn)
        .env("BENCH_CLIENT_LIB", lib)
        .env("BENCH_CLIENT_DB", db)
        .env("BENCH_CLIENT_PAGE", cfg.page.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let rows: u64 = words.get(1)?.parse().ok()?;
    if rows != cfg.big_rows {
        eprintln!(
            "  P14 client {mode}: {rows} rows, expected {}",
            cfg.big_rows
        );
        return None;
    }
    Some(words.get(3)?.parse::<f64>().ok()? / 1024.0)
}

/// P14, client side: the peak RSS of a process that does the initial sync
/// of the big table into an empty SQLite file, against one doing P3's
/// baseline.
pub fn p14_client(conn: &str, cfg: &Config, state: &SqliteState) -> Figure {
    let what = format!(
        "Memory: peak RSS (VmHWM) of a client process doing the initial sync of {} rows into an empty SQLite file (sqlite_sync in the process's bundled SQLite, pages of {}, one page at a time)",
        cfg.big_rows, cfg.page
    );
    let SqliteState::Ready { lib, .. } = state else {
        return not_measured("P14", &what, "not measured: sqlite_sync not usable");
    };
    let dir = std::env::temp_dir().join(format!("pg_sync_bench_sqlite_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut sync, mut plain) = (Vec::new(), Vec::new());
    for rep in 0..cfg.runs {
        let s = client_run(conn, lib, &dir.join("p14_client.db"), cfg, "sync");
        let p = client_run(conn, lib, &dir.join("p14_plain.db"), cfg, "plain");
        eprintln!("  P14 client rep {rep}: sync {s:?} MB, COPY + insert {p:?} MB");
        sync.extend(s);
        plain.extend(p);
    }
    if sync.is_empty() {
        return not_measured("P14", &what, "not measured: the client process failed");
    }
    let mut f = Figure::new("P14", &what, "MB");
    f.value = Some(median(&sync));
    f.baseline = (!plain.is_empty()).then(|| median(&plain));
    f.ratio = f.baseline.map(|b| median(&sync) / b);
    f.runs = sync;
    f.baseline_runs = plain;
    f.label("P14 client memory")
        .baseline_is("a process doing P3's baseline (COPY t TO STDOUT + plain SQLite INSERT)")
        .target(Check::value_lt(50.0))
        .note("the whole process: binary, Postgres client, SQLite with its default page cache, page text and parse")
}
