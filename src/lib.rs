//! # hubsim web
//!
//! The browser device simulator: a Yew single-page app that talks MQTT 3.1.1 over WebSocket to Azure IoT Hub or
//! the hubsim emulator. All protocol work is done by `hubsim-proto`'s `DeviceSession`; the app never formats a
//! topic or a token itself. Only [`driver`] touches `web_sys::WebSocket`.
//!
//! - [`app`]: root component, context providers, layout.
//! - [`state`]: the app state and its pure reducer (actions are plain data).
//! - [`settings`]: the settings, how they are stored and shared, and the validation of everything that enters
//!   from outside the form (links, storage).
//! - [`form`]: form validation, where a connection goes, the composer's telemetry and topic preview.
//! - [`dps`]: the DPS way to connect as data: validation, the DPS endpoint, payload, step and outcome texts.
//! - `provision`: drives the core's `ProvisioningSession` over the driver, then connects to the assigned hub.
//! - [`token`]: the SAS token tool.
//! - [`library`]: saved messages (file format, Iot-Telemetry-Simulator import, examples); the template-mode
//!   state is [`state::templates`], its timers and per-device template state `schedule`.
//! - [`series`]: numeric series of the bodies sent and received, for the charts (bounded ring buffers).
//! - [`export`]: the activity log and the C2D inbox as JSON and CSV.
//! - [`pnp`]: the device a DTDL model describes (IoT Plug and Play): its state, reducer and answers.
//! - [`controller`]: the connection lifecycle: token renewal, reconnect with backoff, method answers.
//! - [`driver`]: the WebSocket ↔ `DeviceSession` pump.
//! - `components`: one component per file.
//!
//! `state`, `settings`, `form`, `dps`, `library`, `series`, `export`, `pnp` and `token` are plain Rust and are
//! unit-tested natively (`cargo test -p hubsim-web`); the rest is compiled for `wasm32-unknown-unknown` only and
//! tested in Chromium.

pub mod dps;
pub mod export;
pub mod form;
pub mod library;
pub mod pnp;
pub mod series;
pub mod settings;
pub mod state;
pub mod token;

#[cfg(target_arch = "wasm32")]
pub mod app;
// The benchmark entry points exist only in `cargo xtask bench`'s build (`--features bench`), not in the shipped app.
#[cfg(all(target_arch = "wasm32", feature = "bench"))]
pub mod bench;
#[cfg(target_arch = "wasm32")]
mod components;
#[cfg(target_arch = "wasm32")]
pub mod controller;
#[cfg(target_arch = "wasm32")]
pub mod driver;
#[cfg(target_arch = "wasm32")]
pub mod provision;
#[cfg(target_arch = "wasm32")]
pub mod schedule;
#[cfg(target_arch = "wasm32")]
pub mod util;

#[cfg(target_arch = "wasm32")]
pub use app::{start, App};
