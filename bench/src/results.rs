//! Figures, targets and the statistics behind them.

use std::time::Instant;

use serde_json::{json, Value};

/// Median of a sample (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// The q-quantile (0..=1) by nearest rank.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Seconds `f` takes.
pub fn time<R>(f: impl FnOnce() -> R) -> (f64, R) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

/// How a bound is compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmp {
    /// value >= bound
    Ge,
    /// value <= bound
    Le,
    /// value < bound
    Lt,
}

/// What a bound applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum On {
    /// The ratio to the baseline.
    Ratio,
    /// The absolute median.
    Value,
}

/// One condition of a target.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Ratio or value.
    pub on: On,
    /// Comparison.
    pub cmp: Cmp,
    /// The bound.
    pub bound: f64,
}

impl Check {
    /// ratio >= b
    pub fn ratio_ge(b: f64) -> Check {
        Check {
            on: On::Ratio,
            cmp: Cmp::Ge,
            bound: b,
        }
    }
    /// ratio <= b
    pub fn ratio_le(b: f64) -> Check {
        Check {
            on: On::Ratio,
            cmp: Cmp::Le,
            bound: b,
        }
    }
    /// value >= b
    pub fn value_ge(b: f64) -> Check {
        Check {
            on: On::Value,
            cmp: Cmp::Ge,
            bound: b,
        }
    }
    /// value < b
    pub fn value_lt(b: f64) -> Check {
        Check {
            on: On::Value,
            cmp: Cmp::Lt,
            bound: b,
        }
    }

    fn holds(&self, f: &Figure) -> Option<bool> {
        let x = match self.on {
            On::Ratio => f.ratio?,
            On::Value => f.value?,
        };
        if x.is_nan() {
            return None;
        }
        Some(match self.cmp {
            Cmp::Ge => x >= self.bound,
            Cmp::Le => x <= self.bound,
            Cmp::Lt => x < self.bound,
        })
    }

    /// `ratio >= 0.85`, `>= 100k rows/s`.
    pub fn describe(&self, unit: &str) -> String {
        let op = match self.cmp {
            Cmp::Ge => ">=",
            Cmp::Le => "<=",
            Cmp::Lt => "<",
        };
        match self.on {
            On::Ratio => format!("ratio {op} {}", self.bound),
            On::Value => format!("{op} {} {unit}", fmt_num(self.bound)),
        }
    }
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Figure {
    /// `P1`, `P4`, ...
    pub id: String,
    /// Short label for charts.
    pub label: String,
    /// What was measured.
    pub what: String,
    /// Median absolute value.
    pub value: Option<f64>,
    /// Unit of `value` and `baseline`.
    pub unit: String,
    /// Median of the baseline.
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_what: String,
    /// value / baseline (for throughputs), or as defined by the figure.
    pub ratio: Option<f64>,
    /// Conditions that must all hold (empty: information only).
    pub target: Vec<Check>,
    /// Raw runs of the measured side.
    pub runs: Vec<f64>,
    /// Raw runs of the baseline.
    pub baseline_runs: Vec<f64>,
    /// Free text: why, how, caveats.
    pub note: String,
    /// Set when the figure could not be measured.
    pub not_measured: Option<String>,
    /// Further named medians (e.g. the hand-written trigger's TPS in P1).
    pub extra: Vec<(String, f64)>,
}

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All checks hold.
    Met,
    /// At least one check fails.
    Missed,
    /// No target.
    Info,
    /// Not measured.
    NotMeasured,
}

impl Figure {
    /// A figure with the given id and description and nothing measured yet.
    pub fn new(id: &str, what: &str, unit: &str) -> Figure {
        Figure {
            id: id.into(),
            label: id.into(),
            what: what.into(),
            value: None,
            unit: unit.into(),
            baseline: None,
            baseline_what: String::new(),
            ratio: None,
            target: Vec::new(),
            runs: Vec::new(),
            baseline_runs: Vec::new(),
            note: String::new(),
            not_measured: None,
            extra: Vec::new(),
        }
    }

    /// Throughput figure: medians of both sides; the ratio is the median of
    /// the per-run ratios (run i of each side ran back to back, so pairing
    /// them cancels slow phases of a shared machine), or the ratio of the
    /// medians when the sides have different run counts.
    pub fn throughput(mut self, runs: Vec<f64>, baseline_runs: Vec<f64>) -> Figure {
        self.value = Some(median(&runs));
        if !baseline_runs.is_empty() {
            self.baseline = Some(median(&baseline_runs));
            self.ratio = Some(if runs.len() == baseline_runs.len() {
                let r: Vec<f64> = runs
                    .iter()
                    .zip(&baseline_runs)
                    .map(|(a, b)| a / b)
                    .collect();
                median(&r)
            } else {
                median(&runs) / median(&baseline_runs)
            });
        }
        self.runs = runs;
        self.baseline_runs = baseline_runs;
        self
    }

    /// Sets the chart label.
    pub fn label(mut self, l: impl Into<String>) -> Figure {
        self.label = l.into();
        self
    }

    /// Sets the baseline description.
    pub fn baseline_is(mut self, what: &str) -> Figure {
        self.baseline_what = what.into();
        self
    }

    /// Adds a target condition.
    pub fn target(mut self, c: Check) -> Figure {
        self.target.push(c);
        self
    }

    /// Sets the note.
    pub fn note(mut self, n: impl Into<String>) -> Figure {
        self.note = n.into();
        self
    }

    /// Marks the figure as not measured.
    pub fn not_measured(mut self, why: impl Into<String>) -> Figure {
        self.not_measured = Some(why.into());
        self
    }

    /// Met, missed, info or not measured.
    pub fn status(&self) -> Status {
        if self.not_measured.is_some() {
            return Status::NotMeasured;
        }
        if self.target.is_empty() {
            return Status::Info;
        }
        let mut all = true;
        for c in &self.target {
            match c.holds(self) {
                Some(true) => {}
                Some(false) => all = false,
                None => return Status::NotMeasured,
            }
        }
        if all {
            Status::Met
        } else {
            Status::Missed
        }
    }

    /// The target as text.
    pub fn target_text(&self) -> String {
        if self.target.is_empty() {
            return "—".into();
        }
        self.target
            .iter()
            .map(|c| c.describe(&self.unit))
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

fn num_json(v: Option<f64>) -> Value {
    v.map(Value::from).unwrap_or(Value::Null)
}

impl Check {
    fn to_json(self) -> Value {
        json!({
            "on": if self.on == On::Ratio { "ratio" } else { "value" },
            "cmp": match self.cmp { Cmp::Ge => "ge", Cmp::Le => "le", Cmp::Lt => "lt" },
            "bound": self.bound,
        })
    }

    fn from_json(v: &Value) -> Check {
        Check {
            on: if v["on"] == "ratio" {
                On::Ratio
            } else {
                On::Value
            },
            cmp: match v["cmp"].as_str() {
                Some("le") => Cmp::Le,
                Some("lt") => Cmp::Lt,
                _ => Cmp::Ge,
            },
            bound: v["bound"].as_f64().unwrap_or(f64::NAN),
        }
    }
}

impl Figure {
    /// The figure as JSON (for re-rendering the report without a run).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "label": self.label, "what": self.what,
            "value": num_json(self.value), "unit": self.unit,
            "baseline": num_json(self.baseline), "baseline_what": self.baseline_what,
            "ratio": num_json(self.ratio),
            "target": self.target.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
            "runs": self.runs, "baseline_runs": self.baseline_runs,
            "note": self.note, "not_measured": self.not_measured,
            "extra": self.extra.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        })
    }

    /// Reads what [`Figure::to_json`] wrote.
    pub fn from_json(v: &Value) -> Figure {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let nums = |k: &str| -> Vec<f64> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        Figure {
            id: s("id"),
            label: s("label"),
            what: s("what"),
            value: v["value"].as_f64(),
            unit: s("unit"),
            baseline: v["baseline"].as_f64(),
            baseline_what: s("baseline_what"),
            ratio: v["ratio"].as_f64(),
            target: v["target"]
                .as_array()
                .map(|a| a.iter().map(Check::from_json).collect())
                .unwrap_or_default(),
            runs: nums("runs"),
            baseline_runs: nums("baseline_runs"),
            note: s("note"),
            not_measured: v["not_measured"].as_str().map(str::to_string),
            extra: v["extra"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            (
                                e[0].as_str().unwrap_or_default().to_string(),
                                e[1].as_f64().unwrap_or(f64::NAN),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A number with thousands grouping and sensible precision.
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        return "n/a".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if x < 0.0 {
            format!("-{out}")
        } else {
            out
        }
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
        assert_eq!(fmt_num(1234567.0), "1,234,567");
        assert_eq!(fmt_num(0.8512), "0.851");
    }
}
