//! Reading and checking a schema document.

use sync_core::schema::{Schema, MAX_NAME_BYTES};

use crate::error::{Error, Result};

use super::names::{show, MAX_COLUMNS, MAX_SCHEMA_BYTES, RESERVED_COLUMNS};

/// Parses a schema document and checks everything the client relies on.
pub fn parse_schema(json: &str) -> Result<Schema> {
    if json.len() > MAX_SCHEMA_BYTES {
        return Err(Error::input(format!(
            "schema document is {} bytes, more than the limit of {MAX_SCHEMA_BYTES}",
            json.len()
        )));
    }
    let schema: Schema = serde_json::from_str(json)
        .map_err(|e| Error::input(format!("malformed JSON in schema: {e}")))?;
    validate_schema(&schema)?;
    Ok(schema)
}

/// Checks a schema: format, names (length, reserved names, collisions up to
/// case, see `sync_core::schema::check_table_name`), primary keys, column
/// limits.
pub fn validate_schema(schema: &Schema) -> Result<()> {
    sync_core::wire::check_format(schema.format)?;
    let mut seen: Vec<&str> = Vec::with_capacity(schema.tables.len());
    // Length first, so an error never repeats a huge name in full.
    let too_long = |what: &str, name: &str, of: &str| {
        Error::input(format!(
            "{what} {}{of} is {} bytes, more than the limit of {MAX_NAME_BYTES}",
            show(name),
            name.len()
        ))
    };
    for t in &schema.tables {
        if t.name.len() > MAX_NAME_BYTES {
            return Err(too_long("table name", &t.name, ""));
        }
        for c in t.columns.iter().map(|c| &c.name).chain(t.pk.iter()) {
            if c.len() > MAX_NAME_BYTES {
                let of = format!(" of table {:?}", t.name);
                return Err(too_long("column name", c, &of));
            }
        }
        sync_core::schema::check_table_name(&t.name, seen.iter().copied())?;
        if t.name.to_ascii_lowercase().starts_with("sqlite_") {
            return Err(Error::input(format!(
                "table name {}: names starting with sqlite_ are reserved by SQLite",
                show(&t.name)
            )));
        }
        seen.push(&t.name);
        if t.pk.is_empty() {
            return Err(Error::input(format!(
                "table {:?} has no primary key in the schema; synced tables need one",
                t.name
            )));
        }
        if t.columns.is_empty() {
            return Err(Error::input(format!("table {:?} has no columns", t.name)));
        }
        if t.columns.len() > MAX_COLUMNS {
            return Err(Error::input(format!(
                "table {:?} has {} columns; sqlite_sync supports at most {MAX_COLUMNS}",
                t.name,
                t.columns.len()
            )));
        }
        let mut names: Vec<String> = Vec::with_capacity(t.columns.len());
        for c in &t.columns {
            sync_core::schema::check_column_name(&t.name, &c.name)?;
            let lower = c.name.to_ascii_lowercase();
            if RESERVED_COLUMNS.contains(&lower.as_str()) {
                return Err(Error::input(format!(
                    "column name {:?} of table {:?} is reserved by sqlite_sync",
                    c.name, t.name
                )));
            }
            // SQLite compares column names without (ASCII) case.
            if names.contains(&lower) {
                return Err(Error::input(format!(
                    "table {:?} has column {:?} twice",
                    t.name, c.name
                )));
            }
            names.push(lower);
        }
        for p in &t.pk {
            if t.column_index(p).is_none() {
                return Err(Error::input(format!(
                    "primary key column {} of table {:?} is not among its columns",
                    show(p),
                    t.name
                )));
            }
        }
        let mut pks = t.pk.clone();
        pks.sort();
        pks.dedup();
        if pks.len() != t.pk.len() {
            return Err(Error::input(format!(
                "table {:?} lists a primary key column twice",
                t.name
            )));
        }
    }
    Ok(())
}
