//! # hubsim web
//!
//! The browser device simulator: a Yew single-page app that talks MQTT 3.1.1 over WebSocket to Azure IoT Hub or
//! the hubsim emulator. All protocol work is done by `hubsim-proto`'s `DeviceSession`; the app never formats a
//! topic or a token itself. Only [`driver`] touches `web_sys::WebSocket`.
//!
//! - [`app`]: root component, context providers, layout.
//! - [`state`]: the reducer (pure).
//! - [`controller`]: connection management: token renewal, reconnect with backoff, method answers.
//! - [`driver`]: the WebSocket ↔ `DeviceSession` pump.
//! - [`settings`]: persisted and shareable settings.
//! - `components`: one component per file.
//!
//! The code is compiled for `wasm32-unknown-unknown` only; on other targets the crate is empty so that
//! `cargo test --workspace` stays native and fast.

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod bench;
#[cfg(target_arch = "wasm32")]
mod components;
#[cfg(target_arch = "wasm32")]
pub mod controller;
#[cfg(target_arch = "wasm32")]
pub mod driver;
#[cfg(target_arch = "wasm32")]
pub mod settings;
#[cfg(target_arch = "wasm32")]
pub mod state;
#[cfg(target_arch = "wasm32")]
pub mod util;

#[cfg(target_arch = "wasm32")]
pub use app::{start, App};
