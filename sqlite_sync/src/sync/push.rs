//! `sync_changes` (build the push batch) and `sync_ack` (apply its result).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value as Json};
use sync_core::wire::{Change, ChangeResult, Op as WireOp, PushBatch, PushResult, Status, FORMAT};
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::key::Key;
use crate::model::names::{q, show, show_json, CHANGES, ERRORS};
use crate::model::table::TableInfo;
use crate::model::values::{json_to_sql, now_iso, sql_to_json};
use crate::model::wire::json_to_sql_strict;
use crate::store::changes::{self, ChangeRow, Group, Net, RowLookup};
use crate::store::rows::{check_ver, row_values, TableOps};
use crate::store::state::{client_id, in_savepoint, meta_delete, meta_get, meta_set, ConnState};
use crate::sync::adopt::adopt_row;
use crate::sync::{conflicts, progress};

/// Builds (or returns the stored) push batch.
pub fn sync_changes(st: &ConnState, db: Db, max: i64) -> Result<String> {
    if max < 1 {
        return Err(Error::input(format!("max must be at least 1, got {max}")));
    }
    let max = (max as usize).min(sync_core::wire::MAX_BATCH_CHANGES);
    let loaded = st.loaded(db)?;
    in_savepoint(db, "sync_changes", || {
        let _nc = st.no_capture();
        crate::schema::ddl::check_clock_not_shadowed(db)?;
        if let Some(Value::Text(j)) = meta_get(db, "inflight")? {
            return Ok(j);
        }
        let client = client_id(db)?;
        // Only the rows this batch takes are read: the queue in seq order
        // up to `max` rows, and their other writes through the row index.
        let sel = changes::select_unsent(db, &loaded, max)?;
        let mut purge: Vec<&Group> = sel.nothing.iter().collect();
        let mut candidates: Vec<(i64, &Group, Net)> = sel
            .groups
            .iter()
            .map(|g| {
                let wire_seq = g.rows.last().map(|r| r.seq).unwrap_or(0);
                (wire_seq, g, g.net(&loaded.tables[g.table]))
            })
            .collect();
        candidates.sort_by_key(|c| c.0);
        let mut ops: HashMap<usize, TableOps> = HashMap::new();
        let mut out: Vec<Change> = Vec::with_capacity(candidates.len());
        let mut mark = db.prepare(&format!(
            "UPDATE {} SET batch = ?1 WHERE seq = ?2",
            q(CHANGES)
        ))?;
        for (wire_seq, g, net) in candidates {
            let t = &loaded.tables[g.table];
            let o = ops.entry(g.table).or_insert_with(|| TableOps::new(db, t));
            match build_change(o, g, net, wire_seq)? {
                Some(c) => {
                    for r in &g.rows {
                        mark.run_with(&[Value::Int(wire_seq), Value::Int(r.seq)])?;
                    }
                    out.push(c);
                }
                None => purge.push(g),
            }
        }
        drop(mark);
        drop(ops);
        // Resolutions made with sync_resolve travel with their row's change.
        if !out.is_empty() && conflicts::any_resolving(db)? {
            for c in out.iter_mut() {
                let pk = Json::Object(c.pk.clone()).to_string();
                c.resolves = conflicts::resolving(db, &c.table, &pk)?;
            }
        }
        changes::purge(db, &loaded, &purge, &sel.orphans)?;
        if out.is_empty() {
            changes::unindex_if_empty(db)?;
        }
        let batch = PushBatch {
            format: FORMAT,
            client_id: client,
            changes: out,
        };
        let text = serde_json::to_string(&batch)?;
        if !batch.changes.is_empty() {
            meta_set(db, "inflight", &Value::Text(text.clone()))?;
            progress::batch_sent(db, batch.changes.len())?;
        }
        st.save_clock(db)?;
        Ok(text)
    })
}

fn build_change(o: &mut TableOps, g: &Group, net: Net, wire_seq: i64) -> Result<Option<Change>> {
    let t: &TableInfo = o.t;
    let cur = o.state_row(&g.key)?;
    // The local row decides in the end: a write the triggers did not see
    // (capture off) must not produce a change that contradicts it.
    let net = match (net, &cur) {
        (Net::Insert, None) => return Ok(None),
        (Net::Update(_), None) => Net::Delete,
        (n, _) => n,
    };
    let unsent: Vec<_> = g.unsent().collect();
    let hlc = unsent.iter().map(|r| r.hlc).max().unwrap_or(0);
    let mut col_ver: Vec<i64> = vec![0; t.ncols()];
    for r in &unsent {
        let m = r.effective_mask(t);
        for (i, v) in col_ver.iter_mut().enumerate() {
            if m & (1i64 << i) != 0 && r.hlc > *v {
                *v = r.hlc;
            }
        }
    }
    let synced = o.synced_row(&g.key)?;
    let stash = o.stash_get(&g.key)?;
    let base_of = |i: usize| -> Option<(Hlc, Value)> {
        if let Some(s) = stash.get(&i) {
            return Some((s.ver, s.val.clone()));
        }
        synced.as_ref().map(|r| (r.ver[i], r.vals[i].clone()))
    };
    let (op, cols_mask, base_mask) = match net {
        // The columns the device wrote: every column the table had when
        // the row was inserted, and the ones updated since. A column a
        // migration added later is left to the server (its default).
        Net::Insert => {
            let written = g.unsent_mask(t) | t.pk_mask;
            (WireOp::Insert, written, written & !t.pk_mask)
        }
        Net::Update(m) => (WireOp::Update, m, m),
        Net::Delete => (WireOp::Delete, 0, t.all_mask & !t.pk_mask),
        Net::Nothing => return Ok(None),
    };
    let mut cols = Map::new();
    let mut ver = BTreeMap::new();
    let mut base = BTreeMap::new();
    let mut base_values = Map::new();
    for i in 0..t.ncols() {
        let bit = 1i64 << i;
        let name = t.col_name(i).to_string();
        if cols_mask & bit != 0 {
            if let Some(row) = &cur {
                cols.insert(name.clone(), sql_to_json(t.col_type(i), &row[i]));
            }
            let h = if col_ver[i] != 0 { col_ver[i] } else { hlc };
            ver.insert(name.clone(), Hlc::from_i64(h));
        }
        if base_mask & bit != 0 {
            if let Some((bver, bval)) = base_of(i) {
                if bver != Hlc::ZERO {
                    base.insert(name.clone(), bver);
                    if op == WireOp::Update && t.needs_base_value(i) {
                        base_values.insert(name.clone(), sql_to_json(t.col_type(i), &bval));
                    }
                }
            }
        }
    }
    Ok(Some(Change {
        seq: wire_seq,
        table: t.name().to_string(),
        op,
        pk: t.key_to_json(&g.key),
        cols,
        ver,
        base,
        base_values,
        hlc: Hlc::from_i64(hlc),
        resolves: Vec::new(),
    }))
}

/// The server's row of a result, in the device's column order.
struct ServerRow {
    vals: Vec<Value>,
    ver: Vec<Hlc>,
    /// The device's columns the result gives. The others are columns the
    /// server does not have (dropped there, or the device's schema is
    /// newer) or has with another type (the device has not migrated yet).
    known: i64,
}

/// Reads a result's `row` and `ver` by column name, with the server's
/// column order from the result's `columns`. Columns the device does not
/// know are left out (the next pull brings them, since the column list
/// changed); so are values a device column cannot hold when the result
/// names its columns (the server's type of that column changed; the next
/// pull re-sends the rows with the new schema). A result without
/// `columns` follows the device's schema and is checked strictly.
fn result_row(
    t: &TableInfo,
    r: &ChangeResult,
    columns: Option<&Vec<String>>,
) -> Result<Option<ServerRow>> {
    let (Some(row), Some(ver)) = (&r.row, &r.ver) else {
        return Ok(None);
    };
    let Some(cols) = columns else {
        check_ver(t, ver)?;
        let vals = row_values(t, row, &r.pk)?;
        return Ok(Some(ServerRow {
            vals,
            ver: ver.clone(),
            known: t.all_mask,
        }));
    };
    if cols.len() != ver.len() {
        return Err(Error::input(format!(
            "ver has {} entries but the result names {} columns of table {:?}",
            ver.len(),
            cols.len(),
            t.name()
        )));
    }
    let n = t.ncols();
    let mut out = ServerRow {
        vals: vec![Value::Null; n],
        ver: vec![Hlc::ZERO; n],
        known: 0,
    };
    for (j, name) in cols.iter().enumerate() {
        let Some(i) = t.def.column_index(name) else {
            continue;
        };
        let bit = 1i64 << i;
        if out.known & bit != 0 {
            continue;
        }
        let is_pk = t.pk_mask & bit != 0;
        let raw = row
            .get(name)
            .or_else(|| if is_pk { r.pk.get(name) } else { None });
        let val = match raw {
            Some(v) => json_to_sql_strict(t.col_type(i), v, t.name(), name),
            None => Ok(Value::Null),
        };
        match val {
            Ok(v) => {
                out.vals[i] = v;
                out.ver[i] = ver[j];
                out.known |= bit;
            }
            Err(e) if is_pk => return Err(e),
            Err(_) => {}
        }
    }
    for &i in &t.pk_idx {
        let bit = 1i64 << i;
        if out.known & bit == 0 {
            let name = t.col_name(i);
            let v = r.pk.get(name).ok_or_else(|| {
                Error::input(format!(
                    "primary key of table {:?} is missing column {name:?}",
                    t.name()
                ))
            })?;
            out.vals[i] = json_to_sql_strict(t.col_type(i), v, t.name(), name)?;
            out.known |= bit;
        }
    }
    Ok(Some(out))
}

/// Completes a result's row with what the device holds: a column the
/// result does not give keeps the device's server copy (or its local value
/// when it has none), except a column of `taken` (the change wrote it and
/// the server took it, in a type the device does not have yet), which keeps
/// the local value at the change's stamp; and a column whose server
/// version the device already holds newer (a pull that came after the
/// push) keeps that.
fn complete_row(
    o: &mut TableOps,
    key: &Key,
    mut sr: ServerRow,
    c: &Change,
    taken: i64,
) -> Result<(Vec<Value>, Vec<Hlc>)> {
    let t = o.t;
    let old = o.synced_row(key)?;
    let stamp = |i: usize| c.ver.get(t.col_name(i)).copied().unwrap_or(c.hlc);
    // A zero the change wrote to a real column and the server took as it
    // is (the column's version is the write's): the result, a jsonb
    // document, cannot tell -0.0 from 0.0, the device's value can.
    let zero_taken = |i: usize, sr: &ServerRow| {
        taken & (1i64 << i) != 0
            && t.col_type(i) == sync_core::schema::ColumnType::Real
            && sr.known & (1i64 << i) != 0
            && sr.ver[i] == stamp(i)
            && matches!(sr.vals[i], Value::Real(f) if f == 0.0)
    };
    let cur = if sr.known != t.all_mask || (0..t.ncols()).any(|i| zero_taken(i, &sr)) {
        o.state_row(key)?
    } else {
        None
    };
    for i in 0..t.ncols() {
        let bit = 1i64 << i;
        if t.pk_mask & bit != 0 {
            continue;
        }
        if zero_taken(i, &sr) {
            if let Some(Value::Real(f)) = cur.as_ref().map(|r| &r[i]) {
                if *f == 0.0 {
                    sr.vals[i] = Value::Real(*f);
                }
            }
        }
        if sr.known & bit == 0 && taken & bit != 0 {
            if let Some(cur) = &cur {
                sr.vals[i] = cur[i].clone();
                let h = stamp(i);
                sr.ver[i] = old.as_ref().map_or(h, |o| o.ver[i].max(h));
                continue;
            }
        }
        match (&old, &cur) {
            (Some(old), _) if sr.known & bit == 0 || old.ver[i] > sr.ver[i] => {
                sr.vals[i] = old.vals[i].clone();
                sr.ver[i] = old.ver[i];
            }
            (None, Some(cur)) if sr.known & bit == 0 => sr.vals[i] = cur[i].clone(),
            _ => {}
        }
    }
    Ok((sr.vals, sr.ver))
}

/// A change the server took (applied, merged or in conflict) whose result
/// carries no row (a stored result, sent again for a retried batch): the
/// local values of the columns it carried stand as the server's, except
/// where the device's server copy, received by a pull after the push, holds
/// a version at least as new as the write's (the server had the change, or
/// something newer, when it answered that pull). `keep` are the columns of
/// later local writes (they stay on top); `confirmed` says the server took
/// the written values (applied, merged), so their stamps become the
/// server versions of those columns.
fn ack_without_row(
    o: &mut TableOps,
    key: &Key,
    c: &Change,
    carried: i64,
    keep: Option<i64>,
    confirmed: bool,
) -> Result<()> {
    let t = o.t;
    let stamp = |i: usize| c.ver.get(t.col_name(i)).copied().unwrap_or(c.hlc);
    let carried = carried & !t.pk_mask;
    let Some(old) = o.synced_row(key)? else {
        // No server copy: the local values stand.
        return Ok(());
    };
    let cur = o.state_row(key)?;
    let mut vals = old.vals.clone();
    let mut ver = old.ver.clone();
    let mut adopt = 0i64;
    for i in 0..t.ncols() {
        let bit = 1i64 << i;
        if carried & bit == 0 {
            continue;
        }
        let h = stamp(i);
        if old.full && old.ver[i] >= h {
            adopt |= bit;
        } else if confirmed && h > ver[i] {
            // The value the change carried (later local writes may have
            // changed the local row since).
            let name = t.col_name(i);
            vals[i] = match c.cols.get(name) {
                Some(v) => json_to_sql(t.col_type(i), v, t.name(), name)?,
                None => cur.as_ref().map(|r| r[i].clone()).unwrap_or(Value::Null),
            };
            ver[i] = h;
        }
    }
    let keep = keep.unwrap_or(0);
    o.update_state_cols(key, adopt & !keep, &old.vals)?;
    if keep != 0 {
        // Later local writes stay on top of the server copy, which now
        // holds what the server took.
        return if old.full {
            o.upsert_synced(&vals, &ver, true)
        } else {
            Ok(())
        };
    }
    match o.state_row(key)? {
        // The row is clean again: its values are the local row's.
        Some(now) => o.upsert_synced(&now, &ver, false),
        None => o.thin_synced(key),
    }
}

/// Local writes made on top of a change that is now acknowledged: for the
/// columns that merge against a base value (counter, set_union,
/// text_merge), their base is what the change carried, at its stamp: they
/// were made on that value, not on the server's (which may hold other
/// clients' concurrent edits, merged in), so the server adds exactly their
/// own delta.
fn base_on_carried(o: &mut TableOps, key: &Key, c: &Change, cols: i64) -> Result<()> {
    let t = o.t;
    for i in 0..t.ncols() {
        let bit = 1i64 << i;
        if cols & bit == 0 || t.pk_mask & bit != 0 || !t.needs_base_value(i) {
            continue;
        }
        let name = t.col_name(i);
        let Some(v) = c.cols.get(name) else {
            continue;
        };
        let val = json_to_sql(t.col_type(i), v, t.name(), name)?;
        let h = c.ver.get(name).copied().unwrap_or(c.hlc);
        o.stash_replace(key, i, h, &val)?;
    }
    Ok(())
}

/// Applies the server's answer to the in-flight batch.
pub fn sync_ack(st: &ConnState, db: Db, json_text: &str) -> Result<String> {
    let result = PushResult::parse(json_text)?;
    let loaded = st.loaded(db)?;
    let client = client_id(db)?;
    if result.client_id != client {
        return Err(Error::input(format!(
            "push result is for client {} but this database is client {client:?}",
            show(&result.client_id)
        )));
    }
    in_savepoint(db, "sync_ack", || {
        let _nc = st.no_capture();
        crate::schema::ddl::check_clock_not_shadowed(db)?;
        let (mut confirmed, mut rejected, mut conflicts, mut ignored) = (0, 0, 0, 0);
        let inflight =
            match meta_get(db, "inflight")? {
                Some(Value::Text(j)) => Some(PushBatch::parse(&j).map_err(|e| {
                    Error::corrupt(format!("stored in-flight batch is corrupt: {e}"))
                })?),
                _ => None,
            };
        let Some(inflight) = inflight else {
            return Ok(summary(0, 0, 0, result.results.len()));
        };
        let by_seq: HashMap<i64, &Change> = inflight.changes.iter().map(|c| (c.seq, c)).collect();
        // Validate everything before changing anything (the rows read here
        // are the ones applied below).
        let mut rows: Vec<Option<ServerRow>> = Vec::with_capacity(result.results.len());
        for r in &result.results {
            rows.push(None);
            if let Some(c) = by_seq.get(&r.seq) {
                if r.table != c.table {
                    return Err(Error::input(format!(
                        "result for seq {} names table {} but the change was on {:?}",
                        r.seq,
                        show(&r.table),
                        c.table
                    )));
                }
                if let Some(t) = loaded.table(&c.table) {
                    if t.key_from_json(&r.pk)? != t.key_from_json(&c.pk)? {
                        return Err(Error::input(format!(
                            "result for seq {} has pk {} but the change was for {}",
                            r.seq,
                            show_json(&Json::Object(r.pk.clone())),
                            show_json(&Json::Object(c.pk.clone()))
                        )));
                    }
                    if let Some(last) = rows.last_mut() {
                        *last = result_row(t, r, result.columns.get(&r.table))?;
                    }
                }
            }
        }
        let high_water = changes::max_seq(db)?;
        let mut ops: HashMap<usize, TableOps> = HashMap::new();
        changes::index_backlog(db)?;
        let mut lookup = RowLookup::new(db, &loaded)?;
        let mut covered_q = db.prepare(&format!(
            "SELECT seq, op, mask, pk FROM {} WHERE batch = ?1",
            q(CHANGES)
        ))?;
        let mut err_ins = db.prepare(&format!(
            "INSERT INTO {}(seq, tbl, pk, op, reason, constraint_name, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            q(ERRORS)
        ))?;
        let mut to_delete: Vec<i64> = Vec::new();
        for (ri, r) in result.results.iter().enumerate() {
            let Some(c) = by_seq.get(&r.seq) else {
                ignored += 1;
                continue;
            };
            // Rows of the queue this change carried.
            covered_q.bind_all(&[Value::Int(r.seq)])?;
            let mut covered: Vec<ChangeRow> = Vec::new();
            let mut stored_pk: Option<Value> = None;
            while covered_q.step()? {
                let op = match covered_q.col_text(1).as_deref() {
                    Some("insert") => changes::Op::Insert,
                    Some("update") => changes::Op::Update,
                    _ => changes::Op::Delete,
                };
                covered.push(ChangeRow {
                    seq: covered_q.col_i64(0),
                    op,
                    mask: covered_q.col_i64(2),
                    hlc: 0,
                    batch: Some(r.seq),
                });
                stored_pk = Some(covered_q.col(3));
            }
            covered_q.reset();
            if covered.is_empty() {
                // Already acknowledged.
                ignored += 1;
                continue;
            }
            to_delete.extend(covered.iter().map(|x| x.seq));
            // The conflict inbox: what the server reported, and the
            // resolutions this change carried.
            conflicts::record(db, c, &r.records)?;
            conflicts::settle(db, c, matches!(r.status, Status::Applied | Status::Merged))?;
            // A table the device no longer syncs (it pulled its removal while
            // the batch was in flight): its rows are gone; the answer is
            // counted, and a rejection recorded.
            let Some(ti) = loaded.table_idx(&c.table) else {
                match r.status {
                    Status::Applied | Status::Merged => confirmed += 1,
                    Status::Conflict => conflicts += 1,
                    Status::Rejected => {
                        rejected += 1;
                        err_ins.run_with(&[
                            Value::Int(r.seq),
                            Value::Text(c.table.clone()),
                            Value::Text(Json::Object(c.pk.clone()).to_string()),
                            Value::Text(op_name(c.op).into()),
                            r.reason.clone().map(Value::Text).unwrap_or(Value::Null),
                            r.constraint.clone().map(Value::Text).unwrap_or(Value::Null),
                            Value::Text(now_iso()),
                        ])?;
                    }
                }
                continue;
            };
            let t = &loaded.tables[ti];
            let acked_mask = covered.iter().fold(0, |m, x| m | x.effective_mask(t));
            let o = ops.entry(ti).or_insert_with(|| TableOps::new(db, t));
            let key = t.key_from_json(&c.pk)?;
            // Writes of the row made while the batch was in flight.
            let remaining = match &stored_pk {
                Some(pk) => lookup.by_stored(ti, pk)?.and_then(|mut g| {
                    g.rows.retain(|x| x.batch.is_none());
                    (!g.rows.is_empty()).then_some(g)
                }),
                None => None,
            };
            // Columns of the change the server took.
            let taken = if r.status == Status::Rejected {
                0
            } else {
                (0..t.ncols())
                    .filter(|&i| !r.ignored.iter().any(|n| n == t.col_name(i)))
                    .fold(0i64, |m, i| m | (1i64 << i))
                    & acked_mask
            };
            let server_row = match rows[ri].take() {
                Some(sr) => {
                    for h in &sr.ver {
                        st.observe(db, *h)?;
                    }
                    Some(complete_row(o, &key, sr, c, taken)?)
                }
                None => None,
            };
            match r.status {
                Status::Applied | Status::Merged | Status::Conflict => {
                    if r.status == Status::Conflict {
                        conflicts += 1;
                    } else {
                        confirmed += 1;
                    }
                    let overlay = remaining.as_ref().and_then(|g| g.pending_overlay(t));
                    if overlay.is_none() {
                        if let Some(g) = &remaining {
                            to_delete.extend(g.rows.iter().map(|x| x.seq));
                        }
                    }
                    match overlay {
                        None => o.stash_clear(&key)?,
                        // Columns this change carried now have a fresh
                        // server version as their base.
                        Some((keep, _)) => o.stash_retain(&key, keep & !acked_mask)?,
                    }
                    match (&server_row, overlay) {
                        (Some((vals, ver)), overlay) => {
                            adopt_row(o, &key, Some((vals, ver)), overlay, false)?
                        }
                        (None, overlay) if c.op == WireOp::Delete => {
                            adopt_row::<Value>(o, &key, None, overlay, false)?
                        }
                        (None, overlay) => ack_without_row(
                            o,
                            &key,
                            c,
                            acked_mask,
                            overlay.map(|(keep, _)| keep),
                            r.status != Status::Conflict,
                        )?,
                    }
                    if let Some((keep, false)) = overlay {
                        base_on_carried(o, &key, c, acked_mask & keep)?;
                    }
                }
                Status::Rejected => {
                    // Whatever the reason (a constraint, a table the server
                    // no longer syncs, a key that no longer matches), the
                    // row goes back to the server's state.
                    rejected += 1;
                    if let Some(g) = &remaining {
                        to_delete.extend(g.rows.iter().map(|x| x.seq));
                    }
                    match &server_row {
                        Some((vals, ver)) => adopt_row(o, &key, Some((vals, ver)), None, false)?,
                        None => o.state_from_synced(&key)?,
                    }
                    o.stash_clear(&key)?;
                    err_ins.run_with(&[
                        Value::Int(r.seq),
                        Value::Text(c.table.clone()),
                        Value::Text(Json::Object(c.pk.clone()).to_string()),
                        Value::Text(op_name(c.op).into()),
                        r.reason.clone().map(Value::Text).unwrap_or(Value::Null),
                        r.constraint.clone().map(Value::Text).unwrap_or(Value::Null),
                        Value::Text(now_iso()),
                    ])?;
                }
            }
        }
        drop(covered_q);
        drop(err_ins);
        drop(lookup);
        drop(ops);
        changes::delete_seqs(db, &to_delete)?;
        // Changes the result did not mention go back to the queue.
        db.exec(&format!(
            "UPDATE {} SET batch = NULL WHERE batch IS NOT NULL",
            q(CHANGES)
        ))?;
        meta_delete(db, "inflight")?;
        meta_set(db, "last_push", &Value::Text(now_iso()))?;
        progress::batch_answered(db, confirmed + rejected + conflicts)?;
        changes::keep_high_water(db, high_water)?;
        changes::unindex_if_empty(db)?;
        st.save_clock(db)?;
        Ok(summary(confirmed, rejected, conflicts, ignored))
    })
}

fn op_name(op: WireOp) -> &'static str {
    match op {
        WireOp::Insert => "insert",
        WireOp::Update => "update",
        WireOp::Delete => "delete",
    }
}

fn summary(confirmed: usize, rejected: usize, conflicts: usize, ignored: usize) -> String {
    json!({
        "confirmed": confirmed,
        "rejected": rejected,
        "conflicts": conflicts,
        "ignored": ignored,
    })
    .to_string()
}
