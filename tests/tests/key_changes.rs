//! A primary key changed on the server is a delete of the old key and an
//! insert of the new one, whatever writes it: plain SQL, a composite key, an
//! `ON UPDATE CASCADE` of a foreign key. No device keeps the old key.

use sync_tests::e2e::Device;
use sync_tests::{eventually, TestDb};

fn ids(d: &Device, sql: &str) -> Vec<String> {
    d.rows(sql)
        .into_iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

#[test]
fn a_key_changed_on_the_server_leaves_no_old_key_on_a_device() {
    let db = TestDb::new("keys_single");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE t (id text PRIMARY KEY, v text);
         SELECT sync_enable('t');
         INSERT INTO t VALUES ('a', 'x'), ('b', 'y');",
    )
    .unwrap();
    let d = Device::new(&mut c, "keys_single");
    assert!(eventually(30, || {
        d.pull(&mut c);
        ids(&d, "SELECT id FROM t ORDER BY id") == ["a", "b"]
    }));
    c.batch_execute("UPDATE t SET id = 'a2' WHERE id = 'a'")
        .unwrap();
    assert!(eventually(30, || {
        d.pull(&mut c);
        ids(&d, "SELECT id || ':' || v FROM t ORDER BY id") == ["a2:x", "b:y"]
    }));
    // And back: the key returns, its tombstone is not sent over the row.
    c.batch_execute("UPDATE t SET id = 'a' WHERE id = 'a2'")
        .unwrap();
    assert!(eventually(30, || {
        d.pull(&mut c);
        ids(&d, "SELECT id || ':' || v FROM t ORDER BY id") == ["a:x", "b:y"]
    }));
}

#[test]
fn composite_and_cascaded_key_changes_reach_every_device() {
    let db = TestDb::new("keys_cascade");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE parent (org int, code text, name text, PRIMARY KEY (org, code));
         CREATE TABLE child (org int, code text, n int, note text,
                             PRIMARY KEY (org, code, n),
                             FOREIGN KEY (org, code) REFERENCES parent ON UPDATE CASCADE);
         SELECT sync_enable('parent'); SELECT sync_enable('child');
         INSERT INTO parent VALUES (1, 'p', 'first'), (2, 'q', 'second');
         INSERT INTO child VALUES (1, 'p', 1, 'c1'), (1, 'p', 2, 'c2'), (2, 'q', 1, 'c3');",
    )
    .unwrap();
    let d1 = Device::new(&mut c, "keys_cascade_1");
    let d2 = Device::new(&mut c, "keys_cascade_2");
    for d in [&d1, &d2] {
        assert!(eventually(30, || {
            d.pull(&mut c);
            ids(d, "SELECT org, code, n FROM child ORDER BY 1, 2, 3").len() == 3
        }));
    }
    c.batch_execute("UPDATE parent SET code = 'pp', org = 3 WHERE org = 1 AND code = 'p'")
        .unwrap();
    for d in [&d1, &d2] {
        assert!(eventually(30, || {
            d.pull(&mut c);
            ids(d, "SELECT org, code FROM parent ORDER BY 1, 2") == ["2/q", "3/pp"]
                && ids(d, "SELECT org, code, n, note FROM child ORDER BY 1, 2, 3")
                    == ["2/q/1/c3", "3/pp/1/c1", "3/pp/2/c2"]
        }));
    }
}
