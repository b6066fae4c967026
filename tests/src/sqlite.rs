//! SQLite clients with the built `sqlite_sync` extension loaded.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// Path of the built extension: `$SQLITE_SYNC_LIB`, else
/// `target/debug/libsqlite_sync.so` in the workspace.
pub fn lib_path() -> PathBuf {
    if let Ok(p) = std::env::var("SQLITE_SYNC_LIB") {
        return PathBuf::from(p);
    }
    let p = crate::workspace_root().join("target/debug/libsqlite_sync.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p sqlite_sync` first",
        p.display()
    );
    p
}

/// Loads sqlite_sync into an open connection.
pub fn load(conn: &Connection) {
    // SAFETY: loading our own extension, built from this workspace.
    unsafe {
        conn.load_extension_enable().unwrap();
        conn.load_extension(lib_path(), Some("sqlite3_sqlitesync_init"))
            .unwrap();
        conn.load_extension_disable().unwrap();
    }
}

/// Opens a database file (or `:memory:`) with sqlite_sync loaded.
pub fn open(path: impl AsRef<Path>) -> Connection {
    let conn = Connection::open(path).unwrap();
    load(&conn);
    conn
}

/// Runs a query returning one text value, parsed as JSON.
pub fn json(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> serde_json::Value {
    let s: String = conn
        .query_row(sql, params, |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{sql} returned non-JSON {s:?}: {e}"))
}
