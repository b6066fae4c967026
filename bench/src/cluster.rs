//! A throwaway Postgres 15 cluster tuned for benchmarking.
//!
//! The cluster runs from a private copy of the Postgres installation
//! (bin, lib and share dirs, pg_sync.so included) taken when it starts:
//! Postgres finds its lib and share dirs relative to its binary, so another
//! `cargo pgrx install` on this machine during the run (which rewrites
//! pg_sync.so in place and crashes backends that have it mapped) cannot
//! touch the benchmark.
//!
//! Unlike the test harness's cluster (`sync_tests::Cluster`, which runs with
//! `fsync=off` and `synchronous_commit=off` for speed), this one keeps
//! durability on so that `synchronous_commit` means something, and is sized
//! for a 2-core, 24 GB machine. It is stopped and removed on drop; the data
//! directory is also written to `$BENCH_CLUSTER_FILE` (if set) so that
//! `scripts/bench.sh` can clean up after a killed run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest, Md5};
use sync_tests::{Client, NoTls};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command running `bin` from `bindir`, as `postgres` when we are root.
fn pg_command(bindir: &Path, bin: &str) -> Command {
    let path = bindir.join(bin).display().to_string();
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(&path)
    };
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

fn run_pg(bindir: &Path, bin: &str, args: &[&str]) -> std::process::Output {
    pg_command(bindir, bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

/// Server settings of the benchmark cluster.
pub const SETTINGS: &[(&str, &str)] = &[
    ("shared_buffers", "512MB"),
    ("work_mem", "32MB"),
    ("maintenance_work_mem", "256MB"),
    ("effective_cache_size", "8GB"),
    ("max_wal_size", "8GB"),
    ("min_wal_size", "1GB"),
    ("checkpoint_timeout", "30min"),
    ("checkpoint_completion_target", "0.9"),
    ("wal_compression", "off"),
    ("max_connections", "30"),
    ("jit", "off"),
];

/// The system installation the private copy is taken from.
const SYSTEM_BIN: &str = "/usr/lib/postgresql/15/bin";
const SYSTEM_LIB: &str = "/usr/lib/postgresql/15/lib";
const SYSTEM_SHARE: &str = "/usr/share/postgresql/15";

/// Copies the Postgres installation under `root` (same relative layout).
fn private_install(root: &Path) -> PathBuf {
    for (from, to) in [
        (SYSTEM_BIN, "usr/lib/postgresql/15"),
        (SYSTEM_LIB, "usr/lib/postgresql/15"),
        (SYSTEM_SHARE, "usr/share/postgresql"),
    ] {
        let dest = root.join(to);
        std::fs::create_dir_all(&dest).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(&dest)
            .status()
            .expect("cp");
        assert!(st.success(), "copying {from} failed");
    }
    root.join("usr/lib/postgresql/15/bin")
}

/// The running cluster.
pub struct BenchCluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// md5 of the pg_sync.so the cluster runs.
    pub pg_sync_md5: String,
}

impl BenchCluster {
    /// initdb + start.
    pub fn start() -> BenchCluster {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = std::env::temp_dir().join(format!("pg_sync_bench_{}_{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Ok(f) = std::env::var("BENCH_CLUSTER_FILE") {
            let _ = std::fs::write(f, dir.display().to_string());
        }
        let bindir = private_install(&dir.join("inst"));
        let pg_sync_md5 = file_md5(&dir.join("inst/usr/lib/postgresql/15/lib/pg_sync.so"));
        chown_to_postgres(&dir);
        let data = dir.join("data");
        let out = run_pg(
            &bindir,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        launch(&bindir, &dir, port);
        BenchCluster {
            dir,
            bindir,
            port,
            pg_sync_md5,
        }
    }

    /// A streaming hot standby of this cluster: a base backup
    /// (`pg_basebackup -X stream`) into a directory inside this cluster's,
    /// started from the same private installation with the same settings,
    /// `standby.signal` and `primary_conninfo` pointing here. Stopped and
    /// removed on drop (drop it before the primary).
    pub fn standby(&self) -> BenchCluster {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = self.dir.join(format!("standby_{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        chown_to_postgres(&dir);
        let data = dir.join("data");
        let out = run_pg(
            &self.bindir,
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
        std::fs::write(data.join("standby.signal"), "").unwrap();
        let conf = format!(
            "\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres'\nhot_standby = on\n",
            self.port
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.auto.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        drop(f);
        chown_to_postgres(&dir);
        launch(&self.bindir, &dir, port);
        BenchCluster {
            dir,
            bindir: self.bindir.clone(),
            port,
            pg_sync_md5: self.pg_sync_md5.clone(),
        }
    }

    /// The postmaster's process id (first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connection string for `db`.
    pub fn conn_str(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// A new connection to `db`.
    pub fn connect(&self, db: &str) -> Client {
        Client::connect(&self.conn_str(db), NoTls)
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"))
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = run_pg(
            &self.bindir,
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

/// Starts the cluster whose data directory is `dir/data` on `port`.
fn launch(bindir: &Path, dir: &Path, port: u16) {
    let data = dir.join("data");
    let mut opts = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={}",
        dir.display()
    );
    for (k, v) in SETTINGS {
        opts.push_str(&format!(" -c {k}={v}"));
    }
    let log = dir.join("server.log");
    let out = run_pg(
        bindir,
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
}

/// md5 of a file's contents (empty when unreadable).
pub fn file_md5(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| Md5::digest(&b).iter().map(|x| format!("{x:02x}")).collect())
        .unwrap_or_default()
}
