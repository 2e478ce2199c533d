//! Property bags: the `k1=v1&k2=v2` tail of telemetry and cloud-to-device topics (reference §4, §5).
//!
//! Names and values are percent-encoded ([`crate::percent`]). A name without `=` is a null value, `name=` an empty
//! string. Names that start with `$.` are system properties (`$.mid`, `$.ct`, …; `$` is usually sent as `%24`);
//! `iothub-ack` on a C2D message is also a system property. Everything else is an application property.
//!
//! Encoding never emits a raw character the hub could misread: only the RFC 3986 unreserved set is written
//! unencoded. Parsing accepts what the SDKs send (Node leaves `!'()*` unencoded; the docs write `$.ct` with a raw
//! `$`) and refuses anything else raw — an unencoded `#`, `+`, `/`, `:`, space or non-ASCII character makes the
//! real hub drop the connection, so the emulator treats it as malformed.

use core::fmt;
use thiserror::Error;

use crate::percent;

/// A system property a device or the hub may set, with its wire name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemProperty {
    MessageId,
    CorrelationId,
    UserId,
    ContentType,
    ContentEncoding,
    /// Absolute expiry time (ISO 8601).
    ExpiryTime,
    /// Creation time UTC (ISO 8601); downstream it becomes `iothub-creation-time-utc`.
    CreationTime,
    InterfaceId,
    To,
    OutputName,
    /// IoT Plug and Play component name (`$.sub`).
    ComponentName,
    /// Delivery acknowledgement requested for a C2D message (`iothub-ack`).
    Ack,
    /// Another `$.` name, kept verbatim (without the `$.`).
    Other(String),
}

impl SystemProperty {
    /// The decoded wire name, e.g. `$.mid` or `iothub-ack`.
    pub fn wire_name(&self) -> String {
        let short = match self {
            SystemProperty::MessageId => "mid",
            SystemProperty::CorrelationId => "cid",
            SystemProperty::UserId => "uid",
            SystemProperty::ContentType => "ct",
            SystemProperty::ContentEncoding => "ce",
            SystemProperty::ExpiryTime => "exp",
            SystemProperty::CreationTime => "ctime",
            SystemProperty::InterfaceId => "ifid",
            SystemProperty::To => "to",
            SystemProperty::OutputName => "on",
            SystemProperty::ComponentName => "sub",
            SystemProperty::Ack => return "iothub-ack".into(),
            SystemProperty::Other(s) => return format!("$.{s}"),
        };
        format!("$.{short}")
    }

    /// The property for a decoded wire name, `None` if it is an application property.
    pub fn from_wire_name(name: &str) -> Option<SystemProperty> {
        if name == "iothub-ack" {
            return Some(SystemProperty::Ack);
        }
        let short = name.strip_prefix("$.")?;
        Some(match short {
            "mid" => SystemProperty::MessageId,
            "cid" => SystemProperty::CorrelationId,
            "uid" => SystemProperty::UserId,
            "ct" => SystemProperty::ContentType,
            "ce" => SystemProperty::ContentEncoding,
            "exp" => SystemProperty::ExpiryTime,
            "ctime" => SystemProperty::CreationTime,
            "ifid" => SystemProperty::InterfaceId,
            "to" => SystemProperty::To,
            "on" => SystemProperty::OutputName,
            "sub" => SystemProperty::ComponentName,
            other => SystemProperty::Other(other.to_owned()),
        })
    }

    /// A human label, e.g. "Content type".
    pub fn label(&self) -> &'static str {
        match self {
            SystemProperty::MessageId => "Message ID",
            SystemProperty::CorrelationId => "Correlation ID",
            SystemProperty::UserId => "User ID",
            SystemProperty::ContentType => "Content type",
            SystemProperty::ContentEncoding => "Content encoding",
            SystemProperty::ExpiryTime => "Expiry time",
            SystemProperty::CreationTime => "Creation time",
            SystemProperty::InterfaceId => "Interface ID",
            SystemProperty::To => "To",
            SystemProperty::OutputName => "Output name",
            SystemProperty::ComponentName => "Component",
            SystemProperty::Ack => "Acknowledgement",
            SystemProperty::Other(_) => "System property",
        }
    }

    /// Properties a device may set on telemetry (the rest are stamped by the hub or are C2D-only).
    pub const DEVICE_SETTABLE: [SystemProperty; 9] = [
        SystemProperty::MessageId,
        SystemProperty::CorrelationId,
        SystemProperty::UserId,
        SystemProperty::ContentType,
        SystemProperty::ContentEncoding,
        SystemProperty::ExpiryTime,
        SystemProperty::CreationTime,
        SystemProperty::InterfaceId,
        SystemProperty::ComponentName,
    ];
}

/// A decoded property bag: system properties (typed) beside application properties (in order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertyBag {
    /// System properties, at most one value each, in insertion order.
    system: Vec<(SystemProperty, String)>,
    /// Application properties in order; `None` is a null value (`name` with no `=`).
    pub application: Vec<(String, Option<String>)>,
}

/// Why a property bag is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PropertyBagError {
    #[error("property bag: unencoded '{ch}' at byte {position}; names and values must be percent-encoded")]
    UnencodedCharacter { ch: char, position: usize },
    #[error("property bag: empty property name at byte {position}")]
    EmptyName { position: usize },
    #[error("property bag: '{name}' is not decodable: {error}")]
    BadEncoding { name: String, error: percent::DecodeError },
    #[error("property bag: system property '{0}' is given twice")]
    DuplicateSystemProperty(String),
}

impl PropertyBag {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of a system property.
    pub fn system(&self, p: &SystemProperty) -> Option<&str> {
        self.system.iter().find(|(k, _)| k == p).map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) a system property.
    pub fn set_system(&mut self, p: SystemProperty, value: impl Into<String>) -> &mut Self {
        self.put_system(p, value.into());
        self
    }

    /// [`set_system`](Self::set_system)'s one body for every value type.
    fn put_system(&mut self, p: SystemProperty, value: String) {
        match self.system.iter_mut().find(|(k, _)| *k == p) {
            Some(slot) => slot.1 = value,
            None => self.system.push((p, value)),
        }
    }

    /// Removes a system property, returning its value.
    pub fn remove_system(&mut self, p: &SystemProperty) -> Option<String> {
        let i = self.system.iter().position(|(k, _)| k == p)?;
        Some(self.system.remove(i).1)
    }

    /// System properties in order.
    pub fn system_properties(&self) -> impl Iterator<Item = (&SystemProperty, &str)> {
        self.system.iter().map(|(k, v)| (k, v.as_str()))
    }

    /// Appends an application property.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.application.push((name.into(), Some(value.into())));
        self
    }

    /// The first value of an application property (`Some(None)` for a null value).
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.application.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_deref())
    }

    /// True if the bag has no properties.
    pub fn is_empty(&self) -> bool {
        self.system.is_empty() && self.application.is_empty()
    }

    /// Total bytes of names and values, as IoT Hub counts them towards the 256 KB message limit.
    pub fn size(&self) -> usize {
        self.system.iter().map(|(k, v)| k.wire_name().len() + v.len()).sum::<usize>()
            + self.application.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len)).sum::<usize>()
    }

    /// Parses an encoded bag. An optional trailing `/` (the Node SDK's module outputs) is ignored.
    pub fn parse(s: &str) -> Result<Self, PropertyBagError> {
        let s = s.strip_suffix('/').unwrap_or(s);
        if let Some((position, ch)) = s.char_indices().find(|(_, c)| !allowed_raw(*c)) {
            return Err(PropertyBagError::UnencodedCharacter { ch, position });
        }
        let mut bag = PropertyBag::new();
        let mut offset = 0;
        for pair in s.split('&') {
            let position = offset;
            offset += pair.len() + 1;
            if pair.is_empty() {
                // tolerate `a=1&&b=2` and a trailing `&`, as query-string parsers do
                continue;
            }
            let (raw_name, raw_value) = match pair.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (pair, None),
            };
            if raw_name.is_empty() {
                return Err(PropertyBagError::EmptyName { position });
            }
            let name = percent::decode(raw_name)
                .map_err(|error| PropertyBagError::BadEncoding { name: raw_name.to_owned(), error })?;
            let value = raw_value
                .map(percent::decode)
                .transpose()
                .map_err(|error| PropertyBagError::BadEncoding { name: name.clone(), error })?;
            match SystemProperty::from_wire_name(&name) {
                Some(p) => {
                    if bag.system(&p).is_some() {
                        return Err(PropertyBagError::DuplicateSystemProperty(name));
                    }
                    bag.system.push((p, value.unwrap_or_default()));
                }
                None => bag.application.push((name, value)),
            }
        }
        Ok(bag)
    }
}

fn allowed_raw(c: char) -> bool {
    c.is_ascii() && (percent::is_unreserved(c as u8) || "%$=&!'()*".contains(c))
}

impl fmt::Display for PropertyBag {
    /// The encoded bag, system properties first (as Node and Python write them), `$` as `%24`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (k, v) in &self.system {
            if !out.is_empty() {
                out.push('&');
            }
            percent::encode_into(&k.wire_name(), &mut out);
            out.push('=');
            percent::encode_into(v, &mut out);
        }
        for (k, v) in &self.application {
            if !out.is_empty() {
                out.push('&');
            }
            percent::encode_into(k, &mut out);
            if let Some(v) = v {
                out.push('=');
                percent::encode_into(v, &mut out);
            }
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use SystemProperty as S;

    #[test]
    fn encodes_system_then_application_with_percent_20() {
        let mut bag = PropertyBag::new();
        bag.push("temp alert", "a/b:c#d+e");
        bag.set_system(S::ContentType, "application/json");
        bag.set_system(S::ContentEncoding, "utf-8");
        bag.application.push(("flag".into(), None));
        bag.push("empty", "");
        assert_eq!(
            bag.to_string(),
            "%24.ct=application%2Fjson&%24.ce=utf-8&temp%20alert=a%2Fb%3Ac%23d%2Be&flag&empty="
        );
    }

    #[test]
    fn parses_hub_c2d_capture() {
        let bag = PropertyBag::parse(
            "%24.exp=2020-07-25T14%3A14%3A25.1720000Z&%24.mid=Commands%3Ac2d-Fr7guTmpM&%24.to=%2Fdevices%2F264hjjv1hqf%2Fmessages%2Fdevicebound&iothub-ack=none&method-name=Commands%3Ac2d",
        )
        .unwrap();
        assert_eq!(bag.system(&S::ExpiryTime), Some("2020-07-25T14:14:25.1720000Z"));
        assert_eq!(bag.system(&S::MessageId), Some("Commands:c2d-Fr7guTmpM"));
        assert_eq!(bag.system(&S::To), Some("/devices/264hjjv1hqf/messages/devicebound"));
        assert_eq!(bag.system(&S::Ack), Some("none"));
        assert_eq!(bag.get("method-name"), Some(Some("Commands:c2d")));
    }

    #[test]
    fn parses_doc_forms_null_empty_and_raw_dollar() {
        let bag = PropertyBag::parse("$.ct=application%2Fjson&$.ce=utf-8&prop1&prop2=&prop3=a%20string/").unwrap();
        assert_eq!(bag.system(&S::ContentType), Some("application/json"));
        assert_eq!(bag.get("prop1"), Some(None));
        assert_eq!(bag.get("prop2"), Some(Some("")));
        assert_eq!(bag.get("prop3"), Some(Some("a string")));
        assert_eq!(PropertyBag::parse("").unwrap(), PropertyBag::new());
        // Node's querystring leaves !'()* unencoded
        assert_eq!(PropertyBag::parse("a=(x)*!'").unwrap().get("a"), Some(Some("(x)*!'")));
        assert_eq!(PropertyBag::parse("%24.ifid=x").unwrap().system(&S::InterfaceId), Some("x"));
        assert_eq!(PropertyBag::parse("%24.zz=1").unwrap().system(&S::Other("zz".into())), Some("1"));
    }

    #[test]
    fn rejects_what_the_hub_would_drop() {
        for (input, ch) in
            [("a#b=1", '#'), ("a=1+2", '+'), ("t=12:00", ':'), ("a=b c", ' '), ("a=é", 'é'), ("a/b=1", '/')]
        {
            assert!(
                matches!(PropertyBag::parse(input), Err(PropertyBagError::UnencodedCharacter { ch: c, .. }) if c == ch),
                "{input}"
            );
        }
        assert_eq!(PropertyBag::parse("a=1&=2"), Err(PropertyBagError::EmptyName { position: 4 }));
        assert!(matches!(PropertyBag::parse("a=%G1"), Err(PropertyBagError::BadEncoding { .. })));
        assert_eq!(
            PropertyBag::parse("%24.mid=1&%24.mid=2"),
            Err(PropertyBagError::DuplicateSystemProperty("$.mid".into()))
        );
    }

    fn system_prop() -> impl Strategy<Value = SystemProperty> {
        prop_oneof![
            Just(S::MessageId),
            Just(S::CorrelationId),
            Just(S::UserId),
            Just(S::ContentType),
            Just(S::ContentEncoding),
            Just(S::ExpiryTime),
            Just(S::CreationTime),
            Just(S::InterfaceId),
            Just(S::To),
            Just(S::Ack),
            "[a-z]{1,6}".prop_filter_map("not a known name", |s| match S::from_wire_name(&format!("$.{s}")) {
                Some(S::Other(o)) => Some(S::Other(o)),
                _ => None,
            }),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(
            system in proptest::collection::vec((system_prop(), any::<String>()), 0..6),
            app in proptest::collection::vec(
                ("\\PC+".prop_filter("not a system name", |n| S::from_wire_name(n).is_none()),
                 proptest::option::of(any::<String>())),
                0..6),
        ) {
            let mut bag = PropertyBag::new();
            for (k, v) in system { bag.set_system(k, v); }
            bag.application = app;
            let encoded = bag.to_string();
            prop_assert!(!encoded.contains(['#', '+', '/', ' ', ':']));
            prop_assert_eq!(PropertyBag::parse(&encoded).unwrap(), bag);
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = PropertyBag::parse(&s);
        }
    }
}
