//! C2D input bounds and property values kept exactly (issue 8 A and D): null and empty application properties
//! stay different from the service API to the device, and oversized or overflowing requests get 400.

use hubsim_hub::hub::{c2d_properties, SendC2d, ServiceError};
use hubsim_proto::device::Event;
use hubsim_proto::topic::TopicFilter;
use hubsim_testkit::*;
use serde_json::{json, Value};

#[tokio::test]
async fn null_and_empty_properties_stay_different_end_to_end() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::C2d]).await;
    // Through the HTTP API, as a backend sends it.
    let owner = emu.token("iothubowner");
    let body = json!({"body": "x", "properties": {"p1": null, "p2": "", "p3": "a&b"}}).to_string();
    let h = [("host", "localhost"), ("authorization", owner.as_str()), ("content-type", "application/json")];
    let a = http_raw(emu.r().http_addr, "POST", "/devices/d1/messages/devicebound", &h, &body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // Stored as sent.
    let stored = emu.hub().store.c2d_queue("d1").await.unwrap();
    assert_eq!(
        stored[0].properties,
        vec![("p1".to_owned(), None), ("p2".to_owned(), Some(String::new())), ("p3".to_owned(), Some("a&b".into()))]
    );
    // On the wire: `p1` without `=`, `p2=` empty (reference §5).
    assert!(c2d_properties(&stored[0]).to_string().ends_with("p1&p2=&p3=a%26b"), "{}", c2d_properties(&stored[0]));
    // And in the device's event.
    let Event::C2d(m) = d.expect("C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(m.properties.get("p1"), Some(None));
    assert_eq!(m.properties.get("p2"), Some(Some("")));
    assert_eq!(m.properties.get("p3"), Some(Some("a&b")));
}

#[tokio::test]
async fn oversized_and_overflowing_sends_are_refused() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    let api_err = |e: ServiceError| match e {
        ServiceError::Api { status, message, .. } => (status, message),
        other => panic!("{other}"),
    };
    let ttl = SendC2d { ttl_seconds: Some(18_446_744_073_709_551), ..Default::default() };
    let (status, msg) = api_err(emu.hub().send_c2d("d1", ttl).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(msg.contains("ttlSeconds must be 1 to 172800"), "{msg}");
    let mut props = serde_json::Map::new();
    props.insert("big".into(), json!("x".repeat(64 * 1024)));
    let big = SendC2d { body: Some("b".into()), properties: props, ..Default::default() };
    let (status, msg) = api_err(emu.hub().send_c2d("d1", big).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(msg.contains("at most 64 KB"), "{msg}");
    let mut props = serde_json::Map::new();
    props.insert("bad\u{1b}name".into(), json!("v"));
    let bad = SendC2d { properties: props, ..Default::default() };
    assert_eq!(api_err(emu.hub().send_c2d("d1", bad).await.unwrap_err()).0, 400);
    assert!(emu.hub().store.c2d_queue("d1").await.unwrap().is_empty(), "nothing was queued");
}

async fn api(emu: &Emu, method: &str, path: &str, body: serde_json::Value) -> HttpAnswer {
    let owner = emu.token("iothubowner");
    let h = [("host", "localhost"), ("authorization", owner.as_str()), ("content-type", "application/json")];
    let body = if body.is_null() { String::new() } else { body.to_string() };
    http_raw(emu.r().http_addr, method, path, &h, &body).await
}

/// Waits until the wall clock is past `expiry_ms` (Unix ms): the messages' expiry is the event waited for.
async fn until_expired(expiry_ms: u64) {
    let now = hubsim_hub::timefmt::unix_ms();
    tokio::time::sleep(std::time::Duration::from_millis(expiry_ms.saturating_sub(now) + 1)).await;
    assert!(hubsim_hub::timefmt::unix_ms() > expiry_ms);
}

fn expired_feedback(emu_feedback: &serde_json::Value, device: &str) -> usize {
    let items = emu_feedback.as_array().expect("a feedback list");
    items.iter().filter(|f| f["deviceId"] == device && f["statusCode"] == "Expired").count()
}

/// IoT Hub dead-letters a C2D message when its expiry passes: expired messages of an offline device leave its
/// queue (with `Expired` feedback) before a send checks the 50-message depth, and no count or listing shows them.
#[tokio::test]
async fn expired_messages_of_an_offline_device_neither_fill_nor_show_in_its_queue() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    let mut last_expiry = 0;
    for i in 0..50 {
        let req = SendC2d {
            body: Some(format!("m{i}")),
            ttl_seconds: Some(1),
            ack: Some("full".into()),
            ..Default::default()
        };
        last_expiry = emu.hub().send_c2d("d1", req).await.unwrap().expiry_ms;
    }
    let a = api(&emu, "POST", "/devices/d1/messages/devicebound", json!({"body": "x"})).await;
    assert_eq!(a.status, 403, "50 live messages fill the queue: {}", a.body);
    until_expired(last_expiry).await;
    // Not listed, not counted: the queue, the identity, the twin, a query.
    assert_eq!(api(&emu, "GET", "/devices/d1/messages/devicebound", Value::Null).await.json(), json!([]));
    assert_eq!(api(&emu, "GET", "/devices/d1", Value::Null).await.json()["cloudToDeviceMessageCount"], 0);
    assert_eq!(api(&emu, "GET", "/twins/d1", Value::Null).await.json()["cloudToDeviceMessageCount"], 0);
    assert_eq!(api(&emu, "GET", "/devices", Value::Null).await.json()[0]["cloudToDeviceMessageCount"], 0);
    let q = json!({"query": "SELECT COUNT() AS n FROM devices WHERE cloudToDeviceMessageCount = 0"});
    assert_eq!(api(&emu, "POST", "/devices/query", q).await.json(), json!([{"n": 1}]));
    // A send finds room: the expired ones were dead-lettered first, each with its Expired feedback.
    let a = api(&emu, "POST", "/devices/d1/messages/devicebound", json!({"body": "fresh", "ttlSeconds": 3600})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let feedback = api(&emu, "GET", "/feedback?limit=1000", Value::Null).await.json();
    assert_eq!(expired_feedback(&feedback, "d1"), 50, "{feedback}");
    let stored = emu.hub().store.write(|tx| tx.c2d_queue("d1")).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), [b"fresh".as_slice()]);
}

/// The hub's sweep dead-letters expired messages while their device stays offline and nobody sends: `Expired`
/// feedback for those whose `ack` asks for it, live messages kept.
#[tokio::test]
async fn the_sweep_dead_letters_expired_messages_of_an_offline_device() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    emu.device("d2").await;
    let mut last_expiry = 0;
    for (device, ack) in [("d1", "full"), ("d1", "negative"), ("d1", "none"), ("d2", "positive"), ("d2", "full")] {
        let req = SendC2d { ttl_seconds: Some(1), ack: Some(ack.into()), ..Default::default() };
        last_expiry = emu.hub().send_c2d(device, req).await.unwrap().expiry_ms;
    }
    let alive = SendC2d { body: Some("alive".into()), ttl_seconds: Some(3600), ..Default::default() };
    emu.hub().send_c2d("d2", alive).await.unwrap();
    until_expired(last_expiry).await;
    assert_eq!(emu.hub().c2d_sweep_step(None).await.unwrap(), None, "one step covers the few messages");
    let emu = &emu;
    let raw = |id: &'static str| async move { emu.hub().store.write(move |tx| tx.c2d_queue(id)).await.unwrap() };
    assert!(raw("d1").await.is_empty());
    assert_eq!(raw("d2").await.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), [b"alive".as_slice()]);
    let feedback = api(emu, "GET", "/feedback?limit=1000", Value::Null).await.json();
    // Expired is negative feedback: asked for by `full` and `negative`, not by `none` or `positive`.
    assert_eq!((expired_feedback(&feedback, "d1"), expired_feedback(&feedback, "d2")), (2, 1), "{feedback}");
}
