//! Row-level operations on one synced table, with statements prepared once
//! per SQL function call and reused for every row.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::{Bind, Db, Stmt, Value};
use crate::model::key::Key;
use crate::model::names::{q, show, BASE};
use crate::model::table::TableInfo;
use crate::model::values::{ver_from_blob, ver_to_blob};
use crate::model::wire::json_to_sql_strict;

/// A server row: values of all columns in schema order, and their versions.
pub struct SyncedRow {
    pub vals: Vec<Value>,
    pub ver: Vec<Hlc>,
    /// Whether the values came from the saved copy in `T_synced` (the row
    /// has pending local writes) rather than from the local row.
    pub full: bool,
}

/// Base recorded for a column of a row with pending writes, taken when the
/// server row changed under those writes.
#[derive(Debug, Clone)]
pub struct Stashed {
    pub ver: Hlc,
    pub val: Value,
}

/// The statements of one table that [`TableOps`] prepares once per SQL
/// function call; [`build_sql`] writes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sql {
    StateRow,
    SyncedRow,
    UpsertSynced,
    UpsertSyncedKey,
    ThinSynced,
    DeleteSynced,
    UpsertState,
    UpdateState,
    DeleteState,
    StashGet,
    StashPut,
    StashReplace,
    StashClear,
    StashDeleteCol,
}

pub struct TableOps<'a> {
    db: Db,
    pub t: &'a TableInfo,
    stmts: HashMap<Sql, Stmt>,
    partial: HashMap<i64, Stmt>,
    /// Whether [`TableOps::upsert_state`] tries an UPDATE of the existing
    /// row first; cleared by the first row it finds missing.
    update_first: bool,
}

impl<'a> TableOps<'a> {
    pub fn new(db: Db, t: &'a TableInfo) -> TableOps<'a> {
        TableOps {
            db,
            t,
            stmts: HashMap::new(),
            partial: HashMap::new(),
            update_first: t.def.columns.len() > t.def.pk.len(),
        }
    }

    fn stmt(&mut self, name: Sql) -> Result<&mut Stmt> {
        match self.stmts.entry(name) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(v) => {
                let sql = build_sql(self.t, name);
                Ok(v.insert(self.db.prepare(&sql)?))
            }
        }
    }

    fn bind_key(st: &mut Stmt, key: &Key, first: usize) -> Result<()> {
        for (i, p) in key.0.iter().enumerate() {
            st.bind(first + i, &p.to_value())?;
        }
        Ok(())
    }

    /// Current local values of a row (all columns), if it exists.
    pub fn state_row(&mut self, key: &Key) -> Result<Option<Vec<Value>>> {
        let n = self.t.ncols();
        let st = self.stmt(Sql::StateRow)?;
        Self::bind_key(st, key, 1)?;
        let r = if st.step()? {
            Some((0..n).map(|i| st.col(i)).collect())
        } else {
            None
        };
        st.reset();
        Ok(r)
    }

    /// The server row, if the client has it. For a clean row the values
    /// are the local row's.
    pub fn synced_row(&mut self, key: &Key) -> Result<Option<SyncedRow>> {
        let n = self.t.ncols();
        let st = self.stmt(Sql::SyncedRow)?;
        Self::bind_key(st, key, 1)?;
        let r = if st.step()? {
            let ver = match st.col(0) {
                Value::Blob(b) => ver_from_blob(&b, n),
                _ => vec![Hlc::ZERO; n],
            };
            let full = st.col_i64(1) != 0;
            let vals: Vec<Value> = (2..n + 2).map(|i| st.col(i)).collect();
            Some((ver, full, vals))
        } else {
            None
        };
        st.reset();
        let Some((ver, full, vals)) = r else {
            return Ok(None);
        };
        if full {
            return Ok(Some(SyncedRow { vals, ver, full }));
        }
        let vals = match self.state_row(key)? {
            Some(v) => v,
            None => vals,
        };
        Ok(Some(SyncedRow { vals, ver, full }))
    }

    /// Inserts or replaces a server row. With `full` the values are kept in
    /// `T_synced` (the row has pending local writes); without, only the key
    /// and versions are (the local row holds the values).
    pub fn upsert_synced<V: Bind>(&mut self, vals: &[V], ver: &[Hlc], full: bool) -> Result<()> {
        let ver = ver_to_blob(ver);
        if full {
            let n = vals.len();
            let st = self.stmt(Sql::UpsertSynced)?;
            for (i, v) in vals.iter().enumerate() {
                v.bind_to(st, i + 1)?;
            }
            st.bind_blob(n + 1, &ver)?;
            st.bind(n + 2, &Value::Int(1))?;
            st.run()
        } else {
            let pk_idx = self.t.pk_idx.clone();
            let st = self.stmt(Sql::UpsertSyncedKey)?;
            for (j, &i) in pk_idx.iter().enumerate() {
                vals[i].bind_to(st, j + 1)?;
            }
            st.bind_blob(pk_idx.len() + 1, &ver)?;
            st.run()
        }
    }

    /// Marks a server row clean again: its values are the local row's.
    pub fn thin_synced(&mut self, key: &Key) -> Result<()> {
        let st = self.stmt(Sql::ThinSynced)?;
        Self::bind_key(st, key, 1)?;
        st.run()
    }

    pub fn delete_synced(&mut self, key: &Key) -> Result<()> {
        let st = self.stmt(Sql::DeleteSynced)?;
        Self::bind_key(st, key, 1)?;
        st.run()
    }

    /// Writes all columns of a row to the state table (insert or update).
    /// Rows that exist are updated in place: an UPDATE finds the row by its
    /// key alone, where an upsert first looks for the rowid a new row
    /// would take and runs the BEFORE INSERT triggers. The first missing
    /// row (an initial sync) switches the call to the upsert.
    pub fn upsert_state<V: Bind>(&mut self, vals: &[V]) -> Result<()> {
        if self.update_first {
            let st = self.stmt(Sql::UpdateState)?;
            for (i, v) in vals.iter().enumerate() {
                v.bind_to(st, i + 1)?;
            }
            st.run()?;
            if self.db.changes() > 0 {
                return Ok(());
            }
            self.update_first = false;
        }
        let st = self.stmt(Sql::UpsertState)?;
        for (i, v) in vals.iter().enumerate() {
            v.bind_to(st, i + 1)?;
        }
        st.run()
    }

    pub fn delete_state(&mut self, key: &Key) -> Result<()> {
        let st = self.stmt(Sql::DeleteState)?;
        Self::bind_key(st, key, 1)?;
        st.run()
    }

    /// Makes the local row equal to the server row (or removes it when the
    /// client has no server row), and marks the server row clean.
    pub fn state_from_synced(&mut self, key: &Key) -> Result<()> {
        match self.synced_row(key)? {
            Some(r) => {
                if r.full {
                    self.upsert_state(&r.vals)?;
                    self.thin_synced(key)?;
                }
                Ok(())
            }
            None => self.delete_state(key),
        }
    }

    /// Sets the columns in `mask` of an existing local row to `vals`
    /// (a full row in schema order).
    pub fn update_state_cols<V: Bind>(&mut self, key: &Key, mask: i64, vals: &[V]) -> Result<()> {
        let t = self.t;
        let cols: Vec<usize> = (0..t.ncols())
            .filter(|&i| mask & (1i64 << i) != 0 && t.pk_mask & (1i64 << i) == 0)
            .collect();
        if cols.is_empty() {
            return Ok(());
        }
        let set_mask = cols.iter().fold(0i64, |m, &i| m | (1i64 << i));
        let st = match self.partial.entry(set_mask) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let sets = cols
                    .iter()
                    .enumerate()
                    .map(|(j, &i)| format!("{} = ?{}", q(t.col_name(i)), j + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE {} SET {sets} WHERE {}",
                    q(&t.state),
                    t.pk_where(cols.len() + 1)
                );
                v.insert(self.db.prepare(&sql)?)
            }
        };
        for (j, &i) in cols.iter().enumerate() {
            vals[i].bind_to(st, j + 1)?;
        }
        Self::bind_key(st, key, cols.len() + 1)?;
        st.run()
    }

    /// Stashed bases of a row, by column index.
    pub fn stash_get(&mut self, key: &Key) -> Result<HashMap<usize, Stashed>> {
        let canon = key.canonical();
        let name = self.t.name().to_string();
        let t = self.t;
        let st = self.stmt(Sql::StashGet)?;
        st.bind_text(1, &name)?;
        st.bind_text(2, &canon)?;
        let mut out = HashMap::new();
        while st.step()? {
            let col = st.col_text(0).unwrap_or_default();
            if let Some(i) = t.def.column_index(&col) {
                out.insert(
                    i,
                    Stashed {
                        ver: Hlc::from_i64(st.col_i64(1)),
                        val: st.col(2),
                    },
                );
            }
        }
        st.reset();
        Ok(out)
    }

    /// Records the base of a column unless one is already recorded.
    pub fn stash_put(&mut self, key: &Key, col: usize, ver: Hlc, val: &Value) -> Result<()> {
        self.stash(Sql::StashPut, key, col, ver, val)
    }

    /// Records the base of a column, replacing one already recorded.
    pub fn stash_replace(&mut self, key: &Key, col: usize, ver: Hlc, val: &Value) -> Result<()> {
        self.stash(Sql::StashReplace, key, col, ver, val)
    }

    /// Runs one of the stash statements for a column's base.
    fn stash(&mut self, stmt: Sql, key: &Key, col: usize, ver: Hlc, val: &Value) -> Result<()> {
        let canon = key.canonical();
        let name = self.t.name().to_string();
        let col_name = self.t.col_name(col).to_string();
        let st = self.stmt(stmt)?;
        st.run_with(&[
            Value::Text(name),
            Value::Text(canon),
            Value::Text(col_name),
            Value::Int(ver.as_i64()),
            val.clone(),
        ])
    }

    /// Forgets all stashed bases of a row.
    pub fn stash_clear(&mut self, key: &Key) -> Result<()> {
        let canon = key.canonical();
        let name = self.t.name().to_string();
        let st = self.stmt(Sql::StashClear)?;
        st.run_with(&[Value::Text(name), Value::Text(canon)])
    }

    /// Keeps only the stashed bases of the columns in `keep`.
    pub fn stash_retain(&mut self, key: &Key, keep: i64) -> Result<()> {
        let existing = self.stash_get(key)?;
        if existing.is_empty() {
            return Ok(());
        }
        if existing.keys().all(|&i| keep & (1i64 << i) != 0) {
            return Ok(());
        }
        let canon = key.canonical();
        let name = self.t.name().to_string();
        let drop: Vec<String> = existing
            .keys()
            .filter(|&&i| keep & (1i64 << i) == 0)
            .map(|&i| self.t.col_name(i).to_string())
            .collect();
        let st = self.stmt(Sql::StashDeleteCol)?;
        for c in drop {
            st.run_with(&[
                Value::Text(name.clone()),
                Value::Text(canon.clone()),
                Value::Text(c),
            ])?;
        }
        Ok(())
    }

    /// Records, for the columns in `cols`, the base the pending writes were
    /// made on: the server row as it is before it gets replaced.
    pub fn stash_before_server_change(&mut self, key: &Key, cols: i64) -> Result<()> {
        if cols == 0 {
            return Ok(());
        }
        let old = self.synced_row(key)?;
        for i in 0..self.t.ncols() {
            if cols & (1i64 << i) == 0 || self.t.pk_mask & (1i64 << i) != 0 {
                continue;
            }
            let (ver, val) = match &old {
                Some(r) => (r.ver[i], r.vals[i].clone()),
                None => (Hlc::ZERO, Value::Null),
            };
            let val = if self.t.needs_base_value(i) {
                val
            } else {
                Value::Null
            };
            self.stash_put(key, i, ver, &val)?;
        }
        Ok(())
    }
}

fn build_sql(t: &TableInfo, name: Sql) -> String {
    let cols = t.col_list();
    let n = t.ncols();
    let params = (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let pk_cols = t.def.pk.iter().map(|p| q(p)).collect::<Vec<_>>().join(", ");
    let non_pk: Vec<String> = t
        .def
        .columns
        .iter()
        .filter(|c| !t.def.is_pk(&c.name))
        .map(|c| format!("{0} = excluded.{0}", q(&c.name)))
        .collect();
    let on_conflict = if non_pk.is_empty() {
        format!("ON CONFLICT({pk_cols}) DO NOTHING")
    } else {
        format!("ON CONFLICT({pk_cols}) DO UPDATE SET {}", non_pk.join(", "))
    };
    let state = q(&t.state);
    let synced = q(&t.synced);
    let base = q(BASE);
    match name {
        Sql::StateRow => format!("SELECT {cols} FROM {state} WHERE {}", t.pk_where(1)),
        Sql::SyncedRow => format!(
            "SELECT \"_ver\", \"_full\", {cols} FROM {synced} WHERE {}",
            t.pk_where(1)
        ),
        Sql::UpsertSynced => format!(
            "INSERT OR REPLACE INTO {synced}({cols}, \"_ver\", \"_full\") \
             VALUES ({params}, ?{}, ?{})",
            n + 1,
            n + 2
        ),
        Sql::UpsertSyncedKey => {
            let np = t.def.pk.len();
            let params = (1..=np)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let nulls: Vec<String> = t
                .def
                .columns
                .iter()
                .filter(|c| !t.def.is_pk(&c.name))
                .map(|c| format!(", {} = NULL", q(&c.name)))
                .collect();
            format!(
                "INSERT INTO {synced}({pk_cols}, \"_ver\", \"_full\") VALUES ({params}, ?{}, 0) \
                 ON CONFLICT({pk_cols}) DO UPDATE SET \"_ver\" = excluded.\"_ver\", \"_full\" = 0{}",
                np + 1,
                nulls.concat()
            )
        }
        Sql::ThinSynced => {
            let nulls: Vec<String> = t
                .def
                .columns
                .iter()
                .filter(|c| !t.def.is_pk(&c.name))
                .map(|c| format!("{} = NULL", q(&c.name)))
                .chain(std::iter::once("\"_full\" = 0".to_string()))
                .collect();
            format!(
                "UPDATE {synced} SET {} WHERE {}",
                nulls.join(", "),
                t.pk_where(1)
            )
        }
        Sql::DeleteSynced => format!("DELETE FROM {synced} WHERE {}", t.pk_where(1)),
        Sql::UpsertState => format!("INSERT INTO {state}({cols}) VALUES ({params}) {on_conflict}"),
        Sql::UpdateState => {
            // Parameter i + 1 is schema column i, as in UpsertState.
            let sets: Vec<String> = t
                .def
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !t.def.is_pk(&c.name))
                .map(|(i, c)| format!("{} = ?{}", q(&c.name), i + 1))
                .collect();
            let keys: Vec<String> = t
                .pk_idx
                .iter()
                .map(|&i| format!("{} = ?{}", q(t.col_name(i)), i + 1))
                .collect();
            format!(
                "UPDATE {state} SET {} WHERE {}",
                sets.join(", "),
                keys.join(" AND ")
            )
        }
        Sql::DeleteState => format!("DELETE FROM {state} WHERE {}", t.pk_where(1)),
        Sql::StashGet => format!("SELECT col, ver, val FROM {base} WHERE tbl = ?1 AND key = ?2"),
        Sql::StashPut => format!(
            "INSERT OR IGNORE INTO {base}(tbl, key, col, ver, val) VALUES (?1, ?2, ?3, ?4, ?5)"
        ),
        Sql::StashReplace => format!(
            "INSERT OR REPLACE INTO {base}(tbl, key, col, ver, val) VALUES (?1, ?2, ?3, ?4, ?5)"
        ),
        Sql::StashClear => format!("DELETE FROM {base} WHERE tbl = ?1 AND key = ?2"),
        Sql::StashDeleteCol => {
            format!("DELETE FROM {base} WHERE tbl = ?1 AND key = ?2 AND col = ?3")
        }
    }
}

/// Converts a row the server sent (in a push result) to values of all
/// columns in schema order, strictly (see `page::raw_to_sql`). Key columns
/// missing from `row` are taken from `pk`; other missing columns are NULL.
/// A column the table does not have is an error.
pub fn row_values(
    t: &TableInfo,
    row: &Map<String, Json>,
    pk: &Map<String, Json>,
) -> Result<Vec<Value>> {
    for k in row.keys() {
        if t.def.column_index(k).is_none() {
            return Err(Error::input(format!(
                "table {:?} has no synced column {}",
                t.name(),
                show(k)
            )));
        }
    }
    let mut vals = Vec::with_capacity(t.ncols());
    for c in &t.def.columns {
        let v = match row.get(&c.name) {
            Some(v) => json_to_sql_strict(c.ty, v, t.name(), &c.name)?,
            None => match pk.get(&c.name) {
                Some(v) => json_to_sql_strict(c.ty, v, t.name(), &c.name)?,
                None => Value::Null,
            },
        };
        vals.push(v);
    }
    Ok(vals)
}

/// Checks a version array against the table's column count.
/// Checks that a row of a page of format 2 names the table's synced
/// columns in the schema's order: its version stamps follow that order,
/// and a row missing a column, or with another, is not the server's row.
pub fn check_block_row(t: &TableInfo, row: &sync_core::wire::page::Obj<'_>) -> Result<()> {
    let same = row.0.len() == t.def.columns.len()
        && row
            .0
            .iter()
            .zip(&t.def.columns)
            .all(|((k, _), c)| *k == c.name);
    if !same {
        return Err(Error::input(format!(
            "a block of table {:?} has the columns [{}], but its schema has [{}] (in this order)",
            t.name(),
            row.0
                .iter()
                .map(|(k, _)| k.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
            t.def
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

pub fn check_ver(t: &TableInfo, ver: &[Hlc]) -> Result<()> {
    if ver.len() != t.ncols() {
        return Err(Error::input(format!(
            "ver has {} entries but table {:?} has {} synced columns",
            ver.len(),
            t.name(),
            t.ncols()
        )));
    }
    Ok(())
}
