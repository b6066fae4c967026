//! Reading a relation's tuple descriptor: its attributes and their names,
//! for the triggers (`track.rs`) and the tombstone writer (`tombstone.rs`).
//!
//! Both functions are `unsafe` for the same reason: they read a descriptor
//! the caller keeps alive (the firing relation's, during the call).

use pgrx::pg_sys;

/// The attributes of a tuple descriptor.
///
/// # Safety
/// `tupdesc` is valid for `'a` (the relation's descriptor during the call).
pub unsafe fn attrs<'a>(tupdesc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    (*tupdesc).attrs.as_slice((*tupdesc).natts as usize)
}

/// An attribute's name (empty if it is not UTF-8).
///
/// # Safety
/// `a` is an attribute of a valid descriptor (its name is NUL-terminated).
pub unsafe fn attname(a: &pg_sys::FormData_pg_attribute) -> &str {
    std::ffi::CStr::from_ptr(a.attname.data.as_ptr())
        .to_str()
        .unwrap_or("")
}
