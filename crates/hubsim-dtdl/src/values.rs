//! Values of a schema: a default value for forms and initial properties, and validation of received values
//! (command requests, desired properties) with errors that name the field.
//!
//! Encodings, per the DTDL primitive schemas and the Plug and Play payloads doc ("Primitive types"): numbers
//! are JSON numbers (`integer` fits 4 bytes, `long` 8, `float` single precision); `date`, `dateTime` and
//! `time` are RFC 3339 strings (`full-date`, `date-time`, `partial-time`, with an optional offset for a
//! time); `duration` is an ISO 8601 duration string such as `PT10H24M6.5S`; an Enum is one of its values; an
//! Object is a JSON object of its fields (a field may be absent, as DTDL makes fields optional unless the
//! v4 Requirement extension says otherwise; unknown fields are refused); a Map is an object of values; an
//! Array a JSON array.

use crate::model::{EnumLiteral, Primitive, Schema};
use hubsim_proto::json::{Number, Object, Value};

/// A value that does not fit its schema: `path` names it (`since`, `tempReport.maxTemp`, `leds[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: expected {expected}, found {found}")]
pub struct ValueError {
    pub path: String,
    /// What the schema wants, e.g. `a dateTime (RFC 3339, like 2026-11-29T15:00:00Z)`.
    pub expected: String,
    /// What came, as compact JSON (cut at 60 characters) or `nothing` / `an unknown field`.
    pub found: String,
}

/// The value a form starts from and a property reports before anything else is known: `false`, `0`,
/// `0.0`, `""`, `2000-01-01`, `2000-01-01T00:00:00Z`, `00:00:00`, `PT0S`, an Enum's first value (`null` for
/// an empty v3 Enum), an Object with each field's default, an empty Map, an empty Array.
pub fn default_value(schema: &Schema) -> Value {
    match schema {
        Schema::Primitive(p) => match p {
            Primitive::Boolean => Value::Bool(false),
            Primitive::Date => Value::String("2000-01-01".into()),
            Primitive::DateTime => Value::String("2000-01-01T00:00:00Z".into()),
            Primitive::Double | Primitive::Float => Value::Number(Number::Float(0.0)),
            Primitive::Duration => Value::String("PT0S".into()),
            Primitive::Integer | Primitive::Long => Value::Number(Number::Int(0)),
            Primitive::String => Value::String(String::new()),
            Primitive::Time => Value::String("00:00:00".into()),
        },
        Schema::Enum(e) => e.values.first().map_or(Value::Null, |v| v.value.to_json()),
        Schema::Object(fields) => {
            let mut o = Object::new();
            for f in fields {
                o.insert(f.name.clone(), default_value(&f.schema));
            }
            Value::Object(o)
        }
        Schema::Map { .. } => Value::Object(Object::new()),
        Schema::Array(_) => Value::Array(Vec::new()),
    }
}

/// Checks `value` against `schema`; `path` names the value in the error.
pub fn validate(schema: &Schema, value: &Value, path: &str) -> Result<(), ValueError> {
    let fail = |expected: String| Err(ValueError { path: path.to_owned(), expected, found: show(value) });
    match schema {
        Schema::Primitive(p) => {
            if primitive_ok(*p, value) {
                Ok(())
            } else {
                fail(primitive_expected(*p).to_owned())
            }
        }
        Schema::Enum(e) => {
            let ok = e.values.iter().any(|v| match (&v.value, value) {
                (EnumLiteral::Int(i), v) => v.as_i64() == Some(*i),
                (EnumLiteral::Str(s), v) => v.as_str() == Some(s),
            });
            if ok {
                Ok(())
            } else {
                let mut list = String::from("one of ");
                for (i, v) in e.values.iter().enumerate() {
                    if i > 0 {
                        list.push_str(", ");
                    }
                    list.push_str(&v.value.to_json().to_string());
                }
                fail(list)
            }
        }
        Schema::Object(fields) => {
            let Some(o) = value.as_object() else { return fail("an object".into()) };
            for (k, v) in o.iter() {
                match fields.iter().find(|f| f.name == k) {
                    Some(f) => validate(&f.schema, v, &join(path, k))?,
                    None => {
                        let mut expected = String::from("no other fields than ");
                        for (i, f) in fields.iter().enumerate() {
                            if i > 0 {
                                expected.push_str(", ");
                            }
                            expected.push_str(&f.name);
                        }
                        return Err(ValueError { path: join(path, k), expected, found: "an unknown field".into() });
                    }
                }
            }
            Ok(())
        }
        Schema::Map { value: vs, .. } => {
            let Some(o) = value.as_object() else { return fail("an object (a Map)".into()) };
            o.iter().try_for_each(|(k, v)| validate(vs, v, &join(path, k)))
        }
        Schema::Array(es) => {
            let Some(a) = value.as_array() else { return fail("an array".into()) };
            a.iter().enumerate().try_for_each(|(i, v)| validate(es, v, &format!("{path}[{i}]")))
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn show(v: &Value) -> String {
    if matches!(v, Value::Null) {
        return "null".into();
    }
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn primitive_expected(p: Primitive) -> &'static str {
    match p {
        Primitive::Boolean => "a boolean",
        Primitive::Date => "a date (RFC 3339, like 2026-11-29)",
        Primitive::DateTime => "a dateTime (RFC 3339, like 2026-11-29T15:00:00Z)",
        Primitive::Double => "a double",
        Primitive::Duration => "a duration (ISO 8601, like PT1H30M)",
        Primitive::Float => "a float",
        Primitive::Integer => "an integer (32 bits)",
        Primitive::Long => "a long (64-bit integer)",
        Primitive::String => "a string",
        Primitive::Time => "a time (RFC 3339, like 15:00:00)",
    }
}

fn primitive_ok(p: Primitive, v: &Value) -> bool {
    match p {
        Primitive::Boolean => v.as_bool().is_some(),
        Primitive::Double => v.as_f64().is_some_and(f64::is_finite),
        Primitive::Float => v.as_f64().is_some_and(|x| x.is_finite() && x.abs() <= f64::from(f32::MAX)),
        Primitive::Integer => v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        Primitive::Long => v.as_i64().is_some(),
        Primitive::String => v.as_str().is_some(),
        Primitive::Date => v.as_str().is_some_and(is_date),
        Primitive::DateTime => v.as_str().is_some_and(is_date_time),
        Primitive::Time => v.as_str().is_some_and(is_time_with_offset),
        Primitive::Duration => v.as_str().is_some_and(is_duration),
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// RFC 3339 `full-date`: `YYYY-MM-DD` with a day that exists in that month.
pub fn is_date(s: &str) -> bool {
    let mut it = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else { return false };
    let (Some(y), Some(m), Some(d)) = (digits(y, 4), digits(m, 2), digits(d, 2)) else { return false };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339 `partial-time`: `HH:MM:SS` with optional fraction (second 60 allowed for leap seconds).
fn is_partial_time(s: &str) -> bool {
    let (hms, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    let mut it = hms.split(':');
    let (Some(h), Some(m), Some(sec), None) = (it.next(), it.next(), it.next(), it.next()) else { return false };
    let ok = digits(h, 2).is_some_and(|h| h < 24)
        && digits(m, 2).is_some_and(|m| m < 60)
        && digits(sec, 2).is_some_and(|s| s <= 60);
    ok && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `Z` or `±HH:MM`.
fn is_offset(s: &str) -> bool {
    if s == "Z" || s == "z" {
        return true;
    }
    let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix('-')) else { return false };
    matches!(rest.split_once(':'), Some((h, m)) if digits(h, 2).is_some_and(|h| h < 24) && digits(m, 2).is_some_and(|m| m < 60))
}

/// A partial time, optionally followed by an offset.
fn is_time_with_offset(s: &str) -> bool {
    match s.find(['Z', 'z', '+', '-']) {
        Some(i) => is_partial_time(&s[..i]) && is_offset(&s[i..]),
        None => is_partial_time(s),
    }
}

/// RFC 3339 `date-time`: `full-date "T" partial-time offset`.
pub fn is_date_time(s: &str) -> bool {
    let Some((date, time)) = s.split_once(['T', 't']) else { return false };
    let Some(i) = time.find(['Z', 'z', '+', '-']) else { return false };
    is_date(date) && is_partial_time(&time[..i]) && is_offset(&time[i..])
}

/// ISO 8601 duration: `P[nY][nM][nW][nD][T[nH][nM][n[.n]S]]` with at least one part; only the last
/// part may have a fraction (`.` or `,`).
pub fn is_duration(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('P') else { return false };
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut parts = 0;
    let mut fraction_seen = false;
    let mut check = |text: &str, units: &[u8]| -> bool {
        let mut num = String::new();
        let mut next_unit = 0;
        for c in text.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                num.push(c);
                continue;
            }
            let Some(pos) = units[next_unit..].iter().position(|u| *u as char == c) else { return false };
            let frac = num.contains(['.', ',']);
            let valid = !num.is_empty()
                && num.split(['.', ',']).all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                && num.matches(['.', ',']).count() <= 1;
            if !valid || fraction_seen {
                return false;
            }
            fraction_seen = frac;
            next_unit += pos + 1;
            parts += 1;
            num.clear();
        }
        num.is_empty()
    };
    let date_ok = check(date, b"YMWD");
    let time_ok = match time {
        Some(t) => !t.is_empty() && check(t, b"HMS"),
        None => true,
    };
    date_ok && time_ok && parts > 0
}
