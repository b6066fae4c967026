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

use std::ffi::{c_char, c_uint};

use sqlite_loadable::ext::{sqlite3, sqlite3_api_routines};

fn entry(db: *mut sqlite3, p_api: *mut sqlite3_api_routines) -> c_uint {
    // SAFETY: p_api is the routine table SQLite handed to the entry point.
    unsafe { ffi::set_api(p_api) };
    let outcome = std::panic::catch_unwind(|| {
        sqlite_loadable::entrypoints::register_entrypoint(db, std::ptr::null_mut(), p_api, |db| {
            api::register(db).map_err(|e| sqlite_loadable::Error::new_message(e.to_string()))
        })
    });
    outcome.unwrap_or(1)
}

/// Entry point SQLite derives from the file name `libsqlite_sync.so`.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_sqlitesync_init(
    db: *mut sqlite3,
    _pz_err_msg: *mut *mut c_char,
    p_api: *mut sqlite3_api_routines,
) -> c_uint {
    entry(db, p_api)
}

/// Generic entry point, used when the library file was renamed.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_extension_init(
    db: *mut sqlite3,
    _pz_err_msg: *mut *mut c_char,
    p_api: *mut sqlite3_api_routines,
) -> c_uint {
    entry(db, p_api)
}
