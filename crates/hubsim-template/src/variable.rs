//! Declared variables: the Iot-Telemetry-Simulator kinds and hubsim's sensor generators.
//!
//! A variable is declared as a JSON object (relaxed JSON is fine). Keys are matched ignoring ASCII case,
//! as .NET's configuration binder and Newtonsoft.Json do, so ITS's README spelling `customlengthstring`
//! works. Flags may be `true` or `"true"` and numbers may be strings (`"min": "23"`), because ITS config
//! files go through .NET configuration, which stores every value as a string.
//!
//! The kind is the first that applies, in this order (ITS's order for its own kinds, `TelemetryValues.cs`):
//!
//! | declaration | each render gives |
//! |---|---|
//! | `sequence: true, values: [..]` | ITS: `values[n % len]` where `n` is the device's render number; a value `"$.X"` gives X's value (see [`crate`] docs) |
//! | `random: true, min, max` | ITS: an integer in `[min, max)` (upper bound **exclusive**, bounds truncated); without both bounds, or `max <= min`, in `[0, 2^31-1)` |
//! | `randomDouble: true, min, max` | ITS: a double in `[min, max)`; without both bounds in `[0, 1)` |
//! | `customLengthString: n` | ITS: `n` random characters from `a-z A-Z 0-9` |
//! | `walk: true, min, max, step, start` | a bounded random walk: `start` (default the midpoint) then `prev ± uniform(0, step)`, clamped to `[min, max]` |
//! | `sine: true, period, amplitude, offset, noise` | `offset + amplitude·sin(2π·t/period) + uniform(-noise, noise)`; `t` and `period` in ms of the render time |
//! | `probability: p` | `true` with probability `p` (0..1), else `false` |
//! | `timestamp: true, jitter, format` | render time + uniform(-jitter, jitter) ms, forced strictly increasing; `format` `"iso"` (default, `…T10:10:11.509Z`), `"epochMs"` or `"epoch"` (seconds) |
//! | `values: [..], weights: [..]` | a value picked with the given relative weights |
//! | `values: [..]` | ITS: a value picked uniformly at random (**not** a cycle: cycling is `sequence`) |
//! | anything else (`min`, `max`, `step`) | ITS counter: `min` (default 1), then `+ step` (default 1); when the previous value is above `max - step` it restarts at `min` (`max` default 2^31-1, inclusive) |
//!
//! `decimals: d` on a numeric variable prints it with exactly `d` digits after the point.
//! Values in `values` are printed as: strings without quotes (so `"$.Engine"` in quotes in the template
//! makes a JSON string), numbers and booleans as JSON, arrays and objects as compact JSON.

use crate::ConfigError;
use hubsim_proto::json::{Number, Object, Value};

/// One declared variable: a name (the `X` of `$.X`), what generates its values, and number formatting.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub kind: Kind,
    /// Digits after the decimal point for numeric values (`None`: shortest exact form).
    pub decimals: Option<u8>,
}

/// How a variable's value is produced at each render. Units: ms for times and periods.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// ITS `sequence`: `values[n % len]`, references resolved.
    Sequence { values: Vec<Value> },
    /// ITS `random`: integer in `[min, max)`; `None`: `[0, 2^31-1)`.
    RandomInt { range: Option<(i64, i64)> },
    /// ITS `randomDouble`: in `[min, max)`; `None`: `[0, 1)`.
    RandomDouble { range: Option<(f64, f64)> },
    /// ITS `customLengthString`: this many random alphanumeric characters.
    RandomString { len: usize },
    /// Bounded random walk.
    Walk { start: f64, step: f64, min: f64, max: f64 },
    /// Sine of the render time plus uniform noise.
    Sine { period_ms: f64, amplitude: f64, offset: f64, noise: f64 },
    /// `true` with this probability.
    Bool { probability: f64 },
    /// Render time with jitter, strictly increasing per device.
    Timestamp { jitter_ms: i64, format: TimeFormat },
    /// ITS `values` (uniform pick, `weights` empty) or a weighted pick.
    Pick { values: Vec<Value>, weights: Vec<f64> },
    /// ITS counter: `start` then `+ step`, back to `start` once the previous value exceeds `max - step`.
    Counter { start: i64, step: i64, max: f64 },
}

/// Output form of a [`Kind::Timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2019-11-19T10:10:11.509Z`
    Iso,
    /// Unix milliseconds.
    EpochMs,
    /// Unix seconds.
    Epoch,
}

/// ITS's default variable list when none is given: a counter named `Counter` from 1.
pub fn default_variables() -> Vec<Variable> {
    vec![Variable {
        name: "Counter".into(),
        kind: Kind::Counter { start: 1, step: 1, max: i32::MAX as f64 },
        decimals: None,
    }]
}

struct Decl<'a> {
    obj: &'a Object,
    path: &'a str,
}

impl Decl<'_> {
    fn field(&self, key: &str) -> String {
        let mut s = String::from(self.path);
        s.push('.');
        s.push_str(key);
        s
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get_ignore_case(key).filter(|v| **v != Value::Null)
    }
    fn flag(&self, key: &str) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ConfigError::WrongType { field: self.field(key), expected: "true or false" }),
        }
    }
    fn num(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n.as_f64())),
            Some(Value::String(s)) => match hubsim_proto::num::parse_f64(s.trim()) {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(ConfigError::WrongType { field: self.field(key), expected: "a number" }),
            },
            Some(_) => Err(ConfigError::WrongType { field: self.field(key), expected: "a number" }),
        }
    }
    fn need(&self, key: &str, kind: &'static str) -> Result<f64, ConfigError> {
        self.num(key)?.ok_or_else(|| ConfigError::Missing { field: self.field(key), kind })
    }
    fn whole(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.num(key)? {
            Some(f) if f.fract() != 0.0 || f.abs() > 9.0e15 => {
                Err(ConfigError::WrongType { field: self.field(key), expected: "a whole number" })
            }
            other => Ok(other.map(|f| f as i64)),
        }
    }
    fn list(&self, key: &str) -> Result<Option<&[Value]>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(ConfigError::WrongType { field: self.field(key), expected: "an array" }),
        }
    }
    fn range_err(&self, key: &str, problem: &'static str) -> ConfigError {
        ConfigError::OutOfRange { field: self.field(key), problem }
    }
}

/// Every key a declaration may have: ITS's (`TelemetryVariable.cs`: `name`, `random`, `randomDouble`, `min`,
/// `max`, `step`, `customLengthString`, `values`, `sequence`) and hubsim's.
pub const VARIABLE_KEYS: &[&str] = &[
    "name",
    "random",
    "randomDouble",
    "min",
    "max",
    "step",
    "customLengthString",
    "values",
    "sequence",
    "decimals",
    "walk",
    "start",
    "sine",
    "period",
    "amplitude",
    "offset",
    "noise",
    "probability",
    "timestamp",
    "jitter",
    "format",
    "weights",
];

impl Variable {
    /// Reads one declaration (see the module docs). `path` names it in errors, e.g. `Variables[2]`.
    ///
    /// # Errors
    /// A key that is not one of the declaration's keys (ASCII case ignored) is
    /// [`ConfigError::UnknownKey`] (see [`VARIABLE_KEYS`]); wrong types, missing and out-of-range values are the other variants.
    pub fn from_json(v: &Value, path: &str) -> Result<Variable, ConfigError> {
        let obj = v.as_object().ok_or_else(|| ConfigError::WrongType { field: path.into(), expected: "an object" })?;
        let d = Decl { obj, path };
        crate::config::check_keys(obj, VARIABLE_KEYS, true, path)?;
        let name = match d.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(ConfigError::WrongType { field: d.field("name"), expected: "a non-empty string" }),
            None => return Err(ConfigError::Missing { field: d.field("name"), kind: "every variable" }),
        };
        let decimals = match d.whole("decimals")? {
            None => None,
            Some(n @ 0..=17) => Some(n as u8),
            Some(_) => return Err(d.range_err("decimals", "must be between 0 and 17")),
        };
        let (min, max) = (d.num("min")?, d.num("max")?);
        let values = d.list("values")?;
        let kind = if d.flag("sequence")? {
            match values {
                Some(v) if !v.is_empty() => Kind::Sequence { values: v.to_vec() },
                _ => return Err(ConfigError::Missing { field: d.field("values"), kind: "a sequence" }),
            }
        } else if d.flag("random")? {
            Kind::RandomInt {
                range: match (min, max) {
                    (Some(lo), Some(hi)) if hi > lo => Some((lo.trunc() as i64, hi.trunc() as i64)),
                    _ => None,
                },
            }
        } else if d.flag("randomDouble")? {
            Kind::RandomDouble {
                range: match (min, max) {
                    (Some(lo), Some(hi)) if hi > lo => Some((lo, hi)),
                    _ => None,
                },
            }
        } else if let Some(len) = d.whole("customLengthString")? {
            if !(0..=1_000_000).contains(&len) {
                return Err(d.range_err("customLengthString", "must be between 0 and 1000000"));
            }
            Kind::RandomString { len: len as usize }
        } else if d.flag("walk")? {
            let (lo, hi) = (d.need("min", "a walk")?, d.need("max", "a walk")?);
            if hi < lo {
                return Err(d.range_err("max", "must not be below min"));
            }
            let step = d.need("step", "a walk")?;
            if step < 0.0 {
                return Err(d.range_err("step", "must not be negative"));
            }
            let start = hubsim_proto::num::clamp_f64(d.num("start")?.unwrap_or((lo + hi) / 2.0), lo, hi);
            Kind::Walk { start, step, min: lo, max: hi }
        } else if d.flag("sine")? {
            let period_ms = d.need("period", "a sine")?;
            if period_ms <= 0.0 {
                return Err(d.range_err("period", "must be above 0 ms"));
            }
            Kind::Sine {
                period_ms,
                amplitude: d.num("amplitude")?.unwrap_or(1.0),
                offset: d.num("offset")?.unwrap_or(0.0),
                noise: d.num("noise")?.unwrap_or(0.0).abs(),
            }
        } else if let Some(p) = d.num("probability")? {
            if !(0.0..=1.0).contains(&p) {
                return Err(d.range_err("probability", "must be between 0 and 1"));
            }
            Kind::Bool { probability: p }
        } else if d.flag("timestamp")? {
            let jitter_ms = d.whole("jitter")?.unwrap_or(0);
            if !(0..=86_400_000).contains(&jitter_ms) {
                return Err(d.range_err("jitter", "must be between 0 and 86400000 ms"));
            }
            let format = match d.get("format").map(|f| f.as_str()) {
                None | Some(Some("iso")) => TimeFormat::Iso,
                Some(Some("epochMs")) => TimeFormat::EpochMs,
                Some(Some("epoch")) => TimeFormat::Epoch,
                Some(_) => {
                    return Err(ConfigError::WrongType {
                        field: d.field("format"),
                        expected: "\"iso\", \"epochMs\" or \"epoch\"",
                    })
                }
            };
            Kind::Timestamp { jitter_ms, format }
        } else if let Some(v) = values.filter(|v| !v.is_empty()) {
            let weights = match d.list("weights")? {
                None => Vec::new(),
                Some(w) => {
                    let mut weights = Vec::with_capacity(w.len());
                    for x in w.iter().filter_map(Value::as_f64) {
                        if x >= 0.0 && x.is_finite() {
                            weights.push(x);
                        }
                    }
                    let w = weights;
                    if w.len() != v.len() {
                        return Err(d.range_err("weights", "needs one non-negative number per value"));
                    }
                    if w.iter().sum::<f64>() <= 0.0 {
                        return Err(d.range_err("weights", "must not all be zero"));
                    }
                    w
                }
            };
            Kind::Pick { values: v.to_vec(), weights }
        } else {
            // A counter that starts above its wrap would repeat its start forever (ITS does so): a mistake, said.
            if let (Some(lo), Some(hi)) = (min, max) {
                if hi < lo {
                    return Err(d.range_err("max", "must not be below min (a counter counts from min up to max)"));
                }
            }
            let step = d.whole("step")?.unwrap_or(1);
            if step == 0 {
                return Err(d.range_err("step", "must not be 0 (the counter would never move)"));
            }
            Kind::Counter { start: min.map_or(1, |m| m.trunc() as i64), step, max: max.unwrap_or(i32::MAX as f64) }
        };
        Ok(Variable { name, kind, decimals })
    }

    /// Reads a JSON array of declarations, e.g. ITS's `Variables` setting
    /// `[{name: "Temp", random: true, min: 23, max: 33}]` (relaxed JSON).
    pub fn parse_list(text: &str) -> Result<Vec<Variable>, ConfigError> {
        let v = hubsim_proto::json::parse_relaxed(text)
            .map_err(|error| ConfigError::Json { field: "Variables".into(), error })?;
        Self::list_from_json(&v, "Variables")
    }

    /// Reads an array of declarations; an empty list is allowed.
    pub fn list_from_json(v: &Value, path: &str) -> Result<Vec<Variable>, ConfigError> {
        let items = v.as_array().ok_or_else(|| ConfigError::WrongType { field: path.into(), expected: "an array" })?;
        let mut out: Vec<Variable> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut p = String::from(path);
            p.push('[');
            p.push_str(&i.to_string());
            p.push(']');
            let var = Variable::from_json(item, &p)?;
            if out.iter().any(|o| o.name == var.name) {
                return Err(ConfigError::Duplicate { field: p, name: var.name });
            }
            out.push(var);
        }
        Ok(out)
    }
}

impl Variable {
    /// The declaration as JSON, in the form [`Variable::from_json`] reads back to an equal variable
    /// (ITS keys for ITS kinds, so the result also loads in ITS). For the app's variable editor and exports.
    pub fn to_json(&self) -> Value {
        let mut o = Object::new();
        let mut put = |k: &str, v: Value| o.insert(k.to_owned(), v);
        let num = |x: f64| {
            Value::Number(if x.fract() == 0.0 && x.abs() < 9.0e15 { Number::Int(x as i64) } else { Number::Float(x) })
        };
        let yes = || Value::Bool(true);
        put("name", Value::String(self.name.clone()));
        match &self.kind {
            Kind::Sequence { values } => {
                put("sequence", yes());
                put("values", Value::Array(values.clone()));
            }
            Kind::RandomInt { range } => {
                put("random", yes());
                if let Some((lo, hi)) = range {
                    put("min", num(*lo as f64));
                    put("max", num(*hi as f64));
                }
            }
            Kind::RandomDouble { range } => {
                put("randomDouble", yes());
                if let Some((lo, hi)) = range {
                    put("min", num(*lo));
                    put("max", num(*hi));
                }
            }
            Kind::RandomString { len } => put("customLengthString", num(*len as f64)),
            Kind::Walk { start, step, min, max } => {
                put("walk", yes());
                put("start", num(*start));
                put("step", num(*step));
                put("min", num(*min));
                put("max", num(*max));
            }
            Kind::Sine { period_ms, amplitude, offset, noise } => {
                put("sine", yes());
                put("period", num(*period_ms));
                put("amplitude", num(*amplitude));
                put("offset", num(*offset));
                put("noise", num(*noise));
            }
            Kind::Bool { probability } => put("probability", num(*probability)),
            Kind::Timestamp { jitter_ms, format } => {
                put("timestamp", yes());
                put("jitter", num(*jitter_ms as f64));
                let f = match format {
                    TimeFormat::Iso => "iso",
                    TimeFormat::EpochMs => "epochMs",
                    TimeFormat::Epoch => "epoch",
                };
                put("format", Value::String(f.into()));
            }
            Kind::Pick { values, weights } => {
                put("values", Value::Array(values.clone()));
                if !weights.is_empty() {
                    let mut list = Vec::with_capacity(weights.len());
                    for w in weights {
                        list.push(num(*w));
                    }
                    put("weights", Value::Array(list));
                }
            }
            Kind::Counter { start, step, max } => {
                put("min", num(*start as f64));
                put("step", num(*step as f64));
                if *max != i32::MAX as f64 {
                    put("max", num(*max));
                }
            }
        }
        if let Some(d) = self.decimals {
            put("decimals", num(f64::from(d)));
        }
        Value::Object(o)
    }
}

/// A generated value, kept per device between renders (counters and walks continue from it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Int(i64),
    Float(f64, Option<u8>),
    Bool(bool),
    Text(String),
    Json(Value),
    Time(i64, TimeFormat),
}

impl Out {
    pub(crate) fn from_value(v: &Value, decimals: Option<u8>) -> Out {
        match v {
            Value::String(s) => Out::Text(s.clone()),
            Value::Number(Number::Int(i)) if decimals.is_none() => Out::Int(*i),
            Value::Number(n) => Out::Float(n.as_f64(), decimals),
            Value::Bool(b) => Out::Bool(*b),
            other => Out::Json(other.clone()),
        }
    }

    /// Appends the value as it appears in the rendered text.
    pub(crate) fn write(&self, out: &mut String) {
        match self {
            Out::Int(i) => out.push_str(&i.to_string()),
            Out::Float(x, Some(d)) => out.push_str(&hubsim_proto::num::fixed_f64(*x, usize::from(*d))),
            Out::Float(x, None) if x.is_finite() => out.push_str(&hubsim_proto::num::display_f64(*x)),
            Out::Float(..) => out.push_str("null"),
            Out::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Out::Text(s) => out.push_str(s),
            Out::Json(v) => out.push_str(&v.to_string()),
            Out::Time(ms, TimeFormat::Iso) => out.push_str(&crate::time::iso_utc_ms(*ms)),
            Out::Time(ms, TimeFormat::EpochMs) => out.push_str(&ms.to_string()),
            Out::Time(ms, TimeFormat::Epoch) => out.push_str(&ms.div_euclid(1000).to_string()),
        }
    }
}

const ALPHANUMERIC: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl Variable {
    /// The next value of a non-sequence variable. `prev` is this device's previous value, `now_ms` the render time.
    /// For picks the value is returned unresolved (a `"$.X"` string); the caller resolves references.
    pub(crate) fn next(&self, prev: Option<&Out>, rng: &mut crate::rng::Rng, now_ms: i64) -> Out {
        let dec = self.decimals;
        match &self.kind {
            Kind::Sequence { .. } => Out::Text(String::new()), // computed by the caller from the render number
            Kind::RandomInt { range: Some((lo, hi)) } => num_out(rng.range_i64(*lo, *hi), dec),
            Kind::RandomInt { range: None } => num_out(rng.range_i64(0, i64::from(i32::MAX)), dec),
            Kind::RandomDouble { range } => {
                let (lo, hi) = range.unwrap_or((0.0, 1.0));
                Out::Float(rng.next_f64() * (hi - lo) + lo, dec)
            }
            Kind::RandomString { len } => {
                let mut s = String::with_capacity(*len);
                for _ in 0..*len {
                    s.push(ALPHANUMERIC[rng.below(62) as usize] as char);
                }
                Out::Text(s)
            }
            // max/min rather than clamp: clamp panics when min > max, which a hand-built Kind may have.
            Kind::Walk { start, step, min, max } => match prev {
                Some(Out::Float(p, _)) => {
                    Out::Float((p + (rng.next_f64() * 2.0 - 1.0) * step).max(*min).min(*max), dec)
                }
                _ => Out::Float(*start, dec),
            },
            Kind::Sine { period_ms, amplitude, offset, noise } => {
                // q - floor(q) rather than rem_euclid: floor is one wasm instruction, fmod is libm code.
                let q = now_ms as f64 / period_ms;
                let phase = q - q.floor();
                let mut v = offset + amplitude * sin_turns(phase);
                if *noise > 0.0 {
                    v += (rng.next_f64() * 2.0 - 1.0) * noise;
                }
                Out::Float(v, dec)
            }
            Kind::Bool { probability } => Out::Bool(rng.next_f64() < *probability),
            Kind::Timestamp { jitter_ms, format } => {
                let j = (*jitter_ms).clamp(0, 86_400_000);
                let t = now_ms.saturating_add(rng.range_i64(-j, j + 1));
                let t = match prev {
                    Some(Out::Time(p, _)) if t <= *p => p.saturating_add(1),
                    _ => t,
                };
                Out::Time(t, *format)
            }
            Kind::Pick { values, weights } => {
                let i = if weights.is_empty() {
                    rng.below(values.len() as u64) as usize
                } else {
                    // Scaled by the largest weight, so that weights near f64::MAX cannot sum to infinity (which
                    // would pick the last value every time).
                    let max = weights.iter().fold(0.0f64, |m, w| m.max(*w));
                    let mut r = rng.next_f64() * weights.iter().map(|w| w / max).sum::<f64>();
                    weights
                        .iter()
                        .position(|w| {
                            r -= w / max;
                            r < 0.0
                        })
                        .unwrap_or(values.len() - 1)
                };
                values.get(i).map_or(Out::Text(String::new()), |v| Out::from_value(v, dec))
            }
            Kind::Counter { start, step, max } => match prev {
                Some(Out::Int(p)) if (*p as f64) > max - *step as f64 => Out::Int(*start),
                Some(Out::Int(p)) => Out::Int(p.saturating_add(*step)),
                _ => Out::Int(*start),
            },
        }
    }
}

/// sin(2π·t) for t in [0, 1): folded onto [0, π/2] by symmetry, then the Taylor series to x^17 (error
/// below 1e-13 there). Why not `f64::sin`: on wasm32 it links libm's sine and its large-argument
/// reduction, about 7 KB, for arguments we already keep within one period.
pub(crate) fn sin_turns(t: f64) -> f64 {
    let (t, sign) = if t >= 0.5 { (t - 0.5, -1.0) } else { (t, 1.0) }; // sin(x + π) = -sin x
    let t = if t > 0.25 { 0.5 - t } else { t }; // sin(π - x) = sin x
    let x = std::f64::consts::TAU * t;
    let x2 = x * x;
    let mut s = 1.0;
    for k in (1..=8u32).rev() {
        s = 1.0 - x2 / f64::from(2 * k * (2 * k + 1)) * s;
    }
    sign * x * s
}

fn num_out(i: i64, decimals: Option<u8>) -> Out {
    match decimals {
        None => Out::Int(i),
        Some(_) => Out::Float(i as f64, decimals),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use hubsim_proto::json::parse_relaxed;

    fn var(decl: &str) -> Variable {
        Variable::from_json(&parse_relaxed(decl).unwrap(), "v").unwrap()
    }

    fn texts(v: &Variable, n: usize, seed: u64, times: impl Fn(usize) -> i64) -> Vec<String> {
        let mut rng = Rng::new(seed);
        let mut prev: Option<Out> = None;
        (0..n)
            .map(|i| {
                let o = v.next(prev.as_ref(), &mut rng, times(i));
                let mut s = String::new();
                o.write(&mut s);
                prev = Some(o);
                s
            })
            .collect()
    }

    fn run(decl: &str, n: usize) -> Vec<String> {
        texts(&var(decl), n, 42, |i| i as i64 * 1000)
    }

    #[test]
    fn its_counter_from_min_wrapping_after_max() {
        // README example 1: min 100, max 102 gives 100, 101, 102, 100.
        assert_eq!(run("{name: 'Counter', min: 100, max: 102}", 5), ["100", "101", "102", "100", "101"]);
        // Defaults: from 1, step 1.
        assert_eq!(run("{name: 'Counter'}", 3), ["1", "2", "3"]);
        let e = Variable::parse_list("[{name: 'C', min: 10, max: 5}]").unwrap_err().to_string();
        assert!(e.contains("max") && e.contains("must not be below min"), "{e}");
        assert_eq!(run("{name: 'Counter', min: 7, max: 7}", 3), ["7", "7", "7"]);
        let e = Variable::parse_list("[{name: 'C', step: 0}]").unwrap_err().to_string();
        assert!(e.contains("step") && e.contains("must not be 0"), "{e}");
        // ITS PayloadGeneratorTest: min 1, max 5, step 2 gives 1, 3, 5, then back to 1.
        assert_eq!(run("{name: 'C', min: 1, max: 5, step: 2}", 4), ["1", "3", "5", "1"]);
        // Negative start, and restart once prev > max - step: 4 > 6 - 3, so 1, 4, 1.
        assert_eq!(run("{name: 'C', min: -3, max: 2}", 7), ["-3", "-2", "-1", "0", "1", "2", "-3"]);
        assert_eq!(run("{name: 'C', min: 1, max: 6, step: 3}", 3), ["1", "4", "1"]);
        // Config-file form: numbers as strings.
        assert_eq!(run("{name: 'C', min: '7', step: '10'}", 2), ["7", "17"]);
    }

    #[test]
    fn its_random_int_excludes_max_and_truncates_bounds() {
        let v = run("{name: 'Temp', random: true, min: 23, max: 25}", 200);
        assert!(v.iter().all(|s| s == "23" || s == "24"), "{v:?}");
        assert!(v.iter().any(|s| s == "23") && v.iter().any(|s| s == "24"));
        // Bounds are truncated like C#'s (int) cast: [1.9, 2.9) becomes Next(1, 2), always 1.
        assert!(run("{name: 'X', random: true, min: 1.9, max: 2.9}", 20).iter().all(|s| s == "1"));
        // Without both bounds: 0 ..= 2^31 - 2.
        let wide = run("{name: 'X', random: 'true', max: 5}", 50);
        assert!(wide.iter().all(|s| (0..i64::from(i32::MAX)).contains(&s.parse::<i64>().unwrap())));
        assert!(wide.iter().any(|s| s.parse::<i64>().unwrap() > 5));
    }

    #[test]
    fn its_random_double_in_range_and_default_unit_interval() {
        for s in run("{name: 'D', randomDouble: true, min: 0.22, max: 1.25}", 200) {
            let x: f64 = s.parse().unwrap();
            assert!((0.22..1.25).contains(&x), "{x}");
        }
        for s in run("{name: 'D', randomDouble: true, min: 10}", 50) {
            assert!((0.0..1.0).contains(&s.parse::<f64>().unwrap()));
        }
        assert!(run("{name: 'D', randomDouble: true, min: 0, max: 1, decimals: 2}", 20)
            .iter()
            .all(|s| s.len() == 4 && s.starts_with("0.")));
    }

    #[test]
    fn its_custom_length_string_is_alphanumeric_of_that_length() {
        // README spells it in lower case; keys ignore case.
        for s in run("{name: 'S', customlengthstring: 12}", 20) {
            assert_eq!(s.len(), 12);
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        assert_eq!(run("{name: 'S', customLengthString: 0}", 1), [""]);
    }

    #[test]
    fn its_values_are_a_uniform_random_pick() {
        let v = run("{name: 'Engine', values: ['on', 'off']}", 200);
        assert!(v.iter().all(|s| s == "on" || s == "off"));
        assert!(v.iter().any(|s| s == "on") && v.iter().any(|s| s == "off"));
        // Non-string values print as JSON.
        let v = run("{name: 'X', values: [1, 2.5, true, null, [1, 'a'], {k: 1}]}", 300);
        for want in ["1", "2.5", "true", "null", "[1,\"a\"]", "{\"k\":1}"] {
            assert!(v.iter().any(|s| s == want), "{want} never picked");
        }
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let v = run("{name: 'S', values: ['ok', 'warn', 'never'], weights: [3, 1, 0]}", 4000);
        let ok = v.iter().filter(|s| *s == "ok").count();
        assert!(!v.iter().any(|s| s == "never"));
        assert!((2800..3200).contains(&ok), "{ok}");
    }

    #[test]
    fn weights_near_the_largest_double_are_still_weights() {
        let v = run("{name: 'S', values: ['a', 'b', 'never'], weights: [1.7e308, 1.7e308, 0]}", 4000);
        let a = v.iter().filter(|s| *s == "a").count();
        assert!(!v.iter().any(|s| s == "never"));
        assert!((1800..2200).contains(&a), "{a}");
    }

    #[test]
    fn walk_starts_at_start_moves_at_most_step_and_stays_bounded() {
        let v = run("{name: 'T', walk: true, start: 20, step: 0.5, min: 19, max: 21}", 500);
        assert_eq!(v[0], "20");
        let xs: Vec<f64> = v.iter().map(|s| s.parse().unwrap()).collect();
        for w in xs.windows(2) {
            assert!((w[1] - w[0]).abs() <= 0.5);
        }
        assert!(xs.iter().all(|x| (19.0..=21.0).contains(x)));
        assert!(xs.contains(&19.0) || xs.contains(&21.0), "a 500-step walk of ±0.5 in [19, 21] should touch a bound");
        // Default start is the midpoint; decimals apply.
        assert_eq!(run("{name: 'T', walk: true, step: 1, min: 0, max: 5, decimals: 2}", 1), ["2.50"]);
    }

    #[test]
    fn sine_follows_the_render_time() {
        let v = var("{name: 'W', sine: true, period: 4000, amplitude: 2, offset: 10, decimals: 3}");
        // t = 0, 1000, 2000, 3000 ms: phases 0, 1/4, 1/2, 3/4.
        assert_eq!(texts(&v, 5, 1, |i| i as i64 * 1000), ["10.000", "12.000", "10.000", "8.000", "10.000"]);
        let noisy = var("{name: 'W', sine: true, period: 4000, amplitude: 2, offset: 10, noise: 0.5}");
        for (i, s) in texts(&noisy, 40, 1, |i| i as i64 * 1000).iter().enumerate() {
            let clean = [10.0, 12.0, 10.0, 8.0][i % 4];
            assert!((s.parse::<f64>().unwrap() - clean).abs() <= 0.5);
        }
    }

    #[test]
    fn sin_turns_matches_libm() {
        for i in 0..1000 {
            let t = f64::from(i) / 1000.0;
            assert!((sin_turns(t) - (std::f64::consts::TAU * t).sin()).abs() < 1e-12, "{t}");
        }
        assert_eq!(sin_turns(0.0), 0.0);
        assert_eq!(sin_turns(0.5), 0.0);
    }

    #[test]
    fn probability_gives_booleans() {
        assert!(run("{name: 'B', probability: 0}", 50).iter().all(|s| s == "false"));
        assert!(run("{name: 'B', probability: 1}", 50).iter().all(|s| s == "true"));
        let n = run("{name: 'B', probability: 0.25}", 4000).iter().filter(|s| *s == "true").count();
        assert!((850..1150).contains(&n), "{n}");
    }

    #[test]
    fn timestamp_is_jittered_and_strictly_increasing() {
        let v = var("{name: 'Ts', timestamp: true, jitter: 300, format: 'epochMs'}");
        let xs: Vec<i64> =
            texts(&v, 200, 3, |i| 1_000_000 + (i as i64 / 2) * 100).iter().map(|s| s.parse().unwrap()).collect();
        for (i, w) in xs.windows(2).enumerate() {
            assert!(w[1] > w[0], "not increasing at {i}");
        }
        assert!(xs.iter().enumerate().all(|(i, x)| *x >= 1_000_000 + (i as i64 / 2) * 100 - 300));
        let exact = var("{name: 'Ts', timestamp: true}");
        assert_eq!(
            texts(&exact, 3, 3, |_| 1_574_158_211_509),
            ["2019-11-19T10:10:11.509Z", "2019-11-19T10:10:11.510Z", "2019-11-19T10:10:11.511Z"]
        );
        let secs = var("{name: 'Ts', timestamp: true, format: 'epoch'}");
        assert_eq!(texts(&secs, 1, 3, |_| 1_574_158_211_509), ["1574158211"]);
    }

    /// Exact sequences for seed 1 at t = 0, 1000, 2000... ms. They pin the generator algorithms: a change
    /// here changes every user's "reproducible" run, so it must be deliberate.
    #[test]
    fn golden_sequences_for_seed_1() {
        let golden: [(&str, [&str; 10]); 9] = [
            (
                "{name: 'a', random: true, min: 23, max: 26}",
                ["25", "24", "24", "24", "25", "23", "23", "24", "25", "24"],
            ),
            (
                "{name: 'b', randomDouble: true, min: 0.22, max: 1.25, decimals: 3}",
                ["0.944", "0.756", "0.811", "0.623", "0.938", "0.368", "0.293", "0.613", "1.113", "0.788"],
            ),
            (
                "{name: 'c', customLengthString: 5}",
                ["RGJyR", "iex1I", "575PL", "3eEcd", "CELvz", "ny0U8", "a2AyO", "opZxD", "fbENt", "BFF7A"],
            ),
            (
                "{name: 'd', values: ['on', 'off', 'idle']}",
                ["idle", "off", "off", "off", "idle", "on", "on", "off", "idle", "off"],
            ),
            (
                "{name: 'e', values: ['ok', 'warn'], weights: [3, 1]}",
                ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "warn", "ok"],
            ),
            (
                "{name: 'f', walk: true, start: 20, step: 1, min: 19, max: 22, decimals: 2}",
                ["20.00", "20.41", "20.45", "20.59", "20.38", "20.77", "20.06", "19.20", "19.00", "19.73"],
            ),
            (
                "{name: 'g', sine: true, period: 6000, amplitude: 1, offset: 5, noise: 0.1, decimals: 3}",
                ["5.041", "5.870", "5.881", "4.978", "4.173", "4.063", "4.914", "5.842", "5.939", "5.010"],
            ),
            (
                "{name: 'h', probability: 0.5}",
                ["false", "false", "false", "true", "false", "true", "true", "true", "false", "false"],
            ),
            (
                "{name: 'i', timestamp: true, jitter: 400, format: 'epochMs'}",
                ["163", "1016", "2059", "2913", "4158", "4715", "5656", "6905", "8294", "9041"],
            ),
        ];
        for (decl, want) in golden {
            assert_eq!(texts(&var(decl), 10, 1, |i| i as i64 * 1000), want, "{decl}");
        }
    }

    #[test]
    fn to_json_reads_back_to_the_same_variable() {
        for decl in [
            "{name: 'a', sequence: true, values: ['$.C', 1, [2]]}",
            "{name: 'b', random: true, min: 23, max: 25}",
            "{name: 'c', random: true}",
            "{name: 'd', randomDouble: true, min: 0.22, max: 1.25, decimals: 3}",
            "{name: 'e', customLengthString: 8}",
            "{name: 'f', walk: true, start: 21, step: 0.5, min: 15, max: 30}",
            "{name: 'g', sine: true, period: 60000, amplitude: 5, offset: 20, noise: 0.25}",
            "{name: 'h', probability: 0.1}",
            "{name: 'i', timestamp: true, jitter: 250, format: 'epochMs'}",
            "{name: 'j', values: ['on', 'off'], weights: [3, 1.5]}",
            "{name: 'k', values: ['on', 'off']}",
            "{name: 'l', min: 100, max: 102, step: 2}",
            "{name: 'm'}",
        ] {
            let v = var(decl);
            let json = v.to_json();
            assert_eq!(Variable::from_json(&json, "v").unwrap(), v, "{decl} -> {json}");
        }
        assert_eq!(
            var("{name: 'b', random: true, min: 23, max: 25}").to_json().to_string(),
            r#"{"name":"b","random":true,"min":23,"max":25}"#
        );
    }

    #[test]
    fn hand_built_kinds_never_panic() {
        let mut rng = Rng::new(1);
        for kind in [
            Kind::Sequence { values: vec![] },
            Kind::Pick { values: vec![], weights: vec![] },
            Kind::Pick { values: vec![Value::Null], weights: vec![1.0, 2.0, 3.0] },
            Kind::Walk { start: 0.0, step: 1.0, min: 5.0, max: 1.0 },
            Kind::Sine { period_ms: 0.0, amplitude: 1.0, offset: 0.0, noise: 0.0 },
            Kind::Timestamp { jitter_ms: -5, format: TimeFormat::Iso },
            Kind::Timestamp { jitter_ms: i64::MIN, format: TimeFormat::Epoch },
            Kind::Timestamp { jitter_ms: i64::MAX, format: TimeFormat::EpochMs },
            Kind::RandomInt { range: Some((i64::MIN, i64::MAX)) },
            Kind::RandomString { len: 3 },
        ] {
            let v = Variable { name: "x".into(), kind, decimals: Some(200) };
            let mut prev = None;
            for _ in 0..3 {
                let o = v.next(prev.as_ref(), &mut rng, i64::MAX);
                o.write(&mut String::new());
                prev = Some(o);
            }
        }
    }

    #[test]
    fn declaration_errors_name_the_field() {
        let err = |d: &str| Variable::from_json(&parse_relaxed(d).unwrap(), "Variables[0]").unwrap_err().to_string();
        assert_eq!(err("{min: 1}"), "Variables[0].name: missing (needed by every variable)");
        assert_eq!(err("{name: 'A', random: 1}"), "Variables[0].random: expected true or false");
        assert_eq!(err("{name: 'A', sequence: true}"), "Variables[0].values: missing (needed by a sequence)");
        assert_eq!(err("{name: 'A', step: 0.5}"), "Variables[0].step: expected a whole number");
        assert_eq!(err("{name: 'A', walk: true, min: 0, max: 1}"), "Variables[0].step: missing (needed by a walk)");
        assert_eq!(err("{name: 'A', probability: 2}"), "Variables[0].probability: must be between 0 and 1");
        assert_eq!(
            err("{name: 'A', values: [1, 2], weights: [1]}"),
            "Variables[0].weights: needs one non-negative number per value"
        );
        assert_eq!(err("[1]"), "Variables[0]: expected an object");
        let dup =
            Variable::list_from_json(&parse_relaxed("[{name: 'A'}, {name: 'A'}]").unwrap(), "Variables").unwrap_err();
        assert_eq!(dup.to_string(), "Variables[1]: variable A is declared twice");
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_likely_one_so_a_typo_does_not_make_a_counter() {
        let err = |d: &str| Variable::from_json(&parse_relaxed(d).unwrap(), "Variables[0]").unwrap_err().to_string();
        // Without the check this would be a counter from 23: every message 23, 24, 25...
        assert_eq!(
            err("{name: 'T', radnom: true, min: 23, max: 33}"),
            "Variables[0].radnom: unknown key; did you mean random?"
        );
        assert_eq!(
            err("{name: 'T', walk: true, min: 0, max: 9, stpe: 1}"),
            "Variables[0].stpe: unknown key; did you mean step?"
        );
        // Another tool's name for a key is pointed to ours.
        assert_eq!(
            err("{name: 'T', randomDouble: true, min: 0, max: 1, precision: 2}"),
            "Variables[0].precision: unknown key; did you mean decimals?"
        );
        let far = err("{name: 'T', randomDouble: true, min: 0, max: 1, colour: 2}");
        assert!(far.starts_with("Variables[0].colour: unknown key; the keys are name, random, "), "{far}");
        assert!(far.ends_with("decimals, walk, start, sine, period, amplitude, offset, noise, probability, timestamp, jitter, format, weights"), "{far}");
        // Keys ignore ASCII case, as ITS's .NET binder does; every key the editor writes reads back.
        assert!(Variable::from_json(&parse_relaxed("{NAME: 'c', MIN: 1, Max: 3}").unwrap(), "v").is_ok());
        for decl in [
            "{name: 'a', walk: true, min: 0, max: 10, step: 1, start: 5, decimals: 1}",
            "{name: 'b', sine: true, period: 1000, amplitude: 2, offset: 1, noise: 0.1}",
            "{name: 'c', timestamp: true, jitter: 5, format: 'epochMs'}",
            "{name: 'd', values: ['x', 'y'], weights: [1, 2]}",
            "{name: 'e', probability: 0.5}",
            "{name: 'f', customLengthString: 4}",
            "{name: 'g', sequence: true, values: [1]}",
            "{name: 'h', random: true, min: 1, max: 2}",
        ] {
            let v = Variable::from_json(&parse_relaxed(decl).unwrap(), "v").unwrap();
            assert_eq!(Variable::from_json(&v.to_json(), "v").unwrap(), v, "{decl}");
        }
    }
}
