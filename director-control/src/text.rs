//! Messages that echo what the operator typed stay readable when that was huge (a 100 KB
//! argument or `-R` line): every line of a message is cut to a bounded length.

use std::borrow::Cow;

/// Lines longer than this (in characters) are cut.
pub const MAX_LINE: usize = 300;
const HEAD: usize = 200;
const TAIL: usize = 60;

/// `msg` with every line over [`MAX_LINE`] characters cut in the middle, keeping its
/// start and its end (where the reason often is) and saying how much went.
pub fn cut(msg: &str) -> Cow<'_, str> {
    if msg.lines().all(|l| l.chars().count() <= MAX_LINE) {
        return Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len().min(4 * MAX_LINE));
    for (i, line) in msg.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let n = line.chars().count();
        if n <= MAX_LINE {
            out.push_str(line);
            continue;
        }
        let head_end = line.char_indices().nth(HEAD).map_or(line.len(), |(b, _)| b);
        let tail_start = line
            .char_indices()
            .nth(n - TAIL)
            .map_or(line.len(), |(b, _)| b);
        out.push_str(&line[..head_end]);
        out.push_str(&format!("[... {} characters cut ...]", n - HEAD - TAIL));
        out.push_str(&line[tail_start..]);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_are_untouched_and_long_lines_keep_both_ends() {
        assert_eq!(cut("a\nb c"), "a\nb c");
        let long = format!(
            "illegal weight `{}' specified\nsecond line",
            "9".repeat(100_000)
        );
        let c = cut(&long);
        let first = c.lines().next().unwrap();
        assert!(first.chars().count() <= MAX_LINE, "{}", first.len());
        assert!(first.starts_with("illegal weight `999"), "{first}");
        assert!(first.ends_with("999' specified"), "{first}");
        assert!(first.contains("characters cut"), "{first}");
        assert_eq!(c.lines().nth(1), Some("second line"));
        // Multi-byte characters are cut on their boundaries.
        let wide = "é".repeat(1000);
        assert_eq!(
            cut(&wide).chars().filter(|c| *c == 'é').count(),
            HEAD + TAIL
        );
    }
}
