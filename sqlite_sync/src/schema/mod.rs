//! The device's layout: creating and migrating the objects of synced
//! tables (DDL), local-only columns, and the one upgrade path to a newer
//! server schema.

pub mod ddl;
pub mod local;
pub mod upgrade;
