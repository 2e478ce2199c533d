//! Every hub rule of the emulator, checked with real TLS and WSS sockets on 127.0.0.1 and hubsim-proto's
//! DeviceSession as the client.

use bytes::Bytes;
use hubsim_hub::hub::SendC2d;
use hubsim_proto::device::{Event, Granted, LostReason, RequestKind, Telemetry, TelemetryQos, Will};
use hubsim_proto::mqttbytes::QoS;
use hubsim_proto::property_bag::{PropertyBag, SystemProperty};
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::TopicFilter;
use hubsim_testkit::*;
use serde_json::json;
use std::time::Duration;

async fn connect_both_transports(via: Via) {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, via);
    assert!(!d.connect(&emu).await, "first connection: no stored session");
    let mut m = Telemetry::new(&b"{\"temp\":21}"[..]);
    m.properties
        .set_system(SystemProperty::ContentType, "application/json")
        .set_system(SystemProperty::ContentEncoding, "utf-8")
        // Hub-stamped: a device cannot claim another's identity with them.
        .set_system(SystemProperty::Other("cdid".into()), "victim")
        .set_system(SystemProperty::Other("CMID".into()), "victim-module");
    m.properties.push("level", "high & mighty");
    d.send(m).await;
    d.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    let ev = &emu.wait_events("d1", 1).await[0];
    assert_eq!(ev.body.as_deref(), Some("{\"temp\":21}"));
    assert_eq!(ev.system_properties["content-type"], "application/json");
    assert_eq!(ev.system_properties["iothub-connection-device-id"], "d1");
    assert_eq!(
        ev.system_properties["iothub-connection-auth-method"],
        r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
    );
    let props = serde_json::to_string(&ev.system_properties).unwrap();
    assert!(!props.contains("victim"), "{props}");
    assert_eq!(ev.application_properties["level"], "high & mighty");
    let rec = emu.wait_log(|r| r.operation == "deviceConnect").await;
    assert_eq!(rec.transport, if via == Via::Mqtt { "mqtt" } else { "wss" });
}

#[tokio::test]
async fn telemetry_over_tls() {
    connect_both_transports(Via::Mqtt).await;
}

#[tokio::test]
async fn telemetry_over_websocket() {
    connect_both_transports(Via::Ws).await;
}

#[tokio::test]
async fn refusals_are_connack_5_or_3_and_logged() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let wrong = DeviceKey::from_base64("d3Jvbmcga2V5IGZvciB0aGlzIGRldmljZQ==").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (token(&wrong, "d1", 3600), "signature"),
        (token(&key, "d1", -400), "expired"),
        (token(&key, "other", 3600), "not for"),
    ];
    for (t, why) in cases {
        let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
        match d.connect_with(&emu, t, None).await {
            Event::ConnectionLost { reason: LostReason::Refused(r), .. } => assert_eq!(r.0, 5),
            other => panic!("{other:?}"),
        }
        let rec = emu.wait_log(|r| r.operation == "connectRefused" && r.description.contains(why)).await;
        assert_eq!(rec.result_type, 401002);
    }
    let mut ghost = TestDevice::new("nobody", key.clone(), Via::Mqtt);
    let t = token(&key, "nobody", 3600);
    assert!(
        matches!(ghost.connect_with(&emu, t, None).await, Event::ConnectionLost { reason: LostReason::Refused(r), .. } if r.0 == 5)
    );
    emu.hub().set_status("d1", false).await.unwrap();
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    let t = token(&key, "d1", 3600);
    assert!(
        matches!(d.connect_with(&emu, t, None).await, Event::ConnectionLost { reason: LostReason::Refused(r), .. } if r.0 == 3)
    );
}

#[tokio::test]
async fn a_token_inside_the_five_minute_skew_is_accepted() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    assert!(matches!(d.connect_with(&emu, token(&key, "d1", -200), None).await, Event::Connected { .. }));
}

#[tokio::test]
async fn connection_closes_when_the_token_expires() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    assert!(matches!(d.connect_with(&emu, token(&key, "d1", 2), None).await, Event::Connected { .. }));
    assert!(matches!(d.expect_closed().await, LostReason::TransportClosed(_)));
    let rec = emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    assert_eq!((rec.reason.as_str(), rec.result_type), ("token-expired", 401003));
}

#[tokio::test]
async fn a_new_connection_closes_the_old_one() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut a = TestDevice::new("d1", key.clone(), Via::Mqtt);
    a.connect(&emu).await;
    let mut b = TestDevice::new("d1", key, Via::Ws);
    b.connect(&emu).await;
    a.expect_closed().await;
    let rec = emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    assert_eq!((rec.reason.as_str(), rec.result_type), ("replaced-by-new-connection", 400027));
    // The new one still works.
    b.send(Telemetry::new("still here")).await;
    b.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
}

#[tokio::test]
async fn keep_alive_timeout_is_one_and_a_half_times_the_client_value() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.session_mut().config_mut().keep_alive = Duration::from_secs(2);
    d.connect(&emu).await;
    // Stay silent: never run the session's timers, just wait for the hub to close: after 1.5 × 2 s = 3 s, which
    // neither 1× (2 s) nor 2× (4 s) would pass.
    let t0 = std::time::Instant::now();
    let mut t = d.take_transport().unwrap();
    assert!(tokio::time::timeout(WAIT, t.recv_raw()).await.unwrap().is_none());
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(2800) && waited < Duration::from_millis(3600), "{waited:?}");
    let rec = emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    assert_eq!(rec.reason, "keep-alive-timeout");
}

#[tokio::test]
async fn pings_keep_a_quiet_device_connected() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Ws);
    d.session_mut().config_mut().keep_alive = Duration::from_secs(1);
    d.connect(&emu).await;
    assert_eq!(d.next_event_within(Duration::from_secs(4)).await, None, "no loss while pinging");
    assert!(d.session_mut().is_connected());
}

#[tokio::test]
async fn connect_must_arrive_in_time() {
    let emu = Emu::start_with(|c| c.protocol.connect_timeout = Duration::from_millis(500)).await;
    let mut live = emu.hub().connlog.subscribe();
    let mut t = open_raw(&emu, Via::Mqtt).await;
    assert!(tokio::time::timeout(WAIT, t.recv_raw()).await.unwrap().is_none());
    let rec = wait_live(&mut live, |r| r.operation == "connectRefused").await;
    assert_eq!(rec.reason, "connect-timeout");
    assert!(emu.hub().store.connections(0, 10, None).await.unwrap().is_empty(), "no stored record without a CONNECT");
}

async fn misuse_closes(publish: Telemetry, reason: &str) {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let key2 = emu.device("d2").await;
    let mut other = TestDevice::new("d2", key2, Via::Ws);
    other.connect(&emu).await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    d.send(publish).await;
    d.expect_closed().await;
    let rec = emu.wait_log(|r| r.operation == "deviceDisconnect" && r.device_id.as_deref() == Some("d1")).await;
    assert_eq!(rec.reason, reason, "{}", rec.description);
    // Everyone else keeps being served.
    other.send(Telemetry::new("ok")).await;
    other.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
}

#[tokio::test]
async fn qos2_publish_closes_the_connection() {
    misuse_closes(Telemetry { qos: TelemetryQos::ExactlyOnceHubWillClose, ..Telemetry::new("x") }, "qos2-publish")
        .await;
}

#[tokio::test]
async fn oversize_message_closes_the_connection() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    // DeviceSession refuses to send it, so write the PUBLISH by hand: a 300 KB payload.
    let mut p = hubsim_proto::mqttbytes::v4::Publish::new(
        "devices/d1/messages/events/",
        QoS::AtLeastOnce,
        vec![b'x'; 300 * 1024],
    );
    p.pkid = 1;
    let b = wire(hubsim_proto::mqttbytes::v4::Packet::Publish(p));
    let t = d.transport_mut().unwrap();
    t.send_raw(&b).await;
    while t.recv_raw().await.is_some() {}
    let rec = emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    assert_eq!(rec.reason, "message-too-large");
}

#[tokio::test]
async fn retained_telemetry_is_stored_with_mqtt_retain() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    d.send(Telemetry { retain: true, ..Telemetry::new("r") }).await;
    let ev = &emu.wait_events("d1", 1).await[0];
    assert_eq!(ev.application_properties["mqtt-retain"], "true");
}

#[tokio::test]
async fn retain_property_name_is_configurable() {
    let emu = Emu::start_with(|c| c.retain_property = "x-opt-retain".into()).await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    d.send(Telemetry { retain: true, ..Telemetry::new("r") }).await;
    assert_eq!(emu.wait_events("d1", 1).await[0].application_properties["x-opt-retain"], "true");
}

/// Raw PUBLISH bytes on a connected device, expecting the hub to close with `reason`.
async fn raw_publish_closes(topic: &str, reason: &str) {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Ws);
    d.connect(&emu).await;
    let p = hubsim_proto::mqttbytes::v4::Publish::new(topic, QoS::AtMostOnce, b"x".to_vec());
    let b = wire(hubsim_proto::mqttbytes::v4::Packet::Publish(p));
    let t = d.transport_mut().unwrap();
    t.send_raw(&b).await;
    while t.recv_raw().await.is_some() {}
    let rec = emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    assert_eq!(rec.reason, reason, "{topic}: {}", rec.description);
}

#[tokio::test]
async fn publishing_for_another_device_closes() {
    raw_publish_closes("devices/d2/messages/events/", "wrong-topic").await;
}

#[tokio::test]
async fn malformed_property_bag_closes() {
    raw_publish_closes("devices/d1/messages/events/time=12:00", "wrong-topic").await;
}

#[tokio::test]
async fn unknown_topic_closes() {
    raw_publish_closes("sensors/temperature", "wrong-topic").await;
}

#[tokio::test]
async fn will_is_published_as_telemetry_on_an_unclean_close() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    let mut props = PropertyBag::new();
    props.push("state", "lost");
    let will = Will { properties: props, payload: Bytes::from_static(b"gone"), qos: QoS::AtLeastOnce };
    assert!(matches!(d.connect_with(&emu, token(&key, "d1", 3600), Some(will)).await, Event::Connected { .. }));
    drop(d.take_transport().unwrap());
    let ev = &emu.wait_events("d1", 1).await[0];
    assert_eq!(ev.body.as_deref(), Some("gone"));
    assert_eq!(ev.application_properties["iothub-MessageType"], "Will");
    assert_eq!(ev.application_properties["state"], "lost");
}

#[tokio::test]
async fn subscriptions_grant_qos1_for_qos2_and_unknown_filters_close() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    d.connect(&emu).await;
    // DeviceSession asks for QoS 1; ask for QoS 2 by hand.
    let mut s = hubsim_proto::mqttbytes::v4::Subscribe::new("devices/d1/messages/devicebound/#", QoS::ExactlyOnce);
    s.pkid = 42;
    let b = wire(hubsim_proto::mqttbytes::v4::Packet::Subscribe(s));
    let t = d.transport_mut().unwrap();
    t.send_raw(&b).await;
    assert_eq!(t.recv_raw().await.unwrap(), vec![0x90, 0x03, 0x00, 42, 0x01]);
    let mut bad = hubsim_proto::mqttbytes::v4::Subscribe::new("devices/d2/messages/devicebound/#", QoS::AtLeastOnce);
    bad.pkid = 43;
    let b = wire(hubsim_proto::mqttbytes::v4::Packet::Subscribe(bad));
    t.send_raw(&b).await;
    assert_eq!(t.recv_raw().await, None, "closed, no SUBACK 0x80");
    let rec = emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    assert_eq!(rec.reason, "bad-subscription");
}

fn c2d(body: &str) -> SendC2d {
    SendC2d { body: Some(body.into()), ..Default::default() }
}

#[tokio::test]
async fn c2d_is_delivered_with_every_property_and_completed_by_puback() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Ws);
    d.connect(&emu).await;
    let sub = d.subscribe(&[TopicFilter::C2d]).await;
    assert_eq!(sub, Event::Subscribed { results: vec![(TopicFilter::C2d, Granted::Qos(QoS::AtLeastOnce))] });
    let mut props = serde_json::Map::new();
    props.insert("color".into(), json!("deep&blue"));
    props.insert("flag".into(), json!(null));
    let req = SendC2d {
        body: Some("{\"cmd\":\"on\"}".into()),
        message_id: Some("m-1".into()),
        correlation_id: Some("c-1".into()),
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        ack: Some("full".into()),
        properties: props,
        ..Default::default()
    };
    emu.hub().send_c2d("d1", req).await.unwrap();
    let Event::C2d(m) = d.expect("C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(&m.payload[..], b"{\"cmd\":\"on\"}");
    let p = &m.properties;
    assert_eq!(p.system(&SystemProperty::MessageId), Some("m-1"));
    assert_eq!(p.system(&SystemProperty::CorrelationId), Some("c-1"));
    assert_eq!(p.system(&SystemProperty::ContentType), Some("application/json"));
    assert_eq!(p.system(&SystemProperty::ContentEncoding), Some("utf-8"));
    assert_eq!(p.system(&SystemProperty::To), Some("/devices/d1/messages/devicebound"));
    assert_eq!(p.system(&SystemProperty::Ack), Some("full"));
    assert!(p.system(&SystemProperty::ExpiryTime).is_some_and(|e| e.ends_with('Z') && e.len() == 28));
    assert_eq!(p.get("color"), Some(Some("deep&blue")));
    assert_eq!(p.get("flag"), Some(None));
    d.flush().await;
    // The PUBACK (sent automatically) completes it. The hub handles a connection's packets in order and finishes
    // the completion before reading on, so once a later telemetry message is acknowledged the completion is done.
    d.send(Telemetry::new("after the PUBACK")).await;
    d.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    assert!(emu.hub().store.c2d_queue("d1").await.unwrap().is_empty());
    let fb = emu.hub().store.feedback(0, 10).await.unwrap();
    assert_eq!((fb[0].original_message_id.as_str(), fb[0].status_code.as_str()), ("m-1", "Success"));
}

#[tokio::test]
async fn the_51st_queued_message_is_refused() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    for i in 0..50 {
        emu.hub().send_c2d("d1", c2d(&i.to_string())).await.unwrap();
    }
    let e = emu.hub().send_c2d("d1", c2d("51")).await.unwrap_err();
    assert!(matches!(&e, hubsim_hub::hub::ServiceError::Api { status: 403, code: 403004, .. }), "{e}");
    assert!(e.to_string().contains("full"));
}

#[tokio::test]
async fn c2d_messages_are_bounded_like_iot_hubs() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    let mut props = serde_json::Map::new();
    for i in 0..20 {
        props.insert(format!("p{i}"), "v".repeat(4096).into());
    }
    let cases: Vec<(&str, SendC2d, u32)> = vec![
        ("80 KB of properties", SendC2d { properties: props, ..c2d("x") }, 400005),
        ("a 200-character messageId", SendC2d { message_id: Some("m".repeat(200)), ..c2d("x") }, 400004),
        ("ttlSeconds that overflows", SendC2d { ttl_seconds: Some(18_446_744_073_709_551), ..c2d("x") }, 400004),
        ("ttlSeconds 0", SendC2d { ttl_seconds: Some(0), ..c2d("x") }, 400004),
    ];
    // Application properties: US-ASCII, and no name the device would read as a system or hub property.
    let prop = |k: &str, v: &str| SendC2d { properties: [(k.to_owned(), v.into())].into_iter().collect(), ..c2d("x") };
    let mut cases = cases;
    for (name, req) in [
        ("a '$.mid' property", prop("$.mid", "spoofed")),
        ("a '%24.to' property", prop("%24.to", "/devices/other")),
        ("an 'iothub-ack' property", prop("iothub-ack", "full")),
        ("an 'IoTHub-MessageLockToken' property", prop("IoTHub-MessageLockToken", "x")),
        ("a non-ASCII name", prop("température", "1")),
        ("a non-ASCII value", prop("unit", "°C")),
        ("an empty name", prop("", "1")),
        ("a space in a name", prop("zone name", "north")),
        ("a space in a value", prop("zone", "north east")),
        ("a '=' in a value", prop("f", "=2+3")),
        ("a ',' in a value", prop("list", "a,b")),
        ("a messageId with a space", SendC2d { message_id: Some("m 1".into()), ..c2d("x") }),
        ("an empty messageId", SendC2d { message_id: Some(String::new()), ..c2d("x") }),
        ("a correlationId with a line feed", SendC2d { correlation_id: Some("c\n1".into()), ..c2d("x") }),
        ("a contentType that is not ASCII", SendC2d { content_type: Some("text/é".into()), ..c2d("x") }),
    ] {
        cases.push((name, req, 400004));
    }
    for (name, req, want) in cases {
        match emu.hub().send_c2d("d1", req).await {
            Err(hubsim_hub::hub::ServiceError::Api { status: 400, code, .. }) => assert_eq!(code, want, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(emu.hub().store.c2d_queue("d1").await.unwrap().is_empty());
    emu.hub().send_c2d("d1", SendC2d { ttl_seconds: Some(172_800), ..c2d("two days") }).await.unwrap();
    // Every character IoT Hub allows in names and values passes, and a messageId's own set.
    emu.hub().send_c2d("d1", prop("a-Z_0.9!#$%&'*+^`|~", "a-Z_0.9!#$%&'*+^`|~")).await.unwrap();
    let id = SendC2d { message_id: Some("m-:.+%_#*?!(),=@;$'1".into()), ..c2d("x") };
    emu.hub().send_c2d("d1", id).await.unwrap();
}

#[tokio::test]
async fn clean_session_0_keeps_the_subscription_and_delivers_on_reconnect_before_subscribing() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    assert!(!d.connect(&emu).await);
    d.subscribe(&[TopicFilter::C2d]).await;
    d.disconnect().await;
    emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    emu.hub().send_c2d("d1", c2d("while away")).await.unwrap();
    let mut d = TestDevice::new("d1", key, Via::Ws);
    assert!(d.connect(&emu).await, "session present");
    let Event::C2d(m) = d.expect("C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(&m.payload[..], b"while away");
}

#[tokio::test]
async fn clean_session_1_drops_the_session_and_waits_for_a_subscription() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::C2d]).await;
    d.disconnect().await;
    emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    emu.hub().send_c2d("d1", c2d("queued")).await.unwrap();
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    d.session_mut().config_mut().clean_session = true;
    assert!(!d.connect(&emu).await, "no session present with CleanSession 1");
    assert_eq!(d.next_event_within(Duration::from_millis(500)).await, None, "nothing before SUBSCRIBE");
    d.subscribe(&[TopicFilter::C2d]).await;
    let Event::C2d(m) = d.expect("C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(&m.payload[..], b"queued");
    // And the stored session is gone: a CleanSession 0 connection now finds none.
    d.disconnect().await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    assert!(!d.connect(&emu).await);
}

#[tokio::test]
async fn unacknowledged_c2d_is_redelivered_with_dup_then_dead_lettered() {
    let emu = Emu::start_with(|c| c.c2d_lock = Duration::from_millis(300)).await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.session_mut().config_mut().auto_ack_c2d = false;
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::C2d]).await;
    emu.hub()
        .send_c2d("d1", SendC2d { ack: Some("negative".into()), message_id: Some("never-acked".into()), ..c2d("x") })
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    while let Some(Event::C2d(m)) = d.next_event_within(Duration::from_secs(2)).await {
        deliveries.push(m.redelivered);
    }
    assert_eq!(deliveries.len(), 10, "max delivery count 10: {deliveries:?}");
    assert!(!deliveries[0] && deliveries[1..].iter().all(|dup| *dup));
    assert!(emu.hub().store.c2d_queue("d1").await.unwrap().is_empty());
    let fb = emu.hub().store.feedback(0, 10).await.unwrap();
    assert_eq!(fb[0].status_code, "DeliveryCountExceeded");
}

#[tokio::test]
async fn direct_methods_round_trip_and_404_when_not_subscribed() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Ws);
    d.connect(&emu).await;
    let e = emu.hub().invoke_method("d1", "reboot", json!({}), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, hubsim_hub::hub::ServiceError::Api { status: 404, code: 404103, .. }));
    d.subscribe(&[TopicFilter::Methods]).await;
    let hub = emu.r().hub.clone();
    let call =
        tokio::spawn(
            async move { hub.invoke_method("d1", "reboot", json!({"delay": 3}), Duration::from_secs(5)).await },
        );
    let Event::MethodRequest { name, rid, payload } =
        d.expect("method", |e| matches!(e, Event::MethodRequest { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(name, "reboot");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&payload).unwrap(), json!({"delay": 3}));
    let now = d.now();
    d.session_mut().respond_to_method(now, &rid, 202, b"{\"rebooting\":true}").unwrap();
    d.flush().await;
    let (status, body) = call.await.unwrap().unwrap();
    assert_eq!((status, body), (202, json!({"rebooting": true})));

    // IoT Hub's 128 KB, both ways: a larger request is refused before it reaches the device, a larger answer
    // fails the call.
    let big = json!({"pad": "x".repeat(128 * 1024)});
    let e = emu.hub().invoke_method("d1", "reboot", big, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(&e, hubsim_hub::hub::ServiceError::Api { status: 400, message, .. } if message.contains("at most 131072")),
        "{e:?}"
    );
    let hub = emu.r().hub.clone();
    let call = tokio::spawn(async move { hub.invoke_method("d1", "dump", json!({}), Duration::from_secs(5)).await });
    let Event::MethodRequest { rid, .. } = d.expect("method", |e| matches!(e, Event::MethodRequest { .. })).await
    else {
        unreachable!()
    };
    let answer = format!("{{\"pad\":\"{}\"}}", "y".repeat(128 * 1024));
    let now = d.now();
    d.session_mut().respond_to_method(now, &rid, 200, answer.as_bytes()).unwrap();
    d.flush().await;
    let e = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, hubsim_hub::hub::ServiceError::Api { status: 502, message, .. } if message.contains("at most 131072")),
        "{e:?}"
    );
}

#[tokio::test]
async fn method_timeout_and_offline_device() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    let e = emu.hub().invoke_method("d1", "x", json!(null), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, hubsim_hub::hub::ServiceError::Api { code: 404103, .. }));
    let e = emu.hub().invoke_method("d1", "x", json!(null), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(e, hubsim_hub::hub::ServiceError::Api { status: 400, .. }), "timeout below 5 s is refused");
    // A name holding MQTT's wildcards could not be put in the device's topic.
    for name in ["a+b", "a#b", "#"] {
        let e = emu.hub().invoke_method("d1", name, json!(null), Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("is an MQTT wildcard"), "{name}: {e}");
    }
}

#[tokio::test]
async fn twin_get_reported_patch_and_desired_push() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    emu.hub().patch_desired("d1", json!({"interval": 5})).await.unwrap();
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::TwinResponses, TopicFilter::TwinDesired]).await;
    let now = d.now();
    d.session_mut().get_twin(now).unwrap();
    d.flush().await;
    let Event::TwinResponse { status, body, kind: RequestKind::TwinGet, .. } =
        d.expect("twin", |e| matches!(e, Event::TwinResponse { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["desired"]["interval"], 5);
    assert_eq!(doc["desired"]["$version"], 2);
    assert_eq!(doc["reported"]["$version"], 1);
    let now = d.now();
    d.session_mut().patch_reported(now, &b"{\"fw\":\"1.2\"}"[..]).unwrap();
    d.flush().await;
    let Event::TwinResponse { status, version, .. } =
        d.expect("patch", |e| matches!(e, Event::TwinResponse { .. })).await
    else {
        unreachable!()
    };
    assert_eq!((status, version), (204, Some(2)));
    assert_eq!(emu.hub().get_twin("d1").await.unwrap().reported["fw"], "1.2");
    emu.hub().patch_desired("d1", json!({"interval": 10})).await.unwrap();
    let Event::DesiredPropertiesPatch { version, body } =
        d.expect("desired", |e| matches!(e, Event::DesiredPropertiesPatch { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(version, Some(3));
    let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(patch, json!({"interval": 10, "$version": 3}));
    let now = d.now();
    d.session_mut().patch_reported(now, &b"[1,2]"[..]).unwrap();
    d.flush().await;
    let Event::TwinResponse { status, .. } = d.expect("400", |e| matches!(e, Event::TwinResponse { .. })).await else {
        unreachable!()
    };
    assert_eq!(status, 400);
}

#[tokio::test]
async fn malformed_bytes_close_only_that_connection() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let mut good = TestDevice::new("d1", key, Via::Mqtt);
    good.connect(&emu).await;
    let mut live = emu.hub().connlog.subscribe();
    for bad in [&[0x10u8, 0x02, 0x00, 0x00][..], &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], &[0x82, 0x00], &[0xF0, 0x00]] {
        let mut t = open_raw(&emu, Via::Mqtt).await;
        t.send_raw(bad).await;
        assert_eq!(tokio::time::timeout(WAIT, t.recv_raw()).await.unwrap(), None);
    }
    wait_live(&mut live, |r| r.reason == "protocol-violation").await;
    good.send(Telemetry::new("fine")).await;
    good.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
}

#[tokio::test]
async fn websocket_needs_the_mqtt_subprotocol() {
    let emu = Emu::start().await;
    let tls = tls_stream(&emu, emu.r().ws_addr).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let req = format!("wss://localhost:{}/$iothub/websocket", emu.r().ws_addr.port()).into_client_request().unwrap();
    match tokio_tungstenite::client_async(req, tls).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected HTTP 400, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test]
async fn a_module_identity_sends_telemetry_on_the_module_topic() {
    let emu = Emu::start().await;
    emu.device("edge1").await;
    let m = emu.hub().create_module("edge1", "filter").await.unwrap();
    let cs = hubsim_proto::ConnectionString::parse(&emu.hub().connection_string(&m)).unwrap();
    assert_eq!(cs.module_id.as_deref(), Some("filter"));
    let hubsim_proto::conn_str::Credential::Key(key) = cs.credential.clone() else { panic!() };
    let mut d = TestDevice::with_config(
        hubsim_proto::DeviceConfig::new("localhost", hubsim_proto::DeviceIdentity::module("edge1", "filter")),
        key,
        Via::Mqtt,
    );
    let token = cs.password(now_unix() + 600).unwrap().to_string();
    assert!(matches!(d.connect_with(&emu, token, None).await, Event::Connected { .. }));
    let mut msg = Telemetry::new("from the module");
    msg.properties.push("stage", "filtered");
    d.send(msg).await;
    d.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    let ev = &emu.wait_events("edge1", 1).await[0];
    assert_eq!(ev.module_id.as_deref(), Some("filter"));
    assert_eq!(ev.system_properties["iothub-connection-module-id"], "filter");
    assert_eq!(
        ev.system_properties["iothub-connection-auth-method"],
        r#"{"scope":"module","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
    );
    // The connection is logged as the module, and the module may not use the device's telemetry topic.
    let rec = emu.wait_log(|r| r.operation == "deviceConnect").await;
    assert_eq!((rec.device_id.as_deref(), rec.module_id.as_deref()), (Some("edge1"), Some("filter")));
    let p = hubsim_proto::mqttbytes::v4::Publish::new("devices/edge1/messages/events/", QoS::AtMostOnce, b"x".to_vec());
    let t = d.transport_mut().unwrap();
    t.send_raw(&wire(hubsim_proto::mqttbytes::v4::Packet::Publish(p))).await;
    assert_eq!(tokio::time::timeout(WAIT, t.recv_raw()).await.unwrap(), None);
}

/// `connectTimeoutInSeconds`: a call to a device that is offline waits, without polling, until the device connects
/// and subscribes to methods, then goes through; with the default 0, or past the deadline, it is 404
/// DeviceNotOnline. The waiting callers are counted, and their table empties when they are done.
#[tokio::test]
async fn a_method_call_waits_up_to_connect_timeout_for_the_device_to_come_online() {
    use hubsim_hub::hub::ServiceError;
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let hub = emu.r().hub.clone();
    let mut waiting = hub.method_callers_waiting_online();
    let call = tokio::spawn({
        let hub = hub.clone();
        async move {
            let t = Duration::from_secs(5);
            hub.invoke_method_waiting("d1", "ping", json!({"n": 1}), t, Duration::from_secs(20)).await
        }
    });
    // The call waits for the device: only then does the device connect, and later subscribe.
    tokio::time::timeout(Duration::from_secs(10), waiting.wait_for(|n| *n == 1)).await.unwrap().unwrap();
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::Methods]).await;
    let Event::MethodRequest { name, rid, .. } = d.expect("method", |e| matches!(e, Event::MethodRequest { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(name, "ping");
    let now = d.now();
    d.session_mut().respond_to_method(now, &rid, 200, b"\"pong\"").unwrap();
    d.flush().await;
    assert_eq!(call.await.unwrap().unwrap(), (200, json!("pong")));
    assert_eq!(*waiting.borrow(), 0, "the caller left the table");

    // Without connectTimeoutInSeconds an offline device is 404 at once; with a short one, 404 at its deadline.
    d.disconnect().await;
    let offline = |e: ServiceError| matches!(e, ServiceError::Api { status: 404, code: 404103, .. });
    let e = hub.invoke_method("d2", "ping", json!(null), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, ServiceError::Api { code: 404001, .. }), "an unknown device is not waited for: {e:?}");
    emu.device("d2").await;
    let started = tokio::time::Instant::now();
    assert!(offline(hub.invoke_method("d2", "ping", json!(null), Duration::from_secs(5)).await.unwrap_err()));
    let e = hub.invoke_method_waiting("d2", "ping", json!(null), Duration::from_secs(5), Duration::from_secs(1)).await;
    assert!(offline(e.unwrap_err()));
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for the connect timeout");
    let e =
        hub.invoke_method_waiting("d2", "ping", json!(null), Duration::from_secs(5), Duration::from_secs(301)).await;
    assert!(matches!(e.unwrap_err(), ServiceError::Api { status: 400, .. }), "at most 300 s");
    assert_eq!(*waiting.borrow(), 0);

    // At most MAX_ONLINE_WAITERS callers wait at once; the next is throttled. Callers that go away (their HTTP
    // request dropped) leave the table.
    let max = hubsim_hub::hub::MAX_ONLINE_WAITERS;
    let callers: Vec<_> = (0..max)
        .map(|_| {
            let hub = hub.clone();
            tokio::spawn(async move {
                let (t, connect) = (Duration::from_secs(5), Duration::from_secs(300));
                hub.invoke_method_waiting("d2", "ping", json!(null), t, connect).await
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), waiting.wait_for(|n| *n == max)).await.unwrap().unwrap();
    let e = hub.invoke_method_waiting("d2", "ping", json!(null), Duration::from_secs(5), Duration::from_secs(9)).await;
    assert!(matches!(e.unwrap_err(), ServiceError::Api { status: 429, code: 429001, .. }));
    for c in &callers {
        c.abort();
    }
    tokio::time::timeout(Duration::from_secs(10), waiting.wait_for(|n| *n == 0)).await.unwrap().unwrap();
}

/// A module of `device` as a test device, with a fresh token for it.
async fn module_device(emu: &Emu, device: &str, module: &str, via: Via) -> (TestDevice, String) {
    let m = match emu.hub().get_identity(&format!("{device}/{module}")).await {
        Ok(m) => m,
        Err(_) => emu.hub().create_module(device, module).await.unwrap(),
    };
    let cs = hubsim_proto::ConnectionString::parse(&emu.hub().connection_string(&m)).unwrap();
    let token = cs.password(now_unix() + 600).unwrap().to_string();
    let hubsim_proto::conn_str::Credential::Key(key) = cs.credential else { panic!("a key") };
    let cfg = hubsim_proto::DeviceConfig::new("localhost", hubsim_proto::DeviceIdentity::module(device, module));
    (TestDevice::with_config(cfg, key, via), token)
}

/// A service-API call as iothubowner (with `If-Match: "*"`), which must answer 200.
async fn service_call(emu: &Emu, method: &str, path: &str, body: serde_json::Value) {
    let owner = emu.token("iothubowner");
    let h = [
        ("host", "localhost"),
        ("authorization", owner.as_str()),
        ("content-type", "application/json"),
        ("if-match", "\"*\""),
    ];
    let a = http_raw(emu.r().http_addr, method, path, &h, &body.to_string()).await;
    assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
}

/// Disabling a device (the emulator's `POST /devices/{id}/disable`, or IoT Hub's `PUT /devices/{id}` with
/// status disabled) closes its modules' connections as the device's own (403012 device-disabled), and their
/// CONNECTs are refused as the device's (CONNACK 0x03) until it is enabled again (azure-iot-sdk-csharp#1541).
#[tokio::test]
async fn disabling_a_device_closes_its_modules_and_refuses_them_until_it_is_enabled() {
    let emu = Emu::start().await;
    let key = emu.device("ddev").await;
    // A device whose id starts like ddev's is not one of its modules.
    emu.device("ddev2").await;
    let (mut other, other_token) = module_device(&emu, "ddev2", "dm", Via::Mqtt).await;
    assert!(matches!(other.connect_with(&emu, other_token, None).await, Event::Connected { .. }));
    let disables = [
        ("POST", "/devices/ddev/disable", json!({})),
        ("PUT", "/devices/ddev?api-version=2021-04-12", json!({"deviceId": "ddev", "status": "disabled"})),
    ];
    for (via, (method, path, body)) in [Via::Mqtt, Via::Ws].into_iter().zip(disables) {
        let mut d = TestDevice::new("ddev", key.clone(), via);
        d.connect(&emu).await;
        let (mut m, token) = module_device(&emu, "ddev", "dm", via).await;
        assert!(matches!(m.connect_with(&emu, token, None).await, Event::Connected { .. }));
        let mut log = emu.hub().connlog.subscribe();
        service_call(&emu, method, path, body).await;
        d.expect_closed().await;
        m.expect_closed().await;
        let rec = wait_live(&mut log, |r| r.operation == "deviceDisconnect" && r.module_id.is_some()).await;
        assert_eq!(
            (rec.device_id.as_deref(), rec.module_id.as_deref(), rec.reason.as_str(), rec.result_type),
            (Some("ddev"), Some("dm"), "device-disabled", 403012),
            "{method} {path}"
        );
        // While the device is disabled its module is refused as the device is: CONNACK 0x03, logged with why.
        let (mut m, token) = module_device(&emu, "ddev", "dm", via).await;
        match m.connect_with(&emu, token, None).await {
            Event::ConnectionLost { reason: LostReason::Refused(r), .. } => assert_eq!(r.0, 3, "{method} {path}"),
            other => panic!("{method} {path}: {other:?}"),
        }
        let rec = wait_live(&mut log, |r| r.operation == "connectRefused").await;
        assert_eq!((rec.module_id.as_deref(), rec.result_type), (Some("dm"), 403012));
        assert!(rec.description.contains("parent device 'ddev' is disabled"), "{}", rec.description);
        // Enabled again, the module connects.
        service_call(&emu, "POST", "/devices/ddev/enable", json!({})).await;
        let (mut m, token) = module_device(&emu, "ddev", "dm", via).await;
        assert!(matches!(m.connect_with(&emu, token, None).await, Event::Connected { .. }));
        m.disconnect().await;
    }
    // The module of the other device was never touched.
    other.send(Telemetry::new("still here")).await;
    other.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
}

/// What a connection asks once more after registering (for a disable that lands between its CONNECT check and
/// its registration): an identity is still admitted while it and, for a module, its device exist and are enabled.
#[tokio::test]
async fn still_admitted_follows_the_status_of_the_identity_and_of_a_modules_device() {
    let emu = Emu::start().await;
    emu.device("sa").await;
    module_device(&emu, "sa", "m", Via::Mqtt).await;
    let hub = emu.hub();
    assert!(hub.still_admitted("sa").await && hub.still_admitted("sa/m").await);
    hub.set_status("sa", false).await.unwrap();
    assert!(!hub.still_admitted("sa").await && !hub.still_admitted("sa/m").await);
    hub.set_status("sa", true).await.unwrap();
    assert!(hub.still_admitted("sa/m").await);
    assert!(!hub.still_admitted("sa/other").await, "a module that does not exist");
    assert!(!hub.still_admitted("nosuch").await);
}
