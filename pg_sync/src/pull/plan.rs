//! Planning one table's part of a pull page: which changes fit (by count
//! and by bytes), the statements that render them, and the positions that
//! follow. Used for tables synced whole and, with a filter, for streams.

use crate::catalog::TableInfo;
use crate::error::Result;
use crate::spi_stream::stream_rows;
use crate::spi_util::{ident, one_cached, rows_ro_args, Args};
use sync_core::cursor::{Pos, TablePos};
use sync_core::wire::page::block_head;
use sync_core::wire::PullOp;

/// How a page renders its changes (see `sync_core::wire::page`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// Format 1: one JSON object per change.
    Entries,
    /// Format 2: per table and kind a block, the rows as arrays.
    Blocks,
}

impl Form {
    /// The page's `format`.
    pub fn format(self) -> u32 {
        match self {
            Form::Entries => 1,
            Form::Blocks => 2,
        }
    }
}

/// A statement with its values, yielding one row per change of the page,
/// in page order, each placed as `outs` says.
pub struct Segment {
    /// The statement.
    pub sql: String,
    /// Its values.
    pub args: Args,
    /// Where its rows go.
    pub outs: Outs,
}

/// Where the rows of a [`Segment`] go.
pub enum Outs {
    /// Each row's only column is an element of this list.
    One(Out),
    /// Each row's first column (a boolean) chooses: true puts its second
    /// column in the first list, false its third in the second.
    Split(Out, Out),
}

/// A list of a page's changes.
pub enum Out {
    /// Page entries (format 1), spliced into `changes`.
    Entries,
    /// A block (format 2): the block's head, then its list.
    Block(String),
}

/// The byte budget of a page being planned, and its form.
pub struct PageBytes {
    left: u64,
    taken: usize,
    /// The estimated bytes of the changes taken.
    used: u64,
    /// How the page renders its changes.
    pub form: Form,
}

impl PageBytes {
    /// A budget of `kb` kilobytes for a page of `form`.
    pub fn new(kb: i32, form: Form) -> PageBytes {
        PageBytes {
            left: u64::from(kb.max(1).unsigned_abs()) * 1024,
            taken: 0,
            used: 0,
            form,
        }
    }

    /// Takes a change of `n` bytes into the page, unless the page already
    /// has a change and `n` would take it past the budget.
    pub fn take(&mut self, n: u64) -> bool {
        if self.taken > 0 && n > self.left {
            self.left = 0;
            return false;
        }
        self.left = self.left.saturating_sub(n);
        self.taken += 1;
        self.used = self.used.saturating_add(n);
        true
    }

    /// The estimated bytes of the changes taken so far.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Whether the page has a change and no bytes left.
    pub fn full(&self) -> bool {
        self.taken > 0 && self.left == 0
    }
}

/// A condition selecting a stream's entries strictly after `pos`
/// (`op` = ">") or up to and including it (`op` = "<="); the xid and the
/// key travel as parameters.
pub fn pos_cond(
    pos: &Pos,
    op: &str,
    xid_expr: &str,
    key_tuple: &str,
    key_of: &dyn Fn(&str) -> String,
    args: &mut Args,
) -> String {
    match (pos, op) {
        (Pos::Start, _) => "true".into(),
        (Pos::Below([x]), ">") => format!("{xid_expr} >= {}::pg_catalog.xid8", args.push(x)),
        (Pos::Below([x]), _) => format!("{xid_expr} < {}::pg_catalog.xid8", args.push(x)),
        (Pos::After(x, key), _) => {
            let k = match key {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let x = args.push(x);
            let k = args.push(k);
            format!(
                "({xid_expr}, {key_tuple}) {op} ({x}::pg_catalog.xid8, {})",
                key_of(&k)
            )
        }
    }
}

pub fn key_cols(t: &TableInfo) -> String {
    let cols: Vec<String> = t.pk.iter().map(|k| format!("t.{}", ident(k))).collect();
    cols.join(", ")
}

/// Live rows of `t` after (`op` ">") or up to (`op` "<=") `pos`.
pub fn rows_cond(t: &TableInfo, pos: &Pos, op: &str, args: &mut Args) -> String {
    pos_cond(
        pos,
        op,
        "t._sync_xid",
        &format!("({})", key_cols(t)),
        &|p| t.pk_from_json_param(&format!("{p}::pg_catalog.jsonb")),
        args,
    )
}

/// Tombstones after (`op` ">") or up to (`op` "<=") `pos`.
pub fn tombs_cond(pos: &Pos, op: &str, args: &mut Args) -> String {
    pos_cond(pos, op, "d.xid", "d.pk", &|p| p.to_string(), args)
}

/// A change a page may take, as [`rows_keys`] and [`tombs_keys`] list it:
/// a few numbers (a page plans up to 100,000 of them), not its text.
pub struct Listed {
    /// The xid that wrote it.
    pub xid: u64,
    /// The estimated bytes of its page entry.
    pub bytes: u64,
    /// What finds it again.
    pub id: Id,
}

/// What finds a [`Listed`] change again.
pub enum Id {
    /// A live row: its row id (block, offset) and the table it lies in.
    Row { tid: [u32; 2], rel: u32 },
    /// A tombstone: its key, as stored.
    Tomb(String),
}

/// A decimal number written as text by the statement (0 when NULL or not
/// a number).
fn num(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A row id's text `(block,offset)` as numbers.
pub fn parse_tid(s: &str) -> [u32; 2] {
    let inner = s.trim_matches(|c| c == '(' || c == ')' || c == '"');
    let mut it = inner
        .split(',')
        .map(|x| x.trim().parse::<u32>().unwrap_or(0));
    [it.next().unwrap_or(0), it.next().unwrap_or(0)]
}

/// The live rows after `pos`, below the horizon, in stream order: each
/// one's xid, row id and the estimated bytes of its page entry (see
/// [`row_bytes`]). The row id stands for the key, which only the last row
/// a page takes needs ([`key_at`]): a key rendered per row cost a quarter
/// of this statement. Read as the rows come, into a few numbers each.
pub fn rows_keys(t: &TableInfo, pos: &Pos, h: u64, limit: usize) -> Result<Vec<Listed>> {
    let mut args = Args::default();
    let sql = format!(
        "SELECT t._sync_xid::text, t.ctid::text, ({bytes})::text, t.tableoid::pg_catalog.text FROM {tbl} t \
         WHERE {cond} AND t._sync_xid < {h}::pg_catalog.xid8 ORDER BY t._sync_xid, {keys} LIMIT {limit}",
        bytes = row_bytes(t),
        tbl = t.qualified,
        cond = rows_cond(t, pos, ">", &mut args),
        h = args.push(h),
        keys = key_cols(t),
    );
    let mut out = Vec::new();
    stream_rows(&sql, &args, &mut |row| {
        let tid = row
            .bytes(1)?
            .and_then(|b| std::str::from_utf8(b).ok())
            .map_or([0, 0], parse_tid);
        out.push(Listed {
            xid: num(row.bytes(0)?),
            bytes: num(row.bytes(2)?),
            id: Id::Row {
                tid,
                rel: u32::try_from(num(row.bytes(3)?)).unwrap_or(0),
            },
        });
        Ok(())
    })?;
    Ok(out)
}

/// The primary key (as a JSON object) of the row of `t` that [`rows_keys`]
/// listed as `row` (its row id, and the table it lies in: a row id is
/// unique only within one table, and a synced table may have inheritance
/// children), read in the pull's snapshot, in which the id still names
/// that row. Should the row not be found again (a row-level security
/// policy that calls a volatile function), the key is read as the `n`th
/// (from 1) of the rows after `pos` instead.
fn key_at(t: &TableInfo, row: &Listed, pos: &Pos, h: u64, n: usize) -> Result<serde_json::Value> {
    let Id::Row { tid, rel } = &row.id else {
        return Err(crate::error::PgSyncError::Spi(format!(
            "a listed row of {} has no row id",
            t.name
        )));
    };
    let mut args = Args::default();
    let sql = format!(
        "SELECT {pk}::text FROM {tbl} t WHERE t.ctid OPERATOR(pg_catalog.=) {tid}::pg_catalog.tid \
         AND t.tableoid OPERATOR(pg_catalog.=) {rel}::pg_catalog.oid",
        pk = t.pk_expr("t"),
        tbl = t.qualified,
        tid = args.push(format!("({},{})", tid[0], tid[1])),
        rel = args.push(rel),
    );
    let mut found = rows_ro_args(&sql, &args)?;
    if found.is_empty() {
        let mut args = Args::default();
        let sql = format!(
            "SELECT {pk}::text FROM {tbl} t WHERE {cond} AND t._sync_xid < {h}::pg_catalog.xid8 \
             ORDER BY t._sync_xid, {keys} LIMIT 1 OFFSET {skip}",
            pk = t.pk_expr("t"),
            tbl = t.qualified,
            cond = rows_cond(t, pos, ">", &mut args),
            h = args.push(h),
            keys = key_cols(t),
            skip = n.saturating_sub(1),
        );
        found = rows_ro_args(&sql, &args)?;
    }
    let text = found
        .into_iter()
        .next()
        .and_then(|mut r| r.swap_remove(0))
        .ok_or_else(|| {
            crate::error::PgSyncError::Spi(format!("a row of {} left the pull's snapshot", t.name))
        })?;
    serde_json::from_str(&text)
        .map_err(|e| crate::error::PgSyncError::Spi(format!("a key of {}: {e}", t.name)))
}

/// An estimate of the bytes a row takes in a page, read without detoasting
/// anything: `octet_length` of a text or bytea value is its uncompressed
/// size, taken from its TOAST header; other values count their stored size.
/// Per column, 40 bytes for its name, quotes and version.
pub fn row_bytes(t: &TableInfo) -> String {
    let parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let col = format!("t.{}", crate::spi_util::ident(&c.name));
            match c.ty {
                sync_core::schema::ColumnType::Text => {
                    format!("coalesce(pg_catalog.octet_length({col}::pg_catalog.text), 0)")
                }
                // Hex on the wire: two characters a byte.
                sync_core::schema::ColumnType::Blob => {
                    format!("coalesce(2 OPERATOR(pg_catalog.*) pg_catalog.octet_length({col}), 0)")
                }
                _ => format!("coalesce(pg_catalog.pg_column_size({col}), 0)"),
            }
        })
        .collect();
    format!(
        "({}::pg_catalog.int8 OPERATOR(pg_catalog.+) {})",
        40 * t.columns.len() + 60,
        parts.join(" OPERATOR(pg_catalog.+) ")
    )
}

/// The filter every sent tombstone passes. A tombstone whose key exists
/// again is skipped: xids are taken at a transaction's first write, not at
/// commit, so a re-insert can carry a lower xid than the delete it
/// followed; the live row's own state is what the client must end with.
/// Under row-level security, the policy on `pg_sync.tombstones` shows the
/// caller only tombstones of rows its own policies would have let it see.
pub fn tomb_filter(t: &TableInfo, h: u64, args: &mut Args) -> String {
    format!(
        "d.relid = {relid}::pg_catalog.oid AND d.xid < {h}::pg_catalog.xid8 \
         AND NOT EXISTS (SELECT 1 FROM {tbl} t WHERE {live} = {key})",
        relid = args.push(u32::from(t.relid)),
        h = args.push(h),
        tbl = t.qualified,
        live = t.pk_tuple("t"),
        key = t.pk_from_json_param("d.pk"),
    )
}

/// Keys of the tombstones after `pos`, in stream order; each one's
/// estimated bytes are its key's and the entry's around it.
pub fn tombs_keys(t: &TableInfo, pos: &Pos, h: u64, limit: usize) -> Result<Vec<Listed>> {
    let mut args = Args::default();
    let sql = format!(
        "SELECT d.xid::text, d.pk FROM pg_sync.tombstones d WHERE {cond} AND {filter} \
         ORDER BY d.xid, d.pk LIMIT {limit}",
        cond = tombs_cond(pos, ">", &mut args),
        filter = tomb_filter(t, h, &mut args),
    );
    let mut out = Vec::new();
    stream_rows(&sql, &args, &mut |row| {
        let pk = String::from_utf8_lossy(row.bytes(1)?.unwrap_or_default()).into_owned();
        out.push(Listed {
            xid: num(row.bytes(0)?),
            bytes: 60 + pk.len() as u64,
            id: Id::Tomb(pk),
        });
        Ok(())
    })?;
    Ok(out)
}

pub fn stream_nonempty(t: &TableInfo, pos: &TablePos, h: u64) -> Result<bool> {
    Ok(!rows_keys(t, &pos.r, h, 1)?.is_empty() || !tombs_keys(t, &pos.d, h, 1)?.is_empty())
}

/// What a table's live rows become in a page.
pub enum Live<'a> {
    /// Every changed row, as an upsert (a table synced whole).
    Whole,
    /// A subscription's view of the changed rows: an upsert (with `subs`)
    /// when the row matches the stream's filter, a leave when it does not.
    Filter(&'a Filter<'a>),
}

/// A subscription's filter and its parameter values.
pub struct Filter<'a> {
    /// Subscription id.
    pub sub: u32,
    /// The stream's filter with typed parameters `$1..$n`.
    pub sql: &'a str,
    /// The parameter values as text (NULL as `None`), in order.
    pub params: &'a [Option<String>],
}

impl Filter<'_> {
    /// New arguments holding the filter's parameters as `$1..$n`.
    pub fn args(&self) -> Args {
        let mut a = Args::default();
        for p in self.params {
            a.push_opt(p.as_deref());
        }
        a
    }
}

/// The positions a plan advances: live rows and tombstones (either may be
/// absent: a stream's rows have no tombstones of their own, and a table
/// reached through streams sends only its tombstones itself).
pub struct Positions<'a> {
    /// Live rows.
    pub r: Option<&'a mut Pos>,
    /// Tombstones.
    pub d: Option<&'a mut Pos>,
}

/// Decides which changes of one table go into this page (up to `budget`,
/// live rows and tombstones merged in xid order, a tombstone before a row of
/// the same xid), advances the positions, and returns the number of
/// changes, whether more are ready, and the statements producing the
/// table's changes (each one JSON array as text).
pub fn plan_table(
    t: &TableInfo,
    pos: Positions<'_>,
    h: u64,
    budget: usize,
    bytes: &mut PageBytes,
    mode: &Live<'_>,
) -> Result<(usize, bool, Vec<Segment>)> {
    let form = bytes.form;
    let Positions {
        r: mut pos_r,
        d: mut pos_d,
    } = pos;
    let live = match pos_r.as_deref() {
        Some(p) => rows_keys(t, p, h, budget + 1)?,
        None => Vec::new(),
    };
    let tombs = match pos_d.as_deref() {
        Some(p) => tombs_keys(t, p, h, budget + 1)?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0usize, 0usize);
    while i + j < budget && (i < live.len() || j < tombs.len()) {
        let take_tomb = match (live.get(i), tombs.get(j)) {
            (Some(r), Some(d)) => d.xid <= r.xid,
            (None, Some(_)) => true,
            _ => false,
        };
        let next = if take_tomb { &tombs[j] } else { &live[i] };
        if !bytes.take(next.bytes) {
            break;
        }
        if take_tomb {
            j += 1;
        } else {
            i += 1;
        }
    }
    let start_r = pos_r.as_deref().cloned().unwrap_or_default();
    let start_d = pos_d.as_deref().cloned().unwrap_or_default();
    if let (true, Some(p)) = (i > 0, pos_r.as_deref_mut()) {
        let last = &live[i - 1];
        *p = Pos::After(last.xid, key_at(t, last, &start_r, h, i)?);
    }
    if let (true, Some(p)) = (j > 0, pos_d.as_deref_mut()) {
        let last = &tombs[j - 1];
        let Id::Tomb(pk) = &last.id else {
            return Err(crate::error::PgSyncError::Spi(format!(
                "a listed tombstone of {} has no key",
                t.name
            )));
        };
        *p = Pos::After(last.xid, serde_json::Value::String(pk.clone()));
    }
    let live_done = i == live.len() && live.len() <= budget;
    let tombs_done = j == tombs.len() && tombs.len() <= budget;

    let mut segments = Vec::new();
    // Tombstones in a page are for keys that do not exist now, rows for keys
    // that do: the two lists never share a key, so their relative order does
    // not matter and each keeps its index order.
    //
    // Each list is rendered as the first `i` (or `j`) entries after the
    // start, in index order: an ordered index scan that stops there, with
    // no sort (a range with both ends was planned as a bitmap scan and a
    // sort, whose comparisons under the database's collation cost as much
    // as the rendering). The entries are those just counted, unless one was
    // rewritten meanwhile: it left the horizon and comes later with its new
    // xid, and the entry after the planned end comes now and again on the
    // next page (a repeat, never a gap).
    if j > 0 {
        let mut args = Args::default();
        let (entry, out) = match form {
            Form::Entries => {
                let name = format!("{}::pg_catalog.text", args.push(&t.name));
                (
                    format!(
                        "pg_catalog.json_build_object('table', {name}, 'op', 'delete', 'pk', d.pk::json)"
                    ),
                    Out::Entries,
                )
            }
            Form::Blocks => (
                "d.pk::json".to_string(),
                Out::Block(block_head(&t.name, PullOp::Delete, None, &[], &[])),
            ),
        };
        let sql = format!(
            "SELECT {entry} FROM pg_sync.tombstones d \
             WHERE {after} AND {filter} ORDER BY d.xid, d.pk LIMIT {j}",
            after = tombs_cond(&start_d, ">", &mut args),
            filter = tomb_filter(t, h, &mut args),
        );
        segments.push(Segment {
            sql,
            args,
            outs: Outs::One(out),
        });
    }
    if i > 0 {
        let mut args = match mode {
            Live::Whole => Args::default(),
            Live::Filter(f) => f.args(),
        };
        let from = format!(
            "FROM {tbl} t WHERE {after} AND t._sync_xid < {h}::pg_catalog.xid8 \
             ORDER BY t._sync_xid, {keys} LIMIT {i}",
            tbl = t.qualified,
            after = rows_cond(t, &start_r, ">", &mut args),
            h = args.push(h),
            keys = key_cols(t),
        );
        segments.push(match mode {
            Live::Whole => rows_segment(t, form, None, args, &from)?,
            Live::Filter(f) => filtered_segment(t, form, f, args, &from)?,
        });
    }
    if let (true, Some(p)) = (live_done, pos_r) {
        *p = Pos::Below([h]);
    }
    if let (true, Some(p)) = (tombs_done, pos_d) {
        *p = Pos::Below([h]);
    }
    Ok((i + j, !(live_done && tombs_done), segments))
}

/// The statement rendering the rows `from` selects (a `FROM {table} t
/// WHERE ...` clause, with its order and limit) as upserts, for
/// subscription `sub` when given; `args` already holds the clause's values.
pub fn rows_segment(
    t: &TableInfo,
    form: Form,
    sub: Option<u32>,
    mut args: Args,
    from: &str,
) -> Result<Segment> {
    let (entry, out) = match form {
        Form::Entries => (upsert_expr(t, &mut args, sub)?, Out::Entries),
        Form::Blocks => (array_expr(t), Out::Block(upsert_head(t, sub))),
    };
    Ok(Segment {
        sql: format!("SELECT {entry} {from}"),
        args,
        outs: Outs::One(out),
    })
}

/// The statement rendering the rows `from` selects for a subscription's
/// filter: an upsert for a row that matches it, a leave for one that does
/// not. `args` holds the filter's parameters and the clause's values.
pub fn filtered_segment(
    t: &TableInfo,
    form: Form,
    f: &Filter<'_>,
    mut args: Args,
    from: &str,
) -> Result<Segment> {
    Ok(match form {
        Form::Entries => {
            let entry = format!(
                "CASE WHEN ({filter}) THEN {upsert} ELSE {leave} END",
                filter = f.sql,
                upsert = upsert_expr(t, &mut args, Some(f.sub))?,
                leave = leave_expr(t, &mut args, f.sub),
            );
            Segment {
                sql: format!("SELECT {entry} {from}"),
                args,
                outs: Outs::One(Out::Entries),
            }
        }
        // The filter is evaluated once per row; a row that left renders its
        // array too (leaves are few), which keeps the filter in the scan
        // of the table itself.
        Form::Blocks => Segment {
            sql: format!(
                "SELECT coalesce(({filter}), false), {arr}, {pk} {from}",
                filter = f.sql,
                arr = array_expr(t),
                pk = t.pk_expr("t"),
            ),
            args,
            outs: Outs::Split(
                Out::Block(upsert_head(t, Some(f.sub))),
                Out::Block(block_head(&t.name, PullOp::Leave, Some(f.sub), &[], &[])),
            ),
        },
    })
}

/// The head of a format-2 upsert block of `t`.
fn upsert_head(t: &TableInfo, sub: Option<u32>) -> String {
    let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    let key: Vec<&str> = t.pk.iter().map(String::as_str).collect();
    block_head(&t.name, PullOp::Upsert, sub, &cols, &key)
}

/// A row of `t` (alias `t`) in a format-2 block: its synced columns in
/// order, then its version (`pg_sync._ver_compact`: one stamp when all its
/// columns share it).
pub fn array_expr(t: &TableInfo) -> String {
    let attnums: Vec<String> = t.columns.iter().map(|c| c.attnum.to_string()).collect();
    let ver = format!(
        "pg_sync._ver_compact(t._sync_ver, '{{{}}}'::pg_catalog.int2[])",
        attnums.join(",")
    );
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("t.{}", ident(&c.name)))
        .collect();
    // json_build_array takes at most 100 arguments: a synced table has at
    // most MAX_SYNCED_COLUMNS, so a row and its version always fit.
    const _: () = assert!(sync_core::schema::MAX_SYNCED_COLUMNS < 100);
    format!("pg_catalog.json_build_array({}, {ver})", cols.join(", "))
}

/// The page entry of an upserted row of `t` (alias `t`), with `subs` when
/// it is a subscription's.
pub fn upsert_expr(t: &TableInfo, args: &mut Args, sub: Option<u32>) -> Result<String> {
    // Between installing new binaries and ALTER EXTENSION UPDATE, the
    // catalog lacks the renderer: the expression it replaced stands in.
    let ver = if has_ver_json()? {
        let attnums: Vec<String> = t.columns.iter().map(|c| c.attnum.to_string()).collect();
        format!(
            "pg_sync._ver_json(t._sync_ver, '{{{}}}'::pg_catalog.int2[])",
            attnums.join(",")
        )
    } else {
        let hex: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                format!(
                    "pg_catalog.lpad(pg_catalog.to_hex(coalesce(t._sync_ver[{}], 0)), 16, '0')",
                    c.attnum
                )
            })
            .collect();
        format!(
            "pg_catalog.to_json(ARRAY[{}]::pg_catalog.text[])",
            hex.join(", ")
        )
    };
    let name = format!("{}::pg_catalog.text", args.push(&t.name));
    let subs = match sub {
        Some(s) => format!(", 'subs', pg_catalog.json_build_array({s})"),
        None => String::new(),
    };
    Ok(format!(
        "pg_catalog.json_build_object('table', {name}, 'op', 'upsert', 'pk', {pk}, 'row', {row}, 'ver', {ver}{subs})",
        pk = t.pk_expr("t"),
        row = t.row_expr("t"),
    ))
}

/// The page entry of a row of `t` (alias `t`) leaving subscription `sub`.
pub fn leave_expr(t: &TableInfo, args: &mut Args, sub: u32) -> String {
    let name = format!("{}::pg_catalog.text", args.push(&t.name));
    format!(
        "pg_catalog.json_build_object('table', {name}, 'op', 'leave', 'pk', {pk}, \
         'subs', pg_catalog.json_build_array({sub}))",
        pk = t.pk_expr("t"),
    )
}

/// The primary key columns of `t` as `t."k1", t."k2"`.
pub fn key_list(t: &TableInfo) -> String {
    key_cols(t)
}

/// Whether the catalog has `pg_sync._ver_compact` (0.6.0 and later), so
/// pages can be written in format 2.
pub fn has_ver_compact() -> Result<bool> {
    thread_local! {
        static SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    catalog_has(&SEEN, "pg_sync._ver_compact(bigint[],smallint[])")
}

/// Whether the catalog has `pg_sync._ver_json` (0.4.0 and later).
pub fn has_ver_json() -> Result<bool> {
    thread_local! {
        static SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    catalog_has(&SEEN, "pg_sync._ver_json(bigint[],smallint[])")
}

/// Whether the catalog has the function `signature` (a constant); once
/// seen, it stays (`seen`: the catalog is not downgraded under a backend).
fn catalog_has(
    seen: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    signature: &'static str,
) -> Result<bool> {
    if seen.with(|s| s.get()) {
        return Ok(true);
    }
    let found = one_cached(
        &format!(
            "SELECT (pg_catalog.to_regprocedure({}) IS NOT NULL)::pg_catalog.text",
            crate::spi_util::literal(signature)
        ),
        &[],
    )?;
    let yes = found.as_deref() == Some("true");
    seen.with(|s| s.set(yes));
    Ok(yes)
}
