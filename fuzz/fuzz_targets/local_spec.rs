//! The local spec (`sync_init`'s second argument: local-only columns):
//! `parse_local_spec` on any text against a small schema. Errors are
//! values, never panics; whatever it accepts names synced tables only,
//! with bounded, reserved-free column names and declarations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::schema::{parse_local_spec, Schema, MAX_DECL_BYTES, MAX_NAME_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let schema = Schema::parse(
        r#"{"format": 1, "version": 1, "tables": [
            {"name": "tasks", "pk": ["id"], "mode": "optimistic", "on_delete": "delete_wins",
             "columns": [{"name": "id", "type": "text", "nullable": false, "strategy": "lww"},
                         {"name": "title", "type": "text", "nullable": true, "strategy": "lww"}]}]}"#,
    )
    .expect("the fixed schema parses");
    match parse_local_spec(text, &schema) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(spec) => {
            for (table, cols) in &spec {
                assert!(schema.table(table).is_some(), "{table}");
                for (name, decl) in cols {
                    assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES);
                    assert!(!name.to_ascii_lowercase().starts_with("_sync"));
                    assert!(
                        !name.eq_ignore_ascii_case("id") && !name.eq_ignore_ascii_case("title")
                    );
                    assert!(decl.len() <= MAX_DECL_BYTES);
                    assert!(!decl.contains(';') && !decl.contains("--") && !decl.contains("/*"));
                }
            }
        }
    }
});
