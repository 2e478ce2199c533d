//! What the emulator writes to its log (its own test binary: it installs the global `tracing` subscriber): the
//! connection lines name the identity plainly (`device=pdev`, `device=pdev/pmod`), and a device that drops its
//! TLS connection is said to, without rustls's documentation URL.

use hubsim_proto::device::Event;
use hubsim_proto::mqttbytes::v4::{Connect, Login, Packet};
use hubsim_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn connection_lines_name_the_identity_plainly_and_a_dropped_tls_connection_is_said_in_words() {
    let sink = LogSink::default();
    let writer = sink.clone();
    // What `hubsim serve` logs by default (info), without colours.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let emu = Emu::start().await;
    let key = emu.device("pdev").await;
    let module = emu.hub().create_module("pdev", "pmod").await.unwrap();
    let mut live = emu.hub().connlog.subscribe();

    // The device connects over TLS, then drops the TCP connection: no DISCONNECT, no TLS close_notify.
    let mut tls = tls_stream(&emu, emu.r().mqtt_addr).await;
    let mut c = Connect::new("pdev");
    c.login = Some(Login::new("localhost/pdev/?api-version=2021-04-12", token(&key, "pdev", 600).as_str()));
    tls.write_all(&wire(Packet::Connect(c))).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut connack)).await.unwrap().unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    drop(tls);
    let rec = wait_live(&mut live, |r| r.operation == "deviceDisconnect").await;
    assert_eq!(
        rec.description,
        "the connection closed without DISCONNECT (the peer closed the TLS connection without close_notify)"
    );

    // The module connects.
    let cs = hubsim_proto::ConnectionString::parse(&emu.hub().connection_string(&module)).unwrap();
    let token = cs.password(now_unix() + 600).unwrap().to_string();
    let hubsim_proto::conn_str::Credential::Key(module_key) = cs.credential else { panic!("a key") };
    let cfg = hubsim_proto::DeviceConfig::new("localhost", hubsim_proto::DeviceIdentity::module("pdev", "pmod"));
    let mut m = TestDevice::with_config(cfg, module_key, Via::Mqtt);
    assert!(matches!(m.connect_with(&emu, token, None).await, Event::Connected { .. }));
    // The record is sent live after its log line is written.
    wait_live(&mut live, |r| r.operation == "deviceConnect" && r.module_id.is_some()).await;

    let log = sink.text();
    let line = |needle: &str| log.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in:\n{log}"));
    assert!(line("op=deviceConnect").contains("device=pdev op=deviceConnect"), "{log}");
    assert!(line("op=deviceDisconnect").contains("device=pdev op=deviceDisconnect"), "{log}");
    assert!(log.contains("device=pdev/pmod op=deviceConnect"), "{log}");
    assert!(!log.contains("Some("), "no Rust Debug of an Option: {log}");
    assert!(!log.contains("https://"), "no documentation URL: {log}");
}
