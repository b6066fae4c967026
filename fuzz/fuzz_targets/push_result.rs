//! `PushResult::parse` (the argument of `sync_ack`) on any text: a result
//! or an error, never a panic; an accepted result round-trips unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::wire::{PushResult, FORMAT};
use sync_core_fuzz::{document_text, push_result_doc};

fuzz_target!(|data: &[u8]| {
    let Some(text) = document_text(data, push_result_doc) else {
        return;
    };
    let result = match PushResult::parse(&text) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(result.format, FORMAT);
    let json = serde_json::to_string(&result).expect("a parsed result serializes");
    assert_eq!(PushResult::parse(&json).as_ref(), Ok(&result), "{json}");
});
