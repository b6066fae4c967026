//! Integration-test harness: a throwaway Postgres 15 cluster with pg_sync
//! installed, and SQLite clients with sqlite_sync loaded.
//!
//! The cluster lives in a temp dir, listens on a free loopback port, runs as
//! the `postgres` OS user when the tests run as root, and is stopped and
//! removed when the test process exits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub use postgres::{Client, NoTls};

pub mod e2e;
pub mod sqlite;

/// Directory of the Postgres 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run_pg(bin: &str, args: &[&str]) -> std::process::Output {
    let path = format!("{PG_BIN}/{bin}");
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(&path)
    };
    // The server runs with RUST_BACKTRACE set, as a careless service unit
    // might: the tests prove that no backtrace reaches a client anyway.
    cmd.env("RUST_BACKTRACE", "full")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {path}: {e}"))
}

/// A running throwaway cluster.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static STOP_REGISTERED: Mutex<bool> = Mutex::new(false);
static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

extern "C" fn stop_at_exit() {
    if let Some(c) = CLUSTER.get() {
        c.stop();
    }
}

impl Cluster {
    /// The process-wide cluster, started on first use.
    pub fn get() -> &'static Cluster {
        let c = CLUSTER.get_or_init(Cluster::start);
        let mut reg = STOP_REGISTERED.lock().unwrap();
        if !*reg {
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(stop_at_exit) };
            *reg = true;
        }
        c
    }

    fn start() -> Cluster {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = std::env::temp_dir().join(format!("pg_sync_test_{}_{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(st.success(), "chown of the cluster dir failed");
        }
        let data = dir.join("data");
        let out = run_pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=60",
            dir.display()
        );
        let log = dir.join("server.log");
        let out = run_pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Cluster { dir, port }
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        let _ = run_pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for `db` as the superuser.
    pub fn conn_str(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Connects to `db` as the superuser.
    pub fn connect(&self, db: &str) -> Client {
        Client::connect(&self.conn_str(db), NoTls).expect("connect")
    }

    /// Creates a fresh database with `CREATE EXTENSION pg_sync` and returns
    /// its name.
    pub fn new_db(&self, prefix: &str) -> String {
        let n = DB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}_{n}");
        let mut c = self.connect("postgres");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut db = self.connect(&name);
        db.batch_execute("CREATE EXTENSION pg_sync").unwrap();
        name
    }
}

/// A database in the shared cluster, with pg_sync created.
pub struct TestDb {
    /// Database name.
    pub name: String,
}

impl TestDb {
    /// A fresh database.
    pub fn new(prefix: &str) -> TestDb {
        TestDb {
            name: Cluster::get().new_db(prefix),
        }
    }

    /// A new connection.
    pub fn connect(&self) -> Client {
        Cluster::get().connect(&self.name)
    }

    /// Connection string.
    pub fn conn_str(&self) -> String {
        Cluster::get().conn_str(&self.name)
    }
}

/// Runs a query returning one jsonb value.
pub fn pg_json(
    c: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> serde_json::Value {
    let row = c
        .query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {}", err_text(&e)));
    row.get::<_, serde_json::Value>(0)
}

/// Workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The server's message of a failed statement (postgres::Error's Display
/// only says "db error").
pub fn err_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Retries `f` until it returns true or `secs` pass; pulls may lag behind
/// transactions still open anywhere in the cluster (they hold the horizon).
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
