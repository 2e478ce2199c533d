//! # hubsim-device — the native device runtime
//!
//! Devices of hubsim-proto's [`DeviceSession`](hubsim_proto::DeviceSession) on real sockets: [`transport`] opens
//! MQTT over TLS or over WebSocket exactly as the Azure SDKs do, [`driver`] is the one tokio loop that pumps a
//! session, and [`fleet`] runs many of them (`hubsim simulate`) against the emulator or a real IoT Hub, sending a
//! padded payload, a [`message`] template (hubsim-template) or what a DTDL model describes ([`pnp`], on
//! hubsim-dtdl). It knows nothing of the emulator: the dependency arrow points from the CLI and the tests to here,
//! never from the hub.

pub mod driver;
pub mod fleet;
pub mod message;
pub mod pnp;
pub mod transport;

pub use driver::Driver;
pub use transport::{tls_config, Transport, TransportError, Via};
