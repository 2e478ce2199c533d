//! Tests that try hard to break the emulator: lossless delivery across 100 transport cuts, and a tour of bad
//! input, each closing only the offending connection with the right logged reason.

use hubsim_proto::device::{Event, Telemetry};
use hubsim_proto::mqttbytes::v4::{Connect, Login, Packet, Publish};
use hubsim_proto::mqttbytes::QoS;
use hubsim_proto::property_bag::SystemProperty;
use hubsim_testkit::*;
use std::collections::HashMap;

fn numbered(i: u32) -> Telemetry {
    let mut m = Telemetry::new(format!("{{\"n\":{i}}}"));
    m.properties.set_system(SystemProperty::MessageId, i.to_string());
    m
}

#[tokio::test]
async fn no_loss_across_100_transport_cuts() {
    const N: u32 = 2000;
    const CUTS: u32 = 100;
    let emu = Emu::start().await;
    let key = emu.device("chaos").await;
    let mut d = TestDevice::new("chaos", key, Via::Mqtt);
    // A small window, so acknowledgements arrive a few at a time and the cuts fall mid-stream.
    d.session_mut().config_mut().max_inflight = 8;
    d.connect(&emu).await;
    let (mut next, mut acked, mut cuts, mut reconnects) = (0u32, 0u32, 0u32, 0u32);
    // Acks since the last reconnect; a cut waits for the previous one to be noticed.
    let (mut since_reconnect, mut cut_pending) = (0u32, false);
    let started = std::time::Instant::now();
    while acked < N {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "bounded: {acked}/{N} after 2 minutes");
        while next < N && d.session_mut().unacked() < 8 {
            d.send(numbered(next)).await;
            next += 1;
        }
        match d.next_event().await.expect("an event") {
            Event::TelemetryAcked { .. } => {
                acked += 1;
                since_reconnect += 1;
                if since_reconnect >= 12 && !cut_pending && cuts < CUTS {
                    cuts += 1;
                    cut_pending = true;
                    if cuts % 2 == 0 {
                        // Cut from the service side (the emulator closes the connection)...
                        assert!(emu.hub().close_connection(
                            "chaos",
                            hubsim_proto::hub::CloseReason::ClosedByService("chaos".into())
                        ));
                    } else {
                        // ...or drop the socket from the device side, mid-stream.
                        d.take_transport();
                        let now = d.now();
                        d.session_mut().handle_transport_closed(now, "socket dropped by the test");
                    }
                }
            }
            Event::ConnectionLost { .. } => {
                reconnects += 1;
                since_reconnect = 0;
                cut_pending = false;
                d.connect(&emu).await;
            }
            _ => {}
        }
    }
    assert_eq!(cuts, CUTS);
    assert!(reconnects >= CUTS, "{reconnects} reconnects");
    let events = emu.wait_events("chaos", N as usize).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for e in &events {
        *seen.entry(e.system_properties["message-id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let missing: Vec<u32> = (0..N).filter(|i| !seen.contains_key(&i.to_string())).collect();
    assert!(missing.is_empty(), "lost {} messages: {:?}", missing.len(), &missing[..missing.len().min(20)]);
    let duplicates = events.len() - seen.len();
    println!("no-loss: {N} messages, {CUTS} cuts, {reconnects} reconnects, {duplicates} duplicates (at-least-once)");
}

fn publish(topic: &str, payload: Vec<u8>) -> Vec<u8> {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
    p.pkid = 1;
    wire(Packet::Publish(p))
}

/// A PUBLISH whose topic bytes are not UTF-8 (mqttbytes cannot encode one, so it is built by hand).
fn bad_utf8_publish() -> Vec<u8> {
    let topic = [b'd', b'e', b'v', 0xC3, 0x28];
    let mut v = vec![0x32, (2 + topic.len() + 2 + 1) as u8, 0, topic.len() as u8];
    v.extend_from_slice(&topic);
    v.extend_from_slice(&[0, 1, b'x']);
    v
}

#[tokio::test]
async fn bad_input_tour() {
    let emu = Emu::start().await;
    let key = emu.device("good").await;
    let bad_key = emu.device("bad").await;
    let mut good = TestDevice::new("good", key, Via::Ws);
    good.connect(&emu).await;
    let connect_bytes = {
        let mut c = Connect::new("bad");
        c.login = Some(Login::new("localhost/bad/?api-version=2021-04-12", &token(&bad_key, "bad", 3600)));
        wire(Packet::Connect(c))
    };
    // (what is sent after CONNECT, whether to send CONNECT first, close our side after sending, expected reason)
    let cases: Vec<(&str, Vec<u8>, bool, bool, &str)> = vec![
        ("bad UTF-8 topic", bad_utf8_publish(), true, false, "protocol-violation"),
        (
            "300 KB payload",
            publish("devices/bad/messages/events/", vec![b'x'; 300 * 1024]),
            true,
            false,
            "message-too-large",
        ),
        (
            "unencoded # in a property name",
            publish("devices/bad/messages/events/a#b=1", vec![]),
            true,
            false,
            "wrong-topic",
        ),
        ("PUBLISH before CONNECT", publish("devices/bad/messages/events/", vec![]), false, false, "protocol-violation"),
        ("a second CONNECT", connect_bytes.clone(), true, false, "protocol-violation"),
        (
            "a truncated packet",
            publish("devices/bad/messages/events/", vec![1; 100])[..20].to_vec(),
            true,
            true,
            "protocol-violation",
        ),
        ("a huge remaining length", vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F], true, false, "message-too-large"),
    ];
    for (name, payload, login_first, half_close, reason) in cases {
        let before = emu.hub().store.connections(0, 100_000, None).await.unwrap().last().map_or(0, |r| r.seq);
        let mut live = emu.hub().connlog.subscribe();
        let mut t = open_raw(&emu, Via::Mqtt).await;
        if login_first {
            t.send_raw(&connect_bytes).await;
            assert_eq!(t.recv_raw().await.unwrap(), vec![0x20, 0x02, 0x00, 0x00], "{name}: CONNACK");
        }
        t.send_raw(&payload).await;
        if half_close {
            if let hubsim_device::Transport::Tls(s) = &mut t {
                use tokio::io::AsyncWriteExt;
                s.shutdown().await.unwrap();
            }
        }
        let closed = tokio::time::timeout(WAIT, async { while t.recv_raw().await.is_some() {} }).await;
        assert!(closed.is_ok(), "{name}: the connection was not closed");
        let rec = if login_first {
            emu.wait_log(|r| r.seq > before && r.operation == "deviceDisconnect").await
        } else {
            // No valid CONNECT: shown on the live log, not stored.
            let rec = tokio::time::timeout(WAIT, live.recv()).await.expect("live record").unwrap();
            assert_eq!((rec.operation.as_str(), rec.seq), ("connectRefused", 0), "{name}");
            rec
        };
        assert_eq!(rec.reason, reason, "{name}: {}", rec.description);
        println!("{name}: closed, logged {} ({})", rec.reason, rec.description);
        // The well-behaved device is not disturbed.
        good.send(Telemetry::new(name)).await;
        good.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    }
}

#[tokio::test]
async fn publishes_queued_offline_arrive_even_when_together_larger_than_a_websocket_message() {
    // Eight QoS 1 messages of 200 KB queued while disconnected go out together at the next CONNACK: 1.6 MB, more
    // than the largest WebSocket message the emulator takes (1 MiB). Written as one message they were refused, and
    // written again at every reconnect; now they go as messages of whole packets of at most 64 KiB (one packet
    // alone when larger).
    let emu = Emu::start().await;
    let key = emu.device("bulky").await;
    let mut d = TestDevice::new("bulky", key, Via::Ws);
    for i in 0..8u32 {
        let mut m = Telemetry::new(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200 * 1024)));
        m.properties.set_system(SystemProperty::MessageId, i.to_string());
        d.send(m).await;
    }
    assert_eq!(d.session_mut().unacked(), 8, "queued while disconnected");
    d.connect(&emu).await;
    let mut acked = 0;
    while acked < 8 {
        match d.next_event().await.expect("an event") {
            Event::TelemetryAcked { .. } => acked += 1,
            Event::ConnectionLost { reason, .. } => panic!("the hub closed the connection after {acked}: {reason:?}"),
            _ => {}
        }
    }
    let events = emu.wait_events("bulky", 8).await;
    let mut ids: Vec<String> =
        events.iter().map(|e| e.system_properties["message-id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
}
