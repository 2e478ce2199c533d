//! CONNECT validation and acknowledge-after-durable over real sockets (issue 8 C): the exact bytes a device
//! sends, the exact bytes it gets back before the emulator closes the connection, and the logged reason.

use hubsim_proto::device::Event;
use hubsim_proto::mqttbytes::v4::{Connect, Login, Packet, Publish};
use hubsim_proto::mqttbytes::QoS;
use hubsim_testkit::*;
use std::time::Duration;

/// Everything received until the emulator closes the connection.
async fn answer_to(emu: &Emu, bytes: &[u8], via: Via) -> Vec<u8> {
    let mut t = open_raw(emu, via).await;
    t.send_raw(bytes).await;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(b) = t.recv_raw().await {
            got.extend(b);
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was not closed; got {got:02x?}");
    got
}

#[tokio::test]
async fn connect_validation_answers_with_the_spec_s_codes() {
    let emu = Emu::start().await;
    let cases: [(&str, &[u8], &[u8], &str); 6] = [
        // [MQTT-3.1.2-2] MQTT 3.1.1 at level 3, and MQTT 3.1 itself: CONNACK 0x01, then close.
        ("level 3", b"\x10\x10\x00\x04MQTT\x03\x02\x00\x3c\x00\x04dev1", b"\x20\x02\x00\x01", "refused"),
        ("MQIsdp 3", b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x04dev1", b"\x20\x02\x00\x01", "refused"),
        // [MQTT-3.1.2-1], [MQTT-3.1.2-3]: close without CONNACK.
        ("name", b"\x10\x10\x00\x04MQTX\x04\x02\x00\x3c\x00\x04dev1", b"", "protocol-violation"),
        ("reserved flag", b"\x10\x10\x00\x04MQTT\x04\x03\x00\x3c\x00\x04dev1", b"", "protocol-violation"),
        // [MQTT-3.1.3-8] empty ClientId with CleanSession 0: CONNACK 0x02.
        ("empty client id", b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x3c\x00\x00", b"\x20\x02\x00\x02", "refused"),
        // IoT Hub: no credentials is CONNACK 0x05.
        ("no credentials", b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1", b"\x20\x02\x00\x05", "refused"),
    ];
    for (name, input, output, reason) in cases {
        for via in [Via::Mqtt, Via::Ws] {
            let mut live = emu.hub().connlog.subscribe();
            assert_eq!(answer_to(&emu, input, via).await, output, "{name} over {via:?}");
            // Shown on the live connection log with its reason, but never stored (issue 8 D: no record for a
            // transport that never sent a valid CONNECT).
            let rec = tokio::time::timeout(WAIT, live.recv()).await.expect("live record").unwrap();
            assert_eq!(rec.reason, reason, "{name}: {}", rec.description);
            assert_eq!(rec.seq, 0);
        }
    }
    assert!(emu.hub().store.connections(0, 100_000, None).await.unwrap().is_empty(), "nothing was stored");
}

#[tokio::test]
async fn a_reported_patch_is_acknowledged_after_it_is_stored() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut c = Connect::new("d1");
    c.clean_session = false;
    c.login = Some(Login::new("localhost/d1/?api-version=2021-04-12", &token(&key, "d1", 3600)));
    let mut t = open_raw(&emu, Via::Mqtt).await;
    t.send_raw(&wire(Packet::Connect(c))).await;
    assert_eq!(t.recv_raw().await.unwrap(), b"\x20\x02\x00\x00");
    let mut p =
        Publish::new("$iothub/twin/PATCH/properties/reported/?$rid=1", QoS::AtLeastOnce, &b"{\"fw\":\"2.0\"}"[..]);
    p.pkid = 9;
    t.send_raw(&wire(Packet::Publish(p))).await;
    assert_eq!(t.recv_raw().await.unwrap(), b"\x40\x02\x00\x09", "PUBACK");
    // The PUBACK promises the write is durable: the store has it already.
    let twin = emu.hub().store.twin("d1").await.unwrap();
    assert_eq!(twin.reported["fw"], "2.0");
}

#[tokio::test]
async fn refused_connects_cannot_flush_the_connection_log() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    let wrong = hubsim_proto::sas::DeviceKey::from_base64("d3Jvbmcga2V5IHdyb25nIGtleQ==").unwrap();
    let stored_refusals = || async {
        let log = emu.hub().store.connections(0, 1000, None).await.unwrap();
        log.into_iter().filter(|r| r.operation == "connectRefused").collect::<Vec<_>>()
    };
    // A burst of CONNECTs with a wrong key: no credential needed, so only a few a second are stored.
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let mut d = TestDevice::new("d1", wrong.clone(), Via::Mqtt);
        assert!(!matches!(d.connect_with(&emu, token(&wrong, "d1", 600), None).await, Event::Connected { .. }));
    }
    // (the burst touches at most its length rounded up, plus one, of the one-second windows)
    let seconds = started.elapsed().as_secs() + 2;
    let stored = stored_refusals().await.len() as u64;
    assert!(stored <= 10 * seconds && stored < 100, "{stored} of 100 refusals stored in {seconds} s");
    // The next one stored (in a later second) says how many were left out.
    let said = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut d = TestDevice::new("d1", wrong.clone(), Via::Mqtt);
            d.connect_with(&emu, token(&wrong, "d1", 600), None).await;
            if let Some(r) =
                stored_refusals().await.iter().find(|r| r.description.contains("were shown live but not stored"))
            {
                return r.description.clone();
            }
        }
    })
    .await
    .expect("no stored refusal counted the ones left out");
    assert!(said.contains("more than 10 a second"), "{said}");
    // A device that connects is always recorded.
    let key = emu.device("d2").await;
    let mut ok = TestDevice::new("d2", key.clone(), Via::Mqtt);
    assert!(matches!(ok.connect_with(&emu, token(&key, "d2", 600), None).await, Event::Connected { .. }));
    emu.wait_log(|r| r.operation == "deviceConnect" && r.device_id.as_deref() == Some("d2")).await;
}
