//! Client/server model: clients edit their copy of the server's rows
//! offline, push their coalesced changes (with base versions and, for the
//! merging strategies, base values) to one server in random interleavings,
//! and pull (adopt the server state) at random times. The server decides
//! every column with `merge_column`, every delete with `decide_delete` and
//! every write to a deleted row with `decide_write_on_deleted`, folding each
//! client stamp in with `Clock::observe` (clients' clocks run up to 15
//! minutes off, so far-ahead stamps get clamped).
//!
//! Checked: after everybody pushed and pulled, all clients equal the server;
//! no stored stamp is past the skew bound; versions never go backwards; and
//! nothing a strategy promises is lost:
//! - a conflict is recorded for exactly the writes that were concurrent
//!   (server version newer than the base), changed the value, and were not
//!   cleanly merged (lww, server_wins, manual; text_merge when `merge3`
//!   fails); never for counter and set_union;
//! - server_wins rejects and manual keeps the server value on such writes;
//! - counter: the final value is the initial one plus every pushed delta;
//! - set_union: each element is present iff the last push (in server order)
//!   that added or removed it added it;
//! - deletes: a delete meeting updates made after its base reports exactly
//!   those columns (`delete_wins` deletes, `resurrect` keeps the row); an
//!   update meeting a deleted row is rejected (`delete_wins`) or re-creates
//!   it (`resurrect`); an insert newer than the tombstone re-creates it.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{json, Value};
use sync_core::hlc::{Clock, Hlc, DEFAULT_MAX_SKEW_MS, EPOCH_UNIX_MS};
use sync_core::merge::{
    decide_delete, decide_write_on_deleted, merge_column, Current, DeleteDecision, Incoming,
    Outcome, Strategy as Merge, WriteOnDeleted,
};
use sync_core::schema::DeletePolicy;
use sync_core::text::merge3;

const STRATS: [Merge; 6] = [
    Merge::Lww,
    Merge::ServerWins,
    Merge::Manual,
    Merge::TextMerge,
    Merge::SetUnion,
    Merge::Counter,
];
const NCOLS: usize = STRATS.len();
const NOW: u64 = EPOCH_UNIX_MS + 100_000_000_000;
const PKS: u8 = 3;
const VOCAB: [&str; 6] = ["x", "y", "z", "red", "blue", "green"];

#[derive(Clone, Debug, PartialEq)]
struct SRow {
    cols: Vec<(Value, Hlc)>,
    alive: bool,
    tomb: Hlc,
}

fn initial_row(h: Hlc) -> SRow {
    SRow {
        cols: vec![
            (json!(0), h),
            (json!(0), h),
            (json!(0), h),
            (json!("a b c d e f"), h),
            (json!([0, 1]), h),
            (json!(0), h),
        ],
        alive: true,
        tomb: Hlc::ZERO,
    }
}

#[derive(Clone, Debug)]
enum Pending {
    Update(BTreeSet<usize>),
    Insert,
    Delete(Hlc),
}

struct Client {
    clock: Clock,
    wall: u64,
    snap: BTreeMap<u8, SRow>,
    local: BTreeMap<u8, SRow>,
    pending: BTreeMap<u8, Pending>,
}

struct Server {
    clock: Clock,
    wall: u64,
    rows: BTreeMap<u8, SRow>,
    policy: DeletePolicy,
    counter_deltas: i64,
    /// Per element of pk 0's set: was the last push touching it an add?
    set_events: BTreeMap<u64, bool>,
}

#[derive(Debug, Clone)]
enum Op {
    Edit {
        c: usize,
        pk: u8,
        col: usize,
        kind: u8,
        arg: u8,
        dwall: i64,
    },
    Push {
        c: usize,
    },
    Pull {
        c: usize,
    },
    ServerTime {
        dwall: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..4, 0u8..PKS, 0usize..NCOLS, 0u8..10, any::<u8>(), -60_000i64..60_000)
            .prop_map(|(c, pk, col, kind, arg, dwall)| Op::Edit { c, pk, col, kind, arg, dwall }),
        3 => (0usize..4).prop_map(|c| Op::Push { c }),
        2 => (0usize..4).prop_map(|c| Op::Pull { c }),
        1 => (0u32..120_000).prop_map(|dwall| Op::ServerTime { dwall }),
    ]
}

fn set_of(v: &Value) -> BTreeSet<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// A client's edit of one column value.
fn edit_value(strategy: Merge, cur: &Value, kind: u8, arg: u8) -> Value {
    match strategy {
        Merge::Lww | Merge::ServerWins | Merge::Manual => json!(arg % 4),
        Merge::TextMerge => {
            let mut words: Vec<&str> = cur.as_str().unwrap().split(' ').collect();
            let at = arg as usize % words.len();
            let w = VOCAB[(arg as usize / 7) % VOCAB.len()];
            match kind % 3 {
                0 => words[at] = w,
                1 => words.insert(at, w),
                _ if words.len() > 1 => {
                    words.remove(at);
                }
                _ => words[at] = w,
            }
            json!(words.join(" "))
        }
        Merge::SetUnion => {
            let mut s = set_of(cur);
            let x = u64::from(arg % 6);
            if !s.remove(&x) {
                s.insert(x);
            }
            Value::Array(s.into_iter().map(Value::from).collect())
        }
        Merge::Counter => json!(cur.as_i64().unwrap() + i64::from(arg % 7) - 3),
    }
}

impl Server {
    fn observe(&mut self, h: Hlc) -> Hlc {
        self.clock.observe(h, self.wall).stamp()
    }

    /// Applies one pushed column write and checks what its strategy promises.
    fn apply_col(
        &mut self,
        pk: u8,
        col: usize,
        value: &Value,
        ver: Hlc,
        base: Option<&(Value, Hlc)>,
    ) -> Result<(), TestCaseError> {
        let strategy = STRATS[col];
        let merging = matches!(
            strategy,
            Merge::TextMerge | Merge::SetUnion | Merge::Counter
        );
        let cur = self.rows[&pk].cols[col].clone();
        // An insert has no base: it overwrites whatever the dead row held.
        let base_ver = base.map_or(cur.1, |b| b.1);
        let base_value = base.filter(|_| merging).map(|b| &b.0);
        let m = merge_column(
            strategy,
            Current {
                value: &cur.0,
                ver: cur.1,
            },
            Incoming {
                value,
                ver,
                base_ver,
                base_value,
            },
        );
        let concurrent = cur.1 > base_ver;
        let differs = *value != cur.0;
        let expect_conflict = concurrent
            && differs
            && match strategy {
                Merge::Lww | Merge::ServerWins | Merge::Manual => true,
                Merge::TextMerge => {
                    let b = base_value.unwrap().as_str().unwrap();
                    merge3(b, cur.0.as_str().unwrap(), value.as_str().unwrap()).is_none()
                }
                Merge::SetUnion | Merge::Counter => false,
            };
        prop_assert_eq!(
            m.conflict.is_some(),
            expect_conflict,
            "{:?} cur {:?} incoming {:?} base {:?}: {:?}",
            strategy,
            cur,
            (value, ver),
            base,
            m
        );
        if expect_conflict {
            match strategy {
                Merge::ServerWins => prop_assert_eq!(m.outcome, Outcome::Rejected),
                Merge::Manual => prop_assert_eq!(m.outcome, Outcome::Pending),
                _ => {}
            }
        }
        if !concurrent && differs && !merging {
            prop_assert_eq!(m.outcome, Outcome::Applied);
            prop_assert_eq!(m.write.as_ref().map(|w| &w.0), Some(value));
        }
        if let Some((b, _)) = base.filter(|_| pk == 0) {
            match strategy {
                Merge::Counter => {
                    self.counter_deltas += value.as_i64().unwrap() - b.as_i64().unwrap()
                }
                Merge::SetUnion => {
                    let (bs, ms) = (set_of(b), set_of(value));
                    for x in ms.difference(&bs) {
                        self.set_events.insert(*x, true);
                    }
                    for x in bs.difference(&ms) {
                        self.set_events.insert(*x, false);
                    }
                }
                _ => {}
            }
        }
        if let Some((v, w)) = m.write {
            prop_assert!(w >= cur.1, "version went backwards");
            self.rows.get_mut(&pk).unwrap().cols[col] = (v, w);
        }
        Ok(())
    }

    fn apply(&mut self, pk: u8, change: &Pending, client: &Client) -> Result<(), TestCaseError> {
        let local = &client.local[&pk];
        let snap = &client.snap[&pk];
        match change {
            Pending::Delete(h) => {
                let h = self.observe(*h);
                let row = &self.rows[&pk];
                if !row.alive {
                    return Ok(());
                }
                let changed: Vec<String> = (0..NCOLS)
                    .filter(|&c| row.cols[c].1 > snap.cols[c].1)
                    .map(|c| format!("c{c}"))
                    .collect();
                let keep = match (decide_delete(self.policy, changed.clone()), self.policy) {
                    (DeleteDecision::Delete, _) => {
                        prop_assert!(changed.is_empty());
                        false
                    }
                    (DeleteDecision::DeleteOverUpdates(cols), DeletePolicy::DeleteWins) => {
                        prop_assert_eq!(&cols, &changed);
                        false
                    }
                    (DeleteDecision::KeepRow(cols), DeletePolicy::Resurrect) => {
                        prop_assert_eq!(&cols, &changed);
                        true
                    }
                    (d, p) => {
                        return Err(TestCaseError::fail(format!("{d:?} under {p:?}")));
                    }
                };
                if !keep {
                    let row = self.rows.get_mut(&pk).unwrap();
                    row.alive = false;
                    row.tomb = h;
                }
            }
            Pending::Update(_) | Pending::Insert => {
                let is_insert = matches!(change, Pending::Insert);
                let cols: Vec<usize> = match change {
                    Pending::Update(c) => c.iter().copied().collect(),
                    _ => (0..NCOLS).collect(),
                };
                let vers: Vec<Hlc> = cols
                    .iter()
                    .map(|&c| self.observe(local.cols[c].1))
                    .collect();
                let newest = vers.iter().copied().max().unwrap();
                let row = &self.rows[&pk];
                // An insert meeting a live row (re-inserted by somebody else)
                // is an update of it.
                let mut fresh_insert = false;
                if !row.alive {
                    let d = decide_write_on_deleted(self.policy, is_insert, newest, row.tomb);
                    let expected = match (self.policy, is_insert && newest > row.tomb) {
                        (_, true) | (DeletePolicy::Resurrect, _) => WriteOnDeleted::Recreate,
                        _ => WriteOnDeleted::Reject,
                    };
                    prop_assert_eq!(d, expected);
                    if d == WriteOnDeleted::Reject {
                        return Ok(());
                    }
                    self.rows.get_mut(&pk).unwrap().alive = true;
                    fresh_insert = is_insert;
                }
                for (&c, &ver) in cols.iter().zip(&vers) {
                    let base = if fresh_insert {
                        None
                    } else {
                        Some(&snap.cols[c])
                    };
                    self.apply_col(pk, c, &local.cols[c].0, ver, base)?;
                }
            }
        }
        Ok(())
    }
}

fn push_one(server: &mut Server, client: &mut Client) -> Result<(), TestCaseError> {
    let Some((&pk, _)) = client.pending.iter().next() else {
        return Ok(());
    };
    let change = client.pending.remove(&pk).unwrap();
    server.apply(pk, &change, client)
}

fn pull(server: &Server, client: &mut Client) {
    for row in server.rows.values() {
        for (_, h) in &row.cols {
            client.clock.observe(*h, client.wall);
        }
    }
    client.snap = server.rows.clone();
    client.local = server.rows.clone();
}

fn run(n: usize, policy: DeletePolicy, offsets: &[i64], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut server = Server {
        clock: Clock::new("server"),
        wall: NOW,
        rows: BTreeMap::new(),
        policy,
        counter_deltas: 0,
        set_events: BTreeMap::new(),
    };
    let h0 = server.clock.tick(NOW);
    for pk in 0..PKS {
        server.rows.insert(pk, initial_row(h0));
    }
    let mut clients: Vec<Client> = (0..n)
        .map(|i| {
            let mut c = Client {
                clock: Clock::new(&format!("client-{i}")),
                wall: NOW.saturating_add_signed(offsets[i]),
                snap: BTreeMap::new(),
                local: BTreeMap::new(),
                pending: BTreeMap::new(),
            };
            pull(&server, &mut c);
            c
        })
        .collect();

    for op in ops {
        match *op {
            Op::Edit {
                c,
                pk,
                col,
                kind,
                arg,
                dwall,
            } => {
                let cl = &mut clients[c % n];
                cl.wall = cl.wall.saturating_add_signed(dwall);
                if matches!(cl.pending.get(&pk), Some(Pending::Delete(_))) {
                    continue;
                }
                let row = cl.local.get_mut(&pk).unwrap();
                if !row.alive {
                    // Insert: every column gets a fresh value.
                    let floor = row.cols.iter().map(|c| c.1).max().unwrap().max(row.tomb);
                    let t = cl.clock.tick_after(cl.wall, floor);
                    let fresh = initial_row(t);
                    for (i, cell) in row.cols.iter_mut().enumerate() {
                        *cell = (edit_value(STRATS[i], &fresh.cols[i].0, kind, arg), t);
                    }
                    row.alive = true;
                    cl.pending.insert(pk, Pending::Insert);
                } else if kind == 0 && pk != 0 {
                    let floor = row.cols.iter().map(|c| c.1).max().unwrap();
                    let t = cl.clock.tick_after(cl.wall, floor);
                    row.alive = false;
                    cl.pending.insert(pk, Pending::Delete(t));
                } else {
                    let cell = &mut row.cols[col];
                    let t = cl.clock.tick_after(cl.wall, cell.1);
                    *cell = (edit_value(STRATS[col], &cell.0, kind, arg), t);
                    match cl
                        .pending
                        .entry(pk)
                        .or_insert_with(|| Pending::Update(BTreeSet::new()))
                    {
                        Pending::Update(cols) => {
                            cols.insert(col);
                        }
                        Pending::Insert => {}
                        Pending::Delete(_) => unreachable!(),
                    }
                }
            }
            Op::Push { c } => push_one(&mut server, &mut clients[c % n])?,
            Op::Pull { c } => {
                let cl = &mut clients[c % n];
                if cl.pending.is_empty() {
                    pull(&server, cl);
                }
            }
            Op::ServerTime { dwall } => server.wall += u64::from(dwall),
        }
    }
    for cl in clients.iter_mut() {
        while !cl.pending.is_empty() {
            push_one(&mut server, cl)?;
        }
    }
    for cl in clients.iter_mut() {
        pull(&server, cl);
    }

    for cl in &clients {
        prop_assert_eq!(&cl.local, &server.rows);
        prop_assert_eq!(&cl.snap, &server.rows);
    }
    let bound = server.wall - EPOCH_UNIX_MS + DEFAULT_MAX_SKEW_MS + 1;
    for row in server.rows.values() {
        for (_, h) in &row.cols {
            prop_assert!(h.ms() <= bound, "stamp {:?} past the skew bound", h);
        }
    }
    let row0 = &server.rows[&0];
    prop_assert!(row0.alive);
    prop_assert_eq!(&row0.cols[5].0, &json!(server.counter_deltas));
    let final_set = set_of(&row0.cols[4].0);
    for x in 0..6u64 {
        let expect = server.set_events.get(&x).copied().unwrap_or(x < 2);
        prop_assert_eq!(final_set.contains(&x), expect, "element {}", x);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn clients_converge_on_the_server_and_lose_nothing_promised(
        n in 2usize..=4,
        resurrect in any::<bool>(),
        offsets in prop::collection::vec(-900_000i64..900_000, 4),
        ops in prop::collection::vec(op(), 1..70),
    ) {
        let policy = if resurrect { DeletePolicy::Resurrect } else { DeletePolicy::DeleteWins };
        run(n, policy, &offsets, &ops)?;
    }
}
