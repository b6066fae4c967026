//! Per-connection state (clock, capture switch, cached schema) and the
//! small helpers every SQL function uses: meta values and savepoints.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use sync_core::hlc::{wall_clock_unix_ms, Clock};
use sync_core::schema::Schema;
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::names::{CHANGES, META};
use crate::model::table::TableInfo;

/// The parsed schema with derived table information.
pub struct Loaded {
    pub schema: Schema,
    pub tables: Vec<TableInfo>,
}

impl Loaded {
    pub fn new(schema: Schema) -> Loaded {
        let tables = schema.tables.iter().map(TableInfo::new).collect();
        Loaded { schema, tables }
    }

    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.iter().find(|t| t.def.name == name)
    }

    pub fn table_idx(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.def.name == name)
    }

    /// Looks a table up, with the error the SQL functions raise.
    pub fn require(&self, name: &str) -> Result<(usize, &TableInfo)> {
        self.table_idx(name)
            .map(|i| (i, &self.tables[i]))
            .ok_or_else(|| {
                Error::input(format!(
                    "table {} is not synced",
                    crate::model::names::show(name)
                ))
            })
    }
}

/// State shared by the functions registered on one connection.
pub struct ConnState {
    /// False while the extension itself writes to the synced tables, so the
    /// triggers do not queue those writes as local changes.
    capture: Cell<bool>,
    clock: RefCell<Option<Clock>>,
    cache: RefCell<Option<Rc<Loaded>>>,
}

impl ConnState {
    pub fn new() -> ConnState {
        ConnState {
            capture: Cell::new(true),
            clock: RefCell::new(None),
            cache: RefCell::new(None),
        }
    }

    pub fn capturing(&self) -> bool {
        self.capture.get()
    }

    /// Turns capture off until the guard is dropped.
    pub fn no_capture(&self) -> CaptureGuard<'_> {
        let prev = self.capture.replace(false);
        CaptureGuard {
            cell: &self.capture,
            prev,
        }
    }

    /// Issues a stamp for a local write.
    pub fn tick(&self, db: Db) -> Result<Hlc> {
        self.ensure_clock(db)?;
        let mut c = self.clock.borrow_mut();
        let clock = c
            .as_mut()
            .ok_or_else(|| Error::Internal("clock not initialised".into()))?;
        Ok(clock.tick(wall_clock_unix_ms()))
    }

    /// Folds a received stamp into the clock.
    pub fn observe(&self, db: Db, h: Hlc) -> Result<()> {
        if h == Hlc::ZERO {
            return Ok(());
        }
        self.ensure_clock(db)?;
        if let Some(c) = self.clock.borrow_mut().as_mut() {
            c.observe(h, wall_clock_unix_ms());
        }
        Ok(())
    }

    fn ensure_clock(&self, db: Db) -> Result<()> {
        if self.clock.borrow().is_some() {
            return Ok(());
        }
        let client = client_id(db)?;
        let mut clock = Clock::new(&client);
        if let Some(Value::Int(h)) = meta_get(db, "hlc")? {
            clock.advance_to(Hlc::from_i64(h));
        }
        let mut st = db.prepare(&format!(
            "SELECT max(hlc) FROM {}",
            crate::model::names::q(CHANGES)
        ))?;
        if st.step()? && !st.col_type_is_null(0) {
            clock.advance_to(Hlc::from_i64(st.col_i64(0)));
        }
        *self.clock.borrow_mut() = Some(clock);
        Ok(())
    }

    /// Persists the clock's high-water mark.
    pub fn save_clock(&self, db: Db) -> Result<()> {
        let last = self.clock.borrow().as_ref().map(|c| c.last());
        if let Some(h) = last {
            if h != Hlc::ZERO {
                meta_set(db, "hlc", &Value::Int(h.as_i64()))?;
            }
        }
        Ok(())
    }

    /// Drops cached state after the schema or client id changed.
    pub fn invalidate(&self) {
        *self.cache.borrow_mut() = None;
    }

    /// Forgets the clock (the client id changed).
    pub fn reset_clock(&self) {
        *self.clock.borrow_mut() = None;
    }

    /// The current schema, or an error when `sync_init` was never called.
    pub fn loaded(&self, db: Db) -> Result<Rc<Loaded>> {
        let version = schema_version(db)?.ok_or_else(not_initialised)?;
        if let Some(l) = self.cache.borrow().as_ref() {
            if l.schema.version == version {
                return Ok(l.clone());
            }
        }
        let text = match meta_get(db, "schema")? {
            Some(Value::Text(s)) => s,
            _ => return Err(not_initialised()),
        };
        let schema: Schema = serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(format!("stored schema is corrupt: {e}")))?;
        let l = Rc::new(Loaded::new(schema));
        *self.cache.borrow_mut() = Some(l.clone());
        Ok(l)
    }
}

/// `sync_clock`: its row is there while writes are captured, and each
/// read of it is a fresh stamp.
impl crate::ffi::OneRow for ConnState {
    fn present(&self) -> bool {
        self.capturing()
    }
    fn value(&self, db: Db) -> Result<i64> {
        self.tick(db)
            .map(|h| h.as_i64())
            .map_err(|e| Error::input(format!("sync_clock: {e}")))
    }
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState::new()
    }
}

/// Restores the capture switch when dropped.
pub struct CaptureGuard<'a> {
    cell: &'a Cell<bool>,
    prev: bool,
}

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        self.cell.set(self.prev);
    }
}

pub fn not_initialised() -> Error {
    Error::NotInitialised
}

/// Whether `name` exists in the main schema (any object type).
pub fn object_exists(db: Db, name: &str) -> Result<bool> {
    let mut st = db.prepare("SELECT 1 FROM sqlite_master WHERE name = ?1 COLLATE NOCASE")?;
    st.bind_text(1, name)?;
    st.step()
}

/// Reads a meta value; `None` when absent or before `sync_init`.
pub fn meta_get(db: Db, key: &str) -> Result<Option<Value>> {
    if !object_exists(db, META)? {
        return Ok(None);
    }
    let mut st = db.prepare(&format!(
        "SELECT value FROM {} WHERE key = ?1",
        crate::model::names::q(META)
    ))?;
    st.bind_text(1, key)?;
    if st.step()? {
        Ok(Some(st.col(0)))
    } else {
        Ok(None)
    }
}

pub fn meta_text(db: Db, key: &str) -> Result<Option<String>> {
    Ok(match meta_get(db, key)? {
        Some(Value::Text(s)) => Some(s),
        Some(Value::Int(i)) => Some(i.to_string()),
        _ => None,
    })
}

pub fn meta_set(db: Db, key: &str, v: &Value) -> Result<()> {
    let mut st = db.prepare(&format!(
        "INSERT INTO {}(key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        crate::model::names::q(META)
    ))?;
    st.bind_text(1, key)?;
    st.bind(2, v)?;
    st.run()
}

pub fn meta_delete(db: Db, key: &str) -> Result<()> {
    let mut st = db.prepare(&format!(
        "DELETE FROM {} WHERE key = ?1",
        crate::model::names::q(META)
    ))?;
    st.bind_text(1, key)?;
    st.run()
}

/// The stored schema version, `None` before `sync_init`.
pub fn schema_version(db: Db) -> Result<Option<i64>> {
    Ok(match meta_get(db, "schema_version")? {
        Some(Value::Int(v)) => Some(v),
        _ => None,
    })
}

/// The client id, or an error before `sync_init`.
pub fn client_id(db: Db) -> Result<String> {
    meta_text(db, "client_id")?.ok_or_else(not_initialised)
}

/// Runs `f` inside a savepoint: released on success, rolled back (and the
/// error or panic reported) on failure, so a failed call changes nothing and
/// works inside an application transaction.
pub fn in_savepoint<T>(db: Db, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    db.exec(&format!("SAVEPOINT {name}"))?;
    let outcome = catch_unwind(AssertUnwindSafe(f));
    let result = match outcome {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(Error::input(format!("internal error (panic: {what})")))
        }
    };
    match result {
        Ok(v) => match db.exec(&format!("RELEASE {name}")) {
            Ok(()) => Ok(v),
            Err(e) => {
                let _ = db.exec(&format!("ROLLBACK TO {name}"));
                let _ = db.exec(&format!("RELEASE {name}"));
                Err(e)
            }
        },
        Err(e) => {
            let _ = db.exec(&format!("ROLLBACK TO {name}"));
            let _ = db.exec(&format!("RELEASE {name}"));
            Err(e)
        }
    }
}
