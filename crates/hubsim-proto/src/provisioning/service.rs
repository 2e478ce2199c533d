//! [`DpsSession`]: the DPS side of one device connection, for the emulator's local DPS (reference §9).
//!
//! It works like [`HubSession`](crate::HubSession): the connection task feeds bytes and the clock, the session
//! enforces the MQTT rules and reports what needs the enrollment store ([`DpsEvent::Authenticate`],
//! [`DpsEvent::RegisterRequested`], [`DpsEvent::StatusRequested`]); the task answers with
//! [`DpsSession::accept`]/[`refuse`](DpsSession::refuse) and the `respond_*` commands, which format the exact
//! topics and bodies the SDKs parse. Misuse closes the connection with a [`CloseReason`], as on the hub.
//!
//! Both endpoints share the emulator's listeners, as the SDKs dial the same ports for both: [`sniff_endpoint`]
//! tells a DPS CONNECT from a hub CONNECT by the user name form (`{scope}/registrations/{id}/…`).

use bytes::{Bytes, BytesMut};
use core::time::Duration;
use mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use mqttbytes::{Protocol, QoS};
use std::collections::{BTreeSet, VecDeque};
use thiserror::Error;

use super::{check_payload, ErrorBody, OperationResponse, RegisterRequest, RegistrationState, RegistrationStatus};
use crate::hub::{CloseReason, Refusal, SubscriptionError, Violation};
use crate::json;
use crate::packet::{self, Framer};
use crate::sas::{ResourceUri, SasToken};
use crate::time::Instant;
use crate::topic::{DeviceIdentity, DeviceTopic, HubTopic, RequestId, TopicFilter};
use crate::username::Username;

/// DPS-wide rules.
#[derive(Debug, Clone)]
pub struct DpsConfig {
    /// CONNECT must arrive this soon after the transport opens.
    pub connect_timeout: Duration,
    /// Cap on the server-side keep-alive timeout (the Azure load balancer's 1767 s).
    pub max_keep_alive_timeout: Duration,
    /// Largest packet accepted; a register body with custom payload fits easily.
    pub max_packet: usize,
}

impl Default for DpsConfig {
    fn default() -> Self {
        DpsConfig {
            connect_timeout: Duration::from_secs(30),
            max_keep_alive_timeout: Duration::from_secs(1767),
            max_packet: 128 * 1024,
        }
    }
}

/// What a valid DPS CONNECT asks for; the task checks the token against the enrollments.
#[derive(Debug, Clone, PartialEq)]
pub struct DpsConnectRequest {
    pub id_scope: String,
    pub registration_id: String,
    pub username: Username,
    pub token: SasToken,
    pub keep_alive: Duration,
}

impl DpsConnectRequest {
    /// The audience the token must be for: `{idScope}/registrations/{registrationId}`.
    pub fn resource(&self) -> ResourceUri {
        ResourceUri::Registration { id_scope: self.id_scope.clone(), registration_id: self.registration_id.clone() }
    }
}

/// What the session needs the task to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum DpsEvent {
    /// Verify the token (individual key, or the key derived from the group key), then [`DpsSession::accept`] or
    /// [`DpsSession::refuse`] (0x05 for a bad token, as the real service).
    Authenticate(Box<DpsConnectRequest>),
    /// Start or look up a registration, then answer `rid` with a `respond_*` command. `payload_raw` is the
    /// device's custom payload as compact JSON text (re-serialized, not the bytes the device sent).
    RegisterRequested { rid: RequestId, registration_id: String, payload_raw: Option<String> },
    /// Report the operation's status, answering `rid`.
    StatusRequested { rid: RequestId, operation_id: String },
    /// The connection is over; the task closes the transport.
    Closed { reason: CloseReason },
}

/// Why a `respond_*` command was refused (API misuse by the task). Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RespondError {
    #[error("the connection is not open")]
    NotConnected,
    #[error("no request {0} is waiting for an answer")]
    UnknownRequest(RequestId),
    #[error("the device has not subscribed to $dps/registrations/res/#, so it cannot receive the answer")]
    NotSubscribed,
    #[error("the registration payload is not JSON: {0}")]
    PayloadNotJson(json::JsonError),
}

/// Connection state.
///
/// ```text
///                  CONNECT (DPS user name)          accept()
///  AwaitingConnect ───────────────────────▶ Authenticating ───────▶ Connected
///        │                                       │ refuse()             │ DISCONNECT, misuse, keep-alive,
///        │ 30 s, non-CONNECT, hub user name       ▼                      │ close()
///        └──────────────────────────────────▶ Closed ◀─────────────────┘
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    AwaitingConnect {
        deadline: Instant,
    },
    Authenticating {
        request: Box<DpsConnectRequest>,
    },
    /// `subscribed` is the QoS granted for `$dps/registrations/res/#`, if subscribed.
    Connected {
        registration_id: String,
        keep_alive: Duration,
        subscribed: Option<QoS>,
    },
    Closed,
}

/// The DPS side of one connection. See the [module docs](self).
#[derive(Debug)]
pub struct DpsSession {
    config: DpsConfig,
    state: State,
    framer: Framer,
    transmit: BytesMut,
    events: VecDeque<DpsEvent>,
    /// Requests reported to the task and not yet answered.
    pending: BTreeSet<RequestId>,
    last_received: Instant,
    next_pkid: u16,
}

impl DpsSession {
    /// A session for a transport opened at `now`.
    pub fn new(config: DpsConfig, now: Instant) -> Self {
        DpsSession {
            state: State::AwaitingConnect { deadline: now + config.connect_timeout },
            framer: Framer::new(config.max_packet),
            config,
            transmit: BytesMut::new(),
            events: VecDeque::new(),
            pending: BTreeSet::new(),
            last_received: now,
            next_pkid: 1,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// The registration id of the connection, once CONNECT arrived.
    pub fn registration_id(&self) -> Option<&str> {
        match &self.state {
            State::Authenticating { request } => Some(&request.registration_id),
            State::Connected { registration_id, .. } => Some(registration_id),
            State::AwaitingConnect { .. } | State::Closed => None,
        }
    }
    /// Requests awaiting an answer.
    pub fn pending(&self) -> impl Iterator<Item = &RequestId> {
        self.pending.iter()
    }

    // ---- inputs ---------------------------------------------------------------------------------------------

    /// Feeds bytes from the transport.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.framer.push(data);
        self.process(now);
    }

    fn process(&mut self, now: Instant) {
        while matches!(self.state, State::AwaitingConnect { .. } | State::Connected { .. }) {
            match self.framer.next_packet() {
                Ok(Some(p)) => {
                    self.last_received = now;
                    self.handle_packet(p);
                }
                Ok(None) => return,
                Err(e) => return self.close(CloseReason::ProtocolViolation(Violation::Frame(e))),
            }
        }
    }

    /// The transport closed.
    pub fn handle_transport_closed(&mut self, why: impl Into<String>) {
        self.close(CloseReason::TransportClosed(why.into()));
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::AwaitingConnect { deadline } if now >= *deadline => self.close(CloseReason::ConnectTimeout),
            State::Connected { keep_alive, .. } if now >= self.last_received + *keep_alive => {
                let ka = *keep_alive;
                self.close(CloseReason::KeepAliveTimeout(ka))
            }
            State::AwaitingConnect { .. } | State::Authenticating { .. } | State::Connected { .. } | State::Closed => {}
        }
    }

    // ---- commands from the task -----------------------------------------------------------------------------

    /// Accepts the connection: CONNACK 0, never with a session present (DPS sessions are not persistent).
    pub fn accept(&mut self, now: Instant) {
        let State::Authenticating { request } = &self.state else { return };
        // Keep-alive 0 or above the cap is replaced by the cap (protocol gateway DeriveKeepAliveTimeout);
        // otherwise 1.5 × keep-alive (reference §2).
        let ka = request.keep_alive;
        let cap = self.config.max_keep_alive_timeout;
        let keep_alive = if ka.is_zero() { cap } else { (ka * 3 / 2).min(cap) };
        self.state =
            State::Connected { registration_id: request.registration_id.clone(), keep_alive, subscribed: None };
        self.last_received = now;
        self.send(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)));
        // Packets that arrived behind CONNECT waited for the verdict.
        self.process(now);
    }

    /// Refuses the connection with a CONNACK code (0x05 for authentication failures) and closes it.
    pub fn refuse(&mut self, code: ConnectReturnCode, why: impl Into<String>) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.send(&Packet::ConnAck(ConnAck::new(code, false)));
        self.close(CloseReason::Refused(Refusal::ByHub { code: code as u8, why: why.into() }));
    }

    /// 202 `{"operationId":…,"status":"assigning"}` with `retry-after`: the device polls again after that long.
    pub fn respond_assigning(
        &mut self,
        rid: &RequestId,
        operation_id: &str,
        retry_after_s: u64,
    ) -> Result<(), RespondError> {
        let body = OperationResponse {
            operation_id: operation_id.into(),
            status: RegistrationStatus::Assigning,
            registration_state: None,
        };
        self.respond(rid, 202, Some(retry_after_s), body.to_json())
    }

    /// 200 with the registration's outcome (`assigned`, `failed`, `disabled`, `unassigned`) and its state.
    pub fn respond_result(
        &mut self,
        rid: &RequestId,
        operation_id: &str,
        state: &RegistrationState,
    ) -> Result<(), RespondError> {
        if let Some(p) = &state.payload {
            check_payload(p).map_err(RespondError::PayloadNotJson)?;
        }
        let body = OperationResponse {
            operation_id: operation_id.into(),
            status: state.status,
            registration_state: Some(state.clone()),
        };
        self.respond(rid, 200, None, body.to_json())
    }

    /// An error status (401, 404, 429, 500, …) with `{"errorCode":…,"message":…}`; `retry_after` for 429/5xx.
    pub fn respond_error(
        &mut self,
        rid: &RequestId,
        status: u16,
        error: &ErrorBody,
        retry_after: Option<u64>,
    ) -> Result<(), RespondError> {
        self.respond(rid, status, retry_after, error.to_json())
    }

    /// Ends the connection for a reason outside the protocol (killed, shutdown).
    pub fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.pending.clear();
        self.events.push_back(DpsEvent::Closed { reason });
    }

    // ---- outputs --------------------------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.transmit.is_empty()).then(|| self.transmit.split().freeze())
    }

    pub fn poll_event(&mut self) -> Option<DpsEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::AwaitingConnect { deadline } => Some(*deadline),
            State::Connected { keep_alive, .. } => Some(self.last_received + *keep_alive),
            State::Authenticating { .. } | State::Closed => None,
        }
    }

    // ---- internals ------------------------------------------------------------------------------------------

    fn send(&mut self, p: &Packet) {
        if let Err(e) = packet::encode(p, &mut self.transmit) {
            self.close(CloseReason::Internal(e));
        }
    }

    fn respond(
        &mut self,
        rid: &RequestId,
        status: u16,
        retry_after: Option<u64>,
        body: String,
    ) -> Result<(), RespondError> {
        let State::Connected { subscribed, .. } = &self.state else { return Err(RespondError::NotConnected) };
        let subscribed = *subscribed;
        if !self.pending.remove(rid) {
            return Err(RespondError::UnknownRequest(rid.clone()));
        }
        // DPS answers only on the response topic the device subscribed to, at the granted QoS.
        let qos = subscribed.ok_or(RespondError::NotSubscribed)?;
        self.publish(qos, &HubTopic::DpsResponse { status, rid: rid.clone(), retry_after }, body);
        Ok(())
    }

    fn publish(&mut self, qos: QoS, topic: &HubTopic, body: String) {
        let mut p = Publish::new(topic.to_string(), qos, body);
        if qos == QoS::AtLeastOnce {
            p.pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        }
        self.send(&Packet::Publish(p));
    }

    fn handle_packet(&mut self, packet: Packet) {
        match (&self.state, packet) {
            (State::AwaitingConnect { .. }, Packet::Connect(c)) => self.handle_connect(c),
            (State::AwaitingConnect { .. }, other) => {
                self.close(CloseReason::ProtocolViolation(Violation::FirstPacketNotConnect(packet::name(&other))))
            }
            (State::Connected { .. }, Packet::Connect(_)) => {
                self.close(CloseReason::ProtocolViolation(Violation::SecondConnect))
            }
            (State::Connected { .. }, Packet::Publish(p)) => self.handle_publish(p),
            (State::Connected { registration_id, keep_alive, .. }, Packet::Subscribe(s)) => {
                let (registration_id, keep_alive) = (registration_id.clone(), *keep_alive);
                if s.filters.is_empty() {
                    return self.close(CloseReason::ProtocolViolation(Violation::EmptySubscribe));
                }
                let mut granted = None;
                for f in &s.filters {
                    if f.path != TopicFilter::DpsResponses.to_filter(&DeviceIdentity::device(&*registration_id)) {
                        return self
                            .close(CloseReason::BadSubscription(SubscriptionError::NotDpsResponses(f.path.clone())));
                    }
                    // QoS 2 is granted as QoS 1 (reference §9).
                    granted = Some(if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce });
                }
                let codes = s
                    .filters
                    .iter()
                    .map(|_| SubscribeReasonCode::Success(granted.unwrap_or(QoS::AtMostOnce)))
                    .collect();
                self.state = State::Connected { registration_id, keep_alive, subscribed: granted };
                self.send(&Packet::SubAck(SubAck::new(s.pkid, codes)));
            }
            (State::Connected { registration_id, keep_alive, .. }, Packet::Unsubscribe(u)) => {
                let (registration_id, keep_alive) = (registration_id.clone(), *keep_alive);
                let filter = TopicFilter::DpsResponses.to_filter(&DeviceIdentity::device(&*registration_id));
                if let Some(t) = u.topics.iter().find(|t| **t != filter) {
                    return self.close(CloseReason::BadSubscription(SubscriptionError::NotDpsResponses(t.clone())));
                }
                self.state = State::Connected { registration_id, keep_alive, subscribed: None };
                self.send(&Packet::UnsubAck(UnsubAck::new(u.pkid)));
            }
            // PUBACK of a QoS 1 response: responses are not redelivered, so there is nothing to complete.
            (State::Connected { .. }, Packet::PubAck(PubAck { pkid })) if pkid != 0 => {}
            (State::Connected { .. }, Packet::PingReq) => self.send(&Packet::PingResp),
            (State::Connected { .. }, Packet::Disconnect) => self.close(CloseReason::ClientDisconnected),
            (State::Connected { .. }, other) => {
                self.close(CloseReason::ProtocolViolation(Violation::NotFromDevice(packet::name(&other))))
            }
            // process() stops reading in these states.
            (State::Authenticating { .. } | State::Closed, _) => {}
        }
    }

    fn handle_connect(&mut self, c: Connect) {
        if c.protocol != Protocol::V4 {
            return self.refuse(ConnectReturnCode::RefusedProtocolVersion, "DPS speaks MQTT 3.1.1 (protocol level 4)");
        }
        let Some(login) = c.login else {
            return self.refuse(ConnectReturnCode::NotAuthorized, "no user name and password");
        };
        let username = match Username::parse(&login.username) {
            Ok(u) if u.dps => u,
            Ok(_) => {
                return self.refuse(ConnectReturnCode::NotAuthorized, "this is DPS; the user name is an IoT Hub one")
            }
            Err(e) => return self.refuse(ConnectReturnCode::NotAuthorized, e.to_string()),
        };
        let registration_id = username.identity.device_id.clone();
        if c.client_id != registration_id {
            return self.refuse(
                ConnectReturnCode::NotAuthorized,
                format!("[DPS-MQTT] client id '{}' is not the registration id '{registration_id}'", c.client_id),
            );
        }
        if login.password.is_empty() {
            return self.refuse(ConnectReturnCode::NotAuthorized, "no SAS token (X.509 attestation is not supported)");
        }
        // Node and the Embedded C SDK sign with skn=registration; the Python SDK sends no skn at all
        // (`abstract_provisioning_device_client.py`: `RenewableSasToken(uri, signing_mechanism)`), so both pass.
        let token = match SasToken::parse(&login.password) {
            Ok(t) if matches!(t.policy(), None | Some(super::DPS_POLICY)) => t,
            Ok(t) => {
                let why = format!("[DPS-MQTT] a DPS token has skn=registration or none, not skn={:?}", t.policy());
                return self.refuse(ConnectReturnCode::NotAuthorized, why);
            }
            Err(e) => return self.refuse(ConnectReturnCode::NotAuthorized, format!("password: {e}")),
        };
        // A Will is ignored: DPS has no telemetry to publish it as.
        let request = DpsConnectRequest {
            id_scope: username.host.clone(),
            registration_id,
            username,
            token,
            keep_alive: Duration::from_secs(c.keep_alive as u64),
        };
        let request = Box::new(request);
        self.events.push_back(DpsEvent::Authenticate(request.clone()));
        self.state = State::Authenticating { request };
    }

    fn handle_publish(&mut self, p: Publish) {
        let State::Connected { registration_id, .. } = &self.state else { return };
        let registration_id = registration_id.clone();
        if p.qos == QoS::ExactlyOnce {
            return self.close(CloseReason::Qos2Publish);
        }
        let topic = match DeviceTopic::parse(&p.topic, &DeviceIdentity::device(&*registration_id)) {
            Ok(t) => t,
            Err(e) => return self.close(CloseReason::WrongTopic(e)),
        };
        if p.qos == QoS::AtLeastOnce {
            self.send(&Packet::PubAck(PubAck::new(p.pkid)));
        }
        match topic {
            DeviceTopic::DpsRegister { rid } => match RegisterRequest::parse(&p.payload) {
                Ok(r) if r.registration_id == registration_id => {
                    self.pending.insert(rid.clone());
                    self.events.push_back(DpsEvent::RegisterRequested { rid, registration_id, payload_raw: r.payload });
                }
                // The service answers a bad body with 400 rather than closing (emulator choice: errorCode 400004).
                Ok(r) => self.answer_bad_request(
                    &rid,
                    &format!(
                        "the body's registrationId '{}' is not the connection's '{registration_id}'",
                        r.registration_id
                    ),
                ),
                Err(e) => self.answer_bad_request(&rid, &e.to_string()),
            },
            DeviceTopic::DpsOperationStatus { rid, operation_id } => {
                self.pending.insert(rid.clone());
                self.events.push_back(DpsEvent::StatusRequested { rid, operation_id });
            }
            DeviceTopic::Telemetry { .. }
            | DeviceTopic::TwinGet { .. }
            | DeviceTopic::TwinPatchReported { .. }
            | DeviceTopic::MethodResponse { .. } => self.close(CloseReason::HubTopicOnDps(p.topic)),
        }
    }

    fn answer_bad_request(&mut self, rid: &RequestId, why: &str) {
        let State::Connected { subscribed: Some(qos), .. } = self.state else { return };
        let body = ErrorBody::new(400004, why).to_json();
        self.publish(qos, &HubTopic::DpsResponse { status: 400, rid: rid.clone(), retry_after: None }, body);
    }
}

/// Which service a connection is for, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Not a whole packet yet; read more.
    NeedMore,
    /// A CONNECT with a DPS user name (`{scope}/registrations/{id}/…`).
    Dps,
    /// Anything else, including garbage, which [`HubSession`](crate::HubSession) then refuses.
    Hub,
}

/// Tells a DPS connection from an IoT Hub one by the first packet, without consuming it: the caller keeps the
/// bytes and feeds them to the session it creates. The SDKs dial the same host and ports for both (issue 11).
pub fn sniff_endpoint(first_bytes: &[u8], max_packet: usize) -> Endpoint {
    // Not a CONNECT: the hub session refuses it at once (only a CONNECT can be a DPS device's).
    if first_bytes.first().is_some_and(|b| b >> 4 != 1) {
        return Endpoint::Hub;
    }
    let mut buf = BytesMut::from(first_bytes);
    match mqttbytes::v4::read(&mut buf, max_packet) {
        Ok(Packet::Connect(c)) => match c.login {
            Some(l) if is_dps_username(&l.username) => Endpoint::Dps,
            Some(_) | None => Endpoint::Hub,
        },
        Err(mqttbytes::Error::InsufficientBytes(_)) => Endpoint::NeedMore,
        Ok(_) | Err(_) => Endpoint::Hub,
    }
}

/// True for a DPS CONNECT user name, `{idScope}/registrations/{registrationId}/api-version=…`.
///
/// The hub form of a module named `x` of a device named `registrations` has the same path, but its host is a
/// DNS name, while an ID scope never has a dot (`0ne00000A0A`), so the host tells them apart.
pub fn is_dps_username(username: &str) -> bool {
    Username::parse(username).is_ok_and(|u| u.dps && !u.host.contains('.'))
}
