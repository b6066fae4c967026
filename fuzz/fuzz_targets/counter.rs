//! `counter` (and `sync_core::decimal` under it) on number literals in
//! every spelling, including huge digit counts and exponents such as
//! `1e1000000`, and on any text as a decimal literal. Invariants: no panic,
//! bounded work (a hostile value is refused with `None`, not computed);
//! the same inputs give the same result; the deltas commute
//! (`theirs + (mine - base)` = `mine + (theirs - base)`); undoing a delta
//! gives the value back; an empty delta keeps the value; a result is a
//! plain decimal literal that parses back to itself.
#![no_main]

use std::cmp::Ordering;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync_core::decimal::{Decimal, MAX_INTEGER_DIGITS, MAX_SCALE};
use sync_core::merge::counter;
use sync_core_fuzz::number;

#[derive(Debug)]
struct Input {
    base: Value,
    theirs: Value,
    mine: Value,
    raw: String,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let num = |u: &mut Unstructured<'a>| -> Result<Value> {
            Ok(match u.int_in_range(0u8..=9)? {
                0 => Value::Null,
                1 => Value::from(u.arbitrary::<i64>()?),
                2 => Value::from(u.arbitrary::<u64>()?),
                3 => Value::String("1".into()),
                _ => number(u)?,
            })
        };
        Ok(Input {
            base: num(u)?,
            theirs: num(u)?,
            mine: num(u)?,
            raw: u.arbitrary::<&str>()?.chars().take(64).collect(),
        })
    }
}

fn dec(v: &Value) -> Option<Decimal> {
    match v {
        Value::Null => Some(Decimal::zero()),
        Value::Number(n) => Decimal::parse(&n.to_string()).ok(),
        _ => None,
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (dec(a), dec(b)) {
        (Some(x), Some(y)) => x.cmp_value(&y) == Ordering::Equal,
        _ => false,
    }
}

fuzz_target!(|i: Input| {
    // Any text as a literal: a decimal or an error, and what parses prints
    // back as a plain literal that parses to the same decimal.
    if let Ok(d) = Decimal::parse(&i.raw) {
        let plain = d.to_string();
        assert_eq!(Decimal::parse(&plain), Ok(d.clone()), "{plain}");
        assert!(d.integer_digits() <= MAX_INTEGER_DIGITS && d.scale() <= MAX_SCALE);
        assert!(!plain.contains(['e', 'E']));
    }

    let (b, t, m) = (&i.base, &i.theirs, &i.mine);
    let r = counter(b, t, m);
    assert_eq!(r, counter(b, m, t), "deltas do not commute");
    let Some(r) = r else { return };
    if r.to_string().len() > 1000 {
        // A value near the size bounds costs a millisecond per merge; check
        // the rest on smaller ones, so a million runs stay quick.
        return;
    }
    assert_eq!(Some(&r), counter(b, t, m).as_ref(), "not deterministic");
    let Value::Number(n) = &r else {
        panic!("counter gave a non-number {r}")
    };
    let text = n.to_string();
    let d = Decimal::parse(&text).expect("a counter result is a decimal literal");
    assert!(!text.contains(['e', 'E']), "{text}");
    assert_eq!(d.to_string(), text);
    // Undoing the delta (pushing base again from mine) gives theirs back.
    if let Some(back) = counter(m, &r, b) {
        assert!(same_value(&back, t), "{t} + ({m} - {b}) = {r}, back {back}");
    }
    // An empty delta keeps the value.
    if let Some(same) = counter(b, t, b) {
        assert!(same_value(&same, t), "{t} + ({b} - {b}) = {same}");
    }
});
