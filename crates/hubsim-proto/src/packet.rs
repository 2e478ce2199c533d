//! Framing and encoding over mqttbytes v4, shared by both session state machines.
//!
//! [`Framer`] accumulates bytes exactly as they arrive (split at any boundary, several packets per chunk) and
//! yields whole packets, refusing one whose remaining length exceeds the configured maximum before reading it.
//! It also checks what mqttbytes does not: the reserved fixed-header flags of every packet ([MQTT-2.2.2-2]).
//! [`ConnectHeader::inspect`] reads a CONNECT's variable header from the raw frame before mqttbytes decodes it,
//! because mqttbytes refuses some CONNECTs (protocol level 3, name `MQIsdp`) for which MQTT 3.1.1 requires a
//! CONNACK, and accepts others (reserved flag set, password without user name) that it requires closing on.
//! [`encode`] writes a packet after checking what mqttbytes does not: strings longer than 65 535 bytes, which it
//! would silently truncate.

use bytes::{Bytes, BytesMut};
use mqttbytes::v4::Packet;
use thiserror::Error;

/// Why bytes from the peer are not a valid MQTT 3.1.1 packet stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("[MQTT-2.2.3] packet of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("[MQTT-2.2.2-2] {packet} with reserved fixed-header flags {flags:#06b}")]
    ReservedFlags { packet: &'static str, flags: u8 },
    #[error("[MQTT-4.8.0-1] malformed packet: {}", codec_error_text(.0))]
    Malformed(mqttbytes::Error),
    /// A packet whose size MQTT fixes (CONNACK and the acknowledgements: 2 bytes; PINGREQ, PINGRESP, DISCONNECT:
    /// none) with another remaining length (mqttbytes reads the fixed part and skips the rest).
    #[error("[MQTT-4.8.0-1] malformed packet: {packet} with a remaining length of {len}, not {expected}")]
    WrongLength { packet: &'static str, len: usize, expected: usize },
}

/// What an mqttbytes codec error means, in words (its `Debug` form is a Rust enum name, and formatting it would
/// pull `Debug` code for the whole enum into the browser app). Numbers in the variants are left out: the texts are
/// for people, and the packet that caused them is logged beside them where it matters.
pub fn codec_error_text(e: &mqttbytes::Error) -> &'static str {
    use mqttbytes::Error as E;
    match e {
        E::NotConnect(_) => "the first packet is not CONNECT",
        E::UnexpectedConnect => "a second CONNECT",
        E::InvalidConnectReturnCode(_) => "a CONNACK return code MQTT 3.1.1 does not define",
        E::InvalidReason(_) | E::InvalidSubscribeReasonCode(_) => "a reason code MQTT 3.1.1 does not define",
        E::InvalidProtocol => "the protocol name is not MQTT",
        E::InvalidProtocolLevel(_) => "the protocol level is not 4 (MQTT 3.1.1)",
        E::IncorrectPacketFormat | E::MalformedPacket => "the packet does not follow its format",
        E::InvalidPacketType(_) => "a packet type MQTT 3.1.1 does not define",
        E::InvalidPropertyType(_) | E::InvalidRetainForwardRule(_) | E::SubscriptionIdZero => {
            "an MQTT 5 field in an MQTT 3.1.1 packet"
        }
        E::InvalidQoS(_) => "QoS 3, which is not a QoS",
        E::PacketIdZero => "packet identifier 0, which MQTT forbids",
        E::PayloadSizeIncorrect | E::BoundaryCrossed(_) => "a length field does not match the packet's size",
        E::PayloadTooLong | E::PayloadSizeLimitExceeded(_) => "the packet is larger than allowed",
        E::PayloadRequired => "a payload is required and missing",
        E::TopicNotUtf8 => "a topic name is not UTF-8",
        E::MalformedRemainingLength => "the remaining length is not a valid variable byte integer",
        E::InsufficientBytes(_) => "the packet is truncated",
    }
}

/// The name of an MQTT control packet type (the high nibble of the first byte).
pub fn packet_name(byte1: u8) -> &'static str {
    match byte1 >> 4 {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        _ => "a reserved packet type",
    }
}

/// The name of a decoded packet, for messages.
pub fn name(p: &Packet) -> &'static str {
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

/// [MQTT-2.2.2-2]: the flags PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry 0b0010, PUBLISH's are its own, every other
/// packet's are 0. mqttbytes ignores them.
pub fn check_flags(byte1: u8) -> Result<(), FrameError> {
    let flags = byte1 & 0x0F;
    let expected = match byte1 >> 4 {
        3 => return Ok(()),
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(FrameError::ReservedFlags { packet: packet_name(byte1), flags })
    }
}

/// Checks the remaining length of a packet whose size MQTT 3.1.1 fixes (§3.2–3.14): `frame` is a whole frame.
fn check_length(frame: &[u8]) -> Result<(), FrameError> {
    let expected = match frame[0] >> 4 {
        2 | 4..=7 | 11 => 2,
        12..=14 => 0,
        _ => return Ok(()),
    };
    let header = 2 + frame[1..].iter().take_while(|b| **b & 0x80 != 0).count();
    let len = frame.len().saturating_sub(header);
    if len == expected {
        Ok(())
    } else {
        Err(FrameError::WrongLength { packet: packet_name(frame[0]), len, expected })
    }
}

/// Reassembles packets from a byte stream.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_packet: usize,
}

impl Framer {
    /// A framer refusing packets whose remaining length is over `max_packet` bytes.
    pub fn new(max_packet: usize) -> Self {
        Framer { buf: BytesMut::new(), max_packet }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The first byte of the next packet (its type and flags), before the packet is whole.
    pub fn first_byte(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of memory the framer holds on to (0 once everything received is framed).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The bytes of the next whole packet (fixed header included) without consuming them, `Ok(None)` if more bytes
    /// are needed.
    pub fn peek(&self) -> Result<Option<&[u8]>, FrameError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match mqttbytes::check(self.buf.iter(), self.max_packet) {
            Ok(h) => Ok(Some(&self.buf[..h.frame_length()])),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => Err(FrameError::TooLarge(n, self.max_packet)),
            Err(e) => Err(FrameError::Malformed(e)),
        }
    }

    /// The next whole packet, `Ok(None)` if more bytes are needed.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, FrameError> {
        match self.peek()? {
            None => return Ok(None),
            Some(frame) => {
                check_flags(frame[0])?;
                check_length(frame)?;
            }
        }
        match mqttbytes::v4::read(&mut self.buf, self.max_packet) {
            Ok(p) => {
                if self.buf.is_empty() {
                    // Every byte is framed: let go of the allocation. An emptied `BytesMut` still holds it (the
                    // packets split from it share it), so an idle connection would keep its last input alive.
                    self.buf = BytesMut::new();
                }
                Ok(Some(p))
            }
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => Err(FrameError::TooLarge(n, self.max_packet)),
            Err(e) => Err(FrameError::Malformed(e)),
        }
    }
}

/// Most bytes a device puts in one WebSocket message, unless one MQTT packet is larger (it then goes alone: at most
/// IoT Hub's 256 KB message plus its topic and headers). MQTT over WebSocket lets packets span messages
/// ([MQTT-6.0.0-2]), but the SDKs send one packet per message and servers bound a message (the emulator at 1 MiB,
/// `MAX_WS_MESSAGE`): a session's output after a reconnect (up to `max_inflight` queued publishes of up to 256 KB
/// each) written as one message was refused, and the reconnect sent it again. 64 KiB keeps the count of messages low
/// for small telemetry (about 200 publishes of 256 bytes per message).
pub const WS_MESSAGE_TARGET: usize = 64 * 1024;

/// Splits `bytes`, whole MQTT packets back to back as [`encode`] writes them, into WebSocket messages of whole
/// packets, each at most `max` bytes unless it holds a single larger packet. Bytes that do not end in a whole packet
/// (never from [`encode`]) go in the last message as they are. `bytes` of at most `max` come back as one message
/// without copying.
pub fn ws_messages(mut bytes: Bytes, max: usize) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let mut end = 0;
        while end < bytes.len() {
            let len = match mqttbytes::check(bytes[end..].iter(), usize::MAX) {
                Ok(h) => h.frame_length(),
                Err(_) => bytes.len() - end,
            };
            if end > 0 && end + len > max {
                break;
            }
            end += len;
        }
        Some(bytes.split_to(end))
    })
}

/// A CONNECT's variable header, read from the raw frame ([MQTT-3.1.2]) before mqttbytes decodes the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectHeader {
    /// The fixed header's remaining length: variable header plus payload.
    pub remaining_len: usize,
    pub level: u8,
    /// The connect flags byte: user name, password, Will retain, Will QoS (2 bits), Will, CleanSession, reserved.
    pub flags: u8,
    pub keep_alive: u16,
}

/// Why a CONNECT's variable header is not one IoT Hub accepts. Only [`UnsupportedLevel`] is answered with a
/// CONNACK (0x01); on the others MQTT 3.1.1 has the server close without one ([MQTT-3.1.4-1]).
///
/// [`UnsupportedLevel`]: ConnectHeaderError::UnsupportedLevel
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectHeaderError {
    #[error(
        "[MQTT-3.1.2-2] protocol {name:?} level {level} is not supported: IoT Hub speaks MQTT 3.1.1 (\"MQTT\", level 4)"
    )]
    UnsupportedLevel { name: String, level: u8 },
    #[error("[MQTT-3.1.2-1] protocol name {0:?} is not \"MQTT\"")]
    ProtocolName(String),
    #[error("[MQTT-3.1.2-3] the reserved CONNECT flag is set")]
    ReservedFlag,
    #[error("[MQTT-3.1.2-13] Will QoS {0} without the Will flag")]
    WillQosWithoutWill(u8),
    #[error("[MQTT-3.1.2-14] Will QoS 3 is not a QoS")]
    WillQos3,
    #[error("[MQTT-3.1.2-15] Will Retain without the Will flag")]
    WillRetainWithoutWill,
    #[error("[MQTT-3.1.2-22] the password flag is set without the user name flag")]
    PasswordWithoutUsername,
    #[error("[MQTT-3.1.4-1] the CONNECT variable header is truncated (MQTT 3.1.1 §3.1.2)")]
    Truncated,
    #[error("[MQTT-3.1.3-1] {0} bytes after the last CONNECT payload field the flags announce")]
    TrailingBytes(usize),
}

/// Connect flag bits ([MQTT-3.1.2], figure 3.4).
pub mod connect_flags {
    pub const USERNAME: u8 = 0x80;
    pub const PASSWORD: u8 = 0x40;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const WILL_QOS: u8 = 0x18;
    pub const WILL: u8 = 0x04;
    pub const CLEAN_SESSION: u8 = 0x02;
    pub const RESERVED: u8 = 0x01;
}

impl ConnectHeader {
    /// Reads and checks the variable header of the CONNECT `frame` (fixed header included), in the order
    /// MQTT 3.1.1 gives: protocol name and level first (a different protocol may lay out the rest differently),
    /// then the flags.
    pub fn inspect(frame: &[u8]) -> Result<ConnectHeader, ConnectHeaderError> {
        use connect_flags::*;
        // Fixed header: one byte, then 1–4 bytes of remaining length (continuation bit 0x80).
        let len_bytes =
            frame.iter().skip(1).take(4).position(|b| b & 0x80 == 0).ok_or(ConnectHeaderError::Truncated)?;
        let vh = frame.get(2 + len_bytes..).ok_or(ConnectHeaderError::Truncated)?;
        let remaining_len = vh.len();
        let name_len = match vh {
            [a, b, ..] => u16::from_be_bytes([*a, *b]) as usize,
            _ => return Err(ConnectHeaderError::Truncated),
        };
        let name = vh.get(2..2 + name_len).ok_or(ConnectHeaderError::Truncated)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let rest = &vh[2 + name_len..];
        let level = *rest.first().ok_or(ConnectHeaderError::Truncated)?;
        match (name.as_str(), level) {
            ("MQTT", 4) => {}
            // MQTT 3.1 names itself "MQIsdp"; its clients understand CONNACK 0x01 (same code in 3.1).
            ("MQTT", _) | ("MQIsdp", 3) => return Err(ConnectHeaderError::UnsupportedLevel { name, level }),
            _ => return Err(ConnectHeaderError::ProtocolName(name)),
        }
        let (flags, keep_alive) = match rest {
            [_, f, k1, k2, ..] => (*f, u16::from_be_bytes([*k1, *k2])),
            _ => return Err(ConnectHeaderError::Truncated),
        };
        if flags & RESERVED != 0 {
            return Err(ConnectHeaderError::ReservedFlag);
        }
        let will_qos = (flags & WILL_QOS) >> 3;
        if flags & WILL == 0 {
            if will_qos != 0 {
                return Err(ConnectHeaderError::WillQosWithoutWill(will_qos));
            }
            if flags & WILL_RETAIN != 0 {
                return Err(ConnectHeaderError::WillRetainWithoutWill);
            }
        } else if will_qos == 3 {
            return Err(ConnectHeaderError::WillQos3);
        }
        if flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return Err(ConnectHeaderError::PasswordWithoutUsername);
        }
        Ok(ConnectHeader { remaining_len, level, flags, keep_alive })
    }

    pub fn clean_session(&self) -> bool {
        self.flags & connect_flags::CLEAN_SESSION != 0
    }

    /// Checks that the payload mqttbytes decoded is exactly what the flags announce, in the order of
    /// [MQTT-3.1.3-1]; mqttbytes ignores bytes after the last field.
    pub fn check_payload(&self, c: &mqttbytes::v4::Connect) -> Result<(), ConnectHeaderError> {
        use connect_flags::*;
        let (user, pass) = c.login.as_ref().map_or((0, 0), |l| (l.username.len(), l.password.len()));
        let mut expected = 10 + 2 + c.client_id.len();
        if let Some(w) = &c.last_will {
            expected += 2 + w.topic.len() + 2 + w.message.len();
        }
        if self.flags & USERNAME != 0 {
            expected += 2 + user;
        }
        if self.flags & PASSWORD != 0 {
            expected += 2 + pass;
        }
        match self.remaining_len - expected.min(self.remaining_len) {
            0 => Ok(()),
            extra => Err(ConnectHeaderError::TrailingBytes(extra)),
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("[MQTT-1.5.3] {0} is {1} bytes; MQTT strings are at most 65535")]
    StringTooLong(&'static str, usize),
    #[error("cannot encode packet: {}", codec_error_text(.0))]
    Codec(mqttbytes::Error),
}

fn check(what: &'static str, s: &str) -> Result<(), EncodeError> {
    if s.len() > u16::MAX as usize {
        Err(EncodeError::StringTooLong(what, s.len()))
    } else {
        Ok(())
    }
}

/// Appends the encoding of `packet` to `out`.
pub fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => {
            check("client id", &c.client_id)?;
            if let Some(l) = &c.login {
                check("user name", &l.username)?;
                check("password", &l.password)?;
            }
            if let Some(w) = &c.last_will {
                check("will topic", &w.topic)?;
                if w.message.len() > u16::MAX as usize {
                    return Err(EncodeError::StringTooLong("will message", w.message.len()));
                }
            }
            c.write(out)
        }
        Packet::ConnAck(p) => p.write(out),
        Packet::Publish(p) => {
            check("topic", &p.topic)?;
            p.write(out)
        }
        Packet::PubAck(p) => p.write(out),
        Packet::PubRec(p) => p.write(out),
        Packet::PubRel(p) => p.write(out),
        Packet::PubComp(p) => p.write(out),
        Packet::Subscribe(p) => {
            for f in &p.filters {
                check("topic filter", &f.path)?;
            }
            p.write(out)
        }
        Packet::SubAck(p) => p.write(out),
        Packet::Unsubscribe(p) => {
            for t in &p.topics {
                check("topic filter", t)?;
            }
            p.write(out)
        }
        Packet::UnsubAck(p) => p.write(out),
        Packet::PingReq => mqttbytes::v4::PingReq.write(out),
        Packet::PingResp => mqttbytes::v4::PingResp.write(out),
        Packet::Disconnect => mqttbytes::v4::Disconnect.write(out),
    }
    .map(|_| ())
    .map_err(EncodeError::Codec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqttbytes::v4::*;
    use mqttbytes::QoS;

    fn bytes_of(packets: &[Packet]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for p in packets {
            encode(p, &mut out).unwrap();
        }
        out.to_vec()
    }

    #[test]
    fn frames_split_and_coalesced_input() {
        let mut p = Publish::new("a/b", QoS::AtLeastOnce, vec![7u8; 300]);
        p.pkid = 9;
        let packets = vec![Packet::PingResp, Packet::Publish(p), Packet::PubAck(PubAck::new(3))];
        let wire = bytes_of(&packets);
        for chunk in [1, 2, 3, 7, 128, wire.len()] {
            let mut f = Framer::new(1 << 20);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                f.push(c);
                while let Some(p) = f.next_packet().unwrap() {
                    got.push(p);
                }
            }
            assert_eq!(got, packets, "chunk {chunk}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn refuses_oversize_before_reading_it_and_malformed_packets() {
        let mut f = Framer::new(100);
        f.push(&[0x30, 0xFF, 0xFF, 0x7F]); // PUBLISH announcing ~2 MB
        assert_eq!(f.next_packet(), Err(FrameError::TooLarge(2_097_151, 100)));
        let mut f = Framer::new(100);
        f.push(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert!(matches!(f.next_packet(), Err(FrameError::Malformed(_))));
        let mut f = Framer::new(100);
        f.push(&[0xF0, 0x00]); // reserved packet type 15
        let e = f.next_packet().unwrap_err();
        assert!(matches!(e, FrameError::Malformed(_)));
        // Said in words, not as a Rust enum name.
        assert_eq!(e.to_string(), "[MQTT-4.8.0-1] malformed packet: a packet type MQTT 3.1.1 does not define");
    }

    #[test]
    fn reserved_fixed_header_flags_are_refused() {
        // PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0b0010; the others 0; PUBLISH's are its own.
        for ok in [0x10u8, 0x20, 0x30, 0x3B, 0x40, 0x62, 0x82, 0xA2, 0xC0, 0xE0] {
            assert_eq!(check_flags(ok), Ok(()), "{ok:#04x}");
        }
        assert_eq!(check_flags(0x60), Err(FrameError::ReservedFlags { packet: "PUBREL", flags: 0 }));
        assert_eq!(check_flags(0xC1), Err(FrameError::ReservedFlags { packet: "PINGREQ", flags: 1 }));
        let mut f = Framer::new(100);
        f.push(&[0x80, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']); // SUBSCRIBE with flags 0
        assert_eq!(f.next_packet(), Err(FrameError::ReservedFlags { packet: "SUBSCRIBE", flags: 0 }));
    }

    #[test]
    fn packets_of_a_fixed_size_with_another_length_are_malformed() {
        for (bytes, packet, len, expected) in [
            (&[0xC0, 0x01, 0x00][..], "PINGREQ", 1, 0),
            (&[0xE0, 0x02, 0x00, 0x00][..], "DISCONNECT", 2, 0),
            (&[0x40, 0x03, 0x00, 0x01, 0x00][..], "PUBACK", 3, 2),
            (&[0x40, 0x01, 0x00][..], "PUBACK", 1, 2),
        ] {
            let mut f = Framer::new(100);
            f.push(bytes);
            assert_eq!(f.next_packet(), Err(FrameError::WrongLength { packet, len, expected }), "{bytes:?}");
        }
        let mut f = Framer::new(100);
        f.push(&[0xC0, 0x00, 0x40, 0x02, 0x00, 0x07, 0xE0, 0x00]);
        assert_eq!(f.next_packet(), Ok(Some(Packet::PingReq)));
        assert!(matches!(f.next_packet(), Ok(Some(Packet::PubAck(_)))));
        assert_eq!(f.next_packet(), Ok(Some(Packet::Disconnect)));
    }

    #[test]
    fn peek_shows_a_whole_frame_without_consuming_it() {
        let mut f = Framer::new(100);
        f.push(&[0xC0]);
        assert_eq!(f.peek(), Ok(None));
        f.push(&[0x00, 0xD0]);
        assert_eq!(f.peek(), Ok(Some(&[0xC0, 0x00][..])));
        assert_eq!(f.next_packet(), Ok(Some(Packet::PingReq)));
        assert_eq!(f.buffered(), 1);
    }

    #[test]
    fn connect_header_inspection() {
        let h = ConnectHeader::inspect(b"\x10\x10\x00\x04MQTT\x04\xc2\x00\x3c\x00\x04dev1").unwrap();
        assert_eq!(h, ConnectHeader { remaining_len: 16, level: 4, flags: 0xC2, keep_alive: 60 });
        assert!(h.clean_session());
        // A two-byte remaining length.
        let mut long = vec![0x10, 0x8E, 0x01, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x00, 0x00, 0x82];
        long.extend(std::iter::repeat_n(b'a', 0x82));
        assert_eq!(ConnectHeader::inspect(&long).unwrap().remaining_len, 142);
        let mut c = Connect::new("a".repeat(0x82));
        c.clean_session = false;
        assert_eq!(bytes_of(&[Packet::Connect(c.clone())])[..3], long[..3], "same fixed header as mqttbytes writes");
        let h = ConnectHeader::inspect(&long).unwrap();
        assert_eq!(h.check_payload(&c), Ok(()));
        assert_eq!(
            ConnectHeader::inspect(b"\x10\x0a\x00\x06MQIsdp\x04\x02"),
            Err(ConnectHeaderError::ProtocolName("MQIsdp".into()))
        );
        assert_eq!(ConnectHeader::inspect(b"\x10\x08\x00\x04MQTT\x04\x02"), Err(ConnectHeaderError::Truncated));
    }

    #[test]
    fn refuses_strings_mqttbytes_would_truncate() {
        let p = Publish::new("x".repeat(70_000), QoS::AtMostOnce, vec![]);
        assert_eq!(encode(&Packet::Publish(p), &mut BytesMut::new()), Err(EncodeError::StringTooLong("topic", 70_000)));
    }

    #[test]
    fn ws_messages_hold_whole_packets_up_to_the_target() {
        let publish = |n: usize| {
            let mut p = Publish::new("devices/d/messages/events/", QoS::AtLeastOnce, vec![7; n]);
            p.pkid = 1;
            Packet::Publish(p)
        };
        // 100 + 2 + 26 + 2 (packet id) = 131 bytes each (a one-byte remaining length up to 127, then two).
        let one = bytes_of(&[publish(100)]).len();
        let five = Bytes::from(bytes_of(&[publish(100), publish(100), publish(100), publish(100), publish(100)]));
        // Everything fits: one message, the same bytes.
        let all: Vec<Bytes> = ws_messages(five.clone(), 10 * one).collect();
        assert_eq!(all, vec![five.clone()]);
        // Two packets per message, never a split packet.
        let sizes: Vec<usize> = ws_messages(five.clone(), 2 * one + 1).map(|m| m.len()).collect();
        assert_eq!(sizes, vec![2 * one, 2 * one, one]);
        let mut framer = Framer::new(usize::MAX);
        for m in ws_messages(five.clone(), 2 * one) {
            framer.push(&m);
            assert!(matches!(framer.next_packet(), Ok(Some(_))), "each message starts with a whole packet");
            while framer.next_packet().unwrap().is_some() {}
            assert_eq!(framer.buffered(), 0, "and ends with one");
        }
        // A packet larger than the target goes alone, between the others.
        let big = bytes_of(&[publish(100), publish(1000), publish(100)]);
        let sizes: Vec<usize> = ws_messages(Bytes::from(big.clone()), 200).map(|m| m.len()).collect();
        assert_eq!(sizes, vec![one, big.len() - 2 * one, one]);
        // Nothing to send: no message; a truncated tail (not from `encode`) is passed on as it is.
        assert_eq!(ws_messages(Bytes::new(), 10).count(), 0);
        let cut = Bytes::from(five[..2 * one + 10].to_vec());
        let sizes: Vec<usize> = ws_messages(cut, one).map(|m| m.len()).collect();
        assert_eq!(sizes, vec![one, one, 10]);
    }
}
