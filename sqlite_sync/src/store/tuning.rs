//! The connection's memory map for the duration of a big apply.
//!
//! A page of many changes onto a big table reads pages all over the file;
//! through SQLite's default page cache each read is a `pread` system call
//! and a copy. For such a page `sync_apply` maps the main database file
//! (`PRAGMA main.mmap_size`), so reads come straight from the OS cache,
//! and puts the app's setting back when the call ends. The map holds no
//! memory of its own: its pages are the OS cache's, shared and
//! reclaimable. It is best-effort: where SQLite cannot map (a build
//! without mmap, an encrypting VFS, an in-memory database) or the setting
//! cannot be read, nothing changes and the apply runs as before. An app
//! that set a larger map keeps it; one that wants no map during applies
//! (a file on storage that may fail, where a mapped read error is a
//! SIGBUS rather than an error code) sets `apply_mmap` to 0 in
//! `_sync_meta`.

use crate::ffi::{Db, Value};
use crate::store::state::meta_get;

/// Changes in a page from which `sync_apply` maps the file.
pub const BIG_APPLY: usize = 1000;

/// Bytes mapped for a big apply unless `_sync_meta.apply_mmap` says
/// otherwise (SQLite caps it at its compile-time maximum, 2 GB on Linux
/// by default).
pub const BIG_APPLY_MMAP: i64 = 1 << 30;

/// The app's memory-map setting of `main`, put back on drop.
pub struct Mapped {
    db: Db,
    app: i64,
}

/// Maps the main file for an apply of `changes` changes when it is big
/// and the app's map is smaller; `None` when nothing was changed (nothing
/// to put back). Never fails: the map only makes the apply faster.
pub fn map_for_apply(db: Db, changes: usize) -> Option<Mapped> {
    if changes < BIG_APPLY {
        return None;
    }
    let want = match meta_get(db, "apply_mmap").ok().flatten() {
        Some(Value::Int(n)) => n.max(0),
        _ => BIG_APPLY_MMAP,
    };
    let app = mmap_size(db)?;
    if want == 0 || app >= want {
        return None;
    }
    // The guard exists before the change, so a failed set is undone too.
    let guard = Mapped { db, app };
    let _ = db.exec(&format!("PRAGMA main.mmap_size = {want}"));
    Some(guard)
}

/// The main database's current `mmap_size`, if SQLite reports one.
fn mmap_size(db: Db) -> Option<i64> {
    let mut st = db.prepare("PRAGMA main.mmap_size").ok()?;
    match st.step() {
        Ok(true) => Some(st.col_i64(0)),
        _ => None,
    }
}

impl Drop for Mapped {
    /// Puts the app's setting back (a failure leaves the larger map, which
    /// changes no data).
    fn drop(&mut self) {
        let _ = self
            .db
            .exec(&format!("PRAGMA main.mmap_size = {}", self.app));
    }
}
