//! `PullPage::parse` (the argument of `sync_apply`) on any text: a page or
//! an error, never a panic; an accepted page (with its embedded schema)
//! round-trips unchanged (a page of format 2 as the same changes in format
//! 1, the form `PullPage` holds them in).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::wire::{PullPage, FORMAT};
use sync_core::PAGE_FORMAT;
use sync_core_fuzz::{document_text, pull_page_doc};

fuzz_target!(|data: &[u8]| {
    let Some(text) = document_text(data, pull_page_doc) else {
        return;
    };
    let page = match PullPage::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!((FORMAT..=PAGE_FORMAT).contains(&page.format));
    let mut one = page.clone();
    one.format = FORMAT;
    let json = serde_json::to_string(&one).expect("a parsed page serializes");
    assert_eq!(PullPage::parse(&json).as_ref(), Ok(&one), "{json}");
});
