//! A complete message definition: variables, one or more payloads with their distribution, a header
//! template, and send intervals; loaded from an Iot-Telemetry-Simulator configuration or built directly.
//!
//! ITS configuration shape (`RunnerConfiguration.cs`; keys ignore ASCII case, as .NET configuration does):
//! * `Variables`: an array of declarations, or a string holding one (the environment-variable form,
//!   relaxed JSON). Missing or an empty array: a single counter `Counter` from 1 (ITS's default).
//! * `Payloads`: an array of `{type: "template"|"fix", deviceId?, distribution? (1-100, default 100),
//!   template|value}` where `template`/`value` is a string or a JSON object. ITS flattens an object into
//!   one level of string values, nested keys joined with `:` and sorted as .NET configuration sorts keys;
//!   so does this loader, so such payloads render byte for byte as ITS sends them.
//! * Otherwise `Template` (a string; hubsim also takes an object, used as its compact JSON; default `{"deviceId": "$.DeviceId", "time": "$.Time", "counter": $.Counter}`)
//!   and `PayloadDistribution`, e.g. `"fixSize(10, 12) template(25, default) fix(65, aaaaBBBBBCCC)"`:
//!   `fixSize(p, n)` is n zero bytes, `fix(p, base64)` fixed bytes, `template(p)` / `template(p, default)`
//!   the `Template`, `template(p, key)` the template stored under another top-level key.
//! * `Header`: a template whose rendering is a JSON object; its values become application properties
//!   (`null` values are skipped).
//! * `Intervals` (or legacy `Interval`): ms between messages: a number, a list, a `"1000,5000"` string, or
//!   an object mapping device ids to a number or list. Other keys (connection strings, DeviceCount...) are ignored.
//!
//! Payload choice per render (`PayloadGenerator.cs`): a single payload is always used; a payload whose
//! `deviceId` is the device's is always used for it; otherwise r is uniform in 1..=100 and the payloads,
//! sorted by distribution (largest first, stable), are walked until the running sum reaches r.
//!
//! Differences: ITS only logs a warning for an unparsable `PayloadDistribution` entry or an unknown
//! named template and skips it, and throws at send time when percentages add up to less than 100; here
//! each is a load error naming the entry.

use crate::template::Template;
use crate::variable::{default_variables, Kind, Variable};
use hubsim_proto::json::{self, Object, Value};
use std::cmp::Ordering;

/// ITS's template when none is configured.
pub const ITS_DEFAULT_TEMPLATE: &str = "{\"deviceId\": \"$.DeviceId\", \"time\": \"$.Time\", \"counter\": $.Counter}";

/// Why a configuration cannot be loaded. `field` is a path such as `Variables[2].min` or `Payloads[1].template`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The document itself is not (relaxed) JSON.
    #[error("{0}")]
    Syntax(json::JsonError),
    /// A string field holding JSON (e.g. `Variables` as a string) does not parse.
    #[error("{field}: {error}")]
    Json { field: String, error: json::JsonError },
    #[error("{field}: {error}")]
    Template { field: String, error: crate::TemplateError },
    #[error("{field}: expected {expected}")]
    WrongType { field: String, expected: &'static str },
    #[error("{field}: missing (needed by {kind})")]
    Missing { field: String, kind: &'static str },
    #[error("{field}: {problem}")]
    OutOfRange { field: String, problem: &'static str },
    #[error("{field}: variable {name} is declared twice")]
    Duplicate { field: String, name: String },
    #[error("{field}: unknown payload type {}; accepted types are template and fix", hubsim_proto::quote::quote(.found))]
    UnknownPayloadType { field: String, found: String },
    /// A key the object's reader does not read (in a variable declaration, a typo such as `radnom` would
    /// otherwise turn the variable silently into a counter): see [`check_keys`]. `suggestion` is the closest
    /// of `keys`, if one is close; without one the text lists `keys`.
    #[error("{field}: unknown key{}", unknown_key_text(.suggestion, .keys))]
    UnknownKey { field: String, suggestion: Option<&'static str>, keys: &'static [&'static str] },
    #[error("{field}: no top-level key {} holds a template", hubsim_proto::quote::quote(.name))]
    UnknownNamedTemplate { field: String, name: String },
    #[error("{field}: not valid base64")]
    Base64 { field: String },
    #[error("{field}: percentages add up to {total}; they must reach 100")]
    DistributionTotal { field: String, total: u32 },
}

/// Refuses the first key of `obj` that is not one of `keys`, naming it `{path}.{key}` (or `{key}`) with the closest known
/// key. `ignore_case` for readers that ignore ASCII case (ITS files, as .NET's configuration binder reads them).
///
/// # Errors
/// [`ConfigError::UnknownKey`].
pub fn check_keys(
    obj: &Object,
    keys: &'static [&'static str],
    ignore_case: bool,
    path: &str,
) -> Result<(), ConfigError> {
    for (key, _) in obj.iter() {
        if !keys.iter().any(|k| if ignore_case { k.eq_ignore_ascii_case(key) } else { *k == key }) {
            let mut field = String::from(path);
            if !path.is_empty() {
                field.push('.');
            }
            field.push_str(key);
            let suggestion = crate::template::closest(key, keys.iter().copied()).or_else(|| {
                // Other tools' names for a key (a typo search cannot find them).
                const ALIASES: [(&str, &str); 4] =
                    [("precision", "decimals"), ("digits", "decimals"), ("interval", "every"), ("period", "every")];
                ALIASES
                    .iter()
                    .find(|(other, _)| other.eq_ignore_ascii_case(key))
                    .and_then(|(_, ours)| keys.iter().copied().find(|k| k == ours))
            });
            return Err(ConfigError::UnknownKey { field, suggestion, keys });
        }
    }
    Ok(())
}

/// The tail of [`ConfigError::UnknownKey`]'s text: the likely key, or the list of keys.
fn unknown_key_text(suggestion: &Option<&'static str>, keys: &[&str]) -> String {
    match suggestion {
        Some(s) => format!("; did you mean {s}?"),
        None => {
            let mut t = String::from("; the keys are ");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    t.push_str(", ");
                }
                t.push_str(k);
            }
            t
        }
    }
}

/// ITS's settings (its README, `RunnerConfiguration.cs` and Helm chart), which a configuration file may hold
/// beside what hubsim reads.
pub const ITS_KEYS: &[&str] = &[
    "IotHubConnectionString",
    "EventHubConnectionString",
    "KafkaConnectionProperties",
    "KafkaTopic",
    "DevicePrefix",
    "DeviceIndex",
    "DeviceCount",
    "DeviceList",
    "MessageCount",
    "Interval",
    "Intervals",
    "FixPayload",
    "FixPayloadSize",
    "Template",
    "Header",
    "Variables",
    "PayloadDistribution",
    "Payloads",
];

/// A top-level key of an ITS configuration that is not one of [`ITS_KEYS`] but within a typo of one
/// (`MesageCount`, `Varaibles`) is refused with it: ITS, like hubsim, would ignore it, and the run would go on
/// without the setting (no message limit, the default variables). Other keys are left alone: they may be named
/// templates that `PayloadDistribution` refers to, or the user's own notes.
fn check_its_keys(root: &Object) -> Result<(), ConfigError> {
    let distribution = root.get_ignore_case("PayloadDistribution").and_then(Value::as_str).unwrap_or("");
    for (key, _) in root.iter() {
        if ITS_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) || distribution.contains(key) {
            continue;
        }
        if let Some(likely) = crate::template::closest(key, ITS_KEYS.iter().copied()) {
            return Err(ConfigError::UnknownKey { field: key.to_owned(), suggestion: Some(likely), keys: ITS_KEYS });
        }
    }
    Ok(())
}

/// The keys of a saved message (`hubsim simulate --template` and the web app's saved messages), read exactly.
pub const SAVED_MESSAGE_KEYS: &[&str] =
    &["name", "template", "text", "header", "variables", "properties", "qos", "every", "jitter", "count", "duration"];

/// What a payload sends.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadKind {
    Template(Template),
    /// Fixed bytes (ITS `fix`/`fixSize`); variables do not advance when it is sent, as in ITS.
    Fix(Vec<u8>),
}

/// One payload with its share of messages (percent, 1-100) and an optional owning device.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// Percentage of messages, 1-100.
    pub distribution: u8,
    /// When set, this device always gets this payload (ITS `deviceId`).
    pub device_id: Option<String>,
    /// What is sent.
    pub kind: PayloadKind,
}

/// Milliseconds between messages, cycled per device (ITS `Intervals`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervals {
    /// For devices without their own list (ITS default: 1000 ms). Never empty.
    pub default_ms: Vec<u32>,
    /// `(device id, list)` pairs, in file order.
    pub per_device: Vec<(String, Vec<u32>)>,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals { default_ms: vec![1000], per_device: Vec::new() }
    }
}

impl Intervals {
    /// The interval list of `device_id` (its own, else the default). Never empty.
    pub fn for_device(&self, device_id: &str) -> &[u32] {
        self.per_device.iter().find(|(d, _)| d == device_id).map_or(&self.default_ms, |(_, v)| v)
    }
}

/// A loaded configuration, ready to [`render`](Config::render) messages for any number of devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub(crate) variables: Vec<Variable>,
    /// Sorted by distribution, largest first (ITS's order); [`crate::Rendered::payload_index`] indexes this.
    pub(crate) payloads: Vec<Payload>,
    pub(crate) header: Option<Template>,
    pub(crate) intervals: Intervals,
    /// Variables named by a `"$.X"` value of some sequence (they advance only when a sequence uses them).
    pub(crate) seq_refs: Vec<usize>,
}

fn path(base: &str, i: usize) -> String {
    let mut s = String::from(base);
    s.push('[');
    s.push_str(&i.to_string());
    s.push(']');
    s
}

fn template(text: &str, vars: &[Variable], field: impl Into<String>) -> Result<Template, ConfigError> {
    Template::parse(text, vars).map_err(|error| ConfigError::Template { field: field.into(), error })
}

impl Config {
    /// One template payload (100 %), the given variables and an optional header template.
    pub fn new(template_text: &str, variables: Vec<Variable>, header: Option<&str>) -> Result<Config, ConfigError> {
        let t = template(template_text, &variables, "Template")?;
        let header = header.map(|h| template(h, &variables, "Header")).transpose()?;
        let payloads = vec![Payload { distribution: 100, device_id: None, kind: PayloadKind::Template(t) }];
        Ok(Self::assemble(variables, payloads, header, Intervals::default()))
    }

    /// Builds from parts; payloads are sorted by distribution (largest first). Template payloads and the
    /// header must have been parsed with the same `variables` (their placeholders index that list).
    /// Errors: no payload, a distribution outside 1-100, or several payloads adding up to less than 100.
    pub fn from_parts(
        variables: Vec<Variable>,
        payloads: Vec<Payload>,
        header: Option<Template>,
        intervals: Intervals,
    ) -> Result<Config, ConfigError> {
        if payloads.is_empty() {
            return Err(ConfigError::Missing { field: "Payloads".into(), kind: "a configuration" });
        }
        check_distribution(&payloads, "Payloads")?;
        Ok(Self::assemble(variables, payloads, header, intervals))
    }

    fn assemble(
        variables: Vec<Variable>,
        mut payloads: Vec<Payload>,
        header: Option<Template>,
        intervals: Intervals,
    ) -> Config {
        crate::insertion_sort_by(&mut payloads, |a, b| a.distribution > b.distribution);
        let mut seq_refs = Vec::new();
        for v in &variables {
            if let Kind::Sequence { values } = &v.kind {
                for val in values {
                    if let Some(j) = val
                        .as_str()
                        .and_then(|s| s.strip_prefix("$."))
                        .and_then(|n| variables.iter().position(|w| w.name == n))
                    {
                        if !seq_refs.contains(&j) {
                            seq_refs.push(j);
                        }
                    }
                }
            }
        }
        Config { variables, payloads, header, intervals, seq_refs }
    }

    /// Loads an Iot-Telemetry-Simulator configuration file (relaxed JSON, see the module docs).
    pub fn parse_its(text: &str) -> Result<Config, ConfigError> {
        Self::from_its(&json::parse_relaxed(text).map_err(ConfigError::Syntax)?)
    }

    /// Loads an ITS configuration from a parsed document.
    pub fn from_its(root: &Value) -> Result<Config, ConfigError> {
        let root =
            root.as_object().ok_or(ConfigError::WrongType { field: "configuration".into(), expected: "an object" })?;
        check_its_keys(root)?;
        let get = |k: &str| root.get_ignore_case(k).filter(|v| **v != Value::Null);

        let variables = match get("Variables") {
            None => default_variables(),
            Some(Value::Array(a)) if a.is_empty() => default_variables(),
            Some(Value::String(s)) if s.trim().is_empty() => default_variables(),
            Some(Value::String(s)) => {
                let v =
                    json::parse_relaxed(s).map_err(|error| ConfigError::Json { field: "Variables".into(), error })?;
                Variable::list_from_json(&v, "Variables")?
            }
            Some(v) => Variable::list_from_json(v, "Variables")?,
        };

        let payloads = match get("Payloads") {
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(section_payload(item, &path("Payloads", i), &variables)?);
                }
                check_distribution(&out, "Payloads")?;
                out
            }
            _ => simple_payloads(root, &variables)?,
        };

        let header = match get("Header") {
            None => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(template(s, &variables, "Header")?),
            // hubsim extension: a header written as an object.
            Some(v @ Value::Object(_)) => Some(template(&v.to_string(), &variables, "Header")?),
            Some(_) => {
                return Err(ConfigError::WrongType { field: "Header".into(), expected: "a string or an object" })
            }
        };

        let intervals = intervals(root)?;
        Ok(Self::assemble(variables, payloads, header, intervals))
    }

    /// Declared variables in declaration order (placeholders index this list).
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }
    /// Payloads sorted by distribution, largest first; never empty.
    pub fn payloads(&self) -> &[Payload] {
        &self.payloads
    }
    /// The header template, whose rendering gives the application properties.
    pub fn header(&self) -> Option<&Template> {
        self.header.as_ref()
    }
    /// Send intervals (ms) from the ITS `Intervals` setting; the engine itself does not schedule.
    pub fn intervals(&self) -> &Intervals {
        &self.intervals
    }
}

fn check_distribution(payloads: &[Payload], field: &str) -> Result<(), ConfigError> {
    if payloads.iter().any(|p| !(1..=100).contains(&p.distribution)) {
        return Err(ConfigError::OutOfRange {
            field: field.into(),
            problem: "a distribution must be between 1 and 100",
        });
    }
    let total: u32 = payloads.iter().map(|p| u32::from(p.distribution)).sum();
    if payloads.len() > 1 && total < 100 {
        return Err(ConfigError::DistributionTotal { field: field.into(), total });
    }
    Ok(())
}

fn section_payload(item: &Value, field: &str, vars: &[Variable]) -> Result<Payload, ConfigError> {
    let obj = item.as_object().ok_or_else(|| ConfigError::WrongType { field: field.into(), expected: "an object" })?;
    let sub = |k: &str| {
        let mut s = String::from(field);
        s.push('.');
        s.push_str(k);
        s
    };
    let get = |k: &str| obj.get_ignore_case(k).filter(|v| **v != Value::Null);
    let device_id = match get("deviceId") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ConfigError::WrongType { field: sub("deviceId"), expected: "a string" }),
    };
    let distribution = match get("distribution") {
        None => 100,
        Some(v) => {
            let n = number_or_numeric_string(v);
            match n {
                Some(n) if n.fract() == 0.0 && (1.0..=100.0).contains(&n) => n as u8,
                _ => {
                    return Err(ConfigError::OutOfRange {
                        field: sub("distribution"),
                        problem: "must be a whole number between 1 and 100",
                    })
                }
            }
        }
    };
    let text = |k: &str| match get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ Value::Object(_)) => Ok(flatten_like_dotnet(v).to_string()),
        Some(_) => Err(ConfigError::WrongType { field: sub(k), expected: "a string or an object" }),
        None => Err(ConfigError::Missing { field: sub(k), kind: "this payload type" }),
    };
    let kind = match get("type").and_then(Value::as_str) {
        Some("template") => PayloadKind::Template(template(&text("template")?, vars, sub("template"))?),
        Some("fix") => PayloadKind::Fix(text("value")?.into_bytes()),
        other => {
            return Err(ConfigError::UnknownPayloadType {
                field: sub("type"),
                found: other.unwrap_or_default().to_owned(),
            })
        }
    };
    Ok(Payload { distribution, device_id, kind })
}

/// .NET configuration's key order for one path segment: integers first (numerically), then text
/// ignoring case (`ConfigurationKeyComparer`).
fn dotnet_key_cmp(a: &str, b: &str) -> Ordering {
    match (a.parse::<i32>(), b.parse::<i32>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase()),
    }
}

/// What ITS makes of a payload written as a JSON object: one level, keys `a:b:0`, values as .NET
/// configuration strings (`True`/`False` for booleans, nulls dropped).
fn flatten_like_dotnet(v: &Value) -> Value {
    fn walk(v: &Value, prefix: &str, out: &mut Object) {
        let mut children: Vec<(String, &Value)> = Vec::new();
        match v {
            Value::Object(o) => {
                for (k, v) in o.iter() {
                    children.push((k.to_owned(), v));
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    children.push((i.to_string(), v));
                }
            }
            Value::Null => return,
            leaf => {
                let s = match leaf {
                    Value::String(s) => s.clone(),
                    Value::Bool(true) => "True".into(),
                    Value::Bool(false) => "False".into(),
                    other => other.to_string(),
                };
                out.insert(prefix.to_owned(), Value::String(s));
                return;
            }
        }
        crate::insertion_sort_by(&mut children, |a, b| dotnet_key_cmp(&a.0, &b.0) == Ordering::Less);
        for (k, child) in children {
            let key = if prefix.is_empty() { k } else { [prefix, ":", &k].concat() };
            walk(child, &key, out);
        }
    }
    let mut out = Object::new();
    walk(v, "", &mut out);
    Value::Object(out)
}

fn simple_payloads(root: &Object, vars: &[Variable]) -> Result<Vec<Payload>, ConfigError> {
    let get = |k: &str| root.get_ignore_case(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    let default_template = || match (get("Template"), root.get_ignore_case("Template")) {
        (Some(t), _) => template(t, vars, "Template"),
        // hubsim extension: a template written as a JSON object is used as its compact text
        // (ITS ignores it and falls back to its default template).
        (None, Some(v @ Value::Object(_))) => template(&v.to_string(), vars, "Template"),
        _ => template(ITS_DEFAULT_TEMPLATE, vars, "Template"),
    };
    let mut payloads = Vec::new();
    if let Some(spec) = root.get_ignore_case("PayloadDistribution").and_then(Value::as_str) {
        for (kind, params) in distribution_entries(spec) {
            let mut field = String::from("PayloadDistribution: ");
            field.push_str(&kind);
            field.push('(');
            field.push_str(params);
            field.push(')');
            let mut parts = params.split(',').filter(|p| !p.is_empty());
            let distribution = match parts.next().map(|p| p.trim().replace('%', "").parse::<u8>()) {
                Some(Ok(d @ 1..=100)) => d,
                _ => {
                    return Err(ConfigError::OutOfRange {
                        field,
                        problem: "the first parameter must be a percentage from 1 to 100",
                    })
                }
            };
            let second = parts.next().map(|p| p.trim());
            let kind = match (kind.as_str(), second) {
                ("fixsize", Some(n)) => match n.parse::<usize>() {
                    Ok(n) if n <= 1 << 20 => PayloadKind::Fix(vec![0; n]),
                    _ => {
                        return Err(ConfigError::OutOfRange {
                            field,
                            problem: "the size must be a number of bytes up to 1048576",
                        })
                    }
                },
                ("fix", Some(b64)) => PayloadKind::Fix(base64_decode(b64).ok_or(ConfigError::Base64 { field })?),
                ("template", None) => PayloadKind::Template(default_template()?),
                ("template", Some(name)) if name.eq_ignore_ascii_case("default") => {
                    PayloadKind::Template(default_template()?)
                }
                ("template", Some(name)) => match get(name) {
                    Some(t) => PayloadKind::Template(template(t, vars, name)?),
                    None => return Err(ConfigError::UnknownNamedTemplate { field, name: name.to_owned() }),
                },
                _ => return Err(ConfigError::OutOfRange { field, problem: "fix and fixSize need a second parameter" }),
            };
            payloads.push(Payload { distribution, device_id: None, kind });
        }
        check_distribution(&payloads, "PayloadDistribution")?;
    }
    if payloads.is_empty() {
        payloads.push(Payload { distribution: 100, device_id: None, kind: PayloadKind::Template(default_template()?) });
    }
    Ok(payloads)
}

/// The entries of a `PayloadDistribution` string as ITS's regular expression finds them:
/// `(fixsize|template|fix)\(` (any case) followed by a run of `[0-9a-zA-Z,=` whitespace `[]`; the
/// closing parenthesis is not required. Returns (lower-case type, parameter text).
fn distribution_entries(spec: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = spec.as_bytes();
    while i < b.len() {
        let mut matched = false;
        for kind in ["fixsize(", "template(", "fix("] {
            let end = i + kind.len();
            if end <= b.len() && b[i..end].eq_ignore_ascii_case(kind.as_bytes()) {
                let run = b[end..]
                    .iter()
                    .take_while(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b',' | b'=' | b'[' | b' ' | b'\t' | b'\n' | b'\r')
                    })
                    .count();
                if run > 0 {
                    out.push((kind[..kind.len() - 1].to_owned(), &spec[end..end + run]));
                    i = end + run;
                    matched = true;
                    break;
                }
            }
        }
        if !matched {
            i += 1;
        }
    }
    out
}

/// Standard base64 with padding, as .NET's `Convert.FromBase64String` (whitespace ignored).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut chars: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.bytes() {
        if !c.is_ascii_whitespace() {
            chars.push(c);
        }
    }
    if !chars.len().is_multiple_of(4) {
        return None;
    }
    let pad = chars.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let mut acc = 0u32;
    for (n, &c) in chars[..chars.len() - pad].iter().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        if n % 4 == 3 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
        }
    }
    match pad {
        1 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        2 => out.push((acc >> 4) as u8),
        _ => {}
    }
    Some(out)
}

fn interval_list(v: &Value, field: &str) -> Result<Vec<u32>, ConfigError> {
    let bad =
        || ConfigError::OutOfRange { field: field.into(), problem: "intervals must be whole numbers of ms from 1" };
    let one = |v: &Value| -> Result<u32, ConfigError> {
        let n = number_or_numeric_string(v).ok_or_else(bad)?;
        if n.fract() == 0.0 && (1.0..=u32::MAX as f64).contains(&n) {
            Ok(n as u32)
        } else {
            Err(bad())
        }
    };
    let mut list = Vec::new();
    match v {
        Value::Array(a) => {
            for x in a {
                list.push(one(x)?);
            }
        }
        Value::String(s) => {
            for p in s.split([',', ';']).filter(|p| !p.is_empty()) {
                list.push(one(&Value::String(p.into()))?);
            }
        }
        other => list.push(one(other)?),
    }
    if list.is_empty() {
        return Err(bad());
    }
    Ok(list)
}

/// A number written as a JSON number or as a numeric string (`5`, `"5"`), as ITS's settings are.
fn number_or_numeric_string(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| hubsim_proto::num::parse_f64(s.trim())))
}

/// Shortest interval of a saved message's schedule (`every`), ms: the web app's saved messages and `hubsim
/// simulate --template` read the same schedule.
pub const MIN_EVERY_MS: u32 = 10;
/// Longest schedule interval, jitter or duration: one day in ms.
pub const MAX_MS: u32 = 86_400_000;
/// The most messages one schedule sends (its `count`).
pub const MAX_COUNT: u32 = 1_000_000;

/// The `MessageCount` of an Iot-Telemetry-Simulator configuration `root` (messages per device; 0, the default,
/// means no limit): a whole number from 0 to `u32::MAX`, written as a number or a numeric string. Read apart
/// from [`Config`] (a runner's setting, like the intervals): the web app's import uses it as the schedule's
/// count.
///
/// # Errors
/// [`ConfigError::OutOfRange`] for anything else.
pub fn message_count(root: &Value) -> Result<u32, ConfigError> {
    let Some(v) = root.as_object().and_then(|o| o.get_ignore_case("MessageCount")).filter(|v| **v != Value::Null)
    else {
        return Ok(0);
    };
    let n = number_or_numeric_string(v);
    match n {
        Some(n) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => Ok(n as u32),
        _ => Err(ConfigError::OutOfRange {
            field: "MessageCount".into(),
            problem: "the message count must be a whole number from 0 (no limit)",
        }),
    }
}

fn intervals(root: &Object) -> Result<Intervals, ConfigError> {
    let Some((name, v)) = ["Intervals", "Interval"].iter().find_map(|k| root.get_ignore_case(k).map(|v| (*k, v)))
    else {
        return Ok(Intervals::default());
    };
    match v {
        Value::Object(o) => {
            let mut per_device = Vec::new();
            for (device, list) in o.iter() {
                per_device.push((device.to_owned(), interval_list(list, &[name, ".", device].concat())?));
            }
            Ok(Intervals { default_ms: vec![1000], per_device })
        }
        other => Ok(Intervals { default_ms: interval_list(other, name)?, per_device: Vec::new() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_count_is_read_like_the_intervals() {
        let count = |t: &str| message_count(&hubsim_proto::json::parse_relaxed(t).unwrap());
        assert_eq!(count("{}"), Ok(0));
        assert_eq!(count("{MessageCount: 5}"), Ok(5));
        assert_eq!(count("{messagecount: '7'}"), Ok(7));
        assert_eq!(count("{MessageCount: null}"), Ok(0));
        for bad in ["{MessageCount: -1}", "{MessageCount: 1.5}", "{MessageCount: 'x'}", "{MessageCount: 5e9}"] {
            assert!(matches!(count(bad), Err(ConfigError::OutOfRange { .. })), "{bad}");
        }
    }

    #[test]
    fn base64_matches_dotnet() {
        assert_eq!(base64_decode("MTA=").unwrap(), b"10");
        assert_eq!(base64_decode("NjU=").unwrap(), b"65");
        assert_eq!(base64_decode("aGk/Pz8+").unwrap(), b"hi???>");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("aaaaBBBBBCCC").unwrap().len(), 9);
        assert_eq!(base64_decode("abc"), None);
        assert_eq!(base64_decode("a==="), None);
        assert_eq!(base64_decode("ab*d"), None);
    }

    #[test]
    fn distribution_entries_follow_the_its_regex() {
        assert_eq!(
            distribution_entries("fixSize(10,12) template(25,    default) fix(65, aaaaBBBBBCCC)"),
            [
                ("fixsize".to_owned(), "10,12"),
                ("template".to_owned(), "25,    default"),
                ("fix".to_owned(), "65, aaaaBBBBBCCC")
            ]
        );
        // The parameter run stops at characters outside the class; ')' is not required.
        assert_eq!(distribution_entries("TEMPLATE(50 fix()"), [("template".to_owned(), "50 fix")]);
    }

    #[test]
    fn dotnet_key_order() {
        let mut keys = vec!["value", "10", "A_second", "2", "b"];
        keys.sort_by(|a, b| dotnet_key_cmp(a, b));
        assert_eq!(keys, ["2", "10", "A_second", "b", "value"]);
    }

    #[test]
    fn objects_flatten_like_dotnet_configuration() {
        let v = json::parse(r#"{"z": {"b": 1.5, "a": [true, null, "x"]}, "A": false}"#).unwrap();
        assert_eq!(flatten_like_dotnet(&v).to_string(), r#"{"A":"False","z:a:0":"True","z:a:2":"x","z:b":"1.5"}"#);
    }

    #[test]
    fn intervals_in_every_its_form() {
        let load = |t: &str| intervals(json::parse_relaxed(t).unwrap().as_object().unwrap());
        assert_eq!(load("{}").unwrap(), Intervals::default());
        assert_eq!(load("{Interval: '1000; 5000'}").unwrap().default_ms, [1000, 5000]);
        assert_eq!(load("{Intervals: '5000,'}").unwrap().default_ms, [5000]);
        assert_eq!(load("{Intervals: 250}").unwrap().default_ms, [250]);
        let per = load("{Intervals: {sim000001: 10000, sim000002: [20000, 30000, 15000]}}").unwrap();
        assert_eq!(per.for_device("sim000002"), [20000, 30000, 15000]);
        assert_eq!(per.for_device("sim000001"), [10000]);
        assert_eq!(per.for_device("sim000003"), [1000]);
        assert_eq!(
            load("{Intervals: {sim000001: [1, -10]}}").unwrap_err().to_string(),
            "Intervals.sim000001: intervals must be whole numbers of ms from 1"
        );
        assert!(load("{Intervals: 'aaaa'}").is_err());
        assert!(load("{Intervals: '0'}").is_err());
    }
}
