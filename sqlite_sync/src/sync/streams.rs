//! Subscriptions to streams on the device: `sync_subscribe`,
//! `sync_unsubscribe`, which subscriptions hold which rows
//! (`_sync_members`), and what a pull page's stream entries do to them.
//!
//! A device holds exactly the union of its subscriptions' rows plus its
//! own pending writes: a row stays while one subscription holds it or it
//! has a write not yet settled by a push, and goes when neither is true.
//! The subscriptions travel to the server inside the pull cursor
//! (`sync_core::cursor::Sub`), which this module edits.

use std::collections::HashSet;

use serde_json::{json, Map, Value as Json};
use sync_core::cursor::{Cursor, Pos, Sub};
use sync_core::streams::{param_texts, MAX_SUBSCRIPTIONS, MAX_WANTED};

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::key::Key;
use crate::model::names::{q, MEMBERS, SUBSCRIPTIONS};
use crate::model::values::now_iso;
use crate::store::changes;
use crate::store::rows::TableOps;
use crate::store::state::{in_savepoint, meta_set, meta_text, ConnState, Loaded};
use crate::sync::adopt::adopt_row;

/// Binds an integer.
trait BindI {
    fn bind_i(&mut self, idx: usize, v: i64) -> Result<()>;
}

impl BindI for crate::ffi::Stmt {
    fn bind_i(&mut self, idx: usize, v: i64) -> Result<()> {
        self.bind(idx, &Value::Int(v))
    }
}

/// Longest parameters document, in bytes.
const MAX_PARAMS_BYTES: usize = 16 * 1024;

/// The stored cursor, or a new one (a device that never pulled).
fn stored_cursor(db: Db) -> Result<Cursor> {
    match meta_text(db, "cursor")? {
        Some(c) if !c.is_empty() => Cursor::decode(&c)
            .map_err(|e| Error::corrupt(format!("the stored cursor cannot be read: {e}"))),
        _ => Ok(Cursor {
            v: 1,
            ..Default::default()
        }),
    }
}

/// The cursor to send with the next pull (`sync_cursor`): the stored one,
/// or a new one before the first pull, asking for the newest page format
/// this build reads ([`sync_core::PAGE_FORMAT`]); the server does not keep
/// the ask in the cursor a sync ends with, so it is added on every call
/// (fields this build does not know are kept). A stored cursor this build
/// cannot read (a hand-made one) is sent as it is.
pub fn pull_cursor(db: Db) -> Result<String> {
    match meta_text(db, "cursor")?.filter(|c| !c.is_empty()) {
        Some(text) => Ok(Cursor::with_page_format(&text, sync_core::PAGE_FORMAT).unwrap_or(text)),
        None => Ok(Cursor {
            v: 1,
            w: Some(sync_core::PAGE_FORMAT),
            ..Default::default()
        }
        .encode()),
    }
}

/// Edits the stored cursor's subscriptions.
fn edit_cursor(db: Db, f: impl FnOnce(&mut Cursor)) -> Result<()> {
    let mut c = stored_cursor(db)?;
    f(&mut c);
    meta_set(db, "cursor", &Value::Text(c.encode()))
}

/// The parameters argument as an object, in its canonical text.
fn params_of(text: &str) -> Result<(Map<String, Json>, String)> {
    if text.len() > MAX_PARAMS_BYTES {
        return Err(Error::input(format!(
            "params is {} bytes, more than {MAX_PARAMS_BYTES}",
            text.len()
        )));
    }
    let v: Json =
        serde_json::from_str(text).map_err(|e| Error::input(format!("params is not JSON: {e}")))?;
    let Json::Object(m) = v else {
        return Err(Error::input(
            "params must be a JSON object of parameter names to values",
        ));
    };
    let canonical = serde_json::to_string(&m)?;
    Ok((m, canonical))
}

/// `sync_subscribe(stream, params)`: subscribes to a stream with values
/// for its parameters; the next pulls download its rows. Subscribing again
/// with the same values returns the same subscription.
pub fn sync_subscribe(st: &ConnState, db: Db, stream: &str, params: &str) -> Result<String> {
    let loaded = st.loaded(db)?;
    let def = loaded
        .schema
        .streams
        .iter()
        .find(|s| s.name == stream)
        .ok_or_else(|| {
            Error::input(format!(
                "there is no stream {stream:?} in this database's schema (the server's \
                 sync_stream defines them; sync_schema() lists them)"
            ))
        })?;
    let (map, canonical) = params_of(params)?;
    param_texts(def, &map).map_err(|e| Error::input(e.to_string()))?;
    in_savepoint(db, "sync_subscribe", || {
        if let Some((id, state)) = find(db, stream, &canonical)? {
            if state != "ended" {
                return Ok(
                    json!({"id": id, "stream": stream, "params": map, "state": state}).to_string(),
                );
            }
            // The stream was dropped and defined again: a new subscription.
            let mut del = db.prepare(&format!("DELETE FROM {} WHERE id = ?1", q(SUBSCRIPTIONS)))?;
            del.bind_i(1, id)?;
            del.step()?;
        }
        let mut count = db.prepare(&format!("SELECT count(*) FROM {}", q(SUBSCRIPTIONS)))?;
        count.step()?;
        if count.col_i64(0) as usize >= MAX_SUBSCRIPTIONS {
            return Err(Error::input(format!(
                "a device holds at most {MAX_SUBSCRIPTIONS} subscriptions"
            )));
        }
        drop(count);
        let mut ins = db.prepare(&format!(
            "INSERT INTO {}(stream, params, created_at) VALUES (?1, ?2, ?3) RETURNING id",
            q(SUBSCRIPTIONS)
        ))?;
        ins.bind_text(1, stream)?;
        ins.bind_text(2, &canonical)?;
        ins.bind_text(3, &now_iso())?;
        ins.step()?;
        let id = ins.col_i64(0);
        drop(ins);
        let sub = Sub {
            i: u32::try_from(id)
                .map_err(|_| Error::Internal("subscription id out of range".into()))?,
            s: stream.to_string(),
            p: map.clone(),
            e: holds_none(db, id)?,
            ..Default::default()
        };
        edit_cursor(db, |c| {
            c.q.retain(|s| s.i != sub.i);
            c.q.push(sub);
        })?;
        Ok(
            json!({"id": id, "stream": stream, "params": map, "state": "bootstrapping"})
                .to_string(),
        )
    })
}

/// Whether subscription `id` holds no row (its first download then needs
/// no key list at its end: see `Sub::e`).
fn holds_none(db: Db, id: i64) -> Result<bool> {
    let mut sel = db.prepare(&format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {} WHERE sub = ?1)",
        q(MEMBERS)
    ))?;
    sel.bind_i(1, id)?;
    sel.step()?;
    Ok(sel.col_i64(0) == 1)
}

/// The id and state of the subscription to `stream` with `params`.
fn find(db: Db, stream: &str, params: &str) -> Result<Option<(i64, String)>> {
    let mut sel = db.prepare(&format!(
        "SELECT id, state FROM {} WHERE stream = ?1 AND params = ?2",
        q(SUBSCRIPTIONS)
    ))?;
    sel.bind_text(1, stream)?;
    sel.bind_text(2, params)?;
    Ok(if sel.step()? {
        Some((sel.col_i64(0), sel.col_text(1).unwrap_or_default()))
    } else {
        None
    })
}

/// `sync_unsubscribe(stream, params)`: ends a subscription; its rows that
/// no other subscription holds and that have no pending writes leave the
/// device now. Returns how many rows left.
pub fn sync_unsubscribe(st: &ConnState, db: Db, stream: &str, params: &str) -> Result<String> {
    let loaded = st.loaded(db)?;
    let (_, canonical) = params_of(params)?;
    in_savepoint(db, "sync_unsubscribe", || {
        let _nc = st.no_capture();
        let Some((id, _)) = find(db, stream, &canonical)? else {
            return Err(Error::input(format!(
                "this device has no subscription to {stream:?} with these params"
            )));
        };
        let mut del = db.prepare(&format!("DELETE FROM {} WHERE id = ?1", q(SUBSCRIPTIONS)))?;
        del.bind_i(1, id)?;
        del.step()?;
        drop(del);
        edit_cursor(db, |c| c.q.retain(|s| i64::from(s.i) != id))?;
        let removed = end_sub(db, &loaded, id, None)?;
        Ok(json!({"removed_rows": removed}).to_string())
    })
}

/// Removes subscription `id`'s hold on its rows (of `table`, or of every
/// table), dropping the rows no subscription holds any more. Returns how
/// many rows left the device.
fn end_sub(db: Db, loaded: &Loaded, id: i64, table: Option<&str>) -> Result<usize> {
    let mut held: Vec<(String, String)> = Vec::new();
    let mut sel = db.prepare(&format!(
        "SELECT tbl, pk FROM {} WHERE sub = ?1 AND (?2 IS NULL OR tbl = ?2)",
        q(MEMBERS)
    ))?;
    sel.bind_i(1, id)?;
    match table {
        Some(t) => sel.bind_text(2, t)?,
        None => sel.bind(2, &Value::Null)?,
    }
    while sel.step()? {
        held.push((
            sel.col_text(0).unwrap_or_default(),
            sel.col_text(1).unwrap_or_default(),
        ));
    }
    drop(sel);
    let mut members = Holds::new(db)?;
    let mut removed = 0;
    for (tbl, pk) in held {
        members.remove(&tbl, &pk, Some(id))?;
        if let (Some(ti), Some(key)) = (loaded.table_idx(&tbl), Key::from_canonical(&pk)) {
            if drop_if_orphan(db, loaded, &mut members, ti, &key)? {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The statements that record which subscriptions hold which rows.
pub struct Holds {
    add: crate::ffi::Stmt,
    remove_one: crate::ffi::Stmt,
    remove_all: crate::ffi::Stmt,
    any: crate::ffi::Stmt,
}

impl Holds {
    /// Prepares the statements.
    pub fn new(db: Db) -> Result<Holds> {
        let m = q(MEMBERS);
        Ok(Holds {
            add: db.prepare(&format!(
                "INSERT OR IGNORE INTO {m}(sub, tbl, pk) VALUES (?1, ?2, ?3)"
            ))?,
            remove_one: db.prepare(&format!(
                "DELETE FROM {m} WHERE sub = ?1 AND tbl = ?2 AND pk = ?3"
            ))?,
            remove_all: db.prepare(&format!("DELETE FROM {m} WHERE tbl = ?1 AND pk = ?2"))?,
            any: db.prepare(&format!(
                "SELECT 1 FROM {m} WHERE tbl = ?1 AND pk = ?2 LIMIT 1"
            ))?,
        })
    }

    /// Records that subscription `sub` holds the row.
    pub fn add(&mut self, sub: i64, tbl: &str, pk: &str) -> Result<()> {
        self.add.bind_i(1, sub)?;
        self.add.bind_text(2, tbl)?;
        self.add.bind_text(3, pk)?;
        self.add.step()?;
        self.add.reset();
        Ok(())
    }

    /// Removes the hold of `sub` (of every subscription when `None`).
    pub fn remove(&mut self, tbl: &str, pk: &str, sub: Option<i64>) -> Result<()> {
        let st = match sub {
            Some(s) => {
                self.remove_one.bind_i(1, s)?;
                self.remove_one.bind_text(2, tbl)?;
                self.remove_one.bind_text(3, pk)?;
                &mut self.remove_one
            }
            None => {
                self.remove_all.bind_text(1, tbl)?;
                self.remove_all.bind_text(2, pk)?;
                &mut self.remove_all
            }
        };
        st.step()?;
        st.reset();
        Ok(())
    }

    /// Whether some subscription holds the row.
    pub fn held(&mut self, tbl: &str, pk: &str) -> Result<bool> {
        self.any.bind_text(1, tbl)?;
        self.any.bind_text(2, pk)?;
        let r = self.any.step()?;
        self.any.reset();
        Ok(r)
    }
}

/// Drops a row no subscription holds any more, unless it has pending
/// writes (they are pushed first; the row leaves after its push is
/// settled, when the server sends it again). Returns whether it went.
pub fn drop_if_orphan(
    db: Db,
    loaded: &Loaded,
    members: &mut Holds,
    ti: usize,
    key: &Key,
) -> Result<bool> {
    let t = &loaded.tables[ti];
    if members.held(t.name(), &key.canonical())? {
        return Ok(false);
    }
    if changes::any_queued(db)? {
        let mut lookup = changes::RowLookup::new(db, loaded)?;
        if lookup.by_key(ti, key)?.is_some_and(|g| g.is_pending(t)) {
            return Ok(false);
        }
    }
    let mut o = TableOps::new(db, t);
    if o.synced_row(key)?.is_none() && o.state_row(key)?.is_none() {
        return Ok(false);
    }
    adopt_row::<Value>(&mut o, key, None, None, true)?;
    Ok(true)
}

/// Applies a page's key lists: rows of a subscription not listed leave
/// it; listed rows the device holds join it; the others are asked for in
/// the next pull (written into `cursor`). Returns how many rows left and
/// whether rows were asked for.
pub fn apply_members(
    db: Db,
    loaded: &Loaded,
    lists: &[sync_core::wire::Members],
    cursor: &mut Cursor,
) -> Result<(usize, bool)> {
    let mut removed = 0;
    let mut asked = false;
    for m in lists {
        let id = i64::from(m.sub);
        if m.table.is_empty() {
            // The stream is gone: the subscription ends.
            removed += end_sub(db, loaded, id, None)?;
            let mut up = db.prepare(&format!(
                "UPDATE {} SET state = 'ended' WHERE id = ?1",
                q(SUBSCRIPTIONS)
            ))?;
            up.bind_i(1, id)?;
            up.step()?;
            continue;
        }
        let (ti, t) = loaded.require(&m.table)?;
        let mut listed: HashSet<String> = HashSet::with_capacity(m.keys.len());
        let mut keys = Vec::with_capacity(m.keys.len());
        for k in &m.keys {
            let text = serde_json::to_string(k)?;
            let obj: sync_core::wire::page::Obj = serde_json::from_str(&text)
                .map_err(|e| Error::input(format!("a key of a members list: {e}")))?;
            let key = crate::model::wire::key_from_obj(t, &obj)?;
            listed.insert(key.canonical());
            keys.push((key, Json::Object(k.clone())));
        }
        // Rows held that are not listed leave the subscription.
        let mut held: Vec<String> = Vec::new();
        let mut sel = db.prepare(&format!(
            "SELECT pk FROM {} WHERE sub = ?1 AND tbl = ?2",
            q(MEMBERS)
        ))?;
        sel.bind_i(1, id)?;
        sel.bind_text(2, t.name())?;
        while sel.step()? {
            held.push(sel.col_text(0).unwrap_or_default());
        }
        drop(sel);
        let held_set: HashSet<&str> = held.iter().map(String::as_str).collect();
        let mut members = Holds::new(db)?;
        for pk in held.iter().filter(|pk| !listed.contains(pk.as_str())) {
            members.remove(t.name(), pk, Some(id))?;
            if let Some(key) = Key::from_canonical(pk) {
                if drop_if_orphan(db, loaded, &mut members, ti, &key)? {
                    removed += 1;
                }
            }
        }
        // Listed rows: joined if the device has them, asked for if not.
        let mut wanted = Vec::new();
        let mut truncated = false;
        let mut o = TableOps::new(db, t);
        for (key, obj) in keys {
            let c = key.canonical();
            if held_set.contains(c.as_str()) {
                continue;
            }
            if o.synced_row(&key)?.is_some() {
                members.add(id, t.name(), &c)?;
            } else if wanted.len() < MAX_WANTED {
                wanted.push(obj);
            } else {
                truncated = true;
            }
        }
        if !wanted.is_empty() {
            asked = true;
            if let Some(s) = cursor.q.iter_mut().find(|s| s.i == m.sub) {
                s.w = wanted;
                // More were missing than one pull may ask for: the next
                // pull sends the key list again, for the rest.
                s.m = truncated;
            }
        }
    }
    Ok((removed, asked))
}

/// Keeps `Sub::e` (no key list ends the download) only where it holds:
/// for each subscription whose download the page carries, the stored
/// cursor must say the device held none of its rows and either not have
/// started the download or be in the same one (same horizon). Otherwise
/// (two pulls from one cursor, a page applied late) the rows held may come
/// from another download: `e` is cleared, and a page that ended the
/// download without a key list has the next pull ask for one (`m`).
/// Returns the cursor text to store.
pub fn guard_downloads(
    db: Db,
    cursor: &str,
    progress: &[sync_core::wire::Progress],
    lists: &[sync_core::wire::Members],
) -> Result<String> {
    if progress.is_empty() {
        return Ok(cursor.to_string());
    }
    let Ok(mut c) = Cursor::decode(cursor) else {
        return Ok(cursor.to_string());
    };
    // A stored cursor this build cannot read (a hand-made one) vouches for
    // nothing: the marks go.
    let stored = stored_cursor(db).unwrap_or_default();
    let mut changed = false;
    for p in progress {
        let Some(s) = c.q.iter_mut().find(|s| s.i == p.sub) else {
            continue;
        };
        // The horizon of the page's download (kept in the position once
        // it ended).
        let h = match (&s.b, &s.r) {
            (Some(b), _) => Some(b.h),
            (None, Pos::Below([h])) => Some(*h),
            _ => None,
        };
        let same = stored.q.iter().find(|x| x.i == p.sub).is_some_and(|x| {
            x.e && match &x.b {
                Some(b) => Some(b.h) == h,
                None => x.r == Pos::Start,
            }
        });
        if same {
            continue;
        }
        if s.e {
            s.e = false;
            changed = true;
        }
        if p.done && !s.m && !lists.iter().any(|m| m.sub == p.sub) {
            s.m = true;
            changed = true;
        }
    }
    Ok(if changed {
        c.encode()
    } else {
        cursor.to_string()
    })
}

/// Records a page's download progress of each subscription.
pub fn apply_progress(db: Db, progress: &[sync_core::wire::Progress]) -> Result<()> {
    let mut up = db.prepare(&format!(
        "UPDATE {} SET sent = ?2, total = ?3, \
                state = CASE WHEN ?4 THEN 'synced' ELSE 'bootstrapping' END WHERE id = ?1",
        q(SUBSCRIPTIONS)
    ))?;
    for p in progress {
        up.bind_i(1, i64::from(p.sub))?;
        up.bind_i(2, p.sent as i64)?;
        up.bind_i(3, p.total as i64)?;
        up.bind_i(4, i64::from(p.done))?;
        up.step()?;
        up.reset();
    }
    Ok(())
}

/// The ids of the subscriptions that have not ended (entries of a page
/// for others, in flight while the app unsubscribed, are ignored).
pub fn live_ids(db: Db) -> Result<HashSet<i64>> {
    let mut out = HashSet::new();
    if !crate::store::state::object_exists(db, SUBSCRIPTIONS)? {
        return Ok(out);
    }
    let mut sel = db.prepare(&format!(
        "SELECT id FROM {} WHERE state <> 'ended'",
        q(SUBSCRIPTIONS)
    ))?;
    while sel.step()? {
        out.insert(sel.col_i64(0));
    }
    Ok(out)
}

/// Makes a cursor's subscriptions those of `_sync_subscriptions` (the app
/// may subscribe or unsubscribe while a page is on its way: the page's
/// cursor must not bring an ended subscription back, nor drop a new one).
/// Returns the cursor text to store.
pub fn reconcile(db: Db, cursor: &str) -> Result<String> {
    if !crate::store::state::object_exists(db, SUBSCRIPTIONS)? {
        return Ok(cursor.to_string());
    }
    let mut live: Vec<(u32, String, String)> = Vec::new();
    let mut sel = db.prepare(&format!(
        "SELECT id, stream, params FROM {} WHERE state <> 'ended' ORDER BY id",
        q(SUBSCRIPTIONS)
    ))?;
    while sel.step()? {
        live.push((
            u32::try_from(sel.col_i64(0)).unwrap_or(0),
            sel.col_text(1).unwrap_or_default(),
            sel.col_text(2).unwrap_or_default(),
        ));
    }
    drop(sel);
    let Ok(mut c) = Cursor::decode(cursor) else {
        return Ok(cursor.to_string());
    };
    if live.is_empty() && c.q.is_empty() {
        return Ok(cursor.to_string());
    }
    let before = c.q.len();
    c.q.retain(|s| live.iter().any(|(i, _, _)| *i == s.i));
    let mut changed = c.q.len() != before;
    for (i, stream, params) in live {
        if !c.q.iter().any(|s| s.i == i) {
            c.q.push(Sub {
                i,
                s: stream,
                p: serde_json::from_str(&params).unwrap_or_default(),
                e: holds_none(db, i64::from(i))?,
                ..Default::default()
            });
            changed = true;
        }
    }
    Ok(if changed {
        c.encode()
    } else {
        cursor.to_string()
    })
}

/// After a resync: every subscription downloads again from the start (the
/// cursor is rebuilt with them), and no row is held by any.
pub fn restart_all(db: Db) -> Result<()> {
    db.exec(&format!(
        "DELETE FROM {}; UPDATE {} SET state = 'bootstrapping', sent = 0, total = NULL \
         WHERE state <> 'ended';",
        q(MEMBERS),
        q(SUBSCRIPTIONS)
    ))?;
    let mut subs = Vec::new();
    let mut sel = db.prepare(&format!(
        "SELECT id, stream, params FROM {} WHERE state <> 'ended' ORDER BY id",
        q(SUBSCRIPTIONS)
    ))?;
    while sel.step()? {
        let p: Map<String, Json> =
            serde_json::from_str(&sel.col_text(2).unwrap_or_default()).unwrap_or_default();
        subs.push(Sub {
            i: u32::try_from(sel.col_i64(0)).unwrap_or(0),
            s: sel.col_text(1).unwrap_or_default(),
            p,
            // No row is held any more (above).
            e: true,
            ..Default::default()
        });
    }
    drop(sel);
    if subs.is_empty() {
        return Ok(());
    }
    let c = Cursor {
        v: 1,
        q: subs,
        ..Default::default()
    };
    meta_set(db, "cursor", &Value::Text(c.encode()))
}

/// The subscriptions for `sync_status()`.
pub fn status(db: Db) -> Result<Json> {
    let mut out = Vec::new();
    if !crate::store::state::object_exists(db, SUBSCRIPTIONS)? {
        return Ok(Json::Array(out));
    }
    let mut sel = db.prepare(&format!(
        "SELECT id, stream, params, state, sent, total FROM {} ORDER BY id",
        q(SUBSCRIPTIONS)
    ))?;
    while sel.step()? {
        let params: Json =
            serde_json::from_str(&sel.col_text(2).unwrap_or_default()).unwrap_or(Json::Null);
        out.push(json!({
            "id": sel.col_i64(0),
            "stream": sel.col_text(1).unwrap_or_default(),
            "params": params,
            "state": sel.col_text(3).unwrap_or_default(),
            "sent": sel.col_i64(4),
            "total": match sel.col(5) { Value::Int(n) => Json::from(n), _ => Json::Null },
        }));
    }
    Ok(Json::Array(out))
}
