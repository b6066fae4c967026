//! Thin helpers over SPI: every internal query passes its values as
//! parameters (statements built at run time collect them in [`Args`]) and
//! returns text columns. Identifiers are the only names spliced into SQL
//! text, always quoted by [`ident`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;

use crate::error::Result;

/// A row of text columns.
pub type TextRow = Vec<Option<String>>;

/// Reads run read-only until the transaction has written (no xid is
/// assigned for them, so pulls work on a hot standby and take no xid on a
/// primary); writes say so and mark the transaction as writing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Read,
    Write,
}

fn collect(table: pgrx::spi::SpiTupleTable<'_>) -> Result<Vec<TextRow>> {
    let ncols = if table.is_empty() {
        0
    } else {
        table.columns()?
    };
    let mut out = Vec::with_capacity(table.len());
    for row in table {
        let mut r = Vec::with_capacity(ncols);
        for i in 1..=ncols {
            r.push(row.get::<String>(i)?);
        }
        out.push(r);
    }
    Ok(out)
}

fn run(sql: &str, args: &[DatumWithOid], mode: Mode) -> Result<Vec<TextRow>> {
    Spi::connect_mut(|client| match mode {
        Mode::Read => collect(client.select(sql, None, args)?),
        Mode::Write => collect(client.update(sql, None, args)?),
    })
}

fn run_cached(sql: &str, args: &[DatumWithOid], mode: Mode) -> Result<Vec<TextRow>> {
    Spi::connect_mut(|client| {
        let stmt = cached_plan(client, sql, args, mode)?;
        match mode {
            Mode::Read => collect(client.select(&*stmt, None, args)?),
            Mode::Write => collect(client.update(&*stmt, None, args)?),
        }
    })
}

/// Runs a read and returns all rows, every column as text.
pub fn rows(sql: &str, args: &[DatumWithOid]) -> Result<Vec<TextRow>> {
    run(sql, args, Mode::Read)
}

/// Runs a statement that writes (or locks rows) and returns its rows.
pub fn write_rows(sql: &str, args: &[DatumWithOid]) -> Result<Vec<TextRow>> {
    run(sql, args, Mode::Write)
}

type PlanKey = (String, Vec<u32>, Mode);

/// Most plans a backend keeps; the cache is cleared when it grows past this.
const MAX_CACHED_PLANS: usize = 512;

thread_local! {
    /// Plans of the hot-path statements (pull and push), kept for the life
    /// of the backend; Postgres revalidates them after schema changes.
    static PLANS: RefCell<HashMap<PlanKey, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// Like [`rows`], through a plan prepared once per backend.
pub fn rows_cached(sql: &str, args: &[DatumWithOid]) -> Result<Vec<TextRow>> {
    run_cached(sql, args, Mode::Read)
}

/// Like [`write_rows`], through a plan prepared once per backend.
pub fn write_rows_cached(sql: &str, args: &[DatumWithOid]) -> Result<Vec<TextRow>> {
    run_cached(sql, args, Mode::Write)
}

/// Prepares `sql` once per backend (keyed by text, argument types and mode).
fn cached_plan(
    client: &pgrx::spi::SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid],
    mode: Mode,
) -> Result<Rc<OwnedPreparedStatement>> {
    let oids: Vec<pgrx::pg_sys::Oid> = args.iter().map(|a| a.oid()).collect();
    let key: PlanKey = (
        sql.to_string(),
        oids.iter().map(|o| u32::from(*o)).collect(),
        mode,
    );
    if let Some(s) = PLANS.with(|p| p.borrow().get(&key).cloned()) {
        return Ok(s);
    }
    let pg_oids: Vec<pgrx::PgOid> = oids.iter().map(|o| pgrx::PgOid::from(*o)).collect();
    let prepared = match mode {
        Mode::Read => client.prepare(sql, &pg_oids)?,
        Mode::Write => client.prepare_mut(sql, &pg_oids)?,
    };
    let s = Rc::new(prepared.keep());
    PLANS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= MAX_CACHED_PLANS {
            p.clear();
        }
        p.insert(key, s.clone());
    });
    Ok(s)
}

/// The first column of the first row as JSON (the column must be jsonb),
/// through a cached plan, for a statement that writes or locks rows.
pub fn json_cached(sql: &str, args: &[DatumWithOid]) -> Result<Option<serde_json::Value>> {
    Spi::connect_mut(|client| {
        let stmt = cached_plan(client, sql, args, Mode::Write)?;
        let table = client.update(&*stmt, None, args)?;
        if table.is_empty() {
            return Ok(None);
        }
        Ok(table.first().get::<pgrx::JsonB>(1)?.map(|j| j.0))
    })
}

/// Runs `f` in a subtransaction: its effects are kept when it returns and
/// rolled back when it raises an error, which is returned as its message.
pub fn subxact<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    use pgrx::pg_sys;
    use pgrx::pg_sys::panic::CaughtError;
    let message = |e: &CaughtError| match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_string(),
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    };
    // A cancel (statement_timeout, pg_cancel_backend, a pooler's
    // query_timeout) is not a failure of the statement: like PL/pgSQL's
    // WHEN OTHERS, it is never caught, so the whole call stops.
    let cancelled = |e: &CaughtError| match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            r.sql_error_code() == pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED
        }
        CaughtError::RustPanic { .. } => false,
    };
    // SAFETY: the standard internal-subtransaction protocol (as PL/pgSQL's
    // exception blocks use it), restoring memory context and resource owner.
    unsafe {
        let old_context = pg_sys::CurrentMemoryContext;
        let old_owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(old_context);
        let result = pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Ok(f())))
            .catch_others(|e| Err(Box::new(e)))
            .execute();
        match result {
            Ok(v) => {
                pg_sys::ReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(old_context);
                pg_sys::CurrentResourceOwner = old_owner;
                Ok(v)
            }
            Err(e) => {
                pg_sys::MemoryContextSwitchTo(old_context);
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(old_context);
                pg_sys::CurrentResourceOwner = old_owner;
                if cancelled(&e) {
                    e.rethrow();
                }
                Err(message(&e))
            }
        }
    }
}

/// Like [`one`], through a cached plan.
pub fn one_cached(sql: &str, args: &[DatumWithOid]) -> Result<Option<String>> {
    Ok(first(rows_cached(sql, args)?))
}

/// The values of a statement built at run time, passed as text parameters
/// `$1, $2, ...`; the statement casts each to its type.
#[derive(Default)]
pub struct Args(Vec<Option<String>>);

impl Args {
    /// Adds a value and returns its placeholder (`$n`).
    pub fn push(&mut self, value: impl ToString) -> String {
        self.0.push(Some(value.to_string()));
        format!("${}", self.0.len())
    }

    /// Adds a value that may be NULL and returns its placeholder.
    pub fn push_opt(&mut self, value: Option<&str>) -> String {
        self.0.push(value.map(str::to_string));
        format!("${}", self.0.len())
    }

    /// The values in order (`$1` first).
    pub fn values(&self) -> &[Option<String>] {
        &self.0
    }
}

/// Runs a read-only query built at run time in the snapshot of the calling
/// statement: SPI in read-only mode takes no new snapshot per query, so all
/// of a pull's reads see the same data. The values travel as text
/// parameters; every column comes back as text.
pub fn rows_ro_args(sql: &str, args: &Args) -> Result<Vec<TextRow>> {
    use pgrx::pg_sys;
    // SAFETY: plain SPI protocol: connect, run, copy the results into Rust
    // strings, finish (which frees SPI's memory, results included).
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(crate::error::PgSyncError::Spi("SPI_connect failed".into()));
        }
        if let Err(e) = execute_ro(sql, args) {
            pg_sys::SPI_finish();
            return Err(e);
        }
        let table = pg_sys::SPI_tuptable;
        let rows = pg_sys::SPI_processed as usize;
        let mut out = Vec::with_capacity(rows);
        if !table.is_null() {
            let tupdesc = (*table).tupdesc;
            let ncols = (*tupdesc).natts;
            for i in 0..rows {
                let tuple = *(*table).vals.add(i);
                let mut r = Vec::with_capacity(ncols as usize);
                for col in 1..=ncols {
                    let v = pg_sys::SPI_getvalue(tuple, tupdesc, col);
                    r.push(if v.is_null() {
                        None
                    } else {
                        Some(std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
                    });
                }
                out.push(r);
            }
        }
        pg_sys::SPI_finish();
        Ok(out)
    }
}

/// Runs one read-only query with text parameters; its result is in
/// `SPI_tuptable` until `SPI_finish`.
///
/// # Safety
/// Called between `SPI_connect` and `SPI_finish`.
unsafe fn execute_ro(sql: &str, args: &Args) -> Result<()> {
    use pgrx::pg_sys;
    let query = std::ffi::CString::new(sql)
        .map_err(|_| crate::error::PgSyncError::Spi("query contains a NUL byte".into()))?;
    let values: Vec<std::ffi::CString> = args
        .0
        .iter()
        .map(|v| std::ffi::CString::new(v.as_deref().unwrap_or("")))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| crate::error::PgSyncError::Spi("a parameter contains a NUL byte".into()))?;
    let n = values.len();
    let mut types = vec![pg_sys::TEXTOID; n];
    // SAFETY (caller): SPI is connected; the parameter datums are text
    // values palloc'd in the current memory context, alive through the call.
    let mut datums: Vec<pg_sys::Datum> = values
        .iter()
        .map(|v| pg_sys::Datum::from(pg_sys::cstring_to_text(v.as_ptr())))
        .collect();
    let mut nulls: Vec<std::ffi::c_char> = args
        .0
        .iter()
        .map(|v| if v.is_some() { b' ' } else { b'n' } as std::ffi::c_char)
        .collect();
    nulls.push(0);
    let rc = pg_sys::SPI_execute_with_args(
        query.as_ptr(),
        n as i32,
        types.as_mut_ptr(),
        datums.as_mut_ptr(),
        nulls.as_ptr(),
        true,
        0,
    );
    if rc != pg_sys::SPI_OK_SELECT as i32 {
        return Err(crate::error::PgSyncError::Spi(format!(
            "read-only query failed ({rc})"
        )));
    }
    Ok(())
}

/// Runs a statement, discarding any result.
pub fn exec(sql: &str, args: &[DatumWithOid]) -> Result<()> {
    Spi::connect_mut(|client| {
        client.update(sql, None, args)?;
        Ok(())
    })
}

/// The first column of the first row of a read, as text.
pub fn one(sql: &str, args: &[DatumWithOid]) -> Result<Option<String>> {
    Ok(first(rows(sql, args)?))
}

/// The first column of the first row of a statement that writes or locks.
pub fn write_one(sql: &str, args: &[DatumWithOid]) -> Result<Option<String>> {
    Ok(first(write_rows(sql, args)?))
}

fn first(rows: Vec<TextRow>) -> Option<String> {
    rows.into_iter()
        .next()
        .and_then(|mut r| if r.is_empty() { None } else { r.swap_remove(0) })
}

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    pgrx::spi::quote_identifier(name)
}

/// Quotes a string literal for SQL.
pub fn literal(s: &str) -> String {
    pgrx::spi::quote_literal(s)
}
