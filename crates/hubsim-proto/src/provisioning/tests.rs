//! A device ↔ DPS pair in memory on virtual time, with a scripted enrollment service answering the requests.

use super::service::State as DpsState;
use super::*;
use crate::device::{ConnectRefusal, InputError};
use crate::hub::CloseReason;
use crate::packet::{encode, Framer};
use crate::sas::{DeviceKey, SasToken};
use crate::time::Instant;
use crate::topic::RequestId;
use bytes::BytesMut;
use core::time::Duration;
use mqttbytes::v4::{Connect, ConnectReturnCode, Login, Packet, Publish, Subscribe};
use mqttbytes::QoS;
use proptest::prelude::*;
use std::collections::VecDeque;

const T0: Instant = Instant(1_000);
const SCOPE: &str = "0ne00000A0A";
const REG: &str = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
const GROUP_KEY: &str = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
const KEY: &str = "cGFzc3dvcmQ=";
const OP: &str = "4.d0a671905ea5b2c8.42d78160-0000";
/// The token expiry, Unix seconds; the service checks tokens at this time too.
const EXPIRY: u64 = 1_700_000_000;

/// How the scripted service answers one request.
#[derive(Debug, Clone)]
enum Answer {
    Assigning(u64),
    Result(Box<RegistrationState>),
    Error(u16, u64, Option<u64>),
    Silence,
}

struct Pair {
    dev: ProvisioningSession,
    dps: DpsSession,
    now: Instant,
    /// The key the service holds: the individual key, or the group key it derives from.
    service_key: EnrollmentKey,
    script: VecDeque<Answer>,
    dev_events: Vec<ProvisioningEvent>,
    dps_events: Vec<(Instant, DpsEvent)>,
    /// Everything each side sent, decoded.
    dev_wire: Vec<Packet>,
    dps_wire: Vec<Packet>,
    /// Feed the device's bytes to DPS (and back) this many bytes at a time; `None` feeds each write whole.
    chunk: Option<usize>,
}

fn decode_all(bytes: &[u8]) -> Vec<Packet> {
    let mut f = Framer::new(1 << 20);
    f.push(bytes);
    std::iter::from_fn(|| f.next_packet().unwrap()).collect()
}

fn assigned_state() -> RegistrationState {
    let mut s = RegistrationState::new(REG, RegistrationStatus::Assigned);
    s.assigned_hub = Some("hub.local".into());
    s.device_id = Some(REG.into());
    s.substatus = Some("initialAssignment".into());
    s.created_utc = Some("2026-11-29T14:00:00.0000000Z".into());
    s.last_updated_utc = Some("2026-11-29T14:00:03.0000000Z".into());
    s.etag = Some("IjYxMDA4ZDQ2In0=".into());
    s.payload = Some(r#"{"welcome":"to \"hub\""}"#.into());
    s
}

impl Pair {
    fn new(device_key: EnrollmentKey, service_key: EnrollmentKey, script: Vec<Answer>) -> Pair {
        let mut cfg = ProvisioningConfig::new(SCOPE, REG);
        cfg.client_version = Some("hubsim/0.1".into());
        cfg.payload = Some(r#"{"modelId":"dtmi:com:example:Thermostat;1"}"#.into());
        Pair {
            dev: ProvisioningSession::new(cfg, &device_key),
            dps: DpsSession::new(DpsConfig::default(), T0),
            now: T0,
            service_key,
            script: script.into(),
            dev_events: vec![],
            dps_events: vec![],
            dev_wire: vec![],
            dps_wire: vec![],
            chunk: None,
        }
    }

    fn individual(script: Vec<Answer>) -> Pair {
        let k = EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap());
        Pair::new(k.clone(), k, script)
    }

    fn feed_dps(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(self.chunk.unwrap_or(bytes.len()).max(1)) {
            self.dps.handle_input(self.now, c);
        }
    }

    fn feed_dev(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(self.chunk.unwrap_or(bytes.len()).max(1)) {
            let _ = self.dev.handle_input(self.now, c);
        }
    }

    fn answer(&mut self, rid: &RequestId) {
        let result = match self.script.pop_front() {
            Some(Answer::Assigning(s)) => self.dps.respond_assigning(rid, OP, s),
            Some(Answer::Result(state)) => self.dps.respond_result(rid, OP, &state),
            Some(Answer::Error(status, code, retry)) => {
                self.dps.respond_error(rid, status, &ErrorBody::new(code, "scripted error"), retry)
            }
            Some(Answer::Silence) | None => Ok(()),
        };
        result.unwrap();
    }

    /// Moves bytes both ways and lets the service answer until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(b) = self.dev.poll_transmit() {
                self.dev_wire.extend(decode_all(&b));
                self.feed_dps(&b);
                moved = true;
            }
            while let Some(ev) = self.dps.poll_event() {
                match &ev {
                    DpsEvent::Authenticate(req) => {
                        let key = self.service_key.device_key(&req.registration_id);
                        match req.token.verify(&[&key], &req.resource(), EXPIRY) {
                            Ok(()) => self.dps.accept(self.now),
                            Err(e) => self.dps.refuse(ConnectReturnCode::NotAuthorized, e.to_string()),
                        }
                    }
                    DpsEvent::RegisterRequested { rid, .. } | DpsEvent::StatusRequested { rid, .. } => {
                        let rid = rid.clone();
                        self.answer(&rid);
                    }
                    DpsEvent::Closed { .. } => {}
                }
                self.dps_events.push((self.now, ev));
                moved = true;
            }
            while let Some(b) = self.dps.poll_transmit() {
                self.dps_wire.extend(decode_all(&b));
                self.feed_dev(&b);
                moved = true;
            }
            while let Some(ev) = self.dev.poll_event() {
                self.dev_events.push(ev);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Starts and runs timers until the device has its result.
    fn run(&mut self) -> Result<Registration, ProvisioningError> {
        self.dev.start(self.now, EXPIRY).unwrap();
        for _ in 0..100 {
            self.pump();
            if let Some(r) = self.dev.result() {
                return r.clone();
            }
            let t = self.dev.poll_timeout().expect("a running registration always has a timer");
            self.now = t.max(self.now);
            self.dev.handle_timeout(self.now);
            self.dps.handle_timeout(self.now);
        }
        panic!("no result after 100 timer rounds: {:?}", self.dev_events);
    }

    fn progress(&self) -> Vec<Progress> {
        self.dev_events
            .iter()
            .filter_map(|e| match e {
                ProvisioningEvent::Progress(p) => Some(p.clone()),
                ProvisioningEvent::Finished(_) => None,
            })
            .collect()
    }

    fn dps_closed(&self) -> Option<&CloseReason> {
        self.dps_events.iter().find_map(|(_, e)| match e {
            DpsEvent::Closed { reason } => Some(reason),
            DpsEvent::Authenticate(_) | DpsEvent::RegisterRequested { .. } | DpsEvent::StatusRequested { .. } => None,
        })
    }

    fn request_times(&self) -> Vec<Instant> {
        self.dps_events
            .iter()
            .filter(|(_, e)| matches!(e, DpsEvent::RegisterRequested { .. } | DpsEvent::StatusRequested { .. }))
            .map(|(t, _)| *t)
            .collect()
    }
}

fn publishes(packets: &[Packet]) -> Vec<(String, String)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.clone(), String::from_utf8(p.payload.to_vec()).unwrap())),
            _ => None,
        })
        .collect()
}

fn expected_assignment() -> Registration {
    Registration::Assigned(Assignment {
        assigned_hub: "hub.local".into(),
        device_id: REG.into(),
        substatus: Some("initialAssignment".into()),
        payload: Some(r#"{"welcome":"to \"hub\""}"#.into()),
    })
}

#[test]
fn assigned_after_two_polls_honouring_retry_after() {
    let mut p =
        Pair::individual(vec![Answer::Assigning(3), Answer::Assigning(5), Answer::Result(Box::new(assigned_state()))]);
    assert_eq!(p.run(), Ok(expected_assignment()));
    let retry = |s| Progress::Assigning { operation_id: OP.into(), retry_in: Duration::from_secs(s) };
    assert_eq!(p.progress(), vec![Progress::Connecting, Progress::Registering { attempt: 1 }, retry(3), retry(5)]);
    let at = |s: u64| T0 + Duration::from_secs(s);
    assert_eq!(p.request_times(), vec![at(0), at(3), at(8)]);
    assert_eq!(p.dev_wire.last(), Some(&Packet::Disconnect));
    assert_eq!(p.dps_closed(), Some(&CloseReason::ClientDisconnected));
    assert_eq!(p.dev.poll_timeout(), None);
}

#[test]
fn an_assignment_that_never_finishes_ends_after_ten_minutes() {
    // Every answer is 'assigning' with retry-after 60 s: the 10th poll is at 10 minutes (T0 + 600 s) and ends it.
    let mut p = Pair::individual(vec![Answer::Assigning(60); 20]);
    let waited = Duration::from_secs(600);
    assert_eq!(p.run(), Err(ProvisioningError::StillAssigning { answers: 11, waited }));
    assert_eq!(p.request_times().len(), 11);
    assert_eq!(p.request_times().last(), Some(&(T0 + waited)));
    assert_eq!(p.dev_wire.last(), Some(&Packet::Disconnect));
    assert_eq!(p.dev.poll_timeout(), None);
}

#[test]
fn an_endless_stream_of_immediate_assigning_answers_ends_after_300() {
    // retry-after 0: the device polls at once each time, so the count bounds it (time alone would not).
    let mut p = Pair::individual(vec![Answer::Assigning(0); 400]);
    p.dev.start(p.now, EXPIRY).unwrap();
    for _ in 0..400 {
        p.pump();
        if p.dev.result().is_some() {
            break;
        }
        // Each poll is due at once: the clock never moves.
        assert_eq!(p.dev.poll_timeout(), Some(p.now));
        p.dev.handle_timeout(p.now);
    }
    let r = p.dev.result().cloned();
    assert_eq!(r, Some(Err(ProvisioningError::StillAssigning { answers: 301, waited: Duration::ZERO })));
    assert_eq!(p.request_times().len(), 301);
    let text = r.unwrap().unwrap_err().to_string();
    assert!(text.starts_with("DPS still answered 'assigning' after 301 status requests over 0 s"), "{text}");
}

#[test]
fn exact_wire_topics_and_bodies() {
    let mut p = Pair::individual(vec![Answer::Assigning(3), Answer::Result(Box::new(assigned_state()))]);
    p.run().unwrap();
    let Packet::Connect(c) = &p.dev_wire[0] else { panic!("{:?}", p.dev_wire) };
    assert_eq!(c.client_id, REG);
    assert!(c.clean_session);
    let login = c.login.as_ref().unwrap();
    assert_eq!(
        login.username,
        format!("{SCOPE}/registrations/{REG}/api-version=2019-03-31&ClientVersion=hubsim%2F0.1")
    );
    assert!(login.password.starts_with(&format!("SharedAccessSignature sr={SCOPE}%2Fregistrations%2F{REG}&sig=")));
    assert!(login.password.ends_with(&format!("&se={EXPIRY}&skn=registration")));
    let Packet::Subscribe(s) = &p.dev_wire[1] else { panic!("{:?}", p.dev_wire) };
    assert_eq!((s.filters[0].path.as_str(), s.filters[0].qos), ("$dps/registrations/res/#", QoS::AtLeastOnce));
    assert_eq!(
        publishes(&p.dev_wire),
        vec![
            (
                "$dps/registrations/PUT/iotdps-register/?$rid=1".to_owned(),
                format!(r#"{{"registrationId":"{REG}","payload":{{"modelId":"dtmi:com:example:Thermostat;1"}}}}"#)
            ),
            (format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={OP}"), " ".to_owned()),
        ]
    );
    assert_eq!(
        publishes(&p.dps_wire),
        vec![
            (
                "$dps/registrations/res/202/?$rid=1&retry-after=3".to_owned(),
                format!(r#"{{"operationId":"{OP}","status":"assigning"}}"#)
            ),
            (
                "$dps/registrations/res/200/?$rid=2".to_owned(),
                format!(
                    concat!(
                        r#"{{"operationId":"{op}","status":"assigned","registrationState":{{"registrationId":"{reg}","#,
                        r#""createdDateTimeUtc":"2026-11-29T14:00:00.0000000Z","assignedHub":"hub.local","#,
                        r#""deviceId":"{reg}","status":"assigned","substatus":"initialAssignment","#,
                        r#""lastUpdatedDateTimeUtc":"2026-11-29T14:00:03.0000000Z","etag":"IjYxMDA4ZDQ2In0=","#,
                        r#""payload":{{"welcome":"to \"hub\""}}}}}}"#
                    ),
                    op = OP,
                    reg = REG
                )
            ),
        ]
    );
    let requested = p.dps_events.iter().find_map(|(_, e)| match e {
        DpsEvent::RegisterRequested { registration_id, payload_raw, .. } => Some((registration_id, payload_raw)),
        _ => None,
    });
    assert_eq!(requested, Some((&REG.to_owned(), &Some(r#"{"modelId":"dtmi:com:example:Thermostat;1"}"#.to_owned()))));
}

#[test]
fn wrong_key_is_refused_with_0x05_and_a_typed_failure() {
    let good = EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap());
    let bad = EnrollmentKey::Individual(DeviceKey::from_base64("d3Jvbmc=").unwrap());
    let mut p = Pair::new(bad, good, vec![]);
    let err = p.run().unwrap_err();
    assert_eq!(err, ProvisioningError::Refused(ConnectRefusal(5)));
    assert!(err.to_string().starts_with("DPS refused the connection (CONNACK 0x05): the key, the ID scope"), "{err}");
    assert!(matches!(p.dps_closed(), Some(CloseReason::Refused(r)) if r.code() as u8 == 5));
    assert_eq!(p.progress(), vec![Progress::Connecting]);
    // No goodbye after a refusal: DPS closes the transport.
    assert!(!p.dev_wire.contains(&Packet::Disconnect));
}

#[test]
fn throttled_then_registered_again_then_assigned() {
    let mut p = Pair::individual(vec![
        Answer::Error(429, 429001, Some(4)),
        Answer::Assigning(1),
        Answer::Result(Box::new(assigned_state())),
    ]);
    assert_eq!(p.run(), Ok(expected_assignment()));
    assert_eq!(
        p.progress(),
        vec![
            Progress::Connecting,
            Progress::Registering { attempt: 1 },
            Progress::Retrying { status: 429, retry_in: Duration::from_secs(4) },
            Progress::Registering { attempt: 2 },
            Progress::Assigning { operation_id: OP.into(), retry_in: Duration::from_secs(1) },
        ]
    );
    assert_eq!(p.request_times(), vec![T0, T0 + Duration::from_secs(4), T0 + Duration::from_secs(5)]);
}

#[test]
fn server_errors_back_off_exponentially_then_give_up() {
    let mut p = Pair::individual(vec![Answer::Error(503, 503000, None); 4]);
    p.dev = {
        let mut cfg = p.dev.config().clone();
        cfg.max_retries = 3;
        ProvisioningSession::new(cfg, &EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap()))
    };
    assert_eq!(p.run(), Err(ProvisioningError::RetriesExhausted { status: 503, attempts: 4 }));
    let s = |n| T0 + Duration::from_secs(n);
    assert_eq!(p.request_times(), vec![s(0), s(2), s(6), s(14)]);
}

#[test]
fn failed_registration_carries_its_error_code() {
    let mut state = RegistrationState::new(REG, RegistrationStatus::Failed);
    state.error_code = Some(400207);
    state.error_message = Some("Custom allocation failed with status code: 400".into());
    let mut p = Pair::individual(vec![Answer::Assigning(1), Answer::Result(Box::new(state))]);
    assert_eq!(
        p.run(),
        Ok(Registration::Failed {
            error_code: Some(400207),
            message: "Custom allocation failed with status code: 400".into()
        })
    );
}

#[test]
fn disabled_and_unassigned_are_results() {
    for (status, expected) in [
        (RegistrationStatus::Disabled, Registration::Disabled),
        (RegistrationStatus::Unassigned, Registration::Unassigned),
    ] {
        let mut p = Pair::individual(vec![Answer::Result(Box::new(RegistrationState::new(REG, status)))]);
        assert_eq!(p.run(), Ok(expected));
    }
}

#[test]
fn client_errors_are_fatal_with_the_service_error() {
    let mut p = Pair::individual(vec![Answer::Assigning(1), Answer::Error(404, 404201, None)]);
    assert_eq!(
        p.run(),
        Err(ProvisioningError::Service { status: 404, error_code: Some(404201), message: "scripted error".into() })
    );
    assert_eq!(p.request_times().len(), 2);
}

#[test]
fn an_unanswered_request_times_out_after_30_s() {
    let mut p = Pair::individual(vec![Answer::Silence]);
    assert_eq!(p.run(), Err(ProvisioningError::Timeout(Awaited::Response)));
    assert_eq!(p.now, T0 + Duration::from_secs(30));
    assert_eq!(p.dev_wire.last(), Some(&Packet::Disconnect));
}

#[test]
fn no_connack_times_out() {
    let mut dev = ProvisioningSession::new(
        ProvisioningConfig::new(SCOPE, REG),
        &EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap()),
    );
    dev.start(T0, EXPIRY).unwrap();
    assert_eq!(dev.poll_timeout(), Some(T0 + Duration::from_secs(30)));
    dev.handle_timeout(T0 + Duration::from_secs(30));
    assert_eq!(dev.result(), Some(&Err(ProvisioningError::Timeout(Awaited::Connack))));
}

#[test]
fn split_and_coalesced_input_give_the_same_result() {
    for chunk in [Some(1), Some(3), Some(7), None] {
        let mut p = Pair::individual(vec![
            Answer::Assigning(3),
            Answer::Assigning(5),
            Answer::Result(Box::new(assigned_state())),
        ]);
        p.chunk = chunk;
        assert_eq!(p.run(), Ok(expected_assignment()), "chunk {chunk:?}");
    }
    // Coalesced: DPS's CONNACK, SUBACK and a whole answer arrive in one read.
    let mut dev = ProvisioningSession::new(
        ProvisioningConfig::new(SCOPE, REG),
        &EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap()),
    );
    dev.start(T0, EXPIRY).unwrap();
    let mut wire = BytesMut::new();
    let res = HubTopic::DpsResponse { status: 200, rid: RequestId("1".into()), retry_after: None };
    let body = OperationResponse {
        operation_id: OP.into(),
        status: RegistrationStatus::Assigned,
        registration_state: Some(assigned_state()),
    };
    for pk in [
        Packet::ConnAck(mqttbytes::v4::ConnAck::new(ConnectReturnCode::Success, false)),
        Packet::SubAck(mqttbytes::v4::SubAck::new(
            1,
            vec![mqttbytes::v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        )),
        Packet::PubAck(mqttbytes::v4::PubAck::new(2)),
        Packet::Publish(Publish::new(res.to_string(), QoS::AtMostOnce, body.to_json())),
    ] {
        encode(&pk, &mut wire).unwrap();
    }
    dev.handle_input(T0, &wire).unwrap();
    assert_eq!(dev.result(), Some(&Ok(expected_assignment())));
}

use crate::topic::HubTopic;

#[test]
fn group_enrollment_derives_the_reference_key_and_token() {
    let group = EnrollmentKey::Group(DeviceKey::from_base64(GROUP_KEY).unwrap());
    assert_eq!(group.device_key(REG).to_base64(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    let mut p = Pair::new(group.clone(), group, vec![Answer::Result(Box::new(assigned_state()))]);
    assert_eq!(p.run(), Ok(expected_assignment()));
    assert_eq!(p.dev.device_key().to_base64(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    let Some(Ok(Registration::Assigned(a))) = p.dev.result() else { panic!() };
    assert_eq!(
        a.connection_string(p.dev.device_key()).to_string(),
        format!("HostName=hub.local;DeviceId={REG};SharedAccessKey=Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=")
    );
    let Packet::Connect(c) = &p.dev_wire[0] else { panic!() };
    assert_eq!(
        c.login.as_ref().unwrap().password,
        "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=t6%2F8JHWQuQgM9mXdYf%2FuIqa3dKECOEk9Rr4WrFV19q0%3D&se=1700000000&skn=registration"
    );
}

#[test]
fn group_key_used_as_individual_key_is_refused() {
    let group = EnrollmentKey::Group(DeviceKey::from_base64(GROUP_KEY).unwrap());
    let undervied = EnrollmentKey::Individual(DeviceKey::from_base64(GROUP_KEY).unwrap());
    let mut p = Pair::new(undervied, group, vec![]);
    assert_eq!(p.run(), Err(ProvisioningError::Refused(ConnectRefusal(5))));
}

#[test]
fn reads_the_bodies_the_real_service_and_sdks_send() {
    // Embedded C SDK parser test (azure-sdk-for-c test_az_iot_provisioning_client_parser.c).
    let assigned = br#"{"operationId":"4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d","status":"assigned","registrationState":{"x509":{},"registrationId":"my-device-id1","createdDateTimeUtc":"2020-04-10T03:11:13.0276997Z","assignedHub":"contoso.azure-devices.net","deviceId":"my-device-id1","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2020-04-10T03:11:13.2096201Z","etag":"IjYxMDA4ZDQ2LTAwMDAtMDEwMC0wMDAwLTVlOGZlM2QxMDAwMCI="}}"#;
    let r = OperationResponse::parse(assigned).unwrap();
    let s = r.registration_state.unwrap();
    assert_eq!(
        (s.assigned_hub.as_deref(), s.device_id.as_deref()),
        (Some("contoso.azure-devices.net"), Some("my-device-id1"))
    );
    let disabled =
        br#"{"operationId":"","status":"disabled","registrationState":{"registrationId":"r","status":"disabled"}}"#;
    assert_eq!(OperationResponse::parse(disabled).unwrap().status, RegistrationStatus::Disabled);
    let err = br#"{"errorCode":401002,"trackingId":"8ad0463c-6427-4479-9dfa-3e8bb7003e9b","message":"Invalid certificate.","timestampUtc":"2020-04-10T05:24:22.4718526Z"}"#;
    assert_eq!(ErrorBody::parse(err).unwrap().error_code, 401002);
    assert!(matches!(
        OperationResponse::parse(br#"{"operationId":"x","status":"gone"}"#),
        Err(BodyError::UnknownStatus(_))
    ));
    assert!(matches!(OperationResponse::parse(br#"{"status":"assigned"}"#), Err(BodyError::Field("operationId"))));
    assert!(matches!(OperationResponse::parse(b"[]"), Err(BodyError::NotObject)));
    // Python sends json.dumps(sort_keys=True) with a null payload; Node omits it.
    let py = RegisterRequest::parse(br#"{"payload": null, "registrationId": "r1"}"#).unwrap();
    assert_eq!(py, RegisterRequest { registration_id: "r1".into(), payload: None });
    let node = RegisterRequest::parse(br#"{"registrationId":"r1","payload":{"modelId":"dtmi:x;1"}}"#).unwrap();
    assert_eq!(node.payload.as_deref(), Some(r#"{"modelId":"dtmi:x;1"}"#));
}

// ---- DPS side rules ---------------------------------------------------------------------------------------------

fn connect_bytes(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut c = Connect::new(client_id);
    c.clean_session = true;
    c.keep_alive = 60;
    c.login = Some(Login { username: username.into(), password: password.into() });
    let mut b = BytesMut::new();
    encode(&Packet::Connect(c), &mut b).unwrap();
    b.to_vec()
}

fn dps_username() -> String {
    format!("{SCOPE}/registrations/{REG}/api-version=2019-03-31&ClientVersion=azure-iot-device%2F2.14.0")
}

fn token() -> String {
    let key = DeviceKey::from_base64(KEY).unwrap();
    let r = crate::sas::ResourceUri::Registration { id_scope: SCOPE.into(), registration_id: REG.into() };
    SasToken::sign(&key, &r, EXPIRY, Some("registration")).to_string()
}

fn events(s: &mut DpsSession) -> Vec<DpsEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A DPS session past CONNACK and SUBSCRIBE.
fn connected_dps() -> DpsSession {
    let mut s = DpsSession::new(DpsConfig::default(), T0);
    s.handle_input(T0, &connect_bytes(REG, &dps_username(), &token()));
    assert!(
        matches!(events(&mut s).as_slice(), [DpsEvent::Authenticate(r)] if r.registration_id == REG && r.id_scope == SCOPE)
    );
    s.accept(T0);
    let mut sub = Subscribe::new("$dps/registrations/res/#", QoS::ExactlyOnce);
    sub.pkid = 1;
    let mut b = BytesMut::new();
    encode(&Packet::Subscribe(sub), &mut b).unwrap();
    s.handle_input(T0, &b);
    let out = decode_all(&s.poll_transmit().unwrap());
    assert_eq!(out[0], Packet::ConnAck(mqttbytes::v4::ConnAck::new(ConnectReturnCode::Success, false)));
    // QoS 2 is granted as QoS 1.
    assert_eq!(
        out[1],
        Packet::SubAck(mqttbytes::v4::SubAck::new(
            1,
            vec![mqttbytes::v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        ))
    );
    s
}

fn publish_bytes(topic: &str, qos: QoS, body: &str) -> Vec<u8> {
    let mut p = Publish::new(topic, qos, body.as_bytes().to_vec());
    p.pkid = if qos == QoS::AtMostOnce { 0 } else { 9 };
    let mut b = BytesMut::new();
    encode(&Packet::Publish(p), &mut b).unwrap();
    b.to_vec()
}

#[test]
fn dps_passes_python_tokens_without_skn_to_authentication() {
    let key = DeviceKey::from_base64(KEY).unwrap();
    let r = crate::sas::ResourceUri::Registration { id_scope: SCOPE.into(), registration_id: REG.into() };
    let python = SasToken::sign(&key, &r, EXPIRY, None).to_string();
    let mut s = DpsSession::new(DpsConfig::default(), T0);
    s.handle_input(T0, &connect_bytes(REG, &dps_username(), &python));
    match events(&mut s).as_slice() {
        [DpsEvent::Authenticate(req)] => assert_eq!(req.token.verify(&[&key], &req.resource(), EXPIRY), Ok(())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dps_refuses_connects_it_cannot_serve() {
    let hub_user = "hub.local/dev1/?api-version=2021-04-12";
    for (client, user, password, why) in [
        (REG, hub_user.to_owned(), token(), "IoT Hub"),
        ("other", dps_username(), token(), "client id"),
        (REG, dps_username(), String::new(), "X.509"),
        (
            REG,
            dps_username(),
            "SharedAccessSignature sr=a&sig=b&se=1&skn=iothubowner".into(),
            "skn=registration or none",
        ),
    ] {
        let mut s = DpsSession::new(DpsConfig::default(), T0);
        s.handle_input(T0, &connect_bytes(client, &user, &password));
        match events(&mut s).as_slice() {
            [DpsEvent::Closed { reason: CloseReason::Refused(w) }] if w.code() as u8 == 5 => {
                assert!(w.to_string().contains(why), "{w}")
            }
            other => panic!("{client} {user}: {other:?}"),
        }
        let out = decode_all(&s.poll_transmit().unwrap());
        assert_eq!(out, vec![Packet::ConnAck(mqttbytes::v4::ConnAck::new(ConnectReturnCode::NotAuthorized, false))]);
    }
}

#[test]
fn dps_reports_requests_and_answers_a_bad_register_body_with_400() {
    let mut s = connected_dps();
    s.handle_input(
        T0,
        &publish_bytes("$dps/registrations/PUT/iotdps-register/?$rid=a1", QoS::AtLeastOnce, "{\"nope\":1}"),
    );
    let out = decode_all(&s.poll_transmit().unwrap());
    assert_eq!(out[0], Packet::PubAck(mqttbytes::v4::PubAck::new(9)));
    let answers = publishes(&out);
    assert_eq!(answers[0].0, "$dps/registrations/res/400/?$rid=a1");
    assert!(answers[0].1.starts_with(r#"{"errorCode":400004,"message":"#), "{}", answers[0].1);
    assert_eq!(events(&mut s), vec![]);
    s.handle_input(
        T0,
        &publish_bytes(
            &format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=a2&operationId={OP}"),
            QoS::AtMostOnce,
            " ",
        ),
    );
    assert_eq!(
        events(&mut s),
        vec![DpsEvent::StatusRequested { rid: RequestId("a2".into()), operation_id: OP.into() }]
    );
    assert_eq!(
        s.respond_assigning(&RequestId("zz".into()), OP, 2),
        Err(RespondError::UnknownRequest(RequestId("zz".into())))
    );
    s.respond_error(&RequestId("a2".into()), 429, &ErrorBody::new(429001, "slow down"), Some(7)).unwrap();
    let answers = publishes(&decode_all(&s.poll_transmit().unwrap()));
    assert_eq!(
        answers,
        vec![(
            "$dps/registrations/res/429/?$rid=a2&retry-after=7".to_owned(),
            r#"{"errorCode":429001,"message":"slow down"}"#.to_owned()
        )]
    );
}

#[test]
fn dps_closes_on_hub_topics_qos2_and_foreign_filters() {
    for bytes in [
        publish_bytes("devices/x/messages/events/", QoS::AtLeastOnce, "{}"),
        publish_bytes("$dps/registrations/PUT/iotdps-register/?$rid=1", QoS::ExactlyOnce, "{}"),
        {
            let mut sub = Subscribe::new("$iothub/twin/res/#", QoS::AtLeastOnce);
            sub.pkid = 2;
            let mut b = BytesMut::new();
            encode(&Packet::Subscribe(sub), &mut b).unwrap();
            b.to_vec()
        },
    ] {
        let mut s = connected_dps();
        s.handle_input(T0, &bytes);
        assert!(matches!(events(&mut s).as_slice(), [DpsEvent::Closed { .. }]));
        assert!(s.is_closed());
    }
}

#[test]
fn dps_keep_alive_and_connect_timeouts() {
    let mut s = DpsSession::new(DpsConfig::default(), T0);
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(30)));
    s.handle_timeout(T0 + Duration::from_secs(30));
    assert_eq!(events(&mut s), vec![DpsEvent::Closed { reason: CloseReason::ConnectTimeout }]);
    let mut s = connected_dps();
    assert_eq!(s.poll_timeout(), Some(T0 + Duration::from_secs(90)));
    s.handle_timeout(T0 + Duration::from_secs(90));
    assert_eq!(
        events(&mut s),
        vec![DpsEvent::Closed { reason: CloseReason::KeepAliveTimeout(Duration::from_secs(90)) }]
    );
    assert!(matches!(s.state(), DpsState::Closed));
}

#[test]
fn sniffing_tells_dps_from_hub_connects() {
    let dps = connect_bytes(REG, &dps_username(), &token());
    assert_eq!(sniff_endpoint(&dps, 1 << 16), Endpoint::Dps);
    assert_eq!(sniff_endpoint(&dps[..dps.len() - 1], 1 << 16), Endpoint::NeedMore);
    assert_eq!(sniff_endpoint(&[], 1 << 16), Endpoint::NeedMore);
    let hub = connect_bytes("dev1", "hub.local/dev1/?api-version=2021-04-12", "x");
    assert_eq!(sniff_endpoint(&hub, 1 << 16), Endpoint::Hub);
    assert_eq!(sniff_endpoint(&[0xF0, 0x00], 1 << 16), Endpoint::Hub);
    assert!(is_dps_username("0ne1/registrations/r/api-version=2019-03-31"));
    assert!(!is_dps_username("h.azure-devices.net/d/?api-version=2021-04-12"));
    // Module `x` of device `registrations` on a hub.
    assert!(!is_dps_username("h.azure-devices.net/registrations/x/?api-version=2021-04-12"));
}

#[test]
fn start_refuses_a_payload_that_is_not_json() {
    let mut cfg = ProvisioningConfig::new(SCOPE, REG);
    cfg.payload = Some("{modelId: 1}".into());
    let mut dev = ProvisioningSession::new(cfg, &EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap()));
    assert!(matches!(dev.start(T0, EXPIRY), Err(StartError::PayloadNotJson(_))));
    assert_eq!(dev.poll_transmit(), None);
    assert_eq!(dev.handle_input(T0, b"x"), Err(InputError::NotConnected));
}

// ---- never panics, and bodies round-trip -----------------------------------------------------------------------

fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("HUBSIM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn arbitrary_bytes_never_panic_either_session(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut dps = DpsSession::new(DpsConfig::default(), T0);
        dps.handle_input(T0, &connect_bytes(REG, &dps_username(), &token()));
        dps.accept(T0);
        let mut fresh = DpsSession::new(DpsConfig::default(), T0);
        let mut dev = ProvisioningSession::new(
            ProvisioningConfig::new(SCOPE, REG),
            &EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap()),
        );
        dev.start(T0, EXPIRY).unwrap();
        let mut connack = BytesMut::new();
        encode(&Packet::ConnAck(mqttbytes::v4::ConnAck::new(ConnectReturnCode::Success, false)), &mut connack).unwrap();
        let _ = dev.handle_input(T0, &connack);
        for (i, c) in chunks.iter().enumerate() {
            let now = T0 + Duration::from_secs(i as u64);
            dps.handle_input(now, c);
            fresh.handle_input(now, c);
            let _ = dev.handle_input(now, c);
            dev.handle_timeout(now);
            dps.handle_timeout(now);
        }
        while dps.poll_event().is_some() || dev.poll_event().is_some() || fresh.poll_event().is_some() {}
    }

    #[test]
    fn arbitrary_dps_answers_never_panic_the_device(
        answers in proptest::collection::vec((
            prop_oneof![Just(200u16), Just(202), Just(429), Just(503), 0u16..700],
            prop_oneof![Just("1".to_owned()), Just("2".to_owned()), "[0-9a-z%$&=]{0,8}"],
            proptest::option::of(0u64..5),
            prop_oneof![
                "\\PC{0,80}",
                (
                    prop_oneof![
                        Just("assigning".to_owned()),
                        Just("assigned".to_owned()),
                        Just("failed".to_owned()),
                        "[a-zA-Z]{0,10}",
                    ],
                    proptest::option::of("[a-z.]{0,10}"),
                    proptest::option::of("[a-z]{0,5}"),
                    proptest::option::of(any::<u64>()),
                ).prop_map(|(status, hub, device, code)| {
                    let mut w = json::ObjectWriter::new();
                    let mut st = json::ObjectWriter::new();
                    st.opt_string("assignedHub", hub.as_deref()).opt_string("deviceId", device.as_deref())
                        .string("status", &status);
                    if let Some(c) = code { st.number("errorCode", c); }
                    w.string("operationId", "op").string("status", &status).raw("registrationState", &st.finish());
                    w.finish()
                }),
            ],
        ), 1..6),
    ) {
        let mut dev = ProvisioningSession::new(
            ProvisioningConfig::new(SCOPE, REG),
            &EnrollmentKey::Individual(DeviceKey::from_base64(KEY).unwrap()),
        );
        dev.start(T0, EXPIRY).unwrap();
        let mut wire = BytesMut::new();
        encode(&Packet::ConnAck(mqttbytes::v4::ConnAck::new(ConnectReturnCode::Success, false)), &mut wire).unwrap();
        let granted = vec![mqttbytes::v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)];
        encode(&Packet::SubAck(mqttbytes::v4::SubAck::new(1, granted)), &mut wire).unwrap();
        let _ = dev.handle_input(T0, &wire);
        let mut now = T0;
        for (status, rid, retry, body) in answers {
            let topic = HubTopic::DpsResponse { status, rid: RequestId(rid), retry_after: retry }.to_string();
            let mut wire = BytesMut::new();
            encode(&Packet::Publish(Publish::new(topic, QoS::AtMostOnce, body.into_bytes())), &mut wire).unwrap();
            let _ = dev.handle_input(now, &wire);
            if let Some(t) = dev.poll_timeout() {
                now = t.max(now);
                dev.handle_timeout(now);
            }
            while dev.poll_transmit().is_some() {}
        }
        while dev.poll_event().is_some() {}
    }

    #[test]
    fn arbitrary_device_requests_and_answers_never_panic_dps(
        steps in proptest::collection::vec((0u8..6, "[0-9a-z%$&=]{0,6}", "\\PC{0,60}", 0u16..700, 0u8..3), 1..10),
    ) {
        let mut s = DpsSession::new(DpsConfig::default(), T0);
        s.handle_input(T0, &connect_bytes(REG, &dps_username(), &token()));
        s.accept(T0);
        for (i, (kind, rid, text, status, qos)) in steps.into_iter().enumerate() {
            let now = T0 + Duration::from_secs(i as u64 * 20);
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][qos as usize];
            let rid_id = RequestId(rid.clone());
            match kind {
                0 => {
                    let topic = format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}");
                    s.handle_input(now, &publish_bytes(&topic, qos, &text))
                }
                1 => {
                    let topic = format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={text}");
                    s.handle_input(now, &publish_bytes(&topic, qos, " "))
                }
                2 => {
                    let filter = if text.is_empty() { "$dps/registrations/res/#".to_owned() } else { text };
                    let mut sub = Subscribe::new(filter, qos);
                    sub.pkid = 5;
                    let mut b = BytesMut::new();
                    let _ = encode(&Packet::Subscribe(sub), &mut b);
                    s.handle_input(now, &b);
                }
                3 => { let _ = s.respond_assigning(&rid_id, &text, status as u64); }
                4 => { let _ = s.respond_error(&rid_id, status, &ErrorBody::new(status as u64, text), Some(1)); }
                _ => {
                    let mut state = RegistrationState::new(REG, RegistrationStatus::Assigned);
                    state.payload = Some(text);
                    let _ = s.respond_result(&rid_id, OP, &state);
                }
            }
            s.handle_timeout(now);
            while s.poll_transmit().is_some() {}
            while s.poll_event().is_some() {}
        }
    }

    #[test]
    fn bodies_round_trip(
        reg in any::<String>(),
        hub in proptest::option::of(any::<String>()),
        msg in proptest::option::of(any::<String>()),
        // JSON integers beyond i64::MAX read back as floats; DPS error codes have six digits.
        code in proptest::option::of(0..=i64::MAX as u64),
        payload in proptest::option::of(any::<String>()),
    ) {
        let mut state = RegistrationState::new(reg.clone(), RegistrationStatus::Failed);
        state.assigned_hub = hub;
        state.error_message = msg.clone();
        state.error_code = code;
        // A JSON string is a valid payload, and it carries arbitrary text.
        state.payload = payload.map(|p| json::to_string(&json::Value::String(p)));
        let status = RegistrationStatus::Failed;
        let resp = OperationResponse { operation_id: reg.clone(), status, registration_state: Some(state) };
        prop_assert_eq!(OperationResponse::parse(resp.to_json().as_bytes()).unwrap(), resp);
        let req = RegisterRequest { registration_id: reg.clone(), payload: None };
        prop_assert_eq!(RegisterRequest::parse(req.to_json().as_bytes()).unwrap(), req);
        let mut err = ErrorBody::new(code.unwrap_or(0), msg.unwrap_or_default());
        err.tracking_id = Some(reg);
        prop_assert_eq!(ErrorBody::parse(err.to_json().as_bytes()).unwrap(), err);
    }
}

#[test]
fn a_long_retry_after_keeps_the_connection_alive_with_pings() {
    let mut p = Pair::individual(vec![Answer::Assigning(150), Answer::Result(Box::new(assigned_state()))]);
    assert_eq!(p.run(), Ok(expected_assignment()));
    assert_eq!(p.dev_wire.iter().filter(|pk| **pk == Packet::PingReq).count(), 2, "at 60 s and 120 s");
    assert_eq!(p.dps_wire.iter().filter(|pk| **pk == Packet::PingResp).count(), 2);
    assert_eq!(p.request_times(), vec![T0, T0 + Duration::from_secs(150)]);
}

#[test]
fn cancel_and_transport_loss_end_the_registration() {
    let mut p = Pair::individual(vec![Answer::Assigning(10)]);
    p.dev.start(T0, EXPIRY).unwrap();
    p.pump();
    p.dev.cancel(p.now);
    p.pump();
    assert_eq!(p.dev.result(), Some(&Err(ProvisioningError::Cancelled)));
    assert_eq!(p.dps_closed(), Some(&CloseReason::ClientDisconnected));
    let mut p = Pair::individual(vec![Answer::Silence]);
    p.dev.start(T0, EXPIRY).unwrap();
    p.pump();
    p.dev.handle_transport_closed(p.now, "reset by peer");
    assert_eq!(p.dev.result(), Some(&Err(ProvisioningError::TransportClosed("reset by peer".into()))));
    assert_eq!(p.dev.poll_transmit(), None, "no DISCONNECT on a closed transport");
}

#[test]
fn dps_reads_packets_that_arrived_behind_connect_once_accepted() {
    let mut wire = connect_bytes(REG, &dps_username(), &token());
    let mut sub = Subscribe::new("$dps/registrations/res/#", QoS::AtLeastOnce);
    sub.pkid = 1;
    let mut b = BytesMut::new();
    encode(&Packet::Subscribe(sub), &mut b).unwrap();
    wire.extend_from_slice(&b);
    let body = format!(r#"{{"registrationId":"{REG}"}}"#);
    wire.extend(publish_bytes("$dps/registrations/PUT/iotdps-register/?$rid=r1", QoS::AtLeastOnce, &body));
    let mut s = DpsSession::new(DpsConfig::default(), T0);
    s.handle_input(T0, &wire);
    assert!(matches!(events(&mut s).as_slice(), [DpsEvent::Authenticate(_)]));
    s.accept(T0);
    assert_eq!(
        events(&mut s),
        vec![DpsEvent::RegisterRequested {
            rid: RequestId("r1".into()),
            registration_id: REG.into(),
            payload_raw: None
        }]
    );
    s.respond_assigning(&RequestId("r1".into()), OP, 2).unwrap();
    let out = decode_all(&s.poll_transmit().unwrap());
    assert_eq!(out.len(), 4, "CONNACK, SUBACK, PUBACK, response: {out:?}");
}

#[test]
fn a_retry_after_longer_than_the_backoff_cap_is_capped() {
    // A DPS asking for a wait of 130 years (or a typo) must not leave the device waiting for ever: retry-after is
    // honoured up to `max_retry_after` (10 min), for an assignment in progress and for a throttled request alike.
    let mut p = Pair::individual(vec![
        Answer::Assigning(4_100_000_000),
        Answer::Error(429, 429001, Some(u64::MAX)),
        Answer::Result(Box::new(assigned_state())),
    ]);
    assert_eq!(p.run(), Ok(expected_assignment()));
    let cap = p.dev.config().max_retry_after;
    assert_eq!(cap, Duration::from_secs(600));
    assert_eq!(p.request_times(), vec![T0, T0 + cap, T0 + cap + cap]);
}
