//! Reading and coalescing the `_changes` queue.
//!
//! The triggers append one row per local write: `(seq, tbl, pk, op, mask,
//! hlc)`, with `batch` NULL until the row is put in a push batch, then the
//! wire seq of the change that carries it. A row with op `mark` only keeps
//! the highest sequence number alive after the queue was emptied, so `seq`
//! never goes backwards (the server applies a change once per seq).
//!
//! `mask` holds the columns a write set: the changed columns of an update,
//! and for an insert every synced column the table had when the row was
//! inserted (a column a migration adds later is not the device's write).
//!
//! A backlog is indexed by row: when a sync call finds more than
//! [`ROW_INDEX_MIN`] writes queued it creates `_sync_changes_row` on
//! `(tbl, pk)` (whose entries SQLite orders by seq within a row), and the
//! index is dropped again once the queue is empty. Ordinary writes (a
//! short queue) never pay for maintaining it: one sort of a 50,000-write
//! queue costs less than indexing each of those writes as it is made. With
//! the index, building a batch reads the queue in seq order only until it
//! has `max` rows and fetches the other writes of those rows through the
//! index, and acknowledgements and pulls look rows up the same way; without
//! it (a short queue) they read the queue once per call. Only `sync_status`
//! and a resync read a whole backlog.

use std::collections::HashMap;

use crate::error::Result;
use crate::ffi::{Db, Value};
use sync_core::schema::ColumnType;

use crate::model::key::{Key, KeyPart};
use crate::model::names::{q, CHANGES};
use crate::model::table::TableInfo;
use crate::store::state::Loaded;

/// Kind of a queued write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        match s {
            "insert" => Some(Op::Insert),
            "update" => Some(Op::Update),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// One queued write.
#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub seq: i64,
    pub op: Op,
    pub mask: i64,
    pub hlc: i64,
    pub batch: Option<i64>,
}

impl ChangeRow {
    /// Columns this write set: the changed columns of an update, the
    /// columns the table had when the row was inserted for an insert, none
    /// for a delete.
    pub fn effective_mask(&self, t: &TableInfo) -> i64 {
        match self.op {
            Op::Insert => (self.mask & t.all_mask) | t.pk_mask,
            Op::Update => self.mask & t.all_mask,
            Op::Delete => 0,
        }
    }
}

/// All queued writes of one row, in sequence order.
#[derive(Debug, Clone)]
pub struct Group {
    pub table: usize,
    pub key: Key,
    pub rows: Vec<ChangeRow>,
}

/// What the unsent writes of a row amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Nothing to send (insert then delete of a row the server never saw,
    /// or updates that changed nothing).
    Nothing,
    Insert,
    /// An update of these (non-key) columns.
    Update(i64),
    Delete,
}

impl Group {
    pub fn unsent(&self) -> impl Iterator<Item = &ChangeRow> {
        self.rows.iter().filter(|r| r.batch.is_none())
    }

    pub fn in_flight(&self) -> bool {
        self.rows.iter().any(|r| r.batch.is_some())
    }

    /// Columns the unsent writes set (key columns included for an insert).
    pub fn unsent_mask(&self, t: &TableInfo) -> i64 {
        self.unsent().fold(0, |m, r| m | r.effective_mask(t))
    }

    /// Coalesces the unsent writes.
    pub fn net(&self, t: &TableInfo) -> Net {
        let unsent: Vec<&ChangeRow> = self.unsent().collect();
        let (Some(first), Some(last)) = (unsent.first(), unsent.last()) else {
            return Net::Nothing;
        };
        if last.op == Op::Delete {
            return if first.op == Op::Insert {
                Net::Nothing
            } else {
                Net::Delete
            };
        }
        if first.op == Op::Insert {
            return Net::Insert;
        }
        // Updates, or a delete followed by an insert of the same key: the
        // columns written (an insert wrote every column the table had).
        let non_pk = t.all_mask & !t.pk_mask;
        let mask = unsent.iter().fold(0, |m, r| m | r.effective_mask(t)) & non_pk;
        if mask == 0 {
            Net::Nothing
        } else {
            Net::Update(mask)
        }
    }

    /// Whether the row has changes the server has not confirmed.
    pub fn is_pending(&self, t: &TableInfo) -> bool {
        self.in_flight() || self.net(t) != Net::Nothing
    }

    /// For a row with unconfirmed writes: the columns whose local value
    /// must survive a rebase onto new server state, and whether the row is
    /// deleted locally. `None` when the queued writes amount to nothing.
    pub fn pending_overlay(&self, t: &TableInfo) -> Option<(i64, bool)> {
        if self.is_pending(t) {
            Some(self.overlay(t))
        } else {
            None
        }
    }

    /// Columns whose local value must survive a rebase onto new server
    /// state, and whether the row is currently deleted locally.
    pub fn overlay(&self, t: &TableInfo) -> (i64, bool) {
        let mask = self.rows.iter().fold(0, |m, r| m | r.effective_mask(t));
        let deleted = self
            .rows
            .last()
            .map(|r| r.op == Op::Delete)
            .unwrap_or(false);
        (mask, deleted)
    }
}

/// Queued writes grouped by row, groups in order of their first write.
pub struct Groups {
    pub groups: Vec<Group>,
    pub index: HashMap<(usize, Key), usize>,
    /// Seqs of rows whose table is no longer synced.
    pub orphans: Vec<i64>,
}

impl Groups {
    pub fn get(&self, table: usize, key: &Key) -> Option<&Group> {
        self.index
            .get(&(table, key.clone()))
            .map(|&i| &self.groups[i])
    }
}

fn read_row(st: &crate::ffi::Stmt, first: usize) -> Option<ChangeRow> {
    let op = st.col_text(first + 1).as_deref().and_then(Op::parse)?;
    Some(ChangeRow {
        seq: st.col_i64(first),
        op,
        mask: st.col_i64(first + 2),
        hlc: st.col_i64(first + 3),
        batch: if st.col_type_is_null(first + 4) {
            None
        } else {
            Some(st.col_i64(first + 4))
        },
    })
}

/// Reads and groups the whole queue, in flight or not (`sync_status`, a
/// resync).
pub fn load(db: Db, loaded: &Loaded) -> Result<Groups> {
    let mut st = db.prepare(&format!(
        "SELECT tbl, pk, seq, op, mask, hlc, batch FROM {} WHERE op <> 'mark' ORDER BY seq",
        q(CHANGES)
    ))?;
    let mut out = Groups {
        groups: Vec::new(),
        index: HashMap::new(),
        orphans: Vec::new(),
    };
    let mut table_cache: HashMap<String, Option<usize>> = HashMap::new();
    while st.step()? {
        let tbl = st.col_text(0).unwrap_or_default();
        let ti = *table_cache
            .entry(tbl.clone())
            .or_insert_with(|| loaded.table_idx(&tbl));
        let row = read_row(&st, 2);
        let (Some(ti), Some(row)) = (ti, row) else {
            out.orphans.push(st.col_i64(2));
            continue;
        };
        let key = loaded.tables[ti].key_from_stored(&st.col(1))?;
        match out.index.get(&(ti, key.clone())) {
            Some(&gi) => out.groups[gi].rows.push(row),
            None => {
                out.index.insert((ti, key.clone()), out.groups.len());
                out.groups.push(Group {
                    table: ti,
                    key,
                    rows: vec![row],
                });
            }
        }
    }
    Ok(out)
}

/// The queue's index by row, present while a backlog is synced.
pub const ROW_INDEX: &str = "_sync_changes_row";

/// Queue length (writes) above which a sync call indexes the queue by row.
pub const ROW_INDEX_MIN: i64 = 5000;

/// Whether the queue is indexed by row.
pub fn has_row_index(db: Db) -> Result<bool> {
    crate::store::state::object_exists(db, ROW_INDEX)
}

/// Indexes the queue by row when it holds more than [`ROW_INDEX_MIN`]
/// writes (one sort of the queue); returns whether the index exists.
pub fn index_backlog(db: Db) -> Result<bool> {
    if has_row_index(db)? {
        return Ok(true);
    }
    let mut st = db.prepare(&format!("SELECT count(*) FROM {}", q(CHANGES)))?;
    let n = if st.step()? { st.col_i64(0) } else { 0 };
    drop(st);
    if n <= ROW_INDEX_MIN {
        return Ok(false);
    }
    db.exec(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {}(tbl, pk)",
        q(ROW_INDEX),
        q(CHANGES)
    ))?;
    Ok(true)
}

/// Drops the row index once nothing is queued, so ordinary writes do not
/// maintain it.
pub fn unindex_if_empty(db: Db) -> Result<()> {
    if has_row_index(db)? && !any_queued(db)? {
        db.exec(&format!("DROP INDEX IF EXISTS {}", q(ROW_INDEX)))?;
    }
    Ok(())
}

/// Looks up the queued writes of single rows, with statements prepared
/// once per call: through the row index when the queue has it, else from
/// one read of the (short) queue.
pub struct RowLookup<'a> {
    db: Db,
    loaded: &'a Loaded,
    indexed: bool,
    /// By stored key value.
    stored: Option<crate::ffi::Stmt>,
    /// Per table with a composite key: by the expression the triggers
    /// store (`json_array(...)` of the key values).
    composite: HashMap<usize, crate::ffi::Stmt>,
    /// The whole queue, read once, when it is not indexed.
    all: Option<Groups>,
}

const ROW_COLS: &str = "seq, op, mask, hlc, batch";

impl<'a> RowLookup<'a> {
    pub fn new(db: Db, loaded: &'a Loaded) -> Result<RowLookup<'a>> {
        Ok(RowLookup {
            db,
            loaded,
            indexed: has_row_index(db)?,
            stored: None,
            composite: HashMap::new(),
            all: None,
        })
    }

    fn in_queue(&mut self, table: usize, key: &Key) -> Result<Option<Group>> {
        if self.all.is_none() {
            self.all = Some(load(self.db, self.loaded)?);
        }
        Ok(self.all.as_ref().and_then(|g| g.get(table, key)).cloned())
    }

    fn collect(st: &mut crate::ffi::Stmt, table: usize, key: Key) -> Result<Option<Group>> {
        let mut rows = Vec::new();
        let r: Result<()> = (|| {
            while st.step()? {
                if let Some(row) = read_row(st, 0) {
                    rows.push(row);
                }
            }
            Ok(())
        })();
        st.reset();
        r?;
        Ok(if rows.is_empty() {
            None
        } else {
            Some(Group { table, key, rows })
        })
    }

    /// The writes of a row given its key as `_changes.pk` stores it.
    pub fn by_stored(&mut self, table: usize, stored: &Value) -> Result<Option<Group>> {
        let t = &self.loaded.tables[table];
        let key = t.key_from_stored(stored)?;
        if !self.indexed {
            return self.in_queue(table, &key);
        }
        if self.stored.is_none() {
            self.stored = Some(self.db.prepare(&format!(
                "SELECT {ROW_COLS} FROM {} WHERE tbl = ?1 AND pk IS ?2 AND op <> 'mark' \
                 ORDER BY seq",
                q(CHANGES)
            ))?);
        }
        let Some(st) = self.stored.as_mut() else {
            return Ok(None);
        };
        st.bind_text(1, t.name())?;
        st.bind(2, stored)?;
        Self::collect(st, table, key)
    }

    /// The writes of a row given its key.
    pub fn by_key(&mut self, table: usize, key: &Key) -> Result<Option<Group>> {
        let t = &self.loaded.tables[table];
        if !self.indexed {
            return self.in_queue(table, key);
        }
        if t.single_pk() {
            let v = key.0.first().map(KeyPart::to_value).unwrap_or(Value::Null);
            return self.by_stored(table, &v);
        }
        let st = match self.composite.entry(table) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let parts: Vec<String> = t
                    .pk_idx
                    .iter()
                    .enumerate()
                    .map(|(j, &ci)| {
                        if t.col_type(ci) == ColumnType::Blob {
                            format!("hex(?{})", j + 2)
                        } else {
                            format!("?{}", j + 2)
                        }
                    })
                    .collect();
                v.insert(self.db.prepare(&format!(
                    "SELECT {ROW_COLS} FROM {} WHERE tbl = ?1 AND pk = json_array({}) \
                     AND op <> 'mark' ORDER BY seq",
                    q(CHANGES),
                    parts.join(", ")
                ))?)
            }
        };
        st.bind_text(1, t.name())?;
        for (j, p) in key.0.iter().enumerate() {
            st.bind(j + 2, &p.to_value())?;
        }
        Self::collect(st, table, key.clone())
    }
}

/// The rows a batch of at most `max` changes carries: the queue is read in
/// seq order until `max` rows with writes that amount to something were
/// found, and each row's other writes are fetched through the index.
pub struct Selection {
    /// Rows to send, in order of their first unsent write.
    pub groups: Vec<Group>,
    /// Rows whose writes amount to nothing: to purge.
    pub nothing: Vec<Group>,
    /// Seqs of writes to tables that are no longer synced.
    pub orphans: Vec<i64>,
}

pub fn select_unsent(db: Db, loaded: &Loaded, max: usize) -> Result<Selection> {
    let mut out = Selection {
        groups: Vec::new(),
        nothing: Vec::new(),
        orphans: Vec::new(),
    };
    let take = |mut g: Group, out: &mut Selection| {
        g.rows.retain(|r| r.batch.is_none());
        if g.rows.is_empty() {
            return;
        }
        if g.net(&loaded.tables[g.table]) == Net::Nothing {
            out.nothing.push(g);
        } else {
            out.groups.push(g);
        }
    };
    if !index_backlog(db)? {
        // A short queue: read it once.
        let all = load(db, loaded)?;
        out.orphans = all.orphans;
        for g in all.groups {
            if out.groups.len() >= max {
                break;
            }
            take(g, &mut out);
        }
        return Ok(out);
    }
    let mut scan = db.prepare(&format!(
        "SELECT seq, tbl, pk FROM {} WHERE batch IS NULL AND op <> 'mark' ORDER BY seq",
        q(CHANGES)
    ))?;
    let mut lookup = RowLookup::new(db, loaded)?;
    let mut seen: std::collections::HashSet<(usize, Key)> = std::collections::HashSet::new();
    let mut table_cache: HashMap<String, Option<usize>> = HashMap::new();
    while scan.step()? {
        let tbl = scan.col_text(1).unwrap_or_default();
        let ti = *table_cache
            .entry(tbl.clone())
            .or_insert_with(|| loaded.table_idx(&tbl));
        let Some(ti) = ti else {
            out.orphans.push(scan.col_i64(0));
            continue;
        };
        let stored = scan.col(2);
        let key = loaded.tables[ti].key_from_stored(&stored)?;
        if seen.contains(&(ti, key.clone())) {
            continue;
        }
        if out.groups.len() >= max {
            break;
        }
        seen.insert((ti, key));
        if let Some(g) = lookup.by_stored(ti, &stored)? {
            take(g, &mut out);
        }
    }
    Ok(out)
}

/// Whether anything is queued (marks aside).
pub fn any_queued(db: Db) -> Result<bool> {
    let mut st = db.prepare(&format!(
        "SELECT 1 FROM {} WHERE op <> 'mark' LIMIT 1",
        q(CHANGES)
    ))?;
    st.step()
}

/// Drops the queued writes of rows whose writes amount to nothing (and of
/// tables no longer synced): such a row shows the server's state again, and
/// the bases recorded for it go. The caller must have capture turned off.
pub fn purge(db: Db, loaded: &Loaded, groups: &[&Group], orphans: &[i64]) -> Result<()> {
    let mut all: Vec<i64> = orphans.to_vec();
    let mut ops: HashMap<usize, crate::store::rows::TableOps> = HashMap::new();
    for g in groups {
        all.extend(g.rows.iter().map(|r| r.seq));
        let t = &loaded.tables[g.table];
        let o = ops
            .entry(g.table)
            .or_insert_with(|| crate::store::rows::TableOps::new(db, t));
        o.state_from_synced(&g.key)?;
        o.stash_clear(&g.key)?;
    }
    drop(ops);
    if all.is_empty() {
        return Ok(());
    }
    let high_water = max_seq(db)?;
    delete_seqs(db, &all)?;
    keep_high_water(db, high_water)
}

/// The highest seq in the queue (0 when empty).
pub fn max_seq(db: Db) -> Result<i64> {
    let mut st = db.prepare(&format!("SELECT max(seq) FROM {}", q(CHANGES)))?;
    Ok(if st.step()? { st.col_i64(0) } else { 0 })
}

/// Deletes queued writes by seq.
pub fn delete_seqs(db: Db, seqs: &[i64]) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut st = db.prepare(&format!("DELETE FROM {} WHERE seq = ?1", q(CHANGES)))?;
    for s in seqs {
        st.run_with(&[Value::Int(*s)])?;
    }
    Ok(())
}

/// After deleting from the queue: makes sure a row at `high_water` (the
/// highest seq before the deletes) still exists, so SQLite never reuses a
/// seq the server may already have seen. Older marks are removed.
pub fn keep_high_water(db: Db, high_water: i64) -> Result<()> {
    if high_water <= 0 {
        return Ok(());
    }
    let changes = q(CHANGES);
    if max_seq(db)? < high_water {
        let mut st = db.prepare(&format!(
            "INSERT INTO {changes}(seq, tbl, pk, op, mask, hlc) VALUES (?1, '', NULL, 'mark', 0, 0)"
        ))?;
        st.run_with(&[Value::Int(high_water)])?;
    }
    // Through the partial index of marks.
    let mut st = db.prepare(&format!(
        "DELETE FROM {changes} WHERE op = 'mark' AND seq < ?1"
    ))?;
    st.run_with(&[Value::Int(high_water)])
}
