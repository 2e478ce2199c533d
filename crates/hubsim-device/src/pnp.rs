//! The device a DTDL model describes, for `hubsim simulate --model FILE`: what it sends and how it answers,
//! by the IoT Plug and Play conventions of `hubsim_dtdl::pnp`. Decisions only; the fleet does the I/O:
//! telemetry per tick (one message per interface, `$.sub` for components), the read-only properties' report
//! on connect, what to report after reading the twin ([`PnpDevice::answer_twin`]), acknowledgements of desired values (accepted with 200, or 400 when the value does not fit the
//! schema or the property is named by `--reject`), and command answers (the response's next generated value
//! with 200; 400 for a request that fails the request schema; 404 for a command the model lacks).

use bytes::Bytes;
use hubsim_dtdl::pnp::{self, Ack, CommandError, DesiredPatch};
use hubsim_dtdl::{default_value, order_extremes, telemetry_plans, value_config, Model, TelemetryPlan};
use hubsim_proto::device::Telemetry;
use hubsim_proto::json::{self, Object, Value};
use hubsim_proto::property_bag::SystemProperty;
use hubsim_template::{device_seed, Config, DeviceState, RenderContext};
use std::sync::Arc;

/// A model ready to simulate: parsed, with its telemetry plans and the properties to reject.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub model: Model,
    pub plans: Vec<TelemetryPlan>,
    /// Writable properties answered with 400: `prop` (in any component) or `component.prop`.
    pub reject: Vec<String>,
    /// A generator per property and per command with a response (`hubsim_dtdl::value_config`), so that
    /// reported values and command answers look like a running device's, not the schema's zeros.
    values: Vec<ValuePlan>,
}

/// Where a generated value goes: a property (`command` false) or a command's response.
#[derive(Debug, Clone)]
struct ValuePlan {
    component: Option<String>,
    name: String,
    command: bool,
    config: Config,
}

impl ModelSpec {
    /// Builds the telemetry plans of `model` and the generators of its properties and command responses.
    pub fn new(model: Model, reject: Vec<String>) -> Result<ModelSpec, hubsim_template::ConfigError> {
        let mut values = Vec::new();
        for (component, iface) in model.interfaces() {
            let component = component.map(str::to_owned);
            for p in &iface.properties {
                let config = value_config(&p.schema, &p.name, &p.semantics)?;
                values.push(ValuePlan { component: component.clone(), name: p.name.clone(), command: false, config });
            }
            for c in &iface.commands {
                let Some(r) = &c.response else { continue };
                let config = value_config(&r.schema, &r.name, &Default::default())?;
                values.push(ValuePlan { component: component.clone(), name: c.name.clone(), command: true, config });
            }
        }
        Ok(ModelSpec { plans: telemetry_plans(&model)?, model, reject, values })
    }

    /// Checks that each of `reject` names a writable property of the model: `prop` of some interface, or
    /// `component.prop`.
    ///
    /// # Errors
    /// The first that does not, with the model's writable properties (`--reject targetTemp: the model has no
    /// writable property targetTemp; its writable properties: thermostat1.targetTemperature, …`).
    pub fn check_rejects(&self) -> Result<(), String> {
        let mut writable = Vec::new();
        for (component, iface) in self.model.interfaces() {
            for p in iface.properties.iter().filter(|p| p.writable) {
                writable.push(component.map_or_else(|| p.name.clone(), |c| format!("{c}.{}", p.name)));
            }
        }
        for r in &self.reject {
            let found = self.model.interfaces().any(|(component, iface)| {
                let name = match r.split_once('.') {
                    Some((c, p)) if component == Some(c) => p,
                    Some(_) => return false,
                    None => r.as_str(),
                };
                iface.properties.iter().any(|p| p.writable && p.name == name)
            });
            if !found {
                let list = if writable.is_empty() { "none".to_owned() } else { writable.join(", ") };
                return Err(format!(
                    "--reject {r}: the model has no writable property {r}; its writable properties: {list}"
                ));
            }
        }
        Ok(())
    }

    fn rejects(&self, component: Option<&str>, property: &str) -> bool {
        self.reject.iter().any(|r| match r.split_once('.') {
            Some((c, p)) => component == Some(c) && p == property,
            None => r == property,
        })
    }
}

/// One acknowledgement the device sends.
#[derive(Debug, Clone, PartialEq)]
pub struct AckSent {
    pub component: Option<String>,
    pub property: String,
    pub ack: Ack,
}

/// One simulated device of a model: the spec and its telemetry state per plan, and the state of each value
/// generator (so a command's answers move from call to call, as telemetry does).
pub struct PnpDevice {
    spec: Arc<ModelSpec>,
    states: Vec<DeviceState>,
    value_states: Vec<DeviceState>,
    /// The read-only properties' report, generated at the first connection and sent again at each reconnection
    /// (a serial number does not change when the network drops).
    report: Option<Value>,
    /// When this device first connected (Unix ms): where a command's report starts (`startTime`).
    started_ms: Option<i64>,
}

impl PnpDevice {
    /// Per-plan state seeded with `device_seed(seed, "{device}/{component}")` (the default component is
    /// `"{device}/"`), so each plan's sequences run on their own and a seed reproduces the run.
    pub fn new(spec: Arc<ModelSpec>, device_id: &str, seed: u64) -> PnpDevice {
        let states = spec
            .plans
            .iter()
            .map(|p| {
                let key = format!("{device_id}/{}", p.component.as_deref().unwrap_or(""));
                DeviceState::new(device_id, device_seed(seed, &key))
            })
            .collect();
        let value_states = spec
            .values
            .iter()
            .map(|v| {
                let kind = if v.command { "command" } else { "property" };
                let key = format!("{device_id}/{}/{kind}/{}", v.component.as_deref().unwrap_or(""), v.name);
                DeviceState::new(device_id, device_seed(seed, &key))
            })
            .collect();
        PnpDevice { spec, states, value_states, report: None, started_ms: None }
    }

    /// The next generated value of a property or a command's response; `None` if the model has no such
    /// property or response (or the generator fails, which its generated template cannot).
    fn generate(&mut self, component: Option<&str>, name: &str, command: bool, ctx: &RenderContext) -> Option<Value> {
        let i = self
            .spec
            .values
            .iter()
            .position(|v| v.command == command && v.component.as_deref() == component && v.name == name)?;
        let r = self.spec.values[i].config.render(&mut self.value_states[i], ctx).ok()?;
        let mut v = json::parse(std::str::from_utf8(&r.body).ok()?).ok()?;
        order_extremes(&mut v);
        Some(v)
    }

    pub fn model(&self) -> &Model {
        &self.spec.model
    }

    /// This tick's messages: one per interface with telemetry, `$.sub` on components', JSON content type.
    pub fn telemetry(&mut self, ctx: &RenderContext) -> Vec<Telemetry> {
        let mut out = Vec::with_capacity(self.spec.plans.len());
        for (plan, state) in self.spec.plans.iter().zip(self.states.iter_mut()) {
            // Plans have no header, the only part of a render that can fail.
            let Ok(r) = plan.config.render(state, ctx) else { continue };
            let mut m = Telemetry::new(Bytes::from(r.body));
            m.properties.set_system(SystemProperty::ContentType, "application/json");
            m.properties.set_system(SystemProperty::ContentEncoding, "utf-8");
            if let Some((p, v)) = &plan.property {
                m.properties.set_system(p.clone(), v.clone());
            }
            out.push(m);
        }
        out
    }

    /// The reported patch sent on connect: every read-only property at a generated value (as telemetry of its
    /// schema and semantic type would be: a `Temperature` double 21, a string `name-1`...), components
    /// wrapped; the same at every connection of this device; `None` when the model has none.
    pub fn initial_report(&mut self, ctx: &RenderContext) -> Option<Value> {
        self.started_ms.get_or_insert(ctx.now_unix_ms);
        if let Some(v) = &self.report {
            return Some(v.clone());
        }
        let mut v = pnp::read_only_defaults(&self.spec.model);
        let spec = Arc::clone(&self.spec);
        for (component, iface) in spec.model.interfaces() {
            for p in iface.properties.iter().filter(|p| !p.writable) {
                if let Some(value) = self.generate(component, &p.name, false, ctx) {
                    pnp::merge_patch(&mut v, pnp::reported_patch(component, &p.name, value));
                }
            }
        }
        let v = (!v.as_object().is_some_and(Object::is_empty)).then_some(v)?;
        self.report = Some(v.clone());
        Some(v)
    }

    /// The acknowledgements for a desired patch (or the unacknowledged part of a twin) and the one reported
    /// patch carrying them all; `None` when there is nothing to answer. Every ack carries `ad`, because a
    /// reported patch merges into the previous ack and would otherwise keep an old rejection's description.
    pub fn answer_desired(&self, patch: &DesiredPatch) -> Option<(Value, Vec<AckSent>)> {
        let version = patch.version.unwrap_or(0);
        let mut acks = Vec::new();
        let mut doc = Value::Object(Object::new());
        for u in &patch.updates {
            let ack = if let Some(e) = &u.invalid {
                Ack { value: u.value.clone(), code: 400, version, description: Some(e.to_string()) }
            } else if self.spec.rejects(u.component.as_deref(), &u.property) {
                Ack { value: u.value.clone(), code: 400, version, description: Some("rejected (--reject)".into()) }
            } else {
                Ack { description: Some("accepted".into()), ..Ack::accepted(u.value.clone(), version) }
            };
            pnp::merge_patch(&mut doc, pnp::ack_patch(u.component.as_deref(), &u.property, &ack));
            acks.push(AckSent { component: u.component.clone(), property: u.property.clone(), ack });
        }
        (!acks.is_empty()).then_some((doc, acks))
    }

    /// What the device reports after reading its twin on connect: acknowledgements of the desired values it
    /// has not acknowledged yet (`unacknowledged`), and, for writable properties that have neither a desired
    /// nor a reported value, the device's own initial value (`ac` 203, `av` 0: [`Ack::initial`]), as the
    /// convention describes for a first start. The returned acks list only the answers to desired values.
    pub fn answer_twin(&mut self, twin: &Value, ctx: &RenderContext) -> Option<(Value, Vec<AckSent>)> {
        let spec = Arc::clone(&self.spec);
        let model = &spec.model;
        let (mut doc, acks) = self
            .answer_desired(&pnp::unacknowledged(model, twin))
            .unwrap_or_else(|| (Value::Object(Object::new()), Vec::new()));
        let desired = pnp::parse_desired(model, twin.get("desired").unwrap_or(&Value::Null));
        let reported = twin.get("reported").unwrap_or(&Value::Null);
        for (component, iface) in model.interfaces() {
            for p in iface.properties.iter().filter(|p| p.writable) {
                let has_desired =
                    desired.updates.iter().any(|u| u.component.as_deref() == component && u.property == p.name);
                let section = match component {
                    None => Some(reported),
                    Some(c) => reported.get(c),
                };
                if has_desired || section.and_then(|s| s.get(&p.name)).is_some() {
                    continue;
                }
                let value = self.generate(component, &p.name, false, ctx).unwrap_or_else(|| default_value(&p.schema));
                let ack = Ack { description: Some("initial value".into()), ..Ack::initial(value) };
                pnp::merge_patch(&mut doc, pnp::ack_patch(component, &p.name, &ack));
            }
        }
        (!doc.as_object().is_some_and(Object::is_empty)).then_some((doc, acks))
    }

    /// Answers a direct method by the model: (status, JSON body); the body is the response's next generated
    /// value.
    pub fn answer_command(&mut self, method: &str, payload: &[u8], ctx: &RenderContext) -> (u16, Value) {
        let spec = Arc::clone(&self.spec);
        let (component, command) = match pnp::find_command(&spec.model, method) {
            Ok(found) => found,
            Err(e) => return (404, error_body(&e.to_string())),
        };
        let request = if payload.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match std::str::from_utf8(payload).ok().map(json::parse) {
                Some(Ok(v)) => v,
                _ => return (400, error_body("the request payload is not JSON")),
            }
        };
        if let Err(e) = pnp::validate_request(command, &request) {
            return (400, error_body(&CommandError::Request(e).to_string()));
        }
        let Some(response) = &command.response else { return (200, Value::Null) };
        let mut value =
            self.generate(component, &command.name, true, ctx).unwrap_or_else(|| default_value(&response.schema));
        let started = *self.started_ms.get_or_insert(ctx.now_unix_ms);
        report_from(&mut value, started);
        (200, value)
    }
}

/// A report's period starts when the device did: in a response object with a date-time field named `start…`
/// and one named `end…` (the thermostat's `getMaxMinReport`: `startTime`, `endTime`), the start is the time of
/// the device's first connection, not the time of the answer, which the end keeps.
fn report_from(v: &mut Value, started_ms: i64) {
    let Value::Object(o) = v else { return };
    let named = |k: &str, prefix: &str| {
        k.len() > prefix.len() && k.is_char_boundary(prefix.len()) && k[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    if !o.iter().any(|(k, _)| named(k, "end")) {
        return;
    }
    let starts: Vec<String> = o
        .iter()
        .filter(|(k, v)| named(k, "start") && v.as_str().is_some_and(hubsim_dtdl::values::is_date_time))
        .map(|(k, _)| k.to_owned())
        .collect();
    for k in starts {
        o.insert(k, Value::String(hubsim_template::iso_utc_ms(started_ms)));
    }
}

fn error_body(message: &str) -> Value {
    let mut o = Object::new();
    o.insert("error".into(), Value::String(message.to_owned()));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubsim_dtdl::builtin;

    fn device(reject: &[&str]) -> PnpDevice {
        let model = builtin::TEMPERATURE_CONTROLLER.load().unwrap();
        let spec = ModelSpec::new(model, reject.iter().map(|s| s.to_string()).collect()).unwrap();
        PnpDevice::new(Arc::new(spec), "d1", 7)
    }

    #[test]
    fn acks_of_two_components_share_one_patch() {
        let d = device(&["thermostat2.targetTemperature"]);
        let desired = json::parse(
            r#"{"thermostat1": {"__t": "c", "targetTemperature": 25}, "thermostat2": {"targetTemperature": 30}, "$version": 4}"#,
        )
        .unwrap();
        let (doc, acks) = d.answer_desired(&pnp::parse_desired(d.model(), &desired)).unwrap();
        assert_eq!(acks.iter().map(|a| a.ack.code).collect::<Vec<_>>(), vec![200, 400]);
        assert_eq!(
            doc.to_string(),
            r#"{"thermostat1":{"__t":"c","targetTemperature":{"value":25,"ac":200,"av":4,"ad":"accepted"}},"thermostat2":{"__t":"c","targetTemperature":{"value":30,"ac":400,"av":4,"ad":"rejected (--reject)"}}}"#
        );
    }

    #[test]
    fn a_reject_must_name_a_writable_property_of_the_model() {
        let spec = |reject: &[&str]| {
            ModelSpec::new(
                builtin::TEMPERATURE_CONTROLLER.load().unwrap(),
                reject.iter().map(|s| s.to_string()).collect(),
            )
            .unwrap()
            .check_rejects()
        };
        assert_eq!(spec(&["targetTemperature", "thermostat2.targetTemperature"]), Ok(()));
        let list = "thermostat1.targetTemperature, thermostat2.targetTemperature";
        assert_eq!(
            spec(&["targetTemp"]),
            Err(format!(
                "--reject targetTemp: the model has no writable property targetTemp; its writable properties: {list}"
            ))
        );
        // No such component; and a read-only property is never acknowledged, so it cannot be rejected.
        assert!(spec(&["thermostat3.targetTemperature"])
            .unwrap_err()
            .starts_with("--reject thermostat3.targetTemperature:"));
        assert!(spec(&["thermostat1.maxTempSinceLastReboot"]).is_err());
        assert!(spec(&["serialNumber"]).is_err());
    }

    #[test]
    fn a_value_outside_the_schema_is_refused_with_the_reason() {
        let d = device(&[]);
        let desired = json::parse(r#"{"thermostat1": {"targetTemperature": "warm"}, "$version": 9}"#).unwrap();
        let (_, acks) = d.answer_desired(&pnp::parse_desired(d.model(), &desired)).unwrap();
        assert_eq!((acks[0].ack.code, acks[0].ack.version), (400, 9));
        assert!(acks[0].ack.description.as_deref().unwrap().contains("targetTemperature"), "{:?}", acks[0]);
        let removed = json::parse(r#"{"thermostat1": {"targetTemperature": null}, "$version": 10}"#).unwrap();
        assert_eq!(d.answer_desired(&pnp::parse_desired(d.model(), &removed)), None, "a removal needs no ack");
    }

    #[test]
    fn on_connect_unacknowledged_values_are_answered_and_the_rest_reported_as_initial() {
        let d = device(&[]);
        let twin = json::parse(
            r#"{"desired": {"thermostat1": {"targetTemperature": 25}, "$version": 3},
                "reported": {"thermostat1": {"targetTemperature": {"value": 20, "ac": 200, "av": 2}}, "$version": 5}}"#,
        )
        .unwrap();
        let mut d = d;
        let (doc, acks) = d.answer_twin(&twin, &CTX).unwrap();
        assert_eq!(acks.len(), 1);
        // The device's own initial value of a Temperature is what its telemetry starts from (21), not 0.
        assert_eq!(
            doc.to_string(),
            r#"{"thermostat1":{"__t":"c","targetTemperature":{"value":25,"ac":200,"av":3,"ad":"accepted"}},"thermostat2":{"__t":"c","targetTemperature":{"value":21.0,"ac":203,"av":0,"ad":"initial value"}}}"#
        );
    }

    const CTX: RenderContext<'static> =
        RenderContext { now_unix_ms: 1_764_500_000_000, local_offset_min: 0, machine_name: "m" };

    #[test]
    fn commands_answer_by_the_model_with_generated_values_that_move() {
        let mut d = device(&[]);
        let since = br#""2024-01-01T00:00:00Z""#;
        let (status, first) = d.answer_command("thermostat1*getMaxMinReport", since, &CTX);
        assert_eq!(status, 200, "{first}");
        // The response schema's fields, generated as telemetry is: temperatures (by their names) from 21, the
        // time of the answer.
        assert_eq!(first.get("maxTemp").and_then(Value::as_f64), Some(21.0), "{first}");
        assert_eq!(first.get("endTime").and_then(Value::as_str), Some("2025-11-30T10:53:20.000Z"), "{first}");
        hubsim_dtdl::validate(
            &d.model()
                .interface(Some("thermostat1"))
                .unwrap()
                .command("getMaxMinReport")
                .unwrap()
                .response
                .as_ref()
                .unwrap()
                .schema,
            &first,
            "tempReport",
        )
        .unwrap();
        let answers: Vec<Value> =
            (0..5).map(|_| d.answer_command("thermostat1*getMaxMinReport", since, &CTX).1).collect();
        assert!(answers.iter().any(|a| a.get("maxTemp") != first.get("maxTemp")), "the walk moves: {answers:?}");
        for a in &answers {
            let t = |k: &str| a.get(k).and_then(Value::as_f64).unwrap();
            assert!(t("minTemp") <= t("avgTemp") && t("avgTemp") <= t("maxTemp"), "min ≤ avg ≤ max: {a}");
            assert!((15.0..=35.0).contains(&t("maxTemp")), "a temperature's range: {a}");
        }
        // The report covers the time since the device first connected: its start stays, its end is the answer's.
        let later = RenderContext { now_unix_ms: CTX.now_unix_ms + 60_000, ..CTX };
        let (_, report) = d.answer_command("thermostat1*getMaxMinReport", since, &later);
        assert_eq!(report.get("startTime").and_then(Value::as_str), Some("2025-11-30T10:53:20.000Z"), "{report}");
        assert_eq!(report.get("endTime").and_then(Value::as_str), Some("2025-11-30T10:54:20.000Z"), "{report}");
        assert_eq!(d.answer_command("thermostat1*getMaxMinReport", b"42", &CTX).0, 400);
        assert_eq!(d.answer_command("thermostat9*getMaxMinReport", b"", &CTX).0, 404);
        assert_eq!(d.answer_command("nope", b"", &CTX).0, 404);
        // Same seed, same answers.
        let mut again = device(&[]);
        assert_eq!(again.answer_command("thermostat1*getMaxMinReport", since, &CTX).1, first);
    }

    fn at(v: &Value, path: &[&str]) -> String {
        path.iter().try_fold(v, |v, k| v.get(k)).map_or_else(|| "missing".into(), Value::to_string)
    }

    #[test]
    fn read_only_properties_are_reported_as_generated_values() {
        let mut d = device(&[]);
        let report = d.initial_report(&CTX).unwrap();
        assert_eq!(d.initial_report(&CTX), Some(report.clone()), "a reconnection reports the same values");
        // maxTempSinceLastReboot is a Temperature: where the thermostat's telemetry starts, not 0.
        assert_eq!(at(&report, &["thermostat1", "maxTempSinceLastReboot"]), "21.0", "{report}");
        assert_eq!(at(&report, &["thermostat1", "__t"]), "\"c\"");
        // A string property gets a name-derived value, not "".
        assert_eq!(at(&report, &["serialNumber"]), "\"serialNumber-1\"", "{report}");
        for (component, iface) in d.model().interfaces() {
            for p in iface.properties.iter().filter(|p| !p.writable) {
                let section = component.map_or(Some(&report), |c| report.get(c)).unwrap();
                hubsim_dtdl::validate(&p.schema, section.get(&p.name).unwrap(), &p.name).unwrap();
            }
        }
    }

    #[test]
    fn telemetry_per_interface_with_sub() {
        let mut d = device(&[]);
        let ctx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
        let msgs = d.telemetry(&ctx);
        let subs: Vec<_> = msgs.iter().map(|m| m.properties.system(&SystemProperty::ComponentName)).collect();
        assert_eq!(subs, vec![None, Some("thermostat1"), Some("thermostat2")]);
    }
}
