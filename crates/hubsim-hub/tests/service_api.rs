//! The service API's gate (issue 8 B): shared access policies, Host and Origin checks, CORS and framing
//! headers, over real sockets. Each case was reproduced as an attack on the earlier, open API.

use hubsim_proto::device::Event;
use hubsim_proto::sas::{ResourceUri, SasToken};
use hubsim_testkit::*;

async fn get(emu: &Emu, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let mut h = vec![("host", "localhost")];
    h.extend_from_slice(headers);
    http_raw(emu.r().http_addr, "GET", path, &h, "").await
}

#[tokio::test]
async fn every_service_call_needs_a_policy_token_with_the_right_permission() {
    let emu = Emu::start().await;
    emu.device("victim").await;
    let a = get(&emu, "/devices", &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.json()["errorCode"], 401002);
    assert!(!a.body.contains("primaryKey"));
    let owner = emu.token("iothubowner");
    let a = get(&emu, "/devices", &[("authorization", &owner)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("victim"));
    // registryRead may read but not write; service may not read the registry.
    let read = emu.token("registryRead");
    assert_eq!(get(&emu, "/devices/victim", &[("authorization", &read)]).await.status, 200);
    let h = [("host", "localhost"), ("authorization", read.as_str())];
    let a = http_raw(emu.r().http_addr, "POST", "/devices/victim/disable", &h, "").await;
    assert_eq!(a.status, 401);
    assert!(a.body.contains("does not grant RegistryWrite"), "{}", a.body);
    let service = emu.token("service");
    assert_eq!(get(&emu, "/devices", &[("authorization", &service)]).await.status, 401);
    assert_eq!(get(&emu, "/twins/victim", &[("authorization", &service)]).await.status, 200);
    // …nor write it through an identity named like a ServiceConnect route (`…/close`, `…/commands`).
    for (method, path) in [
        ("PUT", "/devices/close"),
        ("GET", "/devices/close"),
        ("PUT", "/devices/commands"),
        ("PUT", "/devices/victim/modules/close"),
        ("DELETE", "/devices/victim/modules/commands"),
    ] {
        let h = [("host", "localhost"), ("authorization", service.as_str()), ("content-type", "application/json")];
        let a = http_raw(emu.r().http_addr, method, path, &h, "{}").await;
        assert_eq!(a.status, 401, "{method} {path}: {}", a.body);
        assert!(!a.body.contains("primaryKey"), "{method} {path}: {}", a.body);
    }
    assert!(emu.hub().get_device("close").await.is_err(), "nothing was created");
    // An expired token and a token for another hub are refused.
    let cs = emu.owner();
    let expired = cs.token(now_unix() - 3600).to_string();
    assert_eq!(get(&emu, "/devices", &[("authorization", &expired)]).await.status, 401);
    let mut other = cs.clone();
    other.host_name = "other.azure-devices.net".into();
    assert_eq!(
        get(&emu, "/devices", &[("authorization", &other.token(now_unix() + 60).to_string())]).await.status,
        401
    );
    // Public routes stay public.
    assert_eq!(get(&emu, "/health", &[]).await.status, 200);
    assert_eq!(get(&emu, "/ca.pem", &[]).await.status, 200);
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_a_token() {
    let emu = Emu::start().await;
    let owner = emu.token("iothubowner");
    let h = [("host", "rebind.example"), ("authorization", owner.as_str())];
    let a = http_raw(emu.r().http_addr, "GET", "/devices", &h, "").await;
    assert_eq!(a.status, 421, "{}", a.body);
    assert!(a.body.contains("--allow-host"));
    for host in ["localhost:8080", "127.0.0.1", "[::1]:1"] {
        let h = [("host", host), ("authorization", owner.as_str())];
        assert_eq!(http_raw(emu.r().http_addr, "GET", "/devices", &h, "").await.status, 200, "{host}");
    }
    let mut emu2 = Emu::start_with(|c| c.access.allowed_hosts = vec!["laptop.lan".into()]).await;
    let owner2 = emu2.token("iothubowner");
    let h = [("host", "laptop.lan:8080"), ("authorization", owner2.as_str())];
    assert_eq!(http_raw(emu2.r().http_addr, "GET", "/devices", &h, "").await.status, 200);
    emu2.running.take();
}

#[tokio::test]
async fn a_cross_site_post_is_refused_before_it_runs() {
    let emu = Emu::start().await;
    emu.device("victim").await;
    let owner = emu.token("iothubowner");
    // The earlier API ran this "simple" request from any page (the browser only hid the answer).
    let h = [
        ("host", "127.0.0.1"),
        ("origin", "https://elsewhere.example"),
        ("content-type", "text/plain"),
        ("authorization", owner.as_str()),
    ];
    let a = http_raw(emu.r().http_addr, "POST", "/devices/victim/disable", &h, "").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(emu.hub().get_device("victim").await.unwrap().enabled(), "the device was not disabled");
    // Same origin passes.
    let h = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080"), ("authorization", owner.as_str())];
    assert_eq!(http_raw(emu.r().http_addr, "POST", "/devices/victim/disable", &h, "").await.status, 200);
    // CORS: a preflight from another site gets no allow-origin.
    let h = [
        ("host", "127.0.0.1"),
        ("origin", "https://elsewhere.example"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "authorization"),
    ];
    let a = http_raw(emu.r().http_addr, "OPTIONS", "/devices/x", &h, "").await;
    assert!(a.header("access-control-allow-origin").is_none(), "{:?}", a.headers);
}

#[tokio::test]
async fn allowed_origins_may_call_and_open_websockets() {
    let emu = Emu::start_with(|c| c.access.allowed_origins = vec!["http://127.0.0.1:*".into()]).await;
    let owner = emu.token("iothubowner");
    let h = [("host", "127.0.0.1"), ("origin", "http://127.0.0.1:4321"), ("authorization", owner.as_str())];
    assert_eq!(http_raw(emu.r().http_addr, "PUT", "/devices/fromtest", &h, "").await.status, 200);
    let h = [
        ("host", "127.0.0.1"),
        ("origin", "http://127.0.0.1:4321"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "authorization"),
    ];
    let a = http_raw(emu.r().http_addr, "OPTIONS", "/devices/x", &h, "").await;
    assert_eq!(a.header("access-control-allow-origin"), Some("http://127.0.0.1:4321"));
}

#[tokio::test]
async fn a_foreign_page_cannot_open_an_mqtt_websocket() {
    let emu = Emu::start().await;
    let upgrade = |origin: &'static str| {
        let addr = emu.r().http_addr;
        async move {
            let h = [
                ("host", "localhost"),
                ("origin", origin),
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-protocol", "mqtt"),
            ];
            http_raw(addr, "GET", "/$iothub/websocket", &h, "").await.status
        }
    };
    assert_eq!(upgrade("https://evil.example").await, 403);
    let port = emu.r().http_addr.port();
    let own: &'static str = Box::leak(format!("http://localhost:{port}").into_boxed_str());
    // Host is "localhost" without the port here, so the same-origin form is http://localhost.
    assert_eq!(upgrade("http://localhost").await, 101);
    assert_eq!(upgrade(own).await, 403, "a different port is a different origin");
}

#[tokio::test]
async fn nothing_can_be_framed() {
    let emu = Emu::start().await;
    for path in ["/health", "/devices", "/hubsim-emulator.json"] {
        let a = get(&emu, path, &[]).await;
        assert_eq!(a.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(a.header("content-security-policy"), Some("frame-ancestors 'none'"), "{path}");
    }
    // Preflights too, and a preflight with a foreign Host is refused like any request (DNS rebinding).
    let pre = [("host", "localhost"), ("origin", "https://x.example"), ("access-control-request-method", "PUT")];
    let a = http_raw(emu.r().http_addr, "OPTIONS", "/devices/x", &pre, "").await;
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    let pre = [("host", "evil.example"), ("origin", "https://x.example"), ("access-control-request-method", "PUT")];
    assert_eq!(http_raw(emu.r().http_addr, "OPTIONS", "/devices/x", &pre, "").await.status, 421);
}

#[tokio::test]
async fn a_request_names_one_host_and_every_name_it_gives_is_checked() {
    let emu = Emu::start().await;
    let addr = emu.r().http_addr;
    assert_eq!(http_raw(addr, "GET", "/health", &[("host", "localhost")], "").await.status, 200);
    // A second Host cannot slip a foreign name past the check (whichever one is read).
    for hosts in [["localhost", "evil.example"], ["evil.example", "localhost"]] {
        let a = http_raw(addr, "GET", "/health", &[("host", hosts[0]), ("host", hosts[1])], "").await;
        assert_eq!(a.status, 400, "{hosts:?}: {}", a.body);
        assert!(a.body.contains("more than one Host header"), "{}", a.body);
    }
    // The absolute form names the host in the URI: checked too, whatever Host says.
    let a = http_raw(addr, "GET", "http://evil.example/health", &[("host", "localhost")], "").await;
    assert_eq!(a.status, 421, "{}", a.body);
    assert!(a.body.contains("evil.example"), "{}", a.body);
    let own = format!("http://localhost:{}/health", addr.port());
    assert_eq!(http_raw(addr, "GET", &own, &[("host", "localhost")], "").await.status, 200);
    // Origin and If-Match: one each, in ASCII (a value the gate cannot read was taken as no header).
    let owner = emu.token("iothubowner");
    for (name, values) in [
        ("origin", &["http://localhost", "https://evil.example"][..]),
        ("origin", &["https://évil.example"][..]),
        ("if-match", &["\"a\"", "\"b\""][..]),
        ("if-match", &["\"é\""][..]),
    ] {
        let mut h =
            vec![("host", "localhost"), ("authorization", owner.as_str()), ("content-type", "application/json")];
        h.extend(values.iter().map(|v| (name, *v)));
        let a = http_raw(addr, "PUT", "/twins/nobody", &h, "{}").await;
        assert_eq!(a.status, 400, "{name} {values:?}: {}", a.body);
        assert!(a.body.contains(name) || a.body.contains(&name.replace("if-match", "If-Match")), "{}", a.body);
    }
    // A method a route does not have is answered in IoT Hub's JSON too (it had an empty body).
    let h = [("host", "localhost"), ("authorization", owner.as_str())];
    let a = http_raw(addr, "PATCH", "/devices/x", &h, "").await;
    assert_eq!(a.status, 405);
    assert!(a.json()["Message"].as_str().is_some_and(|m| m.starts_with("ErrorCode:")), "{}", a.body);
    assert!(a.header("allow").is_some(), "the Allow header is kept");
}

#[tokio::test]
async fn bulk_creation_is_validated_first_and_capped_like_iot_hub() {
    let emu = Emu::start().await;
    let owner = emu.token("iothubowner");
    let h = [("host", "localhost"), ("authorization", owner.as_str()), ("content-type", "application/json")];
    let big = format!(r#"{{"prefix":"{}","count":50}}"#, "x".repeat(10_000));
    let a = http_raw(emu.r().http_addr, "POST", "/devices-bulk", &h, &big).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = http_raw(emu.r().http_addr, "POST", "/devices-bulk", &h, r#"{"prefix":"b","count":50000}"#).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("100"), "{}", a.body);
    let a = http_raw(emu.r().http_addr, "POST", "/devices-bulk", &h, r#"{"prefix":"b","start":100,"count":100}"#).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json().as_array().unwrap().len(), 100);
    assert!(emu.hub().get_device("b-199").await.is_ok());
    assert!(emu.hub().get_device("b-99").await.is_err());
}

#[tokio::test]
async fn device_tokens_signed_with_a_device_connect_policy_are_accepted() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let policy_key =
        hubsim_proto::DeviceKey::from_base64(&emu.hub().policies.get("device").unwrap().primary_key).unwrap();
    let resource = ResourceUri::Device { host: "localhost".into(), device_id: "d1".into() };
    let token = SasToken::sign(&policy_key, &resource, now_unix() + 600, Some("device")).to_string();
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    assert!(matches!(d.connect_with(&emu, token, None).await, Event::Connected { .. }));
    // A policy without DeviceConnect is refused.
    let service_key =
        hubsim_proto::DeviceKey::from_base64(&emu.hub().policies.get("service").unwrap().primary_key).unwrap();
    let token = SasToken::sign(&service_key, &resource, now_unix() + 600, Some("service")).to_string();
    let mut d2 = TestDevice::new("d1", key, Via::Mqtt);
    assert!(matches!(d2.connect_with(&emu, token, None).await, Event::ConnectionLost { .. }));
}

#[tokio::test]
async fn an_event_page_is_bounded_in_bytes_and_paging_reaches_everything() {
    use hubsim_proto::device::Telemetry;
    let emu = Emu::start().await;
    let key = emu.device("big").await;
    let mut d = TestDevice::new("big", key, Via::Mqtt);
    d.connect(&emu).await;
    for i in 0..20u8 {
        d.send(Telemetry::new(vec![i; 250_000])).await;
    }
    emu.wait_events("big", 20).await;
    let owner = emu.token("iothubowner");
    let (mut after, mut seen, mut pages) = (0u64, 0usize, 0);
    while seen < 20 {
        let path = format!("/events?device=big&limit=100&after={after}");
        let a = get(&emu, &path, &[("authorization", &owner)]).await;
        let page = a.json();
        let items = page.as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 8, "a page holds at most 4 MiB of bodies: {}", items.len());
        seen += items.len();
        after = items.last().unwrap()["seq"].as_u64().unwrap();
        pages += 1;
    }
    assert_eq!(seen, 20);
    assert!(pages >= 3);
}

/// A GET over HTTPS to the WebSocket port (where the service SDKs reach the emulator); the status.
async fn https_get_status(emu: &Emu, path: &str, auth: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = emu.r().ws_addr.port();
    let mut s = tls_stream(emu, emu.r().ws_addr).await;
    let req =
        format!("GET {path} HTTP/1.1\r\nhost: localhost:{port}\r\nauthorization: {auth}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("an HTTP answer: {text}"))
}

/// The Python service SDK signs for its connection string's `HostName`, port included (`HostName=localhost:28443`
/// for an emulator whose WebSocket/HTTPS port is 28443): a token whose audience is the host name with the port the
/// request or connection arrived on is accepted there, and only there.
#[tokio::test]
async fn a_token_for_the_host_name_with_this_listeners_port_is_accepted_on_that_port_only() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let (http, wss, mqtt) = (emu.r().http_addr.port(), emu.r().ws_addr.port(), emu.r().mqtt_addr.port());
    let service = |port: u16| {
        let cs = emu.hub().policies.connection_string(&format!("LocalHost:{port}"), "iothubowner").unwrap();
        cs.token(now_unix() + 600).to_string()
    };
    // The service API over plain HTTP and over HTTPS on the WebSocket port.
    let host = format!("localhost:{http}");
    let a =
        http_raw(emu.r().http_addr, "GET", "/devices/d1", &[("host", &host), ("authorization", &service(http))], "")
            .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = http_raw(emu.r().http_addr, "GET", "/devices/d1", &[("host", &host), ("authorization", &service(wss))], "")
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let says = format!("the token is for 'LocalHost:{wss}', not for 'localhost' or 'localhost:{http}'");
    assert!(a.json()["message"].as_str().is_some_and(|m| m.contains(&says)), "{}", a.body);
    assert_eq!(https_get_status(&emu, "/devices/d1?api-version=2021-04-12", &service(wss)).await, 200);
    assert_eq!(https_get_status(&emu, "/devices/d1?api-version=2021-04-12", &service(http)).await, 401);
    assert_eq!(https_get_status(&emu, "/devices/d1", &service(wss + 1)).await, 401);
    // Device tokens over MQTT/TLS and MQTT/WebSocket alike.
    let device = |port: u16| {
        let r = ResourceUri::Device { host: format!("localhost:{port}"), device_id: "d1".into() };
        SasToken::sign(&key, &r, now_unix() + 600, None).to_string()
    };
    for (via, own, other) in [(Via::Mqtt, mqtt, wss), (Via::Ws, wss, mqtt)] {
        let mut d = TestDevice::new("d1", key.clone(), via);
        assert!(matches!(d.connect_with(&emu, device(own), None).await, Event::Connected { .. }), "{via:?}");
        d.disconnect().await;
        let mut d = TestDevice::new("d1", key.clone(), via);
        match d.connect_with(&emu, device(other), None).await {
            Event::ConnectionLost { reason: hubsim_proto::device::LostReason::Refused(r), .. } => {
                assert_eq!(r.0, 5, "{via:?}")
            }
            e => panic!("{via:?}: {e:?}"),
        }
    }
}
