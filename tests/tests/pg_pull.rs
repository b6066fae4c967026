//! sync_pull against a real cluster: snapshot paging, the splice to
//! incremental pulls, tombstones, and concurrent writers with long
//! transactions (no committed change is ever skipped).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sync_tests::{err_text, eventually, pg_json, TestDb};

/// A client replica built only from pull pages.
#[derive(Default)]
struct Replica {
    cursor: Option<String>,
    rows: BTreeMap<String, Value>,
}

impl Replica {
    /// Pulls until has_more is false; returns the number of changes seen.
    fn pull_all(&mut self, c: &mut postgres::Client, page: i32) -> usize {
        let mut seen = 0;
        loop {
            let p = pg_json(c, "SELECT sync_pull($1, $2)", &[&self.cursor, &page]);
            assert_eq!(p["format"], 1);
            assert_eq!(p["resync_required"], false);
            let changes = p["changes"].as_array().unwrap();
            assert!(changes.len() <= page as usize);
            for ch in changes {
                let id = ch["pk"]["id"].to_string();
                match ch["op"].as_str().unwrap() {
                    "upsert" => {
                        self.rows.insert(id, ch["row"].clone());
                    }
                    "delete" => {
                        self.rows.remove(&id);
                    }
                    other => panic!("unknown op {other}"),
                }
            }
            seen += changes.len();
            self.cursor = Some(p["cursor"].as_str().unwrap().to_string());
            if !p["has_more"].as_bool().unwrap() {
                return seen;
            }
        }
    }
}

fn server_rows(c: &mut postgres::Client, table: &str) -> BTreeMap<String, Value> {
    c.query(
        &format!("SELECT to_jsonb(t) - '_sync_xid' - '_sync_ver' FROM {table} t"),
        &[],
    )
    .unwrap()
    .into_iter()
    .map(|r| {
        let v: Value = r.get(0);
        (v["id"].to_string(), v)
    })
    .collect()
}

fn jsonb_rows_equal(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) {
    assert_eq!(a.len(), b.len(), "row counts differ");
    for (k, v) in a {
        assert_eq!(Some(v), b.get(k), "row {k} differs");
    }
}

#[test]
fn snapshot_paging_and_splice() {
    let db = TestDb::new("pull_splice");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
         INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 2500) g;
         SELECT sync_enable('items');",
    )
    .unwrap();
    let mut r = Replica::default();
    // The first pull pages through the existing rows.
    assert_eq!(r.pull_all(&mut c, 1000), 2500);
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
    // Nothing new: an incremental pull is empty.
    assert_eq!(r.pull_all(&mut c, 1000), 0);
    c.batch_execute(
        "UPDATE items SET qty = qty + 1 WHERE id <= 10;
         DELETE FROM items WHERE id BETWEEN 11 AND 15;
         INSERT INTO items VALUES (9999, 'new', 1);",
    )
    .unwrap();
    // Each row's latest state once: 10 updates, 5 deletes, 1 insert.
    let mut seen = 0;
    assert!(eventually(30, || {
        seen += r.pull_all(&mut c, 3);
        seen >= 16
    }));
    assert_eq!(seen, 16);
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
    // Delete and re-insert in one transaction: tombstone first, then row.
    c.batch_execute(
        "BEGIN; DELETE FROM items WHERE id = 1; INSERT INTO items VALUES (1, 'again', 7); COMMIT;",
    )
    .unwrap();
    assert!(eventually(30, || {
        r.pull_all(&mut c, 1);
        r.rows["1"]["name"] == "again"
    }));
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
}

#[test]
fn open_transaction_is_not_skipped() {
    let db = TestDb::new("pull_open_tx");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text); SELECT sync_enable('items');",
    )
    .unwrap();
    let mut r = Replica::default();
    r.pull_all(&mut c, 100);
    // A transaction takes an xid, writes, and stays open...
    let mut slow = db.connect();
    let mut tx = slow.transaction().unwrap();
    tx.execute("INSERT INTO items VALUES (1, 'slow')", &[])
        .unwrap();
    // ...while later transactions commit.
    c.batch_execute("INSERT INTO items VALUES (2, 'fast')")
        .unwrap();
    r.pull_all(&mut c, 100);
    // The fast row is held back: handing it out would move the cursor past
    // the open transaction.
    assert!(!r.rows.contains_key("1"));
    tx.commit().unwrap();
    assert!(eventually(30, || {
        r.pull_all(&mut c, 100);
        r.rows.len() == 2
    }));
    jsonb_rows_equal(&server_rows(&mut c, "items"), &r.rows);
}

#[test]
fn concurrent_writers_never_lose_a_change() {
    const WRITERS: usize = 8;
    const WRITES_PER_WRITER: usize = 12_500;
    let db = TestDb::new("pull_concurrent");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, n int);
         SELECT sync_enable('items');",
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let conn = db.conn_str();
        handles.push(std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            let mut written = 0;
            let mut i = 0u64;
            while written < WRITES_PER_WRITER {
                i += 1;
                // Some transactions stay open for seconds (writers 0 and 1
                // hold one every 40 batches), others are short batches.
                let mut tx = c.transaction().unwrap();
                let batch = 1 + (i % 50) as usize;
                for k in 0..batch {
                    let id = ((w * 1_000_003 + (i as usize) * 7919 + k * 31) % 20_000) as i32;
                    match (i + k as u64) % 10 {
                        0 => {
                            tx.execute("DELETE FROM items WHERE id = $1", &[&id]).unwrap();
                        }
                        _ => {
                            tx.execute(
                                "INSERT INTO items VALUES ($1, $2, 1) ON CONFLICT (id) DO UPDATE SET name = excluded.name, n = items.n + 1",
                                &[&id, &format!("w{w}-{i}-{k}")],
                            )
                            .unwrap();
                        }
                    }
                }
                written += batch;
                if w < 2 && i.is_multiple_of(40) {
                    std::thread::sleep(Duration::from_millis(500 + (i * 37 % 2000)));
                }
                tx.commit().unwrap();
            }
        }));
    }
    let reader = {
        let conn = db.conn_str();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            let mut r = Replica::default();
            while !stop.load(Ordering::SeqCst) {
                r.pull_all(&mut c, 500);
            }
            r
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let mut r = reader.join().unwrap();
    // Pull after all writers committed, until the horizon passes them.
    let server = server_rows(&mut c, "items");
    eventually(30, || {
        r.pull_all(&mut c, 5000);
        r.rows == server
    });
    assert!(server.len() > 1000);
    jsonb_rows_equal(&server, &r.rows);
}

#[test]
fn bad_cursor_and_page_size_are_clear_errors() {
    let db = TestDb::new("pull_bad");
    let mut c = db.connect();
    let e = c
        .query_one("SELECT sync_pull('not-a-cursor')", &[])
        .unwrap_err();
    assert!(err_text(&e).contains("invalid cursor"), "{e}");
    let e = c.query_one("SELECT sync_pull(NULL, 0)", &[]).unwrap_err();
    assert!(err_text(&e).contains("max_changes must be between"), "{e}");
}

/// Pulls every page from the start (each page's text as it is sent),
/// waiting for rows still above the snapshot horizon.
fn all_pages(c: &mut postgres::Client, want_rows: usize) -> Vec<String> {
    let mut pages = Vec::new();
    let ok = eventually(30, || {
        pages.clear();
        let mut cursor: Option<String> = None;
        let mut rows = 0;
        loop {
            let text: String = c
                .query_one("SELECT sync_pull($1, 1000)::text", &[&cursor])
                .unwrap_or_else(|e| panic!("{}", err_text(&e)))
                .get(0);
            let page: Value = serde_json::from_str(&text).unwrap();
            rows += page["changes"].as_array().unwrap().len();
            cursor = page["cursor"].as_str().map(str::to_string);
            pages.push(text);
            if page["has_more"] != true {
                break;
            }
        }
        rows == want_rows
    });
    assert!(ok, "never saw {want_rows} rows");
    pages
}

/// A page stops at `pg_sync.max_page_size` as well as at `max_changes`,
/// estimated from the stored values without reading them; a row larger
/// than the budget still comes, alone.
#[test]
fn pages_are_bounded_in_bytes_and_a_larger_row_comes_alone() {
    let db = TestDb::new("page_bytes");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, body text, blob bytea);
         SELECT sync_enable('big');
         INSERT INTO big SELECT g, repeat('x', 100000), NULL FROM generate_series(1, 20) g;
         INSERT INTO big VALUES (21, repeat('y', 1000000), NULL);
         INSERT INTO big VALUES (22, 'small', decode(repeat('ab', 60000), 'hex'));
         SET pg_sync.max_page_size = '256kB';",
    )
    .unwrap();
    let pages = all_pages(&mut c, 22);
    let mut seen = Vec::new();
    for text in &pages {
        let page: Value = serde_json::from_str(text).unwrap();
        let n = page["changes"].as_array().unwrap().len();
        assert!(
            n == 1 || text.len() <= 256 * 1024,
            "a page of {n} changes is {} bytes",
            text.len()
        );
        for ch in page["changes"].as_array().unwrap() {
            seen.push(ch["pk"]["id"].as_i64().unwrap());
            if ch["pk"]["id"] == 21 {
                assert_eq!(n, 1, "the 1 MB row comes alone");
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=22).collect::<Vec<_>>());
    // Two 100 kB rows a page: the budget is used, not just respected.
    assert!(pages.len() <= 13, "{} pages", pages.len());
    // Without the setting (16 MB), one page carries them all.
    c.batch_execute("RESET pg_sync.max_page_size").unwrap();
    assert_eq!(all_pages(&mut c, 22).len(), 1);
}

/// Rows of 4 MB each sync with the default settings, a few per page (the
/// report of issue 14 had every first pull fail with out of memory).
#[test]
fn rows_of_megabytes_sync_with_the_default_settings() {
    let db = TestDb::new("page_huge");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE huge (id int PRIMARY KEY, body text);
         SELECT sync_enable('huge');
         INSERT INTO huge SELECT g, repeat(md5(g::text), 131072) FROM generate_series(1, 12) g;",
    )
    .unwrap();
    let d = sync_tests::e2e::Device::new(&mut c, "page_huge");
    let pages = all_pages(&mut c, 12);
    assert!(pages.len() >= 3, "{} pages", pages.len());
    for text in &pages {
        assert!(
            text.len() <= 17 * 1024 * 1024,
            "a page of {} bytes",
            text.len()
        );
    }
    assert!(eventually(30, || {
        d.pull(&mut c);
        d.rows("SELECT count(*) FROM huge WHERE length(body) = 4194304")[0][0] == 12
    }));
}

/// Pulls to the end from `cursor` with `sync_pull_json`, in pages of
/// `page`; returns every page as text.
fn pages_from(c: &mut postgres::Client, cursor: Option<String>, page: i32) -> Vec<String> {
    let mut cursor = cursor;
    let mut out = Vec::new();
    loop {
        let text: String = c
            .query_one("SELECT sync_pull_json($1, $2)::text", &[&cursor, &page])
            .unwrap()
            .get(0);
        let p = sync_core::wire::PullPage::parse(&text).unwrap();
        cursor = Some(p.cursor.clone());
        out.push(text);
        if !p.has_more {
            return out;
        }
        assert!(out.len() < 1000, "pages never end (a position goes back)");
    }
}

/// The changes of a list of pages, in order, one per row whatever the
/// page format.
fn changes_of(pages: &[String], format: u32) -> Vec<sync_core::wire::RowChange> {
    pages
        .iter()
        .flat_map(|t| {
            let p = sync_core::wire::PullPage::parse(t).unwrap();
            assert_eq!(p.format, format, "{t}");
            p.changes
        })
        .collect()
}

/// Pages of format 2 (asked for by the cursor) carry exactly the changes
/// of format 1, page by page: every value type, a dropped column (a hole
/// in the attribute numbers), a table of 63 columns (the most a synced
/// table may have), rows whose columns have different
/// versions, deletes; in fewer bytes.
#[test]
fn format_2_pages_carry_the_same_changes_as_format_1() {
    let db = TestDb::new("pull_format_2");
    let mut c = db.connect();
    let wide_cols: Vec<String> = (1..=62).map(|i| format!("c{i} int")).collect();
    c.batch_execute(&format!(
        "CREATE TABLE kinds (id bigint PRIMARY KEY, gone text, t text, n numeric, r float8,
                             b boolean, ts timestamptz, d date, j jsonb, by bytea, arr text[]);
         ALTER TABLE kinds DROP COLUMN gone;
         SELECT sync_enable('kinds');
         INSERT INTO kinds SELECT g, 'row \"' || g || E'\\n', g * 1.10, CASE WHEN g % 3 = 0 THEN 'NaN'::float8 ELSE -0.0 END,
                                  g % 2 = 0, '2026-11-21T10:00:00.123456+00'::timestamptz + g * interval '1 day',
                                  '2026-01-01'::date + g, jsonb_build_object('g', g, 'big', 12345678901234567890.5),
                                  '\\x00ff'::bytea, ARRAY['a', NULL, 'c']
                           FROM generate_series(1, 25) g;
         UPDATE kinds SET t = 'edited' WHERE id % 4 = 0;
         DELETE FROM kinds WHERE id % 5 = 0;
         CREATE TABLE wide (id int PRIMARY KEY, {});
         SELECT sync_enable('wide');
         INSERT INTO wide (id, c1, c62) SELECT g, g, -g FROM generate_series(1, 7) g;
         UPDATE wide SET c50 = 5 WHERE id = 3;",
        wide_cols.join(", ")
    ))
    .unwrap();
    assert!(eventually(30, || {
        let one = pages_from(&mut c, None, 4);
        let two = pages_from(&mut c, Some(sync_tests::device_cursor()), 4);
        if one.len() != two.len() {
            return false;
        }
        let (a, b) = (changes_of(&one, 1), changes_of(&two, 2));
        // Until every write is below the horizon, pulls may see a part.
        if a.len() != 25 - 5 + 5 + 7 {
            return false;
        }
        assert_eq!(a, b);
        // Deletes, and rows whose columns differ in version, are there.
        assert!(a.iter().any(|ch| ch.op == sync_core::wire::PullOp::Delete));
        assert!(a.iter().any(|ch| ch
            .ver
            .as_ref()
            .is_some_and(|v| v.iter().any(|x| *x != v[0]))));
        assert!(a.iter().any(|ch| ch.table == "wide"));
        let bytes = |p: &[String]| p.iter().map(String::len).sum::<usize>();
        assert!(
            bytes(&two) < bytes(&one),
            "{} vs {}",
            bytes(&two),
            bytes(&one)
        );
        a.len() == 25 - 5 + 5 + 7
    }));
    // The cursor of a sync's last page does not ask for format 2 (a device
    // taken back to a version reading only format 1 keeps working); a
    // device asks again with every pull.
    let two = pages_from(&mut c, Some(sync_tests::device_cursor()), 4);
    let last = sync_core::wire::PullPage::parse(two.last().unwrap()).unwrap();
    c.batch_execute("UPDATE kinds SET n = 1 WHERE id = 1")
        .unwrap();
    assert!(eventually(30, || {
        let next = pages_from(&mut c, Some(last.cursor.clone()), 4);
        let ch = changes_of(&next, 1);
        ch.len() == 1 && ch[0].pk["id"] == 1
    }));
    let asks = sync_core::cursor::Cursor::with_page_format(&last.cursor, 2).unwrap();
    let next = pages_from(&mut c, Some(asks), 4);
    let ch = changes_of(&next, 2);
    assert!(ch.len() == 1 && ch[0].pk["id"] == 1, "{ch:?}");
    // While pages follow one another, each one's cursor still asks.
    let first = pages_from(&mut c, Some(sync_tests::device_cursor()), 4);
    assert!(first.len() > 2);
    for p in &first[..first.len() - 1] {
        let cur = sync_core::wire::PullPage::parse(p).unwrap().cursor;
        assert_eq!(sync_core::cursor::Cursor::decode(&cur).unwrap().w, Some(2));
    }
    let cur = sync_core::wire::PullPage::parse(first.last().unwrap())
        .unwrap()
        .cursor;
    assert_eq!(sync_core::cursor::Cursor::decode(&cur).unwrap().w, None);
}

/// A synced table with an inheritance child: row ids repeat between the
/// two tables, and every page still ends at the right key (a page's last
/// key is read by row id and table), so paging loses no row.
#[test]
fn paging_over_a_table_with_an_inheritance_child_loses_no_row() {
    let db = TestDb::new("pull_inherit");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE parent (id int PRIMARY KEY, v text);
         SELECT sync_enable('parent');
         CREATE TABLE child () INHERITS (parent);
         BEGIN;
         INSERT INTO child SELECT g, 'child' FROM generate_series(101, 110) g;
         INSERT INTO parent SELECT g, 'parent' FROM generate_series(1, 10) g;
         COMMIT;",
    )
    .unwrap();
    let same_tid: i64 = c
        .query_one(
            "SELECT count(*) FROM parent p JOIN child c ON p.ctid = c.ctid WHERE p.tableoid <> c.tableoid",
            &[],
        )
        .unwrap()
        .get(0);
    let same_tid = same_tid
        + c.query_one(
            "SELECT count(*) FROM ONLY parent p JOIN child c ON p.ctid = c.ctid",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0);
    assert!(same_tid > 0, "the two tables share row ids");
    for form in [None, Some(sync_tests::device_cursor())] {
        assert!(eventually(30, || {
            let pages = pages_from(&mut c, form.clone(), 3);
            let fmt = if form.is_some() { 2 } else { 1 };
            let ids: std::collections::BTreeSet<i64> = changes_of(&pages, fmt)
                .iter()
                .map(|ch| ch.pk["id"].as_i64().unwrap())
                .collect();
            ids == (1..=10).chain(101..=110).collect()
        }));
    }
}

/// `pg_sync._ver_compact` (a row's version in a page of format 2) on the
/// edges: no versions at all, attribute numbers past the array or below 1,
/// NULL elements, no attribute numbers, and its refusals.
#[test]
fn the_compact_version_of_a_row() {
    let db = TestDb::new("pull_ver_compact");
    let mut c = db.connect();
    let one = |c: &mut postgres::Client, sql: &str| -> String {
        c.query_one(&format!("SELECT ({sql})::text"), &[])
            .unwrap()
            .get(0)
    };
    let z = "0000000000000000";
    assert_eq!(
        one(&mut c, "pg_sync._ver_compact(NULL, '{1,2}')"),
        format!("\"{z}\"")
    );
    assert_eq!(
        one(&mut c, "pg_sync._ver_compact('{5,5,5}', '{1,3}')"),
        "\"0000000000000005\""
    );
    assert_eq!(
        one(&mut c, "pg_sync._ver_compact('{1,2}', '{1,2,7,0,-1}')"),
        format!("[\"0000000000000001\",\"0000000000000002\",\"{z}\",\"{z}\",\"{z}\"]")
    );
    assert_eq!(
        one(&mut c, "pg_sync._ver_compact('{1,NULL,1}', '{1,2,3}')"),
        format!("[\"0000000000000001\",\"{z}\",\"0000000000000001\"]")
    );
    assert_eq!(
        one(&mut c, "pg_sync._ver_compact('{-1}', '{1}')"),
        "\"ffffffffffffffff\""
    );
    assert_eq!(
        one(&mut c, "pg_sync._ver_compact('{7}', '{}')"),
        format!("\"{z}\"")
    );
    // The same versions as format 1 writes them, when they differ.
    assert_eq!(
        one(&mut c, "pg_sync._ver_compact('{3,4}', '{2,1}')"),
        one(&mut c, "pg_sync._ver_json('{3,4}', '{2,1}')")
    );
    for (sql, want) in [
        ("pg_sync._ver_compact('{1}', NULL)", "attnums is NULL"),
        (
            "pg_sync._ver_compact('{1}', array_fill(1::int2, ARRAY[2000]))",
            "more than a table may have",
        ),
    ] {
        let e = c
            .query_one(&format!("SELECT ({sql})::text"), &[])
            .unwrap_err();
        assert!(err_text(&e).contains(want), "{sql}: {}", err_text(&e));
    }
}

/// The rows of `sync_pull_chunks(cursor, page)`, in order.
fn chunks(c: &mut impl postgres::GenericClient, cursor: &Option<String>, page: i32) -> Vec<String> {
    c.query("SELECT c FROM sync_pull_chunks($1, $2) c", &[cursor, &page])
        .unwrap_or_else(|e| panic!("{}", err_text(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `sync_pull_chunks` is `sync_pull_json`'s page cut into rows of at most
/// 64 kB (a larger row's text is a chunk of its own): concatenated, the
/// same bytes, page after page, in both page formats. Past `work_mem` the
/// chunks go to a temporary file (the backend does not hold the page),
/// and a device syncs from the concatenated chunks.
#[test]
fn chunks_concatenate_to_the_page_and_a_device_syncs_from_them() {
    let db = TestDb::new("pull_chunks");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text, n numeric);
         SELECT sync_enable('notes');
         INSERT INTO notes SELECT g, repeat(md5(g::text), 30) || E'\"\\\\\\n', g * 1.5
                           FROM generate_series(1, 3000) g;
         INSERT INTO notes VALUES (5000, repeat('z', 300000), NULL);
         DELETE FROM notes WHERE id % 7 = 0;
         CREATE TABLE tags (k text PRIMARY KEY, v int);
         SELECT sync_enable('tags');
         INSERT INTO tags SELECT 'k' || g, g FROM generate_series(1, 50) g;",
    )
    .unwrap();
    let live = 3000 - 3000 / 7 + 1 + 50;
    let d = sync_tests::e2e::Device::new(&mut c, "pull_chunks");
    for start in [None, Some(sync_tests::device_cursor())] {
        assert!(eventually(30, || {
            let mut cursor = start.clone();
            let (mut pages, mut upserts) = (0, 0);
            loop {
                // One snapshot for both: the same horizon, so the same page
                // (other databases' transactions move the horizon).
                let mut tx = c
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .start()
                    .unwrap();
                let whole: String = tx
                    .query_one("SELECT sync_pull_json($1, $2)::text", &[&cursor, &1000i32])
                    .unwrap()
                    .get(0);
                let parts = chunks(&mut tx, &cursor, 1000);
                tx.commit().unwrap();
                assert_eq!(parts.concat(), whole, "page {pages}");
                let big = parts.iter().filter(|p| p.len() > 64 * 1024).count();
                assert!(big <= 1, "{big} chunks over 64 kB");
                if big == 1 {
                    let p = parts.iter().find(|p| p.len() > 64 * 1024).unwrap();
                    assert!(p.len() >= 300_000 && p.contains(&"z".repeat(300_000)));
                }
                let page = sync_core::wire::PullPage::parse(&whole).unwrap();
                upserts += page
                    .changes
                    .iter()
                    .filter(|ch| ch.op == sync_core::wire::PullOp::Upsert)
                    .count();
                pages += 1;
                cursor = Some(page.cursor.clone());
                if !page.has_more {
                    break;
                }
            }
            // Until every write is below the horizon (other tests'
            // transactions hold it back), a pull sees a part.
            if upserts != live {
                return false;
            }
            assert!(pages > 3, "{pages} pages");
            true
        }));
    }
    // Past work_mem, the function's result spills to a temporary file.
    c.batch_execute("SET work_mem = '64kB'").unwrap();
    let plan: Value = c
        .query_one(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM sync_pull_chunks(NULL, 5000)",
            &[],
        )
        .unwrap()
        .get(0);
    let written = plan[0]["Plan"]["Temp Written Blocks"].as_i64().unwrap();
    assert!(written > 0, "{plan}");
    c.batch_execute("RESET work_mem").unwrap();
    // A device applies the concatenated chunks, page after page.
    assert!(eventually(30, || {
        loop {
            let cursor: Option<String> =
                d.db.query_row("SELECT sync_cursor()", [], |r| r.get(0))
                    .unwrap();
            let page = chunks(&mut c, &cursor, 700).concat();
            let res = d.call("SELECT sync_apply(?1)", Some(&page));
            if res["has_more"] != true {
                break;
            }
        }
        d.rows("SELECT count(*) FROM notes")[0][0] == live - 50
    }));
    let server = sync_tests::e2e::server_rows(
        &mut c,
        "SELECT to_jsonb(id), to_jsonb(body) FROM notes ORDER BY id",
    );
    let device = d.rows("SELECT id, body FROM notes ORDER BY id");
    assert_eq!(server.len(), device.len());
    assert_eq!(server, device);
    // It runs as the caller: a role that may not read the tables gets
    // a page without their rows.
    c.batch_execute(
        "DO $$ BEGIN CREATE ROLE chunk_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         SET ROLE chunk_reader",
    )
    .unwrap();
    let page = chunks(&mut c, &None, 10000).concat();
    c.batch_execute("RESET ROLE").unwrap();
    let page = sync_core::wire::PullPage::parse(&page).unwrap();
    assert!(page.changes.is_empty(), "{:?}", page.changes.len());
    // Errors are the pull's own; the function also runs in a select list.
    let e = c
        .query("SELECT * FROM sync_pull_chunks('garbage', 10)", &[])
        .unwrap_err();
    assert!(err_text(&e).contains("invalid cursor"), "{e}");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT sync_pull_chunks(NULL, 10)) s",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(n >= 1);
}
