//! Exact decimal arithmetic on JSON number literals, for the `counter`
//! strategy.
//!
//! A counter merge computes `theirs + (mine - base)`. Going through `f64`
//! would round (`0.1 + 0.2`, or any integer above 2^53) and silently change
//! a `numeric` column, so non-integer counters are added here instead, on
//! the numbers' literal text (serde_json keeps it with
//! `arbitrary_precision`): the literal is parsed into a sign, its decimal
//! digits and a scale (digits after the point), the operands are brought to
//! the largest scale and added digit by digit, and the result is written as
//! a plain decimal literal (no exponent) with that scale, so
//! `1.10 + (0.5 - 0)` is `1.60`.
//!
//! Sizes are bounded so a hostile literal such as `1e1000000` cannot make a
//! merge allocate or loop without limit: a value may have at most
//! [`MAX_INTEGER_DIGITS`] digits before the point and [`MAX_SCALE`] after it
//! (the limits of PostgreSQL's `numeric`), checked before anything is
//! allocated; anything larger is [`DecimalError::OutOfRange`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Most digits before the decimal point (PostgreSQL `numeric`: 131072).
pub const MAX_INTEGER_DIGITS: usize = 131_072;

/// Most digits after the decimal point (PostgreSQL `numeric`: 16383).
pub const MAX_SCALE: usize = 16_383;

/// Exponents are clamped to this magnitude while parsing (far beyond any
/// accepted value, small enough that the scale arithmetic cannot overflow).
const EXP_CLAMP: i64 = 1 << 40;

/// Why a literal could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// The text is not a JSON number literal.
    #[error("not a JSON number literal")]
    Syntax,
    /// The value has more than [`MAX_INTEGER_DIGITS`] digits before the
    /// point or more than [`MAX_SCALE`] after it.
    #[error(
        "number out of range: at most {MAX_INTEGER_DIGITS} digits before the point and {MAX_SCALE} after it"
    )]
    OutOfRange,
}

/// An exact decimal number: `(-1)^negative * digits * 10^-scale`.
///
/// Equality is representational: `1.0` and `1.00` differ (their scales do),
/// as the literals do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// Never set for zero.
    negative: bool,
    /// The unscaled magnitude, base-10 digits, least significant first,
    /// without most significant zeros (empty for zero).
    digits: Vec<u8>,
    /// Digits after the decimal point.
    scale: usize,
}

impl Decimal {
    /// Zero with scale 0.
    pub fn zero() -> Decimal {
        Decimal::default()
    }

    /// Whether the value is zero (at any scale).
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Digits after the decimal point.
    pub fn scale(&self) -> usize {
        self.scale
    }

    /// Digits before the decimal point, not counting leading zeros (0 for
    /// values below 1 in magnitude).
    pub fn integer_digits(&self) -> usize {
        self.digits.len().saturating_sub(self.scale)
    }

    /// Parses a JSON number literal (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
    /// The scale is the literal's fraction digits minus its exponent, at
    /// least 0: `1.5e-3` is `0.0015` (scale 4), `-0.10` keeps scale 2, `1E+2`
    /// is `100` (scale 0).
    pub fn parse(s: &str) -> Result<Decimal, DecimalError> {
        let b = s.as_bytes();
        let mut i = 0;
        let negative = b.first() == Some(&b'-');
        if negative {
            i = 1;
        }
        let digits_from = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        let int_end = digits_from(i);
        let int_part = &b[i..int_end];
        if int_part.is_empty() || (int_part.len() > 1 && int_part[0] == b'0') {
            return Err(DecimalError::Syntax);
        }
        i = int_end;
        let mut frac: &[u8] = &[];
        if b.get(i) == Some(&b'.') {
            let end = digits_from(i + 1);
            frac = &b[i + 1..end];
            if frac.is_empty() {
                return Err(DecimalError::Syntax);
            }
            i = end;
        }
        let mut exp: i64 = 0;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exp_negative = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let end = digits_from(i);
            if end == i {
                return Err(DecimalError::Syntax);
            }
            for &d in &b[i..end] {
                exp = (exp * 10 + i64::from(d - b'0')).min(EXP_CLAMP);
            }
            if exp_negative {
                exp = -exp;
            }
            i = end;
        }
        if i != b.len() {
            return Err(DecimalError::Syntax);
        }

        // The mantissa is int_part ++ frac; the value is mantissa *
        // 10^-(frac.len() - exp). Work out the sizes before allocating.
        let mantissa = || int_part.iter().chain(frac.iter()).copied();
        let total = int_part.len() + frac.len();
        let leading_zeros = mantissa().take_while(|&d| d == b'0').count();
        let significant = total - leading_zeros;
        // `frac.len()` is at most the input length, far below EXP_CLAMP.
        let raw_scale = frac.len() as i64 - exp;
        let scale = raw_scale.max(0);
        if scale > MAX_SCALE as i64 {
            return Err(DecimalError::OutOfRange);
        }
        if significant == 0 {
            return Ok(Decimal {
                negative: false,
                digits: Vec::new(),
                scale: scale as usize,
            });
        }
        if significant as i64 - raw_scale > MAX_INTEGER_DIGITS as i64 {
            return Err(DecimalError::OutOfRange);
        }
        // A negative raw scale (`12e3`) appends zeros to the mantissa.
        let shift = (scale - raw_scale) as usize;
        let mut digits = Vec::with_capacity(shift + significant);
        digits.resize(shift, 0);
        digits.extend(
            frac.iter()
                .rev()
                .chain(int_part.iter().rev())
                .take(significant)
                .map(|d| d - b'0'),
        );
        Ok(Decimal {
            negative,
            digits,
            scale: scale as usize,
        })
    }

    /// The unscaled digits of the value at `scale` (not below the current
    /// scale): borrowed when the scale is the same.
    fn digits_at(&self, scale: usize) -> Cow<'_, [u8]> {
        debug_assert!(scale >= self.scale);
        if scale == self.scale || self.digits.is_empty() {
            return Cow::Borrowed(&self.digits);
        }
        let shift = scale - self.scale;
        let mut digits = Vec::with_capacity(shift + self.digits.len());
        digits.resize(shift, 0);
        digits.extend_from_slice(&self.digits);
        Cow::Owned(digits)
    }

    /// The value with the opposite sign (zero stays zero).
    pub fn negated(&self) -> Decimal {
        Decimal {
            negative: !self.negative && !self.digits.is_empty(),
            digits: self.digits.clone(),
            scale: self.scale,
        }
    }

    /// `self + other` (`other` negated when `negate_other`), at the larger
    /// scale; `None` past [`MAX_INTEGER_DIGITS`].
    fn add_signed(&self, other: &Decimal, negate_other: bool) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.digits_at(scale), other.digits_at(scale));
        let b_negative = other.negative != negate_other;
        let (negative, digits) = if self.negative == b_negative {
            (self.negative, add_magnitudes(&a, &b))
        } else {
            match cmp_magnitudes(&a, &b) {
                Ordering::Equal => (false, Vec::new()),
                Ordering::Greater => (self.negative, sub_magnitudes(&a, &b)),
                Ordering::Less => (b_negative, sub_magnitudes(&b, &a)),
            }
        };
        let sum = Decimal {
            negative: negative && !digits.is_empty(),
            digits,
            scale,
        };
        (sum.integer_digits() <= MAX_INTEGER_DIGITS).then_some(sum)
    }

    /// `self + other`, exactly, at the larger of the two scales; `None` when
    /// the sum has more than [`MAX_INTEGER_DIGITS`] integer digits.
    pub fn checked_add(&self, other: &Decimal) -> Option<Decimal> {
        self.add_signed(other, false)
    }

    /// `self - other`, exactly, at the larger of the two scales; `None` when
    /// the difference has more than [`MAX_INTEGER_DIGITS`] integer digits.
    pub fn checked_sub(&self, other: &Decimal) -> Option<Decimal> {
        self.add_signed(other, true)
    }

    /// Compares the values (not the representations: `1.0` equals `1`).
    pub fn cmp_value(&self, other: &Decimal) -> Ordering {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.digits_at(scale), other.digits_at(scale));
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => cmp_magnitudes(&a, &b),
            (true, true) => cmp_magnitudes(&b, &a),
        }
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Decimal, DecimalError> {
        Decimal::parse(s)
    }
}

/// A plain decimal literal, no exponent, exactly `scale` digits after the
/// point: `0.0015`, `-12.50`, `100`. It is valid JSON and parses back to the
/// same `Decimal`.
impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s: Vec<u8> = Vec::with_capacity(self.digits.len().max(self.scale) + 3);
        if self.negative {
            s.push(b'-');
        }
        if self.digits.len() > self.scale {
            s.extend(self.digits[self.scale..].iter().rev().map(|d| b'0' + d));
        } else {
            s.push(b'0');
        }
        if self.scale > 0 {
            s.push(b'.');
            let frac = &self.digits[..self.digits.len().min(self.scale)];
            s.resize(s.len() + (self.scale - frac.len()), b'0');
            s.extend(frac.iter().rev().map(|d| b'0' + d));
        }
        // Only ASCII digits, '-' and '.' were written.
        f.write_str(std::str::from_utf8(&s).map_err(|_| fmt::Error)?)
    }
}

/// Compares two normalized magnitudes (no most significant zeros).
fn cmp_magnitudes(a: &[u8], b: &[u8]) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.iter().rev().cmp(b.iter().rev()))
}

fn add_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(long.len() + 1);
    let mut carry = 0;
    for (i, &d) in long.iter().enumerate() {
        let s = d + short.get(i).copied().unwrap_or(0) + carry;
        carry = u8::from(s >= 10);
        out.push(s - 10 * carry);
    }
    if carry > 0 {
        out.push(carry);
    }
    out
}

/// `a - b` for magnitudes with `a >= b`; the result is normalized.
fn sub_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0;
    for (i, &d) in a.iter().enumerate() {
        let sub = b.get(i).copied().unwrap_or(0) + borrow;
        if d >= sub {
            out.push(d - sub);
            borrow = 0;
        } else {
            out.push(d + 10 - sub);
            borrow = 1;
        }
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    out
}

/// `theirs + (mine - base)` on number literals, exactly, written as a plain
/// decimal literal at the largest scale of the three; `None` when a
/// literal is not a JSON number or a value (operand or result) is out of
/// range.
pub fn counter_sum(base: &str, theirs: &str, mine: &str) -> Option<String> {
    let (b, t, m) = (
        Decimal::parse(base).ok()?,
        Decimal::parse(theirs).ok()?,
        Decimal::parse(mine).ok()?,
    );
    Some(t.checked_add(&m.checked_sub(&b)?)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn parses_and_renders_plain() {
        for (lit, plain) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("7", "7"),
            ("-7", "-7"),
            ("1.5e-3", "0.0015"),
            ("-0.10", "-0.10"),
            ("1E+2", "100"),
            ("1e2", "100"),
            ("12.5e1", "125"),
            ("12.50e1", "125.0"),
            ("0.001e3", "1"),
            ("5e-1", "0.5"),
            ("0e5", "0"),
            ("0e-3", "0.000"),
            ("0.000", "0.000"),
            ("100", "100"),
            ("1.0", "1.0"),
            (
                "123456789012345678901234567890.123456789",
                "123456789012345678901234567890.123456789",
            ),
        ] {
            assert_eq!(d(lit).to_string(), plain, "{lit}");
            assert_eq!(d(plain), d(lit), "{lit}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_json_number() {
        for bad in [
            "", "-", "+1", "01", "-01", "1.", ".5", "1e", "1e+", "1e-", "1.5.5", " 1", "1 ", "NaN",
            "Infinity", "0x10", "1_000", "--1", "1e1.5", "١",
        ] {
            assert_eq!(Decimal::parse(bad), Err(DecimalError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn bounds_are_checked_before_allocating() {
        for big in [
            "1e1000000",
            "-1e131072",
            "1e-1000000",
            "1e99999999999999999999999999",
            "1e-99999999999999999999999999",
            "0e-16384",
        ] {
            assert_eq!(Decimal::parse(big), Err(DecimalError::OutOfRange), "{big}");
        }
        assert!(Decimal::parse("0e99999999999999999999999999")
            .unwrap()
            .is_zero());
        let max_int = d("1e131071");
        assert_eq!(max_int.integer_digits(), MAX_INTEGER_DIGITS);
        assert_eq!(d("1e-16383").scale(), MAX_SCALE);
        let nines: String = "9".repeat(MAX_INTEGER_DIGITS);
        assert!(d(&nines).checked_add(&d("1")).is_none());
        assert!(d(&nines).checked_sub(&d("1")).is_some());
        assert_eq!(counter_sum("0", &nines, "1"), None);
    }

    #[test]
    fn adds_at_the_larger_scale() {
        assert_eq!(counter_sum("0", "1.10", "0.5").as_deref(), Some("1.60"));
        assert_eq!(counter_sum("0.1", "0.2", "0.3").as_deref(), Some("0.4"));
        assert_eq!(counter_sum("1", "0.1", "1.2").as_deref(), Some("0.3"));
        assert_eq!(counter_sum("0.5", "-1", "0").as_deref(), Some("-1.5"));
        assert_eq!(counter_sum("1.5", "1", "3").as_deref(), Some("2.5"));
        assert_eq!(counter_sum("0.25", "0.25", "0").as_deref(), Some("0.00"));
        assert_eq!(
            counter_sum("1e2", "1.5e-3", "1E+2").as_deref(),
            Some("0.0015")
        );
        assert_eq!(
            counter_sum("0", "9007199254740993", "0.5").as_deref(),
            Some("9007199254740993.5")
        );
        assert_eq!(
            counter_sum(
                "99999999999999999999999999999999999999",
                "0.000000000000000000001",
                "100000000000000000000000000000000000000"
            )
            .as_deref(),
            Some("1.000000000000000000001")
        );
        assert_eq!(counter_sum("x", "1", "1"), None);
    }

    #[test]
    fn compares_values() {
        assert_eq!(d("1.0").cmp_value(&d("1")), Ordering::Equal);
        assert_eq!(d("-2").cmp_value(&d("1")), Ordering::Less);
        assert_eq!(d("-2").cmp_value(&d("-10")), Ordering::Greater);
        assert_eq!(d("0.01").cmp_value(&d("0.1")), Ordering::Less);
        assert_eq!(d("-0").cmp_value(&d("0.00")), Ordering::Equal);
    }
}
