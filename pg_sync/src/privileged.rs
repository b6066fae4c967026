//! The only code in pg_sync that runs with rights other than the caller's.
//!
//! pg_sync's catalog (tombstones, clients, stored push results, conflicts)
//! is written on behalf of roles that hold no privilege on it: by the
//! TRUNCATE trigger and by the bookkeeping of `sync_push`, `sync_pull` and
//! the admin functions (a delete's tombstone needs no elevation: the
//! trigger inserts it into the heap directly, see `track.rs`). Those
//! writes, and nothing else, run in [`elevated`], which:
//!
//! - pins `search_path` to `pg_catalog, pg_temp` before anything else (the
//!   caller's schemas are out of reach for the whole span, and `pg_temp`,
//!   never searched for functions or operators, comes after `pg_catalog`
//!   for relations and types, so nothing planted by the caller resolves);
//! - switches to the owner of the catalog with
//!   `SECURITY_RESTRICTED_OPERATION` (the span can neither change role nor
//!   create temporary objects);
//! - runs fixed statements whose every value is a parameter, with every
//!   function, operator and type schema-qualified as well.
//!
//! The caller's role is captured before the switch ([`caller`]) and every
//! client record is bound to it: a client id names a different client for
//! each role, so no role can read, pre-empt or block another's records.
//! No SQL-callable function exposes any of this to PUBLIC.

use std::cell::Cell;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use crate::error::{PgSyncError, Result};
use crate::spi_util::{rows_cached, write_rows_cached, TextRow};

/// The role the current pg_sync call acts for (the effective user).
pub fn caller() -> pg_sys::Oid {
    // SAFETY: reads a backend global; valid inside any transaction.
    unsafe { pg_sys::GetUserId() }
}

/// Runs `f` as the owner of the pg_sync catalog with `search_path` pinned.
///
/// An error raised inside `f` aborts the (sub)transaction, which restores
/// both the user id and the setting; on return both are restored here.
pub fn elevated<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the same protocol fmgr uses for SECURITY DEFINER functions
    // with a SET clause: a GUC nest level for the pinned setting, and a
    // user-id switch saved and restored around the call.
    unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let owner = catalog_owner();
        let mut saved_user = pg_sys::Oid::INVALID;
        let mut saved_ctx = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_ctx
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        let r = f();
        pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
        pg_sys::AtEOXact_GUC(true, nest);
        r
    }
}

/// The owner of `pg_sync.tombstones`, looked up once per backend (with
/// `search_path` already pinned by the caller).
fn catalog_owner() -> pg_sys::Oid {
    thread_local! {
        static OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    }
    if let Some(o) = OWNER.with(Cell::get) {
        return o;
    }
    let found = rows_cached(
        "SELECT c.relowner::pg_catalog.text FROM pg_catalog.pg_class c \
         WHERE c.oid OPERATOR(pg_catalog.=) 'pg_sync.tombstones'::pg_catalog.regclass",
        &[],
    )
    .ok()
    .and_then(first)
    .and_then(|v| v.parse::<u32>().ok())
    .map(pg_sys::Oid::from);
    let Some(o) = found else {
        pgrx::error!("pg_sync: catalog table pg_sync.tombstones is missing");
    };
    OWNER.with(|c| c.set(Some(o)));
    o
}

fn first(rows: Vec<TextRow>) -> Option<String> {
    rows.into_iter()
        .next()
        .and_then(|mut r| if r.is_empty() { None } else { r.swap_remove(0) })
}

/// Runs one fixed catalog statement that writes, elevated; every column
/// comes back as text (it must say RETURNING).
fn run(sql: &str, args: &[DatumWithOid]) -> Result<Vec<TextRow>> {
    elevated(|| write_rows_cached(sql, args))
}

/// Runs one fixed catalog read, elevated.
fn read(sql: &str, args: &[DatumWithOid]) -> Result<Vec<TextRow>> {
    elevated(|| rows_cached(sql, args))
}

fn role_arg(role: pg_sys::Oid) -> DatumWithOid<'static> {
    role.into()
}

/// Starts a push of `client` (for the calling role): locks the client's
/// row, serialising its pushes, and returns its highest stored seq. The
/// first use of an id recorded before client ids were bound to roles
/// claims that record for the calling role.
pub fn client_begin(client: &str) -> Result<i64> {
    let role = caller();
    let got = run(
        "WITH x AS (INSERT INTO pg_sync.push_xacts (xid, role, client_id) \
                    VALUES (pg_catalog.pg_current_xact_id(), $1::pg_catalog.oid::pg_catalog.regrole, $2) \
                    ON CONFLICT (xid) DO NOTHING RETURNING 1) \
         INSERT INTO pg_sync.clients AS c (role, client_id, last_push, pushes) \
         VALUES ($1::pg_catalog.oid::pg_catalog.regrole, $2, pg_catalog.now(), 1) \
         ON CONFLICT (role, client_id) DO UPDATE \
           SET last_push = pg_catalog.now(), pushes = c.pushes OPERATOR(pg_catalog.+) 1 \
         RETURNING c.last_seq::pg_catalog.text, (c.xmax OPERATOR(pg_catalog.=) '0'::pg_catalog.xid)::pg_catalog.text",
        &[role_arg(role), client.to_string().into()],
    )?;
    let row = got.into_iter().next().unwrap_or_default();
    let last_seq: i64 = row
        .first()
        .cloned()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let inserted = row.get(1).cloned().flatten().as_deref() == Some("true");
    if !inserted {
        return Ok(last_seq);
    }
    // A new (role, id): claim the id's records from before 0.3.0, if any.
    let claimed = run(
        "WITH old AS (DELETE FROM pg_sync.clients o \
                      WHERE o.role OPERATOR(pg_catalog.=) '0'::pg_catalog.oid::pg_catalog.regrole \
                        AND o.client_id OPERATOR(pg_catalog.=) $2 RETURNING o.last_seq), \
              moved AS (UPDATE pg_sync.push_results r SET role = $1::pg_catalog.oid::pg_catalog.regrole \
                        WHERE r.role OPERATOR(pg_catalog.=) '0'::pg_catalog.oid::pg_catalog.regrole \
                          AND r.client_id OPERATOR(pg_catalog.=) $2 RETURNING 1) \
         UPDATE pg_sync.clients c SET last_seq = (SELECT o.last_seq FROM old o) \
         WHERE c.role OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regrole \
           AND c.client_id OPERATOR(pg_catalog.=) $2 AND EXISTS (SELECT 1 FROM old) \
         RETURNING c.last_seq::pg_catalog.text, (SELECT pg_catalog.count(*) FROM moved)::pg_catalog.text",
        &[role_arg(role), client.to_string().into()],
    )?;
    Ok(first(claimed)
        .and_then(|v| v.parse().ok())
        .unwrap_or(last_seq))
}

/// The stored results of `seqs` for `client` of the calling role, as
/// `(seq, result JSON)`.
pub fn results_get(client: &str, seqs: Vec<i64>) -> Result<Vec<(i64, String)>> {
    let got = read(
        // One index probe per seq: the LIMIT keeps the lateral subquery
        // from being flattened into a join, which with stale statistics
        // (push_results grows fast) may hash every stored result of the
        // client, or apply `seq = ANY` as a filter over them, on each push.
        "SELECT s.seq::pg_catalog.text, x.result::pg_catalog.text \
         FROM pg_catalog.unnest($3::pg_catalog.int8[]) s(seq) \
         CROSS JOIN LATERAL (SELECT r.result FROM pg_sync.push_results r \
             WHERE r.role OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regrole \
               AND r.client_id OPERATOR(pg_catalog.=) $2 \
               AND r.seq OPERATOR(pg_catalog.=) s.seq LIMIT 1) x",
        &[role_arg(caller()), client.to_string().into(), seqs.into()],
    )?;
    Ok(got
        .into_iter()
        .filter_map(|r| {
            let seq = r.first()?.as_deref()?.parse().ok()?;
            Some((seq, r.get(1)?.clone()?))
        })
        .collect())
}

/// Stores the results of a push (a JSON array of results, each with its
/// `seq`) for `client` of the calling role and raises its `last_seq`.
pub fn results_put(client: &str, results_json: String) -> Result<()> {
    run(
        "WITH ins AS ( \
             INSERT INTO pg_sync.push_results (role, client_id, seq, result) \
             SELECT $1::pg_catalog.oid::pg_catalog.regrole, $2, (e OPERATOR(pg_catalog.->>) 'seq')::pg_catalog.int8, e \
             FROM pg_catalog.jsonb_array_elements($3::pg_catalog.jsonb) e RETURNING seq) \
         UPDATE pg_sync.clients c \
            SET last_seq = GREATEST(c.last_seq, (SELECT pg_catalog.max(i.seq) FROM ins i)) \
          WHERE c.role OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regrole \
            AND c.client_id OPERATOR(pg_catalog.=) $2 RETURNING NULL::pg_catalog.text",
        &[role_arg(caller()), client.to_string().into(), results_json.into()],
    )?;
    Ok(())
}

/// A stored conflict record: its id and the winner it names.
pub struct Added {
    pub id: i64,
    pub winner_client: Option<String>,
    pub winner_role: Option<String>,
}

/// Stores conflict records (a JSON array, each with its table, pk, client,
/// seq and `winner_xid`: the transaction that last wrote the row, looked
/// up in `pg_sync.push_xacts` to name the winner); returns them in order.
pub fn conflicts_add(records_json: String) -> Result<Vec<Added>> {
    let got = run(
        "WITH ins AS ( \
             INSERT INTO pg_sync.conflicts (table_name, pk, column_name, strategy, outcome, reason, \
                 server_value, client_value, server_ver, client_ver, client_id, seq, client_role, \
                 winner_client, winner_role) \
             SELECT e OPERATOR(pg_catalog.->>) 'table', e OPERATOR(pg_catalog.->) 'pk', \
                    e OPERATOR(pg_catalog.->>) 'column', e OPERATOR(pg_catalog.->>) 'strategy', \
                    e OPERATOR(pg_catalog.->>) 'outcome', e OPERATOR(pg_catalog.->>) 'reason', \
                    e OPERATOR(pg_catalog.->) 'server_value', e OPERATOR(pg_catalog.->) 'client_value', \
                    e OPERATOR(pg_catalog.->>) 'server_ver', e OPERATOR(pg_catalog.->>) 'client_ver', \
                    e OPERATOR(pg_catalog.->>) 'client_id', (e OPERATOR(pg_catalog.->>) 'seq')::pg_catalog.int8, \
                    $1::pg_catalog.oid::pg_catalog.regrole, w.client_id, w.role \
             FROM pg_catalog.jsonb_array_elements($2::pg_catalog.jsonb) WITH ORDINALITY AS x(e, ord) \
             LEFT JOIN pg_sync.push_xacts w \
               ON w.xid OPERATOR(pg_catalog.=) (x.e OPERATOR(pg_catalog.->>) 'winner_xid')::pg_catalog.xid8 \
              AND w.xid OPERATOR(pg_catalog.<>) pg_catalog.pg_current_xact_id() \
             ORDER BY x.ord \
             RETURNING id, winner_client, winner_role) \
         SELECT i.id::pg_catalog.text, i.winner_client, i.winner_role::pg_catalog.text \
         FROM ins i ORDER BY i.id",
        &[role_arg(caller()), records_json.into()],
    )?;
    Ok(got
        .into_iter()
        .filter_map(|mut r| {
            let id = r.first()?.as_deref()?.parse().ok()?;
            let winner_role = r.get_mut(2).and_then(Option::take);
            let winner_client = r.get_mut(1).and_then(Option::take);
            Some(Added {
                id,
                winner_client,
                winner_role,
            })
        })
        .collect())
}

/// Records a pull of `client` of the calling role.
pub fn pulled(client: &str, cursor: &str) -> Result<()> {
    run(
        "INSERT INTO pg_sync.clients AS c (role, client_id, last_pull, last_cursor) \
         VALUES ($1::pg_catalog.oid::pg_catalog.regrole, $2, pg_catalog.now(), $3) \
         ON CONFLICT (role, client_id) DO UPDATE SET last_pull = pg_catalog.now(), last_cursor = $3 \
         RETURNING NULL::pg_catalog.text",
        &[
            role_arg(caller()),
            client.to_string().into(),
            cursor.to_string().into(),
        ],
    )?;
    Ok(())
}

/// Notes, once per backend, that write marks can be trusted: the server
/// has restarted since the update that introduced them, so no backend can
/// still run triggers that do not raise them (see marks.rs).
pub fn trust_marks() -> Result<()> {
    thread_local! {
        static DONE: Cell<bool> = const { Cell::new(false) };
    }
    if DONE.with(Cell::get) || !crate::marks::available() {
        return Ok(());
    }
    run(
        "UPDATE pg_sync.meta SET marks_trusted = true \
         WHERE NOT marks_trusted \
           AND pg_catalog.pg_postmaster_start_time() OPERATOR(pg_catalog.>) marks_since \
         RETURNING NULL::pg_catalog.text",
        &[],
    )?;
    DONE.with(|d| d.set(true));
    Ok(())
}

/// One conflict record as JSON (with its table's oid as `relid`, or null
/// when the table is no longer synced).
pub fn conflict_get(id: i64) -> Result<Option<String>> {
    Ok(first(read(
        "SELECT (pg_catalog.to_jsonb(c) OPERATOR(pg_catalog.||) \
                 pg_catalog.jsonb_build_object('relid', t.relid::pg_catalog.oid::pg_catalog.int8))::pg_catalog.text \
         FROM pg_sync.conflicts c LEFT JOIN pg_sync.tables t \
           ON t.name OPERATOR(pg_catalog.=) c.table_name \
         WHERE c.id OPERATOR(pg_catalog.=) $1",
        &[id.into()],
    )?))
}

/// Marks a conflict resolved.
pub fn conflict_resolved(id: i64, resolution: String) -> Result<()> {
    run(
        "UPDATE pg_sync.conflicts SET resolved_at = pg_catalog.now(), \
                resolution = $2::pg_catalog.jsonb \
         WHERE id OPERATOR(pg_catalog.=) $1 RETURNING NULL::pg_catalog.text",
        &[id.into(), resolution.into()],
    )?;
    Ok(())
}

/// Removes tombstones and push results older than `retain` and raises the
/// horizon below which cursors must resync. Returns the summary as JSON.
pub fn compact(retain: pgrx::datum::Interval) -> Result<String> {
    first(run(
        "WITH d AS (DELETE FROM pg_sync.tombstones t \
                    WHERE t.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $1) \
                    RETURNING t.xid), \
              m AS (SELECT pg_catalog.count(*) AS n, pg_catalog.max(d.xid::pg_catalog.text::pg_catalog.numeric) AS x FROM d), \
              r AS (DELETE FROM pg_sync.push_results p \
                    WHERE p.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $1) RETURNING 1), \
              w AS (DELETE FROM pg_sync.push_xacts x \
                    WHERE x.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $1) RETURNING 1), \
              u AS (UPDATE pg_sync.meta SET \
                        compacted_xid = GREATEST(compacted_xid, \
                            ((SELECT m.x FROM m) OPERATOR(pg_catalog.+) 1)::pg_catalog.text::pg_catalog.xid8), \
                        compacted_at = pg_catalog.now() \
                    WHERE (SELECT m.x FROM m) IS NOT NULL RETURNING compacted_xid) \
         SELECT pg_catalog.jsonb_build_object( \
                    'tombstones_removed', (SELECT m.n FROM m), \
                    'results_removed', (SELECT pg_catalog.count(*) FROM r), \
                    'compacted_xid', coalesce((SELECT u.compacted_xid::pg_catalog.text FROM u), \
                                              (SELECT e.compacted_xid::pg_catalog.text FROM pg_sync.meta e)))::pg_catalog.text",
        &[retain.into()],
    )?)
    .ok_or_else(|| PgSyncError::Spi("compaction returned nothing".into()))
}

/// Raises the visibility epoch (every client resyncs); returns the new one.
pub fn bump_epoch() -> Result<i64> {
    first(run("SELECT pg_sync._bump_epoch()::pg_catalog.text", &[])?)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PgSyncError::Spi("could not raise the visibility epoch".into()))
}

/// Whether `sql` (a fixed `SELECT` of one key of a synced table, built by
/// pg_sync with the key as parameter `$1`) finds the row as the catalog
/// owner, whom no policy hides rows from. Used only to tell a row that left
/// the caller's visible set from a deleted one; the answer reveals nothing
/// the caller's own tombstones did not show it.
pub fn exists(sql: &str, key_json: String) -> Result<bool> {
    Ok(first(read(sql, &[key_json.into()])?).is_some())
}
