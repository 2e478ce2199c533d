//! `hubsim simulate --template` and `--model` against the real emulator in this process: the fleet's library
//! API ([`SimConfig`], [`run`]) with a `count` bound or a stop signal, synchronised on what the emulator stored
//! and on the fleet's own events, never on sleeps.

use hubsim_device::fleet::{run, FleetEvent, PayloadSource, SimConfig};
use hubsim_device::message::MessageTemplate;
use hubsim_device::pnp::ModelSpec;
use hubsim_dtdl::builtin;
use hubsim_proto::conn_str::ConnectionString;
use hubsim_testkit::{Emu, WAIT};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A fleet of these devices (created on the emulator) connecting to `emu` over MQTT/TLS.
async fn fleet(emu: &Emu, ids: &[&str]) -> SimConfig {
    let mut devices = Vec::new();
    for id in ids {
        let d = match emu.hub().get_device(id).await {
            Ok(d) => d,
            Err(_) => emu.hub().create_device(id, None, None, true).await.unwrap(),
        };
        let cs =
            format!("HostName=localhost;DeviceId={id};SharedAccessKey={}", d.authentication.symmetric_key.primary_key);
        devices.push(ConnectionString::parse(&cs).unwrap());
    }
    let mut cfg = SimConfig::new(devices);
    cfg.host = Some("localhost".into());
    cfg.mqtt_port = emu.r().mqtt_addr.port();
    cfg.ca_pem = Some(std::fs::read(emu.ca()).unwrap());
    cfg
}

fn template(text: &str) -> PayloadSource {
    PayloadSource::Template(Arc::new(MessageTemplate::parse(text).unwrap()))
}

async fn bodies(emu: &Emu, id: &str) -> Vec<Value> {
    let evs = emu.hub().store.events(0, 100_000, Some(id)).await.unwrap();
    evs.iter().map(|e| serde_json::from_str(e.body.as_deref().unwrap()).unwrap()).collect()
}

const COUNTER_AND_RANGE: &str = r#"{
  "name": "counter and range",
  "template": "{\"n\": $.N, \"r\": $.R, \"who\": \"$.Who\"}",
  "variables": [
    {"name": "N", "min": 1},
    {"name": "R", "random": true, "min": 10, "max": 20},
    {"name": "Who", "values": ["$.DeviceId"]}
  ],
  "header": "{\"source\": \"$.DeviceId\", \"n\": $.N}",
  "properties": {"kind": "test"}
}"#;

#[tokio::test]
async fn template_counter_range_and_header_arrive_in_the_event_store() {
    let emu = Emu::start().await;
    let mut cfg = fleet(&emu, &["tpl1"]).await;
    cfg.payload = template(COUNTER_AND_RANGE);
    (cfg.count, cfg.rate, cfg.seed) = (3, 0.0, 42);
    let summary = run(cfg).await.unwrap();
    assert_eq!((summary["sent"].as_u64(), summary["acknowledged"].as_u64()), (Some(3), Some(3)), "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["template"], "counter and range");

    let evs = emu.wait_events("tpl1", 3).await;
    let b = bodies(&emu, "tpl1").await;
    assert_eq!(b.iter().map(|b| b["n"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    for body in &b {
        let r = body["r"].as_i64().unwrap();
        assert!((10..20).contains(&r), "{r} outside [10, 20)");
        assert_eq!(body["who"], "tpl1", "$.DeviceId in values");
    }
    for (i, e) in evs.iter().enumerate() {
        let app = &e.application_properties;
        assert_eq!(app["source"], "tpl1", "{app:?}");
        assert_eq!(app["n"], (i + 1).to_string(), "{app:?}");
        assert_eq!(app["kind"], "test", "{app:?}");
        assert_eq!(e.system_properties["content-type"], "application/json");
    }
}

#[tokio::test]
async fn the_same_seed_gives_the_same_bodies() {
    let emu = Emu::start().await;
    let saved = r#"{name: "seeded", template: '{"a": $.A, "b": $.B, "c": "$.C"}', variables: [
        {name: "A", randomDouble: true, min: 0, max: 1000},
        {name: "B", walk: true, min: 0, max: 100, step: 3, start: 50},
        {name: "C", customLengthString: 12}]}"#;
    for seed in [7, 7, 8] {
        let mut cfg = fleet(&emu, &["seeded"]).await;
        cfg.payload = template(saved);
        (cfg.count, cfg.rate, cfg.seed) = (3, 0.0, seed);
        let summary = run(cfg).await.unwrap();
        assert_eq!(summary["acknowledged"], 3, "{summary}");
    }
    emu.wait_events("seeded", 9).await;
    let b = bodies(&emu, "seeded").await;
    assert_eq!(b[0..3], b[3..6], "seed 7 twice");
    assert_ne!(b[0..3], b[6..9], "seed 8");
}

#[tokio::test]
async fn an_its_relaxed_json_configuration_loads_and_sends() {
    let emu = Emu::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("its.json");
    // As Iot-Telemetry-Simulator's README writes them: unquoted keys, single quotes, Variables as a string.
    std::fs::write(
        &path,
        "{\n  // a comment\n  Template: '{\"deviceId\": \"$.DeviceId\", \"temp\": $.Temp, \"counter\": $.Counter}',\n  \
         Variables: \"[{name: 'Temp', random: true, min: 23, max: 25}, {name: 'Counter', min: 100}]\",\n  \
         Header: '{\"site\": \"lab\"}',\n}\n",
    )
    .unwrap();
    let t = MessageTemplate::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut cfg = fleet(&emu, &["its1"]).await;
    cfg.payload = PayloadSource::Template(Arc::new(t));
    (cfg.count, cfg.rate) = (2, 0.0);
    let summary = run(cfg).await.unwrap();
    assert_eq!(summary["acknowledged"], 2, "{summary}");
    let evs = emu.wait_events("its1", 2).await;
    let b = bodies(&emu, "its1").await;
    assert_eq!(b[0]["deviceId"], "its1");
    assert_eq!((b[0]["counter"].as_i64(), b[1]["counter"].as_i64()), (Some(100), Some(101)));
    assert!((23..25).contains(&b[1]["temp"].as_i64().unwrap()));
    assert_eq!(evs[0].application_properties["site"], "lab");
}

#[tokio::test]
async fn the_template_file_paces_each_device_by_its_own_intervals() {
    let emu = Emu::start().await;
    // An ITS configuration with per-device intervals: p1 waits 300 ms between messages, p2 100 ms.
    let its = "{Template: '{\"n\": $.N}', Variables: [{name: 'N', min: 1}], Intervals: {p1: [300], p2: 100}, MessageCount: 3}";
    let t = MessageTemplate::parse(its).unwrap();
    assert_eq!(t.schedule.count, 3);
    let mut cfg = fleet(&emu, &["p1", "p2"]).await;
    cfg.payload = PayloadSource::Template(Arc::new(t));
    (cfg.count, cfg.pace_by_template, cfg.rate) = (3, true, 0.0);
    let summary = run(cfg).await.unwrap();
    assert_eq!(summary["acknowledged"], 6, "{summary}");
    assert_eq!(summary["pacing"], "the template's schedule", "{summary}");
    // Enqueued times are ISO 8601 (`2026-11-30T09:40:01.123Z`): milliseconds of the day are enough here.
    let ms = |t: &str| -> i64 {
        let hms: Vec<f64> = t[11..t.len() - 1].split(':').map(|p| p.parse().unwrap()).collect();
        ((hms[0] * 3600.0 + hms[1] * 60.0 + hms[2]) * 1000.0).round() as i64
    };
    let spread = |evs: &[hubsim_hub::model::EventRecord]| ms(&evs[2].enqueued_time) - ms(&evs[0].enqueued_time);
    // Two waits each, 600 ms for p1 and 200 ms for p2 (rate 0 would send all three at once); the hub's clock
    // sees them with the store's commit latency, so each bound allows 100 ms of it.
    let (p1, p2) = (emu.wait_events("p1", 3).await, emu.wait_events("p2", 3).await);
    assert!(spread(&p1) >= 500, "p1 sent its 3 messages within {} ms", spread(&p1));
    assert!((100..500).contains(&spread(&p2)), "p2 sent its 3 messages within {} ms", spread(&p2));
}

#[tokio::test]
async fn a_run_bound_by_duration_waits_for_what_it_sent_to_be_acknowledged() {
    let emu = Emu::start().await;
    let mut cfg = fleet(&emu, &["drain1", "drain2"]).await;
    // As fast as acknowledgements allow: a whole window is in flight when the duration ends.
    (cfg.rate, cfg.duration) = (0.0, Some(Duration::from_millis(700)));
    let summary = run(cfg).await.unwrap();
    let sent = summary["sent"].as_u64().unwrap();
    assert!(sent > 10, "{summary}");
    assert_eq!(summary["acknowledged"].as_u64(), Some(sent), "{summary}");
    assert_eq!(summary["pending"], 0, "{summary}");
    assert_eq!(summary["sizeBytes"], 256, "{summary}");
}

#[tokio::test]
async fn a_failing_render_counts_as_an_error_with_its_message() {
    let emu = Emu::start().await;
    let mut cfg = fleet(&emu, &["bad1"]).await;
    // `$.S` is a string printed without quotes: the body is not JSON, so nothing is sent.
    cfg.payload = template(r#"{name: "bad", template: '{"s": $.S}', variables: [{name: "S", values: ["abc"]}]}"#);
    (cfg.count, cfg.rate) = (2, 0.0);
    let summary = run(cfg).await.unwrap();
    assert_eq!((summary["sent"].as_u64(), summary["errors"].as_u64()), (Some(0), Some(2)), "{summary}");
    let failures = summary["failures"].to_string();
    assert!(failures.contains("device bad1: message 0: the body is not JSON: line 1, col 7"), "{failures}");
}

/// A running fleet of one model device, with its events and its stop switch.
struct Running {
    events: mpsc::UnboundedReceiver<FleetEvent>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Value>,
}

impl Running {
    async fn start(emu: &Emu, id: &str, reject: &[&str]) -> Running {
        let mut cfg = fleet(emu, &[id]).await;
        let model = builtin::TEMPERATURE_CONTROLLER.load().unwrap();
        let spec = ModelSpec::new(model, reject.iter().map(|s| s.to_string()).collect()).unwrap();
        cfg.payload = PayloadSource::Model(Arc::new(spec));
        cfg.rate = 10.0;
        let (tx, events) = mpsc::unbounded_channel();
        let (stop, rx) = watch::channel(false);
        (cfg.events, cfg.stop) = (Some(tx), Some(rx));
        let task = tokio::spawn(async move { run(cfg).await.unwrap() });
        let mut r = Running { events, stop, task };
        r.wait("ready", |e| matches!(e, FleetEvent::Ready { .. })).await;
        r
    }

    async fn wait(&mut self, what: &str, pred: impl Fn(&FleetEvent) -> bool) -> FleetEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                let e = self.events.recv().await.expect("the fleet ended");
                if pred(&e) {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn acked(&mut self, component: &str, property: &str) -> (u16, i64) {
        let e = self
            .wait(&format!("ack of {component}.{property}"), |e| {
                matches!(e, FleetEvent::PropertyAcknowledged { component: Some(c), property: p, .. }
                    if c == component && p == property)
            })
            .await;
        match e {
            FleetEvent::PropertyAcknowledged { code, version, .. } => (code, version),
            _ => unreachable!(),
        }
    }

    async fn finish(self) -> Value {
        self.stop.send(true).unwrap();
        tokio::time::timeout(WAIT, self.task).await.expect("the fleet stops").unwrap()
    }
}

#[tokio::test]
async fn model_device_acknowledges_rejects_answers_and_sends_component_telemetry() {
    let emu = Emu::start().await;
    let model_id = builtin::TEMPERATURE_CONTROLLER.load().unwrap().id().to_owned();
    let mut dev = Running::start(&emu, "pnp1", &["thermostat2.targetTemperature"]).await;

    // Writable properties: accepted with 200, rejected with 400, `av` the desired $version.
    let twin = emu
        .hub()
        .patch_desired(
            "pnp1",
            json!({"thermostat1": {"targetTemperature": 25.5}, "thermostat2": {"targetTemperature": 30}}),
        )
        .await
        .unwrap();
    let version = twin.desired_version as i64;
    assert_eq!(dev.acked("thermostat1", "targetTemperature").await, (200, version));
    assert_eq!(dev.acked("thermostat2", "targetTemperature").await, (400, version));
    let reported = emu.hub().get_twin("pnp1").await.unwrap().reported;
    assert_eq!(reported["thermostat1"]["__t"], "c");
    assert_eq!(
        reported["thermostat1"]["targetTemperature"],
        json!({"value": 25.5, "ac": 200, "av": version, "ad": "accepted"})
    );
    let t2 = &reported["thermostat2"]["targetTemperature"];
    assert_eq!((&t2["ac"], &t2["av"], &t2["value"]), (&json!(400), &json!(version), &json!(30)), "{t2}");
    // The read-only properties were reported on connect (deviceInformation is a component), generated as
    // telemetry of their schema is: a Temperature where the thermostat's starts, a string from its name.
    assert_eq!(reported["thermostat1"]["maxTempSinceLastReboot"], 21.0, "{reported}");
    assert_eq!(reported["deviceInformation"]["manufacturer"], "manufacturer-1", "{reported}");
    assert_eq!(reported["deviceInformation"]["__t"], "c", "{reported}");

    // A component command answered with a generated value of its response schema (temperatures, by their
    // names, from 21).
    let (status, payload) = emu
        .hub()
        .invoke_method("pnp1", "thermostat1*getMaxMinReport", json!("2024-01-01T00:00:00Z"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 200, "{payload}");
    let model = builtin::TEMPERATURE_CONTROLLER.load().unwrap();
    let (_, command) = hubsim_dtdl::pnp::find_command(&model, "thermostat1*getMaxMinReport").unwrap();
    let schema = &command.response.as_ref().unwrap().schema;
    let payload_value = hubsim_proto::json::parse(&payload.to_string()).unwrap();
    hubsim_dtdl::validate(schema, &payload_value, "tempReport").unwrap();
    assert_eq!(payload["maxTemp"], 21.0, "{payload}");
    // A request that does not fit the request schema: 400 with an error; an unknown command: 404.
    let (status, payload) = emu
        .hub()
        .invoke_method("pnp1", "thermostat1*getMaxMinReport", json!(42), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 400, "{payload}");
    assert!(payload["error"].as_str().unwrap().contains("since"), "{payload}");
    let (status, _) = emu
        .hub()
        .invoke_method("pnp1", "thermostat1*selfDestruct", json!(null), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 404);

    // Telemetry: one message per interface; a component's carries $.sub, stored as dt-subject, and every
    // message has the model id as dt-dataschema.
    let evs = emu.wait_events("pnp1", 3).await;
    let sub = |e: &hubsim_hub::model::EventRecord| {
        e.system_properties.get("dt-subject").and_then(Value::as_str).map(str::to_owned)
    };
    let t1 = evs.iter().find(|e| sub(e).as_deref() == Some("thermostat1")).expect("a thermostat1 message");
    assert_eq!(t1.system_properties["dt-dataschema"], model_id.as_str());
    assert_eq!(t1.system_properties["content-type"], "application/json");
    assert!(serde_json::from_str::<Value>(t1.body.as_deref().unwrap()).unwrap()["temperature"].is_number());
    assert!(evs.iter().any(|e| sub(e).is_none() && e.system_properties["dt-dataschema"] == model_id.as_str()));

    let summary = dev.finish().await;
    assert_eq!(summary["propertiesAcknowledged"], 2, "{summary}");
    assert_eq!(summary["commandsAnswered"], 3, "{summary}");
    assert_eq!(summary["modelId"], model_id.as_str());
}

#[tokio::test]
async fn reconnecting_acknowledges_a_desired_update_made_while_offline() {
    let emu = Emu::start().await;
    let dev = Running::start(&emu, "pnp2", &[]).await;
    dev.finish().await;
    emu.wait_log(|r| r.operation == "deviceDisconnect" && r.device_id.as_deref() == Some("pnp2")).await;

    let twin = emu.hub().patch_desired("pnp2", json!({"thermostat1": {"targetTemperature": 19}})).await.unwrap();
    let version = twin.desired_version as i64;
    let mut dev = Running::start(&emu, "pnp2", &[]).await;
    assert_eq!(dev.acked("thermostat1", "targetTemperature").await, (200, version));
    let reported = emu.hub().get_twin("pnp2").await.unwrap().reported;
    assert_eq!(
        reported["thermostat1"]["targetTemperature"],
        json!({"value": 19, "ac": 200, "av": version, "ad": "accepted"})
    );
    dev.finish().await;
}
