//! Creating and migrating the objects of synced tables.
//!
//! For a table `T` in optimistic mode the app reads and writes the real
//! table `T`, which holds server state with pending local writes applied.
//! AFTER triggers on it append one row per write to `_changes` (no JSON, no
//! lookups: values are read from `T` when a batch is built). `T_synced`
//! holds the server's rows and column versions. In confirmed mode the
//! written table is `T_pending` and `T` is a view of `T_synced` whose
//! INSTEAD OF triggers forward writes to `T_pending`.

use sync_core::schema::{ColumnType, Schema, TableDef, WriteMode};
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::{Db, Value};
use crate::model::{
    lit, q, state_table_name, ver_from_text, ver_to_text, TableInfo, BASE, CHANGES, ERRORS, META,
};
use crate::state::object_exists;

/// Whether the state table is a WITHOUT ROWID table. Kept a rowid table so
/// apps can use rowid-based features (FTS5 external content and the like).
const STATE_WITHOUT_ROWID: bool = false;

/// Creates the tables shared by all synced tables, if missing.
pub fn create_meta(db: Db) -> Result<()> {
    db.exec(&format!(
        "CREATE TABLE IF NOT EXISTS {meta}(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS {changes}(
             seq INTEGER PRIMARY KEY,
             tbl TEXT NOT NULL,
             pk,
             op TEXT NOT NULL,
             mask INTEGER NOT NULL,
             hlc INTEGER NOT NULL,
             batch INTEGER);
         CREATE INDEX IF NOT EXISTS {changes_batch} ON {changes}(batch) WHERE batch IS NOT NULL;
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
             PRIMARY KEY(tbl, key, col)) WITHOUT ROWID;",
        meta = q(META),
        changes = q(CHANGES),
        changes_batch = q("_changes_batch"),
        errors = q(ERRORS),
        base = q(BASE),
    ))
}

fn col_def(t: &TableDef, c: &sync_core::schema::ColumnDef) -> String {
    let mut s = format!("{} {}", q(&c.name), c.ty.sqlite_type());
    let integer_rowid_pk = t.pk.len() == 1 && t.pk[0] == c.name && c.ty == ColumnType::Integer;
    if integer_rowid_pk {
        s.push_str(" PRIMARY KEY");
    } else if t.is_pk(&c.name) {
        s.push_str(" NOT NULL");
    }
    s
}

/// Whether the table's key is a single INTEGER column (a rowid alias).
fn integer_pk(t: &TableDef) -> bool {
    t.pk.len() == 1
        && t
            .column_index(&t.pk[0])
            .map(|i| t.columns[i].ty == ColumnType::Integer)
            .unwrap_or(false)
}

fn table_body(t: &TableDef, extra: &str) -> String {
    let mut parts: Vec<String> = t.columns.iter().map(|c| col_def(t, c)).collect();
    if !extra.is_empty() {
        parts.push(extra.to_string());
    }
    if !integer_pk(t) {
        parts.push(format!(
            "PRIMARY KEY({})",
            t.pk.iter().map(|p| q(p)).collect::<Vec<_>>().join(", ")
        ));
    }
    parts.join(", ")
}

fn create_tables(db: Db, info: &TableInfo) -> Result<()> {
    let t = &info.def;
    for name in [&info.state, &info.synced] {
        if object_exists(db, name)? {
            return Err(Error::msg(format!(
                "cannot create synced table {:?}: an object named {name:?} already exists",
                t.name
            )));
        }
    }
    if info.confirmed() && object_exists(db, &t.name)? {
        return Err(Error::msg(format!(
            "cannot create the view of synced table {:?}: an object with that name already exists",
            t.name
        )));
    }
    let rowid = if integer_pk(t) || !STATE_WITHOUT_ROWID {
        ""
    } else {
        " WITHOUT ROWID"
    };
    db.exec(&format!(
        "CREATE TABLE {}({}){rowid}",
        q(&info.state),
        table_body(t, "")
    ))?;
    let synced_rowid = if integer_pk(t) { "" } else { " WITHOUT ROWID" };
    db.exec(&format!(
        "CREATE TABLE {}({}){synced_rowid}",
        q(&info.synced),
        table_body(t, "\"_ver\" TEXT NOT NULL")
    ))?;
    Ok(())
}

fn trigger_name(t: &str, what: &str) -> String {
    format!("{t}__sync_{what}")
}

const TRIGGERS: [&str; 7] = ["ins", "upd", "pk", "del", "vins", "vupd", "vdel"];

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
    Ok(())
}

/// Creates the change-capturing triggers (and, in confirmed mode, the view
/// `T` with its forwarding triggers).
fn create_triggers(db: Db, info: &TableInfo) -> Result<()> {
    let t = &info.def;
    let state = q(&info.state);
    let tbl = lit(&t.name);
    let changes = q(CHANGES);
    let all = info.all_mask;
    let pk_same: Vec<String> = t
        .pk
        .iter()
        .map(|p| format!("NEW.{0} IS OLD.{0}", q(p)))
        .collect();
    let pk_same = pk_same.join(" AND ");
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
    let key_new = info.key_expr("NEW");
    let key_old = info.key_expr("OLD");
    let ins = "INSERT INTO ".to_string() + &changes + "(tbl, pk, op, mask, hlc) VALUES ";
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER INSERT ON {state} WHEN sync_capture() BEGIN
           {ins}({tbl}, {key_new}, 'insert', {all}, sync_hlc());
         END",
        name = q(&trigger_name(&t.name, "ins")),
    ))?;
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER UPDATE ON {state}
         WHEN sync_capture() AND {pk_same} AND ({any_changed}) BEGIN
           {ins}({tbl}, {key_new}, 'update', {mask}, sync_hlc());
         END",
        name = q(&trigger_name(&t.name, "upd")),
    ))?;
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER UPDATE ON {state}
         WHEN sync_capture() AND NOT ({pk_same}) BEGIN
           {ins}({tbl}, {key_old}, 'delete', 0, sync_hlc());
           {ins}({tbl}, {key_new}, 'insert', {all}, sync_hlc());
         END",
        name = q(&trigger_name(&t.name, "pk")),
    ))?;
    db.exec(&format!(
        "CREATE TRIGGER {name} AFTER DELETE ON {state} WHEN sync_capture() BEGIN
           {ins}({tbl}, {key_old}, 'delete', 0, sync_hlc());
         END",
        name = q(&trigger_name(&t.name, "del")),
    ))?;
    if info.confirmed() {
        let view = q(&t.name);
        let cols = info.col_list();
        db.exec(&format!(
            "CREATE VIEW {view} AS SELECT {cols} FROM {synced}",
            synced = q(&info.synced)
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
        let where_old = t
            .pk
            .iter()
            .map(|p| format!("{0} = OLD.{0}", q(p)))
            .collect::<Vec<_>>()
            .join(" AND ");
        db.exec(&format!(
            "CREATE TRIGGER {name} INSTEAD OF UPDATE ON {view} BEGIN
               UPDATE {state} SET {sets} WHERE {where_old};
             END",
            name = q(&trigger_name(&t.name, "vupd")),
        ))?;
        db.exec(&format!(
            "CREATE TRIGGER {name} INSTEAD OF DELETE ON {view} BEGIN
               DELETE FROM {state} WHERE {where_old};
             END",
            name = q(&trigger_name(&t.name, "vdel")),
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

/// Removes a table that left the synced schema, with its queued changes.
fn drop_table(db: Db, def: &TableDef) -> Result<()> {
    let info = TableInfo::new(def);
    drop_triggers_and_view(db, &def.name, def.mode)?;
    db.exec(&format!("DROP TABLE IF EXISTS {}", q(&info.state)))?;
    db.exec(&format!("DROP TABLE IF EXISTS {}", q(&info.synced)))?;
    let mut st = db.prepare(&format!(
        "DELETE FROM {} WHERE tbl = ?1 AND op <> 'mark'",
        q(CHANGES)
    ))?;
    st.bind_text(1, &def.name)?;
    st.run()?;
    let mut st = db.prepare(&format!("DELETE FROM {} WHERE tbl = ?1", q(BASE)))?;
    st.bind_text(1, &def.name)?;
    st.run()
}

/// Migrates the objects from `old` to `new` in place, keeping pending
/// changes (their column masks are remapped by column name).
pub fn migrate(db: Db, old: &Schema, new: &Schema) -> Result<()> {
    for ot in &old.tables {
        if new.table(&ot.name).is_none() {
            drop_table(db, ot)?;
        }
    }
    for nt in &new.tables {
        match old.table(&nt.name) {
            None => create_table(db, nt)?,
            Some(ot) => migrate_table(db, ot, nt)?,
        }
    }
    Ok(())
}

fn migrate_table(db: Db, ot: &TableDef, nt: &TableDef) -> Result<()> {
    if ot.pk != nt.pk {
        return Err(Error::msg(format!(
            "the primary key of table {:?} changed from {:?} to {:?}; sqlite_sync cannot \
             migrate a primary key change in place (drop the table from the synced schema \
             and add it back under a new name)",
            nt.name, ot.pk, nt.pk
        )));
    }
    if ot == nt {
        return Ok(());
    }
    drop_triggers_and_view(db, &ot.name, ot.mode)?;
    let old_state = state_table_name(&ot.name, ot.mode);
    let new_state = state_table_name(&nt.name, nt.mode);
    if old_state != new_state {
        if object_exists(db, &new_state)? {
            return Err(Error::msg(format!(
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
                db.exec(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    q(t),
                    q(&c.name),
                    c.ty.sqlite_type()
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
        return Err(Error::msg(
            "dropping a synced column needs SQLite 3.35 or newer (ALTER TABLE DROP COLUMN)",
        ));
    }
    for c in &dropped {
        for t in [&new_state, &synced] {
            db.exec(&format!("ALTER TABLE {} DROP COLUMN {}", q(t), q(c)))
                .map_err(|e| {
                    Error::msg(format!(
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
    create_triggers(db, &TableInfo::new(nt))
}

fn remap(db: Db, ot: &TableDef, nt: &TableDef) -> Result<()> {
    let map: Vec<Option<usize>> = ot
        .columns
        .iter()
        .map(|c| nt.column_index(&c.name))
        .collect();
    let new_all = TableInfo::new(nt).all_mask;
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
    // Pending change masks. An insert covers all columns, new ones included.
    let mut st = db.prepare(&format!(
        "SELECT seq, mask, op FROM {} WHERE tbl = ?1 AND op <> 'mark'",
        q(CHANGES)
    ))?;
    st.bind_text(1, &nt.name)?;
    let mut updates: Vec<(i64, i64)> = Vec::new();
    while st.step()? {
        let (seq, mask) = (st.col_i64(0), st.col_i64(1));
        let op = st.col_text(2).unwrap_or_default();
        let nm = if op == "insert" {
            new_all
        } else {
            remap_mask(mask)
        };
        if nm != mask {
            updates.push((seq, nm));
        }
    }
    drop(st);
    let mut up = db.prepare(&format!("UPDATE {} SET mask = ?1 WHERE seq = ?2", q(CHANGES)))?;
    for (seq, m) in updates {
        up.run_with(&[Value::Int(m), Value::Int(seq)])?;
    }
    // Version arrays of server rows, addressed by primary key.
    let synced = q(&format!("{}_synced", nt.name));
    let pk_cols = nt.pk.iter().map(|p| q(p)).collect::<Vec<_>>().join(", ");
    let mut st = db.prepare(&format!("SELECT \"_ver\", {pk_cols} FROM {synced}"))?;
    let npk = nt.pk.len();
    let mut rows: Vec<(String, Vec<Value>)> = Vec::new();
    while st.step()? {
        let ver = st.col_text(0).unwrap_or_default();
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
        let old = ver_from_text(&ver, ot.columns.len());
        let new: Vec<Hlc> = nt
            .columns
            .iter()
            .map(|c| ot.column_index(&c.name).map(|i| old[i]).unwrap_or(Hlc::ZERO))
            .collect();
        let mut vals = vec![Value::Text(ver_to_text(&new))];
        vals.extend(key);
        up.run_with(&vals)?;
    }
    Ok(())
}
