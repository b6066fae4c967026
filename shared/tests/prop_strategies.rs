//! What `set_union`, `counter` and `text_merge` promise, checked on
//! generated inputs.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Value};
use sync_core::hlc::Hlc;
use sync_core::merge::{
    counter, merge_column, set_union, text_merge, Current, Incoming, Outcome, Strategy as Merge,
};
use sync_core::text::merge3;

fn small_set() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..8, 0..8)
}

fn arr(v: &[u8]) -> Value {
    Value::Array(v.iter().map(|x| json!(x)).collect())
}

fn elems(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// `set_union(base, theirs, mine)` = (theirs minus what mine removed from
    /// base) plus what mine added to base, without duplicates:
    /// - every element mine added (in mine, not in base) is in the result;
    /// - no element mine removed (in base, not in mine) is in the result;
    /// - every element of theirs that mine did not remove stays;
    /// - nothing else appears.
    #[test]
    fn set_union_keeps_adds_and_applies_seen_removes(
        base in small_set(), theirs in small_set(), mine in small_set(),
    ) {
        let r = set_union(&arr(&base), &arr(&theirs), &arr(&mine)).unwrap();
        let r = elems(&r);
        let set = |v: &[u8]| v.iter().copied().collect::<BTreeSet<u8>>();
        let (b, t, m, out) = (set(&base), set(&theirs), set(&mine), set(&r));
        prop_assert_eq!(out.len(), r.len(), "no duplicates");
        for x in 0u8..8 {
            let added = m.contains(&x) && !b.contains(&x);
            let removed = b.contains(&x) && !m.contains(&x);
            let expect = added || (t.contains(&x) && !removed);
            prop_assert_eq!(out.contains(&x), expect, "element {}", x);
        }
        // With nothing concurrent (theirs is the base) the result is mine as a set.
        let r2 = set(&elems(&set_union(&arr(&base), &arr(&base), &arr(&mine)).unwrap()));
        prop_assert_eq!(r2, m);
        // Deterministic.
        prop_assert_eq!(
            set_union(&arr(&base), &arr(&theirs), &arr(&mine)),
            set_union(&arr(&base), &arr(&theirs), &arr(&mine))
        );
    }

    /// A set_union column never records a conflict for arrays, and what the
    /// server stores obeys the rule above.
    #[test]
    fn set_union_column_merges_without_conflict(
        base in small_set(), theirs in small_set(), mine in small_set(), concurrent in any::<bool>(),
    ) {
        let (bv, tv, mv) = (arr(&base), arr(&theirs), arr(&mine));
        let base_ver = Hlc::new(10, 0, 1);
        let cur_ver = if concurrent { Hlc::new(20, 0, 2) } else { base_ver };
        let m = merge_column(
            Merge::SetUnion,
            Current { value: &tv, ver: cur_ver },
            Incoming { value: &mv, ver: Hlc::new(15, 0, 3), base_ver, base_value: Some(&bv) },
        );
        prop_assert!(m.conflict.is_none());
        let stored = m.write.as_ref().map(|(v, _)| v.clone()).unwrap_or(tv.clone());
        let expect = set_union(&bv, &tv, &mv).unwrap();
        prop_assert_eq!(
            elems(&stored).into_iter().collect::<BTreeSet<_>>(),
            elems(&expect).into_iter().collect::<BTreeSet<_>>()
        );
        if let Some((_, ver)) = m.write {
            prop_assert!(ver > cur_ver);
        }
    }

    #[test]
    fn set_union_refuses_non_arrays(x in -5i64..5) {
        prop_assert_eq!(set_union(&json!([1]), &json!(x), &json!([2])), None);
        prop_assert_eq!(set_union(&json!("a"), &json!([1]), &json!([2])), None);
    }

    /// Counter: clients that all read the server value `start` push deltas;
    /// applied one after the other in any order the server ends at
    /// `start + sum(deltas)`, with no conflict recorded.
    #[test]
    fn counter_deltas_add_up_in_any_order(
        start in -1000i64..1000,
        deltas in prop::collection::vec(-50i64..50, 1..8),
        order_seed in any::<u64>(),
        floats in any::<bool>(),
    ) {
        let start_v = if floats { json!(start as f64 + 0.5) } else { json!(start) };
        let base_ver = Hlc::new(100, 0, 0);
        let mut order: Vec<usize> = (0..deltas.len()).collect();
        // A deterministic shuffle from the seed.
        let mut s = order_seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let (mut value, mut ver) = (start_v.clone(), base_ver);
        for (n, &i) in order.iter().enumerate() {
            let mine = counter(&json!(0), &start_v, &json!(deltas[i])).unwrap();
            let m = merge_column(
                Merge::Counter,
                Current { value: &value, ver },
                Incoming {
                    value: &mine,
                    ver: Hlc::new(150 - n as u64, 0, i as u16 + 1),
                    base_ver,
                    base_value: Some(&start_v),
                },
            );
            prop_assert!(m.conflict.is_none(), "{:?}", m);
            prop_assert!(matches!(m.outcome, Outcome::Applied | Outcome::Merged | Outcome::Unchanged));
            if let Some((v, w)) = m.write {
                prop_assert!(w > ver);
                value = v;
                ver = w;
            }
        }
        let sum: i64 = deltas.iter().sum();
        if floats {
            prop_assert_eq!(value.as_f64().unwrap(), start as f64 + 0.5 + sum as f64);
        } else {
            prop_assert_eq!(value, json!(start + sum));
        }
    }

    #[test]
    fn counter_is_exact_on_large_integers(t in any::<i64>(), b in any::<i64>(), m in any::<i64>()) {
        let exact = i128::from(t) + i128::from(m) - i128::from(b);
        let r = counter(&json!(b), &json!(t), &json!(m));
        match r {
            Some(v) if v.is_i64() => prop_assert_eq!(i128::from(v.as_i64().unwrap()), exact),
            Some(v) => prop_assert_eq!(i128::from(v.as_u64().unwrap()), exact),
            None => prop_assert!(exact < i128::from(i64::MIN) || exact > i128::from(u64::MAX)),
        }
    }
}

// ---------------------------------------------------------------- text merge

/// Something done to one word of the base by one side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WordEdit {
    Keep,
    Replace,
    Delete,
    InsertBefore,
}

fn word_edit() -> impl Strategy<Value = WordEdit> {
    prop_oneof![
        4 => Just(WordEdit::Keep),
        1 => Just(WordEdit::Replace),
        1 => Just(WordEdit::Delete),
        1 => Just(WordEdit::InsertBefore),
    ]
}

/// A side's text: base words `w0 w1 ...` with the edits of the indices the
/// side owns applied; new words are unique (`t3`, `m3`, `ti3`, ...).
fn render(words: usize, edits: &[(u8, WordEdit)], side: u8, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (owner, e)) in edits.iter().enumerate().take(words) {
        let mine = side != 0 && (*owner == side || *owner == 3);
        match (mine, e) {
            (true, WordEdit::Replace) => out.push(format!("{prefix}{i}")),
            (true, WordEdit::Delete) => {}
            (true, WordEdit::InsertBefore) => {
                out.push(format!("{prefix}i{i}"));
                out.push(format!("w{i}"));
            }
            _ => out.push(format!("w{i}")),
        }
    }
    out
}

fn text_case() -> impl Strategy<Value = (usize, Vec<(u8, WordEdit)>)> {
    (2usize..24).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec((0u8..3, word_edit()), n).prop_map(|mut v| {
                // Owner 0: untouched, 1: theirs, 2: mine. Edits of the two
                // sides are kept at least one untouched word apart.
                let mut last_owner = 0u8;
                for slot in v.iter_mut() {
                    if slot.1 == WordEdit::Keep {
                        slot.0 = 0;
                    }
                    if slot.0 != 0 && last_owner != 0 && slot.0 != last_owner {
                        *slot = (0, WordEdit::Keep);
                    }
                    last_owner = slot.0;
                }
                v
            }),
        )
    })
}

fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "b", "ab", " ", "  ", "\n", ",", ".", "é", "e\u{301}", "日", "本", "-", "x_y",
        ]),
        0..12,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Edits of different words, at least one untouched word apart, always
    /// merge, to exactly both sides' edits applied.
    #[test]
    fn separated_word_edits_merge((n, edits) in text_case()) {
        let base = render(n, &edits, 0, "").join(" ");
        let theirs = render(n, &edits, 1, "t").join(" ");
        let mine = render(n, &edits, 2, "m").join(" ");
        let expected: Vec<String> = edits
            .iter()
            .enumerate()
            .flat_map(|(i, (owner, e))| {
                let p = if *owner == 1 { "t" } else { "m" };
                match e {
                    _ if *owner == 0 => vec![format!("w{i}")],
                    WordEdit::Replace => vec![format!("{p}{i}")],
                    WordEdit::Delete => vec![],
                    WordEdit::InsertBefore => vec![format!("{p}i{i}"), format!("w{i}")],
                    WordEdit::Keep => vec![format!("w{i}")],
                }
            })
            .collect();
        let merged = merge3(&base, &theirs, &mine);
        let expected = expected.join(" ");
        prop_assert_eq!(merged.as_deref(), Some(expected.as_str()),
            "base {:?} theirs {:?} mine {:?}", base, theirs, mine);
        // Symmetric in the two sides.
        prop_assert_eq!(merge3(&base, &mine, &theirs), merged);
    }

    /// Both sides changing the same word differently never merges, whatever
    /// else they did.
    #[test]
    fn same_word_changed_twice_does_not_merge((n, edits) in text_case(), at in 0usize..24) {
        let at = at % n;
        let mut edits = edits;
        edits[at] = (3, WordEdit::Replace);
        let base = render(n, &edits, 0, "").join(" ");
        let theirs = render(n, &edits, 1, "t").join(" ");
        let mine = render(n, &edits, 2, "m").join(" ");
        prop_assert_eq!(merge3(&base, &theirs, &mine), None,
            "base {:?} theirs {:?} mine {:?}", base, theirs, mine);
        let v = |s: &str| Value::String(s.to_string());
        // And the text_merge column falls back to lww with a conflict.
        let m = merge_column(
            Merge::TextMerge,
            Current { value: &v(&theirs), ver: Hlc::new(20, 0, 1) },
            Incoming { value: &v(&mine), ver: Hlc::new(30, 0, 2), base_ver: Hlc::new(10, 0, 1), base_value: Some(&v(&base)) },
        );
        prop_assert!(m.conflict.is_some());
        prop_assert_eq!(m.write.map(|w| w.0), Some(v(&mine)));
    }

    /// Laws that hold for any strings: identities, symmetry, determinism,
    /// and `text_merge` agreeing with `merge3`.
    #[test]
    fn merge3_laws(base in any_text(), theirs in any_text(), mine in any_text()) {
        prop_assert_eq!(merge3(&base, &theirs, &base), Some(theirs.clone()));
        prop_assert_eq!(merge3(&base, &base, &mine), Some(mine.clone()));
        prop_assert_eq!(merge3(&base, &mine, &mine), Some(mine.clone()));
        let r = merge3(&base, &theirs, &mine);
        prop_assert_eq!(merge3(&base, &mine, &theirs), r.clone());
        prop_assert_eq!(merge3(&base, &theirs, &mine), r.clone());
        let v = |s: &str| Value::String(s.to_string());
        prop_assert_eq!(text_merge(&v(&base), &v(&theirs), &v(&mine)), r.map(Value::String));
        prop_assert_eq!(text_merge(&json!(1), &v(&theirs), &v(&mine)), None);
    }
}
