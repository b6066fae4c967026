//! `merge_column` over every strategy with arbitrary JSON values (numbers in
//! every spelling, texts, arrays, objects, null), stamps and bases, plus
//! `lww_cmp`, `superseding_ver` and `set_union`. Invariants (see
//! docs/merge-rules.md):
//! - no panic, and the same inputs give the same decision;
//! - a column's version never goes backwards;
//! - the outcome matches the write (applied/merged write, rejected/pending
//!   do not, unchanged writes at most a newer stamp of the same value);
//! - writing the value the column already has is `Unchanged`, no conflict
//!   (except a counter delta);
//! - a non-concurrent write records no conflict (except a counter or
//!   set_union merge that could not be computed and fell back to lww), and
//!   nothing is `Merged` unless concurrent;
//! - a written value merged again is stable: nothing changes the second time;
//! - `lww_cmp` is a total order, and two concurrent `lww` writes give the
//!   same value in either order;
//! - `set_union` keeps what the writer added, drops what it removed and
//!   has no duplicates.
#![no_main]

use std::cmp::Ordering;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync_core::hlc::Hlc;
use sync_core::merge::{
    lww_cmp, merge_column, set_union, superseding_ver, ColumnMerge, Current, Incoming, Outcome,
    Strategy,
};
use sync_core_fuzz::{column_value, hlc};

#[derive(Debug)]
struct Write {
    value: Value,
    ver: Hlc,
    base_ver: Hlc,
    base_value: Option<Value>,
}

#[derive(Debug)]
struct Input {
    strategy: Strategy,
    cur: Value,
    cur_ver: Hlc,
    a: Write,
    b: Write,
}

fn write(u: &mut Unstructured, cur: &Value, cur_ver: Hlc) -> Result<Write> {
    let value = match u.int_in_range(0u8..=3)? {
        0 => cur.clone(),
        _ => column_value(u)?,
    };
    let base_value = match u.int_in_range(0u8..=3)? {
        0 => None,
        1 => Some(cur.clone()),
        _ => Some(column_value(u)?),
    };
    let base_ver = if u.arbitrary()? { cur_ver } else { hlc(u)? };
    Ok(Write {
        value,
        ver: hlc(u)?,
        base_ver,
        base_value,
    })
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let strategy = *u.choose(&Strategy::ALL)?;
        let cur = column_value(u)?;
        let cur_ver = hlc(u)?;
        let a = write(u, &cur, cur_ver)?;
        let b = write(u, &cur, cur_ver)?;
        Ok(Input {
            strategy,
            cur,
            cur_ver,
            a,
            b,
        })
    }
}

fn merge(strategy: Strategy, cur: &Value, cur_ver: Hlc, w: &Write) -> ColumnMerge {
    merge_column(
        strategy,
        Current {
            value: cur,
            ver: cur_ver,
        },
        Incoming {
            value: &w.value,
            ver: w.ver,
            base_ver: w.base_ver,
            base_value: w.base_value.as_ref(),
        },
    )
}

/// The column after a decision.
fn after(cur: &Value, cur_ver: Hlc, m: &ColumnMerge) -> (Value, Hlc) {
    match &m.write {
        Some((v, ver)) => (v.clone(), *ver),
        None => (cur.clone(), cur_ver),
    }
}

fn check(strategy: Strategy, cur: &Value, cur_ver: Hlc, w: &Write) {
    let m = merge(strategy, cur, cur_ver, w);
    assert_eq!(m, merge(strategy, cur, cur_ver, w), "not deterministic");
    let concurrent = cur_ver > w.base_ver;
    let delta = strategy == Strategy::Counter && w.base_value.is_some();
    let merges_against_base =
        matches!(strategy, Strategy::Counter | Strategy::SetUnion) && w.base_value.is_some();

    if let Some((_, ver)) = &m.write {
        assert!(*ver >= cur_ver, "version went backwards: {m:?}");
    }
    match m.outcome {
        Outcome::Applied | Outcome::Merged => assert!(m.write.is_some(), "{m:?}"),
        Outcome::Rejected | Outcome::Pending => {
            assert!(m.write.is_none() && m.conflict.is_some(), "{m:?}")
        }
        Outcome::Unchanged => {
            if let Some((v, ver)) = &m.write {
                assert_eq!(v, cur);
                assert!(*ver > cur_ver && *ver == w.ver);
            }
        }
    }
    if m.outcome == Outcome::Merged {
        assert!(concurrent, "merged without a concurrent write: {m:?}");
    }
    if w.value == *cur && !delta {
        assert_eq!(m.outcome, Outcome::Unchanged, "{m:?}");
        assert!(m.conflict.is_none(), "{m:?}");
    }
    if !concurrent && !merges_against_base {
        assert!(m.conflict.is_none(), "{m:?}");
        assert!(matches!(m.outcome, Outcome::Applied | Outcome::Unchanged));
        assert_eq!(after(cur, cur_ver, &m).0, w.value);
    }
    if !concurrent && m.conflict.is_some() {
        assert!(merges_against_base, "{m:?}");
    }
    // Stable: once written, the same write changes nothing more.
    if m.outcome == Outcome::Applied && !delta {
        let (v, ver) = after(cur, cur_ver, &m);
        if v == w.value {
            let again = merge(strategy, &v, ver, w);
            assert_eq!(again.outcome, Outcome::Unchanged, "{again:?}");
            assert!(
                again.write.is_none() && again.conflict.is_none(),
                "{again:?}"
            );
        }
    }
    assert!(superseding_ver(cur_ver, w.ver) >= cur_ver);
    assert!(superseding_ver(cur_ver, w.ver) >= w.ver.min(cur_ver));
}

fuzz_target!(|i: Input| {
    check(i.strategy, &i.cur, i.cur_ver, &i.a);
    check(i.strategy, &i.cur, i.cur_ver, &i.b);

    // lww_cmp is a total order.
    let ab = lww_cmp(i.a.ver, &i.a.value, i.b.ver, &i.b.value);
    assert_eq!(
        ab,
        lww_cmp(i.b.ver, &i.b.value, i.a.ver, &i.a.value).reverse()
    );
    // Equal only for the same stamp and the same JSON text.
    let (text_a, text_b) = (i.a.value.to_string(), i.b.value.to_string());
    assert_eq!(
        ab == Ordering::Equal,
        i.a.ver == i.b.ver && text_a == text_b
    );

    // Two concurrent lww writes converge in either order.
    if i.strategy == Strategy::Lww && i.a.base_ver < i.cur_ver && i.b.base_ver < i.cur_ver {
        let apply = |first: &Write, second: &Write| {
            let m = merge(Strategy::Lww, &i.cur, i.cur_ver, first);
            let (v, ver) = after(&i.cur, i.cur_ver, &m);
            let m = merge(Strategy::Lww, &v, ver, second);
            after(&v, ver, &m).0
        };
        assert_eq!(apply(&i.a, &i.b), apply(&i.b, &i.a));
    }

    // set_union on arrays.
    if let (Some(base), Value::Array(theirs), Value::Array(mine)) =
        (&i.a.base_value, &i.cur, &i.a.value)
    {
        if let Some(Value::Array(out)) = set_union(base, &i.cur, &i.a.value) {
            let base = base.as_array().cloned().unwrap_or_default();
            for (k, v) in out.iter().enumerate() {
                assert!(!out[..k].contains(v), "duplicate {v}");
                assert!(theirs.contains(v) || mine.contains(v));
            }
            for v in mine {
                if !base.contains(v) {
                    assert!(out.contains(v), "lost an added {v}");
                }
            }
            for v in &base {
                if !mine.contains(v) {
                    assert!(!out.contains(v), "kept a removed {v}");
                }
            }
        }
    }
});
