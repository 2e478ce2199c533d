//! Saved messages, native: the file format round-trips, imports are all or nothing, ITS configurations load.

use super::*;

#[test]
fn the_examples_are_valid_templates_and_round_trip_through_a_file() {
    let list = examples();
    assert_eq!(
        list.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["thermostat", "gps tracker", "machine state"]
    );
    for m in &list {
        m.config().unwrap();
        assert!(m.is_json());
    }
    let text = export(&list);
    let (back, what) = read_file(&text, "x.json").unwrap();
    assert_eq!(back, list);
    assert_eq!(what, "3 saved message(s)");
    assert_eq!(load(Some(&text)), (list.clone(), None));
    assert_eq!(load(None).0, list);
}

#[test]
fn an_its_configuration_in_relaxed_json_imports_as_one_message() {
    let its = "{\n  // from the ITS README\n  Variables: [{name: \"Temp\", random: true, min: 23, max: 33}, {name: 'Counter', min: 100, max: 102},],\n  Template: '{\"temp\": $.Temp, \"n\": $.Counter}',\n  Header: '{\"unit\": \"C\"}',\n  Intervals: 500,\n  MessageCount: 5,\n}";
    let (list, what) = read_file(its, "plant.json").unwrap();
    assert_eq!(what, "an Iot-Telemetry-Simulator configuration as \"plant\"");
    let m = &list[0];
    assert_eq!(
        (m.name.as_str(), m.body.as_str(), m.header.as_str()),
        ("plant", "{\"temp\": $.Temp, \"n\": $.Counter}", "{\"unit\": \"C\"}")
    );
    assert_eq!(m.variables.len(), 2);
    assert_eq!((m.every_ms, m.count), (500, 5));
    assert!(m.template);
    // Several payloads: the main one is kept, and the note says what was left out.
    let dist = "{Template: '{\"a\": $.Counter}', PayloadDistribution: 'fix(30, AAAA) template(70)'}";
    let (list, what) = read_file(dist, "d").unwrap();
    assert_eq!(list[0].body, "{\"a\": $.Counter}");
    assert!(what.ends_with("(1 other payload(s) left out)"), "{what}");
    // Without a MessageCount (or 0): no limit.
    assert_eq!(list[0].count, 0);
}

#[test]
fn bad_files_are_refused_with_the_reason_and_change_nothing() {
    let err = |t: &str| read_file(t, "f.json").unwrap_err();
    assert_eq!(err("{a: "), "not JSON: line 1, col 5: unexpected end of input");
    assert_eq!(err("[1]"), "expected a JSON object (saved messages or an Iot-Telemetry-Simulator configuration)");
    assert_eq!(
        err("{Template: '{\"t\": $.Temprature}', Variables: [{name: 'Temperature', random: true}]}"),
        "not an Iot-Telemetry-Simulator configuration: Template: line 1, col 7: unknown variable $.Temprature; did you mean $.Temperature?"
    );
    assert_eq!(
        err("{hubsimMessages: 1, messages: [{name: 'a', template: '$.Nope'}]}"),
        "messages[0]: Template: line 1, col 1: unknown variable $.Nope"
    );
    assert_eq!(err("{hubsimMessages: 1, messages: [{name: '', text: 'x'}]}"), "messages[0].name: a name is needed");
    assert_eq!(
        err("{hubsimMessages: 1, messages: [{name: 'a', text: 'x', every: 0}]}"),
        "messages[0].every: expected a whole number from 10 to 86400000"
    );
    assert_eq!(err("{hubsimMessages: 1, messages: [{name: 'a'}]}"), "messages[0]: needs a template or a text");
    // A misspelt key would leave its default (every second, forever) without a word.
    assert_eq!(
        err("{hubsimMessages: 1, messages: [{name: 'a', text: 'x', evry: 5000}]}"),
        "messages[0].evry: unknown key; did you mean every?"
    );
    assert_eq!(
        err("{name: 'a', template: '$.T', variables: [{name: 'T', radnom: true, min: 1, max: 5}]}"),
        "message.variables[0].radnom: unknown key; did you mean random?"
    );
    assert!(err(&" ".repeat(MAX_FILE + 1)).starts_with("the file is larger than"));
    // Merging is all or nothing: a full library takes no part of an import.
    let full: Vec<Message> = (0..MAX_SAVED).map(|i| Message { name: i.to_string(), ..Message::default() }).collect();
    let new =
        vec![Message { name: "0".into(), ..Message::default() }, Message { name: "new".into(), ..Message::default() }];
    assert_eq!(merge(&full, new).unwrap_err(), "the library is full (50 messages): delete one first");
    // A replaced name does not count twice.
    assert_eq!(merge(&full, vec![Message { name: "1".into(), count: 3, ..Message::default() }]).unwrap()[1].count, 3);
    let (list, refused) = load(Some("{oops"));
    assert_eq!(list, examples());
    assert!(refused.unwrap().starts_with("the stored messages were not used: not JSON"));
}

#[test]
fn the_variable_forms_edit_every_generator_through_the_engine() {
    for (key, _) in KINDS {
        let v = new_variable("X", key).unwrap();
        assert_eq!(kind_key(&v), key);
        for (f, _) in fields(&v) {
            // Every field shows a value the engine reads back to the same variable.
            let text = field_text(&v, f);
            assert_eq!(set_field(&v, f, &text).as_ref(), Ok(&v), "{key}.{f} = {text:?}");
        }
    }
    let c = new_variable("N", "counter").unwrap();
    let c = set_field(&c, "max", "3").unwrap();
    assert_eq!(field_text(&c, "max"), "3");
    assert_eq!(set_field(&c, "step", "1.5").unwrap_err(), "N.step: expected a whole number");
    assert_eq!(set_field(&c, "step", "abc").unwrap_err(), "step: not a number");
    assert_eq!(set_field(&c, "step", "1e309").unwrap_err(), "step: number out of range (beyond ±1.8e308)");
    let r = new_variable("R", "random").unwrap();
    assert_eq!(set_field(&r, "min", "500").unwrap_err(), "R.min: min must be below max");
    let w = new_variable("W", "weighted").unwrap();
    let w = set_field(&w, "values", "on, off, 3, \"quoted\"").unwrap();
    assert_eq!(field_text(&w, "values"), "on, off, 3, quoted");
    // An emptied list is said as such (it read as a crossed range), for a pick and a weighted choice.
    for v in [&w, &new_variable("V", "values").unwrap()] {
        assert_eq!(
            set_field(v, "values", " , ").unwrap_err(),
            [&v.name, ".values: give at least one value (comma-separated)"].concat()
        );
    }
    // A counter that would never move is refused; a random integer has no decimals to set.
    assert!(set_field(&c, "step", "0").unwrap_err().contains("must not be 0"));
    assert!(!fields(&r).iter().any(|(k, _)| *k == "decimals"));
    assert!(fields(&new_variable("D", "randomDouble").unwrap()).iter().any(|(k, _)| *k == "decimals"));
    assert_eq!(set_field(&w, "weights", "1, 2").unwrap_err(), "W.weights: needs one non-negative number per value");
    let p = new_variable("P", "probability").unwrap();
    assert_eq!(set_field(&p, "probability", "2").unwrap_err(), "P.probability: must be between 0 and 1");
    let t = new_variable("T", "timestamp").unwrap();
    assert!(set_field(&t, "format", "yesterday").is_err());
    assert_eq!(
        set_field(&t, "name", "Time stamp").unwrap_err(),
        "a name is letters, digits and _ (it is written $.Name in the template)"
    );
    assert_eq!(set_field(&t, "name", "At").unwrap().name, "At");
}

#[test]
fn schedules_wait_with_jitter_and_stop_by_count_or_duration() {
    let m = Message { every_ms: 1000, jitter_ms: 200, count: 3, duration_ms: 0, ..Message::default() };
    assert_eq!((m.next_delay(0.0), m.next_delay(0.5), m.next_delay(0.999_999)), (800, 1000, 1199));
    assert!(!m.schedule_done(2, 1e9));
    assert!(m.schedule_done(3, 0.0));
    let d = Message { count: 0, duration_ms: 5000, every_ms: 10, jitter_ms: 50, ..Message::default() };
    assert_eq!(d.next_delay(0.0), 10);
    assert!(!d.schedule_done(1000, 4999.0));
    assert!(d.schedule_done(0, 5000.0));
    let forever = Message { count: 0, duration_ms: 0, ..Message::default() };
    assert!(!forever.schedule_done(u32::MAX, 1e12));
}

#[test]
fn a_saved_message_is_the_file_hubsim_simulate_reads() {
    // The example of crates/hubsim-device/src/message.rs, as `hubsim simulate --template` takes it.
    let file = r#"{
      "name": "thermostat",
      "template": "{\"temperature\": $.Temp, \"n\": $.Counter, \"device\": \"$.DeviceId\"}",
      "variables": [{"name": "Temp", "walk": true, "min": 15, "max": 30, "step": 0.5, "start": 21},
                    {"name": "Counter", "min": 1}],
      "header": "{\"source\": \"$.DeviceId\"}",
      "qos": 1,
      "properties": {"kind": "telemetry", "n": 2}
    }"#;
    let (list, what) = read_file(file, "x.json").unwrap();
    assert_eq!(what, "the saved message \"thermostat\"");
    let m = &list[0];
    assert!(m.template);
    assert_eq!(m.header, "{\"source\": \"$.DeviceId\"}");
    assert_eq!(m.properties, [("kind".to_owned(), "telemetry".to_owned()), ("n".to_owned(), "2".to_owned())]);
    // And what the app writes reads back, with the same keys.
    let out = m.to_json();
    for k in ["name", "template", "variables", "header", "qos", "properties"] {
        assert!(out.get(k).is_some(), "{k}");
    }
    assert_eq!(read_file(&out.to_string(), "x").unwrap().0, list);
    // A plain-text message keeps its text as written, placeholders and all.
    let t = Message { template: false, body: "raw $.NotAVariable".into(), variables: vec![], ..Message::default() };
    let (back, _) = read_file(&t.to_json().to_string(), "x").unwrap();
    assert_eq!(back[0], t);
    assert!(t.to_json().get("template").is_none());
}

#[test]
fn every_variable_form_is_bounded_by_the_same_count() {
    // The string form (ITS's environment variable) carries the list too: it must obey MAX_VARIABLES.
    let decls: Vec<String> = (0..MAX_VARIABLES + 1).map(|i| format!("{{name: 'V{i}', min: 1}}")).collect();
    let file = format!("{{name: 'm', template: '$.V0', variables: \"[{}]\"}}", decls.join(","));
    let e = read_file(&file, "m.json").unwrap_err();
    assert!(e.contains("more than 32 variables"), "{e}");
}

#[test]
fn what_the_library_stores_can_always_be_read_back() {
    // Messages within the per-message bounds (20 properties of 4 KB, a 16 KB body) made a stored library larger
    // than an import may be: the next page load refused it and put the examples back (and the next change
    // overwrote it), and its own export did not import. The library as a whole is bounded by what a file may
    // hold, and a change past it is refused with the reason.
    let big = |i: usize| Message {
        name: format!("m{i}"),
        template: false,
        body: "x".repeat(MAX_TEXT),
        properties: (0..MAX_PROPERTIES).map(|p| (format!("p{p}"), "y".repeat(4096))).collect(),
        variables: Vec::new(),
        ..Message::default()
    };
    let mut list = Vec::new();
    let mut refused = None;
    for i in 0..MAX_SAVED {
        if let Err(e) = upsert(&mut list, big(i)) {
            refused = Some(e);
            break;
        }
    }
    let text = export(&list);
    assert!(text.len() <= MAX_FILE, "{} bytes stored", text.len());
    let (back, error) = load(Some(&text));
    assert_eq!(error, None);
    assert!(back == list, "the stored library reads back");
    assert!(refused.unwrap().contains("larger than 1024 KB"));
    // An import is all or nothing under the same bound.
    let before = list.clone();
    assert!(merge(&list[..list.len() - 1], vec![big(1000), big(1001)]).is_err());
    assert_eq!(list, before);
}
