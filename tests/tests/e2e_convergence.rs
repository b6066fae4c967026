//! The convergence scenario through the real extensions: three SQLite
//! devices and the server make random inserts, updates and deletes with
//! random sync interleavings and re-delivered batches; after a final sync
//! all four databases hold exactly the same rows.

use serde_json::Value;
use sync_tests::e2e::{server_rows, Device};
use sync_tests::{eventually, TestDb};

/// Small deterministic PRNG (xorshift64*), so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SERVER_Q: &str =
    "SELECT to_jsonb(id), to_jsonb(title), to_jsonb(n), tags, to_jsonb(cnt) FROM items ORDER BY id";
const DEVICE_Q: &str = "SELECT id, title, n, tags, cnt FROM items ORDER BY id";

fn device_rows(d: &Device) -> Vec<Vec<Value>> {
    d.rows(DEVICE_Q)
        .into_iter()
        .map(|mut r| {
            if let Value::String(s) = &r[3] {
                r[3] = serde_json::from_str(s).unwrap();
            }
            r
        })
        .collect()
}

/// Runs one scenario; returns (rows, conflicts recorded, rejected changes).
fn run_scenario(seed: u64, rounds: usize) -> (usize, i64, usize) {
    let db = TestDb::new("e2e_converge");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id text PRIMARY KEY, title text NOT NULL, n int,
                             tags jsonb NOT NULL DEFAULT '[]', cnt int NOT NULL DEFAULT 0);
         SELECT sync_enable('items', '{\"columns\": {\"tags\": {\"strategy\": \"set_union\"},
                                                    \"cnt\": {\"strategy\": \"counter\"}}}');
         INSERT INTO items (id, title, n) SELECT 'i' || g, 'seed ' || g, g FROM generate_series(1, 6) g;",
    )
    .unwrap();
    let devs: Vec<Device> = (0..3)
        .map(|i| Device::new(&mut c, &format!("conv{seed}_{i}")))
        .collect();
    for d in &devs {
        d.pull(&mut c);
    }
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut next_id = 100;
    let mut rejected = 0usize;
    for round in 0..rounds {
        let who = rng.below(4) as usize;
        let action = rng.below(10);
        if who == 3 {
            // The server writes directly.
            let id = format!("i{}", 1 + rng.below(8));
            let sql = match action {
                0..=5 => format!("UPDATE items SET title = 'srv {round}', n = {} WHERE id = '{id}'", rng.below(100)),
                6 | 7 => format!("UPDATE items SET cnt = cnt + 1, tags = tags || '[\"s{round}\"]' WHERE id = '{id}'"),
                8 => format!("DELETE FROM items WHERE id = '{id}'"),
                _ => format!("INSERT INTO items (id, title) VALUES ('{id}', 'srv new') ON CONFLICT DO NOTHING"),
            };
            c.batch_execute(&sql).unwrap();
            continue;
        }
        let d = &devs[who];
        match action {
            0..=3 => {
                // Update a row the device sees.
                let ids: Vec<String> = d
                    .rows("SELECT id FROM items")
                    .into_iter()
                    .map(|r| r[0].as_str().unwrap().to_string())
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let sql = match rng.below(3) {
                    0 => format!("UPDATE items SET title = 'dev{who} r{round}' WHERE id = '{id}'"),
                    1 => format!("UPDATE items SET n = {}, cnt = cnt + 1 WHERE id = '{id}'", rng.below(100)),
                    _ => format!("UPDATE items SET tags = json_insert(tags, '$[#]', 'd{who}r{round}') WHERE id = '{id}'"),
                };
                d.db.execute_batch(&sql).unwrap();
            }
            4 => {
                let ids: Vec<String> = d
                    .rows("SELECT id FROM items")
                    .into_iter()
                    .map(|r| r[0].as_str().unwrap().to_string())
                    .collect();
                if let Some(id) = ids.get(rng.below(ids.len().max(1) as u64) as usize) {
                    d.db.execute_batch(&format!("DELETE FROM items WHERE id = '{id}'"))
                        .unwrap();
                }
            }
            5 => {
                next_id += 1;
                d.db.execute_batch(&format!(
                    "INSERT INTO items (id, title, n, tags, cnt) VALUES ('d{who}_{next_id}', 'new {round}', 1, '[]', 0)"
                ))
                .unwrap();
            }
            6 => {
                let r = d.push(&mut c);
                rejected += r["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|x| x["status"] == "rejected")
                    .count();
            }
            7 => {
                d.pull(&mut c);
            }
            8 => {
                // Re-delivery: the same batch twice, and the answer twice.
                let batch = d.call("SELECT sync_changes()", None);
                let again = d.call("SELECT sync_changes()", None);
                assert_eq!(batch, again, "a batch is stable until acknowledged");
                let r1: Value = c
                    .query_one("SELECT sync_push($1)", &[&batch])
                    .unwrap()
                    .get(0);
                let r2: Value = c
                    .query_one("SELECT sync_push($1)", &[&batch])
                    .unwrap()
                    .get(0);
                let strip = |r: &Value| -> Vec<(Value, Value)> {
                    r["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| (x["seq"].clone(), x["status"].clone()))
                        .collect()
                };
                assert_eq!(strip(&r1), strip(&r2));
                d.call("SELECT sync_ack(?1)", Some(&r2.to_string()));
                d.call("SELECT sync_ack(?1)", Some(&r1.to_string()));
            }
            _ => {
                d.sync(&mut c);
            }
        }
    }
    // Final rounds: everybody pushes, then everybody pulls until quiet.
    for d in &devs {
        d.push(&mut c);
    }
    let expected = server_rows(&mut c, SERVER_Q);
    for (i, d) in devs.iter().enumerate() {
        assert!(
            eventually(30, || {
                d.pull(&mut c);
                device_rows(d) == expected
            }),
            "seed {seed}: device {i} differs from the server:\n device: {:?}\n server: {:?}",
            device_rows(d),
            expected
        );
        assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    }
    let conflicts: i64 = c
        .query_one("SELECT count(*) FROM pg_sync.conflicts", &[])
        .unwrap()
        .get(0);
    (expected.len(), conflicts, rejected)
}

#[test]
fn three_devices_and_the_server_converge() {
    let (mut rows, mut conflicts, mut rejected) = (0, 0, 0);
    for seed in 1..=4 {
        let (r, c, j) = run_scenario(seed, 150);
        rows += r;
        conflicts += c;
        rejected += j;
    }
    // The scenarios really exercised concurrency, not just clean writes.
    assert!(rows > 0);
    assert!(conflicts > 0, "no conflicts were provoked");
    eprintln!(
        "converged: {rows} rows, {conflicts} conflicts recorded, {rejected} rejected changes"
    );
}
