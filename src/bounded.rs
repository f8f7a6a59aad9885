//! Bounds on text that a request controls, wherever it is echoed: log fields, denial messages,
//! warnings, audit annotations, error answers. A request can carry a uid or a name of megabytes;
//! what we write about it stays short, and says that it was cut.

use std::borrow::Cow;
use std::fmt;

/// Longest object name Kubernetes accepts (a DNS subdomain); namespaces (63) fit too. Longer
/// names are never valid, so cutting them changes no decision about a real object.
pub const NAME_BYTES: usize = 253;
/// A request field in a log line: uid, kind, user, …
pub const LOG_FIELD_BYTES: usize = 256;
/// A whole message: a denial, a warning, an audit annotation, an error answer. A real message,
/// with a name and a namespace at their longest, is under 1 KiB.
pub const MESSAGE_BYTES: usize = 2048;

/// `s` if it fits in `max` bytes; otherwise its first `max` bytes (at a character boundary)
/// followed by a marker that says how long it was: `abc…[truncated, 3145728 bytes]`.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[truncated, {} bytes]", &s[..end], s.len()))
}

/// Cuts `s` in place when it is longer than `max` bytes (see [`truncate`]).
pub fn truncate_in_place(s: &mut String, max: usize) {
    if let Cow::Owned(cut) = truncate(s, max) {
        *s = cut;
    }
}

/// Displays a string cut to a number of bytes (see [`truncate`]), without copying it when it
/// fits: for log fields, `uid = %Bounded::field(&uid)`.
#[derive(Clone, Copy, Debug)]
pub struct Bounded<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Bounded<'a> {
    pub fn new(text: &'a str, max: usize) -> Self {
        Self { text, max }
    }

    /// A message in a log line ([`MESSAGE_BYTES`]).
    pub fn message(text: &'a str) -> Self {
        Self::new(text, MESSAGE_BYTES)
    }
}

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&truncate(self.text, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_with_its_length() {
        assert!(matches!(truncate("abc", 3), Cow::Borrowed("abc")));
        assert_eq!(truncate("abcdef", 3), "abc…[truncated, 6 bytes]");
        let mut s = "x".repeat(10);
        truncate_in_place(&mut s, 4);
        assert_eq!(s, "xxxx…[truncated, 10 bytes]");
        assert_eq!(
            Bounded::new("hello", 2).to_string(),
            "he…[truncated, 5 bytes]"
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // "é" is two bytes: a cut after one byte would split it.
        assert_eq!(truncate("éé", 1), "…[truncated, 4 bytes]");
        assert_eq!(truncate("éé", 3), "é…[truncated, 4 bytes]");
    }
}
