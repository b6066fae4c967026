//! The schema a client is built from: what `sync_schema()` returns on the
//! server and what `sync_init(schema)` takes on the client.

use serde::{Deserialize, Serialize};

use crate::merge::Strategy;
use crate::wire::FORMAT;

/// Logical column types, mapped faithfully on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// text, varchar, char, uuid, enums: JSON string, SQLite TEXT.
    Text,
    /// int2, int4, int8: JSON number, SQLite INTEGER.
    Integer,
    /// float4, float8: JSON number, SQLite REAL.
    Real,
    /// numeric: JSON number, SQLite NUMERIC.
    Numeric,
    /// boolean: JSON true/false, SQLite INTEGER 0/1.
    Boolean,
    /// timestamptz: ISO 8601 string with offset, SQLite TEXT.
    Timestamptz,
    /// timestamp without time zone: ISO 8601 string, SQLite TEXT.
    Timestamp,
    /// date: ISO 8601 date string, SQLite TEXT.
    Date,
    /// json, jsonb and arrays: any JSON value, SQLite TEXT holding JSON.
    Json,
    /// bytea: `"\\x<hex>"` string on the wire, SQLite BLOB.
    Blob,
}

impl ColumnType {
    /// The SQLite column type used for this logical type.
    pub fn sqlite_type(self) -> &'static str {
        match self {
            ColumnType::Text
            | ColumnType::Timestamptz
            | ColumnType::Timestamp
            | ColumnType::Date
            | ColumnType::Json => "TEXT",
            ColumnType::Integer | ColumnType::Boolean => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Numeric => "NUMERIC",
            ColumnType::Blob => "BLOB",
        }
    }
}

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

/// What happens when a delete meets a concurrent update of the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeletePolicy {
    /// The delete wins; the update is recorded as a conflict.
    #[default]
    DeleteWins,
    /// The update re-creates the deleted row.
    Resurrect,
}

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
}

impl Schema {
    /// An empty schema at version 0.
    pub fn empty() -> Schema {
        Schema {
            format: FORMAT,
            version: 0,
            tables: Vec::new(),
        }
    }

    /// Looks a table up by name.
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.name == name)
    }
}
