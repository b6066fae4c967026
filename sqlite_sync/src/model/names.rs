//! Names and limits: the device's own objects, identifier and literal
//! quoting, and names shown in error messages (cut short: input may be
//! hostile).

use serde_json::Value as Json;

/// Most columns a synced table may have (bits of the INTEGER change mask).
pub const MAX_COLUMNS: usize = 63;

/// Names the extension reserves for itself.
pub const META: &str = "_sync_meta";

pub const CHANGES: &str = "_changes";

pub const ERRORS: &str = "_sync_errors";

pub const BASE: &str = "_sync_base";
pub const CONFLICTS: &str = "_sync_conflicts";
/// The device's subscriptions to streams.
pub const SUBSCRIPTIONS: &str = "_sync_subscriptions";
/// Which subscriptions hold which rows.
pub const MEMBERS: &str = "_sync_members";

/// Double-quotes an SQL identifier.
pub fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Single-quotes an SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Largest schema document `sync_init` (or a pull page) may carry, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// Names of columns the device adds to `T_synced`; no synced column may
/// take one.
pub const RESERVED_COLUMNS: [&str; 2] = ["_ver", "_full"];

/// A name for an error message: quoted, and cut short when long (the
/// input may be hostile).
pub fn show(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

/// A JSON value for an error message, cut short when long.
pub fn show_json(v: &Json) -> String {
    sync_core::wire::short_json(v)
}
