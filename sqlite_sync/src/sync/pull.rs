//! `sync_apply`: apply a page of server changes, rebasing pending writes.

use std::collections::HashMap;

use serde_json::json;
use sync_core::wire::PullOp;
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::names::q;
use crate::model::validate::validate_schema;
use crate::model::values::now_iso;
use crate::model::wire::{self, key_from_obj};
use crate::schema::ddl;
use crate::schema::upgrade::{upgrade, Upgraded};
use crate::store::changes;
use crate::store::rows::{check_block_row, check_ver, TableOps};
use crate::store::state::{in_savepoint, meta_delete, meta_set, ConnState, Loaded};
use crate::sync::adopt::{adopt_row, resync_bases};

/// Longest cursor a page may carry, in bytes (it is stored and sent back).
pub const MAX_CURSOR_BYTES: usize = 1 << 20;

pub fn sync_apply(st: &ConnState, db: Db, text: &str) -> Result<String> {
    let page = wire::parse(text)?;
    if page.cursor.0.len() > MAX_CURSOR_BYTES {
        return Err(Error::input(format!(
            "the page's cursor is {} bytes, more than the limit of {MAX_CURSOR_BYTES}",
            page.cursor.0.len()
        )));
    }
    // Fails early when sync_init was never called.
    let current = st.loaded(db)?;
    // Dropped after the savepoint is released: the map serves its writes
    // too (and the commit, unless an app transaction is open).
    let _mapped = crate::store::tuning::map_for_apply(db, page.changes.len());
    let out = in_savepoint(db, "sync_apply", || {
        let _nc = st.no_capture();
        ddl::check_clock_not_shadowed(db)?;
        ddl::upgrade_layout(db, &current.schema)?;
        // A table whose primary key changed is created again: the device
        // downloads the server's rows again (keeping pending writes).
        let mut force_resync = false;
        if let Some(schema) = &page.schema {
            let size = serde_json::to_string(schema)?.len();
            if size > crate::model::names::MAX_SCHEMA_BYTES {
                return Err(Error::input(format!(
                    "the page's schema is {size} bytes, more than the limit of {}",
                    crate::model::names::MAX_SCHEMA_BYTES
                )));
            }
            validate_schema(schema)?;
            if let Upgraded::Migrated { resync } = upgrade(st, db, schema)? {
                force_resync = resync;
                crate::schema::local::apply(db, schema, crate::schema::local::stored(db)?)?;
                st.invalidate();
            }
        }
        let loaded = st.loaded(db)?;
        if page.schema_version != loaded.schema.version {
            return Err(Error::input(format!(
                "pull page follows schema version {} but this database has version {}; \
                 pass the server's schema to sync_init (or include it in the page)",
                page.schema_version, loaded.schema.version
            )));
        }
        if page.resync_required || force_resync {
            return resync(db, &loaded)
                .and_then(|dropped| {
                    crate::sync::streams::restart_all(db)?;
                    Ok(dropped)
                })
                .map(|dropped| {
                    json!({
                        "upserts": 0,
                        "deletes": dropped,
                        "cursor": null,
                        "has_more": true,
                        "resync_required": true,
                    })
                    .to_string()
                });
        }
        let mut ops: HashMap<usize, TableOps> = HashMap::new();
        let (mut upserts, mut deletes) = (0usize, 0usize);
        let mut max_seen = Hlc::ZERO;
        // Apply in key order (stable, so changes of one row keep their
        // order): b-tree writes in order touch each page once.
        let mut order: Vec<(usize, crate::model::key::Key, usize)> =
            Vec::with_capacity(page.changes.len());
        for (i, rc) in page.changes.iter().enumerate() {
            let (ti, t) = loaded.require(&rc.table.0)?;
            order.push((ti, key_from_obj(t, &rc.pk)?, i));
        }
        order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.sqlite_cmp(&b.1)));
        // The queued writes of the page's rows, looked up by row. Writes
        // that amount to nothing (an insert and delete never sent) must not
        // hide the server's row: they are dropped now.
        let mut pending: Vec<Option<changes::Group>> = vec![None; order.len()];
        if changes::any_queued(db)? {
            changes::index_backlog(db)?;
            let mut lookup = changes::RowLookup::new(db, &loaded)?;
            let mut nothing: Vec<changes::Group> = Vec::new();
            for (j, (ti, key, _)) in order.iter().enumerate() {
                if j > 0 && order[j - 1].0 == *ti && order[j - 1].1 == *key {
                    pending[j] = pending[j - 1].clone();
                    continue;
                }
                if let Some(g) = lookup.by_key(*ti, key)? {
                    if g.is_pending(&loaded.tables[*ti]) {
                        pending[j] = Some(g);
                    } else {
                        nothing.push(g);
                    }
                }
            }
            drop(lookup);
            let refs: Vec<&changes::Group> = nothing.iter().collect();
            changes::purge(db, &loaded, &refs, &[])?;
        }
        let mut members = crate::sync::streams::Holds::new(db)?;
        let live = crate::sync::streams::live_ids(db)?;
        for (j, (ti, key, i)) in order.iter().enumerate() {
            let rc = &page.changes[*i];
            let t = &loaded.tables[*ti];
            let o = ops.entry(*ti).or_insert_with(|| TableOps::new(db, t));
            let overlay = pending[j].as_ref().and_then(|g| g.pending_overlay(t));
            match rc.op {
                PullOp::Upsert => {
                    let (Some(row), Some(ver)) = (&rc.row, &rc.ver) else {
                        return Err(Error::input(format!(
                            "upsert of {} {} has no row or no ver",
                            rc.table.0,
                            crate::model::names::show_json(&serde_json::Value::Object(
                                rc.pk.to_map()
                            ))
                        )));
                    };
                    let ver = &ver.0;
                    check_ver(t, ver)?;
                    if page.format >= 2 {
                        check_block_row(t, row)?;
                    }
                    let vals = wire::row_values(t, row, &rc.pk)?;
                    if let Some(m) = ver.iter().max() {
                        max_seen = max_seen.max(*m);
                    }
                    adopt_row(o, key, Some((&vals, ver)), overlay, true)?;
                    for sub in rc.subs.iter().flatten() {
                        if live.contains(&i64::from(*sub)) {
                            members.add(i64::from(*sub), t.name(), &key.canonical())?;
                        }
                    }
                    upserts += 1;
                }
                PullOp::Delete => {
                    members.remove(t.name(), &key.canonical(), None)?;
                    adopt_row::<Value>(o, key, None, overlay, true)?;
                    deletes += 1;
                }
                PullOp::Leave => {
                    // The row left these subscriptions: it goes when no
                    // other holds it and it has no pending writes.
                    let c = key.canonical();
                    for sub in rc.subs.iter().flatten() {
                        members.remove(t.name(), &c, Some(i64::from(*sub)))?;
                    }
                    if overlay.is_none() && !members.held(t.name(), &c)? {
                        adopt_row::<Value>(o, key, None, None, true)?;
                        deletes += 1;
                    }
                }
            }
        }
        drop(ops);
        drop(members);
        // Streams: key lists and download progress.
        let mut cursor_text = page.cursor.0.to_string();
        let mut asked = false;
        if !page.members.is_empty() {
            let mut c = sync_core::cursor::Cursor::decode(&cursor_text)
                .map_err(|e| Error::input(format!("the page's cursor: {e}")))?;
            let (removed, a) =
                crate::sync::streams::apply_members(db, &loaded, &page.members, &mut c)?;
            deletes += removed;
            asked = a;
            if asked {
                cursor_text = c.encode();
            }
        }
        crate::sync::streams::apply_progress(db, &page.progress)?;
        let cursor_text =
            crate::sync::streams::guard_downloads(db, &cursor_text, &page.progress, &page.members)?;
        if max_seen != Hlc::ZERO {
            st.observe(db, max_seen)?;
            st.save_clock(db)?;
        }
        let cursor_text = crate::sync::streams::reconcile(db, &cursor_text)?;
        meta_set(db, "cursor", &Value::Text(cursor_text.clone()))?;
        meta_set(db, "last_pull", &Value::Text(now_iso()))?;
        // A subscription asked for rows it lacks: pull again now.
        Ok(json!({
            "upserts": upserts,
            "deletes": deletes,
            "cursor": cursor_text,
            "has_more": page.has_more || asked,
        })
        .to_string())
    })?;
    Ok(out)
}

/// Drops all server state (keeping pending writes and their bases) and the
/// cursor, so the next pull starts from scratch. Returns the number of local
/// rows removed.
pub fn resync(db: Db, loaded: &Loaded) -> Result<usize> {
    let pending = changes::load(db, loaded)?;
    let mut dropped = 0usize;
    for (ti, t) in loaded.tables.iter().enumerate() {
        let mut o = TableOps::new(db, t);
        // Every row adopts a server that holds nothing (sync_core::adopt):
        // a row with pending writes keeps them and their bases, the others
        // go, and so does every server copy (both done set-wise below).
        for g in pending.groups.iter().filter(|g| g.table == ti) {
            o.stash_before_server_change(&g.key, resync_bases(t.all_mask, g.overlay(t)))?;
        }
        let has_pending = pending.groups.iter().any(|g| g.table == ti);
        if has_pending {
            let pk_cols = t.def.pk.iter().map(|p| q(p)).collect::<Vec<_>>().join(", ");
            let mut sel = db.prepare(&format!("SELECT {pk_cols} FROM {}", q(&t.state)))?;
            let mut doomed = Vec::new();
            while sel.step()? {
                let vals: Vec<Value> = (0..t.pk_idx.len()).map(|i| sel.col(i)).collect();
                let key = crate::model::key::Key(
                    vals.iter()
                        .map(crate::model::key::KeyPart::from_value)
                        .collect(),
                );
                if pending.get(ti, &key).is_none() {
                    doomed.push(key);
                }
            }
            drop(sel);
            dropped += doomed.len();
            for k in doomed {
                o.delete_state(&k)?;
            }
        } else {
            db.exec(&format!("DELETE FROM {}", q(&t.state)))?;
            dropped += db.changes().max(0) as usize;
        }
        drop(o);
        db.exec(&format!("DELETE FROM {}", q(&t.synced)))?;
    }
    meta_delete(db, "cursor")?;
    Ok(dropped)
}
