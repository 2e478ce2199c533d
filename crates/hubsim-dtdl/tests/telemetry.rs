//! Generated telemetry: one plan per interface, generators per schema kind, and bodies that fit the model.

use hubsim_dtdl::{builtin, telemetry_plans, validate};
use hubsim_proto::json::{parse, Value};
use hubsim_proto::property_bag::SystemProperty;
use hubsim_template::{device_seed, DeviceState, RenderContext};

fn ctx(i: i64) -> RenderContext<'static> {
    RenderContext { now_unix_ms: 1_795_964_400_000 + i * 1000, local_offset_min: 0, machine_name: "test" }
}

/// The first `n` bodies of each plan of a built-in model.
fn render(model: &hubsim_dtdl::Model, n: i64) -> Vec<(Option<String>, Vec<String>)> {
    telemetry_plans(model)
        .unwrap()
        .into_iter()
        .map(|plan| {
            let mut state = DeviceState::new("dev1", device_seed(7, plan.component.as_deref().unwrap_or("")));
            let bodies =
                (0..n).map(|i| plan.config.render(&mut state, &ctx(i)).unwrap().text().unwrap().to_owned()).collect();
            (plan.component, bodies)
        })
        .collect()
}

#[test]
fn one_plan_per_interface_with_sub_for_components() {
    let m = builtin::TEMPERATURE_CONTROLLER.load().unwrap();
    let plans = telemetry_plans(&m).unwrap();
    type Row<'a> = (Option<&'a str>, Option<(SystemProperty, String)>, &'a str);
    let got: Vec<Row> =
        plans.iter().map(|p| (p.component.as_deref(), p.property.clone(), p.template.as_str())).collect();
    // deviceInformation has no telemetry, so no plan.
    assert_eq!(
        got,
        [
            (None, None, r#"{"workingSet":$.workingSet}"#),
            (
                Some("thermostat1"),
                Some((SystemProperty::ComponentName, "thermostat1".into())),
                r#"{"temperature":$.temperature}"#
            ),
            (
                Some("thermostat2"),
                Some((SystemProperty::ComponentName, "thermostat2".into())),
                r#"{"temperature":$.temperature}"#
            ),
        ]
    );
}

#[test]
fn doubles_walk_within_bounds_from_the_semantic_default() {
    let m = builtin::THERMOSTAT.load().unwrap();
    let out = render(&m, 200);
    let temps: Vec<f64> =
        out[0].1.iter().map(|b| parse(b).unwrap().get("temperature").unwrap().as_f64().unwrap()).collect();
    assert_eq!(out[0].1[0], r#"{"temperature":21.00}"#, "a Temperature starts at 21 with 2 decimals");
    assert!(temps.iter().all(|t| (15.0..=35.0).contains(t)), "{temps:?}");
    assert!(temps.windows(2).all(|w| (w[1] - w[0]).abs() <= 0.5 + 1e-9), "steps of at most 0.5");
    assert!(temps.windows(2).any(|w| w[0] != w[1]), "it moves");
}

#[test]
fn every_schema_kind_has_a_generator() {
    let m = builtin::EVERY_SCHEMA.load().unwrap();
    let out = render(&m, 4);
    assert_eq!(out.len(), 1);
    let bodies: Vec<Value> = out[0].1.iter().map(|b| parse(b).unwrap()).collect();
    let field = |name: &str| bodies.iter().map(|b| b.get(name).unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(field("flag"), ["false", "true", "false", "true"], "a boolean toggles");
    assert_eq!(field("count"), ["0", "1", "2", "3"], "an integer counts");
    assert_eq!(field("total"), ["0", "1", "2", "3"], "a long counts");
    assert_eq!(field("mode"), [r#""idle""#, r#""heating""#, r#""cooling""#, r#""idle""#], "a string Enum cycles");
    assert_eq!(field("level"), ["1", "2", "3", "1"], "an integer Enum cycles");
    assert_eq!(field("label"), [r#""label-1""#, r#""label-2""#, r#""label-3""#, r#""label-1""#]);
    assert_eq!(field("day"), [r#""2026-01-01""#, r#""2026-01-02""#, r#""2026-01-03""#, r#""2026-01-01""#]);
    assert_eq!(field("clock")[0], r#""08:00:00""#);
    assert_eq!(field("uptime")[0], r#""PT1M""#);
    assert_eq!(
        field("at"),
        [
            r#""2026-11-29T15:00:00.000Z""#,
            r#""2026-11-29T15:00:01.000Z""#,
            r#""2026-11-29T15:00:02.000Z""#,
            r#""2026-11-29T15:00:03.000Z""#
        ]
    );
    // Doubles and floats print with two decimals (the parsed value above drops the trailing zero).
    assert!(out[0].1[0].contains(r#""reading":50.00,"uptime":"PT1M","ratio":50.00"#), "{}", out[0].1[0]);
    assert_eq!(bodies[0].get("position").unwrap().to_string(), r#"{"lat":50.0,"lon":50.0}"#);
    assert_eq!(bodies[0].get("loads").unwrap().to_string(), r#"{"phase1":50.0,"phase2":50.0}"#);
    assert_eq!(bodies[0].get("leds").unwrap().to_string(), "[false,false,false]");
    // Every generated body fits the model, message after message.
    for body in &bodies {
        for t in &m.root.telemetry {
            assert_eq!(validate(&t.schema, body.get(&t.name).unwrap(), &t.name), Ok(()), "{body}");
        }
    }
}

#[test]
fn variables_are_editable_template_variables() {
    let m = builtin::EVERY_SCHEMA.load().unwrap();
    let plans = telemetry_plans(&m).unwrap();
    let names: Vec<&str> = plans[0].config.variables().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "flag",
            "day",
            "at",
            "reading",
            "uptime",
            "ratio",
            "count",
            "total",
            "label",
            "clock",
            "mode",
            "level",
            "position_lat",
            "position_lon",
            "loads_phase1",
            "loads_phase2",
            "leds_0",
            "leds_1",
            "leds_2",
        ]
    );
    // The declarations read back through the template engine's own JSON form.
    for v in plans[0].config.variables() {
        assert_eq!(&hubsim_template::Variable::from_json(&v.to_json(), "v").unwrap(), v);
    }
}
