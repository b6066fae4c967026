//! Reading and coalescing the `_changes` queue.
//!
//! The triggers append one row per local write: `(seq, tbl, pk, op, mask,
//! hlc)`, with `batch` NULL until the row is put in a push batch, then the
//! wire seq of the change that carries it. A row with op `mark` only keeps
//! the highest sequence number alive after the queue was emptied, so `seq`
//! never goes backwards (the server applies a change once per seq).

use std::collections::HashMap;

use crate::error::Result;
use crate::ffi::{Db, Value};
use crate::model::{q, Key, TableInfo, CHANGES};
use crate::state::Loaded;

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
    /// Columns this write set (all for an insert, none for a delete).
    pub fn effective_mask(&self, t: &TableInfo) -> i64 {
        match self.op {
            Op::Insert => t.all_mask,
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
        let non_pk = t.all_mask & !t.pk_mask;
        let mask = if unsent.iter().any(|r| r.op == Op::Insert) {
            non_pk
        } else {
            unsent.iter().fold(0, |m, r| m | r.mask) & non_pk
        };
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

/// Which queued writes to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Not yet put in a batch.
    Unsent,
    /// Unsent and in flight.
    All,
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

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Reads and groups the queue.
pub fn load(db: Db, loaded: &Loaded, filter: Filter) -> Result<Groups> {
    let cond = match filter {
        Filter::Unsent => "batch IS NULL AND op <> 'mark'",
        Filter::All => "op <> 'mark'",
    };
    let mut st = db.prepare(&format!(
        "SELECT seq, tbl, pk, op, mask, hlc, batch FROM {} WHERE {cond} ORDER BY seq",
        q(CHANGES)
    ))?;
    let mut out = Groups {
        groups: Vec::new(),
        index: HashMap::new(),
        orphans: Vec::new(),
    };
    let mut table_cache: HashMap<String, Option<usize>> = HashMap::new();
    while st.step()? {
        let seq = st.col_i64(0);
        let tbl = st.col_text(1).unwrap_or_default();
        let ti = *table_cache
            .entry(tbl.clone())
            .or_insert_with(|| loaded.table_idx(&tbl));
        let op = st.col_text(3).as_deref().and_then(Op::parse);
        let (Some(ti), Some(op)) = (ti, op) else {
            out.orphans.push(seq);
            continue;
        };
        let key = loaded.tables[ti].key_from_stored(&st.col(2))?;
        let row = ChangeRow {
            seq,
            op,
            mask: st.col_i64(4),
            hlc: st.col_i64(5),
            batch: if st.col_type_is_null(6) {
                None
            } else {
                Some(st.col_i64(6))
            },
        };
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

/// Drops the queued writes of rows whose writes amount to nothing (and of
/// tables no longer synced): such a row shows the server's state again, and
/// the bases recorded for it go. The caller must have capture turned off.
pub fn purge(db: Db, loaded: &Loaded, groups: &Groups, keys: &[usize]) -> Result<()> {
    let mut all: Vec<i64> = groups.orphans.clone();
    let mut ops: HashMap<usize, crate::ops::TableOps> = HashMap::new();
    for &gi in keys {
        let g = &groups.groups[gi];
        all.extend(g.rows.iter().map(|r| r.seq));
        let t = &loaded.tables[g.table];
        let o = ops
            .entry(g.table)
            .or_insert_with(|| crate::ops::TableOps::new(db, t));
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
    let mut st = db.prepare(&format!(
        "DELETE FROM {changes} WHERE op = 'mark' AND seq < ?1"
    ))?;
    st.run_with(&[Value::Int(high_water)])
}
