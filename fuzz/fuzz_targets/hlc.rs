//! HLC stamps and clocks: parsing any text as a stamp (directly and as a
//! JSON string), the packing of any 64-bit stamp, `next_with_tag`, and a
//! clock driven by any sequence of ticks, observations and wall-clock
//! jumps. Invariants: a parsed stamp is exactly 16 hex digits and prints
//! back as them (lowercase); packing round-trips; `next_with_tag` never
//! goes backwards; a clock's stamps never go backwards and are strictly
//! increasing until the clock saturates (year 2159); observing either
//! accepts a stamp within the skew bound or clamps it.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sync_core::hlc::{Clock, Hlc, Observed, EPOCH_UNIX_MS};

#[derive(Arbitrary, Debug)]
enum Op {
    Tick(u64),
    TickAfter(u64, u64),
    Observe(u64, u64),
    ObserveNear(u32, i32),
    Advance(u64),
    SetSkew(u32),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    text: &'a str,
    raw: u64,
    tag: u16,
    ops: Vec<Op>,
}

/// The last (physical, counter) pair: a clock there cannot move on.
fn saturated(h: Hlc) -> bool {
    h.0 | 0xfff == u64::MAX
}

fuzz_target!(|input: Input| {
    // Parsing.
    match input.text.parse::<Hlc>() {
        Ok(h) => {
            assert_eq!(input.text.len(), 16);
            assert_eq!(h.to_string(), input.text.to_ascii_lowercase());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let quoted = serde_json::to_string(input.text).unwrap();
    assert_eq!(
        serde_json::from_str::<Hlc>(&quoted).ok(),
        input.text.parse::<Hlc>().ok()
    );

    // Packing.
    let h = Hlc(input.raw);
    assert_eq!(h.to_string().parse::<Hlc>(), Ok(h));
    assert_eq!(Hlc::from_i64(h.as_i64()), h);
    assert_eq!(Hlc::new(h.ms(), h.counter(), h.tag()), h);
    assert_eq!(
        serde_json::from_str::<Hlc>(&serde_json::to_string(&h).unwrap()).unwrap(),
        h
    );
    let next = h.next_with_tag(input.tag);
    assert!(next >= h, "{h:?} -> {next:?}");
    if !saturated(h) {
        assert!(next > h && next.tag() == input.tag & 0xfff);
        assert!((next.ms(), next.counter()) > (h.ms(), h.counter()));
    }

    // A clock.
    let mut clock = Clock::with_tag(input.tag);
    let mut skew = sync_core::hlc::DEFAULT_MAX_SKEW_MS;
    let mut last = clock.last();
    for op in input.ops.iter().take(64) {
        match *op {
            Op::Tick(now) => {
                let s = clock.tick(now);
                assert!(s > last || saturated(last), "{last:?} -> {s:?}");
                assert!(s >= last);
            }
            Op::TickAfter(now, floor) => {
                let s = clock.tick_after(now, Hlc(floor));
                assert!(s >= Hlc(floor) && s >= last);
                assert!((s > Hlc(floor) && s > last) || saturated(s));
            }
            Op::Observe(remote, now) => observe(&mut clock, Hlc(remote), now, skew, last),
            Op::ObserveNear(offset, ahead) => {
                // Stamps around the skew bound.
                let now = EPOCH_UNIX_MS + u64::from(offset);
                let ms = (u64::from(offset) + skew).saturating_add_signed(i64::from(ahead));
                observe(&mut clock, Hlc::new(ms, 0, 1), now, skew, last);
            }
            Op::Advance(to) => {
                clock.advance_to(Hlc(to));
                assert!(clock.last() >= Hlc(to));
            }
            Op::SetSkew(ms) => {
                skew = u64::from(ms);
                clock.set_max_skew_ms(skew);
            }
        }
        assert!(clock.last() >= last, "the clock went backwards");
        last = clock.last();
    }
});

fn observe(clock: &mut Clock, remote: Hlc, now: u64, skew: u64, last: Hlc) {
    let now_ms = now.saturating_sub(EPOCH_UNIX_MS);
    match clock.observe(remote, now) {
        Observed::Accepted(r) => {
            assert_eq!(r, remote);
            assert!(remote.ms() <= now_ms.saturating_add(skew));
            assert!(clock.last() >= remote);
        }
        Observed::Clamped {
            original,
            clamped,
            ahead_ms,
        } => {
            assert_eq!(original, remote);
            assert!(remote.ms() > now_ms.saturating_add(skew));
            assert_eq!(ahead_ms, remote.ms() - now_ms);
            assert!(clamped > last || saturated(last));
            // The clock moved to the clamped stamp, not to the remote one.
            assert_eq!(clock.last(), clamped);
        }
    }
}
