//! How a pushed change is decided: a pure function from the change, the
//! row as the server holds it (or its absence, with the newest tombstone)
//! and the table's rules, to the write to make, the conflict records to
//! keep and the answer to give.
//!
//! This is the one home of that decision. `pg_sync` reads the current
//! state, calls [`decide`], and executes the result (set-based, with a
//! one-by-one fallback); the per-column rules it applies are those of
//! [`crate::merge`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::hlc::Hlc;
use crate::merge::{
    self, decide_delete, decide_write_on_deleted, DeleteDecision, Outcome, Strategy, WriteOnDeleted,
};
use crate::schema::DeletePolicy;
use crate::wire::{Change, Op, Row, Status};

/// One synced column as the decision needs it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Index of its version in a row's version vector (attnum - 1).
    pub slot: usize,
    /// Merge strategy.
    pub strategy: Strategy,
    /// Part of the primary key.
    pub pk: bool,
    /// NOT NULL with a default: a NULL written by a device that did not know
    /// the column (typically added later) takes the default.
    pub fills_null: bool,
}

/// A synced table as the decision needs it.
#[derive(Debug, Clone)]
pub struct Table {
    /// Wire name.
    pub name: String,
    /// Synced columns.
    pub columns: Vec<Column>,
    /// What a delete meets.
    pub on_delete: DeletePolicy,
}

impl Table {
    /// Length of a version vector covering every column.
    pub fn width(&self) -> usize {
        self.columns.iter().map(|c| c.slot + 1).max().unwrap_or(0)
    }

    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The server's state of the change's row.
#[derive(Debug, Clone, Copy)]
pub enum Found<'a> {
    /// The row exists and the caller may see it: values by column and
    /// versions by slot.
    Row {
        /// Values.
        row: &'a Row,
        /// Versions by slot (missing slots read as 0).
        ver: &'a [i64],
    },
    /// No row the caller may see.
    Gone {
        /// The newest tombstone of the key the caller may see.
        tomb: Option<Hlc>,
        /// The key exists although the caller cannot see it (asked only
        /// when the caller sees a tombstone: the row left its view).
        hidden: bool,
    },
}

/// The change's stamps after the server clock observed them.
#[derive(Debug, Clone, Default)]
pub struct Stamps {
    /// The change's own stamp.
    pub change: Hlc,
    /// Per-column stamps the change carried.
    pub cols: BTreeMap<String, Hlc>,
    /// Stamps that ran too far ahead and were clamped.
    pub clamped: Vec<Clamp>,
}

/// A client stamp that ran too far ahead of the server and was clamped.
#[derive(Debug, Clone, PartialEq)]
pub struct Clamp {
    /// Its column, or `None` for the change's own stamp.
    pub column: Option<String>,
    /// The stamp the client sent.
    pub original: Hlc,
    /// The stamp used instead.
    pub clamped: Hlc,
    /// How far ahead of the server clock it ran, in ms.
    pub ahead_ms: u64,
}

/// A write the executor makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert the row: `values` (key included) and versions by slot.
    Insert {
        /// Column values.
        values: Row,
        /// Versions by slot.
        ver: Vec<i64>,
    },
    /// Update these columns (key not included) and set the versions.
    Update {
        /// Changed column values.
        values: Row,
        /// The row's versions by slot afterwards.
        ver: Vec<i64>,
    },
    /// Delete the row; its tombstone carries `hlc`.
    Delete {
        /// The delete's stamp.
        hlc: Hlc,
    },
}

/// A conflict record to keep (`pg_sync.conflicts`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// Column, or the columns concerned joined by ", ", or none.
    pub column: Option<String>,
    /// Strategy or rule name.
    pub strategy: String,
    /// What happened.
    pub outcome: String,
    /// Why, for a person.
    pub reason: String,
    /// The server's value.
    pub server_value: Option<Value>,
    /// The client's value.
    pub client_value: Option<Value>,
    /// The server's version.
    pub server_ver: Option<Hlc>,
    /// The client's version.
    pub client_ver: Option<Hlc>,
}

/// The decision for one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The answer's status.
    pub status: Status,
    /// The answer's reason.
    pub reason: Option<String>,
    /// The answer's constraint or rejection code.
    pub constraint: Option<String>,
    /// Records to keep, in order, if the change stands.
    pub records: Vec<Record>,
    /// The write to make, if any; when it fails the change is rejected with
    /// the failure instead, and no record is kept.
    pub write: Option<Write>,
    /// With no write: the answer carries the row as the server holds it.
    pub show_current: bool,
}

impl Decision {
    fn answer(status: Status) -> Decision {
        Decision {
            status,
            reason: None,
            constraint: None,
            records: Vec::new(),
            write: None,
            show_current: false,
        }
    }

    fn rejected(reason: String, constraint: Option<&str>) -> Decision {
        Decision {
            reason: Some(reason),
            constraint: constraint.map(str::to_string),
            ..Decision::answer(Status::Rejected)
        }
    }
}

/// Reason given when a delete on the server wins over a write.
pub const DELETED_REASON: &str =
    "the row was deleted on the server; the delete wins over this update";
/// Reason given when the row left the rows the pushing role may see.
pub const MOVED_OUT_REASON: &str = "the row is no longer among the rows this role may see \
     (row-level security); the change was not applied";
/// Reason given for an update of a row the caller never saw.
pub const MISSING_REASON: &str = "the row does not exist on the server (never synced, hidden \
     by row-level security, or its tombstone was compacted)";
/// Reason given with a `conflict` status when records were kept.
pub const CONCURRENT_REASON: &str = "concurrent changes; see pg_sync.conflicts";

/// Decides one change (already fitted to the table: only known columns).
pub fn decide(t: &Table, c: &Change, found: Found<'_>, stamps: &Stamps) -> Decision {
    let mut d = match (found, c.op) {
        (Found::Gone { .. }, Op::Delete) => Decision::answer(Status::Applied),
        (Found::Gone { tomb, hidden }, op) => write_missing(t, c, op, tomb, hidden, stamps),
        (Found::Row { row, ver }, Op::Delete) => delete(t, c, row, ver, stamps),
        (Found::Row { row, ver }, _) => update(t, c, row, ver, stamps),
    };
    record_clamps(t, &mut d, stamps);
    d
}

fn write_missing(
    t: &Table,
    c: &Change,
    op: Op,
    tomb: Option<Hlc>,
    hidden: bool,
    stamps: &Stamps,
) -> Decision {
    let stamp = stamps.change;
    if let Some(tomb) = tomb {
        if decide_write_on_deleted(t.on_delete, op == Op::Insert, stamp, tomb)
            == WriteOnDeleted::Reject
        {
            if hidden {
                let mut d = Decision::rejected(MOVED_OUT_REASON.into(), Some("row_not_visible"));
                d.records.push(Record {
                    strategy: "visibility".into(),
                    outcome: "moved_out".into(),
                    reason: MOVED_OUT_REASON.into(),
                    client_value: Some(Value::Object(c.cols.clone())),
                    client_ver: Some(stamp),
                    ..Record::default()
                });
                return d;
            }
            let mut d = Decision::rejected(DELETED_REASON.into(), None);
            d.records.push(Record {
                strategy: "delete_wins".into(),
                outcome: "rejected".into(),
                reason: DELETED_REASON.into(),
                client_value: Some(Value::Object(c.cols.clone())),
                server_ver: Some(tomb),
                client_ver: Some(stamp),
                ..Record::default()
            });
            return d;
        }
    } else if op == Op::Update {
        // No tombstone this role may see: it never saw the row, and is not
        // told whether the key exists.
        return Decision::rejected(MISSING_REASON.into(), None);
    }
    let mut ver = vec![0i64; t.width()];
    for col in &t.columns {
        ver[col.slot] = stamps
            .cols
            .get(&col.name)
            .copied()
            .unwrap_or(stamp)
            .as_i64();
    }
    let mut values: Row = c
        .cols
        .iter()
        .filter(|(k, v)| !(v.is_null() && t.column(k).is_some_and(|col| col.fills_null)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &c.pk {
        values.insert(k.clone(), v.clone());
    }
    Decision {
        write: Some(Write::Insert { values, ver }),
        ..Decision::answer(Status::Applied)
    }
}

fn ver_at(ver: &[i64], slot: usize) -> Hlc {
    Hlc::from_i64(ver.get(slot).copied().unwrap_or(0))
}

fn delete(t: &Table, c: &Change, row: &Row, ver: &[i64], stamps: &Stamps) -> Decision {
    let stamp = stamps.change;
    let changed: Vec<String> = t
        .columns
        .iter()
        .filter(|col| {
            c.base
                .get(&col.name)
                .is_some_and(|base| ver_at(ver, col.slot) > *base)
        })
        .map(|col| col.name.clone())
        .collect();
    match decide_delete(t.on_delete, changed) {
        DeleteDecision::KeepRow(cols) => Decision {
            reason: Some("concurrent update kept the row".into()),
            records: vec![Record {
                strategy: "resurrect".into(),
                outcome: "kept_row".into(),
                reason: format!(
                    "the row was updated concurrently ({}); the update wins over this delete",
                    cols.join(", ")
                ),
                server_value: Some(Value::Object(row.clone())),
                client_ver: Some(stamp),
                ..Record::default()
            }],
            show_current: true,
            ..Decision::answer(Status::Conflict)
        },
        DeleteDecision::DeleteOverUpdates(cols) => Decision {
            records: vec![Record {
                strategy: "delete_wins".into(),
                outcome: "deleted".into(),
                reason: format!(
                    "the delete won over concurrent updates of {}",
                    cols.join(", ")
                ),
                server_value: Some(Value::Object(row.clone())),
                client_ver: Some(stamp),
                ..Record::default()
            }],
            write: Some(Write::Delete { hlc: stamp }),
            ..Decision::answer(Status::Conflict)
        },
        DeleteDecision::Delete => Decision {
            write: Some(Write::Delete { hlc: stamp }),
            ..Decision::answer(Status::Applied)
        },
    }
}

fn update(t: &Table, c: &Change, row: &Row, ver: &[i64], stamps: &Stamps) -> Decision {
    let mut new_ver = ver.to_vec();
    if new_ver.len() < t.width() {
        new_ver.resize(t.width(), 0);
    }
    let mut writes: Row = Map::new();
    let mut records = Vec::new();
    let mut merged_any = false;
    let mut ver_changed = false;
    for (name, value) in &c.cols {
        let Some(col) = t.column(name) else {
            continue;
        };
        if col.pk {
            continue;
        }
        let stamp = stamps.cols.get(name).copied().unwrap_or(stamps.change);
        let cur_value = row.get(name).unwrap_or(&Value::Null);
        let cur_ver = ver_at(ver, col.slot);
        let m = merge::merge_column(
            col.strategy,
            merge::Current {
                value: cur_value,
                ver: cur_ver,
            },
            merge::Incoming {
                value,
                ver: stamp,
                base_ver: c.base.get(name).copied().unwrap_or(Hlc::ZERO),
                base_value: c.base_values.get(name),
            },
        );
        if let Some(reason) = &m.conflict {
            let outcome = match m.outcome {
                Outcome::Applied | Outcome::Merged => "client_value_won",
                Outcome::Unchanged => "server_value_kept",
                Outcome::Rejected => "rejected",
                Outcome::Pending => "pending",
            };
            records.push(Record {
                column: Some(name.clone()),
                strategy: col.strategy.name().into(),
                outcome: outcome.into(),
                reason: reason.clone(),
                server_value: Some(cur_value.clone()),
                client_value: Some(value.clone()),
                server_ver: Some(cur_ver),
                client_ver: Some(stamp),
            });
        }
        merged_any |= m.outcome == Outcome::Merged;
        if let Some((v, v_ver)) = m.write {
            if v != *cur_value {
                writes.insert(name.clone(), v);
            }
            new_ver[col.slot] = v_ver.as_i64();
            ver_changed = true;
        }
    }
    let status = if !records.is_empty() {
        Status::Conflict
    } else if merged_any {
        Status::Merged
    } else {
        Status::Applied
    };
    let reason = (!records.is_empty()).then(|| CONCURRENT_REASON.to_string());
    Decision {
        status,
        reason,
        constraint: None,
        records,
        show_current: !ver_changed,
        write: ver_changed.then_some(Write::Update {
            values: writes,
            ver: new_ver,
        }),
    }
}

/// One record for all the clamped stamps of a change that stands, naming
/// the columns concerned; its status becomes `conflict` so the device
/// counts and shows it.
fn record_clamps(t: &Table, d: &mut Decision, stamps: &Stamps) {
    if stamps.clamped.is_empty() || d.status == Status::Rejected {
        return;
    }
    let columns: Vec<&str> = t
        .columns
        .iter()
        .map(|col| col.name.as_str())
        .filter(|name| {
            stamps
                .clamped
                .iter()
                .any(|c| c.column.as_deref() == Some(*name))
        })
        .collect();
    let ahead = stamps.clamped.iter().map(|c| c.ahead_ms).max().unwrap_or(0);
    let original = stamps
        .clamped
        .iter()
        .map(|c| c.original)
        .max()
        .unwrap_or(Hlc::ZERO);
    let clamped = stamps
        .clamped
        .iter()
        .map(|c| c.clamped)
        .max()
        .unwrap_or(Hlc::ZERO);
    let what = if columns.is_empty() {
        "its stamp was clamped".to_string()
    } else {
        format!("the stamps of {} were clamped", columns.join(", "))
    };
    let reason = format!("the client clock ran {ahead} ms ahead of the server; {what}");
    d.records.push(Record {
        column: (!columns.is_empty()).then(|| columns.join(", ")),
        strategy: "hlc".into(),
        outcome: "clamped".into(),
        reason: reason.clone(),
        server_ver: Some(clamped),
        client_ver: Some(original),
        ..Record::default()
    });
    if matches!(d.status, Status::Applied | Status::Merged) {
        d.status = Status::Conflict;
        d.reason = Some(reason);
    }
}
