//! Property-based fuzzing of every parser that sees untrusted input, and of both session state machines fed
//! arbitrary bytes. cargo-fuzz needs a nightly toolchain this project does not have, so proptest drives them:
//! a short run in `cargo xtask test` (HUBSIM_FUZZ_CASES, default 3000 per target), long runs with
//! `cargo xtask fuzz --minutes N`. A failure is shrunk and saved under `proptest-regressions/`, which turns it
//! into a regression test on every later run.

use bytes::BytesMut;
use hubsim_proto::device::{ConnectOptions, DeviceConfig, DeviceSession};
use hubsim_proto::hub::{HubConfig, HubEvent, HubSession};
use hubsim_proto::mqttbytes::v4::{Connect, Login, Packet, PubAck, Publish, Subscribe, SubscribeFilter};
use hubsim_proto::mqttbytes::QoS;
use hubsim_proto::packet::encode;
use hubsim_proto::property_bag::PropertyBag;
use hubsim_proto::sas::SasToken;
use hubsim_proto::topic::{DeviceIdentity, HubTopic};
use hubsim_proto::{ConnectionString, Instant};
use proptest::prelude::*;

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
                let mut pb = Publish::new(t, qos, p);
                pb.retain = r;
                pb.pkid = if q == 0 { 0 } else { 7 };
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

fn connect_bytes() -> Vec<u8> {
    let mut c = Connect::new("d1");
    c.login = Some(Login::new("h/d1/?api-version=2021-04-12", "SharedAccessSignature sr=h%2Fdevices%2Fd1&sig=x&se=1"));
    wire(Packet::Connect(c))
}

/// Feeds `chunks` to a hub session and checks its invariants: no panic, and once closed it stays closed with
/// exactly one `Closed` event.
fn drive_hub(chunks: &[Vec<u8>], authenticate: bool) {
    let mut hub = HubSession::new(HubConfig::default(), Instant(0));
    let mut closed = 0;
    let mut t = 0;
    for c in chunks {
        t += 10;
        hub.handle_input(Instant(t), c);
        while let Some(ev) = hub.poll_event() {
            match ev {
                HubEvent::Authenticate(_) if authenticate => hub.accept(Instant(t), false, vec![], None).unwrap(),
                HubEvent::Authenticate(_) => {
                    hub.refuse(hubsim_proto::mqttbytes::v4::ConnectReturnCode::NotAuthorized, "no").unwrap()
                }
                HubEvent::Telemetry { ack: Some(p), .. } => hub.ack_publish(p).unwrap(),
                HubEvent::Closed { .. } => closed += 1,
                _ => {}
            }
        }
        while hub.poll_transmit().is_some() {}
        hub.handle_timeout(Instant(t));
    }
    hub.handle_transport_closed("end of input");
    while let Some(ev) = hub.poll_event() {
        if matches!(ev, HubEvent::Closed { .. }) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "exactly one Closed event");
    assert!(hub.is_closed());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hub_session_survives_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..12)) {
        drive_hub(&chunks, true);
    }

    #[test]
    fn hub_session_survives_packet_soup_after_connect(
        packets in proptest::collection::vec(device_packet(), 0..12),
        split in 1usize..17,
        authenticate in any::<bool>(),
    ) {
        let mut bytes = connect_bytes();
        for p in packets { bytes.extend(p); }
        let chunks: Vec<Vec<u8>> = bytes.chunks(split).map(<[u8]>::to_vec).collect();
        drive_hub(&chunks, authenticate);
    }

    #[test]
    fn device_session_survives_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..12)) {
        let mut s = DeviceSession::new(DeviceConfig::new("h", DeviceIdentity::device("d1")));
        s.connect(Instant(0), ConnectOptions::default()).unwrap();
        let mut connack = vec![0x20, 0x02, 0x00, 0x00];
        for c in &chunks { connack.extend(c); }
        let _ = s.handle_input(Instant(1), &connack);
        while s.poll_event().is_some() {}
        while s.poll_transmit().is_some() {}
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
        let _ = HubTopic::parse(&s);
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
