//! Pull pages on the device: the document is read by the shared borrowed
//! reader (`sync_core::wire::page`); this module converts each raw value
//! straight to what SQLite stores, checked against the column's type.

use std::borrow::Cow;

use serde_json::value::RawValue;
use sync_core::schema::ColumnType;

use crate::error::{Error, Result};
use crate::ffi::Value;
use crate::model::table::TableInfo;
use crate::model::values::hex_decode;

pub use sync_core::wire::page::{CowStr, Obj, PageIn};

/// Parses and validates a page (the reader is `sync_core::wire::page`).
pub fn parse(text: &str) -> Result<PageIn<'_>> {
    Ok(sync_core::wire::page::read_page(text)?)
}

/// A value ready to bind, borrowing text from the page where possible.
#[derive(Debug, Clone, PartialEq)]
pub enum VRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Blob(Vec<u8>),
}

impl crate::ffi::Bind for VRef<'_> {
    fn bind_to(&self, st: &mut crate::ffi::Stmt, idx: usize) -> Result<()> {
        match self {
            VRef::Null => st.bind(idx, &Value::Null),
            VRef::Int(i) => st.bind(idx, &Value::Int(*i)),
            VRef::Real(f) => st.bind(idx, &Value::Real(*f)),
            VRef::Text(t) => st.bind_text(idx, t),
            VRef::Blob(b) => st.bind_blob(idx, b),
        }
    }
}

impl VRef<'_> {
    pub fn to_value(&self) -> Value {
        match self {
            VRef::Null => Value::Null,
            VRef::Int(i) => Value::Int(*i),
            VRef::Real(f) => Value::Real(*f),
            VRef::Text(s) => Value::Text(s.to_string()),
            VRef::Blob(b) => Value::Blob(b.clone()),
        }
    }
}

/// JSON text without insignificant whitespace (borrowed when there is none).
pub fn minify(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let mut in_str = false;
    let mut esc = false;
    let needs = b.iter().any(|&c| {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            false
        } else if c == b'"' {
            in_str = true;
            false
        } else {
            c.is_ascii_whitespace()
        }
    });
    if !needs {
        return Cow::Borrowed(s.trim());
    }
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut esc) = (false, false);
    for ch in s.chars() {
        if in_str {
            out.push(ch);
            if esc {
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
            }
        } else if ch == '"' {
            in_str = true;
            out.push(ch);
        } else if !ch.is_ascii_whitespace() {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

fn bad(table: &str, col: &str, ty: ColumnType, raw: &str) -> Error {
    let mut shown = raw.to_string();
    if shown.len() > 60 {
        let mut end = 60;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }
    Error::input(format!(
        "column {col:?} of table {table:?} ({}) cannot hold the value {shown}",
        serde_json::to_string(&ty)
            .unwrap_or_default()
            .trim_matches('"')
    ))
}

/// Whether a JSON number literal is a plain integer (`-?[0-9]+`).
fn is_integer_literal(s: &str) -> bool {
    let d = s.strip_prefix('-').unwrap_or(s);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the mantissa of a JSON number literal has a non-zero digit.
fn nonzero_mantissa(s: &str) -> bool {
    s.bytes()
        .take_while(|b| !matches!(b, b'e' | b'E'))
        .any(|b| (b'1'..=b'9').contains(&b))
}

/// Converts a raw wire value sent by the server (a pull page's keys and
/// rows, a push result's rows) to the SQLite value stored for a column type
/// (see `model::decl_type`). Strict: a value that contradicts the column's
/// type makes the document malformed, and the error names the table, the
/// column and the value.
///
/// - boolean: `true` / `false`;
/// - integer: an integer literal within 64 bits;
/// - real: a number within double range (stored as a REAL, `-0` keeping its
///   sign), or `"NaN"` (stored as the text `NaN`: SQLite would turn a NaN
///   REAL into NULL), `"Infinity"`, `"-Infinity"`, `"-0"` (the device's own
///   form of `-0.0`, see `model::real_json`);
/// - numeric: a number literal within Postgres' numeric range, stored as
///   its exact decimal text without an exponent (`1.50` stays `1.50`,
///   `1e3` is `1000`), or `"NaN"`, `"Infinity"`, `"-Infinity"`;
/// - text: a string without NUL; timestamptz, timestamp, date: a string in
///   the ISO 8601 form Postgres writes (see `temporal.rs`);
/// - json: any JSON value, stored as compact JSON text;
/// - blob: `"\\x<hex>"`.
///
/// `null` is NULL for every type.
pub fn raw_to_sql<'a>(
    ty: ColumnType,
    raw: &'a RawValue,
    table: &str,
    col: &str,
) -> Result<VRef<'a>> {
    let s = raw.get().trim();
    let first = s.as_bytes().first().copied().unwrap_or(b'n');
    if first == b'n' {
        return Ok(VRef::Null);
    }
    let err = || bad(table, col, ty, s);
    let string = || -> Result<Cow<'a, str>> {
        if first != b'"' {
            return Err(err());
        }
        let v: CowStr<'a> = serde_json::from_str(raw.get()).map_err(|_| err())?;
        Ok(v.0)
    };
    let number = first == b'-' || first.is_ascii_digit();
    Ok(match ty {
        ColumnType::Json => VRef::Text(minify(s)),
        ColumnType::Boolean => match s {
            "true" => VRef::Int(1),
            "false" => VRef::Int(0),
            _ => return Err(err()),
        },
        ColumnType::Integer => {
            if !number || !is_integer_literal(s) {
                return Err(err());
            }
            VRef::Int(s.parse::<i64>().map_err(|_| err())?)
        }
        ColumnType::Real => {
            if number {
                let f = s.parse::<f64>().map_err(|_| err())?;
                // Out of double range: Postgres' float8 refuses it too.
                if f.is_infinite() || (f == 0.0 && nonzero_mantissa(s)) {
                    return Err(err());
                }
                VRef::Real(f)
            } else {
                match string()?.as_ref() {
                    "NaN" => VRef::Text(Cow::Borrowed("NaN")),
                    "-0" => VRef::Real(-0.0),
                    "Infinity" => VRef::Real(f64::INFINITY),
                    "-Infinity" => VRef::Real(f64::NEG_INFINITY),
                    _ => return Err(err()),
                }
            }
        }
        ColumnType::Numeric => {
            if number {
                let d = sync_core::decimal::Decimal::parse(s)
                    .map_err(|e| Error::input(format!("{} ({e})", err())))?;
                let text = d.to_string();
                if text == s {
                    VRef::Text(Cow::Borrowed(s))
                } else {
                    VRef::Text(Cow::Owned(text))
                }
            } else {
                match string()?.as_ref() {
                    "NaN" => VRef::Text(Cow::Borrowed("NaN")),
                    "Infinity" => VRef::Text(Cow::Borrowed("Infinity")),
                    "-Infinity" => VRef::Text(Cow::Borrowed("-Infinity")),
                    _ => return Err(err()),
                }
            }
        }
        ColumnType::Text => {
            let t = string()?;
            if t.contains('\0') {
                return Err(err());
            }
            VRef::Text(t)
        }
        ColumnType::Timestamptz | ColumnType::Timestamp | ColumnType::Date => {
            let t = string()?;
            if !crate::model::temporal::valid(ty, &t) {
                return Err(err());
            }
            VRef::Text(t)
        }
        ColumnType::Blob => {
            let t = string()?;
            let hex = t
                .strip_prefix("\\x")
                .or_else(|| t.strip_prefix("\\X"))
                .ok_or_else(err)?;
            VRef::Blob(hex_decode(hex).ok_or_else(err)?)
        }
    })
}

/// [`raw_to_sql`] for a value already parsed (the rows of a push result).
pub fn json_to_sql_strict(
    ty: ColumnType,
    v: &serde_json::Value,
    table: &str,
    col: &str,
) -> Result<Value> {
    let raw = RawValue::from_string(v.to_string())?;
    Ok(raw_to_sql(ty, &raw, table, col)?.to_value())
}

/// Values of all columns of a pulled row in schema order. Key columns
/// missing from `row` come from `pk`; other missing columns are NULL; a
/// column the table does not have is an error.
pub fn row_values<'a>(t: &TableInfo, row: &Obj<'a>, pk: &Obj<'a>) -> Result<Vec<VRef<'a>>> {
    let n = t.ncols();
    let mut out: Vec<VRef<'a>> = vec![VRef::Null; n];
    let mut seen = 0u64;
    for (k, raw) in &row.0 {
        let i = t.def.column_index(k).ok_or_else(|| {
            Error::input(format!(
                "table {:?} has no synced column {}",
                t.name(),
                crate::model::names::show(k)
            ))
        })?;
        out[i] = raw_to_sql(t.col_type(i), raw, t.name(), k)?;
        seen |= 1 << i;
    }
    for &i in &t.pk_idx {
        if seen & (1 << i) == 0 {
            if let Some(raw) = pk.get(t.col_name(i)) {
                out[i] = raw_to_sql(t.col_type(i), raw, t.name(), t.col_name(i))?;
            }
        }
    }
    Ok(out)
}

/// The key of a pulled row's primary key object.
pub fn key_from_obj(t: &TableInfo, pk: &Obj<'_>) -> Result<crate::model::key::Key> {
    for (k, _) in &pk.0 {
        if !t.def.is_pk(k) {
            return Err(if t.def.column_index(k).is_some() {
                Error::input(format!(
                    "column {k:?} is not part of the primary key of table {:?}",
                    t.name()
                ))
            } else {
                Error::input(format!(
                    "table {:?} has no synced column {}",
                    t.name(),
                    crate::model::names::show(k)
                ))
            });
        }
    }
    let mut parts = Vec::with_capacity(t.pk_idx.len());
    for &ci in &t.pk_idx {
        let name = t.col_name(ci);
        let raw = pk.get(name).ok_or_else(|| {
            Error::input(format!(
                "primary key of table {:?} is missing column {name:?}",
                t.name()
            ))
        })?;
        let v = raw_to_sql(t.col_type(ci), raw, t.name(), name)?.to_value();
        if v.is_null() {
            return Err(Error::input(format!(
                "primary key column {name:?} of table {:?} is null",
                t.name()
            )));
        }
        parts.push(crate::model::key::KeyPart::from_value(
            &crate::model::key::key_affinity(t.col_type(ci), v),
        ));
    }
    Ok(crate::model::key::Key(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minify_keeps_strings() {
        assert_eq!(
            minify(r#"{"a": [1, 2], "b c": "x y"}"#),
            r#"{"a":[1,2],"b c":"x y"}"#
        );
        assert!(matches!(minify(r#"{"a":1}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn agrees_with_json_to_sql() {
        let cases = [
            (ColumnType::Boolean, json!(true)),
            (ColumnType::Integer, json!(42)),
            (ColumnType::Integer, json!(i64::MIN)),
            (ColumnType::Real, json!(0.1)),
            (ColumnType::Real, json!(3)),
            (ColumnType::Real, json!(-0.0)),
            (ColumnType::Numeric, json!(12.5)),
            (ColumnType::Text, json!("héllo \"q\" \\ x")),
            (ColumnType::Json, json!({"a": [1, null]})),
            (ColumnType::Json, json!("s")),
            (ColumnType::Blob, json!("\\x00ff")),
            (ColumnType::Date, json!("2024-01-02")),
        ];
        for (ty, v) in cases {
            let text = v.to_string();
            let raw: &RawValue = serde_json::from_str(&text).unwrap();
            let fast = raw_to_sql(ty, raw, "t", "c").unwrap().to_value();
            let slow = crate::model::values::json_to_sql(ty, &v, "t", "c").unwrap();
            assert_eq!(fast, slow, "{ty:?} {v}");
        }
    }

    fn strict(ty: ColumnType, text: &str) -> Result<Value> {
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        raw_to_sql(ty, raw, "t", "c").map(|v| v.to_value())
    }

    #[test]
    fn server_values_are_exact() {
        use ColumnType::*;
        let t = |s: &str| Value::Text(s.into());
        for (ty, text, want) in [
            (
                Numeric,
                "1234567890.012345678901",
                t("1234567890.012345678901"),
            ),
            (Numeric, "1.10", t("1.10")),
            (Numeric, "-0.000", t("0.000")),
            (Numeric, "1.5e3", t("1500")),
            (Numeric, "1e400", t(&format!("1{}", "0".repeat(400)))),
            (Numeric, "\"NaN\"", t("NaN")),
            (Numeric, "\"-Infinity\"", t("-Infinity")),
            (Integer, "9223372036854775807", Value::Int(i64::MAX)),
            (
                Integer,
                "-9007199254740993",
                Value::Int(-9_007_199_254_740_993),
            ),
            (Real, "1.7976931348623157e308", Value::Real(f64::MAX)),
            (Real, "1e-300", Value::Real(1e-300)),
            (Real, "5e-324", Value::Real(5e-324)),
            (Real, "\"NaN\"", t("NaN")),
            (Real, "\"Infinity\"", Value::Real(f64::INFINITY)),
            (
                Text,
                "\"\\udbff\\udfff \\ud83d\\ude00 \u{800} e\u{301}\"",
                t("\u{10FFFF} \u{1F600} \u{800} e\u{301}"),
            ),
            (
                Timestamptz,
                "\"2026-06-30T23:59:59.123456+02:00\"",
                t("2026-06-30T23:59:59.123456+02:00"),
            ),
        ] {
            assert_eq!(strict(ty, text).unwrap(), want, "{ty:?} {text}");
        }
        let neg = strict(Real, "-0").unwrap();
        assert!(matches!(neg, Value::Real(f) if f == 0.0 && f.is_sign_negative()));
    }

    #[test]
    fn server_values_contradicting_the_type_are_refused() {
        use ColumnType::*;
        for (ty, text) in [
            (Integer, "1e400"),
            (Integer, "4.5"),
            (Integer, "4.0"),
            (Integer, "9223372036854775808"),
            (Integer, "\"12\""),
            (Integer, "true"),
            (Numeric, "1e400000"),
            (Numeric, "\"12.5\""),
            (Numeric, "\"abc\""),
            (Numeric, "true"),
            (Numeric, "{}"),
            (Real, "1e400"),
            (Real, "-1e400"),
            (Real, "1e-400"),
            (Real, "\"1.5\""),
            (Real, "\"inf\""),
            (Boolean, "1"),
            (Boolean, "\"true\""),
            (Text, "12"),
            (Text, "[\"a\"]"),
            (Text, "\"a\\u0000b\""),
            (Timestamptz, "\"not a date\""),
            (Timestamptz, "\"2026-02-30T00:00:00+00:00\""),
            (Timestamp, "12"),
            (Date, "\"2026-01-01T00:00:00\""),
            (Blob, "\"00ff\""),
            (Blob, "12"),
        ] {
            let e = strict(ty, text).unwrap_err().to_string();
            assert!(
                e.contains("column \"c\" of table \"t\"") && e.contains("cannot hold"),
                "{ty:?} {text}: {e}"
            );
        }
    }
}
