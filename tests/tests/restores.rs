//! A device that synced before a restore or a failover ends equal to the
//! restored server: a cursor from another database history (or from the
//! server's own future) gets `resync_required`, never a silent gap.

use postgres::Client;
use sync_tests::e2e::{server_rows, Device};
use sync_tests::{eventually, Cluster, TestDb};

const SETUP: &str = "CREATE TABLE tasks (id int PRIMARY KEY, title text NOT NULL);
     SELECT sync_enable('tasks');
     INSERT INTO tasks SELECT g, 'task ' || g FROM generate_series(1, 10) g;";

/// The device's tasks and the server's, as comparable rows.
fn same(d: &Device, c: &mut Client) -> bool {
    let dev: Vec<Vec<serde_json::Value>> = d.rows("SELECT id, title FROM tasks ORDER BY id");
    let srv = server_rows(
        c,
        "SELECT to_jsonb(id), to_jsonb(title) FROM tasks ORDER BY id",
    );
    dev == srv
}

/// Pulls until the device equals the server.
fn converge(d: &Device, c: &mut Client) {
    assert!(
        eventually(60, || {
            d.pull(c);
            same(d, c)
        }),
        "device {:?} != server {:?}",
        d.rows("SELECT id, title FROM tasks ORDER BY id"),
        server_rows(
            c,
            "SELECT to_jsonb(id), to_jsonb(title) FROM tasks ORDER BY id"
        )
    );
}

/// Server-side edits made after the restore: five updates, an insert and
/// a second synced table (so the schema version may repeat).
fn edit_after_restore(c: &mut Client) {
    c.batch_execute(
        "UPDATE tasks SET title = title || ' (restored)' WHERE id <= 5;
         INSERT INTO tasks VALUES (100, 'new after restore');
         CREATE TABLE notes (id int PRIMARY KEY, body text);
         SELECT sync_enable('notes');",
    )
    .unwrap();
}

#[test]
fn a_dump_restored_into_a_new_cluster_makes_devices_resync() {
    let db = TestDb::new("restore_dump");
    let mut c = db.connect();
    c.batch_execute(SETUP).unwrap();
    let d = Device::new(&mut c, "restore_dump");
    converge(&d, &mut c);
    // Push the shared cluster's xids well past the new cluster's, so the
    // dump carries rows whose xids the new cluster has not handed out.
    for i in 0..300 {
        c.batch_execute(&format!("UPDATE tasks SET title = 'v{i}' WHERE id = 7"))
            .unwrap();
    }
    converge(&d, &mut c);
    let file = std::env::temp_dir().join(format!("pg_sync_dump_{}.dump", std::process::id()));
    Cluster::get().dump(&db.name, &file);
    let other = Cluster::private();
    other.restore("restored", &file);
    let _ = std::fs::remove_file(&file);
    let mut r = other.connect("restored");
    let synced: i64 = r
        .query_one("SELECT count(*) FROM pg_sync.tables", &[])
        .unwrap()
        .get(0);
    assert_eq!(synced, 1, "the dump keeps which tables are synced");
    let ahead: i64 = r
        .query_one(
            "SELECT count(*) FROM tasks WHERE _sync_xid::text::numeric \
             >= pg_snapshot_xmax(pg_current_snapshot())::text::numeric",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        ahead, 0,
        "restored rows carry xids this cluster has handed out"
    );
    edit_after_restore(&mut r);
    let resyncs_before = resync_count(&d, &mut r);
    assert_eq!(
        resyncs_before, 1,
        "the first pull after the restore must resync"
    );
    converge(&d, &mut r);
    let titles: Vec<String> = r
        .query(
            "SELECT title FROM tasks WHERE id IN (1, 100) ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|x| x.get(0))
        .collect();
    assert_eq!(titles, ["task 1 (restored)", "new after restore"]);
    // The device also took the second table.
    let n: i64 =
        d.db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'notes'",
            [],
            |x| x.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// Pulls once and says whether the server asked for a resync.
fn resync_count(d: &Device, c: &mut Client) -> usize {
    let cursor: Option<String> =
        d.db.query_row("SELECT sync_cursor()", [], |x| x.get(0))
            .unwrap();
    let page: serde_json::Value = c
        .query_one("SELECT sync_pull($1)", &[&cursor])
        .unwrap()
        .get(0);
    usize::from(page["resync_required"] == true)
}

#[test]
fn a_point_in_time_restore_before_the_last_pull_makes_devices_resync() {
    let primary = Cluster::private();
    let mut admin = primary.connect("postgres");
    admin.batch_execute("CREATE DATABASE app").unwrap();
    let mut c = primary.connect("app");
    c.batch_execute(&format!("CREATE EXTENSION pg_sync; {SETUP}"))
        .unwrap();
    let d = Device::new(&mut c, "restore_pitr");
    converge(&d, &mut c);
    let backup = primary.base_backup();
    // After the backup: changes the device pulls, which the restore loses.
    c.batch_execute(
        "UPDATE tasks SET title = 'lost' WHERE id <= 3; DELETE FROM tasks WHERE id = 10;
         INSERT INTO tasks SELECT g, 'lost ' || g FROM generate_series(11, 400) g;",
    )
    .unwrap();
    converge(&d, &mut c);
    drop(c);
    drop(admin);
    primary.shut_down();
    let restored = backup.start(Some("recovery.signal"));
    restored.wait_writable();
    let mut r = restored.connect("app");
    edit_after_restore(&mut r);
    assert_eq!(resync_count(&d, &mut r), 1);
    converge(&d, &mut r);
    let lost: i64 = r
        .query_one("SELECT count(*) FROM tasks WHERE title LIKE 'lost%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(lost, 0);
}

#[test]
fn a_promoted_standby_that_lags_the_device_makes_it_resync() {
    let primary = Cluster::private();
    let mut admin = primary.connect("postgres");
    admin.batch_execute("CREATE DATABASE app").unwrap();
    let mut c = primary.connect("app");
    c.batch_execute(&format!("CREATE EXTENSION pg_sync; {SETUP}"))
        .unwrap();
    let mut standby = primary.base_backup().start(Some("standby.signal"));
    let d = Device::new(&mut c, "restore_failover");
    converge(&d, &mut c);
    // The standby stops receiving; the device pulls what it will never see.
    standby.shut_down();
    c.batch_execute(
        "UPDATE tasks SET title = 'unreplicated' WHERE id <= 4; DELETE FROM tasks WHERE id = 9;",
    )
    .unwrap();
    converge(&d, &mut c);
    drop(c);
    drop(admin);
    primary.shut_down();
    standby.start_again();
    standby.promote();
    standby.wait_writable();
    let mut s = standby.connect("app");
    edit_after_restore(&mut s);
    assert_eq!(resync_count(&d, &mut s), 1);
    converge(&d, &mut s);
    let n: i64 = s
        .query_one(
            "SELECT count(*) FROM tasks WHERE title = 'unreplicated'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
