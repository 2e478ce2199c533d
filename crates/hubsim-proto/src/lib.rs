//! # hubsim-proto — the sans-IO core of hubsim
//!
//! Everything hubsim knows about Azure IoT Hub's MQTT 3.1.1 device endpoint lives here, so that the browser app,
//! the native simulator and the emulator cannot disagree about a topic, a property bag or a SAS token:
//!
//! - [`conn_str`]: device connection strings (`HostName=…;DeviceId=…;SharedAccessKey=…`).
//! - [`sas`]: shared access signature tokens: resource URIs, signing, parsing and constant-time verification.
//! - [`percent`]: the RFC 3986 percent-encoding IoT Hub uses in property bags and SAS audiences.
//! - [`property_bag`]: `k=v&…` bags with typed system properties (`$.mid`, `$.ct`, …).
//! - [`topic`]: every device-side topic name and subscription filter, built and parsed.
//! - [`endpoint`]: ports, the WebSocket path and subprotocol, the WebSocket URL.
//! - [`username`]: the MQTT CONNECT user name (`{host}/{device}/?api-version=…`), including legacy forms.
//! - [`device`]: [`DeviceSession`], the device side of a connection as a state machine.
//! - [`hub`]: [`HubSession`], the hub side of one connection, used by the emulator.
//! - [`json`]: hubsim's one JSON implementation (strict and relaxed parsing, order-preserving objects, compact
//!   writing), shared by the DPS bodies, the template engine and the DTDL models.
//! - [`provisioning`]: DPS over MQTT: [`ProvisioningSession`] (a device registering) and [`DpsSession`] (the
//!   emulator's DPS), with the DPS JSON bodies.
//!
//! The crate does no I/O, spawns nothing and never reads a clock: time is always an argument
//! ([`Instant`] in milliseconds on the caller's monotonic clock, Unix seconds for token expiry). It builds for
//! `wasm32-unknown-unknown`. mqttbytes (v4) is its only MQTT codec.

pub mod conn_str;
pub mod device;
pub mod endpoint;
pub mod hub;
pub mod json;
pub mod num;
pub mod packet;
pub mod percent;
pub mod property_bag;
pub mod provisioning;
pub mod quote;
pub mod sas;
pub mod time;
pub mod topic;
pub mod username;

pub use conn_str::{ConnectionString, ConnectionStringError, ServiceConnectionString};
pub use device::{DeviceConfig, DeviceSession};
pub use hub::{HubConfig, HubSession};
pub use property_bag::{PropertyBag, SystemProperty};
pub use provisioning::{DpsConfig, DpsSession, EnrollmentKey, ProvisioningConfig, ProvisioningSession};
pub use sas::{DeviceKey, ResourceUri, SasToken};
pub use time::Instant;
pub use topic::DeviceIdentity;

/// Re-exported so callers use the same codec types as the core.
pub use mqttbytes;

/// The API version hubsim puts in the MQTT user name; the one the current IoT Hub docs use.
pub const API_VERSION: &str = "2021-04-12";

/// IoT Hub's limit on a device-to-cloud message: body plus property names and values (256 KB).
pub const MAX_TELEMETRY_SIZE: usize = 256 * 1024;
