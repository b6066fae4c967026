//! Properties of the LWW register join (`lww_cmp`, `merge_column` with
//! `lww`) and of the hybrid logical clock (monotonic ticks, skew clamping).

use std::cmp::Ordering;

use proptest::prelude::*;
use serde_json::{json, Value};
use sync_core::hlc::{Clock, Hlc, Observed, DEFAULT_MAX_SKEW_MS, EPOCH_UNIX_MS};
use sync_core::merge::{lww_cmp, merge_column, Current, Incoming, Outcome, Strategy as Merge};

/// A register state: value and stamp.
type Reg = (Value, Hlc);

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0i64..4).prop_map(Value::from),
        prop::sample::select(vec!["", "a", "b", "ab"]).prop_map(Value::from),
        Just(json!(1.0)),
        Just(json!([1, 2])),
        Just(json!({"k": 1})),
    ]
}

/// Small ranges so equal stamps (ties) are frequent; never `Hlc::ZERO`.
fn stamp() -> impl Strategy<Value = Hlc> {
    (1u64..4, 0u64..3, 0u16..3).prop_map(|(ms, c, t)| Hlc::new(ms, c, t))
}

fn reg() -> impl Strategy<Value = Reg> {
    (json_value(), stamp())
}

/// The join defined by the total order `lww_cmp`.
fn join(a: &Reg, b: &Reg) -> Reg {
    if lww_cmp(a.1, &a.0, b.1, &b.0) == Ordering::Less {
        b.clone()
    } else {
        a.clone()
    }
}

/// A replica holding `cur` receives the state `inc` of a peer (nothing is
/// known about what the peer had seen, so the base is `Hlc::ZERO`).
fn apply(cur: &Reg, inc: &Reg) -> Reg {
    let m = merge_column(
        Merge::Lww,
        Current {
            value: &cur.0,
            ver: cur.1,
        },
        Incoming {
            value: &inc.0,
            ver: inc.1,
            base_ver: Hlc::ZERO,
            base_value: None,
        },
    );
    m.write.unwrap_or_else(|| cur.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn lww_cmp_is_a_total_order(a in reg(), b in reg(), c in reg()) {
        let ab = lww_cmp(a.1, &a.0, b.1, &b.0);
        prop_assert_eq!(ab, lww_cmp(b.1, &b.0, a.1, &a.0).reverse());
        prop_assert_eq!(ab == Ordering::Equal, a == b);
        let bc = lww_cmp(b.1, &b.0, c.1, &c.0);
        let ac = lww_cmp(a.1, &a.0, c.1, &c.0);
        if ab != Ordering::Greater && bc != Ordering::Greater {
            prop_assert_ne!(ac, Ordering::Greater);
        }
        // A higher stamp always wins, whatever the values.
        if a.1 > b.1 {
            prop_assert_eq!(ab, Ordering::Greater);
        }
    }

    #[test]
    fn lww_join_is_commutative_associative_idempotent(a in reg(), b in reg(), c in reg()) {
        prop_assert_eq!(join(&a, &b), join(&b, &a));
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        prop_assert_eq!(join(&a, &a), a.clone());
    }

    #[test]
    fn merge_column_lww_is_the_join(a in reg(), b in reg(), c in reg()) {
        // merge_column decides exactly as the join does ...
        prop_assert_eq!(apply(&a, &b), join(&a, &b));
        // ... so receiving states in any order, any number of times, ends
        // in the same state.
        prop_assert_eq!(apply(&a, &b), apply(&b, &a));
        prop_assert_eq!(apply(&apply(&a, &b), &c), apply(&a, &apply(&b, &c)));
        prop_assert_eq!(apply(&apply(&a, &b), &c), apply(&apply(&a, &c), &b));
        prop_assert_eq!(apply(&a, &a), a.clone());
        prop_assert_eq!(apply(&apply(&a, &b), &b), apply(&a, &b));
    }

    #[test]
    fn lww_records_a_conflict_exactly_for_concurrent_different_values(
        cur in reg(), inc in reg(), base_ms in 0u64..4,
    ) {
        let base_ver = Hlc::new(base_ms, 0, 0);
        let m = merge_column(
            Merge::Lww,
            Current { value: &cur.0, ver: cur.1 },
            Incoming { value: &inc.0, ver: inc.1, base_ver, base_value: None },
        );
        let concurrent = cur.1 > base_ver;
        prop_assert_eq!(m.conflict.is_some(), concurrent && cur.0 != inc.0);
        if !concurrent && cur.0 != inc.0 {
            // Causally later: applied, with a version above the current one.
            prop_assert_eq!(m.outcome, Outcome::Applied);
            let (v, ver) = m.write.clone().unwrap();
            prop_assert_eq!(v, inc.0.clone());
            prop_assert!(ver > cur.1);
        }
        if let Some((_, ver)) = &m.write {
            prop_assert!(*ver >= cur.1, "versions never go backwards");
        }
    }

    /// Tie-break: the same two writes meeting the same state pick the same
    /// winner whichever arrives first.
    #[test]
    fn tie_break_does_not_depend_on_arrival_order(
        v1 in json_value(), v2 in json_value(), ms in 1u64..3, c in 0u64..2, t1 in 0u16..2, t2 in 0u16..2,
    ) {
        let (a, b) = ((v1, Hlc::new(ms, c, t1)), (v2, Hlc::new(ms, c, t2)));
        let start: Reg = (Value::Null, Hlc::new(0, 0, 0));
        let ab = apply(&apply(&start, &a), &b);
        let ba = apply(&apply(&start, &b), &a);
        prop_assert_eq!(&ab, &ba);
        prop_assert!(ab == a || ab == b);
    }
}

const NOW_BASE: u64 = EPOCH_UNIX_MS + 1_000_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn observe_clamps_exactly_past_the_skew_bound(
        tag in 0u16..4096,
        restored_ms in 0u64..2_000_000,
        skew in prop_oneof![Just(DEFAULT_MAX_SKEW_MS), 0u64..600_000],
        now_off in 0u64..1_000_000,
        ahead in -900_000i64..900_000,
        counter in 0u64..1024,
        rtag in 0u16..4096,
    ) {
        let mut clock = Clock::with_tag(tag);
        clock.set_max_skew_ms(skew);
        clock.advance_to(Hlc::new(1_000_000_000 - 1_000_000 + restored_ms, 0, 7));
        let now = NOW_BASE + now_off;
        let now_ms = now - EPOCH_UNIX_MS;
        let remote = Hlc::new(now_ms.saturating_add_signed(ahead), counter, rtag);
        let before = clock.last();
        let mut twin = clock.clone();
        let obs = clock.observe(remote, now);
        // Deterministic: the same state and inputs give the same result.
        prop_assert_eq!(twin.observe(remote, now), obs);
        prop_assert_eq!(twin.last(), clock.last());

        let should_clamp = remote.ms() > now_ms + skew;
        match obs {
            Observed::Clamped { original, clamped, ahead_ms } => {
                prop_assert!(should_clamp);
                prop_assert_eq!(original, remote);
                prop_assert_eq!(ahead_ms, remote.ms() - now_ms);
                prop_assert!(clamped > before);
                prop_assert_eq!(clamped.tag(), tag);
                prop_assert!(clamped.ms() <= now_ms.max(before.ms() + 1));
                prop_assert_eq!(clock.last(), clamped);
            }
            Observed::Accepted(h) => {
                prop_assert!(!should_clamp);
                prop_assert_eq!(h, remote);
                prop_assert!(clock.last() >= remote && clock.last() >= before);
                prop_assert!(clock.tick(now) > remote);
            }
        }
        prop_assert_eq!(obs.stamp() == remote, !should_clamp);
    }

    #[test]
    fn skew_boundary_is_exact(now_off in 0u64..1_000_000_000, skew in 0u64..1_000_000) {
        let now = NOW_BASE + now_off;
        let now_ms = now - EPOCH_UNIX_MS;
        let mut clock = Clock::with_tag(1);
        clock.set_max_skew_ms(skew);
        let at_bound = Hlc::new(now_ms + skew, 1023, 4095);
        prop_assert_eq!(clock.observe(at_bound, now), Observed::Accepted(at_bound));
        let past = Hlc::new(now_ms + skew + 1, 0, 0);
        let clamped = matches!(clock.observe(past, now), Observed::Clamped { ahead_ms, .. } if ahead_ms == skew + 1);
        prop_assert!(clamped);
    }

    /// Local stamps strictly increase whatever the wall clock does
    /// (backwards, stalled, jumping) and whatever is observed in between.
    #[test]
    fn ticks_are_strictly_monotonic(
        steps in prop::collection::vec((-400_000i64..400_000, any::<bool>(), 0u64..1_500_000, 0u64..1024), 1..60),
    ) {
        let mut clock = Clock::with_tag(5);
        let mut wall = NOW_BASE;
        let mut prev = Hlc::ZERO;
        for (dw, observe, remote_ms, rc) in steps {
            wall = wall.saturating_add_signed(dw);
            if observe {
                let remote = Hlc::new(remote_ms + 999_000_000, rc, 9);
                match clock.observe(remote, wall) {
                    Observed::Accepted(h) => prev = prev.max(h),
                    Observed::Clamped { clamped, .. } => {
                        prop_assert!(clamped > prev);
                        prev = clamped;
                    }
                }
            }
            let t = clock.tick(wall);
            prop_assert!(t > prev, "{t:?} after {prev:?}");
            prop_assert_eq!(t.tag(), 5);
            prev = t;
        }
    }
}
