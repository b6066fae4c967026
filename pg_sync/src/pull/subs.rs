//! Subscriptions in a pull. Each subscription of the cursor to a stream
//! gets, in this order: the rows the device asked for (rows that entered
//! it through another table), its first download (in key order, with
//! progress) or else the changes of its table since its position (an
//! upsert for a row that matches the filter, a leave for one that no longer
//! does), and its full key list when a table its filter reads, or the
//! clock, may have moved rows in or out without writing them.

use std::collections::HashMap;

use sync_core::cursor::{Boot, Pos, Sub};

use super::plan::{
    key_list, plan_table, row_bytes, upsert_expr, Filter, Live, PageBytes, Positions, Segment,
};
use crate::catalog::TableInfo;
use crate::error::Result;
use crate::spi_util::{rows_ro_args, Args};
use crate::streams::Stream;

/// `pg_sync.stream_refresh`: how often a subscription whose filter reads
/// the clock gets its full key list (rows age out of a time window without
/// being written), in seconds.
pub static REFRESH_SECS: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(60);

/// Registers the stream settings.
pub fn register_gucs() {
    pgrx::GucRegistry::define_int_guc(
        c"pg_sync.stream_refresh",
        c"Seconds between full key lists of a subscription whose filter reads the clock.",
        c"Rows leave a time window without being written; a device holding such a \
subscription gets its full key list at most this often, and drops the rows no longer listed.",
        &REFRESH_SECS,
        0,
        86_400,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::UNIT_S,
    );
}

/// What one subscription adds to a page.
#[derive(Default)]
pub struct SubOut {
    /// Entries counted against the page's budget.
    pub n: usize,
    /// More is ready now.
    pub more: bool,
    /// Statements rendering its entries.
    pub segments: Vec<Segment>,
    /// Its full key list (a `Members` object as JSON text).
    pub members: Option<String>,
    /// Its first download's progress (a `Progress` object as JSON text).
    pub progress: Option<String>,
}

/// Plans one subscription's part of the page.
#[allow(clippy::too_many_arguments)]
pub fn plan_sub(
    t: &TableInfo,
    stream: &Stream,
    sub: &mut Sub,
    params: &[Option<String>],
    h: u64,
    budget: usize,
    bytes: &mut PageBytes,
    marks: Option<&HashMap<u32, u64>>,
    now: i64,
    restart: bool,
) -> Result<SubOut> {
    // A stream defined again with another filter, or a table whose rows
    // changed without being written (a column added with a default, sync
    // enabled again): the subscription downloads again, and its key list
    // at the end drops what it no longer holds.
    if restart || (sub.d != 0 && sub.d != stream.ident) {
        sub.r = Pos::Start;
        sub.b = None;
        sub.w.clear();
    }
    sub.d = stream.ident;
    let f = Filter {
        sub: sub.i,
        sql: &stream.sql,
        params,
    };
    let mut out = SubOut::default();
    // Rows the device lacks, from the last key list.
    if !sub.w.is_empty() {
        let wanted = sub.w.len();
        let keys = serde_json::Value::Array(std::mem::take(&mut sub.w)).to_string();
        let mut args = f.args();
        let entry = upsert_expr(t, &mut args, Some(sub.i))?;
        let sql = format!(
            "SELECT pg_catalog.json_agg(c)::text FROM (SELECT {entry} AS c FROM {tbl} t \
             WHERE {tuple} IN (SELECT {key} FROM pg_catalog.jsonb_array_elements({w}::pg_catalog.jsonb) w(k)) \
               AND ({filter})) s",
            tbl = t.qualified,
            tuple = t.pk_tuple("t"),
            key = t.pk_from_json_param("w.k"),
            w = args.push(keys),
            filter = f.sql,
        );
        out.n += wanted;
        out.segments.push((sql, args));
    }
    if sub.b.is_some() || sub.r == Pos::Start {
        bootstrap(
            t,
            &f,
            sub,
            h,
            budget.saturating_sub(out.n),
            bytes,
            now,
            &mut out,
        )?;
        return Ok(out);
    }
    // The table's own changes since the subscription's position.
    let written = match (&sub.r, marks) {
        (Pos::Below([x]), Some(m)) => m.get(&u32::from(t.relid)).is_none_or(|w| w >= x),
        _ => true,
    };
    if written {
        let (n, more, segs) = plan_table(
            t,
            Positions {
                r: Some(&mut sub.r),
                d: None,
            },
            h,
            budget.saturating_sub(out.n),
            bytes,
            &Live::Filter(&f),
        )?;
        out.n += n;
        out.more |= more;
        out.segments.extend(segs);
        if let Pos::Below([x]) = sub.r {
            sub.r = Pos::Below([x.max(h)]);
        }
    } else if let Pos::Below([x]) = sub.r {
        sub.r = Pos::Below([x.max(h)]);
    }
    // Rows moved in or out by another table, or by the clock.
    let deps_written = stream
        .deps
        .iter()
        .any(|d| marks.and_then(|m| m.get(d)).is_none_or(|w| *w >= sub.f));
    let clock_due = stream.volatile && now - sub.ft >= i64::from(REFRESH_SECS.get());
    if !out.more && (sub.m || deps_written || clock_due) {
        out.members = members(t, &f)?;
        sub.f = h;
        sub.ft = now;
        sub.m = false;
    }
    Ok(out)
}

/// The subscription's full key list (a `Members` object as JSON text).
fn members(t: &TableInfo, f: &Filter<'_>) -> Result<Option<String>> {
    let mut args = f.args();
    let name = args.push(&t.name);
    let sql = format!(
        "SELECT pg_catalog.json_build_object('sub', {id}, 'table', {name}::pg_catalog.text, \
                'keys', coalesce(pg_catalog.json_agg({pk}), '[]'::pg_catalog.json))::text \
         FROM {tbl} t WHERE ({filter})",
        id = f.sub,
        pk = t.pk_expr("t"),
        tbl = t.qualified,
        filter = f.sql,
    );
    Ok(rows_ro_args(&sql, &args)?
        .into_iter()
        .next()
        .and_then(|mut r| r.swap_remove(0)))
}

/// The first download of a subscription: its rows in key order, as many
/// as fit, with its progress.
#[allow(clippy::too_many_arguments)]
fn bootstrap(
    t: &TableInfo,
    f: &Filter<'_>,
    sub: &mut Sub,
    h: u64,
    budget: usize,
    bytes: &mut PageBytes,
    now: i64,
    out: &mut SubOut,
) -> Result<()> {
    if sub.b.is_none() {
        let args = f.args();
        let total = rows_ro_args(
            &format!(
                "SELECT pg_catalog.count(*)::text FROM {tbl} t WHERE ({filter})",
                tbl = t.qualified,
                filter = f.sql
            ),
            &args,
        )?
        .into_iter()
        .next()
        .and_then(|mut r| r.swap_remove(0))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
        sub.b = Some(Boot {
            k: None,
            h,
            n: 0,
            t: total,
        });
    }
    let b = sub.b.clone().unwrap_or_default();
    let after = |args: &mut Args| match &b.k {
        Some(k) => format!(
            "{} > {}",
            t.pk_tuple("t"),
            t.pk_from_json_param(&format!("{}::pg_catalog.jsonb", args.push(k.to_string())))
        ),
        None => "true".to_string(),
    };
    let mut args = f.args();
    let cond = after(&mut args);
    // The page's rows are chosen by key alone (a sort of keys and row ids,
    // or an ordered index scan) and only then read whole by row id: a sort
    // that carried the rendered rows would render every row of the subset
    // on every page.
    let keys = rows_ro_args(
        &format!(
            "SELECT {pk}::text, ({size})::text, t.ctid::text FROM {tbl} t \
             WHERE t.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t.ctid FROM {tbl} t \
                   WHERE {cond} AND ({filter}) ORDER BY {keys} LIMIT {limit})) \
             ORDER BY {keys}",
            pk = t.pk_expr("t"),
            size = row_bytes(t),
            tbl = t.qualified,
            filter = f.sql,
            keys = key_list(t),
            limit = budget + 1,
        ),
        &args,
    )?;
    let mut i = 0usize;
    while i < budget && i < keys.len() {
        let size = keys[i]
            .get(1)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if !bytes.take(size) {
            break;
        }
        i += 1;
    }
    if i > 0 {
        // The rows just chosen, by row id (the pull's reads share one
        // snapshot, so the ids still name those rows).
        let tids: Vec<String> = keys[..i]
            .iter()
            .map(|r| {
                r.get(2)
                    .cloned()
                    .flatten()
                    .unwrap_or_default()
                    .replace('"', "")
            })
            .collect();
        let mut args = Args::default();
        let entry = upsert_expr(t, &mut args, Some(sub.i))?;
        let sql = format!(
            "SELECT pg_catalog.json_agg(c)::text FROM (SELECT {entry} AS c FROM {tbl} t \
             WHERE t.ctid OPERATOR(pg_catalog.=) ANY ({tids}::pg_catalog.tid[])) s",
            tbl = t.qualified,
            tids = args.push(format!(
                "{{{}}}",
                tids.iter()
                    .map(|x| format!("\"{x}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        );
        out.segments.push((sql, args));
    }
    let done = i == keys.len() && keys.len() <= budget;
    let mut nb = b.clone();
    if i > 0 {
        nb.k = keys[i - 1]
            .first()
            .cloned()
            .flatten()
            .and_then(|k| serde_json::from_str(&k).ok());
        nb.n += i as u64;
    }
    out.n += i;
    out.more |= !done;
    out.progress = Some(
        serde_json::json!({"sub": sub.i, "sent": nb.n, "total": nb.t.max(nb.n), "done": done})
            .to_string(),
    );
    if done {
        // Changes from the download's start on come incrementally. The key
        // list ends the download: a device that held rows of this
        // subscription before (a download started over) drops the others.
        out.members = members(t, f)?;
        sub.r = Pos::Below([nb.h]);
        sub.f = nb.h;
        sub.ft = now;
        sub.b = None;
    } else {
        sub.b = Some(nb);
    }
    Ok(())
}
