//! `sync_push`: applies a client's batch through the merge rules of
//! `sync_core`, once per `(client_id, seq)`, with a result per change.

use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Map, Value};
use sync_core::hlc::Observed;
use sync_core::merge::{
    self, decide_delete, decide_write_on_deleted, Current, DeleteDecision, Incoming, Outcome,
    WriteOnDeleted,
};
use sync_core::wire::{Change, ChangeResult, Op, PushBatch, PushResult, Status, FORMAT};
use sync_core::{Hlc, SyncError};

use crate::catalog::{self, TableInfo};
use crate::clock;
use crate::error::{or_raise, PgSyncError, Result};
use crate::privileged;
use crate::pull::parse_int_array;
use crate::spi_util::{ident, one, one_cached};
use crate::track::with_delete_hlc;

/// Applies a push batch and returns one result per change.
#[pg_extern]
fn sync_push(batch: JsonB) -> JsonB {
    let result = or_raise(push(&batch.0.to_string()));
    JsonB(serde_json::to_value(result).unwrap_or_default())
}

fn push(json: &str) -> Result<PushResult> {
    let mut batch = PushBatch::parse(json)?;
    let tables: HashMap<String, TableInfo> = catalog::synced_tables()?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    // Changes written against an older (or newer) schema: columns the
    // server no longer has are ignored and reported; a table no longer
    // synced or a key that no longer matches rejects that change alone.
    let mut ignored: Vec<Vec<String>> = Vec::with_capacity(batch.changes.len());
    let mut early: HashMap<usize, (ChangeResult, bool)> = HashMap::new();
    for (i, c) in batch.changes.iter_mut().enumerate() {
        match adapt(&tables, c) {
            Adapted::Apply(cols) => ignored.push(cols),
            Adapted::Reject {
                reason,
                constraint,
                store,
            } => {
                ignored.push(Vec::new());
                let r = ChangeResult {
                    seq: c.seq,
                    table: c.table.clone(),
                    pk: c.pk.clone(),
                    status: Status::Rejected,
                    reason: Some(reason),
                    constraint: Some(constraint.into()),
                    conflicts: Vec::new(),
                    row: None,
                    ver: None,
                    ignored: Vec::new(),
                };
                early.insert(i, (r, store));
            }
        }
    }
    crate::catalog::require_current_catalog()?;
    check_privileges(&tables, &batch)?;
    privileged::client_begin(&batch.client_id)?;
    let seqs: Vec<i64> = batch.changes.iter().map(|c| c.seq).collect();
    let mut stored: HashMap<i64, ChangeResult> = HashMap::new();
    for (seq, text) in privileged::results_get(&batch.client_id, seqs)? {
        let r: ChangeResult = serde_json::from_str(&text)
            .map_err(|e| SyncError::MalformedJson(format!("stored result: {e}")))?;
        stored.insert(seq, r);
    }
    let mut results: Vec<Option<ChangeResult>> = vec![None; batch.changes.len()];
    let mut rest: Vec<usize> = Vec::new();
    let mut fresh: Vec<usize> = Vec::new();
    for (i, c) in batch.changes.iter().enumerate() {
        match (stored.remove(&c.seq), early.remove(&i)) {
            (Some(r), _) => results[i] = Some(r),
            (None, Some((r, store))) => {
                results[i] = Some(r);
                if store {
                    fresh.push(i);
                }
            }
            (None, None) => {
                rest.push(i);
                fresh.push(i);
            }
        }
    }
    fresh.sort_unstable();
    // Changes are applied in rounds in which each row appears once; a later
    // change of the same row waits for the next round.
    while !rest.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (mut round, mut later) = (Vec::new(), Vec::new());
        for i in rest {
            let c = &batch.changes[i];
            if seen.insert((c.table.as_str(), Value::Object(c.pk.clone()).to_string())) {
                round.push(i);
            } else {
                later.push(i);
            }
        }
        bulk::run_round(&tables, &batch, &round, &mut results)?;
        rest = later;
    }
    let results: Vec<ChangeResult> = results
        .into_iter()
        .zip(ignored)
        .map(|(r, ignored)| {
            let mut r = r.expect("every change has a result");
            if !ignored.is_empty() {
                r.ignored = ignored;
            }
            r
        })
        .collect();
    let to_store: Vec<Value> = fresh
        .iter()
        .map(|i| {
            let mut kept = results[*i].clone();
            kept.row = None;
            kept.ver = None;
            serde_json::to_value(&kept).unwrap_or_default()
        })
        .collect();
    if !to_store.is_empty() {
        privileged::results_put(&batch.client_id, Value::Array(to_store).to_string())?;
    }
    let mut columns = std::collections::BTreeMap::new();
    for c in &batch.changes {
        if let Some(t) = tables.get(&c.table) {
            columns
                .entry(t.name.clone())
                .or_insert_with(|| t.columns.iter().map(|col| col.name.clone()).collect());
        }
    }
    Ok(PushResult {
        format: FORMAT,
        client_id: batch.client_id,
        results,
        columns,
    })
}

/// Refuses the whole batch, before anything is stored or applied, when it
/// holds a change the calling role may not make: INSERT for inserts,
/// UPDATE for updates (on any column), DELETE for deletes. Row-level
/// security then decides row by row as the changes are applied.
fn check_privileges(tables: &HashMap<String, TableInfo>, batch: &PushBatch) -> Result<()> {
    let mut needed: Vec<(&str, &'static str)> = Vec::new();
    for c in &batch.changes {
        let privilege = match c.op {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
        };
        if !needed.contains(&(c.table.as_str(), privilege)) {
            needed.push((c.table.as_str(), privilege));
        }
    }
    for (table, privilege) in needed {
        let Some(t) = tables.get(table) else {
            continue;
        };
        let sql = if privilege == "DELETE" {
            "SELECT pg_catalog.has_table_privilege($1, $2)::pg_catalog.text"
        } else {
            "SELECT pg_catalog.has_any_column_privilege($1, $2)::pg_catalog.text"
        };
        if one_cached(sql, &[t.relid.into(), privilege.to_string().into()])?.as_deref()
            != Some("true")
        {
            let role = one_cached("SELECT current_user::pg_catalog.text", &[])?.unwrap_or_default();
            return Err(PgSyncError::PermissionDenied(format!(
                "role {} may not {} table {}; nothing in this batch was applied",
                ident(&role),
                match privilege {
                    "INSERT" => "insert into",
                    "UPDATE" => "update",
                    _ => "delete from",
                },
                t.qualified
            )));
        }
    }
    Ok(())
}

/// What to do with a change, given the schema the server has now.
enum Adapted {
    /// Apply it; these columns of it were dropped (the server has no such
    /// synced column any more) and are reported back.
    Apply(Vec<String>),
    /// Reject it alone; `store` says whether the answer is kept for
    /// retries (not for tables that are not synced: nothing is stored on
    /// their account).
    Reject {
        reason: String,
        constraint: &'static str,
        store: bool,
    },
}

/// Fits a change to the server's schema: a device may write against a
/// schema the server has since changed (a column dropped, a table
/// disabled), and must never be stranded by it.
fn adapt(tables: &HashMap<String, TableInfo>, c: &mut Change) -> Adapted {
    let Some(t) = tables.get(&c.table) else {
        return Adapted::Reject {
            reason: format!(
                "table {:?} is not synced (it may have been disabled); the change was not applied",
                c.table
            ),
            constraint: "table_not_synced",
            store: false,
        };
    };
    let key_mismatch = |why: String| Adapted::Reject {
        reason: format!(
            "{why}; the key of {:?} is ({}), so the change was not applied",
            c.table,
            t.pk.join(", ")
        ),
        constraint: "key_mismatch",
        store: true,
    };
    if let Some(k) = c.pk.keys().find(|k| !t.is_pk(k)) {
        return key_mismatch(format!("{k:?} is not a key column"));
    }
    if let Some(missing) = t.pk.iter().find(|k| !c.pk.contains_key(*k)) {
        return key_mismatch(format!("the key lacks {missing:?}"));
    }
    let mut dropped: Vec<String> = c
        .cols
        .keys()
        .chain(c.ver.keys())
        .chain(c.base.keys())
        .chain(c.base_values.keys())
        .filter(|k| t.column(k).is_none())
        .cloned()
        .collect();
    dropped.sort();
    dropped.dedup();
    for k in &dropped {
        c.cols.remove(k);
        c.ver.remove(k);
        c.base.remove(k);
        c.base_values.remove(k);
    }
    if c.op == Op::Insert && c.cols.is_empty() {
        return Adapted::Reject {
            reason: format!("an insert into {:?} with no column the table has", c.table),
            constraint: "no_columns",
            store: true,
        };
    }
    Adapted::Apply(dropped)
}

/// Result of running one statement in its own subtransaction.
enum Tried {
    Ok(Value),
    Failed {
        message: String,
        constraint: Option<String>,
    },
}

/// Runs one statement of a change (parameters `$1 jsonb, $2 bigint[], $3
/// jsonb`, one jsonb column out) in its own subtransaction, through a plan
/// cached per backend. When it fails, it is run once more through the
/// PL/pgSQL helper `pg_sync._try`, which reports the violated constraint's
/// name (not exposed to Rust error handlers).
fn try_sql(sql: &str, a: Option<String>, b: Option<&[i64]>, c: Option<String>) -> Result<Tried> {
    let json_arg = |v: &Option<String>| -> DatumWithOid<'static> {
        match v.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(v)) => pgrx::JsonB(v).into(),
            _ => DatumWithOid::null::<pgrx::JsonB>(),
        }
    };
    let args = [
        json_arg(&a),
        match b {
            Some(v) => v.to_vec().into(),
            None => DatumWithOid::null::<Vec<i64>>(),
        },
        json_arg(&c),
    ];
    if let Ok(out) = crate::spi_util::subxact(|| crate::spi_util::json_cached(sql, &args)) {
        return Ok(Tried::Ok(out?.unwrap_or(Value::Null)));
    }
    try_sql_diagnosed(sql, a, b, c)
}

fn try_sql_diagnosed(
    sql: &str,
    a: Option<String>,
    b: Option<&[i64]>,
    c: Option<String>,
) -> Result<Tried> {
    let text_or_null = |v: Option<String>| -> DatumWithOid<'static> {
        match v {
            Some(s) => s.into(),
            None => DatumWithOid::null::<String>(),
        }
    };
    let arr = b.map(|v| {
        format!(
            "{{{}}}",
            v.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        )
    });
    let out = one_cached(
        "SELECT pg_sync._try($1, $2::jsonb, $3::bigint[], $4::jsonb)::text",
        &[
            sql.to_string().into(),
            text_or_null(a),
            text_or_null(arr),
            text_or_null(c),
        ],
    )?
    .unwrap_or_else(|| "{}".into());
    let v: Value = serde_json::from_str(&out).unwrap_or_default();
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        let detail = v.get("detail").and_then(Value::as_str);
        return Ok(Tried::Failed {
            message: match detail {
                Some(d) => format!("{err} ({d})"),
                None => err.to_string(),
            },
            constraint: v
                .get("constraint")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Ok(Tried::Ok(v.get("ok").cloned().unwrap_or(Value::Null)))
}

/// One client stamp that ran too far ahead and was clamped.
struct Clamp {
    column: Option<String>,
    original: Hlc,
    clamped: Hlc,
    ahead_ms: u64,
}

struct Applier<'a> {
    t: &'a TableInfo,
    c: &'a Change,
    client: &'a str,
    /// Client stamps clamped for clock skew, by column (`None`: the
    /// change's own stamp), with how far ahead they ran; one record per
    /// change says so.
    clamps: std::cell::RefCell<Vec<Clamp>>,
    /// Bulk mode: the prefetched state and where writes and conflict
    /// records are collected; `None` runs everything at once.
    bulk: Option<Bulk<'a>>,
    /// One-by-one mode: conflict records, written once the change stands.
    pending: std::cell::RefCell<Vec<Value>>,
    /// One-by-one mode: the change's write failed (it is rejected).
    write_failed: std::cell::Cell<bool>,
}

/// What a bulk-mode Applier reads from and writes to.
struct Bulk<'a> {
    /// Index of the change in the batch.
    index: usize,
    /// The row as prefetched (taken by `apply`).
    row: std::cell::RefCell<Option<RowState>>,
    /// The newest tombstone of the key, when the row is missing.
    tomb: Option<Hlc>,
    sink: &'a std::cell::RefCell<Sink>,
}

/// Writes and conflict records collected in bulk mode.
#[derive(Default)]
struct Sink {
    writes: Vec<(usize, Write)>,
    /// (change index, record fields); a placeholder id `-(k + 1)` stands
    /// for entry `k` until the records are inserted.
    conflicts: Vec<(usize, Value)>,
}

/// One write of a change.
struct Write {
    kind: WriteKind,
    /// Column values (and the key) as a JSON object.
    values: Map<String, Value>,
    /// Column versions by attnum.
    ver: Vec<i64>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum WriteKind {
    Insert(Vec<String>),
    Update(Vec<String>),
    Delete(Hlc),
}

/// The row as read or written: values by column and versions by attnum.
struct RowState {
    row: Map<String, Value>,
    ver: Vec<i64>,
}

impl RowState {
    fn from_json(v: &Value) -> Option<RowState> {
        let row = v.get("row")?.as_object()?.clone();
        let ver = match v.get("ver") {
            Some(Value::Array(a)) => a.iter().map(|x| x.as_i64().unwrap_or(0)).collect(),
            Some(Value::String(s)) => parse_int_array(s),
            _ => Vec::new(),
        };
        Some(RowState { row, ver })
    }

    fn ver_of(&self, attnum: usize) -> Hlc {
        Hlc::from_i64(self.ver.get(attnum - 1).copied().unwrap_or(0))
    }
}

impl Applier<'_> {
    fn pk_json(&self) -> String {
        Value::Object(self.c.pk.clone()).to_string()
    }

    fn result(&self, status: Status) -> ChangeResult {
        ChangeResult {
            seq: self.c.seq,
            table: self.c.table.clone(),
            pk: self.c.pk.clone(),
            status,
            reason: None,
            constraint: None,
            conflicts: Vec::new(),
            row: None,
            ver: None,
            ignored: Vec::new(),
        }
    }

    fn rejected(&self, reason: String, constraint: Option<String>) -> ChangeResult {
        let mut r = self.result(Status::Rejected);
        r.reason = Some(reason);
        r.constraint = constraint;
        r
    }

    fn with_state(&self, mut r: ChangeResult, state: Option<&RowState>) -> ChangeResult {
        if let Some(s) = state {
            r.row = Some(s.row.clone());
            r.ver = Some(self.t.columns.iter().map(|c| s.ver_of(c.attnum)).collect());
        }
        r
    }

    fn state_sql(&self, alias: &str) -> String {
        format!(
            "pg_catalog.jsonb_build_object('row', {}, 'ver', {alias}._sync_ver)",
            self.t.row_expr(alias)
        )
    }

    fn where_pk(&self, alias: &str) -> String {
        format!(
            "{} = {}",
            self.t.pk_tuple(alias),
            self.t.pk_from_json_param("$3")
        )
    }

    /// Folds a client stamp (of `column`, or the change's own) into the
    /// server clock; a stamp too far ahead is clamped and noted.
    fn observe(&self, stamp: Hlc, column: Option<&str>) -> Hlc {
        match clock::observe(stamp) {
            Observed::Accepted(h) => h,
            Observed::Clamped {
                original,
                clamped,
                ahead_ms,
            } => {
                self.clamps.borrow_mut().push(Clamp {
                    column: column.map(str::to_string),
                    original,
                    clamped,
                    ahead_ms,
                });
                clamped
            }
        }
    }

    /// One conflict record for all the clamped stamps of a change that
    /// stands, naming the columns concerned; the change's status becomes
    /// `conflict` so the device counts and shows it.
    fn record_clamps(&self, r: &mut ChangeResult) -> Result<()> {
        let clamps = std::mem::take(&mut *self.clamps.borrow_mut());
        if clamps.is_empty() || r.status == Status::Rejected {
            return Ok(());
        }
        let columns: Vec<&str> = self
            .t
            .columns
            .iter()
            .map(|col| col.name.as_str())
            .filter(|name| clamps.iter().any(|c| c.column.as_deref() == Some(*name)))
            .collect();
        let ahead = clamps.iter().map(|c| c.ahead_ms).max().unwrap_or(0);
        let original = clamps.iter().map(|c| c.original).max().unwrap_or(Hlc::ZERO);
        let clamped = clamps.iter().map(|c| c.clamped).max().unwrap_or(Hlc::ZERO);
        let what = if columns.is_empty() {
            "its stamp was clamped".to_string()
        } else {
            format!("the stamps of {} were clamped", columns.join(", "))
        };
        let reason = format!("the client clock ran {ahead} ms ahead of the server; {what}");
        let id = self.record(json!({
            "strategy": "hlc", "outcome": "clamped", "reason": reason,
            "column": if columns.is_empty() { Value::Null } else { json!(columns.join(", ")) },
            "client_ver": original.to_string(), "server_ver": clamped.to_string(),
        }))?;
        r.conflicts.push(id);
        if matches!(r.status, Status::Applied | Status::Merged) {
            r.status = Status::Conflict;
            r.reason = Some(reason);
        }
        Ok(())
    }

    /// Whether the change's key exists although the caller cannot see it:
    /// the row left the rows its policies show it. Asked only when the
    /// caller sees a tombstone of the key (it saw the row before), so it is
    /// no oracle for keys it never saw. Checked as the catalog owner by
    /// key; `false` when the key cannot be looked up that way.
    fn hidden_row_exists(&self) -> bool {
        let sql = format!(
            "SELECT 'true'::pg_catalog.text FROM ONLY {tbl} t WHERE {cols} = {key} LIMIT 1",
            tbl = self.t.qualified,
            cols = self.t.pk_tuple("t"),
            key = self.t.pk_from_json_param("$1"),
        );
        let pk = self.pk_json();
        crate::spi_util::subxact(|| privileged::exists(&sql, pk))
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false)
    }

    /// The rejection of a write whose row the caller cannot see although
    /// it exists, with its own record.
    fn moved_out(&self, stamp: Hlc) -> Result<ChangeResult> {
        let reason = "the row is no longer among the rows this role may see (row-level security); \
                      the change was not applied"
            .to_string();
        let id = self.record(json!({
            "strategy": "visibility", "outcome": "moved_out", "reason": reason,
            "client_value": Value::Object(self.c.cols.clone()), "client_ver": stamp.to_string(),
        }))?;
        let mut r = self.rejected(reason, Some("row_not_visible".into()));
        r.conflicts = vec![id];
        Ok(r)
    }

    fn record(&self, mut fields: Value) -> Result<i64> {
        if let Value::Object(m) = &mut fields {
            m.insert("table".into(), json!(self.t.name));
            m.insert("pk".into(), Value::Object(self.c.pk.clone()));
            m.insert("client_id".into(), json!(self.client));
            m.insert("seq".into(), json!(self.c.seq));
        }
        if let Some(b) = &self.bulk {
            let mut sink = b.sink.borrow_mut();
            sink.conflicts.push((b.index, fields));
            return Ok(-(sink.conflicts.len() as i64));
        }
        let mut pending = self.pending.borrow_mut();
        pending.push(fields);
        Ok(-(pending.len() as i64))
    }

    /// One-by-one mode: applies the change, then writes its conflict
    /// records, unless its write failed (a rejected change leaves no record
    /// of a merge that never happened).
    fn apply_and_record(&self) -> Result<ChangeResult> {
        let mut r = self.apply()?;
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if self.write_failed.get() || pending.is_empty() {
            r.conflicts.retain(|c| *c >= 0);
            return Ok(r);
        }
        let ids = privileged::conflicts_add(Value::Array(pending).to_string())?;
        for c in r.conflicts.iter_mut() {
            if *c < 0 {
                *c = ids.get((-*c - 1) as usize).copied().unwrap_or(0);
            }
        }
        Ok(r)
    }

    fn apply(&self) -> Result<ChangeResult> {
        let read = format!(
            "SELECT {} FROM {} t WHERE {} FOR UPDATE",
            self.state_sql("t"),
            self.t.qualified,
            self.where_pk("t")
        );
        let current = match &self.bulk {
            Some(b) => b.row.borrow_mut().take(),
            None => match try_sql(&read, None, None, Some(self.pk_json()))? {
                Tried::Failed {
                    message,
                    constraint,
                } => return Ok(self.rejected(message, constraint)),
                Tried::Ok(v) => RowState::from_json(&v),
            },
        };
        let mut r = match (current, self.c.op) {
            (None, Op::Delete) => self.result(Status::Applied),
            (None, op) => self.write_missing(op)?,
            (Some(cur), Op::Delete) => self.delete(cur)?,
            (Some(cur), _) => self.update(cur)?,
        };
        self.record_clamps(&mut r)?;
        Ok(r)
    }

    fn tombstone(&self) -> Result<Option<Hlc>> {
        if let Some(b) = &self.bulk {
            return Ok(b.tomb);
        }
        let canonical = format!(
            "SELECT pg_catalog.max(hlc)::text FROM pg_sync.tombstones WHERE relid = $1 AND pk = {}",
            jsonb_pk_from_param(self.t, "$2")
        );
        Ok(
            one(&canonical, &[self.t.relid.into(), self.pk_json().into()])?
                .and_then(|v| v.parse().ok())
                .map(Hlc::from_i64),
        )
    }

    fn write_missing(&self, op: Op) -> Result<ChangeResult> {
        let mut conflicts = Vec::new();
        let stamp = self.observe(self.c.hlc, None);
        if let Some(tomb) = self.tombstone()? {
            if decide_write_on_deleted(self.t.options.on_delete, op == Op::Insert, stamp, tomb)
                == WriteOnDeleted::Reject
            {
                if self.hidden_row_exists() {
                    return self.moved_out(stamp);
                }
                let reason = "the row was deleted on the server; the delete wins over this update"
                    .to_string();
                conflicts.push(self.record(json!({
                    "strategy": "delete_wins", "outcome": "rejected", "reason": reason,
                    "client_value": Value::Object(self.c.cols.clone()),
                    "server_ver": tomb.to_string(), "client_ver": stamp.to_string(),
                }))?);
                let mut r = self.rejected(reason, None);
                r.conflicts = conflicts;
                return Ok(r);
            }
        } else if op == Op::Update {
            // No tombstone this role may see: it never saw the row, and is
            // not told whether the key exists.
            return Ok(self.rejected(
                "the row does not exist on the server (never synced, hidden by row-level security, or its tombstone was compacted)".into(),
                None,
            ));
        }
        let mut ver = vec![0i64; self.t.columns.iter().map(|c| c.attnum).max().unwrap_or(0)];
        for col in &self.t.columns {
            let s = match self.c.ver.get(&col.name) {
                Some(v) => self.observe(*v, Some(&col.name)),
                None => stamp,
            };
            ver[col.attnum - 1] = s.as_i64();
        }
        // A NULL for a NOT NULL column with a default (typically a column the
        // server added after the client wrote the row) takes the default.
        let cols_in: Map<String, Value> = self
            .c
            .cols
            .iter()
            .filter(|(k, v)| {
                !(v.is_null()
                    && self
                        .t
                        .column(k)
                        .is_some_and(|c| !c.nullable && c.has_default))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let names: Vec<&String> = cols_in.keys().collect();
        let cols: Vec<String> = names.iter().map(|n| ident(n)).collect();
        let vals: Vec<String> = names.iter().map(|n| format!("r.{}", ident(n))).collect();
        let sql = format!(
            "INSERT INTO {tbl} AS t ({cols}, _sync_ver) SELECT {vals}, $2 \
             FROM pg_catalog.jsonb_populate_record(NULL::{tbl}, $1) r RETURNING {state}",
            tbl = self.t.qualified,
            cols = cols.join(", "),
            vals = vals.join(", "),
            state = self.state_sql("t"),
        );
        let tried = match &self.bulk {
            Some(b) => self.defer(
                b,
                WriteKind::Insert(cols_in.keys().cloned().collect()),
                cols_in.clone(),
                ver,
            ),
            None => {
                let values = Value::Object(cols_in.clone()).to_string();
                try_sql(&sql, Some(values), Some(&ver), Some(self.pk_json()))?
            }
        };
        Ok(self.written(tried, self.applied_or_conflict(conflicts)))
    }

    fn delete(&self, cur: RowState) -> Result<ChangeResult> {
        let mut conflicts = Vec::new();
        let stamp = self.observe(self.c.hlc, None);
        let changed: Vec<String> = self
            .t
            .columns
            .iter()
            .filter(|c| {
                self.c
                    .base
                    .get(&c.name)
                    .is_some_and(|base| cur.ver_of(c.attnum) > *base)
            })
            .map(|c| c.name.clone())
            .collect();
        match decide_delete(self.t.options.on_delete, changed) {
            DeleteDecision::KeepRow(cols) => {
                conflicts.push(self.record(json!({
                    "strategy": "resurrect", "outcome": "kept_row",
                    "reason": format!("the row was updated concurrently ({}); the update wins over this delete", cols.join(", ")),
                    "server_value": Value::Object(cur.row.clone()), "client_ver": stamp.to_string(),
                }))?);
                let mut r = self.result(Status::Conflict);
                r.reason = Some("concurrent update kept the row".into());
                r.conflicts = conflicts;
                Ok(self.with_state(r, Some(&cur)))
            }
            decision => {
                if let DeleteDecision::DeleteOverUpdates(cols) = &decision {
                    conflicts.push(self.record(json!({
                        "strategy": "delete_wins", "outcome": "deleted",
                        "reason": format!("the delete won over concurrent updates of {}", cols.join(", ")),
                        "server_value": Value::Object(cur.row.clone()), "client_ver": stamp.to_string(),
                    }))?);
                }
                let sql = format!(
                    "DELETE FROM {} t WHERE {} RETURNING '{{}}'::jsonb",
                    self.t.qualified,
                    self.where_pk("t")
                );
                let tried = match &self.bulk {
                    Some(b) => self.defer(b, WriteKind::Delete(stamp), Map::new(), Vec::new()),
                    None => {
                        with_delete_hlc(stamp, || try_sql(&sql, None, None, Some(self.pk_json())))?
                    }
                };
                Ok(self.written(tried, self.applied_or_conflict(conflicts)))
            }
        }
    }

    fn update(&self, cur: RowState) -> Result<ChangeResult> {
        let mut conflicts = Vec::new();
        let mut new_ver = cur.ver.clone();
        let width = self.t.columns.iter().map(|c| c.attnum).max().unwrap_or(0);
        if new_ver.len() < width {
            new_ver.resize(width, 0);
        }
        let mut writes: Map<String, Value> = Map::new();
        let mut merged_any = false;
        let mut ver_changed = false;
        let change_stamp = self.observe(self.c.hlc, None);
        for (name, value) in &self.c.cols {
            if self.t.is_pk(name) {
                continue;
            }
            let col = self.t.column(name).expect("validated");
            let stamp = match self.c.ver.get(name) {
                Some(v) => self.observe(*v, Some(name)),
                None => change_stamp,
            };
            let cur_value = catalog::field(&cur.row, name);
            let cur_ver = cur.ver_of(col.attnum);
            let m = merge::merge_column(
                col.strategy,
                Current {
                    value: cur_value,
                    ver: cur_ver,
                },
                Incoming {
                    value,
                    ver: stamp,
                    base_ver: self.c.base.get(name).copied().unwrap_or(Hlc::ZERO),
                    base_value: self.c.base_values.get(name),
                },
            );
            if let Some(reason) = &m.conflict {
                let outcome = match m.outcome {
                    Outcome::Applied | Outcome::Merged => "client_value_won",
                    Outcome::Unchanged => "server_value_kept",
                    Outcome::Rejected => "rejected",
                    Outcome::Pending => "pending",
                };
                conflicts.push(self.record(json!({
                    "column": name, "strategy": col.strategy.name(), "outcome": outcome,
                    "reason": reason, "server_value": cur_value, "client_value": value,
                    "server_ver": cur_ver.to_string(), "client_ver": stamp.to_string(),
                }))?);
            }
            merged_any |= m.outcome == Outcome::Merged;
            if let Some((v, ver)) = m.write {
                if v != *cur_value {
                    writes.insert(name.clone(), v);
                }
                new_ver[col.attnum - 1] = ver.as_i64();
                ver_changed = true;
            }
        }
        let status = if !conflicts.is_empty() {
            Status::Conflict
        } else if merged_any {
            Status::Merged
        } else {
            Status::Applied
        };
        if !ver_changed {
            return Ok(self.with_state(self.status_result(status, conflicts), Some(&cur)));
        }
        let sets: Vec<String> = writes
            .keys()
            .map(|n| format!("{} = r.{}", ident(n), ident(n)))
            .chain(std::iter::once("_sync_ver = $2".to_string()))
            .collect();
        let sql = format!(
            "UPDATE {tbl} t SET {sets} FROM pg_catalog.jsonb_populate_record(NULL::{tbl}, $1) r \
             WHERE {pk} RETURNING {state}",
            tbl = self.t.qualified,
            sets = sets.join(", "),
            pk = self.where_pk("t"),
            state = self.state_sql("t"),
        );
        let tried = match &self.bulk {
            Some(b) => self.defer(
                b,
                WriteKind::Update(writes.keys().cloned().collect()),
                writes,
                new_ver,
            ),
            None => try_sql(
                &sql,
                Some(Value::Object(writes).to_string()),
                Some(&new_ver),
                Some(self.pk_json()),
            )?,
        };
        Ok(self.written(tried, self.status_result(status, conflicts)))
    }

    /// The result of a change whose write ran as `tried`: rejected with the
    /// failure (keeping the conflicts recorded), else `ok` with the row the
    /// write returned, if any.
    fn written(&self, tried: Tried, ok: ChangeResult) -> ChangeResult {
        match tried {
            Tried::Failed {
                message,
                constraint,
            } => {
                self.write_failed.set(true);
                self.rejected(message, constraint)
            }
            Tried::Ok(v) => self.with_state(ok, RowState::from_json(&v).as_ref()),
        }
    }

    /// `applied`, or `conflict` when conflicts were recorded.
    fn applied_or_conflict(&self, conflicts: Vec<i64>) -> ChangeResult {
        let mut r = self.result(if conflicts.is_empty() {
            Status::Applied
        } else {
            Status::Conflict
        });
        r.conflicts = conflicts;
        r
    }

    /// Bulk mode: queues a write; its effect (and the row it leaves) is
    /// filled in when the queue runs.
    fn defer(
        &self,
        b: &Bulk<'_>,
        kind: WriteKind,
        mut values: Map<String, Value>,
        ver: Vec<i64>,
    ) -> Tried {
        for (k, v) in &self.c.pk {
            values.insert(k.clone(), v.clone());
        }
        b.sink
            .borrow_mut()
            .writes
            .push((b.index, Write { kind, values, ver }));
        Tried::Ok(Value::Null)
    }

    fn status_result(&self, status: Status, conflicts: Vec<i64>) -> ChangeResult {
        let mut r = self.result(status);
        if !conflicts.is_empty() {
            r.reason = Some("concurrent changes; see pg_sync.conflicts".into());
        }
        r.conflicts = conflicts;
        r
    }
}

/// `pg_catalog.jsonb_build_object('k', ($n::jsonb->>'k')::type, ...)`: a key in the
/// same canonical form the tombstone trigger stores.
fn jsonb_pk_from_param(t: &TableInfo, param: &str) -> String {
    let parts: Vec<String> =
        t.pk.iter()
            .map(|k| {
                let ty = t.column(k).map(|c| c.sql_type.as_str()).unwrap_or("text");
                format!(
                    "{}, ({param}::jsonb->>{})::{ty}",
                    crate::spi_util::literal(k),
                    crate::spi_util::literal(k)
                )
            })
            .collect();
    format!("pg_catalog.jsonb_build_object({})::text", parts.join(", "))
}

/// Bulk application: a round's rows are read (and locked) with one
/// statement per table, every change is decided by the same `Applier` as
/// the one-by-one path, and the resulting writes run as one statement per
/// table and kind of write, each in its own subtransaction. A statement that
/// fails (a constraint, a bad value) is rolled back and its changes are
/// applied one by one, so each gets its own exact result.
mod bulk {
    use std::cell::RefCell;
    use std::collections::{HashMap, HashSet};

    use serde_json::{json, Value};
    use sync_core::wire::{ChangeResult, PushBatch};
    use sync_core::Hlc;

    use super::{Applier, Bulk, RowState, Sink, WriteKind};
    use crate::catalog::TableInfo;
    use crate::error::Result;
    use crate::spi_util::{ident, rows_cached, subxact};
    use crate::track::with_delete_hlc;

    /// The rows of parameter `$1` (a JSON array as text) as records of the
    /// table, numbered. `json` is lexed once as it is read; `jsonb` would be
    /// built into a tree first.
    fn recordset(t: &TableInfo) -> String {
        format!(
            "ROWS FROM (pg_catalog.json_populate_recordset(NULL::{tbl}, $1::json)) WITH ORDINALITY AS r",
            tbl = t.qualified
        )
    }

    /// A row's state (values and versions) as JSON text.
    fn state_text(t: &TableInfo) -> String {
        format!(
            "pg_catalog.json_build_object('row', {}, 'ver', t._sync_ver)::text",
            t.row_expr("t")
        )
    }

    fn text_arg(v: Value) -> pgrx::datum::DatumWithOid<'static> {
        v.to_string().into()
    }

    fn join_on(t: &TableInfo) -> String {
        format!("{} = {}", t.pk_tuple("t"), t.pk_tuple("r"))
    }

    fn ordinal(s: &Option<String>) -> usize {
        s.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Reads and locks the rows of `keys`; for keys without a row, the
    /// newest tombstone. `None` when the keys cannot even be read (a value
    /// of the wrong type): the caller applies those changes one by one.
    #[allow(clippy::type_complexity)]
    fn prefetch(
        t: &TableInfo,
        keys: Vec<Value>,
    ) -> Result<Option<Vec<(Option<RowState>, Option<Hlc>)>>> {
        let n = keys.len();
        let read = format!(
            "SELECT r.ordinality::text, {state} FROM {rs} JOIN {tbl} t ON {on} \
             ORDER BY {tpk} FOR UPDATE OF t",
            state = state_text(t),
            rs = recordset(t),
            tbl = t.qualified,
            on = join_on(t),
            tpk = t.pk_tuple("t"),
        );
        let arg = Value::Array(keys.clone());
        let found = match subxact(|| rows_cached(&read, &[text_arg(arg)])) {
            Ok(r) => r?,
            Err(_) => return Ok(None),
        };
        let mut out: Vec<(Option<RowState>, Option<Hlc>)> = (0..n).map(|_| (None, None)).collect();
        for row in found {
            let k = ordinal(&row[0]);
            if (1..=n).contains(&k) {
                let v: Value =
                    serde_json::from_str(row[1].as_deref().unwrap_or("{}")).unwrap_or_default();
                out[k - 1].0 = RowState::from_json(&v);
            }
        }
        let missing: Vec<usize> = (0..n).filter(|i| out[*i].0.is_none()).collect();
        if !missing.is_empty() {
            let canonical: Vec<String> =
                t.pk.iter()
                    .map(|k| format!("{}, r.{}", crate::spi_util::literal(k), ident(k)))
                    .collect();
            let sql = format!(
                "SELECT r.ordinality::text, pg_catalog.max(d.hlc)::text FROM {rs} JOIN pg_sync.tombstones d \
                 ON d.relid = {relid} AND d.pk = pg_catalog.jsonb_build_object({canon})::text GROUP BY r.ordinality",
                rs = recordset(t),
                relid = u32::from(t.relid),
                canon = canonical.join(", "),
            );
            let arg = pgrx::JsonB(Value::Array(
                missing.iter().map(|i| keys[*i].clone()).collect(),
            ));
            for row in rows_cached(&sql, &[arg.into()])? {
                let k = ordinal(&row[0]);
                if (1..=missing.len()).contains(&k) {
                    out[missing[k - 1]].1 = row[1]
                        .as_deref()
                        .and_then(|v| v.parse().ok())
                        .map(Hlc::from_i64);
                }
            }
        }
        Ok(Some(out))
    }

    /// Runs one kind of write for many rows of a table; returns the row
    /// state after the write by position, or `None` when the statement failed.
    fn run_group(
        t: &TableInfo,
        kind: &WriteKind,
        rows: Vec<Value>,
        delete_hlc: Hlc,
    ) -> Result<Option<HashMap<usize, RowState>>> {
        let n = rows.len();
        let payload = Value::Array(rows).to_string();
        let arg = || -> pgrx::datum::DatumWithOid<'static> { payload.clone().into() };
        let fetch_states = format!(
            "SELECT r.ordinality::text, {state} FROM {rs} JOIN {tbl} t ON {on}",
            state = state_text(t),
            rs = recordset(t),
            tbl = t.qualified,
            on = join_on(t),
        );
        let write = match kind {
            WriteKind::Update(cols) => {
                let sets: Vec<String> = cols
                    .iter()
                    .map(|c| format!("{} = r.{}", ident(c), ident(c)))
                    .chain(std::iter::once("_sync_ver = r._sync_ver".to_string()))
                    .collect();
                format!(
                    "UPDATE {tbl} t SET {sets} FROM {rs} WHERE {on} \
                     RETURNING r.ordinality::text, {state}",
                    tbl = t.qualified,
                    sets = sets.join(", "),
                    rs = recordset(t),
                    on = join_on(t),
                    state = state_text(t),
                )
            }
            WriteKind::Insert(cols) => {
                let names: Vec<String> = cols.iter().map(|c| ident(c)).collect();
                let vals: Vec<String> = cols.iter().map(|c| format!("r.{}", ident(c))).collect();
                format!(
                    "INSERT INTO {tbl} ({names}, _sync_ver) SELECT {vals}, r._sync_ver FROM {rs} \
                     ORDER BY r.ordinality RETURNING NULL::text",
                    tbl = t.qualified,
                    names = names.join(", "),
                    vals = vals.join(", "),
                    rs = recordset(t),
                )
            }
            WriteKind::Delete(_) => format!(
                "DELETE FROM {tbl} t USING {rs} WHERE {on} RETURNING NULL::text",
                tbl = t.qualified,
                rs = recordset(t),
                on = join_on(t),
            ),
        };
        let outcome = subxact(|| -> Result<Vec<crate::spi_util::TextRow>> {
            let mut out = with_delete_hlc(delete_hlc, || rows_cached(&write, &[arg()]))?;
            if matches!(kind, WriteKind::Insert(_)) {
                out = rows_cached(&fetch_states, &[arg()])?;
            }
            Ok(out)
        });
        let got = match outcome {
            Ok(r) => r?,
            Err(_) => return Ok(None),
        };
        let mut states = HashMap::new();
        for row in got {
            let k = ordinal(&row[0]);
            if (1..=n).contains(&k) {
                let v: Value =
                    serde_json::from_str(row[1].as_deref().unwrap_or("{}")).unwrap_or_default();
                if let Some(s) = RowState::from_json(&v) {
                    states.insert(k - 1, s);
                }
            }
        }
        Ok(Some(states))
    }

    /// Applies one round (each row at most once) and fills `results`.
    pub(super) fn run_round(
        tables: &HashMap<String, TableInfo>,
        batch: &PushBatch,
        round: &[usize],
        results: &mut [Option<ChangeResult>],
    ) -> Result<()> {
        let sink = RefCell::new(Sink::default());
        let mut one_by_one: HashSet<usize> = HashSet::new();
        let mut table_order: Vec<&str> = Vec::new();
        let mut by_table: HashMap<&str, Vec<usize>> = HashMap::new();
        for &i in round {
            let name = batch.changes[i].table.as_str();
            by_table.entry(name).or_insert_with(|| {
                table_order.push(name);
                Vec::new()
            });
            by_table.get_mut(name).unwrap().push(i);
        }
        for name in &table_order {
            let t = &tables[*name];
            let idxs = &by_table[name];
            let keys: Vec<Value> = idxs
                .iter()
                .map(|i| Value::Object(batch.changes[*i].pk.clone()))
                .collect();
            let Some(pre) = prefetch(t, keys)? else {
                one_by_one.extend(idxs.iter().copied());
                continue;
            };
            for (k, (row, tomb)) in pre.into_iter().enumerate() {
                let i = idxs[k];
                let a = Applier {
                    t,
                    c: &batch.changes[i],
                    client: &batch.client_id,
                    clamps: Default::default(),
                    pending: Default::default(),
                    write_failed: Default::default(),
                    bulk: Some(Bulk {
                        index: i,
                        row: RefCell::new(row),
                        tomb,
                        sink: &sink,
                    }),
                };
                results[i] = Some(a.apply()?);
            }
        }
        let sink = sink.into_inner();

        // Writes, grouped by table and kind, in order of first appearance.
        let mut group_order: Vec<(String, String)> = Vec::new();
        let mut groups: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (w, (i, write)) in sink.writes.iter().enumerate() {
            let kind = match &write.kind {
                WriteKind::Insert(c) => format!("i{c:?}"),
                WriteKind::Update(c) => format!("u{c:?}"),
                WriteKind::Delete(_) => "d".to_string(),
            };
            let key = (batch.changes[*i].table.clone(), kind);
            groups.entry(key.clone()).or_insert_with(|| {
                group_order.push(key.clone());
                Vec::new()
            });
            groups.get_mut(&key).unwrap().push(w);
        }
        for key in &group_order {
            let members = &groups[key];
            let t = &tables[&key.0];
            let kind = &sink.writes[members[0]].1.kind;
            let mut delete_hlc = Hlc::ZERO;
            let rows: Vec<Value> = members
                .iter()
                .map(|w| {
                    let write = &sink.writes[*w].1;
                    if let WriteKind::Delete(h) = write.kind {
                        delete_hlc = delete_hlc.max(h);
                    }
                    let mut o = write.values.clone();
                    if !matches!(write.kind, WriteKind::Delete(_)) {
                        o.insert("_sync_ver".into(), json!(write.ver));
                    }
                    Value::Object(o)
                })
                .collect();
            match run_group(t, kind, rows, delete_hlc)? {
                None => one_by_one.extend(members.iter().map(|w| sink.writes[*w].0)),
                Some(states) => {
                    for (k, w) in members.iter().enumerate() {
                        let i = sink.writes[*w].0;
                        if let (Some(r), Some(s)) = (results[i].as_mut(), states.get(&k)) {
                            r.row = Some(s.row.clone());
                            r.ver = Some(t.columns.iter().map(|c| s.ver_of(c.attnum)).collect());
                        }
                    }
                }
            }
        }

        // Conflict records of the changes that stand, in one statement.
        let keep: Vec<usize> = (0..sink.conflicts.len())
            .filter(|k| !one_by_one.contains(&sink.conflicts[*k].0))
            .collect();
        let mut ids: HashMap<i64, i64> = HashMap::new();
        if !keep.is_empty() {
            let records = Value::Array(keep.iter().map(|k| sink.conflicts[*k].1.clone()).collect());
            let got = crate::privileged::conflicts_add(records.to_string())?;
            for (pos, id) in got.into_iter().enumerate() {
                ids.insert(-(keep[pos] as i64 + 1), id);
            }
        }
        for &i in round {
            if one_by_one.contains(&i) {
                continue;
            }
            if let Some(r) = results[i].as_mut() {
                for c in r.conflicts.iter_mut() {
                    if *c < 0 {
                        *c = ids.get(c).copied().unwrap_or(0);
                    }
                }
            }
        }

        // Changes whose statement failed, one by one, in batch order.
        let mut redo: Vec<usize> = one_by_one.into_iter().collect();
        redo.sort_unstable();
        for i in redo {
            let c = &batch.changes[i];
            results[i] = Some(
                Applier {
                    t: &tables[&c.table],
                    c,
                    client: &batch.client_id,
                    clamps: Default::default(),
                    pending: Default::default(),
                    write_failed: Default::default(),
                    bulk: None,
                }
                .apply_and_record()?,
            );
        }
        Ok(())
    }
}
