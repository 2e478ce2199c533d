//! Listener bounds (issue 8 D): half-sent HTTP requests and TLS-only connections are closed at the header
//! deadline, and connections past a listener's cap are closed at once.

use hubsim_testkit::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the peer closes `s` (read returns 0 or fails), failing after `limit`.
async fn closed_within(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn half_sent_requests_and_silent_tls_connections_are_closed_at_the_deadline() {
    let emu = Emu::start_with(|c| {
        c.limits.http_header_timeout = Duration::from_millis(500);
        c.limits.http_idle_timeout = Duration::from_millis(700);
    })
    .await;
    // A connection that never sends a byte (the idle deadline), over plain HTTP too.
    let mut mute = TcpStream::connect(emu.r().http_addr).await.unwrap();
    let mut half = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(emu.r().http_addr).await.unwrap();
        s.write_all(b"GET /devices HTTP/1.1\r\nhost: localhost\r\nx-slow: ").await.unwrap();
        half.push(s);
    }
    let mut silent = tls_stream(&emu, emu.r().ws_addr).await;
    for s in &mut half {
        assert!(closed_within(s, Duration::from_secs(5)).await, "a half-sent request was kept open");
    }
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "a TLS-only WSS connection was kept open");
    assert!(closed_within(&mut mute, Duration::from_secs(5)).await, "a mute HTTP connection was kept open");
    // The service still answers.
    assert_eq!(http_raw(emu.r().http_addr, "GET", "/health", &[("host", "localhost")], "").await.status, 200);
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_the_rest_keep_working() {
    let emu = Emu::start_with(|c| c.limits.per_listener = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(emu.r().mqtt_addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(emu.r().mqtt_addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await, "the 4th connection was admitted");
    drop(held);
    // Places are freed when connections close: a device connects again.
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    let mut connected = false;
    for _ in 0..50 {
        // The hub frees a place when it notices the close; retry until it has (bounded).
        if let hubsim_proto::device::Event::Connected { .. } =
            d.connect_with(&emu, token(&d.key, "d1", 600), None).await
        {
            connected = true;
            break;
        }
    }
    assert!(connected);
}

#[tokio::test]
async fn a_device_that_stops_reading_cannot_wedge_its_connection() {
    use hubsim_proto::mqttbytes::v4::{Connect, Login, Packet, Subscribe};
    use hubsim_proto::mqttbytes::QoS;
    let emu = Emu::start_with(|c| c.write_timeout = Duration::from_millis(500)).await;
    let key = emu.device("d1").await;
    // A raw device with a 4 KB receive window: CONNECT, subscribe to desired properties, then read nothing.
    let mut s = tls_stream_small_window(&emu, emu.r().mqtt_addr).await;
    let mut c = Connect::new("d1");
    c.keep_alive = 4;
    c.login = Some(Login::new("localhost/d1/?api-version=2021-04-12", &token(&key, "d1", 600)));
    s.write_all(&wire(Packet::Connect(c))).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let sub = Subscribe::new("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce);
    s.write_all(&wire(Packet::Subscribe(sub))).await.unwrap();
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback[0], 0x90);
    let mut live = emu.hub().connlog.subscribe();
    // The service keeps pushing desired properties (21 KB each) until the connection gives way: by a write that
    // times out, or by a command queue that is full. Before the fix the task blocked in its write forever, and
    // keep-alive, disable, delete and replacement could no longer close it.
    let big = "x".repeat(3_000);
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut i = 0u64;
        while emu.hub().is_connected("d1") {
            let patch = serde_json::json!({"a": &big, "b": &big, "c": &big, "d": &big, "e": &big, "f": &big, "g": &big, "n": i});
            emu.hub().patch_desired("d1", patch).await.unwrap();
            i += 1;
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection of a device that stopped reading stayed open");
    let rec = wait_live(&mut live, |r| r.operation == "deviceDisconnect").await;
    assert!(rec.description.contains("not reading"), "closed for the right reason: {}", rec.description);
    // A new connection for the device is accepted at once.
    let mut again = TestDevice::new("d1", key, Via::Ws);
    again.connect(&emu).await;
    drop(s);
}

/// An `/events/stream` listener with a 4 KB receive window that has read the response head and reads nothing more.
async fn stuck_event_listener(emu: &Emu) -> tokio::net::TcpStream {
    let owner = emu.token("iothubowner");
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut sse = sock.connect(emu.r().http_addr).await.unwrap();
    let req = format!("GET /events/stream HTTP/1.1\r\nhost: localhost\r\nauthorization: {owner}\r\n\r\n");
    sse.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    sse.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    sse
}

#[tokio::test]
async fn a_stuck_event_stream_reader_holds_up_no_device_and_is_closed_once_quiet() {
    use hubsim_proto::device::{Event, Telemetry};
    let emu = Emu::start_with(|c| c.limits.http_idle_timeout = Duration::from_millis(700)).await;
    let key = emu.device("loud").await;
    // A subscriber with a 4 KB receive window that reads the response head and then nothing.
    let mut sse = stuck_event_listener(&emu).await;
    // A device floods telemetry; every message is still acknowledged while the subscriber is stuck.
    let mut d = TestDevice::new("loud", key, Via::Mqtt);
    d.connect(&emu).await;
    for i in 0..40u8 {
        d.send(Telemetry::new(vec![b'a' + i % 26; 100_000])).await;
        d.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    }
    // Nothing moves on a stream whose window is full (or that has nothing to send): the idle watchdog closes it.
    assert!(closed_within(&mut sse, Duration::from_secs(10)).await, "a stuck event-stream reader was kept");
}

#[tokio::test]
async fn a_slow_event_stream_listener_makes_the_hub_hold_at_most_the_byte_bound_and_is_told_it_lagged() {
    use hubsim_hub::hub::LIVE_EVENTS_MAX_BYTES;
    use hubsim_proto::device::{Event, Telemetry};
    let emu = Emu::start().await;
    let key = emu.device("loud").await;
    // A listener with a 4 KB receive window that reads the response head, then nothing until the flood is over.
    let mut sse = stuck_event_listener(&emu).await;
    // 100 messages of 100 KB: some 20 MB of records (text and bytes), well past the 4 096-record bound's reach
    // in bytes. The hub never holds more than the byte bound for the listener.
    let mut d = TestDevice::new("loud", key, Via::Mqtt);
    d.connect(&emu).await;
    let mut most = 0;
    for i in 0..100u8 {
        d.send(Telemetry::new(vec![b'a' + i % 26; 100_000])).await;
        d.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
        let (records, bytes) = emu.hub().events.held();
        assert!(bytes <= LIVE_EVENTS_MAX_BYTES, "{records} records of {bytes} bytes held for a slow listener");
        most = most.max(bytes);
    }
    assert!(most > LIVE_EVENTS_MAX_BYTES / 2, "the listener was not slow: at most {most} bytes were held");
    // Reading on, the listener is told how many records it missed.
    let told = tokio::time::timeout(Duration::from_secs(20), async {
        let (mut seen, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
        loop {
            let n = sse.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended");
            seen.extend_from_slice(&buf[..n]);
            match seen.windows(14).position(|w| w == b"event: lagged\n") {
                Some(at) => {
                    let rest = String::from_utf8_lossy(&seen[at + 14..]).into_owned();
                    if let Some((line, _)) = rest.split_once('\n') {
                        return line
                            .strip_prefix("data: ")
                            .expect("the count of missed records")
                            .parse::<u64>()
                            .unwrap();
                    }
                }
                // Only the tail can still hold a marker that has not arrived whole.
                None if seen.len() > 64 => drop(seen.drain(..seen.len() - 64)),
                None => {}
            }
        }
    })
    .await
    .expect("no lagged event");
    assert!(told > 0);
}

#[tokio::test]
async fn telemetry_flows_with_the_hub_wide_budget_taken_and_every_byte_is_given_back() {
    use hubsim_hub::hub::TELEMETRY_IN_FLIGHT_BYTES;
    use hubsim_proto::device::{Event, Telemetry};
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let budget = emu.hub().telemetry_budget.clone();
    // Something else holds the whole hub-wide budget of telemetry in flight: a connection owes its share for
    // what it read and reads on only once that is stored, so it is slowed, never wedged.
    let taken = budget.clone().acquire_many_owned(TELEMETRY_IN_FLIGHT_BYTES as u32).await.unwrap();
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    for i in 0..20 {
        d.send(Telemetry::new(format!("owed {i}").into_bytes())).await;
    }
    let mut acked = 0;
    while acked < 20 {
        d.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
        acked += 1;
    }
    assert_eq!(emu.wait_events("d1", 20).await[19].body.as_deref(), Some("owed 19"));
    assert_eq!(budget.available_permits(), 0, "nothing was taken while the budget was held");
    drop(taken);
    for i in 0..50 {
        d.send(Telemetry::new(format!("{i}").into_bytes())).await;
    }
    emu.wait_events("d1", 70).await;
    // Every byte taken is given back once the writes are stored and the device has left.
    drop(d);
    emu.wait_log(|r| r.operation == "deviceDisconnect").await;
    tokio::time::timeout(WAIT, async {
        let mut rx = emu.hub().connlog.subscribe();
        while budget.available_permits() < TELEMETRY_IN_FLIGHT_BYTES {
            // The task gives its share back as its writes finish; wake on the hub's next record or soon after.
            let _ = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await;
        }
    })
    .await
    .expect("the whole budget is back");
}

#[tokio::test]
async fn connections_waiting_to_authenticate_are_bounded_and_the_others_wait_for_a_place() {
    let emu = Emu::start_with(|c| {
        c.limits.unauthenticated = 2;
        c.limits.evict_unauthenticated_after = Duration::from_secs(60);
    })
    .await;
    // Two TLS connections that never send their CONNECT hold both places (taken before the TLS handshake).
    let mut first = tls_stream(&emu, emu.r().mqtt_addr).await;
    let _second = tls_stream(&emu, emu.r().mqtt_addr).await;
    // A device over the TLS WebSocket waits for a place: its WebSocket handshake is not answered meanwhile.
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Ws);
    let endpoint = Addrs { mqtt: emu.r().mqtt_addr, ws: emu.r().ws_addr, ca: emu.ca() };
    let mut waiting = tokio::spawn(async move {
        let event = d.connect_with(&endpoint, token(&d.key, "d1", 600), None).await;
        (matches!(event, hubsim_proto::device::Event::Connected { .. }), d)
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut waiting).await.is_err(),
        "a third connection was served while two unauthenticated ones held every place"
    );
    // A place is freed: the device gets it and connects.
    first.shutdown().await.unwrap();
    drop(first);
    let (connected, _d) = tokio::time::timeout(Duration::from_secs(8), waiting).await.expect("still waiting").unwrap();
    assert!(connected);
    // Once authenticated it gave its place back: a new connection's TLS handshake completes at once.
    let fresh = tokio::time::timeout(Duration::from_secs(2), tls_stream(&emu, emu.r().mqtt_addr)).await;
    assert!(fresh.is_ok(), "the authenticated device kept its place");
}

#[tokio::test]
async fn a_connection_that_holds_its_place_without_authenticating_gives_it_to_a_newcomer() {
    let emu = Emu::start_with(|c| {
        c.limits.unauthenticated = 2;
        c.limits.evict_unauthenticated_after = Duration::from_millis(300);
    })
    .await;
    // Two TLS connections that never send their CONNECT hold both places, the first one longest.
    let mut oldest = tls_stream(&emu, emu.r().mqtt_addr).await;
    let mut second = tls_stream(&emu, emu.r().mqtt_addr).await;
    // A device arriving now takes the longest-held place once it has been held 300 ms, and connects.
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    let event = tokio::time::timeout(Duration::from_secs(5), d.connect_with(&emu, token(&key, "d1", 600), None))
        .await
        .expect("the newcomer got no place");
    assert!(matches!(event, hubsim_proto::device::Event::Connected { .. }), "{event:?}");
    assert!(closed_within(&mut oldest, Duration::from_secs(2)).await, "the longest-held place was not taken");
    // One newcomer takes one place: the other silent connection keeps its own (a free place is left).
    assert!(!closed_within(&mut second, Duration::from_millis(500)).await, "a second place was taken for one newcomer");
    // And over WebSocket: a newcomer takes the place of the silent TLS connection that now holds one longest.
    let key2 = emu.device("d2").await;
    let mut fill = tls_stream(&emu, emu.r().mqtt_addr).await;
    let mut w = TestDevice::new("d2", key2.clone(), Via::Ws);
    let event = tokio::time::timeout(Duration::from_secs(5), w.connect_with(&emu, token(&key2, "d2", 600), None))
        .await
        .expect("the WebSocket newcomer got no place");
    assert!(matches!(event, hubsim_proto::device::Event::Connected { .. }), "{event:?}");
    assert!(closed_within(&mut second, Duration::from_secs(2)).await, "the longest-held place was not taken");
    assert!(!closed_within(&mut fill, Duration::from_millis(300)).await, "the younger place was taken");
}

#[tokio::test]
async fn sockets_opened_and_left_silent_take_no_place() {
    let emu = Emu::start_with(|c| {
        c.limits.unauthenticated = 1;
        c.limits.evict_unauthenticated_after = Duration::from_secs(60);
    })
    .await;
    // Plain TCP connections that never send a byte (not even a TLS ClientHello).
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(emu.r().mqtt_addr).await.unwrap());
    }
    // The one place is still free: a device connects at once.
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    let event = tokio::time::timeout(Duration::from_secs(3), d.connect_with(&emu, token(&key, "d1", 600), None))
        .await
        .expect("a silent socket held the place");
    assert!(matches!(event, hubsim_proto::device::Event::Connected { .. }), "{event:?}");
    drop(silent);
}

#[tokio::test]
async fn live_streams_are_bounded_and_a_closed_one_gives_its_place_back() {
    let emu = Emu::start().await;
    let mut open = Vec::new();
    for _ in 0..hubsim_hub::api::MAX_LIVE_STREAMS {
        open.push(stuck_event_listener(&emu).await);
    }
    let owner = emu.token("iothubowner");
    let h = [("host", "localhost"), ("authorization", owner.as_str())];
    for path in ["/events/stream", "/connections/stream"] {
        let a = http_raw(emu.r().http_addr, "GET", path, &h, "").await;
        assert_eq!(a.status, 503, "{path}: {}", a.body);
        assert!(a.body.contains("live streams are open"), "{}", a.body);
    }
    // The rest of the API is served meanwhile, and a stream that closes gives its place back.
    assert_eq!(http_raw(emu.r().http_addr, "GET", "/devices", &h, "").await.status, 200);
    drop(open.pop());
    let back = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let owner = emu.token("iothubowner");
            let mut s = TcpStream::connect(emu.r().http_addr).await.unwrap();
            let req = format!("GET /connections/stream HTTP/1.1\r\nhost: localhost\r\nauthorization: {owner}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.unwrap();
            if &head == b"HTTP/1.1 200" {
                return s;
            }
        }
    })
    .await;
    assert!(back.is_ok(), "the closed stream's place did not come back");
}

/// The emulator's addresses, owned (for a task that outlives the borrow of the emulator).
struct Addrs {
    mqtt: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    ca: std::path::PathBuf,
}

impl Endpoint for Addrs {
    fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.mqtt
    }
    fn ws_addr(&self) -> std::net::SocketAddr {
        self.ws
    }
    fn ca_path(&self) -> std::path::PathBuf {
        self.ca.clone()
    }
}
