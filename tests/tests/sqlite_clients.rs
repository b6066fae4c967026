//! The extension from other clients: Python's standard `sqlite3` module
//! (tests/python/test_client.py, run by Debian's /usr/bin/python3, whose
//! module can load extensions) and the `sqlite3` shell with `.load`
//! (tests/shell/client.sh).
//!
//! Needs the built extension: `cargo build --manifest-path sqlite_sync/Cargo.toml` first.

use std::path::Path;
use std::process::Command;

use sync_tests::{sqlite::lib_path, workspace_root};

fn run(program: &str, script: &str) {
    if !Path::new(program).exists() && which(program).is_none() {
        panic!("{program} is not installed; it is needed to run {script}");
    }
    let script_path = workspace_root().join(script);
    let out = Command::new(program)
        .arg(&script_path)
        .env("SQLITE_SYNC_LIB", lib_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{program} {script} failed:\n{text}");
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|c| c.exists())
    })
}

#[test]
fn python_sqlite3_module_client() {
    run("/usr/bin/python3", "tests/python/test_client.py");
}

#[test]
fn sqlite3_shell_client() {
    if which("sqlite3").is_none() {
        panic!("the sqlite3 shell is not installed");
    }
    run("bash", "tests/shell/client.sh");
}
