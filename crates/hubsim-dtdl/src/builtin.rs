//! Models that ship with hubsim, written for it in the style of the public Thermostat and
//! TemperatureController samples (same command and property names, so tools that know the samples feel at
//! home; our own ids under `dtmi:hubsim:`).

use crate::model::Model;
use crate::parse::ModelError;

/// A built-in model: a key for settings and the CLI, a title for menus, and the JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinModel {
    pub key: &'static str,
    pub title: &'static str,
    pub json: &'static str,
}

impl BuiltinModel {
    pub fn load(&self) -> Result<Model, ModelError> {
        Model::parse(self.json)
    }
}

/// A thermostat: temperature telemetry, a writable set point, a read-only maximum, a report command.
pub const THERMOSTAT: BuiltinModel =
    BuiltinModel { key: "thermostat", title: "Thermostat", json: include_str!("../models/thermostat.json") };

/// A controller with components `thermostat1`, `thermostat2` (the thermostat) and `deviceInformation`.
pub const TEMPERATURE_CONTROLLER: BuiltinModel = BuiltinModel {
    key: "temperature-controller",
    title: "Temperature controller (components)",
    json: include_str!("../models/temperature_controller.json"),
};

/// DTDL v3, one element per schema kind: the ten primitives, both Enums, Object (also from `schemas`),
/// Map and Array, in telemetry, writable properties and a command.
pub const EVERY_SCHEMA: BuiltinModel = BuiltinModel {
    key: "every-schema",
    title: "Every schema kind (DTDL v3)",
    json: include_str!("../models/every_schema.json"),
};

/// All built-in models, for menus.
pub const ALL: [BuiltinModel; 3] = [THERMOSTAT, TEMPERATURE_CONTROLLER, EVERY_SCHEMA];

/// The built-in model with this key.
pub fn find(key: &str) -> Option<BuiltinModel> {
    ALL.into_iter().find(|m| m.key == key)
}
