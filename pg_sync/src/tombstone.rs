//! Writing a tombstone: the key of a deleted row (and, under row-level
//! security, its old image) inserted straight into the heap and indexes of
//! `pg_sync.tombstones`, from a trigger (`track.rs`).
//!
//! A tombstone's key is the canonical text of `jsonb_build_object(<key
//! columns>)`, the form pulls and pushes compare keys in. Keys of integer,
//! text and uuid columns (nearly all keys) are written straight from the
//! tuple by [`key_text`], which follows `jsonb_out` byte for byte (keys
//! ordered by length then bytes, `escape_json`); other keys go through
//! Postgres' own `row_to_json`, `jsonb_in` and `jsonb_out`.
//!
//! Every `unsafe` here reads the firing relation's descriptor and a live
//! tuple of it while the executor keeps them (the duration of the trigger
//! call), and opens, inserts into and closes the catalog table inside the
//! writing transaction; each function states what it relies on.

use std::ffi::CString;
use std::fmt::Write as _;

use pgrx::pg_sys;
use pgrx::prelude::*;
use sync_core::Hlc;

use crate::catalog::{VER_COL, XID_COL};
use crate::tupdesc::{attname, attrs};

/// Calls a one-argument fmgr function (no collation, no expression
/// context: `row_to_json`, `jsonb_in`, `jsonb_out`).
///
/// # Safety
/// `f` takes one non-null argument of the given datum's type.
unsafe fn call1(
    f: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    arg: pg_sys::Datum,
) -> pg_sys::Datum {
    pgrx::direct_function_call_as_datum(f, &[Some(arg)])
        .unwrap_or_else(|| error!("pg_sync: an internal function returned NULL"))
}

/// JSON text as a jsonb datum (through `jsonb_in`, no SQL).
///
/// # Safety
/// Inside a transaction.
unsafe fn jsonb_datum(json: &str) -> pg_sys::Datum {
    let c = CString::new(json).unwrap_or_else(|_| error!("pg_sync: a key contains a NUL byte"));
    call1(pg_sys::jsonb_in, pg_sys::Datum::from(c.as_ptr()))
}

/// Zero-based indexes of the primary key's columns of `rel`.
///
/// # Safety
/// `rel` is an open relation.
unsafe fn key_columns(rel: pg_sys::Relation) -> Vec<usize> {
    let pk_attrs = pg_sys::RelationGetIndexAttrBitmap(
        rel,
        pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_PRIMARY_KEY,
    );
    let out: Vec<usize> = attrs((*rel).rd_att)
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.attisdropped
                && pg_sys::bms_is_member(
                    *i as i32 + 1 - pg_sys::FirstLowInvalidHeapAttributeNumber,
                    pk_attrs,
                )
        })
        .map(|(i, _)| i)
        .collect();
    pg_sys::bms_free(pk_attrs);
    if out.is_empty() {
        error!(
            "pg_sync: synced table {:?} lost its primary key",
            (*rel).rd_id
        );
    }
    out
}

/// Appends `s` as a JSON string the way Postgres' `escape_json` does.
fn escape_json(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One key value as `jsonb_out` writes it, for the types written here
/// (`None` for any other type, or text that is not UTF-8).
///
/// # Safety
/// `d` is a non-null datum of attribute `a` of a live tuple.
unsafe fn value_text(d: pg_sys::Datum, a: &pg_sys::FormData_pg_attribute) -> Option<String> {
    match a.atttypid {
        pg_sys::INT2OID => Some((d.value() as i16).to_string()),
        pg_sys::INT4OID => Some((d.value() as i32).to_string()),
        pg_sys::INT8OID => Some((d.value() as i64).to_string()),
        pg_sys::TEXTOID | pg_sys::VARCHAROID => {
            let p = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
            let bytes = pgrx::varlena::varlena_to_byte_slice(p);
            let s = std::str::from_utf8(bytes).ok()?;
            let mut out = String::with_capacity(s.len() + 2);
            escape_json(&mut out, s);
            Some(out)
        }
        pg_sys::UUIDOID => {
            let b = std::slice::from_raw_parts(d.cast_mut_ptr::<u8>() as *const u8, 16);
            let mut out = String::with_capacity(38);
            out.push('"');
            for (i, x) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                let _ = write!(out, "{x:02x}");
            }
            out.push('"');
            Some(out)
        }
        _ => None,
    }
}

/// The canonical key text of a row written straight from its values, or
/// `None` when a key column is of another type (or NULL, or the database
/// is not UTF-8): the caller then renders it through Postgres.
///
/// # Safety
/// `tupdesc` is the row's descriptor and `vals`/`nulls` its deformed
/// values, alive for the call.
unsafe fn key_text(
    tupdesc: pg_sys::TupleDesc,
    vals: &[pg_sys::Datum],
    nulls: &[bool],
    key: &[usize],
) -> Option<String> {
    if pg_sys::GetDatabaseEncoding() != pg_sys::pg_enc::PG_UTF8 as i32 {
        return None;
    }
    let atts = attrs(tupdesc);
    let mut parts: Vec<(&str, String)> = Vec::with_capacity(key.len());
    for &i in key {
        if nulls[i] {
            return None;
        }
        parts.push((attname(&atts[i]), value_text(vals[i], &atts[i])?));
    }
    // jsonb orders an object's keys by length, then bytes.
    parts.sort_by(|a, b| {
        a.0.len()
            .cmp(&b.0.len())
            .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
    });
    let mut out = String::with_capacity(64);
    out.push('{');
    for (j, (name, v)) in parts.iter().enumerate() {
        if j > 0 {
            out.push_str(", ");
        }
        escape_json(&mut out, name);
        out.push_str(": ");
        out.push_str(v);
    }
    out.push('}');
    Some(out)
}

/// The row rendered by `row_to_json` (every type as jsonb renders it), as
/// an object.
///
/// # Safety
/// `tuple` is a live tuple of `rel`.
unsafe fn row_object(
    rel: pg_sys::Relation,
    tuple: pg_sys::HeapTuple,
) -> serde_json::Map<String, serde_json::Value> {
    let row = pg_sys::heap_copy_tuple_as_datum(tuple, (*rel).rd_att);
    let json = call1(pg_sys::row_to_json, row);
    let json = String::from_datum(json, false)
        .unwrap_or_else(|| error!("pg_sync: could not render the deleted row"));
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => error!("pg_sync: the deleted row is not an object"),
        Err(e) => error!("pg_sync: could not read the deleted row: {e}"),
    }
}

/// The canonical text of a key object built from rendered fields (through
/// `jsonb_in` and `jsonb_out`).
///
/// # Safety
/// Inside a transaction.
unsafe fn key_text_of(key: serde_json::Map<String, serde_json::Value>) -> String {
    let pk = call1(
        pg_sys::jsonb_out,
        jsonb_datum(&serde_json::Value::Object(key).to_string()),
    );
    std::ffi::CStr::from_ptr(pk.cast_mut_ptr::<std::ffi::c_char>())
        .to_str()
        .unwrap_or_else(|_| error!("pg_sync: a key is not valid UTF-8"))
        .to_string()
}

/// Writes a tombstone for `tuple` (a row of `rel`) straight into the heap
/// and indexes of `pg_sync.tombstones`: no SQL runs and no user is
/// switched to (a heap insert checks no privilege, and nothing is resolved
/// through a `search_path`). Under row-level security the old row image is
/// kept too.
///
/// # Safety
/// `rel` is the firing relation and `tuple` one of its live tuples.
pub unsafe fn write(rel: pg_sys::Relation, tuple: pg_sys::HeapTuple, hlc: Hlc) {
    let relid = (*rel).rd_id;
    let tupdesc = (*rel).rd_att;
    let rls = (*(*rel).rd_rel).relrowsecurity;
    let key = key_columns(rel);
    let natts = (*tupdesc).natts as usize;
    let mut vals = vec![pg_sys::Datum::from(0usize); natts];
    let mut nulls = vec![false; natts];
    pg_sys::heap_deform_tuple(tuple, tupdesc, vals.as_mut_ptr(), nulls.as_mut_ptr());
    let direct = key_text(tupdesc, &vals, &nulls, &key);
    let (pk, old) = if direct.is_some() && !rls {
        (direct, None)
    } else {
        let mut fields = row_object(rel, tuple);
        let pk = direct.unwrap_or_else(|| {
            let atts = attrs(tupdesc);
            let obj = key
                .iter()
                .map(|&i| {
                    let name = attname(&atts[i]);
                    let v = fields.get(name).cloned().unwrap_or(serde_json::Value::Null);
                    (name.to_string(), v)
                })
                .collect();
            key_text_of(obj)
        });
        let old = rls.then(|| {
            fields.remove(XID_COL);
            fields.remove(VER_COL);
            jsonb_datum(&serde_json::Value::Object(fields).to_string())
        });
        (Some(pk), old)
    };
    let pk = pk.unwrap_or_default();
    let pk_text = pg_sys::cstring_to_text_with_len(pk.as_ptr().cast(), pk.len() as i32);

    let nsp = pg_sys::get_namespace_oid(c"pg_sync".as_ptr(), false);
    let tombs = pg_sys::get_relname_relid(c"tombstones".as_ptr(), nsp);
    if tombs == pg_sys::Oid::INVALID {
        error!("pg_sync: catalog table pg_sync.tombstones is missing");
    }
    let trel = pg_sys::table_open(tombs, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
    let tdesc = (*trel).rd_att;
    let n = (*tdesc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0usize); n];
    let mut tnulls = vec![true; n];
    // By name: upgraded catalogs order the columns differently.
    for (i, a) in attrs(tdesc).iter().enumerate() {
        if a.attisdropped {
            continue;
        }
        let v = match attname(a) {
            "relid" => Some(pg_sys::Datum::from(relid)),
            "pk" => Some(pg_sys::Datum::from(pk_text)),
            "xid" => Some(pg_sys::Datum::from(pg_sys::GetTopFullTransactionId().value)),
            "hlc" => Some(pg_sys::Datum::from(hlc.as_i64())),
            "old" => old,
            "at" => Some(pg_sys::Datum::from(
                pg_sys::GetCurrentTransactionStartTimestamp(),
            )),
            _ => None,
        };
        if let Some(v) = v {
            values[i] = v;
            tnulls[i] = false;
        }
    }
    let tup = pg_sys::heap_form_tuple(tdesc, values.as_mut_ptr(), tnulls.as_mut_ptr());
    pg_sys::CatalogTupleInsert(trel, tup);
    pg_sys::heap_freetuple(tup);
    pg_sys::table_close(trel, pg_sys::NoLock as pg_sys::LOCKMODE);
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Deletes every row of `table` and returns how many of Postgres' own
    /// key texts (`jsonb_build_object(<pairs>)::text` of the rows) no
    /// tombstone carries, and how many tombstones the table has.
    fn delete_all_and_compare(table: &str, pairs: &str) -> (Option<i64>, Option<i64>) {
        Spi::run(&format!(
            "CREATE TEMP TABLE want_{table} AS \
             SELECT jsonb_build_object({pairs})::text AS pk FROM {table}"
        ))
        .unwrap();
        Spi::run(&format!("DELETE FROM {table}")).unwrap();
        let missing = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM (SELECT pk FROM want_{table} EXCEPT \
             SELECT pk FROM pg_sync.tombstones WHERE relid = '{table}'::regclass) x"
        ))
        .unwrap();
        let n = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM pg_sync.tombstones WHERE relid = '{table}'::regclass"
        ))
        .unwrap();
        (missing, n)
    }

    /// Every key written straight from the tuple equals Postgres' own
    /// `jsonb_build_object(...)::text` of the deleted row's key.
    #[pg_test]
    fn direct_key_text_is_postgres_own() {
        Spi::run(
            "CREATE TABLE t_keys (b int8, aa text, ccc uuid, d int2, ee varchar, f int4, \
             v text, PRIMARY KEY (b, aa, ccc, d, ee, f))",
        )
        .unwrap();
        Spi::run("SELECT sync_enable('t_keys')").unwrap();
        Spi::run(
            "INSERT INTO t_keys SELECT -9223372036854775808 + n, s, \
             md5(s)::uuid, (-32768 + n)::int2, s || 'é', 2147483647 - n, 'x' \
             FROM unnest(ARRAY['a\"b', 'back\\slash', E'nl\\n tab\\t cr\\r', \
             E'\\x01\\x1f\\x7f', E'bs\\b ff\\f', '😀 ünï', '', repeat('k', 3000)]) \
             WITH ORDINALITY u(s, n)",
        )
        .unwrap();
        let (diff, n) = delete_all_and_compare(
            "t_keys",
            "'b', b, 'aa', aa, 'ccc', ccc, 'd', d, 'ee', ee, 'f', f",
        );
        assert_eq!((diff, n), (Some(0), Some(8)));
    }

    /// A key of another type (numeric, a date) goes through Postgres'
    /// rendering and gives the same text.
    #[pg_test]
    fn rendered_key_text_is_postgres_own() {
        Spi::run("CREATE TABLE t_keys2 (n numeric, d date, v text, PRIMARY KEY (n, d))").unwrap();
        Spi::run("SELECT sync_enable('t_keys2')").unwrap();
        Spi::run(
            "INSERT INTO t_keys2 VALUES (1.50, '2026-01-02', 'x'), (-1e20, '1999-12-31', 'y')",
        )
        .unwrap();
        let (diff, _) = delete_all_and_compare("t_keys2", "'n', n, 'd', d");
        assert_eq!(diff, Some(0));
    }
}
