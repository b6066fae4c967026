//! The only unsafe module: the SQLite C API as the rest of the extension
//! uses it.
//!
//! rusqlite (feature `loadable_extension`) provides the entry point, routes
//! every `ffi::sqlite3_*` call through the API table of the SQLite that
//! loaded the extension, and implements the `sync_clock` virtual table
//! below. Two things stay hand-written here, each for a reason a test
//! holds:
//! - Scalar functions are registered with `sqlite3_create_function_v2`
//!   directly: rusqlite reports a function's error by setting its result
//!   code and then its message, and `sqlite3_result_error` resets the code
//!   to `SQLITE_ERROR`, so an app would no longer see `SQLITE_FULL` when
//!   the disk is full (`tests/tests/inbox.rs`). Here the message is set
//!   first and the code after it.
//! - Statements are the small [`Stmt`] (prepare, bind, step, read a column,
//!   finalized on drop) rather than `rusqlite::Statement`, which borrows a
//!   `Connection` the function bodies only hold for one call, while the
//!   store keeps prepared statements in its own tables for a whole call.
//!   Every return code is checked and turned into an [`Error`] carrying
//!   SQLite's own message.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use rusqlite::ffi;
use rusqlite::ffi::{sqlite3, sqlite3_context, sqlite3_stmt, sqlite3_value};

use crate::error::{Error, Result};

const SQLITE_OK: c_int = ffi::SQLITE_OK;
const SQLITE_ROW: c_int = ffi::SQLITE_ROW;
const SQLITE_DONE: c_int = ffi::SQLITE_DONE;
const SQLITE_INTEGER: c_int = ffi::SQLITE_INTEGER;
const SQLITE_FLOAT: c_int = ffi::SQLITE_FLOAT;
const SQLITE_TEXT: c_int = ffi::SQLITE_TEXT;
const SQLITE_BLOB: c_int = ffi::SQLITE_BLOB;
const SQLITE_UTF8: c_int = ffi::SQLITE_UTF8;
/// Function flag: may be used from triggers and views even with
/// `PRAGMA trusted_schema=OFF`.
pub const FLAG_INNOCUOUS: c_int = 0x0020_0000;
/// Function flag: may only be called from top-level SQL, not from triggers
/// or views.
pub const FLAG_DIRECTONLY: c_int = 0x0008_0000;

/// A SQLite value owned by Rust.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Runtime SQLite version number, e.g. 3040001.
pub fn libversion_number() -> i32 {
    // SAFETY: no arguments; the API table is set when the extension loads.
    unsafe { ffi::sqlite3_libversion_number() }
}

/// A borrowed database connection handle.
#[derive(Clone, Copy)]
pub struct Db(*mut sqlite3);

impl Db {
    pub fn errmsg(&self) -> String {
        // SAFETY: `self.0` is the open connection; the message is copied before any other call can change it.
        unsafe {
            let p = ffi::sqlite3_errmsg(self.0);
            if p.is_null() {
                "unknown SQLite error".to_string()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    /// SQLite's error `rc`, with the connection's message.
    fn error(&self, rc: c_int) -> Error {
        Error::Sqlite {
            code: rc,
            message: self.errmsg(),
        }
    }

    fn check(&self, rc: c_int, what: &str) -> Result<()> {
        if rc == SQLITE_OK {
            Ok(())
        } else {
            Err(Error::Sqlite {
                code: rc,
                message: format!("{what}: {}", self.errmsg()),
            })
        }
    }

    /// Runs one or more statements that return no rows.
    pub fn exec(&self, sql: &str) -> Result<()> {
        let c = cstring(sql)?;
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: `self.0` is the open connection of the current call; `c` is NUL-terminated and outlives the call.
        let rc = unsafe { ffi::sqlite3_exec(self.0, c.as_ptr(), None, ptr::null_mut(), &mut err) };
        if rc == SQLITE_OK {
            return Ok(());
        }
        let msg = if err.is_null() {
            self.errmsg()
        } else {
            // SAFETY: `err` was allocated by SQLite for this call, read once and freed once.
            unsafe {
                let m = CStr::from_ptr(err).to_string_lossy().into_owned();
                ffi::sqlite3_free(err.cast::<c_void>());
                m
            }
        };
        Err(Error::Sqlite {
            code: rc,
            message: msg,
        }
        .context(&first_line(sql)))
    }

    pub fn prepare(&self, sql: &str) -> Result<Stmt> {
        let mut stmt: *mut sqlite3_stmt = ptr::null_mut();
        let len = c_int::try_from(sql.len()).map_err(|_| Error::input("SQL text too long"))?;
        // SAFETY: `sql` is valid for `len` bytes; `stmt` receives a new statement or null.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                self.0,
                sql.as_ptr().cast::<c_char>(),
                len,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        if rc != SQLITE_OK {
            if !stmt.is_null() {
                // SAFETY: `stmt` was just returned by prepare and is finalized once.
                unsafe { ffi::sqlite3_finalize(stmt) };
            }
            return Err(self.error(rc).context(&first_line(sql)));
        }
        if stmt.is_null() {
            return Err(Error::input("empty SQL statement").context(&first_line(sql)));
        }
        Ok(Stmt {
            raw: stmt,
            db: *self,
        })
    }

    /// Rows changed by the last INSERT/UPDATE/DELETE on this connection.
    pub fn changes(&self) -> i64 {
        // SAFETY: `self.0` is the open connection of the current call.
        i64::from(unsafe { ffi::sqlite3_changes(self.0) })
    }

    /// Sets (`value` 0 or 1) or only reads (`value` -1) an on/off option of
    /// `sqlite3_db_config`; returns whether it is on afterwards. Unlike the
    /// matching PRAGMAs, this also works inside a transaction.
    pub fn config_flag(&self, op: c_int, value: c_int) -> Result<bool> {
        let mut out: c_int = 0;
        // SAFETY: `self.0` is the open connection; `out` is a valid int for SQLite to write.
        let rc = unsafe { ffi::sqlite3_db_config(self.0, op, value, &mut out as *mut c_int) };
        self.check(rc, "sqlite3_db_config")?;
        Ok(out != 0)
    }
}

/// `sqlite3_db_config` option: foreign key enforcement.
pub const DBCONFIG_ENABLE_FKEY: c_int = 1002;

/// Text from SQLite: UTF-8 checked once, copied once (invalid bytes are
/// replaced).
fn text_from(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn first_line(sql: &str) -> String {
    let s = sql.trim();
    let line = s.lines().next().unwrap_or("");
    if line.len() > 120 {
        let mut end = 120;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &line[..end])
    } else {
        line.to_string()
    }
}

fn cstring(s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| Error::input("string contains a NUL byte"))
}

/// `SQLITE_TRANSIENT`: SQLite copies the data before the call returns.
fn transient() -> ffi::sqlite3_destructor_type {
    ffi::SQLITE_TRANSIENT()
}

/// A prepared statement, finalized on drop.
pub struct Stmt {
    raw: *mut sqlite3_stmt,
    db: Db,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: `raw` was prepared by `Db::prepare` and is finalized only here, once.
        unsafe { ffi::sqlite3_finalize(self.raw) };
    }
}

impl Stmt {
    pub fn bind(&mut self, idx: usize, v: &Value) -> Result<()> {
        let i = idx as c_int;
        // SAFETY: `raw` is a live statement; SQLite copies the bytes (SQLITE_TRANSIENT) before returning.
        let rc = unsafe {
            match v {
                Value::Null => ffi::sqlite3_bind_null(self.raw, i),
                Value::Int(n) => ffi::sqlite3_bind_int64(self.raw, i, *n),
                Value::Real(f) => ffi::sqlite3_bind_double(self.raw, i, *f),
                Value::Text(s) => ffi::sqlite3_bind_text(
                    self.raw,
                    i,
                    s.as_ptr().cast::<c_char>(),
                    c_int::try_from(s.len()).map_err(|_| Error::input("text value too long"))?,
                    transient(),
                ),
                Value::Blob(b) => ffi::sqlite3_bind_blob(
                    self.raw,
                    i,
                    b.as_ptr().cast::<c_void>(),
                    c_int::try_from(b.len()).map_err(|_| Error::input("blob value too long"))?,
                    transient(),
                ),
            }
        };
        self.db.check(rc, "bind")
    }

    pub fn bind_text(&mut self, idx: usize, v: &str) -> Result<()> {
        // SAFETY: `raw` is a live statement; SQLite copies the bytes (SQLITE_TRANSIENT) before returning.
        let rc = unsafe {
            ffi::sqlite3_bind_text(
                self.raw,
                idx as c_int,
                v.as_ptr().cast::<c_char>(),
                c_int::try_from(v.len()).map_err(|_| Error::input("text value too long"))?,
                transient(),
            )
        };
        self.db.check(rc, "bind")
    }

    pub fn bind_blob(&mut self, idx: usize, v: &[u8]) -> Result<()> {
        // SAFETY: `raw` is a live statement; SQLite copies the bytes (SQLITE_TRANSIENT) before returning.
        let rc = unsafe {
            ffi::sqlite3_bind_blob(
                self.raw,
                idx as c_int,
                v.as_ptr().cast::<c_void>(),
                c_int::try_from(v.len()).map_err(|_| Error::input("blob value too long"))?,
                transient(),
            )
        };
        self.db.check(rc, "bind")
    }

    /// Binds each value to parameters 1.. in order.
    pub fn bind_all(&mut self, vals: &[Value]) -> Result<()> {
        for (i, v) in vals.iter().enumerate() {
            self.bind(i + 1, v)?;
        }
        Ok(())
    }

    /// Steps once: `Ok(true)` when a row is ready, `Ok(false)` when done.
    /// On error the statement is reset and SQLite's message returned.
    pub fn step(&mut self) -> Result<bool> {
        // SAFETY: `raw` is a live statement of this connection.
        let rc = unsafe { ffi::sqlite3_step(self.raw) };
        match rc {
            SQLITE_ROW => Ok(true),
            SQLITE_DONE => Ok(false),
            _ => {
                // The message is read after the reset, which keeps it (and
                // returns the same code again).
                // SAFETY: `raw` is a live statement of this connection.
                unsafe { ffi::sqlite3_reset(self.raw) };
                Err(self.db.error(rc).context(&self.sql()))
            }
        }
    }

    /// Resets the statement so it can run again (bindings are kept).
    pub fn reset(&mut self) {
        // SAFETY: `raw` is a live statement of this connection.
        unsafe { ffi::sqlite3_reset(self.raw) };
    }

    /// Runs a statement that returns no rows, then resets it.
    pub fn run(&mut self) -> Result<()> {
        let r = self.step();
        self.reset();
        r.map(|_| ())
    }

    /// Binds, runs and resets.
    pub fn run_with(&mut self, vals: &[Value]) -> Result<()> {
        self.bind_all(vals)?;
        self.run()
    }

    fn sql(&self) -> String {
        // SAFETY: `raw` is live; its SQL text is copied before the statement can change.
        unsafe {
            let p = ffi::sqlite3_sql(self.raw);
            if p.is_null() {
                String::new()
            } else {
                first_line(&CStr::from_ptr(p).to_string_lossy())
            }
        }
    }

    pub fn col_type_is_null(&self, i: usize) -> bool {
        // SAFETY: `raw` is a live statement positioned on a row; SQLite checks the column index.
        unsafe { ffi::sqlite3_column_type(self.raw, i as c_int) == 5 }
    }

    pub fn col_i64(&self, i: usize) -> i64 {
        // SAFETY: `raw` is a live statement positioned on a row; SQLite checks the column index.
        unsafe { ffi::sqlite3_column_int64(self.raw, i as c_int) }
    }

    pub fn col_text(&self, i: usize) -> Option<String> {
        // SAFETY: `raw` is positioned on a row; each value is copied before the next call on the statement.
        unsafe {
            let p = ffi::sqlite3_column_text(self.raw, i as c_int);
            if p.is_null() {
                return None;
            }
            let n = ffi::sqlite3_column_bytes(self.raw, i as c_int);
            let bytes = std::slice::from_raw_parts(p, n.max(0) as usize);
            Some(text_from(bytes))
        }
    }

    pub fn col(&self, i: usize) -> Value {
        let i = i as c_int;
        // SAFETY: `raw` is positioned on a row; each value is copied before the next call on the statement.
        unsafe {
            match ffi::sqlite3_column_type(self.raw, i) {
                SQLITE_INTEGER => Value::Int(ffi::sqlite3_column_int64(self.raw, i)),
                SQLITE_FLOAT => Value::Real(ffi::sqlite3_column_double(self.raw, i)),
                SQLITE_TEXT => {
                    let p = ffi::sqlite3_column_text(self.raw, i);
                    let n = ffi::sqlite3_column_bytes(self.raw, i);
                    if p.is_null() {
                        Value::Text(String::new())
                    } else {
                        let bytes = std::slice::from_raw_parts(p, n.max(0) as usize);
                        Value::Text(text_from(bytes))
                    }
                }
                SQLITE_BLOB => {
                    let p = ffi::sqlite3_column_blob(self.raw, i);
                    let n = ffi::sqlite3_column_bytes(self.raw, i);
                    if p.is_null() || n <= 0 {
                        Value::Blob(Vec::new())
                    } else {
                        Value::Blob(std::slice::from_raw_parts(p.cast::<u8>(), n as usize).to_vec())
                    }
                }
                _ => Value::Null,
            }
        }
    }
}

/// A function argument, borrowed from SQLite for the length of the call
/// (a page of thousands of rows is not copied to be read).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    Real(f64),
    /// UTF-8 text (invalid bytes replaced, which copies).
    Text(std::borrow::Cow<'a, str>),
    Blob(&'a [u8]),
}

impl Arg<'_> {
    /// An owned copy.
    pub fn to_value(&self) -> Value {
        match self {
            Arg::Null => Value::Null,
            Arg::Int(n) => Value::Int(*n),
            Arg::Real(f) => Value::Real(*f),
            Arg::Text(s) => Value::Text(s.to_string()),
            Arg::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

/// Reads a function argument.
///
/// # Safety
/// `v` must be a valid `sqlite3_value` for the duration of the call, and
/// the result must not outlive it (SQLite keeps the bytes unchanged until
/// the function returns).
pub unsafe fn arg_value<'a>(v: *mut sqlite3_value) -> Arg<'a> {
    match ffi::sqlite3_value_type(v) {
        SQLITE_INTEGER => Arg::Int(ffi::sqlite3_value_int64(v)),
        SQLITE_FLOAT => Arg::Real(ffi::sqlite3_value_double(v)),
        SQLITE_TEXT => {
            let p = ffi::sqlite3_value_text(v);
            let n = ffi::sqlite3_value_bytes(v);
            if p.is_null() {
                Arg::Text("".into())
            } else {
                Arg::Text(String::from_utf8_lossy(std::slice::from_raw_parts(
                    p,
                    n.max(0) as usize,
                )))
            }
        }
        SQLITE_BLOB => {
            let p = ffi::sqlite3_value_blob(v);
            let n = ffi::sqlite3_value_bytes(v);
            if p.is_null() || n <= 0 {
                Arg::Blob(&[])
            } else {
                Arg::Blob(std::slice::from_raw_parts(p.cast::<u8>(), n as usize))
            }
        }
        _ => Arg::Null,
    }
}

/// A value that can be bound to a statement parameter (an owned [`Value`],
/// or a value borrowed from a document being read).
pub trait Bind {
    fn bind_to(&self, st: &mut Stmt, idx: usize) -> Result<()>;
}

impl Bind for Value {
    fn bind_to(&self, st: &mut Stmt, idx: usize) -> Result<()> {
        st.bind(idx, self)
    }
}

/// What an extension function returns.
pub enum Ret {
    Null,
    Int(i64),
    Text(String),
}

/// Signature of the safe function bodies.
pub type Func<S> = fn(&S, Db, &[Arg<'_>]) -> Result<Ret>;

struct Registered<S> {
    state: std::rc::Rc<S>,
    func: Func<S>,
}

/// The C side of every registered function: reads the arguments (borrowed),
/// runs the body, and sets the result or the error (message first, then the
/// code, so SQLite keeps the code).
///
/// # Safety
/// Called by SQLite only, for a function registered by [`register`]: its
/// user data is a `Registered<S>` and `argv` holds `argc` values.
unsafe extern "C" fn x_func<S>(
    ctx: *mut sqlite3_context,
    argc: c_int,
    argv: *mut *mut sqlite3_value,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let reg = &*(ffi::sqlite3_user_data(ctx).cast::<Registered<S>>());
        let db = Db(ffi::sqlite3_context_db_handle(ctx));
        let args: Vec<Arg<'_>> = if argc > 0 && !argv.is_null() {
            std::slice::from_raw_parts(argv, argc as usize)
                .iter()
                .map(|v| arg_value(*v))
                .collect()
        } else {
            Vec::new()
        };
        (reg.func)(&reg.state, db, &args)
    }));
    match outcome {
        Ok(Ok(Ret::Null)) => ffi::sqlite3_result_null(ctx),
        Ok(Ok(Ret::Int(n))) => ffi::sqlite3_result_int64(ctx, n),
        Ok(Ok(Ret::Text(s))) => match c_int::try_from(s.len()) {
            Ok(n) => ffi::sqlite3_result_text(ctx, s.as_ptr().cast::<c_char>(), n, transient()),
            Err(_) => result_error(ctx, "sqlite_sync: result too large"),
        },
        Ok(Err(e)) => {
            result_error(ctx, &e.to_string());
            if e.code() != crate::error::SQLITE_ERROR {
                ffi::sqlite3_result_error_code(ctx, e.code());
            }
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            result_error(ctx, &format!("sqlite_sync: internal error (panic: {what})"));
        }
    }
}

/// Sets a function's error message.
///
/// # Safety
/// `ctx` is the context of the function being called.
unsafe fn result_error(ctx: *mut sqlite3_context, msg: &str) {
    let n = c_int::try_from(msg.len()).unwrap_or(0);
    ffi::sqlite3_result_error(ctx, msg.as_ptr().cast::<c_char>(), n);
}

/// Frees a registered function's user data.
///
/// # Safety
/// Called by SQLite once, with the `Registered<S>` given at registration.
unsafe extern "C" fn x_destroy<S>(p: *mut c_void) {
    if !p.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(Box::from_raw(p.cast::<Registered<S>>()));
        }));
    }
}

/// Registers a scalar function whose body is `func`, sharing `state`.
pub fn register<S: 'static>(
    conn: &rusqlite::Connection,
    name: &str,
    nargs: i32,
    flags: c_int,
    state: &std::rc::Rc<S>,
    func: Func<S>,
) -> Result<()> {
    // SAFETY: the handle is used for this registration only, while `conn`
    // holds the connection.
    let db = unsafe { conn.handle() };
    let cname = cstring(name)?;
    let reg = Box::into_raw(Box::new(Registered {
        state: state.clone(),
        func,
    }));
    // SAFETY: `db` is the loading connection; `cname` outlives the call; SQLite owns `reg` from here on and frees it through `x_destroy` (also when registration fails).
    let rc = unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            cname.as_ptr(),
            nargs,
            SQLITE_UTF8 | flags,
            reg.cast::<c_void>(),
            Some(x_func::<S>),
            None,
            None,
            Some(x_destroy::<S>),
        )
    };
    if rc != SQLITE_OK {
        // On failure SQLite has already called the destructor.
        return Err(Error::input(format!(
            "could not register function {name}: {}",
            Db(db).errmsg()
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------------
// One-row eponymous virtual tables (`sync_clock`: see `OneRow`).
//
// The triggers read their HLC stamp with `... FROM sync_clock` instead of
// calling a function: any function call in a trigger makes SQLite open a
// statement journal for every write inside a transaction (a function "may
// abort"), which roughly doubled the cost of a write. Reading a virtual
// table does not. The table has one row (column `hlc`, a fresh stamp) while
// writes are captured, and no rows while the extension itself writes; the
// connection state behind it is handed in as a `OneRow`, so this layer
// holds no app state. rusqlite's `vtab` module does the C side.

use std::borrow::Cow;
use std::ffi::CString;

use rusqlite::vtab::{
    Context as VtContext, Filters, IndexInfo, Module, VTab, VTabConfig, VTabConnection, VTabCursor,
};

/// The source of a one-row eponymous table (declared with one column):
/// the row is there while `present` says so, and its value is computed
/// when it is read. The ffi layer knows nothing else of what it serves.
pub trait OneRow {
    /// Whether the table has its row now.
    fn present(&self) -> bool;
    /// The row's one value.
    fn value(&self, db: Db) -> Result<i64>;
}

/// What a registered table serves: its source, shared with the
/// connection's functions, and its declaration.
pub struct Source {
    rows: std::rc::Rc<dyn OneRow>,
    decl: CString,
}

// SAFETY: a `Source` belongs to one connection: it is created when the
// extension is loaded into that connection and dropped when the connection
// closes, and it is only reached from that connection's calls (xConnect,
// xFilter, xColumn), which SQLite never runs concurrently for one
// connection (its mutex, or, in single-thread and multi-thread modes, the
// rule that a connection is used by one thread at a time). rusqlite asks
// for `Send + Sync` because it cannot know that.
unsafe impl Send for Source {}
// SAFETY: as for `Send` above.
unsafe impl Sync for Source {}

/// A connected one-row table.
#[repr(C)]
struct OneRowTab {
    /// Base class; must be first.
    base: ffi::sqlite3_vtab,
    /// The connection's source (a clone of the module's).
    rows: std::rc::Rc<dyn OneRow>,
    /// The connection, for reading the clock.
    db: *mut sqlite3,
}

/// A scan of a one-row table. Its table is reached through `base.pVtab`
/// (SQLite sets it), not a borrow kept from `open`: rusqlite borrows the
/// table mutably for every cursor it opens, and cursors nest (a trigger
/// reads the clock while an outer statement scans it).
#[repr(C)]
struct OneRowCur<'vtab> {
    /// Base class; must be first.
    base: ffi::sqlite3_vtab_cursor,
    eof: bool,
    tab: std::marker::PhantomData<&'vtab OneRowTab>,
}

impl OneRowCur<'_> {
    /// The cursor's table.
    fn tab(&self) -> &OneRowTab {
        // SAFETY: SQLite sets `pVtab` to the table the cursor was opened
        // on (a `OneRowTab`, `#[repr(C)]` with `sqlite3_vtab` first), which
        // outlives its cursors; the table is only read.
        unsafe { &*self.base.pVtab.cast::<OneRowTab>() }
    }
}

/// Runs a virtual-table callback, turning a panic into an error (rusqlite
/// does not catch panics there, and one would abort the app).
fn no_panic<T>(f: impl FnOnce() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(rusqlite::Error::ModuleError(
            "sqlite_sync: internal error (panic)".into(),
        ))
    })
}

// SAFETY: `OneRowTab` is `#[repr(C)]` with `sqlite3_vtab` first, as
// rusqlite requires.
unsafe impl<'vtab> VTab<'vtab> for OneRowTab {
    type Aux = Source;
    type Cursor = OneRowCur<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&Source>,
        _module: &[u8],
        _database: &[u8],
        _table: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        no_panic(|| {
            let aux = aux.ok_or_else(|| rusqlite::Error::ModuleError("no source".into()))?;
            // Usable from triggers even with PRAGMA trusted_schema=OFF.
            db.config(VTabConfig::Innocuous)?;
            Ok((
                Cow::Owned(aux.decl.clone()),
                OneRowTab {
                    base: ffi::sqlite3_vtab::default(),
                    rows: aux.rows.clone(),
                    // SAFETY: only the handle is kept, to read the clock's
                    // meta row from `value`; the table never outlives its
                    // connection.
                    db: unsafe { db.handle() },
                },
            ))
        })
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        info.set_estimated_cost(1.0);
        info.set_estimated_rows(1);
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<OneRowCur<'vtab>> {
        Ok(OneRowCur {
            base: ffi::sqlite3_vtab_cursor::default(),
            eof: true,
            tab: std::marker::PhantomData,
        })
    }
}

// SAFETY: `OneRowCur` is `#[repr(C)]` with `sqlite3_vtab_cursor` first, as
// rusqlite requires.
unsafe impl VTabCursor for OneRowCur<'_> {
    fn filter(&mut self, _num: c_int, _s: Option<&str>, _a: &Filters<'_>) -> rusqlite::Result<()> {
        self.eof = !no_panic(|| Ok(self.tab().rows.present()))?;
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.eof = true;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.eof
    }

    fn column(&self, ctx: &mut VtContext, _i: c_int) -> rusqlite::Result<()> {
        let tab = self.tab();
        match no_panic(|| {
            tab.rows
                .value(Db(tab.db))
                .map_err(|e| rusqlite::Error::ModuleError(e.to_string()))
        }) {
            Ok(v) => ctx.set_result(&v),
            Err(e) => Err(e),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(1)
    }
}

/// Registers the eponymous virtual table `name` (declared by `decl`, one
/// column) whose one row `rows` serves.
pub fn register_one_row(
    conn: &rusqlite::Connection,
    name: &str,
    decl: &str,
    rows: std::rc::Rc<dyn OneRow>,
) -> Result<()> {
    let source = Source {
        rows,
        decl: cstring(decl)?,
    };
    /// The module behind every one-row table.
    const MODULE: Module<OneRowTab> = Module::eponymous_only_module();
    conn.create_module(cstring(name)?.as_c_str(), &MODULE, Some(source))
        .map_err(|e| Error::input(format!("could not register {name}: {e}")))
}

// ------------------------------------------------------------------------
// The entry point.

/// Loads the extension into a connection: checks the loading SQLite's
/// version first (rusqlite's own check reports a mismatch through an API
/// routine it has not set up yet, which would abort the app), then lets
/// rusqlite record the API table and runs `init`.
///
/// # Safety
/// The arguments must be those SQLite passed to the extension's entry
/// point.
pub unsafe fn entry(
    db: *mut sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
    init: fn(rusqlite::Connection) -> rusqlite::Result<bool>,
) -> c_int {
    // SAFETY: `p_api` is SQLite's routine table (or null), valid for the
    // process's lifetime; its routines are called as SQLite declares them.
    unsafe {
        let Some(api) = p_api.as_ref() else {
            return ffi::SQLITE_ERROR;
        };
        let version = api.libversion_number.map_or(0, |f| f());
        if version < ffi::SQLITE_VERSION_NUMBER {
            let msg = format!(
                "sqlite_sync needs SQLite {} or newer; this is {}",
                version_text(ffi::SQLITE_VERSION_NUMBER),
                version_text(version)
            );
            if let (false, Some(malloc)) = (pz_err_msg.is_null(), api.malloc) {
                let p = malloc(c_int::try_from(msg.len() + 1).unwrap_or(0)).cast::<u8>();
                if !p.is_null() {
                    ptr::copy_nonoverlapping(msg.as_ptr(), p, msg.len());
                    *p.add(msg.len()) = 0;
                    *pz_err_msg = p.cast::<c_char>();
                }
            }
            return ffi::SQLITE_ERROR;
        }
        let outcome =
            catch_unwind(|| rusqlite::Connection::extension_init2(db, pz_err_msg, p_api, init));
        outcome.unwrap_or(ffi::SQLITE_ERROR)
    }
}

/// `3034001` as `3.34.1`.
fn version_text(v: c_int) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}
