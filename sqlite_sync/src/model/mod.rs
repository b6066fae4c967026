//! The model: what the device knows of the synced schema and its values,
//! without touching the database (names, tables, keys, values, the
//! documents read from the wire). Everything above builds on it.

pub mod key;
pub mod names;
pub mod table;
pub mod temporal;
pub mod validate;
pub mod values;
pub mod wire;
