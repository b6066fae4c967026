//! `sync_init`: create or migrate the synced objects.

use serde_json::json;
use sync_core::schema::Schema;

use crate::schema::upgrade::{upgrade, Upgraded};

use crate::error::Result;
use crate::ffi::{Db, Value};
use crate::model::validate::parse_schema;
use crate::schema::ddl;
use crate::schema::local;
use crate::store::state::{in_savepoint, meta_set, meta_text, schema_version, ConnState};

/// `sync_init(schema [, local])`: `local` is the local-only column spec
/// (see `schema/local.rs`); without it the stored spec is kept.
pub fn sync_init(st: &ConnState, db: Db, text: &str, local: Option<&str>) -> Result<String> {
    let schema = parse_schema(text)?;
    let out = in_savepoint(db, "sync_init", || {
        let _nc = st.no_capture();
        ddl::check_clock_not_shadowed(db)?;
        ddl::create_meta(db)?;
        let client = match meta_text(db, "client_id")? {
            Some(c) => c,
            None => {
                let c = uuid::Uuid::new_v4().to_string();
                meta_set(db, "client_id", &Value::Text(c.clone()))?;
                st.reset_clock();
                c
            }
        };
        if schema_version(db)?.is_some() {
            // A device built by an older version first gets the current
            // layout (exact column types, triggers reading sync_clock()).
            let old = st.loaded(db)?;
            ddl::upgrade_layout(db, &old.schema)?;
        }
        let changed = match upgrade(st, db, &schema)? {
            Upgraded::NotNewer => false,
            Upgraded::Created => true,
            Upgraded::Migrated { resync } => {
                if resync {
                    // A table whose key changed was created again: the
                    // next pull downloads everything (pending writes are
                    // kept).
                    crate::sync::pull::resync(
                        db,
                        &crate::store::state::Loaded::new(schema.clone()),
                    )?;
                }
                true
            }
        };
        // The schema in force after this call (an older document is ignored).
        let effective: Schema = if changed {
            schema.clone()
        } else {
            st.invalidate();
            st.loaded(db)?.schema.clone()
        };
        let mut spec = local::stored(db)?;
        if let Some(l) = local {
            local::merge(&mut spec, local::parse(l, &effective)?);
        }
        local::apply(db, &effective, spec)?;
        let version = schema_version(db)?.unwrap_or(schema.version);
        Ok(json!({
            "client_id": client,
            "schema_version": version,
            "changed": changed,
        })
        .to_string())
    });
    st.invalidate();
    out
}
