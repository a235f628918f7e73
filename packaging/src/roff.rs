//! Minimal roff (man(7)) text escaping for the hand-built kiln.toml.5 page.
//! Pure string functions; touches nothing else.

/// Escapes free text so groff prints it literally: backslashes, leading
/// control characters (`.` and `'`) and hyphens (so they stay ASCII `-`).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        for c in line.chars() {
            match c {
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                _ => out.push(c),
            }
        }
    }
    out
}

/// Escapes text for a double-quoted macro argument (e.g. `.SS "..."`).
pub(crate) fn escape_arg(text: &str) -> String {
    escape(text).replace('"', "\\(dq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_chars_and_backslashes() {
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("'quote"), "\\&'quote");
        assert_eq!(escape("a\\b"), "a\\eb");
        assert_eq!(escape("x-y"), "x\\-y");
        assert_eq!(escape("one\n.two"), "one\n\\&.two");
        assert_eq!(escape_arg("a \"b\""), "a \\(dqb\\(dq");
    }
}
