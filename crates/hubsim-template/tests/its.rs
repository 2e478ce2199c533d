//! Iot-Telemetry-Simulator compatibility: the README's examples and configuration files load unchanged,
//! and the expectations of ITS's own tests (`test/IotTelemetrySimulator.Test/*.cs`) hold here.

use hubsim_template::{Config, DeviceState, PayloadKind, RenderContext, Rendered};

const T0: i64 = 1_574_158_211_509; // 2019-11-19T10:10:11.509Z

fn ctx(i: usize) -> RenderContext<'static> {
    RenderContext { now_unix_ms: T0 + i as i64 * 100, local_offset_min: 0, machine_name: "pod-7" }
}

fn render_n(config: &Config, device: &str, n: usize) -> Vec<Rendered> {
    let mut st = DeviceState::new(device, 1);
    (0..n).map(|i| config.render(&mut st, &ctx(i)).unwrap()).collect()
}

fn bodies(config: &Config, device: &str, n: usize) -> Vec<String> {
    render_n(config, device, n).into_iter().map(|r| r.text().unwrap().to_owned()).collect()
}

fn its(text: &str) -> Config {
    Config::parse_its(text).unwrap()
}

#[test]
fn readme_example_1_counter_random_int_and_double() {
    let config = its(r#"{
        "Template": "{ \"deviceId\": \"$.DeviceId\", \"rand_int\": $.Temp, \"rand_double\": $.DoubleValue, \"Ticks\": $.Ticks, \"Counter\": $.Counter, \"time\": \"$.Time\" }",
        "Variables": [{"name": "Temp", "random": true, "max": 25, "min": 23}, {"name":"Counter", "min":100, "max":102}, {"name": "DoubleValue", "randomDouble":true, "min":0.22, "max":1.25}]
    }"#);
    let msgs = bodies(&config, "sim000001", 4);
    let counters: Vec<String> = msgs
        .iter()
        .map(|m| {
            let v = hubsim_proto::json::parse(m).unwrap();
            assert_eq!(v.get("deviceId").unwrap().as_str(), Some("sim000001"));
            let t = v.get("rand_int").unwrap().as_f64().unwrap();
            assert!(t == 23.0 || t == 24.0, "{m}");
            assert!((0.22..1.25).contains(&v.get("rand_double").unwrap().as_f64().unwrap()));
            v.get("Counter").unwrap().to_string()
        })
        .collect();
    assert_eq!(counters, ["100", "101", "102", "100"]);
    assert!(
        msgs[0].contains(r#""Ticks": 637097550115090000, "Counter": 100, "time": "2019-11-19T10:10:11.5090000Z" }"#),
        "{}",
        msgs[0]
    );
    assert!(msgs[1].contains(r#""time": "2019-11-19T10:10:11.6090000Z""#));
}

#[test]
fn readme_docker_variables_with_unquoted_keys_load_unchanged() {
    // The -e Variables=... strings of the README after shell unquoting: a string setting, mixed quoting.
    let config = its(r#"{
        "Template": "{ \"deviceId\": \"$.DeviceId\", \"rand_int\": $.Temp, \"Ticks\": $.Ticks, \"Counter\": $.Counter, \"time\": \"$.Time\", \"engine\": \"$.Engine\" }",
        "Variables": "[{name: \"Temp\", \"random\": true, \"max\": 25, \"min\": 23}, {\"name\":\"Counter\", \"min\":100}, {name:\"Engine\", values: [\"on\", \"off\"]}]"
    }"#);
    assert_eq!(config.variables().len(), 3);
    for (i, m) in render_n(&config, "sim000001", 20).iter().enumerate() {
        m.check_json().unwrap();
        let v = hubsim_proto::json::parse(m.text().unwrap()).unwrap();
        assert_eq!(v.get("Counter").unwrap().as_f64(), Some(100.0 + i as f64));
        assert!(matches!(v.get("engine").unwrap().as_str(), Some("on" | "off")));
    }
}

#[test]
fn cloud_runner_defaults_render_valid_json_with_machine_name() {
    // SimulatorCloudRunner defaults from the README's parameter table (unquoted keys throughout).
    let config = its(r#"{
        Template: '{ "deviceId": "$.DeviceId", "temp": $.Temp, "Ticks": $.Ticks, "Counter": $.Counter, "time": "$.Time", "engine": "$.Engine", "source": "$.MachineName" }',
        Variables: [{name: "Temp", random: true, max: 25, min: 23}, {name:"Counter", min:100}, {name:"Engine", values: ["on", "off"]}],
    }"#);
    let m = &render_n(&config, "sim000042", 1)[0];
    m.check_json().unwrap();
    let text = m.text().unwrap();
    assert!(text.contains(r#""Counter": 100, "time": "2019-11-19T10:10:11.5090000Z", "engine": "o"#), "{text}");
    assert!(text.ends_with(r#"", "source": "pod-7" }"#), "{text}");
}

const README_EXAMPLE_3: &str = r#"{
  "Variables": [
    {
      "name": "DeviceSequenceValue1",
      "sequence": true,
      "values": [ "$.Counter", "$.Counter", "$.Counter", "$.Counter", "$.Counter", "true", "false", "$.Counter" ]
    },
    {
      "name": "Device1Tags",
      "sequence": true,
      "values": [ "['ProducedPartCount']", "['ProducedPartCount']", "['ProducedPartCount']", "['ProducedPartCount']", "['ProducedPartCount']", "['Downtime']", "['Downtime']", "['ProducedPartCount']" ]
    },
    {
      "name": "Device1Downtime",
      "values": [ "true", "true", "true", "true", "false" ]
    },
    {
      "name": "Counter"
    }
  ],
  "Intervals": {
    "sim000001": 10000,
    "sim000002": [ 100 , 200 ]
  },
  "Payloads": [
    {
      "type": "template",
      "deviceId": "sim000001",
      "template": "{\"device\":\"$.DeviceId\",\"value\":\"$.DeviceSequenceValue1\",\"tags\": $.Device1Tags}"
    },
    {
      "type": "fix",
      "deviceId": "sim000002",
      "value": "{\"value\":\"myfixvalue\"}"
    },
    {
      "type": "template",
      "deviceId": "sim000003",
      "template": "{\"device\":\"$.DeviceId\",\"a\":\"b\",\"value\":\"$.DeviceSequenceValue1\"}"
    }
  ]
}"#;

#[test]
fn readme_example_3_file_payloads_per_device_and_intervals() {
    let config = its(README_EXAMPLE_3);
    assert_eq!(config.intervals().for_device("sim000001"), [10000]);
    assert_eq!(config.intervals().for_device("sim000002"), [100, 200]);
    assert_eq!(config.intervals().for_device("sim000003"), [1000]);

    let d1 = bodies(&config, "sim000001", 9);
    let values: Vec<String> =
        d1.iter().map(|b| b.split("\"value\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned()).collect();
    assert_eq!(values, ["1", "2", "3", "4", "5", "true", "false", "6", "7"]);
    assert_eq!(d1[0], r#"{"device":"sim000001","value":"1","tags": ['ProducedPartCount']}"#);
    assert_eq!(d1[5], r#"{"device":"sim000001","value":"true","tags": ['Downtime']}"#);
    // ITS sends this single-quoted array as is; the JSON check points at it.
    assert_eq!(
        render_n(&config, "sim000001", 1)[0].check_json().unwrap_err().to_string(),
        "line 1, col 44: single-quoted strings are not allowed in strict JSON"
    );

    assert_eq!(bodies(&config, "sim000002", 3), [r#"{"value":"myfixvalue"}"#; 3]);
    assert_eq!(
        bodies(&config, "sim000003", 2),
        [r#"{"device":"sim000003","a":"b","value":"1"}"#, r#"{"device":"sim000003","a":"b","value":"2"}"#]
    );
    // A device without its own payload draws among all; all weigh 100, so the first always wins.
    assert!(render_n(&config, "sim000009", 10).iter().all(|r| r.payload_index == 0));
}

#[test]
fn its_test_files_with_byte_order_mark_and_object_payloads() {
    // test1-config.json (note the BOM, as in the repository's files).
    let config = its("\u{feff}{\n  \"Variables\": [\n    {\n      \"name\": \"Value\",\n      \"sequence\": true,\n      \"values\": [ \"$.Counter\", \"true\" ]\n    },\n    {\n      \"name\": \"Counter\"\n    }\n  ],\n  \"Template\": \"{\\\"value\\\": \\\"$.Value\\\" }\"\n}");
    assert_eq!(
        bodies(&config, "d", 4),
        [r#"{"value": "1" }"#, r#"{"value": "true" }"#, r#"{"value": "2" }"#, r#"{"value": "true" }"#]
    );

    // test5-config-payloads-as-json.json: template and value written as objects. ITS flattens them
    // through .NET configuration, which sorts keys, so "a_second_value" comes first.
    let config = its(r#"{
  "Variables": [
    { "name": "Value", "sequence": true, "values": [ "$.Counter", "true" ] },
    { "name": "Counter" }
  ],
  "Payloads": [
    { "type": "template", "deviceId": "device0001", "template": { "value": "$.Value", "a_second_value":  "20" } },
    { "type": "fix", "deviceId": "device0002", "value": { "value": "myfixvalue" } }
  ]
}"#);
    assert_eq!(
        bodies(&config, "device0001", 2),
        [r#"{"a_second_value":"20","value":"1"}"#, r#"{"a_second_value":"20","value":"true"}"#]
    );
    assert_eq!(bodies(&config, "device0002", 1), [r#"{"value":"myfixvalue"}"#]);
}

#[test]
fn sender_test_multiple_devices_get_their_own_payloads() {
    // SenderBaseTest.When_SendingMessage_With_Different_Payload_Per_Device_Should_Work (test3 config).
    let config = its(r#"{
  "Variables": [ { "name": "Value", "sequence": true, "values": [ "$.Counter", "true" ] }, { "name": "Counter" } ],
  "Payloads": [
    { "type": "template", "deviceId": "device0001", "template": "{\"value\":\"$.Value\"}" },
    { "type": "fix", "deviceId": "device0002", "value": "{\"value\":\"myfixvalue\"}" },
    { "type": "template", "deviceId": "device0003", "template": "{\"a\":\"b\",\"value\":\"$.Value\"}" }
  ]
}"#);
    assert_eq!(bodies(&config, "device0001", 3), [r#"{"value":"1"}"#, r#"{"value":"true"}"#, r#"{"value":"2"}"#]);
    assert_eq!(bodies(&config, "device0002", 3), [r#"{"value":"myfixvalue"}"#; 3]);
    assert_eq!(
        bodies(&config, "device0003", 3),
        [r#"{"a":"b","value":"1"}"#, r#"{"a":"b","value":"true"}"#, r#"{"a":"b","value":"2"}"#]
    );
}

#[test]
fn payload_generator_tests_sequences_and_counters() {
    // PayloadGeneratorTest.Sequence_Generator
    let c = its(
        r#"{Template: '{"val":"$.Value"}', Variables: [{name: 'Value', sequence: true, values: ['$.Counter', 'true', 'false', '$.Counter']}, {name: 'Counter', step: 1, min: 1}]}"#,
    );
    let want = ["1", "true", "false", "2", "3", "true", "false", "4"].map(|v| format!(r#"{{"val":"{v}"}}"#));
    assert_eq!(bodies(&c, "mydevice", 8), want);

    // Sequence_With_Exchanging_Counters_Generator
    let c = its(r#"{Template: '{"val1":"$.Value1","val2":"$.Value2"}', Variables: [
        {name: 'Value1', sequence: true, values: ['$.Counter1', '$.Counter2']},
        {name: 'Value2', sequence: true, values: ['$.Counter2', '$.Counter1']},
        {name: 'Counter1', step: 1, min: 1}, {name: 'Counter2', step: 1, min: 1001}]}"#);
    assert_eq!(
        bodies(&c, "mydevice", 4),
        [
            r#"{"val1":"1","val2":"1001"}"#,
            r#"{"val1":"1002","val2":"2"}"#,
            r#"{"val1":"3","val2":"1003"}"#,
            r#"{"val1":"1004","val2":"4"}"#
        ]
    );

    // Sequence_With_Mixed_Counters_Generator: Counter3 is not in any sequence and counts every message.
    let c = its(r#"{Template: '{"val1":"$.Value1","val2":"$.Value2","counter_3":"$.Counter3"}', Variables: [
        {name: 'Value1', sequence: true, values: ['$.Counter1', '$.Counter2']},
        {name: 'Value2', sequence: true, values: ['$.Counter2', '$.Counter1']},
        {name: 'Counter1', step: 1, min: 1}, {name: 'Counter2', step: 1, min: 1001}, {name: 'Counter3', step: 1, min: 1000001}]}"#);
    assert_eq!(bodies(&c, "mydevice", 2)[1], r#"{"val1":"1002","val2":"2","counter_3":"1000002"}"#);

    // Sequence_As_Array_Attribute
    let c = its(r#"{Template: '{"val1":"$.Value1","array_var":$.ArrayValue,"array_fix":["FixCategory"]}', Variables: [
        {name: 'Value1', sequence: true, values: ['$.Counter1', '$.Counter2']},
        {name: 'Counter1', step: 1, min: 1}, {name: 'Counter2', step: 1, min: 1001},
        {name: 'ArrayValue', sequence: true, values: ['["MyCategory"]', '[]']}]}"#);
    assert_eq!(
        bodies(&c, "mydevice", 4),
        [
            r#"{"val1":"1","array_var":["MyCategory"],"array_fix":["FixCategory"]}"#,
            r#"{"val1":"1001","array_var":[],"array_fix":["FixCategory"]}"#,
            r#"{"val1":"2","array_var":["MyCategory"],"array_fix":["FixCategory"]}"#,
            r#"{"val1":"1002","array_var":[],"array_fix":["FixCategory"]}"#,
        ]
    );
}

#[test]
fn referenced_counter_without_a_previous_value_prints_its_placeholder_like_its() {
    let c = its(
        r#"{Template: '$.Value $.Counter', Variables: [{name: 'Value', sequence: true, values: ['true', '$.Counter']}, {name: 'Counter'}]}"#,
    );
    assert_eq!(bodies(&c, "d", 4), ["true $.Counter", "1 1", "true 1", "2 2"]);
}

#[test]
fn substitution_tests_of_its() {
    // TemplateVariableSubstitutionTest: values print as text, numbers invariantly, longer names first.
    let c = its(
        r#"{Template: 'Hello, $.name! I like $.var2 and $.var3, $.name.', Variables: [{name: 'name', values: ['World']}, {name: 'var2', values: [-0.5]}, {name: 'var3', values: ['']}]}"#,
    );
    assert_eq!(bodies(&c, "d", 1), ["Hello, World! I like -0.5 and , World."]);
    let c = its(
        r#"{Template: '$.var1$.var11, $.var $.var$.var1$.var11!', Variables: [{name: 'var1', values: [1]}, {name: 'var', values: [2]}, {name: 'var11', values: [3]}]}"#,
    );
    assert_eq!(bodies(&c, "d", 1), ["13, 2 213!"]);
    // ShouldSubstituteSpecialVariables: "$.Counter $.Ticks $.Guid" with the default Counter.
    let c = its(r#"{Template: '$.Counter $.Ticks $.Guid'}"#);
    let out = bodies(&c, "d", 1).remove(0);
    let parts: Vec<&str> = out.split(' ').collect();
    assert_eq!(parts[..2], ["1", "637097550115090000"]);
    assert_eq!(parts[2].len(), 36);
    assert_eq!(parts[2].as_bytes()[14], b'4');
}

#[test]
fn all_builtins() {
    let c = its(r#"{Template: '$.DeviceId|$.Time|$.LocalTime|$.Ticks|$.Epoch|$.MachineName|$.IterationNumber'}"#);
    let mut st = DeviceState::new("sim000001", 1);
    let cx = RenderContext { now_unix_ms: T0, local_offset_min: 60, machine_name: "pod-7" };
    let a = c.render(&mut st, &cx).unwrap();
    let b = c.render(&mut st, &cx).unwrap();
    assert_eq!(a.text().unwrap(), "sim000001|2019-11-19T10:10:11.5090000Z|2019-11-19T11:10:11.5090000+01:00|637097586115090000|1574158211|pod-7|0");
    assert!(b.text().unwrap().ends_with("|pod-7|1"));
}

#[test]
fn default_template_and_counter_when_nothing_is_configured() {
    let c = its("{}");
    assert_eq!(
        bodies(&c, "sim000001", 2),
        [
            r#"{"deviceId": "sim000001", "time": "2019-11-19T10:10:11.5090000Z", "counter": 1}"#,
            r#"{"deviceId": "sim000001", "time": "2019-11-19T10:10:11.6090000Z", "counter": 2}"#,
        ]
    );
}

#[test]
fn template_and_header_written_as_objects_are_a_hubsim_extension() {
    let c = its(r#"{Template: {id: "$.DeviceId", n: "$.Counter"}, Header: {n: "$.Counter"}}"#);
    let r = &render_n(&c, "sim000001", 1)[0];
    assert_eq!(r.text().unwrap(), r#"{"id":"sim000001","n":"1"}"#);
    assert_eq!(r.properties, [("n".to_owned(), "1".to_owned())]);
}

#[test]
fn header_template_becomes_application_properties() {
    // SenderBaseTest.When_SendMessageAsync_With_Header_Property_Is_Added, plus placeholders.
    let c = its(r#"{Header: '{ "myPropertyKey": "My Propert Value", "n": $.Counter, "src": "$.MachineName" }'}"#);
    let msgs = render_n(&c, "d", 2);
    assert_eq!(
        msgs[1].properties,
        [("myPropertyKey".into(), "My Propert Value".into()), ("n".into(), "2".into()), ("src".into(), "pod-7".into())]
    );
}

#[test]
fn payload_distribution_string() {
    // RunnerConfigurationTest.When_Using_Dynamic_Payload_Loads_Correctly: sorted by percentage.
    let c = its(r#"{PayloadDistribution: "fixSize(10,12) template(25,    default) fix(65, aaaaBBBBBCCC)"}"#);
    let p = c.payloads();
    assert_eq!(p.iter().map(|p| p.distribution).collect::<Vec<_>>(), [65, 25, 10]);
    assert!(matches!(&p[0].kind, PayloadKind::Fix(b) if b.len() == 9));
    assert!(matches!(&p[1].kind, PayloadKind::Template(t) if t.source() == hubsim_template::ITS_DEFAULT_TEMPLATE));
    assert_eq!(p[2].kind, PayloadKind::Fix(vec![0; 12]));

    let msgs = render_n(&c, "d", 4000);
    let count = |i| msgs.iter().filter(|m| m.payload_index == i).count();
    assert!((2450..2750).contains(&count(0)) && (880..1120).contains(&count(1)) && (300..500).contains(&count(2)));
    // Variables advance only on template messages: counters among template bodies are 1, 2, 3, ...
    let counters: Vec<String> = msgs
        .iter()
        .filter(|m| m.payload_index == 1)
        .take(3)
        .map(|m| m.text().unwrap().rsplit(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(counters, ["1}", "2}", "3}"]);

    // When_Using_Base64_Fix_Payload_Loads_Correctly and the named-template form.
    let c = its(r#"{PayloadDistribution: "fix(10, MTA=) template(25, default) fix(65, NjU=)"}"#);
    assert_eq!(c.payloads()[0].kind, PayloadKind::Fix(b"65".to_vec()));
    assert_eq!(c.payloads()[2].kind, PayloadKind::Fix(b"10".to_vec()));
    let c = its(
        r#"{PayloadDistribution: "fixSize(51,12) template(49, mytemplate)", mytemplate: '{"deviceId": "$.DeviceId" }'}"#,
    );
    assert!(
        matches!(&c.payloads()[1].kind, PayloadKind::Template(t) if t.source() == r#"{"deviceId": "$.DeviceId" }"#)
    );
}

#[test]
fn configuration_errors_name_field_position_and_problem() {
    let err = |t: &str| Config::parse_its(t).unwrap_err().to_string();
    assert_eq!(
        err("{\n  Variables: [{name: 'Temperature', random: true, min: 20, max: 30}],\n  Template: '{\\n  \"a\": 1,\\n  \"temp\": $.Temprature\\n}'\n}"),
        "Template: line 3, col 11: unknown variable $.Temprature; did you mean $.Temperature?"
    );
    assert_eq!(err("{\n  Variables: [{name: 'A'}\n  Template: 'x'\n}"), "line 3, col 3: expected ',' or ']'");
    assert_eq!(
        err(r#"{Variables: "[{name: 'A', random: yes}]"}"#),
        "Variables: line 1, col 22: unexpected character 'y'"
    );
    assert_eq!(
        err(r#"{Payloads: [{type: 'template', template: '$.Tcks'}]}"#),
        "Payloads[0].template: line 1, col 1: unknown variable $.Tcks; did you mean $.Ticks?"
    );
    assert_eq!(
        err(r#"{Payloads: [{type: 'binary', value: 'x'}]}"#),
        "Payloads[0].type: unknown payload type \"binary\"; accepted types are template and fix"
    );
    assert_eq!(
        err(
            r#"{Payloads: [{type: 'fix', value: 'a', distribution: 30}, {type: 'fix', value: 'b', distribution: 60}]}"#
        ),
        "Payloads: percentages add up to 90; they must reach 100"
    );
    assert_eq!(
        err(r#"{PayloadDistribution: "template(50, other)"}"#),
        "PayloadDistribution: template(50, other): no top-level key \"other\" holds a template"
    );
    assert_eq!(
        err(r#"{PayloadDistribution: "fix(100, abc)"}"#),
        "PayloadDistribution: fix(100, abc): not valid base64"
    );
    assert_eq!(
        err(r#"{PayloadDistribution: "fix(0, YQ==)"}"#),
        "PayloadDistribution: fix(0, YQ==): the first parameter must be a percentage from 1 to 100"
    );
    assert_eq!(err("[]"), "configuration: expected an object");
}

#[test]
fn a_typo_of_an_its_setting_is_refused_with_the_setting_and_other_keys_are_left_alone() {
    let err = |t: &str| Config::from_its(&hubsim_proto::json::parse_relaxed(t).unwrap()).unwrap_err().to_string();
    // Each would run without its setting: no message limit, ITS's default variables.
    assert_eq!(err("{Template: 'x', MesageCount: 5}"), "MesageCount: unknown key; did you mean MessageCount?");
    assert_eq!(
        err("{Template: '$.Temp', Varaibles: [{name: 'Temp', random: true}]}"),
        "Varaibles: unknown key; did you mean Variables?"
    );
    assert_eq!(err("{Template: 'x', Paylods: []}"), "Paylods: unknown key; did you mean Payloads?");
    // ITS's own settings (any case), a named template PayloadDistribution uses, and unrelated keys load.
    its("{iotHubConnectionString: 'HostName=h', DEVICECOUNT: 3, DevicePrefix: 'sim', KafkaTopic: 't', Template: 'x'}");
    its("{Template: 'a', Templat2: 'b', PayloadDistribution: 'template(50) template(50, Templat2)'}");
    its("{Template: 'x', notes: 'my config for the lab'}");
}
