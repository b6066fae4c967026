//! A throwaway Postgres 15 cluster tuned for benchmarking.
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

use sync_tests::{Client, NoTls, PG_BIN};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command running `bin` from the Postgres bin dir, as `postgres` when we are root.
pub fn pg_command(bin: &str) -> Command {
    let path = format!("{PG_BIN}/{bin}");
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

fn run_pg(bin: &str, args: &[&str]) -> std::process::Output {
    pg_command(bin)
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

/// The running cluster.
pub struct BenchCluster {
    dir: PathBuf,
    port: u16,
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
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={}",
            dir.display()
        );
        for (k, v) in SETTINGS {
            opts.push_str(&format!(" -c {k}={v}"));
        }
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
        BenchCluster { dir, port }
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

    /// The server log (for error reports).
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let start = s.len().saturating_sub(4000);
        s[s.char_indices().map(|(i, _)| i).find(|&i| i >= start).unwrap_or(0)..].to_string()
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
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
}
