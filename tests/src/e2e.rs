//! End-to-end plumbing: a SQLite device syncing with the test cluster
//! through nothing but the two extensions' SQL functions.

use std::path::PathBuf;

use postgres::Client;
use rusqlite::Connection;
use serde_json::Value;

use crate::err_text;

/// A SQLite device with sqlite_sync loaded.
pub struct Device {
    /// The connection.
    pub db: Connection,
    /// The database file.
    pub path: PathBuf,
    /// Another handle on the same file: dropping it keeps the file.
    shared: bool,
}

impl Device {
    /// Opens a fresh device database in the temp dir and runs `sync_init`
    /// with the server's schema.
    pub fn new(server: &mut Client, name: &str) -> Device {
        let path =
            std::env::temp_dir().join(format!("pg_sync_dev_{}_{name}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let db = crate::sqlite::open(&path);
        let schema: Value = server
            .query_one("SELECT sync_schema()", &[])
            .unwrap()
            .get(0);
        let _: String = db
            .query_row("SELECT sync_init(?1)", [schema.to_string()], |r| r.get(0))
            .map(|v: Option<String>| v.unwrap_or_default())
            .unwrap_or_else(|e| panic!("sync_init: {e}"));
        Device {
            db,
            path,
            shared: false,
        }
    }

    /// A device on a new database at `path` without `sync_init` (removed
    /// when dropped).
    pub fn open_new(path: &std::path::Path) -> Device {
        Device {
            db: crate::sqlite::open(path),
            path: path.to_path_buf(),
            shared: false,
        }
    }

    /// A second connection to an existing device's file (another thread's
    /// handle on the same device).
    pub fn reopen(path: &std::path::Path) -> Device {
        Device {
            db: crate::sqlite::open(path),
            path: path.to_path_buf(),
            shared: true,
        }
    }

    /// Runs a function returning JSON text.
    pub fn call(&self, sql: &str, arg: Option<&str>) -> Value {
        let s: String = match arg {
            Some(a) => self.db.query_row(sql, [a], |r| r.get(0)),
            None => self.db.query_row(sql, [], |r| r.get(0)),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{sql} returned {s:?}: {e}"))
    }

    /// Pulls until the server has nothing more ready; returns the number of
    /// changes applied.
    pub fn pull(&self, server: &mut Client) -> usize {
        let mut n = 0;
        loop {
            let cursor: Option<String> = self
                .db
                .query_row("SELECT sync_cursor()", [], |r| r.get(0))
                .unwrap();
            let page: Value = server
                .query_one("SELECT sync_pull_json($1, 1000)", &[&cursor])
                .unwrap_or_else(|e| panic!("sync_pull: {}", err_text(&e)))
                .get(0);
            n += page["changes"].as_array().map_or(0, |c| c.len());
            let res = self.call("SELECT sync_apply(?1)", Some(&page.to_string()));
            if page["resync_required"] == true {
                continue;
            }
            if res["has_more"] != true {
                return n;
            }
        }
    }

    /// Pushes pending changes and applies the answer; returns the result.
    pub fn push(&self, server: &mut Client) -> Value {
        let batch = self.call("SELECT sync_changes()", None);
        let result: Value = server
            .query_one("SELECT sync_push($1)", &[&batch])
            .unwrap_or_else(|e| panic!("sync_push: {}", err_text(&e)))
            .get(0);
        self.call("SELECT sync_ack(?1)", Some(&result.to_string()));
        result
    }

    /// Push then pull.
    pub fn sync(&self, server: &mut Client) {
        self.push(server);
        self.pull(server);
    }

    /// Rows of a query as JSON arrays of values (for exact comparisons).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        let mut stmt = self.db.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Value::Null,
                        rusqlite::types::ValueRef::Integer(v) => Value::from(v),
                        rusqlite::types::ValueRef::Real(v) => Value::from(v),
                        rusqlite::types::ValueRef::Text(t) => {
                            Value::from(String::from_utf8_lossy(t).into_owned())
                        }
                        rusqlite::types::ValueRef::Blob(b) => Value::from(format!(
                            "\\x{}",
                            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                        )),
                    })
                })
                .collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.shared {
            return;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// Rows of a server query whose columns are all `text` or `json`-castable,
/// as JSON values (each column selected as `to_jsonb(...)`).
pub fn server_rows(c: &mut Client, sql: &str) -> Vec<Vec<Value>> {
    c.query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", err_text(&e)))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<Value>>(i).unwrap_or(Value::Null))
                .collect()
        })
        .collect()
}
