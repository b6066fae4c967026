//! Local-only columns: columns of a synced table `T` that the app keeps on
//! the device and that are never pushed (`sync_init`'s second argument).
//!
//! They exist only in `T` (not in `T_synced`, masks, `_changes` or batches).
//! The triggers and every write of the extension name schema columns only,
//! so a write of local columns alone queues nothing and pulls, acks and
//! rollbacks keep their values on existing rows. The spec is stored in
//! `_sync_meta` (`local`) and re-applied after every migration.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use sync_core::schema::{Schema, TableDef, MAX_NAME_BYTES};

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::{q, state_table_name};
use crate::state::{meta_get, meta_set};

/// Table name → column name → declaration (type and constraints).
pub type LocalSpec = BTreeMap<String, BTreeMap<String, String>>;

const KEY: &str = "local";

/// Largest local spec document, in bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Longest declaration of a local column, in bytes.
pub const MAX_DECL_BYTES: usize = 4096;

/// Parses and checks a local spec against the schema.
pub fn parse(text: &str, schema: &Schema) -> Result<LocalSpec> {
    let bad = |m: String| Error::msg(format!("invalid local spec: {m}"));
    if text.len() > MAX_SPEC_BYTES {
        return Err(bad(format!(
            "the document is {} bytes, more than the limit of {MAX_SPEC_BYTES}",
            text.len()
        )));
    }
    let doc: Json = serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| bad("expected a JSON object like {\"columns\": {...}}".into()))?;
    for k in obj.keys() {
        if k != "columns" {
            return Err(bad(format!("unknown key {k:?} (expected \"columns\")")));
        }
    }
    let mut spec = LocalSpec::new();
    let tables = match obj.get("columns") {
        None | Some(Json::Null) => return Ok(spec),
        Some(Json::Object(m)) => m,
        Some(_) => {
            return Err(bad(
                "\"columns\" must be an object of table name to {column: declaration}".into(),
            ))
        }
    };
    for (tname, cols) in tables {
        let def = schema.table(tname).ok_or_else(|| {
            bad(format!(
                "table {} is not a synced table",
                crate::model::show(tname)
            ))
        })?;
        let cols = cols.as_object().ok_or_else(|| {
            bad(format!(
                "columns of table {tname:?} must be an object of column name to declaration"
            ))
        })?;
        let entry = spec.entry(tname.clone()).or_default();
        for (cname, decl) in cols {
            if cname.is_empty() {
                return Err(bad(format!("table {tname:?} has an empty column name")));
            }
            if cname.len() > MAX_NAME_BYTES {
                return Err(bad(format!(
                    "column name {} of table {tname:?} is {} bytes, more than the limit of \
                     {MAX_NAME_BYTES}",
                    crate::model::show(cname),
                    cname.len()
                )));
            }
            if cname.contains('\0') {
                return Err(bad(format!(
                    "column name {cname:?} of table {tname:?} contains a NUL character"
                )));
            }
            if is_schema_col(def, cname) {
                return Err(bad(format!(
                    "column {cname:?} of table {tname:?} is a synced column of the schema"
                )));
            }
            if cname.to_ascii_lowercase().starts_with("_sync") {
                return Err(bad(format!(
                    "column name {cname:?} of table {tname:?} is reserved by sqlite_sync"
                )));
            }
            let decl = decl.as_str().ok_or_else(|| {
                bad(format!(
                    "declaration of column {cname:?} of table {tname:?} must be a string \
                     like \"TEXT\" or \"INTEGER DEFAULT 0\""
                ))
            })?;
            if decl.len() > MAX_DECL_BYTES {
                return Err(bad(format!(
                    "declaration of column {cname:?} of table {tname:?} is {} bytes, more \
                     than the limit of {MAX_DECL_BYTES}",
                    decl.len()
                )));
            }
            if decl.contains(';') || decl.contains("--") || decl.contains("/*") {
                return Err(bad(format!(
                    "declaration {decl:?} of column {cname:?} of table {tname:?} may not \
                     contain ';' or comments"
                )));
            }
            entry.insert(cname.clone(), decl.trim().to_string());
        }
    }
    Ok(spec)
}

/// The stored spec (empty when none).
pub fn stored(db: Db) -> Result<LocalSpec> {
    match meta_get(db, KEY)? {
        Some(Value::Text(s)) => serde_json::from_str(&s)
            .map_err(|e| Error::msg(format!("stored local spec is corrupt: {e}"))),
        _ => Ok(LocalSpec::new()),
    }
}

/// Merges `add` into `base` (columns are added, never removed).
pub fn merge(base: &mut LocalSpec, add: LocalSpec) {
    for (t, cols) in add {
        base.entry(t).or_default().extend(cols);
    }
}

/// Whether `name` is a column of the schema table (SQLite compares column
/// names case-insensitively).
fn is_schema_col(def: &TableDef, name: &str) -> bool {
    def.columns
        .iter()
        .any(|c| c.name.eq_ignore_ascii_case(name))
}

/// Whether table `table` has a column `col`.
pub fn has_column(db: Db, table: &str, col: &str) -> Result<bool> {
    Ok(columns_of(db, table)?
        .iter()
        .any(|c| c.eq_ignore_ascii_case(col)))
}

fn columns_of(db: Db, table: &str) -> Result<Vec<String>> {
    let mut st = db.prepare("SELECT name FROM pragma_table_info(?1)")?;
    st.bind_text(1, table)?;
    let mut out = Vec::new();
    while st.step()? {
        out.extend(st.col_text(0));
    }
    Ok(out)
}

/// Adds the missing local columns of `spec` to the tables of `schema` and
/// stores the spec. Columns that became schema columns leave the spec (the
/// synced column takes them over); tables not in the schema are kept in the
/// spec for when they come back.
pub fn apply(db: Db, schema: &Schema, mut spec: LocalSpec) -> Result<()> {
    for (tname, cols) in spec.iter_mut() {
        let Some(def) = schema.table(tname) else {
            continue;
        };
        cols.retain(|c, _| !is_schema_col(def, c));
        let state = state_table_name(&def.name, def.mode);
        let existing = columns_of(db, &state)?;
        for (cname, decl) in cols.iter() {
            if existing.iter().any(|e| e.eq_ignore_ascii_case(cname)) {
                continue;
            }
            db.exec(&format!(
                "ALTER TABLE {} ADD COLUMN {} {decl}",
                q(&state),
                q(cname)
            ))
            .map_err(|e| {
                Error::msg(format!(
                    "cannot add local column {cname:?} {decl:?} to table {tname:?}: {e}"
                ))
            })?;
        }
    }
    spec.retain(|_, cols| !cols.is_empty());
    if spec.is_empty() && meta_get(db, KEY)?.is_none() {
        return Ok(());
    }
    meta_set(db, KEY, &Value::Text(serde_json::to_string(&spec)?))
}
