//! Saved messages: named messages (a template with its variables and header, or plain text), their properties,
//! QoS and schedule, kept in `localStorage`, exported and imported as a JSON file; an Iot-Telemetry-Simulator
//! configuration imports as one message. Plain Rust, tested natively; the browser side is in `components::templates`.
//!
//! Bounds (nothing from a file or from storage grows without limit): [`MAX_SAVED`] messages, [`MAX_TEXT`] bytes
//! per body or header, [`MAX_VARIABLES`] variables and [`MAX_PROPERTIES`] properties per message, names of
//! [`MAX_NAME`] characters, import files of [`MAX_FILE`] bytes. A bad import is refused as a whole: the library
//! is unchanged and the error says what and where.
//!
//! File format (also the storage format): `{"hubsimMessages": 1, "messages": [message, ...]}` where a message is
//! the saved message `hubsim simulate --template` reads (`crates/hubsim-device/src/message.rs`): `{name,
//! template, variables: [ITS declarations], header, qos, properties: {name: value}}`, plus the schedule (`every`,
//! `jitter`, `count`, `duration`, in ms); a plain-text message has `text` instead of `template` and no variables.
//! A file holding one saved message imports too, and each message downloads on its own for `hubsim simulate`.
//! Variables are written with [`Variable::to_json`], so they load in Iot-Telemetry-Simulator too.

use hubsim_proto::json::{self, Number, Object, Value};
use hubsim_template::{check_keys, Config, PayloadKind, Variable, SAVED_MESSAGE_KEYS};

/// Most saved messages.
pub const MAX_SAVED: usize = 50;
/// Longest body or header template, in bytes.
pub const MAX_TEXT: usize = 16 * 1024;
/// Most variables per message.
pub const MAX_VARIABLES: usize = 32;
/// Most application properties per message.
pub const MAX_PROPERTIES: usize = 20;
/// Longest message name, in characters.
pub const MAX_NAME: usize = 64;
/// Largest import file, in bytes.
pub const MAX_FILE: usize = 1024 * 1024;
/// The schedule's limits (interval, jitter, duration, count), shared with `hubsim simulate --template`.
pub use hubsim_template::{MAX_COUNT, MAX_MS, MIN_EVERY_MS};

/// One saved message, and the composer's template-mode draft.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub name: String,
    /// A template (rendered at each send) or plain text (sent as written).
    pub template: bool,
    pub body: String,
    /// Header template: its rendering is a JSON object of application properties (template mode only).
    pub header: String,
    pub variables: Vec<Variable>,
    /// Fixed application properties.
    pub properties: Vec<(String, String)>,
    pub qos: u8,
    /// Schedule: every `every_ms` ± `jitter_ms`, `count` times (0: no limit) and for `duration_ms` (0: no limit).
    pub every_ms: u32,
    pub jitter_ms: u32,
    pub count: u32,
    pub duration_ms: u32,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            name: "telemetry".into(),
            template: true,
            body: "{\"deviceId\": \"$.DeviceId\", \"n\": $.Counter, \"time\": \"$.Time\"}".into(),
            header: String::new(),
            variables: hubsim_template::variable::default_variables(),
            properties: Vec::new(),
            qos: 1,
            every_ms: 1000,
            jitter_ms: 0,
            count: 10,
            duration_ms: 0,
        }
    }
}

fn cat(parts: &[&str]) -> String {
    parts.concat()
}

fn int(n: u32) -> Value {
    Value::Number(Number::Int(i64::from(n)))
}

impl Message {
    /// The engine configuration of a template message; the error names the field and position
    /// (`Template: line 1, col 9: unknown variable $.Tmp; did you mean $.Temp?`).
    pub fn config(&self) -> Result<Config, String> {
        let header = Some(self.header.as_str()).filter(|h| !h.trim().is_empty());
        Config::new(&self.body, self.variables.clone(), header).map_err(|e| e.to_string())
    }

    /// Whether the rendered body is meant to be JSON (and so is checked before sending).
    pub fn is_json(&self) -> bool {
        self.body.trim_start().starts_with(['{', '['])
    }

    /// Schedule's delay before the next send, given a uniform random number in `[0, 1)` from the caller.
    pub fn next_delay(&self, rand01: f64) -> u32 {
        let j = f64::from(self.jitter_ms.min(self.every_ms));
        let d = f64::from(self.every_ms) + (rand01 * 2.0 - 1.0) * j;
        (d as u32).max(MIN_EVERY_MS)
    }

    /// Whether a schedule is over after `sent` messages and `elapsed_ms`.
    pub fn schedule_done(&self, sent: u32, elapsed_ms: f64) -> bool {
        (self.count > 0 && sent >= self.count) || (self.duration_ms > 0 && elapsed_ms >= f64::from(self.duration_ms))
    }

    /// The message as a JSON object of the file format.
    pub fn to_json(&self) -> Value {
        let mut o = Object::new();
        let s = |v: &str| Value::String(v.to_owned());
        o.insert("name".into(), s(&self.name));
        o.insert((if self.template { "template" } else { "text" }).into(), s(&self.body));
        if self.template {
            let mut vars = Vec::with_capacity(self.variables.len());
            for v in &self.variables {
                vars.push(v.to_json());
            }
            o.insert("variables".into(), Value::Array(vars));
            if !self.header.is_empty() {
                o.insert("header".into(), s(&self.header));
            }
        }
        let mut props = Object::new();
        for (k, v) in &self.properties {
            props.insert(k.clone(), s(v));
        }
        o.insert("properties".into(), Value::Object(props));
        o.insert("qos".into(), int(u32::from(self.qos)));
        o.insert("every".into(), int(self.every_ms));
        o.insert("jitter".into(), int(self.jitter_ms));
        o.insert("count".into(), int(self.count));
        o.insert("duration".into(), int(self.duration_ms));
        Value::Object(o)
    }

    /// Reads one message of the file format; `at` names it in errors (`messages[2]`).
    pub fn from_json(v: &Value, at: &str) -> Result<Message, String> {
        Self::read(v, at, true)
    }

    /// The composer's template draft as stored in this browser (the file format): kept as it was being edited,
    /// so neither its name nor its template is checked (a draft may be half written); its sizes are.
    pub fn draft_from_json(v: &Value) -> Result<Message, String> {
        Self::read(v, "draft", false)
    }

    fn read(v: &Value, at: &str, check: bool) -> Result<Message, String> {
        let o = v.as_object().ok_or_else(|| cat(&[at, ": expected an object"]))?;
        if check {
            check_keys(o, SAVED_MESSAGE_KEYS, false, at).map_err(|e| e.to_string())?;
        }
        let field = |k: &str| cat(&[at, ".", k]);
        // As `hubsim simulate` reads them: a template or header may be a JSON object, used as its JSON text.
        let text = |k: &str, max: usize| -> Result<String, String> {
            let s = match o.get(k) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Object(_)) if k != "name" && k != "text" => v.to_string(),
                Some(_) => return Err(cat(&[&field(k), ": expected a string"])),
            };
            if s.len() > max {
                return Err(cat(&[&field(k), ": longer than ", &max.to_string(), " bytes"]));
            }
            Ok(s)
        };
        let number = |k: &str, lo: u32, hi: u32, default: u32| -> Result<u32, String> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (u64::from(lo)..=u64::from(hi)).contains(n))
                    .map(|n| n as u32)
                    .ok_or_else(|| {
                        cat(&[&field(k), ": expected a whole number from ", &lo.to_string(), " to ", &hi.to_string()])
                    }),
            }
        };
        let name = text("name", MAX_NAME * 4)?;
        let name = match check_name(&name) {
            Ok(n) => n,
            Err(_) if !check => name.chars().take(MAX_NAME).collect(),
            Err(e) => return Err(cat(&[&field("name"), ": ", &e])),
        };
        let template = match (o.get("template"), o.get("text")) {
            (Some(_), _) => true,
            (None, Some(_)) => false,
            (None, None) => return Err(cat(&[at, ": needs a template or a text"])),
        };
        let variables = match o.get("variables") {
            None | Some(Value::Null) => Vec::new(),
            // The environment-variable form ITS and `hubsim simulate` accept: the list as a relaxed-JSON string.
            Some(Value::String(t)) if t.len() <= MAX_TEXT => {
                let list = Variable::parse_list(t).map_err(|e| cat(&[&field("variables"), ": ", &e.to_string()]))?;
                if list.len() > MAX_VARIABLES {
                    return Err(cat(&[&field("variables"), ": more than ", &MAX_VARIABLES.to_string(), " variables"]));
                }
                list
            }
            Some(Value::Array(a)) if a.len() > MAX_VARIABLES => {
                return Err(cat(&[&field("variables"), ": more than ", &MAX_VARIABLES.to_string(), " variables"]))
            }
            Some(v) => Variable::list_from_json(v, &field("variables")).map_err(|e| e.to_string())?,
        };
        let properties = match o.get("properties") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(p)) if p.len() <= MAX_PROPERTIES => {
                let mut out = Vec::with_capacity(p.len());
                for (k, v) in p.iter() {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        _ => {
                            return Err(cat(&[&field("properties"), ".", k, ": expected a string, number or boolean"]))
                        }
                    };
                    if k.len() > MAX_NAME * 4 || v.len() > MAX_TEXT {
                        return Err(cat(&[&field("properties"), ".", k, ": too long"]));
                    }
                    out.push((k.to_owned(), v));
                }
                out
            }
            Some(_) => {
                return Err(cat(&[
                    &field("properties"),
                    ": expected an object of at most ",
                    &MAX_PROPERTIES.to_string(),
                    " string values",
                ]))
            }
        };
        let m = Message {
            name,
            template,
            body: text(if template { "template" } else { "text" }, MAX_TEXT)?,
            header: text("header", MAX_TEXT)?,
            variables,
            properties,
            qos: number("qos", 0, 1, 1)? as u8,
            every_ms: number("every", MIN_EVERY_MS, MAX_MS, 1000)?,
            jitter_ms: number("jitter", 0, MAX_MS, 0)?,
            count: number("count", 0, MAX_COUNT, 0)?,
            duration_ms: number("duration", 0, MAX_MS, 0)?,
        };
        if m.template && check {
            m.config().map_err(|e| cat(&[at, ": ", &e]))?;
        }
        Ok(m)
    }
}

/// A message name: trimmed, not empty, at most [`MAX_NAME`] characters, no control characters.
pub fn check_name(name: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() {
        return Err("a name is needed".into());
    }
    if n.chars().count() > MAX_NAME || n.chars().any(char::is_control) {
        return Err(cat(&["at most ", &MAX_NAME.to_string(), " characters, no control characters"]));
    }
    Ok(n.to_owned())
}

/// The library as the file (and storage) format.
pub fn export(messages: &[Message]) -> String {
    let mut o = Object::new();
    o.insert("hubsimMessages".into(), int(1));
    let mut list = Vec::with_capacity(messages.len());
    for m in messages {
        list.push(m.to_json());
    }
    o.insert("messages".into(), Value::Array(list));
    Value::Object(o).to_string()
}

/// Reads a file: hubsim's format (its messages) or an Iot-Telemetry-Simulator configuration (one message,
/// named `file_name` without its extension). Relaxed JSON is accepted in both.
pub fn read_file(text: &str, file_name: &str) -> Result<(Vec<Message>, String), String> {
    if text.len() > MAX_FILE {
        return Err(cat(&["the file is larger than ", &(MAX_FILE / 1024).to_string(), " KB"]));
    }
    let v =
        json::parse_relaxed(text.trim_start_matches('\u{feff}')).map_err(|e| cat(&["not JSON: ", &e.to_string()]))?;
    let o =
        v.as_object().ok_or("expected a JSON object (saved messages or an Iot-Telemetry-Simulator configuration)")?;
    // One saved message (what `hubsim simulate --template` reads): a string `name` and a `template` or `text`.
    if o.get("name").is_some_and(|n| n.as_str().is_some()) && (o.get("template").is_some() || o.get("text").is_some()) {
        let m = Message::from_json(&v, "message")?;
        let what = cat(&["the saved message \"", &m.name, "\""]);
        return Ok((vec![m], what));
    }
    if let Some(list) = o.get("messages").filter(|_| o.get("hubsimMessages").is_some()) {
        let items = list.as_array().ok_or("messages: expected an array")?;
        if items.len() > MAX_SAVED {
            return Err(cat(&["more than ", &MAX_SAVED.to_string(), " messages"]));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(Message::from_json(item, &cat(&["messages[", &i.to_string(), "]"]))?);
        }
        let n = out.len().to_string();
        return Ok((out, cat(&[&n, " saved message(s)"])));
    }
    let config =
        Config::from_its(&v).map_err(|e| cat(&["not an Iot-Telemetry-Simulator configuration: ", &e.to_string()]))?;
    let mut templates = config.payloads().iter().filter_map(|p| match &p.kind {
        PayloadKind::Template(t) => Some(t.source()),
        PayloadKind::Fix(_) => None,
    });
    let body = templates.next().ok_or("the configuration has only fixed payloads; a template is needed")?;
    if body.len() > MAX_TEXT {
        return Err(cat(&["Template: longer than ", &MAX_TEXT.to_string(), " bytes"]));
    }
    if config.variables().len() > MAX_VARIABLES {
        return Err(cat(&["Variables: more than ", &MAX_VARIABLES.to_string(), " variables"]));
    }
    let count = hubsim_template::config::message_count(&v)
        .map_err(|e| cat(&["not an Iot-Telemetry-Simulator configuration: ", &e.to_string()]))?;
    let skipped = config.payloads().len() - 1;
    let stem = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
    let name = check_name(&stem.chars().take(MAX_NAME).collect::<String>()).unwrap_or_else(|_| "imported".into());
    let m = Message {
        name,
        template: true,
        body: body.to_owned(),
        header: config.header().map(|h| h.source().to_owned()).unwrap_or_default(),
        variables: config.variables().to_vec(),
        properties: Vec::new(),
        qos: 1,
        every_ms: config.intervals().default_ms[0].clamp(MIN_EVERY_MS, MAX_MS),
        jitter_ms: 0,
        count: count.min(MAX_COUNT),
        duration_ms: 0,
    };
    m.config()?;
    let mut note = cat(&["an Iot-Telemetry-Simulator configuration as \"", &m.name, "\""]);
    if skipped > 0 {
        note.push_str(&cat(&[
            "; only its main payload is used (",
            &skipped.to_string(),
            " other payload(s) left out)",
        ]));
    }
    Ok((vec![m], note))
}

/// Adds or replaces (same name) `m`; refused when the library is full: [`MAX_SAVED`] messages, or a stored
/// library larger than [`MAX_FILE`] (what is stored must read back, as a file and at the next page load).
pub fn upsert(list: &mut Vec<Message>, m: Message) -> Result<(), String> {
    let mut next = list.clone();
    match next.iter().position(|x| x.name == m.name) {
        Some(i) => next[i] = m,
        None if next.len() >= MAX_SAVED => {
            return Err(cat(&["the library is full (", &MAX_SAVED.to_string(), " messages): delete one first"]))
        }
        None => next.push(m),
    }
    if export(&next).len() > MAX_FILE {
        return Err(cat(&[
            "the library is full (it would be larger than ",
            &(MAX_FILE / 1024).to_string(),
            " KB): delete or shorten a message first",
        ]));
    }
    *list = next;
    Ok(())
}

/// Merges an import into a copy of `list`; all or nothing.
pub fn merge(list: &[Message], new: Vec<Message>) -> Result<Vec<Message>, String> {
    let mut out = list.to_vec();
    for m in new {
        upsert(&mut out, m)?;
    }
    Ok(out)
}

/// The stored library (storage text, or `None` when nothing is stored: the examples).
pub fn load(stored: Option<&str>) -> (Vec<Message>, Option<String>) {
    match stored {
        None => (examples(), None),
        Some(t) => match read_file(t, "stored") {
            Ok((list, _)) => (list, None),
            Err(e) => (examples(), Some(cat(&["the stored messages were not used: ", &e]))),
        },
    }
}

fn var(decl: &str) -> Vec<Variable> {
    Variable::parse_list(decl).unwrap_or_default()
}

/// The built-in examples: a thermostat, a GPS tracker with a moving position, a machine with an on/off state.
pub fn examples() -> Vec<Message> {
    vec![
        Message {
            name: "thermostat".into(),
            body: "{\"deviceId\": \"$.DeviceId\", \"temperature\": $.Temperature, \"humidity\": $.Humidity, \"time\": \"$.Time\"}".into(),
            header: "{\"sensor\": \"thermostat\"}".into(),
            variables: var("[{name: 'Temperature', walk: true, min: 15, max: 30, step: 0.3, start: 21, decimals: 1}, {name: 'Humidity', random: true, min: 40, max: 60}]"),
            every_ms: 1000,
            count: 0,
            ..Message::default()
        },
        Message {
            name: "gps tracker".into(),
            body: "{\"lat\": $.Lat, \"lon\": $.Lon, \"speed\": $.Speed, \"at\": $.At}".into(),
            variables: var("[{name: 'Lat', walk: true, min: 47.55, max: 47.7, step: 0.0005, start: 47.62, decimals: 5}, {name: 'Lon', walk: true, min: -122.45, max: -122.2, step: 0.0005, start: -122.33, decimals: 5}, {name: 'Speed', sine: true, period: 60000, amplitude: 20, offset: 40, noise: 3, decimals: 1}, {name: 'At', timestamp: true, format: 'epochMs', jitter: 50}]"),
            every_ms: 2000,
            jitter_ms: 200,
            count: 0,
            ..Message::default()
        },
        Message {
            name: "machine state".into(),
            body: "{\"running\": $.Running, \"mode\": \"$.Mode\", \"cycles\": $.Cycles}".into(),
            header: "{\"kind\": \"status\"}".into(),
            variables: var("[{name: 'Running', probability: 0.8}, {name: 'Mode', values: ['auto', 'manual', 'service'], weights: [8, 3, 1]}, {name: 'Cycles', min: 1}]"),
            every_ms: 60_000,
            count: 0,
            ..Message::default()
        },
    ]
}

/// The generator kinds of the variables editor: `(key, label)`; the key is what [`new_variable`] takes.
pub const KINDS: [(&str, &str); 11] = [
    ("counter", "counter"),
    ("random", "random integer"),
    ("randomDouble", "random decimal"),
    ("values", "random pick from values"),
    ("sequence", "sequence (cycle through values)"),
    ("customLengthString", "random string"),
    ("walk", "random walk"),
    ("sine", "sine wave"),
    ("weighted", "weighted choice"),
    ("probability", "boolean with probability"),
    ("timestamp", "timestamp with jitter"),
];

/// The editor's key for a variable's kind.
pub fn kind_key(v: &Variable) -> &'static str {
    use hubsim_template::Kind as K;
    match &v.kind {
        K::Counter { .. } => "counter",
        K::RandomInt { .. } => "random",
        K::RandomDouble { .. } => "randomDouble",
        K::Pick { weights, .. } if weights.is_empty() => "values",
        K::Pick { .. } => "weighted",
        K::Sequence { .. } => "sequence",
        K::RandomString { .. } => "customLengthString",
        K::Walk { .. } => "walk",
        K::Sine { .. } => "sine",
        K::Bool { .. } => "probability",
        K::Timestamp { .. } => "timestamp",
    }
}

/// A variable of kind `kind` (a [`KINDS`] key) with usable defaults.
pub fn new_variable(name: &str, kind: &str) -> Result<Variable, String> {
    let decl = match kind {
        "counter" => "{min: 1, step: 1}",
        "random" => "{random: true, min: 0, max: 100}",
        "randomDouble" => "{randomDouble: true, min: 0, max: 1, decimals: 2}",
        "values" => "{values: ['a', 'b', 'c']}",
        "sequence" => "{sequence: true, values: ['a', 'b', 'c']}",
        "customLengthString" => "{customLengthString: 8}",
        "walk" => "{walk: true, min: 0, max: 100, step: 1, start: 50}",
        "sine" => "{sine: true, period: 60000, amplitude: 10, offset: 20, noise: 0}",
        "weighted" => "{values: ['ok', 'warning', 'error'], weights: [90, 9, 1]}",
        "probability" => "{probability: 0.5}",
        "timestamp" => "{timestamp: true, jitter: 0, format: 'iso'}",
        _ => return Err(cat(&["unknown generator ", kind])),
    };
    let mut v = json::parse_relaxed(decl).map_err(|e| e.to_string())?;
    if let Value::Object(o) = &mut v {
        o.insert("name".into(), Value::String(name.to_owned()));
    }
    Variable::from_json(&v, "variable").map_err(|e| e.to_string())
}

/// The editor's fields of a variable's kind: `(key, label)`, keys as in the declaration.
pub fn fields(v: &Variable) -> &'static [(&'static str, &'static str)] {
    match kind_key(v) {
        "counter" => &[("min", "Start (min)"), ("max", "Wrap after (max)"), ("step", "Step")],
        // Decimals only where the numbers have a fraction (an integer with decimals would read 73.00).
        "random" => &[("min", "Min (inclusive)"), ("max", "Max (exclusive)")],
        "randomDouble" => &[("min", "Min (inclusive)"), ("max", "Max (exclusive)"), ("decimals", "Decimals")],
        "values" | "sequence" => &[("values", "Values (comma-separated)")],
        "weighted" => &[("values", "Values (comma-separated)"), ("weights", "Weights (comma-separated)")],
        "customLengthString" => &[("customLengthString", "Length")],
        "walk" => &[("start", "Start"), ("step", "Step"), ("min", "Min"), ("max", "Max"), ("decimals", "Decimals")],
        "sine" => &[
            ("period", "Period (ms)"),
            ("amplitude", "Amplitude"),
            ("offset", "Offset"),
            ("noise", "Noise"),
            ("decimals", "Decimals"),
        ],
        "probability" => &[("probability", "Probability of true (0-1)")],
        _ => &[("jitter", "Jitter (ms)"), ("format", "Format (iso, epochMs, epoch)")],
    }
}

/// The text the editor shows for `field` of `v`.
pub fn field_text(v: &Variable, field: &str) -> String {
    let decl = v.to_json();
    match decl.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => list_text(a),
        Some(x) => x.to_string(),
    }
}

/// Values as the editors show them: comma-separated, a string as written and anything else as JSON.
pub fn list_text(values: &[Value]) -> String {
    let mut out = String::new();
    for (i, x) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match x.as_str() {
            Some(s) => out.push_str(s),
            None => out.push_str(&x.to_string()),
        }
    }
    out
}

/// One list item as the user typed it: JSON when it parses (numbers, `true`, quoted text), else the text.
fn item(s: &str) -> Value {
    let s = s.trim();
    match json::parse(s) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::String(_) | Value::Null)) => v,
        _ => Value::String(s.to_owned()),
    }
}

/// Sets `field` of `v` from the editor's text, validated by the engine (its error names the problem).
pub fn set_field(v: &Variable, field: &str, text: &str) -> Result<Variable, String> {
    let Value::Object(mut o) = v.to_json() else { return Err("not a declaration".into()) };
    let t = text.trim();
    let value = match field {
        "name" => {
            let ok = !t.is_empty() && t.len() <= MAX_NAME && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err("a name is letters, digits and _ (it is written $.Name in the template)".into());
            }
            Value::String(t.to_owned())
        }
        "values" | "weights" => {
            if t.len() > MAX_TEXT {
                return Err("too long".into());
            }
            let mut list = Vec::new();
            for s in t.split(',') {
                if !s.trim().is_empty() {
                    list.push(item(s));
                }
            }
            if list.is_empty() && field == "values" {
                return Err(cat(&[&v.name, ".values: give at least one value (comma-separated)"]));
            }
            Value::Array(list)
        }
        "format" => Value::String(t.to_owned()),
        _ if t.is_empty() => Value::Null,
        _ => match json::parse(t) {
            Ok(n @ Value::Number(_)) => n,
            Err(e) if e.kind == json::JsonErrorKind::NumberOutOfRange => {
                return Err(cat(&[field, ": ", &e.kind.to_string()]))
            }
            _ => return Err(cat(&[field, ": not a number"])),
        },
    };
    // New values of a weighted choice keep the weights they have; added ones weigh 1.
    if let (Value::Array(vals), Some(Value::Array(w))) = (&value, o.get("weights")) {
        let mut w = w.clone();
        w.resize(vals.len(), Value::Number(Number::Int(1)));
        o.insert("weights".into(), Value::Array(w));
    }
    o.insert(field.to_owned(), value.clone());
    let out = Variable::from_json(&Value::Object(o), &v.name).map_err(|e| e.to_string())?;
    // A range whose bounds are crossed is read by ITS's rules as "no range": say so instead of dropping it.
    if value != Value::Null && field != "name" && out.to_json().get(field).is_none() {
        let why = if matches!(field, "min" | "max") { ": min must be below max" } else { ": not used as given" };
        return Err(cat(&[&v.name, ".", field, why]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
