//! Operations: compaction and manual conflict resolution.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::catalog;
use crate::error::{or_raise, PgSyncError, Result};
use crate::spi_util::{exec, ident, one};

/// Removes tombstones and push results older than `retain`. Clients whose
/// cursor is older than what was removed get `resync_required` on their
/// next pull. Returns `{tombstones_removed, results_removed, compacted_xid}`.
#[pg_extern]
fn sync_compact(retain: pgrx::datum::Interval) -> JsonB {
    let out = or_raise(
        one("SELECT pg_sync._compact($1)::text", &[retain.into()]).map(|v| v.unwrap_or_default()),
    );
    JsonB(serde_json::from_str(&out).unwrap_or_default())
}

/// Makes every client resync on its next pull (`resync_required`), so that
/// rows it may no longer see are dropped. Run it after changing what
/// row-level security lets clients see without writing the rows (e.g. a
/// membership table, or a REVOKE). Policy commands on synced tables do it
/// automatically.
/// Returns the new visibility epoch.
#[pg_extern]
fn sync_resync_all() -> i64 {
    or_raise(
        one("SELECT pg_sync._bump_epoch()::text", &[])
            .map(|v| v.and_then(|s| s.parse().ok()).unwrap_or(0)),
    )
}

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
    let Some(c) = one("SELECT pg_sync._conflict_get($1)::text", &[id.into()])? else {
        return Err(PgSyncError::BadArgument(format!(
            "conflict {id} does not exist"
        )));
    };
    let c: Value = serde_json::from_str(&c).unwrap_or_default();
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
        let table = c["table_name"].as_str().unwrap_or_default();
        let Some(column) = c["column_name"].as_str() else {
            return Err(PgSyncError::BadArgument(format!(
                "conflict {id} is about a whole row; resolve it by writing the row"
            )));
        };
        let t = catalog::synced_tables()?
            .into_iter()
            .find(|t| t.name == table)
            .ok_or_else(|| PgSyncError::NotSynced(table.to_string()))?;
        if t.column(column).is_none() {
            return Err(PgSyncError::Sync(sync_core::SyncError::UnknownColumn {
                table: table.into(),
                column: column.into(),
            }));
        }
        let mut obj = serde_json::Map::new();
        obj.insert(column.to_string(), v);
        let sql = format!(
            "UPDATE {tbl} t SET {col} = r.{col} FROM jsonb_populate_record(NULL::{tbl}, $1::jsonb) r WHERE {pk} = {key}",
            tbl = t.qualified,
            col = ident(column),
            pk = t.pk_tuple("t"),
            key = t.pk_from_json_param("$2"),
        );
        exec(
            &sql,
            &[
                Value::Object(obj).to_string().into(),
                c["pk"].to_string().into(),
            ],
        )?;
    }
    let res =
        serde_json::json!({"resolution": resolution, "by": one("SELECT current_user::text", &[])?});
    exec(
        "SELECT pg_sync._conflict_resolved($1, $2::jsonb)",
        &[id.into(), res.to_string().into()],
    )?;
    Ok(true)
}
