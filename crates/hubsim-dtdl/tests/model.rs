//! Parsing: components, every schema kind, inheritance, and malformed models with their exact messages.

use hubsim_dtdl::{builtin, DtdlVersion, EnumLiteral, Model, Primitive, Schema};

fn iface(context: &str, contents: &str) -> String {
    format!(
        r#"{{"@context": "{context}", "@id": "dtmi:test:Device;1", "@type": "Interface", "contents": [{contents}]}}"#
    )
}

fn v2(contents: &str) -> String {
    iface("dtmi:dtdl:context;2", contents)
}

fn error(doc: &str) -> String {
    Model::parse(doc).unwrap_err().to_string()
}

#[test]
fn two_components_in_one_document() {
    let doc = r#"[
      {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:Sensor;1", "@type": "Interface",
       "contents": [{"@type": "Telemetry", "name": "t", "schema": "double"}]},
      {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:Device;1", "@type": "Interface",
       "contents": [
         {"@type": "Component", "name": "left", "schema": "dtmi:test:Sensor;1"},
         {"@type": "Component", "name": "right", "schema": "dtmi:test:Sensor;1"},
         {"@type": "Property", "name": "serial", "schema": "string"}]}
    ]"#;
    let m = Model::parse(doc).unwrap();
    assert_eq!(m.id(), "dtmi:test:Device;1");
    let ifs: Vec<(Option<&str>, &str)> = m.interfaces().map(|(c, i)| (c, i.id.as_str())).collect();
    assert_eq!(
        ifs,
        [(None, "dtmi:test:Device;1"), (Some("left"), "dtmi:test:Sensor;1"), (Some("right"), "dtmi:test:Sensor;1")]
    );
    assert_eq!(m.interface(Some("right")).unwrap().telemetry[0].name, "t");
    assert!(m.interface(Some("middle")).is_none());
}

#[test]
fn every_schema_kind() {
    let m = builtin::EVERY_SCHEMA.load().unwrap();
    assert_eq!(m.version, DtdlVersion::V3);
    let kinds: Vec<String> = m.root.telemetry.iter().map(|t| format!("{}:{}", t.name, t.schema.describe())).collect();
    assert_eq!(
        kinds,
        [
            "flag:boolean",
            "day:date",
            "at:dateTime",
            "reading:double",
            "uptime:duration",
            "ratio:float",
            "count:integer",
            "total:long",
            "label:string",
            "clock:time",
            "mode:Enum of string",
            "level:Enum of integer",
            "position:Object",
            "loads:Map of double",
            "leds:Array of boolean",
        ]
    );
    let Schema::Enum(level) = &m.root.telemetry[11].schema else { panic!() };
    let values: Vec<(&str, &EnumLiteral)> = level.values.iter().map(|v| (v.name.as_str(), &v.value)).collect();
    assert_eq!(
        values,
        [("low", &EnumLiteral::Int(1)), ("medium", &EnumLiteral::Int(2)), ("high", &EnumLiteral::Int(3))]
    );
    // The Object of "position" comes from the interface's "schemas", and so does the property "home".
    assert_eq!(m.root.telemetry[12].schema, m.root.property("home").unwrap().schema);
    let Schema::Map { key_name, value_name, value } = &m.root.telemetry[13].schema else { panic!() };
    assert_eq!(
        (key_name.as_str(), value_name.as_str(), &**value),
        ("phase", "amps", &Schema::Primitive(Primitive::Double))
    );
    // DTDL v3 allows an Array inside a Property.
    let Schema::Object(f) = &m.root.property("settings").unwrap().schema else { panic!() };
    assert_eq!(f[2].schema, Schema::Array(Box::new(Schema::Primitive(Primitive::Integer))));
}

#[test]
fn extends_prepends_the_base_contents() {
    let doc = r#"[
      {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:Base;1", "@type": "Interface",
       "contents": [{"@type": "Property", "name": "serial", "schema": "string"}]},
      {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:Device;1", "@type": "Interface", "extends": "dtmi:test:Base;1",
       "contents": [{"@type": "Property", "name": "mode", "schema": "string"}]}
    ]"#;
    let m = Model::parse(doc).unwrap();
    let names: Vec<&str> = m.root.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!((m.id(), names), ("dtmi:test:Device;1", vec!["serial", "mode"]));
}

#[test]
fn relationships_and_unknown_co_types_are_accepted() {
    let doc = v2(r#"{"@type": "Relationship", "name": "contains"},
        {"@type": ["Property", "Commercial"], "name": "brand", "schema": "string", "brand": "x"}"#);
    let m = Model::parse(&doc).unwrap();
    assert_eq!(m.root.properties[0].semantics.types, ["Commercial"]);
}

#[test]
fn malformed_models_name_the_element_and_the_reason() {
    let p = |schema: &str| {
        v2(&format!(
            r#"{{"@type": "Telemetry", "name": "a", "schema": "double"}},
        {{"@type": "Telemetry", "name": "b", "schema": "double"}},
        {{"@type": "Property", "name": "targetTemperature", "schema": {schema}}}"#
        ))
    };
    let cases: Vec<(String, &str)> = vec![
        (p(r#""doubel""#), r#"contents[2] (Property "targetTemperature"): schema "doubel" is not a DTDL schema"#),
        (
            p(r#""dtmi:test:nothing;1""#),
            r#"contents[2] (Property "targetTemperature"): schema "dtmi:test:nothing;1" is not defined in this interface's "schemas""#,
        ),
        (
            p(r#"{"@type": "Array", "elementSchema": "double"}"#),
            r#"contents[2] (Property "targetTemperature").schema: DTDL v2 does not allow an Array in a Property's schema (v3 does)"#,
        ),
        (
            p(r#"{"@type": "Object", "fields": [{"name": "x", "schema": "double"}, {"name": "x", "schema": "long"}]}"#),
            r#"contents[2] (Property "targetTemperature").schema.fields[1] ("x"): name "x" is used twice"#,
        ),
        (
            p(r#"{"@type": "Object", "fields": [{"name": "x", "schema": "tiny"}]}"#),
            r#"contents[2] (Property "targetTemperature").schema.fields[0] ("x"): schema "tiny" is not a DTDL schema"#,
        ),
        (
            p(r#"{"@type": "Enum", "valueSchema": "double", "enumValues": []}"#),
            r#"contents[2] (Property "targetTemperature").schema: valueSchema must be "integer" or "string""#,
        ),
        (
            p(r#"{"@type": "Enum", "valueSchema": "integer", "enumValues": [{"name": "a", "enumValue": "x"}]}"#),
            r#"contents[2] (Property "targetTemperature").schema.enumValues[0] ("a"): enumValue must be an integer, as the valueSchema says"#,
        ),
        (
            p(r#"{"@type": "Enum", "valueSchema": "string", "enumValues": []}"#),
            r#"contents[2] (Property "targetTemperature").schema: DTDL v2 needs at least one value in an Enum"#,
        ),
        (
            p(
                r#"{"@type": "Map", "mapKey": {"name": "k", "schema": "integer"}, "mapValue": {"name": "v", "schema": "string"}}"#,
            ),
            r#"contents[2] (Property "targetTemperature").schema.mapKey: the schema of a mapKey must be "string""#,
        ),
        (
            p(r#"{"@type": "Struct"}"#),
            r#"contents[2] (Property "targetTemperature").schema: @type "Struct" is not a complex schema (Array, Enum, Map or Object)"#,
        ),
        (p("42"), r#"contents[2] (Property "targetTemperature"): "schema" must be a schema name or a schema object"#),
        (v2(r#"{"@type": "Telemetry", "name": "t"}"#), r#"contents[0] (Telemetry "t"): missing "schema""#),
        (
            v2(r#"{"@type": "Telemtry", "name": "t", "schema": "double"}"#),
            r#"contents[0]: @type "Telemtry" is not Telemetry, Property, Command, Component or Relationship"#,
        ),
        (
            v2(r#"{"@type": "Property", "name": "2fast", "schema": "double"}"#),
            r#"contents[0] (Property "2fast"): name "2fast" must start with a letter, end with a letter or digit, hold only letters, digits and '_', and have at most 64 characters"#,
        ),
        (
            v2(r#"{"@type": "Property", "name": "a", "schema": "double"}, {"@type": "Command", "name": "a"}"#),
            r#"contents[1] (Command "a"): name "a" is used twice"#,
        ),
        (
            v2(r#"{"@type": "Property", "name": "a", "schema": "double", "writable": "yes"}"#),
            r#"contents[0] (Property "a"): "writable" must be true or false"#,
        ),
        (
            v2(r#"{"@type": "Command", "name": "go", "request": {"schema": "double"}}"#),
            r#"contents[0] (Command "go").request: missing "name""#,
        ),
        (
            v2(r#"{"@type": "Component", "name": "c", "schema": "dtmi:test:Other;1"}"#),
            r#"contents[0] (Component "c"): interface "dtmi:test:Other;1" is not in the document or the given models"#,
        ),
        (
            iface("dtmi:dtdl:context;1", ""),
            r#"@context must name DTDL version 2 or 3 ("dtmi:dtdl:context;2" or "dtmi:dtdl:context;3"), found "dtmi:dtdl:context;1""#,
        ),
        (
            r#"{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:X", "@type": "Interface"}"#.into(),
            r#""dtmi:test:X" is not a DTMI (dtmi:<segments>;<version>)"#,
        ),
        (
            r#"{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:X;1", "@type": "Telemetry"}"#.into(),
            r#"@type must be "Interface", found "Telemetry""#,
        ),
        (r#"{"@id": "dtmi:test:X;1", "@type": "Interface"}"#.into(), r#"missing "@context""#),
        ("[]".into(), "the document holds no Interface"),
        ("42".into(), "a model is an Interface object or an array of Interfaces"),
        ("{\"@context\": ".into(), "not JSON: line 1, col 14: unexpected end of input"),
    ];
    for (doc, want) in cases {
        assert_eq!(error(&doc), want, "{doc}");
    }
}

#[test]
fn errors_in_a_many_interface_document_start_with_the_interface() {
    let doc = r#"[
      {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:Inner;1", "@type": "Interface",
       "contents": [{"@type": "Component", "name": "deeper", "schema": "dtmi:test:Leaf;1"}]},
      {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:Leaf;1", "@type": "Interface"},
      {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:Device;1", "@type": "Interface",
       "contents": [{"@type": "Component", "name": "inner", "schema": "dtmi:test:Inner;1"}]}
    ]"#;
    assert_eq!(
        error(doc),
        r#"dtmi:test:Inner;1, contents[0] (Component "deeper"): a component's interface cannot have components itself (components do not nest)"#
    );
    let dup = r#"[{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:A;1", "@type": "Interface"},
                  {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:A;1", "@type": "Interface"}]"#;
    assert_eq!(error(dup), r#"dtmi:test:A;1: interface "dtmi:test:A;1" is defined twice"#);
    let cycle = r#"[{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:A;1", "@type": "Interface", "extends": "dtmi:test:B;1"},
                    {"@context": "dtmi:dtdl:context;2", "@id": "dtmi:test:B;1", "@type": "Interface", "extends": "dtmi:test:A;1"}]"#;
    assert_eq!(error(cycle), r#"dtmi:test:B;1, extends: "extends" loops back to "dtmi:test:A;1""#);
}

#[test]
fn schemas_nest_at_most_five_levels() {
    let mut schema = String::from(r#""double""#);
    for _ in 0..6 {
        schema = format!(r#"{{"@type": "Array", "elementSchema": {schema}}}"#);
    }
    let doc = v2(&format!(r#"{{"@type": "Telemetry", "name": "deep", "schema": {schema}}}"#));
    assert_eq!(
        error(&doc),
        r#"contents[0] (Telemetry "deep").schema.elementSchema.elementSchema.elementSchema.elementSchema.elementSchema: complex schemas nest deeper than 5 levels"#
    );
}

#[test]
fn dtmi_forms_per_version() {
    use hubsim_dtdl::parse::is_dtmi;
    for ok in ["dtmi:com:example:Thermostat;1", "dtmi:foo_bar:_16:baz33:qux;12"] {
        assert!(is_dtmi(ok, DtdlVersion::V2), "{ok}");
    }
    for bad in [
        "dtmi:com:example:Thermostat",
        "dtmi:com:example;01",
        "dtmi:1com;1",
        "dtmi:com_;1",
        "dtmi::a;1",
        "urn:a;1",
        "dtmi:a;1.2",
    ] {
        assert!(!is_dtmi(bad, DtdlVersion::V2), "{bad}");
    }
    for ok in ["dtmi:com:example:Thermostat", "dtmi:com:example;1.2"] {
        assert!(is_dtmi(ok, DtdlVersion::V3), "{ok}");
    }
}

#[test]
fn iot_central_schemas_and_geospatial_terms() {
    let doc = r#"{"@context": ["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"], "@id": "dtmi:test:D;1", "@type": "Interface",
        "contents": [{"@type": ["Telemetry", "Location"], "name": "where", "schema": "geopoint"},
                     {"@type": "Telemetry", "name": "accel", "schema": "vector"}]}"#;
    let m = Model::parse(doc).unwrap();
    let shapes: Vec<String> =
        m.root.telemetry.iter().map(|t| hubsim_dtdl::default_value(&t.schema).to_string()).collect();
    assert_eq!(shapes, [r#"{"lat":0.0,"lon":0.0,"alt":0.0}"#, r#"{"x":0.0,"y":0.0,"z":0.0}"#]);
    // Without the IoT Central context, "vector" is no schema; geospatial schemas are named as such.
    assert_eq!(
        error(&v2(r#"{"@type": "Telemetry", "name": "accel", "schema": "vector"}"#)),
        r#"contents[0] (Telemetry "accel"): schema "vector" is not a DTDL schema"#
    );
    assert_eq!(
        error(&v2(r#"{"@type": "Telemetry", "name": "at", "schema": "point"}"#)),
        r#"contents[0] (Telemetry "at"): schema "point" is a geospatial (GeoJSON) schema, which hubsim does not simulate"#
    );
}

#[test]
fn units_display_as_symbols() {
    let m = builtin::TEMPERATURE_CONTROLLER.load().unwrap();
    let unit = |c: Option<&str>| m.interface(c).unwrap().telemetry[0].semantics.unit_symbol().map(str::to_owned);
    assert_eq!((unit(None), unit(Some("thermostat1"))), (Some("KiB".into()), Some("°C".into())));
    let odd = hubsim_dtdl::Semantics { types: vec![], unit: Some("tonOfRefrigeration".into()) };
    assert_eq!(odd.unit_symbol(), Some("tonOfRefrigeration"));
    assert_eq!(hubsim_dtdl::Semantics::default().unit_symbol(), None);
}
