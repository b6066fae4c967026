//! Creating and migrating the objects of synced tables.
//!
//! For a table `T` in optimistic mode the app reads and writes the real
//! table `T`, which holds server state with pending local writes applied.
//! AFTER triggers on it append one row per write to `_changes` (no JSON:
//! values are read from `T` when a batch is built).
//!
//! `T_synced` holds, for every server row, its key and column versions
//! (`_ver`). Its value columns are filled only while the row has pending
//! local writes (`_full = 1`): the first local update or delete of a clean
//! row copies the old (server) values there, so a rejected write can be
//! rolled back. For a clean row (`_full = 0`) the server values are the
//! values in `T`. This keeps the file small: one copy of the data.
//!
//! In confirmed mode the written table is `T_pending` and `T` is a view of
//! the server state whose INSTEAD OF triggers forward writes to `T_pending`.
//!
//! The triggers take their stamp from the `sync_clock` virtual table rather
//! than from a function: a function call (or a NOT NULL constraint) in a
//! trigger makes SQLite journal every statement inside a transaction. They
//! name it with table-valued-function syntax, `sync_clock()`: a real table
//! or view named `sync_clock` (which SQLite would otherwise read instead of
//! the extension's eponymous virtual table, silently capturing nothing)
//! then makes every write fail with `'sync_clock' is not a function`.
//!
//! Column types are `model::decl_type`'s, chosen so SQLite stores every
//! server value exactly. Devices built by older versions (layout 1: numeric
//! columns declared NUMERIC, real columns REAL, triggers reading
//! `FROM sync_clock`) are upgraded in place by [`upgrade_layout`].

use sync_core::schema::{ColumnType, Schema, TableDef, WriteMode};
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::names::{lit, q, BASE, CHANGES, CONFLICTS, ERRORS, MEMBERS, META, SUBSCRIPTIONS};
use crate::model::table::{state_table_name, TableInfo};
use crate::model::values::decl_type;
use crate::model::values::{f64_numeric_text, ver_from_blob, ver_to_blob};
use crate::store::state::{meta_get, meta_set, object_exists};

/// The current layout of the device's objects (see [`upgrade_layout`]):
/// 2 gave columns their exact types and the triggers `sync_clock()`; 3 adds
/// the partial index of the queue's high-water marks and shows an insert's
/// written columns in `T_local._mask`; 4 adds the conflict inbox
/// (`_sync_conflicts`); 5 the subscriptions to streams
/// (`_sync_subscriptions`, `_sync_members`, the `sync_subscriptions` view).
pub const LAYOUT: i64 = 5;

/// The clock the triggers read; no other object may take its name.
pub const CLOCK: &str = "sync_clock";

/// Fails when an object of the database is named like the extension's
/// clock table, which it would hide from the triggers.
pub fn check_clock_not_shadowed(db: Db) -> Result<()> {
    let mut st =
        db.prepare("SELECT type, name FROM sqlite_master WHERE name = ?1 COLLATE NOCASE")?;
    st.bind_text(1, CLOCK)?;
    if st.step()? {
        let (ty, name) = (
            st.col_text(0).unwrap_or_default(),
            st.col_text(1).unwrap_or_default(),
        );
        return Err(Error::layout(format!(
            "this database has a {ty} named {name:?}: that name belongs to sqlite_sync's \
             clock, which the change-capture triggers read; rename or drop the {ty}"
        )));
    }
    Ok(())
}

/// Creates the tables shared by all synced tables, if missing.
pub fn create_meta(db: Db) -> Result<()> {
    db.exec(&format!(
        "CREATE TABLE IF NOT EXISTS {meta}(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS {changes}(
             seq INTEGER PRIMARY KEY,
             tbl TEXT,
             pk,
             op TEXT,
             mask INTEGER,
             hlc INTEGER,
             batch INTEGER);
         DROP INDEX IF EXISTS {old_changes_batch};
         CREATE INDEX IF NOT EXISTS {changes_batch} ON {changes}(batch) WHERE batch IS NOT NULL;
         CREATE INDEX IF NOT EXISTS {changes_mark} ON {changes}(seq) WHERE op = 'mark';
         CREATE TABLE IF NOT EXISTS {errors}(
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             seq INTEGER,
             tbl TEXT,
             pk TEXT,
             op TEXT,
             reason TEXT,
             constraint_name TEXT,
             at TEXT);
         CREATE TABLE IF NOT EXISTS {base}(
             tbl TEXT NOT NULL,
             key TEXT NOT NULL,
             col TEXT NOT NULL,
             ver INTEGER NOT NULL,
             val,
             PRIMARY KEY(tbl, key, col)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS {conflicts}(
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             server_id INTEGER UNIQUE,
             tbl TEXT NOT NULL,
             pk TEXT NOT NULL,
             col TEXT,
             strategy TEXT NOT NULL,
             outcome TEXT NOT NULL,
             reason TEXT,
             mine TEXT,
             theirs TEXT,
             base TEXT,
             mine_at TEXT,
             theirs_at TEXT,
             winner_client TEXT,
             winner_role TEXT,
             at TEXT NOT NULL,
             state TEXT NOT NULL DEFAULT 'open',
             resolution TEXT,
             resolved_at TEXT);
         CREATE INDEX IF NOT EXISTS {conflicts_row} ON {conflicts}(tbl, pk) WHERE state = 'resolving';
         CREATE TABLE IF NOT EXISTS {subs}(
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             stream TEXT NOT NULL,
             params TEXT NOT NULL,
             state TEXT NOT NULL DEFAULT 'bootstrapping',
             sent INTEGER NOT NULL DEFAULT 0,
             total INTEGER,
             created_at TEXT NOT NULL,
             UNIQUE(stream, params));
         CREATE TABLE IF NOT EXISTS {members}(
             sub INTEGER NOT NULL,
             tbl TEXT NOT NULL,
             pk TEXT NOT NULL,
             PRIMARY KEY(sub, tbl, pk)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS {members_row} ON {members}(tbl, pk);
         CREATE VIEW IF NOT EXISTS sync_subscriptions AS
             SELECT id, stream, params, state, sent, total, created_at FROM {subs};",
        meta = q(META),
        changes = q(CHANGES),
        old_changes_batch = q("_changes_batch"),
        changes_batch = q("_sync_changes_batch"),
        changes_mark = q("_sync_changes_mark"),
        errors = q(ERRORS),
        base = q(BASE),
        conflicts = q(CONFLICTS),
        conflicts_row = q("_sync_conflicts_row"),
        subs = q(SUBSCRIPTIONS),
        members = q(MEMBERS),
        members_row = q("_sync_members_row"),
    ))
}

fn col_def(t: &TableDef, c: &sync_core::schema::ColumnDef) -> String {
    let mut s = format!("{} {}", q(&c.name), decl_type(c.ty, t.is_pk(&c.name)));
    if integer_pk(t) && t.pk[0] == c.name {
        s.push_str(" PRIMARY KEY");
    } else if t.is_pk(&c.name) {
        // FAIL, not the default ABORT: an ABORT constraint on a table with
        // triggers makes SQLite journal every statement (see module doc).
        s.push_str(" NOT NULL ON CONFLICT FAIL");
    }
    s
}

/// Whether the table's key is a single INTEGER column (a rowid alias).
fn integer_pk(t: &TableDef) -> bool {
    t.pk.len() == 1
        && t.column_index(&t.pk[0])
            .map(|i| t.columns[i].ty == ColumnType::Integer)
            .unwrap_or(false)
}

fn pk_list(t: &TableDef) -> String {
    t.pk.iter().map(|p| q(p)).collect::<Vec<_>>().join(", ")
}

fn create_tables(db: Db, info: &TableInfo) -> Result<()> {
    let t = &info.def;
    for name in [&info.state, &info.synced, &format!("{}_local", t.name)] {
        if object_exists(db, name)? {
            return Err(Error::layout(format!(
                "cannot create synced table {:?}: an object named {name:?} already exists",
                t.name
            )));
        }
    }
    if info.confirmed() && object_exists(db, &t.name)? {
        return Err(Error::layout(format!(
            "cannot create the view of synced table {:?}: an object with that name already exists",
            t.name
        )));
    }
    let mut cols: Vec<String> = t.columns.iter().map(|c| col_def(t, c)).collect();
    if !integer_pk(t) {
        cols.push(format!("PRIMARY KEY({})", pk_list(t)));
    }
    db.exec(&format!(
        "CREATE TABLE {}({})",
        q(&info.state),
        cols.join(", ")
    ))?;
    // Server copy: key, versions, and values only while the row is pending.
    let mut cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            if t.is_pk(&c.name) {
                format!("{} {} NOT NULL", q(&c.name), decl_type(c.ty, true))
            } else {
                format!("{} {}", q(&c.name), decl_type(c.ty, false))
            }
        })
        .collect();
    cols.push("\"_ver\" BLOB".into());
    cols.push("\"_full\" INTEGER DEFAULT 0".into());
    cols.push(format!("PRIMARY KEY({})", pk_list(t)));
    db.exec(&format!(
        "CREATE TABLE {}({}) WITHOUT ROWID",
        q(&info.synced),
        cols.join(", ")
    ))?;
    Ok(())
}

fn trigger_name(t: &str, what: &str) -> String {
    format!("{t}__sync_{what}")
}

const TRIGGERS: [&str; 8] = ["save", "ins", "upd", "pk", "del", "vins", "vupd", "vdel"];

/// Drops the triggers and the confirmed-mode view of a table, if present.
fn drop_triggers_and_view(db: Db, table: &str, mode: WriteMode) -> Result<()> {
    for w in TRIGGERS {
        db.exec(&format!(
            "DROP TRIGGER IF EXISTS {}",
            q(&trigger_name(table, w))
        ))?;
    }
    if mode == WriteMode::Confirmed {
        db.exec(&format!("DROP VIEW IF EXISTS {}", q(table)))?;
    }
    db.exec(&format!(
        "DROP VIEW IF EXISTS {}",
        q(&format!("{table}_local"))
    ))?;
    Ok(())
}

/// Creates the read-only view `T_local`: one row per row with unconfirmed
/// writes, with its current local values, the mask of locally written
/// columns (`_mask`), whether it is deleted locally (`_deleted`), the server
/// versions it is based on (`_base`), its latest queued seq (`_seq`) and
/// whether a batch carrying it is in flight (`_in_flight`).
fn create_local_view(db: Db, info: &TableInfo) -> Result<()> {
    let t = &info.def;
    let name = format!("{}_local", t.name);
    // An insert's mask holds the columns the table had when it was written.
    let mask_terms: Vec<String> = (0..t.columns.len())
        .map(|i| format!("max(mask & {})", 1i64 << i))
        .collect();
    let key_part = |j: usize| -> String {
        if info.single_pk() {
            "g.k".to_string()
        } else {
            format!("json_extract(g.k, '$[{j}]')")
        }
    };
    let join_on = |alias: &str| -> String {
        t.pk.iter()
            .enumerate()
            .map(|(j, p)| format!("{alias}.{} = {}", q(p), key_part(j)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| match t.pk.iter().position(|p| p == &c.name) {
            Some(j) => format!("{} AS {}", key_part(j), q(&c.name)),
            None => format!("s.{0} AS {0}", q(&c.name)),
        })
        .collect();
    let first_pk = q(&t.pk[0]);
    db.exec(&format!(
        "CREATE VIEW {view} AS
         SELECT {cols}, g._mask AS \"_mask\", (s.{first_pk} IS NULL) AS \"_deleted\",
                sync_ver_json(y.\"_ver\", {ncols}) AS \"_base\", g._seq AS \"_seq\", g._in_flight AS \"_in_flight\"
         FROM (SELECT pk AS k, max(seq) AS _seq, max(batch IS NOT NULL) AS _in_flight,
                      {mask} AS _mask
               FROM {changes} WHERE tbl = {tbl} AND op <> 'mark' GROUP BY pk) g
         LEFT JOIN {state} s ON {on_s}
         LEFT JOIN {synced} y ON {on_y}",
        view = q(&name),
        cols = cols.join(", "),
        mask = mask_terms.join(" + "),
        changes = q(CHANGES),
        tbl = lit(&t.name),
        state = q(&info.state),
        synced = q(&info.synced),
        on_s = join_on("s"),
        on_y = join_on("y"),
        ncols = t.columns.len(),
    ))
}

/// Creates the change-capturing triggers (and, in confirmed mode, the view
/// `T` with its forwarding triggers).
fn create_triggers(db: Db, info: &TableInfo) -> Result<()> {
    let t = &info.def;
    let state = q(&info.state);
    let synced = q(&info.synced);
    let tbl = lit(&t.name);
    let changes = q(CHANGES);
    let all = info.all_mask;
    let same_key = |a: &str, b: &str| -> String {
        t.pk.iter()
            .map(|p| format!("{a}.{0} IS {b}.{0}", q(p)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let key_match = |prefix: &str| -> String {
        t.pk.iter()
            .map(|p| format!("{0} = {prefix}.{0}", q(p)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let non_pk: Vec<(usize, &str)> = t
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !t.is_pk(&c.name))
        .map(|(i, c)| (i, c.name.as_str()))
        .collect();
    // Mask of the changed non-key columns; bit i = schema column i.
    let mask = if non_pk.is_empty() {
        "0".to_string()
    } else {
        non_pk
            .iter()
            .map(|(i, c)| format!("((NEW.{0} IS NOT OLD.{0}) << {i})", q(c)))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let any_changed = if non_pk.is_empty() {
        "0".to_string()
    } else {
        non_pk
            .iter()
            .map(|(_, c)| format!("NEW.{0} IS NOT OLD.{0}", q(c)))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    // True while writes are captured (false while the extension writes).
    let capturing = "EXISTS (SELECT 1 FROM sync_clock())";
    // Copies the old values of a clean row into the server copy.
    let save_from = |src: &str| -> String {
        let mut sets = vec!["\"_full\" = 1".to_string()];
        sets.extend(non_pk.iter().map(|(_, c)| format!("{0} = {src}.{0}", q(c))));
        format!(
            "UPDATE {synced} SET {} WHERE {} AND \"_full\" = 0 AND {capturing};",
            sets.join(", "),
            key_match("OLD")
        )
    };
    let key_new = info.key_expr("NEW");
    let key_old = info.key_expr("OLD");
    let log = |key: &str, op: &str, m: &str| -> String {
        format!(
            "INSERT INTO {changes}(tbl, pk, op, mask, hlc) \
             SELECT {tbl}, {key}, '{op}', {m}, hlc FROM sync_clock();"
        )
    };
    if !non_pk.is_empty() {
        // INSERT OR REPLACE over a clean row: keep its server values first.
        let sets: Vec<String> = std::iter::once("\"_full\" = 1".to_string())
            .chain(non_pk.iter().map(|(_, c)| {
                format!(
                    "{0} = (SELECT {0} FROM {state} WHERE {1})",
                    q(c),
                    key_match("NEW")
                )
            }))
            .collect();
        db.exec(&format!(
            "CREATE TRIGGER {name} BEFORE INSERT ON {state}
             WHEN EXISTS (SELECT 1 FROM {synced} WHERE {km} AND \"_full\" = 0) AND {capturing} BEGIN
               UPDATE {synced} SET {sets} WHERE {km};
             END",
            name = q(&trigger_name(&t.name, "save")),
            km = key_match("NEW"),
            sets = sets.join(", "),
        ))?;
    }
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER INSERT ON {state} BEGIN
           {body}
         END",
        name = q(&trigger_name(&t.name, "ins")),
        body = log(&key_new, "insert", &all.to_string()),
    ))?;
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER UPDATE ON {state}
         WHEN {same} AND ({any_changed}) BEGIN
           {body}
           {save}
         END",
        name = q(&trigger_name(&t.name, "upd")),
        same = same_key("NEW", "OLD"),
        body = log(&key_new, "update", &mask),
        save = if non_pk.is_empty() {
            String::new()
        } else {
            save_from("OLD")
        },
    ))?;
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER UPDATE ON {state}
         WHEN NOT ({same}) BEGIN
           {del}
           {ins}
           {save}
         END",
        name = q(&trigger_name(&t.name, "pk")),
        same = same_key("NEW", "OLD"),
        del = log(&key_old, "delete", "0"),
        ins = log(&key_new, "insert", &all.to_string()),
        save = if non_pk.is_empty() {
            String::new()
        } else {
            save_from("OLD")
        },
    ))?;
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER DELETE ON {state} BEGIN
           {body}
           {save}
         END",
        name = q(&trigger_name(&t.name, "del")),
        body = log(&key_old, "delete", "0"),
        save = if non_pk.is_empty() {
            String::new()
        } else {
            save_from("OLD")
        },
    ))?;
    create_local_view(db, info)?;
    if info.confirmed() {
        let view = q(&t.name);
        let cols = info.col_list();
        // Server state: the saved copy while pending, else the local row.
        let sel: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                if t.is_pk(&c.name) {
                    format!("s.{0} AS {0}", q(&c.name))
                } else {
                    format!(
                        "CASE WHEN s.\"_full\" THEN s.{0} ELSE p.{0} END AS {0}",
                        q(&c.name)
                    )
                }
            })
            .collect();
        let on =
            t.pk.iter()
                .map(|p| format!("p.{0} = s.{0}", q(p)))
                .collect::<Vec<_>>()
                .join(" AND ");
        db.exec(&format!(
            "CREATE VIEW {view} AS SELECT {} FROM {synced} s LEFT JOIN {state} p ON {on}",
            sel.join(", ")
        ))?;
        let new_vals = t
            .columns
            .iter()
            .map(|c| format!("NEW.{}", q(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        db.exec(&format!(
            "CREATE TRIGGER {name} INSTEAD OF INSERT ON {view} BEGIN
               INSERT INTO {state}({cols}) VALUES ({new_vals});
             END",
            name = q(&trigger_name(&t.name, "vins")),
        ))?;
        let sets = t
            .columns
            .iter()
            .map(|c| {
                format!(
                    "{0} = CASE WHEN NEW.{0} IS NOT OLD.{0} THEN NEW.{0} ELSE {0} END",
                    q(&c.name)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        db.exec(&format!(
            "CREATE TRIGGER {name} INSTEAD OF UPDATE ON {view} BEGIN
               UPDATE {state} SET {sets} WHERE {km};
             END",
            name = q(&trigger_name(&t.name, "vupd")),
            km = key_match("OLD"),
        ))?;
        db.exec(&format!(
            "CREATE TRIGGER {name} INSTEAD OF DELETE ON {view} BEGIN
               DELETE FROM {state} WHERE {km};
             END",
            name = q(&trigger_name(&t.name, "vdel")),
            km = key_match("OLD"),
        ))?;
    }
    Ok(())
}

/// Creates every object of a new synced table.
pub fn create_table(db: Db, def: &TableDef) -> Result<()> {
    let info = TableInfo::new(def);
    create_tables(db, &info)?;
    create_triggers(db, &info)
}

/// Why a table's objects are dropped.
enum Dropped {
    /// It left the synced schema.
    NotSynced,
    /// Its primary key changed (it is created again with the new one).
    KeyChanged(Vec<String>),
}

/// Removes a table's objects with its unsent queued changes. Each row whose
/// unsent writes are dropped gets a `_sync_errors` row (constraint
/// `table_not_synced` or `key_mismatch`), as when the server rejects them
/// for the same reason: the outcome does not depend on whether the device
/// pushed or pulled first. Writes in flight stay queued until the answer
/// to their batch says what the server did with them.
fn drop_table(db: Db, def: &TableDef, why: Dropped) -> Result<()> {
    let info = TableInfo::new(def);
    drop_triggers_and_view(db, &def.name, def.mode)?;
    db.exec(&format!("DROP TABLE IF EXISTS {}", q(&info.state)))?;
    db.exec(&format!("DROP TABLE IF EXISTS {}", q(&info.synced)))?;
    record_dropped_writes(db, &info, &why)?;
    let high_water = crate::store::changes::max_seq(db)?;
    let mut st = db.prepare(&format!(
        "DELETE FROM {} WHERE tbl = ?1 AND op <> 'mark' AND batch IS NULL",
        q(CHANGES)
    ))?;
    st.bind_text(1, &def.name)?;
    st.run()?;
    drop(st);
    // Seqs the server may have seen are never reused.
    crate::store::changes::keep_high_water(db, high_water)?;
    let mut st = db.prepare(&format!("DELETE FROM {} WHERE tbl = ?1", q(BASE)))?;
    st.bind_text(1, &def.name)?;
    st.run()
}

/// Adds a `_sync_errors` row for each row of `info` whose unsent writes
/// amount to something.
fn record_dropped_writes(db: Db, info: &TableInfo, why: &Dropped) -> Result<()> {
    let mut st = db.prepare(&format!(
        "SELECT seq, pk, op FROM {} WHERE tbl = ?1 AND op <> 'mark' AND batch IS NULL \
         ORDER BY seq",
        q(CHANGES)
    ))?;
    st.bind_text(1, info.name())?;
    // Per row: last seq, first op, last op.
    let mut rows: Vec<(crate::model::key::Key, i64, String, String)> = Vec::new();
    let mut index: std::collections::HashMap<crate::model::key::Key, usize> =
        std::collections::HashMap::new();
    while st.step()? {
        let Ok(key) = info.key_from_stored(&st.col(1)) else {
            continue;
        };
        let (seq, op) = (st.col_i64(0), st.col_text(2).unwrap_or_default());
        match index.get(&key) {
            Some(&i) => {
                rows[i].1 = seq;
                rows[i].3 = op;
            }
            None => {
                index.insert(key.clone(), rows.len());
                rows.push((key, seq, op.clone(), op));
            }
        }
    }
    drop(st);
    let mut ins = db.prepare(&format!(
        "INSERT INTO {}(seq, tbl, pk, op, reason, constraint_name, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        q(ERRORS)
    ))?;
    let (reason, code) = match why {
        Dropped::NotSynced => (
            format!(
                "table {:?} is no longer synced (it left the server's schema); the row's \
                 unconfirmed writes were dropped",
                info.name()
            ),
            "table_not_synced",
        ),
        Dropped::KeyChanged(pk) => (
            format!(
                "the primary key of table {:?} changed from {:?} to {pk:?}; the row's \
                 unconfirmed writes were dropped",
                info.name(),
                info.def.pk
            ),
            "key_mismatch",
        ),
    };
    let now = crate::model::values::now_iso();
    for (key, seq, first, last) in rows {
        let op = match (first.as_str(), last.as_str()) {
            ("insert", "delete") => continue,
            (_, "delete") => "delete",
            ("insert", _) => "insert",
            _ => "update",
        };
        ins.run_with(&[
            Value::Int(seq),
            Value::Text(info.name().to_string()),
            Value::Text(serde_json::Value::Object(info.key_to_json(&key)).to_string()),
            Value::Text(op.into()),
            Value::Text(reason.clone()),
            Value::Text(code.into()),
            Value::Text(now.clone()),
        ])?;
    }
    Ok(())
}

/// Migrates the objects from `old` to `new` in place, keeping pending
/// changes (their column masks are remapped by column name). Returns true
/// when the device must download the server's rows again (a table whose
/// primary key changed was created again, empty): the caller resyncs.
pub fn migrate(db: Db, old: &Schema, new: &Schema) -> Result<bool> {
    let mut resync = false;
    for ot in &old.tables {
        if new.table(&ot.name).is_none() {
            drop_table(db, ot, Dropped::NotSynced)?;
        }
    }
    for nt in &new.tables {
        match old.table(&nt.name) {
            None => create_table(db, nt)?,
            // A changed key cannot be migrated in place: rows and queued
            // writes are addressed by it. The table is created again and
            // filled by a resync; its queued writes (which the server
            // rejects as key_mismatch) are dropped and reported.
            Some(ot) if ot.pk != nt.pk => {
                drop_table(db, ot, Dropped::KeyChanged(nt.pk.clone()))?;
                create_table(db, nt)?;
                resync = true;
            }
            Some(ot) => migrate_table(db, ot, nt)?,
        }
    }
    Ok(resync)
}

fn migrate_table(db: Db, ot: &TableDef, nt: &TableDef) -> Result<()> {
    if ot == nt {
        return Ok(());
    }
    drop_triggers_and_view(db, &ot.name, ot.mode)?;
    let old_state = state_table_name(&ot.name, ot.mode);
    let new_state = state_table_name(&nt.name, nt.mode);
    if old_state != new_state {
        if object_exists(db, &new_state)? {
            return Err(Error::layout(format!(
                "cannot switch table {:?} to {} mode: an object named {new_state:?} already exists",
                nt.name,
                if nt.mode == WriteMode::Confirmed {
                    "confirmed"
                } else {
                    "optimistic"
                }
            )));
        }
        db.exec(&format!(
            "ALTER TABLE {} RENAME TO {}",
            q(&old_state),
            q(&new_state)
        ))?;
    }
    let synced = format!("{}_synced", nt.name);
    // New columns.
    for c in &nt.columns {
        if ot.column_index(&c.name).is_none() {
            for t in [&new_state, &synced] {
                // A local-only column of the same name becomes the synced one.
                if t == &new_state && crate::schema::local::has_column(db, t, &c.name)? {
                    continue;
                }
                db.exec(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    q(t),
                    q(&c.name),
                    decl_type(c.ty, nt.is_pk(&c.name))
                ))?;
            }
        }
    }
    // Dropped columns.
    let dropped: Vec<&str> = ot
        .columns
        .iter()
        .filter(|c| nt.column_index(&c.name).is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !dropped.is_empty() && crate::ffi::libversion_number() < 3_035_000 {
        return Err(Error::layout(
            "dropping a synced column needs SQLite 3.35 or newer (ALTER TABLE DROP COLUMN)",
        ));
    }
    for c in &dropped {
        for t in [&new_state, &synced] {
            db.exec(&format!("ALTER TABLE {} DROP COLUMN {}", q(t), q(c)))
                .map_err(|e| {
                    Error::layout(format!(
                        "cannot drop column {c:?} of {t:?} (an index or view of the app may use it): {e}"
                    ))
                })?;
        }
        let mut st = db.prepare(&format!(
            "DELETE FROM {} WHERE tbl = ?1 AND col = ?2",
            q(BASE)
        ))?;
        st.run_with(&[Value::Text(nt.name.clone()), Value::Text(c.to_string())])?;
    }
    // Remap masks and version arrays when the column list changed.
    let old_names: Vec<&str> = ot.columns.iter().map(|c| c.name.as_str()).collect();
    let new_names: Vec<&str> = nt.columns.iter().map(|c| c.name.as_str()).collect();
    if old_names != new_names {
        remap(db, ot, nt)?;
    }
    // A column whose type changed gets the declared type of its new type.
    let info = TableInfo::new(nt);
    fix_declared_types(db, &info)?;
    create_triggers(db, &info)
}

fn remap(db: Db, ot: &TableDef, nt: &TableDef) -> Result<()> {
    let map: Vec<Option<usize>> = ot
        .columns
        .iter()
        .map(|c| nt.column_index(&c.name))
        .collect();
    let remap_mask = |m: i64| -> i64 {
        let mut out = 0i64;
        for (i, target) in map.iter().enumerate() {
            if m & (1i64 << i) != 0 {
                if let Some(j) = target {
                    out |= 1i64 << j;
                }
            }
        }
        out
    };
    // Pending change masks. An insert covers the columns the table had when
    // the row was written: a column added since is not the device's write
    // (the server gives it its default, and the device adopts it).
    let mut st = db.prepare(&format!(
        "SELECT seq, mask, op FROM {} WHERE tbl = ?1 AND op <> 'mark'",
        q(CHANGES)
    ))?;
    st.bind_text(1, &nt.name)?;
    let mut updates: Vec<(i64, i64)> = Vec::new();
    while st.step()? {
        let (seq, mask) = (st.col_i64(0), st.col_i64(1));
        let op = st.col_text(2).unwrap_or_default();
        let nm = if op == "delete" { 0 } else { remap_mask(mask) };
        if nm != mask {
            updates.push((seq, nm));
        }
    }
    drop(st);
    let mut up = db.prepare(&format!(
        "UPDATE {} SET mask = ?1 WHERE seq = ?2",
        q(CHANGES)
    ))?;
    for (seq, m) in updates {
        up.run_with(&[Value::Int(m), Value::Int(seq)])?;
    }
    // Version arrays of server rows, addressed by primary key.
    let synced = q(&format!("{}_synced", nt.name));
    let pk_cols = nt.pk.iter().map(|p| q(p)).collect::<Vec<_>>().join(", ");
    let mut st = db.prepare(&format!("SELECT \"_ver\", {pk_cols} FROM {synced}"))?;
    let npk = nt.pk.len();
    let mut rows: Vec<(Vec<u8>, Vec<Value>)> = Vec::new();
    while st.step()? {
        let ver = match st.col(0) {
            Value::Blob(b) => b,
            _ => Vec::new(),
        };
        rows.push((ver, (1..=npk).map(|i| st.col(i)).collect()));
    }
    drop(st);
    let cond = nt
        .pk
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} = ?{}", q(p), i + 2))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut up = db.prepare(&format!("UPDATE {synced} SET \"_ver\" = ?1 WHERE {cond}"))?;
    for (ver, key) in rows {
        let old = ver_from_blob(&ver, ot.columns.len());
        let new: Vec<Hlc> = nt
            .columns
            .iter()
            .map(|c| {
                ot.column_index(&c.name)
                    .map(|i| old[i])
                    .unwrap_or(Hlc::ZERO)
            })
            .collect();
        let mut vals = vec![Value::Blob(ver_to_blob(&new))];
        vals.extend(key);
        up.run_with(&vals)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------
// Layout upgrades: devices built by older versions of the extension.

/// The layout of the device's objects (1 when never recorded).
fn layout(db: Db) -> Result<i64> {
    Ok(match meta_get(db, "layout")? {
        Some(Value::Int(v)) => v,
        _ => 1,
    })
}

/// Records that the objects follow the current layout.
pub fn set_layout(db: Db) -> Result<()> {
    meta_set(db, "layout", &Value::Int(LAYOUT))
}

/// Brings the objects of an initialised device built by an older version
/// to the current layout, in place: triggers that read `sync_clock()`, and
/// the declared types of `model::values::decl_type` (numeric columns become TEXT
/// holding their exact decimal text, real columns lose their REAL affinity;
/// the tables are rebuilt, keeping rows, rowids, the app's indexes and
/// triggers). Does nothing on a current device.
pub fn upgrade_layout(db: Db, schema: &Schema) -> Result<()> {
    if layout(db)? >= LAYOUT {
        return Ok(());
    }
    create_meta(db)?;
    for t in &schema.tables {
        let info = TableInfo::new(t);
        drop_triggers_and_view(db, &t.name, t.mode)?;
        fix_declared_types(db, &info)?;
        create_triggers(db, &info)?;
    }
    set_layout(db)
}

/// Columns of a table (`pragma_table_xinfo`): name, declared type, hidden.
fn table_columns(db: Db, table: &str) -> Result<Vec<(String, String, i64)>> {
    let mut st = db.prepare("SELECT name, type, hidden FROM pragma_table_xinfo(?1)")?;
    st.bind_text(1, table)?;
    let mut out = Vec::new();
    while st.step()? {
        out.push((
            st.col_text(0).unwrap_or_default(),
            st.col_text(1).unwrap_or_default(),
            st.col_i64(2),
        ));
    }
    Ok(out)
}

/// Rebuilds `T` and `T_synced` when a synced column's declared type is not
/// the one its logical type needs (an older layout, or a type change).
fn fix_declared_types(db: Db, info: &TableInfo) -> Result<()> {
    let t = &info.def;
    for (table, rowid) in [(&info.state, true), (&info.synced, false)] {
        let cols = table_columns(db, table)?;
        let mut retype: Vec<Retype> = Vec::new();
        for c in &t.columns {
            let want = decl_type(c.ty, t.is_pk(&c.name));
            let have = cols
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(&c.name))
                .map(|(_, ty, _)| ty.as_str());
            if let Some(have) = have {
                if !have.trim().eq_ignore_ascii_case(want) {
                    retype.push(Retype {
                        col: c.name.clone(),
                        decl: want,
                        ty: c.ty,
                    });
                }
            }
        }
        if !retype.is_empty() {
            retype_table(db, table, &retype, rowid).map_err(|e| {
                Error::layout(format!(
                    "cannot give the columns of {table:?} their exact types: {e}"
                ))
            })?;
        }
    }
    Ok(())
}

/// A column to give a new declared type.
struct Retype {
    col: String,
    decl: &'static str,
    ty: ColumnType,
}

/// Name of the table a rebuild copies into (reserved prefix: no synced
/// table can have it).
const REBUILD_TMP: &str = "_sync_rebuild";

/// Rebuilds `table` with new declared types for some columns, the way
/// SQLite's documentation describes for schema changes ALTER TABLE cannot
/// make: a copy with the new definition (the stored CREATE TABLE text with
/// only those types replaced, so every other column and constraint stays
/// as it is) receives the rows (and rowids), the old table is dropped, the
/// copy renamed, and the app's indexes and triggers on the table are
/// created again from their stored SQL. Foreign key enforcement is off
/// while the old table is dropped (its implicit DELETE would otherwise
/// fire the ON DELETE actions of the app's tables that reference it; the
/// keys do not change) and `legacy_alter_table` is on for the rename (so
/// the app's views that name the table are neither checked nor rewritten:
/// they name it again once renamed).
fn retype_table(db: Db, table: &str, retype: &[Retype], rowid: bool) -> Result<()> {
    if object_exists(db, REBUILD_TMP)? {
        db.exec(&format!("DROP TABLE {}", q(REBUILD_TMP)))?;
    }
    let mut st = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1")?;
    st.bind_text(1, table)?;
    let sql = if st.step()? {
        st.col_text(0).unwrap_or_default()
    } else {
        return Err(Error::input(format!("table {table:?} does not exist")));
    };
    drop(st);
    let types: Vec<(&str, &str)> = retype.iter().map(|r| (r.col.as_str(), r.decl)).collect();
    let new_sql = rewrite_create(&sql, REBUILD_TMP, &types)?;
    // The app's indexes and triggers on the table (ours are dropped already;
    // indexes of constraints have no SQL and come back with the table).
    let mut st = db.prepare(
        "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') \
         AND tbl_name = ?1 COLLATE NOCASE AND sql IS NOT NULL ORDER BY type = 'trigger', rowid",
    )?;
    st.bind_text(1, table)?;
    let mut saved: Vec<String> = Vec::new();
    while st.step()? {
        saved.extend(st.col_text(0));
    }
    drop(st);
    db.exec(&new_sql)?;
    copy_rows(db, table, REBUILD_TMP, retype, rowid)?;
    let fk_on = db.config_flag(crate::ffi::DBCONFIG_ENABLE_FKEY, -1)?;
    if fk_on {
        db.config_flag(crate::ffi::DBCONFIG_ENABLE_FKEY, 0)?;
    }
    let swapped = (|| {
        db.exec(&format!("DROP TABLE {}", q(table)))?;
        let legacy = pragma_flag(db, "legacy_alter_table")?;
        if !legacy {
            db.exec("PRAGMA legacy_alter_table = ON")?;
        }
        let renamed = db.exec(&format!(
            "ALTER TABLE {} RENAME TO {}",
            q(REBUILD_TMP),
            q(table)
        ));
        if !legacy {
            db.exec("PRAGMA legacy_alter_table = OFF")?;
        }
        renamed
    })();
    if fk_on {
        db.config_flag(crate::ffi::DBCONFIG_ENABLE_FKEY, 1)?;
    }
    swapped?;
    for s in saved {
        db.exec(&s)?;
    }
    Ok(())
}

fn pragma_flag(db: Db, name: &str) -> Result<bool> {
    let mut st = db.prepare(&format!("PRAGMA {name}"))?;
    Ok(st.step()? && st.col_i64(0) != 0)
}

/// Copies every row of `from` into `to` (same columns), with the rowid of a
/// rowid table, converting the values of columns that become numeric to
/// their exact decimal text (a REAL to its shortest round-trip digits,
/// which is what the wire carried for it).
fn copy_rows(db: Db, from: &str, to: &str, retype: &[Retype], rowid: bool) -> Result<()> {
    let cols: Vec<String> = table_columns(db, from)?
        .into_iter()
        .filter(|(_, _, hidden)| *hidden == 0)
        .map(|(n, _, _)| n)
        .collect();
    let alias = if rowid {
        ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|a| !cols.iter().any(|c| c.eq_ignore_ascii_case(a)))
    } else {
        None
    };
    let mut names: Vec<String> = alias.iter().map(|a| a.to_string()).collect();
    names.extend(cols.iter().map(|c| q(c)));
    let to_numeric: Vec<bool> = alias
        .iter()
        .map(|_| false)
        .chain(cols.iter().map(|c| {
            retype
                .iter()
                .any(|r| r.ty == ColumnType::Numeric && r.col.eq_ignore_ascii_case(c))
        }))
        .collect();
    let list = names.join(", ");
    let params = (1..=names.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sel = db.prepare(&format!("SELECT {list} FROM {}", q(from)))?;
    let mut ins = db.prepare(&format!("INSERT INTO {}({list}) VALUES ({params})", q(to)))?;
    while sel.step()? {
        let vals: Vec<Value> = (0..names.len())
            .map(|i| match sel.col(i) {
                Value::Int(n) if to_numeric[i] => Value::Text(n.to_string()),
                Value::Real(f) if to_numeric[i] => Value::Text(f64_numeric_text(f)),
                v => v,
            })
            .collect();
        ins.run_with(&vals)?;
    }
    Ok(())
}

/// One token of a CREATE TABLE statement: its byte range and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// A bare word (keyword or identifier).
    Word,
    /// A quoted identifier (`"x"`, `` `x` ``, `[x]`).
    Quoted,
    /// A string literal.
    Str,
    /// One character of punctuation.
    Punct(u8),
}

fn tokenize(sql: &str) -> Result<Vec<(Tok, usize, usize)>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let unterminated = || Error::input("unterminated quote or comment in a CREATE TABLE statement");
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = sql[i + 2..].find("*/").ok_or_else(unterminated)?;
            i += end + 4;
        } else if matches!(c, b'"' | b'\'' | b'`' | b'[') {
            let close = if c == b'[' { b']' } else { c };
            let start = i;
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(unterminated()),
                    // A doubled quote is an escaped one (not inside [...]).
                    Some(&x) if x == close && c != b'[' && b.get(i + 1) == Some(&close) => i += 2,
                    Some(&x) if x == close => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            let kind = if c == b'\'' { Tok::Str } else { Tok::Quoted };
            out.push((kind, start, i));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push((Tok::Word, start, i));
        } else {
            out.push((Tok::Punct(c), i, i + 1));
            i += 1;
        }
    }
    Ok(out)
}

/// The identifier a token names (quotes removed).
fn ident(sql: &str, tok: (Tok, usize, usize)) -> String {
    let (kind, s, e) = tok;
    let text = &sql[s..e];
    match kind {
        Tok::Quoted => {
            let q0 = text.as_bytes()[0];
            let inner = &text[1..text.len() - 1];
            match q0 {
                b'"' => inner.replace("\"\"", "\""),
                b'`' => inner.replace("``", "`"),
                _ => inner.to_string(),
            }
        }
        _ => text.to_string(),
    }
}

/// Rewrites a table's stored CREATE TABLE statement: the table is named
/// `new_name`, and the columns of `types` (matched without case) get the
/// declared type given (the words between the column name and its first
/// constraint are replaced). Everything else stays as written.
fn rewrite_create(sql: &str, new_name: &str, types: &[(&str, &str)]) -> Result<String> {
    const CONSTRAINT_WORDS: [&str; 11] = [
        "CONSTRAINT",
        "PRIMARY",
        "NOT",
        "NULL",
        "UNIQUE",
        "CHECK",
        "DEFAULT",
        "COLLATE",
        "REFERENCES",
        "GENERATED",
        "AS",
    ];
    const TABLE_CONSTRAINTS: [&str; 5] = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"];
    let toks = tokenize(sql)?;
    let open = toks
        .iter()
        .position(|t| t.0 == Tok::Punct(b'('))
        .ok_or_else(|| Error::input("no column list in the CREATE TABLE statement"))?;
    let word_is = |t: (Tok, usize, usize), set: &[&str]| -> bool {
        t.0 == Tok::Word && set.iter().any(|w| sql[t.1..t.2].eq_ignore_ascii_case(w))
    };
    // (start, end, replacement) edits, in order.
    let mut edits: Vec<(usize, usize, String)> =
        vec![(0, toks[open].1, format!("CREATE TABLE {}", q(new_name)))];
    let mut found = vec![false; types.len()];
    let mut depth = 0usize;
    let mut seg_start = open + 1;
    let mut i = open;
    let mut close = None;
    while i < toks.len() {
        let t = toks[i];
        match t.0 {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            _ => {}
        }
        let seg_end = (depth == 1 && t.0 == Tok::Punct(b',')) || depth == 0;
        if seg_end && i > open {
            // Tokens seg_start..i form one column definition or constraint.
            if seg_start < i && !word_is(toks[seg_start], &TABLE_CONSTRAINTS) {
                let name = ident(sql, toks[seg_start]);
                if let Some(k) = types
                    .iter()
                    .position(|(c, _)| c.eq_ignore_ascii_case(&name))
                {
                    let mut j = seg_start + 1;
                    let mut d = 0usize;
                    while j < i {
                        match toks[j].0 {
                            Tok::Punct(b'(') => d += 1,
                            Tok::Punct(b')') => d = d.saturating_sub(1),
                            _ => {}
                        }
                        if d == 0 && word_is(toks[j], &CONSTRAINT_WORDS) {
                            break;
                        }
                        j += 1;
                    }
                    let from = toks[seg_start].2;
                    let to = if j < i { toks[j].1 } else { toks[i].1 };
                    let ty = types[k].1;
                    let rep = match (ty.is_empty(), j < i) {
                        (true, true) => " ".to_string(),
                        (true, false) => String::new(),
                        (false, true) => format!(" {ty} "),
                        (false, false) => format!(" {ty}"),
                    };
                    edits.push((from, to, rep));
                    found[k] = true;
                }
            }
            seg_start = i + 1;
        }
        if depth == 0 {
            close = Some(i);
            break;
        }
        i += 1;
    }
    if close.is_none() {
        return Err(Error::input(
            "unbalanced parentheses in the CREATE TABLE statement",
        ));
    }
    if let Some(k) = found.iter().position(|f| !f) {
        return Err(Error::input(format!(
            "column {:?} not found in the CREATE TABLE statement",
            types[k].0
        )));
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut pos = 0;
    for (s, e, rep) in edits {
        out.push_str(&sql[pos..s]);
        out.push_str(&rep);
        pos = e;
    }
    out.push_str(&sql[pos..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_statements_are_rewritten_in_place() {
        let sql = r#"CREATE TABLE "t(x"("id" TEXT NOT NULL ON CONFLICT FAIL, "amount" NUMERIC, "est" REAL, "note" TEXT DEFAULT 'a, "amount" NUMERIC', "n""q" NUMERIC, PRIMARY KEY("id"))"#;
        let out = rewrite_create(
            sql,
            "_sync_rebuild",
            &[("AMOUNT", "TEXT"), ("est", ""), ("n\"q", "TEXT")],
        )
        .unwrap();
        assert_eq!(
            out,
            r#"CREATE TABLE "_sync_rebuild"("id" TEXT NOT NULL ON CONFLICT FAIL, "amount" TEXT, "est", "note" TEXT DEFAULT 'a, "amount" NUMERIC', "n""q" TEXT, PRIMARY KEY("id"))"#
        );
        // Added columns with constraints, and a WITHOUT ROWID table.
        let sql = r#"CREATE TABLE "s"("id" NUMERIC NOT NULL, "x" REAL, "_ver" BLOB, PRIMARY KEY("id")) WITHOUT ROWID"#;
        let out = rewrite_create(sql, "n", &[("id", "TEXT"), ("x", "")]).unwrap();
        assert_eq!(
            out,
            r#"CREATE TABLE "n"("id" TEXT NOT NULL, "x", "_ver" BLOB, PRIMARY KEY("id")) WITHOUT ROWID"#
        );
        assert!(rewrite_create(sql, "n", &[("missing", "TEXT")]).is_err());
    }
}
