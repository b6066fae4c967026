//! The SQL functions of the extension: each one reads its arguments, calls
//! its operation in `sync/`, and names itself in its errors.

use std::rc::Rc;

use crate::error::{Error, Result};
use crate::ffi::{self, Arg, Db, Ret, Value, FLAG_DIRECTONLY, FLAG_INNOCUOUS};
use crate::model::values;
use crate::store::state::{self, ConnState};
use crate::sync::{conflicts, init, pull, push, status, streams};

fn text_arg<'a>(args: &'a [Arg<'_>], i: usize, what: &str) -> Result<&'a str> {
    match args.get(i) {
        Some(Arg::Text(s)) => Ok(s),
        Some(Arg::Null) | None => Err(Error::input(format!("{what} must not be NULL"))),
        Some(_) => Err(Error::input(format!(
            "{what} must be text (a JSON document)"
        ))),
    }
}

fn f_init(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let schema = text_arg(args, 0, "schema").map_err(|e| e.prefixed("sync_init"))?;
    let local = match args.get(1) {
        None | Some(Arg::Null) => None,
        Some(Arg::Text(s)) => Some(s.as_ref()),
        Some(_) => {
            return Err(Error::input(
                "sync_init: local must be text (a JSON document) or NULL",
            ))
        }
    };
    init::sync_init(st, db, schema, local)
        .map(Ret::Text)
        .map_err(|e| e.prefixed("sync_init"))
}

fn f_changes(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let max = match args.first() {
        None | Some(Arg::Null) => 1000,
        Some(Arg::Int(n)) => *n,
        Some(Arg::Real(f)) if f.fract() == 0.0 => *f as i64,
        Some(Arg::Text(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| Error::input("sync_changes: max must be an integer"))?,
        Some(_) => return Err(Error::input("sync_changes: max must be an integer")),
    };
    push::sync_changes(st, db, max)
        .map(Ret::Text)
        .map_err(|e| e.prefixed("sync_changes"))
}

fn f_ack(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let r = text_arg(args, 0, "result").map_err(|e| e.prefixed("sync_ack"))?;
    push::sync_ack(st, db, r)
        .map(Ret::Text)
        .map_err(|e| e.prefixed("sync_ack"))
}

fn f_apply(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let p = text_arg(args, 0, "page").map_err(|e| e.prefixed("sync_apply"))?;
    pull::sync_apply(st, db, p)
        .map(Ret::Text)
        .map_err(|e| e.prefixed("sync_apply"))
}

/// The conflict id argument: an integer.
fn id_arg(args: &[Arg<'_>]) -> Result<i64> {
    match args.first() {
        Some(Arg::Int(n)) => Ok(*n),
        Some(Arg::Null) | None => Err(Error::input("conflict must not be NULL")),
        Some(_) => Err(Error::input(
            "conflict must be an integer (an id of _sync_conflicts)",
        )),
    }
}

fn f_resolve(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let name = |e: Error| e.prefixed("sync_resolve");
    let id = id_arg(args).map_err(name)?;
    let how = match args.get(1) {
        Some(Arg::Text(s)) => s.as_ref(),
        _ => {
            return Err(name(Error::input(
                "resolution must be 'mine', 'theirs' or 'value'",
            )))
        }
    };
    conflicts::sync_resolve(st, db, id, how, args.get(2).map(Arg::to_value).as_ref())
        .map(Ret::Text)
        .map_err(name)
}

fn f_conflict_diff(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let name = |e: Error| e.prefixed("sync_conflict_diff");
    st.loaded(db).map_err(name)?;
    let id = id_arg(args).map_err(name)?;
    conflicts::sync_conflict_diff(db, id)
        .map(Ret::Text)
        .map_err(name)
}

fn f_subscribe(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let name = |e: Error| e.prefixed("sync_subscribe");
    let stream = text_arg(args, 0, "stream").map_err(name)?;
    let params = match args.get(1) {
        None | Some(Arg::Null) => "{}",
        Some(Arg::Text(s)) => s.as_ref(),
        Some(_) => return Err(name(Error::input("params must be text (a JSON object)"))),
    };
    streams::sync_subscribe(st, db, stream, params)
        .map(Ret::Text)
        .map_err(name)
}

fn f_unsubscribe(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let name = |e: Error| e.prefixed("sync_unsubscribe");
    let stream = text_arg(args, 0, "stream").map_err(name)?;
    let params = match args.get(1) {
        None | Some(Arg::Null) => "{}",
        Some(Arg::Text(s)) => s.as_ref(),
        Some(_) => return Err(name(Error::input("params must be text (a JSON object)"))),
    };
    streams::sync_unsubscribe(st, db, stream, params)
        .map(Ret::Text)
        .map_err(name)
}

fn f_status(st: &ConnState, db: Db, _args: &[Arg<'_>]) -> Result<Ret> {
    status::sync_status(st, db)
        .map(Ret::Text)
        .map_err(|e| e.prefixed("sync_status"))
}

fn f_pending(st: &ConnState, db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let (t, pk) = (
        &args.first().map_or(Value::Null, Arg::to_value),
        &args.get(1).map_or(Value::Null, Arg::to_value),
    );
    status::sync_pending(st, db, t, pk)
        .map(Ret::Int)
        .map_err(|e| e.prefixed("sync_pending"))
}

fn f_client_id(_st: &ConnState, db: Db, _args: &[Arg<'_>]) -> Result<Ret> {
    state::client_id(db)
        .map(Ret::Text)
        .map_err(|e| e.prefixed("sync_client_id"))
}

fn f_cursor(_st: &ConnState, db: Db, _args: &[Arg<'_>]) -> Result<Ret> {
    if state::schema_version(db)?.is_none() {
        return Err(state::not_initialised().prefixed("sync_cursor"));
    }
    crate::sync::streams::pull_cursor(db)
        .map(Ret::Text)
        .map_err(|e| e.prefixed("sync_cursor"))
}

fn f_hlc(st: &ConnState, db: Db, _args: &[Arg<'_>]) -> Result<Ret> {
    st.tick(db)
        .map(|h| Ret::Int(h.as_i64()))
        .map_err(|e| e.prefixed("sync_hlc"))
}

fn f_capture(st: &ConnState, _db: Db, _args: &[Arg<'_>]) -> Result<Ret> {
    Ok(Ret::Int(i64::from(st.capturing())))
}

fn f_ver_json(_st: &ConnState, _db: Db, args: &[Arg<'_>]) -> Result<Ret> {
    let n = match args.get(1) {
        Some(Arg::Int(n)) if *n > 0 && *n <= 64 => Some(*n as usize),
        _ => None,
    };
    Ok(match args.first() {
        Some(Arg::Blob(b)) => {
            let n = n.unwrap_or(b.len() / 8);
            Ret::Text(values::ver_to_json(&values::ver_from_blob(b, n)))
        }
        _ => Ret::Null,
    })
}

fn f_version(_st: &ConnState, _db: Db, _args: &[Arg<'_>]) -> Result<Ret> {
    Ok(Ret::Text(env!("CARGO_PKG_VERSION").to_string()))
}

/// Registers every SQL function (and `sync_clock`) on a new connection,
/// which gets its own state.
pub fn register(conn: &rusqlite::Connection) -> Result<()> {
    let db = conn;
    let st = Rc::new(ConnState::new());
    let direct = FLAG_DIRECTONLY;
    ffi::register(db, "sync_init", 1, direct, &st, f_init)?;
    ffi::register(db, "sync_init", 2, direct, &st, f_init)?;
    ffi::register(db, "sync_changes", 0, direct, &st, f_changes)?;
    ffi::register(db, "sync_changes", 1, direct, &st, f_changes)?;
    ffi::register(db, "sync_ack", 1, direct, &st, f_ack)?;
    ffi::register(db, "sync_apply", 1, direct, &st, f_apply)?;
    ffi::register(db, "sync_resolve", 2, direct, &st, f_resolve)?;
    ffi::register(db, "sync_resolve", 3, direct, &st, f_resolve)?;
    ffi::register(db, "sync_conflict_diff", 1, 0, &st, f_conflict_diff)?;
    ffi::register(db, "sync_subscribe", 1, direct, &st, f_subscribe)?;
    ffi::register(db, "sync_subscribe", 2, direct, &st, f_subscribe)?;
    ffi::register(db, "sync_unsubscribe", 1, direct, &st, f_unsubscribe)?;
    ffi::register(db, "sync_unsubscribe", 2, direct, &st, f_unsubscribe)?;
    ffi::register(db, "sync_status", 0, 0, &st, f_status)?;
    ffi::register(db, "sync_pending", 2, 0, &st, f_pending)?;
    ffi::register(db, "sync_client_id", 0, 0, &st, f_client_id)?;
    ffi::register(db, "sync_cursor", 0, 0, &st, f_cursor)?;
    ffi::register(db, "sync_version", 0, FLAG_INNOCUOUS, &st, f_version)?;
    // Called by the triggers: must be usable from the schema.
    ffi::register(db, "sync_hlc", 0, FLAG_INNOCUOUS, &st, f_hlc)?;
    ffi::register(db, "sync_capture", 0, FLAG_INNOCUOUS, &st, f_capture)?;
    ffi::register(db, "sync_ver_json", 1, FLAG_INNOCUOUS, &st, f_ver_json)?;
    ffi::register(db, "sync_ver_json", 2, FLAG_INNOCUOUS, &st, f_ver_json)?;
    ffi::register_one_row(
        conn,
        "sync_clock",
        "CREATE TABLE x(hlc INTEGER)",
        st.clone(),
    )?;
    Ok(())
}
