//! The pull page: its writer (the server's envelope around the row changes
//! it renders in SQL) and its reader (borrowed, zero-copy: a page holds
//! tens of thousands of rows, and the device converts each raw value
//! straight to what it stores). Both sides call this module; the golden
//! documents in `shared/goldens/` pin what they read and write.
//!
//! Two page formats exist. Format 1 has one entry per change
//! (`{"table", "op", "pk", "row", "ver"}`). Format 2 has blocks: per table
//! and kind, the column names once and the rows as arrays, each row ending
//! with its version (one stamp when all its columns share it); deletes and
//! leaves list keys. The reader turns both into the same [`RowIn`] list.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::PullOp;
use crate::schema::Schema;
use crate::schema::MAX_NAME_BYTES;
use crate::{check_page_format, Hlc, SyncError};

/// Everything of a pull page but its changes.
#[derive(Debug, Clone)]
pub struct PageHead<'a> {
    /// Page format: 1 (an entry per change) or 2 (blocks).
    pub format: u32,
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

/// What separates two lists of changes in a page's `changes` (format-1
/// runs of entries, format-2 blocks), and the elements of a list.
pub const LIST_SEPARATOR: &str = ", ";

/// Writes a pull page: the head, then the changes. Each item of `lists`
/// is written as the concatenation of its three parts and separated from
/// the next by a comma: the inner text of a JSON array of entries (format
/// 1: row changes `{"table", "op", "pk", "row", "ver"}`), or a format-2
/// block as its head (see [`block_head`]), its list and `}`, as the server
/// renders them, spliced unparsed. The page is written into one buffer of
/// its final size.
pub fn write_page<'c>(
    head: &PageHead<'_>,
    lists: impl IntoIterator<Item = [&'c str; 3]>,
) -> String {
    let (top, pieces) = page_pieces(head, lists);
    let mut out = String::with_capacity(top.len() + pieces.iter().map(|p| p.len()).sum::<usize>());
    out.push_str(&top);
    pieces.iter().for_each(|p| out.push_str(p));
    out
}

/// A pull page as pieces: the text of its head, then the pieces that
/// follow it (the lists' parts, the commas between them, the end).
/// Concatenated, they are the page [`write_page`] writes; the server
/// copies them straight into the value it returns.
pub fn page_pieces<'c>(
    head: &PageHead<'_>,
    lists: impl IntoIterator<Item = [&'c str; 3]>,
) -> (String, Vec<&'c str>) {
    let mut top = format!(
        "{{\"format\": {}, \"schema_version\": {}, ",
        head.format, head.schema_version
    );
    if let Some(schema) = head.schema {
        top.push_str(&format!("\"schema\": {schema}, "));
    }
    if head.behind {
        top.push_str("\"behind\": true, ");
    }
    if let Some(m) = head.members {
        top.push_str(&format!("\"members\": {m}, "));
    }
    if let Some(p) = head.progress {
        top.push_str(&format!("\"progress\": {p}, "));
    }
    top.push_str(&format!(
        "\"cursor\": {}, \"has_more\": {}, \"resync_required\": {}, \"changes\": [",
        serde_json::Value::from(head.cursor),
        head.has_more,
        head.resync_required,
    ));
    let mut pieces = Vec::new();
    for l in lists {
        if l.iter().all(|p| p.trim().is_empty()) {
            continue;
        }
        if !pieces.is_empty() {
            pieces.push(LIST_SEPARATOR);
        }
        pieces.extend(l);
    }
    pieces.push("]}");
    (top, pieces)
}

/// The text of a format-2 block up to its list, to which the server
/// appends a JSON array and `}`: `{"table": t, "op": op, "sub": n,
/// "cols": [...], "key": [...], "rows": ` for upserts (each row the values
/// in the order of `cols`, then the version), `... "keys": ` for deletes
/// and leaves (each key an object).
pub fn block_head(
    table: &str,
    op: PullOp,
    sub: Option<u32>,
    cols: &[&str],
    key: &[&str],
) -> String {
    let mut out = format!(
        "{{\"table\": {}, \"op\": \"{}\", ",
        serde_json::Value::from(table),
        match op {
            PullOp::Upsert => "upsert",
            PullOp::Delete => "delete",
            PullOp::Leave => "leave",
        }
    );
    if let Some(s) = sub {
        out.push_str(&format!("\"sub\": {s}, "));
    }
    if op == PullOp::Upsert {
        let names = |v: &[&str]| {
            serde_json::Value::from(v.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        };
        out.push_str(&format!(
            "\"cols\": {}, \"key\": {}, \"rows\": ",
            names(cols),
            names(key)
        ));
    } else {
        out.push_str("\"keys\": ");
    }
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

/// One row change of a page (either format).
#[derive(Debug)]
pub struct RowIn<'a> {
    /// Table name.
    pub table: CowStr<'a>,
    /// Upsert, delete or leave.
    pub op: PullOp,
    /// Primary key.
    pub pk: Obj<'a>,
    /// The row (upserts).
    pub row: Option<Obj<'a>>,
    /// Column versions in schema order (upserts).
    pub ver: Option<Vers>,
    /// Subscriptions the upsert or leave is for (streams).
    pub subs: Option<Vec<u32>>,
}

/// An entry of a page's `changes`: a row change (format 1) or a block
/// (format 2).
#[derive(Deserialize)]
struct EntryIn<'a> {
    #[serde(borrow)]
    table: CowStr<'a>,
    op: PullOp,
    // Format 1.
    #[serde(borrow, default)]
    pk: Option<Obj<'a>>,
    #[serde(borrow, default)]
    row: Option<Obj<'a>>,
    #[serde(default)]
    ver: Option<Vers>,
    #[serde(default)]
    subs: Option<Vec<u32>>,
    // Format 2.
    #[serde(default)]
    sub: Option<u32>,
    #[serde(borrow, default)]
    cols: Option<Vec<CowStr<'a>>>,
    #[serde(borrow, default)]
    key: Option<Vec<CowStr<'a>>>,
    #[serde(borrow, default)]
    rows: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default)]
    keys: Option<Vec<Obj<'a>>>,
}

impl<'a> EntryIn<'a> {
    /// Whether this entry is a block (format 2).
    fn is_block(&self) -> bool {
        self.cols.is_some() || self.rows.is_some() || self.keys.is_some()
    }

    /// Appends the entry's row changes to `out`.
    fn expand(self, out: &mut Vec<RowIn<'a>>) -> Result<(), String> {
        let table = &self.table.0;
        if self.is_block() && table.len() > MAX_NAME_BYTES {
            return Err(format!(
                "a block's table name is {} bytes, more than {MAX_NAME_BYTES}",
                table.len()
            ));
        }
        if !self.is_block() {
            let Some(pk) = self.pk else {
                return Err(format!("a change of table {table:?} has no pk"));
            };
            out.push(RowIn {
                table: self.table,
                op: self.op,
                pk,
                row: self.row,
                ver: self.ver,
                subs: self.subs,
            });
            return Ok(());
        }
        let subs = self.sub.map(|s| vec![s]);
        if self.op != PullOp::Upsert {
            let Some(keys) = self.keys else {
                return Err(format!("a block of table {table:?} has no keys"));
            };
            out.reserve(keys.len());
            for pk in keys {
                out.push(RowIn {
                    table: self.table.clone(),
                    op: self.op,
                    pk,
                    row: None,
                    ver: None,
                    subs: subs.clone(),
                });
            }
            return Ok(());
        }
        let (Some(cols), Some(key), Some(rows)) = (self.cols, self.key, self.rows) else {
            return Err(format!(
                "an upsert block of table {table:?} needs cols, key and rows"
            ));
        };
        // Names are copied into every row: they must be names (a block of
        // long escaped names would multiply), each once.
        for (what, names) in [("column", &cols), ("key column", &key)] {
            if names.len() > crate::schema::MAX_SYNCED_COLUMNS {
                return Err(format!(
                    "a block of table {table:?} has {} {what}s, more than {}",
                    names.len(),
                    crate::schema::MAX_SYNCED_COLUMNS
                ));
            }
            for (i, n) in names.iter().enumerate() {
                if n.0.len() > MAX_NAME_BYTES {
                    return Err(format!(
                        "a {what} name of table {table:?} is {} bytes, more than {MAX_NAME_BYTES}",
                        n.0.len()
                    ));
                }
                if names[..i].iter().any(|m| m.0 == n.0) {
                    return Err(format!(
                        "{what} {:?} appears twice in a block of table {table:?}",
                        n.0
                    ));
                }
            }
        }
        let key_at: Vec<usize> = key
            .iter()
            .map(|k| {
                cols.iter().position(|c| c.0 == k.0).ok_or_else(|| {
                    format!("key column {:?} of table {table:?} is not in its cols", k.0)
                })
            })
            .collect::<Result<_, _>>()?;
        if key_at.is_empty() {
            return Err(format!(
                "an upsert block of table {table:?} has an empty key"
            ));
        }
        out.reserve(rows.len());
        for vals in rows {
            if vals.len() != cols.len() + 1 {
                return Err(format!(
                    "a row of table {table:?} has {} values; its block has {} columns and a version",
                    vals.len(),
                    cols.len()
                ));
            }
            let ver = read_ver(vals[cols.len()], cols.len())
                .map_err(|e| format!("the version of a row of table {table:?}: {e}"))?;
            let pk = Obj(key_at
                .iter()
                .map(|&i| (cols[i].0.clone(), vals[i]))
                .collect());
            let row = Obj(cols
                .iter()
                .zip(&vals)
                .map(|(c, v)| (c.0.clone(), *v))
                .collect());
            out.push(RowIn {
                table: self.table.clone(),
                op: PullOp::Upsert,
                pk,
                row: Some(row),
                ver: Some(ver),
                subs: subs.clone(),
            });
        }
        Ok(())
    }
}

/// A format-2 row's version: one stamp for all `n` columns, or an array
/// of one stamp per column.
fn read_ver(raw: &RawValue, n: usize) -> Result<Vers, String> {
    let text = raw.get();
    if text.starts_with('"') {
        let s: CowStr = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let h: Hlc =
            s.0.parse()
                .map_err(|e: crate::hlc::ParseHlcError| e.to_string())?;
        return Ok(Vers(vec![h; n]));
    }
    let v: Vers = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if v.0.len() != n {
        return Err(format!("{} stamps for {n} columns", v.0.len()));
    }
    Ok(v)
}

/// A page's changes, read from either format.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// The row changes, in page order.
    pub rows: Vec<RowIn<'a>>,
    /// How many blocks (format 2) and single entries (format 1) the page had.
    shapes: (usize, usize),
}

impl<'a> std::ops::Deref for Changes<'a> {
    type Target = Vec<RowIn<'a>>;
    fn deref(&self) -> &Self::Target {
        &self.rows
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Changes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Changes<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of changes")
            }
            fn visit_seq<S: SeqAccess<'de>>(
                self,
                mut s: S,
            ) -> std::result::Result<Self::Value, S::Error> {
                let mut out = Changes::default();
                out.rows.reserve(s.size_hint().unwrap_or(0));
                // Each block is expanded as soon as it is read, so its
                // arrays are freed before the next one.
                while let Some(e) = s.next_element::<EntryIn<'de>>()? {
                    if e.is_block() {
                        out.shapes.0 += 1;
                    } else {
                        out.shapes.1 += 1;
                    }
                    e.expand(&mut out.rows).map_err(de::Error::custom)?;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A pull page.
#[derive(Debug, Deserialize)]
pub struct PageIn<'a> {
    /// Page format (1 or 2).
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
    /// The changes, one per row whatever the format.
    #[serde(borrow)]
    pub changes: Changes<'a>,
}

/// Reads a page: the whole document is checked, rows stay borrowed.
pub fn read_page(text: &str) -> Result<PageIn<'_>, SyncError> {
    let p: PageIn = serde_json::from_str(text)
        .map_err(|e| SyncError::MalformedJson(format!("pull page: {e}")))?;
    check_page_format(p.format)?;
    let (blocks, entries) = p.changes.shapes;
    if (p.format == 1 && blocks > 0) || (p.format >= 2 && entries > 0) {
        return Err(SyncError::MalformedJson(format!(
            "pull page: a page of format {} holds {}",
            p.format,
            if p.format == 1 {
                "blocks of rows (format 2)"
            } else {
                "single changes (format 1)"
            }
        )));
    }
    Ok(p)
}
