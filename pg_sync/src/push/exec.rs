//! The one-by-one executor: reads one change's row, has it decided, and
//! runs its write in its own subtransaction, so a failing write (a
//! constraint, a value of the wrong type) is rejected alone with the
//! constraint's name. Used when a set-based statement failed.

use pgrx::datum::DatumWithOid;
use serde_json::Value;
use sync_core::decide::{self, Found, Write};
use sync_core::wire::{Change, ChangeResult};
use sync_core::Hlc;

use super::{answer, found_gone, observe, records_json, with_state, RowState};
use crate::catalog::TableInfo;
use crate::error::Result;
use crate::privileged;
use crate::spi_util::{ident, one_cached, write_rows_cached};
use crate::track::with_delete_hlc;

/// Result of running one statement in its own subtransaction.
pub(super) enum Tried {
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
    let out = write_rows_cached(
        "SELECT pg_sync._try($1, $2::jsonb, $3::bigint[], $4::jsonb)::text",
        &[
            sql.to_string().into(),
            text_or_null(a),
            text_or_null(arr),
            text_or_null(c),
        ],
    )?
    .into_iter()
    .next()
    .and_then(|mut r| r.pop().flatten())
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

/// Applies one change: read, decide, write, then keep its records if it
/// stands.
pub(super) fn apply_one(
    t: &TableInfo,
    rules: &decide::Table,
    c: &Change,
    client: &str,
) -> Result<ChangeResult> {
    let pk_json = Value::Object(c.pk.clone()).to_string();
    let read = format!(
        "SELECT {} FROM {} t WHERE {} FOR UPDATE",
        state_sql(t),
        t.qualified,
        where_pk(t)
    );
    let current = match try_sql(&read, None, None, Some(pk_json.clone()))? {
        Tried::Failed {
            message,
            constraint,
        } => return Ok(super::rejected(c, message, constraint)),
        Tried::Ok(v) => RowState::from_json(&v),
    };
    let stamps = observe(c);
    let d = match &current {
        Some(cur) => decide::decide(
            rules,
            c,
            Found::Row {
                row: &cur.row,
                ver: &cur.ver,
            },
            &stamps,
        ),
        None => {
            let tomb = tombstone(t, &pk_json)?;
            decide::decide(rules, c, found_gone(t, c, tomb), &stamps)
        }
    };
    let written = match &d.write {
        None => None,
        Some(w) => match run_write(t, w, &pk_json)? {
            Tried::Failed {
                message,
                constraint,
            } => return Ok(super::rejected(c, message, constraint)),
            Tried::Ok(v) => Some(RowState::from_json(&v)),
        },
    };
    let mut r = answer(c, &d);
    if !d.records.is_empty() {
        let winner = current.as_ref().and_then(|s| s.xid.as_deref());
        let added =
            privileged::conflicts_add(records_json(t, c, client, &d.records, winner).to_string())?;
        super::attach_records(&mut r, &d.records, added);
    }
    let state = match written {
        Some(s) => s,
        None if d.show_current => current,
        None => None,
    };
    Ok(with_state(t, r, state.as_ref()))
}

/// Runs a decided write; the row it leaves comes back as state JSON.
fn run_write(t: &TableInfo, w: &Write, pk_json: &str) -> Result<Tried> {
    match w {
        Write::Insert { values, ver } => {
            let names: Vec<&String> = values.keys().collect();
            let cols: Vec<String> = names.iter().map(|n| ident(n)).collect();
            let vals: Vec<String> = names.iter().map(|n| format!("r.{}", ident(n))).collect();
            let sql = format!(
                "INSERT INTO {tbl} AS t ({cols}, _sync_ver) SELECT {vals}, $2 \
                 FROM pg_catalog.jsonb_populate_record(NULL::{tbl}, $1) r RETURNING {state}",
                tbl = t.qualified,
                cols = cols.join(", "),
                vals = vals.join(", "),
                state = state_sql(t),
            );
            let values = Value::Object(values.clone()).to_string();
            try_sql(&sql, Some(values), Some(ver), Some(pk_json.to_string()))
        }
        Write::Update { values, ver } => {
            let sets: Vec<String> = values
                .keys()
                .map(|n| format!("{} = r.{}", ident(n), ident(n)))
                .chain(std::iter::once("_sync_ver = $2".to_string()))
                .collect();
            let sql = format!(
                "UPDATE {tbl} t SET {sets} FROM pg_catalog.jsonb_populate_record(NULL::{tbl}, $1) r \
                 WHERE {pk} RETURNING {state}",
                tbl = t.qualified,
                sets = sets.join(", "),
                pk = where_pk(t),
                state = state_sql(t),
            );
            let values = Value::Object(values.clone()).to_string();
            try_sql(&sql, Some(values), Some(ver), Some(pk_json.to_string()))
        }
        Write::Delete { hlc } => {
            let sql = format!(
                "DELETE FROM {} t WHERE {} RETURNING '{{}}'::jsonb",
                t.qualified,
                where_pk(t)
            );
            with_delete_hlc(*hlc, || {
                try_sql(&sql, None, None, Some(pk_json.to_string()))
            })
        }
    }
}

/// A row's state (values and versions) as one jsonb value.
fn state_sql(t: &TableInfo) -> String {
    format!(
        "pg_catalog.jsonb_build_object('row', {}, 'ver', t._sync_ver, 'xid', t._sync_xid::pg_catalog.text)",
        t.row_expr("t")
    )
}

/// The change's key, from parameter `$3`.
fn where_pk(t: &TableInfo) -> String {
    format!("{} = {}", t.pk_tuple("t"), t.pk_from_json_param("$3"))
}

/// The newest tombstone of a key that the caller may see.
fn tombstone(t: &TableInfo, pk_json: &str) -> Result<Option<Hlc>> {
    let sql = format!(
        "SELECT pg_catalog.max(hlc)::text FROM pg_sync.tombstones WHERE relid = $1 AND pk = {}",
        super::jsonb_pk_from_param(t, "$2")
    );
    Ok(
        one_cached(&sql, &[t.relid.into(), pk_json.to_string().into()])?
            .and_then(|v| v.parse().ok())
            .map(Hlc::from_i64),
    )
}
