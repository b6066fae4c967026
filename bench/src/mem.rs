//! Memory of a process while something runs: its anonymous resident
//! memory (`RssAnon` in /proc/<pid>/status: heap and private mappings, not
//! the shared buffers or files it touches), sampled every 2 ms on a thread
//! of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `RssAnon` of process `pid`, in kB.
pub fn rss_anon_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What `f` returned, with the process's `RssAnon` before it ran and the
/// highest value sampled while it ran (kB).
pub fn peak_during<R>(pid: u32, f: impl FnOnce() -> R) -> (R, u64, u64) {
    let before = rss_anon_kb(pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = rss_anon_kb(pid) {
                    peak.fetch_max(v, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let r = f();
    if let Some(v) = rss_anon_kb(pid) {
        peak.fetch_max(v, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    (r, before, peak.load(Ordering::Relaxed))
}
