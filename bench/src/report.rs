//! docs/benchmarks.md and its charts.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::plot::{self, Bar};
use crate::results::{fmt_num, On, Status};
use crate::sqlite::{self, SqliteState};
use crate::{Config, Figure};

/// `merge <strategy> <merges/s>` results.
pub fn read_merge(p: Option<&Path>) -> Vec<(String, f64)> {
    let Some(p) = p else { return Vec::new() };
    let Ok(text) = std::fs::read_to_string(p) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["strategy"].as_str().unwrap_or("?").to_string(),
                        e["merges_per_sec"].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cmd(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// The machine and software the run used.
pub struct Env {
    rows: Vec<(String, String)>,
    secs: f64,
}

impl Env {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"rows": self.rows, "secs": self.secs})
    }

    /// From [`Env::to_json`].
    pub fn from_json(v: &Value) -> Env {
        Env {
            rows: v["rows"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            (
                                r[0].as_str().unwrap_or_default().to_string(),
                                r[1].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            secs: v["secs"].as_f64().unwrap_or(0.0),
        }
    }
}

impl Env {
    /// Gathers what the report states about the run.
    pub fn collect(pg_version: &str, pg_sync_md5: &str, sqlite: &SqliteState, secs: f64) -> Env {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "?".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
            .unwrap_or_else(|| "?".into());
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("PRETTY_NAME="))
            .map(|l| l["PRETTY_NAME=".len()..].trim_matches('"').to_string())
            .unwrap_or_else(|| "?".into());
        let root = sync_tests::workspace_root();
        let git = |args: &[&str]| {
            let mut a = vec!["-C", root.to_str().unwrap_or(".")];
            a.extend_from_slice(args);
            cmd("git", &a)
        };
        let dirty = if git(&[
            "status",
            "--porcelain",
            "--",
            "pg_sync",
            "sqlite_sync",
            "shared",
        ])
        .is_empty()
        {
            ""
        } else {
            " (with uncommitted changes in pg_sync/sqlite_sync/shared)"
        };
        let rows = vec![
            ("date".into(), cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
            ("commit".into(), format!("{}{dirty}", git(&["rev-parse", "--short", "HEAD"]))),
            ("cores (nproc)".into(), cmd("nproc", &[])),
            ("CPU".into(), cpu),
            ("memory".into(), mem),
            ("OS / kernel".into(), format!("{os} / {}", cmd("uname", &["-r"]))),
            ("rustc".into(), std::env::var("BENCH_RUSTC").unwrap_or_else(|_| cmd("rustc", &["--version"]))),
            ("Postgres".into(), pg_version.to_string()),
            (
                "pg_sync".into(),
                format!(
                    "release build installed by `cargo pgrx install --release`; the cluster runs a private copy of the installation (pg_sync.so md5 {pg_sync_md5})"
                ),
            ),
            (
                "Postgres settings".into(),
                crate::cluster::SETTINGS
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + ", fsync=on; pgbench over TCP loopback",
            ),
            ("pgbench".into(), cmd(&format!("{}/pgbench", sync_tests::PG_BIN), &["--version"])),
            (
                "SQLite".into(),
                format!(
                    "{} (bundled with rusqlite in the bench binary); pragmas journal_mode=WAL, synchronous=NORMAL, default cache",
                    sqlite::sqlite_version()
                ),
            ),
            ("sqlite_sync".into(), sqlite.describe()),
        ];
        Env { rows, secs }
    }
}

fn status_text(f: &Figure) -> String {
    match f.status() {
        Status::Met => "met".into(),
        Status::Missed => "**missed**".into(),
        Status::Info => "info".into(),
        Status::NotMeasured => "not measured".into(),
    }
}

fn num(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "—".into())
}

fn ratio_text(f: &Figure) -> String {
    match f.ratio {
        Some(r) if r.is_finite() => format!("{r:.2}"),
        _ => "—".into(),
    }
}

/// Prints the results table to stderr.
pub fn print_table(figs: &[Figure]) {
    eprintln!();
    eprintln!(
        "{:4} {:58} {:>12} {:>12} {:>6}  {:28} status",
        "id", "figure", "median", "baseline", "ratio", "target"
    );
    for f in figs {
        let what: String = f.label.chars().take(58).collect();
        eprintln!(
            "{:4} {:58} {:>12} {:>12} {:>6}  {:28} {}",
            f.id,
            what,
            num(f.value),
            num(f.baseline),
            ratio_text(f),
            f.target_text(),
            status_text(f).replace('*', "")
        );
    }
}

fn color_of(f: &Figure) -> plotters::style::RGBColor {
    match f.status() {
        Status::Met => plot::GOOD,
        Status::Missed => plot::BAD,
        _ => plot::NEUTRAL,
    }
}

/// Draws the charts; returns (file name, alt text) of each chart drawn.
fn charts(cfg: &Config, figs: &[Figure]) -> Result<Vec<(String, String)>, String> {
    if !plot::init_font() {
        return Err(format!(
            "font {} missing (apt-get install fonts-dejavu-core)",
            plot::FONT
        ));
    }
    let mut out = Vec::new();
    // 1. Every ratio against its target.
    let bars: Vec<Bar> = figs
        .iter()
        .filter(|f| f.ratio.is_some_and(f64::is_finite))
        .map(|f| {
            let target = f.target.iter().find(|c| c.on == On::Ratio).map(|c| c.bound);
            Bar {
                label: f.label.clone(),
                value: f.ratio.unwrap_or(f64::NAN),
                target,
                color: color_of(f),
                text: format!(
                    "{:.2}{}",
                    f.ratio.unwrap_or(f64::NAN),
                    f.target
                        .iter()
                        .find(|c| c.on == On::Ratio)
                        .map(|c| format!("  (target {})", c.describe(&f.unit)))
                        .unwrap_or_default()
                ),
            }
        })
        .collect();
    if !bars.is_empty() {
        let max = bars.iter().map(|b| b.value).fold(1.6, f64::max) * 1.12;
        let name = "bench-ratios.png";
        plot::hbars(
            &cfg.out_dir.join(name),
            "Ratio to the raw baseline (black tick = target; P8: lower is better)",
            "ratio (synced / baseline)",
            &bars,
            (0.0, max),
            false,
            &[
                ("meets target", plot::GOOD),
                ("misses target", plot::BAD),
                ("no target", plot::NEUTRAL),
            ],
        )?;
        out.push((
            name.into(),
            "ratio of every figure to its baseline, with the target".into(),
        ));
    }
    // 2. P1 TPS per variant.
    let p1: Vec<&Figure> = figs.iter().filter(|f| f.id == "P1").collect();
    if !p1.is_empty() {
        let mut bars = Vec::new();
        for f in &p1 {
            let trig = f.extra.iter().find(|(k, _)| k == "trigger").map(|x| x.1);
            for (name, v, color) in [
                ("plain", f.baseline, plot::GREY),
                ("PL/pgSQL log trigger", trig, plot::AMBER),
                ("pg_sync", f.value, color_of(f)),
            ] {
                let v = v.unwrap_or(f64::NAN);
                bars.push(Bar {
                    label: format!("{} · {name}", f.label.trim_start_matches("P1 ")),
                    value: v,
                    target: None,
                    color,
                    text: format!("{} tps", fmt_num(v)),
                });
            }
        }
        let max = bars
            .iter()
            .map(|b| b.value)
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max)
            * 1.2;
        let name = "bench-p1.png";
        plot::hbars(
            &cfg.out_dir.join(name),
            "P1: pgbench single-row writes, 2 clients (median TPS)",
            "transactions per second",
            &bars,
            (0.0, max),
            false,
            &[
                ("plain table", plot::GREY),
                ("hand-written trigger", plot::AMBER),
                ("pg_sync (green: meets 0.85)", plot::GOOD),
            ],
        )?;
        out.push((
            name.into(),
            "P1 TPS of the plain, trigger and synced tables".into(),
        ));
    }
    // 3. Latencies (log scale).
    let mut bars = Vec::new();
    for f in figs.iter().filter(|f| f.id == "P5" && f.value.is_some()) {
        let op = f.label.trim_start_matches("P5 ").trim_end_matches(" p99");
        let get = |k: &str| {
            f.extra
                .iter()
                .find(|(n, _)| n == k)
                .map(|x| x.1)
                .unwrap_or(f64::NAN)
        };
        bars.push(Bar {
            label: format!("P5 {op} plain p50"),
            value: get("plain p50"),
            target: None,
            color: plot::GREY,
            text: format!("{:.3} ms", get("plain p50")),
        });
        bars.push(Bar {
            label: format!("P5 {op} plain p99"),
            value: f.baseline.unwrap_or(f64::NAN),
            target: None,
            color: plot::GREY,
            text: format!("{:.3} ms", f.baseline.unwrap_or(f64::NAN)),
        });
        bars.push(Bar {
            label: format!("P5 {op} synced p50"),
            value: get("p50"),
            target: None,
            color: plot::NEUTRAL,
            text: format!("{:.3} ms", get("p50")),
        });
        bars.push(Bar {
            label: format!("P5 {op} synced p99"),
            value: f.value.unwrap_or(f64::NAN),
            target: Some(1.0),
            color: color_of(f),
            text: format!("{:.3} ms (target < 1 ms)", f.value.unwrap_or(f64::NAN)),
        });
    }
    for f in figs.iter().filter(|f| f.id == "P9" && f.value.is_some()) {
        let p99 = f
            .extra
            .iter()
            .find(|(n, _)| n == "p99")
            .map(|x| x.1)
            .unwrap_or(f64::NAN);
        bars.push(Bar {
            label: "P9 propagation p50".into(),
            value: f.value.unwrap_or(f64::NAN),
            target: Some(50.0),
            color: color_of(f),
            text: format!("{:.2} ms (target < 50 ms)", f.value.unwrap_or(f64::NAN)),
        });
        bars.push(Bar {
            label: "P9 propagation p99".into(),
            value: p99,
            target: None,
            color: plot::NEUTRAL,
            text: format!("{p99:.2} ms"),
        });
    }
    let mut alt = "P5 write latency and P9 propagation latency".to_string();
    for f in figs
        .iter()
        .filter(|f| f.id == "P10" && f.unit == "ms" && f.value.is_some())
    {
        let q = f.label.rsplit(' ').next().unwrap_or("");
        for (topo, v, color) in [
            ("pulls on the standby", f.value, plot::NEUTRAL),
            ("pulls on the primary", f.baseline, plot::GREY),
        ] {
            let v = v.unwrap_or(f64::NAN);
            bars.push(Bar {
                label: format!("P10 sync {q} · {topo}"),
                value: v,
                target: None,
                color,
                text: format!("{v:.1} ms"),
            });
        }
        alt = "P5 write latency, P9 propagation latency and P10 sync round trips under load".into();
    }
    if !bars.is_empty() {
        let name = "bench-latency.png";
        let top = bars
            .iter()
            .map(|b| b.value)
            .filter(|v| v.is_finite())
            .fold(200.0, f64::max)
            * 2.0;
        plot::hbars(
            &cfg.out_dir.join(name),
            "Latency (log scale; black tick = target)",
            "milliseconds",
            &bars,
            (0.001, top),
            true,
            &[],
        )?;
        out.push((name.into(), alt));
    }
    // 4. The load test: rates and the primary's CPU per topology.
    let load: Vec<&Figure> = figs
        .iter()
        .filter(|f| f.id == "P10" && f.not_measured.is_none())
        .collect();
    if let (Some(push), Some(pull), Some(cpu)) = (
        load.iter().find(|f| f.unit == "pushes/s"),
        load.iter().find(|f| f.unit == "pulls/s"),
        load.iter().find(|f| f.unit == "%"),
    ) {
        let extra = |k: &str| {
            cpu.extra
                .iter()
                .find(|(n, _)| n == k)
                .map(|x| x.1)
                .unwrap_or(f64::NAN)
        };
        let topo = [
            ("pulls on the standby", plot::NEUTRAL, ""),
            ("pulls on the primary", plot::GREY, "baseline "),
        ];
        let mut bars = Vec::new();
        let mut add = |what: &str, v: [Option<f64>; 2], unit: &str| {
            for (i, (name, color, _)) in topo.iter().enumerate() {
                let x = v[i].unwrap_or(f64::NAN);
                bars.push(Bar {
                    label: format!("{what} · {name}"),
                    value: x,
                    target: None,
                    color: *color,
                    text: format!("{x:.1} {unit}"),
                });
            }
        };
        add("sync_push calls/s", [push.value, push.baseline], "/s");
        add("sync_pull_json calls/s", [pull.value, pull.baseline], "/s");
        let cores = |k: &str| {
            [
                Some(100.0 * extra(&format!("{}{k}", topo[0].2))),
                Some(100.0 * extra(&format!("{}{k}", topo[1].2))),
            ]
        };
        let busy = cores("primary cores");
        add("primary CPU, % of a core", busy, "%");
        add(
            "  of it serving syncs",
            [
                busy[0].zip(cpu.value).map(|(b, s)| b * s / 100.0),
                busy[1].zip(cpu.baseline).map(|(b, s)| b * s / 100.0),
            ],
            "%",
        );
        add("standby CPU, % of a core", cores("standby cores"), "%");
        let max = bars
            .iter()
            .map(|b| b.value)
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max)
            * 1.3;
        let name = "bench-load.png";
        plot::hbars(
            &cfg.out_dir.join(name),
            "P10: many devices syncing through PgBouncer (load test)",
            "calls per second / % of one core",
            &bars,
            (0.0, max),
            false,
            &[
                ("pulls on the hot standby", plot::NEUTRAL),
                ("baseline: pulls on the primary", plot::GREY),
            ],
        )?;
        out.push((
            name.into(),
            "P10 load test: calls per second and the primary's CPU, pulls on the standby vs on the primary".into(),
        ));
    }
    Ok(out)
}

/// Writes docs/benchmarks.md and the charts.
pub fn write(
    cfg: &Config,
    figs: &[Figure],
    merge: &[(String, f64)],
    env: &Env,
    warnings: &[String],
) {
    std::fs::create_dir_all(&cfg.out_dir).unwrap();
    let chart_list = match charts(cfg, figs) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bench: charts not drawn: {e}");
            Vec::new()
        }
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `make bench` (scripts/bench.sh, bench/src) in {:.1} minutes. \
         Every figure is the median of {} runs (P1: {} runs of {} s pgbench with \
         synchronous_commit=off, {} with it on; P10: one run of {:.0} s per topology), next to a raw baseline measured in the same run \
         on the same machine (2 cores shared with other work: expect noise). *ratio* is synced / \
         baseline for sizes and, for throughputs, the median of the per-run ratios (each run \
         measures both sides back to back). Row counts are scaled by BENCH_SCALE = {}.\n",
        env.secs / 60.0,
        cfg.runs,
        cfg.p1_runs_off,
        cfg.pgbench_secs,
        cfg.runs,
        cfg.load_secs,
        cfg.scale
    );
    for w in warnings {
        let _ = writeln!(md, "> **Warning:** {w}\n");
    }
    let missed: Vec<&Figure> = figs
        .iter()
        .filter(|f| f.status() == Status::Missed)
        .collect();
    let met = figs.iter().filter(|f| f.status() == Status::Met).count();
    let nm = figs
        .iter()
        .filter(|f| f.status() == Status::NotMeasured)
        .count();
    let _ = writeln!(
        md,
        "**{met} figures meet their target, {} miss it{}.** See [Analysis](#analysis) for where the time goes in each miss.\n",
        missed.len(),
        if nm > 0 { format!(", {nm} not measured") } else { String::new() }
    );
    for (name, alt) in &chart_list {
        let _ = writeln!(md, "![{alt}]({name})\n");
    }
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| id | figure | median | baseline | ratio | target | status |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|---|");
    for f in figs {
        if let Some(why) = &f.not_measured {
            let _ = writeln!(md, "| {} | {} | — | — | — | — | {why} |", f.id, f.what);
            continue;
        }
        let unit = if f.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", f.unit)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {}{unit} | {}{} | {} | {} | {} |",
            f.id,
            f.what,
            num(f.value),
            num(f.baseline),
            if f.baseline.is_some() {
                unit.clone()
            } else {
                String::new()
            },
            ratio_text(f),
            f.target_text(),
            status_text(f)
        );
    }
    let _ = writeln!(md, "\n### Baselines and notes\n");
    for f in figs.iter().filter(|f| f.not_measured.is_none()) {
        let mut parts = Vec::new();
        if !f.baseline_what.is_empty() {
            parts.push(format!("baseline: {}", f.baseline_what));
        }
        if !f.note.is_empty() {
            parts.push(f.note.clone());
        }
        if f.runs.len() > 1 && f.runs.len() <= 10 {
            parts.push(format!(
                "runs: {} vs {}",
                f.runs
                    .iter()
                    .map(|x| fmt_num(*x))
                    .collect::<Vec<_>>()
                    .join(", "),
                f.baseline_runs
                    .iter()
                    .map(|x| fmt_num(*x))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let _ = writeln!(
            md,
            "- **{}** {}: {}",
            f.id,
            f.label.trim_start_matches(&format!("{} ", f.id)),
            parts.join("; ")
        );
    }
    if !merge.is_empty() {
        let _ = writeln!(md, "\n## Merge throughput (sync_core)\n");
        let _ = writeln!(
            md,
            "`cargo bench -p sync_core --bench merge`: `merge_column` over 2^20 deterministic column merges \
             (half of them concurrent), median of 5 runs. Information only (no target).\n"
        );
        let _ = writeln!(md, "| strategy | merges/s |");
        let _ = writeln!(md, "|---|---:|");
        for (s, v) in merge {
            let _ = writeln!(md, "| {s} | {} |", fmt_num(*v));
        }
    }
    let _ = writeln!(md, "\n## Machine\n");
    let _ = writeln!(md, "| | |");
    let _ = writeln!(md, "|---|---|");
    for (k, v) in &env.rows {
        let _ = writeln!(md, "| {k} | {} |", v.replace('|', "/"));
    }
    let _ = writeln!(md, "\n## What is measured\n");
    md.push_str(include_str!("../method.md"));
    let _ = writeln!(md, "\n## Analysis\n");
    let analysis = sync_tests::workspace_root().join("bench/analysis.md");
    match std::fs::read_to_string(&analysis) {
        Ok(a) => md.push_str(&a),
        Err(_) => md.push_str("(bench/analysis.md is missing)\n"),
    }
    let path = cfg.out_dir.join("benchmarks.md");
    std::fs::write(&path, md).unwrap();
    eprintln!("bench: wrote {}", path.display());
}
