//! The subset of IoT Hub's query language ("IoT Hub query language for device and module twins") that backends
//! use from the service SDKs' `createQuery` / `query_iot_hub`:
//!
//! ```text
//! SELECT * FROM devices [WHERE cond]
//! SELECT COUNT() [AS alias] FROM devices [WHERE cond]
//! cond := cond OR cond | cond AND cond | NOT cond | ( cond ) | path op literal
//! op   := = | != | <> | < | > | <= | >=
//! path := deviceId | status | connectionState | modelId | tags.a.b | properties.desired.a | properties.reported.a | …
//! ```
//!
//! A path is looked up in the twin document as the service shows it; a missing property makes the comparison
//! undefined, which (as in IoT Hub) selects nothing, also under `NOT`. Everything else (a projection, `TOP`,
//! `GROUP BY`, `ORDER BY`, functions, `FROM devices.modules`, …) is refused with an error naming the clause.

use serde_json::Value;
use std::borrow::Cow;
use std::convert::Infallible;
use thiserror::Error;

/// Why a query was refused (the service answers 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    #[error("the query language clause {0} is not supported by hubsim (supported: SELECT * or SELECT COUNT() [AS n] FROM devices [WHERE comparisons joined by AND, OR, NOT and parentheses])")]
    Unsupported(String),
    #[error("query syntax error at character {at}: {what}")]
    Syntax { at: usize, what: String },
    #[error("the query is too complex: {0}")]
    TooComplex(String),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub select: Select,
    pub filter: Option<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    All,
    /// `COUNT()`, with its alias (IoT Hub names it `$1` without one).
    Count(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(Vec<String>, Op, Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Op(Op),
    Star,
    LParen,
    RParen,
    Comma,
}

fn lex(q: &str) -> Result<Vec<(usize, Tok)>, QueryError> {
    let b: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = i;
        let syntax = |what: &str| QueryError::Syntax { at: at + 1, what: what.into() };
        match c {
            c if c.is_whitespace() => i += 1,
            '*' => {
                out.push((at, Tok::Star));
                i += 1
            }
            '(' => {
                out.push((at, Tok::LParen));
                i += 1
            }
            ')' => {
                out.push((at, Tok::RParen));
                i += 1
            }
            ',' => {
                out.push((at, Tok::Comma));
                i += 1
            }
            '=' => {
                out.push((at, Tok::Op(Op::Eq)));
                i += 1
            }
            '!' if b.get(i + 1) == Some(&'=') => {
                out.push((at, Tok::Op(Op::Ne)));
                i += 2
            }
            '<' | '>' => {
                let next = b.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    _ => (Op::Gt, 1),
                };
                out.push((at, Tok::Op(op)));
                i += len
            }
            '\'' | '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(syntax("unterminated string")),
                        // A doubled quote is a quote inside the string.
                        Some(&q) if q == c && b.get(i + 1) == Some(&c) => {
                            s.push(c);
                            i += 2
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1
                        }
                    }
                }
                out.push((at, Tok::Str(s)))
            }
            c if c.is_ascii_digit() || (c == '-' && b.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                let start = i;
                i += 1;
                while b.get(i).is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) {
                    i += 1;
                }
                let text: String = b[start..i].iter().collect();
                let n: f64 = text.parse().map_err(|_| syntax(&format!("'{}' is not a number", truncated(&text))))?;
                // A literal past f64's range parses as ±infinity, which JSON cannot hold: it would compare as
                // nothing and select nothing without a word. Refused, like IoT Hub's numbers out of range.
                if !n.is_finite() {
                    return Err(syntax(&format!(
                        "the number {} is out of range (numbers are 64-bit floating point, at most about 1.8e308)",
                        truncated(&text)
                    )));
                }
                out.push((at, Tok::Num(n)))
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '$' | '[' | ']') => {
                let start = i;
                while b.get(i).is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '.' | '-' | '[' | ']')) {
                    i += 1;
                }
                out.push((at, Tok::Word(b[start..i].iter().collect())))
            }
            _ => return Err(syntax(&format!("unexpected '{c}'"))),
        }
    }
    Ok(out)
}

/// A literal as an error message quotes it: at most 64 bytes of it.
fn truncated(text: &str) -> String {
    crate::hub::truncate(text, 64)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
    /// Open parentheses and NOTs around the current position.
    depth: usize,
    /// Comparisons parsed so far.
    conditions: usize,
}

/// Deepest nesting of parentheses and NOT in a WHERE clause. The condition tree is evaluated and dropped
/// recursively, so a peer-chosen depth must be bounded (a 700-deep query once overflowed the stack).
pub const MAX_NESTING: usize = 32;
/// Most comparisons in a WHERE clause (a flat chain of AND/OR is a tree as deep as it is long).
pub const MAX_CONDITIONS: usize = 100;

const CLAUSES: &[&str] =
    &["TOP", "GROUP", "ORDER", "JOIN", "DISTINCT", "LIMIT", "OFFSET", "HAVING", "IN", "NIN", "LIKE"];

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(a, _)| *a) + 1
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }
    fn syntax(&self, what: impl Into<String>) -> QueryError {
        QueryError::Syntax { at: self.at(), what: what.into() }
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }
    fn expect_keyword(&mut self, k: &str) -> Result<(), QueryError> {
        if self.keyword(k) {
            self.pos += 1;
            return Ok(());
        }
        if let Some(Tok::Word(w)) = self.peek() {
            if let Some(c) = CLAUSES.iter().find(|c| w.eq_ignore_ascii_case(c)) {
                return Err(QueryError::Unsupported((*c).to_owned()));
            }
        }
        Err(self.syntax(format!("expected {k}")))
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_keyword("SELECT")?;
        let select = match self.next() {
            Some(Tok::Star) => Select::All,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("COUNT") => {
                if self.next() != Some(Tok::LParen) || self.next() != Some(Tok::RParen) {
                    return Err(self.syntax("expected COUNT()"));
                }
                if self.keyword("AS") {
                    self.pos += 1;
                    match self.next() {
                        Some(Tok::Word(alias)) => Select::Count(alias),
                        _ => return Err(self.syntax("expected a name after AS")),
                    }
                } else {
                    Select::Count("$1".into())
                }
            }
            Some(Tok::Word(w)) if CLAUSES.iter().any(|c| w.eq_ignore_ascii_case(c)) => {
                return Err(QueryError::Unsupported(w.to_ascii_uppercase()))
            }
            Some(Tok::Word(w)) => {
                return Err(QueryError::Unsupported(format!("SELECT {w} (a projection; use SELECT *)")))
            }
            _ => return Err(self.syntax("expected * or COUNT() after SELECT")),
        };
        self.expect_keyword("FROM")?;
        match self.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("devices") => {}
            Some(Tok::Word(w)) => return Err(QueryError::Unsupported(format!("FROM {w} (only FROM devices)"))),
            _ => return Err(self.syntax("expected devices after FROM")),
        }
        let filter = if self.keyword("WHERE") {
            self.pos += 1;
            Some(self.or()?)
        } else {
            None
        };
        match self.peek() {
            None => Ok(Query { select, filter }),
            Some(Tok::Word(w)) => match CLAUSES.iter().find(|c| w.eq_ignore_ascii_case(c)) {
                Some(c) => Err(QueryError::Unsupported((*c).to_owned())),
                None => Err(self.syntax(format!("unexpected '{w}'"))),
            },
            Some(_) => Err(self.syntax("unexpected text after the query")),
        }
    }

    fn or(&mut self) -> Result<Cond, QueryError> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            self.pos += 1;
            left = Cond::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, QueryError> {
        let mut left = self.unary()?;
        while self.keyword("AND") {
            self.pos += 1;
            left = Cond::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn nest(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(QueryError::TooComplex(format!("parentheses and NOT nest deeper than {MAX_NESTING}")));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Cond, QueryError> {
        if self.keyword("NOT") {
            self.pos += 1;
            self.nest()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            self.nest()?;
            let c = self.or()?;
            if self.next() != Some(Tok::RParen) {
                return Err(self.syntax("expected )"));
            }
            self.depth -= 1;
            return Ok(c);
        }
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(QueryError::TooComplex(format!("more than {MAX_CONDITIONS} comparisons")));
        }
        let path = match self.next() {
            Some(Tok::Word(w)) => w,
            _ => return Err(self.syntax("expected a property path")),
        };
        if self.peek() == Some(&Tok::LParen) {
            return Err(QueryError::Unsupported(format!("the function {}()", path.to_ascii_uppercase())));
        }
        if path.contains('[') {
            return Err(QueryError::Unsupported(format!("array indexing ({path})")));
        }
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            Some(Tok::Word(w)) if CLAUSES.iter().any(|c| w.eq_ignore_ascii_case(c)) => {
                return Err(QueryError::Unsupported(w.to_ascii_uppercase()))
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("IS") => {
                return Err(QueryError::Unsupported("IS (use IS_DEFINED-free comparisons)".into()))
            }
            _ => return Err(self.syntax(format!("expected a comparison after {path}"))),
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Value::String(s),
            // Finite by the lexer: never the `null` a non-finite number would become.
            Some(Tok::Num(n)) => match serde_json::Number::from_f64(n) {
                Some(n) => Value::Number(n),
                None => return Err(self.syntax("a number out of range")),
            },
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Value::Null,
            Some(Tok::Word(w)) => {
                return Err(QueryError::Unsupported(format!("comparing two properties ({path} with {w})")))
            }
            _ => return Err(self.syntax("expected a string, number, true, false or null")),
        };
        Ok(Cond::Cmp(path.split('.').map(str::to_owned).collect(), op, value))
    }
}

/// Parses a query of the supported subset.
pub fn parse(q: &str) -> Result<Query, QueryError> {
    let toks = lex(q)?;
    let len = q.chars().count();
    Parser { toks, pos: 0, len, depth: 0, conditions: 0 }.query()
}

/// Where a WHERE clause reads its values: a twin document, or something that finds a twin's values without
/// building the document (the emulator's registry scan, `api::iothub::twin_field`).
pub trait Document {
    type Error;
    /// The value at `path`, its first name matched without case (`deviceid`, `ConnectionState`, as IoT Hub
    /// matches them) and the others exactly; `None` when there is none.
    fn value(&self, path: &[String]) -> Result<Option<Cow<'_, Value>>, Self::Error>;
}

impl Document for Value {
    type Error = Infallible;
    fn value(&self, path: &[String]) -> Result<Option<Cow<'_, Value>>, Infallible> {
        let mut v = self;
        for (i, seg) in path.iter().enumerate() {
            let next = match v {
                Value::Object(m) if i == 0 => {
                    m.get(seg).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg)).map(|(_, v)| v))
                }
                Value::Object(m) => m.get(seg),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => return Ok(None),
            }
        }
        Ok(Some(Cow::Borrowed(v)))
    }
}

impl Cond {
    /// Three-valued evaluation on a twin document: `None` is undefined (a missing property).
    pub fn eval(&self, twin: &Value) -> Option<bool> {
        match self.eval_in(twin) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// Three-valued evaluation on `doc`: `None` is undefined (a missing property). `AND` and `OR` look at their
    /// right side only when the left one does not decide (the result is the same: evaluation has no effects), so
    /// `deviceId = 'x' AND tags.a = 1` reads no twin for the other devices.
    pub fn eval_in<D: Document + ?Sized>(&self, doc: &D) -> Result<Option<bool>, D::Error> {
        Ok(match self {
            Cond::And(a, b) => match a.eval_in(doc)? {
                Some(false) => Some(false),
                left => match (left, b.eval_in(doc)?) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
            },
            Cond::Or(a, b) => match a.eval_in(doc)? {
                Some(true) => Some(true),
                left => match (left, b.eval_in(doc)?) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            },
            Cond::Not(a) => a.eval_in(doc)?.map(|v| !v),
            Cond::Cmp(path, op, lit) => match doc.value(path)? {
                Some(v) => compare(&v, *op, lit),
                None => None,
            },
        })
    }
}

fn compare(v: &Value, op: Op, lit: &Value) -> Option<bool> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (v, lit) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        // Different types are never equal and never ordered.
        _ => None,
    };
    Some(match (op, ord) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => return None,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
    })
}

impl Query {
    /// Does the twin document pass the `WHERE` clause?
    pub fn selects(&self, twin: &Value) -> bool {
        self.filter.as_ref().is_none_or(|c| c.eval(twin) == Some(true))
    }

    /// Does `doc` pass the `WHERE` clause? Reads only the values the clause needs.
    pub fn selects_in<D: Document + ?Sized>(&self, doc: &D) -> Result<bool, D::Error> {
        match &self.filter {
            None => Ok(true),
            Some(c) => Ok(c.eval_in(doc)? == Some(true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn twin() -> Value {
        json!({
            "deviceId": "d1", "status": "enabled", "connectionState": "Connected", "modelId": "dtmi:x;1",
            "tags": {"location": {"region": "US", "floor": 3}, "env": "prod"},
            "properties": {"desired": {"interval": 10}, "reported": {"fw": "1.2", "temp": 21.5, "ok": true}},
        })
    }

    fn sel(q: &str) -> bool {
        parse(q).unwrap_or_else(|e| panic!("{q}: {e}")).selects(&twin())
    }

    #[test]
    fn comparisons_and_logic_on_tags_and_properties() {
        assert!(sel("SELECT * FROM devices"));
        assert!(sel("SELECT * FROM devices WHERE tags.location.region = 'US'"));
        assert!(!sel("SELECT * FROM devices WHERE tags.location.region = 'EU'"));
        assert!(sel("select * from devices where tags.location.floor >= 3 and tags.location.floor < 4"));
        assert!(sel("SELECT * FROM devices WHERE properties.reported.temp > 20.0"));
        assert!(sel("SELECT * FROM devices WHERE properties.desired.interval <= 10"));
        assert!(sel("SELECT * FROM devices WHERE properties.reported.ok = true"));
        assert!(sel("SELECT * FROM devices WHERE deviceId = 'd1' AND connectionState = 'Connected'"));
        assert!(sel("SELECT * FROM devices WHERE status != 'disabled'"));
        assert!(sel("SELECT * FROM devices WHERE status <> 'disabled'"));
        assert!(sel("SELECT * FROM devices WHERE modelId = \"dtmi:x;1\""));
        assert!(sel("SELECT * FROM devices WHERE NOT (tags.env = 'dev' OR tags.env = 'test')"));
        assert!(sel(
            "SELECT * FROM devices WHERE tags.env = 'dev' OR (tags.env = 'prod' AND properties.reported.fw = '1.2')"
        ));
        assert!(!sel("SELECT * FROM devices WHERE tags.name = 'it''s'"));
    }

    #[test]
    fn a_missing_property_selects_nothing_even_under_not() {
        assert!(!sel("SELECT * FROM devices WHERE tags.missing = 'x'"));
        assert!(!sel("SELECT * FROM devices WHERE tags.missing != 'x'"));
        assert!(!sel("SELECT * FROM devices WHERE NOT tags.missing = 'x'"));
        assert!(sel("SELECT * FROM devices WHERE tags.missing = 'x' OR tags.env = 'prod'"));
        // Different types: never equal, never ordered.
        assert!(!sel("SELECT * FROM devices WHERE tags.location.floor = '3'"));
        assert!(!sel("SELECT * FROM devices WHERE tags.location.floor > 'a'"));
    }

    #[test]
    fn count_with_and_without_alias() {
        assert_eq!(parse("SELECT COUNT() AS n FROM devices").unwrap().select, Select::Count("n".into()));
        assert_eq!(
            parse("SELECT COUNT() FROM devices WHERE status = 'enabled'").unwrap().select,
            Select::Count("$1".into())
        );
    }

    #[test]
    fn unsupported_clauses_are_named() {
        let unsupported = |q: &str, what: &str| match parse(q) {
            Err(QueryError::Unsupported(c)) => assert!(c.contains(what), "{q}: {c}"),
            other => panic!("{q}: {other:?}"),
        };
        unsupported("SELECT * FROM devices GROUP BY tags.env", "GROUP");
        unsupported("SELECT * FROM devices WHERE status = 'enabled' ORDER BY deviceId", "ORDER");
        unsupported("SELECT TOP 5 * FROM devices", "TOP");
        unsupported("SELECT deviceId FROM devices", "projection");
        unsupported("SELECT deviceId, status FROM devices", "projection");
        unsupported("SELECT * FROM devices.modules", "FROM devices.modules");
        unsupported("SELECT * FROM devices.jobs", "FROM devices.jobs");
        unsupported("SELECT * FROM devices WHERE IS_DEFINED(tags.x)", "IS_DEFINED");
        unsupported("SELECT * FROM devices WHERE tags.x IN ['a']", "IN");
        unsupported("SELECT * FROM devices WHERE tags.a = tags.b", "comparing two properties");
    }

    #[test]
    fn syntax_errors_say_where() {
        for q in [
            "",
            "SELECT",
            "SELECT * FROM",
            "SELECT * FROM devices WHERE",
            "SELECT * FROM devices WHERE (a = 1",
            "SELECT * FROM devices WHERE a = 'x",
            "SELECT * FROM devices WHERE a # 1",
        ] {
            assert!(matches!(parse(q), Err(QueryError::Syntax { .. })), "{q}: {:?}", parse(q));
        }
    }

    #[test]
    fn numbers_out_of_range_are_refused_naming_the_literal() {
        for lit in ["1e999", "-1e999", "1.5E+400"] {
            let q = format!("SELECT * FROM devices WHERE tags.v < {lit}");
            match parse(&q) {
                Err(e @ QueryError::Syntax { .. }) => assert!(e.to_string().contains(lit), "{q}: {e}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(parse("SELECT * FROM devices WHERE tags.v < 1e308").is_ok());
        assert!(parse("SELECT * FROM devices WHERE tags.v > 1e-999").is_ok(), "an underflow is 0, not an error");
    }

    #[test]
    fn deep_or_long_conditions_are_refused_not_evaluated() {
        let deep = format!("SELECT * FROM devices WHERE {}a=1{}", "(".repeat(700), ")".repeat(700));
        assert!(matches!(parse(&deep), Err(QueryError::TooComplex(_))));
        let nots = format!("SELECT * FROM devices WHERE {}a=1", "NOT ".repeat(5000));
        assert!(matches!(parse(&nots), Err(QueryError::TooComplex(_))));
        let chain = format!("SELECT * FROM devices WHERE a=1{}", " AND a=1".repeat(5000));
        assert!(matches!(parse(&chain), Err(QueryError::TooComplex(_))));
        let ok = format!("SELECT * FROM devices WHERE {}a=1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(parse(&ok).is_ok());
        let ok = format!("SELECT * FROM devices WHERE a=1{}", " OR a=1".repeat(MAX_CONDITIONS - 1));
        assert!(parse(&ok).is_ok());
    }
}
