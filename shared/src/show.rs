//! Values shown in error messages.

use serde_json::Value;

/// A JSON value for an error message, cut short when long.
pub fn short_json(v: &Value) -> String {
    const MAX: usize = 200;
    let s = v.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
