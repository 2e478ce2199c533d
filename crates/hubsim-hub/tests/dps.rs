//! The local DPS over real sockets (issue 11): enrollments through the service API, devices registering with the
//! core's `ProvisioningSession` (hubsim-device's driver) over TLS and WebSocket on the hub's own listeners, then
//! connecting to the hub with the result and sending telemetry that lands under the assigned device.

use hubsim_device::provision::{drive, ProvisionError};
use hubsim_proto::device::{Event, Telemetry};
use hubsim_proto::provisioning::{
    Assignment, EnrollmentKey, Progress, ProvisioningConfig, ProvisioningError, ProvisioningSession, Registration,
};
use hubsim_proto::sas::DeviceKey;
use hubsim_testkit::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn call(emu: &Emu, method: &str, path: &str, body: Option<Value>) -> HttpAnswer {
    let token = emu.token("iothubowner");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let h = [("host", "localhost"), ("authorization", token.as_str()), ("content-type", "application/json")];
    http_raw(emu.r().http_addr, method, path, &h, &body).await
}

fn scope(emu: &Emu) -> String {
    emu.hub().id_scope().to_owned()
}

/// Registers `registration_id` with `key` over `via`; the result and the progress seen.
async fn register(
    emu: &Emu,
    via: Via,
    registration_id: &str,
    key: EnrollmentKey,
    payload: Option<&str>,
) -> (Result<Registration, ProvisionError>, Vec<Progress>, DeviceKey) {
    let mut config = ProvisioningConfig::new(scope(emu), registration_id);
    config.payload = payload.map(str::to_owned);
    let mut session = ProvisioningSession::new(config, &key);
    let transport = open_raw(emu, via).await;
    let mut progress = Vec::new();
    let r = tokio::time::timeout(WAIT, drive(&mut session, transport, |p| progress.push(p.clone())))
        .await
        .expect("DPS answered in time");
    (r, progress, session.device_key().clone())
}

fn assigned(r: Result<Registration, ProvisionError>) -> Assignment {
    match r {
        Ok(Registration::Assigned(a)) => a,
        other => panic!("not assigned: {other:?}"),
    }
}

/// Connects to the hub as the assigned device and sends one message; returns the stored event's body.
async fn send_as(emu: &Emu, a: &Assignment, key: DeviceKey, via: Via, body: &str) -> String {
    assert_eq!(a.assigned_hub, "localhost");
    let mut dev = TestDevice::new(&a.device_id, key, via);
    dev.connect(emu).await;
    dev.send(Telemetry::new(body.as_bytes().to_vec())).await;
    dev.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    let evs = emu.wait_events(&a.device_id, 1).await;
    evs.last().and_then(|e| e.body.clone()).unwrap_or_default()
}

#[tokio::test]
async fn individual_enrollment_provisions_over_tls_and_the_device_sends_telemetry() {
    let emu = Emu::start().await;
    let put = call(
        &emu,
        "PUT",
        "/enrollments/dev-ind-1?api-version=2021-10-01",
        Some(json!({
            "registrationId": "dev-ind-1",
            "attestation": {"type": "symmetricKey"},
            "capabilities": {"iotEdge": true},
            "initialTwin": {"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5}}},
        })),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let e = put.json();
    assert_eq!(e["provisioningStatus"], "enabled");
    assert_eq!(e["attestation"]["type"], "symmetricKey");
    assert!(e["etag"].as_str().is_some_and(|t| !t.is_empty()));
    let key = e["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap();
    let key = DeviceKey::from_base64(key).unwrap();

    let (r, progress, device_key) = register(
        &emu,
        Via::Mqtt,
        "dev-ind-1",
        EnrollmentKey::Individual(key.clone()),
        Some(r#"{"modelId":"dtmi:x;1"}"#),
    )
    .await;
    let a = assigned(r);
    assert_eq!(a.device_id, "dev-ind-1");
    assert_eq!(a.substatus.as_deref(), Some("initialAssignment"));
    assert_eq!(device_key, key);
    // Register answered 202 assigning with retry-after 1 s, then the poll answered assigned.
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Progress::Assigning { retry_in, .. } if *retry_in == Duration::from_secs(1))),
        "{progress:?}"
    );

    // The device identity carries the enrollment's key, IoT Edge flag and initial twin.
    let d = emu.hub().get_device("dev-ind-1").await.unwrap();
    assert!(d.meta.iot_edge);
    let twin = call(&emu, "GET", "/twins/dev-ind-1", None).await.json();
    assert_eq!(twin["tags"]["site"], "lab", "{twin}");
    assert_eq!(twin["properties"]["desired"]["interval"], 5, "{twin}");

    // The registration state, through the API.
    let st = call(&emu, "GET", "/registrations/dev-ind-1", None).await;
    assert_eq!(st.status, 200);
    let st = st.json();
    assert_eq!(st["status"], "assigned");
    assert_eq!(st["assignedHub"], "localhost");
    assert_eq!(st["deviceId"], "dev-ind-1");
    assert_eq!(st["substatus"], "initialAssignment");
    assert_eq!(st["requestPayload"]["modelId"], "dtmi:x;1");
    assert!(st["createdDateTimeUtc"].as_str().is_some() && st["etag"].as_str().is_some());
    let e = call(&emu, "GET", "/enrollments/dev-ind-1", None).await.json();
    assert_eq!(e["registrationState"]["status"], "assigned");

    assert_eq!(send_as(&emu, &a, device_key, Via::Mqtt, "hello from DPS").await, "hello from DPS");
    let rec = emu.wait_log(|r| r.operation == "dpsRegister" && r.device_id.as_deref() == Some("dev-ind-1")).await;
    assert_eq!(rec.reason, "assigned");
    assert_eq!(rec.transport, "mqtt");
}

#[tokio::test]
async fn group_enrollment_provisions_over_websocket_with_the_derived_key() {
    let emu = Emu::start().await;
    let put = call(&emu, "PUT", "/enrollmentGroups/line-1", Some(json!({"enrollmentGroupId": "line-1"}))).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let group_key = put.json()["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap().to_owned();
    let group_key = DeviceKey::from_base64(&group_key).unwrap();

    let (r, _, device_key) = register(&emu, Via::Ws, "sensor-17", EnrollmentKey::Group(group_key.clone()), None).await;
    let a = assigned(r);
    assert_eq!(a.device_id, "sensor-17");
    assert_eq!(device_key, group_key.derive_for_registration("sensor-17"));
    let d = emu.hub().get_device("sensor-17").await.unwrap();
    assert_eq!(d.authentication.symmetric_key.primary_key, device_key.to_base64());
    let st = call(&emu, "GET", "/registrations/sensor-17", None).await.json();
    assert_eq!(st["enrollmentGroupId"], "line-1");
    let of_group = call(&emu, "POST", "/registrations/line-1/query", Some(json!({}))).await.json();
    assert_eq!(of_group[0]["registrationId"], "sensor-17", "{of_group}");

    assert_eq!(send_as(&emu, &a, device_key, Via::Ws, "grouped").await, "grouped");
    let rec = emu.wait_log(|r| r.operation == "dpsRegister" && r.device_id.as_deref() == Some("sensor-17")).await;
    assert_eq!(rec.transport, "wss");
    assert!(rec.description.contains("enrollment group 'line-1'"), "{}", rec.description);

    // A registration id no hub device could have (129 characters) is refused at CONNECT: nothing is created.
    let long = "s".repeat(129);
    let (r, _, _) = register(&emu, Via::Mqtt, &long, EnrollmentKey::Group(group_key), None).await;
    match r {
        Err(ProvisionError::Dps(ProvisioningError::Refused(c))) => assert_eq!(c.0, 4),
        other => panic!("{other:?}"),
    }
    assert!(emu.hub().get_device(&long).await.is_err());
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_a_typed_failure_and_logged() {
    let emu = Emu::start().await;
    call(&emu, "PUT", "/enrollments/dev-bad", Some(json!({}))).await;
    let wrong = DeviceKey::from_bytes(vec![7u8; 32]);
    for via in [Via::Mqtt, Via::Ws] {
        let (r, _, _) = register(&emu, via, "dev-bad", EnrollmentKey::Individual(wrong.clone()), None).await;
        match r {
            Err(ProvisionError::Dps(ProvisioningError::Refused(c))) => assert_eq!(c.0, 5),
            other => panic!("{other:?}"),
        }
    }
    // No enrollment at all, and a group key used for a registration with no group: refused the same way.
    let (r, _, _) = register(&emu, Via::Mqtt, "nobody", EnrollmentKey::Group(wrong), None).await;
    assert!(matches!(r, Err(ProvisionError::Dps(ProvisioningError::Refused(_)))), "{r:?}");
    let rec = emu.wait_log(|r| r.operation == "dpsConnectRefused" && r.device_id.as_deref() == Some("dev-bad")).await;
    assert_eq!(rec.result_type, 401002);
    assert!(rec.description.contains("individual enrollment 'dev-bad'"), "{}", rec.description);
    assert!(emu.hub().get_device("dev-bad").await.is_err());
}

#[tokio::test]
async fn a_disabled_enrollment_gives_status_disabled_and_no_device() {
    let emu = Emu::start().await;
    let e = call(&emu, "PUT", "/enrollments/dev-off", Some(json!({"provisioningStatus": "disabled"}))).await.json();
    let key = DeviceKey::from_base64(e["attestation"]["symmetricKey"]["secondaryKey"].as_str().unwrap()).unwrap();
    let (r, _, _) = register(&emu, Via::Mqtt, "dev-off", EnrollmentKey::Individual(key.clone()), None).await;
    assert!(matches!(r, Ok(Registration::Disabled)), "{r:?}");
    assert!(emu.hub().get_device("dev-off").await.is_err());
    assert_eq!(call(&emu, "GET", "/registrations/dev-off", None).await.json()["status"], "disabled");

    // A disabled group, likewise; enabling it again (same keys, If-Match) lets the device in.
    let g = call(&emu, "PUT", "/enrollmentGroups/g-off", Some(json!({"provisioningStatus": "disabled"}))).await.json();
    let gk = DeviceKey::from_base64(g["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let (r, _, _) = register(&emu, Via::Ws, "g-dev", EnrollmentKey::Group(gk.clone()), None).await;
    assert!(matches!(r, Ok(Registration::Disabled)), "{r:?}");
    let token = emu.token("iothubowner");
    let stale = [("host", "localhost"), ("authorization", token.as_str()), ("if-match", "\"stale\"")];
    let a = http_raw(emu.r().http_addr, "PUT", "/enrollmentGroups/g-off", &stale, "{}").await;
    assert_eq!(a.status, 412, "{}", a.body);
    let etag = g["etag"].as_str().unwrap();
    let fresh = [("host", "localhost"), ("authorization", token.as_str()), ("if-match", etag)];
    let a = http_raw(emu.r().http_addr, "PUT", "/enrollmentGroups/g-off", &fresh, "{}").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (r, _, _) = register(&emu, Via::Ws, "g-dev", EnrollmentKey::Group(gk), None).await;
    assert_eq!(assigned(r).device_id, "g-dev");
}

#[tokio::test]
async fn provisioning_again_keeps_or_resets_the_twin_by_policy() {
    let emu = Emu::start().await;
    let body = json!({"initialTwin": {"properties": {"desired": {"mode": "initial"}}}});
    let e = call(&emu, "PUT", "/enrollments/dev-re", Some(body)).await.json();
    let key = DeviceKey::from_base64(e["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let first = assigned(register(&emu, Via::Mqtt, "dev-re", EnrollmentKey::Individual(key.clone()), None).await.0);
    assert_eq!(first.substatus.as_deref(), Some("initialAssignment"));
    emu.hub().patch_desired("dev-re", json!({"mode": "changed"})).await.unwrap();

    let again = assigned(register(&emu, Via::Mqtt, "dev-re", EnrollmentKey::Individual(key.clone()), None).await.0);
    assert_eq!(again.substatus.as_deref(), Some("reprovisionedToInitialAssignment"));
    assert_eq!(emu.hub().get_twin("dev-re").await.unwrap().desired["mode"], "changed");

    // migrateDeviceData false: the twin goes back to the enrollment's initial twin.
    let body = json!({
        "initialTwin": {"properties": {"desired": {"mode": "initial"}}},
        "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false},
    });
    assert_eq!(call(&emu, "PUT", "/enrollments/dev-re", Some(body)).await.status, 200);
    let reset = assigned(register(&emu, Via::Ws, "dev-re", EnrollmentKey::Individual(key), None).await.0);
    assert_eq!(reset.substatus.as_deref(), Some("deviceDataReset"));
    assert_eq!(emu.hub().get_twin("dev-re").await.unwrap().desired["mode"], "initial");

    // Deleting the registration makes the next one an initial assignment again.
    assert_eq!(call(&emu, "DELETE", "/registrations/dev-re", None).await.status, 204);
    assert_eq!(call(&emu, "GET", "/registrations/dev-re", None).await.status, 404);
}

#[tokio::test]
async fn the_service_api_answers_dps_shapes_and_errors() {
    let emu = Emu::start().await;
    // 404 for unknown records, with DPS-style error bodies.
    for path in ["/enrollments/none", "/enrollmentGroups/none", "/registrations/none"] {
        let a = call(&emu, "GET", path, None).await;
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(a.json()["errorCode"].as_u64().is_some_and(|c| c / 1000 == 404), "{}", a.body);
    }
    // 400 for bad bodies and ids.
    for (path, body) in [
        ("/enrollments/r1", "{not json"),
        ("/enrollments/r1", r#"{"attestation":{"type":"x509"}}"#),
        ("/enrollments/r1", r#"{"registrationId":"other"}"#),
        ("/enrollments/bad%20id", "{}"),
        ("/enrollmentGroups/g1", r#"{"attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"%%"}}}"#),
    ] {
        let token = emu.token("iothubowner");
        let h = [("host", "localhost"), ("authorization", token.as_str()), ("content-type", "application/json")];
        let a = http_raw(emu.r().http_addr, "PUT", path, &h, body).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.body);
        assert_eq!(a.json()["errorCode"], 400004);
    }
    // Given keys are kept; lists and deletes work; registryRead may read but not write.
    let k = DeviceKey::from_bytes(vec![1u8; 32]).to_base64();
    let body = json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": k, "secondaryKey": k}}});
    let e = call(&emu, "PUT", "/enrollments/r1", Some(body)).await.json();
    assert_eq!(e["attestation"]["symmetricKey"]["primaryKey"], k);
    assert_eq!(call(&emu, "PUT", "/enrollmentGroups/g1", None).await.status, 200);
    assert_eq!(call(&emu, "GET", "/enrollments", None).await.json().as_array().map(Vec::len), Some(1));
    assert_eq!(
        call(&emu, "POST", "/enrollmentGroups/query", Some(json!({"query": "*"}))).await.json()[0]["enrollmentGroupId"],
        "g1"
    );
    let read = emu.token("registryRead");
    let h = [("host", "localhost"), ("authorization", read.as_str())];
    assert_eq!(http_raw(emu.r().http_addr, "GET", "/enrollments/r1", &h, "").await.status, 200);
    assert_eq!(http_raw(emu.r().http_addr, "DELETE", "/enrollments/r1", &h, "").await.status, 401);
    assert_eq!(http_raw(emu.r().http_addr, "GET", "/enrollments", &[("host", "localhost")], "").await.status, 401);
    assert_eq!(call(&emu, "DELETE", "/enrollments/r1", None).await.status, 204);
    assert_eq!(call(&emu, "DELETE", "/enrollments/r1", None).await.status, 404);
    // The ID scope is public, with the host name as provisioning host.
    let info = http_raw(emu.r().http_addr, "GET", "/hubsim-emulator.json", &[("host", "localhost")], "").await.json();
    assert_eq!(info["idScope"], scope(&emu));
}

#[tokio::test]
async fn the_id_scope_survives_a_restart() {
    let mut emu = Emu::start().await;
    let before = scope(&emu);
    assert!(before.starts_with("0ne") && before.len() == 11, "{before}");
    emu.running.take().unwrap().shutdown().await;
    emu.restart_with(|_| {}).await;
    assert_eq!(scope(&emu), before);
}

/// Reads packets from a raw transport until one matches `pick` (the SDKs' view of the wire).
async fn next_packet<T>(
    t: &mut hubsim_device::Transport,
    framer: &mut hubsim_proto::packet::Framer,
    pick: impl Fn(hubsim_proto::mqttbytes::v4::Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            while let Some(p) = framer.next_packet().unwrap() {
                if let Some(v) = pick(p) {
                    return v;
                }
            }
            let b = t.recv_raw().await.expect("the connection stayed open");
            framer.push(&b);
        }
    })
    .await
    .expect("packet")
}

#[tokio::test]
async fn unknown_operations_get_404_and_bad_bodies_400_on_the_device_endpoint() {
    use hubsim_proto::mqttbytes::v4::{Packet, Publish, Subscribe};
    use hubsim_proto::mqttbytes::QoS;
    use hubsim_proto::topic::{DeviceIdentity, DeviceTopic, HubTopic, RequestId, TopicFilter};
    let emu = Emu::start().await;
    let e = call(&emu, "PUT", "/enrollments/raw-dev", Some(json!({}))).await.json();
    let key = DeviceKey::from_base64(e["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    // The Python SDK's form: no skn.
    let (mut t, code) = raw_dps_connect(&emu, "raw-dev", &key, None).await;
    let mut framer = hubsim_proto::packet::Framer::new(1 << 20);
    assert_eq!(code, hubsim_proto::mqttbytes::v4::ConnectReturnCode::Success);
    let mut sub = Subscribe::new(TopicFilter::DpsResponses.to_filter(&DeviceIdentity::device("")), QoS::AtLeastOnce);
    sub.pkid = 1;
    assert!(t.send_raw(&wire(Packet::Subscribe(sub))).await);
    next_packet(&mut t, &mut framer, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;

    let answer = |p: Packet| match p {
        Packet::Publish(p) => match HubTopic::parse(&p.topic) {
            Ok(HubTopic::DpsResponse { status, rid, .. }) => Some((status, rid, p.payload)),
            _ => None,
        },
        _ => None,
    };
    let status = DeviceTopic::DpsOperationStatus { rid: RequestId("7".into()), operation_id: "4.nope".into() };
    assert!(t.send_raw(&wire(Packet::Publish(Publish::new(status.to_string(), QoS::AtMostOnce, " ")))).await);
    let (code, rid, body) = next_packet(&mut t, &mut framer, answer).await;
    assert_eq!((code, rid.0.as_str()), (404, "7"));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errorCode"], 404204, "{body}");
    assert!(body["trackingId"].is_string() && body["timestampUtc"].is_string(), "{body}");

    let register = DeviceTopic::DpsRegister { rid: RequestId("8".into()) };
    assert!(t.send_raw(&wire(Packet::Publish(Publish::new(register.to_string(), QoS::AtMostOnce, "{not json")))).await);
    let (code, rid, body) = next_packet(&mut t, &mut framer, answer).await;
    assert_eq!((code, rid.0.as_str()), (400, "8"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["errorCode"], 400004);
}

#[tokio::test]
async fn an_enrollment_may_name_the_device_id_and_its_deletion_keeps_the_device() {
    let emu = Emu::start().await;
    let e = call(&emu, "PUT", "/enrollments/reg-a", Some(json!({"deviceId": "named-device"}))).await.json();
    assert_eq!(e["deviceId"], "named-device");
    let key = DeviceKey::from_base64(e["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let a = assigned(register(&emu, Via::Ws, "reg-a", EnrollmentKey::Individual(key.clone()), None).await.0);
    assert_eq!(a.device_id, "named-device");
    assert_eq!(send_as(&emu, &a, key, Via::Mqtt, "named").await, "named");
    // Deleting the enrollment deletes its registration state, not the device (as DPS).
    assert_eq!(call(&emu, "DELETE", "/enrollments/reg-a", None).await.status, 204);
    assert_eq!(call(&emu, "GET", "/registrations/reg-a", None).await.status, 404);
    assert!(emu.hub().get_device("named-device").await.is_ok());
}

/// `body` with the values that differ per run (etags, times) replaced by `…`, key order kept.
fn stable(body: &str) -> String {
    let mut s = body.to_owned();
    for key in ["\"etag\":\"", "\"createdDateTimeUtc\":\"", "\"lastUpdatedDateTimeUtc\":\""] {
        let mut from = 0;
        while let Some(at) = s[from..].find(key).map(|i| from + i + key.len()) {
            let end = at + s[at..].find('"').unwrap();
            s.replace_range(at..end, "…");
            from = at;
        }
    }
    s
}

#[tokio::test]
async fn enrollment_answers_keep_their_exact_dps_shape() {
    let emu = Emu::start().await;
    let (p, s) = (DeviceKey::from_bytes(vec![1u8; 32]).to_base64(), DeviceKey::from_bytes(vec![2u8; 32]).to_base64());
    let full = json!({
        "deviceId": "d-full",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": p, "secondaryKey": s}},
        "capabilities": {"iotEdge": true},
        "initialTwin": {"tags": {"site": "A"}, "properties": {"desired": {"rate": 5}}},
        "provisioningStatus": "enabled",
        "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false},
        "allocationPolicy": "hashed",
    });
    // The service API answers with the keys sorted (as serde_json's maps hold them).
    let individual = format!(
        r#"{{"attestation":{{"symmetricKey":{{"primaryKey":"{p}","secondaryKey":"{s}"}},"type":"symmetricKey"}},"capabilities":{{"iotEdge":true}},"createdDateTimeUtc":"…","deviceId":"d-full","etag":"…","initialTwin":{{"properties":{{"desired":{{"rate":5}}}},"tags":{{"site":"A"}}}},"lastUpdatedDateTimeUtc":"…","provisioningStatus":"enabled","registrationId":"r-full","reprovisionPolicy":{{"migrateDeviceData":false,"updateHubAssignment":true}}}}"#
    );
    let put = call(&emu, "PUT", "/enrollments/r-full", Some(full.clone())).await;
    assert_eq!(put.status, 200);
    assert_eq!(stable(&put.body), individual);
    assert_eq!(stable(&call(&emu, "GET", "/enrollments/r-full", None).await.body), individual);
    assert_eq!(stable(&call(&emu, "GET", "/enrollments", None).await.body), format!("[{individual}]"));
    let group = format!(
        r#"{{"attestation":{{"symmetricKey":{{"primaryKey":"{p}","secondaryKey":"{s}"}},"type":"symmetricKey"}},"capabilities":{{"iotEdge":true}},"createdDateTimeUtc":"…","enrollmentGroupId":"g-full","etag":"…","initialTwin":{{"properties":{{"desired":{{"rate":5}}}},"tags":{{"site":"A"}}}},"lastUpdatedDateTimeUtc":"…","provisioningStatus":"enabled","reprovisionPolicy":{{"migrateDeviceData":false,"updateHubAssignment":true}}}}"#
    );
    let put = call(&emu, "PUT", "/enrollmentGroups/g-full", Some(full)).await;
    assert_eq!(put.status, 200);
    assert_eq!(stable(&put.body), group);
    assert_eq!(stable(&call(&emu, "GET", "/enrollmentGroups/g-full", None).await.body), group);
    assert_eq!(stable(&call(&emu, "GET", "/enrollmentGroups", None).await.body), format!("[{group}]"));
    // The defaults of an empty body: no deviceId or initialTwin, enabled, keys generated.
    let bare = call(&emu, "PUT", "/enrollmentGroups/g-bare", Some(json!({}))).await.json();
    let keys = &bare["attestation"]["symmetricKey"];
    let (gp, gs) = (keys["primaryKey"].as_str().unwrap(), keys["secondaryKey"].as_str().unwrap());
    assert_eq!(
        stable(&call(&emu, "GET", "/enrollmentGroups/g-bare", None).await.body),
        format!(
            r#"{{"attestation":{{"symmetricKey":{{"primaryKey":"{gp}","secondaryKey":"{gs}"}},"type":"symmetricKey"}},"capabilities":{{"iotEdge":false}},"createdDateTimeUtc":"…","enrollmentGroupId":"g-bare","etag":"…","lastUpdatedDateTimeUtc":"…","provisioningStatus":"enabled","reprovisionPolicy":{{"migrateDeviceData":true,"updateHubAssignment":true}}}}"#
        )
    );
}

// ---- bounds and robustness (security review, 2026-11-30) ---------------------------------------------------

/// Creates an enrollment group with generated keys; its primary key.
async fn group(emu: &Emu, id: &str) -> DeviceKey {
    let put = call(emu, "PUT", &format!("/enrollmentGroups/{id}"), Some(json!({}))).await;
    assert_eq!(put.status, 200, "{}", put.body);
    DeviceKey::from_base64(put.json()["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap()
}

/// JSON text of arrays nested `levels` deep.
fn nested_text(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// A JSON value of arrays nested `levels` deep.
fn nested_value(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 1..levels {
        v = json!([v]);
    }
    json!([v])
}

/// A registration record as a hubsim before the payload bound stored it: holding `payload` as it came.
fn legacy_registration(id: &str, group: Option<&str>, payload: Value) -> hubsim_hub::hub::dps::RegistrationRecord {
    hubsim_hub::hub::dps::RegistrationRecord {
        registration_id: id.into(),
        created_date_time_utc: "2026-11-01T00:00:00.000Z".into(),
        assigned_hub: Some("localhost".into()),
        device_id: Some(id.to_ascii_lowercase()),
        status: "assigned".into(),
        substatus: Some("initialAssignment".into()),
        error_code: None,
        error_message: None,
        last_updated_date_time_utc: "2026-11-01T00:00:00.000Z".into(),
        etag: "legacy".into(),
        payload: None,
        request_payload: Some(payload),
        enrollment_group_id: group.map(str::to_owned),
        operation_id: "4.legacy".into(),
    }
}

#[tokio::test]
async fn a_registration_payload_nested_too_deep_is_refused_and_every_record_stays_readable() {
    let emu = Emu::start().await;
    let gk = group(&emu, "deep-g").await;
    // 127 levels: the core's parser takes it (the body is 128 deep), but the stored record would be 128 deep,
    // past what serde_json reads back. Refused with DPS's 400, naming the limit; nothing is stored.
    let deep = nested_text(127);
    let (r, _, _) = register(&emu, Via::Mqtt, "deep-a", EnrollmentKey::Group(gk.clone()), Some(&deep)).await;
    match r {
        Err(ProvisionError::Dps(ProvisioningError::Service { status, error_code, message })) => {
            assert_eq!((status, error_code), (400, Some(400004)), "{message}");
            assert!(message.contains("127 levels") && message.contains("at most 32 levels"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(call(&emu, "GET", "/registrations/deep-a", None).await.status, 404);
    assert!(emu.hub().get_device("deep-a").await.is_err());
    let rec = emu.wait_log(|r| r.operation == "dpsRegister" && r.device_id.as_deref() == Some("deep-a")).await;
    assert_eq!((rec.reason.as_str(), rec.result_type), ("failed", 400004), "{}", rec.description);

    // At the limit the payload is kept and reads back everywhere it is shown.
    let ok = nested_text(32);
    let a = assigned(register(&emu, Via::Ws, "deep-b", EnrollmentKey::Group(gk), Some(&ok)).await.0);
    assert_eq!(a.device_id, "deep-b");
    let st = call(&emu, "GET", "/registrations/deep-b", None).await;
    assert_eq!(st.status, 200, "{}", st.body);
    assert_eq!(st.json()["requestPayload"], serde_json::from_str::<Value>(&ok).unwrap());
    for (method, path) in
        [("GET", "/registrations"), ("POST", "/registrations/deep-g/query"), ("GET", "/enrollmentGroups")]
    {
        let a = call(&emu, method, path, Some(json!({}))).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
    }
    assert_eq!(call(&emu, "DELETE", "/enrollmentGroups/deep-g", None).await.status, 204);
    assert_eq!(call(&emu, "GET", "/registrations/deep-b", None).await.status, 404);
}

#[tokio::test]
async fn an_unreadable_stored_record_is_skipped_by_lists_and_can_still_be_deleted() {
    let mut emu = Emu::start().await;
    let gk = group(&emu, "old-g").await;
    group(&emu, "innocent").await;
    let good = assigned(register(&emu, Via::Mqtt, "good-1", EnrollmentKey::Group(gk.clone()), None).await.0);
    assert_eq!(good.device_id, "good-1");
    // Records an older hubsim stored: a 127-level payload inside makes each 128 levels deep, past what
    // serde_json reads back.
    let poisoned = ["old-1", "old-2", "old-3"];
    for (i, id) in poisoned.into_iter().enumerate() {
        let rec = legacy_registration(id, (i < 2).then_some("old-g"), nested_value(127));
        emu.hub().store.write(move |tx| tx.put_registration(&rec)).await.unwrap();
    }
    // The same after a restart: the records are on disk.
    emu.running.take().unwrap().shutdown().await;
    emu.restart_with(|_| {}).await;

    // Lists skip them; the others are listed and work.
    let list = call(&emu, "GET", "/registrations", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let ids: Vec<Value> = list.json().as_array().unwrap().iter().map(|r| r["registrationId"].clone()).collect();
    assert_eq!(ids, vec![json!("good-1")]);
    let of_group = call(&emu, "POST", "/registrations/old-g/query", Some(json!({}))).await;
    assert_eq!(of_group.status, 200, "{}", of_group.body);
    assert_eq!(of_group.json().as_array().map(Vec::len), Some(1));
    // Reading one by id says what is wrong and how to get rid of it.
    let one = call(&emu, "GET", "/registrations/old-1", None).await;
    assert_eq!(one.status, 500, "{}", one.body);
    assert!(one.body.contains("'old-1' cannot be read") && one.body.contains("DELETE /registrations/old-1"));
    // Deleting another group is not disturbed by them.
    assert_eq!(call(&emu, "DELETE", "/enrollmentGroups/innocent", None).await.status, 204);
    // An unreadable record is deleted by id …
    assert_eq!(call(&emu, "DELETE", "/registrations/old-3", None).await.status, 204);
    assert_eq!(call(&emu, "GET", "/registrations/old-3", None).await.status, 404);
    // … replaced when its device registers again …
    let again = assigned(register(&emu, Via::Mqtt, "old-2", EnrollmentKey::Group(gk), None).await.0);
    assert_eq!(again.substatus.as_deref(), Some("initialAssignment"));
    assert_eq!(call(&emu, "GET", "/registrations/old-2", None).await.json()["enrollmentGroupId"], "old-g");
    // … and deleted with its group (its group is read from the record even though the rest cannot be).
    assert_eq!(call(&emu, "DELETE", "/enrollmentGroups/old-g", None).await.status, 204);
    for id in ["old-1", "old-2", "good-1"] {
        assert_eq!(call(&emu, "GET", &format!("/registrations/{id}"), None).await.status, 404, "{id}");
    }
    assert_eq!(call(&emu, "GET", "/registrations", None).await.json(), json!([]));
}

#[tokio::test]
async fn an_initial_twin_obeys_the_twin_rules() {
    let emu = Emu::start().await;
    let deep = {
        let mut v = json!(1);
        for _ in 0..60 {
            v = json!({ "n": v });
        }
        v
    };
    let big: serde_json::Map<String, Value> = (0..9).map(|i| (format!("k{i}"), json!("x".repeat(4000)))).collect();
    for (twin, what) in [
        (
            json!({"properties": {"desired": {"bad.name with space": 1}}}),
            "initialTwin.properties.desired: property name 'bad.name with space'",
        ),
        (json!({"tags": {"$weird": 1}}), "initialTwin.tags: property name '$weird'"),
        (json!({"properties": {"desired": {"deep": deep}}}), "nests deeper than 10 levels"),
        (json!({"properties": {"desired": big}}), "desired would be"),
        (json!({"tags": {"t": "y".repeat(4096), "u": "y".repeat(4096)}}), "tags would be"),
        (json!({"tags": {"s": "y".repeat(4097)}}), "twin strings are at most 4096 bytes"),
        (json!({"properties": "x"}), "initialTwin.properties must be a JSON object"),
    ] {
        for path in ["/enrollments/itwin-1", "/enrollmentGroups/itwin-g"] {
            let a = call(&emu, "PUT", path, Some(json!({ "initialTwin": twin }))).await;
            assert_eq!(a.status, 400, "{path} {what}: {}", a.body);
            assert_eq!(a.json()["errorCode"], 400004);
            assert!(a.body.contains(what), "{path}: {} should name {what}", a.body);
        }
    }
    assert_eq!(call(&emu, "GET", "/enrollments/itwin-1", None).await.status, 404);

    // A valid initial twin, with the system properties a client echoes from a twin it read: those are dropped.
    let twin = json!({
        "tags": {"site": "lab", "$version": 3},
        "properties": {"desired": {"rate": 5, "$metadata": {"$lastUpdated": "x"}, "$version": 7}},
    });
    let e = call(&emu, "PUT", "/enrollments/itwin-1", Some(json!({ "initialTwin": twin }))).await;
    assert_eq!(e.status, 200, "{}", e.body);
    assert_eq!(e.json()["initialTwin"], json!({"tags": {"site": "lab"}, "properties": {"desired": {"rate": 5}}}));
    let key = DeviceKey::from_base64(e.json()["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    assigned(register(&emu, Via::Mqtt, "itwin-1", EnrollmentKey::Individual(key), None).await.0);
    let t = emu.hub().patch_desired("itwin-1", json!({"a": 1})).await.unwrap();
    assert_eq!(
        (t.desired["rate"].clone(), t.desired["a"].clone(), t.tags["site"].clone()),
        (json!(5), json!(1), json!("lab"))
    );

    // An enrollment stored by an older hubsim with an initial twin that breaks the rules is not applied.
    let mut legacy = emu.hub().get_enrollment("itwin-1").await.unwrap();
    legacy.registration_id = "itwin-2".into();
    legacy.enrollment.initial_twin = Some(json!({"properties": {"desired": {"bad.name": 1}}}));
    let legacy_key = DeviceKey::from_base64(&legacy.enrollment.attestation.symmetric_key.primary_key).unwrap();
    emu.hub().store.write(move |tx| tx.put_enrollment(&legacy)).await.unwrap();
    let (r, _, _) = register(&emu, Via::Mqtt, "itwin-2", EnrollmentKey::Individual(legacy_key), None).await;
    match r {
        Err(ProvisionError::Dps(ProvisioningError::Service { status, message, .. })) => {
            assert_eq!(status, 400);
            assert!(
                message.contains("initialTwin.properties.desired") && message.contains("PUT the enrollment again"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(emu.hub().get_device("itwin-2").await.is_err());
}

/// Sends a DPS CONNECT for `registration_id` signed with `key` (and `skn`, `registration` as the C and Node SDKs
/// sign, none as Python's) on a raw transport; the CONNACK's code.
async fn raw_dps_connect(
    emu: &Emu,
    registration_id: &str,
    key: &DeviceKey,
    skn: Option<&str>,
) -> (hubsim_device::Transport, hubsim_proto::mqttbytes::v4::ConnectReturnCode) {
    use hubsim_proto::mqttbytes::v4::{Connect, Login, Packet};
    use hubsim_proto::sas::SasToken;
    let config = ProvisioningConfig::new(scope(emu), registration_id);
    let token = SasToken::sign(key, &config.resource(), now_unix() + 600, skn);
    let mut connect = Connect::new(registration_id);
    connect.login = Some(Login { username: config.username().to_string(), password: token.to_string() });
    let mut t = open_raw(emu, Via::Mqtt).await;
    let mut framer = hubsim_proto::packet::Framer::new(1 << 20);
    assert!(t.send_raw(&wire(Packet::Connect(connect))).await);
    let code = next_packet(&mut t, &mut framer, |p| match p {
        Packet::ConnAck(a) => Some(a.code),
        _ => None,
    })
    .await;
    (t, code)
}

#[tokio::test]
async fn a_dps_connect_reads_the_enrollments_without_waiting_for_the_writer() {
    use hubsim_proto::mqttbytes::v4::ConnectReturnCode;
    let emu = Emu::start().await;
    let gk = group(&emu, "line-9").await;
    // Hold the store's single writer: a write that waits until the test lets it go.
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let store = emu.hub().store.clone();
    let held = tokio::spawn(async move {
        store
            .write(move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
    });
    started.await.unwrap();
    // The CONNECT is checked against the enrollments all the same (a read transaction): accepted with the
    // derived key while every write waits.
    let (_t, code) =
        raw_dps_connect(&emu, "sensor-9", &gk.derive_for_registration("sensor-9"), Some("registration")).await;
    assert_eq!(code, ConnectReturnCode::Success);
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
}

#[tokio::test]
async fn enrollment_groups_are_capped_at_dps_quota() {
    let emu = Emu::start().await;
    // Azure DPS: "Maximum number of enrollment groups (symmetric key) | 100 | not adjustable".
    for i in 0..100 {
        group(&emu, &format!("cap-{i}")).await;
    }
    let over = call(&emu, "PUT", "/enrollmentGroups/cap-extra", Some(json!({}))).await;
    assert_eq!(over.status, 409, "{}", over.body);
    assert_eq!(over.json()["errorCode"], 409001);
    assert!(over.body.contains("100 enrollment groups"), "{}", over.body);
    assert_eq!(call(&emu, "GET", "/enrollmentGroups/cap-extra", None).await.status, 404);
    // Replacing a group at the cap is fine; deleting one makes room.
    assert_eq!(
        call(&emu, "PUT", "/enrollmentGroups/cap-7", Some(json!({"provisioningStatus": "disabled"}))).await.status,
        200
    );
    assert_eq!(call(&emu, "DELETE", "/enrollmentGroups/cap-3", None).await.status, 204);
    assert_eq!(call(&emu, "PUT", "/enrollmentGroups/cap-extra", Some(json!({}))).await.status, 200);
    assert_eq!(call(&emu, "GET", "/enrollmentGroups", None).await.json().as_array().map(Vec::len), Some(100));
}

#[tokio::test]
async fn registration_ids_are_case_insensitive_and_follow_dps_rules() {
    let emu = Emu::start().await;
    let gk = group(&emu, "case-g").await;
    // Three spellings of one id are one registration and one device, named by the lowercase id; each device
    // keeps the key derived from its own spelling.
    let first = assigned(register(&emu, Via::Mqtt, "Sensor-A", EnrollmentKey::Group(gk.clone()), None).await.0);
    assert_eq!((first.device_id.as_str(), first.substatus.as_deref()), ("sensor-a", Some("initialAssignment")));
    for spelling in ["sensor-a", "SENSOR-A"] {
        let (r, _, device_key) = register(&emu, Via::Ws, spelling, EnrollmentKey::Group(gk.clone()), None).await;
        let a = assigned(r);
        assert_eq!(a.device_id, "sensor-a", "{spelling}");
        assert_eq!(a.substatus.as_deref(), Some("reprovisionedToInitialAssignment"), "{spelling}");
        assert_eq!(send_as(&emu, &a, device_key, Via::Mqtt, spelling).await, spelling);
    }
    let regs = call(&emu, "GET", "/registrations", None).await.json();
    assert_eq!(regs.as_array().map(Vec::len), Some(1), "{regs}");
    assert_eq!(regs[0]["registrationId"], "sensor-a");
    for lookup in ["Sensor-A", "SENSOR-A"] {
        assert_eq!(call(&emu, "GET", &format!("/registrations/{lookup}"), None).await.status, 200, "{lookup}");
    }
    assert!(emu.hub().get_device("Sensor-A").await.is_err() && emu.hub().get_device("SENSOR-A").await.is_err());
    // A device that derives its key from the lowercase id DPS keeps is let in too.
    let lower_key = gk.derive_for_registration("sensor-b");
    let (_t, code) = raw_dps_connect(&emu, "Sensor-B", &lower_key, Some("registration")).await;
    assert_eq!(code, hubsim_proto::mqttbytes::v4::ConnectReturnCode::Success);

    // Individual enrollments: one per id whatever the case, answered under the lowercase id.
    let e = call(&emu, "PUT", "/enrollments/Dev-B", Some(json!({"registrationId": "DEV-B"}))).await;
    assert_eq!(e.status, 200, "{}", e.body);
    assert_eq!(e.json()["registrationId"], "dev-b");
    assert_eq!(call(&emu, "PUT", "/enrollments/dev-b", Some(json!({}))).await.status, 200);
    assert_eq!(call(&emu, "GET", "/enrollments", None).await.json().as_array().map(Vec::len), Some(1));
    let key = DeviceKey::from_base64(
        call(&emu, "GET", "/enrollments/DEV-b", None).await.json()["attestation"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        assigned(register(&emu, Via::Mqtt, "Dev-B", EnrollmentKey::Individual(key), None).await.0).device_id,
        "dev-b"
    );

    // DPS's character rule: a special character neither first nor last; refused at CONNECT (nothing is created)
    // and in the service API, with DPS's "Invalid RegistrationId".
    for bad in ["-lead", ".lead", ":lead", "_lead", "trail-", "trail."] {
        let (r, _, _) = register(&emu, Via::Mqtt, bad, EnrollmentKey::Group(gk.clone()), None).await;
        match r {
            Err(ProvisionError::Dps(ProvisioningError::Refused(c))) => assert_eq!(c.0, 4, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
        assert!(emu.hub().get_device(bad).await.is_err(), "{bad}");
        let a = call(&emu, "PUT", &format!("/enrollments/{bad}"), Some(json!({}))).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.body.contains("Invalid RegistrationId"), "{}", a.body);
    }
    let rec = emu.wait_log(|r| r.operation == "dpsConnectRefused" && r.device_id.as_deref() == Some("-lead")).await;
    assert!(rec.description.contains("Invalid RegistrationId"), "{}", rec.description);
}
