//! Adopting the server's copy of a row, pending local writes kept on top:
//! the one place the device does it, after the rule in `sync_core::adopt`.
//! `sync_apply` (a pulled change), `sync_ack` (the server's answer with
//! its row) and a resync (every server copy dropped) all come here.

use sync_core::adopt::{plan, LocalRow, Pending, Server, ServerCopy};
use sync_core::Hlc;

use crate::error::Result;
use crate::ffi::Bind;
use crate::model::key::Key;
use crate::store::rows::TableOps;

/// The pending writes of a row as the rule takes them, from the overlay
/// the queue reports (`(columns to keep, deleted locally)`).
pub fn pending(overlay: Option<(i64, bool)>) -> Option<Pending> {
    overlay.map(|(keep, deleted)| Pending {
        keep: keep as u64,
        deleted,
    })
}

/// Adopts `server` (the row's values and versions, or `None` when the
/// server does not hold it) under the row's pending writes. With
/// `keep_bases`, the server version and value each pending column was
/// written on is kept first (a pull); an acknowledgement passes `false`,
/// as it sets those bases from the change the server confirmed.
pub fn adopt_row<V: Bind>(
    o: &mut TableOps,
    key: &Key,
    server: Option<(&[V], &[Hlc])>,
    overlay: Option<(i64, bool)>,
    keep_bases: bool,
) -> Result<()> {
    let all = o.t.all_mask as u64;
    let side = if server.is_some() {
        Server::Row
    } else {
        Server::Gone
    };
    let p = plan(all, pending(overlay), side);
    if keep_bases {
        o.stash_before_server_change(key, p.keep_base as i64)?;
    }
    match (p.server_copy, server) {
        (ServerCopy::Replace { with_values }, Some((vals, ver))) => {
            o.upsert_synced(vals, ver, with_values)?
        }
        _ => o.delete_synced(key)?,
    }
    match (p.local, server) {
        (LocalRow::Become, Some((vals, _))) => o.upsert_state(vals),
        (LocalRow::Take(cols), Some((vals, _))) => o.update_state_cols(key, cols as i64, vals),
        (LocalRow::Remove, _) => o.delete_state(key),
        _ => Ok(()),
    }
}

/// The columns whose base a resync keeps for a row with pending writes
/// before it drops the row's server copy (the rule's plan for a server
/// that holds nothing any more).
pub fn resync_bases(all: i64, overlay: (i64, bool)) -> i64 {
    plan(all as u64, pending(Some(overlay)), Server::Gone).keep_base as i64
}
