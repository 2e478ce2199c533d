//! The Plug and Play state, natively: loading, forms, generators, desired values and their acks, commands.

use super::*;
use hubsim_dtdl::builtin;
use hubsim_proto::json::Number;

fn loaded() -> PnpState {
    PnpState::default().reduce(PnpAction::Load(builtin::TEMPERATURE_CONTROLLER.json.into()))
}

fn run(s: PnpState, actions: impl IntoIterator<Item = PnpAction>) -> PnpState {
    actions.into_iter().fold(s, PnpState::reduce)
}

/// thermostat1 is the second interface; targetTemperature its first property, getMaxMinReport its command.
const T1: usize = 1;

fn desired(text: &str) -> DesiredPatch {
    let s = loaded();
    conv::parse_desired(s.model.as_deref().unwrap(), &json::parse(text).unwrap())
}

#[test]
fn a_model_loads_with_one_state_per_interface_and_a_bad_one_is_named() {
    let s = loaded();
    assert_eq!(s.model_id(), Some("dtmi:hubsim:example:TemperatureController;1"));
    assert_eq!(s.interfaces.len(), 4, "the default component and three components");
    assert_eq!(s.plans.len(), 3, "deviceInformation has no telemetry");
    assert_eq!(s.generation, 1);
    let bad = s.clone().reduce(PnpAction::Load(
        r#"{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:x:y;1", "@type": "Interface",
            "contents": [{"@type": "Property", "name": "p", "schema": "doubel"}]}"#
            .into(),
    ));
    let e = bad.error.as_deref().unwrap();
    assert_eq!(e, "contents[0] (Property \"p\"): schema \"doubel\" is not a DTDL schema");
    assert_eq!(bad.model_id(), s.model_id(), "a refused model leaves the loaded one");
    assert_eq!(bad.generation, 1);
    let big = PnpState::default().reduce(PnpAction::Load(" ".repeat(MAX_MODEL_BYTES + 1)));
    assert_eq!(big.error.as_deref(), Some("the model is 256 KB; at most 256 KB are read"));
    let gone = s.reduce(PnpAction::Unload);
    assert!(gone.model.is_none() && gone.interfaces.is_empty());
    assert_eq!(gone.generation, 2);
}

#[test]
fn the_app_state_puts_the_model_id_into_the_settings() {
    use crate::settings::Decoded;
    use crate::state::{Action, AppState};
    let s = Rc::new(AppState::new(Decoded::default(), None, "10:00:00"));
    let s = s.reduce(Action::Pnp(PnpAction::Load(builtin::THERMOSTAT.json.into())));
    assert_eq!(s.settings.model_id, "dtmi:hubsim:example:Thermostat;1");
    let s = s.reduce(Action::Pnp(PnpAction::Load("{".into())));
    assert_eq!(s.settings.model_id, "dtmi:hubsim:example:Thermostat;1", "a refused model changes nothing");
    assert!(s.pnp.error.as_deref().unwrap().starts_with("not JSON"));
    let s = s.reduce(Action::Pnp(PnpAction::Unload));
    assert_eq!(s.settings.model_id, "");
}

#[test]
fn telemetry_rounds_carry_sub_for_components_and_show_live_values() {
    let s = loaded();
    let mut states = generator_states(&s.plans, 7);
    let ctx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    let round = telemetry_round(&s.plans, &mut states, &ctx);
    let subs: Vec<_> = round.iter().map(|(_, _, m)| m.properties.system(&SystemProperty::ComponentName)).collect();
    assert_eq!(subs, vec![None, Some("thermostat1"), Some("thermostat2")]);
    let (component, body, _) = &round[1];
    let s = s.reduce(PnpAction::Sent { component: component.clone(), body: body.clone() });
    let live = &s.interfaces[T1].telemetry[0];
    assert_eq!(live.last, json::parse(body).unwrap().get("temperature").unwrap().to_string());
    let t = json::parse(&live.last).unwrap().as_f64().unwrap();
    assert!((15.0..=35.0).contains(&t), "a temperature walks in 15–35: {body}");
    let s = run(s, (0..100).map(|_| PnpAction::Sent { component: Some("thermostat1".into()), body: body.clone() }));
    assert_eq!(s.sent, 101);
}

#[test]
fn generators_are_edited_per_field_and_bad_values_are_explained() {
    let s = loaded();
    let s = run(
        s,
        [
            PnpAction::Generator { plan: 1, var: 0, param: Param::Min, text: "30".into() },
            PnpAction::Generator { plan: 1, var: 0, param: Param::Max, text: "31".into() },
        ],
    );
    assert_eq!(s.generator_error, None);
    let mut states = generator_states(&s.plans, 1);
    let ctx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    for _ in 0..20 {
        let round = telemetry_round(&s.plans, &mut states, &ctx);
        let t = json::parse(&round[1].1).unwrap().get("temperature").unwrap().as_f64().unwrap();
        assert!((30.0..=31.0).contains(&t), "{t}");
    }
    let bad = s.clone().reduce(PnpAction::Generator { plan: 1, var: 0, param: Param::Min, text: "40".into() });
    assert_eq!(bad.generator_error.as_deref(), Some("temperature: a random walk needs min ≤ max and a step ≥ 0"));
    assert_eq!(bad.plans, s.plans, "a refused edit changes nothing");
    let nan = s.clone().reduce(PnpAction::Generator { plan: 1, var: 0, param: Param::Step, text: "fast".into() });
    assert_eq!(nan.generator_error.as_deref(), Some("temperature: step must be a number"));
    // A cycle of Enum values or booleans is edited as a list.
    let cycle = Kind::Sequence { values: vec![Value::Bool(false), Value::Bool(true)] };
    assert_eq!(
        edit_kind(&cycle, Param::Values, "true, true, false").unwrap(),
        Kind::Sequence { values: vec![Value::Bool(true), Value::Bool(true), Value::Bool(false)] }
    );
    let words = Kind::Sequence { values: vec![Value::String("a".into())] };
    assert_eq!(
        edit_kind(&words, Param::Values, "x \"y\"").unwrap(),
        Kind::Sequence { values: vec![Value::String("x \\\"y\\\"".into())] },
        "strings are escaped for their quoted placeholder"
    );
    assert_eq!(kind_params(&words), vec![(Param::Values, "a".to_owned())]);
}

#[test]
fn forms_follow_the_schema() {
    let s = loaded();
    let model = s.model.clone().unwrap();
    let report = &model.interface(Some("thermostat1")).unwrap().commands[0].response.as_ref().unwrap().schema;
    assert_eq!(form_labels(report, "tempReport"), vec!["maxTemp", "minTemp", "avgTemp", "startTime", "endTime"]);
    let texts: Vec<String> = ["30.5", "", "21", "2026-01-01T00:00:00Z", "bad"].map(String::from).to_vec();
    assert_eq!(
        form_value(report, &texts, "tempReport").unwrap_err(),
        "tempReport.endTime: expected a dateTime (RFC 3339, like 2026-11-29T15:00:00Z), found \"bad\""
    );
    let texts: Vec<String> =
        ["30.5", "", "21", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"].map(String::from).to_vec();
    assert_eq!(
        form_value(report, &texts, "tempReport").unwrap().to_string(),
        r#"{"maxTemp":30.5,"avgTemp":21,"startTime":"2026-01-01T00:00:00Z","endTime":"2026-01-02T00:00:00Z"}"#
    );
    // A read-only property: edited, validated, reported inside its component's wrapper.
    let info = 3;
    let s = s.reduce(PnpAction::Field { iface: info, item: Item::Property(0), field: 0, text: "Contoso".into() });
    assert_eq!(
        report_property(&s, info, 0).unwrap().to_string(),
        r#"{"deviceInformation":{"__t":"c","manufacturer":"Contoso"}}"#
    );
    let s = s.reduce(PnpAction::Field { iface: info, item: Item::Property(6), field: 0, text: "lots".into() });
    assert!(s.interfaces[info].properties[6].error.as_deref().unwrap().starts_with("totalStorage: not JSON"));
    let (patch, bad) = initial_report(&s);
    let patch = patch.unwrap();
    assert_eq!(bad.len(), 1, "the invalid form is left out: {bad:?}");
    assert_eq!(patch.get("serialNumber"), Some(&Value::String(String::new())));
    assert_eq!(patch.get("deviceInformation").unwrap().get("manufacturer").unwrap().as_str(), Some("Contoso"));
    assert!(patch.get("thermostat1").unwrap().get("targetTemperature").is_none(), "writable ones are acked instead");
}

#[test]
fn desired_values_are_acked_as_each_property_chooses() {
    let s = run(
        loaded(),
        [
            PnpAction::Choice { iface: 2, prop: 0, choice: Choice::Reject },
            PnpAction::Reason { iface: 2, prop: 0, text: "too warm for the bedroom".into() },
        ],
    );
    let patch = desired(
        r#"{"thermostat1": {"__t": "c", "targetTemperature": 25}, "thermostat2": {"targetTemperature": 30}, "$version": 4}"#,
    );
    let (doc, acks) = answer_desired(&s, &patch).unwrap();
    assert_eq!(
        doc.to_string(),
        r#"{"thermostat1":{"__t":"c","targetTemperature":{"value":25,"ac":200,"av":4,"ad":"accepted"}},"thermostat2":{"__t":"c","targetTemperature":{"value":30,"ac":400,"av":4,"ad":"too warm for the bedroom"}}}"#
    );
    let s = run(s, [PnpAction::Desired(patch), PnpAction::Acked(acks)]);
    let t1 = &s.interfaces[T1].properties[0];
    assert_eq!(t1.desired, Some((Value::Number(Number::Int(25)), 4)));
    assert_eq!(describe_ack(t1.ack.as_ref().unwrap()), "200 accepted (version 4)");
    // A value outside the schema is refused with the reason, whatever the choice.
    let (_, acks) =
        answer_desired(&s, &desired(r#"{"thermostat1": {"targetTemperature": "warm"}, "$version": 5}"#)).unwrap();
    assert_eq!((acks[0].ack.code, acks[0].ack.version), (400, 5));
    assert!(acks[0].ack.description.as_deref().unwrap().starts_with("targetTemperature: expected a double"));
}

#[test]
fn a_pending_value_is_answered_202_and_resolved_later_with_its_version() {
    let s = loaded().reduce(PnpAction::Choice { iface: T1, prop: 0, choice: Choice::Pending });
    let patch = desired(r#"{"thermostat1": {"targetTemperature": 22.5}, "$version": 7}"#);
    let (doc, acks) = answer_desired(&s, &patch).unwrap();
    assert_eq!(
        doc.to_string(),
        r#"{"thermostat1":{"__t":"c","targetTemperature":{"value":22.5,"ac":202,"av":7,"ad":"pending"}}}"#
    );
    let s = run(s, [PnpAction::Desired(patch), PnpAction::Acked(acks)]);
    let (doc, _) = resolve(&s, T1, 0, Choice::Accept).unwrap();
    assert_eq!(
        doc.to_string(),
        r#"{"thermostat1":{"__t":"c","targetTemperature":{"value":22.5,"ac":200,"av":7,"ad":"accepted"}}}"#
    );
    assert_eq!(resolve(&s, T1, 1, Choice::Accept), None, "nothing desired, nothing to resolve");
}

#[test]
fn on_connect_the_twin_shows_acks_and_only_unacknowledged_values_are_answered() {
    let twin = json::parse(
        r#"{"desired": {"thermostat1": {"targetTemperature": 25}, "thermostat2": {"targetTemperature": 19}, "$version": 3},
            "reported": {"thermostat1": {"targetTemperature": {"value": 20, "ac": 200, "av": 2}},
                         "thermostat2": {"targetTemperature": {"value": 19, "ac": 200, "av": 3}}, "$version": 5}}"#,
    )
    .unwrap();
    let s = loaded();
    let todo = conv::unacknowledged(s.model.as_deref().unwrap(), &twin);
    let (_, acks) = answer_desired(&s, &todo).unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!((acks[0].component.as_deref(), acks[0].ack.version), (Some("thermostat1"), 3));
    let s = s.reduce(PnpAction::Twin(twin));
    assert_eq!(s.interfaces[2].properties[0].ack.as_ref().map(|a| a.version), Some(3));
    assert_eq!(s.interfaces[T1].properties[0].desired, Some((Value::Number(Number::Int(25)), 3)));
}

#[test]
fn commands_answer_from_the_form_and_refuse_requests_outside_the_schema() {
    let s = loaded();
    let ok = answer_command(&s, "thermostat1*getMaxMinReport", br#""2026-01-01T00:00:00Z""#).unwrap();
    assert_eq!((ok.iface, ok.cmd, ok.status), (T1, 0, 200));
    assert_eq!(
        ok.body,
        r#"{"maxTemp":0.0,"minTemp":0.0,"avgTemp":0.0,"startTime":"2000-01-01T00:00:00Z","endTime":"2000-01-01T00:00:00Z"}"#
    );
    let s = run(
        s,
        [
            PnpAction::Field { iface: T1, item: Item::Command(0), field: 0, text: "31.5".into() },
            PnpAction::Status { iface: T1, cmd: 0, status: 201 },
        ],
    );
    let edited = answer_command(&s, "thermostat1*getMaxMinReport", br#""2026-01-01T00:00:00Z""#).unwrap();
    assert_eq!(edited.status, 201);
    assert!(edited.body.starts_with(r#"{"maxTemp":31.5,"#), "{}", edited.body);
    let bad = answer_command(&s, "thermostat1*getMaxMinReport", b"42").unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body,
        r#"{"error":"the request does not fit the command's request schema: since: expected a dateTime (RFC 3339, like 2026-11-29T15:00:00Z), found 42"}"#
    );
    assert_eq!(answer_command(&s, "thermostat1*getMaxMinReport", b"{").unwrap().status, 400);
    let reboot = answer_command(&s, "reboot", b"5").unwrap();
    assert_eq!((reboot.iface, reboot.status, reboot.body.as_str()), (0, 200, "null"));
    assert_eq!(answer_command(&s, "thermostat9*getMaxMinReport", b""), None, "left to the Direct methods panel");
    assert_eq!(answer_command(&PnpState::default(), "reboot", b""), None);
    assert_eq!(method_name(Some("thermostat1"), "getMaxMinReport"), "thermostat1*getMaxMinReport");
}
