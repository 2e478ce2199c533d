//! Telemetry generators chosen per schema, as `hubsim-template` configurations: one message per interface
//! (default component and each component) per tick, as the convention asks ("Telemetry from components
//! requires one message per component").
//!
//! Defaults (each is an ordinary template variable, so the app's variables editor can change it):
//!
//! | schema | variable |
//! |---|---|
//! | `double`, `float` | bounded random walk, 2 decimals; range by semantic type: `Temperature` 15–35 from 21 (step 0.5), `Humidity`/`RelativeHumidity` 20–80 from 45, else 0–100 from 50 (step 1) |
//! | `integer`, `long` | counter from 0 by 1 |
//! | `boolean` | sequence `false, true` (toggles) |
//! | Enum | sequence of its values (cycles) |
//! | `string` | sequence `name-1, name-2, name-3` |
//! | `dateTime` | the render time (ISO 8601 UTC) |
//! | `date`, `time`, `duration` | a short sequence of fixed values |
//! | Object | one variable per field (`telemetry_field`) |
//! | Map | two entries `{keyName}1`, `{keyName}2`, one variable each |
//! | Array | three elements, one variable each (`telemetry_0`...) |
//!
//! A sequence cycles with the render number of the device state it is rendered with, so each plan needs its
//! own `DeviceState` (for instance seeded with `device_seed(seed, "device/component")`).

use crate::model::{Interface, Model, Primitive, Schema, Semantics};
use hubsim_proto::json::{write_escaped, Number, Value};
use hubsim_proto::property_bag::SystemProperty;
use hubsim_template::{Config, ConfigError, Kind, TimeFormat, Variable};

/// How to produce the telemetry of one interface: its template, variables, and the message property the
/// convention asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryPlan {
    /// `None` for the default component.
    pub component: Option<String>,
    /// `$.sub={component}` for a component's messages.
    pub property: Option<(SystemProperty, String)>,
    /// The JSON template, e.g. `{"temperature":$.temperature}`.
    pub template: String,
    /// Ready to render (`Config::render`); built from `template` and its variables.
    pub config: Config,
}

/// One plan per interface of the model that has telemetry: the default component first, then the
/// components in model order.
pub fn telemetry_plans(model: &Model) -> Result<Vec<TelemetryPlan>, ConfigError> {
    let mut plans = Vec::new();
    for (component, iface) in model.interfaces() {
        if iface.telemetry.is_empty() {
            continue;
        }
        let (template, variables) = interface_template(iface);
        plans.push(TelemetryPlan {
            component: component.map(str::to_owned),
            property: crate::pnp::telemetry_property(component),
            config: Config::new(&template, variables, None)?,
            template,
        });
    }
    Ok(plans)
}

/// The template of one telemetry message of `iface` and the variables it uses.
pub fn interface_template(iface: &Interface) -> (String, Vec<Variable>) {
    let mut out = String::from("{");
    let mut vars = Vec::new();
    for (i, t) in iface.telemetry.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write_escaped(&mut out, &t.name);
        out.push(':');
        generator(&t.schema, &t.name, &t.semantics, &mut vars, &mut out);
    }
    out.push('}');
    (out, vars)
}

/// A generator of single values of `schema` (a read-only property's or a command response's), chosen as for
/// telemetry (the table above); each render of it gives the next value.
///
/// # Errors
/// None in practice: the generated template and variables always agree; the `Result` is `Config::new`'s.
///
/// Here a double without a semantic type takes one from its own name (an object's field: the field's name), so
/// that a command response's `maxTemp` reads like the device's temperature, not a 0-100 walk: a name containing
/// `temp` is a `Temperature`, `humid` a `Humidity` (ASCII case ignored).
pub fn value_config(schema: &Schema, name: &str, semantics: &Semantics) -> Result<Config, ConfigError> {
    let (mut out, mut vars) = (String::new(), Vec::new());
    let own = named_semantics(semantics, name);
    gen(schema, name, &own, true, &mut vars, &mut out);
    Config::new(&out, vars, None)
}

/// `semantics`, or when it has no type, the type `name` suggests (see [`value_config`]).
fn named_semantics(semantics: &Semantics, name: &str) -> Semantics {
    let mut s = semantics.clone();
    if s.types.is_empty() {
        let lower = name.to_ascii_lowercase();
        if lower.contains("humid") {
            s.types.push("Humidity".into());
        } else if lower.contains("temp") {
            s.types.push("Temperature".into());
        }
    }
    s
}

/// Appends the template text of a value of `schema` to `out`, declaring its variables.
pub fn generator(schema: &Schema, name: &str, semantics: &Semantics, vars: &mut Vec<Variable>, out: &mut String) {
    gen(schema, name, semantics, false, vars, out);
}

/// [`generator`]; with `by_name`, an object's fields take their semantic type from their names.
fn gen(schema: &Schema, name: &str, semantics: &Semantics, by_name: bool, vars: &mut Vec<Variable>, out: &mut String) {
    let field_semantics =
        |field: &str| if by_name { named_semantics(&Semantics::default(), field) } else { Semantics::default() };
    match schema {
        Schema::Primitive(p) => {
            let (kind, decimals, quoted) = primitive_kind(*p, name, semantics);
            placeholder(declare(vars, name, kind, decimals), quoted, out);
        }
        Schema::Enum(e) => {
            if e.values.is_empty() {
                out.push_str("null");
                return;
            }
            let mut values = Vec::with_capacity(e.values.len());
            for v in &e.values {
                values.push(text_or_json(&v.value.to_json()));
            }
            placeholder(declare(vars, name, Kind::Sequence { values }, None), e.string_values, out);
        }
        Schema::Object(fields) => {
            out.push('{');
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write_escaped(out, &f.name);
                out.push(':');
                gen(&f.schema, &format!("{name}_{}", f.name), &field_semantics(&f.name), by_name, vars, out);
            }
            out.push('}');
        }
        Schema::Map { key_name, value, .. } => {
            out.push('{');
            for i in 1..=2 {
                if i > 1 {
                    out.push(',');
                }
                let key = format!("{key_name}{i}");
                let _ = write_escaped(out, &key);
                out.push(':');
                gen(value, &format!("{name}_{key}"), &Semantics::default(), by_name, vars, out);
            }
            out.push('}');
        }
        Schema::Array(element) => {
            out.push('[');
            for i in 0..3 {
                if i > 0 {
                    out.push(',');
                }
                gen(element, &format!("{name}_{i}"), &Semantics::default(), by_name, vars, out);
            }
            out.push(']');
        }
    }
}

/// The variable kind, decimals and quoting for a primitive.
fn primitive_kind(p: Primitive, name: &str, semantics: &Semantics) -> (Kind, Option<u8>, bool) {
    let seq = |values: [&str; 3]| Kind::Sequence { values: Vec::from(values.map(|v| Value::String(v.to_owned()))) };
    match p {
        Primitive::Double | Primitive::Float => {
            let has = |t: &str| semantics.types.iter().any(|s| s == t);
            let (start, step, min, max) = if has("Temperature") {
                (21.0, 0.5, 15.0, 35.0)
            } else if has("Humidity") || has("RelativeHumidity") {
                (45.0, 1.0, 20.0, 80.0)
            } else {
                (50.0, 1.0, 0.0, 100.0)
            };
            (Kind::Walk { start, step, min, max }, Some(2), false)
        }
        Primitive::Integer => (Kind::Counter { start: 0, step: 1, max: f64::from(i32::MAX) }, None, false),
        Primitive::Long => (Kind::Counter { start: 0, step: 1, max: 9.0e15 }, None, false),
        Primitive::Boolean => (Kind::Sequence { values: vec![Value::Bool(false), Value::Bool(true)] }, None, false),
        Primitive::String => {
            // Names hold only letters, digits and '_', so the values need no escaping.
            let values = Vec::from([1, 2, 3].map(|i| Value::String(format!("{name}-{i}"))));
            (Kind::Sequence { values }, None, true)
        }
        Primitive::DateTime => (Kind::Timestamp { jitter_ms: 0, format: TimeFormat::Iso }, None, true),
        Primitive::Date => (seq(["2026-01-01", "2026-01-02", "2026-01-03"]), None, true),
        Primitive::Time => (seq(["08:00:00", "12:00:00", "18:00:00"]), None, true),
        Primitive::Duration => (seq(["PT1M", "PT5M", "PT15M"]), None, true),
    }
}

/// A sequence value: strings as their JSON-escaped inner text (the template quotes them), numbers as they are.
fn text_or_json(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let mut quoted = String::new();
            let _ = write_escaped(&mut quoted, s);
            Value::String(quoted[1..quoted.len() - 1].to_owned())
        }
        Value::Number(Number::Int(i)) => Value::Number(Number::Int(*i)),
        other => other.clone(),
    }
}

/// Declares a variable named `base` (or `base_2`, `base_3`... if taken) and returns its name.
fn declare(vars: &mut Vec<Variable>, base: &str, kind: Kind, decimals: Option<u8>) -> String {
    let mut name = base.to_owned();
    let mut n = 1;
    while vars.iter().any(|v| v.name == name) {
        n += 1;
        name = format!("{base}_{n}");
    }
    vars.push(Variable { name: name.clone(), kind, decimals });
    name
}

fn placeholder(name: String, quoted: bool, out: &mut String) {
    if quoted {
        out.push('"');
    }
    out.push_str("$.");
    out.push_str(&name);
    if quoted {
        out.push('"');
    }
}

/// Puts the generated values of sibling numeric fields named as extremes of one quantity in order: `minX` ≤
/// `avgX` (or `averageX`, `meanX`) ≤ `maxX`, ASCII case ignored, `_` after the prefix allowed (`max_temp`), at any
/// depth. Each generator walks on its own, so a report such as the thermostat's `getMaxMinReport` would
/// otherwise say `maxTemp` 49.7 and `minTemp` 50.1. The values are permuted, not changed.
pub fn order_extremes(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let mut entries: Vec<(String, Value)> = o.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
            for (_, v) in entries.iter_mut() {
                order_extremes(v);
            }
            let ranked: Vec<Option<(u8, String)>> =
                entries.iter().map(|(k, v)| v.as_f64().and_then(|_| extreme(k))).collect();
            for (i, r) in ranked.iter().enumerate() {
                let Some((_, quantity)) = r else { continue };
                let same = |r: &Option<(u8, String)>| r.as_ref().is_some_and(|(_, q)| q == quantity);
                if ranked[..i].iter().any(same) {
                    continue; // the group was ordered at its first member
                }
                let mut members: Vec<(u8, usize)> = Vec::new();
                for (j, r) in ranked.iter().enumerate().skip(i) {
                    if let Some((rank, q)) = r {
                        if q == quantity {
                            members.push((*rank, j));
                        }
                    }
                }
                if members.len() < 2 {
                    continue;
                }
                members.sort_unstable();
                let mut values: Vec<Value> = members.iter().map(|&(_, j)| entries[j].1.clone()).collect();
                values.sort_by(|a, b| a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(core::cmp::Ordering::Equal));
                for ((_, j), value) in members.into_iter().zip(values) {
                    entries[j].1 = value;
                }
            }
            *o = entries.into_iter().collect();
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                order_extremes(x);
            }
        }
        _ => {}
    }
}

/// `minTemp` → (0, "temp"), `avgTemp` → (1, "temp"), `max_temp` → (2, "temp"); other names `None`.
fn extreme(key: &str) -> Option<(u8, String)> {
    let lower = key.to_ascii_lowercase();
    for (prefix, rank) in [("min", 0), ("average", 1), ("avg", 1), ("mean", 1), ("max", 2)] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            let rest = rest.trim_start_matches('_');
            if !rest.is_empty() {
                return Some((rank, rest.to_owned()));
            }
        }
    }
    None
}
