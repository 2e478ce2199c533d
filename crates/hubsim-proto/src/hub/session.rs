use bytes::{Bytes, BytesMut};
use core::fmt;
use core::time::Duration;
use mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use mqttbytes::{Protocol, QoS};
use std::collections::{BTreeMap, VecDeque};

use crate::packet::{self, Framer};
use crate::property_bag::PropertyBag;
use crate::sas::SasToken;
use crate::time::Instant;
use crate::topic::{DeviceIdentity, DeviceTopic, HubTopic, RequestId, TopicFilter};
use crate::username::Username;

/// Hub-wide rules; the defaults are IoT Hub's.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// CONNECT must arrive this soon after the transport opens.
    pub connect_timeout: Duration,
    /// Cap on the server-side keep-alive timeout (the Azure load balancer's 1767 s).
    pub max_keep_alive_timeout: Duration,
    /// Largest telemetry message (body plus properties).
    pub max_message_size: usize,
    /// Application property added to telemetry published with RETAIN=1: `mqtt-retain` (current docs) or
    /// `x-opt-retain` (2016/2017 docs).
    pub retain_property: String,
    /// Most subscriptions a device may hold.
    pub max_subscriptions: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            connect_timeout: Duration::from_secs(30),
            max_keep_alive_timeout: Duration::from_secs(1767),
            max_message_size: crate::MAX_TELEMETRY_SIZE,
            retain_property: "mqtt-retain".into(),
            max_subscriptions: 5,
        }
    }
}

/// Why a connection ended, with the code IoT Hub logs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// The first packet was not CONNECT, or the CONNECT could not be accepted as MQTT 3.1.1.
    Refused { code: u8, why: String },
    /// The device sent DISCONNECT.
    ClientDisconnected,
    /// The transport closed without DISCONNECT.
    TransportClosed(String),
    /// No packet within 1.5 × keep-alive.
    KeepAliveTimeout(Duration),
    /// The SAS token expired during the connection.
    TokenExpired,
    /// A new connection for the same identity.
    ReplacedByNewConnection,
    /// Closed through the service API.
    ClosedByService(String),
    /// The device was disabled or deleted while connected.
    DeviceDisabled,
    /// The emulator is shutting down.
    ServerShutdown,
    /// PUBLISH with QoS 2.
    Qos2Publish,
    /// PUBLISH to a topic the device may not use (includes malformed property bags).
    WrongTopic(String),
    /// Telemetry over the size limit.
    MessageTooLarge(usize),
    /// SUBSCRIBE with a filter IoT Hub does not offer, or too many.
    BadSubscription(String),
    /// Bytes that are not MQTT, or MQTT the hub does not accept here.
    ProtocolViolation(String),
}

impl CloseReason {
    /// The IoT Hub error code logged for this reason (Azure Monitor `Connections` `resultType`).
    pub fn code(&self) -> u32 {
        match self {
            CloseReason::Refused { code: 3, .. } | CloseReason::DeviceDisabled => 403012,
            CloseReason::Refused { .. } => 401002,
            CloseReason::TokenExpired => 401003,
            CloseReason::ReplacedByNewConnection => 400027,
            CloseReason::ClientDisconnected => 0,
            CloseReason::MessageTooLarge(_) => 413002,
            CloseReason::ServerShutdown => 503000,
            CloseReason::ConnectTimeout
            | CloseReason::TransportClosed(_)
            | CloseReason::KeepAliveTimeout(_)
            | CloseReason::ClosedByService(_) => 404104,
            CloseReason::Qos2Publish
            | CloseReason::WrongTopic(_)
            | CloseReason::BadSubscription(_)
            | CloseReason::ProtocolViolation(_) => 400004,
        }
    }

    /// A short machine-friendly name, e.g. `qos2-publish`.
    pub fn kind(&self) -> &'static str {
        match self {
            CloseReason::ConnectTimeout => "connect-timeout",
            CloseReason::Refused { .. } => "refused",
            CloseReason::ClientDisconnected => "client-disconnect",
            CloseReason::TransportClosed(_) => "transport-closed",
            CloseReason::KeepAliveTimeout(_) => "keep-alive-timeout",
            CloseReason::TokenExpired => "token-expired",
            CloseReason::ReplacedByNewConnection => "replaced-by-new-connection",
            CloseReason::ClosedByService(_) => "closed-by-service",
            CloseReason::DeviceDisabled => "device-disabled",
            CloseReason::ServerShutdown => "server-shutdown",
            CloseReason::Qos2Publish => "qos2-publish",
            CloseReason::WrongTopic(_) => "wrong-topic",
            CloseReason::MessageTooLarge(_) => "message-too-large",
            CloseReason::BadSubscription(_) => "bad-subscription",
            CloseReason::ProtocolViolation(_) => "protocol-violation",
        }
    }

    /// True when the device did not end the connection itself, so its Will is published.
    pub fn publishes_will(&self) -> bool {
        !matches!(self, CloseReason::ClientDisconnected | CloseReason::Refused { .. } | CloseReason::ConnectTimeout)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ConnectTimeout => f.write_str("no CONNECT within the connect timeout"),
            CloseReason::Refused { code, why } => write!(f, "refused with CONNACK 0x{code:02x}: {why}"),
            CloseReason::ClientDisconnected => f.write_str("the device disconnected"),
            CloseReason::TransportClosed(why) => write!(f, "the connection closed without DISCONNECT ({why})"),
            CloseReason::KeepAliveTimeout(d) => write!(f, "keep-alive timeout: nothing received for {} s", d.as_secs()),
            CloseReason::TokenExpired => f.write_str("the SAS token expired"),
            CloseReason::ReplacedByNewConnection => f.write_str("replaced by a new connection for the same device"),
            CloseReason::ClosedByService(why) => write!(f, "closed by the service: {why}"),
            CloseReason::DeviceDisabled => f.write_str("the device was disabled or deleted"),
            CloseReason::ServerShutdown => f.write_str("the emulator is shutting down"),
            CloseReason::Qos2Publish => f.write_str("[MQTT-3.3.1-4] QoS 2 PUBLISH is not supported by IoT Hub"),
            CloseReason::WrongTopic(why) => write!(f, "publish to a topic IoT Hub does not accept: {why}"),
            CloseReason::MessageTooLarge(n) => write!(f, "message of {n} bytes exceeds IoT Hub's 256 KB limit"),
            CloseReason::BadSubscription(why) => write!(f, "subscription IoT Hub does not offer: {why}"),
            CloseReason::ProtocolViolation(why) => write!(f, "protocol violation: {why}"),
        }
    }
}

/// A telemetry message as the hub receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedTelemetry {
    pub identity: DeviceIdentity,
    /// Decoded properties, plus `mqtt-retain`/`mqtt-dup` when those flags were set, plus
    /// `iothub-MessageType: Will` for a Will.
    pub properties: PropertyBag,
    pub payload: Bytes,
}

/// What a valid CONNECT asks for; the task checks the token against the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRequest {
    pub identity: DeviceIdentity,
    pub username: Username,
    pub token: SasToken,
    pub clean_session: bool,
    pub keep_alive: Duration,
}

/// What the session needs the task to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    /// Check the token, then [`HubSession::accept`] or [`HubSession::refuse`].
    Authenticate(ConnectRequest),
    /// Store durably, then [`HubSession::ack_telemetry`] with `ack` when it is `Some`.
    Telemetry {
        message: ReceivedTelemetry,
        ack: Option<u16>,
    },
    /// Filters granted (persist them for a CleanSession 0 device).
    Subscribed(Vec<(TopicFilter, QoS)>),
    Unsubscribed(Vec<TopicFilter>),
    /// The device acknowledged (completed) the C2D delivery with this packet id.
    C2dCompleted(u16),
    MethodResponse {
        rid: RequestId,
        status: u16,
        payload: Bytes,
    },
    TwinGet {
        rid: RequestId,
    },
    TwinPatchReported {
        rid: RequestId,
        patch: Bytes,
    },
    /// The connection is over; the task closes the transport and publishes `will` if present.
    Closed {
        reason: CloseReason,
        will: Option<ReceivedTelemetry>,
    },
}

/// Connection state.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    AwaitingConnect { deadline: Instant },
    Authenticating { request: Box<ConnectRequest>, will: Option<Box<ReceivedTelemetry>> },
    Connected { identity: DeviceIdentity, keep_alive: Option<Duration>, token_expiry: Option<Instant> },
    Closed,
}

/// The hub side of one connection. See the [module docs](crate::hub).
#[derive(Debug)]
pub struct HubSession {
    config: HubConfig,
    state: State,
    framer: Framer,
    transmit: BytesMut,
    events: VecDeque<HubEvent>,
    will: Option<ReceivedTelemetry>,
    last_received: Instant,
    subscriptions: BTreeMap<TopicFilter, QoS>,
    /// C2D publishes awaiting PUBACK, in send order.
    c2d_in_flight: VecDeque<u16>,
    next_pkid: u16,
}

impl HubSession {
    /// A session for a transport opened at `now`.
    pub fn new(config: HubConfig, now: Instant) -> Self {
        // Leave room for the topic and header around the largest message so oversize is reported as such.
        let framer = Framer::new(config.max_message_size + 70 * 1024);
        HubSession {
            state: State::AwaitingConnect { deadline: now + config.connect_timeout },
            config,
            framer,
            transmit: BytesMut::new(),
            events: VecDeque::new(),
            will: None,
            last_received: now,
            subscriptions: BTreeMap::new(),
            c2d_in_flight: VecDeque::new(),
            next_pkid: 1,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// The connected identity.
    pub fn identity(&self) -> Option<&DeviceIdentity> {
        match &self.state {
            State::Connected { identity, .. } => Some(identity),
            State::Authenticating { request, .. } => Some(&request.identity),
            _ => None,
        }
    }
    /// Granted QoS of a subscription, if the device holds it.
    pub fn subscription(&self, f: &TopicFilter) -> Option<QoS> {
        self.subscriptions.get(f).copied()
    }
    /// All subscriptions with their granted QoS.
    pub fn subscriptions(&self) -> Vec<(TopicFilter, QoS)> {
        self.subscriptions.iter().map(|(f, q)| (f.clone(), *q)).collect()
    }
    /// C2D deliveries awaiting PUBACK.
    pub fn c2d_in_flight(&self) -> usize {
        self.c2d_in_flight.len()
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
        while !self.is_closed() && !matches!(self.state, State::Authenticating { .. }) {
            match self.framer.next_packet() {
                Ok(Some(p)) => {
                    self.last_received = now;
                    self.handle_packet(p);
                }
                Ok(None) => return,
                Err(packet::FrameError::TooLarge(n, _)) => return self.close(CloseReason::MessageTooLarge(n)),
                Err(e) => return self.close(CloseReason::ProtocolViolation(e.to_string())),
            }
        }
    }

    /// The transport closed.
    pub fn handle_transport_closed(&mut self, why: impl Into<String>) {
        if self.is_closed() {
            return;
        }
        match self.framer.buffered() {
            0 => self.close(CloseReason::TransportClosed(why.into())),
            n => self.close(CloseReason::ProtocolViolation(format!(
                "truncated packet: the connection closed with {n} bytes of an incomplete packet"
            ))),
        }
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::AwaitingConnect { deadline } if now >= *deadline => self.close(CloseReason::ConnectTimeout),
            State::Connected { keep_alive, token_expiry, .. } => {
                let (keep_alive, token_expiry) = (*keep_alive, *token_expiry);
                if token_expiry.is_some_and(|t| now >= t) {
                    self.close(CloseReason::TokenExpired);
                } else if let Some(ka) = keep_alive {
                    if now >= self.last_received + ka {
                        self.close(CloseReason::KeepAliveTimeout(ka));
                    }
                }
            }
            _ => {}
        }
    }

    // ---- commands from the task -----------------------------------------------------------------------------

    /// Accepts the connection: CONNACK 0. `restored` are the stored subscriptions of a CleanSession 0 device
    /// (`session_present` then tells the device they exist); `token_expiry` closes the connection when reached.
    pub fn accept(
        &mut self,
        now: Instant,
        session_present: bool,
        restored: Vec<(TopicFilter, QoS)>,
        token_expiry: Option<Instant>,
    ) {
        if !matches!(self.state, State::Authenticating { .. }) {
            // API misuse by the task: nothing to accept.
            return;
        }
        let State::Authenticating { request, will } = std::mem::replace(&mut self.state, State::Closed) else { return };
        // Keep-alive 0 or above the cap is replaced by the cap (protocol gateway DeriveKeepAliveTimeout).
        let ka = if request.keep_alive.is_zero() {
            self.config.max_keep_alive_timeout
        } else {
            (request.keep_alive * 3 / 2).min(self.config.max_keep_alive_timeout)
        };
        self.subscriptions = restored.into_iter().collect();
        self.will = will.map(|w| *w);
        self.last_received = now;
        self.send(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present)));
        self.state = State::Connected { identity: request.identity, keep_alive: Some(ka), token_expiry };
        self.process(now);
    }

    /// Refuses the pending CONNECT with `code` (0x05 not authorized, 0x03 disabled) and closes.
    pub fn refuse(&mut self, code: ConnectReturnCode, why: impl Into<String>) {
        self.send(&Packet::ConnAck(ConnAck::new(code, false)));
        self.close(CloseReason::Refused { code: code as u8, why: why.into() });
    }

    /// PUBACKs a stored QoS 1 telemetry message.
    pub fn ack_telemetry(&mut self, pkid: u16) {
        if matches!(self.state, State::Connected { .. }) {
            self.send(&Packet::PubAck(PubAck::new(pkid)));
        }
    }

    /// Delivers a C2D message if the device is subscribed; returns the packet id for QoS 1 (await
    /// [`HubEvent::C2dCompleted`]), `Some(None)` for QoS 0 (completed on send), `None` if not deliverable now.
    pub fn deliver_c2d(&mut self, properties: PropertyBag, payload: Bytes, redelivery: bool) -> Option<Option<u16>> {
        let State::Connected { identity, .. } = &self.state else { return None };
        let qos = *self.subscriptions.get(&TopicFilter::C2d)?;
        let topic =
            HubTopic::C2d { identity: DeviceIdentity::device(identity.device_id.clone()), properties }.to_string();
        let mut p = Publish::from_bytes(topic, qos, payload);
        p.dup = redelivery;
        if qos == QoS::AtLeastOnce {
            p.pkid = self.alloc_pkid();
            self.c2d_in_flight.push_back(p.pkid);
        }
        let pkid = (qos == QoS::AtLeastOnce).then_some(p.pkid);
        self.send(&Packet::Publish(p));
        Some(pkid)
    }

    /// Re-sends an unacknowledged QoS 1 C2D delivery with DUP and its original packet id (its lock expired).
    pub fn redeliver_c2d(&mut self, pkid: u16, properties: PropertyBag, payload: Bytes) -> bool {
        let State::Connected { identity, .. } = &self.state else { return false };
        if !self.c2d_in_flight.contains(&pkid) {
            return false;
        }
        let topic =
            HubTopic::C2d { identity: DeviceIdentity::device(identity.device_id.clone()), properties }.to_string();
        let mut p = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        p.dup = true;
        self.send(&Packet::Publish(p));
        true
    }

    /// Forgets an in-flight C2D delivery (the message was dead-lettered); a later PUBACK for it is ignored.
    pub fn abandon_c2d(&mut self, pkid: u16) {
        self.c2d_in_flight.retain(|p| *p != pkid);
    }

    /// Sends a direct method request (QoS 0). False if the device is not subscribed to methods.
    pub fn send_method_request(&mut self, name: &str, rid: &RequestId, payload: Bytes) -> bool {
        if !matches!(self.state, State::Connected { .. }) || !self.subscriptions.contains_key(&TopicFilter::Methods) {
            return false;
        }
        let topic = HubTopic::MethodRequest { name: name.into(), rid: rid.clone() }.to_string();
        self.send(&Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, payload)));
        true
    }

    /// Answers a twin request.
    pub fn twin_response(&mut self, rid: &RequestId, status: u16, version: Option<u64>, body: Bytes) {
        if !self.subscriptions.contains_key(&TopicFilter::TwinResponses) {
            // IoT Hub only answers on the response topic the device subscribed to.
            return;
        }
        let topic = HubTopic::TwinResponse { status, rid: rid.clone(), version }.to_string();
        self.publish_qos_of(TopicFilter::TwinResponses, topic, body);
    }

    /// Pushes a desired-properties patch if the device subscribed to them.
    pub fn push_desired(&mut self, version: u64, body: Bytes) -> bool {
        if !self.subscriptions.contains_key(&TopicFilter::TwinDesired) {
            return false;
        }
        let topic = HubTopic::TwinDesired { version: Some(version) }.to_string();
        self.publish_qos_of(TopicFilter::TwinDesired, topic, body);
        true
    }

    /// Ends the connection for a reason outside the protocol (replaced, killed, disabled, shutdown).
    pub fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let will = if reason.publishes_will() { self.will.take() } else { None };
        self.state = State::Closed;
        self.events.push_back(HubEvent::Closed { reason, will });
    }

    // ---- outputs --------------------------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.transmit.is_empty()).then(|| self.transmit.split().freeze())
    }

    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::AwaitingConnect { deadline } => Some(*deadline),
            State::Connected { keep_alive, token_expiry, .. } => {
                let ka = keep_alive.map(|k| self.last_received + k);
                match (ka, *token_expiry) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            _ => None,
        }
    }

    // ---- internals ------------------------------------------------------------------------------------------

    fn send(&mut self, p: &Packet) {
        if let Err(e) = packet::encode(p, &mut self.transmit) {
            self.close(CloseReason::ProtocolViolation(format!("cannot encode a reply: {e}")));
        }
    }

    fn publish_qos_of(&mut self, filter: TopicFilter, topic: String, body: Bytes) {
        let qos = self.subscriptions.get(&filter).copied().unwrap_or(QoS::AtMostOnce);
        let mut p = Publish::from_bytes(topic, qos, body);
        if qos == QoS::AtLeastOnce {
            // Responses are not redelivered; the PUBACK only has to be accepted.
            p.pkid = self.alloc_pkid();
        }
        self.send(&Packet::Publish(p));
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.c2d_in_flight.contains(&id) {
                return id;
            }
        }
    }

    fn handle_packet(&mut self, packet: Packet) {
        match (&self.state, packet) {
            (State::AwaitingConnect { .. }, Packet::Connect(c)) => self.handle_connect(c),
            (State::AwaitingConnect { .. }, other) => self.close(CloseReason::ProtocolViolation(format!(
                "[MQTT-3.1.0-1] the first packet must be CONNECT, got {}",
                name(&other)
            ))),
            (State::Connected { .. }, Packet::Connect(_)) => {
                self.close(CloseReason::ProtocolViolation("[MQTT-3.1.0-2] a second CONNECT".into()))
            }
            (State::Connected { .. }, Packet::Publish(p)) => self.handle_publish(p),
            (State::Connected { identity, .. }, Packet::Subscribe(s)) => {
                let identity = identity.clone();
                let mut granted = Vec::new();
                for f in &s.filters {
                    match TopicFilter::parse(&f.path, &identity) {
                        // [reference §5] QoS 2 is granted as QoS 1.
                        Ok(tf) => granted
                            .push((tf, if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce })),
                        // IoT Hub closes the connection rather than answering SUBACK 0x80 (reference §8).
                        Err(e) => return self.close(CloseReason::BadSubscription(e.to_string())),
                    }
                }
                if s.filters.is_empty() {
                    return self
                        .close(CloseReason::ProtocolViolation("[MQTT-3.8.3-3] SUBSCRIBE without filters".into()));
                }
                for (f, q) in &granted {
                    self.subscriptions.insert(f.clone(), *q);
                }
                if self.subscriptions.len() > self.config.max_subscriptions {
                    return self.close(CloseReason::BadSubscription(format!(
                        "more than {} subscriptions",
                        self.config.max_subscriptions
                    )));
                }
                let codes = granted.iter().map(|(_, q)| SubscribeReasonCode::Success(*q)).collect();
                self.send(&Packet::SubAck(SubAck::new(s.pkid, codes)));
                self.events.push_back(HubEvent::Subscribed(granted));
            }
            (State::Connected { identity, .. }, Packet::Unsubscribe(u)) => {
                let identity = identity.clone();
                let mut removed = Vec::new();
                for t in &u.topics {
                    match TopicFilter::parse(t, &identity) {
                        Ok(f) => {
                            self.subscriptions.remove(&f);
                            removed.push(f);
                        }
                        Err(e) => return self.close(CloseReason::BadSubscription(e.to_string())),
                    }
                }
                self.send(&Packet::UnsubAck(UnsubAck::new(u.pkid)));
                self.events.push_back(HubEvent::Unsubscribed(removed));
            }
            (State::Connected { .. }, Packet::PubAck(PubAck { pkid })) => match self.c2d_in_flight.front() {
                Some(&front) if front == pkid => {
                    self.c2d_in_flight.pop_front();
                    self.events.push_back(HubEvent::C2dCompleted(pkid));
                }
                Some(&front) if self.c2d_in_flight.contains(&pkid) => self.close(CloseReason::ProtocolViolation(
                    format!("[MQTT-4.6.0-2] PUBACK {pkid} out of order (expected {front} first)"),
                )),
                // PUBACK of a QoS 1 twin response or desired patch: nothing to complete.
                _ if pkid != 0 => {}
                _ => self.close(CloseReason::ProtocolViolation("PUBACK with packet id 0".into())),
            },
            (State::Connected { .. }, Packet::PingReq) => self.send(&Packet::PingResp),
            (State::Connected { .. }, Packet::Disconnect) => self.close(CloseReason::ClientDisconnected),
            (State::Connected { .. }, other) => {
                self.close(CloseReason::ProtocolViolation(format!("a device may not send {}", name(&other))))
            }
            (State::Authenticating { .. } | State::Closed, _) => {}
        }
    }

    fn handle_connect(&mut self, c: Connect) {
        if c.protocol != Protocol::V4 {
            return self
                .refuse(ConnectReturnCode::RefusedProtocolVersion, "IoT Hub speaks MQTT 3.1.1 (protocol level 4)");
        }
        let Some(login) = c.login else {
            return self.refuse(ConnectReturnCode::NotAuthorized, "no user name and password");
        };
        let username = match Username::parse(&login.username) {
            Ok(u) => u,
            Err(e) => return self.refuse(ConnectReturnCode::NotAuthorized, e.to_string()),
        };
        if username.dps {
            return self.refuse(ConnectReturnCode::NotAuthorized, "this is an IoT Hub endpoint, not DPS");
        }
        let identity = username.identity.clone();
        if DeviceIdentity::from_client_id(&c.client_id) != identity {
            return self.refuse(
                ConnectReturnCode::NotAuthorized,
                format!("client id '{}' does not match '{}' in the user name", c.client_id, identity),
            );
        }
        if login.password.is_empty() {
            return self
                .refuse(ConnectReturnCode::NotAuthorized, "no SAS token (X.509 authentication is not supported)");
        }
        let token = match SasToken::parse(&login.password) {
            Ok(t) => t,
            Err(e) => return self.refuse(ConnectReturnCode::NotAuthorized, format!("password: {e}")),
        };
        let will = match c.last_will {
            None => None,
            Some(w) => match DeviceTopic::parse(&w.topic, &identity) {
                Ok(DeviceTopic::Telemetry { identity, mut properties }) => {
                    properties.push("iothub-MessageType", "Will");
                    Some(ReceivedTelemetry { identity, properties, payload: w.message })
                }
                Ok(_) => {
                    return self.refuse(ConnectReturnCode::NotAuthorized, "the Will topic must be the telemetry topic")
                }
                Err(e) => return self.refuse(ConnectReturnCode::NotAuthorized, format!("Will topic: {e}")),
            },
        };
        let request = ConnectRequest {
            identity,
            username,
            token,
            clean_session: c.clean_session,
            keep_alive: Duration::from_secs(c.keep_alive as u64),
        };
        self.events.push_back(HubEvent::Authenticate(request.clone()));
        self.state = State::Authenticating { request: Box::new(request), will: will.map(Box::new) };
    }

    fn handle_publish(&mut self, p: Publish) {
        let State::Connected { identity, .. } = &self.state else { return };
        if p.qos == QoS::ExactlyOnce {
            return self.close(CloseReason::Qos2Publish);
        }
        match DeviceTopic::parse(&p.topic, identity) {
            Ok(DeviceTopic::Telemetry { identity, mut properties }) => {
                let size = p.payload.len() + properties.size();
                if size > self.config.max_message_size {
                    return self.close(CloseReason::MessageTooLarge(size));
                }
                if p.retain {
                    properties.push(self.config.retain_property.clone(), "true");
                }
                if p.dup {
                    properties.push("mqtt-dup", "true");
                }
                let ack = (p.qos == QoS::AtLeastOnce).then_some(p.pkid);
                self.events.push_back(HubEvent::Telemetry {
                    message: ReceivedTelemetry { identity, properties, payload: p.payload },
                    ack,
                });
            }
            Ok(DeviceTopic::TwinGet { rid }) => {
                self.ack_now(&p);
                self.events.push_back(HubEvent::TwinGet { rid });
            }
            Ok(DeviceTopic::TwinPatchReported { rid }) => {
                self.ack_now(&p);
                self.events.push_back(HubEvent::TwinPatchReported { rid, patch: p.payload });
            }
            Ok(DeviceTopic::MethodResponse { status, rid }) => {
                self.ack_now(&p);
                self.events.push_back(HubEvent::MethodResponse { rid, status, payload: p.payload });
            }
            Ok(DeviceTopic::DpsRegister { .. } | DeviceTopic::DpsOperationStatus { .. }) => {
                self.close(CloseReason::WrongTopic(format!("'{}' is a DPS topic; this is IoT Hub", p.topic)))
            }
            Err(e) => self.close(CloseReason::WrongTopic(e.to_string())),
        }
    }

    fn ack_now(&mut self, p: &Publish) {
        if p.qos == QoS::AtLeastOnce {
            self.send(&Packet::PubAck(PubAck::new(p.pkid)));
        }
    }
}

fn name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}
