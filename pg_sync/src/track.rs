//! Change-tracking triggers, written against the C trigger API for speed.
//!
//! - `pg_sync.track()`: BEFORE INSERT OR UPDATE, FOR EACH ROW. Sets
//!   `_sync_xid` to the top-level transaction id and stamps the version of
//!   every inserted or changed column in `_sync_ver` (indexed by attnum).
//!   A write that sets `_sync_ver` itself (`sync_push`) keeps its versions.
//! - `pg_sync.track_delete()`: AFTER DELETE, FOR EACH ROW. Writes a tombstone.
//! - `pg_sync.track_truncate()`: BEFORE TRUNCATE. Tombstones every row.
//!
//! Each raises its table's write mark (`marks.rs`) once per transaction.
//!
//! Every `unsafe` here is the C trigger API: the functions below are
//! called by the executor with a valid `FunctionCallInfo` whose context is
//! `TriggerData` (checked by [`trigger_data`]), and read the trigger's
//! relation, tuple descriptor and tuples only while the executor keeps them
//! alive (the duration of the call). Each unsafe function states what it
//! relies on under `# Safety`.
//!
//! A delete's tombstone (`tombstone.rs`) is inserted straight into the heap and indexes of
//! `pg_sync.tombstones` (no SQL, no switch of user: a heap insert checks no
//! privilege and resolves no name), so writers need no privilege on the
//! catalog and cannot reach it any other way. Only TRUNCATE, which
//! tombstones every row of the table, runs one fixed statement through
//! `privileged::elevated` (catalog owner, `search_path` pinned, every name
//! qualified).

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use sync_core::Hlc;

use crate::catalog::{VER_COL, XID_COL};
use crate::clock;
use crate::tupdesc::{attname, attrs};

thread_local! {
    /// Stamp of the delete being applied by `sync_push`, if any.
    static PUSH_DELETE_HLC: Cell<Option<Hlc>> = const { Cell::new(None) };
    /// The last (transaction, table) a NOTIFY was queued for.
    static NOTIFIED: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

/// Runs `f` with tombstones carrying `hlc` (the client's delete stamp).
pub fn with_delete_hlc<R>(hlc: Hlc, f: impl FnOnce() -> R) -> R {
    /// Clears the stamp however `f` ends (an error unwinds through here).
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PUSH_DELETE_HLC.with(|c| c.set(None));
        }
    }
    PUSH_DELETE_HLC.with(|c| c.set(Some(hlc)));
    let _reset = Reset;
    f()
}

fn delete_stamp() -> Hlc {
    PUSH_DELETE_HLC
        .with(|c| c.get())
        .unwrap_or_else(|| clock::tick_after(Hlc::ZERO))
}

/// `pg_sync.notify`: whether commits of tracked changes send a NOTIFY
/// (off by default: Postgres serialises the commits of notifying
/// transactions on one lock, which costs writers throughput).
pub static NOTIFY: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(false);

/// Registers pg_sync's settings.
pub fn register_gucs() {
    pgrx::GucRegistry::define_bool_guc(
        c"pg_sync.notify",
        c"Send NOTIFY pg_sync, '<table>' when a transaction that wrote a synced table commits.",
        c"Postgres serialises the commits of notifying transactions on a database-wide lock; \
turn this off where nobody LISTENs for pg_sync and write throughput matters.",
        &NOTIFY,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::default(),
    );
}

/// Channel on which a commit of tracked changes is announced; the payload
/// is the table's wire name. Clients waiting to pull can LISTEN on it.
pub const NOTIFY_CHANNEL: &str = "pg_sync";

/// Queues `NOTIFY pg_sync, '<table>'` once per transaction and table; it is
/// delivered only if the transaction commits.
/// # Safety
/// `rel` is the open relation of the firing trigger.
unsafe fn notify_once(rel: pg_sys::Relation) {
    if !NOTIFY.get() {
        return;
    }
    let xid = pg_sys::GetTopFullTransactionId().value;
    let relid = u32::from((*rel).rd_id);
    if NOTIFIED.with(|n| n.get()) == (xid, relid) {
        return;
    }
    NOTIFIED.with(|n| n.set((xid, relid)));
    let name = std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())
        .to_string_lossy()
        .into_owned();
    pgrx::direct_function_call_as_datum(
        pg_sys::pg_notify,
        &[NOTIFY_CHANNEL.into_datum(), name.into_datum()],
    );
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION pg_sync.track() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_track';
CREATE FUNCTION pg_sync.track_delete() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_track_delete';
CREATE FUNCTION pg_sync.track_truncate() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_track_truncate';
"#,
    name = "track_functions",
    requires = ["bootstrap"]
);

finfo_v1!(pg_finfo_pg_sync_track);
finfo_v1!(pg_finfo_pg_sync_track_delete);
finfo_v1!(pg_finfo_pg_sync_track_truncate);

/// The trigger data of a call, or an ERROR if the function was not
/// called as a trigger.
///
/// # Safety
/// `fcinfo` is the call info fmgr passed to a trigger function.
unsafe fn trigger_data(fcinfo: pg_sys::FunctionCallInfo, what: &str) -> *mut pg_sys::TriggerData {
    if !pgrx::trigger_support::called_as_trigger(fcinfo) {
        error!("{what} must be called as a trigger");
    }
    (*fcinfo).context as *mut pg_sys::TriggerData
}

/// Zero-based indexes of `_sync_xid` and `_sync_ver`.
/// # Safety
/// `tupdesc` is the firing relation's descriptor.
unsafe fn tracking_columns(tupdesc: pg_sys::TupleDesc) -> (usize, usize) {
    let mut xid = None;
    let mut ver = None;
    for (i, a) in attrs(tupdesc).iter().enumerate() {
        if a.attisdropped {
            continue;
        }
        match attname(a) {
            XID_COL => xid = Some(i),
            VER_COL => ver = Some(i),
            _ => {}
        }
    }
    match (xid, ver) {
        (Some(x), Some(v)) => (x, v),
        _ => error!("pg_sync: table lacks _sync_xid/_sync_ver; re-run sync_enable"),
    }
}

/// Binary equality of two non-null datums of one attribute.
/// # Safety
/// `a` and `b` are non-null datums of attribute `att` of live tuples.
unsafe fn datum_eq(
    a: pg_sys::Datum,
    b: pg_sys::Datum,
    att: &pg_sys::FormData_pg_attribute,
) -> bool {
    if att.attbyval {
        return a.value() == b.value();
    }
    let (pa, pb) = (a.cast_mut_ptr::<u8>(), b.cast_mut_ptr::<u8>());
    if pa == pb {
        return true;
    }
    let len = match att.attlen {
        -1 => {
            let la = pgrx::varlena::varsize_any(pa as *const pg_sys::varlena);
            let lb = pgrx::varlena::varsize_any(pb as *const pg_sys::varlena);
            if la != lb {
                return false;
            }
            la
        }
        -2 => {
            let sa = std::ffi::CStr::from_ptr(pa as *const std::ffi::c_char);
            let sb = std::ffi::CStr::from_ptr(pb as *const std::ffi::c_char);
            return sa == sb;
        }
        n => n as usize,
    };
    std::slice::from_raw_parts(pa, len) == std::slice::from_raw_parts(pb, len)
}

/// Reads an int8[] datum into a vector indexed from 0 (nulls as 0).
/// # Safety
/// `d` is a non-null `int8[]` datum.
unsafe fn read_versions(d: pg_sys::Datum) -> Vec<i64> {
    let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
    let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
    let mut nulls: *mut bool = std::ptr::null_mut();
    let mut n: i32 = 0;
    pg_sys::deconstruct_array(
        arr,
        pg_sys::INT8OID,
        8,
        true,
        pg_sys::TYPALIGN_DOUBLE as std::ffi::c_char,
        &mut elems,
        &mut nulls,
        &mut n,
    );
    (0..n as usize)
        .map(|i| {
            if *nulls.add(i) {
                0
            } else {
                (*elems.add(i)).value() as i64
            }
        })
        .collect()
}

/// Builds an `int8[]` datum in the current memory context.
///
/// # Safety
/// Called inside a transaction, with a valid current memory context.
unsafe fn build_versions(v: &[i64]) -> pg_sys::Datum {
    let mut elems: Vec<pg_sys::Datum> = v.iter().map(|x| pg_sys::Datum::from(*x)).collect();
    let arr = pg_sys::construct_array(
        elems.as_mut_ptr(),
        elems.len() as i32,
        pg_sys::INT8OID,
        8,
        true,
        pg_sys::TYPALIGN_DOUBLE as std::ffi::c_char,
    );
    pg_sys::Datum::from(arr)
}

/// BEFORE INSERT OR UPDATE row trigger.
#[pg_guard]
#[no_mangle]
/// # Safety
/// Called by fmgr as a trigger function (see the module's note).
pub unsafe extern "C-unwind" fn pg_sync_track(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let td = trigger_data(fcinfo, "pg_sync.track()");
    let event = (*td).tg_event;
    if !pgrx::trigger_support::trigger_fired_before(event)
        || !pgrx::trigger_support::trigger_fired_for_row(event)
    {
        error!("pg_sync.track() must be a BEFORE ... FOR EACH ROW trigger");
    }
    let is_update = pgrx::trigger_support::trigger_fired_by_update(event);
    let rel = (*td).tg_relation;
    crate::marks::raise((*rel).rd_id);
    let tupdesc = (*rel).rd_att;
    let natts = (*tupdesc).natts as usize;
    let (xid_i, ver_i) = tracking_columns(tupdesc);
    let atts = attrs(tupdesc);

    let newtup = if is_update {
        (*td).tg_newtuple
    } else {
        (*td).tg_trigtuple
    };
    let mut new_vals = vec![pg_sys::Datum::from(0usize); natts];
    let mut new_nulls = vec![false; natts];
    pg_sys::heap_deform_tuple(
        newtup,
        tupdesc,
        new_vals.as_mut_ptr(),
        new_nulls.as_mut_ptr(),
    );

    let mut versions: Option<Vec<i64>> = None;
    let mut key_changed = false;
    if is_update {
        let oldtup = (*td).tg_trigtuple;
        let mut old_vals = vec![pg_sys::Datum::from(0usize); natts];
        let mut old_nulls = vec![false; natts];
        pg_sys::heap_deform_tuple(
            oldtup,
            tupdesc,
            old_vals.as_mut_ptr(),
            old_nulls.as_mut_ptr(),
        );
        // A changed primary key is a delete of the old key (and an insert
        // of the new one): the old key gets a tombstone below.
        let pk_attrs = pg_sys::RelationGetIndexAttrBitmap(
            rel,
            pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_PRIMARY_KEY,
        );
        key_changed = atts.iter().enumerate().any(|(i, a)| {
            let member = pg_sys::bms_is_member(
                i as i32 + 1 - pg_sys::FirstLowInvalidHeapAttributeNumber,
                pk_attrs,
            );
            member
                && match (old_nulls[i], new_nulls[i]) {
                    (true, true) => false,
                    (false, false) => !datum_eq(old_vals[i], new_vals[i], a),
                    _ => true,
                }
        });
        let ver_set_by_writer = new_nulls[ver_i] != old_nulls[ver_i]
            || (!new_nulls[ver_i] && !datum_eq(new_vals[ver_i], old_vals[ver_i], &atts[ver_i]));
        if !ver_set_by_writer {
            let mut v = if old_nulls[ver_i] {
                Vec::new()
            } else {
                read_versions(old_vals[ver_i])
            };
            v.resize(natts, 0);
            let floor = v.iter().copied().max().unwrap_or(0);
            let mut stamp: Option<i64> = None;
            for (i, a) in atts.iter().enumerate() {
                if a.attisdropped || i == xid_i || i == ver_i {
                    continue;
                }
                let changed = match (old_nulls[i], new_nulls[i]) {
                    (true, true) => false,
                    (false, false) => !datum_eq(old_vals[i], new_vals[i], a),
                    _ => true,
                };
                if changed {
                    let s = *stamp
                        .get_or_insert_with(|| clock::tick_after(Hlc::from_i64(floor)).as_i64());
                    v[i] = s;
                }
            }
            if stamp.is_some() {
                versions = Some(v);
            }
        }
    } else if new_nulls[ver_i] {
        let s = clock::tick_after(Hlc::ZERO).as_i64();
        let v: Vec<i64> = atts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if a.attisdropped || i == xid_i || i == ver_i {
                    0
                } else {
                    s
                }
            })
            .collect();
        versions = Some(v);
    }

    let xid = pg_sys::GetTopFullTransactionId().value;
    notify_once(rel);
    if key_changed || (is_update && (*(*rel).rd_rel).relrowsecurity) {
        // The old key is gone (a key change), or, under row-level security,
        // the row may have left some clients' view: a tombstone of the old
        // image makes their next pull remove it. A tombstone whose key
        // exists again is never sent, so an unchanged key costs nothing.
        crate::tombstone::write(rel, (*td).tg_trigtuple, clock::tick_after(Hlc::ZERO));
    }
    let mut cols: [i32; 2] = [(xid_i + 1) as i32, (ver_i + 1) as i32];
    let mut vals: [pg_sys::Datum; 2] = [pg_sys::Datum::from(xid), pg_sys::Datum::from(0usize)];
    let mut nulls: [bool; 2] = [false, false];
    let ncols = match &versions {
        Some(v) => {
            vals[1] = build_versions(v);
            2
        }
        None => 1,
    };
    let out = pg_sys::heap_modify_tuple_by_cols(
        newtup,
        tupdesc,
        ncols,
        cols.as_mut_ptr(),
        vals.as_mut_ptr(),
        nulls.as_mut_ptr(),
    );
    pg_sys::Datum::from(out)
}

/// The statement that tombstones every row of a table (TRUNCATE), run
/// elevated. Tables under row-level security also keep the old row image,
/// so pulls can tell who was allowed to see it.
fn truncate_tombs_sql(relid: pg_sys::Oid, with_old: bool) -> String {
    let pk = crate::catalog::primary_key(relid).unwrap_or_else(|e| error!("pg_sync: {e}"));
    if pk.is_empty() {
        error!("pg_sync: synced table {relid:?} lost its primary key");
    }
    let parts: Vec<String> = pk
        .iter()
        .map(|k| {
            format!(
                "{}::pg_catalog.text, r.{}",
                crate::spi_util::literal(k),
                crate::spi_util::ident(k)
            )
        })
        .collect();
    let old = if with_old {
        "pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.-) '_sync_xid'::pg_catalog.text \
         OPERATOR(pg_catalog.-) '_sync_ver'::pg_catalog.text"
    } else {
        "NULL"
    };
    let t = Spi::get_one_with_args::<String>(
        "SELECT $1::pg_catalog.regclass::pg_catalog.text",
        &[relid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    format!(
        "INSERT INTO pg_sync.tombstones (relid, pk, xid, hlc, old) \
         SELECT $1, pg_catalog.jsonb_build_object({})::pg_catalog.text, \
         pg_catalog.pg_current_xact_id(), $2, {old} FROM ONLY {t} r",
        parts.join(", ")
    )
}

/// AFTER DELETE row trigger: records a tombstone.
#[pg_guard]
#[no_mangle]
/// # Safety
/// Called by fmgr as a trigger function (see the module's note).
pub unsafe extern "C-unwind" fn pg_sync_track_delete(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let td = trigger_data(fcinfo, "pg_sync.track_delete()");
    let rel = (*td).tg_relation;
    notify_once(rel);
    crate::marks::raise((*rel).rd_id);
    crate::tombstone::write(rel, (*td).tg_trigtuple, delete_stamp());
    pg_sys::Datum::from((*td).tg_trigtuple)
}

/// BEFORE TRUNCATE statement trigger: tombstones every row.
#[pg_guard]
#[no_mangle]
/// # Safety
/// Called by fmgr as a trigger function (see the module's note).
pub unsafe extern "C-unwind" fn pg_sync_track_truncate(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let td = trigger_data(fcinfo, "pg_sync.track_truncate()");
    let relid = (*(*td).tg_relation).rd_id;
    let hlc = clock::tick_after(Hlc::ZERO);
    notify_once((*td).tg_relation);
    crate::marks::raise(relid);
    crate::privileged::elevated(|| {
        let rls = (*(*(*td).tg_relation).rd_rel).relrowsecurity;
        let sql = truncate_tombs_sql(relid, rls);
        Spi::run_with_args(&sql, &[relid.into(), hlc.as_i64().into()])
            .unwrap_or_else(|e| error!("pg_sync: tombstones for TRUNCATE failed: {e}"));
    });
    pg_sys::Datum::from(0usize)
}
