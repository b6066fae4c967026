//! Hybrid logical clocks packed into 64 bits.
//!
//! A stamp orders events like a wall clock while staying monotonic per node
//! when the physical clock stalls or goes backwards. Layout, most significant
//! bits first:
//!
//! | bits | field |
//! |------|-------|
//! | 42   | physical milliseconds since 2020-01-01T00:00:00Z (good until 2159) |
//! | 10   | logical counter (1024 events per millisecond before borrowing a ms) |
//! | 12   | node tag: a stable hash of the node id, the deterministic tie-break |
//!
//! Comparing two packed stamps as unsigned integers compares (physical,
//! counter, node tag) lexicographically, so both databases can store and
//! order stamps as plain 64-bit integers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Unix milliseconds of the HLC epoch (2020-01-01T00:00:00Z).
pub const EPOCH_UNIX_MS: u64 = 1_577_836_800_000;
const MS_BITS: u32 = 42;
const COUNTER_BITS: u32 = 10;
const TAG_BITS: u32 = 12;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;
const TAG_MAX: u64 = (1 << TAG_BITS) - 1;
const MS_MAX: u64 = (1 << MS_BITS) - 1;

/// Default bound on how far a peer's clock may run ahead of ours: 5 minutes.
pub const DEFAULT_MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// A packed hybrid logical clock stamp. `Hlc::ZERO` is "never written".
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The stamp older than every real event (a column never written).
    pub const ZERO: Hlc = Hlc(0);

    /// Builds a stamp from its parts; out-of-range parts saturate.
    pub fn new(ms_since_epoch: u64, counter: u64, tag: u16) -> Hlc {
        let ms = ms_since_epoch.min(MS_MAX);
        let counter = counter.min(COUNTER_MAX);
        let tag = u64::from(tag) & TAG_MAX;
        Hlc((ms << (COUNTER_BITS + TAG_BITS)) | (counter << TAG_BITS) | tag)
    }

    /// Milliseconds since the HLC epoch.
    pub fn ms(self) -> u64 {
        self.0 >> (COUNTER_BITS + TAG_BITS)
    }

    /// Unix milliseconds of the physical part.
    pub fn unix_ms(self) -> u64 {
        self.ms() + EPOCH_UNIX_MS
    }

    /// Logical counter.
    pub fn counter(self) -> u64 {
        (self.0 >> TAG_BITS) & COUNTER_MAX
    }

    /// Node tag of the writer.
    pub fn tag(self) -> u16 {
        (self.0 & TAG_MAX) as u16
    }

    /// The stamp as a signed 64-bit integer, for storage in `int8`/`INTEGER`
    /// columns. Order-preserving while the top bit is clear, that is for
    /// every stamp before 2089-09-06 (2^41 ms after the epoch); later stamps
    /// come out negative and sort before earlier ones as integers.
    /// Compare [`Hlc`] values (or `from_i64` first), not raw integers.
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// Inverse of [`Hlc::as_i64`].
    pub fn from_i64(v: i64) -> Hlc {
        Hlc(v as u64)
    }

    /// The smallest stamp of `tag` that is strictly greater than `self`
    /// in its (physical, counter) part. At the very last (physical, counter)
    /// pair (year 2159) it saturates there instead of wrapping: it returns
    /// that pair with `tag`, or `self` when `self`'s tag is higher, so the
    /// result is never smaller than `self`.
    pub fn next_with_tag(self, tag: u16) -> Hlc {
        let (ms, c) = (self.ms(), self.counter());
        if c >= COUNTER_MAX && ms >= MS_MAX {
            self.max(Hlc::new(MS_MAX, COUNTER_MAX, tag))
        } else if c >= COUNTER_MAX {
            Hlc::new(ms + 1, 0, tag)
        } else {
            Hlc::new(ms, c + 1, tag)
        }
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Hlc({}.{}@{:03x})",
            self.ms(),
            self.counter(),
            self.tag()
        )
    }
}

/// Stamps travel as 16 lowercase hex digits: exact in every JSON parser
/// (JavaScript included) and sortable as text.
impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Error parsing a stamp from its wire form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid HLC stamp {0:?}: expected 16 hex digits")]
pub struct ParseHlcError(pub String);

impl FromStr for Hlc {
    type Err = ParseHlcError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `from_str_radix` alone would also take a leading `+`.
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseHlcError(s.to_string()));
        }
        u64::from_str_radix(s, 16)
            .map(Hlc)
            .map_err(|_| ParseHlcError(s.to_string()))
    }
}

impl Serialize for Hlc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hlc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Stable 12-bit tag of a node id (FNV-1a folded), used as the tie-break
/// between stamps with the same physical time and counter.
pub fn node_tag(node_id: &str) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h ^ (h >> 12) ^ (h >> 24) ^ (h >> 36) ^ (h >> 48)) & TAG_MAX) as u16
}

/// Converts Unix milliseconds to HLC-epoch milliseconds (0 before the epoch).
pub fn unix_to_epoch_ms(unix_ms: u64) -> u64 {
    unix_ms.saturating_sub(EPOCH_UNIX_MS)
}

/// Current wall-clock time in Unix milliseconds.
pub fn wall_clock_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What [`Clock::observe`] did with a remote stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The stamp was within the skew bound and is kept as is.
    Accepted(Hlc),
    /// The stamp ran more than the bound ahead of our wall clock; it was
    /// replaced by a local stamp so it cannot win every future conflict.
    Clamped {
        /// The stamp the peer sent.
        original: Hlc,
        /// The stamp used instead.
        clamped: Hlc,
        /// How far ahead of our wall clock the peer was, in milliseconds.
        ahead_ms: u64,
    },
}

impl Observed {
    /// The stamp to use after observation.
    pub fn stamp(self) -> Hlc {
        match self {
            Observed::Accepted(h) => h,
            Observed::Clamped { clamped, .. } => clamped,
        }
    }
}

/// A node's hybrid logical clock.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Hlc,
    tag: u16,
    max_skew_ms: u64,
}

impl Clock {
    /// A clock for `node_id` with the default skew bound.
    pub fn new(node_id: &str) -> Clock {
        Clock::with_tag(node_tag(node_id))
    }

    /// A clock with an explicit node tag.
    pub fn with_tag(tag: u16) -> Clock {
        Clock {
            last: Hlc::ZERO,
            tag: tag & TAG_MAX as u16,
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
        }
    }

    /// Sets the bound on how far ahead a remote stamp may be.
    pub fn set_max_skew_ms(&mut self, ms: u64) {
        self.max_skew_ms = ms;
    }

    /// The node tag stamped on local events.
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The last stamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Makes the clock never issue a stamp at or below `h` (used to restore
    /// a clock from stamps persisted in the database).
    pub fn advance_to(&mut self, h: Hlc) {
        if h > self.last {
            self.last = h;
        }
    }

    /// Issues a stamp for a local event at wall time `unix_ms`: strictly
    /// greater than every stamp this clock issued or observed before.
    pub fn tick(&mut self, unix_ms: u64) -> Hlc {
        let wall = Hlc::new(unix_to_epoch_ms(unix_ms), 0, self.tag);
        let next = if wall.ms() > self.last.ms() {
            wall
        } else {
            self.last.next_with_tag(self.tag)
        };
        self.last = next;
        next
    }

    /// Issues a stamp for a local event that must also be greater than
    /// `floor` (e.g. the current version of the column being overwritten).
    pub fn tick_after(&mut self, unix_ms: u64, floor: Hlc) -> Hlc {
        self.advance_to(floor);
        self.tick(unix_ms)
    }

    /// Receive rule: folds a remote stamp into the clock so later local
    /// stamps are greater. A stamp more than the skew bound ahead of
    /// `unix_ms` is clamped to a fresh local stamp instead.
    pub fn observe(&mut self, remote: Hlc, unix_ms: u64) -> Observed {
        let now_ms = unix_to_epoch_ms(unix_ms);
        if remote.ms() > now_ms.saturating_add(self.max_skew_ms) {
            let clamped = self.tick(unix_ms);
            return Observed::Clamped {
                original: remote,
                clamped,
                ahead_ms: remote.ms() - now_ms,
            };
        }
        self.advance_to(remote);
        Observed::Accepted(remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let h = Hlc::new(123_456_789, 17, 0xabc);
        assert_eq!((h.ms(), h.counter(), h.tag()), (123_456_789, 17, 0xabc));
        assert_eq!(h.to_string().parse::<Hlc>().unwrap(), h);
        assert_eq!(Hlc::from_i64(h.as_i64()), h);
    }

    #[test]
    fn monotonic_when_wall_clock_goes_backwards() {
        let mut c = Clock::with_tag(1);
        let t0 = EPOCH_UNIX_MS + 10_000;
        let a = c.tick(t0);
        let b = c.tick(t0 - 5_000);
        let d = c.tick(t0 - 5_000);
        assert!(a < b && b < d);
    }

    #[test]
    fn counter_overflow_borrows_a_millisecond() {
        let mut c = Clock::with_tag(1);
        let t0 = EPOCH_UNIX_MS + 10_000;
        let mut prev = c.tick(t0);
        for _ in 0..3000 {
            let next = c.tick(t0);
            assert!(next > prev);
            prev = next;
        }
    }

    #[test]
    fn observe_advances_and_clamps() {
        let mut c = Clock::with_tag(1);
        let now = EPOCH_UNIX_MS + 1_000_000;
        let near = Hlc::new(1_000_000 + 1_000, 5, 9);
        assert_eq!(c.observe(near, now), Observed::Accepted(near));
        assert!(c.tick(now) > near);
        let far = Hlc::new(1_000_000 + DEFAULT_MAX_SKEW_MS + 1, 0, 9);
        match c.observe(far, now) {
            Observed::Clamped { clamped, .. } => assert!(clamped < far),
            other => panic!("expected clamp, got {other:?}"),
        }
    }

    #[test]
    fn next_saturates_instead_of_wrapping() {
        let last = Hlc::new(MS_MAX, COUNTER_MAX, 5);
        assert!(last.next_with_tag(5) >= last);
        let mut c = Clock::with_tag(5);
        c.advance_to(last);
        assert!(c.tick(EPOCH_UNIX_MS) >= last);
        let before = Hlc::new(MS_MAX - 1, COUNTER_MAX, 5);
        assert_eq!(before.next_with_tag(1), Hlc::new(MS_MAX, 0, 1));
        // Found by the hlc fuzz target: at the last pair a lower tag gave a
        // smaller stamp, so a column's version went backwards.
        let top = Hlc(u64::MAX);
        assert_eq!(top.next_with_tag(0x200), top);
        assert_eq!(last.next_with_tag(9), Hlc::new(MS_MAX, COUNTER_MAX, 9));
        assert!(crate::merge::superseding_ver(top, Hlc::new(5, 0, 1)) >= top);
        let mut c = Clock::with_tag(1);
        c.advance_to(top);
        assert_eq!(c.tick(EPOCH_UNIX_MS), top);
    }

    #[test]
    fn parse_rejects_non_hex() {
        assert!("+000000000001001".parse::<Hlc>().is_err());
        assert!("000000000000100g".parse::<Hlc>().is_err());
        assert!("1001".parse::<Hlc>().is_err());
        assert_eq!("00000000000010AB".parse::<Hlc>(), Ok(Hlc(0x10ab)));
    }

    #[test]
    fn node_tags_are_stable_and_spread() {
        assert_eq!(node_tag("server"), node_tag("server"));
        let tags: std::collections::HashSet<u16> = (0..1000)
            .map(|i| node_tag(&format!("client-{i}")))
            .collect();
        assert!(tags.len() > 800);
    }
}
