//! Quoting a user's text in a message the way `{:?}` does (`"a\"b"`, `'x'`), without the `Debug` machinery:
//! core's escaper carries Unicode tables (which characters are printable) that the browser app does not need.
//! ASCII is escaped exactly as `Debug` escapes it; other characters are shown as they are.

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
        c if c.is_ascii_control() => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = c as usize;
            out.push_str("\\u{");
            if n >= 16 {
                out.push(char::from(HEX[n >> 4]));
            }
            out.push(char::from(HEX[n & 15]));
            out.push('}');
        }
        c => out.push(c),
    }
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
        assert_eq!(quote("température"), "\"température\"");
        assert_eq!(quote_char('é'), "'é'");
    }
}
