//! Any cursor the server could build (positions with arbitrary xids and
//! JSON primary keys, column signatures, epochs) encodes to text that
//! decodes to the same cursor; a cursor of another version is refused with
//! an error. `oldest_tombstone_xid` is the minimum of the tombstone
//! positions.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use sync_core::cursor::{Cursor, Pos, TablePos};
use sync_core_fuzz::{text, value};

fn pos(u: &mut Unstructured) -> Result<Pos> {
    Ok(match u.int_in_range(0u8..=2)? {
        0 => Pos::Start,
        1 => Pos::Below([u.arbitrary()?]),
        _ => Pos::After(u.arbitrary()?, value(u, 2)?),
    })
}

struct Input(Cursor);

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut c = Cursor {
            v: if u.ratio(1, 16)? { u.arbitrary()? } else { 1 },
            s: u.arbitrary()?,
            e: u.arbitrary()?,
            ..Default::default()
        };
        for _ in 0..u.int_in_range(0..=4)? {
            let p = TablePos {
                r: pos(u)?,
                d: pos(u)?,
                c: u.arbitrary()?,
                n: u.arbitrary()?,
            };
            c.t.insert(text(u, 3)?, p);
        }
        Ok(Input(c))
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fuzz_target!(|input: Input| {
    let c = input.0;
    let text = c.encode();
    match Cursor::decode(&text) {
        Ok(d) => {
            assert_eq!(c.v, 1);
            assert_eq!(d, c, "{text}");
        }
        Err(e) => assert_ne!(c.v, 1, "{e}: {text}"),
    }
    let min =
        c.t.values()
            .filter_map(|p| match &p.d {
                Pos::Start => None,
                Pos::Below([x]) | Pos::After(x, _) => Some(*x),
            })
            .min();
    assert_eq!(c.oldest_tombstone_xid(), min);
});
