//! `make bench`: pg_sync / sqlite_sync benchmarks against raw baselines
//! measured in the same run, written to docs/benchmarks.md with PNG charts.
//!
//! Run through `scripts/bench.sh`, which builds the release artifacts first.
//! Environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BENCH_SCALE` | 1 | multiplies row counts (0.1 for a quick try) |
//! | `BENCH_RUNS` | 3 | runs per figure (medians are reported) |
//! | `BENCH_PGBENCH_SECS` | 4 | duration of one pgbench run |
//! | `BENCH_ONLY` | all | comma list of figures to run, e.g. `P1,P9` |
//! | `BENCH_OUT_DIR` | `docs` | where benchmarks.md and the PNGs go |
//! | `BENCH_MERGE_JSON` | — | output of the sync_core merge bench to include |
//! | `SQLITE_SYNC_LIB` | `target/release/libsqlite_sync.so` | the SQLite extension |
//! | `BENCH_LOAD_SECS` | 120 | P10: seconds per topology (times `BENCH_SCALE`) |
//! | `BENCH_LOAD_DEVICES` | 100 | P10: simulated devices |
//! | `BENCH_LOAD_INTERVAL_MS` | 2000 | P10: mean time between a device's syncs |
//! | `BENCH_LOAD_POOL` | 4 | P10: PgBouncer server connections per pool |

mod cluster;
mod data;
mod idle;
mod load;
mod mem;
mod pg;
mod plot;
mod report;
mod results;
mod sqlite;
mod subset;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use results::Figure;

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Scale factor applied to row counts.
    pub scale: f64,
    /// Runs per figure.
    pub runs: usize,
    /// Seconds per pgbench run.
    pub pgbench_secs: u32,
    /// P1 runs with synchronous_commit=off (the targeted mode).
    pub p1_runs_off: usize,
    /// Rows in the big synced table (1M at scale 1).
    pub big_rows: u64,
    /// Rows preloaded into each P1 table.
    pub p1_rows: u64,
    /// Page size of sync_pull.
    pub page: i32,
    /// Changes pushed in P7.
    pub push_rows: u64,
    /// Changes per sync_push call.
    pub push_batch: usize,
    /// Rows written locally in P4 (one transaction) / incoming in P6.
    pub local_rows: u64,
    /// Rows written in P4's one-row-per-transaction mode (P5's samples).
    pub local_rows_per_txn: u64,
    /// Probes in P9.
    pub p9_iters: usize,
    /// Figures to run (empty: all).
    pub only: BTreeSet<String>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Merge bench JSON.
    pub merge_json: Option<PathBuf>,
    /// The SQLite extension.
    pub sqlite_lib: PathBuf,
    /// P10: devices.
    pub load_devices: usize,
    /// P10: seconds per topology.
    pub load_secs: f64,
    /// P10: mean interval between a device's syncs (ms).
    pub load_interval_ms: f64,
    /// P10: PgBouncer server connections per pool.
    pub load_pool: u32,
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

impl Config {
    fn from_env() -> Config {
        let mut c = Config::from_env_inner();
        c.p1_runs_off = env_or("BENCH_P1_RUNS_OFF", c.runs + 2).max(c.runs);
        c
    }

    fn from_env_inner() -> Config {
        let scale: f64 = env_or("BENCH_SCALE", 1.0);
        let s = |n: f64, min: u64| ((n * scale) as u64).max(min);
        let root = sync_tests::workspace_root();
        Config {
            scale,
            runs: env_or("BENCH_RUNS", 3usize).max(1),
            pgbench_secs: env_or("BENCH_PGBENCH_SECS", 4u32).max(1),
            p1_runs_off: 0,
            big_rows: s(1_000_000.0, 10_000),
            p1_rows: s(400_000.0, 100_000),
            page: 10_000,
            push_rows: s(100_000.0, 1_000),
            push_batch: 10_000,
            local_rows: s(100_000.0, 1_000),
            local_rows_per_txn: env_or("BENCH_ROWS_PER_TXN", s(100_000.0, 1_000)),
            p9_iters: env_or("BENCH_P9_ITERS", 200usize),
            only: std::env::var("BENCH_ONLY")
                .map(|v| {
                    v.split(',')
                        .map(|x| x.trim().to_uppercase())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            out_dir: std::env::var("BENCH_OUT_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("docs")),
            merge_json: std::env::var("BENCH_MERGE_JSON").ok().map(PathBuf::from),
            sqlite_lib: std::env::var("SQLITE_SYNC_LIB")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target/release/libsqlite_sync.so")),
            load_devices: env_or("BENCH_LOAD_DEVICES", 100usize).max(1),
            load_secs: (env_or("BENCH_LOAD_SECS", 120.0f64) * scale).max(5.0),
            load_interval_ms: env_or("BENCH_LOAD_INTERVAL_MS", 2000.0f64).max(1.0),
            load_pool: env_or("BENCH_LOAD_POOL", 4u32).max(1),
        }
    }

    /// Whether figure `id` is selected.
    pub fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.contains(id)
    }
}

/// For profiling by hand: with `BENCH_HOLD=<file>`, writes the connection
/// string of the loaded database there and waits until the file is removed.
fn hold(cluster: &cluster::BenchCluster) {
    let Ok(f) = std::env::var("BENCH_HOLD") else {
        return;
    };
    std::fs::write(&f, cluster.conn_str(pg::DB)).unwrap();
    eprintln!("bench: holding; connect with `psql \"$(cat {f})\"`, remove {f} to go on");
    while std::path::Path::new(&f).exists() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Where the last run's results are kept for `BENCH_RENDER`.
fn results_path() -> PathBuf {
    sync_tests::workspace_root().join("target/bench-results.json")
}

/// `BENCH_RENDER=1`: rewrites the report from the last run's results
/// (after editing bench/analysis.md or method.md) without running.
fn render_only(cfg: &Config) {
    let text =
        std::fs::read_to_string(results_path()).expect("no saved results: run the bench first");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let figs: Vec<Figure> = v["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(Figure::from_json)
        .collect();
    let merge: Vec<(String, f64)> = v["merge"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e[0].as_str().unwrap_or_default().to_string(),
                        e[1].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let env = report::Env::from_json(&v["env"]);
    let mut saved = cfg.clone();
    saved.scale = v["config"]["scale"].as_f64().unwrap_or(cfg.scale);
    saved.runs = v["config"]["runs"].as_u64().unwrap_or(cfg.runs as u64) as usize;
    saved.pgbench_secs = v["config"]["pgbench_secs"].as_u64().unwrap_or(4) as u32;
    saved.p1_runs_off = v["config"]["p1_runs_off"].as_u64().unwrap_or(5) as usize;
    saved.load_secs = v["config"]["load_secs"].as_f64().unwrap_or(cfg.load_secs);
    let warnings: Vec<String> = v["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    report::write(&saved, &figs, &merge, &env, &warnings);
    report::print_table(&figs);
}

fn main() {
    // Re-executed as P14's client process.
    if let Ok(mode) = std::env::var("BENCH_CLIENT_SYNC") {
        sqlite::client_child(&mode);
        return;
    }
    let cfg = Config::from_env();
    if std::env::var("BENCH_RENDER").is_ok() {
        render_only(&cfg);
        return;
    }
    let started = Instant::now();
    eprintln!("bench: {cfg:?}");
    let mut figs: Vec<Figure> = Vec::new();

    let cluster = cluster::BenchCluster::start();
    eprintln!(
        "bench: cluster on port {} in {}",
        cluster.port(),
        cluster.dir().display()
    );
    let sqlite_state = sqlite::probe(&cfg);
    eprintln!("bench: sqlite_sync: {}", sqlite_state.describe());

    // P1 runs in a database of its own, so its synced table stays out of
    // the pulls of the other figures.
    if cfg.wants("P1") {
        eprintln!("bench: P1");
        let mut c = pg::create_db(&cluster, pg::DB_P1);
        figs.extend(pg::p1(&cluster, &mut c, &cfg));
    }
    let mut c = pg::create_db(&cluster, pg::DB);
    let pg_version: String = c.query_one("SELECT version()", &[]).unwrap().get(0);
    let needs_big = ["P2", "P3", "P6", "P7", "P8", "P9", "P11", "P13", "P14"]
        .iter()
        .any(|f| cfg.wants(f));
    let mut end_cursor = None;
    if needs_big {
        eprintln!("bench: loading the big table");
        figs.push(pg::setup_big(&mut c, &cfg));
        if cfg.wants("P8") {
            figs.push(pg::p8_pg(&mut c, &cfg));
        }
        hold(&cluster);
        if cfg.wants("P2") || cfg.wants("P11") {
            eprintln!("bench: P2/P11");
            let (f, cur) = pg::p2(&mut c, &cfg);
            figs.extend(f.into_iter().filter(|f| cfg.wants(&f.id)));
            end_cursor = Some(cur);
        }
        if cfg.wants("P14") {
            eprintln!("bench: P14 (backend)");
            figs.push(pg::p14_backend(&cluster, &cfg));
        }
    }
    // SQLite figures: P3 (and P8's SQLite side), P4/P5, then P6 and P9 on
    // the client P3 left behind.
    let (sfigs, client) = sqlite::figures(&mut c, &cfg, &sqlite_state);
    figs.extend(sfigs);
    if cfg.wants("P14") && needs_big {
        eprintln!("bench: P14 (client)");
        figs.push(sqlite::p14_client(
            &cluster.conn_str(pg::DB),
            &cfg,
            &sqlite_state,
        ));
    }
    let mut p9_client: Option<Box<dyn pg::P9Client>> = None;
    if let Some(mut client) = client {
        if cfg.wants("P6") {
            eprintln!("bench: P6");
            figs.push(sqlite::p6(&mut c, &cfg, &mut client));
        }
        p9_client = Some(Box::new(sqlite::P9Sqlite { db: client }));
    }
    if cfg.wants("P9") {
        eprintln!("bench: P9");
        let client = p9_client.take().unwrap_or_else(|| {
            let cursor = end_cursor
                .clone()
                .or_else(|| Some(pg::pull_all(&mut c, None, cfg.page).2));
            Box::new(pg::P9PgOnly { cursor })
        });
        figs.push(pg::p9(&cluster, &cfg, client));
    }
    drop(p9_client);
    if cfg.wants("P7") {
        eprintln!("bench: P7");
        figs.push(pg::p7(&mut c, &cfg));
    }
    if cfg.wants("P13") && needs_big {
        eprintln!("bench: P13");
        figs.extend(subset::p13(&mut c, &cfg));
    }
    if cfg.wants("P12") {
        eprintln!("bench: P12");
        figs.extend(idle::p12(&cluster, &cfg));
    }
    let mut warnings = Vec::new();
    if cfg.wants("P10") {
        eprintln!("bench: P10");
        figs.extend(load::p10(&cluster, &cfg, &sqlite_state, &mut warnings));
    }
    let pg_sync_md5 = cluster.pg_sync_md5.clone();
    drop(c);
    drop(cluster);
    sqlite::cleanup();

    let merge = report::read_merge(cfg.merge_json.as_deref());
    let env = report::Env::collect(
        &pg_version,
        &pg_sync_md5,
        &sqlite_state,
        started.elapsed().as_secs_f64(),
    );
    let saved = serde_json::json!({
        "figures": figs.iter().map(Figure::to_json).collect::<Vec<_>>(),
        "merge": merge.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(),
        "env": env.to_json(),
        "config": {"scale": cfg.scale, "runs": cfg.runs, "pgbench_secs": cfg.pgbench_secs,
                   "p1_runs_off": cfg.p1_runs_off, "load_secs": cfg.load_secs},
        "warnings": warnings,
    });
    if let Err(e) = std::fs::write(results_path(), saved.to_string()) {
        eprintln!("bench: could not save {}: {e}", results_path().display());
    }
    report::write(&cfg, &figs, &merge, &env, &warnings);
    report::print_table(&figs);
}
