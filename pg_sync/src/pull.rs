//! `sync_pull`: commit-order-safe, paged changes for a client.

use pgrx::prelude::*;

use crate::catalog::{self, TableInfo};
use crate::error::{or_raise, PgSyncError, Result};
use sync_core::cursor::{Cursor, Pos, TablePos};
use sync_core::wire::MAX_CLIENT_ID_BYTES;

use crate::spi_util::{ident, one_cached, rows_cached, rows_ro_args, Args, TextRow};

/// Largest page a client may ask for.
pub const MAX_PAGE: i32 = 100_000;

pgrx::extension_sql!(
    r#"
CREATE FUNCTION sync_pull(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS jsonb VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull';
CREATE FUNCTION sync_pull_json(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS json VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull_json';
"#,
    name = "sync_pull",
    requires = ["bootstrap"]
);

/// The column versions of a row as a page's `ver`: a JSON array of
/// 16-digit hex stamps, one per attribute number of `attnums` (a version
/// the array does not hold, or NULL, is zero). One call per row renders
/// what took a formatting expression per column (a third of a page's
/// rendering time). Runs as the caller; it reads nothing.
/// Declared `RETURNS json`: the text it builds is valid JSON, and json and
/// text share their representation, so nothing parses it again.
#[pg_extern(
    immutable,
    parallel_safe,
    sql = r#"
CREATE FUNCTION pg_sync._ver_json(ver bigint[], attnums smallint[]) RETURNS json
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ver_json_wrapper';
"#,
    requires = ["bootstrap"]
)]
fn ver_json(ver: Option<pgrx::Array<i64>>, attnums: pgrx::Array<i16>) -> String {
    use std::fmt::Write;
    let vals: Vec<i64> = ver
        .map(|a| a.iter().map(|v| v.unwrap_or(0)).collect())
        .unwrap_or_default();
    let mut s = String::with_capacity(2 + attnums.len() * 19);
    s.push('[');
    for (k, a) in attnums.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        let v = a
            .and_then(|a| usize::try_from(a).ok())
            .and_then(|a| a.checked_sub(1))
            .and_then(|i| vals.get(i))
            .copied()
            .unwrap_or(0);
        let _ = write!(s, "\"{:016x}\"", v as u64);
    }
    s.push(']');
    s
}

finfo_v1!(pg_finfo_pg_sync_pull);
finfo_v1!(pg_finfo_pg_sync_pull_json);

/// Reads the arguments of `sync_pull` / `sync_pull_json` and runs it.
///
/// # Safety
/// `fcinfo` is the call info fmgr passed to one of the two functions,
/// whose arguments are `(text, int, text)` (any of them NULL).
unsafe fn pull_args(fcinfo: pg_sys::FunctionCallInfo, as_jsonb: bool) -> pg_sys::Datum {
    let cursor: Option<String> = pgrx::pg_getarg::<String>(fcinfo, 0);
    let max_changes: i32 = pgrx::pg_getarg::<i32>(fcinfo, 1).unwrap_or(10000);
    let client_id: Option<String> = pgrx::pg_getarg::<String>(fcinfo, 2);
    or_raise(pull(
        cursor.as_deref(),
        max_changes,
        client_id.as_deref(),
        as_jsonb,
    ))
}

/// `sync_pull(cursor, max_changes, client_id) RETURNS jsonb`: the changes
/// after `cursor` (all rows when NULL), at most `max_changes`, as a pull
/// page `{format, schema_version, schema?, cursor, has_more,
/// resync_required, changes}`.
///
/// # Safety
/// Called by fmgr with the declared signature.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn pg_sync_pull(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    pull_args(fcinfo, true)
}

/// `sync_pull_json(...) RETURNS json`: the same page as JSON text that the
/// server never parses: the fast path for apps that forward the page to a
/// device as it is.
///
/// # Safety
/// Called by fmgr with the declared signature.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn pg_sync_pull_json(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    pull_args(fcinfo, false)
}

/// The xid below which every transaction has finished. All of a pull's
/// reads run in one snapshot (read-only SPI shares the calling statement's),
/// the horizon included, so the keys chosen for a page and the rows sent
/// agree.
fn horizon() -> Result<Snapshot> {
    let row = rows_cached(
        "SELECT pg_catalog.pg_snapshot_xmin(s)::pg_catalog.text, \
                pg_catalog.pg_snapshot_xmax(s)::pg_catalog.text, \
                (pg_catalog.pg_control_system()).system_identifier::pg_catalog.text, \
                CASE WHEN pg_catalog.pg_is_in_recovery() \
                     THEN pg_catalog.lpad(pg_catalog.to_hex((pg_catalog.pg_control_checkpoint()).timeline_id), 8, '0') \
                     ELSE pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_insert_lsn()) END, \
                (SELECT d.oid::pg_catalog.text FROM pg_catalog.pg_database d \
                 WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()), \
                pg_catalog.pg_is_in_recovery()::pg_catalog.text \
         FROM pg_catalog.pg_current_snapshot() s",
        &[],
    )?
    .into_iter()
    .next()
    .unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let xmin = get(0).parse().ok();
    let xmax = get(1).parse().ok();
    let (Some(xmin), Some(xmax)) = (xmin, xmax) else {
        return Err(PgSyncError::Spi(
            "could not read the snapshot horizon".into(),
        ));
    };
    // The timeline is the first 8 hex digits of a WAL file name.
    let timeline = u32::from_str_radix(get(3).get(..8).unwrap_or("0"), 16).unwrap_or(0);
    Ok(Snapshot {
        xmin,
        xmax,
        history: format!("{}-{timeline}-{}", get(2), get(4)),
        in_recovery: get(5) == "true",
    })
}

/// The horizon of a pull and the database history it belongs to.
struct Snapshot {
    /// Every transaction below it has finished.
    xmin: u64,
    /// The next xid to be assigned.
    xmax: u64,
    /// System identifier, timeline and database oid: xids compare only
    /// within one history.
    history: String,
    /// The server is a hot standby.
    in_recovery: bool,
}

/// A statement with its values, yielding a JSON array of changes as text.
type Segment = (String, Args);

/// Everything `sync_pull` computed before building the page.
struct Page {
    version: i64,
    schema: Option<String>,
    cursor: String,
    has_more: bool,
    resync: bool,
    /// Statements each yielding a JSON array of changes as text.
    segments: Vec<Segment>,
}

/// `pg_sync.max_page_size`: the byte budget of a pull page, in kB.
pub static MAX_PAGE_SIZE: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(16 * 1024);

/// Registers the pull settings.
pub fn register_gucs() {
    pgrx::GucRegistry::define_int_guc(
        c"pg_sync.max_page_size",
        c"Byte budget of a pull page (besides max_changes).",
        c"A page stops before the change that would take it past this size (estimated from the \
stored values, before rendering); it always carries at least one change, so a row larger than \
the budget still syncs, alone.",
        &MAX_PAGE_SIZE,
        64,
        256 * 1024,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::UNIT_KB,
    );
}

/// The byte budget of a page being planned.
struct PageBytes {
    left: u64,
    taken: usize,
}

impl PageBytes {
    fn new(kb: i32) -> PageBytes {
        PageBytes {
            left: u64::from(kb.max(1).unsigned_abs()) * 1024,
            taken: 0,
        }
    }

    /// Takes a change of `n` bytes into the page, unless the page already
    /// has a change and `n` would take it past the budget.
    fn take(&mut self, n: u64) -> bool {
        if self.taken > 0 && n > self.left {
            self.left = 0;
            return false;
        }
        self.left = self.left.saturating_sub(n);
        self.taken += 1;
        true
    }

    /// Whether the page has a change and no bytes left.
    fn full(&self) -> bool {
        self.taken > 0 && self.left == 0
    }
}

fn pull(
    cursor: Option<&str>,
    max_changes: i32,
    client_id: Option<&str>,
    as_jsonb: bool,
) -> Result<pg_sys::Datum> {
    if client_id.is_some_and(|c| c.trim().is_empty() || c.len() > MAX_CLIENT_ID_BYTES) {
        return Err(PgSyncError::BadArgument(format!(
            "client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes"
        )));
    }
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
    let snap = horizon()?;
    let h = snap.xmin;
    let tables = catalog::synced_tables()?;
    let version = catalog::schema_version()?;
    // A cursor from another history (a restore into a new cluster, a
    // point-in-time recovery, a promoted standby) or from this history's
    // future (a restore from an older copy) names xids this database never
    // gave out, or gave out to other changes: the device must resync.
    let other_history = cur.h.as_deref().is_some_and(|c| c != snap.history)
        || (!snap.in_recovery && cur.newest_xid().is_some_and(|x| x > snap.xmax));
    // A hot standby that has not replayed up to the cursor (it came from
    // the primary or a standby further ahead) answers "behind": no
    // changes, the same cursor, so nothing is lost or sent twice; the
    // device pulls again later (or from another server).
    if let (Some(text), true) = (cursor, snap.in_recovery) {
        if !other_history && cur.newest_xid().is_some_and(|x| x > snap.xmin) {
            let page = sync_core::wire::page::write_page(
                &sync_core::wire::page::PageHead {
                    schema_version: catalog::schema_version()?,
                    schema: None,
                    cursor: text,
                    has_more: false,
                    resync_required: false,
                    behind: true,
                },
                std::iter::empty(),
            );
            return text_datum(page, as_jsonb);
        }
    }
    let send_schema = cursor.is_none() || cur.s != version || other_history;
    let schema = if send_schema {
        Some(serde_json::to_string(&catalog::schema(tables.as_slice())?).unwrap_or_default())
    } else {
        None
    };

    // Read through to_jsonb so a catalog not yet updated (no epoch column)
    // still serves pulls between installing new binaries and ALTER EXTENSION.
    let meta = rows_cached(
        "SELECT compacted_xid::text, pg_catalog.to_jsonb(m)->>'epoch' FROM pg_sync.meta m",
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
        && (other_history
            || stale_epoch
            || cur.oldest_tombstone_xid().is_some_and(|x| x < compacted))
    {
        return build_page(
            &Page {
                version,
                schema,
                cursor: String::new(),
                has_more: false,
                resync: true,
                segments: Vec::new(),
            },
            as_jsonb,
        );
    }

    let mut segments = Vec::new();
    let mut emitted = 0usize;
    let mut has_more = false;
    let budget_total = max_changes as usize;
    let mut bytes = PageBytes::new(MAX_PAGE_SIZE.get());
    // Read after the horizon was taken (see marks.rs).
    let marks = crate::marks::read();
    let readable = readable(tables.as_slice());
    for t in tables.iter() {
        if !readable.contains(&u32::from(t.relid)) {
            continue;
        }
        let pos = cur.t.entry(t.name.clone()).or_default();
        // A changed column list (ALTER TABLE ADD COLUMN ... DEFAULT changes
        // every row without writing it) re-sends the table's rows.
        let sig = t.signature;
        if pos.c.is_some_and(|c| c != sig) {
            pos.r = Pos::Start;
        }
        pos.c = Some(sig);
        // Enabled again since the device last pulled it (the device may
        // never have seen it disabled): its rows are all new.
        if pos.n.is_some_and(|n| n != t.enabled) {
            pos.r = Pos::Start;
            pos.d = Pos::Start;
        }
        pos.n = Some(t.enabled);
        let mark = marks.as_ref().map(|m| m.get(&u32::from(t.relid)).copied());
        if skip_unwritten(pos, mark, h) {
            continue;
        }
        if emitted >= budget_total || bytes.full() {
            has_more |= stream_nonempty(t, pos, h)?;
            continue;
        }
        let budget = budget_total - emitted;
        let (n, more, segment) = plan_table(t, pos, h, budget, &mut bytes)?;
        emitted += n;
        has_more |= more;
        segments.extend(segment);
    }
    // Forget tables that are no longer synced.
    let names: std::collections::HashSet<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    cur.t.retain(|name, _| names.contains(name.as_str()));
    cur.v = 1;
    cur.s = version;
    cur.e = Some(epoch);
    cur.h = Some(snap.history);
    let encoded = cur.encode();
    // A hot standby records nothing (it cannot write); the primary records
    // the pull for pg_sync.status.
    if let Some(id) = client_id.filter(|id| !snap.in_recovery && due_record(id)) {
        crate::privileged::pulled(id, &encoded)?;
    }
    build_page(
        &Page {
            version,
            schema,
            cursor: encoded,
            has_more,
            resync: false,
            segments,
        },
        as_jsonb,
    )
}

/// How often one backend records the pulls of one client in
/// `pg_sync.clients` (`last_pull`, `last_cursor`): a pull that records
/// writes, and a write commits through a WAL flush, which would cost an
/// idle poll more than everything else it does.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

thread_local! {
    /// When this backend last recorded a pull, by (role, client id).
    static RECORDED: std::cell::RefCell<std::collections::HashMap<(u32, String), std::time::Instant>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Whether this pull of `client` (for the calling role) is to be recorded:
/// the first of the backend's, then one every [`RECORD_EVERY`].
fn due_record(client: &str) -> bool {
    let key = (u32::from(crate::privileged::caller()), client.to_string());
    let now = std::time::Instant::now();
    RECORDED.with(|r| {
        let mut r = r.borrow_mut();
        if r.get(&key)
            .is_some_and(|t| now.duration_since(*t) < RECORD_EVERY)
        {
            return false;
        }
        if r.len() >= 10_000 {
            r.clear();
        }
        r.insert(key, now);
        true
    })
}

/// The relids of the tables the caller may read (SELECT privilege, as
/// `has_table_privilege` checks it), without SQL.
fn readable(tables: &[TableInfo]) -> std::collections::HashSet<u32> {
    // SAFETY: ACL lookups by oid inside a transaction; a table dropped
    // meanwhile reads as missing, not as an error.
    let user = unsafe { pg_sys::GetUserId() };
    tables
        .iter()
        .filter(|t| {
            let mut missing = false;
            // SAFETY: as above.
            let ok = unsafe {
                pg_sys::pg_class_aclcheck_ext(
                    t.relid,
                    user,
                    pg_sys::ACL_SELECT as pg_sys::AclMode,
                    &mut missing,
                )
            };
            ok == pg_sys::AclResult::ACLCHECK_OK && !missing
        })
        .map(|t| u32::from(t.relid))
        .collect()
}

/// Whether a table can be skipped because no transaction wrote it since
/// both its positions were taken: its write `mark` (`Some(None)`: the
/// catalog has marks, but none for this table; `None`: no marks at all) is
/// below both. Both positions then move up to the horizon `h`: every
/// change below it was delivered (see marks.rs).
fn skip_unwritten(pos: &mut TablePos, mark: Option<Option<u64>>, h: u64) -> bool {
    let (Pos::Below([r]), Pos::Below([d])) = (&pos.r, &pos.d) else {
        return false;
    };
    let (r, d) = (*r, *d);
    match mark.flatten() {
        Some(m) if m < r.min(d) => {
            pos.r = Pos::Below([r.max(h)]);
            pos.d = Pos::Below([d.max(h)]);
            true
        }
        _ => false,
    }
}

/// Builds the page as JSON text: each segment statement renders its rows
/// with `json_build_object`/`json_agg` (the same work as `to_json` of the
/// rows), and the shared page writer splices the arrays, never parsed.
fn page_text(p: &Page) -> Result<String> {
    let mut arrays = Vec::with_capacity(p.segments.len());
    for (sql, args) in &p.segments {
        if let Some(arr) = rows_ro_args(sql, args)?
            .into_iter()
            .next()
            .and_then(|mut r| r.swap_remove(0))
        {
            arrays.push(arr);
        }
    }
    let inner = arrays.iter().map(|a| {
        let a = a.trim();
        a.strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or("")
    });
    Ok(sync_core::wire::page::write_page(
        &sync_core::wire::page::PageHead {
            schema_version: p.version,
            schema: p.schema.as_deref(),
            cursor: &p.cursor,
            has_more: p.has_more,
            resync_required: p.resync,
            behind: false,
        },
        inner,
    ))
}

/// The page as a datum of the requested type.
fn build_page(p: &Page, as_jsonb: bool) -> Result<pg_sys::Datum> {
    text_datum(page_text(p)?, as_jsonb)
}

/// JSON text as a `jsonb` or `json` datum.
fn text_datum(text: String, as_jsonb: bool) -> Result<pg_sys::Datum> {
    let c = std::ffi::CString::new(text)
        .map_err(|_| PgSyncError::Spi("the page contains a NUL byte".into()))?;
    // SAFETY: json's representation is text; jsonb_in parses the C string.
    unsafe {
        if as_jsonb {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[c.as_c_str().into_datum()])
                .ok_or_else(|| PgSyncError::Spi("jsonb_in returned NULL".into()))
        } else {
            Ok(pg_sys::Datum::from(pg_sys::cstring_to_text(c.as_ptr())))
        }
    }
}

/// A condition selecting a stream's entries strictly after `pos`
/// (`op` = ">") or up to and including it (`op` = "<="); the xid and the
/// key travel as parameters.
fn pos_cond(
    pos: &Pos,
    op: &str,
    xid_expr: &str,
    key_tuple: &str,
    key_of: &dyn Fn(&str) -> String,
    args: &mut Args,
) -> String {
    match (pos, op) {
        (Pos::Start, _) => "true".into(),
        (Pos::Below([x]), ">") => format!("{xid_expr} >= {}::pg_catalog.xid8", args.push(x)),
        (Pos::Below([x]), _) => format!("{xid_expr} < {}::pg_catalog.xid8", args.push(x)),
        (Pos::After(x, key), _) => {
            let k = match key {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let x = args.push(x);
            let k = args.push(k);
            format!(
                "({xid_expr}, {key_tuple}) {op} ({x}::pg_catalog.xid8, {})",
                key_of(&k)
            )
        }
    }
}

fn key_cols(t: &TableInfo) -> String {
    let cols: Vec<String> = t.pk.iter().map(|k| format!("t.{}", ident(k))).collect();
    cols.join(", ")
}

/// Live rows of `t` after (`op` ">") or up to (`op` "<=") `pos`.
fn rows_cond(t: &TableInfo, pos: &Pos, op: &str, args: &mut Args) -> String {
    pos_cond(
        pos,
        op,
        "t._sync_xid",
        &format!("({})", key_cols(t)),
        &|p| t.pk_from_json_param(&format!("{p}::pg_catalog.jsonb")),
        args,
    )
}

/// Tombstones after (`op` ">") or up to (`op` "<=") `pos`.
fn tombs_cond(pos: &Pos, op: &str, args: &mut Args) -> String {
    pos_cond(pos, op, "d.xid", "d.pk", &|p| p.to_string(), args)
}

/// Keys of the live rows after `pos`, below the horizon, in stream order.
/// Keys of the rows after `pos`, in stream order, each with the estimated
/// bytes of its page entry (see [`row_bytes`]).
fn rows_keys(t: &TableInfo, pos: &Pos, h: u64, limit: usize) -> Result<Vec<TextRow>> {
    let mut args = Args::default();
    let sql = format!(
        "SELECT t._sync_xid::text, {pk}::text, ({bytes})::text FROM {tbl} t \
         WHERE {cond} AND t._sync_xid < {h}::pg_catalog.xid8 ORDER BY t._sync_xid, {keys} LIMIT {limit}",
        pk = t.pk_expr("t"),
        bytes = row_bytes(t),
        tbl = t.qualified,
        cond = rows_cond(t, pos, ">", &mut args),
        h = args.push(h),
        keys = key_cols(t),
    );
    rows_ro_args(&sql, &args)
}

/// An estimate of the bytes a row takes in a page, read without detoasting
/// anything: `octet_length` of a text or bytea value is its uncompressed
/// size, taken from its TOAST header; other values count their stored size.
/// Per column, 40 bytes for its name, quotes and version.
fn row_bytes(t: &TableInfo) -> String {
    let parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let col = format!("t.{}", crate::spi_util::ident(&c.name));
            match c.ty {
                sync_core::schema::ColumnType::Text => {
                    format!("coalesce(pg_catalog.octet_length({col}::pg_catalog.text), 0)")
                }
                // Hex on the wire: two characters a byte.
                sync_core::schema::ColumnType::Blob => {
                    format!("coalesce(2 OPERATOR(pg_catalog.*) pg_catalog.octet_length({col}), 0)")
                }
                _ => format!("coalesce(pg_catalog.pg_column_size({col}), 0)"),
            }
        })
        .collect();
    format!(
        "({}::pg_catalog.int8 OPERATOR(pg_catalog.+) {})",
        40 * t.columns.len() + 60,
        parts.join(" OPERATOR(pg_catalog.+) ")
    )
}

/// The estimated page bytes of a key row of [`rows_keys`] or [`tombs_keys`].
fn bytes_of(r: &TextRow) -> u64 {
    match r.get(2).and_then(|v| v.as_deref()) {
        Some(v) => v.parse().unwrap_or(0),
        // A tombstone: its key and the entry around it.
        None => 60 + r.get(1).and_then(|v| v.as_deref()).map_or(0, str::len) as u64,
    }
}

/// The filter every sent tombstone passes. A tombstone whose key exists
/// again is skipped: xids are taken at a transaction's first write, not at
/// commit, so a re-insert can carry a lower xid than the delete it
/// followed; the live row's own state is what the client must end with.
/// Under row-level security, the policy on `pg_sync.tombstones` shows the
/// caller only tombstones of rows its own policies would have let it see.
fn tomb_filter(t: &TableInfo, h: u64, args: &mut Args) -> String {
    format!(
        "d.relid = {relid}::pg_catalog.oid AND d.xid < {h}::pg_catalog.xid8 \
         AND NOT EXISTS (SELECT 1 FROM {tbl} t WHERE {live} = {key})",
        relid = args.push(u32::from(t.relid)),
        h = args.push(h),
        tbl = t.qualified,
        live = t.pk_tuple("t"),
        key = t.pk_from_json_param("d.pk"),
    )
}

/// Keys of the tombstones after `pos`, in stream order.
fn tombs_keys(t: &TableInfo, pos: &Pos, h: u64, limit: usize) -> Result<Vec<TextRow>> {
    let mut args = Args::default();
    let sql = format!(
        "SELECT d.xid::text, d.pk FROM pg_sync.tombstones d WHERE {cond} AND {filter} \
         ORDER BY d.xid, d.pk LIMIT {limit}",
        cond = tombs_cond(pos, ">", &mut args),
        filter = tomb_filter(t, h, &mut args),
    );
    rows_ro_args(&sql, &args)
}

fn stream_nonempty(t: &TableInfo, pos: &TablePos, h: u64) -> Result<bool> {
    Ok(!rows_keys(t, &pos.r, h, 1)?.is_empty() || !tombs_keys(t, &pos.d, h, 1)?.is_empty())
}

fn xid_of(r: &TextRow) -> u64 {
    r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Decides which changes of one table go into this page (up to `budget`,
/// live rows and tombstones merged in xid order, a tombstone before a row of
/// the same xid), advances the table's positions, and returns the number of
/// changes, whether more are ready, and the statements producing the
/// table's changes (each one JSON array as text).
fn plan_table(
    t: &TableInfo,
    pos: &mut TablePos,
    h: u64,
    budget: usize,
    bytes: &mut PageBytes,
) -> Result<(usize, bool, Vec<Segment>)> {
    let live = rows_keys(t, &pos.r, h, budget + 1)?;
    let tombs = tombs_keys(t, &pos.d, h, budget + 1)?;
    let (mut i, mut j) = (0usize, 0usize);
    while i + j < budget && (i < live.len() || j < tombs.len()) {
        let take_tomb = match (live.get(i), tombs.get(j)) {
            (Some(r), Some(d)) => xid_of(d) <= xid_of(r),
            (None, Some(_)) => true,
            _ => false,
        };
        let next = if take_tomb { &tombs[j] } else { &live[i] };
        if !bytes.take(bytes_of(next)) {
            break;
        }
        if take_tomb {
            j += 1;
        } else {
            i += 1;
        }
    }
    let start = pos.clone();
    if i > 0 {
        let last = &live[i - 1];
        pos.r = Pos::After(
            xid_of(last),
            serde_json::from_str(last[1].as_deref().unwrap_or("{}")).unwrap_or_default(),
        );
    }
    if j > 0 {
        let last = &tombs[j - 1];
        pos.d = Pos::After(
            xid_of(last),
            serde_json::Value::String(last[1].clone().unwrap_or_default()),
        );
    }
    let live_done = i == live.len() && live.len() <= budget;
    let tombs_done = j == tombs.len() && tombs.len() <= budget;

    let mut segments = Vec::new();
    // Tombstones in a page are for keys that do not exist now, rows for keys
    // that do: the two lists never share a key, so their relative order does
    // not matter and each keeps its index order.
    //
    // Each list is rendered as the first `i` (or `j`) entries after the
    // start, in index order: an ordered index scan that stops there, with
    // no sort (a range with both ends was planned as a bitmap scan and a
    // sort, whose comparisons under the database's collation cost as much
    // as the rendering). The entries are those just counted, unless one was
    // rewritten meanwhile: it left the horizon and comes later with its new
    // xid, and the entry after the planned end comes now and again on the
    // next page (a repeat, never a gap).
    if j > 0 {
        let mut args = Args::default();
        let name = format!("{}::pg_catalog.text", args.push(&t.name));
        let sql = format!(
            "SELECT pg_catalog.json_agg(c)::text FROM (SELECT pg_catalog.json_build_object('table', {name}, 'op', 'delete', \
             'pk', d.pk::json) AS c FROM pg_sync.tombstones d WHERE {after} AND {filter} \
             ORDER BY d.xid, d.pk LIMIT {j}) s",
            after = tombs_cond(&start.d, ">", &mut args),
            filter = tomb_filter(t, h, &mut args),
        );
        segments.push((sql, args));
    }
    if i > 0 {
        // Between installing new binaries and ALTER EXTENSION UPDATE, the
        // catalog lacks the renderer: the expression it replaced stands in.
        let ver = if has_ver_json()? {
            let attnums: Vec<String> = t.columns.iter().map(|c| c.attnum.to_string()).collect();
            format!(
                "pg_sync._ver_json(t._sync_ver, '{{{}}}'::pg_catalog.int2[])",
                attnums.join(",")
            )
        } else {
            let hex: Vec<String> = t
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "pg_catalog.lpad(pg_catalog.to_hex(coalesce(t._sync_ver[{}], 0)), 16, '0')",
                        c.attnum
                    )
                })
                .collect();
            format!(
                "pg_catalog.to_json(ARRAY[{}]::pg_catalog.text[])",
                hex.join(", ")
            )
        };
        let mut args = Args::default();
        let name = format!("{}::pg_catalog.text", args.push(&t.name));
        let sql = format!(
            "SELECT pg_catalog.json_agg(c)::text FROM (SELECT pg_catalog.json_build_object('table', {name}, 'op', 'upsert', \
             'pk', {pk}, 'row', {row}, 'ver', {ver}) AS c \
             FROM {tbl} t WHERE {after} AND t._sync_xid < {h}::pg_catalog.xid8 \
             ORDER BY t._sync_xid, {keys} LIMIT {i}) s",
            pk = t.pk_expr("t"),
            row = t.row_expr("t"),
            ver = ver,
            tbl = t.qualified,
            after = rows_cond(t, &start.r, ">", &mut args),
            h = args.push(h),
            keys = key_cols(t),
        );
        segments.push((sql, args));
    }
    if live_done {
        pos.r = Pos::Below([h]);
    }
    if tombs_done {
        pos.d = Pos::Below([h]);
    }
    Ok((i + j, !(live_done && tombs_done), segments))
}

/// Whether the catalog has `pg_sync._ver_json` (0.4.0 and later); once
/// seen, it stays (the catalog is not downgraded under a backend).
fn has_ver_json() -> Result<bool> {
    thread_local! {
        static SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if SEEN.with(|s| s.get()) {
        return Ok(true);
    }
    let found = one_cached(
        "SELECT (pg_catalog.to_regprocedure('pg_sync._ver_json(bigint[],smallint[])') IS NOT NULL)::pg_catalog.text",
        &[],
    )?;
    let yes = found.as_deref() == Some("true");
    SEEN.with(|s| s.set(yes));
    Ok(yes)
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
