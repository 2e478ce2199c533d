//! hubsim's own guarantees: reproducibility by seed, per-device variation, text without placeholders
//! renders to itself, and the JSON module round-trips.

use hubsim_proto::json::{self, Number, Object, Value};
use hubsim_template::{device_seed, Config, DeviceState, RenderContext, Variable};
use proptest::prelude::*;

const SENSOR: &str = r#"{
  // A thermostat: every generator at once.
  Template: '{"id":"$.DeviceId","msg":"$.Guid","n":$.Counter,"t":$.Temp,"wave":$.Wave,"state":"$.State","open":$.Open,"at":"$.At","site":"$.Site","r":$.R,"s":"$.S"}',
  Variables: [
    {name: 'Counter', min: 1},
    {name: 'Temp', walk: true, start: 21, step: 0.5, min: 15, max: 30, decimals: 1},
    {name: 'Wave', sine: true, period: 60000, amplitude: 5, offset: 20, noise: 0.2, decimals: 2},
    {name: 'State', values: ['ok', 'warn', 'alarm'], weights: [90, 9, 1]},
    {name: 'Open', probability: 0.1},
    {name: 'At', timestamp: true, jitter: 250},
    {name: 'Site', values: ['$.DeviceId']},
    {name: 'R', randomDouble: true, min: 0, max: 1},
    {name: 'S', customLengthString: 8},
  ],
  Header: '{"kind": "thermostat", "n": "$.Counter"}',
}"#;

fn run(config: &Config, device: &str, seed: u64, n: usize) -> Vec<(String, Vec<(String, String)>)> {
    let mut st = DeviceState::new(device, seed);
    (0..n)
        .map(|i| {
            let cx = RenderContext {
                now_unix_ms: 1_700_000_000_000 + i as i64 * 1000,
                local_offset_min: 0,
                machine_name: "m",
            };
            let r = config.render(&mut st, &cx).unwrap();
            r.check_json().unwrap();
            (r.text().unwrap().to_owned(), r.properties)
        })
        .collect()
}

#[test]
fn same_seed_and_times_give_the_same_messages() {
    let config = Config::parse_its(SENSOR).unwrap();
    let a = run(&config, "sim000001", 42, 50);
    assert_eq!(a, run(&config, "sim000001", 42, 50));
    assert_ne!(a, run(&config, "sim000001", 43, 50));
    assert_eq!(a[2].1, [("kind".to_owned(), "thermostat".to_owned()), ("n".to_owned(), "3".to_owned())]);
}

#[test]
fn per_device_seed_and_device_id_in_values() {
    let config = Config::parse_its(SENSOR).unwrap();
    let a = run(&config, "sim000001", device_seed(9, "sim000001"), 20);
    let b = run(&config, "sim000002", device_seed(9, "sim000002"), 20);
    assert!(a[0].0.contains(r#""site":"sim000001""#) && b[0].0.contains(r#""site":"sim000002""#));
    let temps = |m: &[(String, Vec<(String, String)>)]| -> Vec<String> {
        m.iter().map(|(t, _)| json::parse(t).unwrap().get("t").unwrap().to_string()).collect()
    };
    assert_ne!(temps(&a), temps(&b), "devices with different seeds should walk differently");
    assert_eq!(temps(&a)[0], "21.0");
}

#[test]
fn state_survives_between_renders_and_follows_an_edited_variable_list() {
    let config = Config::parse_its(SENSOR).unwrap();
    let mut st = DeviceState::new("d", 1);
    let cx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    for _ in 0..3 {
        config.render(&mut st, &cx).unwrap();
    }
    assert_eq!(st.iteration(), 3);
    // The app edits the variables: Counter keeps counting, a new variable starts, one whose kind changed restarts.
    let edited =
        Variable::parse_list("[{name: 'B', min: 5}, {name: 'Counter', min: 1}, {name: 'Temp', min: 7}]").unwrap();
    let other = Config::new("$.B $.Counter $.Temp", edited, None).unwrap();
    assert_eq!(other.render(&mut st, &cx).unwrap().text().unwrap(), "5 4 7");
    assert_eq!(other.render(&mut st, &cx).unwrap().text().unwrap(), "6 5 8");
}

#[test]
fn header_on_a_fix_payload_sees_the_last_variable_values() {
    let c = Config::parse_its(r#"{PayloadDistribution: "template(50) fix(50, YQ==)", Header: '{"n": $.Counter}'}"#)
        .unwrap();
    let mut st = DeviceState::new("d", 5);
    let cx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    let got: Vec<(bool, String)> = (0..10)
        .map(|_| {
            let r = c.render(&mut st, &cx).unwrap();
            (r.body == b"a", r.properties[0].1.clone())
        })
        .collect();
    // Seed 5 starts with a template message; fixed messages repeat the last counter, templates advance it.
    let mut expect_n = 0;
    for (i, (fix, n)) in got.iter().enumerate() {
        if !fix {
            expect_n += 1;
        }
        assert_eq!(*n, expect_n.to_string(), "message {i}: {got:?}");
    }
    assert!(got.iter().any(|m| m.0) && got.iter().any(|m| !m.0), "{got:?}");
}

#[test]
fn header_error_when_first_message_is_fix_and_the_placeholder_is_bare() {
    // A fixed payload before any template message: $.Counter has no value and prints as text, so the
    // header is not JSON. hubsim reports it rather than sending a message without properties.
    let c = Config::parse_its(r#"{Payloads: [{type: 'fix', value: 'x'}], Header: '{"n": $.Counter}'}"#).unwrap();
    let mut st = DeviceState::new("d", 5);
    let cx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    assert_eq!(
        c.render(&mut st, &cx).unwrap_err().to_string(),
        "Header: rendered header is not JSON: line 1, col 7: unexpected character '$'"
    );
}

#[test]
fn hand_built_configurations_are_checked_or_render_safely() {
    use hubsim_template::{Intervals, Kind, Payload, PayloadKind, Template};
    let err = Config::from_parts(vec![], vec![], None, Intervals::default()).unwrap_err();
    assert_eq!(err.to_string(), "Payloads: missing (needed by a configuration)");

    let vars = vec![Variable { name: "S".into(), kind: Kind::Sequence { values: vec![] }, decimals: None }];
    let t = Template::parse("[$.S]", &vars).unwrap();
    let fix = Payload { distribution: 40, device_id: None, kind: PayloadKind::Fix(b"f".to_vec()) };
    let tpl = Payload { distribution: 60, device_id: None, kind: PayloadKind::Template(t) };
    let config = Config::from_parts(vars, vec![fix, tpl], None, Intervals::default()).unwrap();
    // Sorted by distribution, largest first.
    assert!(matches!(config.payloads()[0].kind, PayloadKind::Template(_)));
    let mut st = DeviceState::new("d", 3);
    let cx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    for _ in 0..20 {
        let r = config.render(&mut st, &cx).unwrap();
        assert!(r.body == b"f" || r.body == b"[]", "{:?}", r.body);
    }
}

proptest! {
    #[test]
    fn text_without_placeholders_renders_to_itself(text in any::<String>().prop_filter("no $.", |t| !t.contains("$.")), seed: u64, now: i64) {
        let vars = Variable::parse_list("[{name: 'Temp', random: true, min: 1, max: 9}, {name: 'Counter'}]").unwrap();
        let config = Config::new(&text, vars, None).unwrap();
        let mut st = DeviceState::new("d", seed);
        let cx = RenderContext { now_unix_ms: now / 4, local_offset_min: 0, machine_name: "m" };
        for _ in 0..3 {
            let r = config.render(&mut st, &cx).unwrap();
            prop_assert_eq!(r.text(), Some(text.as_str()));
        }
    }

    #[test]
    fn json_round_trips(v in json_value()) {
        let text = json::to_string(&v);
        prop_assert_eq!(json::parse(&text).unwrap(), v.clone());
        prop_assert_eq!(json::parse_relaxed(&text).unwrap(), v);
    }

    #[test]
    fn parsers_never_panic(text in any::<String>()) {
        let _ = json::parse(&text);
        let _ = json::parse_relaxed(&text);
        let _ = Config::parse_its(&text);
    }
}

/// Variable declarations built from the keys the loader knows, with values of any JSON kind.
fn declaration() -> impl Strategy<Value = String> {
    // Every key but `name`, which the strategy writes itself.
    let keys: Vec<&str> = hubsim_template::variable::VARIABLE_KEYS.iter().copied().filter(|k| *k != "name").collect();
    let key = prop::sample::select(keys);
    let value = prop_oneof![
        Just("true".to_owned()),
        Just("false".to_owned()),
        (-1e6f64..1e6).prop_map(|f| f.to_string()),
        (-5i64..50).prop_map(|i| i.to_string()),
        Just("'epochMs'".to_owned()),
        Just("['$.DeviceId', '$.A', 1, 'x']".to_owned()),
        Just("[1, 0, 2, 3]".to_owned()),
        Just("[]".to_owned()),
        Just("null".to_owned()),
        Just("1e999".to_owned()),
    ];
    prop::collection::vec((key, value), 0..6).prop_map(|kv| {
        let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
        body.join(", ")
    })
}

proptest! {
    #[test]
    fn any_accepted_declaration_renders_without_panicking(a in declaration(), b in declaration(), seed: u64, now in -1i64 << 50..1i64 << 50) {
        let text = format!("{{Template: '$.A|$.B|$.Guid', Header: '{{\"a\": \"$.A\"}}', Variables: [{{name: 'A', {a}}}, {{name: 'B', {b}}}]}}");
        if let Ok(config) = Config::parse_its(&text) {
            let mut st = DeviceState::new("d", seed);
            for i in 0..5 {
                let cx = RenderContext { now_unix_ms: now + i * 1000, local_offset_min: -90, machine_name: "m" };
                let r = config.render(&mut st, &cx);
                // The header quotes $.A, so it is JSON unless A's value itself contains a quote or newline.
                if let Ok(r) = r {
                    prop_assert!(r.text().unwrap().ends_with(|c: char| c.is_ascii_hexdigit()));
                }
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Number(Number::Int(i))),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| Value::Number(Number::Float(f))),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8).prop_map(|kv| {
                let mut o = Object::new();
                for (k, v) in kv {
                    o.insert(k, v);
                }
                Value::Object(o)
            }),
        ]
    })
}

#[test]
fn golden_guids_for_seed_1() {
    let c = Config::parse_its("{Template: '$.Guid $.IterationNumber'}").unwrap();
    let mut st = DeviceState::new("d", 1);
    let cx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
    let got: Vec<String> = (0..2).map(|_| c.render(&mut st, &cx).unwrap().text().unwrap().to_owned()).collect();
    // Version-4 GUIDs (the '4' and the variant digit 8-b), one per message, pinned for seed 1.
    assert_eq!(got, ["b3f2af6d-0fc7-40c5-853b-559647364cea 0", "92f89756-082a-4514-a42e-1c7bc266a3a7 1"]);
}
