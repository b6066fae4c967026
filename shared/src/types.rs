//! Logical column types: the one vocabulary of value types the schema,
//! the streams' parameters and both sides' value conversions share.

use serde::{Deserialize, Serialize};

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
