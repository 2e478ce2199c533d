//! A minimal JSON reader and writer, just enough for the bodies DPS exchanges (reference §9).
//!
//! The core is compiled into the browser app under a tight size budget, so it carries no serde. The reader follows
//! RFC 8259 (objects, arrays, strings with every escape and surrogate pairs, numbers, literals) and keeps the raw
//! text of every value, so a nested value such as the registration `payload` can be passed on verbatim. Nesting is
//! limited so that a hostile peer cannot exhaust the stack. The writer escapes strings so that the reader (and any
//! JSON parser) reads back exactly the string that was written.

use thiserror::Error;

/// How deep arrays and objects may nest; DPS bodies need four levels.
pub const MAX_DEPTH: usize = 64;

/// A parsed value and the exact text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Value<'a> {
    pub raw: &'a str,
    pub kind: Kind<'a>,
}

/// What a value is. Numbers stay text: DPS only needs them as integers, and text loses nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(String),
    Array(Vec<Value<'a>>),
    /// Members in document order; a repeated name keeps its first value for [`Value::get`].
    Object(Vec<(String, Value<'a>)>),
}

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonError {
    #[error("[RFC 8259] {expected} expected at byte {at}")]
    Expected { at: usize, expected: &'static str },
    #[error("[RFC 8259 §7] bad escape or unpaired surrogate at byte {at}")]
    BadEscape { at: usize },
    #[error("[RFC 8259 §7] unescaped control character in a string at byte {at}")]
    ControlCharacter { at: usize },
    #[error("JSON nested deeper than {MAX_DEPTH} levels at byte {at}")]
    TooDeep { at: usize },
    #[error("[RFC 8259 §2] text after the JSON value at byte {at}")]
    TrailingText { at: usize },
}

impl<'a> Value<'a> {
    /// The member `name` of an object.
    pub fn get(&self, name: &str) -> Option<&Value<'a>> {
        match &self.kind {
            Kind::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            Kind::Null | Kind::Bool(_) | Kind::Number(_) | Kind::String(_) | Kind::Array(_) => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::String(s) => Some(s),
            Kind::Null | Kind::Bool(_) | Kind::Number(_) | Kind::Array(_) | Kind::Object(_) => None,
        }
    }
    /// A non-negative integer number (`400207`), not `4e5` or `-1`.
    pub fn as_u64(&self) -> Option<u64> {
        match &self.kind {
            Kind::Number(n) => n.parse().ok(),
            Kind::Null | Kind::Bool(_) | Kind::String(_) | Kind::Array(_) | Kind::Object(_) => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }
    pub fn is_object(&self) -> bool {
        matches!(self.kind, Kind::Object(_))
    }
}

/// Parses one JSON value, surrounded by optional white space.
pub fn parse(text: &str) -> Result<Value<'_>, JsonError> {
    let mut p = Parser { text, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != text.len() {
        return Err(JsonError::TrailingText { at: p.i });
    }
    Ok(v)
}

struct Parser<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(JsonError::Expected { at: self.i, expected })
        }
    }
    fn literal(&mut self, word: &'static str, kind: Kind<'a>) -> Result<Kind<'a>, JsonError> {
        if self.text[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(kind)
        } else {
            Err(JsonError::Expected { at: self.i, expected: "a value" })
        }
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        if depth >= MAX_DEPTH {
            return Err(JsonError::TooDeep { at: self.i });
        }
        let start = self.i;
        let kind = match self.peek() {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                let mut members = Vec::new();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let name = self.string()?;
                        self.ws();
                        self.expect(b':', "':'")?;
                        self.ws();
                        members.push((name, self.value(depth + 1)?));
                        self.ws();
                        if self.peek() == Some(b',') {
                            self.i += 1;
                            continue;
                        }
                        self.expect(b'}', "',' or '}'")?;
                        break;
                    }
                }
                Kind::Object(members)
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        if self.peek() == Some(b',') {
                            self.i += 1;
                            continue;
                        }
                        self.expect(b']', "',' or ']'")?;
                        break;
                    }
                }
                Kind::Array(items)
            }
            Some(b'"') => Kind::String(self.string()?),
            Some(b't') => self.literal("true", Kind::Bool(true))?,
            Some(b'f') => self.literal("false", Kind::Bool(false))?,
            Some(b'n') => self.literal("null", Kind::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) | None => return Err(JsonError::Expected { at: self.i, expected: "a value" }),
        };
        Ok(Value { raw: &self.text[start..self.i], kind })
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` (RFC 8259 §6).
    fn number(&mut self) -> Result<Kind<'a>, JsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_at = self.i;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.text.as_bytes()[int_at] == b'0') {
            return Err(JsonError::Expected { at: int_at, expected: "digits without a leading zero" });
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(JsonError::Expected { at: self.i, expected: "a digit after '.'" });
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(JsonError::Expected { at: self.i, expected: "an exponent" });
            }
        }
        Ok(Kind::Number(&self.text[start..self.i]))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"', "a string")?;
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control character in one go. Those are ASCII, so
            // the run ends on a character boundary.
            let run = self.text.as_bytes()[self.i..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let Some(n) = run else { return Err(JsonError::Expected { at: self.text.len(), expected: "'\"'" }) };
            out.push_str(&self.text[self.i..self.i + n]);
            self.i += n;
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let at = self.i;
                    self.i += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let hi = self.hex4().ok_or(JsonError::BadEscape { at })?;
                            let code = match hi {
                                0xD800..=0xDBFF => {
                                    if !self.text[self.i..].starts_with("\\u") {
                                        return Err(JsonError::BadEscape { at });
                                    }
                                    self.i += 2;
                                    let lo = self.hex4().ok_or(JsonError::BadEscape { at })?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return Err(JsonError::BadEscape { at });
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return Err(JsonError::BadEscape { at }),
                                _ => hi,
                            };
                            out.push(char::from_u32(code).ok_or(JsonError::BadEscape { at })?);
                            continue;
                        }
                        Some(_) | None => return Err(JsonError::BadEscape { at }),
                    };
                    out.push(c);
                    self.i += 1;
                }
                Some(_) => return Err(JsonError::ControlCharacter { at: self.i }),
                None => return Err(JsonError::Expected { at: self.i, expected: "'\"'" }),
            }
        }
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Option<u32> {
        let hex = self.text.get(self.i..self.i + 4)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(hex, 16).ok()
    }
}

/// Appends `s` as a JSON string: quotes, backslashes and control characters escaped, the rest verbatim.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Builds a JSON object member by member, in the order written.
#[derive(Debug)]
pub struct ObjectWriter {
    out: String,
}

impl ObjectWriter {
    pub fn new() -> Self {
        ObjectWriter { out: String::from("{") }
    }
    fn name(&mut self, name: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        write_string(&mut self.out, name);
        self.out.push(':');
    }
    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        write_string(&mut self.out, value);
        self
    }
    pub fn opt_string(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.string(name, v);
        }
        self
    }
    pub fn number(&mut self, name: &str, value: u64) -> &mut Self {
        self.name(name);
        self.out.push_str(&value.to_string());
        self
    }
    /// A member whose value is JSON text the caller has already validated.
    pub fn raw(&mut self, name: &str, json: &str) -> &mut Self {
        self.name(name);
        self.out.push_str(json);
        self
    }
    pub fn finish(&mut self) -> String {
        self.out.push('}');
        std::mem::take(&mut self.out)
    }
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        write_string(&mut out, s);
        out
    }

    #[test]
    fn reads_a_dps_response_and_keeps_raw_text() {
        let text = r#" {"operationId":"4.d0a6","status":"assigned","registrationState":{"errorCode":400207,
            "payload":{"a":[1,2.5e3,-0.1,true,false,null],"s":"x\"y\\\u00e9\ud83d\ude00"}}} "#;
        let v = parse(text).unwrap();
        assert_eq!(v.get("operationId").and_then(Value::as_str), Some("4.d0a6"));
        let state = v.get("registrationState").unwrap();
        assert_eq!(state.get("errorCode").and_then(Value::as_u64), Some(400207));
        let payload = state.get("payload").unwrap();
        assert_eq!(payload.raw, r#"{"a":[1,2.5e3,-0.1,true,false,null],"s":"x\"y\\\u00e9\ud83d\ude00"}"#);
        assert_eq!(payload.get("s").and_then(Value::as_str), Some("x\"y\\é😀"));
    }

    #[test]
    fn refuses_what_rfc_8259_refuses() {
        for (bad, err) in [
            ("", JsonError::Expected { at: 0, expected: "a value" }),
            ("{\"a\":1,}", JsonError::Expected { at: 7, expected: "a string" }),
            ("[1 2]", JsonError::Expected { at: 3, expected: "',' or ']'" }),
            ("01", JsonError::Expected { at: 0, expected: "digits without a leading zero" }),
            ("1.", JsonError::Expected { at: 2, expected: "a digit after '.'" }),
            ("\"a\nb\"", JsonError::ControlCharacter { at: 2 }),
            ("\"\\ud800\"", JsonError::BadEscape { at: 1 }),
            ("\"\\udc00\"", JsonError::BadEscape { at: 1 }),
            ("\"\\x\"", JsonError::BadEscape { at: 1 }),
            ("\"abc", JsonError::Expected { at: 4, expected: "'\"'" }),
            ("tru", JsonError::Expected { at: 0, expected: "a value" }),
            ("{} x", JsonError::TrailingText { at: 3 }),
        ] {
            assert_eq!(parse(bad), Err(err), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(matches!(parse(&deep), Err(JsonError::TooDeep { .. })));
    }

    #[test]
    fn writes_escapes_for_quotes_backslashes_and_controls() {
        assert_eq!(quoted("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#);
        let body = ObjectWriter::new().string("k", "v").number("n", 7).raw("p", "{}").opt_string("x", None).finish();
        assert_eq!(body, r#"{"k":"v","n":7,"p":{}}"#);
    }

    proptest! {
        #[test]
        fn strings_round_trip(s in any::<String>()) {
            let text = quoted(&s);
            let v = parse(&text).unwrap();
            prop_assert_eq!(v.as_str(), Some(s.as_str()));
        }

        #[test]
        fn objects_round_trip(members in proptest::collection::vec((any::<String>(), any::<String>(), any::<u64>()), 0..6)) {
            let mut w = ObjectWriter::new();
            for (k, v, n) in &members {
                w.string(k, v).number(&format!("{k}#n"), *n);
            }
            let text = w.finish();
            let v = parse(&text).unwrap();
            let Kind::Object(read) = &v.kind else { panic!("{text}") };
            prop_assert_eq!(read.len(), members.len() * 2);
            for ((k, val, n), pair) in members.iter().zip(read.chunks(2)) {
                prop_assert_eq!(&pair[0].0, k);
                prop_assert_eq!(pair[0].1.as_str(), Some(val.as_str()));
                prop_assert_eq!(pair[1].1.as_u64(), Some(*n));
            }
        }

        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_json_like_text(s in "[\\[\\]{}\":,0-9eE.+\\-tfnrul\\\\ a-z]{0,40}") {
            let _ = parse(&s);
        }
    }
}
