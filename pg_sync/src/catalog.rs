//! What pg_sync knows about a synced table: its columns, key, options and
//! wire name, read from `pg_sync.tables` and the system catalogs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use pgrx::pg_sys;
use serde::Deserialize;
use sync_core::merge::Strategy;
use sync_core::schema::{ColumnDef, ColumnType, DeletePolicy, Schema, TableDef, WriteMode};
use sync_core::wire::FORMAT;

use crate::error::{PgSyncError, Result};
use crate::spi_util::{ident, rows};

/// Name of the hidden column holding the writing transaction id.
pub const XID_COL: &str = "_sync_xid";
/// Name of the hidden column holding per-column versions (by attnum).
pub const VER_COL: &str = "_sync_ver";

/// Per-column options given to `sync_enable`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnOptions {
    /// Merge strategy of the column.
    pub strategy: Option<Strategy>,
}

/// Options given to `sync_enable(tbl, options)`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableOptions {
    /// `optimistic` (default) or `confirmed`.
    #[serde(default)]
    pub mode: WriteMode,
    /// Default strategy of the table's columns.
    #[serde(default)]
    pub strategy: Strategy,
    /// `delete_wins` (default) or `resurrect`.
    #[serde(default)]
    pub on_delete: DeletePolicy,
    /// Per-column options.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnOptions>,
}

impl TableOptions {
    /// Parses options JSON, naming what is wrong.
    pub fn parse(json: &str) -> Result<TableOptions> {
        serde_json::from_str(json).map_err(|e| PgSyncError::BadOptions(e.to_string()))
    }
}

/// One synced column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Attribute number (1-based); index into the version array.
    pub attnum: usize,
    /// Name.
    pub name: String,
    /// SQL type as `format_type` prints it.
    pub sql_type: String,
    /// Wire type.
    pub ty: ColumnType,
    /// NOT NULL or not.
    pub nullable: bool,
    /// Whether the column has a default.
    pub has_default: bool,
    /// Merge strategy.
    pub strategy: Strategy,
}

/// A synced table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Table oid.
    pub relid: pg_sys::Oid,
    /// Wire name (the unqualified table name).
    pub name: String,
    /// Quoted, schema-qualified name for SQL.
    pub qualified: String,
    /// Primary key columns in key order.
    pub pk: Vec<String>,
    /// Synced columns in attnum order (hidden columns excluded).
    pub columns: Vec<Column>,
    /// Options.
    pub options: TableOptions,
    /// A stable hash of the synced columns' names and types: a cursor
    /// that pulled the table with other columns reads it again.
    pub signature: u64,
    /// When sync was enabled (microseconds since 2000-01-01; 0 while being
    /// enabled): a table disabled and enabled again starts its streams over.
    pub enabled: i64,
}

impl TableInfo {
    /// Whether `name` is a primary key column.
    pub fn is_pk(&self, name: &str) -> bool {
        self.pk.iter().any(|k| k == name)
    }

    /// Looks a column up by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `pg_catalog.json_build_object('c1', t."c1", ...)` over the synced columns, or
    /// over `names` when given.
    pub fn json_object_expr(&self, alias: &str, names: &[&str]) -> String {
        let parts: Vec<String> = names
            .iter()
            .map(|n| format!("{}, {alias}.{}", crate::spi_util::literal(n), ident(n)))
            .collect();
        if parts.len() <= 50 {
            format!("pg_catalog.json_build_object({})", parts.join(", "))
        } else {
            let cols: Vec<String> = names
                .iter()
                .map(|n| format!("{alias}.{}", ident(n)))
                .collect();
            format!(
                "(SELECT pg_catalog.row_to_json(r) FROM (SELECT {}) r)",
                cols.join(", ")
            )
        }
    }

    /// JSON object of the whole synced row.
    pub fn row_expr(&self, alias: &str) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        self.json_object_expr(alias, &names)
    }

    /// JSON object of the primary key.
    pub fn pk_expr(&self, alias: &str) -> String {
        let names: Vec<&str> = self.pk.iter().map(String::as_str).collect();
        self.json_object_expr(alias, &names)
    }

    /// `(alias."k1", alias."k2")` over the key columns.
    pub fn pk_tuple(&self, alias: &str) -> String {
        let cols: Vec<String> = self
            .pk
            .iter()
            .map(|k| format!("{alias}.{}", ident(k)))
            .collect();
        format!("({})", cols.join(", "))
    }

    /// `(($n::jsonb->>'k1')::type1, ...)`: the key read from a JSON parameter.
    pub fn pk_from_json_param(&self, param: &str) -> String {
        let cols: Vec<String> = self
            .pk
            .iter()
            .map(|k| {
                let ty = self
                    .column(k)
                    .map(|c| c.sql_type.as_str())
                    .unwrap_or("text");
                format!("({param}::jsonb->>{})::{ty}", crate::spi_util::literal(k))
            })
            .collect();
        format!("({})", cols.join(", "))
    }

    /// The table as `sync_core::decide` needs it.
    pub fn rules(&self) -> sync_core::decide::Table {
        sync_core::decide::Table {
            name: self.name.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| sync_core::decide::Column {
                    name: c.name.clone(),
                    slot: c.attnum - 1,
                    strategy: c.strategy,
                    pk: self.is_pk(&c.name),
                    fills_null: !c.nullable && c.has_default,
                })
                .collect(),
            on_delete: self.options.on_delete,
        }
    }

    /// The wire definition of the table.
    pub fn table_def(&self) -> TableDef {
        TableDef {
            name: self.name.clone(),
            pk: self.pk.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| ColumnDef {
                    name: c.name.clone(),
                    ty: c.ty,
                    nullable: c.nullable,
                    strategy: c.strategy,
                })
                .collect(),
            mode: self.options.mode,
            on_delete: self.options.on_delete,
        }
    }
}

/// Maps a Postgres type (of the base type of a domain) to a wire type.
pub fn column_type(typname: &str, typcategory: &str) -> ColumnType {
    if typcategory == "A" {
        return ColumnType::Json;
    }
    match typname {
        "int2" | "int4" | "int8" | "oid" => ColumnType::Integer,
        "float4" | "float8" => ColumnType::Real,
        "numeric" => ColumnType::Numeric,
        "bool" => ColumnType::Boolean,
        "timestamptz" => ColumnType::Timestamptz,
        "timestamp" => ColumnType::Timestamp,
        "date" => ColumnType::Date,
        "json" | "jsonb" => ColumnType::Json,
        "bytea" => ColumnType::Blob,
        _ => ColumnType::Text,
    }
}

/// Primary key columns of a table, in key order (empty when it has none).
pub fn primary_key(relid: pg_sys::Oid) -> Result<Vec<String>> {
    let r = rows(
        "SELECT a.attname::text FROM pg_catalog.pg_index i \
         CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
        &[relid.into()],
    )?;
    Ok(r.into_iter()
        .filter_map(|mut row| row.swap_remove(0))
        .collect())
}

/// Loads the description of a table from the catalogs. `options` are the
/// table's sync options (from `pg_sync.tables` or about to be stored there).
pub fn describe(relid: pg_sys::Oid, options: TableOptions) -> Result<TableInfo> {
    let head = rows(
        "SELECT c.relname::text, pg_catalog.format('%I.%I', n.nspname, c.relname) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[relid.into()],
    )?;
    let Some(head) = head.into_iter().next() else {
        return Err(PgSyncError::BadArgument(format!(
            "relation with oid {relid:?} does not exist"
        )));
    };
    let name = head[0].clone().unwrap_or_default();
    let qualified = head[1].clone().unwrap_or_default();
    let pk = primary_key(relid)?;
    if pk.is_empty() {
        return Err(PgSyncError::NoPrimaryKey(crate::spi_util::ident(&name)));
    }
    let cols = rows(
        "SELECT a.attnum::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                bt.typname::text, bt.typcategory::text, a.attnotnull::text, a.atthasdef::text \
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attname NOT IN ('_sync_xid', '_sync_ver') ORDER BY a.attnum",
        &[relid.into()],
    )?;
    let mut columns = Vec::with_capacity(cols.len());
    for c in cols {
        let get = |i: usize| c[i].clone().unwrap_or_default();
        let name = get(1);
        let strategy = options
            .columns
            .get(&name)
            .and_then(|o| o.strategy)
            .unwrap_or(options.strategy);
        columns.push(Column {
            attnum: get(0).parse().unwrap_or(0),
            ty: column_type(&get(3), &get(4)),
            sql_type: get(2),
            nullable: get(5) != "true",
            has_default: get(6) == "true",
            strategy,
            name,
        });
    }
    for col in options.columns.keys() {
        if !columns.iter().any(|c| &c.name == col) {
            return Err(PgSyncError::BadOptions(format!(
                "table {name} has no column {col:?}"
            )));
        }
    }
    Ok(TableInfo {
        relid,
        name,
        qualified,
        pk,
        signature: column_signature(&columns),
        columns,
        options,
        enabled: 0,
    })
}

/// The synced tables as read at a schema version and invalidation
/// generation.
type TablesAt = (i64, u64, Rc<Vec<TableInfo>>);

thread_local! {
    /// The synced tables as last read.
    static TABLES: RefCell<Option<TablesAt>> = const { RefCell::new(None) };
    /// The relids of [`TABLES`]: invalidations of other relations keep it.
    static RELIDS: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
    /// Raised by every invalidation that may change a synced table's
    /// description (its relation, a schema, a type).
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// Relcache invalidation: a synced table changed (or all relations did).
unsafe extern "C-unwind" fn on_relcache(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // While the set is being rebuilt (borrowed), count every invalidation.
    let ours = RELIDS.with(|r| {
        r.try_borrow().map_or(true, |r| {
            relid == pg_sys::Oid::INVALID || r.contains(&u32::from(relid))
        })
    });
    if ours {
        GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
    }
}

/// Syscache invalidation of a schema or a type (a rename changes the
/// qualified names and the column types pulls use).
unsafe extern "C-unwind" fn on_syscache(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

/// Registers the invalidation callbacks of the table cache (once, at load).
pub fn register_invalidation() {
    // SAFETY: called from _PG_init; the callbacks only bump a counter.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache), pg_sys::Datum::from(0usize));
        for cache in [
            pg_sys::SysCacheIdentifier::NAMESPACEOID,
            pg_sys::SysCacheIdentifier::TYPEOID,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(on_syscache),
                pg_sys::Datum::from(0usize),
            );
        }
    }
}

/// All synced tables, parents before children (by foreign keys), then by
/// name. Kept for the backend between calls until the schema version moves
/// (sync_enable, sync_disable, ALTER TABLE of a synced table) or Postgres
/// invalidates one of the tables, a schema or a type.
pub fn synced_tables() -> Result<Rc<Vec<TableInfo>>> {
    let version = schema_version()?;
    let generation = GENERATION.with(Cell::get);
    let cached = TABLES.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(v, g, _)| *v == version && *g == generation)
            .map(|(_, _, t)| t.clone())
    });
    if let Some(t) = cached {
        return Ok(t);
    }
    let tables = Rc::new(read_synced_tables()?);
    RELIDS.with(|r| *r.borrow_mut() = tables.iter().map(|t| u32::from(t.relid)).collect());
    TABLES.with(|c| *c.borrow_mut() = Some((version, generation, tables.clone())));
    Ok(tables)
}

/// Reads the synced tables from the catalogs.
fn read_synced_tables() -> Result<Vec<TableInfo>> {
    let r = rows(
        "WITH RECURSIVE deps(relid, depth) AS ( \
             SELECT relid::pg_catalog.oid, 0 FROM pg_sync.tables \
             UNION ALL \
             SELECT c.conrelid, d.depth + 1 FROM deps d \
             JOIN pg_catalog.pg_constraint c ON c.contype = 'f' AND c.confrelid = d.relid AND c.conrelid <> d.relid \
             WHERE d.depth < 32) \
         SELECT t.relid::pg_catalog.oid::pg_catalog.text, t.options::text, \
                (pg_catalog.extract('epoch', t.enabled_at) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8::pg_catalog.text \
         FROM pg_sync.tables t \
         JOIN (SELECT relid, pg_catalog.max(depth) AS depth FROM deps GROUP BY relid) d \
           ON d.relid = t.relid::pg_catalog.oid \
         ORDER BY d.depth, t.name",
        &[],
    )?;
    let mut out = Vec::with_capacity(r.len());
    for row in r {
        let relid: u32 = row[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
        let options = TableOptions::parse(row[1].as_deref().unwrap_or("{}"))?;
        let mut t = describe(pg_sys::Oid::from(relid), options)?;
        t.enabled = row[2].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        out.push(t);
    }
    Ok(out)
}

/// A stable hash of columns' names and types (FNV-1a).
fn column_signature(columns: &[Column]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in columns {
        for b in c
            .name
            .bytes()
            .chain([0u8])
            .chain(c.sql_type.bytes())
            .chain([1u8])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Moves the schema version on (devices receive the schema again).
pub fn bump_schema_version() -> Result<()> {
    crate::spi_util::exec(
        "UPDATE pg_sync.meta SET schema_version = schema_version + 1",
        &[],
    )
}

/// The current schema version.
pub fn schema_version() -> Result<i64> {
    Ok(
        crate::spi_util::one_cached("SELECT schema_version::text FROM pg_sync.meta", &[])?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    )
}

/// The synced schema as clients receive it, with the streams they may
/// subscribe to.
pub fn schema(tables: &[TableInfo], streams: Vec<sync_core::streams::StreamDef>) -> Result<Schema> {
    Ok(Schema {
        format: FORMAT,
        version: schema_version()?,
        tables: tables.iter().map(TableInfo::table_def).collect(),
        streams,
    })
}

/// Fails with an actionable message when the database's pg_sync catalog is
/// older than the installed binaries (ALTER EXTENSION pg_sync UPDATE not run).
pub fn require_current_catalog() -> Result<()> {
    let installed = crate::spi_util::one_cached(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_sync'",
        &[],
    )?
    .unwrap_or_default();
    let built = env!("CARGO_PKG_VERSION");
    if installed != built {
        return Err(PgSyncError::BadArgument(format!(
            "this database has the pg_sync {installed} catalog but the {built} binaries are installed; \
             run ALTER EXTENSION pg_sync UPDATE"
        )));
    }
    Ok(())
}
