//! `PushBatch::parse` (the argument of `sync_push`) on any text, and on
//! generated batches of the right shape with any content (see
//! `sync_core_fuzz::push_batch_doc`): it returns
//! a batch or an error, never panics; a batch it accepts keeps the rules
//! parse checks and survives being written out and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::wire::{PushBatch, MAX_BATCH_CHANGES};
use sync_core_fuzz::{document_text, push_batch_doc};

fuzz_target!(|data: &[u8]| {
    let Some(text) = document_text(data, push_batch_doc) else {
        return;
    };
    let batch = match PushBatch::parse(&text) {
        Ok(b) => b,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!batch.client_id.trim().is_empty());
    assert!(batch.changes.len() <= MAX_BATCH_CHANGES);
    for w in batch.changes.windows(2) {
        assert!(w[0].seq < w[1].seq, "seq must increase");
    }
    assert!(batch.changes.iter().all(|c| !c.pk.is_empty()));
    let json = serde_json::to_string(&batch).expect("a parsed batch serializes");
    assert_eq!(PushBatch::parse(&json).as_ref(), Ok(&batch), "{json}");
});
