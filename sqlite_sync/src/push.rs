//! `sync_changes` (build the push batch) and `sync_ack` (apply its result).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value as Json};
use sync_core::wire::{Change, Op as WireOp, PushBatch, PushResult, Status, FORMAT};
use sync_core::Hlc;

use crate::changes::{self, Filter, Group, Net};
use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::{now_iso, q, show, show_json, sql_to_json, TableInfo, CHANGES, ERRORS};
use crate::ops::{check_ver, row_values, TableOps};
use crate::state::{client_id, in_savepoint, meta_delete, meta_get, meta_set, ConnState};

/// Builds (or returns the stored) push batch.
pub fn sync_changes(st: &ConnState, db: Db, max: i64) -> Result<String> {
    if max < 1 {
        return Err(Error::msg(format!("max must be at least 1, got {max}")));
    }
    let max = (max as usize).min(sync_core::wire::MAX_BATCH_CHANGES);
    let loaded = st.loaded(db)?;
    in_savepoint(db, "sync_changes", || {
        let _nc = st.no_capture();
        crate::ddl::check_clock_not_shadowed(db)?;
        if let Some(Value::Text(j)) = meta_get(db, "inflight")? {
            return Ok(j);
        }
        let client = client_id(db)?;
        let groups = changes::load(db, &loaded, Filter::Unsent)?;
        let mut purge: Vec<usize> = Vec::new();
        let mut candidates: Vec<(i64, usize, Net)> = Vec::new();
        for (gi, g) in groups.groups.iter().enumerate() {
            let t = &loaded.tables[g.table];
            match g.net(t) {
                Net::Nothing => purge.push(gi),
                net => {
                    let wire_seq = g.rows.last().map(|r| r.seq).unwrap_or(0);
                    candidates.push((wire_seq, gi, net));
                }
            }
        }
        candidates.sort_by_key(|c| c.0);
        candidates.truncate(max);
        let mut ops: HashMap<usize, TableOps> = HashMap::new();
        let mut out: Vec<Change> = Vec::with_capacity(candidates.len());
        let mut mark = db.prepare(&format!(
            "UPDATE {} SET batch = ?1 WHERE seq = ?2",
            q(CHANGES)
        ))?;
        for (wire_seq, gi, net) in candidates {
            let g = &groups.groups[gi];
            let t = &loaded.tables[g.table];
            let o = ops.entry(g.table).or_insert_with(|| TableOps::new(db, t));
            match build_change(o, g, net, wire_seq)? {
                Some(c) => {
                    for r in &g.rows {
                        mark.run_with(&[Value::Int(wire_seq), Value::Int(r.seq)])?;
                    }
                    out.push(c);
                }
                None => purge.push(gi),
            }
        }
        drop(mark);
        drop(ops);
        changes::purge(db, &loaded, &groups, &purge)?;
        let batch = PushBatch {
            format: FORMAT,
            client_id: client,
            changes: out,
        };
        let text = serde_json::to_string(&batch)?;
        if !batch.changes.is_empty() {
            meta_set(db, "inflight", &Value::Text(text.clone()))?;
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
        Net::Insert => (WireOp::Insert, t.all_mask, t.all_mask & !t.pk_mask),
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
    }))
}

/// Applies the server's answer to the in-flight batch.
pub fn sync_ack(st: &ConnState, db: Db, json_text: &str) -> Result<String> {
    let result = PushResult::parse(json_text)?;
    let loaded = st.loaded(db)?;
    let client = client_id(db)?;
    if result.client_id != client {
        return Err(Error::msg(format!(
            "push result is for client {} but this database is client {client:?}",
            show(&result.client_id)
        )));
    }
    in_savepoint(db, "sync_ack", || {
        let _nc = st.no_capture();
        crate::ddl::check_clock_not_shadowed(db)?;
        let (mut confirmed, mut rejected, mut conflicts, mut ignored) = (0, 0, 0, 0);
        let inflight = match meta_get(db, "inflight")? {
            Some(Value::Text(j)) => Some(
                PushBatch::parse(&j)
                    .map_err(|e| Error::msg(format!("stored in-flight batch is corrupt: {e}")))?,
            ),
            _ => None,
        };
        let Some(inflight) = inflight else {
            return Ok(summary(0, 0, 0, result.results.len()));
        };
        let by_seq: HashMap<i64, &Change> = inflight.changes.iter().map(|c| (c.seq, c)).collect();
        // Validate everything before changing anything.
        for r in &result.results {
            if let Some(c) = by_seq.get(&r.seq) {
                if r.table != c.table {
                    return Err(Error::msg(format!(
                        "result for seq {} names table {} but the change was on {:?}",
                        r.seq,
                        show(&r.table),
                        c.table
                    )));
                }
                if let Some(t) = loaded.table(&c.table) {
                    if t.key_from_json(&r.pk)? != t.key_from_json(&c.pk)? {
                        return Err(Error::msg(format!(
                            "result for seq {} has pk {} but the change was for {}",
                            r.seq,
                            show_json(&Json::Object(r.pk.clone())),
                            show_json(&Json::Object(c.pk.clone()))
                        )));
                    }
                    if let (Some(row), Some(ver)) = (&r.row, &r.ver) {
                        check_ver(t, ver)?;
                        row_values(t, row, &r.pk)?;
                    }
                }
            }
        }
        let unsent = changes::load(db, &loaded, Filter::Unsent)?;
        let high_water = changes::max_seq(db)?;
        let mut ops: HashMap<usize, TableOps> = HashMap::new();
        let mut covered_q = db.prepare(&format!(
            "SELECT seq, op, mask FROM {} WHERE batch = ?1",
            q(CHANGES)
        ))?;
        let mut err_ins = db.prepare(&format!(
            "INSERT INTO {}(seq, tbl, pk, op, reason, constraint_name, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            q(ERRORS)
        ))?;
        let mut to_delete: Vec<i64> = Vec::new();
        for r in &result.results {
            let Some(c) = by_seq.get(&r.seq) else {
                ignored += 1;
                continue;
            };
            // Rows of the queue this change carried.
            covered_q.bind_all(&[Value::Int(r.seq)])?;
            let mut covered: Vec<i64> = Vec::new();
            let mut acked_mask = 0i64;
            while covered_q.step()? {
                covered.push(covered_q.col_i64(0));
                let op = covered_q.col_text(1).unwrap_or_default();
                acked_mask |= if op == "insert" {
                    -1
                } else {
                    covered_q.col_i64(2)
                };
            }
            covered_q.reset();
            if covered.is_empty() {
                // Already acknowledged.
                ignored += 1;
                continue;
            }
            to_delete.extend(&covered);
            let Some(ti) = loaded.table_idx(&c.table) else {
                continue;
            };
            let t = &loaded.tables[ti];
            let o = ops.entry(ti).or_insert_with(|| TableOps::new(db, t));
            let key = t.key_from_json(&c.pk)?;
            let server_row = match (&r.row, &r.ver) {
                (Some(row), Some(ver)) => {
                    for h in ver {
                        st.observe(db, *h)?;
                    }
                    Some((row_values(t, row, &r.pk)?, ver))
                }
                _ => None,
            };
            let remaining = unsent.get(ti, &key);
            match r.status {
                Status::Applied | Status::Merged | Status::Conflict => {
                    if r.status == Status::Conflict {
                        conflicts += 1;
                    } else {
                        confirmed += 1;
                    }
                    let overlay = remaining.and_then(|g| g.pending_overlay(t));
                    if overlay.is_none() {
                        if let Some(g) = remaining {
                            to_delete.extend(g.rows.iter().map(|x| x.seq));
                        }
                    }
                    match (&server_row, overlay) {
                        (Some((vals, ver)), None) => {
                            o.upsert_synced(vals, ver, false)?;
                            o.upsert_state(vals)?;
                        }
                        (Some((vals, ver)), Some((keep, deleted))) => {
                            o.upsert_synced(vals, ver, true)?;
                            if !deleted {
                                o.update_state_cols(&key, t.all_mask & !keep, vals)?;
                            }
                        }
                        (None, overlay) if c.op == WireOp::Delete => {
                            o.delete_synced(&key)?;
                            if overlay.is_none() {
                                o.delete_state(&key)?;
                            }
                        }
                        // The server did not send the row back: keep the
                        // local values, which it accepted.
                        (None, None) => o.thin_synced(&key)?,
                        (None, Some(_)) => {}
                    }
                    match overlay {
                        None => o.stash_clear(&key)?,
                        // Columns this change carried now have a fresh
                        // server version as their base.
                        Some((keep, _)) => o.stash_retain(&key, keep & !acked_mask)?,
                    }
                }
                Status::Rejected => {
                    rejected += 1;
                    if let Some(g) = remaining {
                        to_delete.extend(g.rows.iter().map(|x| x.seq));
                    }
                    match &server_row {
                        Some((vals, ver)) => {
                            o.upsert_synced(vals, ver, false)?;
                            o.upsert_state(vals)?;
                        }
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
        drop(ops);
        changes::delete_seqs(db, &to_delete)?;
        // Changes the result did not mention go back to the queue.
        db.exec(&format!(
            "UPDATE {} SET batch = NULL WHERE batch IS NOT NULL",
            q(CHANGES)
        ))?;
        meta_delete(db, "inflight")?;
        meta_set(db, "last_push", &Value::Text(now_iso()))?;
        changes::keep_high_water(db, high_water)?;
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
