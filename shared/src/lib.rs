//! `sync_core`: what `pg_sync` and `sqlite_sync` share so that Postgres and
//! SQLite reconcile identically.
//!
//! - [`wire`]: the versioned JSON documents exchanged by the two sides;
//! - [`schema`]: the synced schema a client is built from;
//! - [`hlc`]: hybrid logical clocks packed into 64 bits;
//! - [`merge`]: the per-column merge rules (the only place they live);
//! - [`cursor`]: the opaque pull cursor the server hands out;
//! - [`decide`]: how a pushed change is decided (the write, the records,
//!   the answer), a pure function the server executes;
//! - [`decimal`]: exact decimal arithmetic for `counter` columns.

pub mod adopt;
pub mod cursor;
pub mod decide;
pub mod decimal;
pub mod hlc;
pub mod merge;
pub mod schema;
pub mod show;
pub mod streams;
pub mod text;
pub mod types;
pub mod wire;

pub use hlc::{Clock, Hlc};

/// The wire format version this crate reads and writes (push batches,
/// push results, schemas; pull pages of format 1).
pub const FORMAT: u32 = 1;

/// The newest pull page format: blocks of rows per table, column names
/// once, rows as arrays (see `wire::page`). A device asks for it through
/// its cursor; pages of format 1 are still read and written.
pub const PAGE_FORMAT: u32 = 2;

/// Checks the `format` field of a pull page (1 or 2).
pub fn check_page_format(found: u32) -> Result<(), SyncError> {
    if (FORMAT..=PAGE_FORMAT).contains(&found) {
        Ok(())
    } else {
        Err(SyncError::UnsupportedPageFormat { found })
    }
}

/// Checks the `format` field of an incoming document.
pub fn check_format(found: u32) -> Result<(), SyncError> {
    if found == FORMAT {
        Ok(())
    } else {
        Err(SyncError::UnsupportedFormat {
            found,
            expected: FORMAT,
        })
    }
}

/// Errors a DBA or app developer can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncError {
    /// The input is not valid JSON or does not have the expected shape.
    #[error("malformed JSON in {0}")]
    MalformedJson(String),
    /// The document was written by an incompatible version.
    #[error("unsupported wire format {found}; this build reads format {expected}")]
    UnsupportedFormat {
        /// Format found in the document.
        found: u32,
        /// Format this build reads.
        expected: u32,
    },
    /// A pull page written in a format this build does not read.
    #[error("unsupported pull page format {found}; this build reads formats 1 and 2")]
    UnsupportedPageFormat {
        /// Format found in the page.
        found: u32,
    },
    /// The document is well-formed but breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// A pull cursor that this server did not produce.
    #[error("invalid cursor: {0}")]
    BadCursor(String),
    /// A table that is not synced.
    #[error("table {0:?} is not synced")]
    UnknownTable(String),
    /// A column that the synced table does not have.
    #[error("table {table:?} has no synced column {column:?}")]
    UnknownColumn {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
    },
}
