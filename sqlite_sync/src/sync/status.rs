//! Read-only functions: `sync_status`, `sync_pending`, `sync_cursor`,
//! `sync_client_id`.

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::key::{key_affinity, Key, KeyPart};
use crate::model::names::{q, CONFLICTS, ERRORS};
use crate::model::values::json_to_sql;
use crate::store::changes;
use crate::store::state::{client_id, meta_get, meta_text, ConnState};

pub fn sync_status(st: &ConnState, db: Db) -> Result<String> {
    let loaded = st.loaded(db)?;
    let groups = changes::load(db, &loaded)?;
    let pending = groups
        .groups
        .iter()
        .filter(|g| g.is_pending(&loaded.tables[g.table]))
        .count();
    // Rows with writes no batch has taken yet.
    let queued = groups
        .groups
        .iter()
        .filter(|g| g.net(&loaded.tables[g.table]) != changes::Net::Nothing)
        .count();
    let in_flight = matches!(meta_get(db, "inflight")?, Some(Value::Text(_)));
    let mut s = db.prepare(&format!("SELECT count(*) FROM {}", q(ERRORS)))?;
    let errors = if s.step()? { s.col_i64(0) } else { 0 };
    drop(s);
    let mut s = db.prepare(&format!(
        "SELECT count(*) FROM {} WHERE state <> 'resolved'",
        q(CONFLICTS)
    ))?;
    let open_conflicts = if s.step()? { s.col_i64(0) } else { 0 };
    drop(s);
    Ok(json!({
        "client_id": client_id(db)?,
        "pending": pending,
        "in_flight": in_flight,
        "cursor": meta_text(db, "cursor")?,
        "schema_version": loaded.schema.version,
        "last_push": meta_text(db, "last_push")?,
        "last_pull": meta_text(db, "last_pull")?,
        "errors": errors,
        "conflicts": open_conflicts,
        "push": crate::sync::progress::status(db, queued)?,
        "streams": crate::sync::streams::status(db)?,
    })
    .to_string())
}

/// Whether a row has writes the server has not confirmed. `pk` is a JSON
/// object of the key columns, or the plain value of a one-column key.
pub fn sync_pending(st: &ConnState, db: Db, table: &Value, pk: &Value) -> Result<i64> {
    let loaded = st.loaded(db)?;
    let Value::Text(table) = table else {
        return Err(Error::input("table must be a table name (text)"));
    };
    let (ti, t) = loaded.require(table)?;
    let key = match pk {
        Value::Text(s) if s.trim_start().starts_with('{') => {
            match serde_json::from_str::<Map<String, Json>>(s) {
                Ok(obj) if !t.single_pk() || obj.contains_key(&t.def.pk[0]) => {
                    t.key_from_json(&obj)?
                }
                Ok(_) | Err(_) if t.single_pk() => plain_key(t, pk),
                Ok(_) => {
                    return Err(Error::input(format!(
                        "pk must name the key columns {:?} of table {table:?}",
                        t.def.pk
                    )))
                }
                Err(e) => return Err(Error::input(format!("malformed JSON in pk: {e}"))),
            }
        }
        _ if t.single_pk() => plain_key(t, pk),
        _ => {
            return Err(Error::input(format!(
                "table {table:?} has a composite primary key {:?}; pass pk as a JSON object",
                t.def.pk
            )))
        }
    };
    let group = changes::RowLookup::new(db, &loaded)?.by_key(ti, &key)?;
    Ok(match group {
        Some(g) if g.is_pending(t) => 1,
        _ => 0,
    })
}

fn plain_key(t: &crate::model::table::TableInfo, pk: &Value) -> Key {
    let ci = t.pk_idx[0];
    let ty = t.col_type(ci);
    let v = match pk {
        Value::Text(s) if ty == sync_core::schema::ColumnType::Blob => {
            json_to_sql(ty, &Json::String(s.clone()), t.name(), t.col_name(ci))
                .unwrap_or_else(|_| pk.clone())
        }
        other => other.clone(),
    };
    Key(vec![KeyPart::from_value(&key_affinity(ty, v))])
}
