//! One synced table as the device uses it: its definition with the
//! names, masks and SQL fragments derived from it, and column types.

use serde_json::{Map, Value as Json};
use sync_core::merge::Strategy;
use sync_core::schema::{ColumnType, TableDef, WriteMode};

use crate::error::{Error, Result};
use crate::ffi::Value;

use super::key::{key_affinity, Key, KeyPart};
use super::names::{q, show, CHANGES};
use super::values::{hex_decode, json_to_sql, sql_to_json};

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
            return Err(Error::corrupt(format!(
                "corrupt composite key in {CHANGES} for table {}",
                self.name()
            )));
        };
        let arr: Vec<Json> = serde_json::from_str(s).map_err(|_| {
            Error::corrupt(format!(
                "corrupt composite key {s:?} in {CHANGES} for table {}",
                self.name()
            ))
        })?;
        if arr.len() != self.pk_idx.len() {
            return Err(Error::corrupt(format!(
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
                    return Err(Error::input(format!(
                        "column {k:?} is not part of the primary key of table {:?}",
                        self.name()
                    )));
                }
                return Err(Error::input(format!(
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
                Error::input(format!(
                    "primary key of table {:?} is missing column {name:?}",
                    self.name()
                ))
            })?;
            if v.is_null() {
                return Err(Error::input(format!(
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
