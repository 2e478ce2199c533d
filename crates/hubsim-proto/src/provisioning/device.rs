//! [`ProvisioningSession`]: a device registering with DPS over MQTT, as a sans-IO state machine (reference §9).
//!
//! The driver works it as it works a [`DeviceSession`](crate::DeviceSession): bytes in through
//! [`handle_input`](ProvisioningSession::handle_input), bytes out from
//! [`poll_transmit`](ProvisioningSession::poll_transmit), one timer at
//! [`poll_timeout`](ProvisioningSession::poll_timeout), progress and the final result from
//! [`poll_event`](ProvisioningSession::poll_event). The session signs its own `skn=registration` token with the
//! individual key or the key derived from the group key (reference §3), so only the expiry time comes in.
//! Behaviour follows the Python and Node SDKs: responses wait for SUBACK, `retry-after` (default 2 s) spaces polls,
//! 429 and 5xx are retried with the same request, other errors end the registration, and each request times out
//! after 30 s (Python `DEFAULT_TIMEOUT_INTERVAL`, Node `defaultTimeoutInterval`).

use bytes::{Bytes, BytesMut};
use core::fmt;
use core::time::Duration;
use mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use mqttbytes::QoS;
use std::collections::VecDeque;
use thiserror::Error;

use super::{check_payload, ErrorBody, OperationResponse, RegisterRequest, RegistrationStatus};
use crate::conn_str::{ConnectionString, Credential};
use crate::device::{ConnectRefusal, InputError};
use crate::json;
use crate::packet::{self, Framer};
use crate::sas::{DeviceKey, ResourceUri, SasToken};
use crate::time::Instant;
use crate::topic::{DeviceIdentity, DeviceTopic, HubTopic, RequestId, TopicFilter};
use crate::username::Username;

/// Static settings of a registration.
#[derive(Debug, Clone)]
pub struct ProvisioningConfig {
    pub id_scope: String,
    pub registration_id: String,
    pub api_version: String,
    /// Product string sent as `ClientVersion` in the user name.
    pub client_version: Option<String>,
    /// Custom allocation data (JSON text), e.g. `{"modelId":"dtmi:com:example:Thermostat;1"}`.
    pub payload: Option<String>,
    /// MQTT keep-alive; zero disables PINGREQ.
    pub keep_alive: Duration,
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long one register or status request may go unanswered.
    pub request_timeout: Duration,
    /// Wait between polls when DPS sends no `retry-after`; the first step of the backoff after 429 or 5xx.
    pub default_retry_after: Duration,
    /// Cap of the exponential backoff after 429 or 5xx without `retry-after`.
    pub max_backoff: Duration,
    /// Longest `retry-after` honoured (a longer one waits this long): a hostile or mistaken DPS cannot park the
    /// device for years.
    pub max_retry_after: Duration,
    /// Consecutive 429/5xx answers tolerated before giving up.
    pub max_retries: u32,
    /// How long DPS may keep answering `assigning` (from its first such answer) before the device gives up, and
    /// how many such answers it accepts: an assignment that never finishes (a custom allocation webhook that never
    /// answers, a hostile endpoint sending `retry-after: 0`) ends with [`ProvisioningError::StillAssigning`]
    /// instead of polling until the user cancels. Defaults: 10 minutes, 300 answers (10 minutes of the default
    /// 2 s polls).
    pub max_assigning: Duration,
    pub max_assigning_answers: u32,
    pub max_incoming_packet: usize,
}

impl ProvisioningConfig {
    /// SDK defaults: API 2019-03-31, 30 s timeouts, 2 s default `retry-after`.
    pub fn new(id_scope: impl Into<String>, registration_id: impl Into<String>) -> Self {
        ProvisioningConfig {
            id_scope: id_scope.into(),
            registration_id: registration_id.into(),
            api_version: super::DPS_API_VERSION.into(),
            client_version: None,
            payload: None,
            keep_alive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            default_retry_after: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
            max_retries: 10,
            max_assigning: Duration::from_secs(600),
            max_assigning_answers: 300,
            max_incoming_packet: 256 * 1024,
        }
    }

    /// `{idScope}/registrations/{registrationId}/api-version=…[&ClientVersion=…]`.
    pub fn username(&self) -> Username {
        Username {
            host: self.id_scope.clone(),
            identity: DeviceIdentity::device(self.registration_id.clone()),
            dps: true,
            api_version: Some(self.api_version.clone()),
            model_id: None,
            client_type: self.client_version.clone(),
            other: Vec::new(),
        }
    }

    /// The token audience `{idScope}/registrations/{registrationId}`.
    pub fn resource(&self) -> ResourceUri {
        ResourceUri::Registration { id_scope: self.id_scope.clone(), registration_id: self.registration_id.clone() }
    }
}

/// The symmetric key a device registers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollmentKey {
    /// The key of an individual enrollment: it is the device key.
    Individual(DeviceKey),
    /// An enrollment group key: the device key is derived from it and the registration id. It unlocks every
    /// device of the group.
    Group(DeviceKey),
}

impl EnrollmentKey {
    /// The key this device signs with, at DPS and afterwards at the hub.
    pub fn device_key(&self, registration_id: &str) -> DeviceKey {
        match self {
            EnrollmentKey::Individual(k) => k.clone(),
            EnrollmentKey::Group(g) => g.derive_for_registration(registration_id),
        }
    }
}

/// Where a registration stands, for a UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// CONNECT sent.
    Connecting,
    /// Register request sent (`attempt` counts from 1; more after 429/5xx).
    Registering { attempt: u32 },
    /// DPS is assigning; the next status poll goes out in `retry_in`.
    Assigning { operation_id: String, retry_in: Duration },
    /// DPS answered 429 or 5xx; the same request goes out again in `retry_in`.
    Retrying { status: u16, retry_in: Duration },
}

/// Where DPS put the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub assigned_hub: String,
    pub device_id: String,
    pub substatus: Option<String>,
    /// Custom data returned by the allocation (JSON text).
    pub payload: Option<String>,
}

impl Assignment {
    /// The device connection string for the assigned hub, with the key the device registered with
    /// ([`ProvisioningSession::device_key`]), as `hubsim provision` prints it.
    pub fn connection_string(&self, key: &DeviceKey) -> ConnectionString {
        ConnectionString {
            host_name: self.assigned_hub.clone(),
            device_id: self.device_id.clone(),
            module_id: None,
            key_name: None,
            credential: Credential::Key(key.clone()),
            gateway_host_name: None,
        }
    }
}

/// How a registration that DPS answered ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Assigned(Assignment),
    /// DPS could not assign, e.g. 400207 when no linked hub fits.
    Failed {
        error_code: Option<u64>,
        message: String,
    },
    /// The enrollment or the registration is disabled.
    Disabled,
    Unassigned,
}

/// What the session was waiting for when its timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    Connack,
    Suback,
    Response,
    PingResp,
}

impl fmt::Display for Awaited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Awaited::Connack => "CONNACK",
            Awaited::Suback => "SUBACK",
            Awaited::Response => "response",
            Awaited::PingResp => "PINGRESP",
        })
    }
}

/// Why a registration ended without an answer from DPS.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProvisioningError {
    #[error("DPS refused the connection (CONNACK 0x{:02x}){}", .0 .0, refusal_hint(.0))]
    Refused(ConnectRefusal),
    #[error("[DPS-MQTT] DPS refused the subscription to $dps/registrations/res/#")]
    SubscriptionRefused,
    #[error("DPS answered {status}{}: {message}", ErrorCodeSuffix(*.error_code))]
    Service { status: u16, error_code: Option<u64>, message: String },
    #[error("DPS still answered {status} after {attempts} attempts")]
    RetriesExhausted { status: u16, attempts: u32 },
    #[error("no {0} from DPS in time")]
    Timeout(Awaited),
    #[error("the connection closed ({0})")]
    TransportClosed(String),
    #[error("protocol violation by DPS: {0}")]
    Violation(String),
    #[error("the registration was cancelled")]
    Cancelled,
    #[error(
        "DPS still answered 'assigning' after {answers} status requests over {} s: the assignment does not finish \
         (a custom allocation function that never answers?); try again later",
        .waited.as_secs()
    )]
    StillAssigning { answers: u32, waited: Duration },
}

/// ` (error {code})` when DPS gave an error code, nothing otherwise (written in place, no intermediate `String`).
struct ErrorCodeSuffix(Option<u64>);

impl fmt::Display for ErrorCodeSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(c) => write!(f, " (error {c})"),
            None => Ok(()),
        }
    }
}

fn refusal_hint(r: &ConnectRefusal) -> &'static str {
    match r.0 {
        4 | 5 => {
            ": the key, the ID scope or the registration id is wrong, the token expired, or there is no enrollment"
        }
        3 => ": the service is unavailable",
        _ => "",
    }
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisioningEvent {
    Progress(Progress),
    /// The last event: DPS's answer, or why there is none. The driver closes the transport after flushing.
    Finished(Result<Registration, ProvisioningError>),
}

/// Why [`ProvisioningSession::start`] refused. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StartError {
    #[error("a registration is already running")]
    AlreadyStarted,
    #[error("the custom payload is not JSON: {0}")]
    PayloadNotJson(json::JsonError),
    #[error(transparent)]
    Encode(#[from] packet::EncodeError),
}

/// The registration state.
///
/// ```text
///          start()              CONNACK 0               SUBACK
///   Idle ──────────▶ Connecting ─────────▶ Subscribing ────────▶ Requesting (register)
///                                                                 │    ▲
///                                    202 assigning, 429, 5xx      ▼    │ retry-after elapsed
///                                                                Waiting (poll, or register again)
///   Requesting ── 2xx assigned | failed | disabled | unassigned, other ≥ 300 ──▶ Done
///   any but Idle ── CONNACK ≠ 0, timeout, transport closed, violation, cancel() ──▶ Done
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Idle,
    Connecting {
        deadline: Instant,
    },
    Subscribing {
        pkid: u16,
        deadline: Instant,
    },
    /// A register (`operation_id` `None`) or status request is out.
    Requesting {
        rid: RequestId,
        operation_id: Option<String>,
        deadline: Instant,
    },
    /// Waiting to send the next request.
    Waiting {
        operation_id: Option<String>,
        until: Instant,
    },
    Done,
}

/// A device registering with DPS. See the [module docs](self).
#[derive(Debug)]
pub struct ProvisioningSession {
    config: ProvisioningConfig,
    device_key: DeviceKey,
    state: State,
    framer: Framer,
    transmit: BytesMut,
    events: VecDeque<ProvisioningEvent>,
    /// Our QoS 1 publishes awaiting PUBACK.
    unacked: Vec<u16>,
    next_pkid: u16,
    next_rid: u64,
    /// Register requests sent in this registration.
    registers: u32,
    /// Consecutive 429/5xx answers.
    retries: u32,
    /// When DPS first answered `assigning` in this registration, and how many times it did.
    assigning_since: Option<Instant>,
    assigning_answers: u32,
    last_sent: Instant,
    ping_deadline: Option<Instant>,
    result: Option<Result<Registration, ProvisioningError>>,
}

impl ProvisioningSession {
    pub fn new(config: ProvisioningConfig, key: &EnrollmentKey) -> Self {
        let device_key = key.device_key(&config.registration_id);
        ProvisioningSession {
            framer: Framer::new(config.max_incoming_packet),
            config,
            device_key,
            state: State::Idle,
            transmit: BytesMut::new(),
            events: VecDeque::new(),
            unacked: Vec::new(),
            next_pkid: 1,
            next_rid: 1,
            registers: 0,
            retries: 0,
            assigning_since: None,
            assigning_answers: 0,
            last_sent: Instant(0),
            ping_deadline: None,
            result: None,
        }
    }

    pub fn config(&self) -> &ProvisioningConfig {
        &self.config
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    /// The key to connect to the assigned hub with (derived for a group enrollment).
    pub fn device_key(&self) -> &DeviceKey {
        &self.device_key
    }
    /// The final result, once [`ProvisioningEvent::Finished`] was queued.
    pub fn result(&self) -> Option<&Result<Registration, ProvisioningError>> {
        self.result.as_ref()
    }

    // ---- commands -------------------------------------------------------------------------------------------

    /// Starts a registration on a freshly opened transport: queues CONNECT with a token valid until
    /// `token_expiry` (Unix seconds).
    pub fn start(&mut self, now: Instant, token_expiry: u64) -> Result<(), StartError> {
        if !matches!(self.state, State::Idle | State::Done) {
            return Err(StartError::AlreadyStarted);
        }
        if let Some(p) = &self.config.payload {
            check_payload(p).map_err(StartError::PayloadNotJson)?;
        }
        let token = SasToken::sign(&self.device_key, &self.config.resource(), token_expiry, Some(super::DPS_POLICY));
        let mut connect = Connect::new(self.config.registration_id.clone());
        // DPS sessions are never persistent; the SDKs connect clean (reference §2 CleanSession, Node `clean: true`).
        connect.clean_session = true;
        connect.keep_alive = self.config.keep_alive.as_secs().min(u16::MAX as u64) as u16;
        connect.login = Some(Login { username: self.config.username().to_string(), password: token.to_string() });
        let mut out = BytesMut::new();
        packet::encode(&Packet::Connect(connect), &mut out)?;
        self.framer = Framer::new(self.config.max_incoming_packet);
        self.transmit = out;
        self.last_sent = now;
        self.unacked.clear();
        self.ping_deadline = None;
        self.registers = 0;
        self.retries = 0;
        self.assigning_since = None;
        self.assigning_answers = 0;
        self.result = None;
        self.state = State::Connecting { deadline: now + self.config.connect_timeout };
        self.events.push_back(ProvisioningEvent::Progress(Progress::Connecting));
        Ok(())
    }

    /// Gives up: queues DISCONNECT if connected and finishes with [`ProvisioningError::Cancelled`].
    pub fn cancel(&mut self, now: Instant) {
        if !matches!(self.state, State::Idle | State::Done) {
            self.finish(now, Err(ProvisioningError::Cancelled));
        }
    }

    // ---- inputs ---------------------------------------------------------------------------------------------

    /// Feeds bytes from the transport (any split, any number of packets). On a violation the session is already
    /// finished and the driver must close the transport.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), InputError> {
        if matches!(self.state, State::Idle | State::Done) {
            return Err(InputError::NotConnected);
        }
        self.framer.push(data);
        while !matches!(self.state, State::Done) {
            let packet = match self.framer.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.violation(now, e.to_string())),
            };
            if let Err(why) = self.handle_packet(now, packet) {
                return Err(self.violation(now, why));
            }
        }
        Ok(())
    }

    /// The transport closed (or failed to open).
    pub fn handle_transport_closed(&mut self, _now: Instant, why: impl Into<String>) {
        if !matches!(self.state, State::Idle | State::Done) {
            self.transmit.clear();
            self.conclude(Err(ProvisioningError::TransportClosed(why.into())));
        }
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let awaited = match &self.state {
            State::Connecting { deadline } if now >= *deadline => Some(Awaited::Connack),
            State::Subscribing { deadline, .. } if now >= *deadline => Some(Awaited::Suback),
            State::Requesting { deadline, .. } if now >= *deadline => Some(Awaited::Response),
            State::Waiting { operation_id, until } if now >= *until => {
                let operation_id = operation_id.clone();
                self.send_request(now, operation_id);
                None
            }
            State::Connecting { .. }
            | State::Subscribing { .. }
            | State::Requesting { .. }
            | State::Waiting { .. }
            | State::Idle
            | State::Done => None,
        };
        if let Some(a) = awaited {
            return self.finish(now, Err(ProvisioningError::Timeout(a)));
        }
        if !self.connected() {
            return;
        }
        match (self.ping_deadline, self.ping_due()) {
            (Some(deadline), _) if now >= deadline => {
                self.finish(now, Err(ProvisioningError::Timeout(Awaited::PingResp)))
            }
            (None, Some(due)) if now >= due => {
                if self.encode(now, &Packet::PingReq) {
                    self.ping_deadline = Some(now + self.config.ping_timeout);
                }
            }
            (Some(_), _) | (None, _) => {}
        }
    }

    // ---- outputs --------------------------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.transmit.is_empty()).then(|| self.transmit.split().freeze())
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.state {
            State::Connecting { deadline }
            | State::Subscribing { deadline, .. }
            | State::Requesting { deadline, .. } => Some(*deadline),
            State::Waiting { until, .. } => Some(*until),
            State::Idle | State::Done => None,
        };
        let ping = if self.connected() { self.ping_deadline.or_else(|| self.ping_due()) } else { None };
        match (state, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_event(&mut self) -> Option<ProvisioningEvent> {
        self.events.pop_front()
    }

    // ---- internals ------------------------------------------------------------------------------------------

    /// True after CONNACK 0 until the end.
    fn connected(&self) -> bool {
        matches!(self.state, State::Subscribing { .. } | State::Requesting { .. } | State::Waiting { .. })
    }

    fn ping_due(&self) -> Option<Instant> {
        (!self.config.keep_alive.is_zero()).then(|| self.last_sent + self.config.keep_alive)
    }

    /// Encodes a packet; false (and finished) if it cannot be, which only a peer-supplied operation id of more
    /// than 64 KB can cause.
    fn encode(&mut self, now: Instant, p: &Packet) -> bool {
        match packet::encode(p, &mut self.transmit) {
            Ok(()) => {
                self.last_sent = now;
                true
            }
            Err(e) => {
                self.finish(now, Err(ProvisioningError::Violation(e.to_string())));
                false
            }
        }
    }

    fn alloc_pkid(&mut self) -> u16 {
        let id = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        id
    }

    /// Sends a register request (`operation_id` `None`) or a status poll.
    fn send_request(&mut self, now: Instant, operation_id: Option<String>) {
        let rid = RequestId(self.next_rid.to_string());
        self.next_rid += 1;
        let (topic, body) = match &operation_id {
            None => {
                let body = RegisterRequest {
                    registration_id: self.config.registration_id.clone(),
                    payload: self.config.payload.clone(),
                };
                (DeviceTopic::DpsRegister { rid: rid.clone() }, body.to_json())
            }
            // The SDKs send a single space as the body of a status request.
            Some(id) => (DeviceTopic::DpsOperationStatus { rid: rid.clone(), operation_id: id.clone() }, " ".into()),
        };
        let mut p = Publish::new(topic.to_string(), QoS::AtLeastOnce, body);
        p.pkid = self.alloc_pkid();
        let pkid = p.pkid;
        if !self.encode(now, &Packet::Publish(p)) {
            return;
        }
        self.unacked.push(pkid);
        if operation_id.is_none() {
            self.registers += 1;
            self.events.push_back(ProvisioningEvent::Progress(Progress::Registering { attempt: self.registers }));
        }
        self.state = State::Requesting { rid, operation_id, deadline: now + self.config.request_timeout };
    }

    fn violation(&mut self, now: Instant, why: String) -> InputError {
        self.finish(now, Err(ProvisioningError::Violation(why.clone())));
        InputError::DpsViolation(why)
    }

    /// Ends the registration, saying goodbye first if the connection is up.
    fn finish(&mut self, now: Instant, result: Result<Registration, ProvisioningError>) {
        if self.connected() {
            // Encoding DISCONNECT cannot fail.
            let _ = packet::encode(&Packet::Disconnect, &mut self.transmit);
            self.last_sent = now;
        }
        self.conclude(result);
    }

    fn conclude(&mut self, result: Result<Registration, ProvisioningError>) {
        self.state = State::Done;
        self.ping_deadline = None;
        self.result = Some(result.clone());
        self.events.push_back(ProvisioningEvent::Finished(result));
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), String> {
        match (&self.state, packet) {
            (State::Connecting { .. }, Packet::ConnAck(ConnAck { code, .. })) => {
                if code != ConnectReturnCode::Success {
                    // DPS closes the transport after a refusal; nothing to say goodbye to.
                    self.conclude(Err(ProvisioningError::Refused(ConnectRefusal(code as u8))));
                    return Ok(());
                }
                let mut sub =
                    Subscribe::new(TopicFilter::DpsResponses.to_filter(&DeviceIdentity::device("")), QoS::AtLeastOnce);
                sub.pkid = self.alloc_pkid();
                let pkid = sub.pkid;
                self.state = State::Subscribing { pkid, deadline: now + self.config.request_timeout };
                self.encode(now, &Packet::Subscribe(sub));
                Ok(())
            }
            (State::Connecting { .. }, other) => {
                Err(["[MQTT-3.2.0-1] expected CONNACK first, got ", crate::packet::name(&other)].concat())
            }
            (State::Subscribing { pkid, .. }, Packet::SubAck(ack)) => {
                if ack.pkid != *pkid {
                    return Err(format!("SUBACK for packet id {}, expected {pkid}", ack.pkid));
                }
                match ack.return_codes.as_slice() {
                    [SubscribeReasonCode::Success(_)] => {
                        self.send_request(now, None);
                        Ok(())
                    }
                    [SubscribeReasonCode::Failure] => {
                        self.finish(now, Err(ProvisioningError::SubscriptionRefused));
                        Ok(())
                    }
                    codes => Err(format!("[MQTT-3.9.3-1] SUBACK has {} codes for 1 filter", codes.len())),
                }
            }
            (
                State::Subscribing { .. } | State::Requesting { .. } | State::Waiting { .. },
                Packet::PubAck(PubAck { pkid }),
            ) => match self.unacked.iter().position(|p| *p == pkid) {
                Some(i) => {
                    self.unacked.remove(i);
                    Ok(())
                }
                None => Err(format!("PUBACK for packet id {pkid}, which is not in flight")),
            },
            (State::Subscribing { .. } | State::Requesting { .. } | State::Waiting { .. }, Packet::PingResp) => {
                self.ping_deadline = None;
                Ok(())
            }
            (State::Subscribing { .. } | State::Requesting { .. } | State::Waiting { .. }, Packet::Publish(p)) => {
                self.handle_publish(now, p)
            }
            (State::Subscribing { .. } | State::Requesting { .. } | State::Waiting { .. }, other) => {
                Err(["DPS never sends ", crate::packet::name(&other), " to a device"].concat())
            }
            // handle_input stops before these states; listed so that every pair has an arm.
            (State::Idle | State::Done, _) => Ok(()),
        }
    }

    fn handle_publish(&mut self, now: Instant, p: Publish) -> Result<(), String> {
        if p.qos == QoS::ExactlyOnce {
            return Err("[MQTT-3.3.1-4] DPS never publishes at QoS 2".into());
        }
        let (status, rid, retry_after) = match HubTopic::parse(&p.topic) {
            Ok(HubTopic::DpsResponse { status, rid, retry_after }) => (status, rid, retry_after),
            // Peer text in a message for people: the topic clipped, no debug dump of what it parsed as.
            Ok(_) => return Err(format!("'{}' is not a DPS topic", p.topic.chars().take(256).collect::<String>())),
            Err(e) => return Err(format!("[DPS-MQTT] {e}")),
        };
        if p.qos == QoS::AtLeastOnce && !self.encode(now, &Packet::PubAck(PubAck::new(p.pkid))) {
            return Ok(());
        }
        let operation_id = match &self.state {
            State::Requesting { rid: current, operation_id, .. } if *current == rid => operation_id.clone(),
            // A late answer to a request that timed out or was already answered: the SDKs drop it too.
            State::Requesting { .. } | State::Waiting { .. } | State::Subscribing { .. } => return Ok(()),
            State::Idle | State::Connecting { .. } | State::Done => return Ok(()),
        };
        let retry_after = retry_after.map(|s| Duration::from_secs(s).min(self.config.max_retry_after));
        match status {
            200..=299 => {
                let resp = OperationResponse::parse(&p.payload).map_err(|e| e.to_string())?;
                self.on_operation(now, resp, retry_after)
            }
            429 | 500..=599 => {
                self.retries += 1;
                if self.retries > self.config.max_retries {
                    let attempts = self.retries;
                    self.finish(now, Err(ProvisioningError::RetriesExhausted { status, attempts }));
                    return Ok(());
                }
                let retry_in = retry_after.unwrap_or_else(|| self.backoff());
                self.state = State::Waiting { operation_id, until: now + retry_in };
                self.events.push_back(ProvisioningEvent::Progress(Progress::Retrying { status, retry_in }));
                Ok(())
            }
            _ => {
                let (error_code, message) = match ErrorBody::parse(&p.payload) {
                    Ok(e) => (Some(e.error_code), e.message),
                    // Still a refusal; keep what DPS said.
                    Err(_) => (None, String::from_utf8_lossy(&p.payload).chars().take(512).collect()),
                };
                self.finish(now, Err(ProvisioningError::Service { status, error_code, message }));
                Ok(())
            }
        }
    }

    fn backoff(&self) -> Duration {
        let factor = 1u32.checked_shl(self.retries.saturating_sub(1)).unwrap_or(u32::MAX);
        self.config.default_retry_after.saturating_mul(factor).min(self.config.max_backoff)
    }

    fn on_operation(
        &mut self,
        now: Instant,
        resp: OperationResponse,
        retry_after: Option<Duration>,
    ) -> Result<(), String> {
        self.retries = 0;
        let state = resp.registration_state;
        let result = match resp.status {
            RegistrationStatus::Assigning => {
                if resp.operation_id.is_empty() {
                    return Err("[DPS-MQTT] 'assigning' without an operationId".into());
                }
                let since = *self.assigning_since.get_or_insert(now);
                self.assigning_answers += 1;
                let waited = now.saturating_since(since);
                if self.assigning_answers > self.config.max_assigning_answers || waited >= self.config.max_assigning {
                    let answers = self.assigning_answers;
                    self.finish(now, Err(ProvisioningError::StillAssigning { answers, waited }));
                    return Ok(());
                }
                let retry_in = retry_after.unwrap_or(self.config.default_retry_after);
                self.state = State::Waiting { operation_id: Some(resp.operation_id.clone()), until: now + retry_in };
                self.events.push_back(ProvisioningEvent::Progress(Progress::Assigning {
                    operation_id: resp.operation_id,
                    retry_in,
                }));
                return Ok(());
            }
            RegistrationStatus::Assigned => match state {
                Some(super::RegistrationState {
                    assigned_hub: Some(assigned_hub),
                    device_id: Some(device_id),
                    substatus,
                    payload,
                    ..
                }) => Registration::Assigned(Assignment { assigned_hub, device_id, substatus, payload }),
                Some(_) | None => {
                    return Err("[DPS-MQTT] 'assigned' without registrationState.assignedHub and deviceId".into())
                }
            },
            RegistrationStatus::Failed => {
                let (error_code, message) =
                    state.map(|s| (s.error_code, s.error_message.unwrap_or_default())).unwrap_or_default();
                Registration::Failed { error_code, message }
            }
            RegistrationStatus::Disabled => Registration::Disabled,
            RegistrationStatus::Unassigned => Registration::Unassigned,
        };
        self.finish(now, Ok(result));
        Ok(())
    }
}
