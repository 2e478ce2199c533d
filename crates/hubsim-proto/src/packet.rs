//! Framing and encoding over mqttbytes v4, shared by both session state machines.
//!
//! [`Framer`] accumulates bytes exactly as they arrive (split at any boundary, several packets per chunk) and
//! yields whole packets, refusing one whose remaining length exceeds the configured maximum before reading it.
//! [`encode`] writes a packet after checking what mqttbytes does not: strings longer than 65 535 bytes, which it
//! would silently truncate.

use bytes::BytesMut;
use mqttbytes::v4::Packet;
use thiserror::Error;

/// Why bytes from the peer are not a valid MQTT 3.1.1 packet stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("[MQTT-2.2.3] packet of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("malformed packet: {0:?}")]
    Malformed(mqttbytes::Error),
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

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet, `Ok(None)` if more bytes are needed.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, FrameError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match mqttbytes::v4::read(&mut self.buf, self.max_packet) {
            Ok(p) => Ok(Some(p)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => Err(FrameError::TooLarge(n, self.max_packet)),
            Err(e) => Err(FrameError::Malformed(e)),
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("[MQTT-1.5.3] {0} is {1} bytes; MQTT strings are at most 65535")]
    StringTooLong(&'static str, usize),
    #[error("cannot encode packet: {0:?}")]
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
        assert!(matches!(f.next_packet(), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn refuses_strings_mqttbytes_would_truncate() {
        let p = Publish::new("x".repeat(70_000), QoS::AtMostOnce, vec![]);
        assert_eq!(encode(&Packet::Publish(p), &mut BytesMut::new()), Err(EncodeError::StringTooLong("topic", 70_000)));
    }
}
