//! The JSON wire format between `sqlite_sync` and `pg_sync`.
//!
//! Three documents travel: a [`PushBatch`] (client to server, the argument of
//! `sync_push`), a [`PushResult`] (its answer, the argument of `sync_ack`) and
//! a [`PullPage`] (what `sync_pull` returns and `sync_apply` takes). Each
//! carries `format`; a reader rejects a format it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::hlc::Hlc;
use crate::schema::Schema;
use crate::SyncError;

pub mod page;

pub use crate::{check_format, FORMAT};

/// Largest push batch accepted, in changes.
pub const MAX_BATCH_CHANGES: usize = 100_000;

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 200;

/// A JSON object of column name to value.
pub type Row = Map<String, Value>;

pub use crate::show::short_json;

/// Kind of a client change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A new row created on the client.
    Insert,
    /// Some columns of an existing row changed.
    Update,
    /// The row was deleted.
    Delete,
}

/// One client change: the coalesced pending writes to one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Per-client sequence number; a change is applied at most once per
    /// `(client_id, seq)`.
    pub seq: i64,
    /// Table name.
    pub table: String,
    /// Insert, update or delete.
    pub op: Op,
    /// Primary key: column name to value.
    pub pk: Row,
    /// New values of the changed columns (empty for a delete).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub cols: Row,
    /// Stamp of the last local edit of each changed column.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ver: BTreeMap<String, Hlc>,
    /// Server version of each changed column the edit was based on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub base: BTreeMap<String, Hlc>,
    /// Server value of a column the edit was based on, sent for strategies
    /// that merge against the base (text_merge, set_union, counter).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub base_values: Row,
    /// Stamp of the change as a whole (the delete stamp for a delete).
    pub hlc: Hlc,
    /// Server conflict records this change resolves: the device's user
    /// chose a value for them (`sync_resolve` on the device). Once the
    /// change is applied, the server closes those of them the caller may
    /// resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolves: Vec<i64>,
}

/// A client's batch of changes, the argument of `sync_push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBatch {
    /// Wire format version.
    pub format: u32,
    /// The client's id (a UUID).
    pub client_id: String,
    /// Changes in sequence order.
    pub changes: Vec<Change>,
}

/// Outcome of one pushed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Applied as sent.
    Applied,
    /// Applied after merging with concurrent server changes.
    Merged,
    /// Not applied; `reason` says why. The client rolls its overlay back.
    Rejected,
    /// Partly or not applied; a conflict record holds both values.
    Conflict,
}

/// The server's answer to one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeResult {
    /// The change's sequence number.
    pub seq: i64,
    /// Table of the change.
    pub table: String,
    /// Primary key of the change.
    pub pk: Row,
    /// What happened.
    pub status: Status,
    /// Why a change was rejected or conflicted, for a person to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The violated constraint's name, when a constraint rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// Ids of the conflict records written for this change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<i64>,
    /// Those records in full, in the order of `conflicts`: what a device
    /// shows in its conflict inbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<ConflictRecord>,
    /// The row as the server holds it afterwards (absent when deleted or
    /// not visible), with its column versions in schema order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Row>,
    /// Column versions of `row`, in the schema's column order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<Vec<Hlc>>,
    /// Columns of the change the server no longer has (dropped since the
    /// device wrote them): the server ignored them and applied the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

/// One conflict record the server wrote for a pushed change (a row of
/// `pg_sync.conflicts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The server's id of the record.
    pub id: i64,
    /// The column, the columns concerned joined by ", ", or none (the row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The strategy or rule that decided.
    pub strategy: String,
    /// What happened (for example `server_wins`, `manual`, `clamped`).
    pub outcome: String,
    /// Why, for a person.
    pub reason: String,
    /// The value the server kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_value: Option<Value>,
    /// The value the change carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_value: Option<Value>,
    /// The version (stamp) of the server's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ver: Option<Hlc>,
    /// The stamp of the change's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ver: Option<Hlc>,
    /// The client whose push last wrote the row before this change, as
    /// far as the server knows it (none when a direct write on the server
    /// did, or the record of that push was compacted away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner_client: Option<String>,
    /// The database role of that push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner_role: Option<String>,
}

/// The answer to a [`PushBatch`], the argument of `sync_ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResult {
    /// Wire format version.
    pub format: u32,
    /// The client the batch came from.
    pub client_id: String,
    /// One result per change, in batch order.
    pub results: Vec<ChangeResult>,
    /// Per table of the batch, the server's synced columns in the order of
    /// the results' `ver` arrays, so a device whose schema is older or newer
    /// than the server's can adopt `row` and `ver` by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub columns: std::collections::BTreeMap<String, Vec<String>>,
}

/// Kind of a pulled row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullOp {
    /// Insert or replace the row.
    Upsert,
    /// Remove the row (a tombstone, or the row left the client's view).
    Delete,
    /// The row left the subscriptions named in `subs` (it no longer
    /// matches their filters): the device drops it when no subscription of
    /// its holds it any more and it has no pending writes.
    Leave,
}

/// One row change in a pull page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// Table name.
    pub table: String,
    /// Upsert or delete.
    pub op: PullOp,
    /// Primary key.
    pub pk: Row,
    /// All synced columns, for an upsert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Row>,
    /// Column versions in the schema's column order, for an upsert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<Vec<Hlc>>,
    /// The subscriptions (cursor ids) an upsert or a leave is for; absent
    /// for tables synced whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subs: Option<Vec<u32>>,
}

/// Every key a subscription holds now (sent when a table its filter reads,
/// or the clock, may have moved rows in or out without writing them): the
/// device drops the rows of the subscription not listed, and asks for the
/// listed ones it lacks in its next pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Members {
    /// Subscription id.
    pub sub: u32,
    /// Its table.
    pub table: String,
    /// Primary keys of all its rows.
    pub keys: Vec<Row>,
}

/// How far a subscription's first download is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Subscription id.
    pub sub: u32,
    /// Rows sent so far.
    pub sent: u64,
    /// Rows it held when the download started (counted then; rows written
    /// since come with the incremental pulls that follow).
    pub total: u64,
    /// The download is complete.
    pub done: bool,
}

/// A page of server changes, returned by `sync_pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullPage {
    /// Wire format version.
    pub format: u32,
    /// Version of the schema the rows follow.
    pub schema_version: i64,
    /// The schema, included when the client's may be out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Opaque cursor to pass to the next `sync_pull`.
    pub cursor: String,
    /// True when more changes are ready now.
    pub has_more: bool,
    /// True when the client's cursor is older than the retention window: it
    /// must drop its server state and pull again from no cursor.
    #[serde(default)]
    pub resync_required: bool,
    /// True when the server (a hot standby) has not yet replayed up to the
    /// cursor: the page has no changes and the same cursor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub behind: bool,
    /// Subscriptions' full key lists (streams).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Members>,
    /// Progress of subscriptions' first downloads (streams).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<Progress>,
    /// The changes, in commit order per table.
    pub changes: Vec<RowChange>,
}

impl PushBatch {
    /// Parses and validates a batch: known format, a client id of at most
    /// [`MAX_CLIENT_ID_BYTES`], positive and
    /// strictly increasing sequence numbers, at most [`MAX_BATCH_CHANGES`] changes,
    /// non-empty primary keys.
    pub fn parse(json: &str) -> Result<PushBatch, SyncError> {
        let batch: PushBatch = serde_json::from_str(json)
            .map_err(|e| SyncError::MalformedJson(format!("push batch: {e}")))?;
        check_format(batch.format)?;
        if batch.client_id.trim().is_empty() {
            return Err(SyncError::Invalid("push batch: client_id is empty".into()));
        }
        if batch.client_id.len() > MAX_CLIENT_ID_BYTES {
            return Err(SyncError::Invalid(format!(
                "push batch: client_id is {} bytes, more than the limit of {MAX_CLIENT_ID_BYTES}",
                batch.client_id.len()
            )));
        }
        if batch.changes.len() > MAX_BATCH_CHANGES {
            return Err(SyncError::Invalid(format!(
                "push batch: {} changes is more than the limit of {MAX_BATCH_CHANGES}; send smaller batches",
                batch.changes.len()
            )));
        }
        let mut prev = 0;
        for c in &batch.changes {
            if c.seq <= 0 {
                return Err(SyncError::Invalid(format!(
                    "push batch: seq {} is not positive; sequence numbers start at 1",
                    c.seq
                )));
            }
            if c.seq <= prev {
                return Err(SyncError::Invalid(format!(
                    "push batch: seq {} does not increase (after {prev})",
                    c.seq
                )));
            }
            prev = c.seq;
            if c.pk.is_empty() {
                return Err(SyncError::Invalid(format!(
                    "push batch: change {} on table {:?} has an empty pk",
                    c.seq, c.table
                )));
            }
        }
        Ok(batch)
    }
}

impl PushResult {
    /// Parses and validates a push result.
    pub fn parse(json: &str) -> Result<PushResult, SyncError> {
        let r: PushResult = serde_json::from_str(json)
            .map_err(|e| SyncError::MalformedJson(format!("push result: {e}")))?;
        check_format(r.format)?;
        Ok(r)
    }
}

impl PullPage {
    /// Parses and validates a pull page of either format; a page of
    /// format 2 comes back with one change per row, as format 1 has them
    /// (its `format` stays 2).
    pub fn parse(json: &str) -> Result<PullPage, SyncError> {
        let p = page::read_page(json)?;
        let to_row = |o: &page::Obj<'_>| -> Row { o.to_map() };
        Ok(PullPage {
            format: p.format,
            schema_version: p.schema_version,
            schema: p.schema,
            cursor: p.cursor.0.into_owned(),
            has_more: p.has_more,
            resync_required: p.resync_required,
            behind: p.behind,
            members: p.members,
            progress: p.progress,
            changes: p
                .changes
                .iter()
                .map(|c| RowChange {
                    table: c.table.0.to_string(),
                    op: c.op,
                    pk: to_row(&c.pk),
                    row: c.row.as_ref().map(to_row),
                    ver: c.ver.as_ref().map(|v| v.0.clone()),
                    subs: c.subs.clone(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_validates() {
        let json = r#"{"format":1,"client_id":"c1","changes":[
            {"seq":1,"table":"tasks","op":"insert","pk":{"id":"t1"},
             "cols":{"id":"t1","title":"a"},"ver":{"title":"0000000000001001"},
             "hlc":"0000000000001001"}]}"#;
        let b = PushBatch::parse(json).unwrap();
        assert_eq!(b.changes[0].op, Op::Insert);
        let again = PushBatch::parse(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(again, b);
        assert!(matches!(
            PushBatch::parse("{nope"),
            Err(SyncError::MalformedJson(_))
        ));
        assert!(matches!(
            PushBatch::parse(r#"{"format":9,"client_id":"c","changes":[]}"#),
            Err(SyncError::UnsupportedFormat { found: 9, .. })
        ));
    }
}
