//! Streams the rows of a read-only query to a callback as the executor
//! produces them: a `DestReceiver` of our own instead of SPI's tuple table,
//! so a query yielding tens of megabytes (a pull page's rows) never holds
//! more than the row at hand.
//!
//! The query runs like every other internal read (see `spi_util`): one-shot
//! and read-only in the calling statement's snapshot, its values passed as
//! text parameters `$1..$n` that the statement casts.

use std::ffi::{c_int, c_void, CString};

use pgrx::pg_sys;

use crate::error::{PgSyncError, Result};
use crate::spi_util::Args;

/// One row produced by the query, borrowed for the callback.
pub struct Row {
    slot: *mut pg_sys::TupleTableSlot,
}

impl Row {
    /// The bytes of column `col` (from 0), a text-like value (text, json);
    /// `None` when NULL.
    pub fn bytes(&self, col: usize) -> Result<Option<&[u8]>> {
        let Some(d) = self.datum(col) else {
            return Ok(None);
        };
        // SAFETY: the slot's values are valid until the callback returns
        // (the receiver got the slot from the executor for this call); the
        // descriptor says the column is a varlena, detoasted (a stored
        // value passed through, such as a tombstone's key) into the row's
        // memory context, which is reset only after the callback returned,
        // so the slice lives as long as `self` is borrowed.
        unsafe {
            let desc = (*self.slot).tts_tupleDescriptor;
            if (*(*desc).attrs.as_ptr().add(col)).attlen != -1 {
                return Err(PgSyncError::Spi(format!(
                    "column {} of a streamed read is not text",
                    col + 1
                )));
            }
            let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
            Ok(Some(std::slice::from_raw_parts(
                pgrx::varlena::vardata_any(v) as *const u8,
                pgrx::varlena::varsize_any_exhdr(v),
            )))
        }
    }

    /// Column `col` (from 0), a row id (`tid`), as `[block, offset]`;
    /// `None` when NULL.
    pub fn tid(&self, col: usize) -> Result<Option<[u32; 2]>> {
        let Some(d) = self.datum(col) else {
            return Ok(None);
        };
        // SAFETY: as in `bytes`; the descriptor says the column is a tid, a
        // by-reference value of six bytes (block number high and low half,
        // offset) valid until the callback returns, read unaligned.
        unsafe {
            let desc = (*self.slot).tts_tupleDescriptor;
            if (*(*desc).attrs.as_ptr().add(col)).atttypid != pg_sys::TIDOID {
                return Err(PgSyncError::Spi(format!(
                    "column {} of a streamed read is not a row id",
                    col + 1
                )));
            }
            let p = std::ptr::read_unaligned(d.cast_mut_ptr::<pg_sys::ItemPointerData>());
            let block = (u32::from(p.ip_blkid.bi_hi) << 16) | u32::from(p.ip_blkid.bi_lo);
            Ok(Some([block, u32::from(p.ip_posid)]))
        }
    }

    /// Column `col` (from 0) as a boolean; NULL reads as false.
    pub fn flag(&self, col: usize) -> bool {
        self.datum(col).is_some_and(|d| d.value() != 0)
    }

    /// The datum of column `col`, `None` when NULL or absent.
    fn datum(&self, col: usize) -> Option<pg_sys::Datum> {
        // SAFETY: see `bytes`; every attribute was deformed by the receiver.
        unsafe {
            let desc = (*self.slot).tts_tupleDescriptor;
            if col >= (*desc).natts as usize || *(*self.slot).tts_isnull.add(col) {
                return None;
            }
            Some(*(*self.slot).tts_values.add(col))
        }
    }
}

/// The callback a [`Receiver`] hands each row.
type OnRow<'a> = &'a mut dyn FnMut(&Row) -> Result<()>;

/// Our `DestReceiver`: the executor calls it through `base`, the first
/// field, with a pointer to the whole struct.
#[repr(C)]
struct Receiver<'a> {
    base: pg_sys::DestReceiver,
    on_row: OnRow<'a>,
    /// Where a row's detoasted values go; reset after each row.
    row_cxt: pg_sys::MemoryContext,
    /// The first error of the callback; the query stops there.
    error: Option<PgSyncError>,
}

/// `receiveSlot`: hands the row to the callback; a failed callback stops
/// the query (returning false) and keeps its error for the caller.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn receive(
    slot: *mut pg_sys::TupleTableSlot,
    me: *mut pg_sys::DestReceiver,
) -> bool {
    // SAFETY: `me` points to a live Receiver, whose first field is the
    // DestReceiver the executor was given (see stream_rows).
    let r = &mut *(me as *mut Receiver<'_>);
    pg_sys::slot_getallattrs(slot);
    let outer = pg_sys::MemoryContextSwitchTo(r.row_cxt);
    let done = (r.on_row)(&Row { slot });
    pg_sys::MemoryContextSwitchTo(outer);
    pg_sys::MemoryContextReset(r.row_cxt);
    match done {
        Ok(()) => true,
        Err(e) => {
            r.error = Some(e);
            false
        }
    }
}

/// `rStartup`, `rShutdown`, `rDestroy`: nothing to do.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup(
    _me: *mut pg_sys::DestReceiver,
    _op: c_int,
    _d: pg_sys::TupleDesc,
) {
}

/// See [`startup`].
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn nothing(_me: *mut pg_sys::DestReceiver) {}

extern "C-unwind" {
    /// parser/parse_param.h: declares `$1..$n` of the given types.
    fn setup_parse_fixed_parameters(
        pstate: *mut pg_sys::ParseState,
        types: *const pg_sys::Oid,
        n: c_int,
    );
}

/// The parameter types of a statement, for [`declare_params`].
#[repr(C)]
struct ParamTypes {
    types: *const pg_sys::Oid,
    n: c_int,
}

/// `parserSetup` hook: the statement's parameters are `n` text values.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn declare_params(pstate: *mut pg_sys::ParseState, arg: *mut c_void) {
    // SAFETY: `arg` is the ParamTypes of stream_rows, alive through the call.
    let p = &*(arg as *const ParamTypes);
    // Guarded like pgrx's own bindings: an error in it (out of memory)
    // becomes a panic here, not a jump over this frame.
    pg_sys::ffi::pg_guard_ffi_boundary(|| setup_parse_fixed_parameters(pstate, p.types, p.n));
}

/// Runs `sql` read-only with `args` and calls `on_row` with each row, in
/// order, as the executor produces it. The first error of `on_row` stops
/// the query and is returned.
pub fn stream_rows(
    sql: &str,
    args: &Args,
    on_row: &mut dyn FnMut(&Row) -> Result<()>,
) -> Result<()> {
    let query =
        CString::new(sql).map_err(|_| PgSyncError::Spi("query contains a NUL byte".into()))?;
    let values: Vec<CString> = args
        .values()
        .iter()
        .map(|v| CString::new(v.as_deref().unwrap_or("")))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| PgSyncError::Spi("a parameter contains a NUL byte".into()))?;
    let n = values.len();
    let types = vec![pg_sys::TEXTOID; n];
    let mut setup = ParamTypes {
        types: types.as_ptr(),
        n: n as c_int,
    };
    let mut receiver = Receiver {
        row_cxt: std::ptr::null_mut(),
        base: pg_sys::DestReceiver {
            receiveSlot: Some(receive),
            rStartup: Some(startup),
            rShutdown: Some(nothing),
            rDestroy: Some(nothing),
            // Anything but DestNone (a discarded result) and DestSPI (SPI's
            // tuple table): SPI then hands every row to `receiveSlot`.
            mydest: pg_sys::CommandDest::DestTuplestore,
        },
        on_row,
        error: None,
    };
    // SAFETY: plain SPI protocol. The parameter list, its text datums and
    // the receiver live in this frame or SPI's memory through the call; a
    // Postgres error inside it unwinds through here as a panic (pgrx's
    // guard), and SPI is cleaned up by the (sub)transaction's abort.
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(PgSyncError::Spi("SPI_connect failed".into()));
        }
        // A child of SPI's procedure context (current after SPI_connect),
        // which SPI_finish or an abort deletes, and it with it.
        receiver.row_cxt = pg_sys::AllocSetContextCreateInternal(
            pg_sys::CurrentMemoryContext,
            c"pg_sync streamed row".as_ptr(),
            pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
            pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        let me = std::ptr::addr_of_mut!(receiver);
        let params = pg_sys::makeParamList(n as c_int);
        (*params).parserSetup = Some(declare_params);
        (*params).parserSetupArg = &mut setup as *mut ParamTypes as *mut c_void;
        let slots = (*params).params.as_mut_slice(n);
        for (k, (v, raw)) in values.iter().zip(args.values()).enumerate() {
            slots[k] = pg_sys::ParamExternData {
                value: pg_sys::Datum::from(pg_sys::cstring_to_text(v.as_ptr())),
                isnull: raw.is_none(),
                pflags: pg_sys::PARAM_FLAG_CONST as u16,
                ptype: pg_sys::TEXTOID,
            };
        }
        let options = pg_sys::SPIExecuteOptions {
            params,
            read_only: true,
            allow_nonatomic: false,
            must_return_tuples: false,
            tcount: 0,
            dest: me.cast(),
            owner: std::ptr::null_mut(),
        };
        let rc = pg_sys::SPI_execute_extended(query.as_ptr(), &options);
        pg_sys::SPI_finish();
        if let Some(e) = (*me).error.take() {
            return Err(e);
        }
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            return Err(PgSyncError::Spi(format!("streamed read failed ({rc})")));
        }
    }
    Ok(())
}
