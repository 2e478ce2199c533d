//! Reading DTDL JSON into a [`Model`], with errors that name the element and the reason.
//!
//! What is read, per the DTDL v2 and v3 language specs (opendigitaltwins-dtdl `DTDL/v2/DTDL.v2.md`,
//! `DTDL/v3/DTDL.v3.md`), in our words:
//! - A document is one Interface object or an array of them (the form the public samples ship with their
//!   dependencies). `@context` must name DTDL 2 or 3 (section "Context"); an Interface without one takes the
//!   first context of its document ("required at least once in the doc"). Extension contexts (IoT Central,
//!   QuantitativeTypes) may sit beside it; the spec wants the DTDL context first, but public IoT Central
//!   samples list it second, so its position is not checked.
//! - `@id` is a DTMI: `dtmi:` then `:`-separated segments of letters, digits and `_` (not starting with a
//!   digit, not ending with `_`), then `;version` (1 to 9 digits, no leading zero); v3 also allows no
//!   version or `major.minor` (section "Digital Twin Model Identifier").
//! - `contents` holds Telemetry, Property, Command, Component and Relationship elements (Relationships are
//!   skipped). `@type` may be an array: the class plus semantic co-types such as `Temperature`, kept for
//!   display with `unit` (v2 section "Semantic Type"; in v3 they come from the QuantitativeTypes extension).
//!   Undefined co-types are allowed (section "Undefined co-types and properties"), so units are not checked.
//! - `name`: letters, digits and `_`, starting with a letter, not ending with `_`; at most 64 characters in
//!   v2, 512 in v3; unique among an Interface's contents, an Object's fields and an Enum's values.
//! - Schemas are the ten primitives, or Array, Enum (`valueSchema` integer or string), Map (string keys) and
//!   Object, inline or by `@id` from the Interface's own `schemas` (not inherited, section "Interface
//!   schemas"); complex schemas nest at most 5 levels. DTDL v2 forbids Array anywhere in a Property's
//!   schema and empty Enums and Objects; v3 allows them ("Changes from Version 2").
//! - A Component's schema is an Interface (by DTMI, found in the same document or in the given
//!   dependencies, or inline); components do not nest ("a Component cannot contain another Component").
//! - `extends` (a DTMI, an inline Interface, or a list of them; at most 10 levels) prepends the base
//!   Interfaces' contents.
//! - `displayName` and `description` are localizable: a string, or a language map from which `en` (the
//!   default language) or else the first entry is taken.

use crate::model::*;
use hubsim_proto::json::{self, Object, Value};
use std::fmt;

/// How deep complex schemas may nest (DTDL v2 and v3, section "Complex schema").
pub const MAX_SCHEMA_DEPTH: usize = 5;
/// How deep `extends` may go (section "Interface").
pub const MAX_EXTENDS_DEPTH: usize = 10;

/// What is wrong with a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelErrorKind {
    #[error("not JSON: {0}")]
    Json(json::JsonError),
    #[error("a model is an Interface object or an array of Interfaces")]
    NotAModel,
    #[error("the document holds no Interface")]
    Empty,
    #[error("missing \"{0}\"")]
    Missing(&'static str),
    #[error("\"{field}\" must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("@context must name DTDL version 2 or 3 (\"dtmi:dtdl:context;2\" or \"dtmi:dtdl:context;3\"), found {0}")]
    Context(String),
    #[error("@type must be \"Interface\", found {0}")]
    NotInterface(String),
    #[error("\"{0}\" is not a DTMI (dtmi:<segments>;<version>)")]
    BadDtmi(String),
    #[error("interface \"{0}\" is defined twice")]
    DuplicateInterface(String),
    #[error("@type {0} is not Telemetry, Property, Command, Component or Relationship")]
    UnknownContentType(String),
    #[error("name \"{0}\" must start with a letter, end with a letter or digit, hold only letters, digits and '_', and have at most {1} characters")]
    BadName(String, usize),
    #[error("name \"{0}\" is used twice")]
    DuplicateName(String),
    #[error("schema \"{0}\" is not a DTDL schema")]
    UnknownSchema(String),
    #[error("schema \"{0}\" is not defined in this interface's \"schemas\"")]
    UndefinedSchema(String),
    #[error("schema \"{0}\" is a geospatial (GeoJSON) schema, which hubsim does not simulate")]
    Geospatial(String),
    #[error("@type {0} is not a complex schema (Array, Enum, Map or Object)")]
    UnknownComplexSchema(String),
    #[error("complex schemas nest deeper than {MAX_SCHEMA_DEPTH} levels")]
    TooDeep,
    #[error("DTDL v2 does not allow an Array in a Property's schema (v3 does)")]
    ArrayInV2Property,
    #[error("valueSchema must be \"integer\" or \"string\"")]
    EnumValueSchema,
    #[error("enumValue must be {0}, as the valueSchema says")]
    EnumValueType(&'static str),
    #[error("enumValue {0} is used twice")]
    DuplicateEnumValue(String),
    #[error("DTDL v2 needs at least one {0}")]
    EmptyV2(&'static str),
    #[error("the schema of a mapKey must be \"string\"")]
    MapKeyNotString,
    #[error("interface \"{0}\" is not in the document or the given models")]
    UnresolvedInterface(String),
    #[error("a component's interface cannot have components itself (components do not nest)")]
    NestedComponent,
    #[error("\"extends\" loops back to \"{0}\"")]
    ExtendsCycle(String),
    #[error("\"extends\" is nested deeper than {MAX_EXTENDS_DEPTH} levels")]
    ExtendsTooDeep,
}

/// A model error: where (`contents[2] (Property "targetTemperature")`, prefixed by the interface's DTMI
/// when the document holds several) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    pub at: String,
    pub kind: ModelErrorKind,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.at, self.kind)
        }
    }
}

impl std::error::Error for ModelError {}

fn err<T>(at: &str, kind: ModelErrorKind) -> Result<T, ModelError> {
    Err(ModelError { at: at.to_owned(), kind })
}

impl Model {
    /// Parses a model document whose components are all defined in it.
    pub fn parse(text: &str) -> Result<Model, ModelError> {
        Model::parse_with(text, &[])
    }

    /// Parses a model document; component and `extends` interfaces not in it are looked up in
    /// `dependencies` (each one document: an Interface or an array; an interface already defined earlier is
    /// skipped). The device's interface is the first one of `text` that no other interface of `text` uses as a
    /// component or base.
    pub fn parse_with(text: &str, dependencies: &[&str]) -> Result<Model, ModelError> {
        let main = read(text, "")?;
        let mut deps: Vec<Value> = Vec::with_capacity(dependencies.len());
        for (i, d) in dependencies.iter().enumerate() {
            deps.push(read(d, &format!("dependencies[{i}]"))?);
        }
        let mut raws = Vec::new();
        collect(&main, "", &mut raws)?;
        let main_count = raws.len();
        for (i, d) in deps.iter().enumerate() {
            collect(d, &format!("dependencies[{i}]"), &mut raws)?;
        }
        if main_count == 0 {
            return err("", ModelErrorKind::Empty);
        }
        // A dependency may repeat an interface the document (or an earlier dependency) defines: the first
        // definition is used. Within the document itself, a repeated id is an error.
        let mut i = main_count;
        while i < raws.len() {
            if raws[..i].iter().any(|r| r.id == raws[i].id) {
                raws.remove(i);
            } else {
                i += 1;
            }
        }
        let several = raws.len() > 1;
        for i in 0..raws.len() {
            if several {
                raws[i].label = format!("{}, ", raws[i].id);
            }
            if raws[..i].iter().any(|r| r.id == raws[i].id) {
                return err(raws[i].at(), ModelErrorKind::DuplicateInterface(raws[i].id.clone()));
            }
        }
        let mut used: Vec<&str> = Vec::new();
        for r in &raws[..main_count] {
            used.extend(referenced(r.obj));
        }
        let root = raws[..main_count].iter().find(|r| !used.contains(&r.id.as_str())).unwrap_or(&raws[0]);
        let reader = Reader { raws: &raws };
        let root_iface = reader.interface(root, true, &mut Vec::new())?;
        Ok(Model { version: root.version, root: root_iface })
    }
}

fn read(text: &str, at: &str) -> Result<Value, ModelError> {
    json::parse(text).map_err(|e| ModelError { at: at.to_owned(), kind: ModelErrorKind::Json(e) })
}

/// An interface object as found in a document, before it is read.
struct Raw<'a> {
    obj: &'a Object,
    id: String,
    version: DtdlVersion,
    /// The IoT Central extension's context is present (`geopoint` and `vector` schemas).
    iot_central: bool,
    /// Error prefix: `"{id}, "` when there are several interfaces, else empty.
    label: String,
}

impl Raw<'_> {
    /// Where an error about the interface itself is: the label without its `", "`.
    fn at(&self) -> &str {
        self.label.strip_suffix(", ").unwrap_or(&self.label)
    }
}

/// Finds the interfaces of a document and checks their `@context`, `@type` and `@id`.
fn collect<'a>(doc: &'a Value, doc_at: &str, out: &mut Vec<Raw<'a>>) -> Result<(), ModelError> {
    let items: Vec<(String, &Value)> = match doc {
        Value::Object(_) => vec![(doc_at.to_owned(), doc)],
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                list.push((format!("{doc_at}[{i}]"), v));
            }
            list
        }
        _ => return err(doc_at, ModelErrorKind::NotAModel),
    };
    let doc_context = items.iter().find_map(|(_, v)| v.get("@context"));
    for (at, v) in items {
        let Some(obj) = v.as_object() else { return err(&at, ModelErrorKind::NotAModel) };
        let Some(context) = obj.get("@context").or(doc_context) else {
            return err(&at, ModelErrorKind::Missing("@context"));
        };
        let version = context_version(context).map_err(|kind| ModelError { at: at.clone(), kind })?;
        let iot_central = match context {
            Value::Array(a) => a.iter().any(|c| c.as_str() == Some(IOT_CENTRAL_CONTEXT)),
            c => c.as_str() == Some(IOT_CENTRAL_CONTEXT),
        };
        out.push(Raw { obj, id: interface_id(obj, &at, version)?, version, iot_central, label: String::new() });
    }
    Ok(())
}

/// The IoT Central extension (DTDL/v2/DTDL.iotcentral.v2.md) adds the schemas `geopoint` (`lat`, `lon`, `alt`)
/// and `vector` (`x`, `y`, `z`), all doubles (Plug and Play payloads doc, "Complex types").
const IOT_CENTRAL_CONTEXT: &str = "dtmi:iotcentral:context;2";

/// The geospatial schema terms (DTDL v2/v3, section "Geospatial Schemas"); their IRIs start with
/// `dtmi:standard:schema:geospatial:`.
const GEOSPATIAL: [&str; 6] = ["point", "multiPoint", "lineString", "multiLineString", "polygon", "multiPolygon"];

fn doubles(names: &[&str]) -> Schema {
    let mut fields = Vec::with_capacity(names.len());
    for n in names {
        fields.push(Field { name: (*n).to_owned(), display_name: None, schema: Schema::Primitive(Primitive::Double) });
    }
    Schema::Object(fields)
}

fn context_version(c: &Value) -> Result<DtdlVersion, ModelErrorKind> {
    let list = match c {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    for item in list {
        match item.as_str() {
            Some("dtmi:dtdl:context;2") => return Ok(DtdlVersion::V2),
            Some("dtmi:dtdl:context;3") => return Ok(DtdlVersion::V3),
            _ => {}
        }
    }
    Err(ModelErrorKind::Context(c.to_string()))
}

/// Checks `@type` is Interface and returns the `@id`.
fn interface_id(obj: &Object, at: &str, version: DtdlVersion) -> Result<String, ModelError> {
    let types = type_list(obj.get("@type"));
    if !types.contains(&"Interface") {
        let found = obj.get("@type").map_or_else(|| "nothing".to_owned(), Value::to_string);
        return err(at, ModelErrorKind::NotInterface(found));
    }
    match obj.get("@id") {
        None => err(at, ModelErrorKind::Missing("@id")),
        Some(Value::String(id)) if is_dtmi(id, version) && id.len() <= 128 => Ok(id.clone()),
        Some(Value::String(id)) => err(at, ModelErrorKind::BadDtmi(id.clone())),
        Some(_) => err(at, ModelErrorKind::WrongType { field: "@id", expected: "a string" }),
    }
}

/// DTMIs this interface names as a component schema or a base.
fn referenced(obj: &Object) -> Vec<&str> {
    let mut out = type_list(obj.get("extends"));
    for c in obj.get("contents").and_then(Value::as_array).unwrap_or_default() {
        if type_list(c.get("@type")).contains(&"Component") {
            out.extend(c.get("schema").and_then(Value::as_str));
        }
    }
    out
}

/// `@type` as a list of strings (a string or an array of strings; anything else gives nothing).
fn type_list(t: Option<&Value>) -> Vec<&str> {
    let mut out = Vec::new();
    match t {
        Some(Value::String(s)) => out.push(s.as_str()),
        Some(Value::Array(a)) => {
            for v in a {
                out.extend(v.as_str());
            }
        }
        _ => {}
    }
    out
}

/// A DTMI per DTDL v2/v3 section "Digital Twin Model Identifier".
pub fn is_dtmi(s: &str, version: DtdlVersion) -> bool {
    let Some(rest) = s.strip_prefix("dtmi:") else { return false };
    let (path, ver) = match rest.split_once(';') {
        Some((p, v)) => (p, Some(v)),
        None => (rest, None),
    };
    let number =
        |n: &str| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0');
    let version_ok = match (ver, version) {
        (Some(v), DtdlVersion::V2) => number(v),
        (Some(v), DtdlVersion::V3) => match v.split_once('.') {
            Some((major, minor)) => number(major) && minor.len() <= 6 && (minor == "0" || number(minor)),
            None => number(v),
        },
        (None, DtdlVersion::V2) => false,
        (None, DtdlVersion::V3) => true,
    };
    version_ok
        && path.split(':').all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && !b[0].is_ascii_digit()
                && b[b.len() - 1] != b'_'
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        })
}

/// A `name` per DTDL v2/v3 (letters, digits, `_`; a letter first; not `_` last).
fn check_name(v: Option<&Value>, at: &str, version: DtdlVersion) -> Result<String, ModelError> {
    let max = match version {
        DtdlVersion::V2 => 64,
        DtdlVersion::V3 => 512,
    };
    match v {
        None => err(at, ModelErrorKind::Missing("name")),
        Some(Value::String(s)) => {
            let b = s.as_bytes();
            let ok = !b.is_empty()
                && b.len() <= max
                && b[0].is_ascii_alphabetic()
                && b[b.len() - 1] != b'_'
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if ok {
                Ok(s.clone())
            } else {
                err(at, ModelErrorKind::BadName(s.clone(), max))
            }
        }
        Some(_) => err(at, ModelErrorKind::WrongType { field: "name", expected: "a string" }),
    }
}

/// The path of member `i` of the list `list` under `at` (`….fields[1] ("x")`) and its checked name, which
/// `taken` must not already hold.
fn member(
    at: &str,
    list: &str,
    i: usize,
    v: &Value,
    version: DtdlVersion,
    taken: impl Fn(&str) -> bool,
) -> Result<(String, String), ModelError> {
    let mut here = format!("{at}.{list}[{i}]");
    if let Some(n) = v.get("name").and_then(Value::as_str) {
        here.push_str(" (\"");
        here.push_str(n);
        here.push_str("\")");
    }
    let name = check_name(v.get("name"), &here, version)?;
    if taken(&name) {
        return err(&here, ModelErrorKind::DuplicateName(name));
    }
    Ok((here, name))
}

/// A localizable string: the string, or the `en` (else first) entry of a language map.
fn localized(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            o.get("en").or_else(|| o.iter().next().map(|(_, v)| v)).and_then(Value::as_str).map(str::to_owned)
        }
        _ => None,
    }
}

fn semantics(types: &[&str], class: &str, obj: &Object) -> Semantics {
    let mut co_types = Vec::new();
    for t in types {
        if *t != class {
            co_types.push((*t).to_owned());
        }
    }
    Semantics { types: co_types, unit: obj.get("unit").and_then(Value::as_str).map(str::to_owned) }
}

struct Reader<'r, 'a> {
    raws: &'r [Raw<'a>],
}

/// Where schema references resolve and what the surrounding element allows.
struct Env<'a> {
    version: DtdlVersion,
    iot_central: bool,
    /// The interface's `schemas`: (`@id`, definition, error path).
    schemas: Vec<(&'a str, &'a Value, String)>,
    /// Inside a Property's schema (DTDL v2 forbids Array there).
    in_property: bool,
}

const CLASSES: [&str; 5] = ["Telemetry", "Property", "Command", "Component", "Relationship"];

impl<'a> Reader<'_, 'a> {
    fn find(&self, id: &str) -> Option<&Raw<'a>> {
        self.raws.iter().find(|r| r.id == id)
    }

    fn interface(
        &self,
        raw: &Raw<'a>,
        allow_components: bool,
        bases: &mut Vec<String>,
    ) -> Result<Interface, ModelError> {
        let obj = raw.obj;
        let at = raw.at();
        let mut iface = Interface {
            id: raw.id.clone(),
            display_name: localized(obj.get("displayName")),
            description: localized(obj.get("description")),
            telemetry: Vec::new(),
            properties: Vec::new(),
            commands: Vec::new(),
            components: Vec::new(),
        };
        let mut names: Vec<String> = Vec::new();

        // Inherited contents first.
        let bases_of = match obj.get("extends") {
            None => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(one) => std::slice::from_ref(one),
        };
        for base in bases_of {
            let base_raw;
            let base_ref = match base {
                Value::String(id) => self.find(id).ok_or_else(|| ModelError {
                    at: format!("{}extends", raw.label),
                    kind: ModelErrorKind::UnresolvedInterface(id.clone()),
                })?,
                Value::Object(o) => {
                    let here = format!("{}extends", raw.label);
                    base_raw = Raw {
                        obj: o,
                        id: interface_id(o, &here, raw.version)?,
                        version: raw.version,
                        iot_central: raw.iot_central,
                        label: raw.label.clone(),
                    };
                    &base_raw
                }
                _ => {
                    return err(
                        &format!("{}extends", raw.label),
                        ModelErrorKind::WrongType {
                            field: "extends",
                            expected: "a DTMI, an Interface or a list of them",
                        },
                    )
                }
            };
            if base_ref.id == raw.id || bases.contains(&base_ref.id) {
                return err(&format!("{}extends", raw.label), ModelErrorKind::ExtendsCycle(base_ref.id.clone()));
            }
            if bases.len() >= MAX_EXTENDS_DEPTH {
                return err(&format!("{}extends", raw.label), ModelErrorKind::ExtendsTooDeep);
            }
            bases.push(raw.id.clone());
            let inherited = self.interface(base_ref, allow_components, bases)?;
            bases.pop();
            for t in &inherited.telemetry {
                names.push(t.name.clone());
            }
            for p in &inherited.properties {
                names.push(p.name.clone());
            }
            for c in &inherited.commands {
                names.push(c.name.clone());
            }
            for c in &inherited.components {
                names.push(c.name.clone());
            }
            iface.telemetry.extend(inherited.telemetry);
            iface.properties.extend(inherited.properties);
            iface.commands.extend(inherited.commands);
            iface.components.extend(inherited.components);
        }

        let mut env =
            Env { version: raw.version, iot_central: raw.iot_central, schemas: Vec::new(), in_property: false };
        match obj.get("schemas") {
            None => {}
            Some(Value::Array(list)) => {
                for (i, s) in list.iter().enumerate() {
                    let here = format!("{}schemas[{i}]", raw.label);
                    match s.get("@id") {
                        Some(Value::String(id)) => env.schemas.push((id.as_str(), s, here)),
                        Some(_) => {
                            return err(&here, ModelErrorKind::WrongType { field: "@id", expected: "a DTMI string" })
                        }
                        None => return err(&here, ModelErrorKind::Missing("@id")),
                    }
                }
            }
            Some(_) => return err(at, ModelErrorKind::WrongType { field: "schemas", expected: "an array" }),
        }

        let contents = match obj.get("contents") {
            None => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => return err(at, ModelErrorKind::WrongType { field: "contents", expected: "an array" }),
        };
        for (i, c) in contents.iter().enumerate() {
            let mut here = format!("{}contents[{i}]", raw.label);
            let Some(co) = c.as_object() else {
                return err(&here, ModelErrorKind::WrongType { field: "contents", expected: "an array of objects" });
            };
            let types = type_list(co.get("@type"));
            let Some(class) = types.iter().copied().find(|t| CLASSES.contains(t)) else {
                let found = co.get("@type").map_or_else(|| "nothing".to_owned(), Value::to_string);
                return err(&here, ModelErrorKind::UnknownContentType(found));
            };
            here.push_str(" (");
            here.push_str(class);
            if let Some(n) = co.get("name").and_then(Value::as_str) {
                here.push_str(" \"");
                here.push_str(n);
                here.push('"');
            }
            here.push(')');
            if class == "Relationship" {
                continue;
            }
            let name = check_name(co.get("name"), &here, raw.version)?;
            if names.contains(&name) {
                return err(&here, ModelErrorKind::DuplicateName(name));
            }
            names.push(name.clone());
            let display_name = localized(co.get("displayName"));
            let description = localized(co.get("description"));
            match class {
                "Telemetry" => {
                    env.in_property = false;
                    let schema = self.schema(co.get("schema"), "schema", &here, &env, 0)?;
                    let semantics = semantics(&types, class, co);
                    iface.telemetry.push(Telemetry { name, display_name, description, schema, semantics });
                }
                "Property" => {
                    env.in_property = true;
                    let schema = self.schema(co.get("schema"), "schema", &here, &env, 0)?;
                    let writable = match co.get("writable") {
                        None => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => {
                            return err(
                                &here,
                                ModelErrorKind::WrongType { field: "writable", expected: "true or false" },
                            )
                        }
                    };
                    let semantics = semantics(&types, class, co);
                    iface.properties.push(Property { name, display_name, description, schema, writable, semantics });
                }
                "Command" => {
                    env.in_property = false;
                    let request = self.payload(co.get("request"), &format!("{here}.request"), &env)?;
                    let response = self.payload(co.get("response"), &format!("{here}.response"), &env)?;
                    iface.commands.push(Command { name, display_name, description, request, response });
                }
                _ => {
                    if !allow_components {
                        return err(&here, ModelErrorKind::NestedComponent);
                    }
                    let inline;
                    let target = match co.get("schema") {
                        None => return err(&here, ModelErrorKind::Missing("schema")),
                        Some(Value::String(id)) => self.find(id).ok_or_else(|| ModelError {
                            at: here.clone(),
                            kind: ModelErrorKind::UnresolvedInterface(id.clone()),
                        })?,
                        Some(Value::Object(o)) => {
                            let inner = format!("{here}.schema");
                            inline = Raw {
                                obj: o,
                                id: interface_id(o, &inner, raw.version)?,
                                version: raw.version,
                                iot_central: raw.iot_central,
                                label: format!("{inner}, "),
                            };
                            &inline
                        }
                        Some(_) => {
                            return err(
                                &here,
                                ModelErrorKind::WrongType {
                                    field: "schema",
                                    expected: "an Interface DTMI or an Interface",
                                },
                            )
                        }
                    };
                    let interface = self.interface(target, false, &mut Vec::new())?;
                    iface.components.push(Component { name, display_name, interface });
                }
            }
        }
        Ok(iface)
    }

    fn payload(&self, v: Option<&Value>, at: &str, env: &Env<'a>) -> Result<Option<CommandPayload>, ModelError> {
        let Some(v) = v else { return Ok(None) };
        let Some(o) = v.as_object() else {
            return err(at, ModelErrorKind::WrongType { field: "request/response", expected: "an object" });
        };
        let name = check_name(o.get("name"), at, env.version)?;
        let schema = self.schema(o.get("schema"), "schema", at, env, 0)?;
        Ok(Some(CommandPayload { name, display_name: localized(o.get("displayName")), schema }))
    }

    /// The schema under `key` of the element at `holder`; `depth` complex schemas enclose it.
    fn schema(
        &self,
        v: Option<&Value>,
        key: &'static str,
        holder: &str,
        env: &Env<'a>,
        depth: usize,
    ) -> Result<Schema, ModelError> {
        match v {
            None => err(holder, ModelErrorKind::Missing(key)),
            Some(Value::String(s)) => {
                if let Some(p) = Primitive::from_name(s) {
                    return Ok(Schema::Primitive(p));
                }
                if let Some((_, def, at)) = env.schemas.iter().find(|(id, _, _)| id == s) {
                    let o = def.as_object().ok_or_else(|| ModelError {
                        at: at.clone(),
                        kind: ModelErrorKind::WrongType { field: "schemas", expected: "an array of objects" },
                    })?;
                    return self.complex(o, at, env, depth);
                }
                match s.as_str() {
                    "geopoint" if env.iot_central => return Ok(doubles(&["lat", "lon", "alt"])),
                    "vector" if env.iot_central => return Ok(doubles(&["x", "y", "z"])),
                    _ => {}
                }
                if GEOSPATIAL.contains(&s.as_str()) || s.starts_with("dtmi:standard:schema:geospatial:") {
                    err(holder, ModelErrorKind::Geospatial(s.clone()))
                } else if s.starts_with("dtmi:") {
                    err(holder, ModelErrorKind::UndefinedSchema(s.clone()))
                } else {
                    err(holder, ModelErrorKind::UnknownSchema(s.clone()))
                }
            }
            Some(Value::Object(o)) => self.complex(o, &format!("{holder}.{key}"), env, depth),
            Some(_) => {
                err(holder, ModelErrorKind::WrongType { field: key, expected: "a schema name or a schema object" })
            }
        }
    }

    fn complex(&self, o: &Object, at: &str, env: &Env<'a>, depth: usize) -> Result<Schema, ModelError> {
        if depth >= MAX_SCHEMA_DEPTH {
            return err(at, ModelErrorKind::TooDeep);
        }
        let types = type_list(o.get("@type"));
        let Some(kind) = types.iter().copied().find(|t| ["Array", "Enum", "Map", "Object"].contains(t)) else {
            return match o.get("@type") {
                None => err(at, ModelErrorKind::Missing("@type")),
                Some(t) => err(at, ModelErrorKind::UnknownComplexSchema(t.to_string())),
            };
        };
        let v2 = env.version == DtdlVersion::V2;
        match kind {
            "Array" => {
                if v2 && env.in_property {
                    return err(at, ModelErrorKind::ArrayInV2Property);
                }
                let element = self.schema(o.get("elementSchema"), "elementSchema", at, env, depth + 1)?;
                Ok(Schema::Array(Box::new(element)))
            }
            "Map" => {
                let key_at = format!("{at}.mapKey");
                let Some(key) = o.get("mapKey").and_then(Value::as_object) else {
                    return err(at, ModelErrorKind::Missing("mapKey"));
                };
                let key_name = check_name(key.get("name"), &key_at, env.version)?;
                if key.get("schema").and_then(Value::as_str) != Some("string") {
                    return err(&key_at, ModelErrorKind::MapKeyNotString);
                }
                let value_at = format!("{at}.mapValue");
                let Some(value) = o.get("mapValue").and_then(Value::as_object) else {
                    return err(at, ModelErrorKind::Missing("mapValue"));
                };
                let value_name = check_name(value.get("name"), &value_at, env.version)?;
                let value = self.schema(value.get("schema"), "schema", &value_at, env, depth + 1)?;
                Ok(Schema::Map { key_name, value_name, value: Box::new(value) })
            }
            "Object" => {
                let fields = match o.get("fields") {
                    Some(Value::Array(a)) => a,
                    Some(_) => return err(at, ModelErrorKind::WrongType { field: "fields", expected: "an array" }),
                    None => return err(at, ModelErrorKind::Missing("fields")),
                };
                if v2 && fields.is_empty() {
                    return err(at, ModelErrorKind::EmptyV2("field in an Object"));
                }
                let mut out: Vec<Field> = Vec::with_capacity(fields.len());
                for (i, f) in fields.iter().enumerate() {
                    let (here, name) = member(at, "fields", i, f, env.version, |n| out.iter().any(|x| x.name == n))?;
                    let schema = self.schema(f.get("schema"), "schema", &here, env, depth + 1)?;
                    out.push(Field { name, display_name: localized(f.get("displayName")), schema });
                }
                Ok(Schema::Object(out))
            }
            _ => {
                let string_values = match o.get("valueSchema").and_then(Value::as_str) {
                    Some("integer") => false,
                    Some("string") => true,
                    Some(_) => return err(at, ModelErrorKind::EnumValueSchema),
                    None => return err(at, ModelErrorKind::Missing("valueSchema")),
                };
                let values = match o.get("enumValues") {
                    Some(Value::Array(a)) => a,
                    Some(_) => return err(at, ModelErrorKind::WrongType { field: "enumValues", expected: "an array" }),
                    None => return err(at, ModelErrorKind::Missing("enumValues")),
                };
                if v2 && values.is_empty() {
                    return err(at, ModelErrorKind::EmptyV2("value in an Enum"));
                }
                let mut out: Vec<EnumValue> = Vec::with_capacity(values.len());
                for (i, ev) in values.iter().enumerate() {
                    let (here, name) =
                        member(at, "enumValues", i, ev, env.version, |n| out.iter().any(|x| x.name == n))?;
                    let value = match (ev.get("enumValue"), string_values) {
                        (None, _) => return err(&here, ModelErrorKind::Missing("enumValue")),
                        (Some(Value::String(s)), true) => EnumLiteral::Str(s.clone()),
                        (Some(v), false) if v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => {
                            EnumLiteral::Int(v.as_i64().unwrap_or_default())
                        }
                        (Some(_), true) => return err(&here, ModelErrorKind::EnumValueType("a string")),
                        (Some(_), false) => return err(&here, ModelErrorKind::EnumValueType("an integer")),
                    };
                    if out.iter().any(|x| x.value == value) {
                        return err(&here, ModelErrorKind::DuplicateEnumValue(value.to_json().to_string()));
                    }
                    out.push(EnumValue { name, display_name: localized(ev.get("displayName")), value });
                }
                Ok(Schema::Enum(EnumSchema { string_values, values: out }))
            }
        }
    }
}
