//! The worked examples of docs/merge-rules.md, checked against the code so
//! the document stays true.

use serde_json::{json, Value};
use sync_core::hlc::{node_tag, Clock, Hlc, Observed, EPOCH_UNIX_MS};
use sync_core::merge::{
    decide_delete, decide_write_on_deleted, lww_cmp, merge_column, ColumnMerge, Current,
    DeleteDecision, Incoming, Outcome, Strategy, WriteOnDeleted,
};
use sync_core::schema::DeletePolicy;

/// 2025-12-27T12:00:00Z, server (tag 0x0a1).
const B: &str = "0b0051c8800000a1";
/// 2025-12-27T12:01:00Z, server.
const S: &str = "0b005203180000a1";
/// 2025-12-27T12:01:30Z, client (tag 0x3c7).
const C: &str = "0b005220640003c7";
/// 2025-12-27T12:00:30Z, client with a slow clock.
const C_SLOW: &str = "0b0051e5cc0003c7";

fn h(s: &str) -> Hlc {
    s.parse().unwrap()
}

fn merge(
    strategy: Strategy,
    cur: (Value, &str),
    inc: (Value, &str),
    base: (Value, &str),
) -> ColumnMerge {
    merge_column(
        strategy,
        Current {
            value: &cur.0,
            ver: h(cur.1),
        },
        Incoming {
            value: &inc.0,
            ver: h(inc.1),
            base_ver: h(base.1),
            base_value: Some(&base.0),
        },
    )
}

#[test]
fn stamps() {
    assert_eq!(h(B), Hlc::new(189_000_000_000, 0, 0x0a1));
    assert_eq!(h(B).unix_ms(), 1_766_836_800_000);
    assert_eq!(h(S), Hlc::new(189_000_060_000, 0, 0x0a1));
    assert_eq!(h(C), Hlc::new(189_000_090_000, 0, 0x3c7));
    assert_eq!(h(C_SLOW), Hlc::new(189_000_030_000, 0, 0x3c7));
    assert_eq!(node_tag("server"), node_tag("server"));
}

#[test]
fn lww() {
    let m = merge(
        Strategy::Lww,
        (json!("Buy oat milk"), S),
        (json!("Buy milk and eggs"), C),
        (json!("Buy milk"), B),
    );
    assert_eq!(m.outcome, Outcome::Applied);
    assert_eq!(m.write, Some((json!("Buy milk and eggs"), h(C))));
    assert_eq!(
        m.conflict.as_deref(),
        Some("concurrent edits; last writer wins: the incoming value won")
    );
    let m = merge(
        Strategy::Lww,
        (json!("Buy oat milk"), S),
        (json!("Buy milk and eggs"), C_SLOW),
        (json!("Buy milk"), B),
    );
    assert_eq!(m.outcome, Outcome::Unchanged);
    assert_eq!(m.write, None);
    assert_eq!(
        m.conflict.as_deref(),
        Some("concurrent edits; last writer wins: the current value won")
    );
    // Not concurrent (the client saw S): applied even with a slow clock,
    // with a version just above S.
    let m = merge(
        Strategy::Lww,
        (json!("Buy oat milk"), S),
        (json!("Buy oat milk and eggs"), C_SLOW),
        (json!("Buy oat milk"), S),
    );
    assert_eq!(m.outcome, Outcome::Applied);
    assert_eq!(m.conflict, None);
    let (_, ver) = m.write.unwrap();
    assert_eq!(ver.to_string(), "0b005203180013c7");
    assert_eq!(ver, Hlc::new(189_000_060_000, 1, 0x3c7));
}

#[test]
fn tie_break() {
    let t = h(C);
    assert_eq!(
        lww_cmp(t, &json!("b"), t, &json!("a")),
        std::cmp::Ordering::Greater
    );
    // Same millisecond and counter, different nodes: the tag decides.
    let other = Hlc::new(189_000_090_000, 0, 0x512);
    assert!(other > t);
}

#[test]
fn server_wins_and_manual() {
    let m = merge(
        Strategy::ServerWins,
        (json!(12), S),
        (json!(11), C),
        (json!(10), B),
    );
    assert_eq!(m.outcome, Outcome::Rejected);
    assert_eq!(m.write, None);
    assert!(m.conflict.is_some());
    let m = merge(
        Strategy::Manual,
        (json!("closed"), S),
        (json!("blocked"), C),
        (json!("open"), B),
    );
    assert_eq!(m.outcome, Outcome::Pending);
    assert_eq!(m.write, None);
    assert_eq!(
        m.conflict.as_deref(),
        Some("concurrent edits; resolve manually")
    );
}

#[test]
fn text_merge() {
    let m = merge(
        Strategy::TextMerge,
        (json!("The quick red fox jumps over the lazy dog"), S),
        (json!("The quick brown fox jumps over the sleepy dog"), C),
        (json!("The quick brown fox jumps over the lazy dog"), B),
    );
    assert_eq!(m.outcome, Outcome::Merged);
    assert_eq!(
        m.write,
        Some((json!("The quick red fox jumps over the sleepy dog"), h(C)))
    );
    assert_eq!(m.conflict, None);
    let m = merge(
        Strategy::TextMerge,
        (json!("The quick red fox jumps over the lazy dog"), S),
        (json!("The quick green fox jumps over the lazy dog"), C),
        (json!("The quick brown fox jumps over the lazy dog"), B),
    );
    assert_eq!(m.outcome, Outcome::Applied);
    assert_eq!(
        m.conflict.as_deref(),
        Some("text_merge could not merge; fell back to lww: the incoming value won")
    );
}

#[test]
fn set_union_and_counter() {
    let m = merge(
        Strategy::SetUnion,
        (json!(["a", "b", "c"]), S),
        (json!(["b", "d"]), C),
        (json!(["a", "b"]), B),
    );
    assert_eq!(m.outcome, Outcome::Merged);
    assert_eq!(m.write, Some((json!(["b", "c", "d"]), h(C))));
    let m = merge(
        Strategy::Counter,
        (json!(15), S),
        (json!(13), C),
        (json!(10), B),
    );
    assert_eq!(m.write, Some((json!(18), h(C))));
    // Two clients both incrementing 10 to 11: 12.
    let m = merge(
        Strategy::Counter,
        (json!(11), S),
        (json!(11), C),
        (json!(10), B),
    );
    assert_eq!(m.outcome, Outcome::Merged);
    assert_eq!(m.write, Some((json!(12), h(C))));
}

#[test]
fn counter_is_exact_decimal() {
    let num = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
    let m = merge(
        Strategy::Counter,
        (num("1.10"), S),
        (num("0.5"), C),
        (num("0"), B),
    );
    assert_eq!(m.outcome, Outcome::Merged);
    assert_eq!(m.write.unwrap().0.to_string(), "1.60");
    let m = merge(
        Strategy::Counter,
        (num("0.1"), S),
        (num("0.3"), C),
        (num("0.2"), B),
    );
    assert_eq!(m.write.unwrap().0.to_string(), "0.2");
    let sum = |b: &str, t: &str, m: &str| {
        sync_core::merge::counter(&num(b), &num(t), &num(m)).map(|v| v.to_string())
    };
    assert_eq!(sum("0", "1.5e-3", "-0.10").as_deref(), Some("-0.0985"));
    assert_eq!(sum("0", "1E+2", "0").as_deref(), Some("100"));
    // Integers that fit 64 bits stay 64-bit.
    assert_eq!(sum("0", "18446744073709551615", "1"), None);
    // Out of range: falls back to lww with a conflict.
    assert_eq!(sum("0", "1e1000000", "1"), None);
    let m = merge(
        Strategy::Counter,
        (num("1e1000000"), S),
        (num("2"), C),
        (num("1"), B),
    );
    assert_eq!(
        m.conflict.as_deref(),
        Some("counter could not merge; fell back to lww: the incoming value won")
    );
}

#[test]
fn deletes() {
    assert_eq!(
        decide_delete(DeletePolicy::DeleteWins, vec![]),
        DeleteDecision::Delete
    );
    assert_eq!(
        decide_delete(DeletePolicy::DeleteWins, vec!["title".into()]),
        DeleteDecision::DeleteOverUpdates(vec!["title".into()])
    );
    assert_eq!(
        decide_delete(DeletePolicy::Resurrect, vec!["title".into()]),
        DeleteDecision::KeepRow(vec!["title".into()])
    );
    let tomb = h(S);
    assert_eq!(
        decide_write_on_deleted(DeletePolicy::DeleteWins, false, h(C), tomb),
        WriteOnDeleted::Reject
    );
    assert_eq!(
        decide_write_on_deleted(DeletePolicy::Resurrect, false, h(C_SLOW), tomb),
        WriteOnDeleted::Recreate
    );
    assert_eq!(
        decide_write_on_deleted(DeletePolicy::DeleteWins, true, h(C), tomb),
        WriteOnDeleted::Recreate
    );
    assert_eq!(
        decide_write_on_deleted(DeletePolicy::DeleteWins, true, h(C_SLOW), tomb),
        WriteOnDeleted::Reject
    );
}

#[test]
fn skew_clamp() {
    let now = EPOCH_UNIX_MS + 189_000_000_000;
    let mut server = Clock::with_tag(0x0a1);
    let five_min = Hlc::new(189_000_000_000 + 300_000, 0, 0x3c7);
    assert_eq!(server.observe(five_min, now), Observed::Accepted(five_min));
    let ahead = Hlc::new(189_000_000_000 + 300_001, 0, 0x3c7);
    match server.observe(ahead, now) {
        Observed::Clamped {
            original,
            clamped,
            ahead_ms,
        } => {
            assert_eq!(original, ahead);
            assert_eq!(ahead_ms, 300_001);
            assert_eq!(clamped.tag(), 0x0a1);
            assert!(clamped > five_min && clamped < ahead);
        }
        other => panic!("expected a clamp, got {other:?}"),
    }
}
