//! [`DeviceSession`]: the device side of one IoT Hub MQTT connection as a sans-IO state machine.
//!
//! The driver (browser, native simulator, tests) owns the transport and the clock and does four things, quinn
//! style: feeds received bytes to [`DeviceSession::handle_input`], writes out what
//! [`DeviceSession::poll_transmit`] returns, arms one timer at [`DeviceSession::poll_timeout`] and calls
//! [`DeviceSession::handle_timeout`] when it fires, and reacts to [`DeviceSession::poll_event`]. Commands
//! (connect, send telemetry, subscribe, twin, methods) only queue bytes.
//!
//! The connection's phase is private; callers ask [`DeviceSession::is_connected`] and friends. The transition
//! diagram is on [`DeviceSession`]. State that outlives a connection lives beside the phase: the in-flight table
//! of QoS 1 telemetry (kept across reconnects and re-sent, with DUP when the session was resumed with
//! CleanSession 0, [MQTT-4.4.0-1]) and the table of outstanding twin requests keyed by `$rid`.

mod session;
mod small_map;
#[cfg(test)]
mod tests;

pub use session::*;
