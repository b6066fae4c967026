//! The only unsafe module: thin wrappers over the `sqlite3_api_routines`
//! table handed to the entry point.
//!
//! sqlite-loadable's `exec::Statement` drops error messages, so statements
//! are prepared, bound, stepped and finalized here through the API routines,
//! and every return code is checked and turned into an [`Error`] carrying
//! SQLite's own message.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use sqlite_loadable::ext::{sqlite3, sqlite3_api_routines, sqlite3_context, sqlite3_stmt};
use sqlite_loadable::prelude::sqlite3_value;

use crate::error::{Error, Result};

static API: AtomicPtr<sqlite3_api_routines> = AtomicPtr::new(ptr::null_mut());

const SQLITE_OK: c_int = 0;
const SQLITE_ROW: c_int = 100;
const SQLITE_DONE: c_int = 101;
const SQLITE_INTEGER: c_int = 1;
const SQLITE_FLOAT: c_int = 2;
const SQLITE_TEXT: c_int = 3;
const SQLITE_BLOB: c_int = 4;
const SQLITE_UTF8: c_int = 1;
/// Function flag: may be used from triggers and views even with
/// `PRAGMA trusted_schema=OFF`.
pub const FLAG_INNOCUOUS: c_int = 0x0020_0000;
/// Function flag: may only be called from top-level SQL, not from triggers
/// or views.
pub const FLAG_DIRECTONLY: c_int = 0x0008_0000;

/// Records the API routines of the loading SQLite. Called by the entry point.
///
/// # Safety
/// `api` must be the pointer SQLite passed to the entry point.
pub unsafe fn set_api(api: *mut sqlite3_api_routines) {
    if !api.is_null() {
        API.store(api, Ordering::SeqCst);
    }
}

fn api() -> &'static sqlite3_api_routines {
    let p = API.load(Ordering::Relaxed);
    assert!(!p.is_null(), "sqlite_sync: API routines not initialised");
    // SAFETY: set once by the entry point to SQLite's static routine table,
    // which lives as long as the process.
    unsafe { &*p }
}

macro_rules! call {
    ($name:ident ( $($arg:expr),* )) => {
        (api().$name.expect(concat!("sqlite3 API routine missing: ", stringify!($name))))($($arg),*)
    };
}

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
    unsafe { call!(libversion_number()) }
}

/// A borrowed database connection handle.
#[derive(Clone, Copy)]
pub struct Db(*mut sqlite3);

impl Db {
    pub fn errmsg(&self) -> String {
        unsafe {
            let p = call!(errmsg(self.0));
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
        let rc = unsafe { call!(exec(self.0, c.as_ptr(), None, ptr::null_mut(), &mut err)) };
        if rc == SQLITE_OK {
            return Ok(());
        }
        let msg = if err.is_null() {
            self.errmsg()
        } else {
            unsafe {
                let m = CStr::from_ptr(err).to_string_lossy().into_owned();
                call!(free(err.cast::<c_void>()));
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
        let rc = unsafe {
            call!(prepare_v2(
                self.0,
                sql.as_ptr().cast::<c_char>(),
                len,
                &mut stmt,
                ptr::null_mut()
            ))
        };
        if rc != SQLITE_OK {
            if !stmt.is_null() {
                unsafe { call!(finalize(stmt)) };
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
        i64::from(unsafe { call!(changes(self.0)) })
    }

    /// Sets (`value` 0 or 1) or only reads (`value` -1) an on/off option of
    /// `sqlite3_db_config`; returns whether it is on afterwards. Unlike the
    /// matching PRAGMAs, this also works inside a transaction.
    pub fn config_flag(&self, op: c_int, value: c_int) -> Result<bool> {
        let mut out: c_int = 0;
        let rc = unsafe { call!(db_config(self.0, op, value, &mut out as *mut c_int)) };
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

type Destructor = Option<unsafe extern "C" fn(*mut c_void)>;

fn transient() -> Destructor {
    // SQLITE_TRANSIENT is the destructor "pointer" -1: SQLite copies the data.
    Some(unsafe { std::mem::transmute::<isize, unsafe extern "C" fn(*mut c_void)>(-1_isize) })
}

/// A prepared statement, finalized on drop.
pub struct Stmt {
    raw: *mut sqlite3_stmt,
    db: Db,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        unsafe { call!(finalize(self.raw)) };
    }
}

impl Stmt {
    pub fn bind(&mut self, idx: usize, v: &Value) -> Result<()> {
        let i = idx as c_int;
        let rc = unsafe {
            match v {
                Value::Null => call!(bind_null(self.raw, i)),
                Value::Int(n) => call!(bind_int64(self.raw, i, *n)),
                Value::Real(f) => call!(bind_double(self.raw, i, *f)),
                Value::Text(s) => call!(bind_text(
                    self.raw,
                    i,
                    s.as_ptr().cast::<c_char>(),
                    c_int::try_from(s.len()).map_err(|_| Error::input("text value too long"))?,
                    transient()
                )),
                Value::Blob(b) => call!(bind_blob(
                    self.raw,
                    i,
                    b.as_ptr().cast::<c_void>(),
                    c_int::try_from(b.len()).map_err(|_| Error::input("blob value too long"))?,
                    transient()
                )),
            }
        };
        self.db.check(rc, "bind")
    }

    pub fn bind_text(&mut self, idx: usize, v: &str) -> Result<()> {
        let rc = unsafe {
            call!(bind_text(
                self.raw,
                idx as c_int,
                v.as_ptr().cast::<c_char>(),
                c_int::try_from(v.len()).map_err(|_| Error::input("text value too long"))?,
                transient()
            ))
        };
        self.db.check(rc, "bind")
    }

    pub fn bind_blob(&mut self, idx: usize, v: &[u8]) -> Result<()> {
        let rc = unsafe {
            call!(bind_blob(
                self.raw,
                idx as c_int,
                v.as_ptr().cast::<c_void>(),
                c_int::try_from(v.len()).map_err(|_| Error::input("blob value too long"))?,
                transient()
            ))
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
        let rc = unsafe { call!(step(self.raw)) };
        match rc {
            SQLITE_ROW => Ok(true),
            SQLITE_DONE => Ok(false),
            _ => {
                // The message is read after the reset, which keeps it (and
                // returns the same code again).
                unsafe { call!(reset(self.raw)) };
                Err(self.db.error(rc).context(&self.sql()))
            }
        }
    }

    /// Resets the statement so it can run again (bindings are kept).
    pub fn reset(&mut self) {
        unsafe { call!(reset(self.raw)) };
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
        unsafe {
            let p = call!(sql(self.raw));
            if p.is_null() {
                String::new()
            } else {
                first_line(&CStr::from_ptr(p).to_string_lossy())
            }
        }
    }

    pub fn col_type_is_null(&self, i: usize) -> bool {
        unsafe { call!(column_type(self.raw, i as c_int)) == 5 }
    }

    pub fn col_i64(&self, i: usize) -> i64 {
        unsafe { call!(column_int64(self.raw, i as c_int)) }
    }

    pub fn col_text(&self, i: usize) -> Option<String> {
        unsafe {
            let p = call!(column_text(self.raw, i as c_int));
            if p.is_null() {
                return None;
            }
            let n = call!(column_bytes(self.raw, i as c_int));
            let bytes = std::slice::from_raw_parts(p, n.max(0) as usize);
            Some(text_from(bytes))
        }
    }

    pub fn col(&self, i: usize) -> Value {
        let i = i as c_int;
        unsafe {
            match call!(column_type(self.raw, i)) {
                SQLITE_INTEGER => Value::Int(call!(column_int64(self.raw, i))),
                SQLITE_FLOAT => Value::Real(call!(column_double(self.raw, i))),
                SQLITE_TEXT => {
                    let p = call!(column_text(self.raw, i));
                    let n = call!(column_bytes(self.raw, i));
                    if p.is_null() {
                        Value::Text(String::new())
                    } else {
                        let bytes = std::slice::from_raw_parts(p, n.max(0) as usize);
                        Value::Text(text_from(bytes))
                    }
                }
                SQLITE_BLOB => {
                    let p = call!(column_blob(self.raw, i));
                    let n = call!(column_bytes(self.raw, i));
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

/// Reads a function argument.
///
/// # Safety
/// `v` must be a valid `sqlite3_value` for the duration of the call.
pub unsafe fn arg_value(v: *mut sqlite3_value) -> Value {
    match call!(value_type(v)) {
        SQLITE_INTEGER => Value::Int(call!(value_int64(v))),
        SQLITE_FLOAT => Value::Real(call!(value_double(v))),
        SQLITE_TEXT => {
            let p = call!(value_text(v));
            let n = call!(value_bytes(v));
            if p.is_null() {
                Value::Text(String::new())
            } else {
                Value::Text(text_from(std::slice::from_raw_parts(p, n.max(0) as usize)))
            }
        }
        SQLITE_BLOB => {
            let p = call!(value_blob(v));
            let n = call!(value_bytes(v));
            if p.is_null() || n <= 0 {
                Value::Blob(Vec::new())
            } else {
                Value::Blob(std::slice::from_raw_parts(p.cast::<u8>(), n as usize).to_vec())
            }
        }
        _ => Value::Null,
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
pub type Func<S> = fn(&S, Db, &[Value]) -> Result<Ret>;

struct Registered<S> {
    state: std::rc::Rc<S>,
    func: Func<S>,
}

unsafe extern "C" fn x_func<S>(
    ctx: *mut sqlite3_context,
    argc: c_int,
    argv: *mut *mut sqlite3_value,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let reg = &*(call!(user_data(ctx)).cast::<Registered<S>>());
        let db = Db(call!(context_db_handle(ctx)));
        let args: Vec<Value> = if argc > 0 && !argv.is_null() {
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
        Ok(Ok(Ret::Null)) => call!(result_null(ctx)),
        Ok(Ok(Ret::Int(n))) => call!(result_int64(ctx, n)),
        Ok(Ok(Ret::Text(s))) => match c_int::try_from(s.len()) {
            Ok(n) => call!(result_text(
                ctx,
                s.as_ptr().cast::<c_char>(),
                n,
                transient()
            )),
            Err(_) => result_error(ctx, "sqlite_sync: result too large"),
        },
        Ok(Err(e)) => {
            result_error(ctx, &e.to_string());
            if e.code() != crate::error::SQLITE_ERROR {
                call!(result_error_code(ctx, e.code()));
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

unsafe fn result_error(ctx: *mut sqlite3_context, msg: &str) {
    let n = c_int::try_from(msg.len()).unwrap_or(0);
    call!(result_error(ctx, msg.as_ptr().cast::<c_char>(), n));
}

unsafe extern "C" fn x_destroy<S>(p: *mut c_void) {
    if !p.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(Box::from_raw(p.cast::<Registered<S>>()));
        }));
    }
}

/// Registers a scalar function whose body is `func`, sharing `state`.
pub fn register<S: 'static>(
    db: *mut sqlite3,
    name: &str,
    nargs: i32,
    flags: c_int,
    state: &std::rc::Rc<S>,
    func: Func<S>,
) -> Result<()> {
    let cname = cstring(name)?;
    let reg = Box::into_raw(Box::new(Registered {
        state: state.clone(),
        func,
    }));
    let rc = unsafe {
        call!(create_function_v2(
            db,
            cname.as_ptr(),
            nargs,
            SQLITE_UTF8 | flags,
            reg.cast::<c_void>(),
            Some(x_func::<S>),
            None,
            None,
            Some(x_destroy::<S>)
        ))
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
// holds no app state.

use sqlite_loadable::ext::{sqlite3_index_info, sqlite3_module, sqlite3_vtab, sqlite3_vtab_cursor};

/// The source of a one-row eponymous table (declared with one column):
/// the row is there while `present` says so, and its value is computed
/// when it is read. The ffi layer knows nothing else of what it serves.
pub trait OneRow {
    /// Whether the table has its row now.
    fn present(&self) -> bool;
    /// The row's one value.
    fn value(&self, db: Db) -> Result<i64>;
}

/// What a connected table holds: its source, shared with the connection.
type Source = std::rc::Rc<dyn OneRow>;

const SQLITE_ERROR: c_int = 1;
const SQLITE_NOMEM: c_int = 7;
const SQLITE_VTAB_INNOCUOUS: c_int = 2;

#[repr(C)]
struct OneRowTab {
    base: sqlite3_vtab,
    /// The module's aux pointer: a boxed [`Source`], owned by SQLite
    /// until `one_row_destroy_aux`.
    source: *const Source,
    /// The declaration (`CREATE TABLE x(...)`), also from the aux data.
    db: *mut sqlite3,
}

/// The aux data of a registered module.
struct Aux {
    source: Source,
    decl: std::ffi::CString,
}

#[repr(C)]
struct OneRowCur {
    base: sqlite3_vtab_cursor,
    eof: bool,
}

unsafe extern "C" fn one_row_connect(
    db: *mut sqlite3,
    aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    pp_vtab: *mut *mut sqlite3_vtab,
    _pz_err: *mut *mut c_char,
) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let aux = &*(aux as *const Aux);
        let rc = call!(declare_vtab(db, aux.decl.as_ptr()));
        if rc != SQLITE_OK {
            return rc;
        }
        // Usable from triggers even with PRAGMA trusted_schema=OFF.
        call!(vtab_config(db, SQLITE_VTAB_INNOCUOUS));
        let tab = Box::new(OneRowTab {
            base: sqlite3_vtab {
                pModule: ptr::null(),
                nRef: 0,
                zErrMsg: ptr::null_mut(),
            },
            source: &aux.source,
            db,
        });
        *pp_vtab = Box::into_raw(tab).cast::<sqlite3_vtab>();
        SQLITE_OK
    }));
    r.unwrap_or(SQLITE_ERROR)
}

unsafe extern "C" fn one_row_best_index(
    _tab: *mut sqlite3_vtab,
    info: *mut sqlite3_index_info,
) -> c_int {
    (*info).estimatedCost = 1.0;
    (*info).estimatedRows = 1;
    SQLITE_OK
}

unsafe extern "C" fn one_row_disconnect(tab: *mut sqlite3_vtab) -> c_int {
    if !tab.is_null() {
        drop(Box::from_raw(tab.cast::<OneRowTab>()));
    }
    SQLITE_OK
}

unsafe extern "C" fn one_row_open(
    _tab: *mut sqlite3_vtab,
    pp: *mut *mut sqlite3_vtab_cursor,
) -> c_int {
    let cur = Box::new(OneRowCur {
        base: sqlite3_vtab_cursor {
            pVtab: ptr::null_mut(),
        },
        eof: true,
    });
    *pp = Box::into_raw(cur).cast::<sqlite3_vtab_cursor>();
    if (*pp).is_null() {
        return SQLITE_NOMEM;
    }
    SQLITE_OK
}

unsafe extern "C" fn one_row_close(cur: *mut sqlite3_vtab_cursor) -> c_int {
    if !cur.is_null() {
        drop(Box::from_raw(cur.cast::<OneRowCur>()));
    }
    SQLITE_OK
}

unsafe extern "C" fn one_row_filter(
    cur: *mut sqlite3_vtab_cursor,
    _idx_num: c_int,
    _idx_str: *const c_char,
    _argc: c_int,
    _argv: *mut *mut sqlite3_value,
) -> c_int {
    let c = cur.cast::<OneRowCur>();
    let tab = (*cur).pVtab.cast::<OneRowTab>();
    (*c).eof = !(*(*tab).source).present();
    SQLITE_OK
}

unsafe extern "C" fn one_row_next(cur: *mut sqlite3_vtab_cursor) -> c_int {
    (*cur.cast::<OneRowCur>()).eof = true;
    SQLITE_OK
}

unsafe extern "C" fn one_row_eof(cur: *mut sqlite3_vtab_cursor) -> c_int {
    c_int::from((*cur.cast::<OneRowCur>()).eof)
}

unsafe extern "C" fn one_row_column(
    cur: *mut sqlite3_vtab_cursor,
    ctx: *mut sqlite3_context,
    _i: c_int,
) -> c_int {
    let tab = (*cur).pVtab.cast::<OneRowTab>();
    let r = catch_unwind(AssertUnwindSafe(|| (*(*tab).source).value(Db((*tab).db))));
    match r {
        Ok(Ok(v)) => call!(result_int64(ctx, v)),
        Ok(Err(e)) => result_error(ctx, &e.to_string()),
        Err(_) => result_error(ctx, "internal error (panic)"),
    }
    SQLITE_OK
}

unsafe extern "C" fn one_row_rowid(_cur: *mut sqlite3_vtab_cursor, rowid: *mut i64) -> c_int {
    *rowid = 1;
    SQLITE_OK
}

unsafe extern "C" fn one_row_destroy_aux(p: *mut c_void) {
    if !p.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(Box::from_raw(p as *mut Aux));
        }));
    }
}

static ONE_ROW_MODULE: sqlite3_module = sqlite3_module {
    iVersion: 1,
    xCreate: None,
    xConnect: Some(one_row_connect),
    xBestIndex: Some(one_row_best_index),
    xDisconnect: Some(one_row_disconnect),
    xDestroy: None,
    xOpen: Some(one_row_open),
    xClose: Some(one_row_close),
    xFilter: Some(one_row_filter),
    xNext: Some(one_row_next),
    xEof: Some(one_row_eof),
    xColumn: Some(one_row_column),
    xRowid: Some(one_row_rowid),
    xUpdate: None,
    xBegin: None,
    xSync: None,
    xCommit: None,
    xRollback: None,
    xFindFunction: None,
    xRename: None,
    xSavepoint: None,
    xRelease: None,
    xRollbackTo: None,
    xShadowName: None,
};

/// Registers the eponymous virtual table `name` (declared by `decl`, one
/// column) whose one row `source` serves.
pub fn register_one_row(db: *mut sqlite3, name: &str, decl: &str, source: Source) -> Result<()> {
    let aux = Box::into_raw(Box::new(Aux {
        source,
        decl: cstring(decl)?,
    })) as *mut c_void;
    let cname = cstring(name)?;
    // SAFETY: `db` is the connection handed to the entry point; the module
    // is a static; SQLite owns `aux` from here on and frees it through
    // `one_row_destroy_aux` (also when registration fails).
    let rc = unsafe {
        call!(create_module_v2(
            db,
            cname.as_ptr(),
            &ONE_ROW_MODULE,
            aux,
            Some(one_row_destroy_aux)
        ))
    };
    if rc != SQLITE_OK {
        return Err(Error::input(format!(
            "could not register {name}: {}",
            Db(db).errmsg()
        )));
    }
    Ok(())
}
