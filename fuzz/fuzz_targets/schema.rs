//! The schema document (`sync_schema()` / `sync_init(schema)`):
//! `Schema::parse` on any text, then the shared name rules
//! (`check_table_name`, `check_column_name`) and lookups on whatever it
//! accepted. Errors are values, never panics; an accepted schema
//! round-trips unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::schema::{check_column_name, check_table_name, Schema, MAX_NAME_BYTES};
use sync_core::wire::FORMAT;
use sync_core_fuzz::{document_text, schema_doc};

fuzz_target!(|data: &[u8]| {
    let Some(text) = document_text(data, schema_doc) else {
        return;
    };
    let schema = match Schema::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(schema.format, FORMAT);
    for (i, t) in schema.tables.iter().enumerate() {
        let others = schema
            .tables
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, o)| o.name.as_str());
        let ok = check_table_name(&t.name, others).is_ok();
        if ok {
            assert!(!t.name.is_empty() && t.name.len() <= MAX_NAME_BYTES);
        }
        // Lookups find the first table / column of that name.
        let found = schema.table(&t.name).expect("a listed table is found");
        assert_eq!(found.name, t.name);
        for (k, c) in t.columns.iter().enumerate() {
            if check_column_name(&t.name, &c.name).is_ok() {
                assert!(!c.name.is_empty() && c.name.len() <= MAX_NAME_BYTES);
            }
            let idx = t.column_index(&c.name).expect("a listed column is found");
            assert!(idx <= k && t.columns[idx].name == c.name);
            let _ = c.ty.sqlite_type();
        }
        for p in &t.pk {
            assert!(t.is_pk(p));
        }
    }
    let json = serde_json::to_string(&schema).expect("a parsed schema serializes");
    assert_eq!(Schema::parse(&json).as_ref(), Ok(&schema), "{json}");
});
