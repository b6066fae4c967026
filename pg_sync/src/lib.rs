//! pg_sync: sync Postgres tables with offline SQLite clients.
//!
//! A DBA enables sync per table with `sync_enable`. Triggers then record,
//! for every written row, the writing top-level transaction id (xid8) and a
//! hybrid-logical-clock version per column; deletes leave tombstones.
//! `sync_pull` hands out changes below the snapshot horizon so that no
//! committed change is ever skipped, and `sync_push` applies client changes
//! through the merge rules of `sync_core`, once per `(client, seq)`.

/// Declares the version-1 calling convention of a C-API function
/// (`PG_FUNCTION_INFO_V1`), for the functions written against it directly.
macro_rules! finfo_v1 {
    ($name:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $name() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

mod catalog;
mod clock;
mod enable;
mod error;
mod marks;
mod ops;
mod privileged;
mod pull;
mod push;
mod spi_stream;
mod spi_util;
mod streams;
mod tombstone;
mod track;
mod tupdesc;

pgrx::pg_module_magic!();

/// Called when the library is loaded.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Errors reach clients as messages, never with a Rust backtrace in
    // DETAIL (pgrx captures one per error when the server's environment
    // sets RUST_BACKTRACE): RUST_LIB_BACKTRACE=0 turns capturing off.
    // Backends are single-threaded when a library is loaded.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    track::register_gucs();
    pull::register_gucs();
    pull::register_stream_gucs();
    catalog::register_invalidation();
}

pgrx::extension_sql_file!("../../sql/bootstrap.sql", name = "bootstrap", bootstrap);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run("CREATE TABLE t_unit (id text PRIMARY KEY, title text, n int)").unwrap();
        Spi::run("SELECT sync_enable('t_unit')").unwrap();
    }

    #[pg_test]
    fn enable_adds_tracking_columns() {
        setup();
        Spi::run("INSERT INTO t_unit VALUES ('a', 'x', 1)").unwrap();
        let xid_set = Spi::get_one::<bool>(
            "SELECT _sync_xid = pg_current_xact_id() FROM t_unit WHERE id = 'a'",
        )
        .unwrap();
        assert_eq!(xid_set, Some(true));
        let vers = Spi::get_one::<i32>(
            "SELECT count(*)::int FROM t_unit, unnest(_sync_ver) v WHERE v > 0",
        )
        .unwrap();
        assert_eq!(vers, Some(3));
    }

    #[pg_test]
    fn update_stamps_only_changed_columns() {
        setup();
        Spi::run("INSERT INTO t_unit VALUES ('a', 'x', 1)").unwrap();
        let before = Spi::get_one::<Vec<i64>>("SELECT _sync_ver FROM t_unit")
            .unwrap()
            .unwrap();
        Spi::run("UPDATE t_unit SET n = 2").unwrap();
        let after = Spi::get_one::<Vec<i64>>("SELECT _sync_ver FROM t_unit")
            .unwrap()
            .unwrap();
        assert_eq!(before[0], after[0]);
        assert_eq!(before[1], after[1]);
        assert!(after[2] > before[2]);
    }

    #[pg_test]
    fn delete_leaves_tombstone() {
        setup();
        Spi::run("INSERT INTO t_unit VALUES ('a', 'x', 1)").unwrap();
        Spi::run("DELETE FROM t_unit").unwrap();
        let pk = Spi::get_one::<pgrx::JsonB>("SELECT pk::jsonb FROM pg_sync.tombstones")
            .unwrap()
            .unwrap();
        assert_eq!(pk.0, serde_json::json!({"id": "a"}));
    }

    #[pg_test(error = "table t_nopk has no primary key; sync needs one to identify rows")]
    fn enable_rejects_table_without_pk() {
        Spi::run("CREATE TABLE t_nopk (a int)").unwrap();
        Spi::run("SELECT sync_enable('t_nopk')").unwrap();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
