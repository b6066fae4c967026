//! Properties of `sync_core::decide::decide`, the push decision the server
//! executes, checked directly on random changes and server states.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sync_core::decide::{decide, Clamp, Column, Found, Stamps, Table, Write};
use sync_core::hlc::Hlc;
use sync_core::merge::Strategy as Merge;
use sync_core::schema::DeletePolicy;
use sync_core::wire::{Change, Op, Status};

const STRATS: [Merge; 6] = [
    Merge::Lww,
    Merge::ServerWins,
    Merge::Manual,
    Merge::TextMerge,
    Merge::SetUnion,
    Merge::Counter,
];

/// A table `t (id pk, c0 .. c5)` whose columns use every strategy; slots
/// leave a gap (a dropped column) so slot != position.
fn table(on_delete: DeletePolicy) -> Table {
    let mut columns = vec![Column {
        name: "id".into(),
        slot: 0,
        strategy: Merge::Lww,
        pk: true,
        fills_null: false,
    }];
    for (i, s) in STRATS.iter().enumerate() {
        columns.push(Column {
            name: format!("c{i}"),
            slot: i + 2,
            strategy: *s,
            pk: false,
            fills_null: i == 0,
        });
    }
    Table {
        name: "t".into(),
        columns,
        on_delete,
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0i64..5).prop_map(Value::from),
        prop::sample::select(vec!["a b", "a c", "x"]).prop_map(Value::from),
        prop::collection::vec(0i64..3, 0..3).prop_map(|v| json!(v)),
    ]
}

fn hlc() -> impl Strategy<Value = Hlc> {
    (1u64..40, 0u64..3).prop_map(|(ms, node)| Hlc::new(1_000 + ms, 0, node as u16))
}

#[derive(Debug, Clone)]
struct Case {
    op: Op,
    cols: BTreeMap<usize, Value>,
    bases: BTreeMap<usize, Hlc>,
    base_values: BTreeMap<usize, Value>,
    ver: BTreeMap<usize, Hlc>,
    stamp: Hlc,
    row: Option<(Vec<Value>, Vec<i64>)>,
    tomb: Option<Hlc>,
    hidden: bool,
    on_delete: DeletePolicy,
    clamped: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![Op::Insert, Op::Update, Op::Delete]),
        prop::collection::btree_map(0usize..6, value(), 0..6),
        prop::collection::btree_map(0usize..6, hlc(), 0..6),
        prop::collection::btree_map(0usize..6, value(), 0..6),
        prop::collection::btree_map(0usize..6, hlc(), 0..6),
        hlc(),
        prop::option::of((
            prop::collection::vec(value(), 6),
            prop::collection::vec(hlc().prop_map(|h| h.as_i64()), 8),
        )),
        prop::option::of(hlc()),
        any::<bool>(),
        prop::sample::select(vec![DeletePolicy::DeleteWins, DeletePolicy::Resurrect]),
        any::<bool>(),
    )
        .prop_map(
            |(op, cols, bases, base_values, ver, stamp, row, tomb, hidden, on_delete, clamped)| {
                Case {
                    op,
                    cols,
                    bases,
                    base_values,
                    ver,
                    stamp,
                    row,
                    tomb,
                    hidden,
                    on_delete,
                    clamped,
                }
            },
        )
}

/// The server row: values and versions by slot.
type ServerRow = (Map<String, Value>, Vec<i64>);

fn build(c: &Case) -> (Table, Change, Option<ServerRow>, Stamps) {
    let name = |i: &usize| format!("c{i}");
    let mut cols: Map<String, Value> = c.cols.iter().map(|(i, v)| (name(i), v.clone())).collect();
    if c.op == Op::Insert {
        cols.insert("id".into(), json!("k"));
    }
    if c.op == Op::Delete {
        cols.clear();
    }
    let change = Change {
        seq: 1,
        table: "t".into(),
        op: c.op,
        pk: [("id".to_string(), json!("k"))].into_iter().collect(),
        cols,
        ver: c.ver.iter().map(|(i, h)| (name(i), *h)).collect(),
        base: c.bases.iter().map(|(i, h)| (name(i), *h)).collect(),
        base_values: c
            .base_values
            .iter()
            .map(|(i, v)| (name(i), v.clone()))
            .collect(),
        hlc: c.stamp,
        resolves: Vec::new(),
    };
    let row = c.row.as_ref().map(|(vals, ver)| {
        let mut m: Map<String, Value> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (name(&i), v.clone()))
            .collect();
        m.insert("id".into(), json!("k"));
        (m, ver.clone())
    });
    let stamps = Stamps {
        change: c.stamp,
        cols: change.ver.clone(),
        clamped: if c.clamped {
            vec![Clamp {
                column: change.ver.keys().next().cloned(),
                original: Hlc::new(9_999_999, 0, 0),
                clamped: c.stamp,
                ahead_ms: 600_000,
            }]
        } else {
            Vec::new()
        },
    };
    (table(c.on_delete), change, row, stamps)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn decisions_keep_their_invariants(c in case()) {
        let (t, change, row, stamps) = build(&c);
        let found = match &row {
            Some((r, v)) => Found::Row { row: r, ver: v },
            None => Found::Gone { tomb: c.tomb, hidden: c.hidden && c.tomb.is_some() },
        };
        let d = decide(&t, &change, found, &stamps);
        // Deterministic.
        prop_assert_eq!(&d, &decide(&t, &change, found, &stamps));
        // A rejected change writes nothing; a conflict keeps a record.
        if d.status == Status::Rejected {
            prop_assert!(d.write.is_none());
        }
        if d.status == Status::Conflict {
            prop_assert!(!d.records.is_empty());
        }
        if !d.records.is_empty() {
            prop_assert!(matches!(d.status, Status::Conflict | Status::Rejected));
        }
        // A clamp that stands is exactly one record.
        let clamps = d.records.iter().filter(|r| r.strategy == "hlc").count();
        prop_assert_eq!(clamps, usize::from(c.clamped && d.status != Status::Rejected));
        // Writes have the table's shape and never move a version back.
        match (&d.write, &row) {
            (Some(Write::Update { values, ver }), Some((_, cur))) => {
                prop_assert!(!values.contains_key("id"));
                for col in &t.columns {
                    let before = cur.get(col.slot).copied().unwrap_or(0);
                    prop_assert!(ver[col.slot] >= before, "{} went back", col.name);
                }
            }
            (Some(Write::Insert { values, ver }), None) => {
                prop_assert_eq!(values.get("id"), Some(&json!("k")));
                prop_assert_eq!(ver.len(), 8);
                for col in &t.columns {
                    prop_assert!(ver[col.slot] > 0);
                }
                // NULL for a NOT NULL column with a default is left out.
                prop_assert!(values.get("c0") != Some(&Value::Null));
            }
            (Some(Write::Delete { hlc }), Some(_)) => prop_assert_eq!(*hlc, c.stamp),
            (None, _) => {}
            (w, r) => prop_assert!(false, "write {:?} against row {:?}", w, r.is_some()),
        }
        // What a missing row meets.
        if row.is_none() {
            match (c.op, c.tomb) {
                (Op::Delete, _) => {
                    let want = if c.clamped { Status::Conflict } else { Status::Applied };
                    prop_assert_eq!(d.status, want);
                    prop_assert!(d.write.is_none());
                }
                (Op::Update, None) => prop_assert_eq!(d.status, Status::Rejected),
                (_, Some(_)) if d.status == Status::Rejected => {
                    let code = if c.hidden { Some("row_not_visible") } else { None };
                    prop_assert_eq!(d.constraint.as_deref(), code);
                    prop_assert_eq!(d.records.len(), 1);
                }
                _ => {}
            }
        }
    }

    /// An edit based on the server's current versions is never a conflict
    /// and writes exactly the values that changed (lww, server_wins and
    /// manual columns: the others merge by their own rules).
    #[test]
    fn an_edit_of_the_current_state_applies_cleanly(
        vals in prop::collection::vec(value(), 6),
        new in prop::collection::btree_map(0usize..3, value(), 1..3),
        vers in prop::collection::vec(hlc(), 8),
        stamp in hlc(),
    ) {
        let t = table(DeletePolicy::DeleteWins);
        let name = |i: &usize| format!("c{i}");
        let ver: Vec<i64> = vers.iter().map(|h| h.as_i64()).collect();
        let mut row: Map<String, Value> =
            vals.iter().enumerate().map(|(i, v)| (name(&i), v.clone())).collect();
        row.insert("id".into(), json!("k"));
        let later = Hlc::new(2_000, 0, 1).max(stamp);
        let change = Change {
            seq: 1,
            table: "t".into(),
            op: Op::Update,
            pk: [("id".to_string(), json!("k"))].into_iter().collect(),
            cols: new.iter().map(|(i, v)| (name(i), v.clone())).collect(),
            ver: BTreeMap::new(),
            base: new.keys().map(|i| (name(i), Hlc::from_i64(ver[i + 2]))).collect(),
            base_values: new.keys().map(|i| (name(i), vals[*i].clone())).collect(),
            hlc: later,
            resolves: Vec::new(),
        };
        let stamps = Stamps { change: later, cols: BTreeMap::new(), clamped: Vec::new() };
        let d = decide(&t, &change, Found::Row { row: &row, ver: &ver }, &stamps);
        prop_assert!(d.records.is_empty(), "{:?}", d.records);
        prop_assert!(matches!(d.status, Status::Applied | Status::Merged));
        let Some(Write::Update { values, ver: after }) = &d.write else {
            return Err(TestCaseError::fail(format!("no update: {d:?}")));
        };
        for (i, v) in &new {
            if vals[*i] != *v {
                prop_assert_eq!(values.get(&name(i)), Some(v));
            }
            prop_assert!(after[i + 2] >= ver[i + 2]);
        }
    }
}
