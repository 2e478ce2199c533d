//! C2D input bounds and property values kept exactly (issue 8 A and D): null and empty application properties
//! stay different from the service API to the device, and oversized or overflowing requests get 400.

use hubsim_hub::hub::{c2d_properties, SendC2d, ServiceError};
use hubsim_proto::device::Event;
use hubsim_proto::topic::TopicFilter;
use hubsim_testkit::*;
use serde_json::json;

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
