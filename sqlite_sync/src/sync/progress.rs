//! Push progress: how far the current push is, for "Syncing... (5/10
//! changes)". A push starts with the first batch sent after the queue was
//! last empty and lasts until it is empty again; `sync_status()` reports
//! the changes confirmed so far (every answered change: applied, merged,
//! in conflict or rejected), those in flight and those still queued.

use serde_json::{json, Value as Json};

use crate::error::Result;
use crate::ffi::{Db, Value};
use crate::store::changes;
use crate::store::state::{meta_get, meta_set};

fn int(db: Db, key: &str) -> Result<i64> {
    Ok(match meta_get(db, key)? {
        Some(Value::Int(n)) => n,
        _ => 0,
    })
}

/// A batch of `n` changes was sent (stored in flight).
pub fn batch_sent(db: Db, n: usize) -> Result<()> {
    if int(db, "push_done")? == 1 || meta_get(db, "push_confirmed")?.is_none() {
        meta_set(db, "push_confirmed", &Value::Int(0))?;
        meta_set(db, "push_done", &Value::Int(0))?;
    }
    meta_set(db, "push_in_flight", &Value::Int(n as i64))
}

/// The in-flight batch was answered, `settled` of its changes by a result.
pub fn batch_answered(db: Db, settled: usize) -> Result<()> {
    let done = int(db, "push_confirmed")? + settled as i64;
    meta_set(db, "push_confirmed", &Value::Int(done))?;
    meta_set(db, "push_in_flight", &Value::Int(0))?;
    if !changes::any_queued(db)? {
        meta_set(db, "push_done", &Value::Int(1))?;
    }
    Ok(())
}

/// `{"confirmed", "in_flight", "queued", "total"}` of the current push;
/// `queued` is the number of rows with writes not yet sent.
pub fn status(db: Db, queued: usize) -> Result<Json> {
    let in_flight = match meta_get(db, "inflight")? {
        Some(Value::Text(_)) => int(db, "push_in_flight")?,
        _ => 0,
    };
    let confirmed = int(db, "push_confirmed")?;
    let queued = queued as i64;
    Ok(json!({
        "confirmed": confirmed,
        "in_flight": in_flight,
        "queued": queued,
        "total": confirmed + in_flight + queued,
    }))
}
