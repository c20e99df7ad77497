//! Text helpers the whole workspace shares: hex digests and the tail of a log.

use std::fmt::Write as _;

/// Lowercase hex of `bytes`, two digits each (digests, short IDs).
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The last `count` non-blank lines of a log or a program's stderr, for an error
/// message: the cause is at the end, and blank lines would waste the few we show.
pub fn tail(text: &str, count: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn tail_keeps_the_last_non_blank_lines() {
        assert_eq!(tail("a\n\nb\n  \nc\n", 2), ["b", "c"]);
        assert_eq!(tail("a\n", 5), ["a"]);
        assert!(tail("", 3).is_empty());
    }
}
