//! `sqlite_sync`: the SQLite side of pg_sync.
//!
//! Loaded into a connection, it registers SQL functions that turn synced
//! tables into local-first tables: the app reads and writes them with plain
//! SQL, triggers queue every write in `_changes`, `sync_changes()` builds the
//! push batch for Postgres' `sync_push`, `sync_ack()` applies its answer and
//! `sync_apply()` applies pages from `sync_pull`. See docs/sqlite_sync.md.

mod api;
mod error;
mod ffi;
mod model;
mod schema;
mod store;
mod sync;

use std::ffi::{c_char, c_int};

use rusqlite::ffi::{sqlite3, sqlite3_api_routines};
use rusqlite::Connection;

/// Registers the functions on the connection rusqlite hands over (a
/// borrowed handle: dropping it leaves the connection open).
fn init(conn: Connection) -> rusqlite::Result<bool> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api::register(&conn)));
    match outcome {
        Ok(Ok(())) => Ok(false),
        Ok(Err(e)) => Err(rusqlite::Error::ModuleError(e.to_string())),
        Err(panic) => Err(rusqlite::Error::ModuleError(format!(
            "sqlite_sync: internal error while loading (panic: {})",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into())
        ))),
    }
}

/// Entry point SQLite derives from the file name `libsqlite_sync.so`.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_sqlitesync_init(
    db: *mut sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut sqlite3_api_routines,
) -> c_int {
    // SAFETY: the arguments are those SQLite passed to the entry point.
    unsafe { ffi::entry(db, pz_err_msg, p_api, init) }
}

/// Generic entry point, used when the library file was renamed.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_extension_init(
    db: *mut sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut sqlite3_api_routines,
) -> c_int {
    // SAFETY: as above.
    unsafe { ffi::entry(db, pz_err_msg, p_api, init) }
}
