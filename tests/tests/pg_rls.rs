//! Row-level security: two tenants pulling through the same table never
//! receive each other's rows or tombstones, and a row moved between tenants
//! leaves one and reaches the other.

use std::collections::BTreeMap;

use serde_json::Value;
use sync_tests::{eventually, pg_json, TestDb};

struct Tenant {
    c: postgres::Client,
    cursor: Option<String>,
    rows: BTreeMap<String, Value>,
    deletes_seen: Vec<String>,
    resyncs: usize,
}

impl Tenant {
    fn connect(db: &TestDb, tenant: &str) -> Tenant {
        let mut c = db.connect();
        c.batch_execute(&format!("SET ROLE app_user; SET app.tenant = '{tenant}'"))
            .unwrap();
        Tenant {
            c,
            cursor: None,
            rows: BTreeMap::new(),
            deletes_seen: Vec::new(),
            resyncs: 0,
        }
    }

    fn pull(&mut self) {
        loop {
            let p = pg_json(&mut self.c, "SELECT sync_pull($1, 1000)", &[&self.cursor]);
            if p["resync_required"] == true {
                // Drop the server state and download what is visible now.
                self.resyncs += 1;
                self.rows.clear();
                self.cursor = None;
                continue;
            }
            for ch in p["changes"].as_array().unwrap() {
                let id = ch["pk"]["id"].as_str().unwrap().to_string();
                if ch["op"] == "upsert" {
                    self.rows.insert(id, ch["row"].clone());
                } else {
                    self.deletes_seen.push(id.clone());
                    self.rows.remove(&id);
                }
            }
            self.cursor = Some(p["cursor"].as_str().unwrap().to_string());
            if p["has_more"] == false {
                return;
            }
        }
    }

    fn ids(&self) -> Vec<String> {
        self.rows.keys().cloned().collect()
    }
}

#[test]
fn tenants_see_only_their_rows_and_tombstones() {
    let db = TestDb::new("rls");
    let mut admin = db.connect();
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE app_user; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             CREATE TABLE docs (id text PRIMARY KEY, tenant text NOT NULL, body text);
             ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_isolation ON docs USING (tenant = current_setting('app.tenant'));
             GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO app_user;
             SELECT sync_enable('docs');
             INSERT INTO docs VALUES ('a1', 'A', 'alpha'), ('a2', 'A', 'alpha 2'), ('b1', 'B', 'beta'), ('b2', 'B', 'beta 2');",
        )
        .unwrap();
    let mut a = Tenant::connect(&db, "A");
    let mut b = Tenant::connect(&db, "B");
    assert!(eventually(30, || {
        a.pull();
        b.pull();
        a.rows.len() == 2 && b.rows.len() == 2
    }));
    assert_eq!(a.ids(), ["a1", "a2"]);
    assert_eq!(b.ids(), ["b1", "b2"]);
    // B deletes one of its rows: A never hears of it.
    b.c.batch_execute("DELETE FROM docs WHERE id = 'b2'")
        .unwrap();
    // A row moves from A to B.
    admin
        .batch_execute("UPDATE docs SET tenant = 'B' WHERE id = 'a2'")
        .unwrap();
    assert!(
        eventually(30, || {
            a.pull();
            b.pull();
            a.ids() == ["a1"] && b.ids() == ["a2", "b1"]
        }),
        "A has {:?}, B has {:?}",
        a.ids(),
        b.ids()
    );
    assert!(
        !a.deletes_seen.contains(&"b2".to_string()),
        "A received B's tombstone"
    );
    assert!(a.deletes_seen.contains(&"a2".to_string()));
    assert!(b.deletes_seen.contains(&"b2".to_string()));
    assert!(a.rows.values().all(|r| r["tenant"] == "A"));
    assert!(b.rows.values().all(|r| r["tenant"] == "B"));
    // A client of A cannot write B's rows through sync_push either.
    let stamp = sync_core::Hlc::new(
        sync_core::hlc::unix_to_epoch_ms(sync_core::hlc::wall_clock_unix_ms()),
        0,
        1,
    )
    .to_string();
    let r = pg_json(
        &mut a.c,
        "SELECT sync_push($1)",
        &[
            &serde_json::json!({"format": 1, "client_id": "a-dev", "changes": [
            {"seq": 1, "table": "docs", "op": "update", "pk": {"id": "b1"}, "cols": {"body": "hacked"}, "hlc": stamp}]}),
        ],
    );
    assert_eq!(r["results"][0]["status"], "rejected", "{r}");
    let body: String = admin
        .query_one("SELECT body FROM docs WHERE id = 'b1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(body, "beta");
}
