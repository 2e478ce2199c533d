//! Why a hub-side connection ends ([`CloseReason`]) and why a command from the connection task was refused
//! ([`CommandError`]). Peer misbehaviour ([`Violation`]), refusal ([`Refusal`]), timeouts and API misuse are
//! different variants; each protocol violation cites the MQTT 3.1.1 clause or IoT Hub rule it breaks.

use core::time::Duration;
use mqttbytes::v4::ConnectReturnCode;
use thiserror::Error;

use crate::packet::{ConnectHeaderError, EncodeError, FrameError};
use crate::sas::SasParseError;
use crate::topic::TopicError;
use crate::username::UsernameError;

/// Why the connection ended, with the code IoT Hub logs for it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CloseReason {
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// The CONNECT was answered with a CONNACK refusal ([`Refusal::code`]).
    #[error("refused with CONNACK {code:#04x}: {0}", code = .0.code() as u8)]
    Refused(Refusal),
    #[error("the device disconnected")]
    ClientDisconnected,
    /// The transport closed without DISCONNECT; the transport's own description.
    #[error("the connection closed without DISCONNECT ({0})")]
    TransportClosed(String),
    /// No packet within 1.5 × keep-alive.
    #[error("keep-alive timeout: nothing received for {} s", .0.as_secs())]
    KeepAliveTimeout(Duration),
    #[error("the SAS token expired")]
    TokenExpired,
    #[error("replaced by a new connection for the same device")]
    ReplacedByNewConnection,
    /// Closed through the service API (or because the hub could not do what the device asked); its words.
    #[error("closed by the service: {0}")]
    ClosedByService(String),
    #[error("the device was disabled or deleted")]
    DeviceDisabled,
    #[error("the emulator is shutting down")]
    ServerShutdown,
    #[error("[MQTT-3.3.1-4] QoS 2 PUBLISH is not supported by IoT Hub")]
    Qos2Publish,
    /// PUBLISH to a topic the device may not use (includes malformed property bags).
    #[error("publish to a topic IoT Hub does not accept: {0}")]
    WrongTopic(TopicError),
    #[error("publish to a topic IoT Hub does not accept: '{0}' is a DPS topic; this is IoT Hub")]
    DpsTopicOnHub(String),
    #[error("publish to a topic DPS does not accept: '{0}' is an IoT Hub topic; this is DPS")]
    HubTopicOnDps(String),
    #[error("message of {0} bytes exceeds IoT Hub's 256 KB limit")]
    MessageTooLarge(usize),
    #[error("subscription IoT Hub does not offer: {0}")]
    BadSubscription(SubscriptionError),
    /// Bytes that are not MQTT 3.1.1, or MQTT the hub does not accept here; closed without an answer.
    #[error("protocol violation: {0}")]
    ProtocolViolation(Violation),
    /// The hub could not encode its own packet (a bug or a caller-supplied string over 65 535 bytes).
    #[error("internal error: cannot encode a reply: {0}")]
    Internal(EncodeError),
}

impl CloseReason {
    /// The IoT Hub error code logged for this reason (Azure Monitor `Connections` `resultType`).
    pub fn code(&self) -> u32 {
        match self {
            CloseReason::Refused(r) => match r.code() {
                ConnectReturnCode::ServiceUnavailable => 403012,
                ConnectReturnCode::RefusedProtocolVersion | ConnectReturnCode::BadClientId => 400004,
                ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::Success => 401002,
            },
            CloseReason::DeviceDisabled => 403012,
            CloseReason::TokenExpired => 401003,
            CloseReason::ReplacedByNewConnection => 400027,
            CloseReason::ClientDisconnected => 0,
            CloseReason::MessageTooLarge(_) => 413002,
            CloseReason::ServerShutdown => 503000,
            CloseReason::Internal(_) => 500001,
            CloseReason::ConnectTimeout
            | CloseReason::TransportClosed(_)
            | CloseReason::KeepAliveTimeout(_)
            | CloseReason::ClosedByService(_) => 404104,
            CloseReason::Qos2Publish
            | CloseReason::WrongTopic(_)
            | CloseReason::DpsTopicOnHub(_)
            | CloseReason::HubTopicOnDps(_)
            | CloseReason::BadSubscription(_)
            | CloseReason::ProtocolViolation(_) => 400004,
        }
    }

    /// A short machine-friendly name, e.g. `qos2-publish`.
    pub fn kind(&self) -> &'static str {
        match self {
            CloseReason::ConnectTimeout => "connect-timeout",
            CloseReason::Refused(_) => "refused",
            CloseReason::ClientDisconnected => "client-disconnect",
            CloseReason::TransportClosed(_) => "transport-closed",
            CloseReason::KeepAliveTimeout(_) => "keep-alive-timeout",
            CloseReason::TokenExpired => "token-expired",
            CloseReason::ReplacedByNewConnection => "replaced-by-new-connection",
            CloseReason::ClosedByService(_) => "closed-by-service",
            CloseReason::DeviceDisabled => "device-disabled",
            CloseReason::ServerShutdown => "server-shutdown",
            CloseReason::Qos2Publish => "qos2-publish",
            CloseReason::WrongTopic(_) | CloseReason::DpsTopicOnHub(_) | CloseReason::HubTopicOnDps(_) => "wrong-topic",
            CloseReason::MessageTooLarge(_) => "message-too-large",
            CloseReason::BadSubscription(_) => "bad-subscription",
            CloseReason::ProtocolViolation(_) => "protocol-violation",
            CloseReason::Internal(_) => "internal-error",
        }
    }

    /// True when the device did not end the connection itself, so its Will is published.
    pub fn publishes_will(&self) -> bool {
        !matches!(self, CloseReason::ClientDisconnected | CloseReason::Refused(_) | CloseReason::ConnectTimeout)
    }
}

/// Why a CONNECT was answered with a CONNACK refusal (and the connection then closed, [MQTT-3.2.2-5]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// CONNACK 0x01: the protocol is MQTT (or MQTT 3.1's `MQIsdp`) at a level other than 4.
    #[error("[MQTT-3.1.2-2] protocol {name:?} level {level} is not supported: IoT Hub speaks MQTT 3.1.1 (level 4)")]
    ProtocolLevel { name: String, level: u8 },
    /// CONNACK 0x02.
    #[error("[MQTT-3.1.3-8] an empty ClientId needs CleanSession 1")]
    EmptyClientIdWithSession,
    /// CONNACK 0x02: IoT Hub does not assign ClientIds.
    #[error("[MQTT-3.1.3-9] an empty ClientId: IoT Hub needs the device id (or device/module) as ClientId")]
    EmptyClientId,
    /// CONNACK 0x02: not the shape of a device or module id.
    #[error("[MQTT-3.1.3-9] ClientId {0:?} is not a device id or device/module id (printable ASCII, 1–128 each)")]
    BadClientId(String),
    /// CONNACK 0x05 from here on: IoT Hub answers every authentication failure with it (reference §2).
    #[error("no user name and password: IoT Hub authenticates every connection (reference §2)")]
    NoCredentials,
    #[error(transparent)]
    Username(UsernameError),
    #[error("this is an IoT Hub endpoint, not DPS (reference §2, §9)")]
    DpsUsername,
    /// IoT Hub requires ClientId = the identity in the user name (reference §2, protocol gateway).
    #[error("client id '{client_id}' does not match '{username}' in the user name (reference §2)")]
    ClientIdMismatch { client_id: String, username: String },
    #[error("no SAS token (X.509 authentication is not supported by hubsim; reference §2)")]
    NoToken,
    #[error("password: {0}")]
    Token(SasParseError),
    /// IoT Hub accepts only the telemetry topic as Will topic (reference §2, Will message).
    #[error("the Will topic must be the telemetry topic (reference §2, Will message)")]
    WillTopicNotTelemetry,
    #[error("Will topic: {0}")]
    WillTopic(TopicError),
    /// Decided by the connection task (registry, keys, device state), in its words.
    #[error("{why}")]
    ByHub { code: u8, why: String },
}

impl Refusal {
    /// The CONNACK return code.
    pub fn code(&self) -> ConnectReturnCode {
        match self {
            Refusal::ProtocolLevel { .. } => ConnectReturnCode::RefusedProtocolVersion,
            Refusal::EmptyClientIdWithSession | Refusal::EmptyClientId | Refusal::BadClientId(_) => {
                ConnectReturnCode::BadClientId
            }
            Refusal::NoCredentials
            | Refusal::Username(_)
            | Refusal::DpsUsername
            | Refusal::ClientIdMismatch { .. }
            | Refusal::NoToken
            | Refusal::Token(_)
            | Refusal::WillTopicNotTelemetry
            | Refusal::WillTopic(_) => ConnectReturnCode::NotAuthorized,
            Refusal::ByHub { code, .. } => match code {
                1 => ConnectReturnCode::RefusedProtocolVersion,
                2 => ConnectReturnCode::BadClientId,
                3 => ConnectReturnCode::ServiceUnavailable,
                4 => ConnectReturnCode::BadUserNamePassword,
                _ => ConnectReturnCode::NotAuthorized,
            },
        }
    }
}

/// A SUBSCRIBE IoT Hub does not answer with SUBACK but by closing (reference §8).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Filter(TopicError),
    #[error("more than {0} subscriptions")]
    TooMany(usize),
    /// DPS offers one filter (reference §9).
    #[error("'{0}' is not $dps/registrations/res/#")]
    NotDpsResponses(String),
}

/// Bytes from the device that break MQTT 3.1.1 or IoT Hub's dialect; the hub closes without an answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Violation {
    #[error(transparent)]
    Frame(FrameError),
    #[error(transparent)]
    ConnectHeader(ConnectHeaderError),
    #[error("[MQTT-3.1.0-1] the first packet must be CONNECT, got {0}")]
    FirstPacketNotConnect(&'static str),
    #[error("[MQTT-3.1.0-2] a second CONNECT")]
    SecondConnect,
    /// CONNACK, SUBACK, UNSUBACK, PINGRESP go from server to client only; PUBREC, PUBREL, PUBCOMP belong to
    /// QoS 2, which IoT Hub neither sends nor accepts.
    #[error("a device may not send {0} here (MQTT 3.1.1 §2.2.1, table 2.1; no QoS 2, [MQTT-3.3.1-4])")]
    NotFromDevice(&'static str),
    #[error("[MQTT-2.3.1-1] {0} with packet id 0")]
    PacketIdZero(&'static str),
    #[error("[MQTT-3.3.1-2] PUBLISH at QoS 0 with the DUP flag set")]
    DupAtQos0,
    #[error("[MQTT-2.3.1-2] PUBLISH reuses packet id {0}, which still awaits its PUBACK")]
    PacketIdInUse(u16),
    #[error("[MQTT-4.6.0-2] PUBACK {pkid} out of order (expected {expected} first)")]
    PubAckOutOfOrder { pkid: u16, expected: u16 },
    #[error("PUBACK for packet id {0}, which answers no PUBLISH of the hub (MQTT 3.1.1 §4.3.2)")]
    UnknownPubAck(u16),
    #[error("[MQTT-3.8.3-3] SUBSCRIBE without filters")]
    EmptySubscribe,
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE without filters")]
    EmptyUnsubscribe,
    #[error("the device acknowledged none of the hub's last 65 535 QoS 1 publishes: no packet id is free")]
    NoFreePacketId,
    #[error("truncated packet: the connection closed with {0} bytes of an incomplete packet")]
    Truncated(usize),
}

/// API misuse by the connection task: a command the session's state does not allow. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("API misuse: {command} is only valid while a CONNECT awaits authentication (the session is {state})")]
    NotAuthenticating { command: &'static str, state: &'static str },
    #[error("API misuse: refuse() needs a refusal code; 0 (accepted) is accept()")]
    RefuseWithSuccess,
    #[error("API misuse: {command} needs a connected session (the session is {state})")]
    NotConnected { command: &'static str, state: &'static str },
    #[error("API misuse: no PUBACK is held for packet id {0}")]
    UnknownAck(u16),
    #[error("API misuse: C2D packet id {0} is not in flight")]
    UnknownC2d(u16),
}
