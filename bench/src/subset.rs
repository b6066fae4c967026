//! P13: streams. The first download of a subscription covering about 10 %
//! of the 1M-row synced table (two of its nineteen assignees, with an
//! index on the filter column), against the whole table's pull in the same
//! run; then an incremental pull after 1,000 rows of the table changed, for
//! the subscription and for the whole table.
//!
//! Runs on the big table after the figures that pull it whole, and drops
//! its stream at the end (a table with a stream reaches devices only
//! through subscriptions).

use std::time::Instant;

use postgres::Client;
use serde_json::json;
use sync_core::cursor::{Cursor, Sub};

use crate::pg::{page_changes, page_meta, BIG};
use crate::results::{median, time, Check, Figure};
use crate::Config;

/// Pulls from `cursor` to the end as a device does (asking for the newest
/// page format with every pull: `None` is a new device's cursor); returns
/// the seconds spent in the calls, the changes and the last cursor.
fn pull_to_end(c: &mut Client, cursor: Option<String>, page: i32) -> (f64, usize, String) {
    let stmt = c.prepare("SELECT sync_pull_json($1, $2)").unwrap();
    let mut cursor = Some(match cursor {
        Some(text) => Cursor::with_page_format(&text, sync_core::PAGE_FORMAT).unwrap_or(text),
        None => crate::pg::device_cursor(),
    });
    let (mut secs, mut n) = (0.0, 0);
    loop {
        let t = Instant::now();
        let row = c.query_one(&stmt, &[&cursor, &page]).unwrap();
        let text = row.get::<_, crate::pg::JsonText>(0).0.to_string();
        secs += t.elapsed().as_secs_f64();
        n += page_changes(&text);
        let (cur, more) = page_meta(&text);
        cursor = Some(cur);
        if !more {
            return (secs, n, cursor.unwrap_or_default());
        }
    }
}

/// A cursor holding one subscription to `stream`, as `sync_subscribe`
/// leaves it on a device that holds none of its rows (`e`: the download
/// ends without the key list).
fn subscribed(stream: &str) -> String {
    Cursor {
        v: 1,
        q: vec![Sub {
            i: 1,
            s: stream.into(),
            p: json!({"a": "alice", "b": "bob"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            e: true,
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode()
}

/// Updates 1,000 rows spread over the table.
fn touch(c: &mut Client, cfg: &Config, round: u64) {
    let step = (cfg.big_rows / 1000).max(1);
    let ids: Vec<String> = (0..1000u64)
        .map(|k| crate::data::task_id(1 + (k * step + round) % cfg.big_rows))
        .collect();
    c.execute(
        &format!("UPDATE {BIG} SET title = title || '.' WHERE id = ANY($1)"),
        &[&ids],
    )
    .unwrap();
}

/// The P13 figures.
pub fn p13(c: &mut Client, cfg: &Config) -> Vec<Figure> {
    let runs = cfg.runs.max(1);
    // The whole table, as P2 pulls it.
    let mut full = Vec::new();
    let mut full_rows = 0;
    let mut whole_end = String::new();
    for _ in 0..runs {
        let (s, n, end) = pull_to_end(c, None, cfg.page);
        full.push(s);
        full_rows = n;
        whole_end = end;
    }
    // Incremental pull of the whole table after 1,000 changed rows.
    let mut inc_whole = Vec::new();
    for r in 0..runs as u64 {
        touch(c, cfg, r);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (s, _, end) = pull_to_end(c, Some(whole_end.clone()), cfg.page);
        inc_whole.push(s);
        whole_end = end;
    }
    let (idx_s, _) = time(|| {
        c.batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS p13_assignee ON {BIG} (assignee)"
        ))
        .unwrap()
    });
    c.batch_execute(&format!(
        "SELECT sync_stream('p13_two_assignees', '{BIG}', 'assignee = :a OR assignee = :b')"
    ))
    .unwrap();
    let subset: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM {BIG} WHERE assignee IN ('alice', 'bob')"),
            &[],
        )
        .unwrap()
        .get(0);
    let mut boot = Vec::new();
    let mut sub_end = String::new();
    let mut sub_rows = 0;
    for _ in 0..runs {
        let (s, n, end) = pull_to_end(c, Some(subscribed("p13_two_assignees")), cfg.page);
        boot.push(s);
        sub_rows = n;
        sub_end = end;
    }
    let mut inc_sub = Vec::new();
    for r in 0..runs as u64 {
        touch(c, cfg, 100 + r);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (s, _, end) = pull_to_end(c, Some(sub_end.clone()), cfg.page);
        inc_sub.push(s);
        sub_end = end;
    }
    c.batch_execute("SELECT sync_stream_drop('p13_two_assignees')")
        .unwrap();
    let full_ms: Vec<f64> = full.iter().map(|s| s * 1000.0).collect();
    let boot_ms: Vec<f64> = boot.iter().map(|s| s * 1000.0).collect();
    let mut f = Figure::new(
        "P13",
        &format!(
            "Streams: first download of a subscription covering {:.1} % of the {} rows ({sub_rows} rows; `assignee = :a OR assignee = :b`, index on assignee), pages of {}",
            100.0 * subset as f64 / cfg.big_rows as f64,
            cfg.big_rows,
            cfg.page
        ),
        "ms",
    )
    .label("P13 stream bootstrap (10 %)")
    .baseline_is("the whole table pulled from a new device's cursor (as P2), same pages")
    .target(Check::ratio_le(0.15))
    .note(format!(
        "whole table: {full_rows} rows; the index took {:.1} s to build (not timed in either side)",
        idx_s
    ));
    f.value = Some(median(&boot_ms));
    f.baseline = Some(median(&full_ms));
    f.ratio = Some(median(&boot_ms) / median(&full_ms));
    f.runs = boot_ms;
    f.baseline_runs = full_ms;
    let inc_sub_ms: Vec<f64> = inc_sub.iter().map(|s| s * 1000.0).collect();
    let inc_whole_ms: Vec<f64> = inc_whole.iter().map(|s| s * 1000.0).collect();
    let mut g = Figure::new(
        "P13",
        "Streams: incremental pull of the subscription after 1,000 rows of the table changed (an upsert or a leave each)",
        "ms",
    )
    .label("P13 stream incremental pull")
    .baseline_is("the same 1,000 changes pulled by a device holding the whole table")
    .note("each run updates 1,000 rows spread over the table, then pulls to the end");
    g.value = Some(median(&inc_sub_ms));
    g.baseline = Some(median(&inc_whole_ms));
    g.ratio = Some(median(&inc_sub_ms) / median(&inc_whole_ms));
    g.runs = inc_sub_ms;
    g.baseline_runs = inc_whole_ms;
    vec![f, g]
}
