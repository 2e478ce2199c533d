//! Property-based fuzzing of every parser that sees untrusted input, and of both session state machines fed
//! arbitrary bytes. cargo-fuzz needs a nightly toolchain this project does not have, so proptest drives them:
//! a short run in `cargo xtask test` (HUBSIM_FUZZ_CASES, default 3000 per target), long runs with
//! `cargo xtask fuzz --minutes N`. A failure is shrunk and saved under `proptest-regressions/`, which turns it
//! into a regression test on every later run.

use bytes::{Bytes, BytesMut};
use hubsim_proto::device::{ConnectOptions, DeviceConfig, DeviceSession, Event, Telemetry};
use hubsim_proto::hub::{CloseReason, CommandError, HubConfig, HubEvent, HubSession};
use hubsim_proto::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, PubAck, Publish, Subscribe, SubscribeFilter,
};
use hubsim_proto::mqttbytes::QoS;
use hubsim_proto::packet::{encode, Framer};
use hubsim_proto::property_bag::PropertyBag;
use hubsim_proto::sas::SasToken;
use hubsim_proto::topic::{DeviceIdentity, DeviceTopic, HubTopic, RequestId};
use hubsim_proto::{ConnectionString, Instant};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn config() -> ProptestConfig {
    let cases = std::env::var("HUBSIM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    ProptestConfig { cases, max_shrink_iters: 2000, ..ProptestConfig::default() }
}

fn wire(p: Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = encode(&p, &mut b);
    b.to_vec()
}

/// Packets a device could send, valid or not, to mix with raw bytes.
fn device_packet() -> impl Strategy<Value = Vec<u8>> {
    let topic = prop_oneof![
        Just("devices/d1/messages/events/".to_owned()),
        "devices/d1/messages/events/[a-z%$.=&#+:/ ]{0,30}",
        Just("$iothub/twin/GET/?$rid=1".to_owned()),
        "\\$iothub/methods/res/[0-9a-z]{1,4}/\\?\\$rid=[a-z0-9%]{0,6}",
        any::<String>(),
    ];
    prop_oneof![
        (topic.clone(), 0u8..3, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(t, q, r, p)| {
                let qos = match q {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                // Packet ids 7–10: reuse after a PUBACK is legal, reuse while one is held is not.
                let pkid = if q == 0 { 0 } else { 7 + p.len() as u16 % 4 };
                let mut pb = Publish::new(t, qos, p);
                pb.retain = r;
                pb.pkid = pkid;
                wire(Packet::Publish(pb))
            }
        ),
        (topic, 0u8..3).prop_map(|(t, q)| {
            let qos = match q {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            let mut s = Subscribe::new_many([SubscribeFilter::new(t, qos)]);
            s.pkid = 3;
            wire(Packet::Subscribe(s))
        }),
        any::<u16>().prop_map(|p| wire(Packet::PubAck(PubAck::new(p)))),
        Just(wire(Packet::PingReq)),
        Just(wire(Packet::Disconnect)),
        proptest::collection::vec(any::<u8>(), 0..32),
    ]
}

/// Packets a hub could send to a device, valid or not.
fn hub_packet() -> impl Strategy<Value = Vec<u8>> {
    let topic = prop_oneof![
        Just("devices/d1/messages/devicebound/".to_owned()),
        "devices/d1/messages/devicebound/[a-z%$.=&]{0,20}",
        "\\$iothub/methods/POST/[a-z]{1,4}/\\?\\$rid=[0-9]{1,3}",
        "\\$iothub/twin/res/[0-9]{3}/\\?\\$rid=[0-9]{1,2}",
        any::<String>(),
    ];
    prop_oneof![
        (topic, any::<bool>(), 1u16..6, proptest::collection::vec(any::<u8>(), 0..16)).prop_map(|(t, q1, id, p)| {
            let mut pb = Publish::new(t, if q1 { QoS::AtLeastOnce } else { QoS::AtMostOnce }, p);
            pb.pkid = if q1 { id } else { 0 };
            wire(Packet::Publish(pb))
        }),
        (1u16..6).prop_map(|p| wire(Packet::PubAck(PubAck::new(p)))),
        Just(wire(Packet::PingResp)),
        proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

fn connect_bytes() -> Vec<u8> {
    let mut c = Connect::new("d1");
    c.login = Some(Login::new("h/d1/?api-version=2021-04-12", "SharedAccessSignature sr=h%2Fdevices%2Fd1&sig=x&se=1"));
    wire(Packet::Connect(c))
}

/// Decodes what a session sent; the hub's own output is always well-formed.
fn decode_all(bytes: &[u8]) -> Vec<Packet> {
    let mut f = Framer::new(1 << 24);
    f.push(bytes);
    std::iter::from_fn(|| f.next_packet().expect("the session's own output decodes")).collect()
}

/// Feeds `chunks` to a hub session, playing the task (authenticate or refuse; acknowledge each held PUBACK in a
/// shuffled order), and checks its invariants:
/// - exactly one `Closed` event, and the session stays closed;
/// - the first packet out is CONNACK (or nothing is sent at all), and there is at most one CONNACK;
/// - a refusal's CONNACK carries the refusal's code and is the only packet out;
/// - every PUBACK out answers a publish whose write the task finished (or a twin GET, acknowledged on receipt),
///   and a publish whose write is still pending holds back the PUBACKs of every later one;
/// - misuse (refuse/accept in the wrong state) is an error and sends nothing;
/// - never more than `max_held_acks` writes pending, and no input wanted at the bound.
fn drive_hub(chunks: &[Vec<u8>], authenticate: bool, ack_order: &[usize]) {
    // A small bound, so back-pressure is exercised.
    const MAX_HELD: usize = 3;
    let mut hub = HubSession::new(HubConfig { max_held_acks: MAX_HELD, ..HubConfig::default() }, Instant(0));
    let mut closed = Vec::new();
    let mut out = Vec::new();
    let mut t = 0;
    let mut held: Vec<u16> = Vec::new();
    let mut released: Vec<u16> = Vec::new();
    let mut twin_gets = 0;
    let mut k = 0;
    for c in chunks {
        t += 10;
        hub.handle_input(Instant(t), c);
        while let Some(ev) = hub.poll_event() {
            match ev {
                HubEvent::Authenticate(_) if authenticate => hub.accept(Instant(t), false, vec![], None).unwrap(),
                HubEvent::Authenticate(_) => hub.refuse(ConnectReturnCode::NotAuthorized, "no").unwrap(),
                HubEvent::Telemetry { ack: Some(p), .. }
                | HubEvent::TwinPatchReported { ack: Some(p), .. }
                | HubEvent::MethodResponse { ack: Some(p), .. } => held.push(p),
                HubEvent::TwinGet { .. } => twin_gets += 1,
                HubEvent::Closed { reason, .. } => closed.push(reason),
                _ => {}
            }
        }
        // The task finishes some writes, not in order.
        if !held.is_empty() {
            let i = ack_order.get(k).copied().unwrap_or(0) % held.len();
            k += 1;
            let p = held.remove(i);
            match hub.ack_publish(p) {
                Ok(()) => released.push(p),
                Err(CommandError::NotConnected { .. }) => assert!(hub.is_closed()),
                Err(e) => panic!("{e}"),
            }
        }
        if !hub.is_authenticating() {
            assert!(hub.refuse(ConnectReturnCode::NotAuthorized, "misuse").is_err());
            assert!(hub.accept(Instant(t), false, vec![], None).is_err());
        }
        while let Some(b) = hub.poll_transmit() {
            out.extend_from_slice(&b);
        }
        // Held back: at most as many PUBACKs as publishes arrived before the oldest unfinished write.
        assert!(hub.acks_held() >= held.len() || hub.is_closed());
        // Never more than the bound of pending writes, and no input wanted at the bound.
        assert!(hub.acks_held() <= MAX_HELD, "{} held", hub.acks_held());
        assert_eq!(hub.wants_input(), !hub.is_closed() && !hub.is_authenticating() && hub.acks_held() < MAX_HELD);
        hub.handle_timeout(Instant(t));
    }
    hub.handle_transport_closed("end of input");
    while let Some(ev) = hub.poll_event() {
        if let HubEvent::Closed { reason, .. } = ev {
            closed.push(reason);
        }
    }
    assert_eq!(closed.len(), 1, "exactly one Closed event: {closed:?}");
    assert!(hub.is_closed());
    assert_eq!(hub.poll_transmit(), None, "nothing is sent after the close");

    let packets = decode_all(&out);
    let connacks: Vec<&ConnAck> =
        packets.iter().filter_map(|p| if let Packet::ConnAck(c) = p { Some(c) } else { None }).collect();
    assert!(connacks.len() <= 1, "{packets:?}");
    if let Some(first) = packets.first() {
        assert!(matches!(first, Packet::ConnAck(_)), "the first packet out is CONNACK: {packets:?}");
    }
    if let CloseReason::Refused(r) = &closed[0] {
        assert_eq!(packets, vec![Packet::ConnAck(ConnAck::new(r.code(), false))]);
    }
    let pubacks: Vec<u16> =
        packets.iter().filter_map(|p| if let Packet::PubAck(a) = p { Some(a.pkid) } else { None }).collect();
    for p in &pubacks {
        let out = pubacks.iter().filter(|x| *x == p).count();
        let done = released.iter().filter(|x| *x == p).count();
        assert!(out <= done + twin_gets, "PUBACK {p} sent {out} times, {done} writes finished");
    }
    assert!(pubacks.len() <= released.len() + twin_gets);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hub_session_survives_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..12)) {
        drive_hub(&chunks, true, &[]);
    }

    #[test]
    fn hub_session_survives_packet_soup_after_connect(
        packets in proptest::collection::vec(device_packet(), 0..12),
        split in 1usize..17,
        authenticate in any::<bool>(),
        ack_order in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = connect_bytes();
        for p in packets { bytes.extend(p); }
        let chunks: Vec<Vec<u8>> = bytes.chunks(split).map(<[u8]>::to_vec).collect();
        drive_hub(&chunks, authenticate, &ack_order);
    }

    /// Any CONNECT variable header: the answer is exactly what MQTT 3.1.1 §3.1.2 prescribes for the header, and
    /// otherwise nothing, a CONNACK 0x02/0x05, or an authentication request with nothing sent yet.
    #[test]
    fn connect_headers_get_the_answer_the_spec_gives(
        name in prop_oneof![Just("MQTT".to_owned()), Just("MQIsdp".to_owned()), "[A-Za-z]{0,6}"],
        level in prop_oneof![Just(4u8), Just(3u8), any::<u8>()],
        flags in any::<u8>(),
        client_id in prop_oneof![Just("d1".to_owned()), Just(String::new()), "[ -~]{0,8}"],
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        split in 1usize..9,
    ) {
        let mut vh = Vec::new();
        vh.extend_from_slice(&(name.len() as u16).to_be_bytes());
        vh.extend_from_slice(name.as_bytes());
        vh.extend_from_slice(&[level, flags, 0, 60]);
        vh.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        vh.extend_from_slice(client_id.as_bytes());
        vh.extend_from_slice(&tail);
        let mut frame = vec![0x10, vh.len() as u8];
        frame.extend(vh);
        let mut hub = HubSession::new(HubConfig::default(), Instant(0));
        for c in frame.chunks(split) {
            hub.handle_input(Instant(0), c);
        }
        let mut out = Vec::new();
        while let Some(b) = hub.poll_transmit() { out.extend_from_slice(&b); }
        let events: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
        let will = flags & 0x04 != 0;
        let expected: Option<&[u8]> = match (name.as_str(), level) {
            ("MQTT", 4) if flags & 0x01 != 0 => Some(b""),
            ("MQTT", 4) if !will && flags & 0x38 != 0 => Some(b""),
            ("MQTT", 4) if will && flags & 0x18 == 0x18 => Some(b""),
            ("MQTT", 4) if flags & 0xC0 == 0x40 => Some(b""),
            ("MQTT", 4) => None,
            ("MQTT", _) | ("MQIsdp", 3) => Some(b"\x20\x02\x00\x01"),
            _ => Some(b""),
        };
        match expected {
            Some(bytes) => {
                prop_assert_eq!(&out[..], bytes);
                prop_assert!(hub.is_closed());
            }
            None => {
                let refused = out == b"\x20\x02\x00\x02" || out == b"\x20\x02\x00\x05";
                let authenticating = out.is_empty() && matches!(events.first(), Some(HubEvent::Authenticate(_)));
                prop_assert!(refused || authenticating || (out.is_empty() && hub.is_closed()), "{:02x?} {:?}", out, events);
            }
        }
    }

    /// A device session fed arbitrary bytes and hub packets after CONNACK: an error leaves it disconnected with
    /// exactly one `ConnectionLost`, it acknowledges every QoS 1 publish of a live connection and never more,
    /// and nothing leaves after the connection is lost.
    #[test]
    fn device_session_survives_arbitrary_bytes(
        chunks in proptest::collection::vec(prop_oneof![proptest::collection::vec(any::<u8>(), 0..64), hub_packet()], 0..12),
    ) {
        let mut s = DeviceSession::new(DeviceConfig::new("h", DeviceIdentity::device("d1")));
        s.connect(Instant(0), ConnectOptions::default()).unwrap();
        let first = decode_all(&s.poll_transmit().unwrap());
        prop_assert!(matches!(first[..], [Packet::Connect(_)]));
        s.handle_input(Instant(1), &[0x20, 0x02, 0x00, 0x00]).unwrap();
        prop_assert!(s.is_connected());
        // The same bytes, framed on the side: how many QoS 1 publishes the hub sent.
        let mut mirror = Framer::new(1 << 20);
        let mut qos1_in = 0;
        let mut lost = 0;
        let mut out = Vec::new();
        for c in &chunks {
            let was_connected = s.is_connected();
            let r = s.handle_input(Instant(2), c);
            if was_connected {
                mirror.push(c);
                while let Ok(Some(p)) = mirror.next_packet() {
                    if matches!(&p, Packet::Publish(p) if p.qos == QoS::AtLeastOnce) { qos1_in += 1; }
                }
            }
            if r.is_err() {
                prop_assert!(s.is_disconnected());
            }
            while let Some(e) = s.poll_event() {
                if matches!(e, Event::ConnectionLost { .. }) { lost += 1; }
            }
            let sent = s.poll_transmit();
            if !s.is_connected() {
                // Bytes queued before the loss may still leave; nothing after it.
                prop_assert_eq!(s.poll_transmit(), None);
            }
            if let Some(b) = sent { out.extend_from_slice(&b); }
        }
        prop_assert_eq!(lost, usize::from(s.is_disconnected()));
        let pubacks = decode_all(&out).iter().filter(|p| matches!(p, Packet::PubAck(_))).count();
        prop_assert!(pubacks <= qos1_in, "{} PUBACKs for {} QoS 1 publishes", pubacks, qos1_in);
        if s.is_connected() {
            // auto_ack_c2d: every QoS 1 publish of a live connection is acknowledged.
            prop_assert_eq!(pubacks, qos1_in);
        }
        s.handle_timeout(Instant(1_000_000));
    }

    #[test]
    fn property_bag_parser(s in prop_oneof![any::<String>(), "[a-z%0-9A-F$.=&/!'()*#+: ]{0,80}"]) {
        if let Ok(bag) = PropertyBag::parse(&s) {
            // Whatever parses re-encodes to something that parses to the same bag.
            prop_assert_eq!(PropertyBag::parse(&bag.to_string()).unwrap(), bag);
        }
    }

    #[test]
    fn hub_topic_parser(s in prop_oneof![any::<String>(), "(devices/[a-z]{1,3}/messages/devicebound/|\\$iothub/(twin/res|methods/POST)/[a-z0-9]{0,4}/\\?)[a-z%0-9$.=&]{0,40}"]) {
        // Whatever parses re-encodes to a topic that parses to the same value.
        if let Ok(t) = HubTopic::parse(&s) {
            prop_assert_eq!(HubTopic::parse(&t.to_string()).unwrap(), t);
        }
    }

    /// Topics built from arbitrary values survive encode → decode on both sides.
    #[test]
    fn topics_round_trip(
        device in "[A-Za-z0-9.:_-]{1,12}",
        module in proptest::option::of("[A-Za-z0-9._-]{1,8}"),
        app in proptest::collection::vec(("[^\\x00$][^\\x00]{0,7}", proptest::option::of(any::<String>())), 0..4),
        rid in any::<String>(),
        method in "[A-Za-z0-9_]{1,10}",
        status in any::<u16>(),
        version in proptest::option::of(any::<u64>()),
    ) {
        let identity = DeviceIdentity { device_id: device.clone(), module_id: module };
        let mut properties = PropertyBag::new();
        properties.application = app;
        let rid = RequestId(rid);
        let hub_topics = [
            HubTopic::C2d { identity: DeviceIdentity::device(device), properties: properties.clone() },
            HubTopic::MethodRequest { name: method, rid: rid.clone() },
            HubTopic::TwinResponse { status, rid: rid.clone(), version },
            HubTopic::TwinDesired { version },
        ];
        for t in hub_topics {
            prop_assert_eq!(HubTopic::parse(&t.to_string()), Ok(t));
        }
        let device_topics = [
            DeviceTopic::Telemetry { identity: identity.clone(), properties },
            DeviceTopic::TwinGet { rid: rid.clone() },
            DeviceTopic::TwinPatchReported { rid: rid.clone() },
            DeviceTopic::MethodResponse { status, rid },
        ];
        for t in device_topics {
            prop_assert_eq!(DeviceTopic::parse(&t.to_string(), &identity), Ok(t));
        }
    }

    /// Telemetry through a device session against a hub that acknowledges in arbitrary order and drops the
    /// connection at arbitrary points: never more than `max_inflight` unacknowledged QoS 1 PUBLISHes on the wire,
    /// every message acknowledged exactly once in the end, and the first packet of each connection is CONNECT.
    #[test]
    fn device_in_flight_window_holds_and_nothing_is_lost(
        ops in proptest::collection::vec(0u8..4, 1..80),
        picks in proptest::collection::vec(any::<usize>(), 80),
        max_inflight in 1usize..6,
    ) {
        let mut cfg = DeviceConfig::new("h", DeviceIdentity::device("d1"));
        cfg.max_inflight = max_inflight;
        let mut s = DeviceSession::new(cfg);
        let mut now = 0u64;
        let mut on_wire: Vec<u16> = Vec::new();
        let mut sent_ids = BTreeSet::new();
        let mut acked = Vec::new();
        let reconnect = |s: &mut DeviceSession, now: u64, on_wire: &mut Vec<u16>| {
            s.connect(Instant(now), ConnectOptions::default()).unwrap();
            let out = decode_all(&s.poll_transmit().unwrap_or_default());
            assert!(matches!(out.first(), Some(Packet::Connect(_))), "CONNECT first: {out:?}");
            on_wire.clear();
            let mut ack = BytesMut::new();
            encode(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, true)), &mut ack).unwrap();
            s.handle_input(Instant(now), &ack).unwrap();
            for p in out.into_iter().skip(1) {
                if let Packet::Publish(p) = p { on_wire.push(p.pkid); }
            }
        };
        reconnect(&mut s, now, &mut on_wire);
        for (i, op) in ops.iter().enumerate() {
            now += 1;
            match op {
                0 | 1 => {
                    let id = s.send_telemetry(Instant(now), Telemetry::new(Bytes::from(format!("m{i}")))).unwrap();
                    sent_ids.insert(id);
                }
                2 if !on_wire.is_empty() && s.is_connected() => {
                    let pkid = on_wire.remove(picks[i] % on_wire.len());
                    let mut b = BytesMut::new();
                    encode(&Packet::PubAck(PubAck::new(pkid)), &mut b).unwrap();
                    s.handle_input(Instant(now), &b).unwrap();
                }
                2 => {}
                _ => {
                    s.handle_transport_closed(Instant(now), "cut");
                    reconnect(&mut s, now, &mut on_wire);
                }
            }
            while let Some(b) = s.poll_transmit() {
                for p in decode_all(&b) {
                    if let Packet::Publish(p) = p { on_wire.push(p.pkid); }
                }
            }
            prop_assert!(on_wire.len() <= max_inflight, "{} in flight, window {}", on_wire.len(), max_inflight);
            let unique: BTreeSet<u16> = on_wire.iter().copied().collect();
            prop_assert_eq!(unique.len(), on_wire.len(), "a packet id twice in flight");
            while let Some(e) = s.poll_event() {
                if let Event::TelemetryAcked { id, .. } = e { acked.push(id); }
            }
        }
        // Drain: acknowledge everything until the queue is empty.
        while s.unacked() > 0 {
            let pkid = on_wire.remove(0);
            let mut b = BytesMut::new();
            encode(&Packet::PubAck(PubAck::new(pkid)), &mut b).unwrap();
            s.handle_input(Instant(now), &b).unwrap();
            while let Some(b) = s.poll_transmit() {
                for p in decode_all(&b) {
                    if let Packet::Publish(p) = p { on_wire.push(p.pkid); }
                }
            }
            while let Some(e) = s.poll_event() {
                if let Event::TelemetryAcked { id, .. } = e { acked.push(id); }
            }
        }
        let acked_set: BTreeSet<_> = acked.iter().copied().collect();
        prop_assert_eq!(acked_set.len(), acked.len(), "acknowledged twice");
        prop_assert_eq!(acked_set, sent_ids);
    }

    #[test]
    fn connection_string_parser(s in prop_oneof![any::<String>(), "((HostName|DeviceId|ModuleId|SharedAccessKey|SharedAccessKeyName|SharedAccessSignature|GatewayHostName|x509|Foo)=[A-Za-z0-9+/= ;.]{0,20};?){0,6}"]) {
        if let Ok(cs) = ConnectionString::parse(&s) {
            prop_assert_eq!(ConnectionString::parse(&cs.to_string()).unwrap(), cs);
        }
    }

    #[test]
    fn sas_parser(s in prop_oneof![any::<String>(), "SharedAccessSignature ((sr|sig|se|skn|x)=[a-z0-9%]{0,12}&?){0,6}"]) {
        if let Ok(t) = SasToken::parse(&s) {
            prop_assert_eq!(SasToken::parse(&t.to_string()).unwrap(), t);
        }
    }
}
