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
pub mod pgbouncer;
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
        let (dir, port) = Cluster::new_dir();
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
        Cluster::launch(dir, port)
    }

    /// A fresh directory (owned by the postgres user) and a free port.
    fn new_dir() -> (PathBuf, u16) {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = std::env::temp_dir().join(format!("pg_sync_test_{}_{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        chown_to_postgres(&dir);
        (dir, port)
    }

    /// Starts the cluster whose data directory is `dir/data`.
    fn launch(dir: PathBuf, port: u16) -> Cluster {
        let data = dir.join("data");
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

    /// A new cluster of the test's own (not the shared one), stopped and
    /// removed when dropped.
    pub fn private() -> OwnedCluster {
        OwnedCluster(Cluster::start())
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

    /// A base backup of this cluster (`pg_basebackup -X stream`), started
    /// as a cluster of its own: with `signal` = `"recovery.signal"` it runs
    /// an archive recovery that ends on a new timeline (a point-in-time
    /// restore); with `"standby.signal"` it is a streaming hot standby of
    /// this cluster; with `None` it is just started.
    pub fn base_backup(&self) -> BaseBackup {
        let (dir, port) = Cluster::new_dir();
        let data = dir.join("data");
        let out = run_pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        BaseBackup {
            dir,
            port,
            primary_port: self.port,
        }
    }

    /// Promotes a standby to a primary (a new timeline).
    pub fn promote(&self) {
        let data = self.dir.join("data");
        let out = run_pg("pg_ctl", &["-D", data.to_str().unwrap(), "-w", "promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `pg_dump -Fc` of `db` into `file`.
    pub fn dump(&self, db: &str, file: &Path) {
        let out = Command::new(format!("{PG_BIN}/pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-Fc",
            ])
            .arg("-f")
            .arg(file)
            .arg(db)
            .output()
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates `db` and restores `file` (a `pg_dump -Fc` archive) into it.
    pub fn restore(&self, db: &str, file: &Path) {
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let out = Command::new(format!("{PG_BIN}/pg_restore"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .arg(file)
            .output()
            .expect("pg_restore");
        assert!(
            out.status.success(),
            "pg_restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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

fn chown_to_postgres(dir: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "chown of the cluster dir failed");
    }
}

/// A cluster owned by one test: stopped and removed when dropped.
pub struct OwnedCluster(Cluster);

impl std::ops::Deref for OwnedCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl Drop for OwnedCluster {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl OwnedCluster {
    /// Starts the cluster again after [`OwnedCluster::shut_down`].
    pub fn start_again(&mut self) {
        self.0 = Cluster::launch(self.0.dir.clone(), self.0.port);
    }

    /// Waits until the cluster accepts writes (recovery has ended).
    pub fn wait_writable(&self) {
        assert!(
            eventually(60, || {
                Client::connect(&self.conn_str("postgres"), NoTls)
                    .ok()
                    .and_then(|mut c| c.query_one("SELECT pg_is_in_recovery()", &[]).ok())
                    .is_some_and(|r| !r.get::<_, bool>(0))
            }),
            "the cluster never left recovery"
        );
    }

    /// Stops the cluster now, keeping its directory until dropped.
    pub fn shut_down(&self) {
        let data = self.0.dir.join("data");
        let _ = run_pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }
}

/// A base backup of a cluster, not yet started.
pub struct BaseBackup {
    dir: PathBuf,
    port: u16,
    primary_port: u16,
}

impl BaseBackup {
    /// Starts it: `"recovery.signal"` (archive recovery ending on a new
    /// timeline), `"standby.signal"` (a streaming standby of the source) or
    /// `None`.
    pub fn start(self, signal: Option<&str>) -> OwnedCluster {
        let data = self.dir.join("data");
        if let Some(sig) = signal {
            std::fs::write(data.join(sig), "").unwrap();
            let conf = if sig == "standby.signal" {
                format!(
                    "\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres'\nhot_standby = on\n",
                    self.primary_port
                )
            } else {
                // No archive: recovery replays the WAL the backup holds,
                // then ends on a new timeline.
                "\nrestore_command = 'false'\n".to_string()
            };
            {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(data.join("postgresql.auto.conf"))
                    .unwrap();
                std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
            }
        }
        chown_to_postgres(&self.dir);
        OwnedCluster(Cluster::launch(self.dir, self.port))
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

/// The changes of a pull page, one per row, whatever its format (a page
/// of format 2 holds blocks of rows; `page["changes"]` counts the blocks).
pub fn page_changes(page: &serde_json::Value) -> Vec<sync_core::wire::RowChange> {
    sync_core::wire::PullPage::parse(&page.to_string())
        .unwrap_or_else(|e| panic!("{e}: {page}"))
        .changes
}

/// The cursor of a device that never pulled (what `sync_cursor()` returns
/// before the first pull and after a resync): no positions, the newest
/// page format.
pub fn device_cursor() -> String {
    sync_core::cursor::Cursor {
        v: 1,
        w: Some(sync_core::PAGE_FORMAT),
        ..Default::default()
    }
    .encode()
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
