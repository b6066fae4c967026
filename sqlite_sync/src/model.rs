//! The synced schema as the client uses it: object names, validation, value
//! conversion between SQLite and the JSON wire format, and row keys.

use serde_json::{Map, Number, Value as Json};
use sync_core::merge::Strategy;
use sync_core::schema::{ColumnType, Schema, TableDef, WriteMode, MAX_NAME_BYTES};
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::Value;

/// Most columns a synced table may have (bits of the INTEGER change mask).
pub const MAX_COLUMNS: usize = 63;

/// Names the extension reserves for itself.
pub const META: &str = "_sync_meta";
pub const CHANGES: &str = "_changes";
pub const ERRORS: &str = "_sync_errors";
pub const BASE: &str = "_sync_base";

/// Double-quotes an SQL identifier.
pub fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Single-quotes an SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One synced table with everything derived from its definition.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub def: TableDef,
    /// Index into `def.columns` of each pk column, in key order.
    pub pk_idx: Vec<usize>,
    /// The table the app writes: `T` (optimistic) or `T_pending` (confirmed).
    pub state: String,
    /// Server state: `T_synced`.
    pub synced: String,
    /// Mask with a bit for every column.
    pub all_mask: i64,
    /// Mask with a bit for every pk column.
    pub pk_mask: i64,
}

impl TableInfo {
    pub fn new(def: &TableDef) -> TableInfo {
        let pk_idx: Vec<usize> = def
            .pk
            .iter()
            .map(|p| def.column_index(p).unwrap_or(0))
            .collect();
        let n = def.columns.len();
        let all_mask = if n >= 63 { i64::MAX } else { (1i64 << n) - 1 };
        let pk_mask = pk_idx.iter().fold(0i64, |m, i| m | (1i64 << i));
        TableInfo {
            state: state_table_name(&def.name, def.mode),
            synced: format!("{}_synced", def.name),
            def: def.clone(),
            pk_idx,
            all_mask,
            pk_mask,
        }
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn ncols(&self) -> usize {
        self.def.columns.len()
    }

    pub fn confirmed(&self) -> bool {
        self.def.mode == WriteMode::Confirmed
    }

    pub fn col_type(&self, i: usize) -> ColumnType {
        self.def.columns[i].ty
    }

    pub fn col_name(&self, i: usize) -> &str {
        &self.def.columns[i].name
    }

    /// Whether column `i` merges against a base value on the server.
    pub fn needs_base_value(&self, i: usize) -> bool {
        matches!(
            self.def.columns[i].strategy,
            Strategy::TextMerge | Strategy::SetUnion | Strategy::Counter
        )
    }

    pub fn single_pk(&self) -> bool {
        self.pk_idx.len() == 1
    }

    /// `"a", "b"` for all columns.
    pub fn col_list(&self) -> String {
        self.def
            .columns
            .iter()
            .map(|c| q(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `"a" = ?N AND "b" = ?N+1` over the pk columns.
    pub fn pk_where(&self, first_param: usize) -> String {
        self.def
            .pk
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} = ?{}", q(p), first_param + i))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The SQL expression the triggers store in `_changes.pk` for a row
    /// (`prefix` is `NEW` or `OLD`): the value itself for a one-column key,
    /// a JSON array (blobs as hex) for a composite key.
    pub fn key_expr(&self, prefix: &str) -> String {
        if self.single_pk() {
            return format!("{prefix}.{}", q(&self.def.pk[0]));
        }
        let parts: Vec<String> = self
            .pk_idx
            .iter()
            .map(|&i| {
                let c = format!("{prefix}.{}", q(self.col_name(i)));
                if self.col_type(i) == ColumnType::Blob {
                    format!("hex({c})")
                } else {
                    c
                }
            })
            .collect();
        format!("json_array({})", parts.join(", "))
    }

    /// Decodes a `_changes.pk` value into a row key.
    pub fn key_from_stored(&self, v: &Value) -> Result<Key> {
        if self.single_pk() {
            return Ok(Key(vec![KeyPart::from_value(v)]));
        }
        let Value::Text(s) = v else {
            return Err(Error::msg(format!(
                "corrupt composite key in {CHANGES} for table {}",
                self.name()
            )));
        };
        let arr: Vec<Json> = serde_json::from_str(s).map_err(|_| {
            Error::msg(format!(
                "corrupt composite key {s:?} in {CHANGES} for table {}",
                self.name()
            ))
        })?;
        if arr.len() != self.pk_idx.len() {
            return Err(Error::msg(format!(
                "composite key {s:?} in {CHANGES} does not match the primary key of {}",
                self.name()
            )));
        }
        let mut parts = Vec::with_capacity(arr.len());
        for (j, &ci) in self.pk_idx.iter().enumerate() {
            let part = match (&arr[j], self.col_type(ci)) {
                (Json::String(h), ColumnType::Blob) => {
                    KeyPart::Blob(hex_decode(h).unwrap_or_else(|| h.as_bytes().to_vec()))
                }
                (Json::String(s), _) => KeyPart::Text(s.clone()),
                (Json::Null, _) => KeyPart::Null,
                (Json::Bool(b), _) => KeyPart::Int(i64::from(*b)),
                (Json::Number(n), _) => match n.as_i64() {
                    Some(i) => KeyPart::Int(i),
                    None => KeyPart::Real(n.as_f64().unwrap_or(0.0).to_bits()),
                },
                (other, _) => KeyPart::Text(other.to_string()),
            };
            parts.push(part);
        }
        Ok(Key(parts))
    }

    /// The key of a wire primary key object.
    pub fn key_from_json(&self, pk: &Map<String, Json>) -> Result<Key> {
        for k in pk.keys() {
            if !self.def.is_pk(k) {
                if self.def.column_index(k).is_some() {
                    return Err(Error::msg(format!(
                        "column {k:?} is not part of the primary key of table {:?}",
                        self.name()
                    )));
                }
                return Err(Error::msg(format!(
                    "table {:?} has no synced column {}",
                    self.name(),
                    show(k)
                )));
            }
        }
        let mut parts = Vec::with_capacity(self.pk_idx.len());
        for &ci in &self.pk_idx {
            let name = self.col_name(ci);
            let v = pk.get(name).ok_or_else(|| {
                Error::msg(format!(
                    "primary key of table {:?} is missing column {name:?}",
                    self.name()
                ))
            })?;
            if v.is_null() {
                return Err(Error::msg(format!(
                    "primary key column {name:?} of table {:?} is null",
                    self.name()
                )));
            }
            let sv = json_to_sql(self.col_type(ci), v, self.name(), name)?;
            parts.push(KeyPart::from_value(&key_affinity(self.col_type(ci), sv)));
        }
        Ok(Key(parts))
    }

    /// The wire primary key object of a row key.
    pub fn key_to_json(&self, key: &Key) -> Map<String, Json> {
        let mut m = Map::new();
        for (j, &ci) in self.pk_idx.iter().enumerate() {
            let v = key.0.get(j).map(KeyPart::to_value).unwrap_or(Value::Null);
            m.insert(
                self.col_name(ci).to_string(),
                sql_to_json(self.col_type(ci), &v),
            );
        }
        m
    }
}

/// The name of the table the app writes for a synced table.
pub fn state_table_name(name: &str, mode: WriteMode) -> String {
    match mode {
        WriteMode::Optimistic => name.to_string(),
        WriteMode::Confirmed => format!("{name}_pending"),
    }
}

/// One part of a row key, hashable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    Null,
    Int(i64),
    Real(u64),
    Text(String),
    Blob(Vec<u8>),
}

impl KeyPart {
    pub fn from_value(v: &Value) -> KeyPart {
        match v {
            Value::Null => KeyPart::Null,
            Value::Int(i) => KeyPart::Int(*i),
            // -0.0 and 0.0 are one key, in SQLite as in Postgres.
            Value::Real(f) if *f == 0.0 => KeyPart::Real(0f64.to_bits()),
            Value::Real(f) => KeyPart::Real(f.to_bits()),
            Value::Text(s) => KeyPart::Text(s.clone()),
            Value::Blob(b) => KeyPart::Blob(b.clone()),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            KeyPart::Null => Value::Null,
            KeyPart::Int(i) => Value::Int(*i),
            KeyPart::Real(b) => Value::Real(f64::from_bits(*b)),
            KeyPart::Text(s) => Value::Text(s.clone()),
            KeyPart::Blob(b) => Value::Blob(b.clone()),
        }
    }
}

impl KeyPart {
    fn class(&self) -> u8 {
        match self {
            KeyPart::Null => 0,
            KeyPart::Int(_) | KeyPart::Real(_) => 1,
            KeyPart::Text(_) => 2,
            KeyPart::Blob(_) => 3,
        }
    }

    /// SQLite's order of values (NULL, numbers, text, blobs; BINARY collation).
    pub fn sqlite_cmp(&self, other: &KeyPart) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (KeyPart::Int(a), KeyPart::Int(b)) => a.cmp(b),
            (KeyPart::Int(a), KeyPart::Real(b)) => (*a as f64)
                .partial_cmp(&f64::from_bits(*b))
                .unwrap_or(Ordering::Equal),
            (KeyPart::Real(a), KeyPart::Int(b)) => f64::from_bits(*a)
                .partial_cmp(&(*b as f64))
                .unwrap_or(Ordering::Equal),
            (KeyPart::Real(a), KeyPart::Real(b)) => f64::from_bits(*a)
                .partial_cmp(&f64::from_bits(*b))
                .unwrap_or(Ordering::Equal),
            (KeyPart::Text(a), KeyPart::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (KeyPart::Blob(a), KeyPart::Blob(b)) => a.cmp(b),
            _ => self.class().cmp(&other.class()),
        }
    }
}

/// A row's primary key values, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(pub Vec<KeyPart>);

impl Key {
    /// SQLite's order of keys (column by column).
    pub fn sqlite_cmp(&self, other: &Key) -> std::cmp::Ordering {
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            let o = a.sqlite_cmp(b);
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        self.0.len().cmp(&other.0.len())
    }

    /// A canonical text form, used as the key of `_sync_base`.
    pub fn canonical(&self) -> String {
        let parts: Vec<Json> = self
            .0
            .iter()
            .map(|p| match p {
                KeyPart::Null => Json::String("n".into()),
                KeyPart::Int(i) => Json::String(format!("i{i}")),
                KeyPart::Real(b) => Json::String(format!("r{:016x}", b)),
                KeyPart::Text(s) => Json::String(format!("t{s}")),
                KeyPart::Blob(b) => Json::String(format!("b{}", hex_encode(b))),
            })
            .collect();
        Json::Array(parts).to_string()
    }
}

/// The declared SQLite type of a synced column, in `T` and `T_synced`.
///
/// Chosen so that SQLite stores every server value exactly:
/// - numeric is TEXT holding the exact decimal text (NUMERIC affinity would
///   turn it into a REAL, keeping about 15 significant digits and no scale);
/// - real (not in the primary key) has no declared type, hence no
///   affinity: SQLite keeps the 8-byte IEEE value as given, where REAL
///   affinity stores an integral value as an integer and loses the sign of
///   `-0.0`. A real key column keeps REAL affinity so that `5` and `5.0`
///   stay one key;
/// - the other types as `ColumnType::sqlite_type`.
pub fn decl_type(ty: ColumnType, in_pk: bool) -> &'static str {
    match ty {
        ColumnType::Numeric => "TEXT",
        ColumnType::Real if !in_pk => "",
        other => other.sqlite_type(),
    }
}

/// Applies the affinity of a primary key column (see [`decl_type`]) to a
/// value the way storing it would, so keys built from JSON compare equal to
/// keys read back from tables.
pub fn key_affinity(ty: ColumnType, v: Value) -> Value {
    match decl_type(ty, true) {
        "INTEGER" => match v {
            Value::Real(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 9.0e15 => {
                Value::Int(f as i64)
            }
            Value::Text(ref s) => {
                let t = s.trim();
                if let Ok(i) = t.parse::<i64>() {
                    Value::Int(i)
                } else if let Ok(f) = t.parse::<f64>() {
                    if f.fract() == 0.0 && f.is_finite() && f.abs() < 9.0e15 {
                        Value::Int(f as i64)
                    } else {
                        Value::Real(f)
                    }
                } else {
                    v
                }
            }
            other => other,
        },
        "REAL" => match v {
            Value::Int(i) => Value::Real(i as f64),
            Value::Text(ref s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Value::Real(f),
                _ => v,
            },
            other => other,
        },
        "TEXT" => match v {
            Value::Int(i) => Value::Text(i.to_string()),
            Value::Real(f) => Value::Text(f.to_string()),
            other => other,
        },
        _ => v,
    }
}

/// Largest schema document `sync_init` (or a pull page) may carry, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// Names of columns the device adds to `T_synced`; no synced column may
/// take one.
pub const RESERVED_COLUMNS: [&str; 2] = ["_ver", "_full"];

/// A name for an error message: quoted, and cut short when long (the
/// input may be hostile).
pub fn show(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

/// A JSON value for an error message, cut short when long.
pub fn show_json(v: &Json) -> String {
    const MAX: usize = 200;
    let s = v.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Parses a schema document and checks everything the client relies on.
pub fn parse_schema(json: &str) -> Result<Schema> {
    if json.len() > MAX_SCHEMA_BYTES {
        return Err(Error::msg(format!(
            "schema document is {} bytes, more than the limit of {MAX_SCHEMA_BYTES}",
            json.len()
        )));
    }
    let schema: Schema = serde_json::from_str(json)
        .map_err(|e| Error::msg(format!("malformed JSON in schema: {e}")))?;
    validate_schema(&schema)?;
    Ok(schema)
}

/// Checks a schema: format, names (length, reserved names, collisions up to
/// case, see `sync_core::schema::check_table_name`), primary keys, column
/// limits.
pub fn validate_schema(schema: &Schema) -> Result<()> {
    sync_core::wire::check_format(schema.format)?;
    let mut seen: Vec<&str> = Vec::with_capacity(schema.tables.len());
    // Length first, so an error never repeats a huge name in full.
    let too_long = |what: &str, name: &str, of: &str| {
        Error::msg(format!(
            "{what} {}{of} is {} bytes, more than the limit of {MAX_NAME_BYTES}",
            show(name),
            name.len()
        ))
    };
    for t in &schema.tables {
        if t.name.len() > MAX_NAME_BYTES {
            return Err(too_long("table name", &t.name, ""));
        }
        for c in t.columns.iter().map(|c| &c.name).chain(t.pk.iter()) {
            if c.len() > MAX_NAME_BYTES {
                let of = format!(" of table {:?}", t.name);
                return Err(too_long("column name", c, &of));
            }
        }
        sync_core::schema::check_table_name(&t.name, seen.iter().copied())?;
        if t.name.to_ascii_lowercase().starts_with("sqlite_") {
            return Err(Error::msg(format!(
                "table name {}: names starting with sqlite_ are reserved by SQLite",
                show(&t.name)
            )));
        }
        seen.push(&t.name);
        if t.pk.is_empty() {
            return Err(Error::msg(format!(
                "table {:?} has no primary key in the schema; synced tables need one",
                t.name
            )));
        }
        if t.columns.is_empty() {
            return Err(Error::msg(format!("table {:?} has no columns", t.name)));
        }
        if t.columns.len() > MAX_COLUMNS {
            return Err(Error::msg(format!(
                "table {:?} has {} columns; sqlite_sync supports at most {MAX_COLUMNS}",
                t.name,
                t.columns.len()
            )));
        }
        let mut names: Vec<String> = Vec::with_capacity(t.columns.len());
        for c in &t.columns {
            sync_core::schema::check_column_name(&t.name, &c.name)?;
            let lower = c.name.to_ascii_lowercase();
            if RESERVED_COLUMNS.contains(&lower.as_str()) {
                return Err(Error::msg(format!(
                    "column name {:?} of table {:?} is reserved by sqlite_sync",
                    c.name, t.name
                )));
            }
            // SQLite compares column names without (ASCII) case.
            if names.contains(&lower) {
                return Err(Error::msg(format!(
                    "table {:?} has column {:?} twice",
                    t.name, c.name
                )));
            }
            names.push(lower);
        }
        for p in &t.pk {
            if t.column_index(p).is_none() {
                return Err(Error::msg(format!(
                    "primary key column {} of table {:?} is not among its columns",
                    show(p),
                    t.name
                )));
            }
        }
        let mut pks = t.pk.clone();
        pks.sort();
        pks.dedup();
        if pks.len() != t.pk.len() {
            return Err(Error::msg(format!(
                "table {:?} lists a primary key column twice",
                t.name
            )));
        }
    }
    Ok(())
}

/// Lowercase hex of bytes.
pub fn hex_encode(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// Decodes hex (either case); `None` when not valid hex.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    b.chunks(2)
        .map(|p| Some((nib(p[0])? << 4) | nib(p[1])?))
        .collect()
}

fn bad_value(table: &str, col: &str, ty: ColumnType, v: &Json) -> Error {
    let mut shown = v.to_string();
    if shown.len() > 60 {
        let mut end = 60;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }
    Error::msg(format!(
        "column {col:?} of table {table:?} ({}) cannot hold the value {shown}",
        serde_json::to_string(&ty)
            .unwrap_or_default()
            .trim_matches('"')
    ))
}

/// Converts a wire value the device itself produced (the keys of its
/// in-flight batch, `sync_pending`'s argument) to the SQLite value stored
/// for a column type. Lenient: a value that did not fit its type on the
/// device comes back as it was sent. Server data goes through the strict
/// `page::raw_to_sql` instead.
pub fn json_to_sql(ty: ColumnType, v: &Json, table: &str, col: &str) -> Result<Value> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ColumnType::Boolean => match v {
            Json::Bool(b) => Value::Int(i64::from(*b)),
            Json::Number(n) => match n.as_f64() {
                Some(f) => Value::Int(i64::from(f != 0.0)),
                None => return Err(bad_value(table, col, ty, v)),
            },
            Json::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "on" => Value::Int(1),
                "false" | "f" | "0" | "no" | "off" => Value::Int(0),
                _ => return Err(bad_value(table, col, ty, v)),
            },
            _ => return Err(bad_value(table, col, ty, v)),
        },
        ColumnType::Integer => match v {
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f.fract() == 0.0 && f.abs() < 9.2e18 {
                        Value::Int(f as i64)
                    } else {
                        Value::Real(f)
                    }
                }
            }
            Json::Bool(b) => Value::Int(i64::from(*b)),
            Json::String(s) => Value::Text(s.clone()),
            _ => return Err(bad_value(table, col, ty, v)),
        },
        ColumnType::Real => match v {
            Json::Number(n) => match n.as_f64() {
                Some(f) => Value::Real(f),
                None => Value::Text(n.to_string()),
            },
            Json::String(s) => match s.as_str() {
                // SQLite stores a NaN as NULL: keep it as text.
                "NaN" => Value::Text("NaN".into()),
                "-0" => Value::Real(-0.0),
                "Infinity" => Value::Real(f64::INFINITY),
                "-Infinity" => Value::Real(f64::NEG_INFINITY),
                _ => Value::Text(s.clone()),
            },
            _ => return Err(bad_value(table, col, ty, v)),
        },
        // The literal's exact text (serde_json keeps it).
        ColumnType::Numeric => match v {
            Json::Number(n) => Value::Text(n.to_string()),
            Json::String(s) => Value::Text(s.clone()),
            _ => return Err(bad_value(table, col, ty, v)),
        },
        ColumnType::Text | ColumnType::Timestamptz | ColumnType::Timestamp | ColumnType::Date => {
            match v {
                Json::String(s) => Value::Text(s.clone()),
                other => Value::Text(other.to_string()),
            }
        }
        ColumnType::Json => Value::Text(v.to_string()),
        ColumnType::Blob => match v {
            Json::String(s) => {
                let hex = s
                    .strip_prefix("\\x")
                    .or_else(|| s.strip_prefix("\\X"))
                    .ok_or_else(|| bad_value(table, col, ty, v))?;
                Value::Blob(hex_decode(hex).ok_or_else(|| bad_value(table, col, ty, v))?)
            }
            _ => return Err(bad_value(table, col, ty, v)),
        },
    })
}

/// The wire form of a numeric column's stored text: its exact literal when
/// it is a JSON number (the digits go through unchanged, never through a
/// float), the strings Postgres reads for NaN and the infinities, else the
/// text as a string (the server parses it or rejects the change).
fn numeric_text_json(s: &str) -> Json {
    if sync_core::decimal::Decimal::parse(s).is_ok() {
        if let Ok(n) = s.parse::<Number>() {
            return Json::Number(n);
        }
    }
    match s.to_ascii_lowercase().as_str() {
        "nan" => Json::String("NaN".into()),
        "inf" | "infinity" | "+inf" | "+infinity" => Json::String("Infinity".into()),
        "-inf" | "-infinity" => Json::String("-Infinity".into()),
        _ => Json::String(s.to_string()),
    }
}

/// The exact decimal text of a float for a numeric column: its shortest
/// round-trip digits, written without an exponent (`1e-7` is `0.0000001`).
pub fn f64_numeric_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let short = Number::from_f64(f)
        .map(|n| n.to_string())
        .unwrap_or_else(|| f.to_string());
    sync_core::decimal::Decimal::parse(&short)
        .map(|d| d.to_string())
        .unwrap_or(short)
}

fn f64_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".into()),
        None if f > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// A real column's value on the wire: [`f64_json`], except that `-0.0` is
/// the string `"-0"`. Postgres reads `sync_push`'s batch as jsonb, whose
/// numbers are numerics, and numeric has no negative zero: the number
/// `-0.0` would arrive as `0`. A string goes to float8's own input, which
/// keeps the sign, as it does for `"NaN"` and `"Infinity"`.
fn real_json(f: f64) -> Json {
    if f == 0.0 && f.is_sign_negative() {
        Json::String("-0".into())
    } else {
        f64_json(f)
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Int(i) => i.to_string(),
        Value::Real(f) => {
            let j = f64_json(*f);
            match j {
                Json::String(s) => s,
                other => other.to_string(),
            }
        }
        Value::Text(s) => s.clone(),
        Value::Blob(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Converts a stored SQLite value to its wire form for a column type. A
/// value that does not fit the type is sent as it is, so the server can
/// reject that one change instead of the client refusing to sync.
pub fn sql_to_json(ty: ColumnType, v: &Value) -> Json {
    if v.is_null() {
        return Json::Null;
    }
    match ty {
        ColumnType::Boolean => match v {
            Value::Int(i) => Json::Bool(*i != 0),
            Value::Real(f) => Json::Bool(*f != 0.0),
            Value::Text(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" => Json::Bool(true),
                "false" | "f" | "0" => Json::Bool(false),
                _ => Json::String(s.clone()),
            },
            other => Json::String(text_of(other)),
        },
        ColumnType::Numeric => match v {
            Value::Int(i) => Json::from(*i),
            Value::Real(f) => numeric_text_json(&f64_numeric_text(*f)),
            Value::Text(s) => numeric_text_json(s),
            other => Json::String(text_of(other)),
        },
        ColumnType::Integer => match v {
            Value::Int(i) => Json::from(*i),
            Value::Real(f) => {
                if f.fract() == 0.0 && f.abs() < 9.2e18 {
                    Json::from(*f as i64)
                } else {
                    f64_json(*f)
                }
            }
            Value::Text(s) => {
                let t = s.trim();
                if let Ok(i) = t.parse::<i64>() {
                    Json::from(i)
                } else if let Ok(f) = t.parse::<f64>() {
                    f64_json(f)
                } else {
                    Json::String(s.clone())
                }
            }
            other => Json::String(text_of(other)),
        },
        ColumnType::Real => match v {
            Value::Int(i) => f64_json(*i as f64),
            Value::Real(f) => real_json(*f),
            Value::Text(s) => match s.trim().parse::<f64>() {
                Ok(f) => real_json(f),
                Err(_) => Json::String(s.clone()),
            },
            other => Json::String(text_of(other)),
        },
        ColumnType::Text | ColumnType::Timestamptz | ColumnType::Timestamp | ColumnType::Date => {
            Json::String(text_of(v))
        }
        ColumnType::Json => match v {
            Value::Text(s) => serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone())),
            Value::Int(i) => Json::from(*i),
            Value::Real(f) => f64_json(*f),
            Value::Blob(b) => {
                let s = String::from_utf8_lossy(b);
                serde_json::from_str(&s).unwrap_or_else(|_| Json::String(s.into_owned()))
            }
            Value::Null => Json::Null,
        },
        ColumnType::Blob => {
            let bytes: Vec<u8> = match v {
                Value::Blob(b) => b.clone(),
                other => text_of(other).into_bytes(),
            };
            Json::String(format!("\\x{}", hex_encode(&bytes)))
        }
    }
}

/// Column versions as stored in `_ver`: 8 bytes per column, big-endian,
/// in schema column order, or a single 8-byte stamp when every column has
/// the same version (`sync_ver_json(_ver)` shows them as JSON).
pub fn ver_to_blob(ver: &[Hlc]) -> Vec<u8> {
    if let Some(first) = ver.first() {
        if ver.iter().all(|h| h == first) {
            return first.0.to_be_bytes().to_vec();
        }
    }
    let mut b = Vec::with_capacity(ver.len() * 8);
    for h in ver {
        b.extend_from_slice(&h.0.to_be_bytes());
    }
    b
}

/// Reads a `_ver` blob; missing entries read as zero.
pub fn ver_from_blob(b: &[u8], n: usize) -> Vec<Hlc> {
    if b.len() == 8 {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        return vec![Hlc(u64::from_be_bytes(a)); n];
    }
    let mut out: Vec<Hlc> = b
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            Hlc(u64::from_be_bytes(a))
        })
        .collect();
    out.resize(n, Hlc::ZERO);
    out
}

/// Versions as the wire shows them: a JSON array of 16-hex-digit stamps.
pub fn ver_to_json(ver: &[Hlc]) -> String {
    let mut s = String::with_capacity(ver.len() * 19 + 2);
    s.push('[');
    for (i, h) in ver.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        s.push_str(&h.to_string());
        s.push('"');
    }
    s.push(']');
    s
}

/// Current time as an ISO 8601 UTC string with milliseconds.
pub fn now_iso() -> String {
    iso_from_unix_ms(sync_core::hlc::wall_clock_unix_ms())
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso_from_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_from_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso_from_unix_ms(1_577_836_800_123),
            "2020-01-01T00:00:00.123Z"
        );
        assert_eq!(
            iso_from_unix_ms(1_709_210_096_000),
            "2024-02-29T12:34:56.000Z"
        );
    }

    #[test]
    fn values_round_trip() {
        let cases = [
            (ColumnType::Boolean, json!(true)),
            (ColumnType::Boolean, json!(false)),
            (ColumnType::Integer, json!(9_007_199_254_740_993_i64)),
            (ColumnType::Real, json!(0.1)),
            (ColumnType::Numeric, json!(12.5)),
            (ColumnType::Text, json!("héllo 'x'")),
            (ColumnType::Timestamptz, json!("2024-01-01T00:00:00+00:00")),
            (ColumnType::Json, json!({"a": [1, 2, {"b": null}]})),
            (ColumnType::Blob, json!("\\x00ff10")),
        ];
        for (ty, v) in cases {
            let s = json_to_sql(ty, &v, "t", "c").unwrap();
            assert_eq!(sql_to_json(ty, &s), v, "{ty:?}");
        }
        assert!(json_to_sql(ColumnType::Blob, &json!("00ff"), "t", "c").is_err());
    }

    #[test]
    fn ver_blob() {
        let v = vec![Hlc(1), Hlc(0xabc)];
        let b = ver_to_blob(&v);
        assert_eq!(b.len(), 16);
        assert_eq!(ver_from_blob(&b, 3), vec![Hlc(1), Hlc(0xabc), Hlc::ZERO]);
        let same = ver_to_blob(&[Hlc(7), Hlc(7), Hlc(7)]);
        assert_eq!(same.len(), 8);
        assert_eq!(ver_from_blob(&same, 3), vec![Hlc(7); 3]);
        assert_eq!(
            ver_to_json(&v),
            r#"["0000000000000001","0000000000000abc"]"#
        );
    }
}
