//! # hubsim web
//!
//! The browser device simulator: a Yew single-page app that talks MQTT 3.1.1 over WebSocket to Azure IoT Hub or
//! the hubsim emulator. All protocol work is done by `hubsim-proto`'s `DeviceSession`; the app never formats a
//! topic or a token itself. Only [`driver`] touches `web_sys::WebSocket`.
//!
//! The code is compiled for `wasm32-unknown-unknown` only; on other targets the crate is empty so that
//! `cargo test --workspace` stays native and fast.

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
pub mod driver;

#[cfg(target_arch = "wasm32")]
pub use app::{start, App};
