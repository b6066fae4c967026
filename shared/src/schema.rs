//! The schema a client is built from: what `sync_schema()` returns on the
//! server and what `sync_init(schema)` takes on the client.

use serde::{Deserialize, Serialize};

use crate::merge::Strategy;
use crate::SyncError;
use crate::FORMAT;

pub use crate::types::ColumnType;

/// How writes to a table are shown locally before the server accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// The view shows a local write at once.
    #[default]
    Optimistic,
    /// A local write is queued and shown in `<t>_pending`; `<t>` shows it
    /// only once the server has accepted it.
    Confirmed,
}

pub use crate::merge::DeletePolicy;

/// One synced column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name as in Postgres.
    pub name: String,
    /// Logical type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether NULL is allowed.
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Merge strategy for this column.
    #[serde(default)]
    pub strategy: Strategy,
}

fn yes() -> bool {
    true
}

/// One synced table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Table name (unqualified; unique among synced tables).
    pub name: String,
    /// Primary key column names, in key order.
    pub pk: Vec<String>,
    /// Synced columns in wire order; version arrays follow this order.
    pub columns: Vec<ColumnDef>,
    /// Write mode on clients.
    #[serde(default)]
    pub mode: WriteMode,
    /// Delete-vs-update policy.
    #[serde(default)]
    pub on_delete: DeletePolicy,
}

impl TableDef {
    /// Index of a column in `columns`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether `name` is part of the primary key.
    pub fn is_pk(&self, name: &str) -> bool {
        self.pk.iter().any(|p| p == name)
    }
}

/// The whole synced schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Wire format version.
    pub format: u32,
    /// Schema version: increases with every server-side schema change.
    pub version: i64,
    /// Synced tables.
    pub tables: Vec<TableDef>,
    /// Streams a device may subscribe to (see [`crate::streams`]); a table
    /// with streams reaches devices only through subscriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::streams::StreamDef>,
}

impl Schema {
    /// An empty schema at version 0.
    pub fn empty() -> Schema {
        Schema {
            format: FORMAT,
            version: 0,
            tables: Vec::new(),
            streams: Vec::new(),
        }
    }

    /// Looks a table up by name.
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Parses a schema document and checks its format. (The extensions
    /// check names and keys on top; see [`check_table_name`] and
    /// [`check_column_name`].)
    pub fn parse(json: &str) -> Result<Schema, SyncError> {
        let schema: Schema = serde_json::from_str(json)
            .map_err(|e| SyncError::MalformedJson(format!("schema: {e}")))?;
        crate::check_format(schema.format)?;
        Ok(schema)
    }
}

/// Longest table or column name, in bytes (Postgres' identifier limit).
pub const MAX_NAME_BYTES: usize = 63;

/// Most synced columns a table may have (the device keeps one bit per
/// column in its change mask).
pub const MAX_SYNCED_COLUMNS: usize = 63;

/// Names the device keeps for itself: its clock, queue and bookkeeping
/// tables. No synced table may take one.
pub const RESERVED_TABLE_NAMES: &[&str] = &["sync_clock", "_changes", "sync_subscriptions"];

/// Prefix of every name the extensions keep for themselves.
pub const RESERVED_PREFIX: &str = "_sync_";

/// Suffixes of the objects the device derives from a synced table `t`.
pub const DERIVED_SUFFIXES: &[&str] = &["_synced", "_local", "_pending"];

/// A name as an error message shows it: at most 80 characters.
fn shown(name: &str) -> String {
    match name.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name.to_string(),
    }
}

/// Checks that `name` may be a synced table next to the synced tables
/// `others`: not empty, at most [`MAX_NAME_BYTES`], not reserved, and not
/// equal (up to ASCII case, as SQLite compares names) to another synced
/// table or to an object the device derives from one (`<t>_synced`,
/// `<t>_local`, `<t>_pending`), in either direction. Both extensions call
/// it: the server when a table is enabled, the device when it builds one.
pub fn check_table_name<'a>(
    name: &str,
    others: impl IntoIterator<Item = &'a str>,
) -> Result<(), SyncError> {
    let bad = |why: String| {
        Err(SyncError::Invalid(format!(
            "table name {:?}: {why}",
            shown(name)
        )))
    };
    if name.is_empty() {
        return bad("is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(format!(
            "is {} bytes, more than the limit of {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return bad("contains a NUL character".into());
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_TABLE_NAMES.contains(&lower.as_str()) || lower.starts_with(RESERVED_PREFIX) {
        return bad(format!(
            "is reserved by the sync extensions ({}, and names starting with {RESERVED_PREFIX})",
            RESERVED_TABLE_NAMES.join(", ")
        ));
    }
    for other in others {
        let o = other.to_ascii_lowercase();
        if o == lower {
            return bad(format!(
                "equals the synced table {other:?} up to case; devices compare names without case"
            ));
        }
        for s in DERIVED_SUFFIXES {
            if lower == format!("{o}{s}") || o == format!("{lower}{s}") {
                return bad(format!(
                    "collides with {s:?}, the suffix of the objects a device derives from the synced table {other:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Checks a synced column name: not empty, at most [`MAX_NAME_BYTES`], no
/// NUL, and not starting with the reserved prefix.
pub fn check_column_name(table: &str, name: &str) -> Result<(), SyncError> {
    let bad = |why: String| {
        Err(SyncError::Invalid(format!(
            "column name {:?} of table {:?}: {why}",
            shown(name),
            shown(table)
        )))
    };
    if name.is_empty() {
        return bad("is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(format!(
            "is {} bytes, more than the limit of {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return bad("contains a NUL character".into());
    }
    if name.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
        return bad(format!("starts with {RESERVED_PREFIX}, which is reserved"));
    }
    Ok(())
}

/// Table name → column name → declaration (type and constraints).
pub type LocalSpec = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// Largest local spec document, in bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Longest declaration of a local column, in bytes.
pub const MAX_DECL_BYTES: usize = 4096;

/// Parses and checks a local spec (`sync_init`'s second argument: local-only
/// columns the device keeps and never pushes) against the schema.
pub fn parse_local_spec(text: &str, schema: &Schema) -> Result<LocalSpec, SyncError> {
    let bad = |m: String| SyncError::Invalid(format!("invalid local spec: {m}"));
    if text.len() > MAX_SPEC_BYTES {
        return Err(bad(format!(
            "the document is {} bytes, more than the limit of {MAX_SPEC_BYTES}",
            text.len()
        )));
    }
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
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
        None | Some(serde_json::Value::Null) => return Ok(spec),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            return Err(bad(
                "\"columns\" must be an object of table name to {column: declaration}".into(),
            ))
        }
    };
    for (tname, cols) in tables {
        let def = schema
            .table(tname)
            .ok_or_else(|| bad(format!("table {} is not a synced table", shown(tname))))?;
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
                    shown(cname),
                    cname.len()
                )));
            }
            if cname.contains('\0') {
                return Err(bad(format!(
                    "column name {cname:?} of table {tname:?} contains a NUL character"
                )));
            }
            if def
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(cname))
            {
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

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn reserved_and_colliding_names_are_refused() {
        assert!(check_table_name("tasks", ["projects"]).is_ok());
        for bad in ["sync_clock", "SYNC_CLOCK", "_changes", "_sync_meta", ""] {
            assert!(check_table_name(bad, []).is_err(), "{bad}");
        }
        assert!(check_table_name(&"x".repeat(64), []).is_err());
        assert!(check_table_name(&"x".repeat(63), []).is_ok());
        assert!(check_table_name("Tasks", ["tasks"]).is_err());
        assert!(check_table_name("tasks_synced", ["tasks"]).is_err());
        assert!(check_table_name("tasks", ["tasks_local"]).is_err());
        assert!(check_table_name("tasks_pending", ["TASKS"]).is_err());
        assert!(check_column_name("t", "_sync_x").is_err());
        assert!(check_column_name("t", "title").is_ok());
        let huge = "n".repeat(5_000_000);
        let e = check_table_name(&huge, []).unwrap_err().to_string();
        assert!(e.len() < 300, "{}", e.len());
    }
}
