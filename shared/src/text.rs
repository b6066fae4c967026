//! Three-way text merge used by the `text_merge` strategy.
//!
//! Both sides are diffed against the base at *word* granularity (a minimal
//! Myers diff over tokens), each diff becomes a list of hunks ("base tokens
//! `start..end` replaced by these tokens"), and the hunks of both sides are
//! applied together when they do not interact. The rules, all deterministic
//! and symmetric in the two sides:
//!
//! - Tokens are runs of word characters (letters, digits, marks, `_`, and
//!   anything else that is neither white space nor punctuation), runs of
//!   white space, and single punctuation characters. Characters of scripts
//!   written without spaces (CJK ideographs, kana, Thai, Lao, Khmer,
//!   Myanmar) are one token each, so edits to different characters of such a
//!   sentence can merge.
//! - Two hunks *interact* when their base ranges overlap, or when both are
//!   pure insertions at the same point (their order would be a guess). A
//!   hunk that merely touches another (an insertion right before or after a
//!   replaced range, or two replacements of adjacent tokens) does not.
//! - A group of interacting hunks merges only when both sides produce the
//!   same text for the group's base range (the same edit made twice);
//!   otherwise [`merge3`] returns `None` and the caller falls back to
//!   last-writer-wins and records a conflict.
//! - The diff is bounded: when either side differs from the base in more
//!   than [`MAX_EDIT_TOKENS`] tokens, or the diff would take more than
//!   [`MAX_DIFF_STEPS`] steps, the merge gives up with `None` rather than
//!   spend unbounded time inside a database transaction. The bound counts
//!   steps, not time, so every replica gives up on the same inputs.

use std::collections::HashMap;

/// Largest edit distance, in tokens, between the base and one side that
/// the merge will diff (after the common prefix and suffix are trimmed).
pub const MAX_EDIT_TOKENS: usize = 1000;

/// Largest number of diff steps (token comparisons) spent on one side.
pub const MAX_DIFF_STEPS: u64 = 50_000_000;

/// Scripts written without spaces between words: one token per character.
fn is_spaceless_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x2E80..=0x2FDF    // CJK radicals, Kangxi
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3100..=0x312F    // Bopomofo
        | 0x31F0..=0x31FF    // Katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // half-width Katakana
        | 0x20000..=0x3FFFF  // CJK extensions B and later
    )
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Class {
    Word,
    Space,
    Single,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if (c.is_ascii_punctuation() && c != '_')
        || is_spaceless_script(c)
        || matches!(c as u32, 0x2010..=0x205E | 0x3000..=0x303F | 0xFF01..=0xFF0F)
    {
        Class::Single
    } else {
        Class::Word
    }
}

/// Splits `s` into tokens on char boundaries; concatenating them gives `s`.
pub fn tokenize(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev: Option<Class> = None;
    for (i, c) in s.char_indices() {
        let k = class(c);
        if let Some(p) = prev {
            if p != k || k == Class::Single {
                out.push(&s[start..i]);
                start = i;
            }
        }
        prev = Some(k);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// One side's edit of the base: base tokens `start..end` replaced by the
/// side's tokens `with_start..with_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hunk {
    start: usize,
    end: usize,
    with_start: usize,
    with_end: usize,
}

/// Minimal diff of `a` against `b` as hunks, or `None` past the bounds.
fn diff(a: &[u32], b: &[u32]) -> Option<Vec<Hunk>> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    let suffix = a_rest
        .iter()
        .rev()
        .zip(b_rest.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (
        &a_rest[..a_rest.len() - suffix],
        &b_rest[..b_rest.len() - suffix],
    );
    // Matched (a, b) index pairs of the trimmed middle, in order.
    let matches = myers_matches(ma, mb)?;
    let mut hunks = Vec::new();
    let (mut pa, mut pb) = (0usize, 0usize);
    for (x, y) in matches
        .into_iter()
        .chain(std::iter::once((ma.len(), mb.len())))
    {
        if x > pa || y > pb {
            hunks.push(Hunk {
                start: prefix + pa,
                end: prefix + x,
                with_start: prefix + pb,
                with_end: prefix + y,
            });
        }
        pa = x + 1;
        pb = y + 1;
    }
    Some(hunks)
}

/// Myers' O(ND) diff: the matched index pairs of a longest common
/// subsequence of `a` and `b`, or `None` when the edit distance exceeds
/// [`MAX_EDIT_TOKENS`] or the work exceeds [`MAX_DIFF_STEPS`].
fn myers_matches(a: &[u32], b: &[u32]) -> Option<Vec<(usize, usize)>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    if n == 0 || m == 0 {
        return Some(Vec::new());
    }
    let d_max = (n + m).min(MAX_EDIT_TOKENS as isize);
    let off = d_max + 1;
    let mut v = vec![0isize; (2 * d_max + 3) as usize];
    // trace[d] holds v[-d..=d] after step d.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut steps: u64 = 0;
    let mut found = None;
    'outer: for d in 0..=d_max {
        for k in (-d..=d).step_by(2) {
            let i = (off + k) as usize;
            let mut x = if k == -d || (k != d && v[i - 1] < v[i + 1]) {
                v[i + 1]
            } else {
                v[i - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
                steps += 1;
            }
            steps += 1;
            if steps > MAX_DIFF_STEPS {
                return None;
            }
            v[i] = x;
            if x >= n && y >= m {
                trace.push(v[(off - d) as usize..=(off + d) as usize].to_vec());
                found = Some(d);
                break 'outer;
            }
        }
        trace.push(v[(off - d) as usize..=(off + d) as usize].to_vec());
    }
    let d_end = found?;
    // Walk back from (n, m), collecting the diagonal (matching) moves.
    let mut out = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..=d_end).rev() {
        let prev = &trace[(d - 1) as usize];
        let at = |k: isize| prev[(k + d - 1) as usize];
        let k = x - y;
        let prev_k = if k == -d || (k != d && at(k - 1) < at(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = at(prev_k);
        let prev_y = prev_x - prev_k;
        // The snake after the edit step.
        let (sx, sy) = if prev_k == k + 1 {
            (prev_x, prev_y + 1)
        } else {
            (prev_x + 1, prev_y)
        };
        while x > sx && y > sy {
            x -= 1;
            y -= 1;
            out.push((x as usize, y as usize));
        }
        x = prev_x;
        y = prev_y;
    }
    while x > 0 && y > 0 {
        x -= 1;
        y -= 1;
        out.push((x as usize, y as usize));
    }
    out.reverse();
    Some(out)
}

/// Maps tokens to small integers so the diff compares integers.
fn intern<'a>(ids: &mut HashMap<&'a str, u32>, toks: &[&'a str]) -> Vec<u32> {
    toks.iter()
        .map(|t| {
            let next = ids.len() as u32;
            *ids.entry(t).or_insert(next)
        })
        .collect()
}

/// One piece of a word-level diff (see [`word_diff`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "op", content = "text", rename_all = "snake_case")]
pub enum Edit {
    /// Text both sides have.
    Equal(String),
    /// Text only `from` has.
    Delete(String),
    /// Text only `to` has.
    Insert(String),
}

/// The word-level diff of `from` into `to`: the same tokens and minimal
/// diff the `text_merge` strategy uses, as runs of equal, deleted and
/// inserted text (adjacent runs of one kind joined; within a changed
/// region the deletion comes first). `None` past the same bounds as
/// [`merge3`]. Concatenating the `Equal` and `Delete` runs gives `from`;
/// the `Equal` and `Insert` runs give `to`.
pub fn word_diff(from: &str, to: &str) -> Option<Vec<Edit>> {
    let (ta, tb) = (tokenize(from), tokenize(to));
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let (ia, ib) = (intern(&mut ids, &ta), intern(&mut ids, &tb));
    let mut out: Vec<Edit> = Vec::new();
    let mut push = |e: Edit| {
        let empty = |e: &Edit| match e {
            Edit::Equal(t) | Edit::Delete(t) | Edit::Insert(t) => t.is_empty(),
        };
        if empty(&e) {
            return;
        }
        match (out.last_mut(), e) {
            (Some(Edit::Equal(a)), Edit::Equal(b))
            | (Some(Edit::Delete(a)), Edit::Delete(b))
            | (Some(Edit::Insert(a)), Edit::Insert(b)) => a.push_str(&b),
            (_, e) => out.push(e),
        }
    };
    let mut pos = 0;
    for h in diff(&ia, &ib)? {
        push(Edit::Equal(ta[pos..h.start].concat()));
        push(Edit::Delete(ta[h.start..h.end].concat()));
        push(Edit::Insert(tb[h.with_start..h.with_end].concat()));
        pos = h.end;
    }
    push(Edit::Equal(ta[pos..].concat()));
    Some(out)
}

/// Which side a hunk comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Theirs,
    Mine,
}

/// Merges `theirs` and `mine`, both edits of `base`. Returns `None` when
/// their edits interact (see the module docs) and differ, so the caller
/// falls back to last-writer-wins. Symmetric: `merge3(b, t, m)` equals
/// `merge3(b, m, t)`.
pub fn merge3(base: &str, theirs: &str, mine: &str) -> Option<String> {
    if theirs == mine || mine == base {
        return Some(theirs.to_string());
    }
    if theirs == base {
        return Some(mine.to_string());
    }
    let (tb, tt, tm) = (tokenize(base), tokenize(theirs), tokenize(mine));
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let (ib, it, im) = (
        intern(&mut ids, &tb),
        intern(&mut ids, &tt),
        intern(&mut ids, &tm),
    );
    let mut hunks: Vec<(Hunk, Side)> = diff(&ib, &it)?
        .into_iter()
        .map(|h| (h, Side::Theirs))
        .chain(diff(&ib, &im)?.into_iter().map(|h| (h, Side::Mine)))
        .collect();
    hunks.sort_by_key(|(h, _)| (h.start, h.end));

    let side_tokens = |s: Side| if s == Side::Theirs { &tt } else { &tm };
    // The text a side gives base tokens `start..end`, using its hunks in
    // `group` (all inside that range).
    let render = |side: Side, group: &[(Hunk, Side)], start: usize, end: usize| -> String {
        let toks = side_tokens(side);
        let mut s = String::new();
        let mut pos = start;
        for (h, _) in group.iter().filter(|(_, hs)| *hs == side) {
            tb[pos..h.start].iter().for_each(|t| s.push_str(t));
            toks[h.with_start..h.with_end]
                .iter()
                .for_each(|t| s.push_str(t));
            pos = h.end;
        }
        tb[pos..end].iter().for_each(|t| s.push_str(t));
        s
    };

    let mut out = String::with_capacity(base.len() + theirs.len() + mine.len());
    let mut pos = 0;
    let mut i = 0;
    while i < hunks.len() {
        let (first, _) = hunks[i];
        let (cs, mut ce) = (first.start, first.end);
        let mut j = i + 1;
        while j < hunks.len() {
            let (h, _) = hunks[j];
            let overlaps = h.start < ce;
            let same_point_inserts = h.start == ce && cs == ce && h.start == h.end;
            if !(overlaps || same_point_inserts) {
                break;
            }
            ce = ce.max(h.end);
            j += 1;
        }
        let group = &hunks[i..j];
        tb[pos..cs].iter().for_each(|t| out.push_str(t));
        let has_theirs = group.iter().any(|(_, s)| *s == Side::Theirs);
        let has_mine = group.iter().any(|(_, s)| *s == Side::Mine);
        let text = match (has_theirs, has_mine) {
            (true, true) => {
                let t = render(Side::Theirs, group, cs, ce);
                if t != render(Side::Mine, group, cs, ce) {
                    return None;
                }
                t
            }
            (true, false) => render(Side::Theirs, group, cs, ce),
            _ => render(Side::Mine, group, cs, ce),
        };
        out.push_str(&text);
        pos = ce;
        i = j;
    }
    tb[pos..].iter().for_each(|t| out.push_str(t));
    Some(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn word_diff_rebuilds_both_sides() {
        let d = word_diff("Website redesign for Q3", "Website relaunch for Q4").unwrap();
        assert_eq!(
            d,
            vec![
                Edit::Equal("Website ".into()),
                Edit::Delete("redesign".into()),
                Edit::Insert("relaunch".into()),
                Edit::Equal(" for ".into()),
                Edit::Delete("Q3".into()),
                Edit::Insert("Q4".into()),
            ]
        );
        let side = |keep: fn(&Edit) -> Option<&String>| {
            d.iter().filter_map(keep).cloned().collect::<String>()
        };
        assert_eq!(
            side(|e| match e {
                Edit::Equal(t) | Edit::Delete(t) => Some(t),
                _ => None,
            }),
            "Website redesign for Q3"
        );
        assert_eq!(
            word_diff("same", "same").unwrap(),
            vec![Edit::Equal("same".into())]
        );
        assert_eq!(word_diff("", "").unwrap(), vec![]);
        assert_eq!(
            serde_json::to_string(&word_diff("a b", "a c").unwrap()).unwrap(),
            r#"[{"op":"equal","text":"a "},{"op":"delete","text":"b"},{"op":"insert","text":"c"}]"#
        );
    }

    use super::{merge3, tokenize, word_diff, Edit};

    #[test]
    fn disjoint_edits_merge() {
        let base = "The quick brown fox jumps over the lazy dog";
        let theirs = "The quick red fox jumps over the lazy dog";
        let mine = "The quick brown fox jumps over the sleepy dog";
        assert_eq!(
            merge3(base, theirs, mine).as_deref(),
            Some("The quick red fox jumps over the sleepy dog")
        );
    }

    #[test]
    fn several_edits_on_each_side_merge() {
        let base = "one two three four five six seven eight nine ten";
        let theirs = "ONE two three four FIVE six seven eight nine ten!";
        let mine = "one two 3 four five six seven eight nine";
        assert_eq!(
            merge3(base, theirs, mine).as_deref(),
            Some("ONE two 3 four FIVE six seven eight nine!")
        );
        assert_eq!(
            merge3(base, mine, theirs).as_deref(),
            Some("ONE two 3 four FIVE six seven eight nine!")
        );
    }

    #[test]
    fn adjacent_words_merge_but_same_word_does_not() {
        assert_eq!(merge3("a b c", "a x c", "a b y").as_deref(), Some("a x y"));
        assert_eq!(merge3("a b c", "a x c", "a y c"), None);
        // Deleting a word next to a changed word.
        assert_eq!(
            merge3("w0 w1 w2", "w0 w2", "w0 w1 z").as_deref(),
            Some("w0 z")
        );
    }

    #[test]
    fn inserts_at_the_same_point_conflict_unless_identical() {
        assert_eq!(merge3("a b", "a x b", "a y b"), None);
        assert_eq!(merge3("a b", "a x b", "a x b").as_deref(), Some("a x b"));
        assert_eq!(
            merge3("a b c", "a x b c", "a b x c").as_deref(),
            Some("a x b x c")
        );
    }

    #[test]
    fn overlapping_edits_do_not_merge() {
        assert_eq!(merge3("abcdef", "abXdef", "abYdef"), None);
        assert_eq!(merge3("a b c d", "a X Y d", "a b Z d"), None);
    }

    #[test]
    fn unicode_boundaries() {
        assert_eq!(
            merge3("héllo wörld", "héllo wörld!", "Héllo wörld").as_deref(),
            Some("Héllo wörld!")
        );
        assert_eq!(
            merge3("我喜欢猫和狗", "你喜欢猫和狗", "我喜欢猫和鸟").as_deref(),
            Some("你喜欢猫和鸟")
        );
    }

    #[test]
    fn tokens_cover_the_text() {
        let s = "Hello,  wörld! 我喜欢 e\u{301}t_é 42.5\n";
        let t = tokenize(s);
        assert_eq!(t.concat(), s);
        assert_eq!(
            t,
            vec![
                "Hello",
                ",",
                "  ",
                "wörld",
                "!",
                " ",
                "我",
                "喜",
                "欢",
                " ",
                "e\u{301}t_é",
                " ",
                "42",
                ".",
                "5",
                "\n"
            ]
        );
    }

    #[test]
    fn large_rewrites_give_up() {
        let base: String = (0..3000).map(|i| format!("b{i} ")).collect();
        let theirs: String = (0..3000).map(|i| format!("t{i} ")).collect();
        let mine = format!("{base}end");
        assert_eq!(merge3(&base, &theirs, &mine), None);
    }
}
