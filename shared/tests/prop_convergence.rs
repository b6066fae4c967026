//! Convergence of replicas exchanging row states.
//!
//! Each replica holds, per primary key, a row of `lww` columns (value,
//! stamp), the stamp of the row's latest insert and its delete tombstone
//! stamp. Replicas insert, update and delete with stamps from their own
//! `Clock`s (wall clocks that jump around, backwards included, and run
//! minutes apart), and send the changed row's state to each other in random
//! order, with duplicates and re-deliveries of old states. After a final
//! round of full exchanges all replicas must hold identical state, equal to
//! the greatest write of every column by `lww_cmp`.
//!
//! Every decision goes through the crate: column merges through
//! `merge_column`, deletes through `decide_delete`, and whether a row
//! exists through `decide_write_on_deleted` (an insert newer than the
//! tombstone re-creates the row; `delete_wins` otherwise). Received stamps
//! are folded into the receiver's clock with `Clock::observe`; the stored
//! state keeps the stamps as written (a peer-to-peer join must not rewrite
//! them; clamping is exercised by the client/server model).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};
use sync_core::hlc::{Clock, Hlc, EPOCH_UNIX_MS};
use sync_core::merge::{
    decide_delete, decide_write_on_deleted, lww_cmp, merge_column, Current, DeleteDecision,
    Incoming, Strategy as Merge, WriteOnDeleted,
};
use sync_core::schema::DeletePolicy;

const COLS: usize = 3;
const NOW: u64 = EPOCH_UNIX_MS + 200_000_000_000;

#[derive(Clone, Debug, PartialEq)]
struct Row {
    cols: Vec<(Value, Hlc)>,
    created: Hlc,
    tomb: Hlc,
}

impl Row {
    fn empty() -> Row {
        Row {
            cols: vec![(Value::Null, Hlc::ZERO); COLS],
            created: Hlc::ZERO,
            tomb: Hlc::ZERO,
        }
    }

    fn alive(&self) -> bool {
        self.created != Hlc::ZERO
            && decide_write_on_deleted(DeletePolicy::DeleteWins, true, self.created, self.tomb)
                == WriteOnDeleted::Recreate
    }

    fn newest(&self) -> Hlc {
        self.cols
            .iter()
            .map(|c| c.1)
            .chain([self.created, self.tomb])
            .max()
            .unwrap()
    }
}

/// One column write: a local edit (`base` = the version it overwrote) or a
/// received state (`base` = `Hlc::ZERO`: nothing known about what the
/// sender had seen).
fn write_col(cell: &mut (Value, Hlc), value: &Value, ver: Hlc, base: Hlc) {
    let m = merge_column(
        Merge::Lww,
        Current {
            value: &cell.0,
            ver: cell.1,
        },
        Incoming {
            value,
            ver,
            base_ver: base,
            base_value: None,
        },
    );
    if let Some(w) = m.write {
        *cell = w;
    }
}

struct Replica {
    clock: Clock,
    wall: u64,
    rows: BTreeMap<u8, Row>,
    outbox: Vec<(u8, Row)>,
}

impl Replica {
    fn receive(&mut self, pk: u8, incoming: &Row) {
        for h in incoming
            .cols
            .iter()
            .map(|c| c.1)
            .chain([incoming.created, incoming.tomb])
        {
            if h != Hlc::ZERO {
                self.clock.observe(h, self.wall);
            }
        }
        let row = self.rows.entry(pk).or_insert_with(Row::empty);
        for (cell, (v, h)) in row.cols.iter_mut().zip(&incoming.cols) {
            if *h != Hlc::ZERO {
                write_col(cell, v, *h, Hlc::ZERO);
            }
        }
        row.created = row.created.max(incoming.created);
        row.tomb = row.tomb.max(incoming.tomb);
    }
}

/// Every write ever made, to compute the expected final state.
#[derive(Default)]
struct Log {
    cols: BTreeMap<(u8, usize), Vec<(Value, Hlc)>>,
    created: BTreeMap<u8, Hlc>,
    tomb: BTreeMap<u8, Hlc>,
}

#[derive(Debug, Clone)]
enum Op {
    /// Replica `r` edits row `pk`: an insert if it has no live row, else an
    /// update of `col` (or a delete when `delete`).
    Local {
        r: usize,
        pk: u8,
        col: usize,
        val: i64,
        delete: bool,
        dwall: i64,
    },
    /// Replica `from` sends one of the row states it ever sent (picked by
    /// `msg`) to replica `to`.
    Deliver { from: usize, to: usize, msg: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..5, 0u8..3, 0usize..COLS, 0i64..4, prop::bool::weighted(0.2), -120_000i64..120_000)
            .prop_map(|(r, pk, col, val, delete, dwall)| Op::Local { r, pk, col, val, delete, dwall }),
        4 => (0usize..5, 0usize..5, any::<usize>())
            .prop_map(|(from, to, msg)| Op::Deliver { from, to, msg }),
    ]
}

fn run(n: usize, wall_offsets: &[i64], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut reps: Vec<Replica> = (0..n)
        .map(|i| Replica {
            // Distinct tags for most, a shared tag for replicas 3 and 4 so
            // equal stamps with different values happen.
            clock: Clock::with_tag(if i == 4 { 3 } else { i as u16 }),
            wall: NOW.saturating_add_signed(wall_offsets[i]),
            rows: BTreeMap::new(),
            outbox: Vec::new(),
        })
        .collect();
    let mut log = Log::default();
    for op in ops {
        match *op {
            Op::Local {
                r,
                pk,
                col,
                val,
                delete,
                dwall,
            } => {
                let rep = &mut reps[r % n];
                rep.wall = rep.wall.saturating_add_signed(dwall);
                let row = rep.rows.entry(pk).or_insert_with(Row::empty);
                let floor = row.newest();
                let t = rep.clock.tick_after(rep.wall, floor);
                prop_assert!(t > floor);
                if !row.alive() {
                    // Insert: every column gets a value.
                    prop_assert_eq!(
                        decide_write_on_deleted(DeletePolicy::DeleteWins, true, t, row.tomb),
                        WriteOnDeleted::Recreate
                    );
                    row.created = t;
                    log.created
                        .insert(pk, t.max(log.created.get(&pk).copied().unwrap_or_default()));
                    for (c, cell) in row.cols.iter_mut().enumerate() {
                        let v = json!(val + c as i64);
                        let before = cell.1;
                        write_col(cell, &v, t, before);
                        log.cols.entry((pk, c)).or_default().push(cell.clone());
                    }
                    prop_assert!(row.alive());
                } else if delete {
                    // Locally nothing changed since what the deleter saw.
                    prop_assert_eq!(
                        decide_delete(DeletePolicy::DeleteWins, Vec::new()),
                        DeleteDecision::Delete
                    );
                    row.tomb = t;
                    log.tomb
                        .insert(pk, t.max(log.tomb.get(&pk).copied().unwrap_or_default()));
                    prop_assert!(!row.alive());
                } else {
                    let v = json!(val);
                    let cell = &mut row.cols[col];
                    let before = cell.1;
                    write_col(cell, &v, t, before);
                    prop_assert!(cell.1 > before);
                    prop_assert_eq!(&cell.0, &v);
                    log.cols.entry((pk, col)).or_default().push(cell.clone());
                }
                let snapshot = row.clone();
                rep.outbox.push((pk, snapshot));
            }
            Op::Deliver { from, to, msg } => {
                let (from, to) = (from % n, to % n);
                if from == to || reps[from].outbox.is_empty() {
                    continue;
                }
                let (pk, row) = reps[from].outbox[msg % reps[from].outbox.len()].clone();
                reps[to].receive(pk, &row);
                // Receiving the same state again changes nothing.
                let once = reps[to].rows.clone();
                reps[to].receive(pk, &row);
                prop_assert_eq!(&once, &reps[to].rows);
            }
        }
    }
    // Anti-entropy: everybody sends everything to everybody, twice.
    for _ in 0..2 {
        for from in 0..n {
            let state: Vec<(u8, Row)> = reps[from]
                .rows
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            for (to, rep) in reps.iter_mut().enumerate() {
                if to != from {
                    for (pk, row) in &state {
                        rep.receive(*pk, row);
                    }
                }
            }
        }
    }
    for r in &reps[1..] {
        prop_assert_eq!(&r.rows, &reps[0].rows);
    }
    // Nothing lost: each column holds its greatest write by lww_cmp, and
    // each row's liveness follows its latest insert and delete.
    for (pk, row) in &reps[0].rows {
        for (c, cell) in row.cols.iter().enumerate() {
            let best = log.cols[&(*pk, c)]
                .iter()
                .max_by(|a, b| lww_cmp(a.1, &a.0, b.1, &b.0))
                .unwrap();
            prop_assert_eq!(cell, best);
        }
        prop_assert_eq!(row.created, log.created[pk]);
        prop_assert_eq!(row.tomb, log.tomb.get(pk).copied().unwrap_or_default());
    }
    prop_assert_eq!(reps[0].rows.len(), log.created.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn replicas_converge(
        n in 2usize..=5,
        wall_offsets in prop::collection::vec(-600_000i64..600_000, 5),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(n, &wall_offsets, &ops)?;
    }
}

/// The order of two writes with the same stamp must not matter: the value
/// decides.
#[test]
fn equal_stamps_converge_by_value() {
    let h = Hlc::new(5, 0, 3);
    let (a, b) = (json!("a"), json!("b"));
    let mut x = (Value::Null, Hlc::ZERO);
    let mut y = (Value::Null, Hlc::ZERO);
    write_col(&mut x, &a, h, Hlc::ZERO);
    write_col(&mut x, &b, h, Hlc::ZERO);
    write_col(&mut y, &b, h, Hlc::ZERO);
    write_col(&mut y, &a, h, Hlc::ZERO);
    assert_eq!(x, y);
    assert_eq!(lww_cmp(h, &a, h, &b), Ordering::Less);
    assert_eq!(x.0, b);
}
