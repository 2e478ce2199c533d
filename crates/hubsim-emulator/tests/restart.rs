//! Persistence: `kill -9` the emulator process after acknowledgements; nothing acknowledged is lost.

mod common;

use common::*;
use hubsim_proto::device::{Event, Telemetry};
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::TopicFilter;
use serde_json::json;

#[tokio::test]
async fn acknowledged_state_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(tmp.path());
    let d = p.api("PUT", "/devices/d1", None).await;
    let key = DeviceKey::from_base64(d["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let mut dev = TestDevice::new("d1", key.clone(), Via::Mqtt);
    dev.connect(&p).await;
    dev.subscribe(&[TopicFilter::C2d]).await;
    for i in 0..20 {
        dev.send(Telemetry::new(format!("msg {i}"))).await;
    }
    let mut acked = 0;
    while acked < 20 {
        if let Event::TelemetryAcked { .. } = dev.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await
        {
            acked += 1;
        }
    }
    let now = dev.now();
    dev.session.disconnect(now);
    dev.flush().await;
    let r = p
        .api(
            "POST",
            "/devices/d1/messages/devicebound",
            Some(json!({"body": "sent while away", "messageId": "away-1"})),
        )
        .await;
    assert_eq!(r["messageId"], "away-1");
    p.kill9();

    let p = Proc::spawn(tmp.path());
    let events = p.api("GET", "/events?device=d1&limit=100", None).await;
    let bodies: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, (0..20).map(|i| format!("msg {i}")).collect::<Vec<_>>());
    let mut dev = TestDevice::new("d1", key, Via::Wss);
    assert!(dev.connect(&p).await, "the CleanSession 0 session survived");
    let Event::C2d(m) = dev.expect("C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(&m.payload[..], b"sent while away");
}
