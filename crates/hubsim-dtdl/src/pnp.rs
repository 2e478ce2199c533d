//! The IoT Plug and Play conventions as pure functions over JSON values.
//!
//! From "IoT Plug and Play conventions" (learn.microsoft.com/azure/iot/concepts-convention) and "Telemetry,
//! property, and command payloads" (concepts-message-payloads), in our words:
//! - **Model id** ("Identify the model"): the device announces its model id in the MQTT CONNECT user name
//!   (`model-id=`); a DPS registration carries it as `{"modelId": …}` in the payload. The hub keeps it in the
//!   twin's `modelId`.
//! - **Telemetry** ("Telemetry"): the default component's telemetry needs nothing extra (the hub stamps
//!   `dt-dataschema`). A component's telemetry goes in its own message (one message per component) with the
//!   `$.sub` message property set to the component name; the hub then stamps `dt-subject`.
//! - **Read-only properties** ("Read-only properties"): reported as `{"name": value}`; a component's are
//!   wrapped in an object named after the component that carries the marker `"__t": "c"`.
//! - **Writable properties** ("Writable properties", "Acknowledgment responses"): the device answers a desired
//!   value with a reported `{"name": {"value": v, "ac": code, "av": version, "ad": "description"}}`: `ac` an
//!   HTTP-like status (200 accepted, 202 in progress, 203 set by the device without a desired value and then
//!   with `av` 0, 400 rejected, 500 failed), `av` the desired `$version` it answers, `ad` optional. A
//!   component's ack goes inside the component wrapper. On start the device reads the twin and answers any
//!   desired value whose version is newer than its last ack (updates made while it was offline).
//! - **Desired patches**: a desired document or patch carries `$version` at its top; a component's desired
//!   values are inside an object named after the component (the service adds `"__t": "c"`, which is not a
//!   property). Keys starting with `$` are metadata.
//! - **Commands** ("Commands"): the default component's commands use their name; a component's use
//!   `component*command`. The request payload is the request schema's value itself; the response likewise,
//!   with a status (200 for success).

use crate::model::{Command, Model};
use crate::values::{validate, ValueError};
use hubsim_proto::json::{Number, Object, Value};
use hubsim_proto::property_bag::SystemProperty;
use std::fmt;

/// The key marking a component's object in twin documents.
pub const COMPONENT_MARKER_KEY: &str = "__t";
/// Its value.
pub const COMPONENT_MARKER_VALUE: &str = "c";
/// The separator of component command names (`thermostat1*getMaxMinReport`).
pub const COMMAND_SEPARATOR: char = '*';

/// The system property a component's telemetry message carries (`$.sub={component}`); `None` for the
/// default component, whose telemetry carries nothing extra.
pub fn telemetry_property(component: Option<&str>) -> Option<(SystemProperty, String)> {
    component.map(|c| (SystemProperty::ComponentName, c.to_owned()))
}

/// Wraps properties for the twin: unchanged for the default component, else
/// `{"comp": {"__t": "c", ...properties}}`.
pub fn wrap_component(component: Option<&str>, properties: Object) -> Value {
    match component {
        None => Value::Object(properties),
        Some(c) => {
            let mut inner = Object::new();
            inner.insert(COMPONENT_MARKER_KEY.into(), Value::String(COMPONENT_MARKER_VALUE.into()));
            for (k, v) in properties.iter() {
                inner.insert(k.to_owned(), v.clone());
            }
            let mut outer = Object::new();
            outer.insert(c.to_owned(), Value::Object(inner));
            Value::Object(outer)
        }
    }
}

/// Merges object `patch` into `doc` as IoT Hub merges a twin patch: objects (component sections) key by key,
/// anything else replaced. The shape a device builds before sending several reported updates in one patch.
pub fn merge_patch(doc: &mut Value, patch: Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p.iter() {
                let mut slot = d.get(k).cloned().unwrap_or(Value::Null);
                if matches!((&slot, v), (Value::Object(_), Value::Object(_))) {
                    merge_patch(&mut slot, v.clone());
                } else {
                    slot = v.clone();
                }
                d.insert(k.to_owned(), slot);
            }
        }
        (d, p) => *d = p,
    }
}

/// A reported-properties patch with one property: `{"prop": value}`, wrapped for a component.
pub fn reported_patch(component: Option<&str>, property: &str, value: Value) -> Value {
    let mut o = Object::new();
    o.insert(property.to_owned(), value);
    wrap_component(component, o)
}

/// The reported patch a device sends on its first connection: every read-only property of every
/// interface at its schema's default value (see [`crate::default_value`]), components wrapped. Writable
/// properties are left out: they are answered from the desired state (or with [`Ack::initial`]).
pub fn read_only_defaults(model: &Model) -> Value {
    let mut patch = Object::new();
    for (component, iface) in model.interfaces() {
        let mut props = Object::new();
        for p in iface.properties.iter().filter(|p| !p.writable) {
            props.insert(p.name.clone(), crate::values::default_value(&p.schema));
        }
        if props.is_empty() {
            continue;
        }
        if let Value::Object(o) = wrap_component(component, props) {
            for (k, v) in o.iter() {
                patch.insert(k.to_owned(), v.clone());
            }
        }
    }
    Value::Object(patch)
}

/// A writable property's acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The value the device now uses (usually the desired one).
    pub value: Value,
    /// `ac`: 200, 202, 203, 400, 500...
    pub code: u16,
    /// `av`: the desired `$version` answered (0 with 203).
    pub version: i64,
    /// `ad`.
    pub description: Option<String>,
}

impl Ack {
    /// 200: the desired value is applied.
    pub fn accepted(value: Value, version: i64) -> Ack {
        Ack { value, code: 200, version, description: None }
    }
    /// 203 with `av` 0: the device sets the value itself, answering no desired value (its first start).
    pub fn initial(value: Value) -> Ack {
        Ack { value, code: 203, version: 0, description: None }
    }
    /// `{"value": v, "ac": code, "av": version[, "ad": description]}`.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("value".into(), self.value.clone());
        o.insert("ac".into(), Value::Number(Number::Int(i64::from(self.code))));
        o.insert("av".into(), Value::Number(Number::Int(self.version)));
        if let Some(d) = &self.description {
            o.insert("ad".into(), Value::String(d.clone()));
        }
        Value::Object(o)
    }
    /// Reads an acknowledgement from a reported property value; `None` if it is not one (no `ac`/`av`).
    pub fn from_value(v: &Value) -> Option<Ack> {
        let code = v.get("ac")?.as_i64().and_then(|c| u16::try_from(c).ok())?;
        let version = v.get("av")?.as_i64()?;
        Some(Ack {
            value: v.get("value").cloned().unwrap_or(Value::Null),
            code,
            version,
            description: v.get("ad").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// The reported patch acknowledging a writable property: `{"prop": {"value", "ac", "av", "ad"}}`, wrapped
/// for a component.
pub fn ack_patch(component: Option<&str>, property: &str, ack: &Ack) -> Value {
    reported_patch(component, property, ack.to_value())
}

/// One desired value for a writable property of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUpdate {
    pub component: Option<String>,
    pub property: String,
    pub value: Value,
    /// Set when the value does not fit the property's schema (a device would answer 400).
    pub invalid: Option<ValueError>,
}

/// A desired document or patch, read against a model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DesiredPatch {
    /// `$version`, which acknowledgements quote as `av`.
    pub version: Option<i64>,
    /// Values for the model's writable properties, in document order.
    pub updates: Vec<DesiredUpdate>,
    /// Writable properties set to `null`, which removes a desired value from the twin (a component set to
    /// `null` removes all of its own): (component, property).
    pub removed: Vec<(Option<String>, String)>,
    /// Keys that are not writable properties of the model: (component, key).
    pub ignored: Vec<(Option<String>, String)>,
}

/// Reads a desired-properties document (the twin's `desired` section) or patch (`$iothub/twin/PATCH/...`).
/// A key naming one of the model's components whose value is an object is that component's section; other
/// keys are the default component's. Keys starting with `$` and the `__t` marker are skipped; `null`
/// removes a value (twin patch semantics).
pub fn parse_desired(model: &Model, patch: &Value) -> DesiredPatch {
    let mut out = DesiredPatch { version: patch.get("$version").and_then(Value::as_i64), ..DesiredPatch::default() };
    let Some(top) = patch.as_object() else { return out };
    for (key, value) in top.iter() {
        if key.starts_with('$') || key == COMPONENT_MARKER_KEY {
            continue;
        }
        match (model.root.component(key), value) {
            (Some(c), Value::Null) => {
                for p in c.interface.properties.iter().filter(|p| p.writable) {
                    out.removed.push((Some(c.name.clone()), p.name.clone()));
                }
            }
            (Some(c), Value::Object(section)) => {
                for (k, v) in section.iter() {
                    if k.starts_with('$') || k == COMPONENT_MARKER_KEY {
                        continue;
                    }
                    push_update(&mut out, Some(&c.name), c.interface.property(k), k, v);
                }
            }
            _ => push_update(&mut out, None, model.root.property(key), key, value),
        }
    }
    out
}

fn push_update(
    out: &mut DesiredPatch,
    component: Option<&str>,
    p: Option<&crate::model::Property>,
    key: &str,
    value: &Value,
) {
    match p.filter(|p| p.writable) {
        Some(_) if *value == Value::Null => out.removed.push((component.map(str::to_owned), key.to_owned())),
        Some(p) => out.updates.push(DesiredUpdate {
            component: component.map(str::to_owned),
            property: key.to_owned(),
            value: value.clone(),
            invalid: validate(&p.schema, value, key).err(),
        }),
        None => out.ignored.push((component.map(str::to_owned), key.to_owned())),
    }
}

/// The desired values of a full twin (`{"desired": {...}, "reported": {...}}`) that the reported section has
/// not acknowledged at the desired `$version` yet (no ack, or an ack with a lower `av`). A device answers
/// these on start, as the convention asks.
pub fn unacknowledged(model: &Model, twin: &Value) -> DesiredPatch {
    let desired = twin.get("desired").unwrap_or(&Value::Null);
    let reported = twin.get("reported").unwrap_or(&Value::Null);
    let mut patch = parse_desired(model, desired);
    let version = patch.version.unwrap_or(0);
    patch.updates.retain(|u| {
        let section = match &u.component {
            None => Some(reported),
            Some(c) => reported.get(c),
        };
        let ack = section.and_then(|s| s.get(&u.property)).and_then(Ack::from_value);
        ack.is_none_or(|a| a.version < version)
    });
    patch
}

/// A method name split by the convention: `thermostat1*getMaxMinReport` or `reboot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandName<'a> {
    pub component: Option<&'a str>,
    pub command: &'a str,
}

impl<'a> CommandName<'a> {
    /// Splits at the first `*`.
    pub fn parse(method: &'a str) -> CommandName<'a> {
        match method.split_once(COMMAND_SEPARATOR) {
            Some((c, cmd)) => CommandName { component: Some(c), command: cmd },
            None => CommandName { component: None, command: method },
        }
    }
}

impl fmt::Display for CommandName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.component {
            write!(f, "{c}{COMMAND_SEPARATOR}")?;
        }
        f.write_str(self.command)
    }
}

/// Why a method call does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the model has no component \"{0}\"")]
    UnknownComponent(String),
    #[error("the model has no command \"{0}\"")]
    UnknownCommand(String),
    #[error("the request does not fit the command's request schema: {0}")]
    Request(#[from] ValueError),
}

/// Finds the command a method name invokes.
pub fn find_command<'m>(model: &'m Model, method: &str) -> Result<(Option<&'m str>, &'m Command), CommandError> {
    let name = CommandName::parse(method);
    let (component, iface) = match name.component {
        None => (None, &model.root),
        Some(c) => {
            let comp = model.root.component(c).ok_or_else(|| CommandError::UnknownComponent(c.to_owned()))?;
            (Some(comp.name.as_str()), &comp.interface)
        }
    };
    let cmd = iface.command(name.command).ok_or_else(|| CommandError::UnknownCommand(method.to_owned()))?;
    Ok((component, cmd))
}

/// Checks a request payload against the command's request schema; the error names the field, starting
/// from the request's name (`since`, `config.interval`). Without a request schema anything is accepted (the
/// payload is not used); with one, an absent payload (`null`) is refused.
pub fn validate_request(command: &Command, payload: &Value) -> Result<(), ValueError> {
    match &command.request {
        None => Ok(()),
        Some(r) => validate(&r.schema, payload, &r.name),
    }
}
