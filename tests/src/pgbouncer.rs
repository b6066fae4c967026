//! A throwaway PgBouncer (Debian's `pgbouncer` package) in front of test or
//! bench clusters.
//!
//! It runs from a temp dir with its own ini and auth file, listens on a free
//! loopback port, authenticates with `auth_type = trust` (the clusters trust
//! loopback too), runs as the `postgres` OS user when we are root (PgBouncer
//! refuses to run as root), and is stopped and its dir removed on drop. It
//! also gets SIGTERM when the thread that started it exits (so a killed
//! process leaves none behind): keep the [`PgBouncer`] on that thread.
//!
//! PgBouncer 1.18 (Debian 12) does not carry protocol-level named prepared
//! statements across transactions in transaction pooling mode, and the
//! `postgres` crate's `query`/`execute` prepare named statements: through a
//! transaction pooler, call the database with [`postgres::Client::query_typed`]
//! (one unnamed statement per call, parse to sync in one round trip) or
//! `simple_query`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, SimpleQueryMessage};

/// Where Debian installs the binary.
pub const PGBOUNCER_BIN: &str = "/usr/sbin/pgbouncer";

/// One database PgBouncer serves: clients connect to `alias`, PgBouncer
/// connects to `dbname` on `127.0.0.1:port` with at most `pool_size` server
/// connections.
#[derive(Debug, Clone)]
pub struct Target {
    /// The database name clients use.
    pub alias: String,
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// The database on the server.
    pub dbname: String,
    /// Server connections of this pool.
    pub pool_size: u32,
}

impl Target {
    /// `alias` served by `dbname` on `port`.
    pub fn new(alias: &str, port: u16, dbname: &str, pool_size: u32) -> Target {
        Target {
            alias: alias.into(),
            port,
            dbname: dbname.into(),
            pool_size,
        }
    }
}

/// A running PgBouncer.
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: Child,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` OS user.
fn postgres_ids() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at
    // once, before any other call could reuse its static buffer.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "no postgres OS user");
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

/// Whether the pgbouncer binary is installed.
pub fn available() -> bool {
    std::path::Path::new(PGBOUNCER_BIN).exists()
}

impl PgBouncer {
    /// A PgBouncer in transaction pooling mode serving every database of
    /// the cluster on `port` (a `*` entry), `pool_size` server connections
    /// per database and user.
    pub fn transaction_mode(port: u16, pool_size: u32) -> PgBouncer {
        PgBouncer::start(&[Target::new("*", port, "", pool_size)], "transaction", &[])
    }

    /// Starts PgBouncer with `pool_mode` (`session`, `transaction`) for the
    /// given databases; `extra` are further `[pgbouncer]` settings.
    pub fn start(targets: &[Target], pool_mode: &str, extra: &[(&str, &str)]) -> PgBouncer {
        assert!(
            available(),
            "{PGBOUNCER_BIN} is missing: run scripts/deps.sh (apt-get install pgbouncer)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir =
            std::env::temp_dir().join(format!("pg_sync_bouncer_{}_{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut dbs = String::new();
        for t in targets {
            let dbname = if t.dbname.is_empty() {
                String::new()
            } else {
                format!(" dbname={}", t.dbname)
            };
            dbs.push_str(&format!(
                "{} = host=127.0.0.1 port={}{dbname} pool_size={}\n",
                t.alias, t.port, t.pool_size
            ));
        }
        let max_pool = targets.iter().map(|t| t.pool_size).max().unwrap_or(1);
        let mut ini = format!(
            "[databases]\n{dbs}\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/users.txt\n\
             admin_users = postgres\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {max_pool}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 1000\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        );
        for (k, v) in extra {
            ini.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        let mut cmd = Command::new(PGBOUNCER_BIN);
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            let (uid, gid) = postgres_ids();
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success(), "chown of the pgbouncer dir failed");
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: prctl is async-signal-safe; it runs in the child after
        // the uid switch (which would clear it), just before exec. PgBouncer
        // then gets SIGTERM when the thread that started it exits, so a
        // killed test or bench leaves no PgBouncer behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PGBOUNCER_BIN}: {e}"));
        let mut b = PgBouncer { dir, port, child };
        // Ready when its admin console answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!("pgbouncer exited at start ({st}):\n{}", b.log());
            }
            if Client::connect(&b.conn_str("pgbouncer"), NoTls).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for `db` (an alias, or any database through `*`).
    pub fn conn_str(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Connects to `db` through PgBouncer.
    pub fn connect(&self, db: &str) -> Client {
        Client::connect(&self.conn_str(db), NoTls)
            .unwrap_or_else(|e| panic!("connect to {db} through pgbouncer: {e}"))
    }

    /// Runs an admin console command (`SHOW POOLS`, `KILL db`, ...) and
    /// returns its rows as (column, value) lists.
    pub fn admin(&self, command: &str) -> Vec<Vec<(String, String)>> {
        let mut c = self.connect("pgbouncer");
        c.simple_query(command)
            .unwrap_or_else(|e| panic!("pgbouncer {command}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| {
                            (
                                r.columns()[i].name().to_string(),
                                r.get(i).unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The pool of `db` as `SHOW POOLS` reports it: (active client
    /// connections, waiting clients, server connections in use or idle).
    pub fn pool(&self, db: &str) -> Option<(u64, u64, u64)> {
        let n = |row: &[(String, String)], k: &str| {
            row.iter()
                .find(|(c, _)| c == k)
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.admin("SHOW POOLS")
            .into_iter()
            .find(|r| r.iter().any(|(c, v)| c == "database" && v == db))
            .map(|r| {
                (
                    n(&r, "cl_active"),
                    n(&r, "cl_waiting"),
                    n(&r, "sv_active") + n(&r, "sv_idle") + n(&r, "sv_used"),
                )
            })
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SIGTERM: PgBouncer closes every connection and exits (the child
        // is PgBouncer itself, not a wrapper).
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals the process we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
