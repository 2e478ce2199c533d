//! The public IoT Plug and Play samples (tests/data, MIT, see its license note) and the built-in models load.

use hubsim_dtdl::{builtin, DtdlVersion, Model, Primitive, Schema};

const THERMOSTAT_1: &str = include_str!("data/thermostat-1.json");
const THERMOSTAT_2: &str = include_str!("data/thermostat-2.json");
const CONTROLLER_2: &str = include_str!("data/temperaturecontroller-2.json");
const DEVICE_INFO: &str = include_str!("data/deviceinformation-1.json");

#[test]
fn public_thermostat_loads() {
    let m = Model::parse(THERMOSTAT_1).unwrap();
    assert_eq!((m.id(), m.version), ("dtmi:com:example:Thermostat;1", DtdlVersion::V2));
    let t = &m.root.telemetry[0];
    assert_eq!((t.name.as_str(), &t.schema), ("temperature", &Schema::Primitive(Primitive::Double)));
    assert_eq!(
        (t.semantics.types.as_slice(), t.semantics.unit.as_deref()),
        (&["Temperature".to_owned()][..], Some("degreeCelsius"))
    );
    let names: Vec<(&str, bool)> = m.root.properties.iter().map(|p| (p.name.as_str(), p.writable)).collect();
    assert_eq!(names, [("targetTemperature", true), ("maxTempSinceLastReboot", false)]);
    let cmd = m.root.command("getMaxMinReport").unwrap();
    assert_eq!(cmd.request.as_ref().unwrap().schema, Schema::Primitive(Primitive::DateTime));
    let Schema::Object(fields) = &cmd.response.as_ref().unwrap().schema else { panic!("response is an Object") };
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["maxTemp", "minTemp", "avgTemp", "startTime", "endTime"]);
}

#[test]
fn public_temperature_controller_loads_with_its_dependencies() {
    let m = Model::parse_with(CONTROLLER_2, &[THERMOSTAT_1, THERMOSTAT_2, DEVICE_INFO]).unwrap();
    assert_eq!(m.id(), "dtmi:com:example:TemperatureController;2");
    // Language-map display names: the "en" entry.
    assert_eq!(m.root.display_name.as_deref(), Some("Temperature Controller"));
    let comps: Vec<(&str, &str)> =
        m.root.components.iter().map(|c| (c.name.as_str(), c.interface.id.as_str())).collect();
    assert_eq!(
        comps,
        [
            ("thermostat1", "dtmi:com:example:Thermostat;1"),
            ("thermostat2", "dtmi:com:example:Thermostat;2"),
            ("deviceInformation", "dtmi:azure:DeviceManagement:DeviceInformation;1"),
        ]
    );
    assert_eq!(m.interface(Some("deviceInformation")).unwrap().properties.len(), 8);
    assert_eq!(
        m.root.command("reboot").unwrap().request.as_ref().unwrap().schema,
        Schema::Primitive(Primitive::Integer)
    );
}

#[test]
fn public_samples_load_as_one_array_in_any_order() {
    let doc = format!("[{THERMOSTAT_2},{DEVICE_INFO},{CONTROLLER_2},{THERMOSTAT_1}]");
    let m = Model::parse(&doc).unwrap();
    assert_eq!(m.id(), "dtmi:com:example:TemperatureController;2", "the interface no other one uses");
    assert_eq!(m.root.components.len(), 3);
}

#[test]
fn dependencies_may_repeat_what_the_document_defines() {
    let doc = format!("[{CONTROLLER_2},{THERMOSTAT_1}]");
    let m = Model::parse_with(&doc, &[THERMOSTAT_1, THERMOSTAT_2, DEVICE_INFO, THERMOSTAT_2]).unwrap();
    assert_eq!(m.root.components.len(), 3);
    let twice = format!("[{THERMOSTAT_1},{THERMOSTAT_1}]");
    assert_eq!(
        Model::parse(&twice).unwrap_err().to_string(),
        r#"dtmi:com:example:Thermostat;1: interface "dtmi:com:example:Thermostat;1" is defined twice"#
    );
}

#[test]
fn a_missing_dependency_is_named() {
    let e = Model::parse_with(CONTROLLER_2, &[THERMOSTAT_1, DEVICE_INFO]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dtmi:com:example:TemperatureController;2, contents[4] (Component \"thermostat2\"): \
         interface \"dtmi:com:example:Thermostat;2\" is not in the document or the given models"
    );
}

#[test]
fn builtin_models_load() {
    for b in builtin::ALL {
        let m = b.load().unwrap_or_else(|e| panic!("{}: {e}", b.key));
        assert!(m.id().starts_with("dtmi:hubsim:example:"), "{}", b.key);
        assert_eq!(builtin::find(b.key), Some(b));
    }
    let tc = builtin::TEMPERATURE_CONTROLLER.load().unwrap();
    let comps: Vec<&str> = tc.root.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(comps, ["thermostat1", "thermostat2", "deviceInformation"]);
    assert_eq!(tc.interface(Some("thermostat2")).unwrap().id, "dtmi:hubsim:example:Thermostat;1");
}
