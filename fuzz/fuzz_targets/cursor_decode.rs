//! `Cursor::decode` (the cursor a client passes to `sync_pull`) on any
//! text, and on any bytes wrapped as a well-formed `c1.<base64>` cursor so
//! the JSON inside is reached too: a cursor or an error, never a panic. A
//! decoded cursor re-encodes to one that decodes to the same cursor.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use sync_core::cursor::Cursor;
use sync_core::SyncError;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        format!(
            "c1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rest)
        )
    };
    let cursor = match Cursor::decode(&text) {
        Ok(c) => c,
        Err(e) => {
            assert!(matches!(e, SyncError::BadCursor(_)), "{e:?}");
            return;
        }
    };
    assert_eq!(cursor.v, 1);
    let _ = cursor.oldest_tombstone_xid();
    let again = cursor.encode();
    assert_eq!(Cursor::decode(&again).as_ref(), Ok(&cursor), "{again}");
    assert_eq!(again, Cursor::decode(&again).unwrap().encode());
});
