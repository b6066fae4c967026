//! Operations: compaction and manual conflict resolution.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::catalog;
use crate::error::{or_raise, PgSyncError, Result};
use crate::privileged;
use crate::spi_util::{ident, one, write_one};

/// Removes tombstones and push results older than `retain`. Clients whose
/// cursor is older than what was removed get `resync_required` on their
/// next pull. Returns `{tombstones_removed, results_removed, compacted_xid}`.
/// Not executable by PUBLIC: the DBA grants it to an operator role.
#[pg_extern]
fn sync_compact(retain: pgrx::datum::Interval) -> JsonB {
    or_raise(compact(retain))
}

fn compact(retain: pgrx::datum::Interval) -> Result<JsonB> {
    let negative = one(
        "SELECT ($1 OPERATOR(pg_catalog.<) '0'::pg_catalog.interval)::pg_catalog.text",
        &[retain.into()],
    )?;
    if negative.as_deref() == Some("true") {
        return Err(PgSyncError::BadArgument(
            "sync_compact: retain must not be negative (it is how long changes are kept)".into(),
        ));
    }
    let out = privileged::compact(retain)?;
    serde_json::from_str(&out)
        .map(JsonB)
        .map_err(|e| PgSyncError::Spi(format!("compaction summary: {e}")))
}

/// Makes every client resync on its next pull (`resync_required`), so that
/// rows it may no longer see are dropped. Run it after changing what
/// row-level security lets clients see without writing the rows (e.g. a
/// membership table, or a REVOKE). Policy commands on synced tables do it
/// automatically. Not executable by PUBLIC.
/// Returns the new visibility epoch.
#[pg_extern]
fn sync_resync_all() -> i64 {
    or_raise(privileged::bump_epoch())
}

pgrx::extension_sql!(
    r#"
-- Admin functions: the DBA grants them to operator roles.
REVOKE EXECUTE ON FUNCTION sync_enable(regclass, jsonb), sync_disable(regclass),
    sync_compact(interval), sync_resync_all() FROM PUBLIC;
-- Trigger functions are checked when a trigger is created, not when it fires.
REVOKE EXECUTE ON FUNCTION pg_sync.track(), pg_sync.track_delete(), pg_sync.track_truncate() FROM PUBLIC;
"#,
    name = "admin_grants",
    finalize
);

/// Resolves a conflict: `keep_server` leaves the row as it is,
/// `use_client` writes the client's value, `use_value` writes `value`. The
/// write is an ordinary, tracked UPDATE run as the caller.
#[pg_extern]
fn sync_resolve(
    conflict_id: i64,
    resolution: &str,
    value: default!(Option<JsonB>, "NULL"),
) -> bool {
    or_raise(resolve(conflict_id, resolution, value.map(|v| v.0)))
}

fn resolve(id: i64, resolution: &str, value: Option<Value>) -> Result<bool> {
    let missing = || PgSyncError::BadArgument(format!("conflict {id} does not exist"));
    let Some(c) = privileged::conflict_get(id)? else {
        return Err(missing());
    };
    let c: Value = serde_json::from_str(&c).unwrap_or_default();
    let table = c["table_name"].as_str().unwrap_or_default();
    let t = catalog::synced_tables()?
        .iter()
        .find(|t| t.name == table && c["relid"].as_u64() == Some(u64::from(u32::from(t.relid))))
        .cloned();
    // Acting on a conflict needs UPDATE on its table and the row visible to
    // the caller; to anyone else the conflict does not exist (its values
    // are another tenant's data).
    let Some(t) = t else {
        return Err(missing());
    };
    let may_update = one(
        "SELECT pg_catalog.has_any_column_privilege($1, 'UPDATE')::pg_catalog.text",
        &[t.relid.into()],
    )?;
    if may_update.as_deref() != Some("true") {
        return Err(missing());
    }
    let pk = c["pk"].to_string();
    let visible = write_one(
        &format!(
            "SELECT 'true' FROM {tbl} t WHERE {cols} = {key} FOR UPDATE",
            tbl = t.qualified,
            cols = t.pk_tuple("t"),
            key = t.pk_from_json_param("$1"),
        ),
        &[pk.clone().into()],
    )?;
    if visible.is_none() {
        return Err(missing());
    }
    if !c["resolved_at"].is_null() {
        return Err(PgSyncError::BadArgument(format!(
            "conflict {id} is already resolved"
        )));
    }
    let write = match resolution {
        "keep_server" => None,
        "use_client" => Some(c["client_value"].clone()),
        "use_value" => Some(value.ok_or_else(|| {
            PgSyncError::BadArgument("use_value needs the value as the third argument".into())
        })?),
        other => {
            return Err(PgSyncError::BadArgument(format!(
                "unknown resolution {other:?}; use keep_server, use_client or use_value"
            )))
        }
    };
    if let Some(v) = write {
        let Some(column) = c["column_name"].as_str() else {
            return Err(PgSyncError::BadArgument(format!(
                "conflict {id} is about a whole row; resolve it by writing the row"
            )));
        };
        if t.column(column).is_none() {
            return Err(PgSyncError::Sync(sync_core::SyncError::UnknownColumn {
                table: table.into(),
                column: column.into(),
            }));
        }
        let mut obj = serde_json::Map::new();
        obj.insert(column.to_string(), v);
        let sql = format!(
            "UPDATE {tbl} t SET {col} = r.{col} FROM pg_catalog.jsonb_populate_record(NULL::{tbl}, $1::jsonb) r \
             WHERE {pk} = {key} RETURNING 'true'",
            tbl = t.qualified,
            col = ident(column),
            pk = t.pk_tuple("t"),
            key = t.pk_from_json_param("$2"),
        );
        // Runs as the caller: its UPDATE policies decide.
        let updated = write_one(&sql, &[Value::Object(obj).to_string().into(), pk.into()])?;
        if updated.is_none() {
            return Err(PgSyncError::PermissionDenied(format!(
                "the row of conflict {id} may not be updated by this role"
            )));
        }
    }
    let res = serde_json::json!({
        "resolution": resolution,
        "by": one("SELECT current_user::pg_catalog.text", &[])?,
    });
    privileged::conflict_resolved(id, res.to_string())?;
    Ok(true)
}

/// Closes conflict `id` that a device's user resolved with the applied
/// change `c` (its `resolves`): only a record of the change's table and
/// row, still open, on a table the caller may update. Anything else is
/// left as it is (the change itself stands). Returns whether it closed.
pub(crate) fn close_from_device(
    t: &crate::catalog::TableInfo,
    id: i64,
    c: &sync_core::wire::Change,
    client: &str,
) -> Result<bool> {
    let Some(rec) = privileged::conflict_get(id)? else {
        return Ok(false);
    };
    let rec: Value = serde_json::from_str(&rec).unwrap_or_default();
    let same_row = rec["table_name"].as_str() == Some(t.name.as_str())
        && rec["relid"].as_u64() == Some(u64::from(u32::from(t.relid)))
        && rec["pk"] == Value::Object(c.pk.clone());
    if !same_row || !rec["resolved_at"].is_null() {
        return Ok(false);
    }
    let may_update = one(
        "SELECT pg_catalog.has_any_column_privilege($1, 'UPDATE')::pg_catalog.text",
        &[t.relid.into()],
    )?;
    if may_update.as_deref() != Some("true") {
        return Ok(false);
    }
    let res = serde_json::json!({
        "resolution": "device",
        "by": one("SELECT current_user::pg_catalog.text", &[])?,
        "client_id": client,
        "seq": c.seq,
    });
    privileged::conflict_resolved(id, res.to_string())?;
    Ok(true)
}
