//! IoT Hub's twin rules, enforced before anything is stored (issue 8 C): a device's bad reported patch gets
//! `$iothub/twin/res/400`, the twin stays readable, and other devices' writes are not disturbed.

use hubsim_proto::device::{Event, Telemetry};
use hubsim_proto::topic::TopicFilter;
use hubsim_testkit::*;
use serde_json::json;

fn nested(levels: usize) -> String {
    let mut s = "1".to_owned();
    for _ in 0..levels {
        s = format!("{{\"n\":{s}}}");
    }
    s
}

async fn report(d: &mut TestDevice, patch: &str) -> (u16, String) {
    let now = d.now();
    d.session_mut().patch_reported(now, patch.as_bytes().to_vec()).unwrap();
    d.flush().await;
    match d.expect("twin response", |e| matches!(e, Event::TwinResponse { .. })).await {
        Event::TwinResponse { status, body, .. } => (status, String::from_utf8_lossy(&body).into_owned()),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn bad_reported_patches_get_400_and_poison_nothing() {
    let emu = Emu::start().await;
    let key = emu.device("x").await;
    let other_key = emu.device("other").await;
    let mut d = TestDevice::new("x", key, Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::TwinResponses]).await;
    let mut other = TestDevice::new("other", other_key, Via::Ws);
    other.connect(&emu).await;

    let cases: Vec<(String, &str)> = vec![
        (r#"{"a.b":1}"#.into(), "contains '.'"),
        (nested(15), "deeper than 10"),
        (nested(127), "deeper than 10"),
        (r#"{"$secret":1}"#.into(), "contains '$'"),
        (r#"{"a b":1}"#.into(), "contains a space"),
        (format!(r#"{{"s":"{}"}}"#, "x".repeat(5000)), "at most 4096 bytes"),
        (r#"{"i":9007199254740993}"#.into(), "integer range"),
    ];
    for (patch, why) in &cases {
        let (status, body) = report(&mut d, patch).await;
        assert_eq!(status, 400, "{patch:.60}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errorCode"], 400004);
        assert!(v["message"].as_str().unwrap().contains(why), "{body}");
        // Another device's telemetry is stored and acknowledged meanwhile.
        other.send(Telemetry::new("still fine")).await;
        other.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    }
    // The reported section grows only up to 32 KB.
    for i in 0..8 {
        let (status, _) = report(&mut d, &format!(r#"{{"k{i}":"{}"}}"#, "x".repeat(4000))).await;
        assert_eq!(status, 204);
    }
    let (status, body) = report(&mut d, &format!(r#"{{"k9":"{}"}}"#, "x".repeat(4000))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("IoT Hub allows 32768"), "{body}");
    // The twin is readable and holds only the good writes.
    let twin = emu.hub().get_twin("x").await.unwrap();
    assert!(twin.reported.get("a.b").is_none() && twin.reported.get("n").is_none());
    assert_eq!(twin.reported.as_object().unwrap().len(), 8);
    assert_eq!(emu.wait_events("other", cases.len()).await.len(), cases.len());
    // A valid patch still works, and the connection was never closed.
    assert_eq!(report(&mut d, r#"{"fw":"1.3"}"#).await.0, 204);
}

#[tokio::test]
async fn a_section_is_sized_by_characters_as_iot_hub_counts_it() {
    let emu = Emu::start().await;
    let key = emu.device("u").await;
    let mut d = TestDevice::new("u", key, Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::TwinResponses]).await;
    // 9 strings of 1 900 "é": 17 100 characters of IoT Hub's 32 KB, though 34 200 bytes of UTF-8.
    for i in 0..9 {
        let (status, body) = report(&mut d, &format!(r#"{{"k{i}":"{}"}}"#, "é".repeat(1900))).await;
        assert_eq!(status, 204, "{body}");
    }
    for i in 9..17 {
        let (status, body) = report(&mut d, &format!(r#"{{"k{i}":"{}"}}"#, "é".repeat(1900))).await;
        assert_eq!(status, 204, "{body}");
    }
    // Past 32 768 characters it is refused, saying how IoT Hub counts.
    let (status, body) = report(&mut d, &format!(r#"{{"k17":"{}"}}"#, "é".repeat(1900))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("by IoT Hub's count") && body.contains("IoT Hub allows 32768"), "{body}");
    assert_eq!(emu.hub().get_twin("u").await.unwrap().reported.as_object().unwrap().len(), 17);
    // The same 17 100 characters written with `\u00e9` escapes (as Python's json.dumps writes them): 102 690
    // bytes of text, still 17 100 characters.
    let key = emu.device("esc").await;
    let mut e = TestDevice::new("esc", key, Via::Mqtt);
    e.connect(&emu).await;
    e.subscribe(&[TopicFilter::TwinResponses]).await;
    let members: Vec<String> = (0..9).map(|i| format!(r#""k{i}":"{}""#, "\\u00e9".repeat(1900))).collect();
    let patch = format!("{{{}}}", members.join(","));
    assert!(patch.len() > 100_000);
    let (status, body) = report(&mut e, &patch).await;
    assert_eq!(status, 204, "{body}");
}

// Several worker threads: the writers' tasks resume on any of them after their commit, as HTTP handlers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_desired_writes_reach_the_device_in_version_order() {
    let emu = Emu::start().await;
    let key = emu.device("o").await;
    let mut d = TestDevice::new("o", key, Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::TwinDesired]).await;
    // 8 writers at once, 10 patches each, all setting the same key: the device must see them in $version order,
    // or the value it applies last is not the twin's.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let hub = emu.r().hub.clone();
        writers.spawn(async move {
            for i in 0..10 {
                hub.patch_desired("o", json!({"k": format!("{w}-{i}")})).await.unwrap();
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..80 {
        let Event::DesiredPropertiesPatch { version, body } =
            d.expect("desired", |e| matches!(e, Event::DesiredPropertiesPatch { .. })).await
        else {
            unreachable!()
        };
        let version = version.unwrap();
        assert!(version > last.0, "version {version} after {}", last.0);
        last = (version, serde_json::from_slice::<serde_json::Value>(&body).unwrap()["k"].clone());
    }
    let twin = emu.hub().get_twin("o").await.unwrap();
    assert_eq!((last.0, &last.1), (twin.desired_version, &twin.desired["k"]));
}

#[tokio::test]
async fn bad_desired_patches_get_400_from_the_service() {
    let emu = Emu::start().await;
    emu.device("x").await;
    let err = emu.hub().patch_desired("x", json!({"a.b": 1})).await.unwrap_err();
    assert!(matches!(&err, hubsim_hub::hub::ServiceError::Api { status: 400, code: 400004, .. }), "{err}");
    let deep: serde_json::Value = serde_json::from_str(&nested(15)).unwrap();
    let err = emu.hub().patch_desired("x", deep).await.unwrap_err();
    assert!(err.to_string().contains("deeper than 10"), "{err}");
    // A client echoing `$version` is not refused for it.
    let t = emu.hub().patch_desired("x", json!({"$version": 7, "interval": 5})).await.unwrap();
    assert_eq!(t.desired["interval"], 5);
    assert!(t.desired.get("$version").is_none());
}

#[tokio::test]
async fn the_announced_model_id_is_kept_on_the_device_and_its_twin() {
    let emu = Emu::start().await;
    let key = emu.device("pnp").await;
    let mut cfg = hubsim_proto::DeviceConfig::new("localhost", hubsim_proto::DeviceIdentity::device("pnp"));
    cfg.model_id = Some("dtmi:com:example:Thermostat;1".into());
    let mut d = TestDevice::with_config(cfg, key, Via::Mqtt);
    d.connect(&emu).await;
    let owner = emu.token("iothubowner");
    let twin =
        http_raw(emu.r().http_addr, "GET", "/twins/pnp", &[("host", "localhost"), ("authorization", &owner)], "").await;
    assert_eq!(twin.json()["modelId"], "dtmi:com:example:Thermostat;1", "{}", twin.body);
    let dev =
        http_raw(emu.r().http_addr, "GET", "/devices/pnp", &[("host", "localhost"), ("authorization", &owner)], "")
            .await;
    assert_eq!(dev.json()["modelId"], "dtmi:com:example:Thermostat;1", "{}", dev.body);
}

#[tokio::test]
async fn a_dollar_name_in_a_service_twin_patch_is_refused_but_echoed_metadata_is_not() {
    let emu = Emu::start().await;
    emu.device("x").await;
    let owner = emu.token("iothubowner");
    let h = [("host", "localhost"), ("authorization", owner.as_str()), ("content-type", "application/json")];
    let bad = http_raw(emu.r().http_addr, "PATCH", "/twins/x", &h, r#"{"properties":{"desired":{"$x":1}}}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let echoed =
        r#"{"properties":{"desired":{"a":1,"$version":3,"$metadata":{"$lastUpdated":"2020-01-01T00:00:00Z"}}}}"#;
    let ok = http_raw(emu.r().http_addr, "PATCH", "/twins/x", &h, echoed).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}
