//! The delete decisions: `decide_delete` for any policy and any list of
//! columns changed since the deleter's base, `decide_write_on_deleted` for
//! any policy, kind of write and stamps. Checked against the tables in
//! docs/merge-rules.md ("Deletes").
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sync_core::hlc::Hlc;
use sync_core::merge::{decide_delete, decide_write_on_deleted, DeleteDecision, WriteOnDeleted};
use sync_core::schema::DeletePolicy;

#[derive(Arbitrary, Debug)]
struct Input {
    resurrect: bool,
    changed: Vec<String>,
    is_insert: bool,
    write: u64,
    tombstone: u64,
}

fuzz_target!(|i: Input| {
    let policy = if i.resurrect {
        DeletePolicy::Resurrect
    } else {
        DeletePolicy::DeleteWins
    };
    let d = decide_delete(policy, i.changed.clone());
    assert_eq!(d, decide_delete(policy, i.changed.clone()));
    match (&d, i.changed.is_empty(), policy) {
        (DeleteDecision::Delete, true, _) => {}
        (DeleteDecision::DeleteOverUpdates(c), false, DeletePolicy::DeleteWins)
        | (DeleteDecision::KeepRow(c), false, DeletePolicy::Resurrect) => {
            assert_eq!(c, &i.changed)
        }
        other => panic!("decide_delete: {other:?}"),
    }

    let (write, tomb) = (Hlc(i.write), Hlc(i.tombstone));
    let w = decide_write_on_deleted(policy, i.is_insert, write, tomb);
    let expected = match policy {
        DeletePolicy::Resurrect => WriteOnDeleted::Recreate,
        DeletePolicy::DeleteWins if i.is_insert && write > tomb => WriteOnDeleted::Recreate,
        DeletePolicy::DeleteWins => WriteOnDeleted::Reject,
    };
    assert_eq!(w, expected);
});
