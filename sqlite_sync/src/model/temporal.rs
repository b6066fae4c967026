//! Checks of the date and time strings a server sends (the ISO 8601 forms
//! Postgres writes in JSON), so a pull page cannot store a malformed
//! timestamp on the device.
//!
//! Accepted, as Postgres writes them (and reads them back):
//! - date: `YYYY-MM-DD`, the year with 4 to 7 digits;
//! - timestamp: a date, `T` (or a space), `HH:MM:SS` and up to 6 fraction
//!   digits (`.123456`);
//! - timestamptz: a timestamp and an offset `Z`, `+HH`, `+HH:MM` or
//!   `+HH:MM:SS` (or `-`);
//! - any of them followed by ` BC`, and the words `infinity` / `-infinity`.
//!
//! Fields are range-checked (month, day of that month in the proleptic
//! Gregorian calendar, hours up to `24:00:00`, seconds up to 60, offsets up
//! to 15:59:59). The text is stored as it came, never reformatted.

use sync_core::schema::ColumnType;

/// Whether `s` is a valid value of the date/time type `ty`.
pub fn valid(ty: ColumnType, s: &str) -> bool {
    if s == "infinity" || s == "-infinity" {
        return true;
    }
    let (body, bc) = match s.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (s, false),
    };
    let mut p = Parser {
        b: body.as_bytes(),
        i: 0,
    };
    if !p.date(bc) {
        return false;
    }
    match ty {
        ColumnType::Date => p.done(),
        ColumnType::Timestamp => p.time() && p.done(),
        ColumnType::Timestamptz => p.time() && p.offset() && p.done(),
        _ => false,
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i == self.b.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Exactly `n` digits.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let end = self.i + n;
        let d = self.b.get(self.i..end)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i = end;
        Some(d.iter().fold(0, |v, &c| v * 10 + u32::from(c - b'0')))
    }

    fn date(&mut self, bc: bool) -> bool {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let len = self.i - start;
        if !(4..=7).contains(&len) {
            return false;
        }
        let year: u32 = std::str::from_utf8(&self.b[start..self.i])
            .ok()
            .and_then(|y| y.parse().ok())
            .unwrap_or(0);
        if year == 0 || !self.eat(b'-') {
            return false;
        }
        let Some(month) = self.digits(2) else {
            return false;
        };
        if !self.eat(b'-') {
            return false;
        }
        let Some(day) = self.digits(2) else {
            return false;
        };
        // Year 1 BC is the astronomical year 0, a leap year.
        let astronomical = if bc {
            1 - i64::from(year)
        } else {
            i64::from(year)
        };
        (1..=12).contains(&month) && day >= 1 && day <= days_in_month(astronomical, month)
    }

    fn time(&mut self) -> bool {
        if !(self.eat(b'T') || self.eat(b' ')) {
            return false;
        }
        let Some(h) = self.digits(2) else {
            return false;
        };
        if !self.eat(b':') {
            return false;
        }
        let Some(m) = self.digits(2) else {
            return false;
        };
        if !self.eat(b':') {
            return false;
        }
        let Some(sec) = self.digits(2) else {
            return false;
        };
        let mut frac_zero = true;
        if self.eat(b'.') {
            let start = self.i;
            while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let n = self.i - start;
            if !(1..=6).contains(&n) {
                return false;
            }
            frac_zero = self.b[start..self.i].iter().all(|&c| c == b'0');
        }
        if h == 24 {
            return m == 0 && sec == 0 && frac_zero;
        }
        h < 24 && m < 60 && sec <= 60
    }

    fn offset(&mut self) -> bool {
        if self.eat(b'Z') {
            return true;
        }
        if !(self.eat(b'+') || self.eat(b'-')) {
            return false;
        }
        let Some(h) = self.digits(2) else {
            return false;
        };
        if h > 15 {
            return false;
        }
        for _ in 0..2 {
            if !self.eat(b':') {
                break;
            }
            match self.digits(2) {
                Some(v) if v < 60 => {}
                _ => return false,
            }
        }
        true
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_forms_are_accepted_and_garbage_is_not() {
        use ColumnType::{Date, Timestamp, Timestamptz};
        for (ty, s) in [
            (Timestamptz, "2026-01-01T10:00:00+00:00"),
            (Timestamptz, "2026-06-30T23:59:59.123456+02:00"),
            (Timestamptz, "1900-01-01T00:00:00+00:09:21"),
            (Timestamptz, "2026-01-01 10:00:00.5-05:30"),
            (Timestamptz, "2026-01-01T10:00:00Z"),
            (Timestamptz, "0044-03-15T12:00:00+00:00 BC"),
            (Timestamptz, "294276-12-31T23:59:59.999999+00:00"),
            (Timestamptz, "infinity"),
            (Timestamp, "2024-02-29T24:00:00"),
            (Timestamp, "2026-01-01T00:00:00.000001"),
            (Date, "2026-11-21"),
            (Date, "0001-02-29 BC"),
            (Date, "-infinity"),
        ] {
            assert!(valid(ty, s), "{ty:?} {s}");
        }
        for (ty, s) in [
            (Timestamptz, "not a date"),
            (Timestamptz, "2026-01-01T10:00:00"),
            (Timestamptz, "2026-13-01T10:00:00+00:00"),
            (Timestamptz, "2026-02-29T10:00:00+00:00"),
            (Timestamptz, "2026-01-01T10:60:00+00:00"),
            (Timestamptz, "2026-01-01T10:00:00.1234567+00:00"),
            (Timestamptz, "2026-01-01T10:00:00+16:00"),
            (Timestamptz, "2026-01-01T10:00:00+00:00 "),
            (Timestamp, "2026-01-01T10:00:00+00:00"),
            (Timestamp, "2026-01-01T24:00:01"),
            (Timestamp, "0000-01-01T00:00:00"),
            (Date, "2026-1-1"),
            (Date, "2026-04-31"),
            (Date, "Infinity"),
            (Date, "26-01-01"),
            (Date, ""),
        ] {
            assert!(!valid(ty, s), "{ty:?} {s}");
        }
    }
}
