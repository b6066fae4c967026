//! Attacks on pg_sync by ordinary login roles, one test per finding of the
//! security review (issue 9). Each test sets up the roles, grants,
//! policies and schemas an attacker would have, runs the attack, and
//! asserts that it fails and that nothing leaked or changed.

use postgres::{Client, NoTls};
use serde_json::{json, Value};
use sync_core::hlc::{node_tag, unix_to_epoch_ms, wall_clock_unix_ms};
use sync_core::Hlc;
use sync_tests::{err_text, pg_json, Cluster, TestDb};

/// A database with a synced table `t (id text, v text, n int)` holding two
/// rows, and login roles `<db>_<name>` for each of `roles`.
struct Scene {
    db: TestDb,
    admin: Client,
}

impl Scene {
    fn new(prefix: &str, roles: &[&str]) -> Scene {
        let db = TestDb::new(prefix);
        let mut admin = db.connect();
        admin
            .batch_execute(
                "CREATE TABLE t (id text PRIMARY KEY, v text, n int);
                 SELECT sync_enable('t');
                 INSERT INTO t VALUES ('a', 'x', 1), ('b', 'y', 2);",
            )
            .unwrap();
        for r in roles {
            let name = format!("{}_{r}", db.name);
            admin
                .batch_execute(&format!(
                    "CREATE ROLE {name} LOGIN; GRANT CREATE ON DATABASE {} TO {name};",
                    db.name
                ))
                .unwrap();
        }
        Scene { db, admin }
    }

    fn role(&self, r: &str) -> String {
        format!("{}_{r}", self.db.name)
    }

    fn login(&self, r: &str) -> Client {
        let s = format!(
            "host=127.0.0.1 port={} user={} dbname={}",
            Cluster::get().port(),
            self.role(r),
            self.db.name
        );
        Client::connect(&s, NoTls).expect("connect as role")
    }

    fn is_superuser(&mut self, r: &str) -> bool {
        self.admin
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
                &[&self.role(r)],
            )
            .unwrap()
            .get(0)
    }

    fn count(&mut self, sql: &str) -> i64 {
        self.admin.query_one(sql, &[]).unwrap().get(0)
    }
}

fn stamp(node: &str) -> String {
    Hlc::new(unix_to_epoch_ms(wall_clock_unix_ms()), 0, node_tag(node)).to_string()
}

/// A function body that makes its caller superuser, if the caller may.
fn escalate(role: &str) -> String {
    format!("ALTER ROLE {role} SUPERUSER")
}

#[test]
fn a_planted_function_in_the_deleters_search_path_runs_with_no_elevated_rights() {
    let mut s = Scene::new("sec_searchpath", &["eve"]);
    let eve = s.role("eve");
    s.admin
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON t TO {eve};
             CREATE SCHEMA {eve} AUTHORIZATION {eve};"
        ))
        .unwrap();
    let mut e = s.login("eve");
    // Every function and operator the tombstone code used to resolve through
    // the caller's search_path, planted with exact-match signatures.
    e.batch_execute(&format!(
        "CREATE FUNCTION {eve}.pg_current_xact_id() RETURNS xid8 LANGUAGE plpgsql AS $$
           BEGIN EXECUTE '{esc}'; RETURN pg_catalog.pg_current_xact_id(); END $$;
         CREATE FUNCTION {eve}.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE plpgsql AS $$
           BEGIN EXECUTE '{esc}'; RETURN pg_catalog.jsonb_build_object($1, $2); END $$;
         CREATE FUNCTION {eve}.to_jsonb(t) RETURNS jsonb LANGUAGE plpgsql AS $$
           BEGIN EXECUTE '{esc}'; RETURN pg_catalog.to_jsonb($1); END $$;
         CREATE FUNCTION {eve}.evil_minus(jsonb, text) RETURNS jsonb LANGUAGE plpgsql AS $$
           BEGIN EXECUTE '{esc}'; RETURN $1 OPERATOR(pg_catalog.-) $2; END $$;
         CREATE OPERATOR {eve}.- (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = {eve}.evil_minus);
         CREATE TEMP TABLE pg_index (indrelid oid, indkey int2vector, indisprimary bool);
         SET search_path = {eve}, pg_catalog;",
        esc = escalate(&eve)
    ))
    .unwrap();
    // A plain delete, a delete through sync_push, and a truncate.
    e.batch_execute("DELETE FROM public.t WHERE id = 'a'")
        .unwrap();
    let r = pg_json(
        &mut e,
        "SELECT public.sync_push($1)",
        &[&json!({"format": 1, "client_id": "eve-dev", "changes": [
            {"seq": 1, "table": "t", "op": "delete", "pk": {"id": "b"}, "hlc": stamp("eve")}]})],
    );
    assert_eq!(r["results"][0]["status"], "applied", "{r}");
    e.batch_execute("INSERT INTO public.t VALUES ('c', 'z', 3); TRUNCATE public.t")
        .unwrap();
    assert!(!s.is_superuser("eve"), "eve became superuser");
    // The tombstones were written, correctly.
    let tombs: Vec<String> = s
        .admin
        .query("SELECT pk FROM pg_sync.tombstones ORDER BY pk", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tombs,
        vec![r#"{"id": "a"}"#, r#"{"id": "b"}"#, r#"{"id": "c"}"#]
    );
}

#[test]
fn a_function_planted_in_public_never_runs_as_the_catalog_owner() {
    let mut s = Scene::new("sec_public", &["mallory", "victim"]);
    let (mallory, victim) = (s.role("mallory"), s.role("victim"));
    s.admin
        .batch_execute(&format!(
            "GRANT CREATE ON SCHEMA public TO {mallory};
             GRANT SELECT, DELETE, UPDATE ON t TO {victim};
             ALTER TABLE t ENABLE ROW LEVEL SECURITY;
             CREATE POLICY all_rows ON t USING (true);"
        ))
        .unwrap();
    // Mallory plants exact-match overloads in public and waits.
    let mut m = s.login("mallory");
    m.batch_execute(&format!(
        "CREATE FUNCTION public.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE plpgsql AS $$
           BEGIN EXECUTE '{esc}'; RETURN pg_catalog.jsonb_build_object($1, $2); END $$;
         GRANT EXECUTE ON FUNCTION public.jsonb_build_object(text, text) TO PUBLIC;",
        esc = escalate(&mallory)
    ))
    .unwrap();
    // An ordinary user with the default search_path deletes a synced row
    // and updates a row of the RLS table (which writes an old-image tombstone).
    let mut v = s.login("victim");
    v.batch_execute("DELETE FROM t WHERE id = 'a'; UPDATE t SET v = 'moved' WHERE id = 'b'")
        .unwrap();
    assert!(!s.is_superuser("mallory"), "mallory became superuser");
    assert_eq!(s.count("SELECT count(*) FROM pg_sync.tombstones"), 2);
}

#[test]
fn no_internal_function_is_executable_by_public_and_definer_code_pins_its_path() {
    let mut s = Scene::new("sec_public_helpers", &["eve"]);
    let eve = s.role("eve");
    // Everything in schema pg_sync that eve (no grants at all) may execute:
    // only the helpers that run as the caller (none reads anything
    // elevated: _ver_json and _ver_compact format versions, _try runs the caller's SQL as
    // the caller, _tomb_visible checks a policy, _write_xid is the default
    // of _sync_xid and raises the write mark of a table the caller may
    // insert into).
    let callable: Vec<String> = s
        .admin
        .query(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'pg_sync' AND has_function_privilege($1, p.oid, 'EXECUTE')
             ORDER BY 1",
            &[&eve],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        callable,
        vec![
            "_tomb_visible",
            "_try",
            "_ver_compact",
            "_ver_json",
            "_write_xid"
        ]
    );
    // Neither of them is SECURITY DEFINER; every definer function pins search_path.
    let loose: i64 = s.count(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'pg_sync' AND p.prosecdef
           AND NOT coalesce(p.proconfig::text LIKE '%search_path=pg_catalog, pg_temp%', false)",
    );
    assert_eq!(loose, 0);
    let definer_callable: i64 = s
        .admin
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'pg_sync' AND p.prosecdef AND has_function_privilege($1, p.oid, 'EXECUTE')",
            &[&eve],
        )
        .unwrap()
        .get(0);
    assert_eq!(definer_callable, 0);
    // The admin entry points are not executable by PUBLIC either.
    let mut e = s.login("eve");
    for sql in [
        "SELECT sync_compact('0 seconds')",
        "SELECT sync_resync_all()",
        "SELECT sync_enable('t')",
        "SELECT sync_disable('t')",
    ] {
        let err = e.batch_execute(sql).unwrap_err();
        assert_eq!(
            err.code().unwrap().code(),
            "42501",
            "{sql}: {}",
            err_text(&err)
        );
    }
    // The catalog tables are not readable or writable directly.
    for sql in [
        "SELECT * FROM pg_sync.conflicts",
        "SELECT * FROM pg_sync.push_results",
        "SELECT * FROM pg_sync.clients",
        "INSERT INTO pg_sync.tombstones (relid, pk, xid, hlc) VALUES ('t'::regclass, '{}', '1', 1)",
        "INSERT INTO pg_sync.conflicts (table_name, pk, strategy, outcome, reason) VALUES ('t', '{}', 'lww', 'x', 'y')",
    ] {
        let err = e.batch_execute(sql).unwrap_err();
        assert_eq!(err.code().unwrap().code(), "42501", "{sql}: {}", err_text(&err));
    }
}

#[test]
fn conflicts_are_invisible_and_unresolvable_to_roles_without_the_row() {
    let mut s = Scene::new("sec_conflicts", &["alice", "eve"]);
    let (alice, eve) = (s.role("alice"), s.role("eve"));
    s.admin
        .batch_execute(&format!(
            "SELECT sync_disable('t');
             SELECT sync_enable('t', '{{\"strategy\": \"manual\"}}');
             ALTER TABLE t ADD COLUMN tenant text NOT NULL DEFAULT 'alice';
             GRANT SELECT, INSERT, UPDATE, DELETE ON t TO {alice}, {eve};
             ALTER TABLE t ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON t USING (tenant = CASE current_user WHEN '{alice}' THEN 'alice' ELSE 'eve' END);
             UPDATE t SET v = 'server secret' WHERE id = 'a';"
        ))
        .unwrap();
    let mut a = s.login("alice");
    let r = pg_json(
        &mut a,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "alice-dev", "changes": [
            {"seq": 1, "table": "t", "op": "update", "pk": {"id": "a"}, "cols": {"v": "alice secret"},
             "base": {"v": "0000000000000001"}, "hlc": stamp("alice")}]})],
    );
    let id = r["results"][0]["conflicts"][0]
        .as_i64()
        .expect("a conflict");
    let mut e = s.login("eve");
    for res in ["keep_server", "use_client"] {
        let err = e
            .query_one("SELECT sync_resolve($1, $2)", &[&id, &res])
            .unwrap_err();
        assert_eq!(
            err_text(&err),
            format!("22023: conflict {id} does not exist")
        );
    }
    let err = e
        .query_one(
            "SELECT sync_resolve($1, 'use_value', '\"eve wins\"')",
            &[&id],
        )
        .unwrap_err();
    assert!(err_text(&err).contains("does not exist"));
    let (resolved, v): (bool, String) = {
        let row = s
            .admin
            .query_one(
                "SELECT resolved_at IS NOT NULL, (SELECT v FROM t WHERE id = 'a') FROM pg_sync.conflicts WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(!resolved);
    assert_eq!(v, "server secret");
    // The conflict records the pushing role; its own role may resolve it.
    let role: String = s
        .admin
        .query_one(
            "SELECT client_role::text FROM pg_sync.conflicts WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(role, alice);
    a.query_one("SELECT sync_resolve($1, 'use_client')", &[&id])
        .unwrap();
    let v: String = s
        .admin
        .query_one("SELECT v FROM t WHERE id = 'a'", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "alice secret");
}

#[test]
fn another_role_cannot_impersonate_a_client_by_its_id() {
    let mut s = Scene::new("sec_clientid", &["alice", "eve"]);
    let (alice, eve) = (s.role("alice"), s.role("eve"));
    s.admin
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON t TO {alice}, {eve};"
        ))
        .unwrap();
    let mut a = s.login("alice");
    let mut e = s.login("eve");
    let change = |seq: i64, id: &str, v: &str| {
        json!({"seq": seq, "table": "t", "op": "insert", "pk": {"id": id},
               "cols": {"id": id, "v": v, "n": seq}, "hlc": stamp("dev")})
    };
    let r = pg_json(
        &mut a,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "alice-dev", "changes": [change(1, "a1", "alice")]})],
    );
    assert_eq!(r["results"][0]["status"], "applied");
    // Eve learns the id (from anywhere) and pre-empts Alice's next seq.
    let r = pg_json(
        &mut e,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "alice-dev", "changes": [change(2, "e2", "eve")]})],
    );
    assert_eq!(r["results"][0]["status"], "applied");
    // Alice's real change 2 is applied, not answered with Eve's result.
    let r = pg_json(
        &mut a,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "alice-dev", "changes": [change(2, "a2", "alice")]})],
    );
    assert_eq!(r["results"][0]["status"], "applied");
    assert_eq!(r["results"][0]["pk"]["id"], "a2");
    let v: String = s
        .admin
        .query_one("SELECT v FROM t WHERE id = 'a2'", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "alice");
    // A retry of Eve's batch gets Eve's stored answer, not Alice's.
    let r = pg_json(
        &mut e,
        "SELECT sync_push($1)",
        &[&json!({"format": 1, "client_id": "alice-dev", "changes": [change(2, "e2", "eve")]})],
    );
    assert_eq!(r["results"][0]["pk"]["id"], "e2");
    // Each role sees only its own clients in the status view.
    let seen: Vec<String> = e
        .query(
            "SELECT role::text FROM pg_sync.status WHERE kind = 'client'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![eve.clone()]);
    let clients = s.count("SELECT count(*) FROM pg_sync.clients WHERE client_id = 'alice-dev'");
    assert_eq!(clients, 2);
}

#[test]
fn reserved_and_colliding_table_names_cannot_be_synced() {
    let s = Scene::new("sec_names", &[]);
    let mut c = s.admin;
    let long = "x".repeat(63);
    for (table, why) in [
        ("sync_clock", "reserved"),
        ("_changes", "reserved"),
        ("_sync_meta", "reserved"),
        ("\"T\"", "up to case"),
        ("t_synced", "_synced"),
        ("t_local", "_local"),
        ("t_pending", "_pending"),
    ] {
        c.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
            .unwrap();
        let err = c
            .batch_execute(&format!("SELECT sync_enable('{table}')"))
            .unwrap_err();
        assert!(err_text(&err).contains(why), "{table}: {}", err_text(&err));
    }
    c.batch_execute(&format!(
        "CREATE TABLE \"{long}\" (id int PRIMARY KEY); SELECT sync_enable('\"{long}\"');"
    ))
    .unwrap();
    let synced: i64 = c
        .query_one("SELECT count(*) FROM pg_sync.tables", &[])
        .unwrap()
        .get(0);
    assert_eq!(synced, 2);
}

#[test]
fn the_status_view_shows_each_role_only_what_it_may_read() {
    let mut s = Scene::new("sec_status", &["reader", "stranger"]);
    let reader = s.role("reader");
    s.admin
        .batch_execute(&format!(
            "CREATE TABLE secret (id int PRIMARY KEY); SELECT sync_enable('secret');
             GRANT SELECT ON t TO {reader};"
        ))
        .unwrap();
    let mut r = s.login("reader");
    pg_json(&mut r, "SELECT sync_pull(NULL, 10, 'reader-dev')", &[]);
    let names = |c: &mut Client| -> Vec<String> {
        c.query(
            "SELECT kind || ':' || name FROM pg_sync.status ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(names(&mut r), vec!["client:reader-dev", "table:t"]);
    let mut st = s.login("stranger");
    assert!(names(&mut st).is_empty());
    assert_eq!(names(&mut s.admin).len(), 3);
}

#[test]
fn a_role_that_may_not_write_a_table_stores_nothing() {
    let mut s = Scene::new("sec_nowrite", &["reader"]);
    let reader = s.role("reader");
    s.admin
        .batch_execute(&format!("GRANT SELECT ON t TO {reader}"))
        .unwrap();
    let mut r = s.login("reader");
    let changes: Vec<Value> = (1..=20_000)
        .map(|i| {
            json!({"seq": i, "table": "t", "op": "update", "pk": {"id": "a"},
                   "cols": {"v": "x"}, "hlc": stamp("r")})
        })
        .collect();
    let err = r
        .query_one(
            "SELECT sync_push($1)",
            &[&json!({"format": 1, "client_id": "flood", "changes": changes})],
        )
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{}", err_text(&err));
    assert!(err_text(&err).contains("may not update table public.t"));
    assert_eq!(s.count("SELECT count(*) FROM pg_sync.push_results"), 0);
    assert_eq!(s.count("SELECT count(*) FROM pg_sync.clients"), 0);
    assert_eq!(s.count("SELECT count(*) FROM pg_sync.conflicts"), 0);
}

#[test]
fn only_policies_of_synced_tables_force_a_resync() {
    let mut s = Scene::new("sec_epoch", &["owner"]);
    let owner = s.role("owner");
    s.admin
        .batch_execute(&format!(
            "CREATE TABLE other (id int PRIMARY KEY) ; ALTER TABLE other OWNER TO {owner};"
        ))
        .unwrap();
    let epoch = |c: &mut Client| -> i64 {
        c.query_one("SELECT epoch FROM pg_sync.meta", &[])
            .unwrap()
            .get(0)
    };
    let before = epoch(&mut s.admin);
    let mut o = s.login("owner");
    o.batch_execute(
        "CREATE POLICY p ON other USING (true); ALTER POLICY p ON other USING (id > 0); DROP POLICY p ON other;",
    )
    .unwrap();
    assert_eq!(epoch(&mut s.admin), before);
    s.admin
        .batch_execute("CREATE POLICY p ON t USING (true)")
        .unwrap();
    assert_eq!(epoch(&mut s.admin), before + 1);
    s.admin.batch_execute("DROP POLICY p ON t").unwrap();
    assert_eq!(epoch(&mut s.admin), before + 2);
}

#[test]
fn hostile_values_in_a_push_get_exact_answers_and_change_nothing_else() {
    let mut s = Scene::new("sec_values", &[]);
    let c = &mut s.admin;
    // seq 0 and negative seqs are refused, before anything happens.
    for seq in [0, -1] {
        let err = c
            .query_one(
                "SELECT sync_push($1)",
                &[&json!({"format": 1, "client_id": "d", "changes": [
                    {"seq": seq, "table": "t", "op": "update", "pk": {"id": "a"}, "cols": {"v": "q"}, "hlc": stamp("d")}]})],
            )
            .unwrap_err();
        assert!(
            err_text(&err).contains("not positive"),
            "{}",
            err_text(&err)
        );
    }
    // 1e400 for an integer column: that change is rejected, the other applies.
    let batch: Value = serde_json::from_str(&format!(
        r#"{{"format": 1, "client_id": "d", "changes": [
            {{"seq": 1, "table": "t", "op": "update", "pk": {{"id": "a"}}, "cols": {{"n": 1e400}}, "hlc": "{h}"}},
            {{"seq": 2, "table": "t", "op": "update", "pk": {{"id": "b"}}, "cols": {{"v": "ok"}}, "hlc": "{h}"}}]}}"#,
        h = stamp("d")
    ))
    .unwrap();
    let r = pg_json(c, "SELECT sync_push($1)", &[&batch]);
    assert_eq!(r["results"][0]["status"], "rejected", "{r}");
    assert!(
        r["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("out of range for type integer"),
        "{r}"
    );
    assert_eq!(r["results"][1]["row"]["v"], "ok");
    // A change rejected for a bad value leaves no conflict record.
    assert_eq!(
        s.count("SELECT count(*) FROM pg_sync.conflicts WHERE seq = 1"),
        0
    );
    let n: i32 = s
        .admin
        .query_one("SELECT n FROM t WHERE id = 'a'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // A negative retention is refused and removes nothing.
    s.admin
        .batch_execute("DELETE FROM t WHERE id = 'b'")
        .unwrap();
    let err = s
        .admin
        .batch_execute("SELECT sync_compact('-1 day')")
        .unwrap_err();
    assert!(err_text(&err).contains("must not be negative"));
    assert_eq!(s.count("SELECT count(*) FROM pg_sync.tombstones"), 1);
}

#[test]
fn errors_never_carry_a_rust_backtrace() {
    // The test cluster runs with RUST_BACKTRACE=full in its environment.
    let s = Scene::new("sec_backtrace", &[]);
    let mut c = s.admin;
    for sql in [
        "SELECT sync_pull('garbage')",
        "SELECT sync_push('{\"format\": 1}')",
        "SELECT sync_pull(NULL, 0)",
        "SELECT sync_enable('t')",
    ] {
        let err = c.batch_execute(sql).unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert!(db.detail().is_none(), "{sql}: detail {:?}", db.detail());
        assert!(!db.message().contains("backtrace"), "{sql}");
    }
}

#[test]
fn numbers_and_keys_reach_the_server_exactly() {
    let mut s = Scene::new("sec_exact", &[]);
    s.admin
        .batch_execute(
            "CREATE TABLE money (id bigint PRIMARY KEY, amount numeric(30,12), big bigint);
             SELECT sync_enable('money');",
        )
        .unwrap();
    let batch: Value = serde_json::from_str(&format!(
        r#"{{"format": 1, "client_id": "d", "changes": [
            {{"seq": 1, "table": "money", "op": "insert", "pk": {{"id": 9007199254740993}},
              "cols": {{"id": 9007199254740993, "amount": 1234567890.012345678901, "big": 9223372036854775807}},
              "hlc": "{h}"}}]}}"#,
        h = stamp("d")
    ))
    .unwrap();
    let r = pg_json(&mut s.admin, "SELECT sync_push($1)", &[&batch]);
    assert_eq!(r["results"][0]["status"], "applied", "{r}");
    let row = s
        .admin
        .query_one("SELECT id::text, amount::text, big::text FROM money", &[])
        .unwrap();
    let got: (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        got,
        (
            "9007199254740993".into(),
            "1234567890.012345678901".into(),
            "9223372036854775807".into()
        )
    );
    // The row echoed in the result is exact too.
    let text = r["results"][0]["row"].to_string();
    assert!(text.contains("1234567890.012345678901"), "{text}");
    assert!(text.contains("9007199254740993"), "{text}");
}

#[test]
fn a_tracking_trigger_created_by_an_attacker_runs_nothing_with_elevated_rights() {
    let mut s = Scene::new("sec_trigger_ddl", &["eve"]);
    let eve = s.role("eve");
    s.admin
        .batch_execute(&format!("CREATE SCHEMA {eve} AUTHORIZATION {eve};"))
        .unwrap();
    let mut e = s.login("eve");
    // Eve's own table looks like a restored synced table, with a trigger
    // that would make her superuser if it ran with elevated rights.
    e.batch_execute(&format!(
        "CREATE TABLE {eve}.bait (id int PRIMARY KEY, _sync_xid xid8);
         INSERT INTO {eve}.bait VALUES (1, '99999999');
         CREATE FUNCTION {eve}.grab() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN EXECUTE '{esc}'; RETURN NEW; END $$;
         CREATE TRIGGER a_grab BEFORE UPDATE ON {eve}.bait FOR EACH ROW EXECUTE FUNCTION {eve}.grab();
         ALTER TABLE {eve}.bait ENABLE ALWAYS TRIGGER a_grab;
         CREATE FUNCTION {eve}.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;",
        esc = escalate(&eve)
    ))
    .unwrap();
    // Creating a trigger named like pg_sync's fires pg_sync's event trigger;
    // it runs as Eve, whose trigger then fails to escalate.
    let _ = e.batch_execute(&format!(
        "CREATE TRIGGER zz_pg_sync_track BEFORE INSERT ON {eve}.bait FOR EACH ROW EXECUTE FUNCTION {eve}.noop()"
    ));
    assert!(!s.is_superuser("eve"), "eve became superuser");
}
