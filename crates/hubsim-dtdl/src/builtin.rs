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

/// `json` without the whitespace between its tokens (strings kept as written), evaluated at compile time: as many
/// of its bytes as `N` holds, and its length (so `N` 0 only measures it). The shipped text of a model is its
/// compact form, while the files under `models/` stay indented for reading.
const fn compact<const N: usize>(json: &str) -> ([u8; N], usize) {
    let (b, mut out, mut n) = (json.as_bytes(), [0u8; N], 0);
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < b.len() {
        let c = b[i];
        if in_string || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            if n < N {
                out[n] = c;
            }
            n += 1;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        }
        i += 1;
    }
    (out, n)
}

/// The compact text of the model file at `path` (relative to this file), as a `&'static str`.
macro_rules! model_file {
    ($path:literal) => {{
        const TEXT: &str = include_str!($path);
        const BYTES: ([u8; compact::<0>(TEXT).1], usize) = compact(TEXT);
        match std::str::from_utf8(&BYTES.0) {
            Ok(s) => s,
            Err(_) => panic!("a model file is not UTF-8"),
        }
    }};
}

impl BuiltinModel {
    pub fn load(&self) -> Result<Model, ModelError> {
        Model::parse(self.json)
    }
}

/// A thermostat: temperature telemetry, a writable set point, a read-only maximum, a report command.
pub const THERMOSTAT: BuiltinModel =
    BuiltinModel { key: "thermostat", title: "Thermostat", json: model_file!("../models/thermostat.json") };

/// A controller with components `thermostat1`, `thermostat2` (the thermostat) and `deviceInformation`.
pub const TEMPERATURE_CONTROLLER: BuiltinModel = BuiltinModel {
    key: "temperature-controller",
    title: "Temperature controller (components)",
    json: model_file!("../models/temperature_controller.json"),
};

/// DTDL v3, one element per schema kind: the ten primitives, both Enums, Object (also from `schemas`),
/// Map and Array, in telemetry, writable properties and a command.
pub const EVERY_SCHEMA: BuiltinModel = BuiltinModel {
    key: "every-schema",
    title: "Every schema kind (DTDL v3)",
    json: model_file!("../models/every_schema.json"),
};

/// All built-in models, for menus.
pub const ALL: [BuiltinModel; 3] = [THERMOSTAT, TEMPERATURE_CONTROLLER, EVERY_SCHEMA];

/// The built-in model with this key.
pub fn find(key: &str) -> Option<BuiltinModel> {
    ALL.into_iter().find(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each model's compact text is the JSON of its file, without a byte of whitespace between tokens.
    #[test]
    fn compact_texts_are_the_files_json() {
        let files = [
            include_str!("../models/thermostat.json"),
            include_str!("../models/temperature_controller.json"),
            include_str!("../models/every_schema.json"),
        ];
        for (m, file) in ALL.iter().zip(files) {
            assert_eq!(
                hubsim_proto::json::parse(m.json).unwrap(),
                hubsim_proto::json::parse(file).unwrap(),
                "{}",
                m.key
            );
            assert!(!m.json.contains(['\n', '\t']) && !m.json.contains("{ "), "{}", m.key);
            assert!(m.json.len() < file.len(), "{}", m.key);
        }
        let (text, n) = compact::<32>(r#"{ "a b": [1, "x\" y"] }"#);
        assert_eq!(&text[..n], br#"{"a b":[1,"x\" y"]}"#);
    }
}
