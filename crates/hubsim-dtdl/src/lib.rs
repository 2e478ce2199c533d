//! # hubsim-dtdl — a device from its DTDL model, sans-IO
//!
//! IoT Plug and Play devices announce a DTDL model and follow conventions for their telemetry, twin
//! properties and commands, so that IoT Explorer, IoT Central and back ends understand them. This crate
//! holds what hubsim needs to *become* the device a model describes, for the browser app and for
//! `hubsim simulate --model FILE` alike:
//!
//! - [`Model`] ([`model`], [`parse`]): DTDL v2 and v3 Interfaces with Telemetry, Properties, Commands,
//!   Components and every schema kind (plus IoT Central's `geopoint` and `vector`), parsed from pasted JSON;
//!   semantic types and units kept for display; errors name the element and the reason,
//!   e.g. `contents[2] (Property "targetTemperature"): schema "doubel" is not a DTDL schema`.
//! - [`values`]: a default value for any schema and validation of received values.
//! - [`pnp`]: the conventions: `$.sub` on component telemetry, the `{"__t": "c"}` component wrapper, the
//!   writable-property acknowledgement, desired patches read per property (and those still unacknowledged
//!   after a reconnection), `component*command` names, read-only properties' initial report.
//! - [`telemetry`]: one `hubsim_template::Config` per interface, generators chosen per schema.
//! - [`builtin`]: the models that ship with hubsim.
//!
//! No I/O, no clock, no serde (JSON is `hubsim_proto::json`); builds for `wasm32-unknown-unknown`.
//!
//! ```
//! use hubsim_dtdl::{builtin, pnp, Model};
//! let model = builtin::TEMPERATURE_CONTROLLER.load().unwrap();
//! let (component, command) = pnp::find_command(&model, "thermostat1*getMaxMinReport").unwrap();
//! assert_eq!((component, command.name.as_str()), (Some("thermostat1"), "getMaxMinReport"));
//! ```

pub mod builtin;
pub mod model;
pub mod parse;
pub mod pnp;
pub mod telemetry;
pub mod values;

pub use model::{
    Command, CommandPayload, Component, DtdlVersion, EnumLiteral, EnumSchema, EnumValue, Field, Interface, Model,
    Primitive, Property, Schema, Semantics, Telemetry,
};
pub use parse::{ModelError, ModelErrorKind};
pub use pnp::{Ack, CommandError, CommandName, DesiredPatch, DesiredUpdate};
pub use telemetry::{order_extremes, telemetry_plans, value_config, TelemetryPlan};
pub use values::{default_value, validate, ValueError};
