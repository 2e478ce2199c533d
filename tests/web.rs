//! wasm-bindgen tests of the app in headless Chromium, run by `cargo xtask test`, which starts an emulator on
//! loopback and passes its addresses at build time (HUBSIM_TEST_HTTP, HUBSIM_TEST_WS). The WebSocket tests go
//! through the browser's real `WebSocket` with binary frames to the real emulator.
#![cfg(target_arch = "wasm32")]

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use gloo::timers::future::TimeoutFuture;
use hubsim_proto::device::{DeviceConfig, DeviceSession, Event, Telemetry};
use hubsim_proto::property_bag::SystemProperty;
use hubsim_proto::sas::{DeviceKey, ResourceUri, SasToken};
use hubsim_proto::topic::{DeviceIdentity, TopicFilter};
use hubsim_web::driver::{Driver, DriverEvent};
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

fn token_env() -> &'static str {
    match option_env!("HUBSIM_TEST_TOKEN") {
        Some(v) => v,
        None => panic!("build with HUBSIM_TEST_TOKEN set (cargo xtask test does)"),
    }
}

async fn api(method: &str, path: &str, body: Option<String>) -> String {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let h = web_sys::Headers::new().unwrap();
    // The service API needs a policy token; `cargo xtask test` signs one with `hubsim sas`.
    h.set("authorization", token_env()).unwrap();
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
    let d = Driver::new(DeviceSession::new(DeviceConfig::new("localhost", DeviceIdentity::device(id))), move |e| {
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
fn the_clock_time_is_the_local_date_and_time_with_its_offset() {
    let before = js_sys::Date::new_0();
    let stamp = hubsim_web::util::clock_time();
    // `YYYY-MM-DDTHH:MM:SS±HH:MM`, read back by the browser as the same instant (to the second).
    let b = stamp.as_bytes();
    assert_eq!(b.len(), 25, "{stamp}");
    for (i, c) in b.iter().enumerate() {
        let want_digit = ![4, 7, 10, 13, 16, 19, 22].contains(&i);
        assert_eq!(c.is_ascii_digit(), want_digit, "{stamp} at {i}");
    }
    let parsed = js_sys::Date::parse(&stamp);
    let now_s = (before.get_time() / 1000.0).floor();
    assert!((parsed / 1000.0 - now_s).abs() <= 1.0, "{stamp} is {parsed}, now {}", before.get_time());
    // The time of day shown is the local time of that instant.
    let at = js_sys::Date::new(&parsed.into());
    let hms = format!("{:02}:{:02}:{:02}", at.get_hours(), at.get_minutes(), at.get_seconds());
    assert_eq!(hubsim_web::util::time_of_day(&stamp), hms);
}

#[wasm_bindgen_test]
fn sas_token_is_computed_in_the_browser() {
    let key = DeviceKey::from_base64_lenient("key").unwrap();
    let t = SasToken::sign(&key, &ResourceUri::Device { host: "host".into(), device_id: "device".into() }, 12345, None);
    assert_eq!(t.to_string(), "SharedAccessSignature sr=host%2Fdevices%2Fdevice&sig=wM3XiP6gD960IxP7J5WHqnxQHEcWC6YaQCtoMT%2BkKHc%3D&se=12345");
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
async fn a_null_c2d_property_stays_apart_from_an_empty_one_through_the_browser_websocket() {
    let (id, d, mut rx) = connected("wasm-null").await;
    d.with_session(|s, now| s.subscribe(now, &[TopicFilter::C2d])).unwrap();
    expect(&mut rx, "SUBACK", |e| matches!(e, Event::Subscribed { .. })).await;
    api(
        "POST",
        &format!("/devices/{id}/messages/devicebound"),
        Some(r#"{"body":"n","properties":{"p1":null,"p2":"","p3":"a&b"}}"#.into()),
    )
    .await;
    let Event::C2d(m) = expect(&mut rx, "C2D", |e| matches!(e, Event::C2d(_))).await else { unreachable!() };
    assert_eq!(m.properties.get("p1"), Some(None));
    assert_eq!(m.properties.get("p2"), Some(Some("")));
    assert_eq!(m.properties.get("p3"), Some(Some("a&b")));
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

/// Resolves once `selector` matches inside `root`: woken by the DOM's own mutation records, not by polling.
async fn rendered(root: &web_sys::Element, selector: &str) -> web_sys::Element {
    if let Some(e) = root.query_selector(selector).unwrap() {
        return e;
    }
    let (tx, mut rx) = mpsc::unbounded::<()>();
    let on_change = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
        let _ = tx.unbounded_send(());
    });
    let observer = web_sys::MutationObserver::new(on_change.as_ref().unchecked_ref()).unwrap();
    let init = web_sys::MutationObserverInit::new();
    init.set_child_list(true);
    init.set_subtree(true);
    init.set_character_data(true);
    observer.observe_with_options(root, &init).unwrap();
    let mut timeout = TimeoutFuture::new(10_000).fuse();
    let found = loop {
        if let Some(e) = root.query_selector(selector).unwrap() {
            break e;
        }
        futures::select! {
            _ = rx.next() => {}
            _ = timeout => panic!("{selector} was not rendered within 10 s"),
        }
    };
    observer.disconnect();
    found
}

#[wasm_bindgen_test]
async fn the_app_mounts_with_its_accessible_controls() {
    let doc = web_sys::window().unwrap().document().unwrap();
    let root = doc.create_element("div").unwrap();
    doc.body().unwrap().append_child(&root).unwrap();
    yew::Renderer::<hubsim_web::App>::with_root(root.clone()).render();
    let status = rendered(&root, "[role=status]").await;
    // The connect form is mounted first, the other panels once that frame is painted (the activity log is last).
    rendered(&root, "[aria-labelledby=log-h]").await;
    // Exact names: "Connect" must be a button of its own, not a part of "Connection string".
    let texts = |selector: &str| -> Vec<String> {
        let list = root.query_selector_all(selector).unwrap();
        (0..list.length())
            .filter_map(|i| list.item(i))
            .map(|n| {
                // A label's own text is its first text node (the control it wraps follows).
                let own = n.first_child().filter(|c| c.node_type() == web_sys::Node::TEXT_NODE);
                own.and_then(|c| c.text_content()).or_else(|| n.text_content()).unwrap_or_default().trim().to_owned()
            })
            .collect()
    };
    let buttons = texts("button");
    for name in ["Connect", "Disconnect", "Send", "Add property", "Share link", "Generate SAS token"] {
        assert!(buttons.iter().any(|b| b == name), "no button named exactly {name:?} in {buttons:?}");
    }
    let labels = texts("label");
    for name in [
        "Connection string",
        "Payload",
        "Content type",
        "Content encoding",
        "Message ID",
        "Correlation ID",
        "QoS",
        "Token lifetime (s)",
    ] {
        assert!(labels.iter().any(|l| l == name), "no label named exactly {name:?} in {labels:?}");
    }
    assert_eq!(status.text_content().unwrap().trim(), "Disconnected");
    assert!(root.query_selector("[aria-label='Cloud-to-device messages']").unwrap().is_some());
    // A <pre> cannot be named with aria-label (axe: aria-prohibited-attr); the twin panels use headings.
    assert!(root.query_selector("pre[aria-label], code[aria-label], span[aria-label]").unwrap().is_none());
}
