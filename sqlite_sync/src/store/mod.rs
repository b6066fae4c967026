//! The store: the device's own tables (connection state and `_sync_meta`,
//! the synced and local rows of each table, the `_changes` queue), read
//! and written through prepared statements; the memory map of a big apply.

pub mod changes;
pub mod rows;
pub mod state;
pub mod tuning;
