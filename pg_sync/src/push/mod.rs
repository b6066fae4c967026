//! `sync_push`: applies a client's batch once per `(client_id, seq)`, with
//! a result per change.
//!
//! Each change is *decided* by [`sync_core::decide::decide`] (the one home
//! of that rule: the write, the conflict records, the answer) and
//! *executed* here: set-based by [`bulk`], one by one by [`exec`] when a
//! set-based statement fails. This module fits changes to the server's
//! schema, checks privileges, keeps the idempotency records and assembles
//! the answers.

mod bulk;
mod exec;

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use sync_core::decide::{self, Clamp, Found, Record, Stamps};
use sync_core::hlc::Observed;
use sync_core::wire::{
    Change, ChangeResult, ConflictRecord, Op, PushBatch, PushResult, Row, Status, FORMAT,
};
use sync_core::{Hlc, SyncError};

use crate::catalog::{self, TableInfo};
use crate::clock;
use crate::error::{or_raise, PgSyncError, Result};
use crate::privileged;
use crate::pull::parse_int_array;
use crate::spi_util::{ident, one_cached};

/// Applies a push batch and returns one result per change.
#[pg_extern]
fn sync_push(batch: JsonB) -> JsonB {
    let result = or_raise(push(&batch.0.to_string()));
    JsonB(serde_json::to_value(result).unwrap_or_default())
}

fn push(json: &str) -> Result<PushResult> {
    let mut batch = PushBatch::parse(json)?;
    crate::privileged::trust_marks()?;
    let tables: HashMap<String, TableInfo> = catalog::synced_tables()?
        .iter()
        .cloned()
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
                    records: Vec::new(),
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
    let rules: HashMap<String, decide::Table> = tables
        .iter()
        .map(|(name, t)| (name.clone(), t.rules()))
        .collect();
    let last_seq = privileged::client_begin(&batch.client_id)?;
    // Only a seq at or below the client's highest stored one can have a
    // stored result (results_put raises it), so a batch of new changes
    // reads nothing here, however many results the client has stored.
    let seqs: Vec<i64> = batch
        .changes
        .iter()
        .map(|c| c.seq)
        .filter(|&s| s <= last_seq)
        .collect();
    let mut stored: HashMap<i64, ChangeResult> = HashMap::new();
    let found = if seqs.is_empty() {
        Vec::new()
    } else {
        privileged::results_get(&batch.client_id, seqs)?
    };
    for (seq, text) in found {
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
        bulk::run_round(&tables, &rules, &batch, &round, &mut results)?;
        rest = later;
    }
    // Conflicts a device's user resolved with one of these changes: closed
    // once the change is applied (a change answered before is not re-run).
    for &i in &fresh {
        let c = &batch.changes[i];
        let applied = matches!(
            results[i].as_ref().map(|r| r.status),
            Some(Status::Applied | Status::Merged)
        );
        if applied && !c.resolves.is_empty() {
            if let Some(t) = tables.get(&c.table) {
                for &id in &c.resolves {
                    crate::ops::close_from_device(t, id, c, &batch.client_id)?;
                }
            }
        }
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

/// `pg_catalog.jsonb_build_object('k', ($n::jsonb->>'k')::type, ...)`: a key in the
/// same canonical form the tombstone trigger stores.
pub(super) fn jsonb_pk_from_param(t: &TableInfo, param: &str) -> String {
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

/// The row as read or written: values by column and versions by attnum.
struct RowState {
    row: Row,
    ver: Vec<i64>,
    /// The transaction that last wrote the row (`_sync_xid`), when read.
    xid: Option<String>,
}

impl RowState {
    /// Reads `{"row": {...}, "ver": [...] or "{...}"}`.
    fn from_json(v: &Value) -> Option<RowState> {
        let row = v.get("row")?.as_object()?.clone();
        let ver = match v.get("ver") {
            Some(Value::Array(a)) => a.iter().map(|x| x.as_i64().unwrap_or(0)).collect(),
            Some(Value::String(s)) => parse_int_array(s),
            _ => Vec::new(),
        };
        let xid = v.get("xid").and_then(Value::as_str).map(str::to_string);
        Some(RowState { row, ver, xid })
    }
}

/// Folds the change's stamps into the server clock; stamps too far ahead
/// are clamped and noted.
fn observe(c: &Change) -> Stamps {
    let mut clamped = Vec::new();
    let mut one = |stamp: Hlc, column: Option<&str>| match clock::observe(stamp) {
        Observed::Accepted(h) => h,
        Observed::Clamped {
            original,
            clamped: used,
            ahead_ms,
        } => {
            clamped.push(Clamp {
                column: column.map(str::to_string),
                original,
                clamped: used,
                ahead_ms,
            });
            used
        }
    };
    let change = one(c.hlc, None);
    let cols = c
        .ver
        .iter()
        .map(|(name, v)| (name.clone(), one(*v, Some(name))))
        .collect();
    Stamps {
        change,
        cols,
        clamped,
    }
}

/// The state of a change whose row the caller cannot see: the newest
/// tombstone it may see and, when it sees one and the change writes,
/// whether the key exists although hidden from it (the row left its view;
/// asked only then, so it is no oracle for keys it never saw).
fn found_gone(t: &TableInfo, c: &Change, tomb: Option<Hlc>) -> Found<'static> {
    let hidden = tomb.is_some() && c.op != Op::Delete && hidden_row_exists(t, c);
    Found::Gone { tomb, hidden }
}

/// Whether the change's key exists, looked up as the catalog owner;
/// `false` when the key cannot be looked up that way.
fn hidden_row_exists(t: &TableInfo, c: &Change) -> bool {
    let sql = format!(
        "SELECT 'true'::pg_catalog.text FROM ONLY {tbl} t WHERE {cols} = {key} LIMIT 1",
        tbl = t.qualified,
        cols = t.pk_tuple("t"),
        key = t.pk_from_json_param("$1"),
    );
    let pk = Value::Object(c.pk.clone()).to_string();
    crate::spi_util::subxact(|| privileged::exists(&sql, pk))
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(false)
}

/// The answer to a change as decided (without the row).
fn answer(c: &Change, d: &decide::Decision) -> ChangeResult {
    ChangeResult {
        seq: c.seq,
        table: c.table.clone(),
        pk: c.pk.clone(),
        status: d.status,
        reason: d.reason.clone(),
        constraint: d.constraint.clone(),
        conflicts: Vec::new(),
        records: Vec::new(),
        row: None,
        ver: None,
        ignored: Vec::new(),
    }
}

/// The answer to a change whose statement failed.
fn rejected(c: &Change, reason: String, constraint: Option<String>) -> ChangeResult {
    ChangeResult {
        seq: c.seq,
        table: c.table.clone(),
        pk: c.pk.clone(),
        status: Status::Rejected,
        reason: Some(reason),
        constraint,
        conflicts: Vec::new(),
        records: Vec::new(),
        row: None,
        ver: None,
        ignored: Vec::new(),
    }
}

/// Adds the row as the server holds it (values and versions in schema
/// order) to an answer.
fn with_state(t: &TableInfo, mut r: ChangeResult, state: Option<&RowState>) -> ChangeResult {
    if let Some(s) = state {
        r.row = Some(s.row.clone());
        r.ver = Some(
            t.columns
                .iter()
                .map(|c| Hlc::from_i64(s.ver.get(c.attnum - 1).copied().unwrap_or(0)))
                .collect(),
        );
    }
    r
}

/// Conflict records as the JSON array `privileged::conflicts_add` stores.
/// `winner_xid` is the transaction that last wrote the row (the record
/// names the client of that push, when it was one).
fn records_json(
    t: &TableInfo,
    c: &Change,
    client: &str,
    records: &[Record],
    winner_xid: Option<&str>,
) -> Value {
    Value::Array(
        records
            .iter()
            .map(|r| {
                json!({
                    "table": t.name, "pk": c.pk, "client_id": client, "seq": c.seq,
                    "column": r.column, "strategy": r.strategy, "outcome": r.outcome,
                    "reason": r.reason,
                    "server_value": r.server_value, "client_value": r.client_value,
                    "server_ver": r.server_ver.map(|h| h.to_string()),
                    "client_ver": r.client_ver.map(|h| h.to_string()),
                    "winner_xid": winner_xid,
                })
            })
            .collect(),
    )
}

/// Adds the stored conflict records (`added`: id and winner of each of
/// `records`, in order) to an answer: their ids, and each in full.
fn attach_records(r: &mut ChangeResult, records: &[Record], added: Vec<privileged::Added>) {
    for (rec, a) in records.iter().zip(added) {
        r.conflicts.push(a.id);
        r.records.push(ConflictRecord {
            id: a.id,
            column: rec.column.clone(),
            strategy: rec.strategy.clone(),
            outcome: rec.outcome.clone(),
            reason: rec.reason.clone(),
            server_value: rec.server_value.clone(),
            client_value: rec.client_value.clone(),
            server_ver: rec.server_ver,
            client_ver: rec.client_ver,
            winner_client: a.winner_client,
            winner_role: a.winner_role,
        });
    }
}
