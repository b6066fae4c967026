//! Subscriptions in a pull. Each subscription of the cursor to a stream
//! gets, in this order: the rows the device asked for (rows that entered
//! it through another table), its first download (in key or row-id order,
//! with progress) or else the changes of its table since its position (an
//! upsert for a row that matches the filter, a leave for one that no longer
//! does), and its full key list when a table its filter reads, or the
//! clock, may have moved rows in or out without writing them.

use std::collections::HashMap;

use sync_core::cursor::{Boot, Pos, Sub};
use sync_core::wire::page::LIST_SEPARATOR;

use super::plan::{
    key_list, plan_table, row_bytes, rows_segment, Filter, Live, PageBytes, Positions, Segment,
};
use crate::catalog::TableInfo;
use crate::error::Result;
use crate::spi_stream::stream_rows;
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

/// Starts the subscription's download over when its stream was defined
/// again with another filter, or when its table's rows changed without
/// being written (`restart`: a column added with a default, sync enabled
/// again); its key list at the end then drops what it no longer holds.
/// Called for every subscription of the table in every pull, planned in
/// the page or not.
pub fn start_over(stream: &Stream, sub: &mut Sub, restart: bool) {
    if restart || (sub.d != 0 && sub.d != stream.ident) {
        // Rows already sent may not be selected any more: this download
        // ends with the key list, even on a device that held none before.
        if sub.r != Pos::Start || sub.b.is_some() {
            sub.e = false;
        }
        sub.r = Pos::Start;
        sub.b = None;
        sub.w.clear();
    }
    sub.d = stream.ident;
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
    page_max: usize,
    bytes: &mut PageBytes,
    marks: Option<&HashMap<u32, u64>>,
    now: i64,
    restart: bool,
) -> Result<SubOut> {
    start_over(stream, sub, restart);
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
        let from = format!(
            "FROM {tbl} t \
             WHERE {tuple} IN (SELECT {key} FROM pg_catalog.jsonb_array_elements({w}::pg_catalog.jsonb) w(k)) \
               AND ({filter})",
            tbl = t.qualified,
            tuple = t.pk_tuple("t"),
            key = t.pk_from_json_param("w.k"),
            w = args.push(keys),
            filter = f.sql,
        );
        out.n += wanted;
        out.segments
            .push(rows_segment(t, bytes.form, Some(sub.i), args, &from)?);
    }
    if sub.b.is_some() || sub.r == Pos::Start {
        bootstrap(
            t,
            &f,
            sub,
            h,
            budget.saturating_sub(out.n),
            page_max,
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

/// The subscription's full key list (a `Members` object as JSON text, as
/// `json_build_object('sub', .., 'table', .., 'keys', json_agg(<key>))`
/// writes it), the keys appended as the rows come.
fn members(t: &TableInfo, f: &Filter<'_>) -> Result<Option<String>> {
    let args = f.args();
    let sql = format!(
        "SELECT ({pk})::pg_catalog.text FROM {tbl} t WHERE ({filter})",
        pk = t.pk_expr("t"),
        tbl = t.qualified,
        filter = f.sql,
    );
    let mut out = format!(
        "{{\"sub\" : {}, \"table\" : {}, \"keys\" : [",
        f.sub,
        serde_json::Value::from(t.name.as_str())
    );
    let mut first = true;
    stream_rows(&sql, &args, &mut |row| {
        if !first {
            out.push_str(LIST_SEPARATOR);
        }
        first = false;
        let key = row.bytes(0)?.unwrap_or(b"null");
        out.push_str(&String::from_utf8_lossy(key));
        Ok(())
    })?;
    out.push_str("]}");
    Ok(Some(out))
}

/// The first download of a subscription: its rows, as many as fit, with
/// its progress. A subset whose pages would each read most of a large
/// table's blocks is read in row-id order, one stretch of blocks after the
/// other (the table is read about once in all); other subsets in key order.
#[allow(clippy::too_many_arguments)]
fn bootstrap(
    t: &TableInfo,
    f: &Filter<'_>,
    sub: &mut Sub,
    h: u64,
    budget: usize,
    page_max: usize,
    bytes: &mut PageBytes,
    now: i64,
    out: &mut SubOut,
) -> Result<()> {
    let (node, blocks) = storage(t)?;
    // A new file node (VACUUM FULL, CLUSTER, a rewriting ALTER TABLE,
    // pg_repack, SET TABLESPACE) may have moved every row without writing
    // it: a row-id download starts over, in key order (which no rewrite
    // disturbs, so a table rewritten often still finishes its download).
    let rewritten = sub.b.as_ref().is_some_and(|b| b.f != 0 && b.f != node);
    if rewritten {
        // Starting over from a later horizon: rows sent before may have
        // left the subset in between, so the download ends with the key
        // list.
        sub.b = None;
        sub.e = false;
    }
    if sub.b.is_none() {
        let (total, touched) = count(t, f, blocks)?;
        let by_tid = !rewritten && by_row_id(total, touched, blocks, page_max as u64);
        sub.b = Some(Boot {
            k: None,
            c: by_tid.then_some([0, 0]),
            f: if by_tid { node } else { 0 },
            h,
            n: 0,
            t: total,
        });
    }
    let mut nb = sub.b.clone().unwrap_or_default();
    let (tids, done) = if nb.f != 0 {
        choose_by_tid(t, f, &mut nb, blocks, budget, bytes)?
    } else {
        choose_by_key(t, f, &mut nb, budget, bytes)?
    };
    if !tids.is_empty() {
        // The rows just chosen, by row id (the pull's reads share one
        // snapshot, so the ids still name those rows).
        let mut args = Args::default();
        let from = format!(
            "FROM {tbl} t WHERE t.ctid OPERATOR(pg_catalog.=) ANY ({tids}::pg_catalog.tid[])",
            tbl = t.qualified,
            tids = args.push(format!(
                "{{{}}}",
                tids.iter()
                    .map(|x| format!("\"{x}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        );
        out.segments
            .push(rows_segment(t, bytes.form, Some(sub.i), args, &from)?);
    }
    nb.n = nb.n.saturating_add(tids.len() as u64);
    out.n += tids.len();
    out.more |= !done;
    out.progress = Some(
        serde_json::json!({"sub": sub.i, "sent": nb.n, "total": nb.t.max(nb.n), "done": done})
            .to_string(),
    );
    if done {
        // Changes from the download's start on come incrementally. The key
        // list ends the download: a device that held rows of this
        // subscription before (a download started over) drops the others.
        // A device that held none (`e`) holds only rows this download sent,
        // each selected when it was read: it needs no list.
        let listed = !sub.e;
        if listed {
            out.members = members(t, f)?;
        }
        sub.e = false;
        sub.r = Pos::Below([nb.h]);
        sub.f = nb.h;
        // Without a list, a filter that reads the clock gets one at the
        // next pull (rows may have aged out while the download ran).
        sub.ft = if listed { now } else { 0 };
        sub.b = None;
    } else {
        sub.b = Some(nb);
    }
    Ok(())
}

/// The table's file node and its number of blocks now.
fn storage(t: &TableInfo) -> Result<(u32, u64)> {
    let mut args = Args::default();
    let rel = args.push(u32::from(t.relid));
    let row = rows_ro_args(
        &format!(
            "SELECT pg_catalog.pg_relation_filenode({rel}::pg_catalog.oid::pg_catalog.regclass)::text, \
                    (pg_catalog.pg_relation_size({rel}::pg_catalog.oid::pg_catalog.regclass) \
                     OPERATOR(pg_catalog./) pg_catalog.current_setting('block_size')::pg_catalog.int8)::text"
        ),
        &args,
    )?
    .into_iter()
    .next()
    .unwrap_or_default();
    let num = |i: usize| {
        row.get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((u32::try_from(num(0)).unwrap_or(0), num(1)))
}

/// The number of rows the subscription selects now, and of the blocks
/// holding them (counted from the rows' ids as they come, in any order).
fn count(t: &TableInfo, f: &Filter<'_>, blocks: u64) -> Result<(u64, u64)> {
    let args = f.args();
    let sql = format!(
        "SELECT t.ctid FROM {tbl} t WHERE ({filter})",
        tbl = t.qualified,
        filter = f.sql
    );
    // One bit per block; a block past the size read before (the table grew
    // since) widens it.
    let mut seen = vec![0u64; usize::try_from(blocks.div_ceil(64)).unwrap_or(0)];
    let (mut rows, mut touched) = (0u64, 0u64);
    stream_rows(&sql, &args, &mut |row| {
        if let Some([block, _]) = row.tid(0)? {
            rows += 1;
            let (word, bit) = (block as usize / 64, 1u64 << (block % 64));
            if word >= seen.len() {
                seen.resize(word + 1, 0);
            }
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                touched += 1;
            }
        }
        Ok(())
    })?;
    Ok((rows, touched))
}

/// Whether a download of `total` rows lying in `touched` of a table's
/// `blocks` blocks, in pages of `page_max`, reads in row-id order: when
/// choosing each page by key would visit, over all the pages, more than
/// twice the blocks of the whole table (a subset spread over most blocks,
/// and several pages), reading the table once, in stretches, is cheaper.
pub fn by_row_id(total: u64, touched: u64, blocks: u64, page_max: u64) -> bool {
    let pages = total.div_ceil(page_max.max(1));
    pages >= 2 && pages.saturating_mul(touched.min(blocks)) > blocks.saturating_mul(2)
}

/// The next page's rows in key order: each page is a search of the subset
/// after the last key sent (an ordered index scan, or a sort of the
/// subset's keys and row ids).
fn choose_by_key(
    t: &TableInfo,
    f: &Filter<'_>,
    b: &mut Boot,
    budget: usize,
    bytes: &mut PageBytes,
) -> Result<(Vec<String>, bool)> {
    let mut args = f.args();
    let cond = match &b.k {
        Some(k) => format!(
            "{} > {}",
            t.pk_tuple("t"),
            t.pk_from_json_param(&format!("{}::pg_catalog.jsonb", args.push(k.to_string())))
        ),
        None => "true".to_string(),
    };
    // The page's rows are chosen by key alone and only then read whole by
    // row id: a sort that carried the rendered rows would render every row
    // of the subset on every page.
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
        if !bytes.take(text_num(&keys[i], 1)) {
            break;
        }
        i += 1;
    }
    if i > 0 {
        b.k = keys[i - 1]
            .first()
            .cloned()
            .flatten()
            .and_then(|k| serde_json::from_str(&k).ok());
    }
    let tids = keys[..i].iter().map(|r| text_at(r, 2)).collect();
    Ok((tids, i == keys.len() && keys.len() <= budget))
}

/// Most stretches one page reads in row-id order (a page of a sparse
/// stretch of the table may come out short; the next pull goes on).
const MAX_STRETCHES: usize = 64;

/// The next page's rows in row-id order: stretches of blocks from the
/// position on, each as long as the density of the subset seen so far
/// suggests, read by a row-id range scan and filtered.
fn choose_by_tid(
    t: &TableInfo,
    f: &Filter<'_>,
    b: &mut Boot,
    blocks: u64,
    budget: usize,
    bytes: &mut PageBytes,
) -> Result<(Vec<String>, bool)> {
    let [mut block, mut offset] = b.c.unwrap_or([0, 0]);
    // Offsets are 16-bit (the cursor is untrusted input).
    offset = offset.min(u32::from(u16::MAX));
    let mut tids: Vec<String> = Vec::new();
    let mut grow = 1u64;
    for _ in 0..MAX_STRETCHES {
        if u64::from(block) >= blocks {
            b.c = Some([block, 0]);
            return Ok((tids, true));
        }
        let need = budget.saturating_sub(tids.len());
        if need == 0 {
            break;
        }
        // Blocks to read: the rows wanted over the rows per block seen so
        // far (at first, counted at the start), a little short of it (a
        // short stretch costs one more query, a long one is read again
        // from the row it stopped at); doubled after a stretch that found
        // nothing.
        let seen_rows = b.n.saturating_add(tids.len() as u64);
        let (per_rows, per_blocks) = if block > 0 && seen_rows > 0 {
            (seen_rows, u64::from(block))
        } else {
            (b.t.max(1), blocks)
        };
        let span = (need as u64)
            .saturating_mul(per_blocks)
            .saturating_mul(9)
            .div_ceil(per_rows.saturating_mul(10))
            .saturating_mul(grow)
            .max(8);
        let end = u64::from(block).saturating_add(span);
        let mut args = f.args();
        let from = args.push(format!("({block},{offset})"));
        let upper = if end >= blocks {
            String::new()
        } else {
            format!(
                " AND t.ctid OPERATOR(pg_catalog.<) {}::pg_catalog.tid",
                args.push(format!("({end},0)"))
            )
        };
        // The row sizes are computed under the sort (OFFSET 0 keeps the
        // subquery), so the sort carries two numbers a row, not the rows.
        let sql = format!(
            "SELECT x.c, x.s::pg_catalog.text FROM (SELECT t.ctid AS c, ({size}) AS s \
             FROM {tbl} t WHERE t.ctid OPERATOR(pg_catalog.>=) {from}::pg_catalog.tid{upper} \
             AND ({filter}) OFFSET 0) x ORDER BY x.c LIMIT {limit}",
            size = row_bytes(t),
            tbl = t.qualified,
            filter = f.sql,
            limit = need + 1,
        );
        let (mut found, mut full) = (0usize, false);
        stream_rows(&sql, &args, &mut |row| {
            if full {
                return Ok(());
            }
            let [bl, off] = row.tid(0)?.unwrap_or([0, 0]);
            let size = row
                .bytes(1)?
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if found >= need || !bytes.take(size) {
                // The page is full: the next one starts at this row.
                (block, offset) = (bl, off);
                full = true;
                return Ok(());
            }
            found += 1;
            tids.push(format!("({bl},{off})"));
            Ok(())
        })?;
        if full {
            break;
        }
        if end >= blocks {
            b.c = Some([u32::try_from(blocks).unwrap_or(u32::MAX), 0]);
            return Ok((tids, true));
        }
        grow = if found == 0 { grow * 2 } else { 1 };
        block = u32::try_from(end).unwrap_or(u32::MAX);
        offset = 0;
    }
    b.c = Some([block, offset]);
    Ok((tids, false))
}

/// Column `i` of a result row as text ("" for NULL).
fn text_at(r: &[Option<String>], i: usize) -> String {
    r.get(i)
        .cloned()
        .flatten()
        .unwrap_or_default()
        .replace('"', "")
}

/// Column `i` of a result row as a number (0 for NULL).
fn text_num(r: &[Option<String>], i: usize) -> u64 {
    r.get(i)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::by_row_id;
    use crate::pull::plan::parse_tid;

    #[pgrx::pg_test]
    fn large_spread_subsets_download_by_row_id() {
        // P13's shape: 95 k rows of a 1 M-row table, spread over most of
        // its 100 k blocks, pages of 10 k.
        assert!(by_row_id(95_000, 60_000, 100_000, 10_000));
        // The same rows clustered in 2 k blocks: key order.
        assert!(!by_row_id(95_000, 2_000, 100_000, 10_000));
        // One page: key order.
        assert!(!by_row_id(9_000, 9_000, 100_000, 10_000));
        assert!(!by_row_id(20_000, 20_000, 1_000_000, 10_000));
        assert!(!by_row_id(0, 0, 10, 10));
        assert!(!by_row_id(5, 5, 0, 0));
        assert!(!by_row_id(u64::MAX, u64::MAX, u64::MAX, 1));
        assert_eq!(parse_tid("(12,3)"), [12, 3]);
        assert_eq!(parse_tid("\"(4294967295,65535)\""), [u32::MAX, 65535]);
        assert_eq!(parse_tid("junk"), [0, 0]);
    }
}
