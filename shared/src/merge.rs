//! Merge rules: how an incoming column write meets the current value.
//!
//! This is the only place the rules live. `pg_sync` calls [`merge_column`]
//! for every column of every pushed change (through [`crate::decide`]),
//! and [`decide_delete`] / [`decide_write_on_deleted`] for deletes. A
//! device does not merge: it keeps its pending writes on top of the
//! server's row (the rule in [`crate::adopt`]) and pushes them with the
//! bases they were written on, and the server merges them here.
//!
//! Vocabulary: the *current* state is what the merging replica holds (on the
//! server: the row in the table). The *incoming* write carries its value, its
//! stamp, and the *base*: the version (and, for some strategies, the value)
//! of the column the writer had seen when it made the edit. A write is
//! *concurrent* with the current state when the current version is newer
//! than the base: somebody else changed the column meanwhile.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hlc::Hlc;

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

/// Per-column conflict strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Last writer wins by HLC; ties broken by node tag, then by value.
    #[default]
    Lww,
    /// A client write to a column the server changed since the client's
    /// base is rejected.
    ServerWins,
    /// The server value stays and a conflict is recorded for a person.
    Manual,
    /// Three-way merge of concurrent text edits; overlapping edits fall
    /// back to `lww` and are recorded.
    TextMerge,
    /// Add-wins set union for JSON arrays; removes only elements the writer
    /// had seen.
    SetUnion,
    /// Numeric deltas: concurrent increments add up.
    Counter,
}

impl Strategy {
    /// All strategies, for iteration in tests and benchmarks.
    pub const ALL: [Strategy; 6] = [
        Strategy::Lww,
        Strategy::ServerWins,
        Strategy::Manual,
        Strategy::TextMerge,
        Strategy::SetUnion,
        Strategy::Counter,
    ];

    /// The name used in options and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Lww => "lww",
            Strategy::ServerWins => "server_wins",
            Strategy::Manual => "manual",
            Strategy::TextMerge => "text_merge",
            Strategy::SetUnion => "set_union",
            Strategy::Counter => "counter",
        }
    }

    /// Parses a strategy name.
    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A column as the merging replica holds it.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// Current value (JSON null for SQL NULL).
    pub value: &'a Value,
    /// Current version.
    pub ver: Hlc,
}

/// An incoming write of one column.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The written value.
    pub value: &'a Value,
    /// Stamp of the edit.
    pub ver: Hlc,
    /// Version of the column the writer had seen.
    pub base_ver: Hlc,
    /// Value of the column the writer had seen, when sent.
    pub base_value: Option<&'a Value>,
}

/// What happened to one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to write (same value, or an older write that lost cleanly).
    Unchanged,
    /// The incoming value was written.
    Applied,
    /// A merge of both sides was written.
    Merged,
    /// The incoming value was refused (`server_wins`).
    Rejected,
    /// The current value stays and a conflict awaits a person (`manual`).
    Pending,
}

/// The decision for one column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMerge {
    /// What happened.
    pub outcome: Outcome,
    /// The value and version to store, if the column changes.
    pub write: Option<(Value, Hlc)>,
    /// Set when the writes were concurrent and not cleanly merged: the
    /// caller records a conflict with this reason.
    pub conflict: Option<String>,
}

impl ColumnMerge {
    fn unchanged() -> ColumnMerge {
        ColumnMerge {
            outcome: Outcome::Unchanged,
            write: None,
            conflict: None,
        }
    }
    fn applied(value: Value, ver: Hlc, conflict: Option<String>) -> ColumnMerge {
        ColumnMerge {
            outcome: Outcome::Applied,
            write: Some((value, ver)),
            conflict,
        }
    }
}

/// Total order on (stamp, value) used by `lww`: the higher stamp wins; equal
/// stamps (same time, counter and node tag) fall back to comparing the
/// values' JSON text, so every replica picks the same winner.
pub fn lww_cmp(a_ver: Hlc, a: &Value, b_ver: Hlc, b: &Value) -> Ordering {
    a_ver
        .cmp(&b_ver)
        .then_with(|| a.to_string().cmp(&b.to_string()))
}

/// The version stored for a write that must supersede `current`: the
/// incoming stamp when it is newer, else the next stamp after `current`
/// (a causally later edit from a client whose clock runs behind).
pub fn superseding_ver(current: Hlc, incoming: Hlc) -> Hlc {
    if incoming > current {
        incoming
    } else {
        current.next_with_tag(incoming.tag())
    }
}

/// Merges one incoming column write into the current state.
pub fn merge_column(
    strategy: Strategy,
    current: Current<'_>,
    incoming: Incoming<'_>,
) -> ColumnMerge {
    let concurrent = current.ver > incoming.base_ver;
    // A counter write carries a delta (`value - base_value`), so an incoming
    // value equal to the current one may still have to be added (two
    // clients both incrementing 10 to 11 must give 12).
    let delta_write = strategy == Strategy::Counter && incoming.base_value.is_some();
    if incoming.value == current.value && !delta_write {
        // Same value: nothing to write, nothing lost. Keep the newer stamp.
        return if incoming.ver > current.ver {
            ColumnMerge {
                outcome: Outcome::Unchanged,
                write: Some((current.value.clone(), incoming.ver)),
                conflict: None,
            }
        } else {
            ColumnMerge::unchanged()
        };
    }
    if !concurrent {
        // The writer saw the current value: its edit is causally later.
        return match (strategy, incoming.base_value) {
            (Strategy::Counter, Some(_)) | (Strategy::SetUnion, Some(_)) => {
                merge_against_base(strategy, current, incoming, false)
            }
            _ => ColumnMerge::applied(
                incoming.value.clone(),
                superseding_ver(current.ver, incoming.ver),
                None,
            ),
        };
    }
    match strategy {
        Strategy::Lww => lww(current, incoming, "concurrent edits; last writer wins"),
        Strategy::ServerWins => ColumnMerge {
            outcome: Outcome::Rejected,
            write: None,
            conflict: Some(
                "the server changed this column after the client's base version (server_wins)"
                    .into(),
            ),
        },
        Strategy::Manual => ColumnMerge {
            outcome: Outcome::Pending,
            write: None,
            conflict: Some("concurrent edits; resolve manually".into()),
        },
        Strategy::TextMerge | Strategy::SetUnion | Strategy::Counter => {
            merge_against_base(strategy, current, incoming, true)
        }
    }
}

fn lww(current: Current<'_>, incoming: Incoming<'_>, reason: &str) -> ColumnMerge {
    let incoming_wins =
        lww_cmp(incoming.ver, incoming.value, current.ver, current.value) == Ordering::Greater;
    if incoming_wins {
        ColumnMerge::applied(
            incoming.value.clone(),
            incoming.ver,
            Some(format!("{reason}: the incoming value won")),
        )
    } else {
        ColumnMerge {
            outcome: Outcome::Unchanged,
            write: None,
            conflict: Some(format!("{reason}: the current value won")),
        }
    }
}

fn merge_against_base(
    strategy: Strategy,
    current: Current<'_>,
    incoming: Incoming<'_>,
    concurrent: bool,
) -> ColumnMerge {
    let Some(base) = incoming.base_value else {
        return lww(current, incoming, "no base value sent; fell back to lww");
    };
    let merged = match strategy {
        Strategy::TextMerge => text_merge(base, current.value, incoming.value),
        Strategy::SetUnion => set_union(base, current.value, incoming.value),
        Strategy::Counter => counter(base, current.value, incoming.value),
        _ => None,
    };
    let ver = superseding_ver(current.ver, incoming.ver);
    match merged {
        Some(value) if value == *current.value => ColumnMerge::unchanged(),
        Some(value) => ColumnMerge {
            outcome: if concurrent {
                Outcome::Merged
            } else {
                Outcome::Applied
            },
            write: Some((value, ver)),
            conflict: None,
        },
        None => lww(
            current,
            incoming,
            &format!("{} could not merge; fell back to lww", strategy.name()),
        ),
    }
}

/// Three-way merge of text: applies both sides' edits of `base` when they
/// touch different parts; `None` when they overlap or a value is not text.
pub fn text_merge(base: &Value, theirs: &Value, mine: &Value) -> Option<Value> {
    let (Value::String(b), Value::String(t), Value::String(m)) = (base, theirs, mine) else {
        return None;
    };
    crate::text::merge3(b, t, m).map(Value::String)
}

/// Set union of JSON arrays: `theirs` plus what `mine` added to `base`,
/// minus what `mine` removed from `base`. `None` unless all are arrays
/// (null counts as empty).
pub fn set_union(base: &Value, theirs: &Value, mine: &Value) -> Option<Value> {
    let as_arr = |v: &Value| -> Option<Vec<Value>> {
        match v {
            Value::Array(a) => Some(a.clone()),
            Value::Null => Some(Vec::new()),
            _ => None,
        }
    };
    let (base, theirs, mine) = (as_arr(base)?, as_arr(theirs)?, as_arr(mine)?);
    let mut out: Vec<Value> = Vec::with_capacity(theirs.len() + mine.len());
    for v in theirs {
        let removed = base.contains(&v) && !mine.contains(&v);
        if !removed && !out.contains(&v) {
            out.push(v);
        }
    }
    for v in mine {
        if !base.contains(&v) && !out.contains(&v) {
            out.push(v);
        }
    }
    Some(Value::Array(out))
}

/// Counter merge: `theirs + (mine - base)`; null counts as 0; `None` when
/// a value is not a number.
///
/// - When all three are integers that fit `i64`/`u64`, the sum is computed
///   in 128 bits and stays an integer; `None` when it fits neither `i64`
///   nor `u64` (an integer column could not hold it).
/// - Otherwise (a fraction, an exponent, or an integer beyond 64 bits) the
///   sum is computed exactly on the numbers' literal text
///   ([`crate::decimal`]), never in floating point, and written as a plain
///   decimal literal with the largest scale of the three (`1.10 + (0.5 - 0)`
///   is `1.60`, `1e2` is `100`). `None` when a value or the sum has more
///   than [`crate::decimal::MAX_INTEGER_DIGITS`] digits before the point or
///   [`crate::decimal::MAX_SCALE`] after it.
pub fn counter(base: &Value, theirs: &Value, mine: &Value) -> Option<Value> {
    let num = |v: &Value| -> Option<serde_json::Number> {
        match v {
            Value::Null => Some(0.into()),
            Value::Number(n) => Some(n.clone()),
            _ => None,
        }
    };
    let int = |n: &serde_json::Number| -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    let (b, t, m) = (num(base)?, num(theirs)?, num(mine)?);
    if let (Some(b), Some(t), Some(m)) = (int(&b), int(&t), int(&m)) {
        let sum = t + (m - b);
        return if let Ok(v) = i64::try_from(sum) {
            Some(Value::from(v))
        } else {
            u64::try_from(sum).ok().map(Value::from)
        };
    }
    // `Number`'s text is its exact literal (serde_json's
    // `arbitrary_precision`).
    let sum = crate::decimal::counter_sum(&b.to_string(), &t.to_string(), &m.to_string())?;
    sum.parse::<serde_json::Number>().ok().map(Value::Number)
}

/// The decision for a delete of a row that still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteDecision {
    /// Delete; nobody changed the row since the deleter's base.
    Delete,
    /// Delete, and record the concurrent updates of these columns as lost
    /// to the delete (`delete_wins`).
    DeleteOverUpdates(Vec<String>),
    /// Keep the row: it was updated concurrently (`resurrect`). The delete
    /// is recorded as a conflict.
    KeepRow(Vec<String>),
}

/// Decides a delete given the columns changed since the deleter's base.
pub fn decide_delete(policy: DeletePolicy, changed_since_base: Vec<String>) -> DeleteDecision {
    if changed_since_base.is_empty() {
        return DeleteDecision::Delete;
    }
    match policy {
        DeletePolicy::DeleteWins => DeleteDecision::DeleteOverUpdates(changed_since_base),
        DeletePolicy::Resurrect => DeleteDecision::KeepRow(changed_since_base),
    }
}

/// The decision for an update of a row that was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOnDeleted {
    /// Refuse the update and record it as a conflict (`delete_wins`).
    Reject,
    /// Re-create the row with the written values (`resurrect`).
    Recreate,
}

/// Decides an update that meets a deleted row. An insert of a key whose
/// tombstone is older than the insert is a new row, not a conflict.
pub fn decide_write_on_deleted(
    policy: DeletePolicy,
    is_insert: bool,
    write: Hlc,
    tombstone: Hlc,
) -> WriteOnDeleted {
    if is_insert && write > tombstone {
        return WriteOnDeleted::Recreate;
    }
    match policy {
        DeletePolicy::DeleteWins => WriteOnDeleted::Reject,
        DeletePolicy::Resurrect => WriteOnDeleted::Recreate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn h(ms: u64, tag: u16) -> Hlc {
        Hlc::new(ms, 0, tag)
    }

    #[test]
    fn lww_newer_incoming_wins_and_records_conflict() {
        let cur = json!("server");
        let inc = json!("client");
        let m = merge_column(
            Strategy::Lww,
            Current {
                value: &cur,
                ver: h(20, 1),
            },
            Incoming {
                value: &inc,
                ver: h(30, 2),
                base_ver: h(10, 1),
                base_value: None,
            },
        );
        assert_eq!(m.outcome, Outcome::Applied);
        assert_eq!(m.write, Some((inc.clone(), h(30, 2))));
        assert!(m.conflict.is_some());
    }

    #[test]
    fn non_concurrent_write_applies_cleanly_even_with_slow_clock() {
        let cur = json!(1);
        let inc = json!(2);
        let m = merge_column(
            Strategy::ServerWins,
            Current {
                value: &cur,
                ver: h(50, 1),
            },
            Incoming {
                value: &inc,
                ver: h(10, 2),
                base_ver: h(50, 1),
                base_value: None,
            },
        );
        assert_eq!(m.outcome, Outcome::Applied);
        let (_, ver) = m.write.unwrap();
        assert!(ver > h(50, 1));
        assert!(m.conflict.is_none());
    }

    #[test]
    fn server_wins_rejects_concurrent() {
        let (cur, inc) = (json!(1), json!(2));
        let m = merge_column(
            Strategy::ServerWins,
            Current {
                value: &cur,
                ver: h(50, 1),
            },
            Incoming {
                value: &inc,
                ver: h(60, 2),
                base_ver: h(40, 1),
                base_value: None,
            },
        );
        assert_eq!(m.outcome, Outcome::Rejected);
        assert!(m.write.is_none());
    }

    #[test]
    fn counter_adds_deltas() {
        assert_eq!(counter(&json!(10), &json!(15), &json!(13)), Some(json!(18)));
    }

    fn num(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn counter_is_exact_on_decimals() {
        let c =
            |b: &str, t: &str, m: &str| counter(&num(b), &num(t), &num(m)).map(|v| v.to_string());
        assert_eq!(c("0", "1.10", "0.5").as_deref(), Some("1.60"));
        assert_eq!(c("0.1", "0.2", "0.3").as_deref(), Some("0.4"));
        assert_eq!(c("1e2", "1", "1E+2").as_deref(), Some("1"));
        assert_eq!(c("null", "1.5e-3", "1").as_deref(), Some("1.0015"));
        // Beyond f64's 53 bits.
        assert_eq!(
            c("0", "9007199254740993", "0.5").as_deref(),
            Some("9007199254740993.5")
        );
        assert_eq!(
            c("1", "123456789012345678901234567890", "2").as_deref(),
            Some("123456789012345678901234567891")
        );
        // Integers keep 64-bit results.
        assert_eq!(c("0", "18446744073709551615", "1"), None);
        assert_eq!(
            c("0", "9223372036854775807", "1").as_deref(),
            Some("9223372036854775808")
        );
        // Hostile sizes are refused, not computed.
        assert_eq!(c("0", "1e1000000", "1"), None);
        assert_eq!(c("0", "1e-1000000", "1"), None);
        assert_eq!(counter(&json!(0), &json!("1"), &json!(1)), None);
    }

    #[test]
    fn set_union_is_add_wins() {
        let r = set_union(
            &json!(["a", "b"]),
            &json!(["a", "b", "c"]),
            &json!(["b", "d"]),
        );
        assert_eq!(r, Some(json!(["b", "c", "d"])));
    }

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.name()), Some(s));
        }
    }
}
