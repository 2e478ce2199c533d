//! Message templates for `hubsim simulate --template FILE`: a file is either an Iot-Telemetry-Simulator
//! configuration (relaxed JSON, read by `hubsim_template::Config::parse_its`) or a hubsim **saved message**,
//! the shape the web app exports:
//!
//! ```json
//! {
//!   "name": "thermostat",
//!   "template": "{\"temperature\": $.Temp, \"n\": $.Counter, \"device\": \"$.DeviceId\"}",
//!   "variables": [{"name": "Temp", "walk": true, "min": 15, "max": 30, "step": 0.5, "start": 21},
//!                 {"name": "Counter", "min": 1}],
//!   "header": "{\"source\": \"$.DeviceId\"}",
//!   "qos": 1,
//!   "properties": {"kind": "telemetry"},
//!   "every": 1000, "jitter": 0, "count": 0, "duration": 0
//! }
//! ```
//!
//! `name` (string) and `template` are required, and their presence is what tells a saved message from an ITS
//! configuration (ITS has no top-level `name`). `template` and `header` are template text, or a JSON object
//! used as its JSON text; `variables` is a list of ITS variable declarations (or that list as a relaxed-JSON
//! string), absent meaning none; `header` renders to a JSON object whose entries become application
//! properties; `qos` (0 or 1) overrides `--qos`; `properties` are fixed application properties (strings),
//! sent before the header's. `every`, `jitter`, `count` and `duration` are the saved message's schedule, as the
//! web app runs it: a message every `every` ms (default 1000, from [`MIN_EVERY_MS`]) ± `jitter` ms, `count`
//! messages (0: no limit), for `duration` ms (0: until stopped); ms up to [`MAX_MS`], counts up to
//! [`MAX_COUNT`]. An ITS configuration's schedule is its `Intervals` (cycled, per device where it lists devices)
//! and `MessageCount`. The file itself may be relaxed JSON, like ITS files.
//!
//! This module only reads text: the fleet renders (`Config::render`) with per-device state.

use hubsim_proto::json::{self, Value};
use hubsim_template::{
    check_keys, Config, ConfigError, Intervals, PayloadKind, Variable, MAX_COUNT, MAX_MS, MIN_EVERY_MS,
    SAVED_MESSAGE_KEYS,
};
use thiserror::Error;

/// Why a template file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageFileError {
    #[error("{0}")]
    Syntax(json::JsonError),
    #[error("Iot-Telemetry-Simulator configuration: {0}")]
    Its(ConfigError),
    #[error("saved message: {0}")]
    Saved(ConfigError),
    #[error("saved message: {field}: expected {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("saved message: {field}: expected a whole number from {min} to {max}")]
    OutOfRange { field: &'static str, min: u32, max: u32 },
}

/// When a template file's messages are sent (`hubsim simulate` uses it where `--rate`, `--count` and
/// `--duration` are not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Milliseconds between a device's messages, cycled (ITS `Intervals`; a saved message's `every`).
    pub intervals: Intervals,
    /// Each wait is drawn from `interval ± jitter_ms` (at least 0).
    pub jitter_ms: u32,
    /// Messages per device; 0: no limit.
    pub count: u32,
    /// How long to run, ms; 0: until stopped.
    pub duration_ms: u32,
}

/// A loaded template file, ready for the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageTemplate {
    /// The saved message's name, or `Iot-Telemetry-Simulator configuration`.
    pub name: String,
    pub config: Config,
    /// QoS from the saved message (`None`: the fleet's `--qos`).
    pub qos: Option<u8>,
    /// Fixed application properties, sent before the header's.
    pub properties: Vec<(String, String)>,
    /// The file's schedule.
    pub schedule: Schedule,
}

impl MessageTemplate {
    /// Reads a saved message or an ITS configuration (see the module docs for how they are told apart).
    pub fn parse(text: &str) -> Result<MessageTemplate, MessageFileError> {
        let root = json::parse_relaxed(text.trim_start_matches('\u{feff}')).map_err(MessageFileError::Syntax)?;
        let is_saved = root.get("name").is_some_and(|n| n.as_str().is_some()) && root.get("template").is_some();
        if !is_saved {
            let config = Config::from_its(&root).map_err(MessageFileError::Its)?;
            let count = hubsim_template::config::message_count(&root).map_err(MessageFileError::Its)?;
            let schedule = Schedule { intervals: config.intervals().clone(), jitter_ms: 0, count, duration_ms: 0 };
            return Ok(MessageTemplate {
                name: "Iot-Telemetry-Simulator configuration".into(),
                config,
                qos: None,
                properties: Vec::new(),
                schedule,
            });
        }
        Self::saved(&root)
    }

    fn saved(root: &Value) -> Result<MessageTemplate, MessageFileError> {
        if let Some(o) = root.as_object() {
            check_keys(o, SAVED_MESSAGE_KEYS, false, "").map_err(MessageFileError::Saved)?;
        }
        let name = root.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let text = |field: &'static str| -> Result<Option<String>, MessageFileError> {
            match root.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
                Some(_) => Err(MessageFileError::WrongType { field, expected: "a string or an object" }),
            }
        };
        let template = text("template")?.unwrap_or_default();
        let header = text("header")?;
        let variables = match root.get("variables") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => {
                let v = json::parse_relaxed(s)
                    .map_err(|error| MessageFileError::Saved(ConfigError::Json { field: "variables".into(), error }))?;
                Variable::list_from_json(&v, "variables").map_err(MessageFileError::Saved)?
            }
            Some(v) => Variable::list_from_json(v, "variables").map_err(MessageFileError::Saved)?,
        };
        let qos = match root.get("qos") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(q @ (0 | 1)) => Some(q as u8),
                _ => return Err(MessageFileError::WrongType { field: "qos", expected: "0 or 1" }),
            },
        };
        let properties = match root.get("properties") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.to_owned(), s.clone())),
                    Value::Number(_) | Value::Bool(_) => Ok((k.to_owned(), v.to_string())),
                    _ => Err(MessageFileError::WrongType {
                        field: "properties",
                        expected: "strings, numbers or booleans",
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(MessageFileError::WrongType { field: "properties", expected: "an object" }),
        };
        // The same fields and limits as the web app's saved messages.
        let number = |field: &'static str, min: u32, max: u32, default: u32| match root.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| (u64::from(min)..=u64::from(max)).contains(n))
                .map(|n| n as u32)
                .ok_or(MessageFileError::OutOfRange { field, min, max }),
        };
        let schedule = Schedule {
            intervals: Intervals {
                default_ms: vec![number("every", MIN_EVERY_MS, MAX_MS, 1000)?],
                per_device: Vec::new(),
            },
            jitter_ms: number("jitter", 0, MAX_MS, 0)?,
            count: number("count", 0, MAX_COUNT, 0)?,
            duration_ms: number("duration", 0, MAX_MS, 0)?,
        };
        let config = Config::new(&template, variables, header.as_deref()).map_err(MessageFileError::Saved)?;
        Ok(MessageTemplate { name, config, qos, properties, schedule })
    }

    /// Whether the payload at `index` (of `Config::payloads`) is meant to be JSON, so that its rendered body
    /// is checked before sending: a template whose text starts with `{` or `[`. Fixed payloads are bytes.
    pub fn is_json(&self, index: usize) -> bool {
        match self.config.payloads().get(index).map(|p| &p.kind) {
            Some(PayloadKind::Template(t)) => t.source().trim_start().starts_with(['{', '[']),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_message_reads_every_field() {
        let m = MessageTemplate::parse(
            r#"{name: 'n', template: {"v": "$.C"}, variables: [{name: "C", min: 1}], header: '{"h": "$.DeviceId"}',
                qos: 0, properties: {a: "b", n: 2}}"#,
        )
        .unwrap();
        assert_eq!(m.name, "n");
        assert_eq!(m.qos, Some(0));
        assert_eq!(m.properties, vec![("a".into(), "b".into()), ("n".into(), "2".into())]);
        assert!(m.config.header().is_some());
        assert!(m.is_json(0));
    }

    #[test]
    fn its_configuration_is_told_apart() {
        let m = MessageTemplate::parse(
            "{Template: '{\"t\": $.Temp}', Variables: [{name: 'Temp', random: true, min: 1, max: 5}]}",
        )
        .unwrap();
        assert_eq!(m.name, "Iot-Telemetry-Simulator configuration");
        assert_eq!(m.config.variables().len(), 1);
    }

    #[test]
    fn the_schedule_comes_from_the_file() {
        let m = MessageTemplate::parse("{name: 'n', template: 'x', every: 500, jitter: 50, count: 4, duration: 9000}")
            .unwrap();
        let want = Intervals { default_ms: vec![500], per_device: Vec::new() };
        assert_eq!(m.schedule, Schedule { intervals: want, jitter_ms: 50, count: 4, duration_ms: 9000 });
        // A saved message without one: every second until stopped, as the web app runs it.
        let m = MessageTemplate::parse("{name: 'n', template: 'x'}").unwrap();
        assert_eq!((m.schedule.intervals.default_ms.as_slice(), m.schedule.count), (&[1000][..], 0));
        let its = MessageTemplate::parse("{Template: 'x', Intervals: {d1: [100, 200]}, MessageCount: '3'}").unwrap();
        assert_eq!(its.schedule.intervals.for_device("d1"), [100, 200]);
        assert_eq!(its.schedule.intervals.for_device("d2"), [1000]);
        assert_eq!(its.schedule.count, 3);
        let e = MessageTemplate::parse("{name: 'n', template: 'x', every: 5}").unwrap_err();
        assert_eq!(e.to_string(), "saved message: every: expected a whole number from 10 to 86400000");
        assert!(MessageTemplate::parse("{Template: 'x', MessageCount: -1}").is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let e = MessageTemplate::parse("{name: 'n', template: 'x', qos: 2}").unwrap_err();
        assert_eq!(e.to_string(), "saved message: qos: expected 0 or 1");
        let e = MessageTemplate::parse("{name: 'n', template: '$.Nope'}").unwrap_err();
        assert!(e.to_string().starts_with("saved message: Template:"), "{e}");
        // A misspelt key would leave its default without a word: every second instead of every 5.
        let e = MessageTemplate::parse("{name: 'n', template: 'x', evry: 5000}").unwrap_err();
        assert_eq!(e.to_string(), "saved message: evry: unknown key; did you mean every?");
        let e = MessageTemplate::parse("{name: 'n', template: 'x', interval: 5000}").unwrap_err();
        assert_eq!(e.to_string(), "saved message: interval: unknown key; did you mean every?");
        let e = MessageTemplate::parse("{name: 'n', template: 'x', Every: 5000}").unwrap_err();
        assert_eq!(e.to_string(), "saved message: Every: unknown key; did you mean every?");
        let e = MessageTemplate::parse("{name: 'n', template: '$.T', variables: [{name: 'T', randomdoubel: true}]}")
            .unwrap_err();
        assert_eq!(e.to_string(), "saved message: variables[0].randomdoubel: unknown key; did you mean randomDouble?");
        // What the web app exports reads back (every key it writes is known).
        MessageTemplate::parse(
            "{name: 'n', template: 'x', header: '{}', variables: [], properties: {a: 'b'}, qos: 1, every: 1000, \
             jitter: 0, count: 0, duration: 0}",
        )
        .unwrap();
    }
}
