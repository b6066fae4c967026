//! `sync_enable`, `sync_disable` and `sync_schema`.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::catalog::{self, TableOptions, VER_COL, XID_COL};
use crate::error::{or_raise, PgSyncError, Result};
use crate::spi_util::{exec, ident, one};

/// Enables sync on a table: adds the tracking columns `_sync_xid` and
/// `_sync_ver`, an index for pulls, and the tracking triggers. Existing rows
/// are sent to clients on their next pull.
#[pg_extern(sql = r#"
CREATE FUNCTION sync_enable(tbl regclass, options jsonb DEFAULT '{}') RETURNS boolean
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'sync_enable_wrapper';
"#)]
fn sync_enable(tbl: pg_sys::Oid, options: JsonB) -> bool {
    or_raise(enable(tbl, &options.0.to_string()))
}

fn enable(relid: pg_sys::Oid, options_json: &str) -> Result<bool> {
    let options = TableOptions::parse(options_json)?;
    let info = catalog::describe(relid, options)?;
    if one(
        "SELECT 1::text FROM pg_sync.tables WHERE relid = $1",
        &[relid.into()],
    )?
    .is_some()
    {
        return Err(PgSyncError::AlreadySynced(info.qualified));
    }
    if one(
        "SELECT 1::text FROM pg_sync.tables WHERE name = $1",
        &[info.name.clone().into()],
    )?
    .is_some()
    {
        return Err(PgSyncError::DuplicateName(info.name));
    }
    let others: Vec<String> = catalog::synced_tables()?
        .iter()
        .map(|t| t.name.clone())
        .collect();
    sync_core::schema::check_table_name(&info.name, others.iter().map(String::as_str))?;
    for c in &info.columns {
        sync_core::schema::check_column_name(&info.name, &c.name)?;
    }
    if info.columns.len() > sync_core::schema::MAX_SYNCED_COLUMNS {
        return Err(PgSyncError::BadArgument(format!(
            "{} has {} columns; a synced table may have at most {}",
            info.qualified,
            info.columns.len(),
            sync_core::schema::MAX_SYNCED_COLUMNS
        )));
    }
    let relkind = one(
        "SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    )?;
    if relkind.as_deref() != Some("r") {
        return Err(PgSyncError::BadArgument(format!(
            "{} is not an ordinary table; only tables can be synced",
            info.qualified
        )));
    }
    let t = &info.qualified;
    // A constant default adds the column without rewriting the table; rows
    // that exist now get xid 0 and reach clients with their first pull.
    exec(
        &format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {XID_COL} xid8 NOT NULL DEFAULT '0', \
             ADD COLUMN IF NOT EXISTS {VER_COL} bigint[]"
        ),
        &[],
    )?;
    // Rows inserted while the triggers are bypassed still get a real xid,
    // and raise the table's write mark (marks.rs; a catalog older than
    // 0.5.0 has no marks, and the update sets this default).
    let marks = crate::marks::available();
    let default = if marks {
        format!(
            "pg_sync._write_xid('{}'::pg_catalog.regclass)",
            u32::from(relid)
        )
    } else {
        "pg_catalog.pg_current_xact_id()".to_string()
    };
    exec(
        &format!("ALTER TABLE {t} ALTER COLUMN {XID_COL} SET DEFAULT {default}"),
        &[],
    )?;
    let pk_cols: Vec<String> = info.pk.iter().map(|k| ident(k)).collect();
    exec(
        &format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} ({XID_COL}, {})",
            ident(&format!("{}_sync_xid_idx", info.name)),
            pk_cols.join(", ")
        ),
        &[],
    )?;
    for (name, when, each, function) in [
        (
            "zz_pg_sync_track",
            "BEFORE INSERT OR UPDATE",
            "ROW",
            "track",
        ),
        ("zz_pg_sync_delete", "AFTER DELETE", "ROW", "track_delete"),
        (
            "zz_pg_sync_truncate",
            "BEFORE TRUNCATE",
            "STATEMENT",
            "track_truncate",
        ),
    ] {
        exec(
            &format!("CREATE TRIGGER {name} {when} ON {t} FOR EACH {each} EXECUTE FUNCTION pg_sync.{function}()"),
            &[],
        )?;
    }
    // Fire also under session_replication_role = replica (logical
    // replication, pg_restore --disable-triggers aside): every write is tracked.
    exec(
        &format!(
            "ALTER TABLE {t} ENABLE ALWAYS TRIGGER zz_pg_sync_track, \
             ENABLE ALWAYS TRIGGER zz_pg_sync_delete, ENABLE ALWAYS TRIGGER zz_pg_sync_truncate"
        ),
        &[],
    )?;
    exec(
        "INSERT INTO pg_sync.tables (relid, name, options) VALUES ($1, $2, $3::jsonb)",
        &[
            relid.into(),
            info.name.clone().into(),
            options_json.to_string().into(),
        ],
    )?;
    if marks {
        exec(
            "INSERT INTO pg_sync.last_writes (relid, xid) VALUES ($1, pg_catalog.pg_current_xact_id()) \
             ON CONFLICT (relid) DO UPDATE SET xid = EXCLUDED.xid",
            &[relid.into()],
        )?;
    }
    catalog::bump_schema_version()?;
    Ok(true)
}

/// Disables sync on a table: removes the triggers, the tracking columns and
/// the table's tombstones. Clients drop the table at their next pull.
#[pg_extern(sql = r#"
CREATE FUNCTION sync_disable(tbl regclass) RETURNS boolean
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'sync_disable_wrapper';
"#)]
fn sync_disable(tbl: pg_sys::Oid) -> bool {
    or_raise(disable(tbl))
}

fn disable(relid: pg_sys::Oid) -> Result<bool> {
    let Some(name) = one(
        "SELECT name FROM pg_sync.tables WHERE relid = $1",
        &[relid.into()],
    )?
    else {
        let shown = one("SELECT $1::regclass::text", &[relid.into()])?.unwrap_or_default();
        return Err(PgSyncError::NotSynced(shown));
    };
    let t = one("SELECT $1::regclass::text", &[relid.into()])?.unwrap_or_default();
    for trg in [
        "zz_pg_sync_track",
        "zz_pg_sync_delete",
        "zz_pg_sync_truncate",
    ] {
        exec(&format!("DROP TRIGGER IF EXISTS {trg} ON {t}"), &[])?;
    }
    exec(
        &format!(
            "DROP INDEX IF EXISTS {}",
            ident(&format!("{name}_sync_xid_idx"))
        ),
        &[],
    )?;
    exec(
        &format!(
            "ALTER TABLE {t} DROP COLUMN IF EXISTS {XID_COL}, DROP COLUMN IF EXISTS {VER_COL}"
        ),
        &[],
    )?;
    exec(
        "DELETE FROM pg_sync.tombstones WHERE relid = $1",
        &[relid.into()],
    )?;
    exec(
        "DELETE FROM pg_sync.tables WHERE relid = $1",
        &[relid.into()],
    )?;
    if crate::marks::available() {
        exec(
            "DELETE FROM pg_sync.last_writes WHERE relid = $1",
            &[relid.into()],
        )?;
    }
    catalog::bump_schema_version()?;
    Ok(true)
}

/// The synced schema, as `sync_init` on a client takes it.
#[pg_extern]
fn sync_schema() -> JsonB {
    let schema = or_raise(catalog::synced_tables().and_then(|t| {
        let streams = crate::streams::load(t.as_slice())?;
        catalog::schema(t.as_slice(), streams.into_iter().map(|s| s.def).collect())
    }));
    JsonB(serde_json::to_value(schema).unwrap_or_default())
}
