//! The sync operations behind the SQL functions: `sync_init`, building
//! and acknowledging a push, applying a pull page, adopting the server's
//! rows, subscriptions to streams, and status.

pub mod adopt;
pub mod conflicts;
pub mod init;
pub mod progress;
pub mod pull;
pub mod push;
pub mod status;
pub mod streams;
