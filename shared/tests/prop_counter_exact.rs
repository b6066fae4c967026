//! `counter` is exact: integers against `i128` arithmetic, decimals against
//! a scaled-integer model, and the algebra of deltas (their order does not
//! matter), on number literals written in every JSON spelling (plain,
//! `1.5e-3`, `15E-4`, `0.0015e+0`, ...).

use proptest::prelude::*;
use serde_json::Value;
use sync_core::decimal::{counter_sum, Decimal, DecimalError};
use sync_core::merge::counter;

/// A number in the model: `mantissa * 10^-scale` (the scale may be
/// negative: `5 * 10^3`), written in one of several spellings.
#[derive(Debug, Clone)]
struct Lit {
    mantissa: i64,
    scale: i32,
    /// 0: plain; 1: mantissa with an exponent; 2: a point inside the
    /// mantissa and an exponent making up the rest.
    form: u8,
    /// Fraction digits of the mantissa in form 2.
    frac: u32,
    /// Which exponent spelling (`e`, `E`, `e+`, `E+`) for a non-negative
    /// exponent.
    e: u8,
}

impl Lit {
    /// The literal's scale: digits after the point of its plain form.
    fn literal_scale(&self) -> u32 {
        self.scale.max(0) as u32
    }

    /// The value as an integer at the literal's scale.
    fn scaled(&self) -> i128 {
        let shift = self.literal_scale() as i32 - self.scale;
        i128::from(self.mantissa) * 10i128.pow(shift as u32)
    }

    fn text(&self) -> String {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let mag = self.mantissa.unsigned_abs().to_string();
        let exp = |x: i64| -> String {
            if x < 0 {
                format!("{}{x}", if self.e.is_multiple_of(2) { "e" } else { "E" })
            } else {
                let spelling = ["e", "E", "e+", "E+"][usize::from(self.e % 4)];
                format!("{spelling}{x}")
            }
        };
        match self.form % 3 {
            0 => render(self.scaled(), self.literal_scale()),
            1 => format!("{sign}{mag}{}", exp(-i64::from(self.scale))),
            _ => {
                let f = self.frac as usize;
                let padded = format!("{mag:0>width$}", width = f + 1);
                let (int, fr) = padded.split_at(padded.len() - f);
                let point = if f > 0 { "." } else { "" };
                format!(
                    "{sign}{int}{point}{fr}{}",
                    exp(i64::from(self.frac) - i64::from(self.scale))
                )
            }
        }
    }
}

/// The model's rendering of `v * 10^-scale`: plain, exactly `scale`
/// fraction digits, no negative zero.
fn render(v: i128, scale: u32) -> String {
    let digits = format!("{:0>width$}", v.unsigned_abs(), width = scale as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - scale as usize);
    let sign = if v < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

fn lit() -> impl Strategy<Value = Lit> {
    (
        -1_000_000_000_000_000i64..=1_000_000_000_000_000,
        -4i32..=18,
        0u8..3,
        0u32..6,
        0u8..4,
    )
        .prop_map(|(mantissa, scale, form, frac, e)| Lit {
            mantissa,
            scale,
            form,
            frac,
            e,
        })
}

/// Small mantissas, so sums of different literals collide and cancel.
fn small_lit() -> impl Strategy<Value = Lit> {
    (-300i64..=300, -2i32..=4, 0u8..3, 0u32..4, 0u8..4).prop_map(
        |(mantissa, scale, form, frac, e)| Lit {
            mantissa,
            scale,
            form,
            frac,
            e,
        },
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// A literal serde_json's `as_i64`/`as_u64` read as an integer.
fn as_int(text: &str) -> Option<i128> {
    text.parse::<i64>()
        .map(i128::from)
        .or_else(|_| text.parse::<u64>().map(i128::from))
        .ok()
}

/// What `counter` must return for three literals (as text).
fn expected(b: &str, t: &str, m: &str, exact: Option<(i128, u32)>) -> Option<String> {
    if let (Some(b), Some(t), Some(m)) = (as_int(b), as_int(t), as_int(m)) {
        // All 64-bit integers: exact, and the result must fit 64 bits.
        let sum = t + m - b;
        let fits = i64::try_from(sum).is_ok() || u64::try_from(sum).is_ok();
        return fits.then(|| sum.to_string());
    }
    exact.map(|(v, scale)| render(v, scale))
}

fn run(b: &str, t: &str, m: &str) -> Option<String> {
    counter(&json(b), &json(t), &json(m)).map(|v| v.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Every spelling parses to the model's value at the literal's scale,
    /// and the plain rendering parses back to the same decimal.
    #[test]
    fn literals_parse_to_the_model(l in lit()) {
        let text = l.text();
        let d = Decimal::parse(&text).unwrap();
        let plain = render(l.scaled(), l.literal_scale());
        prop_assert_eq!(d.to_string(), plain.clone(), "{}", text);
        prop_assert_eq!(d.scale(), l.literal_scale() as usize);
        prop_assert_eq!(Decimal::parse(&plain).unwrap(), d.clone());
        // serde_json keeps the literal's digits (it spells the exponent
        // `e`/`e-`), so the merge sees the same decimal.
        prop_assert_eq!(Decimal::parse(&json(&text).to_string()).unwrap(), d);
    }

    /// Decimals: `theirs + (mine - base)` equals the scaled-integer model at
    /// the largest scale of the three.
    #[test]
    fn decimals_match_the_scaled_integer_model(b in lit(), t in lit(), m in lit()) {
        let s = b.literal_scale().max(t.literal_scale()).max(m.literal_scale());
        let at = |l: &Lit| l.scaled() * 10i128.pow(s - l.literal_scale());
        let exact = at(&t) + at(&m) - at(&b);
        let (bt, tt, mt) = (b.text(), t.text(), m.text());
        prop_assert_eq!(
            run(&bt, &tt, &mt),
            expected(&bt, &tt, &mt, Some((exact, s))),
            "{} + ({} - {})", tt, mt, bt
        );
    }

    /// Integers beyond 64 bits go through the decimal path and agree with
    /// `i128`; integers within 64 bits keep the 64-bit rule.
    #[test]
    fn integers_match_i128(
        b in -(1i128 << 100)..(1i128 << 100),
        t in -(1i128 << 100)..(1i128 << 100),
        m in -(1i128 << 100)..(1i128 << 100),
        shrink in 0u32..3,
    ) {
        // Sometimes bring the values into 64-bit range.
        let f = |v: i128| if shrink == 0 { v } else { v >> (36 + 30 * (shrink - 1)) };
        let (b, t, m) = (f(b), f(t), f(m));
        let (bt, tt, mt) = (b.to_string(), t.to_string(), m.to_string());
        prop_assert_eq!(
            run(&bt, &tt, &mt),
            expected(&bt, &tt, &mt, Some((t + m - b, 0)))
        );
    }

    /// `null` counts as zero.
    #[test]
    fn null_is_zero(t in lit(), m in lit()) {
        let (tt, mt) = (t.text(), m.text());
        prop_assert_eq!(
            counter(&Value::Null, &json(&tt), &json(&mt)),
            counter(&json("0"), &json(&tt), &json(&mt))
        );
    }

    /// The deltas commute: `theirs + (mine - base)` is symmetric in
    /// `theirs` and `mine`.
    #[test]
    fn deltas_commute(b in small_lit(), t in small_lit(), m in small_lit()) {
        let (bt, tt, mt) = (b.text(), t.text(), m.text());
        prop_assert_eq!(run(&bt, &tt, &mt), run(&bt, &mt, &tt));
        prop_assert_eq!(counter_sum(&bt, &tt, &mt), counter_sum(&bt, &mt, &tt));
    }

    /// Two pushes applied to a decimal counter in either order give the
    /// same literal (value and scale).
    #[test]
    fn pushes_apply_in_any_order(
        t in small_lit().prop_filter("a decimal", |l| l.scale > 0 && l.form % 3 != 2),
        b1 in small_lit(), m1 in small_lit(),
        b2 in small_lit(), m2 in small_lit(),
    ) {
        let (t, b1, m1, b2, m2) = (json(&t.text()), json(&b1.text()), json(&m1.text()),
                                   json(&b2.text()), json(&m2.text()));
        let one = counter(&b1, &t, &m1).and_then(|v| counter(&b2, &v, &m2));
        let two = counter(&b2, &t, &m2).and_then(|v| counter(&b1, &v, &m1));
        prop_assert!(one.is_some());
        prop_assert_eq!(one, two);
    }

    /// A push that changed nothing (`mine == base`) leaves the value, at the
    /// larger scale.
    #[test]
    fn an_empty_delta_keeps_the_value(b in lit(), t in lit()) {
        let (bt, tt) = (b.text(), t.text());
        let r = counter_sum(&bt, &tt, &bt).unwrap();
        let (r, t) = (Decimal::parse(&r).unwrap(), Decimal::parse(&tt).unwrap());
        prop_assert_eq!(r.cmp_value(&t), std::cmp::Ordering::Equal);
        prop_assert_eq!(r.scale(), t.scale().max(b.literal_scale() as usize));
    }

    /// Absurd exponents are refused without computing them.
    #[test]
    fn huge_exponents_are_refused(
        mantissa in 1u64..1000,
        exp in 140_000u64..u64::MAX,
        negative_exp in any::<bool>(),
    ) {
        let text = format!("{mantissa}e{}{exp}", if negative_exp { "-" } else { "" });
        prop_assert_eq!(Decimal::parse(&text), Err(DecimalError::OutOfRange));
        prop_assert_eq!(run("0", &text, "1"), None);
        prop_assert_eq!(run("0.5", "1", &text), None);
    }
}
