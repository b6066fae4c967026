//! `sync_pull`: commit-order-safe, paged changes for a client.

use pgrx::prelude::*;

use crate::catalog::{self, TableInfo};
use crate::error::{or_raise, PgSyncError, Result};
use sync_core::cursor::{Cursor, Pos, TablePos};
use sync_core::wire::MAX_CLIENT_ID_BYTES;

use crate::spi_util::rows_cached;

mod plan;
mod render;
mod subs;

pub use subs::register_gucs as register_stream_gucs;

use plan::{plan_table, stream_nonempty, Form, Live, PageBytes, Positions, Segment};
use render::{Chunks, Sink, TextBuf};

/// Largest page a client may ask for.
pub const MAX_PAGE: i32 = 100_000;

/// Longest cursor a pull accepts, in bytes (a device stores at most as much).
const MAX_CURSOR_BYTES: usize = 1 << 20;

pgrx::extension_sql!(
    r#"
CREATE FUNCTION sync_pull(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS jsonb VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull';
CREATE FUNCTION sync_pull_json(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS json VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull_json';
CREATE FUNCTION sync_pull_chunks(cursor text DEFAULT NULL, max_changes int DEFAULT 10000, client_id text DEFAULT NULL)
RETURNS SETOF text VOLATILE ROWS 100 LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_pull_chunks';
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
    check_attnums(attnums.len());
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

pgrx::extension_sql!(
    r#"
CREATE FUNCTION pg_sync._ver_compact(ver bigint[], attnums smallint[]) RETURNS json
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ver_compact_wrapper';
"#,
    name = "ver_compact",
    requires = ["bootstrap"]
);

finfo_v1!(pg_finfo_ver_compact_wrapper);

/// `pg_sync._ver_compact(ver, attnums)`: the version of a row in a
/// format-2 page: one 16-digit hex stamp as a JSON string when every
/// column of `attnums` has the same version (most rows: they were written
/// whole), else the array `_ver_json` writes (a version the array does not
/// hold, or NULL, is zero). Called once per row of a page, so it reads
/// the arrays in place (through pgrx's `Array` it cost a fifth of a page's
/// rendering). Runs as the caller; it reads nothing.
///
/// # Safety
/// Called by fmgr with the declared signature (`bigint[]`, `smallint[]`,
/// either NULL).
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ver_compact_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let arg = |i: usize| -> Option<pg_sys::Datum> {
        let a = (*fcinfo).args.as_slice(2)[i];
        (!a.isnull).then_some(a.value)
    };
    let Some(attnums) = arg(1) else {
        pgrx::error!("pg_sync._ver_compact: attnums is NULL");
    };
    let attnums = i16s(attnums);
    check_attnums(attnums.len());
    let vals: Vec<i64> = match arg(0) {
        Some(d) => i64s(d),
        None => Vec::new(),
    };
    let at = |a: i16| -> i64 {
        usize::try_from(a)
            .ok()
            .and_then(|a| a.checked_sub(1))
            .and_then(|i| vals.get(i))
            .copied()
            .unwrap_or(0)
    };
    let first = attnums.first().map_or(0, |a| at(*a));
    let text = if attnums.iter().all(|a| at(*a) == first) {
        format!("\"{:016x}\"", first as u64)
    } else {
        use std::fmt::Write;
        let mut s = String::with_capacity(2 + attnums.len() * 19);
        s.push('[');
        for (k, a) in attnums.iter().enumerate() {
            if k > 0 {
                s.push(',');
            }
            let _ = write!(s, "\"{:016x}\"", at(*a) as u64);
        }
        s.push(']');
        s
    };
    pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
        text.as_ptr() as *const std::ffi::c_char,
        text.len() as i32,
    ))
}

/// The elements of a `bigint[]` datum in order (NULL elements as 0).
///
/// # Safety
/// `d` is a non-null `bigint[]` datum.
unsafe fn i64s(d: pg_sys::Datum) -> Vec<i64> {
    ints(d, pg_sys::INT8OID)
}

/// The elements of a `smallint[]` datum in order (NULL elements as 0).
///
/// # Safety
/// `d` is a non-null `smallint[]` datum.
unsafe fn i16s(d: pg_sys::Datum) -> Vec<i16> {
    ints(d, pg_sys::INT2OID)
}

/// The elements of an integer array datum whose elements are `T` (type
/// `oid`), read in place when it has no NULL.
///
/// # Safety
/// `d` is a non-null array datum of elements of type `oid`, which `T`
/// represents exactly (int8 as i64, int2 as i16).
unsafe fn ints<T>(d: pg_sys::Datum, oid: pg_sys::Oid) -> Vec<T>
where
    T: Copy + Default + for<'a> pgrx::datum::UnboxDatum<As<'a> = T> + 'static,
{
    let a = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
    let Some(ptr) = std::ptr::NonNull::new(a) else {
        return Vec::new();
    };
    // SAFETY: a detoasted array, alive for the call; of element type `oid`
    // and without a null bitmap, its data is `len` aligned values of `T`.
    let mut raw = pgrx::array::RawArray::from_ptr(ptr);
    if raw.oid() == oid && raw.nulls().is_none() {
        return raw.data::<T>().as_ref().to_vec();
    }
    pgrx::Array::<T>::from_datum(d, false)
        .map(|a| a.iter().map(|v| v.unwrap_or_default()).collect())
        .unwrap_or_default()
}

/// Refuses more attribute numbers than a table can have (the functions
/// above are callable by anyone; their output grows with the list).
fn check_attnums(n: usize) {
    if n > pg_sys::MaxHeapAttributeNumber as usize {
        pgrx::error!(
            "pg_sync: {n} attribute numbers, more than a table may have ({})",
            pg_sys::MaxHeapAttributeNumber
        );
    }
}

finfo_v1!(pg_finfo_pg_sync_pull);
finfo_v1!(pg_finfo_pg_sync_pull_json);
finfo_v1!(pg_finfo_pg_sync_pull_chunks);

/// The arguments of `sync_pull`, `sync_pull_json` and `sync_pull_chunks`
/// (cursor, max_changes, client_id): the page they ask for.
///
/// # Safety
/// `fcinfo` is the call info fmgr passed to one of the three functions,
/// whose arguments are `(text, int, text)` (any of them NULL).
unsafe fn pull_args(fcinfo: pg_sys::FunctionCallInfo) -> Result<Pulled> {
    let cursor: Option<String> = pgrx::pg_getarg::<String>(fcinfo, 0);
    let max_changes: i32 = pgrx::pg_getarg::<i32>(fcinfo, 1).unwrap_or(10000);
    let client_id: Option<String> = pgrx::pg_getarg::<String>(fcinfo, 2);
    pull(cursor.as_deref(), max_changes, client_id.as_deref())
}

/// The page of a pull as one text value (json's representation).
fn page_text(p: &Pulled) -> Result<pg_sys::Datum> {
    let mut buf = TextBuf::new(p.estimate());
    p.write(&mut buf)?;
    Ok(buf.into_datum())
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
    let text = or_raise(pull_args(fcinfo).and_then(|p| page_text(&p)));
    // SAFETY: `text` is a text datum just built; jsonb_in parses its C string.
    let c = pg_sys::text_to_cstring(text.cast_mut_ptr());
    pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(c))])
        .unwrap_or_else(|| or_raise(Err(PgSyncError::Spi("jsonb_in returned NULL".into()))))
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
    or_raise(pull_args(fcinfo).and_then(|p| page_text(&p)))
}

/// `sync_pull_chunks(...) RETURNS SETOF text`: the page of `sync_pull_json`
/// as rows of text (about 64 kB each) that, concatenated in order, are that
/// page. The server never holds the page's rows: they are written into the
/// result's tuplestore (work_mem, then a temporary file) as they are
/// rendered, so a page of any size costs the backend about `work_mem`.
///
/// # Safety
/// Called by fmgr with the declared signature.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn pg_sync_pull_chunks(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // Refuses a context that cannot take a materialized set, else makes
    // the result's tuplestore and descriptor (one text column).
    pg_sys::InitMaterializedSRF(fcinfo, pg_sys::MAT_SRF_USE_EXPECTED_DESC);
    let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
    // SAFETY: InitMaterializedSRF set both for this call.
    let sink = Chunks::new((*rsinfo).setResult, (*rsinfo).setDesc);
    or_raise(pull_args(fcinfo).and_then(|p| {
        let mut sink = sink;
        p.write(&mut sink)?;
        sink.finish()
    }));
    pg_sys::Datum::from(0)
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

/// What a pull answers: a page to render, or (a standby behind the
/// cursor) a page already written.
enum Pulled {
    Page(Page),
    Written(String),
}

impl Pulled {
    /// About how many bytes the page takes (from the stored values).
    fn estimate(&self) -> usize {
        match self {
            Pulled::Page(p) => usize::try_from(p.estimate)
                .unwrap_or(usize::MAX)
                .saturating_add(
                    p.cursor.len()
                        + p.schema.as_ref().map_or(0, String::len)
                        + p.members
                            .iter()
                            .chain(&p.progress)
                            .map(String::len)
                            .sum::<usize>()
                        + 256,
                ),
            Pulled::Written(t) => t.len(),
        }
    }

    /// Writes the page into `sink`.
    fn write(&self, sink: &mut dyn Sink) -> Result<()> {
        match self {
            Pulled::Page(p) => p.write(sink),
            Pulled::Written(t) => sink.put(t.as_bytes()),
        }
    }
}

/// Everything `sync_pull` computed before building the page.
struct Page {
    form: Form,
    version: i64,
    schema: Option<String>,
    cursor: String,
    has_more: bool,
    resync: bool,
    /// Statements each yielding a JSON array of changes as text.
    segments: Vec<Segment>,
    /// Subscriptions' full key lists, each a JSON object as text.
    members: Vec<String>,
    /// Subscriptions' download progress, each a JSON object as text.
    progress: Vec<String>,
    /// The estimated bytes of its changes.
    estimate: u64,
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

/// Plans the page after `cursor` (see `sync_pull`): which changes it
/// carries, the statements that render them, the cursor that follows.
fn pull(cursor: Option<&str>, max_changes: i32, client_id: Option<&str>) -> Result<Pulled> {
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
    if cursor.is_some_and(|c| c.len() > MAX_CURSOR_BYTES) {
        return Err(PgSyncError::BadArgument(format!(
            "the cursor is longer than {MAX_CURSOR_BYTES} bytes"
        )));
    }
    let mut cur = match cursor {
        Some(c) => Cursor::decode(c)?,
        None => Cursor {
            v: 1,
            ..Default::default()
        },
    };
    // The device's cursor says which page format it reads.
    let form = if cur.w.unwrap_or(1) >= 2 && plan::has_ver_compact()? {
        Form::Blocks
    } else {
        Form::Entries
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
                    format: form.format(),
                    schema_version: catalog::schema_version()?,
                    schema: None,
                    cursor: text,
                    has_more: false,
                    resync_required: false,
                    behind: true,
                    members: None,
                    progress: None,
                },
                std::iter::empty::<[&str; 3]>(),
            );
            return Ok(Pulled::Written(page));
        }
    }
    let streams = crate::streams::load(tables.as_slice())?;
    let send_schema = cursor.is_none() || cur.s != version || other_history;
    let schema = if send_schema {
        let defs = streams.iter().map(|s| s.def.clone()).collect();
        Some(serde_json::to_string(&catalog::schema(tables.as_slice(), defs)?).unwrap_or_default())
    } else {
        None
    };
    // Subscriptions are the device's input: checked before anything is read.
    let sub_params = check_subs(&cur, &streams)?;
    let streamed: std::collections::HashSet<u32> =
        streams.iter().map(|s| u32::from(s.relid)).collect();
    // A table that starts or stops being reached through streams changes
    // what the device must hold of it: the device starts over.
    let switched = tables.iter().any(|t| {
        cur.t.get(&t.name).is_some_and(|p| {
            let was = p.m.or((p.r != Pos::Start).then_some(false));
            was.is_some_and(|m| m != streamed.contains(&u32::from(t.relid)))
        })
    });

    // Read through to_jsonb so a catalog not yet updated (no epoch column)
    // still serves pulls between installing new binaries and ALTER EXTENSION.
    let meta = rows_cached(
        "SELECT compacted_xid::text, pg_catalog.to_jsonb(m)->>'epoch', \
                coalesce(((pg_catalog.to_jsonb(m)->>'marks_trusted')::boolean \
                          OR (NOT pg_catalog.pg_is_in_recovery() \
                              AND pg_catalog.pg_postmaster_start_time() \
                                  > (pg_catalog.to_jsonb(m)->>'marks_since')::timestamptz)), false)::text \
         FROM pg_sync.meta m",
        &[],
    )?;
    let field = |i: usize| {
        meta.first()
            .and_then(|r| r[i].as_deref())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let compacted = field(0).unwrap_or(0) as u64;
    let epoch = field(1).unwrap_or(1);
    // Write marks are trusted once no backend can still run the triggers of
    // a version that did not raise them (see marks.rs).
    let marks_trusted = meta
        .first()
        .and_then(|r| r.get(2).cloned().flatten())
        .as_deref()
        == Some("true");
    let stale_epoch = cur.e.is_some_and(|e| e != epoch);
    if cursor.is_some()
        && (other_history
            || switched
            || stale_epoch
            || cur.oldest_tombstone_xid().is_some_and(|x| x < compacted))
    {
        return Ok(Pulled::Page(Page {
            form,
            version,
            schema,
            cursor: String::new(),
            has_more: false,
            resync: true,
            segments: Vec::new(),
            members: Vec::new(),
            progress: Vec::new(),
            estimate: 0,
        }));
    }

    let mut segments = Vec::new();
    let mut members: Vec<String> = Vec::new();
    let mut progress: Vec<String> = Vec::new();
    let now = now_secs();
    // Subscriptions to streams that no longer exist end: the device drops
    // their rows.
    let mut ended = Vec::new();
    for (k, p) in sub_params.iter().enumerate() {
        if p.is_none() {
            ended.push(cur.q[k].i);
            members
                .push(serde_json::json!({"sub": cur.q[k].i, "table": "", "keys": []}).to_string());
        }
    }
    let sub_params: Vec<Vec<Option<String>>> = sub_params.into_iter().flatten().collect();
    cur.q.retain(|s| !ended.contains(&s.i));
    let mut emitted = 0usize;
    let mut has_more = false;
    let budget_total = max_changes as usize;
    let mut bytes = PageBytes::new(MAX_PAGE_SIZE.get(), form);
    // Read after the horizon was taken (see marks.rs).
    let marks = if marks_trusted {
        crate::marks::read()
    } else {
        None
    };
    let readable = readable(tables.as_slice());
    for t in tables.iter() {
        if !readable.contains(&u32::from(t.relid)) {
            continue;
        }
        let pos = cur.t.entry(t.name.clone()).or_default();
        // A changed column list (ALTER TABLE ADD COLUMN ... DEFAULT changes
        // every row without writing it) re-sends the table's rows.
        let sig = t.signature;
        let restart = pos.c.is_some_and(|c| c != sig) || pos.n.is_some_and(|n| n != t.enabled);
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
        if streamed.contains(&u32::from(t.relid)) {
            // Reached through streams: the table sends its tombstones, each
            // subscription its rows.
            pos.m = Some(true);
            let clean = matches!((&pos.d, mark.flatten()), (Pos::Below([x]), Some(m)) if m < *x);
            if clean {
                if let Pos::Below([x]) = pos.d {
                    pos.d = Pos::Below([x.max(h)]);
                }
            } else if emitted >= budget_total || bytes.full() {
                has_more = true;
            } else {
                let (n, more, segment) = plan_table(
                    t,
                    Positions {
                        r: None,
                        d: Some(&mut pos.d),
                    },
                    h,
                    budget_total - emitted,
                    &mut bytes,
                    &Live::Whole,
                )?;
                emitted += n;
                has_more |= more;
                segments.extend(segment);
            }
            for (sub, params) in cur.q.iter_mut().zip(&sub_params) {
                let Some(stream) = streams.iter().find(|s| s.name == sub.s) else {
                    continue;
                };
                if stream.relid != t.relid {
                    continue;
                }
                if emitted >= budget_total || bytes.full() {
                    // Not planned in this page: a start-over the table
                    // asked for is kept all the same (the table's column
                    // signature and enable time are already moved on).
                    subs::start_over(stream, sub, restart);
                    has_more = true;
                    continue;
                }
                let out = subs::plan_sub(
                    t,
                    stream,
                    sub,
                    params,
                    h,
                    budget_total - emitted,
                    budget_total,
                    &mut bytes,
                    marks.as_ref(),
                    now,
                    restart,
                )?;
                emitted += out.n;
                has_more |= out.more;
                segments.extend(out.segments);
                members.extend(out.members);
                progress.extend(out.progress);
            }
            continue;
        }
        pos.m = Some(false);
        if skip_unwritten(pos, mark, h) {
            continue;
        }
        if emitted >= budget_total || bytes.full() {
            has_more |= stream_nonempty(t, pos, h)?;
            continue;
        }
        let budget = budget_total - emitted;
        let (n, more, segment) = plan_table(
            t,
            Positions {
                r: Some(&mut pos.r),
                d: Some(&mut pos.d),
            },
            h,
            budget,
            &mut bytes,
            &Live::Whole,
        )?;
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
    // The page format the device asked for holds while its pages follow
    // one another; the cursor it keeps at the end does not ask, so a
    // device taken back to a version that reads only format 1 still can
    // (a device asks again each time, through sync_cursor()).
    if !has_more {
        cur.w = None;
    }
    let encoded = cur.encode();
    // A hot standby records nothing (it cannot write); the primary records
    // the pull for pg_sync.status.
    if let Some(id) = client_id.filter(|id| !snap.in_recovery && due_record(id)) {
        crate::privileged::pulled(id, &encoded)?;
    }
    Ok(Pulled::Page(Page {
        form,
        version,
        schema,
        cursor: encoded,
        has_more,
        resync: false,
        segments,
        members,
        progress,
        estimate: bytes.used(),
    }))
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

/// Seconds since the Unix epoch.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Checks the cursor's subscriptions (the device's input): their number,
/// unique ids, the size of their wanted lists, and each one's parameters
/// against its stream. Returns each one's parameter texts, or `None` for a
/// subscription whose stream no longer exists.
fn check_subs(
    cur: &Cursor,
    streams: &[crate::streams::Stream],
) -> Result<Vec<Option<Vec<Option<String>>>>> {
    use sync_core::streams::{param_texts, MAX_SUBSCRIPTIONS, MAX_WANTED};
    if cur.q.len() > MAX_SUBSCRIPTIONS {
        return Err(PgSyncError::BadArgument(format!(
            "the cursor holds {} subscriptions, more than {MAX_SUBSCRIPTIONS}",
            cur.q.len()
        )));
    }
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(cur.q.len());
    for sub in &cur.q {
        if !ids.insert(sub.i) {
            return Err(PgSyncError::BadArgument(format!(
                "the cursor holds subscription {} twice",
                sub.i
            )));
        }
        if sub.w.len() > MAX_WANTED {
            return Err(PgSyncError::BadArgument(format!(
                "subscription {} asks for {} rows, more than {MAX_WANTED}",
                sub.i,
                sub.w.len()
            )));
        }
        // A subscription whose stream is gone, or whose values its stream
        // no longer takes (it was defined again, or the cursor was forged),
        // ends: the device drops its rows.
        out.push(
            streams
                .iter()
                .find(|s| s.name == sub.s)
                .and_then(|s| param_texts(&s.def, &sub.p).ok()),
        );
    }
    Ok(out)
}

impl Page {
    /// Writes the page: the shared page writer's head, then the rows each
    /// segment statement renders (`json_build_array` or `json_build_object`
    /// per row: the work of `to_json`), streamed into `sink` as they come.
    fn write(&self, sink: &mut dyn Sink) -> Result<()> {
        let members = format!("[{}]", self.members.join(", "));
        let progress = format!("[{}]", self.progress.join(", "));
        let head = sync_core::wire::page::PageHead {
            format: self.form.format(),
            schema_version: self.version,
            schema: self.schema.as_deref(),
            cursor: &self.cursor,
            has_more: self.has_more,
            resync_required: self.resync,
            behind: false,
            members: (!self.members.is_empty()).then_some(members.as_str()),
            progress: (!self.progress.is_empty()).then_some(progress.as_str()),
        };
        render::write_page(sink, &head, &self.segments)
    }
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
