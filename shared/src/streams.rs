//! Streams: named, parameterised filters over one synced table.
//!
//! The DBA defines them on the server (`sync_stream(name, table, filter)`
//! in pg_sync, with `:name` placeholders for the parameters); the schema
//! carries each stream's name, table and typed parameters to devices; a
//! device subscribes with values for the parameters (`sync_subscribe`), and
//! its subscriptions travel in the pull cursor ([`crate::cursor::Sub`]).
//! Both sides check a subscription's parameters here, so a device refuses a
//! hostile value before it is stored and a server refuses it again before
//! it reaches a query (where it is a typed parameter, never SQL text).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::types::ColumnType;
use crate::SyncError;

/// Longest value of a parameter, as text, in bytes.
pub const MAX_PARAM_BYTES: usize = 1024;
/// Most subscriptions a device may hold.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Most keys a device asks for in one pull (rows that entered a
/// subscription through another table, see `members` in a pull page).
pub const MAX_WANTED: usize = 10_000;

/// A stream as devices see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDef {
    /// Stream name (unique).
    pub name: String,
    /// The synced table it selects rows of.
    pub table: String,
    /// Its parameters, in the order they first appear in the filter.
    #[serde(default)]
    pub params: Vec<StreamParam>,
}

/// One typed parameter of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamParam {
    /// Name (the `:name` of the filter).
    pub name: String,
    /// Wire type of its values.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// SQL type as Postgres inferred it from the filter.
    pub sql_type: String,
}

/// The text form of each of a subscription's parameters for `def`, in the
/// stream's parameter order (`None` for a JSON null). Refuses unknown or
/// missing names, values of the wrong kind and values longer than
/// [`MAX_PARAM_BYTES`], naming the stream and the parameter.
pub fn param_texts(
    def: &StreamDef,
    params: &Map<String, Value>,
) -> Result<Vec<Option<String>>, SyncError> {
    let bad = |why: String| SyncError::Invalid(format!("stream {:?}: {why}", def.name));
    if let Some(k) = params
        .keys()
        .find(|k| !def.params.iter().any(|p| &p.name == *k))
    {
        return Err(bad(format!("it has no parameter {k:?}")));
    }
    let mut out = Vec::with_capacity(def.params.len());
    for p in &def.params {
        let Some(v) = params.get(&p.name) else {
            return Err(bad(format!("parameter {:?} is missing", p.name)));
        };
        let text = match (p.ty, v) {
            (_, Value::Null) => None,
            (ColumnType::Json, v) => Some(v.to_string()),
            (ColumnType::Boolean, Value::Bool(b)) => Some(b.to_string()),
            (ColumnType::Integer, Value::Number(n)) if n.as_i64().is_some() => Some(n.to_string()),
            (ColumnType::Numeric | ColumnType::Real, Value::Number(n)) => Some(n.to_string()),
            (
                ColumnType::Text
                | ColumnType::Timestamptz
                | ColumnType::Timestamp
                | ColumnType::Date
                | ColumnType::Blob,
                Value::String(s),
            ) => Some(s.clone()),
            (ty, v) => {
                return Err(bad(format!(
                    "parameter {:?} takes a {} value ({}), got {}",
                    p.name,
                    kind_of(ty),
                    p.sql_type,
                    crate::show::short_json(v)
                )))
            }
        };
        if let Some(t) = &text {
            if t.len() > MAX_PARAM_BYTES || t.contains('\0') {
                return Err(bad(format!(
                    "parameter {:?} is longer than {MAX_PARAM_BYTES} bytes or holds a NUL",
                    p.name
                )));
            }
        }
        out.push(text);
    }
    Ok(out)
}

/// The JSON kind a wire type takes.
fn kind_of(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "integer",
        ColumnType::Real | ColumnType::Numeric => "number",
        ColumnType::Boolean => "boolean",
        ColumnType::Json => "JSON",
        _ => "string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def() -> StreamDef {
        StreamDef {
            name: "project_tasks".into(),
            table: "tasks".into(),
            params: vec![StreamParam {
                name: "project_id".into(),
                ty: ColumnType::Integer,
                sql_type: "bigint".into(),
            }],
        }
    }

    #[test]
    fn parameters_are_checked_by_name_kind_and_size() {
        let p = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            param_texts(&def(), &p(json!({"project_id": 7}))).unwrap(),
            vec![Some("7".to_string())]
        );
        for bad in [
            json!({}),
            json!({"project_id": "7; DROP TABLE tasks"}),
            json!({"project_id": 1.5}),
            json!({"project_id": [1]}),
            json!({"project_id": 7, "other": 1}),
        ] {
            assert!(param_texts(&def(), &p(bad.clone())).is_err(), "{bad}");
        }
        let mut d = def();
        d.params[0].ty = ColumnType::Text;
        let long = "x".repeat(MAX_PARAM_BYTES + 1);
        assert!(param_texts(&d, &p(json!({ "project_id": long }))).is_err());
    }
}
