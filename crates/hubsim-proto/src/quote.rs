//! Quoting a user's text in a message the way `{:?}` does (`"a\"b"`, `'x'`), without the `Debug` machinery:
//! core's escaper carries Unicode tables (which characters are printable) that the browser app does not need.
//! ASCII is escaped exactly as `Debug` escapes it, and so are the controls and the invisible format characters
//! (a byte order mark, zero-width spaces, direction marks); other characters are shown as they are.

/// `s` in double quotes, as `{:?}` writes a string (for ASCII).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        escape(c, '"', &mut out);
    }
    out.push('"');
    out
}

/// `c` in single quotes, as `{:?}` writes a character (for ASCII).
pub fn quote_char(c: char) -> String {
    let mut out = String::from("'");
    escape(c, '\'', &mut out);
    out.push('\'');
    out
}

fn escape(c: char, quote: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if c.is_control() || invisible(c) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = c as u32;
            out.push_str("\\u{");
            let digits = (32 - n.leading_zeros()).div_ceil(4).max(1);
            for i in (0..digits).rev() {
                out.push(char::from(HEX[(n >> (4 * i) & 15) as usize]));
            }
            out.push('}');
        }
        c => out.push(c),
    }
}

/// Format characters that show nothing (Unicode category Cf, the common ones) and the line and paragraph separators.
fn invisible(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_as_debug_does() {
        for b in 0u8..128 {
            let c = char::from(b);
            assert_eq!(quote_char(c), format!("{c:?}"));
            let s = format!("a{c}b");
            assert_eq!(quote(&s), format!("{s:?}"));
        }
        for c in ['\u{80}', '\u{9f}', '\u{ad}', '\u{200b}', '\u{200f}', '\u{2028}', '\u{202e}', '\u{2060}', '\u{feff}']
        {
            assert_eq!(quote_char(c), format!("{c:?}"));
        }
        assert_eq!(quote("température"), "\"température\"");
        assert_eq!(quote_char('é'), "'é'");
    }
}
