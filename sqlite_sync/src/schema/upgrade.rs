//! Bringing the device to a newer server schema: the one path for
//! `sync_init` and for a pull page that carries a schema.

use sync_core::schema::Schema;

use crate::error::Result;
use crate::ffi::{Db, Value};
use crate::schema::ddl;
use crate::store::state::{meta_set, schema_version, ConnState};

/// What [`upgrade`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgraded {
    /// The schema is not newer than the device's: nothing changed.
    NotNewer,
    /// A first schema: the synced objects were created.
    Created,
    /// The device was migrated; `resync` when a table had to be created
    /// again (its key changed), so every server copy must be downloaded
    /// again (pending writes are kept).
    Migrated { resync: bool },
}

/// Stores the schema document and its version.
fn store_schema(db: Db, schema: &Schema) -> Result<()> {
    meta_set(db, "schema", &Value::Text(serde_json::to_string(schema)?))?;
    meta_set(db, "schema_version", &Value::Int(schema.version))
}

/// Brings the device to `schema` when it is newer than the stored one (or
/// when there is none yet). The caller holds a savepoint with capture off
/// and has brought the layout current (`ddl::upgrade_layout`); it applies
/// the local-only columns afterwards.
pub fn upgrade(st: &ConnState, db: Db, schema: &Schema) -> Result<Upgraded> {
    let out = match schema_version(db)? {
        None => {
            for t in &schema.tables {
                ddl::create_table(db, t)?;
            }
            store_schema(db, schema)?;
            ddl::set_layout(db)?;
            Upgraded::Created
        }
        Some(v) if schema.version <= v => return Ok(Upgraded::NotNewer),
        Some(_) => {
            let old = st.loaded(db)?;
            let resync = ddl::migrate(db, &old.schema, schema)?;
            store_schema(db, schema)?;
            Upgraded::Migrated { resync }
        }
    };
    st.invalidate();
    Ok(out)
}
