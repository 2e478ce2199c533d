//! The parsed form of a DTDL model: an Interface with its Telemetry, Properties, Commands and resolved
//! Components, and the schemas of their values.
//!
//! Only what a simulated device needs is kept: names, display strings, schemas, `writable`, semantic
//! types and units. Identifiers of inner elements, comments and Relationships are dropped (a Relationship
//! links twins in Azure Digital Twins; it has no part in a device's messages).

/// The DTDL language version, from `@context` (DTDL v2 and v3, section "Context").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtdlVersion {
    V2,
    V3,
}

impl DtdlVersion {
    /// The context specifier that selects this version.
    pub fn context(self) -> &'static str {
        match self {
            DtdlVersion::V2 => "dtmi:dtdl:context;2",
            DtdlVersion::V3 => "dtmi:dtdl:context;3",
        }
    }
}

/// The primitive schemas (DTDL v2 and v3, section "Primitive schema"; both versions have the same ten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    Boolean,
    /// RFC 3339 full-date, `2026-11-29`.
    Date,
    /// RFC 3339 date-time, `2026-11-29T15:00:00Z`.
    DateTime,
    Double,
    /// ISO 8601 duration, `PT1H30M`.
    Duration,
    Float,
    /// Signed, 4 bytes.
    Integer,
    /// Signed, 8 bytes.
    Long,
    String,
    /// RFC 3339 partial-time, `15:00:00`.
    Time,
}

impl Primitive {
    pub const ALL: [Primitive; 10] = [
        Primitive::Boolean,
        Primitive::Date,
        Primitive::DateTime,
        Primitive::Double,
        Primitive::Duration,
        Primitive::Float,
        Primitive::Integer,
        Primitive::Long,
        Primitive::String,
        Primitive::Time,
    ];

    /// The name used in models (`dateTime`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Boolean => "boolean",
            Primitive::Date => "date",
            Primitive::DateTime => "dateTime",
            Primitive::Double => "double",
            Primitive::Duration => "duration",
            Primitive::Float => "float",
            Primitive::Integer => "integer",
            Primitive::Long => "long",
            Primitive::String => "string",
            Primitive::Time => "time",
        }
    }

    /// The primitive a model names; names are case-sensitive (JSON-LD, section "Conformance").
    pub fn from_name(name: &str) -> Option<Primitive> {
        Primitive::ALL.into_iter().find(|p| p.name() == name)
    }

    /// True for `double`, `float`, `integer` and `long`.
    pub fn is_numeric(self) -> bool {
        matches!(self, Primitive::Double | Primitive::Float | Primitive::Integer | Primitive::Long)
    }
}

/// The data type of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    Primitive(Primitive),
    /// Named fields, like a struct (section "Object").
    Object(Vec<Field>),
    /// Named values of one type (section "Enum").
    Enum(EnumSchema),
    /// String keys to values of one schema (section "Map"). The key and value names are metadata only.
    Map {
        key_name: String,
        value_name: String,
        value: Box<Schema>,
    },
    /// Elements of one schema (section "Array").
    Array(Box<Schema>),
}

impl Schema {
    /// A short description for messages and forms: `double`, `Object`, `Enum of integer`, `Map of string`...
    pub fn describe(&self) -> String {
        match self {
            Schema::Primitive(p) => p.name().to_owned(),
            Schema::Object(_) => "Object".to_owned(),
            Schema::Enum(e) => format!("Enum of {}", if e.string_values { "string" } else { "integer" }),
            Schema::Map { value, .. } => format!("Map of {}", value.describe()),
            Schema::Array(element) => format!("Array of {}", element.describe()),
        }
    }
}

/// A field of an Object schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub display_name: Option<String>,
    pub schema: Schema,
}

/// An Enum schema: `valueSchema` is `integer` or `string`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumSchema {
    /// True for `valueSchema: "string"`, false for `integer`.
    pub string_values: bool,
    pub values: Vec<EnumValue>,
}

/// One named value of an Enum.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumValue {
    pub name: String,
    pub display_name: Option<String>,
    /// The on-the-wire value: an integer or a string, as `valueSchema` says.
    pub value: EnumLiteral,
}

/// The on-the-wire value of an [`EnumValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnumLiteral {
    Int(i64),
    Str(String),
}

impl EnumLiteral {
    pub fn to_json(&self) -> hubsim_proto::json::Value {
        use hubsim_proto::json::{Number, Value};
        match self {
            EnumLiteral::Int(i) => Value::Number(Number::Int(*i)),
            EnumLiteral::Str(s) => Value::String(s.clone()),
        }
    }
}

/// What Telemetry, Properties, Fields and command payloads share for display: the semantic co-types
/// (`["Telemetry", "Temperature"]` gives `Temperature`) and the `unit`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Semantics {
    /// Co-types other than the element's class, in model order.
    pub types: Vec<String>,
    /// The `unit`, e.g. `degreeCelsius`.
    pub unit: Option<String>,
}

impl Semantics {
    /// The unit as a symbol for display (`degreeCelsius` gives `°C`); units without a common symbol give
    /// their DTDL name. Symbols are ours; the unit names are those of DTDL v2 "Semantic Type" and the v3
    /// QuantitativeTypes extension.
    pub fn unit_symbol(&self) -> Option<&str> {
        let unit = self.unit.as_deref()?;
        const SYMBOLS: &[(&str, &str)] = &[
            ("degreeCelsius", "°C"),
            ("degreeFahrenheit", "°F"),
            ("kelvin", "K"),
            ("percent", "%"),
            ("partsPerMillion", "ppm"),
            ("metre", "m"),
            ("kilometre", "km"),
            ("centimetre", "cm"),
            ("millimetre", "mm"),
            ("metrePerSecond", "m/s"),
            ("kilometrePerHour", "km/h"),
            ("pascal", "Pa"),
            ("kilopascal", "kPa"),
            ("millibar", "mbar"),
            ("hertz", "Hz"),
            ("volt", "V"),
            ("millivolt", "mV"),
            ("ampere", "A"),
            ("milliampere", "mA"),
            ("watt", "W"),
            ("kilowatt", "kW"),
            ("kilowattHour", "kWh"),
            ("joule", "J"),
            ("byte", "B"),
            ("kibibyte", "KiB"),
            ("mebibyte", "MiB"),
            ("gibibyte", "GiB"),
            ("kibibit", "Kibit"),
            ("second", "s"),
            ("millisecond", "ms"),
            ("minute", "min"),
            ("hour", "h"),
            ("lux", "lx"),
            ("gram", "g"),
            ("kilogram", "kg"),
            ("litre", "L"),
            ("newton", "N"),
            ("degreeOfArc", "°"),
            ("radian", "rad"),
            ("revolutionPerMinute", "rpm"),
            ("decibel", "dB"),
        ];
        Some(SYMBOLS.iter().find(|(name, _)| *name == unit).map_or(unit, |(_, symbol)| symbol))
    }
}

/// Data a device emits (section "Telemetry").
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub schema: Schema,
    pub semantics: Semantics,
}

/// State of a device, reported by it (read-only) or also set by the service (`writable`) (section "Property").
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub schema: Schema,
    pub writable: bool,
    pub semantics: Semantics,
}

/// An operation the service invokes (section "Command").
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub request: Option<CommandPayload>,
    pub response: Option<CommandPayload>,
}

/// A command's request or response: v2 CommandPayload, v3 CommandRequest/CommandResponse. The payload on
/// the wire is the value itself, not an object keyed by `name` (Plug and Play payloads doc, "Commands").
#[derive(Debug, Clone, PartialEq)]
pub struct CommandPayload {
    pub name: String,
    pub display_name: Option<String>,
    pub schema: Schema,
}

/// An Interface: the contents of a device or of one of its components (section "Interface").
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    /// The DTMI, e.g. `dtmi:com:example:Thermostat;1`.
    pub id: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// Contents inherited through `extends` come first, in the order of the `extends` list.
    pub telemetry: Vec<Telemetry>,
    pub properties: Vec<Property>,
    pub commands: Vec<Command>,
    /// Always empty inside a component: components cannot nest (section "Component").
    pub components: Vec<Component>,
}

impl Interface {
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }
    pub fn command(&self, name: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.name == name)
    }
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }
}

/// A Component: another Interface included by value under a name (section "Component").
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub display_name: Option<String>,
    pub interface: Interface,
}

/// A parsed model: the device's (root) Interface with its components resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub version: DtdlVersion,
    pub root: Interface,
}

impl Model {
    /// The model id a device announces (`model-id=` in the MQTT user name, `modelId` in DPS payloads).
    pub fn id(&self) -> &str {
        &self.root.id
    }

    /// The default component (`None`) and then each component, with its interface.
    pub fn interfaces(&self) -> impl Iterator<Item = (Option<&str>, &Interface)> {
        // Listed first, so that every caller's adapters work on a plain vector iterator (smaller code than a chain).
        let mut list = Vec::with_capacity(1 + self.root.components.len());
        list.push((None, &self.root));
        for c in &self.root.components {
            list.push((Some(c.name.as_str()), &c.interface));
        }
        list.into_iter()
    }

    /// The interface of a component (`None`: the default component).
    pub fn interface(&self, component: Option<&str>) -> Option<&Interface> {
        match component {
            None => Some(&self.root),
            Some(name) => self.root.component(name).map(|c| &c.interface),
        }
    }
}
