//! Persistence: `kill -9` the emulator process after acknowledgements; nothing acknowledged is lost.

use hubsim_proto::device::{Event, Telemetry};
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::TopicFilter;
use hubsim_testkit::*;
use serde_json::json;

#[tokio::test]
async fn acknowledged_state_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
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
    dev.disconnect().await;
    let r = p
        .api(
            "POST",
            "/devices/d1/messages/devicebound",
            Some(json!({"body": "sent while away", "messageId": "away-1"})),
        )
        .await;
    assert_eq!(r["messageId"], "away-1");
    p.kill9();

    let p = Proc::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let events = p.api("GET", "/events?device=d1&limit=100", None).await;
    let bodies: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, (0..20).map(|i| format!("msg {i}")).collect::<Vec<_>>());
    let mut dev = TestDevice::new("d1", key, Via::Ws);
    assert!(dev.connect(&p).await, "the CleanSession 0 session survived");
    let Event::C2d(m) = dev.expect("C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(&m.payload[..], b"sent while away");
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_that_was_acknowledged() {
    const N: u32 = 600;
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let d = p.api("PUT", "/devices/stream", None).await;
    let key = DeviceKey::from_base64(d["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let mut dev = TestDevice::new("stream", key, Via::Mqtt);
    dev.session_mut().config_mut().max_inflight = 16;
    dev.connect(&p).await;
    let (mut next, mut acked) = (0u32, 0u32);
    // Which message each publish carried, and the messages acknowledged when the emulator was killed.
    let mut sent: std::collections::HashMap<hubsim_proto::device::PublishId, u32> = Default::default();
    let mut acked_ids = std::collections::BTreeSet::new();
    let mut acked_before_kill = None;
    let mut proc = Some(p);
    while acked < N {
        while next < N && dev.session_mut().unacked() < 16 {
            let mut m = Telemetry::new(format!("{next}"));
            m.properties.set_system(hubsim_proto::property_bag::SystemProperty::MessageId, next.to_string());
            let id = dev.send(m).await;
            sent.insert(id, next);
            next += 1;
        }
        match dev.next_event().await.expect("event") {
            Event::TelemetryAcked { id, .. } => {
                acked += 1;
                acked_ids.insert(sent[&id]);
                if acked == N / 2 && acked_before_kill.is_none() {
                    // kill -9 with messages in flight; everything acknowledged so far must survive, and must be
                    // there before the device had any chance to send anything again.
                    acked_before_kill = Some(acked_ids.clone());
                    proc.take().unwrap().kill9();
                    let fresh = Proc::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
                    let stored = stored_ids(&fresh).await;
                    let lost: Vec<_> = acked_ids.difference(&stored).collect();
                    assert!(lost.is_empty(), "acknowledged before kill -9, lost after it: {lost:?}");
                    proc = Some(fresh);
                }
            }
            Event::ConnectionLost { .. } => {
                dev.connect(proc.as_ref().unwrap()).await;
            }
            _ => {}
        }
    }
    assert_eq!(acked_before_kill.map(|s| s.len()), Some(N as usize / 2), "the kill happened mid-stream");
    let p = proc.unwrap();
    let ids = stored_ids(&p).await;
    let missing: Vec<u32> = (0..N).filter(|i| !ids.contains(i)).collect();
    assert!(missing.is_empty(), "lost across kill -9: {missing:?}");
}

/// The message ids of every stored event of device `stream`.
async fn stored_ids(p: &Proc) -> std::collections::BTreeSet<u32> {
    let mut ids = std::collections::BTreeSet::new();
    let mut after = 0;
    loop {
        let page = p.api("GET", &format!("/events?device=stream&after={after}&limit=1000"), None).await;
        let items = page.as_array().unwrap().clone();
        for e in &items {
            ids.insert(e["systemProperties"]["message-id"].as_str().unwrap().parse::<u32>().unwrap());
            after = e["seq"].as_u64().unwrap();
        }
        if items.len() < 1000 {
            return ids;
        }
    }
}
