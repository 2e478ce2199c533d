//! Scenario tests: a [`DeviceSession`] fed hand-built hub packets on virtual time.

use super::*;
use crate::packet::{encode, Framer};
use crate::property_bag::PropertyBag;
use crate::property_bag::SystemProperty;
use crate::time::Instant;
use crate::topic::{DeviceIdentity, TopicFilter};
use bytes::Bytes;
use bytes::BytesMut;
use core::time::Duration;
use mqttbytes::v4::*;
use mqttbytes::QoS;

const T0: Instant = Instant(1_000);

fn config() -> DeviceConfig {
    DeviceConfig::new("hub.local", DeviceIdentity::device("dev1"))
}

fn wire(packets: &[Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        encode(p, &mut out).unwrap();
    }
    out.to_vec()
}

/// Everything the session transmitted, decoded.
fn sent(s: &mut DeviceSession) -> Vec<Packet> {
    let mut f = Framer::new(1 << 20);
    while let Some(b) = s.poll_transmit() {
        f.push(&b);
    }
    let mut out = Vec::new();
    while let Some(p) = f.next_packet().unwrap() {
        out.push(p);
    }
    out
}

fn events(s: &mut DeviceSession) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn connack(session_present: bool, code: ConnectReturnCode) -> Vec<u8> {
    wire(&[Packet::ConnAck(ConnAck::new(code, session_present))])
}

fn connected(cfg: DeviceConfig) -> DeviceSession {
    let mut s = DeviceSession::new(cfg);
    s.connect(T0, ConnectOptions { password: Some("SharedAccessSignature sr=x&sig=y&se=1".into()), will: None })
        .unwrap();
    sent(&mut s);
    s.handle_input(T0, &connack(false, ConnectReturnCode::Success)).unwrap();
    events(&mut s);
    s
}

fn publishes(packets: &[Packet]) -> Vec<Publish> {
    packets.iter().filter_map(|p| if let Packet::Publish(p) = p { Some(p.clone()) } else { None }).collect()
}

#[test]
fn connect_sends_iothub_identity_and_reports_session_present() {
    let mut cfg = config();
    cfg.model_id = Some("dtmi:x;1".into());
    let mut s = DeviceSession::new(cfg);
    let mut will_props = PropertyBag::new();
    will_props.push("reason", "gone");
    s.connect(
        T0,
        ConnectOptions {
            password: Some("SharedAccessSignature sr=a&sig=b&se=1".into()),
            will: Some(Will { properties: will_props, payload: Bytes::from_static(b"bye"), qos: QoS::AtLeastOnce }),
        },
    )
    .unwrap();
    let out = sent(&mut s);
    let Packet::Connect(c) = &out[0] else { panic!("{out:?}") };
    assert_eq!(c.client_id, "dev1");
    assert!(!c.clean_session, "SDKs use CleanSession 0");
    assert_eq!(c.keep_alive, 60);
    let login = c.login.as_ref().unwrap();
    assert_eq!(login.username, "hub.local/dev1/?api-version=2021-04-12&model-id=dtmi%3Ax%3B1");
    assert_eq!(login.password, "SharedAccessSignature sr=a&sig=b&se=1");
    let will = c.last_will.as_ref().unwrap();
    assert_eq!(will.topic, "devices/dev1/messages/events/reason=gone");
    assert!(s.is_connecting());
    s.handle_input(T0, &connack(true, ConnectReturnCode::Success)).unwrap();
    assert_eq!(events(&mut s), vec![Event::Connected { session_present: true }]);
}

#[test]
fn refusal_codes_are_explained() {
    for (code, word) in
        [(ConnectReturnCode::NotAuthorized, "not authorized"), (ConnectReturnCode::ServiceUnavailable, "disabled")]
    {
        let mut s = DeviceSession::new(config());
        s.connect(T0, ConnectOptions::default()).unwrap();
        s.handle_input(T0, &connack(false, code)).unwrap();
        let ev = events(&mut s);
        let Event::ConnectionLost { reason: LostReason::Refused(r), .. } = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(r.0, code as u8);
        assert!(r.to_string().contains(word), "{r}");
        assert!(s.is_disconnected());
    }
}

#[test]
fn no_refusal_is_retried_but_a_lost_transport_is() {
    // Every CONNACK code, defined (1–5, identifier rejected included) or not, ends the retries.
    for code in 1..=255u8 {
        assert!(!LostReason::Refused(ConnectRefusal(code)).is_retryable(), "0x{code:02x}");
    }
    assert!(LostReason::TransportClosed("reset".into()).is_retryable());
    assert!(LostReason::KeepAliveTimeout.is_retryable());
    assert!(LostReason::ConnackTimeout.is_retryable());
    assert!(!LostReason::Disconnected.is_retryable());
    assert!(!LostReason::ProtocolViolation(HubViolation::SecondConnAck).is_retryable());
}

#[test]
fn connack_timeout() {
    let mut s = DeviceSession::new(config());
    s.connect(T0, ConnectOptions::default()).unwrap();
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(30)));
    s.handle_timeout(T0 + Duration::from_secs(29));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(T0 + Duration::from_secs(30));
    assert!(matches!(&events(&mut s)[..], [Event::ConnectionLost { reason: LostReason::ConnackTimeout, .. }]));
}

#[test]
fn keep_alive_pings_on_time_and_detects_a_dead_connection() {
    let mut cfg = config();
    cfg.keep_alive = Duration::from_secs(10);
    cfg.ping_timeout = Duration::from_secs(5);
    let mut s = connected(cfg);
    // Traffic at T0+4 pushes the ping out to T0+14.
    s.send_telemetry(T0 + Duration::from_secs(4), Telemetry { qos: TelemetryQos::AtMostOnce, ..Telemetry::new("x") })
        .unwrap();
    sent(&mut s);
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(14)));
    s.handle_timeout(T0 + Duration::from_secs(13));
    assert!(sent(&mut s).is_empty());
    s.handle_timeout(T0 + Duration::from_secs(14));
    assert_eq!(sent(&mut s), vec![Packet::PingReq]);
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(19)));
    s.handle_input(T0 + Duration::from_secs(15), &wire(&[Packet::PingResp])).unwrap();
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(24)));
    s.handle_timeout(T0 + Duration::from_secs(24));
    assert_eq!(sent(&mut s), vec![Packet::PingReq]);
    s.handle_timeout(T0 + Duration::from_secs(29));
    assert!(matches!(&events(&mut s)[..], [Event::ConnectionLost { reason: LostReason::KeepAliveTimeout, .. }]));
    assert!(!s.is_connected());
}

#[test]
fn telemetry_topic_qos_and_ack() {
    let mut s = connected(config());
    let mut msg = Telemetry::new(&b"{\"t\":1}"[..]);
    msg.properties.set_system(SystemProperty::ContentType, "application/json").push("alert", "high temp");
    let id = s.send_telemetry(T0, msg).unwrap();
    let out = publishes(&sent(&mut s));
    assert_eq!(out[0].topic, "devices/dev1/messages/events/%24.ct=application%2Fjson&alert=high%20temp");
    assert_eq!(out[0].qos, QoS::AtLeastOnce);
    assert_eq!(s.unacked(), 1);
    s.handle_input(T0 + Duration::from_millis(5), &wire(&[Packet::PubAck(PubAck::new(out[0].pkid))])).unwrap();
    assert_eq!(events(&mut s), vec![Event::TelemetryAcked { id, sent_at: T0 }]);
    assert_eq!(s.unacked(), 0);
}

#[test]
fn oversize_and_offline_qos0_are_refused_locally() {
    let mut s = connected(config());
    let big = Telemetry::new(vec![0u8; crate::MAX_TELEMETRY_SIZE + 1]);
    assert!(matches!(s.send_telemetry(T0, big), Err(SendError::TooLarge { .. })));
    let mut off = DeviceSession::new(config());
    let q0 = Telemetry { qos: TelemetryQos::AtMostOnce, ..Telemetry::new("x") };
    assert_eq!(off.send_telemetry(T0, q0), Err(SendError::NotConnected));
    assert!(off.poll_transmit().is_none());
}

#[test]
fn unacked_telemetry_is_resent_with_dup_after_reconnect() {
    let mut s = connected(config());
    let a = s.send_telemetry(T0, Telemetry::new("a")).unwrap();
    let b = s.send_telemetry(T0, Telemetry::new("b")).unwrap();
    let first = publishes(&sent(&mut s));
    assert!(first.iter().all(|p| !p.dup));
    s.handle_transport_closed(T0, "reset");
    // Queued while offline: sent for the first time after the reconnect, without DUP.
    let c = s.send_telemetry(T0, Telemetry::new("c")).unwrap();
    assert!(sent(&mut s).is_empty());
    s.connect(T0, ConnectOptions::default()).unwrap();
    sent(&mut s);
    s.handle_input(T0, &connack(true, ConnectReturnCode::Success)).unwrap();
    let again = publishes(&sent(&mut s));
    assert_eq!(
        again.iter().map(|p| (p.payload.as_ref(), p.dup)).collect::<Vec<_>>(),
        vec![(&b"a"[..], true), (&b"b"[..], true), (&b"c"[..], false)]
    );
    assert_eq!(again[0].pkid, first[0].pkid, "same packet id on resend");
    events(&mut s);
    let acks: Vec<Packet> = again.iter().map(|p| Packet::PubAck(PubAck::new(p.pkid))).collect();
    s.handle_input(T0, &wire(&acks)).unwrap();
    let acked: Vec<PublishId> = events(&mut s)
        .into_iter()
        .filter_map(|e| if let Event::TelemetryAcked { id, .. } = e { Some(id) } else { None })
        .collect();
    assert_eq!(acked, vec![a, b, c]);
}

#[test]
fn clean_session_resends_without_dup() {
    let mut cfg = config();
    cfg.clean_session = true;
    let mut s = connected(cfg);
    s.send_telemetry(T0, Telemetry::new("a")).unwrap();
    sent(&mut s);
    s.handle_transport_closed(T0, "reset");
    s.connect(T0, ConnectOptions::default()).unwrap();
    sent(&mut s);
    s.handle_input(T0, &connack(false, ConnectReturnCode::Success)).unwrap();
    let again = publishes(&sent(&mut s));
    assert_eq!(again.len(), 1);
    assert!(!again[0].dup);
}

#[test]
fn inflight_window_holds_back_and_releases_in_order() {
    let mut cfg = config();
    cfg.max_inflight = 2;
    let mut s = connected(cfg);
    for p in ["1", "2", "3"] {
        s.send_telemetry(T0, Telemetry::new(p)).unwrap();
    }
    let out = publishes(&sent(&mut s));
    assert_eq!(out.len(), 2);
    s.handle_input(T0, &wire(&[Packet::PubAck(PubAck::new(out[0].pkid))])).unwrap();
    let next = publishes(&sent(&mut s));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].payload.as_ref(), b"3");
}

fn c2d_publish(pkid: u16, mid: &str) -> Packet {
    let mut p = Publish::new(format!("devices/dev1/messages/devicebound/%24.mid={mid}&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&iothub-ack=full&color=red"), QoS::AtLeastOnce, mid.as_bytes().to_vec());
    p.pkid = pkid;
    Packet::Publish(p)
}

#[test]
fn c2d_is_decoded_and_acked_in_order_even_when_the_app_acks_out_of_order() {
    let mut cfg = config();
    cfg.auto_ack_c2d = false;
    let mut s = connected(cfg);
    s.handle_input(T0, &wire(&[c2d_publish(10, "m1"), c2d_publish(11, "m2")])).unwrap();
    let ev = events(&mut s);
    let msgs: Vec<C2dMessage> =
        ev.into_iter().filter_map(|e| if let Event::C2d(m) = e { Some(m) } else { None }).collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].properties.system(&SystemProperty::MessageId), Some("m1"));
    assert_eq!(msgs[0].properties.system(&SystemProperty::Ack), Some("full"));
    assert_eq!(msgs[0].properties.system(&SystemProperty::To), Some("/devices/dev1/messages/devicebound"));
    assert_eq!(msgs[0].properties.get("color"), Some(Some("red")));
    assert!(sent(&mut s).is_empty());
    s.ack_c2d(T0, msgs[1].ack.unwrap()).unwrap();
    assert!(sent(&mut s).is_empty(), "m2's PUBACK waits for m1's");
    s.ack_c2d(T0, msgs[0].ack.unwrap()).unwrap();
    assert_eq!(sent(&mut s), vec![Packet::PubAck(PubAck::new(10)), Packet::PubAck(PubAck::new(11))]);
}

#[test]
fn auto_ack_c2d() {
    let mut s = connected(config());
    s.handle_input(T0, &wire(&[c2d_publish(3, "m")])).unwrap();
    assert_eq!(sent(&mut s), vec![Packet::PubAck(PubAck::new(3))]);
}

#[test]
fn split_and_coalesced_input() {
    let packets = [c2d_publish(1, "a"), Packet::PingResp, c2d_publish(2, "b"), c2d_publish(3, "c")];
    let bytes = wire(&packets);
    for chunk in [1, 2, 5, 13, bytes.len()] {
        let mut s = connected(config());
        for c in bytes.chunks(chunk) {
            s.handle_input(T0, c).unwrap();
        }
        let n = events(&mut s).iter().filter(|e| matches!(e, Event::C2d(_))).count();
        assert_eq!(n, 3, "chunk {chunk}");
        assert_eq!(sent(&mut s).len(), 3);
    }
}

#[test]
fn method_request_and_response() {
    let mut s = connected(config());
    s.handle_input(
        T0,
        &wire(&[Packet::Publish(Publish::new(
            "$iothub/methods/POST/reboot/?$rid=ab1",
            QoS::AtMostOnce,
            b"{\"delay\":1}".to_vec(),
        ))]),
    )
    .unwrap();
    let ev = events(&mut s);
    let Event::MethodRequest { name, rid, payload } = &ev[0] else { panic!("{ev:?}") };
    assert_eq!((name.as_str(), rid.0.as_str(), payload.as_ref()), ("reboot", "ab1", &b"{\"delay\":1}"[..]));
    assert_eq!(s.respond_to_method(T0, rid, 200, b"not json"), Err(SendError::NotJson));
    s.respond_to_method(T0, rid, 200, b"{\"ok\":true}").unwrap();
    let out = publishes(&sent(&mut s));
    assert_eq!(out[0].topic, "$iothub/methods/res/200/?$rid=ab1");
    assert_eq!(out[0].qos, QoS::AtMostOnce);
}

#[test]
fn twin_requests_correlate_and_time_out() {
    let mut s = connected(config());
    let get = s.get_twin(T0).unwrap();
    let patch = s.patch_reported(T0, &b"{\"fw\":\"1.0\"}"[..]).unwrap();
    let out = publishes(&sent(&mut s));
    assert_eq!(out[0].topic, format!("$iothub/twin/GET/?$rid={get}"));
    assert_eq!(out[1].topic, format!("$iothub/twin/PATCH/properties/reported/?$rid={patch}"));
    let resp = Publish::new(format!("$iothub/twin/res/204/?$rid={patch}&$version=6"), QoS::AtMostOnce, vec![]);
    s.handle_input(T0, &wire(&[Packet::Publish(resp)])).unwrap();
    assert_eq!(
        events(&mut s),
        vec![Event::TwinResponse {
            rid: patch,
            kind: RequestKind::TwinPatchReported,
            status: 204,
            version: Some(6),
            body: Bytes::new()
        }]
    );
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(30)));
    s.handle_timeout(T0 + Duration::from_secs(30));
    assert_eq!(
        events(&mut s),
        vec![Event::RequestFailed { rid: get, kind: RequestKind::TwinGet, reason: RequestFailure::TimedOut }]
    );
}

#[test]
fn desired_patch_and_subscribe_results() {
    let mut s = connected(config());
    s.subscribe(T0, &[TopicFilter::C2d, TopicFilter::Methods]).unwrap();
    let out = sent(&mut s);
    let Packet::Subscribe(sub) = &out[0] else { panic!() };
    assert_eq!(sub.filters[0].path, "devices/dev1/messages/devicebound/#");
    let ack = SubAck::new(sub.pkid, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce), SubscribeReasonCode::Failure]);
    let desired = Publish::new(
        "$iothub/twin/PATCH/properties/desired/?$version=4",
        QoS::AtMostOnce,
        b"{\"x\":1,\"$version\":4}".to_vec(),
    );
    s.handle_input(T0, &wire(&[Packet::SubAck(ack), Packet::Publish(desired)])).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            Event::Subscribed {
                results: vec![
                    (TopicFilter::C2d, Granted::Qos(QoS::AtLeastOnce)),
                    (TopicFilter::Methods, Granted::Refused)
                ]
            },
            Event::DesiredPropertiesPatch { version: Some(4), body: Bytes::from_static(b"{\"x\":1,\"$version\":4}") },
        ]
    );
}

#[test]
fn hub_violations_are_typed_and_cite_their_rule() {
    use crate::packet::FrameError;
    let cases: Vec<(&[u8], HubViolation)> = vec![
        (&[0xF0, 0x00], HubViolation::Frame(FrameError::Malformed(mqttbytes::Error::InvalidPacketType(15)))),
        (
            &[0x30, 0x02, 0xFF, 0xFF],
            HubViolation::Frame(FrameError::Malformed(mqttbytes::Error::BoundaryCrossed(65535))),
        ),
        (&[0x20, 0x02, 0x00, 0x00], HubViolation::SecondConnAck),
        (&[0x40, 0x02, 0x00, 0x63], HubViolation::UnknownPubAck(0x63)),
        (&[0x50, 0x02, 0x00, 0x63], HubViolation::UnknownPubRec(0x63)),
        (&[0x62, 0x02, 0x00, 0x63], HubViolation::UnexpectedPubRel(0x63)),
        (&[0x70, 0x02, 0x00, 0x63], HubViolation::UnknownPubComp(0x63)),
        (&[0x90, 0x03, 0x00, 0x63, 0x01], HubViolation::UnknownSubAck(0x63)),
        (&[0xB0, 0x02, 0x00, 0x63], HubViolation::UnknownUnsubAck(0x63)),
        (&[0xC0, 0x00], HubViolation::NotFromServer("PINGREQ")),
        (&[0xE0, 0x00], HubViolation::NotFromServer("DISCONNECT")),
        (&[0x34, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], HubViolation::Qos2Publish),
        // [MQTT-2.2.2-2] SUBACK's fixed-header flags are 0.
        (
            &[0x92, 0x03, 0x00, 0x01, 0x01],
            HubViolation::Frame(FrameError::ReservedFlags { packet: "SUBACK", flags: 2 }),
        ),
    ];
    for (bad, violation) in cases {
        let mut s = connected(config());
        assert_eq!(s.handle_input(T0, bad), Err(InputError::Violation(violation.clone())), "{bad:02x?}");
        assert_eq!(
            events(&mut s).last(),
            Some(&Event::ConnectionLost {
                reason: LostReason::ProtocolViolation(violation.clone()),
                likely_cause: None
            })
        );
        assert!(s.is_disconnected());
        let text = violation.to_string();
        assert!(text.contains("[MQTT-") || text.contains("MQTT 3.1.1 §") || text.contains("reference §"), "{text}");
        // Nothing more is read on the dead transport.
        assert_eq!(s.handle_input(T0, &[0xD0, 0x00]), Err(InputError::NotConnected));
    }
    // Anything but CONNACK first is a violation too.
    let mut s = DeviceSession::new(config());
    s.connect(T0, ConnectOptions::default()).unwrap();
    assert_eq!(
        s.handle_input(T0, &wire(&[Packet::PingResp])),
        Err(InputError::Violation(HubViolation::ExpectedConnAck("PINGRESP")))
    );
}

#[test]
fn state_is_observed_through_methods() {
    let mut s = DeviceSession::new(config());
    assert!(s.is_disconnected() && !s.is_connecting() && !s.is_connected());
    assert_eq!(s.connected_since(), None);
    s.connect(T0, ConnectOptions::default()).unwrap();
    assert!(matches!(&sent(&mut s)[..], [Packet::Connect(_)]));
    assert!(s.is_connecting());
    let later = T0 + Duration::from_secs(2);
    s.handle_input(later, &connack(true, ConnectReturnCode::Success)).unwrap();
    assert!(s.is_connected());
    assert_eq!(s.connected_since(), Some(later));
    assert_eq!(s.session_present(), Some(true), "CleanSession 0 by default");
    assert_eq!(s.connect(later, ConnectOptions::default()), Err(SendError::AlreadyConnected));
    assert_eq!(sent(&mut s), vec![], "no second CONNECT");
    assert!(s.is_connected());
    s.disconnect(later);
    assert!(s.is_disconnected());
    assert_eq!(s.session_present(), None);
    s.connect(later, ConnectOptions::default()).unwrap();
    assert!(s.is_connecting());
}

#[test]
fn acknowledging_a_c2d_message_twice_is_an_error() {
    let mut cfg = config();
    cfg.auto_ack_c2d = false;
    let mut s = connected(cfg);
    let mut p = Publish::new("devices/dev1/messages/devicebound/", QoS::AtLeastOnce, b"x".to_vec());
    p.pkid = 3;
    s.handle_input(T0, &wire(&[Packet::Publish(p)])).unwrap();
    let Some(Event::C2d(m)) = events(&mut s).pop() else { panic!() };
    s.ack_c2d(T0, m.ack.unwrap()).unwrap();
    assert_eq!(sent(&mut s), vec![Packet::PubAck(PubAck::new(3))]);
    assert_eq!(s.ack_c2d(T0, m.ack.unwrap()), Err(SendError::UnknownAck));
    assert_eq!(sent(&mut s), vec![]);
}

#[test]
fn a_close_right_after_qos2_is_blamed_on_it() {
    let mut s = connected(config());
    s.send_telemetry(T0, Telemetry { qos: TelemetryQos::ExactlyOnceHubWillClose, ..Telemetry::new("x") }).unwrap();
    let out = publishes(&sent(&mut s));
    assert_eq!(out[0].qos, QoS::ExactlyOnce);
    s.handle_transport_closed(T0 + Duration::from_millis(20), "closed by peer");
    let ev = events(&mut s);
    let Event::ConnectionLost { likely_cause: Some(cause), .. } = &ev[0] else { panic!("{ev:?}") };
    assert!(cause.contains("QoS 2"));
}

#[test]
fn lost_connection_fails_outstanding_requests() {
    let mut s = connected(config());
    let rid = s.get_twin(T0).unwrap();
    s.handle_transport_closed(T0, "gone");
    let ev = events(&mut s);
    assert_eq!(ev[0], Event::RequestFailed { rid, kind: RequestKind::TwinGet, reason: RequestFailure::ConnectionLost });
    assert!(matches!(ev[1], Event::ConnectionLost { .. }));
}

#[test]
fn disconnect_sends_disconnect() {
    let mut s = connected(config());
    s.disconnect(T0);
    assert_eq!(sent(&mut s), vec![Packet::Disconnect]);
    assert!(matches!(&events(&mut s)[..], [Event::ConnectionLost { reason: LostReason::Disconnected, .. }]));
    assert_eq!(s.handle_input(T0, &[0xD0, 0]), Err(InputError::NotConnected));
}

#[test]
fn unexpected_publishes_are_reported_with_why_and_still_acknowledged() {
    let mut s = connected(config());
    let mut odd = Publish::new("sensors/x", QoS::AtLeastOnce, b"1".to_vec());
    odd.pkid = 4;
    let late = Publish::new("$iothub/twin/res/200/?$rid=77", QoS::AtMostOnce, b"{}".to_vec());
    s.handle_input(T0, &wire(&[Packet::Publish(odd), Packet::Publish(late)])).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            Event::UnknownPublish {
                topic: "sensors/x".into(),
                payload: Bytes::from_static(b"1"),
                why: UnexpectedPublish::Topic(crate::topic::TopicError::Unknown("sensors/x".into())),
            },
            Event::UnknownPublish {
                topic: "$iothub/twin/res/200/?$rid=77".into(),
                payload: Bytes::from_static(b"{}"),
                why: UnexpectedPublish::LateTwinResponse(crate::topic::RequestId("77".into())),
            },
        ]
    );
    assert_eq!(sent(&mut s), vec![Packet::PubAck(PubAck::new(4))]);
    assert!(s.is_connected());
}

#[test]
fn the_queue_of_unacknowledged_telemetry_is_bounded_in_bytes_too() {
    // 10 000 messages of 256 KB would be 2.5 GB held for a hub that never acknowledges (or while offline): the
    // queue is refused past `max_queued_bytes` as well as past `max_queued` messages.
    let mut s = DeviceSession::new(config());
    let max = s.config().max_queued_bytes;
    assert!(max <= 64 * 1024 * 1024);
    let body = vec![b'x'; crate::MAX_TELEMETRY_SIZE - 1024];
    let mut queued = 0usize;
    let err = loop {
        match s.send_telemetry(T0, Telemetry::new(body.clone())) {
            Ok(_) => queued += body.len(),
            Err(e) => break e,
        }
        assert!(queued <= max, "{queued} bytes queued");
    };
    assert!(matches!(err, SendError::QueueFull(_)), "{err}");
    // Small messages still go while the bytes allow them.
    let mut s = DeviceSession::new(config());
    for _ in 0..1000 {
        s.send_telemetry(T0, Telemetry::new("small")).unwrap();
    }
}
