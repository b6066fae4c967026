//! `text::merge3` / `merge::text_merge` (the `text_merge` strategy) and
//! `text::tokenize`, on texts made of words, spaces, punctuation, CJK and
//! combining characters, with both sides derived from the base by a few
//! edits (so merges succeed and interact), or on any strings. Invariants:
//! no panic, no hang (the diff is bounded); the merge is deterministic and
//! symmetric in the two sides; a side equal to the base gives the other
//! side; equal sides give that side; tokens concatenate to the text; the
//! JSON entry point agrees with `merge3`.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync_core::merge::text_merge;
use sync_core::text::{merge3, tokenize};
use sync_core_fuzz::{text, token};

#[derive(Debug)]
struct Input {
    base: String,
    theirs: String,
    mine: String,
}

/// `base` with a few token edits: replace, delete or insert.
fn edit(u: &mut Unstructured, base: &[&str]) -> Result<String> {
    let mut toks: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for _ in 0..u.int_in_range(0..=4)? {
        let at = u.int_in_range(0..=toks.len())?;
        match u.int_in_range(0u8..=2)? {
            0 if at < toks.len() => toks[at] = token(u)?.to_string(),
            1 if at < toks.len() => {
                toks.remove(at);
            }
            _ => toks.insert(at, token(u)?.to_string()),
        }
    }
    Ok(toks.concat())
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let base = text(u, 40)?;
        let toks = tokenize(&base);
        let side = |u: &mut Unstructured<'a>| -> Result<String> {
            if u.ratio(1, 8)? {
                text(u, 40)
            } else {
                edit(u, &toks)
            }
        };
        let theirs = side(u)?;
        let mine = side(u)?;
        Ok(Input { base, theirs, mine })
    }
}

fuzz_target!(|i: Input| {
    let (b, t, m) = (i.base.as_str(), i.theirs.as_str(), i.mine.as_str());
    for s in [b, t, m] {
        assert_eq!(tokenize(s).concat(), s);
    }
    let r = merge3(b, t, m);
    assert_eq!(r, merge3(b, m, t), "not symmetric");
    if t == b {
        assert_eq!(r.as_deref(), Some(m));
    }
    if m == b || t == m {
        assert_eq!(r.as_deref(), Some(t));
    }
    assert_eq!(merge3(b, t, t).as_deref(), Some(t));
    // The JSON entry point agrees (and so the merge is deterministic).
    let (jb, jt, jm) = (Value::from(b), Value::from(t), Value::from(m));
    assert_eq!(text_merge(&jb, &jt, &jm), r.map(Value::String));
});
