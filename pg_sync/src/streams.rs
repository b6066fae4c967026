//! Streams: `sync_stream` / `sync_stream_drop` and the definitions pulls
//! read (`pg_sync.streams`).
//!
//! A stream is a named filter over one synced table, written by the DBA in
//! SQL with `:name` placeholders. At definition the placeholders become
//! typed parameters (`($n::text::<type>)`, the type inferred by Postgres
//! from the filter), so a device's values are never SQL text. The tables
//! the filter reads besides its own, and whether it reads the clock, are
//! recorded: a write to one of those tables (or time passing) can move rows
//! in or out of a subscription without writing them, so pulls then send
//! the subscription's full key list (see `pull.rs`).

use pgrx::prelude::*;
use pgrx::JsonB;
use sync_core::streams::{StreamDef, StreamParam};

use crate::catalog::{self, TableInfo};
use crate::error::{or_raise, PgSyncError, Result};
use crate::spi_util::{exec, one, rows, rows_cached};

/// Longest stream name, in bytes.
const MAX_NAME_BYTES: usize = 63;
/// Most parameters of a stream.
const MAX_PARAMS: usize = 16;

/// A stream as pulls use it.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Name.
    pub name: String,
    /// Its table.
    pub relid: pg_sys::Oid,
    /// The filter with typed parameters `$1..$n` (in `params` order).
    pub sql: String,
    /// Parameter names and types.
    pub def: StreamDef,
    /// Tables the filter reads whose writes can move rows in or out.
    pub deps: Vec<u32>,
    /// The filter reads the clock (or another non-immutable function).
    pub volatile: bool,
    /// Identity of the definition (table and typed filter): subscriptions
    /// made under another definition of the same name start over.
    pub ident: u64,
}

/// The streams defined, by name (none before the catalog has them).
pub fn load(tables: &[TableInfo]) -> Result<Vec<Stream>> {
    if !has_catalog()? {
        return Ok(Vec::new());
    }
    let r = rows_cached(
        "SELECT s.name, s.relid::pg_catalog.oid::pg_catalog.text, s.sql, s.params::pg_catalog.text, \
                (SELECT pg_catalog.array_agg(pg_catalog.format_type(x, NULL) ORDER BY o) \
                   FROM pg_catalog.unnest(s.types::pg_catalog.oid[]) WITH ORDINALITY u(x, o))::pg_catalog.text, \
                s.deps::pg_catalog.oid[]::pg_catalog.text, s.volatile::pg_catalog.text \
         FROM pg_sync.streams s ORDER BY s.name",
        &[],
    )?;
    let mut out = Vec::with_capacity(r.len());
    for row in r {
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let relid: u32 = get(1).parse().unwrap_or(0);
        let Some(t) = tables.iter().find(|t| u32::from(t.relid) == relid) else {
            continue;
        };
        let names = text_array(&get(3));
        let types = text_array(&get(4));
        let params = names
            .into_iter()
            .zip(types)
            .map(|(name, sql_type)| StreamParam {
                name,
                ty: wire_type(&sql_type),
                sql_type,
            })
            .collect();
        let ident = {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in relid.to_le_bytes().iter().chain(get(2).as_bytes()) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h.max(1)
        };
        out.push(Stream {
            ident,
            name: get(0),
            relid: t.relid,
            sql: get(2),
            def: StreamDef {
                name: get(0),
                table: t.name.clone(),
                params,
            },
            deps: text_array(&get(5))
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect(),
            volatile: get(6) == "true",
        });
    }
    Ok(out)
}

/// Whether the catalog has `pg_sync.streams` (0.5.0 and later).
fn has_catalog() -> Result<bool> {
    Ok(crate::spi_util::one_cached(
        "SELECT (pg_catalog.to_regclass('pg_sync.streams') IS NOT NULL)::pg_catalog.text",
        &[],
    )?
    .as_deref()
        == Some("true"))
}

/// The elements of a one-dimensional text array literal (`{a,"b c"}`).
fn text_array(s: &str) -> Vec<String> {
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut esc, mut any) = (false, false, false);
    for ch in inner.chars() {
        if esc {
            cur.push(ch);
            esc = false;
        } else if ch == '\\' {
            esc = true;
        } else if ch == '"' {
            quoted = !quoted;
            any = true;
        } else if ch == ',' && !quoted {
            out.push(std::mem::take(&mut cur));
            any = false;
        } else {
            cur.push(ch);
            any = true;
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The wire type of a parameter's SQL type (as `format_type` prints it).
fn wire_type(sql_type: &str) -> sync_core::schema::ColumnType {
    use sync_core::schema::ColumnType;
    let base = sql_type.split('(').next().unwrap_or("").trim();
    if base.ends_with("[]") {
        return ColumnType::Json;
    }
    match base {
        "smallint" | "integer" | "bigint" | "oid" => ColumnType::Integer,
        "real" | "double precision" => ColumnType::Real,
        "numeric" => ColumnType::Numeric,
        "boolean" => ColumnType::Boolean,
        "timestamp with time zone" => ColumnType::Timestamptz,
        "timestamp without time zone" => ColumnType::Timestamp,
        "date" => ColumnType::Date,
        "json" | "jsonb" => ColumnType::Json,
        "bytea" => ColumnType::Blob,
        _ => ColumnType::Text,
    }
}

/// One token kind of a filter scan.
enum Piece<'a> {
    /// SQL text kept as it is.
    Sql(&'a str),
    /// A `:name` placeholder.
    Param(&'a str),
}

/// Splits a filter into SQL text and `:name` placeholders, skipping
/// string literals, quoted identifiers, dollar quotes, comments and `::`
/// casts. Also reports whether the text names the clock.
fn scan(filter: &str) -> Result<(Vec<Piece<'_>>, Vec<String>)> {
    let b = filter.as_bytes();
    let mut out = Vec::new();
    let mut words = Vec::new();
    let (mut i, mut start, mut depth) = (0usize, 0usize, 0usize);
    let unterminated =
        |what: &str| PgSyncError::BadArgument(format!("the filter has an unterminated {what}"));
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                loop {
                    if i >= b.len() {
                        return Err(unterminated("quote"));
                    }
                    if b[i] == q {
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = filter[i + 2..]
                    .find("*/")
                    .ok_or_else(|| unterminated("comment"))?;
                i += end + 4;
            }
            b'$' => {
                // A dollar quote $tag$...$tag$ (a bare $n is refused below).
                let tag_end = filter[i + 1..].find('$').map(|e| i + 1 + e);
                let tag_ok = tag_end.is_some_and(|e| {
                    filter[i + 1..e]
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_')
                        && !filter[i + 1..e].starts_with(|c: char| c.is_ascii_digit())
                });
                match tag_end {
                    Some(e) if tag_ok => {
                        let tag = &filter[i..=e];
                        let close = filter[e + 1..]
                            .find(tag)
                            .ok_or_else(|| unterminated("dollar quote"))?;
                        i = e + 1 + close + tag.len();
                    }
                    _ => {
                        return Err(PgSyncError::BadArgument(
                            "the filter uses $n parameters; name them :name instead".into(),
                        ))
                    }
                }
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let s = i + 1;
                let mut e = s;
                while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                    e += 1;
                }
                out.push(Piece::Sql(&filter[start..i]));
                out.push(Piece::Param(&filter[s..e]));
                i = e;
                start = e;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                words.push(filter[s..i].to_ascii_lowercase());
            }
            b';' => {
                return Err(PgSyncError::BadArgument(
                    "a filter is one expression; it may not contain ';'".into(),
                ))
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                if depth == 0 {
                    return Err(PgSyncError::BadArgument(
                        "the filter closes a parenthesis it did not open".into(),
                    ));
                }
                depth -= 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if depth != 0 {
        return Err(unterminated("parenthesis"));
    }
    out.push(Piece::Sql(&filter[start..]));
    Ok((out, words))
}

/// `sync_stream(name, tbl, filter) RETURNS jsonb`: defines a stream.
#[pg_extern(sql = r#"
CREATE FUNCTION sync_stream(name text, tbl regclass, filter text) RETURNS jsonb
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'sync_stream_wrapper';
REVOKE EXECUTE ON FUNCTION sync_stream(text, regclass, text) FROM PUBLIC;
"#, requires = ["bootstrap"])]
fn sync_stream(name: &str, tbl: pg_sys::Oid, filter: &str) -> JsonB {
    JsonB(or_raise(define(name, tbl, filter)))
}

/// `sync_stream_drop(name) RETURNS boolean`: removes a stream; devices'
/// subscriptions to it end and their rows leave at the next pull.
#[pg_extern(sql = r#"
CREATE FUNCTION sync_stream_drop(name text) RETURNS boolean
STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'sync_stream_drop_wrapper';
REVOKE EXECUTE ON FUNCTION sync_stream_drop(text) FROM PUBLIC;
"#, requires = ["bootstrap"])]
fn sync_stream_drop(name: &str) -> bool {
    or_raise(drop_stream(name))
}

fn drop_stream(name: &str) -> Result<bool> {
    let gone = crate::spi_util::write_one(
        "DELETE FROM pg_sync.streams WHERE name = $1 RETURNING name",
        &[name.into()],
    )?;
    if gone.is_none() {
        return Err(PgSyncError::BadArgument(format!(
            "there is no stream {name:?}"
        )));
    }
    catalog::bump_schema_version()?;
    Ok(true)
}

fn define(name: &str, relid: pg_sys::Oid, filter: &str) -> Result<serde_json::Value> {
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
        return Err(PgSyncError::BadArgument(format!(
            "a stream name is 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    let tables = catalog::synced_tables()?;
    let Some(t) = tables.iter().find(|t| t.relid == relid) else {
        let shown = one("SELECT $1::regclass::text", &[relid.into()])?.unwrap_or_default();
        return Err(PgSyncError::NotSynced(shown));
    };
    if one(
        "SELECT name FROM pg_sync.streams WHERE name = $1",
        &[name.into()],
    )?
    .is_some()
    {
        return Err(PgSyncError::BadArgument(format!(
            "stream {name:?} exists; drop it with sync_stream_drop first"
        )));
    }
    let (pieces, words) = scan(filter)?;
    let mut names: Vec<String> = Vec::new();
    for p in &pieces {
        if let Piece::Param(n) = p {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
    }
    if names.len() > MAX_PARAMS {
        return Err(PgSyncError::BadArgument(format!(
            "a stream has at most {MAX_PARAMS} parameters"
        )));
    }
    let numbered = |f: &dyn Fn(usize) -> String| -> String {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Sql(s) => s.to_string(),
                Piece::Param(n) => f(names.iter().position(|x| x == n).unwrap_or(0)),
            })
            .collect()
    };
    // Postgres infers each parameter's type from where the filter uses it.
    let probe = numbered(&|k| format!("${}", k + 1));
    let types = infer_types(t, &probe)?;
    if let Some((n, _)) = names
        .iter()
        .zip(&types)
        .find(|(_, ty)| ty.as_str() == "unknown")
    {
        return Err(PgSyncError::BadArgument(format!(
            "the type of :{n} cannot be inferred from the filter; write :{n}::<type>"
        )));
    }
    let sql = numbered(&|k| format!("(${}::pg_catalog.text::{})", k + 1, types[k]));
    let (deps, volatile_fn) = dependencies(t, &numbered(&|k| format!("NULL::{}", types[k])))?;
    let reads_clock = words.iter().any(|w| {
        matches!(
            w.as_str(),
            "now"
                | "current_date"
                | "current_time"
                | "current_timestamp"
                | "localtime"
                | "localtimestamp"
                | "clock_timestamp"
                | "statement_timestamp"
                | "transaction_timestamp"
        )
    });
    // A subquery may read the stream's own table (under any name): then a
    // write to one row can move others, so the table counts as one the
    // filter reads.
    let reads_itself = words.iter().any(|w| w == "select");
    let mut dep_oids: Vec<u32> = deps;
    if reads_itself && !dep_oids.contains(&u32::from(t.relid)) {
        dep_oids.push(u32::from(t.relid));
    }
    let volatile = volatile_fn || reads_clock;
    let oid_array = format!(
        "{{{}}}",
        dep_oids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    exec(
        "INSERT INTO pg_sync.streams (name, relid, filter, sql, params, types, deps, volatile) \
         VALUES ($1, $2, $3, $4, $5::text[], $6::text[]::regtype[], $7::text::oid[]::regclass[], $8)",
        &[
            name.into(),
            relid.into(),
            filter.into(),
            sql.into(),
            names.clone().into(),
            types.clone().into(),
            oid_array.clone().into(),
            volatile.into(),
        ],
    )?;
    catalog::bump_schema_version()?;
    let reads: Vec<String> = rows(
        "SELECT d::regclass::text FROM pg_catalog.unnest($1::text::oid[]) d",
        &[oid_array.into()],
    )?
    .into_iter()
    .filter_map(|mut r| r.swap_remove(0))
    .collect();
    Ok(serde_json::json!({
        "name": name,
        "table": t.name,
        "params": names.iter().zip(&types).map(|(n, ty)| serde_json::json!({"name": n, "type": ty})).collect::<Vec<_>>(),
        "reads": reads,
        "volatile": volatile,
    }))
}

/// The types Postgres infers for `$1..$n` in the filter (through a
/// prepared statement of the session, removed again).
fn infer_types(t: &TableInfo, filter: &str) -> Result<Vec<String>> {
    const PROBE: &str = "pg_sync_stream_probe";
    let exists = |name: &str| -> Result<bool> {
        Ok(one(
            "SELECT name FROM pg_catalog.pg_prepared_statements WHERE name = $1",
            &[name.into()],
        )?
        .is_some())
    };
    if exists(PROBE)? {
        exec(&format!("DEALLOCATE {PROBE}"), &[])?;
    }
    exec(
        &format!(
            "PREPARE {PROBE} AS SELECT 1 FROM {} t WHERE ({filter})",
            t.qualified
        ),
        &[],
    )
    .map_err(|e| PgSyncError::BadArgument(format!("the filter does not compile: {e}")))?;
    let types = rows(
        "SELECT pg_catalog.format_type(x, NULL) FROM pg_catalog.pg_prepared_statements p, \
                pg_catalog.unnest(p.parameter_types::pg_catalog.oid[]) WITH ORDINALITY u(x, o) \
         WHERE p.name = $1 ORDER BY o",
        &[PROBE.into()],
    );
    exec(&format!("DEALLOCATE {PROBE}"), &[])?;
    Ok(types?
        .into_iter()
        .filter_map(|mut r| r.swap_remove(0))
        .collect())
}

/// The other tables the filter reads and whether it calls a function that
/// is not immutable (through a temporary view and its dependencies).
fn dependencies(t: &TableInfo, filter: &str) -> Result<(Vec<u32>, bool)> {
    const VIEW: &str = "pg_sync_stream_probe_v";
    // A view left by an earlier call that failed half-way. Looked up first:
    // `DROP ... IF EXISTS pg_temp.x` in a session without temporary
    // objects yet sends the caller a notice that pg_temp does not exist.
    let left = rows(
        &format!(
            "SELECT c.relkind::text FROM pg_catalog.pg_class c \
             WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('pg_temp.{VIEW}')"
        ),
        &[],
    )?;
    match left.first().and_then(|r| r.first()).cloned().flatten() {
        None => {}
        Some(kind) if kind == "v" => exec(&format!("DROP VIEW pg_temp.{VIEW}"), &[])?,
        Some(_) => {
            return Err(PgSyncError::BadArgument(format!(
                "pg_temp.{VIEW} exists in this session and is not a view; \
                 sync_stream needs that name for a moment: drop it and call again"
            )))
        }
    }
    exec(
        &format!(
            "CREATE TEMP VIEW {VIEW} AS SELECT 1 AS one FROM {} t WHERE ({filter})",
            t.qualified
        ),
        &[],
    )
    .map_err(|e| PgSyncError::BadArgument(format!("the filter does not compile: {e}")))?;
    let r = rows(
        "SELECT (SELECT pg_catalog.array_agg(DISTINCT d.refobjid)::text FROM pg_catalog.pg_depend d \
                 JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid \
                 JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                   AND w.ev_class = $1::pg_catalog.regclass AND d.refobjid <> w.ev_class \
                   AND d.refobjid <> $2), \
                (SELECT coalesce(pg_catalog.bool_or(p.provolatile <> 'i'), false)::text \
                 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid \
                 LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass \
                      AND o.oid = d.refobjid \
                 JOIN pg_catalog.pg_proc p ON p.oid = CASE \
                      WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d.refobjid \
                      ELSE o.oprcode::pg_catalog.oid END \
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                   AND w.ev_class = $1::pg_catalog.regclass)",
        &[format!("pg_temp.{VIEW}").into(), t.relid.into()],
    );
    exec(&format!("DROP VIEW IF EXISTS pg_temp.{VIEW}"), &[])?;
    let r = r?;
    let row = r.into_iter().next().unwrap_or_default();
    let deps = row
        .first()
        .cloned()
        .flatten()
        .map(|s| {
            text_array(&s)
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let volatile = row.get(1).cloned().flatten().as_deref() == Some("true");
    Ok((deps, volatile))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::{scan, Piece};

    #[pgrx::pg_test]
    fn placeholders_skip_quotes_casts_and_comments() {
        let (p, words) = scan(
            "project_id = :project_id AND note <> ':not' AND x::text = :y -- :c\n AND \"a:b\" = :project_id",
        )
        .unwrap();
        let params: Vec<&str> = p
            .iter()
            .filter_map(|p| match p {
                Piece::Param(n) => Some(*n),
                Piece::Sql(_) => None,
            })
            .collect();
        assert_eq!(params, vec!["project_id", "y", "project_id"]);
        assert!(words.contains(&"and".to_string()));
        assert!(scan("a = 1; DROP TABLE t").is_err());
        assert!(scan("a = $1").is_err());
        assert!(scan("a = 'open").is_err());
        assert!(scan("a = 1) OR (true").is_err());
        assert!(scan("(a = 1").is_err());
    }
}
