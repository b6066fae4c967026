//! Writing a pull page: its head, then each segment's rows as the segment's
//! statement yields them (streamed, one row at a time), then its end, into
//! a [`Sink`]: one text value ([`TextBuf`], `sync_pull_json`) or a set of
//! chunks ([`Chunks`], `sync_pull_chunks`). Nothing but the sink holds the
//! page's rows.

use pgrx::pg_sys;
use sync_core::wire::page::{page_pieces, PageHead, LIST_SEPARATOR};

use super::plan::{Out, Outs, Segment};
use crate::error::{PgSyncError, Result};
use crate::spi_stream::stream_rows;

/// Where a page's bytes go, in order.
pub trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<()>;
}

/// Writes the page of `head` whose changes the `segments` yield.
pub fn write_page(sink: &mut dyn Sink, head: &PageHead<'_>, segments: &[Segment]) -> Result<()> {
    let (top, tail) = page_pieces(head, std::iter::empty::<[&str; 3]>());
    sink.put(top.as_bytes())?;
    let check_utf8 = !utf8_database();
    let mut lists = 0usize;
    for seg in segments {
        match &seg.outs {
            Outs::One(out) => {
                let mut list = List::new(out);
                stream_rows(&seg.sql, &seg.args, &mut |row| {
                    list.elem(sink, &mut lists, checked(row.bytes(0)?, check_utf8)?)
                })?;
                list.close(sink)?;
            }
            Outs::Split(first, second) => {
                // The second list (rows that left a subscription: few) is
                // held until the first is written.
                let mut list = List::new(first);
                let (mut held, mut n) = (Vec::new(), 0usize);
                stream_rows(&seg.sql, &seg.args, &mut |row| {
                    if row.flag(0) {
                        return list.elem(sink, &mut lists, checked(row.bytes(1)?, check_utf8)?);
                    }
                    if n > 0 {
                        held.extend_from_slice(LIST_SEPARATOR.as_bytes());
                    }
                    n += 1;
                    held.extend_from_slice(checked(row.bytes(2)?, check_utf8)?.unwrap_or(b"null"));
                    Ok(())
                })?;
                list.close(sink)?;
                if n > 0 {
                    let mut list = List::new(second);
                    list.elem(sink, &mut lists, Some(&held))?;
                    list.close(sink)?;
                }
            }
        }
    }
    tail.iter().try_for_each(|p| sink.put(p.as_bytes()))
}

/// One list of a page as it is written: a format-1 run of entries spliced
/// into `changes`, or a format-2 block. Written only once it has a row
/// (an empty list is left out), separated from the lists before it.
/// The elements are separated as `json_agg` separates them.
struct List<'o> {
    out: &'o Out,
    open: bool,
}

impl<'o> List<'o> {
    fn new(out: &'o Out) -> List<'o> {
        List { out, open: false }
    }

    /// Appends one element (NULL as `null`); `lists` counts the lists
    /// the page has so far.
    fn elem(&mut self, sink: &mut dyn Sink, lists: &mut usize, v: Option<&[u8]>) -> Result<()> {
        if self.open {
            sink.put(LIST_SEPARATOR.as_bytes())?;
        } else {
            if *lists > 0 {
                sink.put(LIST_SEPARATOR.as_bytes())?;
            }
            *lists += 1;
            if let Out::Block(head) = self.out {
                sink.put(head.as_bytes())?;
                sink.put(b"[")?;
            }
            self.open = true;
        }
        sink.put(v.unwrap_or(b"null"))
    }

    /// Ends the list.
    fn close(self, sink: &mut dyn Sink) -> Result<()> {
        match (self.open, self.out) {
            (true, Out::Block(_)) => sink.put(b"]}"),
            _ => Ok(()),
        }
    }
}

/// Whether the database encoding is UTF-8 (its text is then valid UTF-8).
fn utf8_database() -> bool {
    // SAFETY: reads a backend global.
    unsafe { pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32 }
}

/// `v`, refused when `check` and it is not UTF-8 (pages are UTF-8 JSON).
fn checked(v: Option<&[u8]>, check: bool) -> Result<Option<&[u8]>> {
    if check && v.is_some_and(|b| std::str::from_utf8(b).is_err()) {
        return Err(PgSyncError::Spi(
            "a query returned text that is not UTF-8 (the database encoding must be UTF8)".into(),
        ));
    }
    Ok(v)
}

/// The largest varlena (and palloc) Postgres allows: 1 GB - 1.
const MAX_VALUE: usize = 0x3FFF_FFFF;

/// A text value being written, in the memory context that was current
/// when it was made: the page `sync_pull_json` returns. It grows by
/// `repalloc` (for a buffer this large, a remap, not a copy); the space
/// reserved beyond what is written is never touched, so it costs no memory.
pub struct TextBuf {
    buf: *mut u8,
    len: usize,
    cap: usize,
}

/// The most [`TextBuf`] reserves before it is written: past it, growth is
/// a remap (the page's estimate runs high for format 2, and a reservation
/// counts against a server's commit limit where overcommit is off).
const FIRST_RESERVE: usize = 64 << 20;

impl TextBuf {
    /// An empty value with room for about `hint` bytes (at most
    /// [`FIRST_RESERVE`] at first).
    pub fn new(hint: usize) -> TextBuf {
        let cap = hint
            .saturating_add(pg_sys::VARHDRSZ)
            .clamp(1024, FIRST_RESERVE);
        // SAFETY: palloc in the current context (the function call's), which
        // outlives the call; it raises an error rather than return NULL.
        let buf = unsafe { pg_sys::palloc(cap) as *mut u8 };
        TextBuf {
            buf,
            len: pg_sys::VARHDRSZ,
            cap,
        }
    }

    /// The finished value as a text (or json) datum.
    pub fn into_datum(self) -> pg_sys::Datum {
        // SAFETY: `buf` holds `len` bytes, the first VARHDRSZ for the header.
        unsafe {
            pgrx::varlena::set_varsize_4b(self.buf as *mut pg_sys::varlena, self.len as i32);
        }
        pg_sys::Datum::from(self.buf)
    }
}

impl Sink for TextBuf {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let need = self.len + bytes.len();
        if need > MAX_VALUE {
            return Err(PgSyncError::PageTooLarge);
        }
        if need > self.cap {
            let cap = need.max(self.cap.saturating_mul(2)).min(MAX_VALUE);
            // SAFETY: `buf` is a palloc'd chunk of `cap` bytes; repalloc
            // keeps its context and its first `len` bytes.
            self.buf =
                unsafe { pg_sys::repalloc(self.buf as *mut std::ffi::c_void, cap) as *mut u8 };
            self.cap = cap;
        }
        // SAFETY: room for `bytes` after `len` was made above.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buf.add(self.len), bytes.len());
        }
        self.len = need;
        Ok(())
    }
}

/// Size of the chunks of [`Chunks`]: large enough that a chunk's own cost
/// (a row of the result) is nothing, small enough to be nothing in memory.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// A page written as rows of text (chunks of about [`CHUNK_BYTES`], in
/// order) into a set-returning function's tuplestore, which keeps
/// `work_mem` in memory and the rest in a temporary file.
pub struct Chunks {
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    buf: Vec<u8>,
    /// Bytes of the page so far: held to the limit of one value, like the
    /// page of `sync_pull_json` (a device takes a page as one value).
    total: usize,
}

impl Chunks {
    /// Chunks written into `store`, whose rows are one text column (`desc`).
    ///
    /// # Safety
    /// `store` and `desc` are a materialized set-returning function's
    /// result and descriptor, alive until the function returns.
    pub unsafe fn new(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Chunks {
        Chunks {
            store,
            desc,
            buf: Vec::with_capacity(CHUNK_BYTES),
            total: 0,
        }
    }

    /// Writes what is held as the last chunk.
    pub fn finish(mut self) -> Result<()> {
        let held = std::mem::take(&mut self.buf);
        self.row(&held)
    }

    /// Writes `bytes` as one row (nothing when empty).
    fn row(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() > MAX_VALUE - pg_sys::VARHDRSZ {
            return Err(PgSyncError::PageTooLarge);
        }
        // SAFETY: the text datum is palloc'd in the current context and
        // freed once the tuplestore copied it (see `new` for the store).
        unsafe {
            let t = pg_sys::cstring_to_text_with_len(
                bytes.as_ptr() as *const std::ffi::c_char,
                bytes.len() as i32,
            );
            let mut value = pg_sys::Datum::from(t);
            let mut null = false;
            pg_sys::tuplestore_putvalues(self.store, self.desc, &mut value, &mut null);
            pg_sys::pfree(t as *mut std::ffi::c_void);
        }
        Ok(())
    }
}

impl Sink for Chunks {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.total += bytes.len();
        if self.total > MAX_VALUE - pg_sys::VARHDRSZ {
            return Err(PgSyncError::PageTooLarge);
        }
        if self.buf.len() + bytes.len() > CHUNK_BYTES && !self.buf.is_empty() {
            let held = std::mem::take(&mut self.buf);
            self.row(&held)?;
            self.buf = held;
            self.buf.clear();
        }
        if bytes.len() >= CHUNK_BYTES {
            // A large value (one row's text) is a chunk of its own.
            return self.row(bytes);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}
