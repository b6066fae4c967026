//! The pull page: its writer (the server's envelope around the row changes
//! it renders in SQL) and its reader (borrowed, zero-copy: a page holds
//! tens of thousands of rows, and the device converts each raw value
//! straight to what it stores). Both sides call this module; the golden
//! documents in `shared/goldens/` pin what they read and write.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{check_format, PullOp, FORMAT};
use crate::schema::Schema;
use crate::{Hlc, SyncError};

/// Everything of a pull page but its changes.
#[derive(Debug, Clone)]
pub struct PageHead<'a> {
    /// Schema version the rows follow.
    pub schema_version: i64,
    /// The schema as JSON text, when the device may need it.
    pub schema: Option<&'a str>,
    /// The cursor for the next pull.
    pub cursor: &'a str,
    /// More changes are ready now.
    pub has_more: bool,
    /// The device must drop its server state and start over.
    pub resync_required: bool,
    /// This server (a hot standby) has not yet replayed up to the cursor:
    /// no changes, the same cursor; pull again later or elsewhere.
    pub behind: bool,
    /// Streams: the subscriptions' full key lists, as the text of a JSON
    /// array of [`super::Members`].
    pub members: Option<&'a str>,
    /// Streams: first-download progress, as the text of a JSON array of
    /// [`super::Progress`].
    pub progress: Option<&'a str>,
}

/// Writes a pull page: the head, then the changes, given as lists each
/// the inner text of a JSON array of row changes (`{"table", "op", "pk",
/// "row", "ver"}` objects, as the server renders them), spliced unparsed.
pub fn write_page<'c>(head: &PageHead<'_>, lists: impl IntoIterator<Item = &'c str>) -> String {
    let mut changes = String::new();
    for inner in lists {
        if inner.trim().is_empty() {
            continue;
        }
        if !changes.is_empty() {
            changes.push_str(", ");
        }
        changes.push_str(inner);
    }
    let mut out = String::with_capacity(changes.len() + 512);
    out.push_str(&format!(
        "{{\"format\": {FORMAT}, \"schema_version\": {}, ",
        head.schema_version
    ));
    if let Some(schema) = head.schema {
        out.push_str(&format!("\"schema\": {schema}, "));
    }
    if head.behind {
        out.push_str("\"behind\": true, ");
    }
    if let Some(m) = head.members {
        out.push_str(&format!("\"members\": {m}, "));
    }
    if let Some(p) = head.progress {
        out.push_str(&format!("\"progress\": {p}, "));
    }
    out.push_str(&format!(
        "\"cursor\": {}, \"has_more\": {}, \"resync_required\": {}, \"changes\": [{changes}]}}",
        serde_json::Value::from(head.cursor),
        head.has_more,
        head.resync_required,
    ));
    out
}

/// A string that borrows from the input when it has no escapes.
#[derive(Debug, Clone)]
pub struct CowStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object as (key, raw value) pairs in document order.
#[derive(Debug, Default)]
pub struct Obj<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Obj<'a> {
    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The object as a `serde_json` map (for error messages and slow paths).
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::from_str(v.get()).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Obj<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Obj<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(k) = m.next_key::<CowStr<'de>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k.0, v));
                }
                Ok(Obj(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A list of HLC stamps parsed without allocating.
#[derive(Debug)]
pub struct Vers(pub Vec<Hlc>);

impl<'de> Deserialize<'de> for Vers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of 16-hex-digit HLC stamps")
            }
            fn visit_seq<S: SeqAccess<'de>>(
                self,
                mut s: S,
            ) -> std::result::Result<Self::Value, S::Error> {
                let mut out = Vec::with_capacity(s.size_hint().unwrap_or(8));
                while let Some(x) = s.next_element::<CowStr<'de>>()? {
                    out.push(x.0.parse::<Hlc>().map_err(de::Error::custom)?);
                }
                Ok(Vers(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// One row change of a page.
#[derive(Debug, Deserialize)]
pub struct RowIn<'a> {
    /// Table name.
    #[serde(borrow)]
    pub table: CowStr<'a>,
    /// Upsert or delete.
    pub op: PullOp,
    /// Primary key.
    #[serde(borrow)]
    pub pk: Obj<'a>,
    /// The row (upserts).
    #[serde(borrow, default)]
    pub row: Option<Obj<'a>>,
    /// Column versions in schema order (upserts).
    #[serde(default)]
    pub ver: Option<Vers>,
    /// Subscriptions the upsert or leave is for (streams).
    #[serde(default)]
    pub subs: Option<Vec<u32>>,
}

/// A pull page.
#[derive(Debug, Deserialize)]
pub struct PageIn<'a> {
    /// Wire format.
    pub format: u32,
    /// Schema version the rows follow.
    pub schema_version: i64,
    /// The schema, when the device may need it.
    #[serde(default)]
    pub schema: Option<Schema>,
    /// The cursor to pass to the next pull.
    #[serde(borrow)]
    pub cursor: CowStr<'a>,
    /// More changes are ready now.
    pub has_more: bool,
    /// The device must start over.
    #[serde(default)]
    pub resync_required: bool,
    /// The server has not replayed up to the cursor yet (a hot standby).
    #[serde(default)]
    pub behind: bool,
    /// Subscriptions' full key lists (streams).
    #[serde(default)]
    pub members: Vec<super::Members>,
    /// First-download progress (streams).
    #[serde(default)]
    pub progress: Vec<super::Progress>,
    /// The changes.
    #[serde(borrow)]
    pub changes: Vec<RowIn<'a>>,
}

/// Reads a page: the whole document is checked, rows stay borrowed.
pub fn read_page(text: &str) -> Result<PageIn<'_>, SyncError> {
    let p: PageIn = serde_json::from_str(text)
        .map_err(|e| SyncError::MalformedJson(format!("pull page: {e}")))?;
    check_format(p.format)?;
    Ok(p)
}
