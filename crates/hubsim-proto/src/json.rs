//! hubsim's one JSON implementation: a value tree, a strict and a relaxed parser, a compact serializer and a
//! streaming object writer.
//!
//! Why not serde_json: the browser app has a 150 KB gzipped budget and serde's generated code is the
//! largest single item in it; a tree of [`Value`]s is all the core (DPS bodies), the template engine and the
//! DTDL crate need. It lives in the core because the core needs it and every other crate already depends on it.
//!
//! * [`parse`] accepts exactly RFC 8259 JSON: DPS bodies (reference §9), rendered bodies before they are sent,
//!   DTDL models.
//! * [`parse_relaxed`] also accepts what Newtonsoft.Json and .NET's configuration reader accept in
//!   Iot-Telemetry-Simulator configurations: a UTF-8 byte order mark, `//` and `/* */` comments,
//!   unquoted property names made of letters, digits, `_` and `$` (any non-ASCII character counts as a
//!   letter), single-quoted strings and
//!   trailing commas. (Newtonsoft's hex numbers, `NaN`, `undefined` and `new Date(..)` are not accepted.)
//! * [`to_string`] (and `Display`) writes compact JSON (no spaces), escaping only what RFC 8259 requires. It is
//!   canonical: parsing its output and writing again gives the same text, which is how a nested value such as
//!   the DPS registration `payload` is passed on (as its compact form, not byte for byte).
//! * [`ObjectWriter`] builds an object member by member and can embed JSON text that is already checked.
//!
//! Objects keep their keys in document order; a repeated key replaces the earlier value in place.
//! Integers that fit in an `i64` stay exact; other numbers are `f64`s.
//! Errors carry a 1-based line and a 1-based column counted in characters:
//! `line 3, col 14: expected ':' after a property name`. Nesting deeper than [`MAX_DEPTH`] is an
//! error rather than a stack overflow, so no input can panic the parser.

use std::fmt::{self, Write as _};

/// Nesting limit (arrays and objects) of the parsers.
pub const MAX_DEPTH: usize = 128;

/// A JSON value. Objects preserve key order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON number: integers that fit in an `i64` stay exact, everything else is an `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    /// The value as an `f64` (large integers round).
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl fmt::Display for Number {
    /// Integers as digits; floats in Rust's shortest round-trip form (`1.5`, `1e300`), `1.0` keeping its
    /// point so that a float stays a float after a round trip. Non-finite floats (not JSON) print `null`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) if x.is_finite() => f.write_str(&crate::num::debug_f64(x)),
            Number::Float(_) => f.write_str("null"),
        }
    }
}

/// An ordered JSON object: `(key, value)` pairs in document order, keys unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object {
    entries: Vec<(String, Value)>,
}

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }
    /// The value of `key` (exact match).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The value of `key` compared ASCII-case-insensitively, as .NET configuration keys are.
    pub fn get_ignore_case(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }
    /// Sets `key`, replacing an existing value in place or appending.
    pub fn insert(&mut self, key: String, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }
    /// Entries in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// True if there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromIterator<(String, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut o = Object::new();
        for (k, v) in iter {
            o.insert(k, v);
        }
        o
    }
}

/// Typed views: each returns `None` when the value is of another kind.
impl Value {
    /// The text of a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// Any number as an `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(n.as_f64()),
            _ => None,
        }
    }
    /// An integer that fits in an `i64` (not a float, even a whole one).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(Number::Int(i)) => Some(*i),
            _ => None,
        }
    }
    /// A non-negative integer (`400207`), not `4e5`, `-1` or an integer beyond `i64::MAX` (read as a float).
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i64().and_then(|i| u64::try_from(i).ok())
    }
    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The items of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// The entries of an object.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }
    /// `self[key]` for an object, `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(key))
    }
}

impl fmt::Display for Value {
    /// Compact JSON, same as [`to_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Value::Number(n) => n.fmt(f),
            Value::String(s) => write_escaped(f, s),
            Value::Array(a) => {
                f.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    v.fmt(f)?;
                }
                f.write_char(']')
            }
            Value::Object(o) => {
                f.write_char('{')?;
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_escaped(f, k)?;
                    f.write_char(':')?;
                    v.fmt(f)?;
                }
                f.write_char('}')
            }
        }
    }
}

/// Compact JSON text of `value`: no whitespace, keys in order, strings escaped per RFC 8259 §7.
pub fn to_string(value: &Value) -> String {
    value.to_string()
}

/// JSON text of `value` indented by two spaces per level, as JavaScript's `JSON.stringify(value, null, 2)`
/// writes it (`{}` and `[]` when empty, `"key": value`, one member or item per line).
pub fn to_string_pretty(value: &Value) -> String {
    let mut out = String::new();
    pretty(&mut out, value, 0);
    out
}

fn pretty(out: &mut String, value: &Value, depth: usize) {
    let (open, close, items): (char, char, Vec<(Option<&str>, &Value)>) = match value {
        Value::Array(a) if !a.is_empty() => ('[', ']', a.iter().map(|v| (None, v)).collect()),
        Value::Object(o) if !o.is_empty() => ('{', '}', o.iter().map(|(k, v)| (Some(k), v)).collect()),
        other => {
            let _ = write!(out, "{other}");
            return;
        }
    };
    out.push(open);
    for (i, (key, v)) in items.into_iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        out.push_str(&"  ".repeat(depth + 1));
        if let Some(k) = key {
            let _ = escape(out, k);
            out.push_str(": ");
        }
        pretty(out, v, depth + 1);
    }
    out.push('\n');
    out.push_str(&"  ".repeat(depth));
    out.push(close);
}

/// Applies `patch` to `target` as a JSON merge patch (RFC 7396), as IoT Hub applies a twin patch ("Device twins",
/// Back-end operations): members of an object patch are merged recursively into an object target, `null` removes
/// the member, any other value replaces it; a patch that is not an object replaces the whole target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !matches!(target, Value::Object(_)) {
        *target = Value::Object(Object::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p.iter() {
        // Members keep their place; new ones go last.
        match t.entries.iter().position(|(key, _)| key == k) {
            Some(i) if v.is_null() => {
                t.entries.remove(i);
            }
            Some(i) => merge_patch(&mut t.entries[i].1, v),
            None if v.is_null() => {}
            None => {
                let mut slot = Value::Null;
                merge_patch(&mut slot, v);
                t.entries.push((k.to_owned(), slot));
            }
        }
    }
}

/// Writes `s` as a quoted JSON string.
pub fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    escape(out, s)
}

/// [`write_escaped`]'s one body for every writer (a formatter, a `String`).
fn escape(out: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{8}' => out.write_str("\\b")?,
            '\u{c}' => out.write_str("\\f")?,
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.write_str("\\u00")?;
                out.write_char(HEX[(c as usize) >> 4] as char)?;
                out.write_char(HEX[(c as usize) & 15] as char)?;
            }
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Builds a JSON object member by member, in the order written, without building a [`Value`] tree.
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
        // Writing to a String cannot fail.
        let _ = write_escaped(&mut self.out, name);
        self.out.push(':');
    }
    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        let _ = write_escaped(&mut self.out, value);
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
        let _ = write!(self.out, "{value}");
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

/// What went wrong, without the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonErrorKind {
    #[error("unexpected end of input")]
    UnexpectedEnd,
    #[error("unexpected character {}", crate::quote::quote_char(*.0))]
    UnexpectedChar(char),
    #[error("unexpected text after the JSON value")]
    TrailingText,
    #[error("expected ':' after a property name")]
    ExpectedColon,
    #[error("expected ',' or '{0}'")]
    ExpectedCommaOr(char),
    #[error("expected a property name in double quotes")]
    ExpectedKey,
    #[error("string not closed before the end of the input")]
    UnterminatedString,
    #[error("control character U+{0:04X} must be escaped in a string")]
    ControlChar(u32),
    #[error("invalid escape sequence")]
    InvalidEscape,
    #[error("invalid \\u escape (expected 4 hex digits forming a valid character)")]
    InvalidUnicodeEscape,
    #[error("invalid number")]
    InvalidNumber,
    /// A number whose magnitude is beyond an `f64` (as serde_json refuses it: it would become infinity, which
    /// JSON cannot write back).
    #[error("number out of range (beyond ±1.8e308)")]
    NumberOutOfRange,
    #[error("comments are not allowed in strict JSON")]
    Comment,
    #[error("comment not closed before the end of the input")]
    UnterminatedComment,
    #[error("single-quoted strings are not allowed in strict JSON")]
    SingleQuote,
    #[error("property names must be in double quotes in strict JSON")]
    UnquotedKey,
    #[error("trailing comma is not allowed in strict JSON")]
    TrailingComma,
    #[error("nesting deeper than 128 levels")]
    TooDeep,
    /// Only from byte-level checks (hubsim-template's `check_json` of a rendered body).
    #[error("not valid UTF-8")]
    InvalidUtf8,
}

/// A parse error: 1-based line and column (in characters) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, col {col}: {kind}")]
pub struct JsonError {
    pub line: usize,
    pub col: usize,
    pub kind: JsonErrorKind,
}

/// Parses strict RFC 8259 JSON (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Value, JsonError> {
    Parser::new(text, false).run()
}

/// Parses relaxed JSON as found in Iot-Telemetry-Simulator configurations (see the module docs).
pub fn parse_relaxed(text: &str) -> Result<Value, JsonError> {
    Parser::new(text, true).run()
}

/// 1-based (line, column) of byte offset `at` in `text`, columns counted in characters.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    relaxed: bool,
    depth: usize,
}

type R<T> = Result<T, (usize, JsonErrorKind)>;

impl<'a> Parser<'a> {
    fn new(text: &'a str, relaxed: bool) -> Self {
        Parser { text, b: text.as_bytes(), i: 0, relaxed, depth: 0 }
    }

    fn run(mut self) -> Result<Value, JsonError> {
        if self.relaxed && self.text.starts_with('\u{feff}') {
            self.i = 3;
        }
        let r = self.value().and_then(|v| {
            self.ws()?;
            if self.i < self.b.len() {
                Err((self.i, JsonErrorKind::TrailingText))
            } else {
                Ok(v)
            }
        });
        r.map_err(|(at, kind)| {
            let (line, col) = line_col(self.text, at);
            JsonError { line, col, kind }
        })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn unexpected(&self) -> (usize, JsonErrorKind) {
        match self.text[self.i..].chars().next() {
            Some(c) => (self.i, JsonErrorKind::UnexpectedChar(c)),
            None => (self.i, JsonErrorKind::UnexpectedEnd),
        }
    }

    /// Skips whitespace and, in relaxed mode, comments.
    fn ws(&mut self) -> R<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.i += 1,
                Some(b'/') if self.b.get(self.i + 1) == Some(&b'/') => {
                    if !self.relaxed {
                        return Err((self.i, JsonErrorKind::Comment));
                    }
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.i += 1;
                    }
                }
                Some(b'/') if self.b.get(self.i + 1) == Some(&b'*') => {
                    if !self.relaxed {
                        return Err((self.i, JsonErrorKind::Comment));
                    }
                    let start = self.i;
                    match self.text[self.i + 2..].find("*/") {
                        Some(end) => self.i += 2 + end + 2,
                        None => return Err((start, JsonErrorKind::UnterminatedComment)),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self) -> R<Value> {
        self.ws()?;
        match self.peek() {
            None => Err((self.i, JsonErrorKind::UnexpectedEnd)),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => self.string(b'"').map(Value::String),
            Some(b'\'') if self.relaxed => self.string(b'\'').map(Value::String),
            Some(b'\'') => Err((self.i, JsonErrorKind::SingleQuote)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => {
                for (word, v) in [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)] {
                    if self.text[self.i..].starts_with(word) {
                        self.i += word.len();
                        return Ok(v);
                    }
                }
                Err(self.unexpected())
            }
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> R<Value>) -> R<Value> {
        if self.depth == MAX_DEPTH {
            return Err((self.i, JsonErrorKind::TooDeep));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    /// After a ',' at `comma`: true if the container closes here (a trailing comma).
    fn trailing_comma(&mut self, close: u8, comma: usize) -> R<bool> {
        self.ws()?;
        if self.peek() == Some(close) {
            if !self.relaxed {
                return Err((comma, JsonErrorKind::TrailingComma));
            }
            self.i += 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn array(&mut self) -> R<Value> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws()?;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.ws()?;
            match self.peek() {
                Some(b',') => {
                    let comma = self.i;
                    self.i += 1;
                    if self.trailing_comma(b']', comma)? {
                        return Ok(Value::Array(items));
                    }
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err((self.i, JsonErrorKind::UnexpectedEnd)),
                Some(_) => return Err((self.i, JsonErrorKind::ExpectedCommaOr(']'))),
            }
        }
    }

    fn object(&mut self) -> R<Value> {
        self.i += 1;
        let mut obj = Object::new();
        self.ws()?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Object(obj));
        }
        loop {
            self.ws()?;
            let key = self.key()?;
            self.ws()?;
            if self.peek() != Some(b':') {
                return Err((self.i, JsonErrorKind::ExpectedColon));
            }
            self.i += 1;
            let v = self.value()?;
            obj.insert(key, v);
            self.ws()?;
            match self.peek() {
                Some(b',') => {
                    let comma = self.i;
                    self.i += 1;
                    if self.trailing_comma(b'}', comma)? {
                        return Ok(Value::Object(obj));
                    }
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(obj));
                }
                None => return Err((self.i, JsonErrorKind::UnexpectedEnd)),
                Some(_) => return Err((self.i, JsonErrorKind::ExpectedCommaOr('}'))),
            }
        }
    }

    fn key(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"') => self.string(b'"'),
            Some(b'\'') if self.relaxed => self.string(b'\''),
            Some(b'\'') => Err((self.i, JsonErrorKind::SingleQuote)),
            None => Err((self.i, JsonErrorKind::UnexpectedEnd)),
            Some(_) => {
                // Newtonsoft's unquoted property names: letters, digits, '_' and '$'. Any non-ASCII
                // character counts as a letter here: Unicode's tables would cost ~3 KB of wasm.
                let start = self.i;
                let len: usize = self.text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || !c.is_ascii() || *c == '_' || *c == '$')
                    .map(char::len_utf8)
                    .sum();
                if len == 0 {
                    return Err((start, JsonErrorKind::ExpectedKey));
                }
                if !self.relaxed {
                    return Err((start, JsonErrorKind::UnquotedKey));
                }
                self.i += len;
                Ok(self.text[start..self.i].to_owned())
            }
        }
    }

    fn string(&mut self, quote: u8) -> R<String> {
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        loop {
            // Copy the run of plain bytes up to the next quote, backslash or control character.
            let run = self.b[self.i..]
                .iter()
                .position(|&c| c == quote || c == b'\\' || c < 0x20)
                .ok_or((start, JsonErrorKind::UnterminatedString))?;
            out.push_str(&self.text[self.i..self.i + run]);
            self.i += run;
            match self.b[self.i] {
                c if c == quote => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    let esc = self.i;
                    self.i += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'\'') if self.relaxed => '\'',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let c = self.unicode_escape().ok_or((esc, JsonErrorKind::InvalidUnicodeEscape))?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err((esc, JsonErrorKind::InvalidEscape)),
                    };
                    self.i += 1;
                    out.push(c);
                }
                c => return Err((self.i, JsonErrorKind::ControlChar(c as u32))),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let s = self.text.get(self.i..self.i + 4)?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(s, 16).ok()
    }

    /// After `\u`: one escape, or a surrogate pair of two.
    fn unicode_escape(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) {
            if self.text.get(self.i..self.i + 2)? != "\\u" {
                return None;
            }
            self.i += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return None;
            }
            return char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
        }
        char::from_u32(hi)
    }

    fn number(&mut self) -> R<Value> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let n = p.b[p.i..].iter().take_while(|c| c.is_ascii_digit()).count();
            p.i += n;
            n
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        let n = digits(self);
        if n == 0 || (n > 1 && self.b[int_start] == b'0') {
            return Err((start, JsonErrorKind::InvalidNumber));
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            if digits(self) == 0 {
                return Err((start, JsonErrorKind::InvalidNumber));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            float = true;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err((start, JsonErrorKind::InvalidNumber));
            }
        }
        let s = &self.text[start..self.i];
        if !float {
            if let Ok(i) = s.parse::<i64>() {
                return Ok(Value::Number(Number::Int(i)));
            }
        }
        match crate::num::parse_f64(s) {
            Some(f) if f.is_finite() => Ok(Value::Number(Number::Float(f))),
            Some(_) => Err((start, JsonErrorKind::NumberOutOfRange)),
            None => Err((start, JsonErrorKind::InvalidNumber)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_is_rfc_7396() {
        // RFC 7396 §3's example.
        let mut doc = parse(r#"{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}"#).unwrap();
        let patch =
            parse(r#"{"title":"Hello!","phoneNumber":"+01-555-1234","author":{"familyName":null},"tags":["example"]}"#)
                .unwrap();
        merge_patch(&mut doc, &patch);
        assert_eq!(
            doc.to_string(),
            r#"{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-555-1234"}"#
        );
        // A new object loses its nulls; a scalar target becomes an object; a non-object patch replaces.
        let mut doc = parse(r#"{"a":1}"#).unwrap();
        merge_patch(&mut doc, &parse(r#"{"a":{"b":null,"c":2},"gone":null}"#).unwrap());
        assert_eq!(doc.to_string(), r#"{"a":{"c":2}}"#);
        merge_patch(&mut doc, &parse("[1]").unwrap());
        assert_eq!(doc.to_string(), "[1]");
    }

    #[test]
    fn pretty_text_is_what_json_stringify_with_two_spaces_writes() {
        let v = parse(r#"{"a":1,"b":{"c":[1,"x",{}],"d":[]},"e":{},"f\"":null,"g":21.5}"#).unwrap();
        let want = "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": [\n      1,\n      \"x\",\n      {}\n    ],\n    \"d\": []\n  },\n  \"e\": {},\n  \"f\\\"\": null,\n  \"g\": 21.5\n}";
        assert_eq!(to_string_pretty(&v), want);
        assert_eq!(to_string_pretty(&parse("3").unwrap()), "3");
    }
    use proptest::prelude::*;

    fn err(text: &str, relaxed: bool) -> String {
        let r = if relaxed { parse_relaxed(text) } else { parse(text) };
        r.unwrap_err().to_string()
    }

    #[test]
    fn parses_every_kind_and_keeps_key_order() {
        let v = parse(r#" {"b": [1, -2.5, 3e2, true, false, null], "a": "x\ty\u00e9\ud83d\ude00", "c": {}} "#).unwrap();
        let o = v.as_object().unwrap();
        let keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a", "c"]);
        assert_eq!(
            v.get("b").unwrap(),
            &Value::Array(vec![
                Value::Number(Number::Int(1)),
                Value::Number(Number::Float(-2.5)),
                Value::Number(Number::Float(300.0)),
                Value::Bool(true),
                Value::Bool(false),
                Value::Null,
            ])
        );
        assert_eq!(v.get("a").unwrap().as_str(), Some("x\tyé😀"));
        let b = v.get("b").unwrap().as_array().unwrap();
        assert_eq!(
            (b[0].as_i64(), b[1].as_i64(), b[1].as_f64(), b[3].as_bool()),
            (Some(1), None, Some(-2.5), Some(true))
        );
        assert_eq!(v.get("c").unwrap().as_object().map(Object::len), Some(0));
        assert_eq!(to_string(&v), r#"{"b":[1,-2.5,300.0,true,false,null],"a":"x\tyé😀","c":{}}"#);
    }

    #[test]
    fn big_integers_become_floats() {
        assert_eq!(parse("9223372036854775807").unwrap(), Value::Number(Number::Int(i64::MAX)));
        assert_eq!(parse("9223372036854775808").unwrap(), Value::Number(Number::Float(9.223372036854776e18)));
    }

    #[test]
    fn repeated_key_replaces_in_place() {
        assert_eq!(to_string(&parse(r#"{"a":1,"b":2,"a":3}"#).unwrap()), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn serializer_escapes_controls_quotes_and_backslashes() {
        let v = Value::String("a\"b\\c\n\u{1}/".into());
        assert_eq!(to_string(&v), r#""a\"b\\c\n\u0001/""#);
        assert_eq!(parse(&to_string(&v)).unwrap(), v);
    }

    #[test]
    fn relaxed_accepts_what_its_configs_use() {
        let text = "\u{feff}{\n  // devices\n  Variables: [{name: 'Temp', random: true, min: 23, max: 33,},],\n  /* block */ \"x\": 'it\\'s'\n}";
        let v = parse_relaxed(text).unwrap();
        assert_eq!(to_string(&v), r#"{"Variables":[{"name":"Temp","random":true,"min":23,"max":33}],"x":"it's"}"#);
    }

    #[test]
    fn strict_rejects_relaxed_features_with_positions() {
        assert_eq!(err("{a: 1}", false), "line 1, col 2: property names must be in double quotes in strict JSON");
        assert_eq!(err("['x']", false), "line 1, col 2: single-quoted strings are not allowed in strict JSON");
        assert_eq!(err("[1,\n 2,\n]", false), "line 2, col 3: trailing comma is not allowed in strict JSON");
        assert_eq!(err("// c\n1", false), "line 1, col 1: comments are not allowed in strict JSON");
        assert_eq!(err("\u{feff}1", false), "line 1, col 1: unexpected character '\\u{feff}'");
    }

    #[test]
    fn errors_name_line_column_and_problem() {
        assert_eq!(err("{\n  \"a\": 1,\n  \"b\" 2\n}", false), "line 3, col 7: expected ':' after a property name");
        assert_eq!(err("[1 2]", false), "line 1, col 4: expected ',' or ']'");
        assert_eq!(err("{\"a\":1 \"b\":2}", false), "line 1, col 8: expected ',' or '}'");
        assert_eq!(err("\"é\\x\"", false), "line 1, col 3: invalid escape sequence");
        assert_eq!(err("\"abc", false), "line 1, col 1: string not closed before the end of the input");
        assert_eq!(err("\"a\nb\"", false), "line 1, col 3: control character U+000A must be escaped in a string");
        assert_eq!(err("01", false), "line 1, col 1: invalid number");
        assert_eq!(err("1.", false), "line 1, col 1: invalid number");
        assert_eq!(err("-", false), "line 1, col 1: invalid number");
        assert_eq!(err("[1,", false), "line 1, col 4: unexpected end of input");
        assert_eq!(err("tru", false), "line 1, col 1: unexpected character 't'");
        assert_eq!(err("{} x", false), "line 1, col 4: unexpected text after the JSON value");
        assert_eq!(
            err("\"\\ud800\"", false),
            "line 1, col 2: invalid \\u escape (expected 4 hex digits forming a valid character)"
        );
        assert_eq!(err("/* open", true), "line 1, col 1: comment not closed before the end of the input");
        assert_eq!(err("{:1}", true), "line 1, col 2: expected a property name in double quotes");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000);
        assert_eq!(err(&deep, false), "line 1, col 129: nesting deeper than 128 levels");
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn number_display_round_trips() {
        for (n, s) in [
            (Number::Int(-7), "-7"),
            (Number::Float(1.0), "1.0"),
            (Number::Float(0.1), "0.1"),
            (Number::Float(1e300), "1e300"),
            (Number::Float(f64::NAN), "null"),
        ] {
            assert_eq!(n.to_string(), s);
        }
    }

    #[test]
    fn reads_a_dps_response_and_re_serializes_the_payload_canonically() {
        let text = r#" {"operationId":"4.d0a6","status":"assigned","registrationState":{"errorCode":400207,
            "payload":{"a":[1,2.5e3,-0.1,true,false,null],"s":"x\"y\\\u00e9\ud83d\ude00"}}} "#;
        let v = parse(text).unwrap();
        assert_eq!(v.get("operationId").and_then(Value::as_str), Some("4.d0a6"));
        let state = v.get("registrationState").unwrap();
        assert_eq!(state.get("errorCode").and_then(Value::as_u64), Some(400207));
        let payload = state.get("payload").unwrap();
        assert_eq!(payload.get("s").and_then(Value::as_str), Some("x\"y\\é😀"));
        // Passed on in compact form; writing it again changes nothing.
        let compact = payload.to_string();
        assert_eq!(compact, r#"{"a":[1,2500.0,-0.1,true,false,null],"s":"x\"y\\é😀"}"#);
        assert_eq!(parse(&compact).unwrap().to_string(), compact);
    }

    #[test]
    fn as_u64_takes_only_non_negative_integers() {
        let n = |t: &str| parse(t).unwrap().as_u64();
        assert_eq!((n("0"), n("400207"), n("-1"), n("4e5"), n("\"1\"")), (Some(0), Some(400207), None, None, None));
        assert!(parse("null").unwrap().is_null() && !parse("0").unwrap().is_null());
    }

    #[test]
    fn refuses_what_rfc_8259_refuses() {
        use JsonErrorKind::*;
        for (bad, col, kind) in [
            ("", 1, UnexpectedEnd),
            ("{\"a\":1,}", 7, TrailingComma),
            ("[1 2]", 4, ExpectedCommaOr(']')),
            ("01", 1, InvalidNumber),
            ("1.", 1, InvalidNumber),
            ("1e309", 1, NumberOutOfRange),
            ("-2e308", 1, NumberOutOfRange),
            ("\"a\nb\"", 3, ControlChar(0x0A)),
            ("\"\\ud800\"", 2, InvalidUnicodeEscape),
            ("\"\\udc00\"", 2, InvalidUnicodeEscape),
            ("\"\\x\"", 2, InvalidEscape),
            ("\"abc", 1, UnterminatedString),
            ("tru", 1, UnexpectedChar('t')),
            ("{} x", 4, TrailingText),
        ] {
            assert_eq!(parse(bad), Err(JsonError { line: 1, col, kind }), "{bad:?}");
        }
    }

    #[test]
    fn object_writer_escapes_and_embeds_checked_json() {
        let mut quoted = String::new();
        write_escaped(&mut quoted, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(quoted, r#""a\"b\\c\nd\u0001é""#);
        let body = ObjectWriter::new().string("k", "v").number("n", 7).raw("p", "{}").opt_string("x", None).finish();
        assert_eq!(body, r#"{"k":"v","n":7,"p":{}}"#);
    }

    proptest! {
        #[test]
        fn strings_round_trip(s in any::<String>()) {
            let text = to_string(&Value::String(s.clone()));
            prop_assert_eq!(parse(&text).unwrap(), Value::String(s));
        }

        // Integers beyond i64::MAX read back as floats (see `big_integers_become_floats`), so the range stops there.
        #[test]
        fn written_objects_round_trip(
            members in proptest::collection::vec((any::<String>(), any::<String>(), 0..=i64::MAX as u64), 0..6),
        ) {
            // A repeated name replaces the earlier member, so every name here is distinct.
            let members: Vec<_> = members.into_iter().enumerate().map(|(i, (k, v, n))| (format!("{i}:{k}"), v, n)).collect();
            let mut w = ObjectWriter::new();
            for (k, v, n) in &members {
                w.string(k, v).number(&format!("{k}#n"), *n);
            }
            let text = w.finish();
            let v = parse(&text).unwrap();
            let read: Vec<(&str, &Value)> = v.as_object().unwrap().iter().collect();
            prop_assert_eq!(read.len(), members.len() * 2);
            for ((k, val, n), pair) in members.iter().zip(read.chunks(2)) {
                prop_assert_eq!(pair[0].0, k.as_str());
                prop_assert_eq!(pair[0].1.as_str(), Some(val.as_str()));
                prop_assert_eq!(pair[1].1.as_u64(), Some(*n));
            }
        }

        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse(&s);
            let _ = parse_relaxed(&s);
        }

        #[test]
        fn never_panics_on_json_like_text(s in "[\\[\\]{}\":,0-9eE.+\\-tfnrul\\\\ a-z'/*]{0,40}") {
            let _ = parse(&s);
            let _ = parse_relaxed(&s);
        }
    }
}
