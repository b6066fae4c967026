//! Three-way text merge used by the `text_merge` strategy.

/// One side's edit of the base: `base[start..end]` replaced by `with`.
struct Edit<'a> {
    start: usize,
    end: usize,
    with: &'a str,
}

/// The single region in which `side` differs from `base` (common prefix and
/// suffix trimmed, on char boundaries).
fn edit<'a>(base: &str, side: &'a str) -> Edit<'a> {
    let prefix: usize = base
        .chars()
        .zip(side.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    let max_suffix = (base.len() - prefix).min(side.len() - prefix);
    let suffix: usize = base[prefix..]
        .chars()
        .rev()
        .zip(side[prefix..].chars().rev())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .scan(0usize, |acc, n| {
            *acc += n;
            Some(*acc)
        })
        .take_while(|total| *total <= max_suffix)
        .last()
        .unwrap_or(0);
    Edit {
        start: prefix,
        end: base.len() - suffix,
        with: &side[prefix..side.len() - suffix],
    }
}

/// Merges `theirs` and `mine`, both edits of `base`. Returns `None` when the
/// edited regions overlap (or touch at the same point with different
/// insertions), so the caller falls back to last-writer-wins.
pub fn merge3(base: &str, theirs: &str, mine: &str) -> Option<String> {
    if theirs == mine || mine == base {
        return Some(theirs.to_string());
    }
    if theirs == base {
        return Some(mine.to_string());
    }
    let (t, m) = (edit(base, theirs), edit(base, mine));
    let (first, second) = if t.start <= m.start {
        (&t, &m)
    } else {
        (&m, &t)
    };
    if first.end > second.start || (first.end == second.start && first.start == second.start) {
        return None;
    }
    let mut out = String::with_capacity(base.len() + first.with.len() + second.with.len());
    out.push_str(&base[..first.start]);
    out.push_str(first.with);
    out.push_str(&base[first.end..second.start]);
    out.push_str(second.with);
    out.push_str(&base[second.end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::merge3;

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
    fn overlapping_edits_do_not_merge() {
        assert_eq!(merge3("abcdef", "abXdef", "abYdef"), None);
    }

    #[test]
    fn unicode_boundaries() {
        assert_eq!(
            merge3("héllo wörld", "héllo wörld!", "Héllo wörld").as_deref(),
            Some("Héllo wörld!")
        );
    }
}
