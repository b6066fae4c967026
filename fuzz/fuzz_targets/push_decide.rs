//! The push decision, `sync_core::decide::decide`: any table rules (column
//! strategies, key columns, version slots, delete policy), any pushed change
//! (insert, update, delete; values, bases, base values), any server state
//! (the row with any versions, or no row with or without a tombstone,
//! hidden or not) and any stamps (clamped or not). Invariants: no panic;
//! deterministic; `conflict` only with conflict records, records only with
//! `conflict` or `rejected`; a rejection writes nothing; a delete is only
//! written for a delete of an existing row, an insert only where no row is,
//! an update only over an existing row; an update writes only non-key
//! columns the change carried and never moves a version backwards; with no
//! write over an existing row the answer shows the current row.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sync_core::decide::{decide, Clamp, Column, Found, Stamps, Table, Write};
use sync_core::hlc::Hlc;
use sync_core::merge::Strategy;
use sync_core::schema::DeletePolicy;
use sync_core::wire::{Change, Op, Status};
use sync_core_fuzz::{column_value, hlc};

const NAMES: [&str; 6] = ["id", "title", "n", "tags", "done", "note"];

#[derive(Debug)]
enum State {
    Row {
        row: Map<String, Value>,
        ver: Vec<i64>,
    },
    Gone {
        tomb: Option<Hlc>,
        hidden: bool,
    },
}

#[derive(Debug)]
struct Input {
    table: Table,
    change: Change,
    state: State,
    stamps: Stamps,
}

/// A subset of the table's column names.
fn names<'a>(u: &mut Unstructured, t: &'a Table) -> Result<Vec<&'a str>> {
    let mut out = Vec::new();
    for c in &t.columns {
        if u.arbitrary()? {
            out.push(c.name.as_str());
        }
    }
    Ok(out)
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n = u.int_in_range(1..=NAMES.len())?;
        let mut slots: Vec<usize> = (0..8).collect();
        let mut columns = Vec::with_capacity(n);
        for (i, name) in NAMES.iter().take(n).enumerate() {
            let slot = slots.remove(u.choose_index(slots.len())?);
            columns.push(Column {
                name: name.to_string(),
                slot,
                strategy: *u.choose(&Strategy::ALL)?,
                pk: i == 0 || u.ratio(1, 8)?,
                fills_null: u.ratio(1, 4)?,
            });
        }
        let table = Table {
            name: "tasks".into(),
            columns,
            on_delete: if u.arbitrary()? {
                DeletePolicy::Resurrect
            } else {
                DeletePolicy::DeleteWins
            },
        };

        let op = *u.choose(&[Op::Insert, Op::Update, Op::Delete])?;
        let mut pk = Map::new();
        for c in table.columns.iter().filter(|c| c.pk) {
            pk.insert(c.name.clone(), column_value(u)?);
        }
        let mut cols = Map::new();
        let mut ver = std::collections::BTreeMap::new();
        if op != Op::Delete {
            for name in names(u, &table)? {
                cols.insert(name.to_string(), column_value(u)?);
                ver.insert(name.to_string(), hlc(u)?);
            }
        }
        let mut base = std::collections::BTreeMap::new();
        for name in names(u, &table)? {
            base.insert(name.to_string(), hlc(u)?);
        }
        let mut base_values = Map::new();
        for name in names(u, &table)? {
            base_values.insert(name.to_string(), column_value(u)?);
        }
        let change = Change {
            seq: 1,
            table: table.name.clone(),
            op,
            pk,
            cols,
            ver,
            base,
            base_values,
            hlc: hlc(u)?,
            resolves: Vec::new(),
        };

        let state = if u.arbitrary()? {
            let mut row = Map::new();
            for name in names(u, &table)? {
                row.insert(name.to_string(), column_value(u)?);
            }
            let len = u.int_in_range(0..=10)?;
            let mut ver = Vec::with_capacity(len);
            for _ in 0..len {
                ver.push(hlc(u)?.as_i64());
            }
            State::Row { row, ver }
        } else {
            State::Gone {
                tomb: if u.arbitrary()? { Some(hlc(u)?) } else { None },
                hidden: u.arbitrary()?,
            }
        };

        let mut stamps = Stamps {
            change: hlc(u)?,
            ..Stamps::default()
        };
        for name in names(u, &table)? {
            stamps.cols.insert(name.to_string(), hlc(u)?);
        }
        for _ in 0..u.int_in_range(0..=2)? {
            let column = if u.arbitrary()? {
                Some(u.choose(&NAMES)?.to_string())
            } else {
                None
            };
            stamps.clamped.push(Clamp {
                column,
                original: hlc(u)?,
                clamped: hlc(u)?,
                ahead_ms: u.arbitrary()?,
            });
        }
        Ok(Input {
            table,
            change,
            state,
            stamps,
        })
    }
}

fuzz_target!(|i: Input| {
    let found = match &i.state {
        State::Row { row, ver } => Found::Row { row, ver },
        State::Gone { tomb, hidden } => Found::Gone {
            tomb: *tomb,
            hidden: *hidden,
        },
    };
    let (t, c) = (&i.table, &i.change);
    let d = decide(t, c, found, &i.stamps);
    assert_eq!(d, decide(t, c, found, &i.stamps), "not deterministic");

    if d.status == Status::Conflict {
        assert!(!d.records.is_empty(), "{d:?}");
    }
    if !d.records.is_empty() {
        assert!(
            matches!(d.status, Status::Conflict | Status::Rejected),
            "{d:?}"
        );
    }
    if d.status == Status::Rejected {
        assert!(d.write.is_none(), "{d:?}");
    }
    match (&d.write, &i.state) {
        (None, _) => {}
        (Some(Write::Delete { hlc }), State::Row { .. }) => {
            assert_eq!(c.op, Op::Delete);
            assert_eq!(*hlc, i.stamps.change);
        }
        (Some(Write::Insert { values, ver }), State::Gone { .. }) => {
            assert_ne!(c.op, Op::Delete);
            assert_eq!(ver.len(), t.width());
            for k in c.pk.keys() {
                assert!(values.contains_key(k), "insert without its key {k}");
            }
        }
        (Some(Write::Update { values, ver }), State::Row { ver: old, .. }) => {
            assert_ne!(c.op, Op::Delete);
            assert_eq!(ver.len(), t.width().max(old.len()));
            for (slot, v) in ver.iter().enumerate() {
                let before = Hlc::from_i64(old.get(slot).copied().unwrap_or(0));
                assert!(Hlc::from_i64(*v) >= before, "slot {slot} went backwards");
            }
            for k in values.keys() {
                let col = t.columns.iter().find(|col| &col.name == k);
                assert!(col.is_some_and(|col| !col.pk), "wrote {k}");
                assert!(c.cols.contains_key(k), "wrote {k}, not in the change");
            }
        }
        (Some(w), s) => panic!("write {w:?} over {s:?}"),
    }
    if matches!(i.state, State::Row { .. }) && c.op != Op::Delete {
        assert_eq!(d.show_current, d.write.is_none(), "{d:?}");
    }
});
