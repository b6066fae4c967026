//! Randomized test: random local writes, pushes with random verdicts and
//! pulls of random server writes; after every step the client's table must
//! equal a model computed independently (server state as the client knows
//! it, with the client's unconfirmed writes laid over it column by column).
//!
//! Needs the built extension: `cargo build --manifest-path sqlite_sync/Cargo.toml` first.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::types::Value as Sql;
use serde_json::{json, Map, Value};
use sync_tests::sqlite::{tasks_schema_mode, FakeServer, TestClient, Verdict, TASK_COLS};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// A random value for column `i`: (wire JSON, SQLite value).
fn random_value(rng: &mut Rng, i: usize) -> (Value, Sql) {
    if i > 0 && rng.chance(10) {
        return (Value::Null, Sql::Null);
    }
    match TASK_COLS[i].1 {
        "text" => {
            let s = ["a", "b", "it's", "Ünï ✓", "x\"y", "longer text here"][rng.below(6) as usize];
            (json!(s), Sql::Text(s.into()))
        }
        "boolean" => {
            let b = rng.chance(50);
            (json!(b), Sql::Integer(i64::from(b)))
        }
        "integer" => {
            let n = rng.below(20) as i64 - 5;
            (json!(n), Sql::Integer(n))
        }
        "real" => {
            let f = rng.below(16) as f64 * 0.25 - 1.0;
            (json!(f), Sql::Real(f))
        }
        "timestamptz" => {
            let s = format!("2026-01-0{}T10:00:00+00:00", 1 + rng.below(9));
            (json!(s), Sql::Text(s))
        }
        "json" => {
            let v = if TASK_COLS[i].0 == "tags" {
                let all = ["a", "b", "c", "d"];
                let pick: Vec<&str> = all.iter().copied().filter(|_| rng.chance(40)).collect();
                json!(pick)
            } else {
                json!({"k": rng.below(5), "n": [1, rng.below(3)]})
            };
            let text = serde_json::to_string(&v).unwrap();
            (v, Sql::Text(text))
        }
        "blob" => {
            let b: Vec<u8> = (0..rng.below(4)).map(|_| rng.below(256) as u8).collect();
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            (json!(format!("\\x{hex}")), Sql::Blob(b))
        }
        other => panic!("type {other}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Map<String, Value>),
    Update(Map<String, Value>),
    Delete,
}

#[derive(Debug, Clone)]
struct Pend {
    op: Op,
    in_flight: bool,
}

#[derive(Default)]
struct Model {
    /// Server rows as the client last received them.
    synced: BTreeMap<String, Map<String, Value>>,
    /// The last server row received, kept after a server delete.
    last_seen: BTreeMap<String, Map<String, Value>>,
    /// Unconfirmed local writes per row.
    pending: BTreeMap<String, Vec<Pend>>,
}

fn net_nothing(ops: &[Pend]) -> bool {
    let unsent: Vec<&Pend> = ops.iter().filter(|p| !p.in_flight).collect();
    !ops.iter().any(|p| p.in_flight)
        && matches!(unsent.first().map(|p| &p.op), Some(Op::Insert(_)))
        && matches!(unsent.last().map(|p| &p.op), Some(Op::Delete))
}

impl Model {
    fn row(&self, id: &str) -> Option<Map<String, Value>> {
        let Some(ops) = self.pending.get(id).filter(|o| !o.is_empty()) else {
            return self.synced.get(id).cloned();
        };
        let base = self
            .synced
            .get(id)
            .or_else(|| self.last_seen.get(id))
            .cloned();
        let mut exists = base.is_some();
        let mut written: Map<String, Value> = Map::new();
        for p in ops {
            match &p.op {
                Op::Insert(r) => {
                    exists = true;
                    written = r.clone();
                }
                Op::Update(cols) => {
                    for (k, v) in cols {
                        written.insert(k.clone(), v.clone());
                    }
                }
                Op::Delete => {
                    exists = false;
                    written = Map::new();
                }
            }
        }
        if !exists {
            return None;
        }
        let mut row = base.unwrap_or_default();
        for (k, v) in written {
            row.insert(k, v);
        }
        Some(row)
    }

    fn visible(&self) -> BTreeMap<String, Value> {
        let keys: BTreeSet<&String> = self.synced.keys().chain(self.pending.keys()).collect();
        keys.into_iter()
            .filter_map(|k| self.row(k).map(|r| (k.clone(), Value::Object(r))))
            .collect()
    }

    fn pending_count(&self) -> usize {
        self.pending
            .values()
            .filter(|ops| !ops.is_empty() && !net_nothing(ops))
            .count()
    }

    fn purge_nothing(&mut self) {
        self.pending
            .retain(|_, ops| !ops.is_empty() && !net_nothing(ops));
    }

    fn server_row(&mut self, id: &str, row: Option<Map<String, Value>>) {
        match row {
            Some(r) => {
                self.synced.insert(id.to_string(), r.clone());
                self.last_seen.insert(id.to_string(), r);
            }
            None => {
                self.synced.remove(id);
            }
        }
    }
}

struct World {
    rng: Rng,
    c: TestClient,
    s: FakeServer,
    m: Model,
    next_id: u64,
    step: usize,
    seed: u64,
    /// The table the app writes: `tasks`, or `tasks_pending` in confirmed
    /// mode (where `tasks` shows only server-accepted state).
    table: &'static str,
    confirmed: bool,
}

impl World {
    fn check(&self, what: &str) {
        if self.confirmed {
            let accepted: BTreeMap<String, Value> = self
                .m
                .synced
                .iter()
                .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
                .collect();
            assert_eq!(
                self.c.tasks("tasks"),
                accepted,
                "seed {} step {} after {what}: the confirmed view shows server state",
                self.seed,
                self.step
            );
        }
        let got = self.c.tasks(self.table);
        let want = self.m.visible();
        assert_eq!(
            got, want,
            "seed {} step {} after {what}: client table differs from the model",
            self.seed, self.step
        );
        // A saved server copy exists only for rows with unconfirmed writes.
        for r in self.c.rows("SELECT id FROM tasks_synced WHERE _full = 1") {
            let id = r[0].as_str().unwrap();
            assert!(
                self.m.pending.get(id).is_some_and(|o| !o.is_empty()),
                "seed {} step {} after {what}: {id} has a saved copy but nothing pending",
                self.seed,
                self.step
            );
        }
        // Recorded bases exist only for rows with unconfirmed writes.
        for r in self.c.rows("SELECT DISTINCT key FROM _sync_base") {
            let key: Vec<String> = serde_json::from_str(r[0].as_str().unwrap()).unwrap();
            let id = &key[0][1..];
            assert!(
                self.m.pending.get(id).is_some_and(|o| !o.is_empty()),
                "seed {} step {} after {what}: {id} has a recorded base but nothing pending",
                self.seed,
                self.step
            );
        }
        let st = self.c.status();
        assert_eq!(
            st["pending"].as_u64().unwrap() as usize,
            self.m.pending_count(),
            "seed {} step {} after {what}: pending count",
            self.seed,
            self.step
        );
    }

    fn visible_ids(&self) -> Vec<String> {
        self.m.visible().into_keys().collect()
    }

    fn local_insert(&mut self) {
        let id = if self.rng.chance(20) && !self.visible_ids().is_empty() {
            let ids = self.visible_ids();
            ids[self.rng.below(ids.len() as u64) as usize].clone()
        } else if self.rng.chance(30) && !self.s.rows.is_empty() {
            // A key the server has (maybe not pulled yet, maybe deleted here).
            let ids: Vec<String> = self.s.rows.keys().cloned().collect();
            ids[self.rng.below(ids.len() as u64) as usize].clone()
        } else {
            self.next_id += 1;
            format!("c{}", self.next_id)
        };
        let mut row = Map::new();
        let mut params: Vec<Sql> = Vec::new();
        for (i, (name, _)) in TASK_COLS.iter().enumerate() {
            let (w, sql) = if i == 0 {
                (json!(id), Sql::Text(id.clone()))
            } else {
                random_value(&mut self.rng, i)
            };
            row.insert(name.to_string(), w);
            params.push(sql);
        }
        let cols: Vec<&str> = TASK_COLS.iter().map(|c| c.0).collect();
        // In confirmed mode, write through the view half of the time.
        let target = if self.confirmed && self.rng.chance(50) {
            "tasks"
        } else {
            self.table
        };
        let sql = format!(
            "INSERT INTO {target} ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            cols.join(", ")
        );
        let r = self.c.db.execute(&sql, rusqlite::params_from_iter(params));
        if self.m.row(&id).is_some() {
            let e = r.expect_err("duplicate key must fail").to_string();
            assert!(e.contains("UNIQUE"), "{e}");
        } else {
            r.unwrap_or_else(|e| panic!("insert {id}: {e}"));
            self.m.pending.entry(id).or_default().push(Pend {
                op: Op::Insert(row),
                in_flight: false,
            });
        }
    }

    fn local_update(&mut self) {
        let ids = self.visible_ids();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.rng.below(ids.len() as u64) as usize].clone();
        let cur = self.m.row(&id).unwrap();
        let mut sets = Vec::new();
        let mut params: Vec<Sql> = Vec::new();
        let mut changed = Map::new();
        for (i, (name, _)) in TASK_COLS.iter().enumerate().skip(1) {
            if !self.rng.chance(35) {
                continue;
            }
            let (w, sql) = random_value(&mut self.rng, i);
            sets.push(format!("{name} = ?{}", params.len() + 1));
            params.push(sql);
            if cur.get(*name) != Some(&w) {
                changed.insert(name.to_string(), w);
            }
        }
        if sets.is_empty() {
            return;
        }
        params.push(Sql::Text(id.clone()));
        let sql = format!(
            "UPDATE {} SET {} WHERE id = ?{}",
            self.table,
            sets.join(", "),
            params.len()
        );
        self.c
            .db
            .execute(&sql, rusqlite::params_from_iter(params))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        if !changed.is_empty() {
            self.m.pending.entry(id).or_default().push(Pend {
                op: Op::Update(changed),
                in_flight: false,
            });
        }
    }

    fn local_delete(&mut self) {
        let ids = self.visible_ids();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.rng.below(ids.len() as u64) as usize].clone();
        self.c
            .db
            .execute(&format!("DELETE FROM {} WHERE id = ?1", self.table), [&id])
            .unwrap();
        self.m.pending.entry(id).or_default().push(Pend {
            op: Op::Delete,
            in_flight: false,
        });
    }

    fn server_write(&mut self) {
        if self.rng.chance(25) && !self.s.rows.is_empty() {
            let ids: Vec<String> = self.s.rows.keys().cloned().collect();
            let id = ids[self.rng.below(ids.len() as u64) as usize].clone();
            self.s.remove(&id);
            return;
        }
        let id = if self.rng.chance(60) && !self.s.rows.is_empty() {
            let ids: Vec<String> = self.s.rows.keys().cloned().collect();
            ids[self.rng.below(ids.len() as u64) as usize].clone()
        } else {
            self.next_id += 1;
            format!("s{}", self.next_id)
        };
        let mut cols = Map::new();
        for (i, (name, _)) in TASK_COLS.iter().enumerate().skip(1) {
            if !self.s.rows.contains_key(&id) || self.rng.chance(40) {
                cols.insert(name.to_string(), random_value(&mut self.rng, i).0);
            }
        }
        self.s.write(&id, cols);
    }

    fn pull(&mut self) {
        let cursor = self.c.try_text("SELECT sync_cursor()", None).unwrap();
        let page = self.s.pull(cursor.as_deref());
        self.c.apply(&page);
        self.m.purge_nothing();
        for ch in page["changes"].as_array().unwrap() {
            let id = ch["pk"]["id"].as_str().unwrap();
            let row = ch["row"].as_object().cloned();
            self.m.server_row(id, row);
        }
    }

    /// Builds a batch, checks it against the model, lets the server decide,
    /// maybe writes more locally while it is in flight, then acknowledges.
    fn push(&mut self) {
        let batch = self.c.changes();
        let again = self.c.changes();
        assert_eq!(batch, again, "retry returns the same batch");
        // The model's view of the batch: every row with unsent writes that
        // amount to something (rows already in flight are not re-sent).
        let any_in_flight = self
            .m
            .pending
            .values()
            .any(|ops| ops.iter().any(|p| p.in_flight));
        assert!(!any_in_flight, "seed {}: in flight before push", self.seed);
        self.m.purge_nothing();
        let sent: BTreeSet<String> = batch["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["pk"]["id"].as_str().unwrap().to_string())
            .collect();
        let expect: BTreeSet<String> = self.m.pending.keys().cloned().collect();
        assert_eq!(
            sent, expect,
            "seed {} step {}: rows in the batch",
            self.seed, self.step
        );
        for ch in batch["changes"].as_array().unwrap() {
            let id = ch["pk"]["id"].as_str().unwrap().to_string();
            let ops = &self.m.pending[&id];
            let want_op = match (&ops.first().unwrap().op, &ops.last().unwrap().op) {
                (_, Op::Delete) => "delete",
                (Op::Insert(_), _) => "insert",
                _ => "update",
            };
            assert_eq!(ch["op"], want_op, "seed {}: op of {id}: {ch}", self.seed);
            if want_op == "update" {
                let row = self.m.row(&id).unwrap();
                let mut cols: BTreeSet<String> = BTreeSet::new();
                for p in ops {
                    match &p.op {
                        Op::Update(c) => cols.extend(c.keys().cloned()),
                        _ => cols.extend(TASK_COLS[1..].iter().map(|c| c.0.to_string())),
                    }
                }
                let want: Map<String, Value> =
                    cols.iter().map(|k| (k.clone(), row[k].clone())).collect();
                assert_eq!(
                    ch["cols"],
                    Value::Object(want),
                    "seed {}: cols of {id}",
                    self.seed
                );
            }
        }
        for ops in self.m.pending.values_mut() {
            for p in ops.iter_mut() {
                p.in_flight = true;
            }
        }
        // Writes while the batch is in flight.
        for _ in 0..self.rng.below(3) {
            match self.rng.below(3) {
                0 => self.local_insert(),
                1 => self.local_update(),
                _ => self.local_delete(),
            }
        }
        let reject_pct = if self.rng.chance(50) { 0 } else { 30 };
        let mut verdicts: BTreeMap<String, Verdict> = BTreeMap::new();
        let rng = &mut self.rng;
        let result = self.s.push(&batch, |ch| {
            let v = if rng.chance(reject_pct) {
                Verdict::Reject
            } else {
                Verdict::Apply
            };
            verdicts.insert(ch["pk"]["id"].as_str().unwrap().to_string(), v);
            v
        });
        self.c.ack(&result);
        for r in result["results"].as_array().unwrap() {
            let id = r["pk"]["id"].as_str().unwrap().to_string();
            let ops = self.m.pending.remove(&id).unwrap_or_default();
            if r["status"] == "rejected" {
                continue;
            }
            let row = r["row"].as_object().cloned();
            self.m.server_row(&id, row);
            let rest: Vec<Pend> = ops.into_iter().filter(|p| !p.in_flight).collect();
            if !rest.is_empty() && !net_nothing(&rest) {
                self.m.pending.insert(id, rest);
            }
        }
    }
}

fn run(seed: u64, steps: usize, confirmed: bool) {
    let mode = if confirmed { "confirmed" } else { "optimistic" };
    let mut w = World {
        rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        c: TestClient::with_schema(&tasks_schema_mode(1, mode)),
        s: FakeServer::tasks(),
        m: Model::default(),
        next_id: 0,
        step: 0,
        seed,
        table: if confirmed { "tasks_pending" } else { "tasks" },
        confirmed,
    };
    for step in 0..steps {
        w.step = step;
        let what = match w.rng.below(20) {
            0..=4 => {
                w.local_insert();
                "local insert"
            }
            5..=9 => {
                w.local_update();
                "local update"
            }
            10..=11 => {
                w.local_delete();
                "local delete"
            }
            12..=14 => {
                w.server_write();
                "server write"
            }
            15..=16 => {
                w.pull();
                "pull"
            }
            _ => {
                w.push();
                "push"
            }
        };
        if std::env::var("SQLITE_MODEL_TRACE").is_ok() {
            eprintln!(
                "step {step}: {what}; changes {:?}; synced {:?}; pending {:?}",
                w.c.rows("SELECT seq, pk, op, mask, batch FROM _changes"),
                w.c.rows("SELECT id, _full FROM tasks_synced"),
                w.m.pending
            );
        }
        w.check(what);
    }
    // Everything confirmed and pulled: the client equals the server.
    w.push();
    let batch = w.c.changes();
    let result = w.s.push(&batch, |_| Verdict::Apply);
    w.c.ack(&result);
    w.c.apply(&w.s.pull(None));
    let server: BTreeMap<String, Value> =
        w.s.rows
            .iter()
            .map(|(k, (m, _))| (k.clone(), Value::Object(m.clone())))
            .collect();
    assert_eq!(w.c.tasks("tasks"), server, "seed {seed}: final state");
    assert_eq!(w.c.tasks(w.table), server, "seed {seed}: final state");
    assert_eq!(w.c.status()["pending"], 0);
    assert_eq!(
        w.c.int("SELECT count(*) FROM _changes WHERE op <> 'mark'"),
        0
    );
    assert_eq!(
        w.c.int("SELECT count(*) FROM tasks_synced WHERE _full = 1"),
        0
    );
    assert_eq!(w.c.int("SELECT count(*) FROM _sync_base"), 0);
}

#[test]
fn random_writes_acks_and_pulls_match_the_model() {
    let seeds: u64 = std::env::var("SQLITE_MODEL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    if let Some(one) = std::env::var("SQLITE_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        run(one, 250, std::env::var("SQLITE_MODEL_CONFIRMED").is_ok());
        return;
    }
    for seed in 1..=seeds {
        run(seed, 250, false);
    }
}

#[test]
fn confirmed_mode_matches_the_model() {
    let seeds: u64 = std::env::var("SQLITE_MODEL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for seed in 1..=seeds {
        run(1000 + seed, 200, true);
    }
}
