//! The opaque pull cursor.
//!
//! Per synced table it holds two positions, one in the stream of live rows
//! ordered by `(_sync_xid, primary key)` and one in the stream of tombstones
//! ordered by `(xid, pk)`. A position is either the start, "everything below
//! xid X" (after a stream was read up to the snapshot horizon X), or "after
//! (xid, key)" (inside a page sequence). Only changes of transactions below
//! the horizon are ever handed out, so a transaction that commits later
//! always has an xid at or above the stored position: nothing is skipped.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SyncError;

/// Result of decoding a cursor.
pub type Result<T> = std::result::Result<T, SyncError>;

/// A position in one stream: `null`, `[xid]` or `[xid, key]` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(untagged)]
pub enum Pos {
    /// Nothing read yet.
    #[default]
    Start,
    /// Everything below this xid has been read.
    Below([u64; 1]),
    /// Read up to and including this (xid, key).
    After(u64, Value),
}

/// Reads a position by its JSON shape directly (an untagged enum would
/// buffer each value and try every variant: most of an idle pull's time
/// with hundreds of tables).
impl<'de> Deserialize<'de> for Pos {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Pos, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = Pos;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("null, [xid] or [xid, key]")
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Pos, E> {
                Ok(Pos::Start)
            }
            fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Pos, E> {
                Ok(Pos::Start)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> std::result::Result<Pos, A::Error> {
                let x: u64 = s
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                let Some(key) = s.next_element::<Value>()? else {
                    return Ok(Pos::Below([x]));
                };
                if s.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(3, &self));
                }
                Ok(Pos::After(x, key))
            }
        }
        d.deserialize_any(Shape)
    }
}

/// Positions for one table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TablePos {
    /// Live rows.
    #[serde(default)]
    pub r: Pos,
    /// Tombstones.
    #[serde(default)]
    pub d: Pos,
    /// Signature of the table's columns when the client last pulled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<u64>,
    /// When sync was enabled on the table (the server's own clock): a
    /// table disabled and enabled again starts its streams over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Whether the table reached the device through streams (true) or
    /// whole (false): a change of that makes the device resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<bool>,
}

/// The decoded cursor.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Cursor format.
    pub v: u32,
    /// Schema version the client was sent.
    pub s: i64,
    /// Positions by table name.
    pub t: BTreeMap<String, TablePos>,
    /// Visibility epoch the client's state was built in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<i64>,
    /// The database history the positions belong to (cluster system
    /// identifier, timeline, database oid): xids are comparable only
    /// within one history, so a cursor from another one (a restore, a
    /// failover) must resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<String>,
    /// The device's subscriptions to streams, with their positions. The
    /// device adds and removes them (`sync_subscribe`); the server moves
    /// their positions. Everything in it is checked as untrusted input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub q: Vec<Sub>,
    /// The newest pull page format the device reads (absent: 1). The
    /// device sets it (`sync_cursor`); the server answers in it, or in an
    /// older format it knows, and keeps it in the cursors it hands out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<u32>,
}

/// One subscription to a stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sub {
    /// Id, unique in the device (page entries name it).
    pub i: u32,
    /// Stream name.
    pub s: String,
    /// Parameter values.
    #[serde(default)]
    pub p: serde_json::Map<String, Value>,
    /// Position in the table's stream of live rows (incremental pulls).
    #[serde(default)]
    pub r: Pos,
    /// The first download, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<Boot>,
    /// Horizon of the last full key list (`members`): tables the filter
    /// reads that were written at or after it send the list again.
    #[serde(default)]
    pub f: u64,
    /// When the last full key list was sent (Unix seconds): a filter that
    /// reads the clock sends it again after a while.
    #[serde(default)]
    pub ft: i64,
    /// Keys the device lacks (rows that entered through another table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub w: Vec<Value>,
    /// The device wants the full key list again (it could not ask for all
    /// the rows it lacked at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub m: bool,
    /// Identity of the stream's definition the positions belong to: a
    /// stream defined again with another filter starts over.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub d: u64,
    /// Set by the device while it holds none of the subscription's rows
    /// but those of the download under way (`sync_subscribe`, a resync):
    /// the download then ends without the full key list (changes from its
    /// start on come incrementally). The device clears it when a page does
    /// not continue that download, the server when the download ends or
    /// starts over. A device that sets it wrongly only keeps rows it
    /// already held.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub e: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}

/// A first download in progress: rows in key order, or, for a subset that
/// covers most of a large table's blocks, in row-id order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Boot {
    /// The last key sent, if any (key order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<Value>,
    /// Row-id order: the next row id to read, as block and offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<[u32; 2]>,
    /// Row-id order: the table's file node when the download started (a
    /// rewrite of the table moves every row, and starts the download over).
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub f: u32,
    /// Horizon when it started: changes from here on come incrementally.
    pub h: u64,
    /// Rows sent so far.
    pub n: u64,
    /// Rows counted when it started.
    pub t: u64,
}

const PREFIX: &str = "c1.";

impl Cursor {
    /// Decodes a cursor string.
    pub fn decode(s: &str) -> Result<Cursor> {
        let bad = |why: &str| {
            SyncError::BadCursor(format!(
                "{why}; pass a cursor returned by sync_pull, or NULL to start over"
            ))
        };
        let body = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("unknown cursor format"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("cursor is not valid base64"))?;
        let c: Cursor =
            serde_json::from_slice(&bytes).map_err(|_| bad("cursor content is damaged"))?;
        if c.v != 1 {
            return Err(bad("unsupported cursor version"));
        }
        Ok(c)
    }

    /// `text` (a cursor) asking for pull pages of `format`, every other
    /// field kept as it is, those this build does not know included.
    pub fn with_page_format(text: &str, format: u32) -> Result<String> {
        Cursor::decode(text)?;
        let body = text.strip_prefix(PREFIX).unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SyncError::BadCursor("cursor is not valid base64".into()))?;
        let mut v: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| SyncError::BadCursor("cursor content is damaged".into()))?;
        v.insert("w".into(), Value::from(format));
        let json = serde_json::to_vec(&v).unwrap_or_default();
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        ))
    }

    /// Encodes the cursor as opaque text.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// The highest xid any position of the cursor names: a server whose
    /// next xid is not above it has been rewound (restored from an older
    /// copy) since the cursor was handed out.
    pub fn newest_xid(&self) -> Option<u64> {
        self.t
            .values()
            .flat_map(|p| [&p.r, &p.d])
            .chain(self.q.iter().map(|s| &s.r))
            .filter_map(|p| match p {
                Pos::Start => None,
                Pos::Below([x]) | Pos::After(x, _) => Some(*x),
            })
            // A first download in progress read rows up to its horizon: a
            // server behind it would miss some of them.
            .chain(self.q.iter().filter_map(|s| s.b.as_ref().map(|b| b.h)))
            .max()
    }

    /// The smallest tombstone position xid of all tables, if any table has
    /// read tombstones.
    pub fn oldest_tombstone_xid(&self) -> Option<u64> {
        self.t
            .values()
            .filter_map(|p| match &p.d {
                Pos::Start => None,
                Pos::Below([x]) => Some(*x),
                Pos::After(x, _) => Some(*x),
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut c = Cursor {
            v: 1,
            s: 3,
            ..Default::default()
        };
        c.t.insert(
            "tasks".into(),
            TablePos {
                r: Pos::After(10, serde_json::json!({"id": "a"})),
                d: Pos::Below([7]),
                c: None,
                n: Some(5),
                m: None,
            },
        );
        let d = Cursor::decode(&c.encode()).unwrap();
        assert_eq!(
            d.t["tasks"].r,
            Pos::After(10, serde_json::json!({"id": "a"}))
        );
        assert_eq!(d.t["tasks"].d, Pos::Below([7]));
        assert!(Cursor::decode("garbage").is_err());
        // Every shape of a position reads back; others are refused.
        for p in [
            Pos::Start,
            Pos::Below([u64::MAX]),
            Pos::After(3, serde_json::json!(["k", 1])),
        ] {
            let text = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Pos>(&text).unwrap(), p, "{text}");
        }
        for bad in ["[]", "[1,2,3]", "\"x\"", "[-1]", "{}"] {
            assert!(serde_json::from_str::<Pos>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn asking_for_a_page_format_keeps_every_other_field() {
        let c = Cursor {
            v: 1,
            s: 4,
            e: Some(2),
            ..Default::default()
        };
        // A field a newer server added, unknown to this build.
        let mut v = serde_json::to_value(&c).unwrap();
        v["z"] = serde_json::json!({"new": [1, 2]});
        let text = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        );
        let asked = Cursor::with_page_format(&text, 2).unwrap();
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(asked.strip_prefix(PREFIX).unwrap())
            .unwrap();
        let back: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(back["z"], v["z"]);
        assert_eq!(back["w"], 2);
        let d = Cursor::decode(&asked).unwrap();
        assert_eq!((d.s, d.e, d.w), (4, Some(2), Some(2)));
        assert!(Cursor::with_page_format("c1.!!", 2).is_err());
    }
}
