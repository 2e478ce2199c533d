//! An in-memory device ↔ hub pair on virtual time: the two state machines talking to each other.

use super::*;
use crate::device::{self, ConnectOptions, DeviceConfig, DeviceSession, Event, Telemetry, TelemetryQos};
use crate::packet::encode;
use crate::property_bag::PropertyBag;
use crate::property_bag::SystemProperty;
use crate::sas::SasToken;
use crate::sas::{DeviceKey, ResourceUri};
use crate::time::Instant;
use crate::topic::{DeviceIdentity, RequestId, TopicFilter};
use bytes::Bytes;
use bytes::BytesMut;
use core::time::Duration;
use mqttbytes::v4::{Connect, ConnectReturnCode, Login, Packet, Publish, Subscribe};
use mqttbytes::QoS;

const T0: Instant = Instant(0);
const KEY: &str = "cGFzc3dvcmQ=";

struct Pair {
    dev: DeviceSession,
    hub: HubSession,
    now: Instant,
    hub_events: Vec<HubEvent>,
    dev_events: Vec<Event>,
    key: DeviceKey,
    /// Stored subscriptions for the session-present case.
    stored: Vec<(TopicFilter, QoS)>,
}

impl Pair {
    fn new(cfg: DeviceConfig) -> Pair {
        Pair {
            dev: DeviceSession::new(cfg),
            hub: HubSession::new(HubConfig::default(), T0),
            now: T0,
            hub_events: vec![],
            dev_events: vec![],
            key: DeviceKey::from_base64(KEY).unwrap(),
            stored: vec![],
        }
    }

    fn token(&self, key: &DeviceKey, expiry: u64) -> String {
        SasToken::sign(key, &ResourceUri::Device { host: "hub.local".into(), device_id: "dev1".into() }, expiry, None)
            .to_string()
    }

    /// Moves bytes both ways and lets the "task" answer authentication until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(b) = self.dev.poll_transmit() {
                self.hub.handle_input(self.now, &b);
                moved = true;
            }
            while let Some(ev) = self.hub.poll_event() {
                match &ev {
                    HubEvent::Authenticate(req) => {
                        let r = ResourceUri::for_identity("hub.local", &req.identity.device_id, None);
                        match req.token.verify(&[&self.key], &r, self.now.as_millis() / 1000) {
                            Ok(()) => self
                                .hub
                                .accept(
                                    self.now,
                                    !self.stored.is_empty() && !req.clean_session,
                                    self.stored.clone(),
                                    None,
                                )
                                .unwrap(),
                            Err(e) => {
                                self.hub.refuse(mqttbytes::v4::ConnectReturnCode::NotAuthorized, e.to_string()).unwrap()
                            }
                        }
                    }
                    // The "store" is instant here: every held PUBACK is released at once.
                    HubEvent::Telemetry { ack: Some(pkid), .. }
                    | HubEvent::TwinPatchReported { ack: Some(pkid), .. }
                    | HubEvent::MethodResponse { ack: Some(pkid), .. } => self.hub.ack_publish(*pkid).unwrap(),
                    HubEvent::Telemetry { ack: None, .. }
                    | HubEvent::TwinPatchReported { ack: None, .. }
                    | HubEvent::MethodResponse { ack: None, .. }
                    | HubEvent::Subscribed(_)
                    | HubEvent::Unsubscribed(_)
                    | HubEvent::C2dCompleted(_)
                    | HubEvent::TwinGet { .. }
                    | HubEvent::Closed { .. } => {}
                }
                self.hub_events.push(ev);
                moved = true;
            }
            while let Some(b) = self.hub.poll_transmit() {
                let _ = self.dev.handle_input(self.now, &b);
                moved = true;
            }
            while let Some(ev) = self.dev.poll_event() {
                self.dev_events.push(ev);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn connect(&mut self) {
        let token = self.token(&self.key.clone(), 3600);
        self.dev.connect(self.now, ConnectOptions { password: Some(token), will: None }).unwrap();
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.hub.handle_timeout(self.now);
        self.dev.handle_timeout(self.now);
        self.pump();
    }

    fn closed(&self) -> Option<&CloseReason> {
        self.hub_events.iter().find_map(|e| if let HubEvent::Closed { reason, .. } = e { Some(reason) } else { None })
    }
}

fn cfg() -> DeviceConfig {
    DeviceConfig::new("hub.local", DeviceIdentity::device("dev1"))
}

#[test]
fn device_and_hub_agree_on_telemetry_with_properties() {
    let mut p = Pair::new(cfg());
    p.connect();
    assert_eq!(p.dev_events, vec![Event::Connected { session_present: false }]);
    let mut m = Telemetry::new(&b"{\"t\":21.5}"[..]);
    m.properties
        .set_system(SystemProperty::ContentType, "application/json")
        .set_system(SystemProperty::ContentEncoding, "utf-8");
    m.properties.push("alert level", "high/critical");
    m.retain = true;
    p.dev.send_telemetry(p.now, m).unwrap();
    p.pump();
    let HubEvent::Telemetry { message, ack: Some(_) } = &p.hub_events[1] else { panic!("{:?}", p.hub_events) };
    assert_eq!(message.properties.system(&SystemProperty::ContentType), Some("application/json"));
    assert_eq!(message.properties.get("alert level"), Some(Some("high/critical")));
    assert_eq!(message.properties.get("mqtt-retain"), Some(Some("true")));
    assert!(matches!(p.dev_events.last(), Some(Event::TelemetryAcked { .. })));
}

#[test]
fn wrong_key_is_refused_with_0x05() {
    let mut p = Pair::new(cfg());
    let other = DeviceKey::from_base64("b3RoZXI=").unwrap();
    let token = p.token(&other, 3600);
    p.dev.connect(p.now, ConnectOptions { password: Some(token), will: None }).unwrap();
    p.pump();
    assert!(matches!(p.closed(), Some(CloseReason::Refused(r)) if r.code() == ConnectReturnCode::NotAuthorized));
    assert!(
        matches!(&p.dev_events[0], Event::ConnectionLost { reason: device::LostReason::Refused(r), .. } if r.0 == 5)
    );
}

fn raw_connect(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut c = Connect::new(client_id);
    c.login = Some(Login::new(username, password));
    let mut b = BytesMut::new();
    encode(&Packet::Connect(c), &mut b).unwrap();
    b.to_vec()
}

#[test]
fn connect_refusals() {
    let cases = [
        ("dev2", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1", "does not match"),
        ("dev1", "garbage", "SharedAccessSignature sr=a&sig=b&se=1", "user name"),
        ("dev1", "hub.local/dev1/?api-version=2021-04-12", "", "X.509"),
        ("dev1", "hub.local/dev1/?api-version=2021-04-12", "hunter2", "password"),
    ];
    for (cid, user, pass, why_part) in cases {
        let mut hub = HubSession::new(HubConfig::default(), T0);
        hub.handle_input(T0, &raw_connect(cid, user, pass));
        let out = hub.poll_transmit().unwrap();
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x05], "{cid} {user}");
        let Some(HubEvent::Closed { reason: CloseReason::Refused(why), .. }) = hub.poll_event() else { panic!() };
        assert_eq!(why.code(), ConnectReturnCode::NotAuthorized);
        assert!(why.to_string().contains(why_part), "{why}");
    }
}

#[test]
fn first_packet_must_be_connect_and_must_arrive_in_time() {
    let mut hub = HubSession::new(HubConfig::default(), T0);
    hub.handle_input(T0, &[0xC0, 0x00]);
    assert_eq!(
        hub.poll_event(),
        Some(HubEvent::Closed {
            reason: CloseReason::ProtocolViolation(Violation::FirstPacketNotConnect("PINGREQ")),
            will: None
        })
    );
    assert_eq!(hub.poll_transmit(), None, "no CONNACK");
    let mut hub = HubSession::new(HubConfig::default(), T0);
    assert_eq!(hub.poll_timeout(), Some(T0 + Duration::from_secs(30)));
    hub.handle_timeout(T0 + Duration::from_secs(30));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Closed { reason: CloseReason::ConnectTimeout, .. })));
}

#[test]
fn qos2_publish_closes_and_the_device_is_told_why() {
    let mut p = Pair::new(cfg());
    p.connect();
    p.dev
        .send_telemetry(p.now, Telemetry { qos: TelemetryQos::ExactlyOnceHubWillClose, ..Telemetry::new("x") })
        .unwrap();
    p.pump();
    assert_eq!(p.closed(), Some(&CloseReason::Qos2Publish));
    assert_eq!(p.closed().unwrap().to_string(), "[MQTT-3.3.1-4] QoS 2 PUBLISH is not supported by IoT Hub");
    p.dev.handle_transport_closed(p.now, "closed by hub");
    p.pump();
    assert!(matches!(p.dev_events.last(), Some(Event::ConnectionLost { likely_cause: Some(_), .. })));
}

fn connected_hub() -> HubSession {
    let mut hub = HubSession::new(HubConfig::default(), T0);
    hub.handle_input(
        T0,
        &raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1"),
    );
    assert!(matches!(hub.poll_event(), Some(HubEvent::Authenticate(_))));
    hub.accept(T0, false, vec![], None).unwrap();
    assert_eq!(hub.poll_transmit().as_deref(), Some(&[0x20, 0x02, 0x00, 0x00][..]));
    hub
}

fn publish_bytes(topic: &str, qos: QoS, payload: Vec<u8>) -> Vec<u8> {
    let mut p = Publish::new(topic, qos, payload);
    if qos != QoS::AtMostOnce {
        p.pkid = 1;
    }
    let mut b = BytesMut::new();
    encode(&Packet::Publish(p), &mut b).unwrap();
    b.to_vec()
}

#[test]
fn misuse_closes_with_the_right_reason() {
    let big = vec![0u8; crate::MAX_TELEMETRY_SIZE + 1];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (publish_bytes("devices/dev2/messages/events/", QoS::AtLeastOnce, vec![]), "wrong-topic"),
        (publish_bytes("devices/dev1/messages/events/a=b:c", QoS::AtLeastOnce, vec![]), "wrong-topic"),
        (publish_bytes("devices/dev1/messages/devicebound/", QoS::AtMostOnce, vec![]), "wrong-topic"),
        (publish_bytes("devices/dev1/messages/events/", QoS::AtLeastOnce, big), "message-too-large"),
        (raw_connect("dev1", "hub.local/dev1/", "x"), "protocol-violation"),
        (vec![0x62, 0x02, 0x00, 0x01], "protocol-violation"), // PUBREL
        (vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], "protocol-violation"),
    ];
    for (bytes, kind) in cases {
        let mut hub = connected_hub();
        hub.handle_input(T0, &bytes);
        let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
        let Some(HubEvent::Closed { reason, .. }) = ev.last() else { panic!("{kind}: {ev:?}") };
        assert_eq!(reason.kind(), kind, "{reason}");
    }
}

fn subscribe_bytes(filters: &[(&str, QoS)]) -> Vec<u8> {
    let mut s =
        Subscribe::new_many(filters.iter().map(|(f, q)| mqttbytes::v4::SubscribeFilter::new(f.to_string(), *q)));
    s.pkid = 7;
    let mut b = BytesMut::new();
    encode(&Packet::Subscribe(s), &mut b).unwrap();
    b.to_vec()
}

#[test]
fn subscriptions_grant_qos1_for_qos2_and_close_on_unknown_filters() {
    let mut hub = connected_hub();
    hub.handle_input(
        T0,
        &subscribe_bytes(&[
            ("devices/dev1/messages/devicebound/#", QoS::ExactlyOnce),
            ("$iothub/methods/POST/#", QoS::AtMostOnce),
        ]),
    );
    assert_eq!(&hub.poll_transmit().unwrap()[..], &[0x90, 0x04, 0x00, 0x07, 0x01, 0x00]);
    assert_eq!(hub.subscription(&TopicFilter::C2d), Some(QoS::AtLeastOnce));
    for bad in ["#", "devices/dev2/messages/devicebound/#", "$iothub/twin/#"] {
        let mut hub = connected_hub();
        hub.handle_input(T0, &subscribe_bytes(&[(bad, QoS::AtLeastOnce)]));
        assert!(hub.poll_transmit().is_none(), "no SUBACK for {bad}");
        assert!(matches!(hub.poll_event(), Some(HubEvent::Closed { reason: CloseReason::BadSubscription(_), .. })));
    }
}

#[test]
fn c2d_round_trip_and_out_of_order_puback_closes() {
    let mut p = Pair::new(cfg());
    p.connect();
    p.dev.subscribe(p.now, &[TopicFilter::C2d]).unwrap();
    p.pump();
    let mut props = PropertyBag::new();
    props.set_system(SystemProperty::MessageId, "m1").set_system(SystemProperty::Ack, "full");
    props.push("k", "v w");
    let C2dDelivery::AwaitingAck(pkid) = p.hub.deliver_c2d(props.clone(), Bytes::from_static(b"hello"), false).unwrap()
    else {
        panic!()
    };
    p.pump();
    assert!(p
        .dev_events
        .iter()
        .any(|e| matches!(e, Event::C2d(m) if m.properties == props && &m.payload[..] == b"hello")));
    assert!(p.hub_events.contains(&HubEvent::C2dCompleted(pkid)));

    let mut hub = connected_hub();
    hub.handle_input(T0, &subscribe_bytes(&[("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)]));
    let Ok(C2dDelivery::AwaitingAck(a)) = hub.deliver_c2d(PropertyBag::new(), Bytes::new(), false) else { panic!() };
    let Ok(C2dDelivery::AwaitingAck(b)) = hub.deliver_c2d(PropertyBag::new(), Bytes::new(), false) else { panic!() };
    assert_ne!(a, b);
    hub.handle_input(T0, &[0x40, 0x02, 0x00, b as u8]);
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert!(
        matches!(ev.last(), Some(HubEvent::Closed { reason: CloseReason::ProtocolViolation(w), .. }) if w.to_string().contains("MQTT-4.6.0-2"))
    );
}

#[test]
fn c2d_not_delivered_without_subscription() {
    let mut hub = connected_hub();
    assert_eq!(hub.deliver_c2d(PropertyBag::new(), Bytes::new(), false), Ok(C2dDelivery::NotSubscribed));
    assert_eq!(hub.poll_transmit(), None);
}

#[test]
fn keep_alive_is_one_and_a_half_times_capped() {
    let mut dev_cfg = cfg();
    dev_cfg.keep_alive = Duration::from_secs(10);
    let mut p = Pair::new(dev_cfg);
    p.connect();
    assert_eq!(p.hub.poll_timeout(), Some(T0 + Duration::from_secs(15)));
    let mut hub = HubSession::new(HubConfig::default(), T0);
    let mut c = Connect::new("dev1");
    c.keep_alive = 3600;
    c.login = Some(Login::new("hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1"));
    let mut b = BytesMut::new();
    encode(&Packet::Connect(c), &mut b).unwrap();
    hub.handle_input(T0, &b);
    hub.poll_event();
    hub.accept(T0, false, vec![], None).unwrap();
    assert_eq!(hub.poll_timeout(), Some(T0 + Duration::from_secs(1767)));
    hub.handle_timeout(T0 + Duration::from_secs(1766));
    assert_eq!(hub.poll_event(), None);
    hub.handle_timeout(T0 + Duration::from_secs(1767));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Closed { reason: CloseReason::KeepAliveTimeout(_), .. })));
}

#[test]
fn pings_keep_the_connection_alive_and_silence_kills_it() {
    let mut dev_cfg = cfg();
    dev_cfg.keep_alive = Duration::from_secs(10);
    let mut p = Pair::new(dev_cfg);
    p.connect();
    for _ in 0..10 {
        p.advance(Duration::from_secs(10));
    }
    assert_eq!(p.closed(), None, "the device pings every 10 s, the hub waits 15 s");
    assert!(p.dev.is_connected());
    // The device goes silent (e.g. its network died): the hub times it out.
    p.hub.handle_timeout(p.now + Duration::from_secs(15));
    while p.hub.poll_event().map(|e| p.hub_events.push(e)).is_some() {}
    assert!(matches!(p.closed(), Some(CloseReason::KeepAliveTimeout(_))));
}

#[test]
fn token_expiry_closes() {
    let mut hub = HubSession::new(HubConfig::default(), T0);
    hub.handle_input(
        T0,
        &raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1"),
    );
    hub.poll_event();
    hub.accept(T0, false, vec![], Some(T0 + Duration::from_secs(5))).unwrap();
    assert_eq!(hub.poll_timeout(), Some(T0 + Duration::from_secs(5)));
    hub.handle_timeout(T0 + Duration::from_secs(5));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Closed { reason: CloseReason::TokenExpired, .. })));
}

#[test]
fn will_is_published_on_unclean_close_only() {
    for (clean, expect_will) in [(true, false), (false, true)] {
        let mut p = Pair::new(cfg());
        let token = p.token(&p.key.clone(), 3600);
        let mut props = PropertyBag::new();
        props.push("state", "offline");
        let will = device::Will { properties: props, payload: Bytes::from_static(b"gone"), qos: QoS::AtLeastOnce };
        p.dev.connect(p.now, ConnectOptions { password: Some(token), will: Some(will) }).unwrap();
        p.pump();
        if clean {
            p.dev.disconnect(p.now);
            p.pump();
        } else {
            p.hub.handle_transport_closed("reset");
            p.pump();
        }
        let will = p
            .hub_events
            .iter()
            .find_map(|e| if let HubEvent::Closed { will, .. } = e { Some(will.clone()) } else { None })
            .unwrap();
        assert_eq!(will.is_some(), expect_will);
        if let Some(w) = will {
            assert_eq!(w.properties.get("iothub-MessageType"), Some(Some("Will")));
            assert_eq!(w.properties.get("state"), Some(Some("offline")));
        }
    }
}

#[test]
fn methods_and_twin_through_the_pair() {
    let mut p = Pair::new(cfg());
    p.connect();
    p.dev.subscribe(p.now, &[TopicFilter::Methods, TopicFilter::TwinResponses, TopicFilter::TwinDesired]).unwrap();
    p.pump();
    assert_eq!(p.hub.send_method_request("reboot", &RequestId("9".into()), Bytes::from_static(b"{}")), Ok(true));
    p.pump();
    let Some(Event::MethodRequest { rid, .. }) =
        p.dev_events.iter().rev().find(|e| matches!(e, Event::MethodRequest { .. })).cloned()
    else {
        panic!()
    };
    p.dev.respond_to_method(p.now, &rid, 201, b"{\"done\":true}").unwrap();
    p.pump();
    assert!(p.hub_events.contains(&HubEvent::MethodResponse {
        rid: RequestId("9".into()),
        status: 201,
        payload: Bytes::from_static(b"{\"done\":true}"),
        ack: None,
    }));

    let rid = p.dev.patch_reported(p.now, &b"{\"a\":1}"[..]).unwrap();
    p.pump();
    assert!(p.hub_events.contains(&HubEvent::TwinPatchReported {
        rid: rid.clone(),
        patch: Bytes::from_static(b"{\"a\":1}"),
        ack: None
    }));
    assert_eq!(p.hub.twin_response(&rid, 204, Some(2), Bytes::new()), Ok(true));
    assert_eq!(p.hub.push_desired(5, Bytes::from_static(b"{\"x\":1,\"$version\":5}")), Ok(true));
    p.pump();
    assert!(p.dev_events.iter().any(|e| matches!(e, Event::TwinResponse { status: 204, version: Some(2), .. })));
    assert!(p.dev_events.iter().any(|e| matches!(e, Event::DesiredPropertiesPatch { version: Some(5), .. })));
}

#[test]
fn clean_session_zero_restores_subscriptions() {
    let mut p = Pair::new(cfg());
    p.stored = vec![(TopicFilter::C2d, QoS::AtLeastOnce)];
    p.connect();
    assert_eq!(p.dev_events[0], Event::Connected { session_present: true });
    // Delivered before the device subscribes again.
    assert!(matches!(
        p.hub.deliver_c2d(PropertyBag::new(), Bytes::from_static(b"queued"), false),
        Ok(C2dDelivery::AwaitingAck(_))
    ));
}

#[test]
fn arbitrary_bytes_never_panic_the_hub() {
    use proptest::prelude::*;
    proptest!(|(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8))| {
        let mut hub = connected_hub();
        for c in &chunks {
            hub.handle_input(T0, c);
        }
        let mut fresh = HubSession::new(HubConfig::default(), T0);
        for c in &chunks {
            fresh.handle_input(T0, c);
        }
    });
}
