//! Merge throughput: for each strategy, `merge_column` over a fixed,
//! deterministic set of 2^20 column merges (half of them concurrent with
//! the current value), timed five times; prints the median as
//! `merge <strategy> <column merges per second>`. With `MERGE_BENCH_OUT`
//! set, also writes `[{"strategy": .., "merges_per_sec": ..}, ..]` there.
//!
//! Run with `cargo bench -p sync_core --bench merge`.

use std::hint::black_box;
use std::time::Instant;

use serde_json::{json, Value};
use sync_core::hlc::Hlc;
use sync_core::merge::{merge_column, Current, Incoming, Strategy};

/// Column merges per run.
const MERGES: usize = 1 << 20;
/// Distinct inputs, cycled through.
const CASES: usize = 4096;
const RUNS: usize = 5;
const WORDS: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "red", "blue", "green",
    "meeting", "notes", "agenda", "budget", "review",
];

/// A small deterministic generator (PCG-style LCG), so every run and every
/// machine merges the same inputs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Case {
    current: Value,
    cur_ver: Hlc,
    incoming: Value,
    ver: Hlc,
    base_ver: Hlc,
    base_value: Value,
}

fn sentence(rng: &mut Lcg, len: usize) -> Vec<&'static str> {
    (0..len)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect()
}

/// Edits `n` random words of `words`.
fn edit_words(rng: &mut Lcg, words: &[&'static str], n: usize) -> String {
    let mut w = words.to_vec();
    for _ in 0..n {
        let at = rng.below(w.len() as u64) as usize;
        match rng.below(3) {
            0 => w[at] = WORDS[rng.below(WORDS.len() as u64) as usize],
            1 => w.insert(at, WORDS[rng.below(WORDS.len() as u64) as usize]),
            _ if w.len() > 1 => {
                w.remove(at);
            }
            _ => {}
        }
    }
    w.join(" ")
}

fn cases(strategy: Strategy) -> Vec<Case> {
    let mut rng = Lcg(0x5eed ^ strategy as u64);
    (0..CASES)
        .map(|_| {
            let (base_value, current, incoming) = match strategy {
                Strategy::Lww | Strategy::ServerWins | Strategy::Manual => {
                    let b = rng.below(100);
                    let c = if rng.below(2) == 0 { b } else { rng.below(100) };
                    let i = rng.below(100);
                    if rng.below(2) == 0 {
                        (json!(b), json!(c), json!(i))
                    } else {
                        (
                            json!(format!("title {b}")),
                            json!(format!("title {c}")),
                            json!(format!("title {i}")),
                        )
                    }
                }
                Strategy::TextMerge => {
                    let len = 8 + rng.below(24) as usize;
                    let base = sentence(&mut rng, len);
                    let (nt, nm) = (1 + rng.below(3) as usize, 1 + rng.below(3) as usize);
                    let theirs = edit_words(&mut rng, &base, nt);
                    let mine = edit_words(&mut rng, &base, nm);
                    (json!(base.join(" ")), json!(theirs), json!(mine))
                }
                Strategy::SetUnion => {
                    let set = |rng: &mut Lcg| -> Value {
                        let n = 3 + rng.below(8);
                        let mut v: Vec<u64> = (0..n).map(|_| rng.below(16)).collect();
                        v.sort_unstable();
                        v.dedup();
                        json!(v)
                    };
                    (set(&mut rng), set(&mut rng), set(&mut rng))
                }
                Strategy::Counter => {
                    let b = rng.below(10_000) as i64;
                    (
                        json!(b),
                        json!(b + rng.below(20) as i64 - 10),
                        json!(b + rng.below(20) as i64 - 10),
                    )
                }
            };
            let base_ver = Hlc::new(1_000_000 + rng.below(1000), 0, 1);
            let concurrent = rng.below(2) == 0;
            let cur_ver = if concurrent {
                Hlc::new(base_ver.ms() + 1 + rng.below(1000), rng.below(4), 2)
            } else {
                base_ver
            };
            Case {
                current,
                cur_ver,
                incoming,
                ver: Hlc::new(base_ver.ms() + 1 + rng.below(1000), rng.below(4), 3),
                base_ver,
                base_value,
            }
        })
        .collect()
}

fn run_once(strategy: Strategy, cases: &[Case]) -> f64 {
    let start = Instant::now();
    for i in 0..MERGES {
        let c = &cases[i % cases.len()];
        let m = merge_column(
            black_box(strategy),
            Current {
                value: &c.current,
                ver: c.cur_ver,
            },
            Incoming {
                value: &c.incoming,
                ver: c.ver,
                base_ver: c.base_ver,
                base_value: Some(&c.base_value),
            },
        );
        black_box(m);
    }
    MERGES as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is ignored too.
    let mut results = Vec::new();
    for strategy in Strategy::ALL {
        let cases = cases(strategy);
        let mut runs: Vec<f64> = (0..RUNS).map(|_| run_once(strategy, &cases)).collect();
        runs.sort_by(f64::total_cmp);
        let median = runs[RUNS / 2];
        println!("merge {} {:.0}", strategy.name(), median);
        results.push(json!({"strategy": strategy.name(), "merges_per_sec": median.round() as u64}));
    }
    if let Ok(path) = std::env::var("MERGE_BENCH_OUT") {
        let text = serde_json::to_string_pretty(&Value::Array(results)).expect("serialize results");
        std::fs::write(&path, text + "\n")
            .unwrap_or_else(|e| panic!("writing MERGE_BENCH_OUT={path}: {e}"));
    }
}
