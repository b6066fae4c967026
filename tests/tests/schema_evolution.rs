//! Randomized schema evolution against the real cluster: server ALTERs
//! (columns added with and without defaults, dropped, retyped; a table
//! disabled and re-enabled) interleaved with device writes and syncs in
//! every order (push first, pull first, a push whose answer is lost). At the
//! end every database holds the same rows and columns, no device write was
//! lost, and none was applied twice.

use std::collections::BTreeMap;

use postgres::Client;
use serde_json::Value;
use sync_tests::e2e::{server_rows, Device};
use sync_tests::{err_text, eventually, TestDb};

/// A small deterministic generator (xorshift64*).
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

/// Pushes the device's pending changes and forgets the answer (a lost
/// response): the next push must send the same changes, applied once.
fn push_without_ack(d: &Device, c: &mut Client) {
    let batch = d.call("SELECT sync_changes()", None);
    c.query_one("SELECT sync_push($1)", &[&batch])
        .unwrap_or_else(|e| panic!("sync_push: {}", err_text(&e)));
}

/// Columns of a device table, in order.
fn device_columns(d: &Device, table: &str) -> Vec<String> {
    d.rows(&format!(
        "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
    ))
    .into_iter()
    .map(|r| r[0].as_str().unwrap_or_default().to_string())
    .collect()
}

fn server_columns(c: &mut Client, table: &str) -> Vec<String> {
    c.query(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 \
         AND NOT attisdropped AND attname NOT LIKE '\\_sync\\_%' ORDER BY attnum",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every row of `table` as a map column -> text value (NULL as null), on
/// the server.
fn server_table(c: &mut Client, table: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
    let cols = server_columns(c, table);
    let sel: Vec<String> = cols
        .iter()
        .map(|col| format!("to_jsonb({col}::text)"))
        .collect();
    let rows = server_rows(
        c,
        &format!("SELECT {} FROM {table} ORDER BY id", sel.join(", ")),
    );
    rows.into_iter()
        .map(|r| {
            let m: BTreeMap<String, Value> = cols.iter().cloned().zip(r).collect();
            (m["id"].as_str().unwrap().to_string(), m)
        })
        .collect()
}

/// The same on a device (values as text, as SQLite renders them).
fn device_table(d: &Device, table: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
    let cols = device_columns(d, table);
    let sel: Vec<String> = cols
        .iter()
        .map(|col| format!("CAST({col} AS TEXT)"))
        .collect();
    d.rows(&format!(
        "SELECT {} FROM {table} ORDER BY id",
        sel.join(", ")
    ))
    .into_iter()
    .map(|r| {
        let m: BTreeMap<String, Value> = cols.iter().cloned().zip(r).collect();
        (m["id"].as_str().unwrap().to_string(), m)
    })
    .collect()
}

/// One run: 3 devices, `steps` random steps.
fn run(seed: u64, steps: usize) {
    let db = TestDb::new(&format!("evolve_{seed}"));
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE log (id text PRIMARY KEY, dev text NOT NULL, n int NOT NULL);
         CREATE TABLE counters (id text PRIMARY KEY, hits bigint NOT NULL DEFAULT 0);
         CREATE TABLE notes (id text PRIMARY KEY, body text);
         SELECT sync_enable('log');
         SELECT sync_enable('notes');
         SELECT sync_enable('counters', '{\"columns\": {\"hits\": {\"strategy\": \"counter\"}}}');
         INSERT INTO counters SELECT 'c' || g, 0 FROM generate_series(1, 4) g;",
    )
    .unwrap();
    let devices: Vec<Device> = (0..3)
        .map(|i| Device::new(&mut c, &format!("evolve_{seed}_{i}")))
        .collect();
    for d in &devices {
        d.pull(&mut c);
    }
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut logged: Vec<(String, String, i64)> = Vec::new();
    let mut increments: BTreeMap<String, i64> = BTreeMap::new();
    let mut extra_cols: Vec<String> = Vec::new();
    let mut next_col = 0;
    // The notes table is disabled and enabled again now and then; every
    // note a device inserts reaches the server or is reported to that
    // device as table_not_synced.
    let mut notes_enabled = true;
    let mut noted: Vec<(usize, String)> = Vec::new();
    let trace = std::env::var("EVOLVE_TRACE").is_ok();
    for step in 0..steps {
        let di = rng.below(3) as usize;
        let d = &devices[di];
        let dev = d.path.file_name().unwrap().to_string_lossy().to_string();
        let action = rng.below(12);
        if trace {
            eprintln!("seed {seed} step {step}: device {di} action {action}");
        }
        match action {
            0..=2 => {
                let id = format!("l{seed}_{step}");
                let n = rng.below(1000) as i64;
                d.db.execute(
                    "INSERT INTO log (id, dev, n) VALUES (?1, ?2, ?3)",
                    rusqlite::params![id, dev, n],
                )
                .unwrap();
                logged.push((id, dev, n));
            }
            3 | 4 => {
                let id = format!("c{}", 1 + rng.below(4));
                d.db.execute("UPDATE counters SET hits = hits + 1 WHERE id = ?1", [&id])
                    .unwrap();
                if trace {
                    eprintln!("  +1 on {id}");
                }
                *increments.entry(id).or_default() += 1;
            }
            5 => {
                // A server ALTER on the log table.
                let sql = match (rng.below(4), extra_cols.is_empty()) {
                    (0, _) | (_, true) => {
                        next_col += 1;
                        let name = format!("x{next_col}");
                        let ddl = match next_col % 3 {
                            0 => format!("ALTER TABLE log ADD COLUMN {name} int"),
                            1 => format!("ALTER TABLE log ADD COLUMN {name} int DEFAULT 7"),
                            _ => format!("ALTER TABLE log ADD COLUMN {name} text NOT NULL DEFAULT 'd'"),
                        };
                        extra_cols.push(name);
                        ddl
                    }
                    (1, false) => {
                        let k = rng.below(extra_cols.len() as u64) as usize;
                        let name = extra_cols.remove(k);
                        format!("ALTER TABLE log DROP COLUMN {name}")
                    }
                    (2, false) => {
                        let name = &extra_cols[rng.below(extra_cols.len() as u64) as usize];
                        format!("ALTER TABLE log ALTER COLUMN {name} TYPE text")
                    }
                    _ => "UPDATE log SET n = n + 1 WHERE id IN (SELECT id FROM log ORDER BY id LIMIT 2)"
                        .to_string(),
                };
                if trace {
                    eprintln!("  {sql}");
                }
                c.batch_execute(&sql)
                    .unwrap_or_else(|e| panic!("{sql}: {}", err_text(&e)));
            }
            6 => {
                let r = d.push(&mut c);
                if trace {
                    eprintln!("  push: {r}");
                }
            }
            7 => {
                d.pull(&mut c);
            }
            8 => push_without_ack(d, &mut c),
            9 => d.sync(&mut c),
            10 => {
                // A note, when the device has the table (it drops it when
                // it pulls the table's removal).
                if !device_columns(d, "notes").is_empty() {
                    let id = format!("n{seed}_{step}");
                    d.db.execute(
                        "INSERT INTO notes (id, body) VALUES (?1, ?2)",
                        rusqlite::params![id, dev],
                    )
                    .unwrap();
                    noted.push((di, id));
                }
            }
            _ => {
                let sql = if notes_enabled {
                    "SELECT sync_disable('notes')"
                } else {
                    // Every device pulls the table's removal before it is
                    // enabled again: a device that missed it keeps its
                    // cursor's position in the table and would never get
                    // the rows (server limitation, see
                    // a_device_that_missed_a_tables_removal_gets_its_rows_after_it_is_enabled_again).
                    for d in &devices {
                        d.pull(&mut c);
                    }
                    "SELECT sync_enable('notes')"
                };
                if trace {
                    eprintln!("  {sql}");
                }
                c.batch_execute(sql).unwrap();
                notes_enabled = !notes_enabled;
            }
        }
    }
    if !notes_enabled {
        for d in &devices {
            d.pull(&mut c);
        }
        c.batch_execute("SELECT sync_enable('notes')").unwrap();
    }
    // Settle: every device syncs until nothing moves.
    for _ in 0..3 {
        for d in &devices {
            d.sync(&mut c);
        }
    }
    // Pulls hand out only what is below every transaction still open in
    // the cluster: pull until the devices caught up (or 30 s passed).
    eventually(30, || {
        let mut same = true;
        for table in ["log", "counters", "notes"] {
            let srv = server_table(&mut c, table);
            for d in &devices {
                d.pull(&mut c);
                same &= device_table(d, table) == srv;
            }
        }
        same
    });
    // The same rows and columns everywhere.
    for table in ["log", "counters", "notes"] {
        let srv = server_table(&mut c, table);
        for d in &devices {
            assert_eq!(
                device_columns(d, table),
                server_columns(&mut c, table),
                "seed {seed}: columns of {table}"
            );
            assert_eq!(device_table(d, table), srv, "seed {seed}: rows of {table}");
        }
    }
    // No write lost: every logged insert is on the server with its values.
    let srv = server_table(&mut c, "log");
    for (id, dev, n) in &logged {
        let row = srv
            .get(id)
            .unwrap_or_else(|| panic!("seed {seed}: {id} lost"));
        assert_eq!(row["dev"], Value::from(dev.clone()), "seed {seed}");
        // The server bumps n of two rows now and then: n only grows.
        let got: i64 = row["n"].as_str().unwrap().parse().unwrap();
        assert!(got >= *n, "seed {seed}: {id} n {got} < {n}");
    }
    // Every note reached the server, or its device reported it.
    let notes = server_table(&mut c, "notes");
    for (di, id) in &noted {
        let reported = devices[*di].rows(&format!(
            "SELECT count(*) FROM _sync_errors WHERE tbl = 'notes' AND pk = '{{\"id\":\"{id}\"}}' \
             AND constraint_name = 'table_not_synced'"
        ))[0][0]
            == 1;
        assert!(
            notes.contains_key(id) != reported,
            "seed {seed}: note {id} of device {di}: on the server {}, reported {reported}",
            notes.contains_key(id)
        );
    }
    // None applied twice: every counter holds exactly its increments.
    let counters = server_table(&mut c, "counters");
    for (id, row) in &counters {
        let want = increments.get(id).copied().unwrap_or(0);
        assert_eq!(
            row["hits"],
            Value::from(want.to_string()),
            "seed {seed}: {id}"
        );
    }
}

#[test]
fn random_schema_changes_interleaved_with_device_syncs_converge() {
    let seeds: u64 = std::env::var("EVOLVE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    // EVOLVE_SEED=n runs that seed alone (EVOLVE_TRACE=1 prints its steps).
    let only: Option<u64> = std::env::var("EVOLVE_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    for seed in only.map_or(1..=seeds, |s| s..=s) {
        run(seed, 120);
    }
}

// ---------------------------------------------------------------------------
// Focused scenarios: one server schema change while a device holds pending
// writes, in each order of push, acknowledgement and pull.

/// The orders a device may sync in after the server's schema changed.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// Push and acknowledge first (the batch is built after the change),
    /// then pull.
    PushFirst,
    /// Pull first (the device migrates), then push.
    PullFirst,
    /// The batch was built (and stored) before the change; pushed and
    /// acknowledged after it, then a pull.
    InFlight,
    /// The batch was built before the change and pushed, its answer lost;
    /// the device pulls (and migrates), then retries.
    LostAnswer,
}

const ORDERS: [Order; 4] = [
    Order::PushFirst,
    Order::PullFirst,
    Order::InFlight,
    Order::LostAnswer,
];

/// A server with `ddl` run and a device that pulled it.
fn server_and_device(name: &str, ddl: &str) -> (TestDb, Client, Device) {
    let db = TestDb::new(name);
    let mut c = db.connect();
    c.batch_execute(ddl).unwrap();
    let d = Device::new(&mut c, name);
    d.pull(&mut c);
    (db, c, d)
}

/// Runs the server's schema change `alter` in `order` with the device's
/// pending writes, then syncs until nothing moves.
fn sync_across(order: Order, d: &Device, c: &mut Client, alter: &str) {
    let early = match order {
        Order::InFlight | Order::LostAnswer => Some(d.call("SELECT sync_changes()", None)),
        _ => None,
    };
    c.batch_execute(alter)
        .unwrap_or_else(|e| panic!("{alter}: {}", err_text(&e)));
    match order {
        Order::PushFirst => {
            d.push(c);
            d.pull(c);
        }
        Order::PullFirst => {
            d.pull(c);
            d.push(c);
        }
        Order::InFlight => {
            // sync_changes returns the batch stored before the change.
            assert_eq!(d.call("SELECT sync_changes()", None), early.unwrap());
            d.push(c);
            d.pull(c);
        }
        Order::LostAnswer => {
            push_without_ack(d, c);
            d.pull(c);
            assert_eq!(d.call("SELECT sync_changes()", None), early.unwrap());
            d.push(c);
        }
    }
    d.sync(c);
    d.pull(c);
}

/// Pulls until the device's rows (`dev_sql`) and the server's (`srv_sql`)
/// are `want` (a pull hands out only what is below every transaction still
/// open in the cluster, so it may lag), then asserts both.
fn assert_converged(
    d: &Device,
    c: &mut Client,
    dev_sql: &str,
    srv_sql: &str,
    want: &Value,
    what: &str,
) {
    eventually(30, || {
        d.pull(c);
        Value::from(d.rows(dev_sql)) == *want && Value::from(server_rows(c, srv_sql)) == *want
    });
    assert_eq!(
        Value::from(server_rows(c, srv_sql)),
        *want,
        "{what}: server"
    );
    assert_eq!(Value::from(d.rows(dev_sql)), *want, "{what}: device");
}

#[test]
fn a_column_added_with_a_default_ends_with_the_servers_value_on_the_device() {
    for order in ORDERS {
        let name = format!("add_default_{order:?}").to_lowercase();
        let (_db, mut c, d) = server_and_device(
            &name,
            "CREATE TABLE tasks (id text PRIMARY KEY, title text);
             INSERT INTO tasks VALUES ('t0', 'server');
             SELECT sync_enable('tasks');",
        );
        // Offline: a new row and an edit of a server row.
        d.db.execute_batch(
            "INSERT INTO tasks (id, title) VALUES ('t1', 'offline');
             UPDATE tasks SET title = 'edited' WHERE id = 't0';",
        )
        .unwrap();
        if let Order::PushFirst = order {
            // The batch built after the change carries only what the
            // device wrote: no prio.
            c.batch_execute(
                "ALTER TABLE tasks ADD COLUMN prio int DEFAULT 7;
                 ALTER TABLE tasks ADD COLUMN tag text NOT NULL DEFAULT 'd';",
            )
            .unwrap();
            let batch = d.call("SELECT sync_changes()", None);
            for ch in batch["changes"].as_array().unwrap() {
                assert!(ch["cols"].get("prio").is_none(), "{ch}");
            }
            let result: Value = c
                .query_one("SELECT sync_push($1)", &[&batch])
                .unwrap()
                .get(0);
            assert_eq!(
                result["columns"]["tasks"],
                serde_json::json!(["id", "title", "prio", "tag"])
            );
            let summary = d.call("SELECT sync_ack(?1)", Some(&result.to_string()));
            assert_eq!(summary["confirmed"], 2, "{summary}");
            assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
            d.pull(&mut c);
        } else {
            sync_across(
                order,
                &d,
                &mut c,
                "ALTER TABLE tasks ADD COLUMN prio int DEFAULT 7;
                 ALTER TABLE tasks ADD COLUMN tag text NOT NULL DEFAULT 'd';",
            );
        }
        // A row inserted after the device migrated, not naming the new
        // columns: the server's defaults apply (NULL for a NOT NULL column
        // with a default takes the default).
        d.db.execute("INSERT INTO tasks (id, title) VALUES ('t2', 'later')", [])
            .unwrap();
        d.sync(&mut c);
        d.pull(&mut c);
        let want = serde_json::json!([
            ["t0", "edited", "7", "d"],
            ["t1", "offline", "7", "d"],
            ["t2", "later", null, "d"]
        ]);
        assert_converged(
            &d,
            &mut c,
            "SELECT id, title, CAST(prio AS TEXT), tag FROM tasks ORDER BY id",
            "SELECT to_jsonb(id), to_jsonb(title), to_jsonb(prio::text), to_jsonb(tag) FROM tasks ORDER BY id",
            &want,
            &format!("{order:?}"),
        );
        let st = d.call("SELECT sync_status()", None);
        assert_eq!(st["pending"], 0, "{order:?}: {st}");
        assert_eq!(st["errors"], 0, "{order:?}: {st}");
    }
}

#[test]
fn a_dropped_column_never_strands_a_pending_insert() {
    for order in ORDERS {
        let name = format!("drop_col_{order:?}").to_lowercase();
        let (_db, mut c, d) = server_and_device(
            &name,
            "CREATE TABLE tasks (id text PRIMARY KEY, title text, old_col text);
             INSERT INTO tasks VALUES ('t0', 'server', 'o');
             SELECT sync_enable('tasks');",
        );
        d.db.execute_batch(
            "INSERT INTO tasks (id, title, old_col) VALUES ('t1', 'offline', 'mine');
             UPDATE tasks SET old_col = 'changed', title = 'edited' WHERE id = 't0';",
        )
        .unwrap();
        if let Order::PushFirst = order {
            c.batch_execute("ALTER TABLE tasks DROP COLUMN old_col")
                .unwrap();
            let result = d.push(&mut c);
            for r in result["results"].as_array().unwrap() {
                assert_eq!(r["status"], "applied", "{r}");
                assert_eq!(r["ignored"], serde_json::json!(["old_col"]), "{r}");
            }
            assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
            d.pull(&mut c);
        } else {
            sync_across(order, &d, &mut c, "ALTER TABLE tasks DROP COLUMN old_col");
        }
        assert_eq!(
            device_columns(&d, "tasks"),
            vec!["id".to_string(), "title".to_string()],
            "{order:?}"
        );
        let want = serde_json::json!([["t0", "edited"], ["t1", "offline"]]);
        assert_converged(
            &d,
            &mut c,
            "SELECT id, title FROM tasks ORDER BY id",
            "SELECT to_jsonb(id), to_jsonb(title) FROM tasks ORDER BY id",
            &want,
            &format!("{order:?}"),
        );
        let st = d.call("SELECT sync_status()", None);
        assert_eq!(st["pending"], 0, "{order:?}: {st}");
        assert_eq!(st["in_flight"], false, "{order:?}: {st}");
        assert_eq!(st["errors"], 0, "{order:?}: {st}");
    }
}

#[test]
fn a_retyped_column_with_pending_writes_converges() {
    for order in ORDERS {
        let name = format!("retype_{order:?}").to_lowercase();
        let (_db, mut c, d) = server_and_device(
            &name,
            "CREATE TABLE tasks (id text PRIMARY KEY, n int, note text);
             INSERT INTO tasks VALUES ('t0', 1, 'a');
             SELECT sync_enable('tasks');",
        );
        d.db.execute_batch(
            "INSERT INTO tasks (id, n, note) VALUES ('t1', 5, 'b');
             UPDATE tasks SET n = 6 WHERE id = 't0';",
        )
        .unwrap();
        // The push-first result carries n as text while the device still
        // declares it integer: the acknowledgement leaves n to the pull.
        sync_across(
            order,
            &d,
            &mut c,
            "ALTER TABLE tasks ALTER COLUMN n TYPE text",
        );
        let want = serde_json::json!([["t0", "6", "a"], ["t1", "5", "b"]]);
        assert_converged(
            &d,
            &mut c,
            "SELECT id, n, note FROM tasks ORDER BY id",
            "SELECT to_jsonb(id), to_jsonb(n), to_jsonb(note) FROM tasks ORDER BY id",
            &want,
            &format!("{order:?}"),
        );
        assert_eq!(
            d.rows("SELECT type FROM pragma_table_info('tasks') WHERE name = 'n'")[0][0],
            "TEXT"
        );
        assert_eq!(
            d.call("SELECT sync_status()", None)["pending"],
            0,
            "{order:?}"
        );
    }
}

#[test]
fn a_table_disabled_with_pending_writes_and_enabled_again() {
    for order in [Order::PushFirst, Order::PullFirst, Order::LostAnswer] {
        let name = format!("disable_{order:?}").to_lowercase();
        let (_db, mut c, d) = server_and_device(
            &name,
            "CREATE TABLE tasks (id text PRIMARY KEY, title text);
             CREATE TABLE notes (id text PRIMARY KEY, body text);
             INSERT INTO notes VALUES ('n0', 'server');
             SELECT sync_enable('tasks');
             SELECT sync_enable('notes');",
        );
        d.db.execute_batch(
            "INSERT INTO notes (id, body) VALUES ('n1', 'offline');
             UPDATE notes SET body = 'edited' WHERE id = 'n0';
             INSERT INTO tasks (id, title) VALUES ('t1', 'kept');",
        )
        .unwrap();
        let early = match order {
            Order::LostAnswer => Some(d.call("SELECT sync_changes()", None)),
            _ => None,
        };
        c.batch_execute("SELECT sync_disable('notes')").unwrap();
        match order {
            Order::PushFirst => {
                let result = d.push(&mut c);
                let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
                for r in result["results"].as_array().unwrap() {
                    by_id.insert(r["pk"]["id"].as_str().unwrap().to_string(), r.clone());
                }
                assert_eq!(by_id["t1"]["status"], "applied");
                for id in ["n0", "n1"] {
                    assert_eq!(by_id[id]["status"], "rejected", "{id}");
                    assert_eq!(by_id[id]["constraint"], "table_not_synced", "{id}");
                }
                // The rejected writes roll back, as any rejection does,
                // until the next pull drops the table.
                assert_eq!(
                    Value::from(d.rows("SELECT id, body FROM notes ORDER BY id")),
                    serde_json::json!([["n0", "server"]])
                );
                d.pull(&mut c);
            }
            Order::PullFirst => {
                d.pull(&mut c);
                d.push(&mut c);
            }
            _ => {
                push_without_ack(&d, &mut c);
                d.pull(&mut c);
                assert_eq!(d.call("SELECT sync_changes()", None), early.unwrap());
                d.push(&mut c);
            }
        }
        let st = d.call("SELECT sync_status()", None);
        assert_eq!(st["pending"], 0, "{order:?}: {st}");
        assert_eq!(
            d.rows("SELECT count(*) FROM sqlite_master WHERE name = 'notes'")[0][0],
            0,
            "{order:?}: the device dropped the table"
        );
        // Either way the dropped writes are reported, once per row.
        let errors = d.rows("SELECT pk, constraint_name FROM _sync_errors ORDER BY pk");
        assert_eq!(
            Value::from(errors),
            serde_json::json!([
                ["{\"id\":\"n0\"}", "table_not_synced"],
                ["{\"id\":\"n1\"}", "table_not_synced"]
            ]),
            "{order:?}"
        );
        // The other table's write went through.
        let n: i64 = c
            .query_one("SELECT count(*) FROM tasks WHERE id = 't1'", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{order:?}");
        // Enabled again, with a row written meanwhile: the device gets the
        // table back with every server row, and syncs it as before.
        c.batch_execute(
            "INSERT INTO notes VALUES ('n2', 'while disabled');
             SELECT sync_enable('notes');",
        )
        .unwrap();
        d.pull(&mut c);
        d.db.execute("INSERT INTO notes (id, body) VALUES ('n3', 'again')", [])
            .unwrap();
        d.sync(&mut c);
        d.pull(&mut c);
        let want = serde_json::json!([["n0", "server"], ["n2", "while disabled"], ["n3", "again"]]);
        assert_converged(
            &d,
            &mut c,
            "SELECT id, body FROM notes ORDER BY id",
            "SELECT to_jsonb(id), to_jsonb(body) FROM notes ORDER BY id",
            &want,
            &format!("{order:?}"),
        );
        assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
    }
}

#[test]
fn a_primary_key_redefined_on_the_server_never_strands_a_device() {
    for order in [Order::PushFirst, Order::PullFirst] {
        let name = format!("rekey_{order:?}").to_lowercase();
        let (_db, mut c, d) = server_and_device(
            &name,
            "CREATE TABLE items (a text, b text, v text, PRIMARY KEY (a));
             INSERT INTO items VALUES ('x', '1', 'server');
             SELECT sync_enable('items');",
        );
        d.db.execute_batch(
            "INSERT INTO items (a, b, v) VALUES ('y', '2', 'offline');
             UPDATE items SET v = 'edited' WHERE a = 'x';",
        )
        .unwrap();
        c.batch_execute(
            "ALTER TABLE items DROP CONSTRAINT items_pkey;
             ALTER TABLE items ADD PRIMARY KEY (a, b);",
        )
        .unwrap_or_else(|e| panic!("{}", err_text(&e)));
        match order {
            Order::PushFirst => {
                let result = d.push(&mut c);
                for r in result["results"].as_array().unwrap() {
                    assert_eq!(r["status"], "rejected", "{r}");
                    assert_eq!(r["constraint"], "key_mismatch", "{r}");
                }
                d.pull(&mut c);
            }
            _ => {
                d.pull(&mut c);
                d.push(&mut c);
            }
        }
        // Either way the device follows the new key, has the server's rows,
        // and reports its two dropped writes.
        let st = d.call("SELECT sync_status()", None);
        assert_eq!(st["pending"], 0, "{order:?}: {st}");
        assert_eq!(st["errors"], 2, "{order:?}: {st}");
        assert_eq!(
            Value::from(d.rows("SELECT DISTINCT constraint_name FROM _sync_errors")),
            serde_json::json!([["key_mismatch"]]),
            "{order:?}"
        );
        d.db.execute("INSERT INTO items (a, b, v) VALUES ('x', '2', 'new')", [])
            .unwrap();
        d.sync(&mut c);
        assert_converged(
            &d,
            &mut c,
            "SELECT a, b, v FROM items ORDER BY a, b",
            "SELECT to_jsonb(a), to_jsonb(b), to_jsonb(v) FROM items ORDER BY a, b",
            &serde_json::json!([["x", "1", "server"], ["x", "2", "new"]]),
            &format!("{order:?}"),
        );
    }
}

/// A table disabled and enabled again while a device did not pull: the
/// rows of the table enabled again carry no transaction id (sync_enable
/// stamps them 0), so the device's old position in the table would skip
/// them; the cursor notes when sync was enabled on the table, and a table
/// enabled again starts its streams over.
#[test]
fn a_device_that_missed_a_tables_removal_gets_its_rows_after_it_is_enabled_again() {
    let (_db, mut c, d) = server_and_device(
        "missed_removal",
        "CREATE TABLE notes (id text PRIMARY KEY, body text);
         INSERT INTO notes VALUES ('n0', 'before');
         SELECT sync_enable('notes');",
    );
    // Another client's row, not pulled by the device yet.
    c.batch_execute("INSERT INTO notes VALUES ('n1', 'unseen')")
        .unwrap();
    c.batch_execute(
        "SELECT sync_disable('notes');
         INSERT INTO notes VALUES ('n2', 'while disabled');
         SELECT sync_enable('notes');",
    )
    .unwrap();
    assert_converged(
        &d,
        &mut c,
        "SELECT id, body FROM notes ORDER BY id",
        "SELECT to_jsonb(id), to_jsonb(body) FROM notes ORDER BY id",
        &serde_json::json!([["n0", "before"], ["n1", "unseen"], ["n2", "while disabled"]]),
        "missed removal",
    );
}

/// An answer that arrives after a pull (push, pull, then the
/// acknowledgement) does not take the device back to the state the answer
/// describes: the pulled, newer server values stay.
#[test]
fn a_late_answer_does_not_undo_a_pull() {
    let (_db, mut c, d) = server_and_device(
        "late_answer",
        "CREATE TABLE tasks (id text PRIMARY KEY, title text, n int);
         INSERT INTO tasks VALUES ('t0', 'server', 1);
         SELECT sync_enable('tasks');",
    );
    d.db.execute("UPDATE tasks SET title = 'mine' WHERE id = 't0'", [])
        .unwrap();
    let batch = d.call("SELECT sync_changes()", None);
    let result: Value = c
        .query_one("SELECT sync_push($1)", &[&batch])
        .unwrap()
        .get(0);
    // Another writer, then a pull, before the answer is acknowledged.
    c.batch_execute("UPDATE tasks SET n = 5 WHERE id = 't0'")
        .unwrap();
    assert!(eventually(30, || {
        d.pull(&mut c);
        d.rows("SELECT n FROM tasks WHERE id = 't0'")[0][0] == 5
    }));
    let summary = d.call("SELECT sync_ack(?1)", Some(&result.to_string()));
    assert_eq!(summary["confirmed"], 1, "{summary}");
    let want = serde_json::json!([["t0", "mine", 5]]);
    assert_eq!(
        Value::from(d.rows("SELECT id, title, n FROM tasks")),
        want,
        "the late answer (n = 1) does not undo the pull"
    );
    assert_converged(
        &d,
        &mut c,
        "SELECT id, title, n FROM tasks",
        "SELECT to_jsonb(id), to_jsonb(title), to_jsonb(n) FROM tasks",
        &want,
        "late answer",
    );
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
}
