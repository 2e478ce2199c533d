//! [`HubSession`]: the hub side of one device connection, enforcing IoT Hub's MQTT rules (reference §2–§8).
//!
//! The emulator's connection task owns the transport, the clock and the store; the session owns the rules. It
//! reports what needs the store ([`HubEvent::Authenticate`], [`HubEvent::Telemetry`], …) and the task answers
//! with commands ([`HubSession::accept`], [`HubSession::ack_telemetry`], …). Every refusal or misuse ends in
//! [`HubEvent::Closed`] with a [`CloseReason`] carrying the IoT Hub error code the real service logs.
//!
//! ```text
//!                 CONNECT               accept()
//!  AwaitingConnect ──────▶ Authenticating ──────▶ Connected
//!        │                      │ refuse()            │ DISCONNECT, misuse, keep-alive, token expiry,
//!        │ 30 s, non-CONNECT     ▼                     │ close() (replaced, killed, shutdown)
//!        └────────────────────▶ Closed ◀──────────────┘
//! ```

mod session;
#[cfg(test)]
mod tests;

pub use session::*;
