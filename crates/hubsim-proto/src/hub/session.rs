use bytes::{Bytes, BytesMut};
use core::time::Duration;
use mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck,
    Unsubscribe,
};
use mqttbytes::QoS;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::error::{CloseReason, CommandError, Refusal, SubscriptionError, Violation};
use crate::packet::{self, ConnectHeader, ConnectHeaderError, Framer};
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
    /// Most received QoS 1 publishes whose PUBACK is held (their writes pending). At the bound the session reads
    /// no further packets and [`HubSession::wants_input`] turns false, so the task stops reading the transport
    /// and TCP pushes back on the device: a connection's pending writes stay bounded.
    pub max_held_acks: usize,
    /// How long a delivered QoS 1 C2D message waits for its PUBACK before the session reports
    /// [`HubEvent::C2dLockExpired`] (IoT Hub's lock: 60 s; reference §5).
    pub c2d_lock: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            connect_timeout: Duration::from_secs(30),
            max_keep_alive_timeout: Duration::from_secs(1767),
            max_message_size: crate::MAX_TELEMETRY_SIZE,
            retain_property: "mqtt-retain".into(),
            max_subscriptions: 5,
            max_held_acks: 128,
            c2d_lock: Duration::from_secs(60),
        }
    }
}

/// Packets read from the buffer per turn ([`HubSession::handle_input`], [`HubSession::resume`]); the rest
/// wait in it. One transport read can hold thousands of packets (a WebSocket message is up to 1 MiB: 32 767
/// empty QoS 0 PUBLISHes, or as many twin GETs), and the work each asks of the task — a write to store, an
/// answer to send — must be bounded per turn, as the task's back-pressure bounds it per read.
pub const MAX_PACKETS_PER_TURN: usize = 64;

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
    /// Store durably, then [`HubSession::ack_publish`] with `ack` when it is `Some`.
    Telemetry {
        message: ReceivedTelemetry,
        ack: Option<u16>,
    },
    /// Filters granted (persist them for a CleanSession 0 device).
    Subscribed(Vec<(TopicFilter, QoS)>),
    Unsubscribed(Vec<TopicFilter>),
    /// The device acknowledged (completed) the C2D delivery with this packet id.
    C2dCompleted(u16),
    /// The lock of an in-flight C2D delivery (packet id) ran out without a PUBACK: the task redelivers it
    /// ([`HubSession::redeliver_c2d`]) or, when the message is gone or used up, abandons it
    /// ([`HubSession::abandon_c2d`]).
    C2dLockExpired(u16),
    /// Hand the response to the waiting caller, then [`HubSession::ack_publish`] with `ack` when it is `Some`.
    MethodResponse {
        rid: RequestId,
        status: u16,
        payload: Bytes,
        ack: Option<u16>,
    },
    /// Answer with [`HubSession::twin_response`]; a QoS 1 request was acknowledged on receipt (nothing to store).
    TwinGet {
        rid: RequestId,
    },
    /// Store the patch, then [`HubSession::ack_publish`] with `ack` when it is `Some`, and answer with
    /// [`HubSession::twin_response`].
    TwinPatchReported {
        rid: RequestId,
        patch: Bytes,
        ack: Option<u16>,
    },
    /// The connection is over; the task closes the transport and publishes `will` if present.
    Closed {
        reason: CloseReason,
        will: Option<ReceivedTelemetry>,
    },
}

/// What [`HubSession::deliver_c2d`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum C2dDelivery {
    /// Sent at QoS 1: await [`HubEvent::C2dCompleted`] with this packet id.
    AwaitingAck(u16),
    /// Sent at QoS 0: complete on send.
    Completed,
    /// The device does not subscribe to C2D; keep the message queued.
    NotSubscribed,
}

/// Connection state; see the diagram on [`HubSession`]. Data that is not the connection's phase (subscriptions,
/// in-flight tables, held acknowledgements) lives beside it in [`HubSession`].
#[derive(Debug, Clone, PartialEq)]
enum State {
    AwaitingConnect { deadline: Instant },
    Authenticating { request: Box<ConnectRequest>, will: Option<Box<ReceivedTelemetry>> },
    Connected { identity: DeviceIdentity, keep_alive: Duration, token_expiry: Option<Instant> },
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitingConnect { .. } => "awaiting CONNECT",
            State::Authenticating { .. } => "authenticating",
            State::Connected { .. } => "connected",
            State::Closed => "closed",
        }
    }
}

/// The hub side of one connection. See the [module docs](crate::hub).
///
/// ```text
///                  CONNECT                    accept()
///  AwaitingConnect ────────▶ Authenticating ───────────▶ Connected
///        │                         │ refuse()                 │ DISCONNECT, violation, keep-alive,
///        │                         │ (CONNACK 3 or 5)         │ token expiry, a second CONNECT,
///        │                         ▼                          │ close() (replaced, killed, shutdown)
///        └───────────────────────▶ Closed ◀───────────────────┘
///   30 s; not CONNECT; bad header (no CONNACK);
///   level ≠ 4 (CONNACK 1); ClientId (CONNACK 2); credentials (CONNACK 5)
/// ```
///
/// Only `AwaitingConnect` and `Connected` read packets: while authenticating, input waits in the framer, so a
/// CONNACK is always the first packet out. Commands that are valid in one state only return
/// [`CommandError`] in the others.
#[derive(Debug)]
pub struct HubSession {
    config: HubConfig,
    state: State,
    framer: Framer,
    transmit: BytesMut,
    events: VecDeque<HubEvent>,
    will: Option<ReceivedTelemetry>,
    /// When the last whole packet was read (keep-alive, [MQTT-3.1.2-24]).
    last_received: Instant,
    /// When bytes last arrived: packets read later (after back-pressure) arrived by then.
    last_input: Instant,
    subscriptions: BTreeMap<TopicFilter, QoS>,
    /// C2D publishes awaiting PUBACK, in send order ([MQTT-4.6.0-2]: the device acknowledges in that order).
    c2d_in_flight: VecDeque<u16>,
    /// The lock deadline of each in-flight C2D delivery; `None` once [`HubEvent::C2dLockExpired`] was reported and
    /// the task has not yet redelivered or abandoned it.
    c2d_locks: BTreeMap<u16, Option<Instant>>,
    /// QoS 1 twin responses and desired patches awaiting PUBACK; nothing to complete when it comes.
    responses_in_flight: BTreeSet<u16>,
    /// C2D deliveries given up by the task (dead-lettered) whose late PUBACK is expected and completes nothing.
    abandoned: BTreeSet<u16>,
    /// Received QoS 1 PUBLISH packet ids in arrival order, with whether the task said its write is done. PUBACKs
    /// leave in this order, each only after its write is durable (ARCHITECTURE.md).
    held_acks: VecDeque<(u16, bool)>,
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
            last_input: now,
            subscriptions: BTreeMap::new(),
            c2d_in_flight: VecDeque::new(),
            c2d_locks: BTreeMap::new(),
            responses_in_flight: BTreeSet::new(),
            abandoned: BTreeSet::new(),
            held_acks: VecDeque::new(),
            next_pkid: 1,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// CONNACK 0 was sent and the connection is not over.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }
    /// A CONNECT awaits [`accept`](Self::accept) or [`refuse`](Self::refuse).
    pub fn is_authenticating(&self) -> bool {
        matches!(self.state, State::Authenticating { .. })
    }
    /// The identity of the CONNECT being authenticated or of the connection.
    pub fn identity(&self) -> Option<&DeviceIdentity> {
        match &self.state {
            State::Connected { identity, .. } => Some(identity),
            State::Authenticating { request, .. } => Some(&request.identity),
            State::AwaitingConnect { .. } | State::Closed => None,
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
    /// Received QoS 1 publishes not yet acknowledged (their write pending, or an earlier one's).
    pub fn acks_held(&self) -> usize {
        self.held_acks.len()
    }
    /// False while the session will not read more packets (authenticating, closed, or `max_held_acks` writes
    /// pending): the task should not read the transport then.
    pub fn wants_input(&self) -> bool {
        match self.state {
            State::AwaitingConnect { .. } => true,
            State::Connected { .. } => self.held_acks.len() < self.config.max_held_acks,
            State::Authenticating { .. } | State::Closed => false,
        }
    }

    // ---- inputs ---------------------------------------------------------------------------------------------

    /// Feeds bytes from the transport.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.framer.push(data);
        self.last_input = now;
        self.process(now);
    }

    /// Whether whole packets (or a frame error) wait in the session's buffer: the task calls [`Self::resume`]
    /// for them (when it has room for their work) before it reads the transport again.
    pub fn input_pending(&self) -> bool {
        !matches!(self.state, State::Closed | State::Authenticating { .. }) && !matches!(self.framer.peek(), Ok(None))
    }

    /// Reads the next packets waiting in the buffer (at most [`MAX_PACKETS_PER_TURN`]).
    pub fn resume(&mut self, now: Instant) {
        self.process(now);
    }

    /// Reads packets while the state reads them, at most [`MAX_PACKETS_PER_TURN`]. The first frame must be a
    /// CONNECT ([MQTT-3.1.0-1]); its header is inspected raw before mqttbytes decodes it, and a CONNECT frame on
    /// an accepted connection is refused before decoding too ([MQTT-3.1.0-2]), so what mqttbytes would refuse
    /// still gets the spec's answer.
    fn process(&mut self, now: Instant) {
        for _ in 0..MAX_PACKETS_PER_TURN {
            // `None` while awaiting CONNECT, the identity once connected.
            let identity = match &self.state {
                State::AwaitingConnect { .. } => None,
                State::Connected { identity, .. } => Some(identity.clone()),
                // Input waits for accept()/refuse(); nothing is read after the close.
                State::Authenticating { .. } | State::Closed => return,
            };
            // Back-pressure: input waits until pending writes are acknowledged.
            if identity.is_some() && !self.wants_input() {
                return;
            }
            // A first packet that is not a CONNECT is refused on its first byte, not once it is whole: a peer
            // announcing a long packet (an HTTP request sent to the MQTT port) would hold the connection until the
            // CONNECT deadline.
            if let (None, Some(b)) = (&identity, self.framer.first_byte()) {
                if b >> 4 != 1 {
                    return self.violation(Violation::FirstPacketNotConnect(packet::packet_name(b)));
                }
            }
            let frame = match self.framer.peek() {
                Ok(None) => return,
                Ok(Some(frame)) => frame,
                Err(packet::FrameError::TooLarge(n, _)) => return self.close(CloseReason::MessageTooLarge(n)),
                Err(e) => return self.violation(Violation::Frame(e)),
            };
            // (Awaiting CONNECT, the frame is one: its first byte was checked above.)
            let is_connect = frame[0] >> 4 == 1;
            let header = match (&identity, is_connect) {
                (Some(_), true) => return self.violation(Violation::SecondConnect),
                (Some(_), false) => None,
                (None, _) => match packet::check_flags(frame[0]).map(|()| ConnectHeader::inspect(frame)) {
                    Ok(Ok(h)) => Some(h),
                    Err(e) => return self.violation(Violation::Frame(e)),
                    Ok(Err(ConnectHeaderError::UnsupportedLevel { name, level })) => {
                        return self.reject(Refusal::ProtocolLevel { name, level })
                    }
                    Ok(Err(e)) => return self.violation(Violation::ConnectHeader(e)),
                },
            };
            let packet = match self.framer.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(packet::FrameError::TooLarge(n, _)) => return self.close(CloseReason::MessageTooLarge(n)),
                Err(e) => return self.violation(Violation::Frame(e)),
            };
            self.last_received = now;
            match (identity, header, packet) {
                (None, Some(h), Packet::Connect(c)) => self.handle_connect(c, &h),
                (Some(identity), None, p) => self.handle_packet(identity, p),
                // A CONNECT frame decodes to a CONNECT, and only a CONNECT frame has a header.
                (_, _, p) => return self.violation(Violation::FirstPacketNotConnect(packet::name(&p))),
            }
        }
    }

    /// The transport closed.
    pub fn handle_transport_closed(&mut self, why: impl Into<String>) {
        if self.is_closed() {
            return;
        }
        // Whole packets still waiting (behind an authentication) are not a truncation.
        match (self.framer.buffered(), self.framer.peek()) {
            (0, _) | (_, Ok(Some(_))) => self.close(CloseReason::TransportClosed(why.into())),
            (n, Ok(None) | Err(_)) => self.violation(Violation::Truncated(n)),
        }
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::AwaitingConnect { deadline } => {
                if now >= *deadline {
                    self.close(CloseReason::ConnectTimeout)
                }
            }
            State::Connected { keep_alive, token_expiry, .. } => {
                let (keep_alive, token_expiry) = (*keep_alive, *token_expiry);
                if token_expiry.is_some_and(|t| now >= t) {
                    self.close(CloseReason::TokenExpired);
                } else if now >= self.last_received + keep_alive {
                    self.close(CloseReason::KeepAliveTimeout(keep_alive));
                } else {
                    // In delivery order, so redeliveries keep the order the device saw.
                    for &pkid in &self.c2d_in_flight {
                        if let Some(lock) = self.c2d_locks.get_mut(&pkid) {
                            if lock.is_some_and(|d| now >= d) {
                                *lock = None;
                                self.events.push_back(HubEvent::C2dLockExpired(pkid));
                            }
                        }
                    }
                }
            }
            // The task owns the authentication's time; a closed session has no timers.
            State::Authenticating { .. } | State::Closed => {}
        }
    }

    // ---- commands from the task -----------------------------------------------------------------------------

    /// Accepts the pending CONNECT: CONNACK 0. `restored` are the stored subscriptions of a CleanSession 0
    /// device (`session_present` then tells the device they exist); `token_expiry` closes the connection when
    /// reached.
    pub fn accept(
        &mut self,
        now: Instant,
        session_present: bool,
        restored: Vec<(TopicFilter, QoS)>,
        token_expiry: Option<Instant>,
    ) -> Result<(), CommandError> {
        let (request, will) = match std::mem::replace(&mut self.state, State::Closed) {
            State::Authenticating { request, will } => (request, will),
            other => {
                let err = CommandError::NotAuthenticating { command: "accept()", state: other.name() };
                self.state = other;
                return Err(err);
            }
        };
        // Keep-alive 0 or above the cap is replaced by the cap (protocol gateway DeriveKeepAliveTimeout).
        let keep_alive = if request.keep_alive.is_zero() {
            self.config.max_keep_alive_timeout
        } else {
            (request.keep_alive * 3 / 2).min(self.config.max_keep_alive_timeout)
        };
        self.subscriptions = restored.into_iter().collect();
        self.will = will.map(|w| *w);
        self.last_received = now;
        self.state = State::Connected { identity: request.identity, keep_alive, token_expiry };
        self.send(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present)));
        self.process(now);
        Ok(())
    }

    /// Refuses the pending CONNECT with `code` (0x05 not authorized, 0x03 disabled) and closes. Only valid while
    /// a CONNECT awaits authentication: a CONNACK anywhere else breaks [MQTT-3.2.0-1].
    pub fn refuse(&mut self, code: ConnectReturnCode, why: impl Into<String>) -> Result<(), CommandError> {
        if !self.is_authenticating() {
            return Err(CommandError::NotAuthenticating { command: "refuse()", state: self.state.name() });
        }
        if code == ConnectReturnCode::Success {
            return Err(CommandError::RefuseWithSuccess);
        }
        self.reject(Refusal::ByHub { code: code as u8, why: why.into() });
        Ok(())
    }

    /// Says the write a held PUBACK waits for is durable ([`HubEvent::Telemetry`], [`HubEvent::TwinPatchReported`],
    /// [`HubEvent::MethodResponse`]). PUBACKs leave in the order the publishes arrived.
    pub fn ack_publish(&mut self, pkid: u16) -> Result<(), CommandError> {
        self.require_connected("ack_publish()")?;
        let slot =
            self.held_acks.iter_mut().find(|(p, done)| *p == pkid && !*done).ok_or(CommandError::UnknownAck(pkid))?;
        slot.1 = true;
        self.flush_acks();
        // Room again under max_held_acks: packets waiting in the framer are read now; they arrived by the
        // last input.
        self.process(self.last_input.max(self.last_received));
        Ok(())
    }

    /// Delivers a C2D message if the device is subscribed.
    pub fn deliver_c2d(
        &mut self,
        now: Instant,
        properties: PropertyBag,
        payload: Bytes,
        redelivery: bool,
    ) -> Result<C2dDelivery, CommandError> {
        let identity = self.require_connected("deliver_c2d()")?;
        let Some(&qos) = self.subscriptions.get(&TopicFilter::C2d) else { return Ok(C2dDelivery::NotSubscribed) };
        let topic = HubTopic::C2d { identity: DeviceIdentity::device(identity.device_id), properties }.to_string();
        let mut p = Publish::from_bytes(topic, qos, payload);
        p.dup = redelivery;
        let delivery = match qos {
            QoS::AtMostOnce => C2dDelivery::Completed,
            QoS::AtLeastOnce | QoS::ExactlyOnce => {
                let Some(pkid) = self.alloc_pkid() else {
                    self.violation(Violation::NoFreePacketId);
                    return Err(CommandError::NotConnected { command: "deliver_c2d()", state: "closed" });
                };
                p.pkid = pkid;
                self.c2d_in_flight.push_back(pkid);
                self.c2d_locks.insert(pkid, Some(now + self.config.c2d_lock));
                C2dDelivery::AwaitingAck(pkid)
            }
        };
        self.send(&Packet::Publish(p));
        Ok(delivery)
    }

    /// Re-sends an unacknowledged QoS 1 C2D delivery with DUP and its original packet id (its lock expired), and
    /// locks it again.
    pub fn redeliver_c2d(
        &mut self,
        now: Instant,
        pkid: u16,
        properties: PropertyBag,
        payload: Bytes,
    ) -> Result<(), CommandError> {
        let identity = self.require_connected("redeliver_c2d()")?;
        if !self.c2d_in_flight.contains(&pkid) {
            return Err(CommandError::UnknownC2d(pkid));
        }
        self.c2d_locks.insert(pkid, Some(now + self.config.c2d_lock));
        let topic = HubTopic::C2d { identity: DeviceIdentity::device(identity.device_id), properties }.to_string();
        let mut p = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        p.dup = true;
        self.send(&Packet::Publish(p));
        Ok(())
    }

    /// Forgets an in-flight C2D delivery (the message was dead-lettered); its late PUBACK completes nothing.
    pub fn abandon_c2d(&mut self, pkid: u16) -> Result<(), CommandError> {
        let before = self.c2d_in_flight.len();
        self.c2d_in_flight.retain(|p| *p != pkid);
        if self.c2d_in_flight.len() == before {
            return Err(CommandError::UnknownC2d(pkid));
        }
        self.c2d_locks.remove(&pkid);
        self.abandoned.insert(pkid);
        Ok(())
    }

    /// Sends a direct method request (QoS 0). `Ok(false)` if the device is not subscribed to methods.
    pub fn send_method_request(&mut self, name: &str, rid: &RequestId, payload: Bytes) -> Result<bool, CommandError> {
        self.require_connected("send_method_request()")?;
        if !self.subscriptions.contains_key(&TopicFilter::Methods) {
            return Ok(false);
        }
        let topic = HubTopic::MethodRequest { name: name.into(), rid: rid.clone() }.to_string();
        self.send(&Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, payload)));
        Ok(true)
    }

    /// Answers a twin request. `Ok(false)`: the device does not subscribe to twin responses, and IoT Hub only
    /// answers on the response topic the device subscribed to.
    pub fn twin_response(
        &mut self,
        rid: &RequestId,
        status: u16,
        version: Option<u64>,
        body: Bytes,
    ) -> Result<bool, CommandError> {
        self.require_connected("twin_response()")?;
        if !self.subscriptions.contains_key(&TopicFilter::TwinResponses) {
            return Ok(false);
        }
        let topic = HubTopic::TwinResponse { status, rid: rid.clone(), version }.to_string();
        self.publish_qos_of(TopicFilter::TwinResponses, topic, body);
        Ok(true)
    }

    /// Pushes a desired-properties patch. `Ok(false)` if the device does not subscribe to them.
    pub fn push_desired(&mut self, version: u64, body: Bytes) -> Result<bool, CommandError> {
        self.require_connected("push_desired()")?;
        if !self.subscriptions.contains_key(&TopicFilter::TwinDesired) {
            return Ok(false);
        }
        let topic = HubTopic::TwinDesired { version: Some(version) }.to_string();
        self.publish_qos_of(TopicFilter::TwinDesired, topic, body);
        Ok(true)
    }

    /// Ends the connection for a reason outside the protocol (replaced, killed, disabled, shutdown). Closing a
    /// closed session does nothing: the first reason stands.
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

    /// Bytes of memory the input side holds on to (framer and event queue): 0 once everything received is handled
    /// and every event polled, so an idle connection keeps none.
    pub fn input_capacity(&self) -> usize {
        self.framer.capacity() + self.events.capacity() * std::mem::size_of::<HubEvent>()
    }

    pub fn poll_event(&mut self) -> Option<HubEvent> {
        let ev = self.events.pop_front();
        if ev.is_none() && self.events.capacity() > 0 {
            // Drained: give the queue's memory back (events are large), so an idle connection holds none.
            self.events = VecDeque::new();
        }
        ev
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::AwaitingConnect { deadline } => Some(*deadline),
            State::Connected { keep_alive, token_expiry, .. } => {
                let ka = self.last_received + *keep_alive;
                let lock = self.c2d_locks.values().flatten().min().copied();
                Some([Some(ka), *token_expiry, lock].into_iter().flatten().min().unwrap_or(ka))
            }
            State::Authenticating { .. } | State::Closed => None,
        }
    }

    // ---- internals ------------------------------------------------------------------------------------------

    fn require_connected(&self, command: &'static str) -> Result<DeviceIdentity, CommandError> {
        match &self.state {
            State::Connected { identity, .. } => Ok(identity.clone()),
            other => Err(CommandError::NotConnected { command, state: other.name() }),
        }
    }

    fn violation(&mut self, v: Violation) {
        self.close(CloseReason::ProtocolViolation(v))
    }

    /// CONNACK with the refusal's code, then close ([MQTT-3.2.2-5]).
    fn reject(&mut self, refusal: Refusal) {
        self.send(&Packet::ConnAck(ConnAck::new(refusal.code(), false)));
        self.close(CloseReason::Refused(refusal));
    }

    fn send(&mut self, p: &Packet) {
        if let Err(e) = packet::encode(p, &mut self.transmit) {
            self.close(CloseReason::Internal(e));
        }
    }

    fn publish_qos_of(&mut self, filter: TopicFilter, topic: String, body: Bytes) {
        let qos = self.subscriptions.get(&filter).copied().unwrap_or(QoS::AtMostOnce);
        let mut p = Publish::from_bytes(topic, qos, body);
        if qos != QoS::AtMostOnce {
            // Responses are not redelivered; the PUBACK only has to be accepted.
            let Some(pkid) = self.alloc_pkid() else { return self.violation(Violation::NoFreePacketId) };
            p.pkid = pkid;
            self.responses_in_flight.insert(pkid);
        }
        self.send(&Packet::Publish(p));
    }

    /// The next packet id no PUBLISH in flight uses. An abandoned C2D id is reused only after the counter
    /// wraps (65 535 later); its late PUBACK then completes the new delivery, as MQTT's id reuse implies.
    fn alloc_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.c2d_in_flight.contains(&id) && !self.responses_in_flight.contains(&id) {
                self.abandoned.remove(&id);
                return Some(id);
            }
        }
        None
    }

    fn flush_acks(&mut self) {
        while let Some(&(pkid, true)) = self.held_acks.front() {
            self.held_acks.pop_front();
            self.send(&Packet::PubAck(PubAck::new(pkid)));
        }
    }

    /// A packet on an accepted connection.
    fn handle_packet(&mut self, identity: DeviceIdentity, packet: Packet) {
        match packet {
            Packet::Publish(p) => self.handle_publish(identity, p),
            Packet::Subscribe(s) => self.handle_subscribe(identity, s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(identity, u),
            Packet::PubAck(PubAck { pkid }) => self.handle_puback(pkid),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect => self.close(CloseReason::ClientDisconnected),
            // process() refuses a CONNECT frame before decoding it; this arm only keeps the match total.
            Packet::Connect(_) => self.violation(Violation::SecondConnect),
            p @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)) => self.violation(Violation::NotFromDevice(packet::name(&p))),
        }
    }

    fn handle_subscribe(&mut self, identity: DeviceIdentity, s: Subscribe) {
        if s.filters.is_empty() {
            return self.violation(Violation::EmptySubscribe);
        }
        let mut granted = Vec::new();
        for f in &s.filters {
            match TopicFilter::parse(&f.path, &identity) {
                // [reference §5] QoS 2 is granted as QoS 1.
                Ok(tf) => granted.push((tf, if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce })),
                // IoT Hub closes the connection rather than answering SUBACK 0x80 (reference §8).
                Err(e) => return self.close(CloseReason::BadSubscription(SubscriptionError::Filter(e))),
            }
        }
        for (f, q) in &granted {
            self.subscriptions.insert(f.clone(), *q);
        }
        if self.subscriptions.len() > self.config.max_subscriptions {
            return self.close(CloseReason::BadSubscription(SubscriptionError::TooMany(self.config.max_subscriptions)));
        }
        let codes = granted.iter().map(|(_, q)| SubscribeReasonCode::Success(*q)).collect();
        self.send(&Packet::SubAck(SubAck::new(s.pkid, codes)));
        self.events.push_back(HubEvent::Subscribed(granted));
    }

    fn handle_unsubscribe(&mut self, identity: DeviceIdentity, u: Unsubscribe) {
        if u.topics.is_empty() {
            return self.violation(Violation::EmptyUnsubscribe);
        }
        let mut removed = Vec::new();
        for t in &u.topics {
            match TopicFilter::parse(t, &identity) {
                Ok(f) => {
                    self.subscriptions.remove(&f);
                    removed.push(f);
                }
                Err(e) => return self.close(CloseReason::BadSubscription(SubscriptionError::Filter(e))),
            }
        }
        self.send(&Packet::UnsubAck(UnsubAck::new(u.pkid)));
        self.events.push_back(HubEvent::Unsubscribed(removed));
    }

    fn handle_puback(&mut self, pkid: u16) {
        if pkid == 0 {
            return self.violation(Violation::PacketIdZero("PUBACK"));
        }
        match self.c2d_in_flight.front() {
            Some(&front) if front == pkid => {
                self.c2d_in_flight.pop_front();
                self.c2d_locks.remove(&pkid);
                self.events.push_back(HubEvent::C2dCompleted(pkid));
            }
            Some(&expected) if self.c2d_in_flight.contains(&pkid) => {
                self.violation(Violation::PubAckOutOfOrder { pkid, expected })
            }
            // A QoS 1 twin response or desired patch: nothing to complete.
            _ if self.responses_in_flight.remove(&pkid) => {}
            // A dead-lettered C2D delivery: the message is gone, its PUBACK completes nothing.
            _ if self.abandoned.remove(&pkid) => {}
            _ => self.violation(Violation::UnknownPubAck(pkid)),
        }
    }

    fn handle_connect(&mut self, c: Connect, header: &ConnectHeader) {
        if let Err(e) = header.check_payload(&c) {
            return self.violation(Violation::ConnectHeader(e));
        }
        let identity = match client_identity(&c.client_id, header.clean_session()) {
            Ok(i) => i,
            Err(r) => return self.reject(r),
        };
        let Some(login) = c.login else { return self.reject(Refusal::NoCredentials) };
        let username = match Username::parse(&login.username) {
            Ok(u) => u,
            Err(e) => return self.reject(Refusal::Username(e)),
        };
        if username.dps {
            return self.reject(Refusal::DpsUsername);
        }
        if identity != username.identity {
            return self
                .reject(Refusal::ClientIdMismatch { client_id: c.client_id, username: username.identity.to_string() });
        }
        if login.password.is_empty() {
            return self.reject(Refusal::NoToken);
        }
        let token = match SasToken::parse(&login.password) {
            Ok(t) => t,
            Err(e) => return self.reject(Refusal::Token(e)),
        };
        let will = match c.last_will {
            None => None,
            Some(w) => match DeviceTopic::parse(&w.topic, &identity) {
                Ok(DeviceTopic::Telemetry { identity, mut properties }) => {
                    // Published like a telemetry PUBLISH with the same flag: RETAIN becomes the property.
                    if w.retain {
                        properties.push(self.config.retain_property.clone(), "true");
                    }
                    properties.push("iothub-MessageType", "Will");
                    Some(ReceivedTelemetry { identity, properties, payload: w.message })
                }
                Ok(
                    DeviceTopic::TwinGet { .. }
                    | DeviceTopic::TwinPatchReported { .. }
                    | DeviceTopic::MethodResponse { .. }
                    | DeviceTopic::DpsRegister { .. }
                    | DeviceTopic::DpsOperationStatus { .. },
                ) => return self.reject(Refusal::WillTopicNotTelemetry),
                Err(e) => return self.reject(Refusal::WillTopic(e)),
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

    fn handle_publish(&mut self, identity: DeviceIdentity, p: Publish) {
        let ack = match p.qos {
            QoS::ExactlyOnce => return self.close(CloseReason::Qos2Publish),
            QoS::AtMostOnce if p.dup => return self.violation(Violation::DupAtQos0),
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce if self.held_acks.iter().any(|(id, _)| *id == p.pkid) => {
                return self.violation(Violation::PacketIdInUse(p.pkid))
            }
            QoS::AtLeastOnce => Some(p.pkid),
        };
        match DeviceTopic::parse(&p.topic, &identity) {
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
                self.hold(ack, false);
                self.events.push_back(HubEvent::Telemetry {
                    message: ReceivedTelemetry { identity, properties, payload: p.payload },
                    ack,
                });
            }
            Ok(DeviceTopic::TwinGet { rid }) => {
                // Nothing to store: acknowledged on receipt (after any earlier held PUBACK).
                self.hold(ack, true);
                self.events.push_back(HubEvent::TwinGet { rid });
            }
            Ok(DeviceTopic::TwinPatchReported { rid }) => {
                self.hold(ack, false);
                self.events.push_back(HubEvent::TwinPatchReported { rid, patch: p.payload, ack });
            }
            Ok(DeviceTopic::MethodResponse { status, rid }) => {
                self.hold(ack, false);
                self.events.push_back(HubEvent::MethodResponse { rid, status, payload: p.payload, ack });
            }
            Ok(DeviceTopic::DpsRegister { .. } | DeviceTopic::DpsOperationStatus { .. }) => {
                self.close(CloseReason::DpsTopicOnHub(p.topic))
            }
            Err(e) => self.close(CloseReason::WrongTopic(e)),
        }
    }

    fn hold(&mut self, ack: Option<u16>, done: bool) {
        if let Some(pkid) = ack {
            self.held_acks.push_back((pkid, done));
            self.flush_acks();
        }
    }
}

/// The identity a ClientId names: `{device}` or `{device}/{module}`, each 1–128 printable ASCII characters
/// (IoT Hub ids are 7-bit ASCII; the registry decides which characters it accepts).
fn client_identity(client_id: &str, clean_session: bool) -> Result<DeviceIdentity, Refusal> {
    if client_id.is_empty() {
        return Err(if clean_session { Refusal::EmptyClientId } else { Refusal::EmptyClientIdWithSession });
    }
    let part_ok = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    let ok = match client_id.split_once('/') {
        Some((d, m)) => part_ok(d) && part_ok(m),
        None => part_ok(client_id),
    };
    if !ok {
        let shown: String = client_id.chars().take(64).collect();
        return Err(Refusal::BadClientId(shown));
    }
    Ok(DeviceIdentity::from_client_id(client_id))
}
