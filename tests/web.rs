//! wasm-bindgen tests of the app in headless Chromium, run by `cargo xtask test`, which starts an emulator on
//! loopback and passes its addresses at build time (HUBSIM_TEST_HTTP, HUBSIM_TEST_WS). The WebSocket tests go
//! through the browser's real `WebSocket` with binary frames to the real emulator.
#![cfg(target_arch = "wasm32")]

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use gloo::timers::future::TimeoutFuture;
use hubsim_proto::device::{DeviceConfig, Event, Telemetry};
use hubsim_proto::property_bag::SystemProperty;
use hubsim_proto::sas::{DeviceKey, ResourceUri, SasToken};
use hubsim_proto::topic::{DeviceIdentity, TopicFilter};
use hubsim_web::controller::{plan, sas_token, topic_preview};
use hubsim_web::driver::{Driver, DriverEvent};
use hubsim_web::settings::Settings;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn http() -> &'static str {
    match option_env!("HUBSIM_TEST_HTTP") {
        Some(v) => v,
        None => panic!("build with HUBSIM_TEST_HTTP set (cargo xtask test does)"),
    }
}
fn ws() -> &'static str {
    match option_env!("HUBSIM_TEST_WS") {
        Some(v) => v,
        None => panic!("build with HUBSIM_TEST_WS set (cargo xtask test does)"),
    }
}

async fn api(method: &str, path: &str, body: Option<String>) -> String {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let h = web_sys::Headers::new().unwrap();
    // The service API needs a policy token; `cargo xtask test` signs one with `hubsim sas`.
    h.set("authorization", option_env!("HUBSIM_TEST_TOKEN").expect("build with HUBSIM_TEST_TOKEN set")).unwrap();
    if let Some(b) = body {
        init.set_body(&b.into());
        h.set("content-type", "application/json").unwrap();
    }
    init.set_headers(&h);
    let w = web_sys::window().unwrap();
    let resp: web_sys::Response = JsFuture::from(w.fetch_with_str_and_init(&format!("{}{path}", http()), &init))
        .await
        .unwrap()
        .dyn_into()
        .unwrap();
    assert!(resp.ok(), "{method} {path}: HTTP {}", resp.status());
    JsFuture::from(resp.text().unwrap()).await.unwrap().as_string().unwrap()
}

fn field(json: &str, path: &[&str]) -> String {
    let mut v = js_sys::JSON::parse(json).unwrap();
    for p in path {
        v = js_sys::Reflect::get(&v, &(*p).into()).unwrap();
    }
    v.as_string().unwrap_or_default()
}

/// A driver whose events arrive on a channel.
fn driver(id: &str) -> (Driver, mpsc::UnboundedReceiver<DriverEvent>) {
    let (tx, rx) = mpsc::unbounded();
    let d = Driver::new(DeviceConfig::new("localhost", DeviceIdentity::device(id)), move |e| {
        let _ = tx.unbounded_send(e);
    });
    (d, rx)
}

/// The next session event matching `pred`, failing after 10 s.
async fn expect(rx: &mut mpsc::UnboundedReceiver<DriverEvent>, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let mut timeout = TimeoutFuture::new(10_000).fuse();
    loop {
        futures::select! {
            e = rx.next() => match e {
                Some(DriverEvent::Session(e)) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("driver dropped while waiting for {what}"),
            },
            _ = timeout => panic!("timed out waiting for {what}"),
        }
    }
}

async fn new_device(id: &str) -> DeviceKey {
    let d = api("PUT", &format!("/devices/{id}"), Some("{}".into())).await;
    DeviceKey::from_base64(&field(&d, &["authentication", "symmetricKey", "primaryKey"])).unwrap()
}

fn token(key: &DeviceKey, id: &str) -> String {
    let r = ResourceUri::Device { host: "localhost".into(), device_id: id.into() };
    SasToken::sign(key, &r, (js_sys::Date::now() / 1000.0) as u64 + 600, None).to_string()
}

/// A fresh device, connected through a driver over the browser's WebSocket.
async fn connected(prefix: &str) -> (String, Driver, mpsc::UnboundedReceiver<DriverEvent>) {
    let id = unique(prefix);
    let key = new_device(&id).await;
    let (d, mut rx) = driver(&id);
    d.connect(ws(), hubsim_proto::device::ConnectOptions { password: Some(token(&key, &id)), will: None }).unwrap();
    expect(&mut rx, "CONNACK", |e| matches!(e, Event::Connected { .. })).await;
    (id, d, rx)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", js_sys::Date::now() as u64)
}

#[wasm_bindgen_test]
fn sas_token_is_computed_in_the_browser() {
    let key = DeviceKey::from_base64_lenient("key").unwrap();
    let t = SasToken::sign(&key, &ResourceUri::Device { host: "host".into(), device_id: "device".into() }, 12345, None);
    assert_eq!(t.to_string(), "SharedAccessSignature sr=host%2Fdevices%2Fdevice&sig=wM3XiP6gD960IxP7J5WHqnxQHEcWC6YaQCtoMT%2BkKHc%3D&se=12345");
}

#[wasm_bindgen_test]
fn the_form_is_validated_field_by_field_before_connecting() {
    let mut s = Settings::default();
    let errors = plan(&s).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
    assert_eq!(fields, vec!["host", "device_id", "key"]);
    s.connection_string = "HostName=h;DeviceId=d;SharedAccessKey=a2V5IGZvciB0ZXN0cw==;GatewayHostName=gw.local".into();
    let p = plan(&s).unwrap();
    assert_eq!(p.url, "wss://gw.local/$iothub/websocket?iothub-no-client-cert=true");
    s.endpoint = "http://x".into();
    assert_eq!(plan(&s).unwrap_err()[0].field, "endpoint");
    s.endpoint = String::new();
    let (token, expiry) = sas_token(&s).unwrap();
    assert!(token.starts_with("SharedAccessSignature sr=h%2Fdevices%2Fd&sig="), "{token}");
    assert!(expiry > 1_700_000_000);
    s.properties = vec![("a b".into(), "x/y".into())];
    s.auto_message_id = false;
    assert_eq!(topic_preview(&s), "devices/d/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&a%20b=x%2Fy");
}

#[wasm_bindgen_test]
fn settings_round_trip_and_share_links_never_carry_the_key() {
    let mut s = Settings {
        connection_string: "HostName=h.net;DeviceId=dev-1;SharedAccessKey=c2VjcmV0".into(),
        properties: vec![("k&=".into(), "v%#".into())],
        remember_key: false,
        ..Default::default()
    };
    let shared = s.encode(false);
    assert!(!shared.contains("c2VjcmV0") && !shared.contains("SharedAccessKey"), "{shared}");
    let back = Settings::decode(&shared);
    assert_eq!((back.host.as_str(), back.device_id.as_str()), ("h.net", "dev-1"));
    assert_eq!(back.properties, s.properties);
    assert_eq!(back.connection_string, "");
    s.remember_key = true;
    assert_eq!(Settings::decode(&s.encode(true)).connection_string, s.connection_string);
}

#[wasm_bindgen_test]
async fn telemetry_over_the_browser_websocket_reaches_the_emulator() {
    let (id, d, mut rx) = connected("wasm-tel").await;
    let mut m = Telemetry::new(&b"{\"from\":\"wasm\"}"[..]);
    m.properties.set_system(SystemProperty::ContentType, "application/json");
    m.properties.push("browser", "chromium");
    d.with_session(|s, now| s.send_telemetry(now, m)).unwrap();
    expect(&mut rx, "PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    let events = api("GET", &format!("/events?device={id}"), None).await;
    assert!(events.contains("{\\\"from\\\":\\\"wasm\\\"}"), "{events}");
    assert!(events.contains("\"browser\":\"chromium\""), "{events}");
    d.disconnect();
}

#[wasm_bindgen_test]
async fn c2d_with_properties_arrives_through_the_browser_websocket() {
    let (id, d, mut rx) = connected("wasm-c2d").await;
    d.with_session(|s, now| s.subscribe(now, &[TopicFilter::C2d])).unwrap();
    expect(&mut rx, "SUBACK", |e| matches!(e, Event::Subscribed { .. })).await;
    api(
        "POST",
        &format!("/devices/{id}/messages/devicebound"),
        Some(r#"{"body":"hi from the cloud","messageId":"w-1","properties":{"color":"red"}}"#.into()),
    )
    .await;
    let Event::C2d(m) = expect(&mut rx, "C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(&m.payload[..], b"hi from the cloud");
    assert_eq!(m.properties.system(&SystemProperty::MessageId), Some("w-1"));
    assert_eq!(m.properties.get("color"), Some(Some("red")));
    d.disconnect();
}

#[wasm_bindgen_test]
async fn a_refused_connection_is_reported_with_its_meaning() {
    let id = unique("wasm-bad");
    new_device(&id).await;
    let (d, mut rx) = driver(&id);
    let wrong = DeviceKey::from_base64("d3Jvbmcga2V5").unwrap();
    d.connect(ws(), hubsim_proto::device::ConnectOptions { password: Some(token(&wrong, &id)), will: None }).unwrap();
    let Event::ConnectionLost { reason, .. } =
        expect(&mut rx, "refusal", |e| matches!(e, Event::ConnectionLost { .. })).await
    else {
        unreachable!()
    };
    assert!(reason.to_string().contains("not authorized"), "{reason}");
}

#[wasm_bindgen_test]
async fn the_app_mounts_with_its_accessible_controls() {
    let doc = web_sys::window().unwrap().document().unwrap();
    let root = doc.create_element("div").unwrap();
    doc.body().unwrap().append_child(&root).unwrap();
    yew::Renderer::<hubsim_web::App>::with_root(root.clone()).render();
    // Yew renders asynchronously: wait (bounded) until the status element exists.
    for _ in 0..200 {
        if root.query_selector("[role=status]").unwrap().is_some() {
            break;
        }
        TimeoutFuture::new(10).await;
    }
    let text = root.text_content().unwrap_or_default();
    for label in [
        "Connection string",
        "Connect",
        "Disconnect",
        "Payload",
        "Send",
        "Add property",
        "Content type",
        "Content encoding",
        "Message ID",
        "Correlation ID",
        "QoS",
        "Cloud-to-device messages",
    ] {
        assert!(text.contains(label), "missing {label}");
    }
    assert!(root.query_selector("[role=status]").unwrap().unwrap().text_content().unwrap().contains("Disconnected"));
    assert!(root.query_selector("[aria-label='Cloud-to-device messages']").unwrap().is_some());
}
