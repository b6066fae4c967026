//! Write marks: per synced table, the newest transaction that wrote it
//! (`pg_sync.last_writes`), so a pull reads only the tables written since
//! its cursor and an idle pull costs the same with one table or five hundred.
//!
//! The tracking triggers, and the `_sync_xid` default for rows inserted
//! while the triggers are disabled, raise the mark of their table to the
//! writing transaction's xid, once per transaction and table. The mark is
//! raised in place, under the buffer lock that
//! `systable_inplace_update_begin` holds from the read to the write (the
//! way Postgres raises `pg_class.relfrozenxid`): an MVCC update would hold
//! the row lock until commit and serialise every writer of the table. A
//! raise is WAL-logged, so standbys and crash recovery replay it before the
//! writer's commit. A mark never goes down, and an abort does not undo a
//! raise: that only makes some pull read a table that holds nothing new.
//!
//! Why a pull may skip a table whose mark is below its positions: a
//! committed change the cursor has not delivered has an xid X at or above
//! the cursor's position; a pull sends it only once X is below its horizon,
//! that is once X has finished; X raised the mark before it finished, and
//! the pull reads the marks after taking its horizon, so it sees a mark at
//! or above X. A table with no mark is always read.
//!
//! Every `unsafe` here is the heap and index access API, used inside a
//! transaction on a relation opened and locked here (see each block).

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::prelude::*;

thread_local! {
    /// The transaction and tables whose marks this backend raised already.
    static RAISED: RefCell<(u64, Vec<u32>)> = const { RefCell::new((0, Vec::new())) };
}

/// Raises the mark of `relid` to the current top-level transaction's xid,
/// once per transaction and table. A table without a mark row (a catalog
/// older than 0.5.0, a table being enabled) is left alone: pulls read it
/// every time.
pub fn raise(relid: pg_sys::Oid) {
    // SAFETY: called inside a transaction (by a trigger or a default
    // expression); assigns the top-level xid if it has none yet.
    let xid = unsafe { pg_sys::GetTopFullTransactionId().value };
    let done = RAISED.with(|r| {
        let r = r.borrow();
        r.0 == xid && r.1.contains(&u32::from(relid))
    });
    if done {
        return;
    }
    // SAFETY: inside a transaction, see `raise_to`.
    unsafe { raise_to(relid, xid) };
    RAISED.with(|r| {
        let mut r = r.borrow_mut();
        if r.0 != xid {
            *r = (xid, Vec::new());
        }
        r.1.push(u32::from(relid));
    });
}

/// The write marks of every synced table by relid, read after the pull's
/// horizon was taken; `None` when the catalog has none yet (before ALTER
/// EXTENSION UPDATE), and then every table is read. Read straight from the
/// heap in the active snapshot (a mark row enabled later is not seen, and
/// its table is read): no SQL, no switch of user, nothing that a caller's
/// settings can change.
pub fn read() -> Option<HashMap<u32, u64>> {
    let (marks, _) = mark_relations()?;
    let mut out = HashMap::new();
    // SAFETY: the relation is opened, locked, scanned and closed here,
    // inside the pull's transaction; each tuple is deformed while the scan
    // holds its buffer.
    unsafe {
        let snapshot = if pg_sys::ActiveSnapshotSet() {
            pg_sys::GetActiveSnapshot()
        } else {
            pg_sys::GetTransactionSnapshot()
        };
        let rel = pg_sys::table_open(marks, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        if natts >= 2 {
            let mut values = vec![pg_sys::Datum::from(0usize); natts];
            let mut nulls = vec![false; natts];
            let scan = pg_sys::table_beginscan(rel, snapshot, 0, std::ptr::null_mut());
            loop {
                let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tup.is_null() {
                    break;
                }
                pg_sys::heap_deform_tuple(tup, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
                if !nulls[0] && !nulls[1] {
                    out.insert(values[0].value() as u32, values[1].value() as u64);
                }
            }
            pg_sys::table_endscan(scan);
        }
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    Some(out)
}

/// Whether the catalog has write marks (0.5.0 and later): between
/// installing new binaries and ALTER EXTENSION UPDATE it may not.
pub fn available() -> bool {
    mark_relations().is_some()
}

/// The oids of `pg_sync.last_writes` and its primary key index, if the
/// catalog has them.
fn mark_relations() -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: catalog lookups by name inside a transaction; missing_ok.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"pg_sync".as_ptr(), true);
        if nsp == pg_sys::Oid::INVALID {
            return None;
        }
        let rel = pg_sys::get_relname_relid(c"last_writes".as_ptr(), nsp);
        let idx = pg_sys::get_relname_relid(c"last_writes_pkey".as_ptr(), nsp);
        (rel != pg_sys::Oid::INVALID && idx != pg_sys::Oid::INVALID).then_some((rel, idx))
    }
}

/// Raises the mark row of `relid` to `xid` in place if it is lower.
///
/// # Safety
/// Inside a transaction, outside parallel mode.
unsafe fn raise_to(relid: pg_sys::Oid, xid: u64) {
    let Some((marks, index)) = mark_relations() else {
        return;
    };
    // SAFETY (whole body): the relation is opened and locked here and
    // closed at the end; the scan key lives on this frame for the scan;
    // `systable_inplace_update_begin` returns a palloc'd copy of the row and
    // holds the row's buffer locked until `..._finish` or `..._cancel`,
    // one of which runs on every path after a row was found.
    let rel = pg_sys::table_open(marks, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
    let mut key = std::mem::MaybeUninit::<pg_sys::ScanKeyData>::zeroed();
    pg_sys::ScanKeyInit(
        key.as_mut_ptr(),
        1,
        pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
        pg_sys::RegProcedure::from(pg_sys::F_OIDEQ),
        pg_sys::Datum::from(relid),
    );
    let mut old: pg_sys::HeapTuple = std::ptr::null_mut();
    let mut state: *mut std::ffi::c_void = std::ptr::null_mut();
    pg_sys::systable_inplace_update_begin(
        rel,
        index,
        true,
        std::ptr::null_mut(),
        1,
        key.as_ptr(),
        &mut old,
        &mut state,
    );
    if old.is_null() {
        pg_sys::table_close(rel, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        return;
    }
    let desc = (*rel).rd_att;
    let natts = (*desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0usize); natts];
    let mut nulls = vec![false; natts];
    pg_sys::heap_deform_tuple(old, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    // Column 2 is the xid8 (by value: 8 bytes on 64-bit builds).
    let stored = values.get(1).map_or(u64::MAX, |d| d.value() as u64);
    if natts < 2 || nulls[1] || stored >= xid {
        pg_sys::systable_inplace_update_cancel(state);
    } else {
        values[1] = pg_sys::Datum::from(xid);
        let new = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        (*new).t_self = (*old).t_self;
        (*new).t_tableOid = (*old).t_tableOid;
        pg_sys::systable_inplace_update_finish(state, new);
    }
    pg_sys::table_close(rel, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION pg_sync._write_xid(tbl regclass) RETURNS xid8
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_write_xid';
"#,
    name = "write_xid",
    requires = ["bootstrap"]
);

finfo_v1!(pg_finfo_pg_sync_write_xid);

/// `pg_sync._write_xid(tbl regclass) RETURNS xid8`: the default of
/// `_sync_xid` (a regclass constant, so pg_dump writes the table's name and
/// a restore points it at the restored table).
/// Returns the current transaction's xid and raises the table's mark, so a
/// row inserted while the tracking triggers are disabled still reaches
/// devices. Runs as the inserting role, which may hold no privilege on the
/// table itself (an insert through a view, column grants): any caller may
/// raise any synced table's mark, which reveals and changes no data and
/// only makes pulls read that table once more.
///
/// # Safety
/// Called by fmgr with the declared signature (one non-null oid).
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn pg_sync_write_xid(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let relid = pgrx::pg_getarg::<pg_sys::Oid>(fcinfo, 0).unwrap_or(pg_sys::Oid::INVALID);
    let xid = pg_sys::GetTopFullTransactionId().value;
    if relid != pg_sys::Oid::INVALID {
        raise(relid);
    }
    pg_sys::Datum::from(xid)
}
