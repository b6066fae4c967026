//! `ALTER EXTENSION pg_sync UPDATE` from the previous version's SQL keeps
//! synced tables, cursors and data working, and ends with exactly the
//! objects a fresh install of the new version has.

use serde_json::Value;
use sync_tests::{eventually, pg_json, Cluster, TestDb};

fn objects(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend \
         WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e' \
           AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_sync') \
         UNION ALL SELECT 'index ' || indexname || ' ON ' || tablename FROM pg_indexes WHERE schemaname = 'pg_sync' \
         ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn update_from_the_previous_version() {
    let cluster = Cluster::get();
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE upgrade_old").unwrap();
    let mut c = cluster.connect("upgrade_old");
    c.batch_execute(
        "CREATE EXTENSION pg_sync VERSION '0.1.0';
         CREATE TABLE t (id int PRIMARY KEY, v text);
         SELECT sync_enable('t');
         INSERT INTO t VALUES (1, 'before');",
    )
    .unwrap();
    let mut cursor: Option<String> = None;
    assert!(eventually(30, || {
        let p = pg_json(&mut c, "SELECT sync_pull($1)", &[&cursor]);
        cursor = p["cursor"].as_str().map(str::to_string);
        p["changes"].as_array().unwrap().len() == 1
    }));
    // A device asking for pages of format 2 gets format 1 until the
    // catalog has what format 2 needs, then format 2.
    let asks_2 = sync_tests::device_cursor();
    let format = |c: &mut postgres::Client| -> Value {
        pg_json(c, "SELECT sync_pull($1)", &[&asks_2])["format"].clone()
    };
    assert_eq!(format(&mut c), 1);
    c.batch_execute("ALTER EXTENSION pg_sync UPDATE").unwrap();
    let v: String = c
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_sync'",
            &[],
        )
        .unwrap()
        .get(0);
    let expected: String = c
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_sync'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, expected);
    assert_ne!(v, "0.1.0");
    // Backends started before the update may still run triggers that do
    // not raise write marks: pulls do not use them until a restart.
    let trusted: bool = c
        .query_one("SELECT marks_trusted FROM pg_sync.meta", &[])
        .unwrap()
        .get(0);
    assert!(!trusted);
    // Tracking and the old cursor keep working.
    c.batch_execute("UPDATE t SET v = 'after' WHERE id = 1; INSERT INTO t VALUES (2, 'new');")
        .unwrap();
    let mut seen: Vec<Value> = Vec::new();
    assert!(eventually(30, || {
        let p = pg_json(&mut c, "SELECT sync_pull($1)", &[&cursor]);
        cursor = p["cursor"].as_str().map(str::to_string);
        seen.extend(p["changes"].as_array().unwrap().iter().cloned());
        seen.len() >= 2
    }));
    assert_eq!(seen.len(), 2);
    assert_eq!(format(&mut c), 2);
    // Same objects as a fresh install of the new version.
    let fresh = TestDb::new("upgrade_fresh");
    let mut f = fresh.connect();
    assert_eq!(objects(&mut c), objects(&mut f));
}
