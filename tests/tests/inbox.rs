//! The device's conflict inbox (issue 11), end to end through a real
//! Postgres and two SQLite devices: a losing edit lands in the loser's
//! `_sync_conflicts` with both values, both times and the winner's client
//! and role; `sync_resolve` with `mine` makes the device's value win
//! everywhere and closes the server's record; `theirs` leaves the server's;
//! `sync_conflict_diff` returns the word diff; `sync_status()` reports the
//! push's progress; and a full disk fails each call cleanly.
//!
//! Needs `cargo build --manifest-path sqlite_sync/Cargo.toml` and pg_sync installed.

use postgres::Client;
use rusqlite::ErrorCode;
use serde_json::{json, Value};
use sync_tests::e2e::{server_rows, Device};
use sync_tests::{err_text, eventually, TestDb};

/// A connection acting as `role` (a login role made by the test).
fn as_role(db: &TestDb, role: &str) -> Client {
    let mut c = db.connect();
    c.batch_execute(&format!("SET ROLE {role}")).unwrap();
    c
}

/// A database with `projects` synced, and the roles `<prefix>_alice` and
/// `<prefix>_bob` (roles are the cluster's: each test has its own).
fn server(prefix: &str, options: &str) -> (TestDb, Client) {
    let db = TestDb::new(prefix);
    let mut c = db.connect();
    c.batch_execute(&format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{prefix}_alice') THEN
             CREATE ROLE {prefix}_alice; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{prefix}_bob') THEN
             CREATE ROLE {prefix}_bob; END IF;
         END $$;
         CREATE TABLE projects (id text PRIMARY KEY, title text, notes text);
         SELECT sync_enable('projects', '{options}');
         GRANT SELECT, INSERT, UPDATE, DELETE ON projects TO {prefix}_alice, {prefix}_bob;
         INSERT INTO projects VALUES ('p1', 'Website Redesign', 'draft');"
    ))
    .unwrap();
    (db, c)
}

fn inbox(d: &Device) -> Vec<Value> {
    d.rows(
        "SELECT id, server_id, tbl, pk, col, strategy, outcome, mine, theirs, mine_at, theirs_at, \
         winner_client, winner_role, state FROM _sync_conflicts ORDER BY id",
    )
    .into_iter()
    .map(|r| {
        json!({
            "id": r[0], "server_id": r[1], "tbl": r[2], "pk": r[3], "col": r[4],
            "strategy": r[5], "outcome": r[6], "mine": r[7], "theirs": r[8],
            "mine_at": r[9], "theirs_at": r[10], "winner_client": r[11],
            "winner_role": r[12], "state": r[13],
        })
    })
    .collect()
}

fn title(d: &Device) -> Value {
    d.rows("SELECT title FROM projects WHERE id = 'p1'")[0][0].clone()
}

fn server_title(c: &mut Client) -> Value {
    server_rows(c, "SELECT to_jsonb(title) FROM projects WHERE id = 'p1'")[0][0].clone()
}

/// Two devices edit the title offline; the one whose edit is older pushes
/// second and loses.
fn lose_one(name: &str, c: &mut Client, alice: &mut Client, bob: &mut Client) -> (Device, Device) {
    let a = Device::new(c, &format!("{name}_a"));
    let b = Device::new(c, &format!("{name}_b"));
    // A pull returns what is below the cluster's snapshot horizon, which
    // other tests' transactions may hold back for a moment.
    for (d, conn) in [(&a, &mut *alice), (&b, &mut *bob)] {
        assert!(eventually(30, || {
            d.pull(conn);
            d.rows("SELECT count(*) FROM projects")[0][0] == 1
        }));
    }
    b.db.execute(
        "UPDATE projects SET title = 'Website Relaunch for Q3' WHERE id = 'p1'",
        [],
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.db.execute(
        "UPDATE projects SET title = 'Website Redesign for Q4' WHERE id = 'p1'",
        [],
    )
    .unwrap();
    let ra = a.push(alice);
    assert_eq!(ra["results"][0]["status"], "applied", "{ra}");
    let rb = b.push(bob);
    assert_eq!(rb["results"][0]["status"], "conflict", "{rb}");
    (a, b)
}

#[test]
fn the_losing_device_holds_the_conflict_and_mine_wins_after_one_sync() {
    let (db, mut c) = server("inbox_mine", "{}");
    let (mut alice, mut bob) = (
        as_role(&db, "inbox_mine_alice"),
        as_role(&db, "inbox_mine_bob"),
    );
    let (a, b) = lose_one("inbox_mine", &mut c, &mut alice, &mut bob);
    assert!(inbox(&a).is_empty(), "the winner has nothing to resolve");
    let got = inbox(&b);
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!(e["tbl"], "projects");
    assert_eq!(e["pk"], r#"{"id":"p1"}"#);
    assert_eq!(e["col"], "title");
    assert_eq!(e["mine"], r#""Website Relaunch for Q3""#);
    assert_eq!(e["theirs"], r#""Website Redesign for Q4""#);
    assert_eq!(e["state"], "open");
    let (mine_at, theirs_at) = (
        e["mine_at"].as_str().unwrap(),
        e["theirs_at"].as_str().unwrap(),
    );
    assert!(mine_at < theirs_at, "{mine_at} {theirs_at}");
    assert_eq!(
        e["winner_client"],
        a.call("SELECT json_quote(sync_client_id())", None)
    );
    assert_eq!(e["winner_role"], "inbox_mine_alice");
    // The server's record is the same conflict, naming the same winner.
    let rec = server_rows(
        &mut c,
        &format!(
            "SELECT to_jsonb(winner_client), to_jsonb(winner_role::text), \
             to_jsonb(client_role::text), to_jsonb(resolved_at IS NULL) \
             FROM pg_sync.conflicts WHERE id = {}",
            e["server_id"]
        ),
    );
    assert_eq!(rec[0][0], e["winner_client"]);
    assert_eq!(rec[0][1], "inbox_mine_alice");
    assert_eq!(rec[0][2], "inbox_mine_bob");
    assert_eq!(rec[0][3], true);
    let status = b.call("SELECT sync_status()", None);
    assert_eq!(status["conflicts"], 1, "{status}");
    // The screen of seed 003, as docs/sqlite_sync.md builds it.
    let screen = b.rows(
        "SELECT c.id, p.title AS project,
                printf('Last modified: You (%s) vs. %s (%s)',
                       c.mine_at, coalesce(c.winner_role, 'the server'), c.theirs_at) AS line
         FROM _sync_conflicts c
         JOIN projects p ON p.id = c.pk ->> '$.id'
         WHERE c.tbl = 'projects' AND c.state = 'open'",
    );
    assert_eq!(screen.len(), 1, "{screen:?}");
    let line = screen[0][2].as_str().unwrap();
    assert!(line.starts_with("Last modified: You (20"), "{line}");
    assert!(line.contains(" vs. inbox_mine_alice (20"), "{line}");

    // View Diff: word by word, from theirs to mine.
    let id = e["id"].as_i64().unwrap();
    let diff = b.call(&format!("SELECT sync_conflict_diff({id})"), None);
    assert_eq!(
        diff["edits"],
        json!([
            {"op": "equal", "text": "Website "},
            {"op": "delete", "text": "Redesign"},
            {"op": "insert", "text": "Relaunch"},
            {"op": "equal", "text": " for "},
            {"op": "delete", "text": "Q4"},
            {"op": "insert", "text": "Q3"},
        ]),
        "{diff}"
    );

    // Keep Mine: offline, a local write; one more sync makes it win.
    let r = b.call(&format!("SELECT sync_resolve({id}, 'mine')"), None);
    assert_eq!(r["state"], "resolving", "{r}");
    assert_eq!(title(&b), "Website Relaunch for Q3");
    assert_eq!(b.call("SELECT sync_status()", None)["pending"], 1);
    let pushed = b.push(&mut bob);
    assert_eq!(pushed["results"][0]["status"], "applied", "{pushed}");
    assert_eq!(server_title(&mut c), "Website Relaunch for Q3");
    assert!(eventually(30, || {
        b.pull(&mut bob);
        a.pull(&mut alice);
        title(&a) == "Website Relaunch for Q3" && title(&b) == "Website Relaunch for Q3"
    }));
    assert_eq!(inbox(&b)[0]["state"], "resolved");
    assert_eq!(b.call("SELECT sync_status()", None)["conflicts"], 0);
    // The server's record is closed by the device's resolution.
    let closed = server_rows(
        &mut c,
        &format!(
            "SELECT to_jsonb(resolution->>'resolution'), to_jsonb(resolution->>'by') \
             FROM pg_sync.conflicts WHERE id = {}",
            e["server_id"]
        ),
    );
    assert_eq!(closed[0], vec![json!("device"), json!("inbox_mine_bob")]);
    // A second resolution of a settled conflict is refused.
    let err =
        b.db.query_row(&format!("SELECT sync_resolve({id}, 'theirs')"), [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("already resolved"), "{err}");
}

#[test]
fn theirs_keeps_the_servers_value_and_sends_nothing() {
    let (db, mut c) = server("inbox_theirs", "{}");
    let (mut alice, mut bob) = (
        as_role(&db, "inbox_theirs_alice"),
        as_role(&db, "inbox_theirs_bob"),
    );
    let (_a, b) = lose_one("inbox_theirs", &mut c, &mut alice, &mut bob);
    let id = inbox(&b)[0]["id"].as_i64().unwrap();
    let r = b.call(&format!("SELECT sync_resolve({id}, 'theirs')"), None);
    assert_eq!(r["state"], "resolved", "{r}");
    assert_eq!(title(&b), "Website Redesign for Q4");
    assert_eq!(b.call("SELECT sync_status()", None)["pending"], 0);
    b.push(&mut bob);
    assert_eq!(server_title(&mut c), "Website Redesign for Q4");
    // Bad resolutions name the problem and change nothing.
    for (sql, want) in [
        (
            format!("SELECT sync_resolve({id}, 'ours')"),
            "unknown resolution",
        ),
        (
            "SELECT sync_resolve(99999, 'mine')".to_string(),
            "conflict 99999 does not exist",
        ),
        (
            "SELECT sync_resolve('x', 'mine')".to_string(),
            "must be an integer",
        ),
        (
            format!("SELECT sync_resolve({id}, 'value')"),
            "needs the value",
        ),
    ] {
        let err =
            b.db.query_row(&sql, [], |r| r.get::<_, String>(0))
                .unwrap_err()
                .to_string();
        assert!(err.contains(want), "{sql}: {err}");
    }
}

#[test]
fn a_manual_column_resolved_on_a_device_closes_the_server_record() {
    let (db, mut c) = server(
        "inbox_manual",
        r#"{"columns": {"title": {"strategy": "manual"}}}"#,
    );
    let (mut alice, mut bob) = (
        as_role(&db, "inbox_manual_alice"),
        as_role(&db, "inbox_manual_bob"),
    );
    let (a, b) = lose_one("inbox_manual", &mut c, &mut alice, &mut bob);
    let e = inbox(&b).remove(0);
    assert_eq!(e["strategy"], "manual", "{e}");
    let open: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_sync.conflicts WHERE resolved_at IS NULL AND strategy = 'manual'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(open, 1);
    let id = e["id"].as_i64().unwrap();
    // A value of the app's choosing.
    b.call(
        &format!("SELECT sync_resolve({id}, 'value', 'Website Relaunch (merged)')"),
        None,
    );
    b.push(&mut bob);
    assert_eq!(server_title(&mut c), "Website Relaunch (merged)");
    assert!(eventually(30, || {
        a.pull(&mut alice);
        b.pull(&mut bob);
        title(&a) == "Website Relaunch (merged)"
    }));
    let open: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_sync.conflicts WHERE resolved_at IS NULL AND strategy = 'manual'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "the device's resolution closed the manual record");
}

#[test]
fn push_progress_counts_a_backlog_through_its_batches() {
    let (_db, mut c) = server("inbox_progress", "{}");
    let d = Device::new(&mut c, "inbox_progress");
    d.db.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25)
         INSERT INTO projects (id, title) SELECT 'q' || i, 'task ' || i FROM n;",
    )
    .unwrap();
    let p = |d: &Device| d.call("SELECT sync_status()", None)["push"].clone();
    assert_eq!(
        p(&d),
        json!({"confirmed": 0, "in_flight": 0, "queued": 25, "total": 25})
    );
    let mut seen = Vec::new();
    loop {
        let batch = d.call("SELECT sync_changes(10)", None);
        if batch["changes"].as_array().unwrap().is_empty() {
            break;
        }
        seen.push(p(&d));
        let result: Value = c
            .query_one("SELECT sync_push($1)", &[&batch])
            .unwrap_or_else(|e| panic!("{}", err_text(&e)))
            .get(0);
        d.call("SELECT sync_ack(?1)", Some(&result.to_string()));
        seen.push(p(&d));
    }
    assert_eq!(
        seen,
        vec![
            json!({"confirmed": 0, "in_flight": 10, "queued": 15, "total": 25}),
            json!({"confirmed": 10, "in_flight": 0, "queued": 15, "total": 25}),
            json!({"confirmed": 10, "in_flight": 10, "queued": 5, "total": 25}),
            json!({"confirmed": 20, "in_flight": 0, "queued": 5, "total": 25}),
            json!({"confirmed": 20, "in_flight": 5, "queued": 0, "total": 25}),
            json!({"confirmed": 25, "in_flight": 0, "queued": 0, "total": 25}),
        ]
    );
    // The next write starts a new push.
    d.db.execute("UPDATE projects SET title = 'x' WHERE id = 'q1'", [])
        .unwrap();
    d.call("SELECT sync_changes()", None);
    assert_eq!(
        p(&d),
        json!({"confirmed": 0, "in_flight": 1, "queued": 0, "total": 1})
    );
}

/// The SQLite error of a statement on a device: its code and message.
fn sqlite_err(r: rusqlite::Result<String>) -> (ErrorCode, String) {
    match r {
        Err(rusqlite::Error::SqliteFailure(e, msg)) => (e.code, msg.unwrap_or_default()),
        other => panic!("expected an SQLite error, got {other:?}"),
    }
}

fn page_count(d: &Device) -> i64 {
    d.db.query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap()
}

/// Caps the device's file at its current size plus `extra` pages.
fn cap(d: &Device, extra: i64) {
    let n = page_count(d) + extra;
    d.db.query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
}

#[test]
fn a_full_disk_fails_each_call_cleanly_and_the_next_sync_converges() {
    let (_db, mut c) = server("inbox_full", "{}");
    let d = Device::new(&mut c, "inbox_full");
    assert!(eventually(30, || {
        d.pull(&mut c);
        d.rows("SELECT count(*) FROM projects")[0][0] == 1
    }));
    let big = "x".repeat(3000);
    // 1. sync_apply: a page larger than the space left.
    c.execute(
        "INSERT INTO projects (id, title, notes) SELECT 'big' || g, 'big', $1 FROM generate_series(1, 300) g",
        &[&big],
    )
    .unwrap();
    let count = |d: &Device| {
        d.rows("SELECT count(*) FROM projects")[0][0]
            .as_i64()
            .unwrap()
    };
    let cursor = |d: &Device| d.rows("SELECT sync_cursor()")[0][0].clone();
    let before = (count(&d), cursor(&d));
    cap(&d, 20);
    let mut page = Value::Null;
    assert!(eventually(30, || {
        page = c
            .query_one("SELECT sync_pull_json($1, 1000)", &[&before.1.as_str()])
            .unwrap()
            .get(0);
        sync_tests::page_changes(&page).len() == 300
    }));
    let (code, msg) = sqlite_err(d.db.query_row(
        "SELECT sync_apply(?1)",
        [page.to_string()],
        |r| r.get::<_, String>(0),
    ));
    assert_eq!(code, ErrorCode::DiskFull, "{msg}");
    assert!(
        msg.starts_with("sync_apply: database or disk is full"),
        "{msg}"
    );
    // Nothing was applied, and reads go on.
    assert_eq!((count(&d), cursor(&d)), before);
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);

    // 2. A local write: refused whole by SQLite, with nothing queued.
    let (code, _) = sqlite_err(d.db.query_row(
        "INSERT INTO projects (id, title, notes) VALUES ('local', 'l', ?1) RETURNING id",
        [&big.repeat(30)],
        |r| r.get::<_, String>(0),
    ));
    assert_eq!(code, ErrorCode::DiskFull);
    assert_eq!(
        d.rows("SELECT count(*) FROM projects WHERE id = 'local'")[0][0],
        0
    );
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);

    // 3. sync_ack: the answer does not fit; the batch stays in flight. A
    // trigger on the server fills the notes of the rows the device
    // inserts, so the answer brings 40 rows of 3000 bytes to store.
    c.batch_execute(
        "CREATE FUNCTION fill_notes() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN NEW.notes := repeat('x', 3000); RETURN NEW; END $$;
         CREATE TRIGGER fill_notes BEFORE INSERT ON projects
           FOR EACH ROW WHEN (NEW.id LIKE 'mine%') EXECUTE FUNCTION fill_notes();",
    )
    .unwrap();
    d.db.execute_batch("PRAGMA max_page_count = 1000000")
        .unwrap();
    d.db.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
         INSERT INTO projects (id, title) SELECT 'mine' || i, 'm' FROM n;",
    )
    .unwrap();
    let batch = d.call("SELECT sync_changes()", None);
    let result: Value = c
        .query_one("SELECT sync_push($1)", &[&batch])
        .unwrap()
        .get(0);
    assert_eq!(result["results"].as_array().unwrap().len(), 40, "{result}");
    let queue_before = d.rows("SELECT count(*) FROM _changes")[0][0].clone();
    d.db.execute_batch("VACUUM").unwrap();
    cap(&d, 0);
    let (code, msg) = sqlite_err(d.db.query_row(
        "SELECT sync_ack(?1)",
        [result.to_string()],
        |r| r.get::<_, String>(0),
    ));
    assert_eq!(code, ErrorCode::DiskFull, "{msg}");
    assert!(
        msg.starts_with("sync_ack: database or disk is full"),
        "{msg}"
    );
    assert_eq!(d.rows("SELECT count(*) FROM _changes")[0][0], queue_before);
    assert_eq!(d.call("SELECT sync_status()", None)["in_flight"], true);
    assert_eq!(
        d.rows("SELECT count(*) FROM projects WHERE length(notes) = 3000")[0][0],
        0
    );

    // Space again: the next sync converges.
    d.db.execute_batch("PRAGMA max_page_count = 1000000")
        .unwrap();
    // A pull returns the changes below the cluster's snapshot horizon
    // (other tests' transactions may hold it back): sync until equal.
    let server_n: i64 = c
        .query_one("SELECT count(*) FROM projects", &[])
        .unwrap()
        .get(0);
    let big_n: i64 = c
        .query_one(
            "SELECT count(*) FROM projects WHERE length(notes) = 3000",
            &[],
        )
        .unwrap()
        .get(0);
    let converged = eventually(30, || {
        d.sync(&mut c);
        count(&d) == server_n
            && d.rows("SELECT count(*) FROM projects WHERE length(notes) = 3000")[0][0] == big_n
    });
    assert!(
        converged,
        "server {server_n} rows, {big_n} big; device {} rows, {:?} big, status {}, queue {:?}",
        count(&d),
        d.rows("SELECT count(*) FROM projects WHERE length(notes) = 3000"),
        d.call("SELECT sync_status()", None),
        d.rows("SELECT seq, tbl, pk, op, batch FROM _changes LIMIT 5"),
    );
    assert_eq!(d.call("SELECT sync_status()", None)["pending"], 0);
}

/// A push names, in `resolves`, a conflict record of another row: the
/// server applies the change and leaves the record open (a record closes
/// only with a change of its own row, by a role that may update it).
#[test]
fn a_push_cannot_close_the_conflict_of_another_row() {
    let (db, mut c) = server("inbox_forge", "{}");
    let (mut alice, mut bob) = (
        as_role(&db, "inbox_forge_alice"),
        as_role(&db, "inbox_forge_bob"),
    );
    let (a, b) = lose_one("inbox_forge", &mut c, &mut alice, &mut bob);
    let server_id = inbox(&b)[0]["server_id"].as_i64().unwrap();
    a.db.execute(
        "INSERT INTO projects (id, title) VALUES ('p2', 'other')",
        [],
    )
    .unwrap();
    let mut batch = a.call("SELECT sync_changes()", None);
    batch["changes"][0]["resolves"] = json!([server_id]);
    let result: Value = alice
        .query_one("SELECT sync_push($1)", &[&batch])
        .unwrap_or_else(|e| panic!("{}", err_text(&e)))
        .get(0);
    assert_eq!(result["results"][0]["status"], "applied", "{result}");
    a.call("SELECT sync_ack(?1)", Some(&result.to_string()));
    let open: bool = c
        .query_one(
            "SELECT resolved_at IS NULL FROM pg_sync.conflicts WHERE id = $1",
            &[&server_id],
        )
        .unwrap()
        .get(0);
    assert!(open, "a change of p2 closed the record of p1");
    // A record id that does not exist is ignored the same way.
    a.db.execute("UPDATE projects SET title = 'again' WHERE id = 'p2'", [])
        .unwrap();
    let mut batch = a.call("SELECT sync_changes()", None);
    batch["changes"][0]["resolves"] = json!([987654321]);
    let result: Value = alice
        .query_one("SELECT sync_push($1)", &[&batch])
        .unwrap()
        .get(0);
    assert_eq!(result["results"][0]["status"], "applied", "{result}");
}
