//! The server's hybrid logical clock, one per backend.

use std::cell::RefCell;

use sync_core::hlc::{wall_clock_unix_ms, Observed};
use sync_core::{Clock, Hlc};

/// Node id of the server in HLC stamps.
pub const SERVER_NODE: &str = "server";

thread_local! {
    static CLOCK: RefCell<Clock> = RefCell::new(Clock::new(SERVER_NODE));
}

/// A fresh server stamp greater than `floor`.
pub fn tick_after(floor: Hlc) -> Hlc {
    CLOCK.with(|c| c.borrow_mut().tick_after(wall_clock_unix_ms(), floor))
}

/// Folds a client stamp into the server clock, clamping one that runs more
/// than the skew bound ahead.
pub fn observe(remote: Hlc) -> Observed {
    CLOCK.with(|c| c.borrow_mut().observe(remote, wall_clock_unix_ms()))
}
