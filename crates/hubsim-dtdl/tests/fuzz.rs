//! Nothing a user pastes or a service sends can panic: models, desired patches, command payloads.

use hubsim_dtdl::{builtin, default_value, pnp, telemetry_plans, validate, Model};
use hubsim_proto::json::{parse, Value};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| parse(&i.to_string()).unwrap()),
        (-1e6f64..1e6).prop_map(|f| parse(&format!("{f:?}")).unwrap()),
        "[a-zA-Z0-9:;_ -]{0,12}".prop_map(Value::String),
        prop_oneof![Just("2026-11-29T15:00:00Z"), Just("PT1M"), Just("eco"), Just("c"), Just("P1.5DT")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("thermostat1".to_owned()),
                        Just("targetTemperature".to_owned()),
                        Just("__t".to_owned()),
                        Just("$version".to_owned()),
                        Just("mode".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn mutated_models_never_panic(edits in proptest::collection::vec((any::<usize>(), "[\\[\\]{}\":,a-zA-Z0-9;]"), 1..4)) {
        for b in builtin::ALL {
            let mut text = b.json.to_owned();
            for (at, s) in &edits {
                let mut i = at % text.len();
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                text.replace_range(i..i + text[i..].chars().next().map_or(0, char::len_utf8), s);
            }
            if let Ok(m) = Model::parse(&text) {
                let _ = telemetry_plans(&m);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Model::parse(&text);
        let _ = Model::parse_with("[]", &[&text]);
    }

    #[test]
    fn received_values_never_panic(v in json_value()) {
        for b in builtin::ALL {
            let m = b.load().unwrap();
            let _ = pnp::parse_desired(&m, &v);
            let mut twin = hubsim_proto::json::Object::new();
            twin.insert("desired".into(), v.clone());
            twin.insert("reported".into(), v.clone());
            let _ = pnp::unacknowledged(&m, &Value::Object(twin));
            for (_, iface) in m.interfaces() {
                for c in &iface.commands {
                    let _ = pnp::validate_request(c, &v);
                }
                for p in &iface.properties {
                    let _ = validate(&p.schema, &v, &p.name);
                    prop_assert_eq!(validate(&p.schema, &default_value(&p.schema), &p.name), Ok(()));
                }
            }
        }
    }
}
