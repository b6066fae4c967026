//! `sync_pull`: commit-order-safe, paged changes for a client.

use std::fmt::Write as _;

use pgrx::prelude::*;
use sync_core::Hlc;

use crate::catalog::{self, TableInfo};
use crate::cursor::{Cursor, Pos, TablePos};
use crate::error::{or_raise, PgSyncError, Result};
use crate::spi_util::{exec, one, one_cached, rows_cached, TextRow};

/// Largest page a client may ask for.
pub const MAX_PAGE: i32 = 100_000;

pgrx::extension_sql!(
    r#"
CREATE FUNCTION sync_pull(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS jsonb VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull';
"#,
    name = "sync_pull",
    requires = ["bootstrap"]
);

#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_pg_sync_pull() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `sync_pull(cursor, max_changes, client_id)`: the changes after `cursor`
/// (all rows when NULL), at most `max_changes`, as a pull page
/// `{format, schema_version, schema?, cursor, has_more, resync_required,
/// changes}`. Written against the C API so the page, assembled as text, is
/// parsed into jsonb exactly once.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn pg_sync_pull(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let cursor: Option<String> = pgrx::pg_getarg::<String>(fcinfo, 0);
    let max_changes: i32 = pgrx::pg_getarg::<i32>(fcinfo, 1).unwrap_or(10000);
    let client_id: Option<String> = pgrx::pg_getarg::<String>(fcinfo, 2);
    let page = or_raise(pull(cursor.as_deref(), max_changes, client_id.as_deref()));
    let page =
        std::ffi::CString::new(page).unwrap_or_else(|_| error!("pg_sync: page contains NUL"));
    pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[page.as_c_str().into_datum()])
        .unwrap_or_else(|| error!("pg_sync: jsonb_in returned NULL"))
}

/// The xid below which every transaction has finished, as seen now.
fn horizon() -> Result<u64> {
    one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PgSyncError::Spi("could not read the snapshot horizon".into()))
}

fn pull(cursor: Option<&str>, max_changes: i32, client_id: Option<&str>) -> Result<String> {
    if !(1..=MAX_PAGE).contains(&max_changes) {
        return Err(PgSyncError::BadArgument(format!(
            "max_changes must be between 1 and {MAX_PAGE}, got {max_changes}"
        )));
    }
    let mut cur = match cursor {
        Some(c) => Cursor::decode(c)?,
        None => Cursor {
            v: 1,
            ..Default::default()
        },
    };
    // The horizon is taken before any row is read.
    let h = horizon()?;
    let tables = catalog::synced_tables()?;
    let version = catalog::schema_version()?;
    let send_schema = cursor.is_none() || cur.s != version;
    let schema_json = if send_schema {
        Some(serde_json::to_string(&catalog::schema(&tables)?).unwrap_or_default())
    } else {
        None
    };

    // Read through to_jsonb so a catalog not yet updated (no epoch column)
    // still serves pulls between installing new binaries and ALTER EXTENSION.
    let meta = rows_cached(
        "SELECT compacted_xid::text, to_jsonb(m)->>'epoch' FROM pg_sync.meta m",
        &[],
    )?;
    let field = |i: usize| {
        meta.first()
            .and_then(|r| r[i].as_deref())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let compacted = field(0).unwrap_or(0) as u64;
    let epoch = field(1).unwrap_or(1);
    let stale_epoch = cur.e.is_some_and(|e| e != epoch);
    if cursor.is_some()
        && (stale_epoch || cur.oldest_tombstone_xid().is_some_and(|x| x < compacted))
    {
        return Ok(page_json(
            version,
            schema_json.as_deref(),
            "",
            false,
            true,
            "",
        ));
    }

    let mut changes = String::new();
    let mut emitted = 0usize;
    let mut has_more = false;
    let budget_total = max_changes as usize;
    for t in &tables {
        let readable = one_cached(
            "SELECT has_table_privilege($1, 'SELECT')::text",
            &[t.relid.into()],
        )?;
        if readable.as_deref() != Some("true") {
            continue;
        }
        let pos = cur.t.entry(t.name.clone()).or_default();
        if emitted >= budget_total {
            has_more |= stream_nonempty(t, pos, h)?;
            continue;
        }
        let budget = budget_total - emitted;
        let (n, more) = pull_table(t, pos, h, budget, &mut changes)?;
        emitted += n;
        has_more |= more;
    }
    // Forget tables that are no longer synced.
    cur.t
        .retain(|name, _| tables.iter().any(|t| &t.name == name));
    cur.v = 1;
    cur.s = version;
    cur.e = Some(epoch);
    let encoded = cur.encode();
    if let Some(id) = client_id {
        exec(
            "SELECT pg_sync._pulled($1, $2)",
            &[id.to_string().into(), encoded.clone().into()],
        )?;
    }
    Ok(page_json(
        version,
        schema_json.as_deref(),
        &encoded,
        has_more,
        false,
        &changes,
    ))
}

fn page_json(
    version: i64,
    schema: Option<&str>,
    cursor: &str,
    has_more: bool,
    resync: bool,
    changes: &str,
) -> String {
    let mut s = String::with_capacity(changes.len() + 256);
    let _ = write!(
        s,
        "{{\"format\":{},\"schema_version\":{version},",
        sync_core::wire::FORMAT
    );
    if let Some(schema) = schema {
        let _ = write!(s, "\"schema\":{schema},");
    }
    let _ = write!(
        s,
        "\"cursor\":{},\"has_more\":{has_more},\"resync_required\":{resync},\"changes\":[{changes}]}}",
        serde_json::to_string(cursor).unwrap_or_default()
    );
    s
}

/// Condition and parameters selecting a stream's rows after `pos`.
fn after_clause(
    pos: &Pos,
    xid_expr: &str,
    key_tuple: &str,
    key_param: &str,
) -> (String, Vec<String>) {
    match pos {
        Pos::Start => ("true".into(), vec![]),
        Pos::Below([x]) => (format!("{xid_expr} >= $2::xid8"), vec![x.to_string()]),
        Pos::After(x, key) => {
            let k = match key {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (
                format!("({xid_expr}, {key_tuple}) > ($2::xid8, {key_param})"),
                vec![x.to_string(), k],
            )
        }
    }
}

fn rows_query(t: &TableInfo, pos: &Pos, limit: usize) -> (String, Vec<String>) {
    let key_cols: Vec<String> =
        t.pk.iter()
            .map(|k| format!("t.{}", crate::spi_util::ident(k)))
            .collect();
    let (cond, params) = after_clause(
        pos,
        "t._sync_xid",
        &format!("({})", key_cols.join(", ")),
        &t.pk_from_json_param("$3"),
    );
    let sql = format!(
        "SELECT t._sync_xid::text, {pk}::text, {row}::text, t._sync_ver::text FROM {tbl} t \
         WHERE {cond} AND t._sync_xid < $1::xid8 ORDER BY t._sync_xid, {keys} LIMIT {limit}",
        pk = t.pk_expr("t"),
        row = t.row_expr("t"),
        tbl = t.qualified,
        keys = key_cols.join(", "),
    );
    (sql, params)
}

/// Tombstones after `pos`. A tombstone whose key exists again is skipped:
/// xids are taken at a transaction's first write, not at commit, so a
/// re-insert can carry a lower xid than the delete it followed; the live
/// row's own state is what the client must end with.
fn tombs_query(t: &TableInfo, pos: &Pos, limit: usize) -> Result<(String, Vec<String>)> {
    let (cond, params) = after_clause(pos, "d.xid", "d.pk", "$3");
    let visible = crate::rls::old_row_visible(t, "d.old")?.unwrap_or_else(|| "true".into());
    let sql = format!(
        "SELECT d.xid::text, d.pk FROM pg_sync.tombstones d \
         WHERE d.relid = {relid} AND {cond} AND d.xid < $1::xid8 \
           AND NOT EXISTS (SELECT 1 FROM {tbl} t WHERE {live} = {key}) AND {visible} \
         ORDER BY d.xid, d.pk LIMIT {limit}",
        relid = u32::from(t.relid),
        tbl = t.qualified,
        live = t.pk_tuple("t"),
        key = t.pk_from_json_param("d.pk"),
    );
    Ok((sql, params))
}

fn run(sql: &str, h: u64, params: Vec<String>) -> Result<Vec<TextRow>> {
    let mut args: Vec<pgrx::datum::DatumWithOid> = vec![h.to_string().into()];
    args.extend(params.into_iter().map(Into::into));
    rows_cached(sql, &args)
}

fn stream_nonempty(t: &TableInfo, pos: &TablePos, h: u64) -> Result<bool> {
    let (sql, p) = rows_query(t, &pos.r, 1);
    if !run(&sql, h, p)?.is_empty() {
        return Ok(true);
    }
    let (sql, p) = tombs_query(t, &pos.d, 1)?;
    Ok(!run(&sql, h, p)?.is_empty())
}

fn xid_of(r: &TextRow) -> u64 {
    r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Pulls up to `budget` changes of one table, merging live rows and
/// tombstones in xid order (a tombstone before a row of the same xid).
fn pull_table(
    t: &TableInfo,
    pos: &mut TablePos,
    h: u64,
    budget: usize,
    out: &mut String,
) -> Result<(usize, bool)> {
    let (sql, p) = rows_query(t, &pos.r, budget + 1);
    let live = run(&sql, h, p)?;
    let (sql, p) = tombs_query(t, &pos.d, budget + 1)?;
    let tombs = run(&sql, h, p)?;
    let name_json = serde_json::to_string(&t.name).unwrap_or_default();

    let (mut i, mut j, mut n) = (0usize, 0usize, 0usize);
    while n < budget && (i < live.len() || j < tombs.len()) {
        let take_tomb = match (live.get(i), tombs.get(j)) {
            (Some(r), Some(d)) => xid_of(d) <= xid_of(r),
            (None, Some(_)) => true,
            _ => false,
        };
        if !out.is_empty() {
            out.push(',');
        }
        if take_tomb {
            let d = &tombs[j];
            let pk = d[1].clone().unwrap_or_default();
            let _ = write!(
                out,
                "{{\"table\":{name_json},\"op\":\"delete\",\"pk\":{pk}}}"
            );
            pos.d = Pos::After(xid_of(d), serde_json::Value::String(pk));
            j += 1;
        } else {
            let r = &live[i];
            let pk = r[1].as_deref().unwrap_or("{}");
            let row = r[2].as_deref().unwrap_or("{}");
            let ver = versions_json(t, r[3].as_deref());
            let _ = write!(
                out,
                "{{\"table\":{name_json},\"op\":\"upsert\",\"pk\":{pk},\"row\":{row},\"ver\":{ver}}}"
            );
            pos.r = Pos::After(xid_of(r), serde_json::from_str(pk).unwrap_or_default());
            i += 1;
        }
        n += 1;
    }
    let live_done = i == live.len() && live.len() <= budget;
    let tombs_done = j == tombs.len() && tombs.len() <= budget;
    if live_done {
        pos.r = Pos::Below([h]);
    }
    if tombs_done {
        pos.d = Pos::Below([h]);
    }
    Ok((n, !(live_done && tombs_done)))
}

/// `["<hex>", ...]` in schema column order from an int8[] text.
pub fn versions_json(t: &TableInfo, arr: Option<&str>) -> String {
    let by_attnum = parse_int_array(arr.unwrap_or("{}"));
    let mut s = String::with_capacity(t.columns.len() * 19 + 2);
    s.push('[');
    for (k, c) in t.columns.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        let v = by_attnum.get(c.attnum - 1).copied().unwrap_or(0);
        let _ = write!(s, "\"{}\"", Hlc::from_i64(v));
    }
    s.push(']');
    s
}

/// Parses a Postgres int8[] text form (`{1,2,NULL}`); NULL reads as 0.
pub fn parse_int_array(s: &str) -> Vec<i64> {
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    if inner.is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|v| v.trim().parse().unwrap_or(0))
        .collect()
}
