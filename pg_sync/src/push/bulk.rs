//! The set-based executor: a round's rows are read (and locked) with one
//! statement per table, every change is decided by `sync_core::decide`,
//! and the writes run as one statement per table and kind of write, each
//! in its own subtransaction. A statement that fails (a constraint, a bad
//! value) is rolled back and its changes are applied one by one by
//! [`super::exec`], so each gets its own exact result.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use sync_core::decide::{self, Decision, Found, Write};
use sync_core::wire::{ChangeResult, PushBatch};
use sync_core::Hlc;

use super::{answer, exec, found_gone, observe, records_json, with_state, RowState};
use crate::catalog::TableInfo;
use crate::error::Result;
use crate::privileged;
use crate::spi_util::{ident, rows_cached, subxact, write_rows_cached};
use crate::track::with_delete_hlc;

/// One kind of write, for many rows of a table at once.
#[derive(Clone, PartialEq, Eq, Hash)]
enum WriteKind {
    Insert(Vec<String>),
    Update(Vec<String>),
    Delete,
}

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
        "pg_catalog.json_build_object('row', {}, 'ver', t._sync_ver, 'xid', t._sync_xid::pg_catalog.text)::text",
        t.row_expr("t")
    )
}

fn text_arg(v: Value) -> pgrx::datum::DatumWithOid<'static> {
    v.to_string().into()
}

fn join_on(t: &TableInfo) -> String {
    format!("{} = {}", t.pk_tuple("t"), t.pk_tuple("r"))
}

/// `CROSS JOIN LATERAL (SELECT {select} FROM <table> t WHERE <t's key is
/// r's> LIMIT 1 {tail}) x`: one primary-key probe per row of `r`. Every
/// statement here finds the table's rows this way, never by a join the
/// planner may choose: it estimates 100 rows for the recordset, and a plan
/// cached while the table was small then hashes (reads) the whole table on
/// every push, so a push would cost what the table holds, not what it
/// sends. The LIMIT keeps the subquery from being flattened into a join.
fn probe(t: &TableInfo, select: &str, tail: &str) -> String {
    format!(
        "CROSS JOIN LATERAL (SELECT {select} FROM {tbl} t WHERE {on} LIMIT 1 {tail}) x",
        tbl = t.qualified,
        on = join_on(t),
    )
}

/// The rows of `$1` with the physical address (`_sync_tid`) of the table
/// row each one names, for an UPDATE or DELETE that joins on it: a TID
/// lookup per row (see [`probe`]). The rows were locked by [`prefetch`]
/// in this transaction, so the addresses are current.
fn recordset_with_tid(t: &TableInfo) -> String {
    format!(
        "(SELECT r.*, x._sync_tid FROM {rs} {probe}) r",
        rs = recordset(t),
        probe = probe(t, "t.ctid AS _sync_tid", ""),
    )
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
    // The rows are locked in key order (the sorted subquery is the outer
    // side of the nested loop), so concurrent pushes cannot deadlock.
    let read = format!(
        "SELECT r.ordinality::text, x.s FROM (SELECT * FROM {rs} ORDER BY {rpk}) r {probe}",
        rs = recordset(t),
        rpk = t.pk_tuple("r"),
        probe = probe(t, &format!("{} AS s", state_text(t)), "FOR UPDATE OF t"),
    );
    let arg = Value::Array(keys.clone());
    let found = match subxact(|| write_rows_cached(&read, &[text_arg(arg)])) {
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
        // One index probe of (relid, pk) per key, as in [`probe`].
        let sql = format!(
            "SELECT r.ordinality::text, x.h::text FROM {rs} CROSS JOIN LATERAL \
             (SELECT pg_catalog.max(d.hlc) AS h FROM pg_sync.tombstones d \
              WHERE d.relid = {relid} AND d.pk = pg_catalog.jsonb_build_object({canon})::text) x \
             WHERE x.h IS NOT NULL",
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
        "SELECT r.ordinality::text, x.s FROM {rs} {probe}",
        rs = recordset(t),
        probe = probe(t, &format!("{} AS s", state_text(t)), ""),
    );
    let write = match kind {
        WriteKind::Update(cols) => {
            let sets: Vec<String> = cols
                .iter()
                .map(|c| format!("{} = r.{}", ident(c), ident(c)))
                .chain(std::iter::once("_sync_ver = r._sync_ver".to_string()))
                .collect();
            format!(
                "UPDATE {tbl} t SET {sets} FROM {rs} WHERE t.ctid = r._sync_tid \
                 RETURNING r.ordinality::text, {state}",
                tbl = t.qualified,
                sets = sets.join(", "),
                rs = recordset_with_tid(t),
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
        WriteKind::Delete => format!(
            "DELETE FROM {tbl} t USING {rs} WHERE t.ctid = r._sync_tid RETURNING NULL::text",
            tbl = t.qualified,
            rs = recordset_with_tid(t),
        ),
    };
    let outcome = subxact(|| -> Result<Vec<crate::spi_util::TextRow>> {
        let mut out = with_delete_hlc(delete_hlc, || write_rows_cached(&write, &[arg()]))?;
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

/// A decided change of the round, waiting for its write.
struct Decided {
    index: usize,
    decision: Decision,
    current: Option<RowState>,
}

/// Applies one round (each row at most once) and fills `results`.
pub(super) fn run_round(
    tables: &HashMap<String, TableInfo>,
    rules: &HashMap<String, decide::Table>,
    batch: &PushBatch,
    round: &[usize],
    results: &mut [Option<ChangeResult>],
) -> Result<()> {
    let mut one_by_one: HashSet<usize> = HashSet::new();
    let mut table_order: Vec<&str> = Vec::new();
    let mut by_table: HashMap<&str, Vec<usize>> = HashMap::new();
    for &i in round {
        let name = batch.changes[i].table.as_str();
        by_table
            .entry(name)
            .or_insert_with(|| {
                table_order.push(name);
                Vec::new()
            })
            .push(i);
    }
    // Read and decide.
    let mut decided: Vec<Decided> = Vec::new();
    for name in &table_order {
        let (t, r) = (&tables[*name], &rules[*name]);
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
            let c = &batch.changes[i];
            let stamps = observe(c);
            let decision = match &row {
                Some(cur) => decide::decide(
                    r,
                    c,
                    Found::Row {
                        row: &cur.row,
                        ver: &cur.ver,
                    },
                    &stamps,
                ),
                None => decide::decide(r, c, found_gone(t, c, tomb), &stamps),
            };
            results[i] = Some(answer(c, &decision));
            decided.push(Decided {
                index: i,
                decision,
                current: row,
            });
        }
    }

    // Writes, grouped by table and kind, in order of first appearance.
    let mut group_order: Vec<(String, WriteKind)> = Vec::new();
    let mut groups: HashMap<(String, WriteKind), Vec<usize>> = HashMap::new();
    for (k, p) in decided.iter().enumerate() {
        let Some(w) = &p.decision.write else {
            continue;
        };
        let kind = match w {
            Write::Insert { values, .. } => WriteKind::Insert(values.keys().cloned().collect()),
            Write::Update { values, .. } => WriteKind::Update(values.keys().cloned().collect()),
            Write::Delete { .. } => WriteKind::Delete,
        };
        let key = (batch.changes[p.index].table.clone(), kind);
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                group_order.push(key);
                Vec::new()
            })
            .push(k);
    }
    let mut written: HashMap<usize, RowState> = HashMap::new();
    for key in &group_order {
        let members = &groups[key];
        let t = &tables[&key.0];
        let mut delete_hlc = Hlc::ZERO;
        let rows: Vec<Value> = members
            .iter()
            .map(|k| {
                let p = &decided[*k];
                let pk = &batch.changes[p.index].pk;
                match p.decision.write.as_ref().expect("grouped writes exist") {
                    Write::Insert { values, ver } | Write::Update { values, ver } => {
                        let mut o = values.clone();
                        for (k, v) in pk {
                            o.insert(k.clone(), v.clone());
                        }
                        o.insert("_sync_ver".into(), json!(ver));
                        Value::Object(o)
                    }
                    Write::Delete { hlc } => {
                        delete_hlc = delete_hlc.max(*hlc);
                        Value::Object(pk.clone())
                    }
                }
            })
            .collect();
        match run_group(t, &key.1, rows, delete_hlc)? {
            None => one_by_one.extend(members.iter().map(|k| decided[*k].index)),
            Some(mut states) => {
                for (pos, k) in members.iter().enumerate() {
                    if let Some(s) = states.remove(&pos) {
                        written.insert(decided[*k].index, s);
                    }
                }
            }
        }
    }

    // Answers and conflict records of the changes that stand, the records
    // in one statement.
    let mut records: Vec<Value> = Vec::new();
    let mut owners: Vec<(usize, decide::Record)> = Vec::new();
    for p in decided.iter_mut() {
        if one_by_one.contains(&p.index) {
            continue;
        }
        let c = &batch.changes[p.index];
        let t = &tables[&c.table];
        // The transaction that last wrote the row names the winner.
        let winner = p.current.as_ref().and_then(|s| s.xid.clone());
        let state = match written.remove(&p.index) {
            Some(s) => Some(s),
            None if p.decision.show_current => p.current.take(),
            None => None,
        };
        if let Some(r) = results[p.index].take() {
            results[p.index] = Some(with_state(t, r, state.as_ref()));
        }
        if let Value::Array(recs) = records_json(
            t,
            c,
            &batch.client_id,
            &p.decision.records,
            winner.as_deref(),
        ) {
            owners.extend(p.decision.records.iter().map(|r| (p.index, r.clone())));
            records.extend(recs);
        }
    }
    if !records.is_empty() {
        let added = privileged::conflicts_add(Value::Array(records).to_string())?;
        for ((owner, rec), a) in owners.into_iter().zip(added) {
            if let Some(r) = results[owner].as_mut() {
                super::attach_records(r, std::slice::from_ref(&rec), vec![a]);
            }
        }
    }

    // Changes whose statement failed, one by one, in batch order.
    let mut redo: Vec<usize> = one_by_one.into_iter().collect();
    redo.sort_unstable();
    for i in redo {
        let c = &batch.changes[i];
        results[i] = Some(exec::apply_one(
            &tables[&c.table],
            &rules[&c.table],
            c,
            &batch.client_id,
        )?);
    }
    Ok(())
}
