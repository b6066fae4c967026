//! Local-only columns: columns of a synced table `T` that the app keeps on
//! the device and that are never pushed (`sync_init`'s second argument).
//!
//! They exist only in `T` (not in `T_synced`, masks, `_changes` or batches).
//! The triggers and every write of the extension name schema columns only,
//! so a write of local columns alone queues nothing and pulls, acks and
//! rollbacks keep their values on existing rows. The spec is stored in
//! `_sync_meta` (`local`) and re-applied after every migration.

use sync_core::schema::{Schema, TableDef};

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::names::q;
use crate::model::table::state_table_name;
use crate::store::state::{meta_get, meta_set};

pub use sync_core::schema::LocalSpec;

const KEY: &str = "local";

/// Parses and checks a local spec against the schema (the decoder is
/// `sync_core::schema::parse_local_spec`, shared so it is fuzzed).
pub fn parse(text: &str, schema: &Schema) -> Result<LocalSpec> {
    Ok(sync_core::schema::parse_local_spec(text, schema)?)
}

/// The stored spec (empty when none).
pub fn stored(db: Db) -> Result<LocalSpec> {
    match meta_get(db, KEY)? {
        Some(Value::Text(s)) => serde_json::from_str(&s)
            .map_err(|e| Error::corrupt(format!("stored local spec is corrupt: {e}"))),
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
                Error::layout(format!(
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
