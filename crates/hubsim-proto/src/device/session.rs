use bytes::{Bytes, BytesMut};
use core::time::Duration;
use mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Login, Packet, PubAck, PubRel, Publish, Subscribe, SubscribeFilter,
    SubscribeReasonCode, Unsubscribe,
};
use mqttbytes::QoS;
use std::collections::VecDeque;

use super::small_map::SmallMap;
use thiserror::Error;

use crate::packet::{self, Framer};
use crate::property_bag::PropertyBag;
use crate::time::Instant;
use crate::topic::{DeviceIdentity, DeviceTopic, HubTopic, RequestId, TopicFilter};
use crate::username::Username;

/// Static settings of a device session.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Hub host name as it appears in the user name (the connection string's HostName, never the gateway).
    pub host_name: String,
    pub identity: DeviceIdentity,
    pub api_version: String,
    /// IoT Plug and Play model id, sent in the user name.
    pub model_id: Option<String>,
    /// Product string sent as `DeviceClientType`.
    pub client_type: Option<String>,
    /// CleanSession flag; the SDKs use `false`, so IoT Hub keeps subscriptions and queues C2D while offline.
    pub clean_session: bool,
    /// MQTT keep-alive; zero disables PINGREQ.
    pub keep_alive: Duration,
    /// How long to wait for PINGRESP before calling the connection dead.
    pub ping_timeout: Duration,
    /// How long to wait for CONNACK.
    pub connect_timeout: Duration,
    /// How long a twin request may go unanswered.
    pub request_timeout: Duration,
    /// Acknowledge C2D messages as soon as they are reported; otherwise call [`DeviceSession::ack_c2d`].
    pub auto_ack_c2d: bool,
    /// Most QoS 1 publishes awaiting PUBACK at once; further ones wait in order.
    pub max_inflight: usize,
    /// Most QoS 1 publishes kept (in flight plus waiting) before [`SendError::QueueFull`].
    pub max_queued: usize,
    /// Most bytes of QoS 1 publishes (topics and payloads) kept before [`SendError::QueueFull`]: with
    /// [`MAX_TELEMETRY_SIZE`](crate::MAX_TELEMETRY_SIZE) messages, `max_queued` alone would allow gigabytes.
    pub max_queued_bytes: usize,
    /// Largest packet accepted from the hub.
    pub max_incoming_packet: usize,
}

impl DeviceConfig {
    /// Defaults for `identity` on `host_name`: CleanSession 0, keep-alive 60 s, 30 s timeouts.
    pub fn new(host_name: impl Into<String>, identity: DeviceIdentity) -> Self {
        DeviceConfig {
            host_name: host_name.into(),
            identity,
            api_version: crate::API_VERSION.into(),
            model_id: None,
            client_type: None,
            clean_session: false,
            keep_alive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            auto_ack_c2d: true,
            max_inflight: 64,
            max_queued: 10_000,
            max_queued_bytes: 32 * 1024 * 1024,
            max_incoming_packet: 1024 * 1024,
        }
    }

    /// The CONNECT user name.
    pub fn username(&self) -> Username {
        let mut u = Username::new(self.host_name.clone(), self.identity.clone());
        u.api_version = Some(self.api_version.clone());
        u.model_id = self.model_id.clone();
        u.client_type = self.client_type.clone();
        u
    }
}

/// QoS for telemetry. IoT Hub closes the connection on a QoS 2 PUBLISH, so choosing it has to be explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryQos {
    AtMostOnce,
    AtLeastOnce,
    /// QoS 2: IoT Hub will close the connection. Useful to test a hub's or a gateway's behaviour.
    ExactlyOnceHubWillClose,
}

impl TelemetryQos {
    fn mqtt(self) -> QoS {
        match self {
            TelemetryQos::AtMostOnce => QoS::AtMostOnce,
            TelemetryQos::AtLeastOnce => QoS::AtLeastOnce,
            TelemetryQos::ExactlyOnceHubWillClose => QoS::ExactlyOnce,
        }
    }
}

/// A device-to-cloud message.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub properties: PropertyBag,
    pub payload: Bytes,
    pub qos: TelemetryQos,
    pub retain: bool,
}

impl Telemetry {
    /// A QoS 1 message without properties.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Telemetry {
            properties: PropertyBag::new(),
            payload: payload.into(),
            qos: TelemetryQos::AtLeastOnce,
            retain: false,
        }
    }
    /// Size as IoT Hub counts it: body plus property names and values.
    pub fn size(&self) -> usize {
        self.payload.len() + self.properties.size()
    }
}

/// The MQTT Will: published by the hub as telemetry (`iothub-MessageType: Will`) if the connection drops uncleanly.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub properties: PropertyBag,
    pub payload: Bytes,
    pub qos: QoS,
}

/// Per-connection options of [`DeviceSession::connect`].
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The SAS token string (`SharedAccessSignature sr=…`), or `None` for X.509.
    pub password: Option<String>,
    pub will: Option<Will>,
}

/// A local handle for a telemetry message, reported back in [`Event::TelemetryAcked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishId(pub u64);

/// Identifies a received QoS 1 C2D message for [`DeviceSession::ack_c2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pkid: u16,
    epoch: u64,
}

/// A CONNACK refusal and what IoT Hub means by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRefusal(pub u8);

impl ConnectRefusal {
    /// A sentence a user can act on.
    pub fn meaning(&self) -> &'static str {
        match self.0 {
            1 => "unacceptable protocol version: the hub only speaks MQTT 3.1.1 here",
            2 => "identifier rejected: the client id is not acceptable",
            3 => "server unavailable: the device is disabled, or the hub has a problem",
            4 => "bad user name or password",
            5 => "not authorized: the SAS token is wrong, expired or for another device, or the device does not exist",
            _ => "refused for an unknown reason",
        }
    }
}

impl core::fmt::Display for ConnectRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CONNACK 0x{:02x}: {}", self.0, self.meaning())
    }
}

/// Why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// The transport closed (the hub closed it, or the network failed); the driver's description.
    TransportClosed(String),
    /// No PINGRESP within the ping timeout.
    KeepAliveTimeout,
    /// No CONNACK within the connect timeout.
    ConnackTimeout,
    /// The hub refused the connection.
    Refused(ConnectRefusal),
    /// The hub sent something that breaks MQTT or IoT Hub's protocol; the driver must close the transport.
    ProtocolViolation(HubViolation),
    /// The session could not encode its own packet; the driver must close the transport.
    EncodeFailed(packet::EncodeError),
    /// [`DeviceSession::disconnect`] was called.
    Disconnected,
}

impl LostReason {
    /// Whether connecting again with the same settings can succeed, so a driver may retry with backoff.
    ///
    /// A CONNACK refusal never can: each return code ([MQTT-3.2.2-3], table 3.1) names something a person must
    /// change — the protocol (0x01), the client id (0x02), a disabled device or a hub problem IoT Hub reports as
    /// 0x03 (the C SDK maps it to "device disabled"; reference §5), the credentials (0x04, 0x05) — and an
    /// undefined code is a hub we do not understand. A session that breaks the protocol or cannot encode its own
    /// packet would fail the same way again. A lost transport, a missed keep-alive or a missing CONNACK can be
    /// transient. [`Disconnected`](LostReason::Disconnected) was asked for and is not retried either.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LostReason::TransportClosed(_) | LostReason::KeepAliveTimeout | LostReason::ConnackTimeout)
    }
}

impl core::fmt::Display for LostReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LostReason::TransportClosed(why) => write!(f, "the connection was closed ({why})"),
            LostReason::KeepAliveTimeout => f.write_str("no answer to a keep-alive ping: the connection is dead"),
            LostReason::ConnackTimeout => f.write_str("the hub did not answer CONNECT in time"),
            LostReason::Refused(r) => write!(f, "the hub refused the connection: {r}"),
            LostReason::ProtocolViolation(why) => write!(f, "protocol violation by the hub: {why}"),
            LostReason::EncodeFailed(e) => write!(f, "internal error: {e}"),
            LostReason::Disconnected => f.write_str("disconnected"),
        }
    }
}

/// The kind of a correlated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    TwinGet,
    TwinPatchReported,
}

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    TimedOut,
    ConnectionLost,
}

/// A cloud-to-device message.
#[derive(Debug, Clone, PartialEq)]
pub struct C2dMessage {
    pub properties: PropertyBag,
    pub payload: Bytes,
    /// Set when the hub redelivers a message (DUP flag).
    pub redelivered: bool,
    /// Present for QoS 1 deliveries; the hub completes the message when it is acknowledged.
    pub ack: Option<AckToken>,
}

/// Why a publish from the hub was reported as [`Event::UnknownPublish`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnexpectedPublish {
    #[error("a twin response to request {0}, which is not outstanding (it timed out, or was never sent)")]
    LateTwinResponse(RequestId),
    #[error("a DPS response on an IoT Hub connection")]
    DpsResponse,
    #[error(transparent)]
    Topic(crate::topic::TopicError),
}

/// Result of one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    Qos(QoS),
    Refused,
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connected {
        session_present: bool,
    },
    TelemetryAcked {
        id: PublishId,
        sent_at: Instant,
    },
    C2d(C2dMessage),
    MethodRequest {
        name: String,
        rid: RequestId,
        payload: Bytes,
    },
    TwinResponse {
        rid: RequestId,
        kind: RequestKind,
        status: u16,
        version: Option<u64>,
        body: Bytes,
    },
    DesiredPropertiesPatch {
        version: Option<u64>,
        body: Bytes,
    },
    RequestFailed {
        rid: RequestId,
        kind: RequestKind,
        reason: RequestFailure,
    },
    Subscribed {
        results: Vec<(TopicFilter, Granted)>,
    },
    Unsubscribed {
        filters: Vec<TopicFilter>,
    },
    /// A publish on a topic the session does not expect (reported, acknowledged, not fatal).
    UnknownPublish {
        topic: String,
        payload: Bytes,
        why: UnexpectedPublish,
    },
    /// The connection ended. `likely_cause` names something this device sent shortly before that IoT Hub
    /// forbids, when there was one.
    ConnectionLost {
        reason: LostReason,
        likely_cause: Option<String>,
    },
}

/// Why a command was refused. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    #[error("not connected")]
    NotConnected,
    #[error("the message is {size} bytes; IoT Hub accepts at most {max} (body plus properties)")]
    TooLarge { size: usize, max: usize },
    #[error("{0} messages are already waiting for acknowledgement")]
    QueueFull(usize),
    #[error("a method response body must be JSON or empty")]
    NotJson,
    #[error("API misuse: this C2D message was already acknowledged")]
    UnknownAck,
    #[error("API misuse: connect() while a connection is open; disconnect() or report the transport's close first")]
    AlreadyConnected,
    #[error(transparent)]
    Encode(#[from] packet::EncodeError),
}

/// Why input was refused. After a `Violation` or `Encode` the session is already disconnected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("bytes arrived while no connection is open")]
    NotConnected,
    #[error("protocol violation by the hub: {0}")]
    Violation(HubViolation),
    #[error("internal error: {0}")]
    Encode(packet::EncodeError),
    /// The provisioning client's violations (`provisioning::device`), in its words until it types them.
    #[error("protocol violation by DPS: {0}")]
    DpsViolation(String),
}

/// Bytes from the hub that break MQTT 3.1.1 or IoT Hub's protocol; the device closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HubViolation {
    #[error(transparent)]
    Frame(packet::FrameError),
    #[error("[MQTT-3.2.0-1] the first packet from the server must be CONNACK, got {0}")]
    ExpectedConnAck(&'static str),
    #[error("[MQTT-3.1.0-2] a second CONNACK: it answers the connection's only CONNECT")]
    SecondConnAck,
    /// CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ and DISCONNECT go from client to server only in MQTT 3.1.1.
    #[error("a server never sends {0} to a client (MQTT 3.1.1 §2.2.1, table 2.1)")]
    NotFromServer(&'static str),
    #[error("PUBACK for packet id {0}, which is not in flight (MQTT 3.1.1 §4.3.2)")]
    UnknownPubAck(u16),
    #[error("PUBREC for packet id {0}, which is not in flight (MQTT 3.1.1 §4.3.3)")]
    UnknownPubRec(u16),
    #[error("PUBCOMP for packet id {0}, which is not in flight (MQTT 3.1.1 §4.3.3)")]
    UnknownPubComp(u16),
    #[error("PUBREL for packet id {0}: it answers a PUBREC, and IoT Hub never publishes at QoS 2 (MQTT 3.1.1 §4.3.3)")]
    UnexpectedPubRel(u16),
    #[error("[MQTT-3.8.4-2] SUBACK for packet id {0}, which no SUBSCRIBE awaits")]
    UnknownSubAck(u16),
    #[error("[MQTT-3.9.3-1] SUBACK has {codes} codes for {filters} filters")]
    SubAckCount { codes: usize, filters: usize },
    #[error("[MQTT-3.10.4-4] UNSUBACK for packet id {0}, which no UNSUBSCRIBE awaits")]
    UnknownUnsubAck(u16),
    #[error("IoT Hub never publishes at QoS 2 (reference §5)")]
    Qos2Publish,
}

/// Why input handling stopped: the hub's fault, or ours.
enum PacketError {
    Violation(HubViolation),
    Encode(packet::EncodeError),
}

impl From<HubViolation> for PacketError {
    fn from(v: HubViolation) -> Self {
        PacketError::Violation(v)
    }
}

impl From<packet::EncodeError> for PacketError {
    fn from(e: packet::EncodeError) -> Self {
        PacketError::Encode(e)
    }
}

/// The connection's phase. Data that outlives a connection lives in [`DeviceSession`]; the transition diagram is
/// in the [module docs](crate::device).
#[derive(Debug, Clone, PartialEq)]
enum State {
    Disconnected,
    Connecting { deadline: Instant },
    Connected { since: Instant, session_present: bool },
}

#[derive(Debug, Clone)]
struct Outgoing {
    id: PublishId,
    publish: Publish,
    /// Sent at least once on some connection.
    sent: bool,
    /// Sent on the current connection (awaiting PUBACK there).
    in_flight: bool,
    sent_at: Instant,
}

#[derive(Debug, Clone)]
struct PendingRequest {
    kind: RequestKind,
    deadline: Instant,
}

/// How long after sending something the hub forbids a close is blamed on it.
const BLAME_WINDOW: Duration = Duration::from_secs(10);

/// The device side of a connection. See the [module docs](crate::device).
///
/// ```text
///                connect()                CONNACK 0
///  Disconnected ───────────▶ Connecting ───────────▶ Connected
///       ▲                      │  CONNACK ≠ 0,           │ disconnect(), transport closed,
///       │                      │  CONNACK timeout,       │ no PINGRESP, protocol violation
///       └──────────────────────┴─────────────────────────┘
/// ```
///
/// Input is read only while `Connecting` (CONNACK first, [MQTT-3.2.0-1]) or `Connected`; every packet a server
/// may not send, and every acknowledgement of something not in flight, is a typed [`HubViolation`].
#[derive(Debug)]
pub struct DeviceSession {
    config: DeviceConfig,
    state: State,
    framer: Framer,
    transmit: BytesMut,
    events: VecDeque<Event>,
    /// QoS 1/2 telemetry not yet acknowledged, in send order.
    outgoing: VecDeque<Outgoing>,
    /// Bytes of `outgoing` (topics and payloads), bounded by `max_queued_bytes`.
    outgoing_bytes: usize,
    next_publish_id: u64,
    next_pkid: u16,
    /// SUBSCRIBE/UNSUBSCRIBE awaiting their ack, by packet id.
    pending_subs: SmallMap<u16, Vec<TopicFilter>>,
    pending_unsubs: SmallMap<u16, Vec<TopicFilter>>,
    /// Outstanding twin requests by `$rid`.
    requests: SmallMap<RequestId, PendingRequest>,
    next_rid: u64,
    /// Received QoS 1 packet ids in arrival order, with whether the app acknowledged them; PUBACKs go out in
    /// this order ([MQTT-4.6.0-2]; IoT Hub disconnects on out-of-order PUBACK).
    to_ack: VecDeque<(u16, bool)>,
    /// Incremented per connection so stale [`AckToken`]s are ignored.
    epoch: u64,
    last_sent: Instant,
    ping_deadline: Option<Instant>,
    /// Something forbidden we sent, and when.
    blame: Option<(Instant, String)>,
}

impl DeviceSession {
    /// A disconnected session.
    pub fn new(config: DeviceConfig) -> Self {
        let framer = Framer::new(config.max_incoming_packet);
        DeviceSession {
            config,
            state: State::Disconnected,
            framer,
            transmit: BytesMut::new(),
            events: VecDeque::new(),
            outgoing: VecDeque::new(),
            outgoing_bytes: 0,
            next_publish_id: 1,
            next_pkid: 1,
            pending_subs: SmallMap::new(),
            pending_unsubs: SmallMap::new(),
            requests: SmallMap::new(),
            next_rid: 1,
            to_ack: VecDeque::new(),
            epoch: 0,
            last_sent: Instant(0),
            ping_deadline: None,
            blame: None,
        }
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }
    /// Mutable settings; changes apply from the next [`connect`](Self::connect).
    pub fn config_mut(&mut self) -> &mut DeviceConfig {
        &mut self.config
    }
    /// CONNACK 0 received and the connection not lost since.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }
    /// CONNECT sent, CONNACK not yet received.
    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }
    /// No connection: never connected, or lost (an [`Event::ConnectionLost`] was queued).
    pub fn is_disconnected(&self) -> bool {
        matches!(self.state, State::Disconnected)
    }
    /// When the current connection was accepted.
    pub fn connected_since(&self) -> Option<Instant> {
        match self.state {
            State::Connected { since, .. } => Some(since),
            State::Connecting { .. } | State::Disconnected => None,
        }
    }
    /// Whether the hub kept the session of the current connection (CleanSession 0 and a stored session).
    pub fn session_present(&self) -> Option<bool> {
        match self.state {
            State::Connected { session_present, .. } => Some(session_present),
            State::Connecting { .. } | State::Disconnected => None,
        }
    }
    /// QoS 1 telemetry not yet acknowledged (in flight or waiting).
    pub fn unacked(&self) -> usize {
        self.outgoing.len()
    }

    // ---- commands -------------------------------------------------------------------------------------------

    /// Starts a connection on a freshly opened transport: queues CONNECT. Only valid while disconnected: on an
    /// open connection a second CONNECT breaks [MQTT-3.1.0-2].
    pub fn connect(&mut self, now: Instant, options: ConnectOptions) -> Result<(), SendError> {
        if !self.is_disconnected() {
            return Err(SendError::AlreadyConnected);
        }
        let mut connect = Connect::new(self.config.identity.client_id());
        connect.clean_session = self.config.clean_session;
        connect.keep_alive = self.config.keep_alive.as_secs().min(u16::MAX as u64) as u16;
        // mqttbytes only writes non-empty fields; an X.509 device sends the user name alone.
        connect.login = Some(Login {
            username: self.config.username().to_string(),
            password: options.password.unwrap_or_default(),
        });
        if let Some(w) = options.will {
            let topic = DeviceTopic::Telemetry { identity: self.config.identity.clone(), properties: w.properties };
            connect.last_will =
                Some(LastWill { topic: topic.to_string(), message: w.payload, qos: w.qos, retain: false });
        }
        // Start the connection from a clean slate; what outlives connections stays.
        self.framer = Framer::new(self.config.max_incoming_packet);
        self.transmit.clear();
        self.to_ack.clear();
        self.pending_subs.clear();
        self.pending_unsubs.clear();
        self.ping_deadline = None;
        self.blame = None;
        self.epoch += 1;
        for o in &mut self.outgoing {
            o.in_flight = false;
        }
        self.encode(&Packet::Connect(connect), now)?;
        self.state = State::Connecting { deadline: now + self.config.connect_timeout };
        Ok(())
    }

    /// Sends telemetry. QoS 1 messages are kept until acknowledged and survive reconnects; they may be queued
    /// while disconnected. QoS 0 needs a connection.
    pub fn send_telemetry(&mut self, now: Instant, msg: Telemetry) -> Result<PublishId, SendError> {
        let size = msg.size();
        if size > crate::MAX_TELEMETRY_SIZE {
            return Err(SendError::TooLarge { size, max: crate::MAX_TELEMETRY_SIZE });
        }
        let topic = DeviceTopic::Telemetry { identity: self.config.identity.clone(), properties: msg.properties };
        let mut publish = Publish::from_bytes(topic.to_string(), msg.qos.mqtt(), msg.payload);
        publish.retain = msg.retain;
        if publish.topic.len() > u16::MAX as usize {
            return Err(packet::EncodeError::StringTooLong("topic", publish.topic.len()).into());
        }
        let id = PublishId(self.next_publish_id);
        if msg.qos == TelemetryQos::AtMostOnce {
            if !self.is_connected() {
                return Err(SendError::NotConnected);
            }
            self.next_publish_id += 1;
            self.encode(&Packet::Publish(publish), now)?;
            return Ok(id);
        }
        let bytes = publish.topic.len() + publish.payload.len();
        if self.outgoing.len() >= self.config.max_queued
            || self.outgoing_bytes.saturating_add(bytes) > self.config.max_queued_bytes
        {
            return Err(SendError::QueueFull(self.outgoing.len()));
        }
        self.outgoing_bytes += bytes;
        self.next_publish_id += 1;
        if msg.qos == TelemetryQos::ExactlyOnceHubWillClose {
            self.blame = Some((now, "a QoS 2 publish, which IoT Hub does not support".into()));
        } else if !topic_is_ascii(&publish.topic) {
            self.blame = Some((now, "non-ASCII property names or values, which IoT Hub does not accept".into()));
        }
        self.outgoing.push_back(Outgoing { id, publish, sent: false, in_flight: false, sent_at: now });
        self.pump(now)?;
        Ok(id)
    }

    /// Subscribes to the given filters, less those IoT Hub does not serve to this identity
    /// ([`TopicFilter::serves`]; nothing is sent when none is left).
    pub fn subscribe(&mut self, now: Instant, filters: &[TopicFilter]) -> Result<(), SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        // What the hub does not serve to this identity is left out (it would close the connection, reference
        // §8): the same filter list fits a device and a module.
        let mut subs = Vec::with_capacity(filters.len());
        let mut kept = Vec::with_capacity(filters.len());
        for f in filters {
            if f.serves(&self.config.identity) {
                subs.push(SubscribeFilter::new(f.to_filter(&self.config.identity), QoS::AtLeastOnce));
                kept.push(f.clone());
            }
        }
        if subs.is_empty() {
            return Ok(());
        }
        let pkid = self.alloc_pkid();
        let mut sub = Subscribe::new_many(subs);
        sub.pkid = pkid;
        self.encode(&Packet::Subscribe(sub), now)?;
        self.pending_subs.insert(pkid, kept);
        Ok(())
    }

    /// Unsubscribes from the given filters (less those [`TopicFilter::serves`] leaves out).
    pub fn unsubscribe(&mut self, now: Instant, filters: &[TopicFilter]) -> Result<(), SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let mut topics = Vec::with_capacity(filters.len());
        let mut kept = Vec::with_capacity(filters.len());
        for f in filters {
            if f.serves(&self.config.identity) {
                topics.push(f.to_filter(&self.config.identity));
                kept.push(f.clone());
            }
        }
        if topics.is_empty() {
            return Ok(());
        }
        let pkid = self.alloc_pkid();
        let u = Unsubscribe { pkid, topics };
        self.encode(&Packet::Unsubscribe(u), now)?;
        self.pending_unsubs.insert(pkid, kept);
        Ok(())
    }

    /// Answers a direct method request. The body must be JSON or empty (IoT Hub fails the call otherwise).
    pub fn respond_to_method(
        &mut self,
        now: Instant,
        rid: &RequestId,
        status: u16,
        body: &[u8],
    ) -> Result<(), SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        if !body.is_empty() && !looks_like_json(body) {
            return Err(SendError::NotJson);
        }
        let topic = DeviceTopic::MethodResponse { status, rid: rid.clone() };
        self.encode(&Packet::Publish(Publish::new(topic.to_string(), QoS::AtMostOnce, body.to_vec())), now)?;
        Ok(())
    }

    /// Requests the twin; the answer is an [`Event::TwinResponse`] with the returned id.
    pub fn get_twin(&mut self, now: Instant) -> Result<RequestId, SendError> {
        self.request(now, RequestKind::TwinGet, Bytes::new())
    }

    /// Patches reported properties with a JSON object; answered by [`Event::TwinResponse`] (204, new version).
    pub fn patch_reported(&mut self, now: Instant, patch: impl Into<Bytes>) -> Result<RequestId, SendError> {
        let patch = patch.into();
        if !looks_like_json(&patch) {
            return Err(SendError::NotJson);
        }
        self.request(now, RequestKind::TwinPatchReported, patch)
    }

    /// Acknowledges a C2D message received with `auto_ack_c2d` off. PUBACKs still leave in arrival order.
    pub fn ack_c2d(&mut self, now: Instant, token: AckToken) -> Result<(), SendError> {
        if token.epoch != self.epoch || !self.is_connected() {
            // The connection it came on is gone; the hub will redeliver it.
            return Err(SendError::NotConnected);
        }
        // With auto_ack_c2d on, or acknowledged before: the PUBACK is already owed or sent.
        let slot = self.to_ack.iter_mut().find(|(p, done)| *p == token.pkid && !*done).ok_or(SendError::UnknownAck)?;
        slot.1 = true;
        Ok(self.flush_acks(now)?)
    }

    /// Closes the connection cleanly: queues DISCONNECT (the hub then does not publish the Will).
    pub fn disconnect(&mut self, now: Instant) {
        if !matches!(self.state, State::Disconnected) {
            // Encoding DISCONNECT cannot fail.
            let _ = self.encode(&Packet::Disconnect, now);
            self.lose(LostReason::Disconnected, now);
        }
    }

    // ---- inputs ---------------------------------------------------------------------------------------------

    /// Feeds bytes received from the transport (any split, any number of packets).
    ///
    /// On a protocol violation the session is already disconnected (an [`Event::ConnectionLost`] is queued) and
    /// the driver must close the transport.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), InputError> {
        if matches!(self.state, State::Disconnected) {
            return Err(InputError::NotConnected);
        }
        self.framer.push(data);
        loop {
            let packet = match self.framer.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(now, PacketError::Violation(HubViolation::Frame(e)))),
            };
            let handled = match self.state {
                State::Connecting { .. } => self.handle_connack(now, packet),
                State::Connected { .. } => self.handle_packet(now, packet),
                // A refusal or a lost connection: what follows on this transport is not read.
                State::Disconnected => return Ok(()),
            };
            if let Err(e) = handled {
                return Err(self.fail(now, e));
            }
        }
    }

    /// The transport closed (or failed to open).
    pub fn handle_transport_closed(&mut self, now: Instant, why: impl Into<String>) {
        if !matches!(self.state, State::Disconnected) {
            self.lose(LostReason::TransportClosed(why.into()), now);
        }
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired: Vec<RequestId> = Vec::new();
        for (rid, r) in self.requests.iter() {
            if r.deadline <= now {
                expired.push(rid.clone());
            }
        }
        for rid in expired {
            if let Some(r) = self.requests.remove(&rid) {
                self.events.push_back(Event::RequestFailed { rid, kind: r.kind, reason: RequestFailure::TimedOut });
            }
        }
        match self.state {
            State::Connecting { deadline } if now >= deadline => self.lose(LostReason::ConnackTimeout, now),
            State::Connected { .. } => {
                if let Some(deadline) = self.ping_deadline {
                    if now >= deadline {
                        self.lose(LostReason::KeepAliveTimeout, now);
                    }
                } else if let Some(due) = self.ping_due() {
                    if now >= due {
                        // Encoding PINGREQ cannot fail.
                        let _ = self.encode(&Packet::PingReq, now);
                        self.ping_deadline = Some(now + self.config.ping_timeout);
                    }
                }
            }
            State::Connecting { .. } | State::Disconnected => {}
        }
    }

    // ---- outputs --------------------------------------------------------------------------------------------

    /// Bytes to write to the transport, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.transmit.is_empty() {
            None
        } else {
            Some(self.transmit.split().freeze())
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn = match self.state {
            State::Connecting { deadline } => Some(deadline),
            State::Connected { .. } => self.ping_deadline.or_else(|| self.ping_due()),
            State::Disconnected => None,
        };
        let req = self.requests.values().map(|r| r.deadline).min();
        match (conn, req) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals ------------------------------------------------------------------------------------------

    fn ping_due(&self) -> Option<Instant> {
        (!self.config.keep_alive.is_zero()).then(|| self.last_sent + self.config.keep_alive)
    }

    fn encode(&mut self, packet: &Packet, now: Instant) -> Result<(), packet::EncodeError> {
        packet::encode(packet, &mut self.transmit)?;
        self.last_sent = now;
        Ok(())
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let used = self.outgoing.iter().any(|o| o.sent && o.publish.pkid == id)
                || self.pending_subs.contains_key(&id)
                || self.pending_unsubs.contains_key(&id);
            if !used {
                return id;
            }
        }
    }

    /// Sends waiting QoS 1/2 publishes while the in-flight window has room.
    fn pump(&mut self, now: Instant) -> Result<(), packet::EncodeError> {
        if !self.is_connected() {
            return Ok(());
        }
        let resumed = !self.config.clean_session;
        let mut in_flight = self.outgoing.iter().filter(|o| o.in_flight).count();
        for i in 0..self.outgoing.len() {
            if in_flight >= self.config.max_inflight {
                break;
            }
            if self.outgoing[i].in_flight {
                continue;
            }
            if !self.outgoing[i].sent {
                let pkid = self.alloc_pkid();
                self.outgoing[i].publish.pkid = pkid;
            }
            let mut p = self.outgoing[i].publish.clone();
            // [MQTT-4.4.0-1] re-sent with DUP when the session is kept (CleanSession 0); with CleanSession 1 the
            // hub forgot it, so it goes out as a first delivery (still at least once: nothing is dropped).
            p.dup = self.outgoing[i].sent && resumed;
            packet::encode(&Packet::Publish(p), &mut self.transmit)?;
            self.last_sent = now;
            let o = &mut self.outgoing[i];
            o.sent = true;
            o.in_flight = true;
            o.sent_at = now;
            in_flight += 1;
        }
        Ok(())
    }

    fn request(&mut self, now: Instant, kind: RequestKind, body: Bytes) -> Result<RequestId, SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let rid = RequestId(self.next_rid.to_string());
        self.next_rid += 1;
        let topic = match kind {
            RequestKind::TwinGet => DeviceTopic::TwinGet { rid: rid.clone() },
            RequestKind::TwinPatchReported => DeviceTopic::TwinPatchReported { rid: rid.clone() },
        };
        self.encode(&Packet::Publish(Publish::from_bytes(topic.to_string(), QoS::AtMostOnce, body)), now)?;
        self.requests.insert(rid.clone(), PendingRequest { kind, deadline: now + self.config.request_timeout });
        Ok(rid)
    }

    fn flush_acks(&mut self, now: Instant) -> Result<(), packet::EncodeError> {
        while let Some(&(pkid, true)) = self.to_ack.front() {
            self.to_ack.pop_front();
            self.encode(&Packet::PubAck(PubAck::new(pkid)), now)?;
        }
        Ok(())
    }

    fn fail(&mut self, now: Instant, e: PacketError) -> InputError {
        match e {
            PacketError::Violation(v) => {
                self.lose(LostReason::ProtocolViolation(v.clone()), now);
                InputError::Violation(v)
            }
            PacketError::Encode(e) => {
                self.lose(LostReason::EncodeFailed(e.clone()), now);
                InputError::Encode(e)
            }
        }
    }

    fn lose(&mut self, reason: LostReason, now: Instant) {
        self.state = State::Disconnected;
        self.ping_deadline = None;
        for o in &mut self.outgoing {
            o.in_flight = false;
        }
        for (rid, r) in std::mem::take(&mut self.requests) {
            self.events.push_back(Event::RequestFailed { rid, kind: r.kind, reason: RequestFailure::ConnectionLost });
        }
        let likely_cause = match (&reason, self.blame.take()) {
            (LostReason::TransportClosed(_), Some((at, what))) if now.saturating_since(at) <= BLAME_WINDOW => {
                Some(what)
            }
            _ => None,
        };
        self.events.push_back(Event::ConnectionLost { reason, likely_cause });
    }

    /// The first packet of a connection ([MQTT-3.2.0-1]).
    fn handle_connack(&mut self, now: Instant, packet: Packet) -> Result<(), PacketError> {
        let Packet::ConnAck(ConnAck { session_present, code }) = packet else {
            return Err(HubViolation::ExpectedConnAck(packet::name(&packet)).into());
        };
        if code != ConnectReturnCode::Success {
            self.lose(LostReason::Refused(ConnectRefusal(code as u8)), now);
            return Ok(());
        }
        let session_present = session_present && !self.config.clean_session;
        self.state = State::Connected { since: now, session_present };
        self.events.push_back(Event::Connected { session_present });
        Ok(self.pump(now)?)
    }

    /// A packet on an accepted connection.
    fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), PacketError> {
        match packet {
            Packet::PubAck(PubAck { pkid }) => {
                let i = self
                    .outgoing
                    .iter()
                    .position(|o| o.in_flight && o.publish.pkid == pkid && o.publish.qos == QoS::AtLeastOnce)
                    .ok_or(HubViolation::UnknownPubAck(pkid))?;
                if let Some(o) = self.outgoing.remove(i) {
                    self.outgoing_bytes -= o.publish.topic.len() + o.publish.payload.len();
                    self.events.push_back(Event::TelemetryAcked { id: o.id, sent_at: o.sent_at });
                }
                Ok(self.pump(now)?)
            }
            Packet::PubRec(r) => {
                if !self.outgoing.iter().any(|o| o.in_flight && o.publish.pkid == r.pkid) {
                    return Err(HubViolation::UnknownPubRec(r.pkid).into());
                }
                Ok(self.encode(&Packet::PubRel(PubRel::new(r.pkid)), now)?)
            }
            Packet::PubComp(c) => {
                let i = self
                    .outgoing
                    .iter()
                    .position(|o| o.in_flight && o.publish.pkid == c.pkid)
                    .ok_or(HubViolation::UnknownPubComp(c.pkid))?;
                if let Some(o) = self.outgoing.remove(i) {
                    self.outgoing_bytes -= o.publish.topic.len() + o.publish.payload.len();
                    self.events.push_back(Event::TelemetryAcked { id: o.id, sent_at: o.sent_at });
                }
                Ok(self.pump(now)?)
            }
            Packet::PubRel(r) => Err(HubViolation::UnexpectedPubRel(r.pkid).into()),
            Packet::SubAck(ack) => {
                let filters = self.pending_subs.remove(&ack.pkid).ok_or(HubViolation::UnknownSubAck(ack.pkid))?;
                if filters.len() != ack.return_codes.len() {
                    return Err(
                        HubViolation::SubAckCount { codes: ack.return_codes.len(), filters: filters.len() }.into()
                    );
                }
                let mut results = Vec::with_capacity(filters.len());
                for (f, c) in filters.into_iter().zip(ack.return_codes) {
                    let granted = match c {
                        SubscribeReasonCode::Success(q) => Granted::Qos(q),
                        SubscribeReasonCode::Failure => Granted::Refused,
                    };
                    results.push((f, granted));
                }
                self.events.push_back(Event::Subscribed { results });
                Ok(())
            }
            Packet::UnsubAck(ack) => {
                let filters = self.pending_unsubs.remove(&ack.pkid).ok_or(HubViolation::UnknownUnsubAck(ack.pkid))?;
                self.events.push_back(Event::Unsubscribed { filters });
                Ok(())
            }
            Packet::PingResp => {
                self.ping_deadline = None;
                Ok(())
            }
            Packet::Publish(p) => self.handle_publish(now, p),
            Packet::ConnAck(_) => Err(HubViolation::SecondConnAck.into()),
            p @ (Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect) => Err(HubViolation::NotFromServer(packet::name(&p)).into()),
        }
    }

    fn handle_publish(&mut self, now: Instant, p: Publish) -> Result<(), PacketError> {
        if p.qos == QoS::ExactlyOnce {
            return Err(HubViolation::Qos2Publish.into());
        }
        let acked_now = match HubTopic::parse(&p.topic) {
            Ok(HubTopic::C2d { properties, .. }) => {
                let ack = (p.qos == QoS::AtLeastOnce).then_some(AckToken { pkid: p.pkid, epoch: self.epoch });
                self.events.push_back(Event::C2d(C2dMessage {
                    properties,
                    payload: p.payload,
                    redelivered: p.dup,
                    ack,
                }));
                self.config.auto_ack_c2d
            }
            Ok(HubTopic::MethodRequest { name, rid }) => {
                self.events.push_back(Event::MethodRequest { name, rid, payload: p.payload });
                true
            }
            Ok(HubTopic::TwinResponse { status, rid, version }) => {
                match self.requests.remove(&rid) {
                    Some(r) => self.events.push_back(Event::TwinResponse {
                        rid,
                        kind: r.kind,
                        status,
                        version,
                        body: p.payload,
                    }),
                    // A late answer to a request that already timed out.
                    None => self.events.push_back(Event::UnknownPublish {
                        topic: p.topic,
                        payload: p.payload,
                        why: UnexpectedPublish::LateTwinResponse(rid),
                    }),
                }
                true
            }
            Ok(HubTopic::TwinDesired { version }) => {
                self.events.push_back(Event::DesiredPropertiesPatch { version, body: p.payload });
                true
            }
            Ok(HubTopic::DpsResponse { .. }) => {
                let why = UnexpectedPublish::DpsResponse;
                self.events.push_back(Event::UnknownPublish { topic: p.topic, payload: p.payload, why });
                true
            }
            Err(e) => {
                let why = UnexpectedPublish::Topic(e);
                self.events.push_back(Event::UnknownPublish { topic: p.topic, payload: p.payload, why });
                true
            }
        };
        if p.qos == QoS::AtLeastOnce {
            self.to_ack.push_back((p.pkid, acked_now));
            self.flush_acks(now)?;
        }
        Ok(())
    }
}

fn topic_is_ascii(topic: &str) -> bool {
    // Property bags are percent-encoded, so non-ASCII shows up as %C2..%F4 lead bytes.
    !["%C", "%D", "%E", "%F"].iter().any(|p| topic.contains(p))
}

/// A cheap structural check: the body starts like a JSON value. The hub only needs it to be JSON; a full parser
/// is not worth its size in the wasm bundle.
fn looks_like_json(body: &[u8]) -> bool {
    let s = match core::str::from_utf8(body) {
        Ok(s) => s.trim(),
        Err(_) => return false,
    };
    let (first, last) = match (s.chars().next(), s.chars().last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return false,
    };
    matches!((first, last), ('{', '}') | ('[', ']') | ('"', '"'))
        || s == "null"
        || s == "true"
        || s == "false"
        || crate::num::parse_f64(s).is_some()
}
