//! The conflict inbox: what the server reported of conflicting pushes,
//! kept on the device until the app resolves it (`_sync_conflicts`), and
//! `sync_resolve` / `sync_conflict_diff`.
//!
//! A conflict enters when `sync_ack` reads a result carrying conflict
//! records (`ChangeResult::records`). Resolving with `theirs` closes it;
//! `mine` or a value is written to the row as an ordinary local write
//! (queued and pushed like any other), and the change that carries it
//! names the server's record in `resolves`, so the server closes its
//! record too once the write is applied.

use serde_json::{json, Value as Json};
use sync_core::text::word_diff;
use sync_core::wire::{Change, ConflictRecord};
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::names::{q, CONFLICTS};
use crate::model::values::{iso_from_unix_ms, json_to_sql, now_iso};
use crate::store::state::{in_savepoint, ConnState};

/// The time of a stamp, as ISO 8601 text.
fn time_of(h: Option<Hlc>) -> Value {
    match h {
        Some(h) if h != Hlc::ZERO => Value::Text(iso_from_unix_ms(h.unix_ms())),
        _ => Value::Null,
    }
}

fn json_value(v: Option<&Json>) -> Value {
    match v {
        Some(v) => Value::Text(v.to_string()),
        None => Value::Null,
    }
}

/// Records the conflicts the server reported for the in-flight change `c`
/// (once: a record already in the inbox is kept as it is).
pub fn record(db: Db, c: &Change, records: &[ConflictRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut ins = db.prepare(&format!(
        "INSERT OR IGNORE INTO {}(server_id, tbl, pk, col, strategy, outcome, reason, \
         mine, theirs, base, mine_at, theirs_at, winner_client, winner_role, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        q(CONFLICTS)
    ))?;
    let pk = Json::Object(c.pk.clone()).to_string();
    for r in records {
        let base = r.column.as_deref().and_then(|col| c.base_values.get(col));
        ins.run_with(&[
            Value::Int(r.id),
            Value::Text(c.table.clone()),
            Value::Text(pk.clone()),
            r.column.clone().map(Value::Text).unwrap_or(Value::Null),
            Value::Text(r.strategy.clone()),
            Value::Text(r.outcome.clone()),
            Value::Text(r.reason.clone()),
            json_value(r.client_value.as_ref()),
            json_value(r.server_value.as_ref()),
            json_value(base),
            time_of(r.client_ver),
            time_of(r.server_ver),
            r.winner_client
                .clone()
                .map(Value::Text)
                .unwrap_or(Value::Null),
            r.winner_role
                .clone()
                .map(Value::Text)
                .unwrap_or(Value::Null),
            Value::Text(now_iso()),
        ])?;
    }
    Ok(())
}

/// Whether any resolution waits to be pushed (so `sync_changes` looks up
/// the rows it sends).
pub fn any_resolving(db: Db) -> Result<bool> {
    let mut s = db.prepare(&format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE state = 'resolving' AND server_id IS NOT NULL)",
        q(CONFLICTS)
    ))?;
    Ok(s.step()? && s.col_i64(0) == 1)
}

/// The server ids of the conflicts a change of `table`/`pk` (JSON object
/// text) resolves.
pub fn resolving(db: Db, table: &str, pk: &str) -> Result<Vec<i64>> {
    let mut s = db.prepare(&format!(
        "SELECT server_id FROM {} WHERE state = 'resolving' AND server_id IS NOT NULL \
         AND tbl = ?1 AND pk = ?2 ORDER BY server_id",
        q(CONFLICTS)
    ))?;
    s.bind_all(&[Value::Text(table.into()), Value::Text(pk.into())])?;
    let mut out = Vec::new();
    while s.step()? {
        out.push(s.col_i64(0));
    }
    Ok(out)
}

/// After the server answered a change that carried resolutions: applied,
/// they are settled; otherwise they are open again (the app decides anew).
pub fn settle(db: Db, c: &Change, applied: bool) -> Result<()> {
    if c.resolves.is_empty() {
        return Ok(());
    }
    let sql = if applied {
        "UPDATE {t} SET state = 'resolved', resolved_at = ?2 WHERE server_id = ?1 AND state = 'resolving'"
    } else {
        "UPDATE {t} SET state = 'open', resolution = NULL WHERE server_id = ?1 AND state = 'resolving'"
    };
    let mut s = db.prepare(&sql.replace("{t}", &q(CONFLICTS)))?;
    for &id in &c.resolves {
        if applied {
            s.run_with(&[Value::Int(id), Value::Text(now_iso())])?;
        } else {
            s.run_with(&[Value::Int(id)])?;
        }
    }
    Ok(())
}

/// One inbox entry, as `sync_resolve` and `sync_conflict_diff` need it.
struct Entry {
    table: String,
    pk: String,
    column: Option<String>,
    mine: Option<String>,
    theirs: Option<String>,
    state: String,
}

fn entry(db: Db, id: i64) -> Result<Entry> {
    let mut s = db.prepare(&format!(
        "SELECT tbl, pk, col, mine, theirs, state FROM {} WHERE id = ?1",
        q(CONFLICTS)
    ))?;
    s.bind_all(&[Value::Int(id)])?;
    if !s.step()? {
        return Err(Error::input(format!("conflict {id} does not exist")));
    }
    Ok(Entry {
        table: s.col_text(0).unwrap_or_default(),
        pk: s.col_text(1).unwrap_or_default(),
        column: s.col_text(2),
        mine: s.col_text(3),
        theirs: s.col_text(4),
        state: s.col_text(5).unwrap_or_default(),
    })
}

/// `sync_resolve(id, how [, value])`: `theirs` keeps the server's value
/// and closes the conflict; `mine` writes the device's value again and
/// `value` writes `value`, each as a local write that the next push sends
/// (the conflict is `resolving` until the server applied it). Returns the
/// entry's new state as JSON.
pub fn sync_resolve(
    st: &ConnState,
    db: Db,
    id: i64,
    how: &str,
    value: Option<&Value>,
) -> Result<String> {
    let loaded = st.loaded(db)?;
    in_savepoint(db, "sync_resolve", || {
        let write = match (how, value) {
            ("theirs", None) => None,
            ("mine", None) => Some(None),
            ("value", Some(v)) => Some(Some(v.clone())),
            ("value", None) => {
                return Err(Error::input(
                    "resolving with 'value' needs the value as the third argument",
                ))
            }
            ("theirs" | "mine", Some(_)) => {
                return Err(Error::input(format!(
                    "resolving with {how:?} takes no value; use 'value' to write one"
                )))
            }
            (other, _) => {
                return Err(Error::input(format!(
                    "unknown resolution {}; use 'mine', 'theirs' or 'value'",
                    crate::model::names::show(other)
                )))
            }
        };
        let e = entry(db, id)?;
        if e.state == "resolved" {
            return Err(Error::input(format!("conflict {id} is already resolved")));
        }
        let state = match write {
            None => "resolved",
            Some(v) => {
                let (_, t) = loaded.require(&e.table)?;
                let col = e
                    .column
                    .as_deref()
                    .and_then(|c| t.def.column_index(c).map(|i| (c, i)));
                let Some((col, ci)) = col else {
                    return Err(Error::input(format!(
                        "conflict {id} is about the whole row, not one column; \
                         write the row to resolve it"
                    )));
                };
                if t.pk_mask & (1i64 << ci) != 0 {
                    return Err(Error::input(format!(
                        "conflict {id} is about a key column; write the row to resolve it"
                    )));
                }
                let v = match v {
                    Some(v) => v,
                    None => match &e.mine {
                        Some(text) => {
                            let j: Json = serde_json::from_str(text)?;
                            json_to_sql(t.col_type(ci), &j, t.name(), col)?
                        }
                        None => Value::Null,
                    },
                };
                let pk: serde_json::Map<String, Json> = serde_json::from_str(&e.pk)?;
                let key = t.key_from_json(&pk)?;
                let mut upd = db.prepare(&format!(
                    "UPDATE {} SET {} = ?1 WHERE {}",
                    q(&t.state),
                    q(col),
                    t.pk_where(2)
                ))?;
                upd.bind(1, &v)?;
                for (i, p) in key.0.iter().enumerate() {
                    upd.bind(2 + i, &p.to_value())?;
                }
                upd.run()?;
                drop(upd);
                if db.changes() == 0 {
                    return Err(Error::input(format!(
                        "the row of conflict {id} is not on this device (deleted here, or \
                         gone from the server); write the row to resolve it"
                    )));
                }
                "resolving"
            }
        };
        let mut s = db.prepare(&format!(
            "UPDATE {} SET state = ?2, resolution = ?3, \
             resolved_at = CASE WHEN ?2 = 'resolved' THEN ?4 END WHERE id = ?1",
            q(CONFLICTS)
        ))?;
        s.run_with(&[
            Value::Int(id),
            Value::Text(state.into()),
            Value::Text(how.into()),
            Value::Text(now_iso()),
        ])?;
        Ok(json!({"id": id, "state": state, "resolution": how}).to_string())
    })
}

/// `sync_conflict_diff(id)`: the word-level diff of a text conflict, from
/// the server's value (`theirs`) to the device's (`mine`), as
/// `{"id", "column", "theirs", "mine", "edits": [{"op", "text"}]}` with
/// `op` one of `equal`, `delete` (only theirs), `insert` (only mine).
pub fn sync_conflict_diff(db: Db, id: i64) -> Result<String> {
    let e = entry(db, id)?;
    let text = |v: &Option<String>| -> Option<String> {
        match serde_json::from_str::<Json>(v.as_deref()?) {
            Ok(Json::String(s)) => Some(s),
            _ => None,
        }
    };
    let (Some(theirs), Some(mine)) = (text(&e.theirs), text(&e.mine)) else {
        return Err(Error::input(format!(
            "conflict {id} is not about two text values"
        )));
    };
    let Some(edits) = word_diff(&theirs, &mine) else {
        return Err(Error::input(format!(
            "the values of conflict {id} differ too much to diff word by word"
        )));
    };
    Ok(json!({
        "id": id,
        "column": e.column,
        "theirs": theirs,
        "mine": mine,
        "edits": edits,
    })
    .to_string())
}
