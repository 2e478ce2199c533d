//! [`HubSession`]: the hub side of one device connection, enforcing IoT Hub's MQTT rules (reference §2–§8).
//!
//! The emulator's connection task owns the transport, the clock and the store; the session owns the rules. It
//! reports what needs the store ([`HubEvent::Authenticate`], [`HubEvent::Telemetry`], …) and the task answers
//! with commands ([`HubSession::accept`], [`HubSession::ack_publish`], …). Every refusal or violation ends in
//! [`HubEvent::Closed`] with a [`CloseReason`] carrying the IoT Hub error code the real service logs; a command
//! the session's state does not allow is a [`CommandError`]. The state diagram is on [`HubSession`].

mod error;
mod session;
#[cfg(test)]
mod tests;

pub use error::*;
pub use session::*;
