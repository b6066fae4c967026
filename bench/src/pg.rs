//! Postgres figures: P1 (pgbench write throughput), P2 (sync_pull), P7
//! (sync_push), P8 (metadata bytes per row), P9 (propagation) and the bulk
//! load of the big table.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use serde_json::{json, Map, Value};
use sync_core::hlc::wall_clock_unix_ms;
use sync_core::wire::{Change, Op, PushBatch, FORMAT};
use sync_core::{Clock, Hlc};
use sync_tests::{Client, PG_BIN};

use crate::cluster::BenchCluster;
use crate::data::{self, Task};
use crate::results::{median, quantile, time, Check, Figure};
use crate::Config;

/// Database of every figure but P1.
pub const DB: &str = "bench";
/// Database of P1.
pub const DB_P1: &str = "bench_p1";

/// The synced 1M-row table (P2, P3, P6, P7, P8, P9).
pub const BIG: &str = "tasks";
/// The same rows without sync (baselines).
pub const BIG_PLAIN: &str = "tasks_plain";

/// Writes pre-generated COPY text into `table`.
pub fn copy_text(c: &mut Client, table: &str, text: &[u8]) {
    let mut w = c
        .copy_in(&format!("COPY {table} ({}) FROM STDIN", data::COLUMNS))
        .expect("COPY FROM");
    for chunk in text.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
    }
    w.finish().expect("COPY finish");
}

/// COPY text of rows `1..=n`.
pub fn copy_text_of(n: u64) -> Vec<u8> {
    let mut s = String::with_capacity(n as usize * 560);
    for i in 1..=n {
        Task::gen(i).copy_line(&mut s);
    }
    s.into_bytes()
}

/// Creates a database with the extension.
pub fn create_db(cluster: &BenchCluster, db: &str) -> Client {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create database");
    let mut c = cluster.connect(db);
    c.batch_execute("CREATE EXTENSION pg_sync")
        .expect("CREATE EXTENSION pg_sync");
    c
}

/// Creates and loads the big synced table and its plain twin; returns the
/// bulk-load figure (COPY into the synced table vs the plain one).
pub fn setup_big(c: &mut Client, cfg: &Config) -> Figure {
    let n = cfg.big_rows;
    let (gen_s, text) = time(|| copy_text_of(n));
    eprintln!(
        "  generated {n} rows ({} MB) in {gen_s:.1}s",
        text.len() >> 20
    );
    c.batch_execute(&data::create_table_sql(BIG_PLAIN)).unwrap();
    c.batch_execute(&data::create_table_sql(BIG)).unwrap();
    c.batch_execute(&format!("SELECT sync_enable('{BIG}')"))
        .unwrap();
    c.batch_execute("CHECKPOINT").unwrap();
    let (plain_s, ()) = time(|| copy_text(c, BIG_PLAIN, &text));
    c.batch_execute("CHECKPOINT").unwrap();
    let (sync_s, ()) = time(|| copy_text(c, BIG, &text));
    eprintln!("  COPY {n} rows: plain {plain_s:.1}s, synced {sync_s:.1}s");
    for sql in [
        format!("VACUUM ANALYZE {BIG_PLAIN}"),
        format!("VACUUM ANALYZE {BIG}"),
        "CHECKPOINT".into(),
    ] {
        c.batch_execute(&sql).unwrap();
    }
    Figure::new(
        "load",
        &format!("Bulk COPY of {n} rows into the synced table (index + tracking trigger)"),
        "rows/s",
    )
    .throughput(vec![n as f64 / sync_s], vec![n as f64 / plain_s])
    .label("bulk COPY load")
    .baseline_is("COPY into the same table without sync")
    .note("one run each; information only (the tracking trigger stamps every row and the pull index is maintained)")
}

// ---------------------------------------------------------------- P1

const P1_VARIANTS: [&str; 3] = ["plain", "trig", "sync"];
const P1_OPS: [&str; 3] = ["insert", "update", "delete"];

fn p1_table(variant: &str) -> String {
    format!("w_{variant}")
}

/// Creates the three P1 tables with `rows` rows each.
fn setup_p1(c: &mut Client, rows: u64) {
    for v in P1_VARIANTS {
        let t = p1_table(v);
        c.batch_execute(&data::create_table_sql(&t)).unwrap();
        c.batch_execute(&format!(
            "CREATE SEQUENCE {t}_ins START {}; CREATE SEQUENCE {t}_del START {};",
            rows + 1,
            rows / 2 + 1
        ))
        .unwrap();
    }
    // The typical hand-written change log: every write appends the new row
    // (or the old one for a delete) as jsonb with the writing transaction id.
    c.batch_execute(
        "CREATE TABLE w_trig_log (
             id bigserial PRIMARY KEY,
             xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
             op text NOT NULL,
             row_data jsonb NOT NULL,
             at timestamptz NOT NULL DEFAULT now()
         );
         CREATE INDEX ON w_trig_log (xid);
         CREATE FUNCTION w_trig_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF TG_OP = 'DELETE' THEN
                 INSERT INTO w_trig_log (xid, op, row_data) VALUES (pg_current_xact_id(), 'delete', to_jsonb(OLD));
                 RETURN OLD;
             END IF;
             INSERT INTO w_trig_log (xid, op, row_data) VALUES (pg_current_xact_id(), lower(TG_OP), to_jsonb(NEW));
             RETURN NEW;
         END $$;
         CREATE TRIGGER w_trig_log AFTER INSERT OR UPDATE OR DELETE ON w_trig
             FOR EACH ROW EXECUTE FUNCTION w_trig_log_change();",
    )
    .unwrap();
    c.batch_execute("SELECT sync_enable('w_sync')").unwrap();
    // The rows, numbered, to preload from and to refill after DELETE runs.
    c.batch_execute(&format!(
        "{}; ALTER TABLE w_source ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY UNIQUE",
        data::create_table_sql("w_source")
    ))
    .unwrap();
    copy_text(c, "w_source", &copy_text_of(rows));
    c.batch_execute("ALTER TABLE w_trig DISABLE TRIGGER w_trig_log")
        .unwrap();
    for v in P1_VARIANTS {
        c.batch_execute(&format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM w_source ORDER BY n",
            t = p1_table(v),
            cols = data::COLUMNS
        ))
        .unwrap();
    }
    c.batch_execute("ALTER TABLE w_trig ENABLE TRIGGER w_trig_log")
        .unwrap();
    for sql in ["VACUUM ANALYZE", "CHECKPOINT"] {
        c.batch_execute(sql).unwrap();
    }
}

/// Puts back the rows a DELETE run removed (untimed) and rewinds the
/// delete sequence; returns whether the run went past the preloaded rows.
fn refill_p1(c: &mut Client, variant: &str, rows: u64) -> bool {
    let t = p1_table(variant);
    let last: i64 = c
        .query_one(
            &format!(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {t}_del"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    let first = rows / 2 + 1;
    c.batch_execute(&format!(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM w_source WHERE n BETWEEN {first} AND {last} ORDER BY n \
         ON CONFLICT (id) DO NOTHING; SELECT setval('{t}_del', {first}, false)",
        cols = data::COLUMNS
    ))
    .unwrap();
    last as u64 > rows
}

fn write_script(dir: &Path, op: &str, table: &str, rows: u64) -> std::path::PathBuf {
    let tmpl_path = sync_tests::workspace_root().join(format!("bench/{op}.sql"));
    let tmpl = std::fs::read_to_string(&tmpl_path)
        .unwrap_or_else(|e| panic!("{}: {e}", tmpl_path.display()));
    let seq = if op == "insert" {
        format!("{table}_ins")
    } else {
        format!("{table}_del")
    };
    let sql = tmpl
        .replace("{table}", table)
        .replace("{seq}", &seq)
        .replace("{rows}", &(rows / 2).to_string())
        .replace("{first}", &(rows / 2 + 1).to_string());
    let p = dir.join(format!("{op}_{table}.sql"));
    std::fs::write(&p, sql).unwrap();
    p
}

/// Runs pgbench and returns the TPS (without initial connection time).
fn pgbench(cluster: &BenchCluster, script: &Path, secs: u32, sync_commit: &str) -> f64 {
    let out = Command::new(format!("{PG_BIN}/pgbench"))
        .args(["-n", "-c", "2", "-j", "2", "-T", &secs.to_string(), "-f"])
        .arg(script)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port().to_string(),
            "-U",
            "postgres",
            DB_P1,
        ])
        .env("PGOPTIONS", format!("-c synchronous_commit={sync_commit}"))
        .output()
        .expect("run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbench {} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    if let Some(line) = stdout
        .lines()
        .find(|l| l.contains("number of failed transactions"))
    {
        assert!(
            line.contains(": 0 "),
            "pgbench {}: {line}\n{stderr}",
            script.display()
        );
    }
    stdout
        .lines()
        .find(|l| l.starts_with("tps = ") && l.contains("without initial connection"))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{stdout}"))
}

/// P1: pgbench single-row INSERT / UPDATE / DELETE, 2 clients, with
/// synchronous_commit off and on, on the plain, hand-written-trigger and
/// synced tables.
pub fn p1(cluster: &BenchCluster, c: &mut Client, cfg: &Config) -> Vec<Figure> {
    let rows = cfg.p1_rows;
    let (s, ()) = time(|| setup_p1(c, rows));
    eprintln!("  P1 setup ({rows} rows x 3 tables) {s:.1}s");
    let dir = cluster.dir().join("pgbench");
    std::fs::create_dir_all(&dir).unwrap();
    let mut tps: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let mut exhausted = false;
    // The target is on synchronous_commit=off: it gets more runs.
    let reps_off = cfg.runs.max(cfg.p1_runs_off);
    for rep in 0..reps_off {
        for mode in ["off", "on"] {
            if mode == "on" && rep >= cfg.runs {
                continue;
            }
            for op in P1_OPS {
                for k in 0..P1_VARIANTS.len() {
                    let v = P1_VARIANTS[(k + rep) % P1_VARIANTS.len()];
                    let script = write_script(&dir, op, &p1_table(v), rows);
                    c.batch_execute("CHECKPOINT").unwrap();
                    let t = pgbench(cluster, &script, cfg.pgbench_secs, mode);
                    eprintln!("  P1 rep {rep} sync_commit={mode} {op:6} {v:5}: {t:.0} tps");
                    if op == "delete" && refill_p1(c, v, rows) {
                        exhausted = true;
                    }
                    tps.entry((mode.into(), op.into(), v.into()))
                        .or_default()
                        .push(t);
                }
            }
        }
    }
    let mut figs = Vec::new();
    for mode in ["off", "on"] {
        for op in P1_OPS {
            let get = |v: &str| tps[&(mode.to_string(), op.to_string(), v.to_string())].clone();
            let (plain, trig, sync) = (get("plain"), get("trig"), get("sync"));
            let trig_ratio = median(&trig) / median(&plain);
            let mut f = Figure::new(
                "P1",
                &format!("pgbench single-row {op}, synchronous_commit={mode}"),
                "tps",
            )
            .throughput(sync, plain)
            .label(format!("P1 {op} sc={mode}"))
            .baseline_is("same table without sync")
            .note(format!(
                "hand-written PL/pgSQL log trigger: {:.0} tps = {:.2} of plain{}",
                median(&trig),
                trig_ratio,
                if exhausted && op == "delete" {
                    "; WARNING: the delete runs ran past the preloaded rows"
                } else {
                    ""
                }
            ));
            if mode == "off" {
                f = f.target(Check::ratio_ge(0.85));
            }
            f.extra.push(("trigger".into(), median(&trig)));
            figs.push(f);
        }
    }
    figs
}

// ---------------------------------------------------------------- P2

/// `"cursor": "..."` and `"has_more": ...` out of a pull page's jsonb text
/// without parsing the whole page.
pub fn page_meta(text: &str) -> (String, bool) {
    // Works on jsonb output (`"key": value`, keys ordered by length) and on
    // the json text of sync_pull_json (`"key":value`, `"key" : value`). The
    // tasks table has no column named cursor or has_more, so the first
    // occurrence of each is the page's; in sync_pull_json's text both come
    // before the changes, so this reads only the page's head.
    let v = first_value(text, "cursor").expect("page has a cursor");
    let v = v.strip_prefix('"').expect("cursor is a string");
    let cursor = v[..v.find('"').expect("cursor ends")].to_string();
    let more = first_value(text, "has_more")
        .expect("page has has_more")
        .starts_with("true");
    (cursor, more)
}

/// The text after the first `"key"` used as an object key.
fn first_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    text.match_indices(quoted.as_str()).find_map(|(at, _)| {
        let rest = text[at + quoted.len()..].trim_start();
        rest.strip_prefix(':').map(str::trim_start)
    })
}

/// Number of changes in a page's JSON text.
pub fn page_changes(text: &str) -> usize {
    sync_core::wire::page::read_page(text)
        .expect("a pull page the device reads")
        .changes
        .len()
}

/// The cursor a device sends before its first pull (`sync_cursor()` of a
/// new device): no positions, the newest page format.
pub use sync_tests::device_cursor;

/// Pulls from `cursor` until `has_more` is false; returns (seconds spent in
/// sync_pull calls, changes, final cursor).
pub fn pull_all(c: &mut Client, cursor: Option<String>, page: i32) -> (f64, usize, String) {
    let (secs, n, cursor, _) = pull_all_sized(c, cursor, page);
    (secs, n, cursor)
}

/// As [`pull_all`], also returning the bytes of all the pages.
pub fn pull_all_sized(
    c: &mut Client,
    cursor: Option<String>,
    page: i32,
) -> (f64, usize, String, usize) {
    let stmt = c.prepare("SELECT sync_pull_json($1, $2)").unwrap();
    let mut cursor = cursor.or_else(|| Some(device_cursor()));
    let mut secs = 0.0;
    let mut n = 0;
    let mut bytes = 0;
    loop {
        let t = Instant::now();
        let row = c.query_one(&stmt, &[&cursor, &page]).unwrap();
        let text = row.get::<_, JsonText>(0).0.to_string();
        secs += t.elapsed().as_secs_f64();
        n += page_changes(&text);
        bytes += text.len();
        let (cur, more) = page_meta(&text);
        cursor = Some(cur);
        if !more {
            break;
        }
    }
    (secs, n, cursor.unwrap_or_default(), bytes)
}

/// COPY (SELECT to_jsonb(t) FROM t) TO STDOUT; returns (seconds, bytes).
fn copy_jsonb(c: &mut Client, table: &str) -> (f64, usize) {
    let t = Instant::now();
    let mut r = c
        .copy_out(&format!(
            "COPY (SELECT to_jsonb(t) FROM {table} t) TO STDOUT"
        ))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        bytes += k;
    }
    (t.elapsed().as_secs_f64(), bytes)
}

/// P2: sync_pull of the whole big table, paged, vs COPY of to_jsonb; and
/// P11, the bytes per row of those pages against the to_jsonb text. Also
/// returns the cursor at the end.
pub fn p2(c: &mut Client, cfg: &Config) -> (Vec<Figure>, String) {
    let n = cfg.big_rows as f64;
    let (mut pull, mut copy) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    let mut page_bytes = 0;
    let mut end = String::new();
    for rep in 0..cfg.runs {
        let (s, changes, cur, pb) = pull_all_sized(c, None, cfg.page);
        end = cur;
        page_bytes = pb;
        assert_eq!(changes as u64, cfg.big_rows, "pull returned every row once");
        pull.push(n / s);
        let (cs, b) = copy_jsonb(c, BIG_PLAIN);
        bytes = b;
        copy.push(n / cs);
        eprintln!(
            "  P2 rep {rep}: sync_pull {:.0} rows/s, COPY to_jsonb {:.0} rows/s",
            n / s,
            n / cs
        );
    }
    let f = Figure::new(
        "P2",
        &format!(
            "sync_pull_json of {} changed rows, pages of {}, to the end (the same page as sync_pull, as json text)",
            cfg.big_rows, cfg.page
        ),
        "rows/s",
    )
    .throughput(pull, copy)
    .label("P2 sync_pull_json")
    .baseline_is("COPY (SELECT to_jsonb(t) FROM t) TO STDOUT")
    .target(Check::ratio_ge(0.8))
    .note(format!(
        "rows average {} bytes as to_jsonb text",
        bytes / cfg.big_rows.max(1) as usize
    ));
    let per_row = page_bytes as f64 / n.max(1.0);
    let base_row = bytes as f64 / n.max(1.0);
    let mut p11 = Figure::new(
        "P11",
        &format!(
            "Page size on the wire: bytes per row of the P2 pages (pages of {}, envelope and cursor included)",
            cfg.page
        ),
        "B/row",
    );
    p11.value = Some(per_row);
    p11.baseline = Some(base_row);
    p11.ratio = Some(per_row / base_row);
    p11.runs = vec![per_row];
    p11.baseline_runs = vec![base_row];
    let p11 = p11
        .label("P11 page bytes/row")
        .baseline_is("the same rows as to_jsonb text (COPY output, one line per row)")
        .target(Check::ratio_le(1.0))
        .note(format!(
            "{} pages' bytes over {} rows; deterministic (the same in every run)",
            page_bytes, cfg.big_rows
        ));
    (vec![f, p11], end)
}

/// Anonymous memory growth of a fresh backend while it runs `sql` and
/// sends its result, fetched as text in the simple protocol as a client
/// reads a page (no cast on the server: `json::text` is an I/O conversion
/// that copies the value twice more): (growth in bytes, the bytes of the
/// result's first column, all rows).
fn backend_growth(cluster: &BenchCluster, sql: &str) -> (f64, f64) {
    let mut c = cluster.connect(DB);
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    c.batch_execute("SET pg_sync.max_page_size = '256MB'")
        .unwrap();
    let (bytes, before, peak) = crate::mem::peak_during(pid as u32, || {
        c.simple_query(sql)
            .unwrap()
            .iter()
            .map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map_or(0, str::len),
                _ => 0,
            })
            .sum::<usize>()
    });
    ((peak.saturating_sub(before) * 1024) as f64, bytes as f64)
}

/// P14, Postgres side: a backend's memory growth while it serves one page
/// of 100,000 rows through `sync_pull_chunks`, against the page's own
/// size; the same page as one value (`sync_pull_json`) and the same rows
/// as `json_agg(to_jsonb(t))` for reference.
pub fn p14_backend(cluster: &BenchCluster, cfg: &Config) -> Figure {
    let rows = cfg.big_rows.min(100_000) as i32;
    let (mut growth, mut page, mut single, mut jsonb) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..cfg.runs {
        let (g, p) = backend_growth(
            cluster,
            &format!(
                "SELECT * FROM sync_pull_chunks('{}', {rows})",
                device_cursor()
            ),
        );
        let (sg, sp) = backend_growth(
            cluster,
            &format!("SELECT sync_pull_json('{}', {rows})", device_cursor()),
        );
        let (jg, jp) = backend_growth(
            cluster,
            &format!(
                "SELECT json_agg(to_jsonb(t)) FROM (SELECT * FROM {BIG_PLAIN} LIMIT {rows}) t"
            ),
        );
        eprintln!(
            "  P14 rep {rep}: page {:.1} MB, sync_pull_chunks grew {:.1} MB; sync_pull_json {:.1} MB grew {:.1} MB; json_agg(to_jsonb) {:.1} MB grew {:.1} MB",
            p / 1e6,
            g / 1e6,
            sp / 1e6,
            sg / 1e6,
            jp / 1e6,
            jg / 1e6
        );
        growth.push(g / 1e6);
        page.push(p / 1e6);
        single.push(sg / sp.max(1.0));
        jsonb.push(jg / jp.max(1.0));
    }
    let mut f = Figure::new(
        "P14",
        &format!(
            "Memory: a fresh backend's anonymous RSS growth (peak, sampled every 2 ms) while serving one page of {rows} rows through sync_pull_chunks (pg_sync.max_page_size = 256MB; work_mem = 32MB, the bench cluster's, bounds what the result holds in memory)"
        ),
        "MB",
    );
    let ratios: Vec<f64> = growth.iter().zip(&page).map(|(g, p)| g / p).collect();
    f.value = Some(median(&growth));
    f.baseline = Some(median(&page));
    f.ratio = Some(median(&ratios));
    f.runs = growth;
    f.baseline_runs = page;
    f.label("P14 backend memory / page")
        .baseline_is("the page's own size")
        .target(Check::ratio_le(2.0))
        .note(format!(
            "the same page as one value (sync_pull_json) grows a fresh backend by {:.2}x its text: the value, its output function's copy and the protocol message; the same rows as json_agg(to_jsonb(t)) by {:.2}x (medians)",
            median(&single),
            median(&jsonb)
        ))
}

/// A `json` (or `text`) column borrowed as text where the driver received
/// it: json's binary form is its text, so a page is fetched as the server
/// made it (a `::text` cast would be an I/O conversion on the server, two
/// more copies of the page and a pass to validate it).
pub struct JsonText<'a>(pub &'a str);

impl<'a> postgres::types::FromSql<'a> for JsonText<'a> {
    fn from_sql(
        _: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        matches!(
            *ty,
            postgres::types::Type::JSON | postgres::types::Type::TEXT
        )
    }
}

// ---------------------------------------------------------------- P8 (Postgres)

/// P8, Postgres side: bytes of sync metadata per tracked row.
pub fn p8_pg(c: &mut Client, cfg: &Config) -> Figure {
    let size = |c: &mut Client, sql: &str| -> f64 {
        c.query_one(sql, &[]).unwrap().get::<_, i64>(0) as f64
    };
    let rows = cfg.big_rows as f64;
    let plain_heap = size(c, &format!("SELECT pg_table_size('{BIG_PLAIN}')"));
    let sync_heap = size(c, &format!("SELECT pg_table_size('{BIG}')"));
    let idx = size(c, &format!("SELECT pg_relation_size('{BIG}_sync_xid_idx')"));
    let cols = size(
        c,
        &format!(
            "SELECT sum(pg_column_size(_sync_xid) + pg_column_size(_sync_ver))::bigint FROM {BIG}"
        ),
    );
    let meta = (sync_heap - plain_heap + idx) / rows;
    let base = plain_heap / rows;
    let mut f = Figure::new(
        "P8",
        "Postgres: sync metadata bytes per tracked row (extra heap + pull index)",
        "B/row",
    );
    f.value = Some(meta);
    f.baseline = Some(base);
    f.ratio = Some(meta / base);
    f.runs = vec![meta];
    f.baseline_runs = vec![base];
    f.label("P8 PG metadata/row")
        .baseline_is("the base table's size per row (heap incl. TOAST, no indexes)")
        .target(Check::ratio_le(0.5))
        .note(format!(
            "_sync_xid + _sync_ver average {:.0} B/row of column data; heap grows {:.0} B/row; index ({}_sync_xid_idx) {:.0} B/row",
            cols / rows,
            (sync_heap - plain_heap) / rows,
            BIG,
            idx / rows
        ))
}

// ---------------------------------------------------------------- P7

/// Attribute numbers of the big table's columns.
fn attnums(c: &mut Client, table: &str) -> BTreeMap<String, usize> {
    c.query(
        "SELECT attname::text, attnum::int FROM pg_attribute WHERE attrelid = $1::text::regclass \
         AND attnum > 0 AND NOT attisdropped",
        &[&table],
    )
    .unwrap()
    .into_iter()
    .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1) as usize))
    .collect()
}

/// Rows touched by P7: spread over the table.
pub fn p7_rows(cfg: &Config) -> Vec<u64> {
    let k = cfg.push_rows;
    let step = (cfg.big_rows / k).max(1);
    (0..k).map(|i| 1 + i * step).collect()
}

/// Builds push batches updating title, status and updated_at of `rows`,
/// based on the server's current versions.
fn push_batches(c: &mut Client, rows: &[u64], edit: u64, client: &str, per: usize) -> Vec<String> {
    let att = attnums(c, BIG);
    let cols = ["title", "status", "updated_at"];
    let ids: Vec<String> = rows.iter().map(|&n| data::task_id(n)).collect();
    let vers: std::collections::HashMap<String, Vec<i64>> = c
        .query(
            &format!("SELECT id, _sync_ver FROM {BIG} WHERE id = ANY($1)"),
            &[&ids],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, Vec<i64>>(1)))
        .collect();
    let mut clock = Clock::new(client);
    let mut changes = Vec::with_capacity(rows.len());
    for (i, &n) in rows.iter().enumerate() {
        let t = Task::gen(n).edited(edit);
        let ver = &vers[&t.id];
        let stamp = clock.tick(wall_clock_unix_ms());
        let mut pk = Map::new();
        pk.insert("id".into(), json!(t.id));
        let mut vals = Map::new();
        vals.insert("title".into(), json!(t.title));
        vals.insert("status".into(), json!(t.status));
        vals.insert("updated_at".into(), json!(data::wire_ts(t.updated_at)));
        changes.push(Change {
            seq: i as i64 + 1,
            table: BIG.into(),
            op: Op::Update,
            pk,
            cols: vals,
            ver: cols.iter().map(|k| (k.to_string(), stamp)).collect(),
            base: cols
                .iter()
                .map(|k| (k.to_string(), Hlc::from_i64(ver[att[*k] - 1])))
                .collect(),
            base_values: Map::new(),
            hlc: stamp,
            resolves: Vec::new(),
        });
    }
    changes
        .chunks(per)
        .map(|ch| {
            serde_json::to_string(&PushBatch {
                format: FORMAT,
                client_id: client.to_string(),
                changes: ch.to_vec(),
            })
            .unwrap()
        })
        .collect()
}

/// P7: sync_push of client updates vs plain UPDATE statements in one
/// transaction.
pub fn p7(c: &mut Client, cfg: &Config) -> Figure {
    let rows = p7_rows(cfg);
    let k = rows.len() as f64;
    let (mut push, mut plain) = (Vec::new(), Vec::new());
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let stmt = c
        .prepare("SELECT sync_push($1::text::jsonb)::text")
        .unwrap();
    for rep in 0..cfg.runs {
        let client = format!("bench-client-p7-{rep}");
        let batches = push_batches(c, &rows, rep as u64 + 1, &client, cfg.push_batch);
        c.batch_execute("CHECKPOINT").unwrap();
        let mut secs = 0.0;
        for b in &batches {
            let t = Instant::now();
            let r: String = c.query_one(&stmt, &[b]).unwrap().get(0);
            secs += t.elapsed().as_secs_f64();
            let v: Value = serde_json::from_str(&r).unwrap();
            for res in v["results"].as_array().unwrap() {
                *statuses
                    .entry(res["status"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
        push.push(k / secs);
        // Baseline: the same edits as plain UPDATE statements, one transaction.
        c.batch_execute("CHECKPOINT").unwrap();
        let upd = c
            .prepare(&format!(
                "UPDATE {BIG_PLAIN} SET title = $1, status = $2, updated_at = $3::text::timestamptz WHERE id = $4"
            ))
            .unwrap();
        let edits: Vec<Task> = rows
            .iter()
            .map(|&n| Task::gen(n).edited(rep as u64 + 1))
            .collect();
        let t = Instant::now();
        let mut tx = c.transaction().unwrap();
        for e in &edits {
            let ts = data::pg_ts(e.updated_at);
            let status = e.status.to_string();
            let n = tx.execute(&upd, &[&e.title, &status, &ts, &e.id]).unwrap();
            assert_eq!(n, 1);
        }
        tx.commit().unwrap();
        let ps = t.elapsed().as_secs_f64();
        plain.push(k / ps);
        eprintln!(
            "  P7 rep {rep}: sync_push {:.0} changes/s, plain UPDATE {:.0} rows/s",
            k / secs,
            k / ps
        );
    }
    let applied = statuses.get("applied").copied().unwrap_or(0);
    let mut f = Figure::new(
        "P7",
        &format!(
            "sync_push of {} client updates (3 columns each), batches of {}",
            rows.len(),
            cfg.push_batch
        ),
        "changes/s",
    )
    .throughput(push, plain)
    .label("P7 sync_push")
    .baseline_is("plain UPDATE statements (prepared, one transaction) on the plain table")
    .target(Check::ratio_ge(0.3))
    .note(format!("results: {statuses:?}"));
    if applied != rows.len() * cfg.runs {
        f.note.push_str("; WARNING: not every change was applied");
    }
    f
}

// ---------------------------------------------------------------- P9

/// The client side of P9.
pub trait P9Client: Send {
    /// The cursor to start from (the client is up to date there).
    fn cursor(&mut self) -> Option<String>;
    /// Applies a pulled page.
    fn apply(&mut self, page: &str);
    /// Whether the client now shows `marker` as the title of row `id`.
    fn sees(&mut self, id: &str, marker: &str) -> bool;
    /// What "visible" means for this client.
    fn describe(&self) -> &'static str;
}

/// A Postgres-only client: a change is visible once a pulled page has it.
pub struct P9PgOnly {
    /// Start cursor.
    pub cursor: Option<String>,
}

impl P9Client for P9PgOnly {
    fn cursor(&mut self) -> Option<String> {
        self.cursor.clone()
    }
    fn apply(&mut self, _page: &str) {}
    fn sees(&mut self, _id: &str, _marker: &str) -> bool {
        true
    }
    fn describe(&self) -> &'static str {
        "pulled by sync_pull (no SQLite client)"
    }
}

/// Propagation latencies (ms): from just before a single-row UPDATE is sent
/// (autocommit) until the client, woken by `LISTEN pg_sync`, has pulled it
/// (and applied it and read it back, for a SQLite client).
pub fn p9(cluster: &BenchCluster, cfg: &Config, mut client: Box<dyn P9Client>) -> Figure {
    let iters = cfg.p9_iters;
    let mut lc = cluster.connect(DB);
    // Catch up to the end before listening.
    let mut cursor = client.cursor();
    {
        let stmt = lc.prepare("SELECT sync_pull_json($1, $2)::text").unwrap();
        loop {
            let text: String = lc.query_one(&stmt, &[&cursor, &cfg.page]).unwrap().get(0);
            client.apply(&text);
            let (cur, more) = page_meta(&text);
            cursor = Some(cur);
            if !more {
                break;
            }
        }
    }
    lc.batch_execute("LISTEN pg_sync").unwrap();
    let describe = client.describe();
    let (to_listener, from_writer) = mpsc::channel::<(String, String, Instant)>();
    let (to_writer, from_listener) = mpsc::channel::<f64>();
    let listener = std::thread::spawn(move || {
        let stmt = lc
            .prepare("SELECT sync_pull_json($1, 10000)::text")
            .unwrap();
        while let Ok((id, marker, t0)) = from_writer.recv() {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut seen = false;
            // Sleep until the commit's NOTIFY arrives.
            let woke = lc
                .notifications()
                .timeout_iter(Duration::from_secs(10))
                .next()
                .ok()
                .flatten()
                .is_some();
            while woke && !seen && Instant::now() < deadline {
                loop {
                    let text: String = lc.query_one(&stmt, &[&cursor]).unwrap().get(0);
                    client.apply(&text);
                    let (cur, more) = page_meta(&text);
                    cursor = Some(cur);
                    if text.contains(&marker) {
                        seen = client.sees(&id, &marker);
                    }
                    if !more {
                        break;
                    }
                }
                if !seen {
                    // Held back by the snapshot horizon: poll again shortly.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            // Notifications of this probe that were not consumed yet.
            while lc.notifications().iter().next().ok().flatten().is_some() {}
            let ms = if seen {
                t0.elapsed().as_secs_f64() * 1000.0
            } else {
                f64::NAN
            };
            if to_writer.send(ms).is_err() {
                break;
            }
        }
    });
    let mut w = cluster.connect(DB);
    // The writer's commits announce themselves (pg_sync.notify is off by default).
    w.batch_execute("SET pg_sync.notify = on").unwrap();
    let upd = w
        .prepare(&format!("UPDATE {BIG} SET title = $1 WHERE id = $2"))
        .unwrap();
    let mut lat = Vec::with_capacity(iters);
    let mut lost = 0;
    for i in 0..iters {
        let n = 1 + (i as u64 * 7919) % cfg.big_rows;
        let marker = format!("propagation probe {i} {}", wall_clock_unix_ms());
        let id = data::task_id(n);
        let t0 = Instant::now();
        to_listener.send((id.clone(), marker.clone(), t0)).unwrap();
        w.execute(&upd, &[&marker, &id]).unwrap();
        let ms = from_listener.recv().unwrap();
        if ms.is_nan() {
            lost += 1;
        } else {
            lat.push(ms);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(to_listener);
    let _ = listener.join();
    let p50 = median(&lat);
    let p99 = quantile(&lat, 0.99);
    let mut f = Figure::new(
        "P9",
        &format!("Propagation of a committed server UPDATE to a LISTENing client: {describe} (p50)"),
        "ms",
    )
    .label("P9 propagation p50")
    .target(Check::value_lt(50.0))
    .note(format!(
        "{iters} probes, p99 {p99:.2} ms, max {:.2} ms{}; the clock starts before the UPDATE is sent (autocommit), so the write and its commit are included",
        lat.iter().copied().fold(0.0, f64::max),
        if lost > 0 {
            format!(", {lost} probes not seen within 10 s")
        } else {
            String::new()
        }
    ));
    f.value = Some(p50);
    f.extra.push(("p99".into(), p99));
    f.runs = lat;
    f
}
