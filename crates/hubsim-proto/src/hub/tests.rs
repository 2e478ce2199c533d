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
        let id = &self.dev.config().identity;
        SasToken::sign(
            key,
            &ResourceUri::for_identity("hub.local", &id.device_id, id.module_id.as_deref()),
            expiry,
            None,
        )
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
            // As the task does: what waits in the buffer is read a turn at a time.
            if self.hub.input_pending() && self.hub.wants_input() {
                self.hub.resume(self.now);
                moved = true;
            }
            while let Some(ev) = self.hub.poll_event() {
                match &ev {
                    HubEvent::Authenticate(req) => {
                        let (d, m) = (&req.identity.device_id, req.identity.module_id.as_deref());
                        let r = ResourceUri::for_identity("hub.local", d, m);
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
                    | HubEvent::C2dLockExpired(_)
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
    // Refused on its first byte, before the packet it announces is whole: "GET / HTTP/1.1" reads as a PUBACK.
    let mut hub = HubSession::new(HubConfig::default(), T0);
    hub.handle_input(T0, b"G");
    assert_eq!(
        hub.poll_event(),
        Some(HubEvent::Closed {
            reason: CloseReason::ProtocolViolation(Violation::FirstPacketNotConnect("PUBACK")),
            will: None
        })
    );
    assert_eq!(crate::provisioning::sniff_endpoint(b"G", 1024), crate::provisioning::Endpoint::Hub);
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
    connected_hub_with(HubConfig::default())
}

fn connected_hub_with(config: HubConfig) -> HubSession {
    let mut hub = HubSession::new(config, T0);
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
    let C2dDelivery::AwaitingAck(pkid) =
        p.hub.deliver_c2d(p.now, props.clone(), Bytes::from_static(b"hello"), false).unwrap()
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
    let Ok(C2dDelivery::AwaitingAck(a)) = hub.deliver_c2d(T0, PropertyBag::new(), Bytes::new(), false) else {
        panic!()
    };
    let Ok(C2dDelivery::AwaitingAck(b)) = hub.deliver_c2d(T0, PropertyBag::new(), Bytes::new(), false) else {
        panic!()
    };
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
    assert_eq!(hub.deliver_c2d(T0, PropertyBag::new(), Bytes::new(), false), Ok(C2dDelivery::NotSubscribed));
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
    assert!(matches!(hub.poll_event(), Some(HubEvent::Authenticate(_))));
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
    assert!(matches!(hub.poll_event(), Some(HubEvent::Authenticate(_))));
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
fn a_will_with_retain_is_published_with_the_retain_property_as_a_retained_publish_is() {
    for retain in [false, true] {
        let mut c = Connect::new("dev1");
        c.login = Some(Login::new("hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1"));
        c.last_will =
            Some(mqttbytes::v4::LastWill::new("devices/dev1/messages/events/", "gone", QoS::AtLeastOnce, retain));
        let mut b = BytesMut::new();
        encode(&Packet::Connect(c), &mut b).unwrap();
        let mut hub = HubSession::new(HubConfig::default(), T0);
        hub.handle_input(T0, &b);
        assert!(matches!(hub.poll_event(), Some(HubEvent::Authenticate(_))));
        hub.accept(T0, false, vec![], None).unwrap();
        hub.handle_transport_closed("reset");
        let Some(HubEvent::Closed { will: Some(w), .. }) = hub.poll_event() else { panic!("no will") };
        assert_eq!(w.properties.get("mqtt-retain"), if retain { Some(Some("true")) } else { None }, "retain {retain}");
        assert_eq!(w.properties.get("iothub-MessageType"), Some(Some("Will")));
    }
}

#[test]
fn a_module_is_not_subscribed_to_c2d_and_a_module_that_asks_for_it_is_closed() {
    // The device session leaves out what the hub does not serve to a module: one filter list fits both.
    let mut p = Pair::new(DeviceConfig::new("hub.local", DeviceIdentity::module("dev1", "m1")));
    p.connect();
    p.dev.subscribe(p.now, &[TopicFilter::C2d, TopicFilter::Methods]).unwrap();
    p.pump();
    assert!(p.closed().is_none(), "{:?}", p.closed());
    assert!(p.hub_events.contains(&HubEvent::Subscribed(vec![(TopicFilter::Methods, QoS::AtLeastOnce)])));
    p.dev.subscribe(p.now, &[TopicFilter::C2d]).unwrap();
    assert_eq!(p.dev.poll_transmit(), None, "an empty SUBSCRIBE was sent");
    // A module that subscribes to its device's C2D topic anyway is closed (reference §8).
    p.hub.handle_input(p.now, &subscribe_bytes(&[("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)]));
    p.pump();
    assert!(matches!(p.closed(), Some(CloseReason::BadSubscription(_))), "{:?}", p.closed());
}

#[test]
fn one_read_holding_thousands_of_packets_is_read_a_turn_at_a_time() {
    let mut p = Pair::new(cfg());
    p.connect();
    p.hub_events.clear();
    // One WebSocket message can carry 32 767 empty QoS 0 PUBLISHes: each asks the task for a write.
    let mut burst = Vec::new();
    for _ in 0..1000 {
        burst.extend(publish_bytes("devices/dev1/messages/events/", QoS::AtMostOnce, vec![]));
    }
    p.hub.handle_input(p.now, &burst);
    let telemetry = |hub: &mut HubSession| {
        let mut n = 0;
        while let Some(ev) = hub.poll_event() {
            assert!(matches!(ev, HubEvent::Telemetry { ack: None, .. }), "{ev:?}");
            n += 1;
        }
        n
    };
    assert_eq!(telemetry(&mut p.hub), MAX_PACKETS_PER_TURN);
    assert!(p.hub.input_pending(), "the rest waits in the buffer");
    let mut total = MAX_PACKETS_PER_TURN;
    while p.hub.input_pending() {
        p.hub.resume(p.now);
        let n = telemetry(&mut p.hub);
        assert!((1..=MAX_PACKETS_PER_TURN).contains(&n), "{n}");
        total += n;
    }
    assert_eq!(total, 1000, "every packet is read in the end");
    assert!(p.closed().is_none());
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
        p.hub.deliver_c2d(T0, PropertyBag::new(), Bytes::from_static(b"queued"), false),
        Ok(C2dDelivery::AwaitingAck(_))
    ));
}

#[test]
fn arbitrary_bytes_keep_the_hub_s_output_well_formed() {
    use proptest::prelude::*;
    let decode = |hub: &mut HubSession| {
        let mut f = crate::packet::Framer::new(1 << 20);
        while let Some(b) = hub.poll_transmit() {
            f.push(&b);
        }
        let packets: Vec<Packet> = std::iter::from_fn(|| f.next_packet().unwrap()).collect();
        assert_eq!(f.buffered(), 0);
        packets
    };
    proptest!(|(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8))| {
        // An accepted connection never sends a second CONNACK, whatever arrives.
        let mut hub = connected_hub();
        for c in &chunks {
            hub.handle_input(T0, c);
        }
        prop_assert!(!decode(&mut hub).iter().any(|p| matches!(p, Packet::ConnAck(_))));
        // A fresh one answers with at most one packet before authentication, and only a CONNACK refusal.
        let mut fresh = HubSession::new(HubConfig::default(), T0);
        for c in &chunks {
            fresh.handle_input(T0, c);
        }
        let out = decode(&mut fresh);
        prop_assert!(out.len() <= 1, "{:?}", out);
        if let Some(p) = out.first() {
            let Packet::ConnAck(c) = p else { panic!("{p:?}") };
            prop_assert_ne!(c.code, ConnectReturnCode::Success);
            prop_assert!(fresh.is_closed());
        }
        let events: Vec<HubEvent> = std::iter::from_fn(|| fresh.poll_event()).collect();
        prop_assert!(events.len() <= 1, "{:?}", events);
        prop_assert_eq!(events.is_empty(), !fresh.is_closed() && !fresh.is_authenticating());
    });
}

/// Everything a fresh session sends and reports for `input`.
fn run_fresh(input: &[u8]) -> (Vec<u8>, Vec<HubEvent>) {
    let mut hub = HubSession::new(HubConfig::default(), T0);
    hub.handle_input(T0, input);
    let mut out = Vec::new();
    while let Some(b) = hub.poll_transmit() {
        out.extend_from_slice(&b);
    }
    (out, std::iter::from_fn(|| hub.poll_event()).collect())
}

fn closed_with(events: &[HubEvent]) -> &CloseReason {
    match events {
        [HubEvent::Closed { reason, will: None }] => reason,
        other => panic!("expected exactly one Closed event, got {other:?}"),
    }
}

/// Every CONNECT validation rule of MQTT 3.1.1 §3.1 and IoT Hub's ClientId rule: the exact bytes in, the exact
/// bytes out (a CONNACK with its return code, or nothing), and the typed reason.
#[test]
fn connect_validation_wire_table() {
    use crate::packet::{ConnectHeaderError as H, FrameError};
    let level = |name: &str, level: u8| CloseReason::Refused(Refusal::ProtocolLevel { name: name.into(), level });
    let header = |e: H| CloseReason::ProtocolViolation(Violation::ConnectHeader(e));
    let cases: Vec<(&str, &[u8], &[u8], CloseReason)> = vec![
        // [MQTT-3.1.2-2] protocol level 3 with name MQTT: CONNACK 0x01, then close.
        ("level 3", b"\x10\x10\x00\x04MQTT\x03\x02\x00\x3c\x00\x04dev1", b"\x20\x02\x00\x01", level("MQTT", 3)),
        // MQTT 3.1 proper ("MQIsdp", level 3): the same answer, which 3.1 clients understand.
        ("MQTT 3.1", b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x04dev1", b"\x20\x02\x00\x01", level("MQIsdp", 3)),
        // MQTT 5 (a properties length after keep-alive): answered before its layout matters.
        ("level 5", b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x04dev1", b"\x20\x02\x00\x01", level("MQTT", 5)),
        // [MQTT-3.1.2-1] another protocol name: close without CONNACK.
        ("name MQTX", b"\x10\x10\x00\x04MQTX\x04\x02\x00\x3c\x00\x04dev1", b"", header(H::ProtocolName("MQTX".into()))),
        (
            "MQIsdp level 4",
            b"\x10\x12\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x04dev1",
            b"",
            header(H::ProtocolName("MQIsdp".into())),
        ),
        // [MQTT-3.1.2-3] reserved flag.
        ("reserved flag", b"\x10\x10\x00\x04MQTT\x04\x03\x00\x3c\x00\x04dev1", b"", header(H::ReservedFlag)),
        // [MQTT-3.1.2-13] Will QoS without Will flag; [MQTT-3.1.2-15] Will Retain without it; [MQTT-3.1.2-14] QoS 3.
        ("will qos", b"\x10\x10\x00\x04MQTT\x04\x0a\x00\x3c\x00\x04dev1", b"", header(H::WillQosWithoutWill(1))),
        ("will retain", b"\x10\x10\x00\x04MQTT\x04\x22\x00\x3c\x00\x04dev1", b"", header(H::WillRetainWithoutWill)),
        ("will qos 3", b"\x10\x10\x00\x04MQTT\x04\x1e\x00\x3c\x00\x04dev1", b"", header(H::WillQos3)),
        // [MQTT-3.1.2-22] password flag without user name flag.
        ("password only", b"\x10\x10\x00\x04MQTT\x04\x42\x00\x3c\x00\x04dev1", b"", header(H::PasswordWithoutUsername)),
        ("truncated header", b"\x10\x03\x00\x04M", b"", header(H::Truncated)),
        // [MQTT-2.2.2-2] CONNECT's fixed-header flags are 0.
        (
            "fixed-header flags",
            b"\x11\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1",
            b"",
            CloseReason::ProtocolViolation(Violation::Frame(FrameError::ReservedFlags { packet: "CONNECT", flags: 1 })),
        ),
        // [MQTT-3.1.4-1] a payload that is not what the flags announce: mqttbytes refuses it, no CONNACK.
        (
            "client id past the end",
            b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x09dev1",
            b"",
            CloseReason::ProtocolViolation(Violation::Frame(FrameError::Malformed(mqttbytes::Error::BoundaryCrossed(
                9,
            )))),
        ),
        // [MQTT-3.1.3-1] bytes after the fields the flags announce (mqttbytes would ignore them).
        ("trailing byte", b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1X", b"", header(H::TrailingBytes(1))),
        // [MQTT-3.1.3-8] empty ClientId with CleanSession 0: CONNACK 0x02.
        (
            "empty client id, session",
            b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x3c\x00\x00",
            b"\x20\x02\x00\x02",
            CloseReason::Refused(Refusal::EmptyClientIdWithSession),
        ),
        // [MQTT-3.1.3-9] IoT Hub assigns no ClientId, even with CleanSession 1.
        (
            "empty client id, clean",
            b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
            b"\x20\x02\x00\x02",
            CloseReason::Refused(Refusal::EmptyClientId),
        ),
        (
            "client id a/b/c",
            b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05a/b/c",
            b"\x20\x02\x00\x02",
            CloseReason::Refused(Refusal::BadClientId("a/b/c".into())),
        ),
        (
            "client id with a space",
            b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03a b",
            b"\x20\x02\x00\x02",
            CloseReason::Refused(Refusal::BadClientId("a b".into())),
        ),
        // IoT Hub authenticates every connection: no credentials is CONNACK 0x05 (reference §2).
        (
            "no credentials",
            b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1",
            b"\x20\x02\x00\x05",
            CloseReason::Refused(Refusal::NoCredentials),
        ),
        // [MQTT-3.1.0-1] the first packet must be CONNECT.
        (
            "PUBLISH first",
            b"\x30\x05\x00\x01aXY",
            b"",
            CloseReason::ProtocolViolation(Violation::FirstPacketNotConnect("PUBLISH")),
        ),
    ];
    for (name, input, output, reason) in cases {
        // Whole, and split into single bytes: the answer must not depend on how the bytes arrive.
        for split in [input.len(), 1] {
            let mut hub = HubSession::new(HubConfig::default(), T0);
            for c in input.chunks(split) {
                hub.handle_input(T0, c);
            }
            let mut out = Vec::new();
            while let Some(b) = hub.poll_transmit() {
                out.extend_from_slice(&b);
            }
            let events: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
            assert_eq!(out, output, "{name}: bytes out");
            assert_eq!(closed_with(&events), &reason, "{name}");
            assert!(hub.is_closed(), "{name}");
            // The reason cites its rule.
            let text = reason.to_string();
            assert!(text.contains("[MQTT-") || text.contains("reference §"), "{text}");
        }
    }
}

#[test]
fn refusal_codes_and_logged_codes() {
    let (out, ev) = run_fresh(b"\x10\x10\x00\x04MQTT\x03\x02\x00\x3c\x00\x04dev1");
    assert_eq!(out, b"\x20\x02\x00\x01");
    let reason = closed_with(&ev);
    assert_eq!(reason.kind(), "refused");
    assert_eq!(reason.code(), 400004);
    assert_eq!(
        reason.to_string(),
        "refused with CONNACK 0x01: [MQTT-3.1.2-2] protocol \"MQTT\" level 3 is not supported: IoT Hub speaks MQTT \
         3.1.1 (level 4)"
    );
    assert!(!reason.publishes_will());
}

#[test]
fn a_second_connect_closes_without_a_connack_even_one_mqttbytes_refuses() {
    for second in [
        raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1"),
        b"\x10\x10\x00\x04MQTT\x03\x02\x00\x3c\x00\x04dev1".to_vec(),
        b"\x10\x10\x00\x04MQTX\x04\x02\x00\x3c\x00\x04dev1".to_vec(),
    ] {
        let mut hub = connected_hub();
        hub.handle_input(T0, &second);
        assert_eq!(hub.poll_transmit(), None);
        let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
        assert_eq!(closed_with(&ev), &CloseReason::ProtocolViolation(Violation::SecondConnect));
    }
}

#[test]
fn pipelined_packets_wait_for_authentication_and_connack_goes_first() {
    let mut hub = HubSession::new(HubConfig::default(), T0);
    let mut input =
        raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1");
    input.extend_from_slice(&[0xC0, 0x00]); // PINGREQ right behind the CONNECT
    hub.handle_input(T0, &input);
    assert!(matches!(hub.poll_event(), Some(HubEvent::Authenticate(_))));
    assert!(hub.is_authenticating());
    assert_eq!(hub.poll_transmit(), None, "nothing before the CONNACK");
    hub.accept(T0, false, vec![], None).unwrap();
    assert_eq!(hub.poll_transmit().as_deref(), Some(&[0x20, 0x02, 0x00, 0x00, 0xD0, 0x00][..]));
    assert!(hub.is_connected());
}

#[test]
fn refuse_and_accept_outside_authentication_are_misuse_and_send_nothing() {
    let mut fresh = HubSession::new(HubConfig::default(), T0);
    assert_eq!(
        fresh.refuse(ConnectReturnCode::NotAuthorized, "x"),
        Err(CommandError::NotAuthenticating { command: "refuse()", state: "awaiting CONNECT" })
    );
    assert_eq!(
        fresh.accept(T0, false, vec![], None),
        Err(CommandError::NotAuthenticating { command: "accept()", state: "awaiting CONNECT" })
    );
    assert_eq!(
        fresh.deliver_c2d(T0, PropertyBag::new(), Bytes::new(), false),
        Err(CommandError::NotConnected { command: "deliver_c2d()", state: "awaiting CONNECT" })
    );
    assert_eq!(fresh.poll_transmit(), None);
    assert_eq!(fresh.poll_event(), None);
    assert!(!fresh.is_closed(), "misuse does not end the session");

    let mut hub = connected_hub();
    // A CONNACK in the middle of a session would break [MQTT-3.2.0-1]: refused, nothing sent.
    assert_eq!(
        hub.refuse(ConnectReturnCode::NotAuthorized, "late"),
        Err(CommandError::NotAuthenticating { command: "refuse()", state: "connected" })
    );
    assert!(hub.accept(T0, false, vec![], None).is_err());
    assert_eq!(hub.poll_transmit(), None);
    assert!(hub.is_connected());

    let mut auth = HubSession::new(HubConfig::default(), T0);
    auth.handle_input(
        T0,
        &raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1"),
    );
    assert_eq!(auth.refuse(ConnectReturnCode::Success, "?"), Err(CommandError::RefuseWithSuccess));
    assert_eq!(auth.poll_transmit(), None);
    auth.refuse(ConnectReturnCode::ServiceUnavailable, "device 'dev1' is disabled").unwrap();
    assert_eq!(auth.poll_transmit().as_deref(), Some(&[0x20, 0x02, 0x00, 0x03][..]));
    let ev: Vec<HubEvent> = std::iter::from_fn(|| auth.poll_event()).collect();
    let reason = closed_with(&ev[1..]);
    assert_eq!(reason.code(), 403012);
    assert_eq!(reason.to_string(), "refused with CONNACK 0x03: device 'dev1' is disabled");
    assert!(auth.refuse(ConnectReturnCode::NotAuthorized, "again").is_err());
    assert_eq!(auth.poll_transmit(), None);
}

fn publish_with_id(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
    p.pkid = pkid;
    let mut b = BytesMut::new();
    encode(&Packet::Publish(p), &mut b).unwrap();
    b.to_vec()
}

/// ARCHITECTURE.md: an acknowledgement is sent only after the write it acknowledges is durable; twin patches
/// and method responses included (issue 8 C). PUBACKs leave in arrival order.
#[test]
fn pubacks_are_held_until_the_task_says_the_write_is_done() {
    let mut hub = connected_hub();
    let mut input = publish_with_id("devices/dev1/messages/events/", 1, b"t");
    input.extend(publish_with_id("$iothub/twin/PATCH/properties/reported/?$rid=r1", 2, b"{\"a\":1}"));
    input.extend(publish_with_id("$iothub/methods/res/200/?$rid=m1", 3, b"{}"));
    hub.handle_input(T0, &input);
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert!(matches!(&ev[0], HubEvent::Telemetry { ack: Some(1), .. }));
    assert_eq!(
        ev[1],
        HubEvent::TwinPatchReported {
            rid: RequestId("r1".into()),
            patch: Bytes::from_static(b"{\"a\":1}"),
            ack: Some(2)
        }
    );
    assert_eq!(
        ev[2],
        HubEvent::MethodResponse {
            rid: RequestId("m1".into()),
            status: 200,
            payload: Bytes::from_static(b"{}"),
            ack: Some(3)
        }
    );
    assert_eq!(hub.poll_transmit(), None, "nothing is acknowledged on receipt");
    assert_eq!(hub.acks_held(), 3);
    hub.ack_publish(3).unwrap();
    hub.ack_publish(2).unwrap();
    assert_eq!(hub.poll_transmit(), None, "held behind the telemetry write");
    hub.ack_publish(1).unwrap();
    assert_eq!(
        hub.poll_transmit().as_deref(),
        Some(&[0x40, 0x02, 0x00, 0x01, 0x40, 0x02, 0x00, 0x02, 0x40, 0x02, 0x00, 0x03][..])
    );
    assert_eq!(hub.acks_held(), 0);
    assert_eq!(hub.ack_publish(1), Err(CommandError::UnknownAck(1)));

    // A twin GET stores nothing: acknowledged on receipt.
    hub.handle_input(T0, &publish_with_id("$iothub/twin/GET/?$rid=g", 4, b""));
    assert_eq!(hub.poll_transmit().as_deref(), Some(&[0x40, 0x02, 0x00, 0x04][..]));
    assert_eq!(hub.poll_event(), Some(HubEvent::TwinGet { rid: RequestId("g".into()) }));
}

#[test]
fn dup_at_qos_0_closes() {
    let mut hub = connected_hub();
    // PUBLISH, DUP=1, QoS 0, topic "devices/dev1/messages/events/".
    let mut bytes = vec![0x38, 0x1F, 0x00, 0x1D];
    bytes.extend_from_slice(b"devices/dev1/messages/events/");
    hub.handle_input(T0, &bytes);
    assert_eq!(hub.poll_transmit(), None);
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert_eq!(closed_with(&ev), &CloseReason::ProtocolViolation(Violation::DupAtQos0));
}

#[test]
fn a_packet_id_awaiting_its_puback_cannot_be_reused() {
    let mut hub = connected_hub();
    hub.handle_input(T0, &publish_with_id("devices/dev1/messages/events/", 5, b"a"));
    hub.handle_input(T0, &publish_with_id("devices/dev1/messages/events/", 5, b"b"));
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert_eq!(closed_with(&ev[1..]), &CloseReason::ProtocolViolation(Violation::PacketIdInUse(5)));
}

#[test]
fn every_puback_from_the_device_answers_something_the_hub_sent() {
    // Unknown packet id.
    let mut hub = connected_hub();
    hub.handle_input(T0, &[0x40, 0x02, 0x00, 0x09]);
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert_eq!(closed_with(&ev), &CloseReason::ProtocolViolation(Violation::UnknownPubAck(9)));

    // A QoS 1 twin response, and a dead-lettered C2D delivery: accepted, nothing to complete.
    let mut hub = connected_hub();
    hub.handle_input(
        T0,
        &subscribe_bytes(&[
            ("$iothub/twin/res/#", QoS::AtLeastOnce),
            ("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce),
        ]),
    );
    assert_eq!(hub.poll_transmit().as_deref(), Some(&[0x90, 0x04, 0x00, 0x07, 0x01, 0x01][..]));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Subscribed(_))));
    assert_eq!(hub.twin_response(&RequestId("1".into()), 200, None, Bytes::new()), Ok(true));
    let Ok(C2dDelivery::AwaitingAck(c2d)) = hub.deliver_c2d(T0, PropertyBag::new(), Bytes::new(), false) else {
        panic!()
    };
    hub.abandon_c2d(c2d).unwrap();
    assert_eq!(hub.abandon_c2d(c2d), Err(CommandError::UnknownC2d(c2d)));
    let mut f = crate::packet::Framer::new(1 << 20);
    f.push(&hub.poll_transmit().unwrap());
    let Some(Packet::Publish(resp)) = f.next_packet().unwrap() else { panic!() };
    assert_eq!(resp.qos, QoS::AtLeastOnce);
    hub.handle_input(T0, &[0x40, 0x02, 0x00, resp.pkid as u8, 0x40, 0x02, (c2d >> 8) as u8, c2d as u8]);
    assert_eq!(hub.poll_event(), None, "no completion, no close");
    assert!(hub.is_connected());

    // Server-to-client packets.
    for (bytes, name) in [
        (&[0x20u8, 0x02, 0x00, 0x00][..], "CONNACK"),
        (&[0xD0, 0x00], "PINGRESP"),
        (&[0x50, 0x02, 0x00, 0x01], "PUBREC"),
    ] {
        let mut hub = connected_hub();
        hub.handle_input(T0, bytes);
        let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
        assert_eq!(closed_with(&ev), &CloseReason::ProtocolViolation(Violation::NotFromDevice(name)));
    }
}

#[test]
fn twin_and_method_through_the_pair_are_acknowledged_after_the_write() {
    // The device side at QoS 1, as the SDKs send them: the PUBACK comes only after the task acknowledges.
    let mut hub = connected_hub();
    hub.handle_input(T0, &publish_with_id("$iothub/twin/PATCH/properties/reported/?$rid=7", 1, b"{}"));
    let Some(HubEvent::TwinPatchReported { ack: Some(1), .. }) = hub.poll_event() else { panic!() };
    assert_eq!(hub.poll_transmit(), None);
    hub.ack_publish(1).unwrap();
    assert_eq!(hub.poll_transmit().as_deref(), Some(&[0x40, 0x02, 0x00, 0x01][..]));
}

#[test]
fn commands_after_close_are_refused() {
    let mut hub = connected_hub();
    hub.close(CloseReason::ServerShutdown);
    hub.close(CloseReason::DeviceDisabled);
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert_eq!(closed_with(&ev), &CloseReason::ServerShutdown, "the first reason stands");
    assert_eq!(
        hub.push_desired(1, Bytes::new()),
        Err(CommandError::NotConnected { command: "push_desired()", state: "closed" })
    );
    assert!(hub.send_method_request("m", &RequestId("1".into()), Bytes::new()).is_err());
    assert!(hub.twin_response(&RequestId("1".into()), 200, None, Bytes::new()).is_err());
    assert!(hub.ack_publish(1).is_err());
    assert_eq!(hub.poll_timeout(), None);
    hub.handle_input(T0, &[0xC0, 0x00]);
    assert_eq!(hub.poll_transmit(), None, "nothing is read after the close");
}

#[test]
fn a_close_behind_a_pending_authentication_is_not_a_truncation() {
    let mut input =
        raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1");
    input.extend(publish_with_id("devices/dev1/messages/events/", 1, b"x"));
    let mut hub = HubSession::new(HubConfig::default(), T0);
    hub.handle_input(T0, &input);
    hub.handle_transport_closed("reset");
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert_eq!(closed_with(&ev[1..]), &CloseReason::TransportClosed("reset".into()));

    let mut hub = connected_hub();
    hub.handle_input(T0, &publish_with_id("devices/dev1/messages/events/", 1, b"x")[..5]);
    hub.handle_transport_closed("reset");
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert_eq!(closed_with(&ev), &CloseReason::ProtocolViolation(Violation::Truncated(5)));
}

#[test]
fn pending_writes_are_bounded_by_back_pressure() {
    let mut hub = HubSession::new(HubConfig { max_held_acks: 2, ..HubConfig::default() }, T0);
    hub.handle_input(
        T0,
        &raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1"),
    );
    hub.poll_event();
    hub.accept(T0, false, vec![], None).unwrap();
    hub.poll_transmit();
    let mut input = Vec::new();
    for pkid in 1..=3 {
        input.extend(publish_with_id("devices/dev1/messages/events/", pkid, b"x"));
    }
    let later = T0 + Duration::from_secs(3);
    hub.handle_input(later, &input);
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert_eq!(ev.len(), 2, "the third publish waits: {ev:?}");
    assert_eq!((hub.acks_held(), hub.wants_input()), (2, false));
    hub.ack_publish(1).unwrap();
    assert_eq!(hub.poll_transmit().as_deref(), Some(&[0x40, 0x02, 0x00, 0x01][..]));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Telemetry { ack: Some(3), .. })), "read once there is room");
    assert_eq!((hub.acks_held(), hub.wants_input()), (2, false));
    // The waiting packet counts as received when its bytes arrived, not when it was read.
    assert_eq!(hub.poll_timeout(), Some(later + Duration::from_secs(15)));
    hub.ack_publish(2).unwrap();
    hub.ack_publish(3).unwrap();
    assert!(hub.wants_input());
    // A close while packets wait is not a truncation.
    let mut hub2 = HubSession::new(HubConfig { max_held_acks: 1, ..HubConfig::default() }, T0);
    let mut input =
        raw_connect("dev1", "hub.local/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=a&sig=b&se=1");
    input.extend(publish_with_id("devices/dev1/messages/events/", 1, b"x"));
    input.extend(publish_with_id("devices/dev1/messages/events/", 2, b"x"));
    hub2.handle_input(T0, &input);
    hub2.poll_event();
    hub2.accept(T0, false, vec![], None).unwrap();
    hub2.handle_transport_closed("reset");
    let ev: Vec<HubEvent> = std::iter::from_fn(|| hub2.poll_event()).collect();
    assert_eq!(closed_with(&ev[1..]), &CloseReason::TransportClosed("reset".into()));
}

#[test]
fn a_c2d_lock_runs_out_in_the_session_and_is_renewed_by_redelivery() {
    // A lock shorter than the keep-alive deadline (15 s for this CONNECT's 10 s), so the lock decides the timer.
    let lock = Duration::from_secs(5);
    let mut hub = connected_hub_with(HubConfig { c2d_lock: lock, ..HubConfig::default() });
    hub.handle_input(T0, &subscribe_bytes(&[("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)]));
    while hub.poll_event().is_some() {}
    let _ = hub.poll_transmit();
    let Ok(C2dDelivery::AwaitingAck(pkid)) = hub.deliver_c2d(T0, PropertyBag::new(), Bytes::new(), false) else {
        panic!()
    };
    let _ = hub.poll_transmit();
    assert_eq!(hub.poll_timeout(), Some(T0 + lock), "the session's next deadline is the lock");
    let just_before = T0 + (lock - Duration::from_millis(1));
    hub.handle_timeout(just_before);
    assert_eq!(hub.poll_event(), None);
    hub.handle_timeout(T0 + lock);
    assert_eq!(hub.poll_event(), Some(HubEvent::C2dLockExpired(pkid)));
    let now = T0 + lock + Duration::from_secs(1);
    hub.handle_timeout(now);
    assert_eq!(hub.poll_event(), None, "reported once until the task decides");
    assert_eq!(hub.poll_timeout(), Some(T0 + Duration::from_secs(15)), "only keep-alive is left");
    // Redelivery sends the message again with DUP and the same id, and locks it anew.
    hub.redeliver_c2d(now, pkid, PropertyBag::new(), Bytes::new()).unwrap();
    let out = hub.poll_transmit().unwrap();
    assert_eq!(out[0], 0x3A, "PUBLISH, DUP, QoS 1");
    assert_eq!(hub.poll_timeout(), Some(now + lock));
    // Its PUBACK completes it and clears the lock.
    hub.handle_input(now, &[0x40, 0x02, (pkid >> 8) as u8, pkid as u8]);
    assert_eq!(hub.poll_event(), Some(HubEvent::C2dCompleted(pkid)));
    assert_eq!(hub.poll_timeout(), Some(now + Duration::from_secs(15)), "no lock left; keep-alive from the PUBACK");
}

#[test]
fn a_session_that_handled_its_input_holds_no_input_memory() {
    let mut hub = connected_hub();
    let topic = "devices/dev1/messages/events/";
    let mut wire = publish_bytes(topic, QoS::AtLeastOnce, vec![b'x'; 300]);
    wire.extend(publish_bytes(topic, QoS::AtMostOnce, vec![b'y'; 300]));
    // One and a half packets: the half waits in the framer.
    let (whole, half) = wire.split_at(wire.len() - 100);
    hub.handle_input(T0, whole);
    assert!(hub.input_capacity() > 0);
    assert!(matches!(hub.poll_event(), Some(HubEvent::Telemetry { ack: Some(1), .. })));
    assert!(hub.poll_event().is_none());
    assert!(hub.input_capacity() > 0, "the framer keeps the partial packet");
    hub.handle_input(T0, half);
    let Some(HubEvent::Telemetry { message, .. }) = hub.poll_event() else { panic!("the second message") };
    assert!(hub.poll_event().is_none());
    assert_eq!(hub.input_capacity(), 0, "drained: nothing kept, while the message itself lives on");
    assert_eq!(message.payload.len(), 300);
}
