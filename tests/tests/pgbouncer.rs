//! Pushes and pulls through PgBouncer in transaction pooling mode.
//!
//! A private cluster behind a PgBouncer (Debian's package, started by the
//! test) whose pool holds fewer server connections than there are devices:
//! consecutive calls of one device land on different backends, and one
//! backend serves many devices. Devices push and pull through the pooler
//! from their own threads while a server-side writer runs; they retry
//! batches (the same batch twice, a batch whose answer was lost, the same
//! batch from two connections at once) and bump shared counters, and a
//! direct session (not pooled) LISTENs for the NOTIFYs of their commits. At
//! the end
//! every device equals the server, every counter equals the number of
//! increments made (each change applied exactly once), no backend beyond
//! the pool was used, and the results of retried batches equal the first.
//!
//! Through a transaction pooler every call is one unnamed statement
//! (`query_typed`): PgBouncer 1.18 does not keep the `postgres` crate's
//! named prepared statements across transactions.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use postgres::Client;
use serde_json::Value;
use sync_tests::e2e::Device;
use sync_tests::pgbouncer::PgBouncer;
use sync_tests::{err_text, eventually, Cluster};

/// Server connections in the pool: fewer than the devices' connections.
const POOL: u32 = 3;
const DEVICES: usize = 8;
const ROUNDS: usize = 80;
const COUNTERS: i32 = 5;

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

/// What every thread counts.
#[derive(Default)]
struct Tally {
    /// Counter increments made on devices.
    device_incs: AtomicI64,
    /// Counter increments made on the server.
    server_incs: AtomicI64,
    /// Batches sent again (any kind of retry).
    retries: AtomicUsize,
    /// Pushes that hit a transient error (deadlock, serialization) and were
    /// sent again.
    transient: AtomicUsize,
    /// Backends that answered, per device.
    backends: Mutex<Vec<BTreeSet<i32>>>,
}

/// `sync_push` through the pooler: one unnamed statement. Transient errors
/// (deadlock, serialization failure) are retried with the same batch.
fn push_batch(c: &mut Client, batch: &Value, tally: &Tally) -> Value {
    loop {
        match c.query_typed_one("SELECT sync_push($1)", &[(batch, Type::JSONB)]) {
            Ok(r) => {
                let result: Value = r.get(0);
                // Counters are never deleted: nothing may reject a bump.
                for x in result["results"].as_array().unwrap() {
                    assert!(
                        !(x["table"] == "counters" && x["status"] == "rejected"),
                        "a counter change was rejected: {x}"
                    );
                }
                return result;
            }
            Err(e)
                if e.code()
                    .is_some_and(|s| s.code() == "40P01" || s.code() == "40001") =>
            {
                tally.transient.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("sync_push through pgbouncer: {}", err_text(&e)),
        }
    }
}

fn statuses(result: &Value) -> Vec<(Value, Value)> {
    result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["seq"].clone(), x["status"].clone()))
        .collect()
}

fn push(c: &mut Client, d: &Device, tally: &Tally) -> Value {
    let batch = d.call("SELECT sync_changes()", None);
    let result = push_batch(c, &batch, tally);
    d.call("SELECT sync_ack(?1)", Some(&result.to_string()));
    result
}

/// Pulls through the pooler until nothing more is ready.
fn pull(c: &mut Client, d: &Device) {
    loop {
        let cursor: Option<String> =
            d.db.query_row("SELECT sync_cursor()", [], |r| r.get(0))
                .unwrap();
        let text: String = c
            .query_typed_one(
                "SELECT sync_pull_json($1, $2)::text",
                &[(&cursor, Type::TEXT), (&200i32, Type::INT4)],
            )
            .unwrap_or_else(|e| panic!("sync_pull_json through pgbouncer: {}", err_text(&e)))
            .get(0);
        let page: Value = serde_json::from_str(&text).unwrap();
        let res = d.call("SELECT sync_apply(?1)", Some(&text));
        if page["resync_required"] == true {
            continue;
        }
        if res["has_more"] != true {
            return;
        }
    }
}

fn backend(c: &mut Client) -> i32 {
    c.query_typed_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// A device built entirely through the pooler: schema, then `sync_init`.
fn new_device(c: &mut Client, name: &str) -> Device {
    let path = std::env::temp_dir().join(format!(
        "pg_sync_dev_{}_bouncer_{name}.db",
        std::process::id()
    ));
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let schema: String = c
        .query_typed_one("SELECT sync_schema()::text", &[])
        .unwrap()
        .get(0);
    let d = Device::open_new(&path);
    let _: Option<String> =
        d.db.query_row("SELECT sync_init(?1)", [schema], |r| r.get(0))
            .unwrap();
    d
}

fn device_thread(i: usize, conn: String, tally: Arc<Tally>) -> Device {
    let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
    // A second connection for sending one batch twice at the same time.
    let mut c2 = Client::connect(&conn, postgres::NoTls).unwrap();
    let d = new_device(&mut c, &i.to_string());
    pull(&mut c, &d);
    let mut rng = Rng((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut seen = BTreeSet::new();
    let mut next = 0;
    for round in 0..ROUNDS {
        if round % 5 == 0 {
            seen.insert(backend(&mut c));
        }
        match rng.below(12) {
            0 | 1 => {
                next += 1;
                d.db.execute(
                    "INSERT INTO items (id, title, n) VALUES (?1, ?2, ?3)",
                    rusqlite::params![format!("d{i}-{next}"), format!("new {round}"), round as i64],
                )
                .unwrap();
            }
            2 | 3 => {
                let ids: Vec<String> = d
                    .rows("SELECT id FROM items ORDER BY id")
                    .into_iter()
                    .map(|r| r[0].as_str().unwrap().to_string())
                    .collect();
                if let Some(id) = ids.get(rng.below(ids.len().max(1) as u64) as usize) {
                    d.db.execute(
                        "UPDATE items SET title = ?1, n = ?2 WHERE id = ?3",
                        rusqlite::params![format!("d{i} r{round}"), rng.below(1000) as i64, id],
                    )
                    .unwrap();
                }
            }
            4 => {
                if next > 0 {
                    d.db.execute(
                        "DELETE FROM items WHERE id = ?1",
                        [format!("d{i}-{}", 1 + rng.below(next))],
                    )
                    .unwrap();
                }
            }
            5 | 6 => {
                let k = 1 + rng.below(COUNTERS as u64) as i64;
                d.db.execute("UPDATE counters SET cnt = cnt + 1 WHERE id = ?1", [k])
                    .unwrap();
                tally.device_incs.fetch_add(1, Ordering::Relaxed);
            }
            7 => {
                // The same batch twice in a row: the second answer is the
                // stored one; both answers acknowledged, the older last.
                let batch = d.call("SELECT sync_changes()", None);
                let r1 = push_batch(&mut c, &batch, &tally);
                let r2 = push_batch(&mut c, &batch, &tally);
                assert_eq!(statuses(&r1), statuses(&r2), "device {i}: a retried batch");
                tally.retries.fetch_add(1, Ordering::Relaxed);
                d.call("SELECT sync_ack(?1)", Some(&r2.to_string()));
                d.call("SELECT sync_ack(?1)", Some(&r1.to_string()));
            }
            8 => {
                // The answer is lost; the device writes more and sends its
                // queue again: the lost changes are answered from the store.
                let batch = d.call("SELECT sync_changes()", None);
                let lost = push_batch(&mut c, &batch, &tally);
                let k = 1 + rng.below(COUNTERS as u64) as i64;
                d.db.execute("UPDATE counters SET cnt = cnt + 1 WHERE id = ?1", [k])
                    .unwrap();
                tally.device_incs.fetch_add(1, Ordering::Relaxed);
                let again = push(&mut c, &d, &tally);
                tally.retries.fetch_add(1, Ordering::Relaxed);
                // Changes answered in both have the same status.
                let again = statuses(&again);
                for (seq, status) in statuses(&lost) {
                    if let Some((_, s2)) = again.iter().find(|(q, _)| *q == seq) {
                        assert_eq!(
                            &status, s2,
                            "device {i}: seq {seq} resent after a lost answer"
                        );
                    }
                }
            }
            9 => {
                // The same batch from two connections at once (two pooled
                // clients, so likely two backends): applied once, one answer.
                let batch = d.call("SELECT sync_changes()", None);
                let (r1, r2) = std::thread::scope(|s| {
                    let h = s.spawn(|| push_batch(&mut c2, &batch, &tally));
                    let r1 = push_batch(&mut c, &batch, &tally);
                    (r1, h.join().unwrap())
                });
                assert_eq!(
                    statuses(&r1),
                    statuses(&r2),
                    "device {i}: a concurrent retry"
                );
                tally.retries.fetch_add(1, Ordering::Relaxed);
                d.call("SELECT sync_ack(?1)", Some(&r1.to_string()));
                d.call("SELECT sync_ack(?1)", Some(&r2.to_string()));
            }
            10 => pull(&mut c, &d),
            _ => {
                push(&mut c, &d, &tally);
                pull(&mut c, &d);
            }
        }
    }
    seen.insert(backend(&mut c2));
    tally.backends.lock().unwrap().push(seen);
    d
}

#[test]
fn devices_push_and_pull_through_pgbouncer_in_transaction_mode() {
    let cluster = Cluster::private();
    cluster
        .connect("postgres")
        .batch_execute("CREATE DATABASE app")
        .unwrap();
    let mut direct = cluster.connect("app");
    direct
        .batch_execute(&format!(
            "CREATE EXTENSION pg_sync;
             CREATE TABLE items (id text PRIMARY KEY, title text, n int);
             CREATE TABLE counters (id int PRIMARY KEY, cnt int NOT NULL DEFAULT 0);
             SELECT sync_enable('items');
             SELECT sync_enable('counters', '{{\"columns\": {{\"cnt\": {{\"strategy\": \"counter\"}}}}}}');
             INSERT INTO items SELECT 's-' || g, 'seed ' || g, g FROM generate_series(1, 20) g;
             INSERT INTO counters SELECT g, 0 FROM generate_series(1, {COUNTERS}) g;"
        ))
        .unwrap();
    // Commits of synced writes notify (set for the database: a session SET
    // through a transaction pooler would stick to one server connection).
    direct
        .batch_execute("ALTER DATABASE app SET pg_sync.notify = on")
        .unwrap();
    let bouncer = PgBouncer::transaction_mode(cluster.port(), POOL);
    let conn = bouncer.conn_str("app");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));

    // A server-side writer through the pooler too (simple protocol).
    let writer = {
        let (conn, tally, stop) = (conn.clone(), tally.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
            let mut rng = Rng(0x5eed);
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let sql = match rng.below(4) {
                    0 => format!(
                        "INSERT INTO items VALUES ('s-{}', 'srv {k}', {k}) ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title",
                        20 + k % 30
                    ),
                    1 => format!("DELETE FROM items WHERE id = 's-{}'", 21 + rng.below(30)),
                    2 => {
                        tally.server_incs.fetch_add(1, Ordering::Relaxed);
                        format!(
                            "UPDATE counters SET cnt = cnt + 1 WHERE id = {}",
                            1 + rng.below(COUNTERS as u64)
                        )
                    }
                    _ => format!("UPDATE items SET n = {k} WHERE id = 's-{}'", 1 + rng.below(20)),
                };
                c.simple_query(&sql)
                    .unwrap_or_else(|e| panic!("{sql}: {}", err_text(&e)));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    // LISTEN needs a session of its own: a direct connection, not the pooler.
    let listener = {
        let (conn, stop) = (cluster.conn_str("app"), stop.clone());
        let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
        c.batch_execute("LISTEN pg_sync").unwrap();
        std::thread::spawn(move || {
            let mut tables = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let mut n = c.notifications();
                let mut it = n.timeout_iter(std::time::Duration::from_millis(100));
                while let Ok(Some(m)) = it.next() {
                    tables.insert(m.payload().to_string());
                }
            }
            tables
        })
    };
    // Samples the pool while the devices run.
    let sampler = {
        let (stop, port) = (stop.clone(), bouncer.port());
        std::thread::spawn(move || {
            let admin = format!("host=127.0.0.1 port={port} user=postgres dbname=pgbouncer");
            let mut most_clients = 0u64;
            let mut most_servers = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut c) = Client::connect(&admin, postgres::NoTls) {
                    for m in c.simple_query("SHOW POOLS").unwrap_or_default() {
                        if let postgres::SimpleQueryMessage::Row(r) = m {
                            if r.get("database") == Some("app") {
                                let n = |k: &str| {
                                    r.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                                };
                                most_clients = most_clients.max(n("cl_active") + n("cl_waiting"));
                                most_servers =
                                    most_servers.max(n("sv_active") + n("sv_idle") + n("sv_used"));
                            }
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (most_clients, most_servers)
        })
    };
    let devices: Vec<_> = (0..DEVICES)
        .map(|i| {
            let (conn, tally) = (conn.clone(), tally.clone());
            std::thread::spawn(move || device_thread(i, conn, tally))
        })
        .collect();
    let devices: Vec<Device> = devices.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (most_clients, most_servers) = sampler.join().unwrap();
    let woken = listener.join().unwrap();
    assert_eq!(
        woken,
        BTreeSet::from(["counters".to_string(), "items".to_string()]),
        "the direct LISTEN session was not woken by the pooled writes"
    );

    // Everybody pushes what is left, then pulls until equal to the server.
    let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
    for d in &devices {
        push(&mut c, d, &tally);
        assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    }
    let items_q = "SELECT to_jsonb(id), to_jsonb(title), to_jsonb(n) FROM items ORDER BY id";
    let counters_q = "SELECT to_jsonb(id), to_jsonb(cnt) FROM counters ORDER BY id";
    let items = sync_tests::e2e::server_rows(&mut direct, items_q);
    let counters = sync_tests::e2e::server_rows(&mut direct, counters_q);
    for (i, d) in devices.iter().enumerate() {
        assert!(
            eventually(30, || {
                pull(&mut c, d);
                d.rows("SELECT id, title, n FROM items ORDER BY id") == items
                    && d.rows("SELECT id, cnt FROM counters ORDER BY id") == counters
            }),
            "device {i} differs from the server:\n device: {:?} {:?}\n server: {:?} {:?}",
            d.rows("SELECT id, title, n FROM items ORDER BY id"),
            d.rows("SELECT id, cnt FROM counters ORDER BY id"),
            items,
            counters
        );
    }
    // Every increment was applied exactly once, retries included.
    let total: i64 = direct
        .query_one("SELECT sum(cnt)::bigint FROM counters", &[])
        .unwrap()
        .get(0);
    let made =
        tally.device_incs.load(Ordering::Relaxed) + tally.server_incs.load(Ordering::Relaxed);
    assert_eq!(total, made, "counter increments applied != made");
    // Every pushed (client, seq) has exactly one stored result.
    let dup: i64 = direct
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM pg_sync.push_results \
             GROUP BY role, client_id, seq HAVING count(*) > 1) d",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);

    // The pool really multiplexed: more clients than server connections,
    // no backend beyond the pool, and devices moved between backends.
    let backends = tally.backends.lock().unwrap();
    let all: BTreeSet<i32> = backends.iter().flatten().copied().collect();
    assert!(
        all.len() <= POOL as usize,
        "{} backends served the devices (pool {POOL}): {all:?}",
        all.len()
    );
    assert!(
        backends.iter().any(|s| s.len() > 1),
        "no device ever moved to another backend: {backends:?}"
    );
    assert!(most_servers <= POOL as u64, "pool grew to {most_servers}");
    assert!(
        most_clients > POOL as u64,
        "never more clients than server connections ({most_clients})"
    );
    eprintln!(
        "pgbouncer: {DEVICES} devices, {} client connections at most on {most_servers} server \
         connections ({} backends seen), {} retried batches, {} transient push errors retried, \
         {total} counter increments",
        most_clients,
        all.len(),
        tally.retries.load(Ordering::Relaxed),
        tally.transient.load(Ordering::Relaxed)
    );
}
