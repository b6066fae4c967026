//! The connection's memory map for the duration of a big apply.
//!
//! A page of many changes onto a big table reads pages all over the file;
//! through SQLite's default page cache each read is a `pread` system call
//! and a copy. For such a page `sync_apply` maps the file (`PRAGMA
//! mmap_size`), so reads come straight from the OS cache, and puts the
//! app's setting back when the call ends (after its commit). The map holds
//! no memory of its own: its pages are the OS cache's, shared and
//! reclaimable. Nothing changes where the app set a larger map, or where
//! SQLite cannot map (a build without mmap, an encrypting VFS).

use crate::error::Result;
use crate::ffi::Db;

/// Changes in a page from which `sync_apply` maps the file.
pub const BIG_APPLY: usize = 1000;

/// Bytes mapped for a big apply (SQLite caps it at its compile-time
/// maximum, 2 GB on Linux by default).
const BIG_APPLY_MMAP: i64 = 1 << 30;

/// The app's memory-map setting, put back on drop.
pub struct Mapped {
    db: Db,
    app: i64,
}

/// Maps the file for an apply of `changes` changes when it is big and the
/// app's map is smaller; `None` otherwise (nothing to put back).
pub fn map_for_apply(db: Db, changes: usize) -> Result<Option<Mapped>> {
    if changes < BIG_APPLY {
        return Ok(None);
    }
    let app = mmap_size(db)?;
    if app >= BIG_APPLY_MMAP {
        return Ok(None);
    }
    db.exec(&format!("PRAGMA mmap_size = {BIG_APPLY_MMAP}"))?;
    Ok(Some(Mapped { db, app }))
}

/// The connection's current `mmap_size`.
fn mmap_size(db: Db) -> Result<i64> {
    let mut st = db.prepare("PRAGMA mmap_size")?;
    let v = if st.step()? { st.col_i64(0) } else { 0 };
    Ok(v)
}

impl Drop for Mapped {
    /// Puts the app's setting back (a failure leaves the larger map, which
    /// changes no data).
    fn drop(&mut self) {
        let _ = self.db.exec(&format!("PRAGMA mmap_size = {}", self.app));
    }
}
