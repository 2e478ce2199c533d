//! IoT Hub's data-plane REST API over real sockets (issue 14): every endpoint in IoT Hub's shapes, ETags and
//! `If-Match`, the error body the SDKs parse, the query subset and its 400s, and the same API over HTTPS on the
//! WebSocket port.

use hubsim_proto::device::Event;
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::TopicFilter;
use hubsim_proto::{DeviceConfig, DeviceIdentity};
use hubsim_testkit::*;
use serde_json::{json, Value};

const V: &str = "api-version=2021-04-12";

async fn call(emu: &Emu, method: &str, path: &str, extra: &[(&str, &str)], body: Value) -> HttpAnswer {
    let owner = emu.token("iothubowner");
    let mut h = vec![
        ("host", "localhost"),
        ("authorization", owner.as_str()),
        ("content-type", "application/json; charset=utf-8"),
    ];
    h.extend_from_slice(extra);
    let body = if body.is_null() { String::new() } else { body.to_string() };
    http_raw(emu.r().http_addr, method, path, &h, &body).await
}

/// IoT Hub's error name from the `Message` field, as the Node SDK's `parseErrorBody` reads it.
fn error_name(a: &HttpAnswer) -> String {
    let m = a.json()["Message"].as_str().unwrap_or_default().to_owned();
    let mut parts = m.split(';');
    let code = parts.next().and_then(|p| p.split(':').nth(1)).unwrap_or_default().to_owned();
    assert!(parts.next().is_some_and(|t| !t.is_empty()), "a message after the code: {m}");
    assert!(a.json()["ExceptionMessage"].is_string() && a.json()["errorCode"].is_number(), "{}", a.body);
    code
}

#[tokio::test]
async fn device_identities_create_get_replace_delete_with_etags() {
    let emu = Emu::start().await;
    let a = call(&emu, "PUT", &format!("/devices/d1?{V}"), &[], json!({"deviceId": "d1", "status": "enabled"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.json();
    for field in [
        "deviceId",
        "generationId",
        "etag",
        "connectionState",
        "connectionStateUpdatedTime",
        "status",
        "statusReason",
        "statusUpdatedTime",
        "lastActivityTime",
        "cloudToDeviceMessageCount",
        "authentication",
        "capabilities",
    ] {
        assert!(d.get(field).is_some(), "{field} in {d}");
    }
    assert_eq!(d["authentication"]["type"], "sas");
    assert!(d["authentication"]["x509Thumbprint"].is_object());
    assert_eq!(d["capabilities"]["iotEdge"], false);
    assert_eq!(d["connectionState"], "Disconnected");
    let key = d["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap().to_owned();
    assert!(DeviceKey::from_base64(&key).is_ok());

    // A second create is 409 DeviceAlreadyExists; given keys are used.
    let a = call(&emu, "PUT", &format!("/devices/d1?{V}"), &[], json!({})).await;
    assert_eq!((a.status, error_name(&a).as_str()), (409, "DeviceAlreadyExists"), "{}", a.body);
    let given = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let a = call(
        &emu,
        "PUT",
        "/devices/d2",
        &[],
        json!({"authentication": {"symmetricKey": {"primaryKey": given, "secondaryKey": ""}}}),
    )
    .await;
    assert_eq!(a.json()["authentication"]["symmetricKey"]["primaryKey"], given);

    // Replace under If-Match: a stale ETag is 412, the current one or * replaces (keys kept when not given).
    let etag = d["etag"].as_str().unwrap().to_owned();
    let quoted = format!("\"{etag}\"");
    let body = json!({"deviceId": "d1", "status": "disabled", "statusReason": "maintenance", "capabilities": {"iotEdge": true}});
    let a = call(&emu, "PUT", "/devices/d1", &[("if-match", &quoted)], body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let u = a.json();
    assert_eq!((u["status"].as_str(), u["statusReason"].as_str()), (Some("disabled"), Some("maintenance")));
    assert_eq!(u["capabilities"]["iotEdge"], true);
    assert_eq!(u["authentication"]["symmetricKey"]["primaryKey"], key.as_str());
    assert_ne!(u["etag"], d["etag"]);
    let a = call(&emu, "PUT", "/devices/d1", &[("if-match", &quoted)], body).await;
    assert_eq!((a.status, error_name(&a).as_str()), (412, "PreconditionFailed"), "{}", a.body);
    let a = call(&emu, "PUT", "/devices/nope", &[("if-match", "*")], json!({})).await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "DeviceNotFound"));

    // List (devices only, `top` honoured), then delete under If-Match.
    call(&emu, "PUT", "/devices/d1/modules/m1", &[], json!({})).await;
    let a = call(&emu, "GET", &format!("/devices?top=1&{V}"), &[], Value::Null).await;
    assert_eq!(a.json().as_array().unwrap().len(), 1);
    let a = call(&emu, "GET", &format!("/devices/?{V}"), &[], Value::Null).await;
    assert_eq!(a.json().as_array().unwrap().len(), 2, "d1 and d2, not the module: {}", a.body);
    let a = call(&emu, "DELETE", "/devices/d1", &[("if-match", &quoted)], Value::Null).await;
    assert_eq!(a.status, 412);
    let a = call(&emu, "DELETE", &format!("/devices/d1?{V}"), &[("if-match", "\"*\"")], Value::Null).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let a = call(&emu, "GET", "/devices/d1", &[], Value::Null).await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "DeviceNotFound"));
    // The device's modules went with it (a module of a missing device: the device is not found).
    let a = call(&emu, "GET", "/devices/d1/modules/m1", &[], Value::Null).await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "DeviceNotFound"));
}

/// Every module route answers as IoT Hub does when something is missing: 404001 `DeviceNotFound` when the
/// device is missing, 404010 `ModuleNotFound` when the device exists and the module does not.
#[tokio::test]
async fn a_module_route_names_the_missing_device_before_the_module() {
    let emu = Emu::start().await;
    emu.device("pdev").await;
    let method = json!({"methodName": "m", "payload": null, "responseTimeoutInSeconds": 5});
    let routes = |d: &str| {
        vec![
            ("GET", format!("/twins/{d}/modules/m?{V}"), vec![], Value::Null),
            ("PATCH", format!("/twins/{d}/modules/m?{V}"), vec![], json!({"tags": {"a": 1}})),
            ("PUT", format!("/twins/{d}/modules/m?{V}"), vec![], json!({"tags": {"a": 1}})),
            ("POST", format!("/twins/{d}/modules/m/methods?{V}"), vec![], method.clone()),
            ("GET", format!("/devices/{d}/modules/m?{V}"), vec![], Value::Null),
            ("PUT", format!("/devices/{d}/modules/m?{V}"), vec![("if-match", "\"*\"")], json!({"moduleId": "m"})),
            ("DELETE", format!("/devices/{d}/modules/m?{V}"), vec![("if-match", "\"*\"")], Value::Null),
        ]
    };
    for (device, code, name) in [("nosuch", 404001, "DeviceNotFound"), ("pdev", 404010, "ModuleNotFound")] {
        for (method, path, extra, body) in routes(device) {
            let a = call(&emu, method, &path, &extra, body).await;
            assert_eq!((a.status, error_name(&a).as_str()), (404, name), "{method} {path}: {}", a.body);
            assert_eq!(a.json()["errorCode"], code, "{method} {path}: {}", a.body);
        }
    }
    // Creating a module of a missing device (PUT without If-Match) was already DeviceNotFound.
    let a = call(&emu, "PUT", &format!("/devices/nosuch/modules/m?{V}"), &[], json!({})).await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "DeviceNotFound"), "{}", a.body);
}

#[tokio::test]
async fn modules_and_their_twins_and_methods() {
    let emu = Emu::start().await;
    call(&emu, "PUT", "/devices/d1", &[], Value::Null).await;
    let a =
        call(&emu, "PUT", &format!("/devices/d1/modules/m1?{V}"), &[], json!({"moduleId": "m1", "managedBy": "me"}))
            .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = a.json();
    assert_eq!(
        (m["deviceId"].as_str(), m["moduleId"].as_str(), m["managedBy"].as_str()),
        (Some("d1"), Some("m1"), Some("me"))
    );
    let a = call(&emu, "PUT", "/devices/d1/modules/m1", &[], json!({})).await;
    assert_eq!((a.status, error_name(&a).as_str()), (409, "ModuleAlreadyExistsOnDevice"));
    let a = call(&emu, "PUT", "/devices/ghost/modules/m1", &[], json!({})).await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "DeviceNotFound"));
    let a = call(&emu, "GET", "/devices/d1/modules", &[], Value::Null).await;
    assert_eq!(a.json().as_array().unwrap().len(), 1);
    // A module's registry key is not reachable through the device routes.
    assert_eq!(call(&emu, "GET", "/devices/d1%2Fm1", &[], Value::Null).await.status, 404);
    assert_eq!(call(&emu, "PUT", "/devices/d1%2Fm2", &[], json!({})).await.status, 400);
    assert_eq!(call(&emu, "DELETE", "/devices/d1%2Fm1", &[], Value::Null).await.status, 400);
    assert_eq!(call(&emu, "GET", "/twins/d1%2Fm1", &[], Value::Null).await.status, 400);

    let a = call(&emu, "PATCH", "/twins/d1/modules/m1", &[], json!({"properties": {"desired": {"k": 1}}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.json()["moduleId"].as_str(), a.json()["properties"]["desired"]["k"].as_i64()), (Some("m1"), Some(1)));
    let a = call(&emu, "GET", "/twins/d1", &[], Value::Null).await;
    assert!(a.json()["properties"]["desired"].get("k").is_none(), "the device twin is apart");

    // A module method reaches the module's own connection.
    let key = DeviceKey::from_base64(m["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let mut dev = TestDevice::with_config(
        DeviceConfig::new("localhost", DeviceIdentity::module("d1", "m1")),
        key.clone(),
        Via::Mqtt,
    );
    let ev = dev.connect_with(&emu, token(&key, "d1/modules/m1", 3600), None).await;
    assert!(matches!(ev, Event::Connected { .. }), "{ev:?}");
    dev.subscribe(&[TopicFilter::Methods]).await;
    let body = json!({"methodName": "ping", "payload": {"n": 1}, "responseTimeoutInSeconds": 5});
    let owner = emu.token("iothubowner");
    let addr = emu.r().http_addr;
    let call_task = tokio::spawn(async move {
        let h = [("host", "localhost"), ("authorization", owner.as_str())];
        http_raw(addr, "POST", "/twins/d1/modules/m1/methods?api-version=2021-04-12", &h, &body.to_string()).await
    });
    let Event::MethodRequest { rid, .. } = dev.expect("method", |e| matches!(e, Event::MethodRequest { .. })).await
    else {
        unreachable!()
    };
    let now = dev.now();
    dev.session_mut().respond_to_method(now, &rid, 200, b"{\"pong\":1}").unwrap();
    dev.flush().await;
    let a = call_task.await.unwrap();
    assert_eq!(a.json(), json!({"status": 200, "payload": {"pong": 1}}), "{}", a.body);

    let a = call(&emu, "DELETE", "/devices/d1/modules/m1", &[("if-match", "*")], Value::Null).await;
    assert_eq!(a.status, 204);
    assert_eq!(call(&emu, "GET", "/devices/d1/modules", &[], Value::Null).await.json(), json!([]));
}

#[tokio::test]
async fn bulk_registry_operations_as_the_sdks_send_them() {
    let emu = Emu::start().await;
    let create: Vec<Value> = (1..=3).map(|n| json!({"id": format!("b{n}"), "importMode": "create", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}})).collect();
    let a = call(&emu, "POST", &format!("/devices?{V}"), &[], json!(create)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json(), json!({"isSuccessful": true, "errors": [], "warnings": []}));
    // A partly failing call answers 400 with the failed entries; the others are applied.
    let a = call(
        &emu,
        "POST",
        "/devices",
        &[],
        json!([{"id": "b1", "importMode": "create"}, {"id": "b4", "importMode": "create"}]),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["isSuccessful"], false);
    assert_eq!(a.json()["errors"][0]["deviceId"], "b1");
    assert_eq!(a.json()["errors"][0]["errorCode"], "DeviceAlreadyExists");
    assert_eq!(call(&emu, "GET", "/devices/b4", &[], Value::Null).await.status, 200);
    // Update (with a stale ETag where asked) and delete.
    let a = call(&emu, "POST", "/devices", &[], json!([{"id": "b2", "importMode": "updateIfMatchETag", "eTag": "stale", "status": "disabled"}, {"id": "b3", "importMode": "update", "status": "disabled"}])).await;
    assert_eq!(a.json()["errors"][0]["errorCode"], "PreconditionFailed", "{}", a.body);
    assert_eq!(call(&emu, "GET", "/devices/b3", &[], Value::Null).await.json()["status"], "disabled");
    assert_eq!(call(&emu, "GET", "/devices/b2", &[], Value::Null).await.json()["status"], "enabled");
    let a = call(
        &emu,
        "POST",
        "/devices",
        &[],
        json!([{"id": "b1", "importMode": "delete"}, {"id": "b2", "importMode": "Delete"}]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(call(&emu, "GET", "/devices/b1", &[], Value::Null).await.status, 404);
    // Refused before anything is applied: over 100, an id twice, an unknown mode.
    let many: Vec<Value> = (0..101).map(|n| json!({"id": format!("x{n}"), "importMode": "create"})).collect();
    assert_eq!(call(&emu, "POST", "/devices", &[], json!(many)).await.status, 400);
    let a = call(
        &emu,
        "POST",
        "/devices",
        &[],
        json!([{"id": "y", "importMode": "create"}, {"id": "y", "importMode": "create"}]),
    )
    .await;
    assert_eq!((a.status, error_name(&a).as_str()), (400, "DeviceDefinedMultipleTimes"));
    assert_eq!(call(&emu, "POST", "/devices", &[], json!([{"id": "z", "importMode": "explode"}])).await.status, 400);
    assert_eq!(call(&emu, "GET", "/devices/y", &[], Value::Null).await.status, 404);
    assert_eq!(call(&emu, "GET", "/devices/x0", &[], Value::Null).await.status, 404);
}

#[tokio::test]
async fn twins_get_patch_replace_under_etags_and_rules() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    let a = call(&emu, "GET", &format!("/twins/d1?{V}"), &[], Value::Null).await;
    assert_eq!(a.status, 200);
    let t = a.json();
    for field in
        ["deviceId", "etag", "version", "tags", "properties", "status", "connectionState", "modelId", "deviceEtag"]
    {
        assert!(t.get(field).is_some(), "{field} in {t}");
    }
    assert_eq!(t["properties"]["desired"]["$version"], 1);
    assert!(t["properties"]["desired"]["$metadata"]["$lastUpdated"].is_string());
    assert_eq!(t["tags"], json!({}));

    let etag = format!("\"{}\"", t["etag"].as_str().unwrap());
    let patch = json!({"tags": {"site": {"city": "Oslo"}}, "properties": {"desired": {"rate": 5, "$version": 1}}});
    let a = call(&emu, "PATCH", "/twins/d1", &[("if-match", &etag)], patch).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let t2 = a.json();
    assert_eq!(
        (t2["tags"]["site"]["city"].as_str(), t2["properties"]["desired"]["rate"].as_i64()),
        (Some("Oslo"), Some(5))
    );
    assert_eq!(t2["properties"]["desired"]["$version"], 2);
    assert!(t2["version"].as_u64() > t["version"].as_u64());
    let a = call(&emu, "PATCH", "/twins/d1", &[("if-match", &etag)], json!({"tags": {"x": 1}})).await;
    assert_eq!((a.status, error_name(&a).as_str()), (412, "PreconditionFailed"));
    // A tag change alone moves the ETag.
    let a = call(&emu, "PATCH", "/twins/d1", &[], json!({"tags": {"site": {"floor": 2}}})).await;
    assert_ne!(a.json()["etag"], t2["etag"]);
    assert_eq!(a.json()["tags"]["site"], json!({"city": "Oslo", "floor": 2}));
    // PUT replaces tags and desired (reported stays the device's).
    let a = call(
        &emu,
        "PUT",
        "/twins/d1",
        &[("if-match", "*")],
        json!({"tags": {"only": true}, "properties": {"desired": {"mode": "eco"}, "reported": {"ignored": 1}}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["tags"], json!({"only": true}));
    assert!(a.json()["properties"]["desired"].get("rate").is_none());
    assert!(a.json()["properties"]["reported"].get("ignored").is_none());
    // The twin rules hold for tags: names, and 8 KB.
    let a = call(&emu, "PATCH", "/twins/d1", &[], json!({"tags": {"a.b": 1}})).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("contains '.'"), "{}", a.body);
    let a = call(
        &emu,
        "PATCH",
        "/twins/d1",
        &[],
        json!({"tags": {"a": "x".repeat(4000), "b": "x".repeat(4000), "c": "x".repeat(400)}}),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("8192"), "{}", a.body);
    let a = call(&emu, "GET", "/twins/ghost", &[], Value::Null).await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "DeviceNotFound"));
}

#[tokio::test]
async fn query_subset_with_paging_count_and_clear_400s() {
    let emu = Emu::start().await;
    let mut connected = None;
    for n in 1..=5 {
        let id = format!("q{n}");
        let key = emu.device(&id).await;
        let region = if n % 2 == 0 { "eu" } else { "us" };
        call(&emu, "PATCH", &format!("/twins/{id}"), &[], json!({"tags": {"region": region, "n": n}})).await;
        if n == 5 {
            let mut cfg = DeviceConfig::new("localhost", DeviceIdentity::device(&id));
            cfg.model_id = Some("dtmi:com:example:Thermostat;1".into());
            let mut d = TestDevice::with_config(cfg, key, Via::Mqtt);
            d.connect(&emu).await;
            // Kept open for the connectionState query below.
            connected = Some(d);
        }
    }
    let query = |q: &'static str, extra: Vec<(&'static str, String)>| {
        let emu = &emu;
        async move {
            let h: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(emu, "POST", &format!("/devices/query?{V}"), &h, json!({ "query": q })).await
        }
    };
    let ids = |a: &HttpAnswer| -> Vec<String> {
        a.json().as_array().unwrap().iter().map(|t| t["deviceId"].as_str().unwrap().to_owned()).collect()
    };
    let a = query("SELECT * FROM devices WHERE tags.region = 'us'", vec![]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(ids(&a), ["q1", "q3", "q5"]);
    assert_eq!(a.header("x-ms-item-type"), Some("Twin"));
    assert!(a.header("x-ms-continuation").is_none());
    let a = query("SELECT * FROM devices WHERE tags.n >= 2 AND NOT (tags.region = 'eu' OR tags.n > 4)", vec![]).await;
    assert_eq!(ids(&a), ["q3"]);
    let a = query("SELECT * FROM devices WHERE connectionState = 'Connected'", vec![]).await;
    assert_eq!(ids(&a), ["q5"]);
    assert_ne!(a.json()[0]["lastActivityTime"], "0001-01-01T00:00:00Z");
    let a = query("SELECT * FROM devices WHERE modelId = 'dtmi:com:example:Thermostat;1'", vec![]).await;
    assert_eq!(ids(&a), ["q5"]);
    let d5 = call(&emu, "GET", "/devices/q5", &[], Value::Null).await.json();
    assert_ne!(d5["connectionStateUpdatedTime"], "0001-01-01T00:00:00Z", "{d5}");
    // The model id stays on the twin after the device disconnects, as IoT Hub keeps it.
    if let Some(mut d) = connected.take() {
        d.disconnect().await;
    }
    let a = query("SELECT * FROM devices WHERE modelId = 'dtmi:com:example:Thermostat;1'", vec![]).await;
    assert_eq!(ids(&a), ["q5"]);
    // Paging: two per page, the token carried back until none is sent.
    let mut all = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..5 {
        let mut h = vec![("x-ms-max-item-count", "2".to_owned())];
        if let Some(t) = &next {
            h.push(("x-ms-continuation", t.clone()));
        }
        let a = query("SELECT * FROM devices", h).await;
        all.extend(ids(&a));
        next = a.header("x-ms-continuation").map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(all, ["q1", "q2", "q3", "q4", "q5"]);
    let a = query("SELECT COUNT() AS total FROM devices WHERE tags.region = 'eu'", vec![]).await;
    assert_eq!(a.json(), json!([{"total": 2}]));
    for (q, names) in [
        ("SELECT * FROM devices GROUP BY tags.region", "GROUP"),
        ("SELECT deviceId FROM devices", "projection"),
        ("SELECT * FROM devices.modules", "devices.modules"),
        ("SELECT * FROM devices WHERE STARTSWITH(deviceId, 'q')", "STARTSWITH"),
        ("SELECT * FROM devices WHERE", "syntax"),
    ] {
        let a = query(q, vec![]).await;
        assert_eq!((a.status, error_name(&a).as_str()), (400, "ArgumentInvalid"), "{q}");
        assert!(a.json()["message"].as_str().unwrap().contains(names), "{q}: {}", a.body);
    }
    // A device named `query` is still a device.
    assert_eq!(call(&emu, "PUT", "/devices/query", &[], Value::Null).await.status, 200);
    assert_eq!(call(&emu, "GET", "/devices/query", &[], Value::Null).await.json()["deviceId"], "query");
}

/// Twins of a query page, and its continuation token.
async fn query_page(emu: &Emu, q: &str, page: usize, token: Option<&str>) -> (HttpAnswer, Vec<String>, Option<String>) {
    let page = page.to_string();
    let mut h = vec![("x-ms-max-item-count", page.as_str())];
    if let Some(t) = token {
        h.push(("x-ms-continuation", t));
    }
    let a = call(emu, "POST", &format!("/devices/query?{V}"), &h, json!({ "query": q })).await;
    assert_eq!(a.status, 200, "{q}: {}", a.body);
    let ids = a.json().as_array().unwrap().iter().map(|t| t["deviceId"].as_str().unwrap().to_owned()).collect();
    let next = a.header("x-ms-continuation").map(str::to_owned);
    (a, ids, next)
}

/// A query reads the registry once, device by device, and keeps only its page: the continuation token names the
/// last twin returned (a device created before it shifts nothing), and a page stops at
/// `QUERY_PAGE_BYTES` of twins whatever `x-ms-max-item-count` asks.
#[tokio::test]
async fn query_pages_are_bounded_and_continue_after_the_last_twin() {
    use hubsim_hub::api::query::QUERY_PAGE_BYTES;
    let emu = Emu::start().await;
    for id in ["p1", "p2", "p3", "p4"] {
        emu.device(id).await;
    }
    let (_, ids, next) = query_page(&emu, "SELECT * FROM devices", 2, None).await;
    assert_eq!(ids, ["p1", "p2"]);
    // A device created before the page's end shifts nothing: the next page is the rest, none of it twice.
    emu.device("p0").await;
    let (_, ids, next) = query_page(&emu, "SELECT * FROM devices", 2, next.as_deref()).await;
    assert_eq!(ids, ["p3", "p4"]);
    assert_eq!(next, None, "no token when nothing follows");
    let a = call(
        &emu,
        "POST",
        "/devices/query",
        &[("x-ms-continuation", "c2tpcDoy")],
        json!({"query": "SELECT * FROM devices"}),
    )
    .await;
    assert_eq!((a.status, error_name(&a).as_str()), (400, "ArgumentInvalid"), "an offset token is not ours");

    // Twins of some 330 KB each ($metadata of 4 000 small desired properties; booleans, which IoT Hub counts as 4,
    // keep them within its 32 KB): a page of 1 000 holds 4 MiB.
    let desired: serde_json::Map<String, Value> = (0..4000).map(|i| (format!("{i:x}"), json!(true))).collect();
    let fat: Vec<String> = (0..16).map(|i| format!("f{i:02}")).collect();
    for id in &fat {
        emu.device(id).await;
        let a = call(&emu, "PATCH", &format!("/twins/{id}"), &[], json!({"properties": {"desired": desired}})).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let q = "SELECT * FROM devices WHERE properties.desired.a = true";
    let (mut seen, mut token, mut pages) = (Vec::new(), None, 0);
    loop {
        let (a, ids, next) = query_page(&emu, q, 1000, token.as_deref()).await;
        let largest = a.json().as_array().unwrap().iter().map(|t| t.to_string().len()).max().unwrap();
        assert!(largest > 300_000, "fat twins: {largest} bytes");
        assert!(a.body.len() <= QUERY_PAGE_BYTES + largest, "a page of {} bytes", a.body.len());
        seen.extend(ids);
        pages += 1;
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, fat, "every fat twin once, in order");
    assert!(pages >= 2, "the byte bound cut the 1 000-twin page ({pages} pages)");
    let a = call(
        &emu,
        "POST",
        "/devices/query",
        &[],
        json!({"query": "SELECT COUNT() AS n FROM devices WHERE properties.desired.a = true"}),
    )
    .await;
    assert_eq!(a.json(), json!([{"n": 16}]));
}

/// Queries beyond `MAX_CONCURRENT_QUERIES` running at once get IoT Hub's throttling answer, 429
/// ThrottlingException; one runs again as soon as a place is free.
#[tokio::test]
async fn queries_beyond_the_concurrent_bound_are_throttled() {
    use hubsim_hub::api::query::MAX_CONCURRENT_QUERIES;
    let emu = Emu::start().await;
    emu.device("d1").await;
    // The places of running queries, all taken (as by queries still reading the registry).
    let taken = emu.hub().queries.clone().acquire_many_owned(MAX_CONCURRENT_QUERIES as u32).await.unwrap();
    let q = json!({"query": "SELECT * FROM devices"});
    let a = call(&emu, "POST", "/devices/query", &[], q.clone()).await;
    assert_eq!((a.status, error_name(&a).as_str()), (429, "ThrottlingException"), "{}", a.body);
    drop(taken);
    let a = call(&emu, "POST", "/devices/query", &[], q).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// A number literal past f64's range is refused with 400 naming it, not turned into `null` that selects nothing.
#[tokio::test]
async fn an_out_of_range_number_in_a_query_is_a_400_naming_it() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    call(&emu, "PATCH", "/twins/d1", &[], json!({"tags": {"v": 5}})).await;
    for lit in ["1e999", "-1e999"] {
        let q = format!("SELECT * FROM devices WHERE tags.v < {lit}");
        let a = call(&emu, "POST", "/devices/query", &[], json!({ "query": q })).await;
        assert_eq!((a.status, error_name(&a).as_str()), (400, "ArgumentInvalid"), "{q}: {}", a.body);
        assert!(a.json()["message"].as_str().unwrap().contains(lit), "{q}: {}", a.body);
    }
    let a =
        call(&emu, "POST", "/devices/query", &[], json!({"query": "SELECT * FROM devices WHERE tags.v < 1e300"})).await;
    assert_eq!(a.json().as_array().map(Vec::len), Some(1), "{}", a.body);
}

#[tokio::test]
async fn purge_statistics_and_permissions() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    emu.device("d2").await;
    call(&emu, "POST", "/devices/d2/disable", &[], Value::Null).await;
    for n in 0..2 {
        let a = call(
            &emu,
            "POST",
            "/devices/d1/messages/devicebound",
            &[],
            json!({"body": format!("m{n}"), "ack": "full"}),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
    assert_eq!(call(&emu, "GET", "/devices/d1", &[], Value::Null).await.json()["cloudToDeviceMessageCount"], 2);
    let a = call(&emu, "DELETE", &format!("/devices/d1/commands?{V}"), &[], Value::Null).await;
    assert_eq!(a.json(), json!({"totalMessagesPurged": 2, "deviceId": "d1", "moduleId": null}), "{}", a.body);
    assert!(emu.hub().store.c2d_queue("d1").await.unwrap().is_empty());
    let fb = emu.hub().store.feedback(0, 10).await.unwrap();
    assert!(fb.iter().all(|f| f.status_code == "Purged") && fb.len() == 2, "{fb:?}");
    let a = call(&emu, "GET", &format!("/statistics/devices?{V}"), &[], Value::Null).await;
    assert_eq!(a.json(), json!({"totalDeviceCount": 2, "enabledDeviceCount": 1, "disabledDeviceCount": 1}));
    let a = call(&emu, "GET", &format!("/statistics/service?{V}"), &[], Value::Null).await;
    assert_eq!(a.json(), json!({"connectedDeviceCount": 0}));
    // registryRead may query but not purge or bulk-write; the refusal has IoT Hub's body too.
    let read = emu.token("registryRead");
    let h = [("host", "localhost"), ("authorization", read.as_str())];
    let a = http_raw(emu.r().http_addr, "POST", "/devices/query", &h, "{\"query\":\"SELECT * FROM devices\"}").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = http_raw(emu.r().http_addr, "DELETE", "/devices/d1/commands", &h, "").await;
    assert_eq!((a.status, error_name(&a).as_str()), (401, "IotHubUnauthorizedAccess"));
    assert_eq!(http_raw(emu.r().http_addr, "POST", "/devices", &h, "[]").await.status, 401);
}

#[tokio::test]
async fn the_service_api_answers_over_https_on_the_websocket_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emu = Emu::start().await;
    emu.device("d1").await;
    let mut s = tls_stream(&emu, emu.r().ws_addr).await;
    let req = format!(
        "GET /devices/d1?{V} HTTP/1.1\r\nhost: localhost\r\nauthorization: {}\r\nconnection: close\r\n\r\n",
        emu.token("iothubowner")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"deviceId\":\"d1\"") && text.contains("\"etag\""), "{text}");
}

#[tokio::test]
async fn an_identity_body_is_checked_as_iot_hub_checks_it() {
    let emu = Emu::start().await;
    let refused = |a: &HttpAnswer, says: &str| {
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body.contains(says), "{says} in {}", a.body);
    };
    // The body names another device than the URL.
    let a = call(&emu, "PUT", &format!("/devices/e3?{V}"), &[], json!({"deviceId": "other"})).await;
    refused(&a, "does not match the identity of the URL");
    // Wrong types are refused, not ignored.
    let a = call(&emu, "PUT", "/devices/e3", &[], json!({"deviceId": "e3", "status": 5})).await;
    refused(&a, "status must be a string");
    let a = call(&emu, "PUT", "/devices/e3", &[], json!({"authentication": "x"})).await;
    refused(&a, "authentication must be an object");
    let a = call(&emu, "PUT", "/devices/e3", &[], json!({"capabilities": {"iotEdge": "yes"}})).await;
    refused(&a, "capabilities/iotEdge must be true or false");
    refused(&call(&emu, "PUT", "/devices/e3", &[], json!([1])).await, "the body must be a JSON object");
    // A symmetric key is 16 to 64 bytes.
    let short = json!({"authentication": {"symmetricKey": {"primaryKey": "AQ=="}}});
    refused(
        &call(&emu, "PUT", "/devices/e3", &[], short).await,
        "primaryKey is 1 bytes; IoT Hub's symmetric keys are 16 to 64 bytes",
    );
    let long = json!({"authentication": {"symmetricKey": {"secondaryKey": "A".repeat(88)}}});
    refused(&call(&emu, "PUT", "/devices/e3", &[], long).await, "secondaryKey is 66 bytes");
    // None of those created anything; a module's body names its device and module.
    assert_eq!(call(&emu, "GET", "/devices/e3", &[], Value::Null).await.status, 404);
    assert_eq!(call(&emu, "PUT", "/devices/e3", &[], json!({"deviceId": "e3"})).await.status, 200);
    let a = call(&emu, "PUT", "/devices/e3/modules/m1", &[], json!({"deviceId": "e3", "moduleId": "m2"})).await;
    refused(&a, "the body's moduleId 'm2' does not match the identity of the URL, 'm1'");
    let a = call(&emu, "PUT", "/devices/e3/modules/m1", &[], json!({"deviceId": "e3", "moduleId": "m1"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn bodies_the_framework_refuses_get_iot_hubs_json_error_too() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    let owner = emu.token("iothubowner");
    let send = |ct: &'static str, body: String| {
        let owner = owner.clone();
        let addr = emu.r().http_addr;
        async move {
            let h = [("host", "localhost"), ("authorization", owner.as_str()), ("content-type", ct)];
            http_raw(addr, "POST", "/devices/d1/messages/devicebound", &h, &body).await
        }
    };
    // Over the body limit: 413 MessageTooLarge with the limit in words.
    let a =
        send("application/json", format!("{{\"body\":\"{}\"}}", "x".repeat(hubsim_hub::api::MAX_REQUEST_BODY))).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(error_name(&a), "MessageTooLarge");
    assert!(a.body.contains("the request body is over 2097152 bytes"), "{}", a.body);
    // A body of the wrong shape: 400 ArgumentInvalid (IoT Hub never answers 422), naming the field.
    let a = send("application/json", r#"{"body": 5}"#.into()).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(error_name(&a), "ArgumentInvalid");
    assert!(a.body.contains("expected a string"), "{}", a.body);
    // Not JSON, and no JSON content type.
    let a = send("application/json", "{not json".into()).await;
    assert_eq!((a.status, error_name(&a)), (400, "ArgumentInvalid".to_owned()), "{}", a.body);
    let a = send("text/plain", "{}".into()).await;
    assert_eq!((a.status, error_name(&a)), (415, "UnsupportedMediaType".to_owned()), "{}", a.body);
    assert!(a.body.contains("application/json"), "{}", a.body);
    // Nothing was queued.
    assert!(emu.hub().store.c2d_queue("d1").await.unwrap().is_empty());
}

#[tokio::test]
async fn device_routes_do_not_take_a_module_s_registry_key() {
    let emu = Emu::start().await;
    emu.device("d1").await;
    assert_eq!(call(&emu, "PUT", &format!("/devices/d1/modules/m1?{V}"), &[], json!({})).await.status, 200);
    // `d1%2Fm1` is the module's registry key, not a device: every device route answers DeviceNotFound.
    for (method, path, body) in [
        ("POST", "/devices/d1%2Fm1/messages/devicebound", json!({"body": "x"})),
        ("GET", "/devices/d1%2Fm1/messages/devicebound", Value::Null),
        ("POST", "/devices/d1%2Fm1/disable", Value::Null),
        ("POST", "/devices/d1%2Fm1/enable", Value::Null),
        ("POST", "/devices/d1%2Fm1/close", Value::Null),
        ("DELETE", "/devices/d1%2Fm1/commands", Value::Null),
        ("GET", "/devices/d1%2Fm1", Value::Null),
        ("GET", "/devices/d1%2Fm1/modules", Value::Null),
    ] {
        let a = call(&emu, method, &format!("{path}?{V}"), &[], body).await;
        assert_eq!((a.status, error_name(&a)), (404, "DeviceNotFound".to_owned()), "{method} {path}: {}", a.body);
    }
    assert!(emu.hub().store.c2d_queue("d1/m1").await.unwrap().is_empty(), "nothing queued for the module");
    // The module is still there, untouched.
    let m = call(&emu, "GET", &format!("/devices/d1/modules/m1?{V}"), &[], Value::Null).await;
    assert_eq!((m.status, m.json()["moduleId"].as_str()), (200, Some("m1")), "{}", m.body);
}

#[tokio::test]
async fn twin_metadata_has_a_node_per_property_and_object_as_iot_hub_s_does() {
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let patch = |desired: Value| json!({"properties": {"desired": desired}});
    call(&emu, "PATCH", "/twins/d1", &[], patch(json!({"a": 1, "obj": {"x": 1}, "gone": true}))).await;
    let a = call(&emu, "PATCH", "/twins/d1", &[], patch(json!({"obj": {"y": 2}, "gone": null}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let meta = &a.json()["properties"]["desired"]["$metadata"];
    let version = |p: &str| meta.pointer(p).and_then(Value::as_u64);
    // Each property and object has its own $lastUpdated and $lastUpdatedVersion; an object moves with a child.
    assert_eq!(version("/$lastUpdatedVersion"), Some(3), "{meta}");
    assert_eq!(version("/a/$lastUpdatedVersion"), Some(2), "{meta}");
    assert_eq!(version("/obj/$lastUpdatedVersion"), Some(3), "{meta}");
    assert_eq!(version("/obj/x/$lastUpdatedVersion"), Some(2), "{meta}");
    assert_eq!(version("/obj/y/$lastUpdatedVersion"), Some(3), "{meta}");
    assert!(meta.get("gone").is_none(), "a deleted property has no metadata: {meta}");
    let stamp = |p: &str| meta.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    assert!(stamp("/a/$lastUpdated").ends_with('Z') && stamp("/a/$lastUpdated") <= stamp("/obj/y/$lastUpdated"));
    // Reported properties: a time per property, no version (IoT Hub versions desired ones only).
    let mut d = TestDevice::new("d1", key, Via::Mqtt);
    d.connect(&emu).await;
    d.subscribe(&[TopicFilter::TwinResponses]).await;
    let now = d.now();
    d.session_mut().patch_reported(now, &br#"{"temp": {"now": 21}}"#[..]).unwrap();
    d.flush().await;
    d.expect("the patch's answer", |e| matches!(e, Event::TwinResponse { status: 204, .. })).await;
    let t = call(&emu, "GET", "/twins/d1", &[], Value::Null).await.json();
    let meta = &t["properties"]["reported"]["$metadata"];
    assert!(meta.pointer("/temp/now/$lastUpdated").and_then(Value::as_str).is_some_and(|s| s.ends_with('Z')), "{meta}");
    assert!(meta.pointer("/temp/now/$lastUpdatedVersion").is_none(), "{meta}");
    // A replace starts the desired metadata again.
    let a = call(&emu, "PUT", "/twins/d1", &[], patch(json!({"b": 1}))).await;
    let meta = &a.json()["properties"]["desired"]["$metadata"];
    assert!(meta.get("a").is_none() && meta.pointer("/b/$lastUpdatedVersion").is_some(), "{meta}");
}

#[tokio::test]
async fn an_unknown_path_under_the_api_gets_iot_hub_s_json_404_even_beside_the_web_app() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>app</title>").unwrap();
    let dir = web.path().to_path_buf();
    let emu = Emu::start_with(move |c| c.web_dir = Some(dir)).await;
    emu.device("d1").await;
    for (method, path) in [
        ("GET", "/twins/d1/x"),
        ("GET", "/statistics"),
        ("POST", "/devices/d1/messages/deviceBound"),
        ("GET", "/devices/d1/modules/m/x"),
    ] {
        let a = call(&emu, method, path, &[], Value::Null).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", a.body);
        assert!(a.json()["Message"].as_str().is_some_and(|m| m.contains("no such endpoint")), "{}", a.body);
    }
    // The web app's own files are still served.
    let a = call(&emu, "GET", "/index.html", &[], Value::Null).await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("<title>app</title>"), "{}", a.body);
    // An API call (api-version) to a path that is no route is not a page either, whatever its method (the file
    // server answers any but GET and HEAD 405) or the length of its names (over 255 bytes, the file system's
    // limit, the file server answers 500).
    let long = "a".repeat(300);
    for (method, path) in [("GET", "/nosuch"), ("PUT", "/jobs/v2/j1"), ("PATCH", "/digitaltwins/d1"), ("GET", &long)] {
        let a = call(&emu, method, &format!("/{}?{V}", path.trim_start_matches('/')), &[], Value::Null).await;
        assert_eq!((a.status, error_name(&a).as_str()), (404, "NotFound"), "{method} {path}: {}", a.body);
    }
    // A page with such a name (no Authorization, no api-version) is not there either (no 500).
    let a = http_raw(emu.r().http_addr, "GET", &format!("/{long}"), &[("host", "localhost")], "").await;
    assert_eq!(a.status, 404, "{}", a.body);
}

/// Without a web app, an API call to a route that does not exist gets IoT Hub's error body naming its method and
/// path (a C2D send to a module is told why there is none); a page a browser asks for gets the plain answer.
#[tokio::test]
async fn an_unknown_route_is_named_in_iot_hub_s_error_body_and_a_page_gets_the_plain_answer() {
    let emu = Emu::start().await;
    emu.device("pdev").await;
    emu.hub().create_module("pdev", "pmod").await.unwrap();
    let path = format!("/devices/pdev/modules/pmod/messages/devicebound?{V}");
    let a = call(&emu, "POST", &path, &[], json!({"body": "hi"})).await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "NotFound"), "{}", a.body);
    assert_eq!(a.json()["errorCode"], 404000);
    let message = a.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("POST /devices/pdev/modules/pmod/messages/devicebound"), "{message}");
    assert!(message.contains("does not send cloud-to-device messages to modules"), "{message}");
    // Outside the API's prefixes: an api-version or an Authorization header makes it an API call.
    let a = http_raw(emu.r().http_addr, "GET", &format!("/nosuch/x?{V}"), &[("host", "localhost")], "").await;
    assert_eq!((a.status, error_name(&a).as_str()), (404, "NotFound"), "{}", a.body);
    assert!(a.json()["message"].as_str().is_some_and(|m| m.contains("GET /nosuch/x ")), "{}", a.body);
    let a = call(&emu, "DELETE", "/nosuch", &[], Value::Null).await;
    assert!(a.json()["message"].as_str().is_some_and(|m| m.contains("DELETE /nosuch ")), "{}", a.body);
    // A browser's page request.
    let a = http_raw(emu.r().http_addr, "GET", "/page.html", &[("host", "localhost")], "").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["message"], "no such endpoint (and no web app folder is served)", "{}", a.body);
    assert!(a.json().get("Message").is_none(), "{}", a.body);
}

/// What a caller sends and an error answer repeats (the method of an unknown route, a token's audience) is cut:
/// the answer stays small whatever it sent.
#[tokio::test]
async fn an_error_answer_repeats_a_callers_long_method_or_audience_cut() {
    let emu = Emu::start().await;
    let method = "X".repeat(5000);
    let a = http_raw(emu.r().http_addr, &method, &format!("/nosuch?{V}"), &[("host", "localhost")], "").await;
    assert_eq!(a.status, 404, "{}", &a.body[..a.body.len().min(300)]);
    assert!(a.body.len() < 2000, "{} bytes", a.body.len());
    let audience = "a".repeat(20_000);
    let forged = format!("SharedAccessSignature sr={audience}&sig=x&se=9999999999&skn=iothubowner");
    let a = http_raw(
        emu.r().http_addr,
        "GET",
        &format!("/devices?{V}"),
        &[("host", "localhost"), ("authorization", &forged)],
        "",
    )
    .await;
    assert_eq!(a.status, 401, "{}", &a.body[..a.body.len().min(300)]);
    assert!(a.body.len() < 2000, "{} bytes", a.body.len());
}
