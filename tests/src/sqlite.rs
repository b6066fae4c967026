//! SQLite clients with the built `sqlite_sync` extension loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::{json, Map, Value};
use sync_core::Hlc;

/// Path of the built extension: `$SQLITE_SYNC_LIB`, else
/// `target/debug/libsqlite_sync.so` in the workspace.
pub fn lib_path() -> PathBuf {
    if let Ok(p) = std::env::var("SQLITE_SYNC_LIB") {
        return PathBuf::from(p);
    }
    let p = crate::workspace_root().join("target/debug/libsqlite_sync.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --manifest-path sqlite_sync/Cargo.toml` first",
        p.display()
    );
    p
}

/// Loads sqlite_sync into an open connection.
pub fn load(conn: &Connection) {
    // SAFETY: loading our own extension, built from this workspace.
    unsafe {
        conn.load_extension_enable().unwrap();
        conn.load_extension(lib_path(), Some("sqlite3_sqlitesync_init"))
            .unwrap();
        conn.load_extension_disable().unwrap();
    }
}

/// Opens a database file (or `:memory:`) with sqlite_sync loaded.
pub fn open(path: impl AsRef<Path>) -> Connection {
    let conn = Connection::open(path).unwrap();
    load(&conn);
    conn
}

/// Runs a query returning one text value, parsed as JSON.
pub fn json(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> serde_json::Value {
    let s: String = conn
        .query_row(sql, params, |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{sql} returned non-JSON {s:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Client-side test helpers: a tasks schema, wire documents, a fake server.

/// Columns of the test `tasks` table, in schema order, with their types.
pub const TASK_COLS: [(&str, &str); 9] = [
    ("id", "text"),
    ("title", "text"),
    ("done", "boolean"),
    ("priority", "integer"),
    ("estimate", "real"),
    ("due", "timestamptz"),
    ("meta", "json"),
    ("tags", "json"),
    ("data", "blob"),
];

/// The client-test schema: `tasks` (id text pk, title text, done boolean,
/// priority integer, estimate real, due timestamptz, meta json, tags json
/// with strategy set_union, data blob) in the given write mode.
pub fn tasks_schema_mode(version: i64, mode: &str) -> Value {
    let cols: Vec<Value> = TASK_COLS
        .iter()
        .map(|(n, t)| {
            let mut c = json!({"name": n, "type": t, "nullable": *n != "id"});
            if *n == "tags" {
                c["strategy"] = json!("set_union");
            }
            c
        })
        .collect();
    json!({"format": 1, "version": version, "tables": [
        {"name": "tasks", "pk": ["id"], "mode": mode, "on_delete": "delete_wins", "columns": cols}
    ]})
}

/// The client-test schema in optimistic mode.
pub fn tasks_schema(version: i64) -> Value {
    tasks_schema_mode(version, "optimistic")
}

/// An HLC stamp in wire form.
pub fn hlc(ms: u64, counter: u64, tag: u16) -> String {
    Hlc::new(ms, counter, tag).to_string()
}

/// The same stamp for every column of a `tasks` row.
pub fn ver_all(h: &str) -> Vec<String> {
    vec![h.to_string(); TASK_COLS.len()]
}

/// A pull page of schema version `schema_version`.
pub fn page(schema_version: i64, cursor: &str, has_more: bool, changes: Vec<Value>) -> Value {
    json!({"format": 1, "schema_version": schema_version, "cursor": cursor,
           "has_more": has_more, "changes": changes})
}

/// An upsert row change (pk taken from the row's `id`).
pub fn upsert(table: &str, row: Value, ver: &[String]) -> Value {
    json!({"table": table, "op": "upsert", "pk": {"id": row["id"].clone()}, "row": row, "ver": ver})
}

/// A delete row change.
pub fn delete(table: &str, id: &str) -> Value {
    json!({"table": table, "op": "delete", "pk": {"id": id}})
}

/// A full `tasks` row in wire form.
pub fn task(id: &str, title: &str) -> Value {
    json!({"id": id, "title": title, "done": false, "priority": 1, "estimate": 0.5,
           "due": "2026-01-01T00:00:00+00:00", "meta": {"k": 1}, "tags": ["a"], "data": "\\x00ff"})
}

/// A SQLite value of a column as the wire shows it, by logical type.
pub fn wire_value(ty: &str, v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => match ty {
            "boolean" => Value::Bool(i != 0),
            "real" => json!(i as f64),
            "text" | "timestamptz" | "timestamp" | "date" => Value::String(i.to_string()),
            _ => json!(i),
        },
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t).into_owned();
            match ty {
                "json" => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                "blob" => Value::String(format!(
                    "\\x{}",
                    s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
                )),
                _ => Value::String(s),
            }
        }
        ValueRef::Blob(b) => Value::String(format!(
            "\\x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )),
    }
}

/// A client database with sqlite_sync loaded, for tests.
pub struct TestClient {
    /// The connection.
    pub db: Connection,
}

impl TestClient {
    /// A fresh in-memory database with the extension loaded (not initialised).
    pub fn new() -> TestClient {
        TestClient {
            db: open(":memory:"),
        }
    }

    /// A fresh in-memory client initialised with `schema`.
    pub fn with_schema(schema: &Value) -> TestClient {
        let c = TestClient::new();
        c.init(schema);
        c
    }

    /// Runs a statement returning one text value; `Err` carries SQLite's message.
    pub fn try_text(&self, sql: &str, arg: Option<&str>) -> Result<Option<String>, String> {
        let r = match arg {
            Some(a) => self
                .db
                .query_row(sql, [a], |r| r.get::<_, Option<String>>(0)),
            None => self
                .db
                .query_row(sql, [], |r| r.get::<_, Option<String>>(0)),
        };
        r.map_err(|e| e.to_string())
    }

    /// Runs a statement returning JSON text, parsed; panics on error.
    pub fn call(&self, sql: &str, arg: Option<&str>) -> Value {
        let s = self
            .try_text(sql, arg)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql} returned NULL"));
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{sql} returned {s:?}: {e}"))
    }

    /// `sync_init(schema)`.
    pub fn init(&self, schema: &Value) -> Value {
        self.call("SELECT sync_init(?1)", Some(&schema.to_string()))
    }

    /// `sync_changes()`, as text (for exact comparisons) and parsed.
    pub fn changes_text(&self) -> String {
        self.try_text("SELECT sync_changes()", None)
            .unwrap_or_else(|e| panic!("sync_changes: {e}"))
            .expect("sync_changes returned NULL")
    }

    /// `sync_changes()`, parsed.
    pub fn changes(&self) -> Value {
        serde_json::from_str(&self.changes_text()).unwrap()
    }

    /// `sync_ack(result)`.
    pub fn ack(&self, result: &Value) -> Value {
        self.call("SELECT sync_ack(?1)", Some(&result.to_string()))
    }

    /// `sync_apply(page)`.
    pub fn apply(&self, page: &Value) -> Value {
        self.call("SELECT sync_apply(?1)", Some(&page.to_string()))
    }

    /// `sync_status()`.
    pub fn status(&self) -> Value {
        self.call("SELECT sync_status()", None)
    }

    /// `sync_pending(table, pk)`.
    pub fn pending(&self, table: &str, pk: &str) -> i64 {
        self.db
            .query_row("SELECT sync_pending(?1, ?2)", [table, pk], |r| r.get(0))
            .unwrap_or_else(|e| panic!("sync_pending: {e}"))
    }

    /// Runs statements; panics on error.
    pub fn exec(&self, sql: &str) {
        self.db
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// One integer.
    pub fn int(&self, sql: &str) -> i64 {
        self.db
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows of a query as raw JSON (integers, reals, text, blobs as `\x..`).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        let mut stmt = self
            .db
            .prepare(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| Ok(wire_value("", r.get_ref(i)?)))
                .collect::<rusqlite::Result<Vec<Value>>>()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// The visible `tasks` rows in wire form, by id.
    pub fn tasks(&self, table: &str) -> BTreeMap<String, Value> {
        let cols: Vec<&str> = TASK_COLS.iter().map(|(n, _)| *n).collect();
        let sql = format!("SELECT {} FROM {table}", cols.join(", "));
        let mut stmt = self.db.prepare(&sql).unwrap();
        let rows = stmt
            .query_map([], |r| {
                let mut m = Map::new();
                for (i, (n, t)) in TASK_COLS.iter().enumerate() {
                    m.insert(n.to_string(), wire_value(t, r.get_ref(i)?));
                }
                Ok(m)
            })
            .unwrap();
        rows.map(|m| {
            let m = m.unwrap();
            (m["id"].as_str().unwrap().to_string(), Value::Object(m))
        })
        .collect()
    }

    /// Contents of every table (sqlite_sequence excluded), for "nothing
    /// changed" checks.
    pub fn snapshot(&self) -> Vec<(String, Vec<Vec<Value>>)> {
        let names: Vec<String> = {
            let mut st = self
                .db
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence' ORDER BY name")
                .unwrap();
            let v = st
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            v
        };
        let mut out: Vec<(String, Vec<Vec<Value>>)> = names
            .into_iter()
            .map(|n| {
                let rows = self.rows(&format!("SELECT * FROM \"{n}\" ORDER BY 1, 2"));
                (n, rows)
            })
            .collect();
        out.push((
            "schema".into(),
            self.rows("SELECT type, name, sql FROM sqlite_master ORDER BY name"),
        ));
        out
    }
}

impl Default for TestClient {
    fn default() -> Self {
        TestClient::new()
    }
}

/// What the fake server does with one pushed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it as sent.
    Apply,
    /// Reject it (constraint-style), changing nothing.
    Reject,
}

/// The version a write gets over `current`, as pg_sync gives it: the
/// write's stamp when newer, else the next stamp after `current` (so a
/// column's version never goes back).
fn superseding(current: &str, incoming: &str) -> String {
    let parse = |s: &str| s.parse::<Hlc>().unwrap_or(Hlc::ZERO);
    sync_core::merge::superseding_ver(parse(current), parse(incoming)).to_string()
}

/// A server row: values by column and column versions in schema order.
pub type ServerRow = (Map<String, Value>, Vec<String>);

/// A minimal in-memory stand-in for Postgres + pg_sync, for client tests:
/// one table keyed by `id`, changes applied as sent, a change log for pulls.
pub struct FakeServer {
    /// Table name.
    pub table: String,
    /// Column names in schema order.
    pub cols: Vec<String>,
    /// Rows by id: values and column versions.
    pub rows: BTreeMap<String, ServerRow>,
    /// Change log: (id, row after the change or None for a delete).
    pub log: Vec<(String, Option<ServerRow>)>,
    /// Schema version pages are tagged with.
    pub schema_version: i64,
    clock: u64,
    tag: u16,
}

impl FakeServer {
    /// An empty server for `tasks`.
    pub fn tasks() -> FakeServer {
        FakeServer {
            table: "tasks".into(),
            cols: TASK_COLS.iter().map(|(n, _)| n.to_string()).collect(),
            rows: BTreeMap::new(),
            log: Vec::new(),
            schema_version: 1,
            clock: 1_000,
            tag: 0xabc,
        }
    }

    fn next_stamp(&mut self) -> String {
        self.clock += 1;
        Hlc::new(self.clock, 0, self.tag).to_string()
    }

    /// A server-side write of some columns of a row (creating it if absent).
    pub fn write(&mut self, id: &str, cols: Map<String, Value>) {
        let stamp = self.next_stamp();
        let n = self.cols.len();
        let entry = self.rows.entry(id.to_string()).or_insert_with(|| {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            (m, vec![Hlc::ZERO.to_string(); n])
        });
        for (k, v) in cols {
            let i = self.cols.iter().position(|c| *c == k).expect("column");
            entry.0.insert(k, v);
            entry.1[i] = superseding(&entry.1[i], &stamp);
        }
        for (i, c) in self.cols.iter().enumerate() {
            if !entry.0.contains_key(c) {
                entry.0.insert(c.clone(), Value::Null);
                entry.1[i] = stamp.clone();
            }
        }
        let snapshot = entry.clone();
        self.log.push((id.to_string(), Some(snapshot)));
    }

    /// A server-side delete.
    pub fn remove(&mut self, id: &str) {
        if self.rows.remove(id).is_some() {
            self.log.push((id.to_string(), None));
        }
    }

    /// Applies a push batch, deciding each change with `verdict`; returns
    /// the PushResult.
    pub fn push(&mut self, batch: &Value, mut verdict: impl FnMut(&Value) -> Verdict) -> Value {
        let mut results = Vec::new();
        for c in batch["changes"].as_array().unwrap() {
            let id = c["pk"]["id"].as_str().unwrap().to_string();
            let op = c["op"].as_str().unwrap();
            let mut v = verdict(c);
            if v == Verdict::Apply && op == "update" && !self.rows.contains_key(&id) {
                v = Verdict::Reject;
            }
            let mut r = json!({"seq": c["seq"], "table": c["table"], "pk": c["pk"]});
            if v == Verdict::Reject {
                r["status"] = json!("rejected");
                r["reason"] = json!("rejected by the fake server");
                r["constraint"] = json!("fake_check");
                results.push(r);
                continue;
            }
            r["status"] = json!("applied");
            match op {
                "delete" => {
                    self.remove(&id);
                }
                _ => {
                    let n = self.cols.len();
                    let cols = self.cols.clone();
                    let entry = self.rows.entry(id.clone()).or_insert_with(|| {
                        let mut m = Map::new();
                        for col in &cols {
                            m.insert(col.clone(), Value::Null);
                        }
                        (m, vec![Hlc::ZERO.to_string(); n])
                    });
                    for (k, val) in c["cols"].as_object().unwrap() {
                        let i = cols.iter().position(|x| x == k).unwrap();
                        entry.0.insert(k.clone(), val.clone());
                        let incoming = c["ver"][k].as_str().unwrap_or("0000000000000000");
                        entry.1[i] = superseding(&entry.1[i], incoming);
                    }
                    let snapshot = entry.clone();
                    r["row"] = Value::Object(snapshot.0.clone());
                    r["ver"] = json!(snapshot.1.clone());
                    self.log.push((id.clone(), Some(snapshot)));
                }
            }
            results.push(r);
        }
        json!({"format": 1, "client_id": batch["client_id"], "results": results})
    }

    /// A page with every change after `cursor` (the log position), or all
    /// rows from the start when `cursor` is None.
    pub fn pull(&self, cursor: Option<&str>) -> Value {
        let from: usize = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let changes: Vec<Value> = self.log[from..]
            .iter()
            .map(|(id, row)| match row {
                Some((m, ver)) => json!({"table": self.table, "op": "upsert", "pk": {"id": id},
                                         "row": m, "ver": ver}),
                None => json!({"table": self.table, "op": "delete", "pk": {"id": id}}),
            })
            .collect();
        page(
            self.schema_version,
            &self.log.len().to_string(),
            false,
            changes,
        )
    }
}
