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
use crate::error::{or_raise, Result};
use crate::pull::parse_int_array;
use crate::spi_util::{exec, ident, one, one_cached};
use crate::track::with_delete_hlc;

/// Applies a push batch and returns one result per change.
#[pg_extern]
fn sync_push(batch: JsonB) -> JsonB {
    let result = or_raise(push(&batch.0.to_string()));
    JsonB(serde_json::to_value(result).unwrap_or_default())
}

fn push(json: &str) -> Result<PushResult> {
    let batch = PushBatch::parse(json)?;
    let tables: HashMap<String, TableInfo> = catalog::synced_tables()?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    for c in &batch.changes {
        validate(&tables, c)?;
    }
    crate::catalog::require_current_catalog()?;
    exec(
        "SELECT pg_sync._client_begin($1)",
        &[batch.client_id.clone().into()],
    )?;
    let seqs: Vec<i64> = batch.changes.iter().map(|c| c.seq).collect();
    let mut stored: HashMap<i64, ChangeResult> = HashMap::new();
    for row in crate::spi_util::rows_cached(
        "SELECT seq::text, result::text FROM pg_sync._results_get($1, $2)",
        &[batch.client_id.clone().into(), seqs.into()],
    )? {
        let seq: i64 = row[0].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
        let r: ChangeResult = serde_json::from_str(row[1].as_deref().unwrap_or("{}"))
            .map_err(|e| SyncError::MalformedJson(format!("stored result: {e}")))?;
        stored.insert(seq, r);
    }
    let mut results = Vec::with_capacity(batch.changes.len());
    let mut to_store: Vec<Value> = Vec::new();
    for c in &batch.changes {
        if let Some(r) = stored.remove(&c.seq) {
            results.push(r);
            continue;
        }
        let t = &tables[&c.table];
        let r = Applier {
            t,
            c,
            client: &batch.client_id,
            clamps: Default::default(),
        }
        .apply()?;
        let mut kept = r.clone();
        kept.row = None;
        kept.ver = None;
        to_store.push(serde_json::to_value(&kept).unwrap_or_default());
        results.push(r);
    }
    if !to_store.is_empty() {
        crate::spi_util::one_cached(
            "SELECT pg_sync._results_put($1, $2::jsonb)::text",
            &[
                batch.client_id.clone().into(),
                Value::Array(to_store).to_string().into(),
            ],
        )?;
    }
    Ok(PushResult {
        format: FORMAT,
        client_id: batch.client_id,
        results,
    })
}

/// Structural checks that make the whole batch fail before anything is applied.
fn validate(tables: &HashMap<String, TableInfo>, c: &Change) -> Result<()> {
    let t = tables
        .get(&c.table)
        .ok_or_else(|| SyncError::UnknownTable(c.table.clone()))?;
    let unknown = |column: &str| SyncError::UnknownColumn {
        table: c.table.clone(),
        column: column.to_string(),
    };
    for k in c.pk.keys() {
        if !t.is_pk(k) {
            return Err(if t.column(k).is_some() {
                SyncError::Invalid(format!(
                    "change {}: {k:?} is not part of the primary key of {:?}",
                    c.seq, c.table
                ))
                .into()
            } else {
                unknown(k).into()
            });
        }
    }
    if let Some(missing) = t.pk.iter().find(|k| !c.pk.contains_key(*k)) {
        return Err(SyncError::Invalid(format!(
            "change {}: pk lacks key column {missing:?} of {:?}",
            c.seq, c.table
        ))
        .into());
    }
    for k in c
        .cols
        .keys()
        .chain(c.ver.keys())
        .chain(c.base.keys())
        .chain(c.base_values.keys())
    {
        if t.column(k).is_none() {
            return Err(unknown(k).into());
        }
    }
    if c.op != Op::Delete && c.cols.is_empty() {
        return Err(
            SyncError::Invalid(format!("change {}: {:?} without cols", c.seq, c.op)).into(),
        );
    }
    Ok(())
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

struct Applier<'a> {
    t: &'a TableInfo,
    c: &'a Change,
    client: &'a str,
    /// Records of client stamps clamped for clock skew: reported with the
    /// result but not a conflict of the change.
    clamps: std::cell::RefCell<Vec<i64>>,
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
            "jsonb_build_object('row', {}, 'ver', {alias}._sync_ver)",
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

    /// Folds a client stamp into the server clock; a stamp too far ahead is
    /// clamped and the clamp recorded.
    fn observe(&self, stamp: Hlc) -> Result<Hlc> {
        match clock::observe(stamp) {
            Observed::Accepted(h) => Ok(h),
            Observed::Clamped {
                original,
                clamped,
                ahead_ms,
            } => {
                let id = self.record(json!({
                    "strategy": "hlc", "outcome": "clamped",
                    "reason": format!("client clock ran {ahead_ms} ms ahead of the server; its stamp was clamped"),
                    "client_ver": original.to_string(), "server_ver": clamped.to_string(),
                }))?;
                self.clamps.borrow_mut().push(id);
                Ok(clamped)
            }
        }
    }

    fn record(&self, mut fields: Value) -> Result<i64> {
        if let Value::Object(m) = &mut fields {
            m.insert("table".into(), json!(self.t.name));
            m.insert("pk".into(), Value::Object(self.c.pk.clone()));
            m.insert("client_id".into(), json!(self.client));
            m.insert("seq".into(), json!(self.c.seq));
        }
        Ok(one(
            "SELECT pg_sync._conflict_add($1::jsonb)::text",
            &[fields.to_string().into()],
        )?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
    }

    fn apply(&self) -> Result<ChangeResult> {
        let read = format!(
            "SELECT {} FROM {} t WHERE {} FOR UPDATE",
            self.state_sql("t"),
            self.t.qualified,
            self.where_pk("t")
        );
        let current = match try_sql(&read, None, None, Some(self.pk_json()))? {
            Tried::Failed {
                message,
                constraint,
            } => return Ok(self.rejected(message, constraint)),
            Tried::Ok(v) => RowState::from_json(&v),
        };
        let mut r = match (current, self.c.op) {
            (None, Op::Delete) => self.result(Status::Applied),
            (None, op) => self.write_missing(op)?,
            (Some(cur), Op::Delete) => self.delete(cur)?,
            (Some(cur), _) => self.update(cur)?,
        };
        r.conflicts.extend(self.clamps.borrow().iter().copied());
        Ok(r)
    }

    fn tombstone(&self) -> Result<Option<Hlc>> {
        let canonical = format!(
            "SELECT max(hlc)::text FROM pg_sync.tombstones WHERE relid = $1 AND pk = {}",
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
        let stamp = self.observe(self.c.hlc)?;
        if let Some(tomb) = self.tombstone()? {
            if decide_write_on_deleted(self.t.options.on_delete, op == Op::Insert, stamp, tomb)
                == WriteOnDeleted::Reject
            {
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
            return Ok(self.rejected(
                "the row does not exist on the server (never synced, hidden by row-level security, or its tombstone was compacted)".into(),
                None,
            ));
        }
        let mut ver = vec![0i64; self.t.columns.iter().map(|c| c.attnum).max().unwrap_or(0)];
        for col in &self.t.columns {
            let s = match self.c.ver.get(&col.name) {
                Some(v) => self.observe(*v)?,
                None => stamp,
            };
            ver[col.attnum - 1] = s.as_i64();
        }
        let names: Vec<&String> = self.c.cols.keys().collect();
        let cols: Vec<String> = names.iter().map(|n| ident(n)).collect();
        let vals: Vec<String> = names.iter().map(|n| format!("r.{}", ident(n))).collect();
        let sql = format!(
            "INSERT INTO {tbl} AS t ({cols}, _sync_ver) SELECT {vals}, $2 \
             FROM jsonb_populate_record(NULL::{tbl}, $1) r RETURNING {state}",
            tbl = self.t.qualified,
            cols = cols.join(", "),
            vals = vals.join(", "),
            state = self.state_sql("t"),
        );
        let values = Value::Object(self.c.cols.clone()).to_string();
        match try_sql(&sql, Some(values), Some(&ver), Some(self.pk_json()))? {
            Tried::Failed {
                message,
                constraint,
            } => {
                let mut r = self.rejected(message, constraint);
                r.conflicts = conflicts;
                Ok(r)
            }
            Tried::Ok(v) => {
                let mut r = self.result(if conflicts.is_empty() {
                    Status::Applied
                } else {
                    Status::Conflict
                });
                r.conflicts = conflicts;
                Ok(self.with_state(r, RowState::from_json(&v).as_ref()))
            }
        }
    }

    fn delete(&self, cur: RowState) -> Result<ChangeResult> {
        let mut conflicts = Vec::new();
        let stamp = self.observe(self.c.hlc)?;
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
                let tried =
                    with_delete_hlc(stamp, || try_sql(&sql, None, None, Some(self.pk_json())))?;
                match tried {
                    Tried::Failed {
                        message,
                        constraint,
                    } => {
                        let mut r = self.rejected(message, constraint);
                        r.conflicts = conflicts;
                        Ok(r)
                    }
                    Tried::Ok(_) => {
                        let mut r = self.result(if conflicts.is_empty() {
                            Status::Applied
                        } else {
                            Status::Conflict
                        });
                        r.conflicts = conflicts;
                        Ok(r)
                    }
                }
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
        let change_stamp = self.observe(self.c.hlc)?;
        for (name, value) in &self.c.cols {
            if self.t.is_pk(name) {
                continue;
            }
            let col = self.t.column(name).expect("validated");
            let stamp = match self.c.ver.get(name) {
                Some(v) => self.observe(*v)?,
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
            "UPDATE {tbl} t SET {sets} FROM jsonb_populate_record(NULL::{tbl}, $1) r \
             WHERE {pk} RETURNING {state}",
            tbl = self.t.qualified,
            sets = sets.join(", "),
            pk = self.where_pk("t"),
            state = self.state_sql("t"),
        );
        match try_sql(
            &sql,
            Some(Value::Object(writes).to_string()),
            Some(&new_ver),
            Some(self.pk_json()),
        )? {
            Tried::Failed {
                message,
                constraint,
            } => {
                let mut r = self.rejected(message, constraint);
                r.conflicts = conflicts;
                Ok(r)
            }
            Tried::Ok(v) => Ok(self.with_state(
                self.status_result(status, conflicts),
                RowState::from_json(&v).as_ref(),
            )),
        }
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

/// `jsonb_build_object('k', ($n::jsonb->>'k')::type, ...)`: a key in the
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
    format!("jsonb_build_object({})::text", parts.join(", "))
}
