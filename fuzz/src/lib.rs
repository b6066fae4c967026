//! Generators shared by the fuzz targets: JSON values, number literals,
//! HLC stamps and texts built from libFuzzer's bytes with `arbitrary`.
//! Sizes are bounded so that one execution stays well under a millisecond
//! and a million executions per target fit in `make fuzz`.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value};
use sync_core::hlc::Hlc;

/// A stamp: mostly from a small set (so equal, adjacent, concurrent and
/// non-concurrent versions are common), sometimes any 64-bit value, the
/// zero stamp, or one at the very end of the clock (year 2159), where
/// `next_with_tag` saturates.
pub fn hlc(u: &mut Unstructured) -> Result<Hlc> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => Hlc(u.arbitrary()?),
        1 => Hlc(u64::MAX - u64::from(u.arbitrary::<u16>()?)),
        2 => Hlc::ZERO,
        _ => Hlc::new(
            u.int_in_range(0..=7)?,
            u.int_in_range(0..=2)?,
            u.int_in_range(0..=3)?,
        ),
    })
}

fn digits(u: &mut Unstructured, n: usize, s: &mut String) -> Result<()> {
    for _ in 0..n {
        s.push(char::from(b'0' + u.int_in_range(0..=9)?));
    }
    Ok(())
}

/// How many digits: usually a few, sometimes up to 40, rarely thousands
/// (rare because such a value costs a hundred times more than a small one).
fn digit_count(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.arbitrary::<u8>()? {
        0 => u.int_in_range(0..=3_000)?,
        1..=31 => u.int_in_range(0..=40)?,
        _ => u.int_in_range(0..=4)?,
    })
}

/// A JSON number literal in any spelling: sign, integer digits, fraction,
/// exponent (small, or far beyond the limits, e.g. `1e1000000`).
pub fn number_literal(u: &mut Unstructured) -> Result<String> {
    let mut s = String::new();
    if u.arbitrary()? {
        s.push('-');
    }
    let n = digit_count(u)?;
    if n == 0 {
        s.push('0');
    } else {
        s.push(char::from(b'0' + u.int_in_range(1..=9)?));
        if n > 1 && u.ratio(1, 8)? {
            // A long run of one digit costs few input bytes.
            let d = char::from(b'0' + u.int_in_range(0..=9)?);
            s.extend(std::iter::repeat_n(d, n - 1));
        } else {
            digits(u, (n - 1).min(40), &mut s)?;
        }
    }
    if u.arbitrary()? {
        s.push('.');
        let n = digit_count(u)?.max(1);
        digits(u, n.min(40), &mut s)?;
        if n > 40 {
            s.extend(std::iter::repeat_n('0', n - 40));
        }
    }
    if u.arbitrary()? {
        s.push_str(u.choose(&["e", "E", "e+", "E+", "e-", "E-"])?);
        // Small; rarely thousands; or (mostly) far out of range, refused
        // before anything is allocated. Values right at the bounds (131072
        // digits before the point, 16383 after) cost ~10 ms each in an
        // instrumented build, so they are left to the unit tests of
        // `sync_core::decimal` (the fuzzer still reaches them sometimes).
        let exp: u64 = match u.arbitrary::<u8>()? {
            0..=3 => u.int_in_range(1_000..=3_000)?,
            4..=47 => u.arbitrary()?,
            _ => u.int_in_range(0..=30)?,
        };
        s.push_str(&exp.to_string());
    }
    Ok(s)
}

/// A JSON number value (parsed by serde_json, as the extensions do).
pub fn number(u: &mut Unstructured) -> Result<Value> {
    let lit = number_literal(u)?;
    Ok(serde_json::from_str(&lit).unwrap_or(Value::Null))
}

const WORDS: &[&str] = &[
    "a",
    "b",
    "c",
    "fox",
    "dog",
    "the",
    "Ünï",
    "42",
    "_",
    "e\u{301}",
    "我",
    "喜",
    "猫",
    "ไทย",
    "👍",
    "x-y",
];
const SEPARATORS: &[&str] = &[" ", "  ", "\n", ",", ".", "!", "\t", "、", "—", ""];

/// A token of a text: a word or a separator.
pub fn token(u: &mut Unstructured) -> Result<&'static str> {
    if u.arbitrary()? {
        u.choose(WORDS).copied()
    } else {
        u.choose(SEPARATORS).copied()
    }
}

/// A short text: words and separators, or (sometimes) any string of at
/// most `2 * max_tokens` characters.
pub fn text(u: &mut Unstructured, max_tokens: usize) -> Result<String> {
    if u.ratio(1, 4)? {
        let s: &str = u.arbitrary()?;
        return Ok(s.chars().take(max_tokens * 2).collect());
    }
    let n = u.int_in_range(0..=max_tokens)?;
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(token(u)?);
    }
    Ok(s)
}

/// Any JSON value, at most `depth` levels of arrays and objects deep, a few
/// elements each.
pub fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.int_in_range(-3i64..=3)?),
        3 => number(u)?,
        4 => Value::String(text(u, 6)?),
        5 => {
            let n = u.int_in_range(0..=5)?;
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(value(u, depth - 1)?);
            }
            Value::Array(a)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut m = Map::new();
            for _ in 0..n {
                m.insert(text(u, 2)?, value(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

/// A value of the kind a strategy works on: numbers for `counter`, strings
/// for `text_merge`, arrays for `set_union`, or anything.
pub fn column_value(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => number(u)?,
        1 => Value::from(u.int_in_range(-5i64..=5)?),
        2 => Value::String(text(u, 12)?),
        3 => {
            let n = u.int_in_range(0..=5)?;
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(if u.arbitrary()? {
                    Value::from(u.int_in_range(0i64..=5)?)
                } else {
                    value(u, 1)?
                });
            }
            Value::Array(a)
        }
        4 => Value::Null,
        _ => value(u, 2)?,
    })
}

// ------------------------------------------------------------------ documents
//
// Wire documents with the right shape and any content: every field is
// usually well-formed, sometimes missing or replaced by any JSON value, and
// sometimes an unknown field is added, so the parsers' validation (not only
// their JSON syntax errors) is reached on most inputs.

/// Puts `good` under `key`, except sometimes leaves the field out or puts
/// any value there instead.
fn field(m: &mut Map<String, Value>, key: &str, good: Value, u: &mut Unstructured) -> Result<()> {
    match u.int_in_range(0u8..=31)? {
        0 => {}
        1 => {
            m.insert(key.to_string(), value(u, 2)?);
        }
        _ => {
            m.insert(key.to_string(), good);
        }
    }
    Ok(())
}

/// Sometimes adds a field nobody knows.
fn extra(u: &mut Unstructured, m: &mut Map<String, Value>) -> Result<()> {
    if u.ratio(1, 32)? {
        m.insert(text(u, 2)?, value(u, 1)?);
    }
    Ok(())
}

const NAMES: &[&str] = &[
    "tasks",
    "projects",
    "id",
    "title",
    "n",
    "tags",
    "done",
    "",
    "_sync_x",
    "sync_clock",
    "tasks_synced",
    "Tasks",
];

fn name(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 8)? {
        text(u, 3)
    } else {
        Ok(u.choose(NAMES)?.to_string())
    }
}

/// A stamp as it travels: 16 lowercase hex digits, or (sometimes) not.
pub fn hlc_text(u: &mut Unstructured) -> Result<Value> {
    Ok(Value::String(match u.int_in_range(0u8..=15)? {
        0 => text(u, 3)?,
        1 => format!("{:016X}", hlc(u)?.0),
        2 => format!("+{:015x}", hlc(u)?.0 >> 4),
        _ => hlc(u)?.to_string(),
    }))
}

fn object(
    u: &mut Unstructured,
    max: usize,
    mut v: impl FnMut(&mut Unstructured) -> Result<Value>,
) -> Result<Value> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=max)? {
        m.insert(name(u)?, v(u)?);
    }
    Ok(Value::Object(m))
}

fn array(
    u: &mut Unstructured,
    max: usize,
    mut v: impl FnMut(&mut Unstructured) -> Result<Value>,
) -> Result<Value> {
    let n = u.int_in_range(0..=max)?;
    let mut a = Vec::with_capacity(n);
    for _ in 0..n {
        a.push(v(u)?);
    }
    Ok(Value::Array(a))
}

fn format_value(u: &mut Unstructured) -> Result<Value> {
    Ok(if u.ratio(1, 16)? {
        Value::from(u.arbitrary::<u32>()?)
    } else {
        Value::from(1)
    })
}

fn client_id(u: &mut Unstructured) -> Result<Value> {
    Ok(Value::String(match u.int_in_range(0u8..=7)? {
        0 => String::new(),
        1 => " \t".into(),
        2 => "x".repeat(u.int_in_range(195..=205)?),
        3 => text(u, 4)?,
        _ => "6f1c2a34-0b7e-4d7e-9a51-0c6d8a1e2f30".into(),
    }))
}

/// Sequence numbers: increasing, with the odd repeat, step back, zero or
/// negative number.
fn next_seq(u: &mut Unstructured, prev: &mut i64) -> Result<Value> {
    *prev = match u.int_in_range(0u8..=15)? {
        0 => *prev,
        1 => prev.saturating_sub(1),
        2 => u.arbitrary()?,
        3 => 0,
        _ => prev.saturating_add(u.int_in_range(1..=3)?),
    };
    Ok(Value::from(*prev))
}

/// A `PushBatch` document.
pub fn push_batch_doc(u: &mut Unstructured) -> Result<Value> {
    let mut m = Map::new();
    field(&mut m, "format", format_value(u)?, u)?;
    field(&mut m, "client_id", client_id(u)?, u)?;
    let mut seq = 0;
    let n = u.int_in_range(0..=6)?;
    let mut changes = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Map::new();
        field(&mut c, "seq", next_seq(u, &mut seq)?, u)?;
        field(&mut c, "table", Value::String(name(u)?), u)?;
        let op = *u.choose(&["insert", "update", "delete", "upsert"])?;
        field(&mut c, "op", Value::from(op), u)?;
        field(&mut c, "pk", object(u, 2, column_value)?, u)?;
        if op != "delete" || u.ratio(1, 8)? {
            field(&mut c, "cols", object(u, 4, column_value)?, u)?;
            field(&mut c, "ver", object(u, 4, hlc_text)?, u)?;
        }
        if u.arbitrary()? {
            field(&mut c, "base", object(u, 4, hlc_text)?, u)?;
            field(&mut c, "base_values", object(u, 3, column_value)?, u)?;
        }
        field(&mut c, "hlc", hlc_text(u)?, u)?;
        extra(u, &mut c)?;
        changes.push(Value::Object(c));
    }
    field(&mut m, "changes", Value::Array(changes), u)?;
    extra(u, &mut m)?;
    Ok(Value::Object(m))
}

fn ver_list(u: &mut Unstructured) -> Result<Value> {
    array(u, 4, hlc_text)
}

/// A `PushResult` document.
pub fn push_result_doc(u: &mut Unstructured) -> Result<Value> {
    let mut m = Map::new();
    field(&mut m, "format", format_value(u)?, u)?;
    field(&mut m, "client_id", client_id(u)?, u)?;
    let mut seq = 0;
    let n = u.int_in_range(0..=6)?;
    let mut results = Vec::with_capacity(n);
    for _ in 0..n {
        let mut r = Map::new();
        field(&mut r, "seq", next_seq(u, &mut seq)?, u)?;
        field(&mut r, "table", Value::String(name(u)?), u)?;
        field(&mut r, "pk", object(u, 2, column_value)?, u)?;
        let status = *u.choose(&["applied", "merged", "conflict", "rejected", "pending"])?;
        field(&mut r, "status", Value::from(status), u)?;
        if u.arbitrary()? {
            field(&mut r, "reason", Value::String(text(u, 8)?), u)?;
        }
        if u.ratio(1, 4)? {
            field(&mut r, "constraint", Value::String(name(u)?), u)?;
        }
        if u.ratio(1, 4)? {
            field(
                &mut r,
                "conflicts",
                array(u, 3, |u| Ok(Value::from(u.arbitrary::<i64>()?)))?,
                u,
            )?;
        }
        if u.arbitrary()? {
            field(&mut r, "row", object(u, 4, column_value)?, u)?;
            field(&mut r, "ver", ver_list(u)?, u)?;
        }
        extra(u, &mut r)?;
        results.push(Value::Object(r));
    }
    field(&mut m, "results", Value::Array(results), u)?;
    extra(u, &mut m)?;
    Ok(Value::Object(m))
}

/// A `Schema` document.
pub fn schema_doc(u: &mut Unstructured) -> Result<Value> {
    let mut m = Map::new();
    field(&mut m, "format", format_value(u)?, u)?;
    field(
        &mut m,
        "version",
        Value::from(u.int_in_range(-1i64..=5)?),
        u,
    )?;
    let tables = array(u, 3, |u| {
        let mut t = Map::new();
        field(&mut t, "name", Value::String(name(u)?), u)?;
        field(
            &mut t,
            "pk",
            array(u, 2, |u| Ok(Value::String(name(u)?)))?,
            u,
        )?;
        let columns = array(u, 5, |u| {
            let mut c = Map::new();
            field(&mut c, "name", Value::String(name(u)?), u)?;
            let ty = *u.choose(&[
                "text",
                "integer",
                "real",
                "numeric",
                "boolean",
                "timestamptz",
                "timestamp",
                "date",
                "json",
                "blob",
                "uuid",
            ])?;
            field(&mut c, "type", Value::from(ty), u)?;
            if u.arbitrary()? {
                field(&mut c, "nullable", Value::Bool(u.arbitrary()?), u)?;
            }
            if u.arbitrary()? {
                let s = *u.choose(&[
                    "lww",
                    "server_wins",
                    "manual",
                    "text_merge",
                    "set_union",
                    "counter",
                    "LWW",
                ])?;
                field(&mut c, "strategy", Value::from(s), u)?;
            }
            extra(u, &mut c)?;
            Ok(Value::Object(c))
        })?;
        field(&mut t, "columns", columns, u)?;
        if u.arbitrary()? {
            let mode = *u.choose(&["optimistic", "confirmed", "eventual"])?;
            field(&mut t, "mode", Value::from(mode), u)?;
        }
        if u.arbitrary()? {
            let d = *u.choose(&["delete_wins", "resurrect", "update_wins"])?;
            field(&mut t, "on_delete", Value::from(d), u)?;
        }
        extra(u, &mut t)?;
        Ok(Value::Object(t))
    })?;
    field(&mut m, "tables", tables, u)?;
    extra(u, &mut m)?;
    Ok(Value::Object(m))
}

/// A `PullPage` document (with a schema sometimes).
pub fn pull_page_doc(u: &mut Unstructured) -> Result<Value> {
    let mut m = Map::new();
    field(&mut m, "format", format_value(u)?, u)?;
    field(
        &mut m,
        "schema_version",
        Value::from(u.int_in_range(-1i64..=5)?),
        u,
    )?;
    if u.ratio(1, 4)? {
        field(&mut m, "schema", schema_doc(u)?, u)?;
    }
    field(&mut m, "cursor", Value::String(text(u, 4)?), u)?;
    field(&mut m, "has_more", Value::Bool(u.arbitrary()?), u)?;
    if u.arbitrary()? {
        field(&mut m, "resync_required", Value::Bool(u.arbitrary()?), u)?;
    }
    let changes = array(u, 6, |u| {
        let mut c = Map::new();
        field(&mut c, "table", Value::String(name(u)?), u)?;
        let op = *u.choose(&["upsert", "delete", "insert"])?;
        field(&mut c, "op", Value::from(op), u)?;
        field(&mut c, "pk", object(u, 2, column_value)?, u)?;
        if op != "delete" || u.ratio(1, 8)? {
            field(&mut c, "row", object(u, 4, column_value)?, u)?;
            field(&mut c, "ver", ver_list(u)?, u)?;
        }
        extra(u, &mut c)?;
        Ok(Value::Object(c))
    })?;
    field(&mut m, "changes", changes, u)?;
    extra(u, &mut m)?;
    Ok(Value::Object(m))
}

/// The text a wire target parses: when the first byte is 1 or 2, a
/// document of the right shape generated from the rest by `doc` (written
/// compact, or pretty for 2); otherwise the bytes themselves as text (raw
/// JSON: the seeds, and byte-level mutations of them).
pub fn document_text(data: &[u8], doc: fn(&mut Unstructured) -> Result<Value>) -> Option<String> {
    match data.split_first() {
        Some((&mode @ (1 | 2), rest)) => {
            let v = doc(&mut Unstructured::new(rest)).ok()?;
            Some(if mode == 1 {
                v.to_string()
            } else {
                serde_json::to_string_pretty(&v).ok()?
            })
        }
        _ => Some(String::from_utf8_lossy(data).into_owned()),
    }
}
