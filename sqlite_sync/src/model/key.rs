//! Row keys: the primary key of a row as a hashable, comparable value,
//! with the affinity a key column applies.

use serde_json::Value as Json;
use sync_core::schema::ColumnType;

use crate::ffi::Value;

use super::values::{decl_type, hex_encode};

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

    /// The key back from its [`Key::canonical`] form.
    pub fn from_canonical(text: &str) -> Option<Key> {
        let parts: Vec<String> = serde_json::from_str(text).ok()?;
        parts
            .iter()
            .map(|p| {
                let (tag, rest) = p.split_at(p.char_indices().nth(1).map_or(p.len(), |(i, _)| i));
                Some(match tag {
                    "n" => KeyPart::Null,
                    "i" => KeyPart::Int(rest.parse().ok()?),
                    "r" => KeyPart::Real(u64::from_str_radix(rest, 16).ok()?),
                    "t" => KeyPart::Text(rest.to_string()),
                    "b" => KeyPart::Blob(super::values::hex_decode(rest)?),
                    _ => return None,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(Key)
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
