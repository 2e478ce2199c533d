//! The IoT Plug and Play conventions, with the examples of the conventions doc.

use hubsim_dtdl::pnp::{self, Ack, CommandError, CommandName};
use hubsim_dtdl::{builtin, default_value, Model, Schema};
use hubsim_proto::json::{parse, Object, Value};
use hubsim_proto::property_bag::SystemProperty;

fn controller() -> Model {
    builtin::TEMPERATURE_CONTROLLER.load().unwrap()
}

fn obj(text: &str) -> Object {
    parse(text).unwrap().as_object().unwrap().clone()
}

#[test]
fn component_telemetry_carries_sub() {
    assert_eq!(
        pnp::telemetry_property(Some("thermostat1")),
        Some((SystemProperty::ComponentName, "thermostat1".into()))
    );
    assert_eq!(pnp::telemetry_property(None), None);
    assert_eq!(SystemProperty::ComponentName.wire_name(), "$.sub");
}

#[test]
fn reported_properties_use_the_component_wrapper() {
    // Conventions doc, "Sample multiple components read-only property".
    let v = pnp::reported_patch(Some("thermostat1"), "temperature", parse("21.3").unwrap());
    assert_eq!(v.to_string(), r#"{"thermostat1":{"__t":"c","temperature":21.3}}"#);
    let v = pnp::reported_patch(None, "temperature", parse("21.3").unwrap());
    assert_eq!(v.to_string(), r#"{"temperature":21.3}"#);
    let v = pnp::wrap_component(Some("deviceInformation"), obj(r#"{"manufacturer":"hubsim","totalMemory":1024.0}"#));
    assert_eq!(v.to_string(), r#"{"deviceInformation":{"__t":"c","manufacturer":"hubsim","totalMemory":1024.0}}"#);
}

#[test]
fn acknowledgements_have_the_convention_shape() {
    // "Sample no component writable property": accepted at $version 3.
    let ack = Ack { description: Some("complete".into()), ..Ack::accepted(parse("21.3").unwrap(), 3) };
    assert_eq!(
        pnp::ack_patch(None, "targetTemperature", &ack).to_string(),
        r#"{"targetTemperature":{"value":21.3,"ac":200,"av":3,"ad":"complete"}}"#
    );
    // "Sample multiple components writable property".
    let ack = Ack { description: Some("complete".into()), ..Ack::accepted(parse("23").unwrap(), 3) };
    assert_eq!(
        pnp::ack_patch(Some("thermostat1"), "targetTemperature", &ack).to_string(),
        r#"{"thermostat1":{"__t":"c","targetTemperature":{"value":23,"ac":200,"av":3,"ad":"complete"}}}"#
    );
    // First start without a desired value: 203 with av 0.
    let init = Ack { description: Some("initialize".into()), ..Ack::initial(parse("20.0").unwrap()) };
    assert_eq!(init.to_value().to_string(), r#"{"value":20.0,"ac":203,"av":0,"ad":"initialize"}"#);
    // A rejection without a description, and reading an ack back.
    let reject = Ack { value: parse("120.0").unwrap(), code: 400, version: 5, description: None };
    assert_eq!(reject.to_value().to_string(), r#"{"value":120.0,"ac":400,"av":5}"#);
    assert_eq!(Ack::from_value(&reject.to_value()), Some(reject));
    assert_eq!(Ack::from_value(&parse("21.3").unwrap()), None);
}

#[test]
fn desired_patches_are_read_per_property_and_component() {
    let m = controller();
    let patch = parse(
        r#"{"thermostat1": {"__t": "c", "targetTemperature": 21.3},
            "thermostat2": {"targetTemperature": "warm"},
            "serialNumber": "x", "unknown": 1, "$version": 7}"#,
    )
    .unwrap();
    let d = pnp::parse_desired(&m, &patch);
    assert_eq!(d.version, Some(7));
    let got: Vec<(Option<&str>, &str, String, Option<String>)> = d
        .updates
        .iter()
        .map(|u| {
            (
                u.component.as_deref(),
                u.property.as_str(),
                u.value.to_string(),
                u.invalid.as_ref().map(|e| e.to_string()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("thermostat1"), "targetTemperature", "21.3".into(), None),
            (
                Some("thermostat2"),
                "targetTemperature",
                "\"warm\"".into(),
                Some("targetTemperature: expected a double, found \"warm\"".into())
            ),
        ]
    );
    // serialNumber is read-only, "unknown" is not in the model.
    assert_eq!(d.ignored, [(None, "serialNumber".to_owned()), (None, "unknown".to_owned())]);
}

#[test]
fn null_removes_desired_values() {
    let m = controller();
    let d = pnp::parse_desired(
        &m,
        &parse(r#"{"thermostat1": {"targetTemperature": null}, "thermostat2": null, "$version": 8}"#).unwrap(),
    );
    assert_eq!(d.updates, []);
    let removed = [
        (Some("thermostat1".to_owned()), "targetTemperature".to_owned()),
        (Some("thermostat2".to_owned()), "targetTemperature".to_owned()),
    ];
    assert_eq!(d.removed, removed);
}

#[test]
fn default_component_desired_values_from_the_conventions_doc() {
    let m = builtin::THERMOSTAT.load().unwrap();
    let d = pnp::parse_desired(&m, &parse(r#"{"targetTemperature": 21.3, "$version": 3}"#).unwrap());
    assert_eq!((d.version, d.updates.len(), d.updates[0].property.as_str()), (Some(3), 1, "targetTemperature"));
    assert_eq!(d.updates[0].component, None);
}

#[test]
fn updates_made_while_offline_are_unacknowledged() {
    let m = controller();
    let twin = parse(
        r#"{"desired": {"thermostat1": {"__t": "c", "targetTemperature": 25}, "thermostat2": {"__t": "c", "targetTemperature": 19}, "$version": 6},
            "reported": {"thermostat1": {"__t": "c", "targetTemperature": {"value": 25, "ac": 200, "av": 6}},
                         "thermostat2": {"__t": "c", "targetTemperature": {"value": 18, "ac": 200, "av": 4}}, "$version": 9}}"#,
    )
    .unwrap();
    let pending = pnp::unacknowledged(&m, &twin);
    let names: Vec<(Option<&str>, &str)> =
        pending.updates.iter().map(|u| (u.component.as_deref(), u.property.as_str())).collect();
    assert_eq!((pending.version, names), (Some(6), vec![(Some("thermostat2"), "targetTemperature")]));
}

#[test]
fn command_names_parse_and_format() {
    let c = CommandName::parse("thermostat1*getMaxMinReport");
    assert_eq!((c.component, c.command), (Some("thermostat1"), "getMaxMinReport"));
    assert_eq!(c.to_string(), "thermostat1*getMaxMinReport");
    let c = CommandName::parse("reboot");
    assert_eq!((c.component, c.command, c.to_string()), (None, "reboot", "reboot".to_owned()));
    let m = controller();
    assert_eq!(pnp::find_command(&m, "reboot").unwrap().0, None);
    assert_eq!(pnp::find_command(&m, "kitchen*reboot").unwrap_err(), CommandError::UnknownComponent("kitchen".into()));
    assert_eq!(
        pnp::find_command(&m, "thermostat1*reboot").unwrap_err().to_string(),
        "the model has no command \"thermostat1*reboot\""
    );
}

#[test]
fn request_payloads_are_validated_with_the_field_named() {
    let m = controller();
    let (_, report) = pnp::find_command(&m, "thermostat2*getMaxMinReport").unwrap();
    assert_eq!(pnp::validate_request(report, &parse(r#""2026-11-29T15:00:00.123+01:00""#).unwrap()), Ok(()));
    let e = |cmd, payload: &str| pnp::validate_request(cmd, &parse(payload).unwrap()).unwrap_err().to_string();
    assert_eq!(
        e(report, r#""yesterday""#),
        r#"since: expected a dateTime (RFC 3339, like 2026-11-29T15:00:00Z), found "yesterday""#
    );
    assert_eq!(e(report, "null"), "since: expected a dateTime (RFC 3339, like 2026-11-29T15:00:00Z), found null");
    let (_, reboot) = pnp::find_command(&m, "reboot").unwrap();
    assert_eq!(e(reboot, "2.5"), "delay: expected an integer (32 bits), found 2.5");
    assert_eq!(e(reboot, "4294967296"), "delay: expected an integer (32 bits), found 4294967296");

    let every = builtin::EVERY_SCHEMA.load().unwrap();
    let (_, configure) = pnp::find_command(&every, "configure").unwrap();
    assert_eq!(pnp::validate_request(configure, &parse(r#"{"mode": "eco", "period": "PT1H30M"}"#).unwrap()), Ok(()));
    assert_eq!(e(configure, r#"{"mode": "turbo"}"#), r#"config.mode: expected one of "eco", "boost", found "turbo""#);
    assert_eq!(
        e(configure, r#"{"period": "1 hour"}"#),
        r#"config.period: expected a duration (ISO 8601, like PT1H30M), found "1 hour""#
    );
    assert_eq!(
        e(configure, r#"{"speed": 1}"#),
        "config.speed: expected no other fields than mode, until, period, found an unknown field"
    );
    assert_eq!(e(configure, "[1]"), "config: expected an object, found [1]");
    // No request schema: the payload is not used, anything goes.
    let bare = Model::parse(
        r#"{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:D;1", "@type": "Interface",
            "contents": [{"@type": "Command", "name": "ping"}]}"#,
    )
    .unwrap();
    let (_, ping) = pnp::find_command(&bare, "ping").unwrap();
    assert_eq!(pnp::validate_request(ping, &parse(r#"{"any": 1}"#).unwrap()), Ok(()));
}

#[test]
fn values_of_every_schema_kind_validate() {
    let every = builtin::EVERY_SCHEMA.load().unwrap();
    let schema = |name: &str| every.root.telemetry.iter().find(|t| t.name == name).unwrap().schema.clone();
    let check = |s: &Schema, v: &str| hubsim_dtdl::validate(s, &parse(v).unwrap(), "v").map_err(|e| e.to_string());
    for (name, good, bad) in [
        ("flag", "true", "1"),
        ("day", r#""2024-02-29""#, r#""2023-02-29""#),
        ("at", r#""2026-11-29T15:00:00Z""#, r#""2026-11-29 15:00:00""#),
        ("reading", "-1.5e3", r#""1""#),
        ("uptime", r#""P1DT2H0.5S""#, r#""P""#),
        ("ratio", "3", "1e300"),
        ("count", "-2147483648", "2147483648"),
        ("total", "9223372036854775807", "1.5"),
        ("label", r#""""#, "null"),
        ("clock", r#""23:59:60.5-05:00""#, r#""24:00:00""#),
        ("mode", r#""cooling""#, r#""Cooling""#),
        ("level", "2", "4"),
        ("position", r#"{"lat": 1, "lon": 2.5}"#, r#"{"lat": "1"}"#),
        ("loads", r#"{"L1": 1.5, "L2": 2}"#, r#"{"L1": true}"#),
        ("leds", "[true, false]", "[true, 0]"),
    ] {
        let s = schema(name);
        assert_eq!(check(&s, good), Ok(()), "{name} {good}");
        assert!(check(&s, bad).is_err(), "{name} {bad}");
    }
    assert_eq!(check(&schema("leds"), "[true, 0]"), Err("v[1]: expected a boolean, found 0".into()));
    assert_eq!(check(&schema("loads"), r#"{"L1": true}"#), Err("v.L1: expected a double, found true".into()));
    for bad in ["PT", "P1H", "PT1D", "P1.5D2H", "P1M2Y", "P-1D"] {
        assert!(check(&Schema::Primitive(hubsim_dtdl::Primitive::Duration), &format!("\"{bad}\"")).is_err(), "{bad}");
    }
}

#[test]
fn default_values_per_schema() {
    let every = builtin::EVERY_SCHEMA.load().unwrap();
    let defaults: Vec<String> = every.root.telemetry.iter().map(|t| default_value(&t.schema).to_string()).collect();
    assert_eq!(
        defaults,
        [
            "false",
            r#""2000-01-01""#,
            r#""2000-01-01T00:00:00Z""#,
            "0.0",
            r#""PT0S""#,
            "0.0",
            "0",
            "0",
            r#""""#,
            r#""00:00:00""#,
            r#""idle""#,
            "1",
            r#"{"lat":0.0,"lon":0.0}"#,
            "{}",
            "[]",
        ]
    );
    // Every default fits its schema, so a form starts valid.
    for t in &every.root.telemetry {
        assert_eq!(hubsim_dtdl::validate(&t.schema, &default_value(&t.schema), &t.name), Ok(()), "{}", t.name);
    }
    let m = controller();
    let (_, report) = pnp::find_command(&m, "thermostat1*getMaxMinReport").unwrap();
    assert_eq!(
        default_value(&report.response.as_ref().unwrap().schema).to_string(),
        r#"{"maxTemp":0.0,"minTemp":0.0,"avgTemp":0.0,"startTime":"2000-01-01T00:00:00Z","endTime":"2000-01-01T00:00:00Z"}"#
    );
    assert_eq!(
        default_value(&every.root.property("settings").unwrap().schema),
        Value::Object(obj(r#"{"interval":0,"name":"","channels":[]}"#))
    );
}

#[test]
fn read_only_properties_start_at_their_defaults() {
    assert_eq!(
        pnp::read_only_defaults(&controller()).to_string(),
        concat!(
            r#"{"serialNumber":"","thermostat1":{"__t":"c","maxTempSinceLastReboot":0.0},"#,
            r#""thermostat2":{"__t":"c","maxTempSinceLastReboot":0.0},"deviceInformation":{"__t":"c","manufacturer":"","#,
            r#""model":"","swVersion":"","osName":"","processorArchitecture":"","processorManufacturer":"","totalStorage":0.0,"totalMemory":0.0}}"#
        )
    );
}

#[test]
fn patches_merge_component_sections_key_by_key_and_replace_other_values() {
    let mut doc = hubsim_proto::json::parse(r#"{"thermostat1":{"__t":"c","a":1},"serial":"x"}"#).unwrap();
    let patch = hubsim_proto::json::parse(r#"{"thermostat1":{"b":{"value":2}},"serial":"y","n":null}"#).unwrap();
    hubsim_dtdl::pnp::merge_patch(&mut doc, patch);
    assert_eq!(
        hubsim_proto::json::to_string(&doc),
        r#"{"thermostat1":{"__t":"c","a":1,"b":{"value":2}},"serial":"y","n":null}"#
    );
}

#[test]
fn generated_values_fit_their_schema_for_every_schema() {
    use hubsim_template::{DeviceState, RenderContext};
    let ctx =
        |i: i64| RenderContext { now_unix_ms: 1_764_500_000_000 + i * 1000, local_offset_min: 0, machine_name: "m" };
    let every = builtin::EVERY_SCHEMA.load().unwrap();
    let mut schemas: Vec<(&str, &Schema, hubsim_dtdl::Semantics)> = Vec::new();
    for t in &every.root.telemetry {
        schemas.push((&t.name, &t.schema, t.semantics.clone()));
    }
    for p in &every.root.properties {
        schemas.push((&p.name, &p.schema, p.semantics.clone()));
    }
    for c in &every.root.commands {
        if let Some(r) = &c.response {
            schemas.push((&r.name, &r.schema, Default::default()));
        }
    }
    for (name, schema, semantics) in schemas {
        let config = hubsim_dtdl::value_config(schema, name, &semantics).unwrap();
        let mut state = DeviceState::new("d", 7);
        for i in 0..4 {
            let body = config.render(&mut state, &ctx(i)).unwrap().body;
            let v = parse(std::str::from_utf8(&body).unwrap()).unwrap();
            assert_eq!(hubsim_dtdl::validate(schema, &v, name), Ok(()), "{name}: {v}");
        }
    }
}

#[test]
fn extremes_of_one_quantity_are_put_in_order_and_nothing_else_moves() {
    let mut v = parse(
        r#"{"maxTemp": 1.5, "minTemp": 9.0, "avgTemp": 3.0, "max_load": 2, "min_load": 7, "minute": 5, "maxHum": "x",
            "minHum": 4, "nested": [{"MinSpeed": 8, "MaxSpeed": 1}], "startTime": "b", "endTime": "a"}"#,
    )
    .unwrap();
    hubsim_dtdl::order_extremes(&mut v);
    assert_eq!(
        v.to_string(),
        r#"{"maxTemp":9.0,"minTemp":1.5,"avgTemp":3.0,"max_load":7,"min_load":2,"minute":5,"maxHum":"x","minHum":4,"nested":[{"MinSpeed":1,"MaxSpeed":8}],"startTime":"b","endTime":"a"}"#
    );
}

#[test]
fn a_value_without_a_semantic_type_takes_one_from_its_name() {
    use hubsim_template::{DeviceState, RenderContext};
    let ctx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    let first = |schema: &str, name: &str| {
        let schema = match schema {
            "double" => Schema::Primitive(hubsim_dtdl::Primitive::Double),
            _ => unreachable!(),
        };
        let config = hubsim_dtdl::value_config(&schema, name, &Default::default()).unwrap();
        String::from_utf8(config.render(&mut DeviceState::new("d", 1), &ctx).unwrap().body).unwrap()
    };
    assert_eq!(first("double", "maxTempSinceBoot"), "21.00");
    assert_eq!(first("double", "relativeHumidity"), "45.00");
    assert_eq!(first("double", "pressure"), "50.00");
}
