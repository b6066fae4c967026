//! Values between SQLite and the JSON wire format, exactly (numeric as
//! text, -0.0 kept), column versions, and times.

use serde_json::{Number, Value as Json};
use sync_core::schema::ColumnType;
use sync_core::Hlc;

use crate::error::{Error, Result};
use crate::ffi::Value;

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
    Error::input(format!(
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
