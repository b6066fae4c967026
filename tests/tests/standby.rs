//! Pulls from a hot standby: sync_pull, sync_pull_json, sync_pull_chunks and sync_schema run
//! on a read-only streaming standby, cursors move between the primary and
//! standbys, and a standby that has not replayed up to a cursor answers
//! `behind` (nothing lost, nothing repeated) instead of a gap.

use postgres::Client;
use serde_json::Value;
use sync_tests::e2e::{server_rows, Device};
use sync_tests::{err_text, eventually, Cluster};

fn replayed(primary: &mut Client, standby: &mut Client) -> bool {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    eventually(30, || {
        standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    })
}

/// A private cluster with database `app`, pg_sync created and `sql` run.
fn primary_with(sql: &str) -> (sync_tests::OwnedCluster, Client) {
    let primary = Cluster::private();
    primary
        .connect("postgres")
        .batch_execute("CREATE DATABASE app")
        .unwrap();
    let mut p = primary.connect("app");
    p.batch_execute(&format!("CREATE EXTENSION pg_sync; {sql}"))
        .unwrap();
    (primary, p)
}

#[test]
fn pulls_run_on_a_hot_standby() {
    let (primary, mut p) = primary_with(
        "CREATE TABLE tasks (id int PRIMARY KEY, title text);
         SELECT sync_enable('tasks');
         INSERT INTO tasks SELECT g, 'task ' || g FROM generate_series(1, 20) g;",
    );
    let standby = primary.base_backup().start(Some("standby.signal"));
    let mut s = standby.connect("app");
    assert!(replayed(&mut p, &mut s));
    for sql in [
        "SELECT sync_schema()::text",
        "SELECT sync_pull()::text",
        "SELECT sync_pull_json(NULL, 1000, 'dev-1')::text",
    ] {
        let r = s.query_one(sql, &[]);
        assert!(r.is_ok(), "{sql}: {}", err_text(&r.unwrap_err()));
    }
    // The page as chunks, spilled to a temporary file (allowed on a standby).
    s.batch_execute("SET work_mem = '64kB'; BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let parts: Vec<String> = s
        .query("SELECT c FROM sync_pull_chunks(NULL, 1000, 'dev-1') c", &[])
        .unwrap_or_else(|e| panic!("sync_pull_chunks: {}", err_text(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let whole: String = s
        .query_one("SELECT sync_pull_json(NULL, 1000, 'dev-1')::text", &[])
        .unwrap()
        .get(0);
    s.batch_execute("COMMIT; RESET work_mem").unwrap();
    assert_eq!(parts.concat(), whole);
    let d = Device::new(&mut s, "standby_pull");
    assert!(eventually(60, || {
        d.pull(&mut s);
        let dev = d.rows("SELECT id, title FROM tasks ORDER BY id");
        dev == server_rows(
            &mut p,
            "SELECT to_jsonb(id), to_jsonb(title) FROM tasks ORDER BY id",
        )
    }));
}

fn page(c: &mut Client, cursor: Option<&str>) -> Value {
    c.query_one("SELECT sync_pull($1, 100000)", &[&cursor])
        .unwrap_or_else(|e| panic!("sync_pull: {}", err_text(&e)))
        .get(0)
}

#[test]
fn cursors_move_between_primary_and_standby_without_gaps_or_repeats() {
    let (primary, mut p) = primary_with(
        "CREATE TABLE tasks (id int PRIMARY KEY, n int);
         SELECT sync_enable('tasks');
         INSERT INTO tasks SELECT g, 0 FROM generate_series(1, 10) g;",
    );
    let standby = primary.base_backup().start(Some("standby.signal"));
    let mut s = standby.connect("app");
    assert!(replayed(&mut p, &mut s));
    // A first page from the standby, then the standby stops replaying.
    let mut cursor = page(&mut s, None)["cursor"].as_str().unwrap().to_string();
    s.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    p.batch_execute("UPDATE tasks SET n = 1 WHERE id <= 3")
        .unwrap();
    // The primary is ahead: the device pulls the three updates there.
    let mut seen = Vec::new();
    assert!(eventually(30, || {
        let pg = page(&mut p, Some(&cursor));
        cursor = pg["cursor"].as_str().unwrap().to_string();
        seen.extend(pg["changes"].as_array().unwrap().iter().cloned());
        seen.len() >= 3
    }));
    assert_eq!(seen.len(), 3);
    // The lagging standby answers "behind": no changes, the same cursor.
    let behind = page(&mut s, Some(&cursor));
    assert_eq!(behind["behind"], true, "{behind}");
    assert_eq!(behind["changes"], serde_json::json!([]));
    assert_eq!(behind["cursor"].as_str(), Some(cursor.as_str()));
    assert_eq!(behind["resync_required"], false);
    // Once it has replayed, the standby goes on from the primary's cursor
    // with exactly the changes made since: nothing lost, nothing repeated.
    p.batch_execute("UPDATE tasks SET n = 2 WHERE id = 10")
        .unwrap();
    s.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    assert!(replayed(&mut p, &mut s));
    let mut later = Vec::new();
    assert!(eventually(30, || {
        let pg = page(&mut s, Some(&cursor));
        assert_ne!(pg["resync_required"], true, "{pg}");
        if pg["behind"] != true {
            cursor = pg["cursor"].as_str().unwrap().to_string();
            later.extend(pg["changes"].as_array().unwrap().iter().cloned());
        }
        !later.is_empty()
    }));
    let ids: Vec<Value> = later.iter().map(|c| c["pk"]["id"].clone()).collect();
    assert_eq!(ids, [serde_json::json!(10)]);
}

#[test]
fn a_device_pulling_from_a_standby_while_the_primary_writes_ends_equal() {
    let (primary, mut p) = primary_with(
        "CREATE TABLE tasks (id int PRIMARY KEY, n int);
         SELECT sync_enable('tasks');",
    );
    let standby = primary.base_backup().start(Some("standby.signal"));
    let mut s = standby.connect("app");
    assert!(replayed(&mut p, &mut s));
    let d = Device::new(&mut s, "standby_writers");
    let conn = primary.conn_str("app");
    let writers: Vec<_> = (0..2i32)
        .map(|w| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&conn, postgres::NoTls).unwrap();
                for i in 0..300i32 {
                    let id = (i * 7 + w * 3) % 50;
                    c.execute(
                        "INSERT INTO tasks VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n",
                        &[&id, &i],
                    )
                    .unwrap();
                    if i % 25 == 0 {
                        c.execute("DELETE FROM tasks WHERE id = $1", &[&(i % 50)])
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    while writers.iter().any(|w| !w.is_finished()) {
        d.pull(&mut s);
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(replayed(&mut p, &mut s));
    assert!(eventually(60, || {
        d.pull(&mut s);
        d.rows("SELECT id, n FROM tasks ORDER BY id")
            == server_rows(
                &mut p,
                "SELECT to_jsonb(id), to_jsonb(n) FROM tasks ORDER BY id",
            )
    }));
}
