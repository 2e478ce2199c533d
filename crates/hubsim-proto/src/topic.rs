//! Every device-side topic name and subscription filter of IoT Hub and DPS, built and parsed (reference §4–§9).
//!
//! Device and module ids appear in topics unencoded (the hub does not decode them, azure-iot-sdk-python PR #693);
//! property bags and `$rid` values are percent-encoded. [`DeviceTopic`] is what a device publishes (parsed by the
//! hub), [`HubTopic`] is what the hub publishes (parsed by the device), [`TopicFilter`] what a device subscribes to.

use core::fmt;
use thiserror::Error;

use crate::percent;
use crate::property_bag::{PropertyBag, PropertyBagError};

/// Who a connection is: a device, or a module of a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub module_id: Option<String>,
}

/// The characters a device or module id may use besides ASCII letters and digits (IoT Hub's identity registry
/// rule, "Device identity properties" in the identity-registry doc). Newer IoT Hub pages also list `+`, `#` and
/// `;`; hubsim leaves them out: `+` and `#` cannot appear in an MQTT topic name (MQTT-3.3.2-2), where the id
/// goes, and `;` would end the id in a connection string.
pub const ID_SPECIALS: &str = "-.%_*?!(),:=@$'";

/// Whether `id` is a valid device or module id: 1–128 ASCII letters, digits and [`ID_SPECIALS`].
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(is_id_char)
}

/// Whether `c` may appear in a device or module id (see [`ID_SPECIALS`]).
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ID_SPECIALS.contains(c)
}

impl DeviceIdentity {
    /// A device identity.
    pub fn device(id: impl Into<String>) -> Self {
        DeviceIdentity { device_id: id.into(), module_id: None }
    }
    /// A module identity.
    pub fn module(device: impl Into<String>, module: impl Into<String>) -> Self {
        DeviceIdentity { device_id: device.into(), module_id: Some(module.into()) }
    }
    /// The MQTT ClientId: `{device}` or `{device}/{module}`.
    pub fn client_id(&self) -> String {
        self.to_string()
    }
    /// The `$.to` system property IoT Hub puts on a C2D message for this device:
    /// `/devices/{deviceId}/messages/devicebound` (reference §5; the property bag percent-encodes the `/`).
    pub fn c2d_to(&self) -> String {
        format!("/devices/{}/messages/devicebound", self.device_id)
    }
    /// Parses a ClientId (also the emulator's registry key of an identity: `{device}` or `{device}/{module}`).
    pub fn from_client_id(s: &str) -> Self {
        match s.split_once('/') {
            Some((d, m)) => DeviceIdentity::module(d, m),
            None => DeviceIdentity::device(s),
        }
    }
    fn prefix(&self) -> String {
        match &self.module_id {
            Some(m) => format!("devices/{}/modules/{m}", self.device_id),
            None => format!("devices/{}", self.device_id),
        }
    }
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.device_id)?;
        if let Some(m) = &self.module_id {
            f.write_str("/")?;
            f.write_str(m)?;
        }
        Ok(())
    }
}

/// A request id (`$rid`) correlating twin and method requests with their responses. Opaque to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub String);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a topic or filter was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic '{0}' is not an IoT Hub topic this identity may use")]
    Unknown(String),
    #[error("topic '{topic}' names device '{found}', but this connection is '{expected}'")]
    OtherIdentity { topic: String, found: String, expected: String },
    #[error("topic '{0}' has no $rid")]
    MissingRequestId(String),
    #[error("topic '{topic}': status '{status}' is not a number")]
    BadStatus { topic: String, status: String },
    #[error("topic '{topic}': $version '{version}' is not a number")]
    BadVersion { topic: String, version: String },
    #[error("topic '{0}': MQTT wildcards are not allowed here")]
    Wildcard(String),
    #[error(transparent)]
    PropertyBag(#[from] PropertyBagError),
}

/// Parses the `?k=v&…` query of twin, method and DPS topics into decoded pairs.
fn query(q: &str) -> Result<Vec<(String, String)>, TopicError> {
    let bag = PropertyBag::parse(q)?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in bag.system_properties() {
        out.push((k.wire_name(), v.to_owned()));
    }
    for (k, v) in bag.application {
        out.push((k, v.unwrap_or_default()));
    }
    Ok(out)
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn rid_of(topic: &str, pairs: &[(String, String)]) -> Result<RequestId, TopicError> {
    find(pairs, "$rid").map(|r| RequestId(r.to_owned())).ok_or_else(|| TopicError::MissingRequestId(topic.to_owned()))
}

fn version_of(topic: &str, pairs: &[(String, String)]) -> Result<Option<u64>, TopicError> {
    find(pairs, "$version")
        .map(|v| v.parse().map_err(|_| TopicError::BadVersion { topic: topic.into(), version: v.into() }))
        .transpose()
}

fn status_of(topic: &str, s: &str) -> Result<u16, TopicError> {
    // Read as a `u64` (the parser `$version` and `retry-after` use too), then narrowed: the same strings as
    // `u16::from_str` accept.
    match s.parse::<u64>().ok().and_then(|n| u16::try_from(n).ok()) {
        Some(n) => Ok(n),
        None => Err(TopicError::BadStatus { topic: topic.into(), status: s.into() }),
    }
}

fn rid_query(rid: &RequestId) -> String {
    format!("?$rid={}", percent::encode(&rid.0))
}

/// A topic a device publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTopic {
    /// `devices/{d}[/modules/{m}]/messages/events/[{bag}]`
    Telemetry { identity: DeviceIdentity, properties: PropertyBag },
    /// `$iothub/twin/GET/?$rid={rid}`
    TwinGet { rid: RequestId },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`
    TwinPatchReported { rid: RequestId },
    /// `$iothub/methods/res/{status}/?$rid={rid}`
    MethodResponse { status: u16, rid: RequestId },
    /// `$dps/registrations/PUT/iotdps-register/?$rid={rid}`
    DpsRegister { rid: RequestId },
    /// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`
    DpsOperationStatus { rid: RequestId, operation_id: String },
}

impl DeviceTopic {
    /// Parses a topic published by `identity`; telemetry for another identity is an error.
    pub fn parse(topic: &str, identity: &DeviceIdentity) -> Result<DeviceTopic, TopicError> {
        if topic.contains(['#', '+']) {
            return Err(TopicError::Wildcard(topic.to_owned()));
        }
        if let Some(rest) = topic.strip_prefix("devices/") {
            let (ident, tail) = split_identity(rest).ok_or_else(|| TopicError::Unknown(topic.to_owned()))?;
            let bag = match tail.strip_prefix("messages/events") {
                Some("") => "",
                Some(t) => t.strip_prefix('/').ok_or_else(|| TopicError::Unknown(topic.to_owned()))?,
                None => return Err(TopicError::Unknown(topic.to_owned())),
            };
            if ident != *identity {
                return Err(TopicError::OtherIdentity {
                    topic: topic.to_owned(),
                    found: ident.to_string(),
                    expected: identity.to_string(),
                });
            }
            return Ok(DeviceTopic::Telemetry { identity: ident, properties: PropertyBag::parse(bag)? });
        }
        if let Some(q) = topic.strip_prefix("$iothub/twin/GET/") {
            return Ok(DeviceTopic::TwinGet { rid: rid_of(topic, &query(strip_q(topic, q)?)?)? });
        }
        if let Some(q) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/") {
            return Ok(DeviceTopic::TwinPatchReported { rid: rid_of(topic, &query(strip_q(topic, q)?)?)? });
        }
        if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
            let (status, q) = rest.split_once('/').ok_or_else(|| TopicError::Unknown(topic.to_owned()))?;
            let status = status_of(topic, status)?;
            return Ok(DeviceTopic::MethodResponse { status, rid: rid_of(topic, &query(strip_q(topic, q)?)?)? });
        }
        if let Some(q) = topic.strip_prefix("$dps/registrations/PUT/iotdps-register/") {
            return Ok(DeviceTopic::DpsRegister { rid: rid_of(topic, &query(strip_q(topic, q)?)?)? });
        }
        if let Some(q) = topic.strip_prefix("$dps/registrations/GET/iotdps-get-operationstatus/") {
            let pairs = query(strip_q(topic, q)?)?;
            let operation_id =
                find(&pairs, "operationId").ok_or_else(|| TopicError::Unknown(topic.to_owned()))?.to_owned();
            return Ok(DeviceTopic::DpsOperationStatus { rid: rid_of(topic, &pairs)?, operation_id });
        }
        Err(TopicError::Unknown(topic.to_owned()))
    }
}

fn strip_q<'a>(topic: &str, q: &'a str) -> Result<&'a str, TopicError> {
    q.strip_prefix('?').ok_or_else(|| TopicError::MissingRequestId(topic.to_owned()))
}

/// Splits `{d}/modules/{m}/rest` or `{d}/rest` into the identity and the rest.
fn split_identity(rest: &str) -> Option<(DeviceIdentity, &str)> {
    let (device, tail) = rest.split_once('/')?;
    if device.is_empty() {
        return None;
    }
    if let Some(after) = tail.strip_prefix("modules/") {
        let (module, tail) = after.split_once('/')?;
        if module.is_empty() {
            return None;
        }
        return Some((DeviceIdentity::module(device, module), tail));
    }
    Some((DeviceIdentity::device(device), tail))
}

impl fmt::Display for DeviceTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceTopic::Telemetry { identity, properties } => {
                write!(f, "{}/messages/events/{properties}", identity.prefix())
            }
            DeviceTopic::TwinGet { rid } => write!(f, "$iothub/twin/GET/{}", rid_query(rid)),
            DeviceTopic::TwinPatchReported { rid } => {
                write!(f, "$iothub/twin/PATCH/properties/reported/{}", rid_query(rid))
            }
            DeviceTopic::MethodResponse { status, rid } => write!(f, "$iothub/methods/res/{status}/{}", rid_query(rid)),
            DeviceTopic::DpsRegister { rid } => write!(f, "$dps/registrations/PUT/iotdps-register/{}", rid_query(rid)),
            DeviceTopic::DpsOperationStatus { rid, operation_id } => write!(
                f,
                "$dps/registrations/GET/iotdps-get-operationstatus/{}&operationId={}",
                rid_query(rid),
                percent::encode(operation_id)
            ),
        }
    }
}

/// A topic the hub (or DPS) publishes to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubTopic {
    /// `devices/{d}[/modules/{m}]/messages/devicebound/[{bag}]`
    C2d { identity: DeviceIdentity, properties: PropertyBag },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`
    MethodRequest { name: String, rid: RequestId },
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`
    TwinResponse { status: u16, rid: RequestId, version: Option<u64> },
    /// `$iothub/twin/PATCH/properties/desired/?$version={v}`
    TwinDesired { version: Option<u64> },
    /// `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`
    DpsResponse { status: u16, rid: RequestId, retry_after: Option<u64> },
}

impl HubTopic {
    /// Parses a topic the hub published.
    pub fn parse(topic: &str) -> Result<HubTopic, TopicError> {
        let unknown = || TopicError::Unknown(topic.to_owned());
        if let Some(rest) = topic.strip_prefix("devices/") {
            let (identity, tail) = split_identity(rest).ok_or_else(unknown)?;
            let bag = match tail.strip_prefix("messages/devicebound") {
                Some("") => "",
                Some(t) => t.strip_prefix('/').ok_or_else(unknown)?,
                None => return Err(unknown()),
            };
            return Ok(HubTopic::C2d { identity, properties: PropertyBag::parse(bag)? });
        }
        if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
            let (name, q) = rest.split_once('/').ok_or_else(unknown)?;
            let pairs = query(strip_q(topic, q)?)?;
            return Ok(HubTopic::MethodRequest { name: name.to_owned(), rid: rid_of(topic, &pairs)? });
        }
        if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
            let (status, q) = rest.split_once('/').ok_or_else(unknown)?;
            let pairs = query(strip_q(topic, q)?)?;
            return Ok(HubTopic::TwinResponse {
                status: status_of(topic, status)?,
                rid: rid_of(topic, &pairs)?,
                version: version_of(topic, &pairs)?,
            });
        }
        if let Some(q) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/") {
            let pairs = match q.strip_prefix('?') {
                Some(q) => query(q)?,
                None if q.is_empty() => Vec::new(),
                None => return Err(unknown()),
            };
            return Ok(HubTopic::TwinDesired { version: version_of(topic, &pairs)? });
        }
        if let Some(rest) = topic.strip_prefix("$dps/registrations/res/") {
            let (status, q) = rest.split_once('/').ok_or_else(unknown)?;
            let pairs = query(strip_q(topic, q)?)?;
            let retry_after = find(&pairs, "retry-after").and_then(|v| v.parse().ok());
            return Ok(HubTopic::DpsResponse {
                status: status_of(topic, status)?,
                rid: rid_of(topic, &pairs)?,
                retry_after,
            });
        }
        Err(unknown())
    }
}

impl fmt::Display for HubTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubTopic::C2d { identity, properties } => {
                write!(f, "{}/messages/devicebound/{properties}", identity.prefix())
            }
            HubTopic::MethodRequest { name, rid } => write!(f, "$iothub/methods/POST/{name}/{}", rid_query(rid)),
            HubTopic::TwinResponse { status, rid, version } => {
                write!(f, "$iothub/twin/res/{status}/{}", rid_query(rid))?;
                if let Some(v) = version {
                    write!(f, "&$version={v}")?;
                }
                Ok(())
            }
            HubTopic::TwinDesired { version } => {
                f.write_str("$iothub/twin/PATCH/properties/desired/")?;
                if let Some(v) = version {
                    write!(f, "?$version={v}")?;
                }
                Ok(())
            }
            HubTopic::DpsResponse { status, rid, retry_after } => {
                write!(f, "$dps/registrations/res/{status}/{}", rid_query(rid))?;
                if let Some(r) = retry_after {
                    write!(f, "&retry-after={r}")?;
                }
                Ok(())
            }
        }
    }
}

/// A subscription a device may hold (reference §8). At most five per device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicFilter {
    /// `devices/{d}/messages/devicebound/#` (also accepted: `devices/+/messages/devicebound/#`)
    C2d,
    /// `$iothub/methods/POST/#`
    Methods,
    /// `$iothub/twin/res/#`
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`
    TwinDesired,
    /// `devices/{d}/modules/{m}/#` or `…/inputs/#` (Edge module inputs)
    ModuleInputs,
    /// `$dps/registrations/res/#`
    DpsResponses,
}

impl TopicFilter {
    /// Whether IoT Hub serves this subscription to `identity`: C2D messages go to devices only, module inputs
    /// to modules only (reference §8); a hub closes the connection of a device that subscribes to another.
    pub fn serves(&self, identity: &DeviceIdentity) -> bool {
        match self {
            TopicFilter::C2d => identity.module_id.is_none(),
            TopicFilter::ModuleInputs => identity.module_id.is_some(),
            _ => true,
        }
    }

    /// The filter string for `identity`.
    pub fn to_filter(&self, identity: &DeviceIdentity) -> String {
        match self {
            TopicFilter::C2d => format!("devices/{}/messages/devicebound/#", identity.device_id),
            TopicFilter::Methods => "$iothub/methods/POST/#".into(),
            TopicFilter::TwinResponses => "$iothub/twin/res/#".into(),
            TopicFilter::TwinDesired => "$iothub/twin/PATCH/properties/desired/#".into(),
            TopicFilter::ModuleInputs => format!("{}/inputs/#", identity.prefix()),
            TopicFilter::DpsResponses => "$dps/registrations/res/#".into(),
        }
    }

    /// Parses a filter a device subscribed with; another device's topic or any other filter is an error.
    pub fn parse(filter: &str, identity: &DeviceIdentity) -> Result<TopicFilter, TopicError> {
        match filter {
            "$iothub/methods/POST/#" => return Ok(TopicFilter::Methods),
            "$iothub/twin/res/#" => return Ok(TopicFilter::TwinResponses),
            "$iothub/twin/PATCH/properties/desired/#" => return Ok(TopicFilter::TwinDesired),
            "$dps/registrations/res/#" => return Ok(TopicFilter::DpsResponses),
            _ => {}
        }
        let unknown = || TopicError::Unknown(filter.to_owned());
        let rest = filter.strip_prefix("devices/").ok_or_else(unknown)?;
        let (ident, tail) = split_identity(rest).ok_or_else(unknown)?;
        let same = ident.device_id == "+" || ident.device_id == identity.device_id;
        // A module's filters name the module: IoT Hub sends C2D messages to devices only (reference §8), so a
        // module subscribing to its device's C2D topic is another identity's topic.
        if !same || ident.module_id.as_ref() != identity.module_id.as_ref() {
            return Err(TopicError::OtherIdentity {
                topic: filter.to_owned(),
                found: ident.to_string(),
                expected: identity.to_string(),
            });
        }
        match (ident.module_id.is_some(), tail) {
            (false, "messages/devicebound/#") => Ok(TopicFilter::C2d),
            (true, "#") | (true, "inputs/#") => Ok(TopicFilter::ModuleInputs),
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::property_bag::SystemProperty;
    use proptest::prelude::*;

    fn dev() -> DeviceIdentity {
        DeviceIdentity::device("dev1")
    }

    #[test]
    fn telemetry_topics_for_device_and_module() {
        let mut bag = PropertyBag::new();
        bag.set_system(SystemProperty::MessageId, "m 1").push("k", "v");
        let t = DeviceTopic::Telemetry { identity: dev(), properties: bag.clone() };
        assert_eq!(t.to_string(), "devices/dev1/messages/events/%24.mid=m%201&k=v");
        assert_eq!(DeviceTopic::parse(&t.to_string(), &dev()).unwrap(), t);
        let m = DeviceIdentity::module("dev1", "mod1");
        let t = DeviceTopic::Telemetry { identity: m.clone(), properties: PropertyBag::new() };
        assert_eq!(t.to_string(), "devices/dev1/modules/mod1/messages/events/");
        for s in ["devices/dev1/messages/events", "devices/dev1/messages/events/", "devices/dev1/messages/events/a=1/"]
        {
            assert!(matches!(DeviceTopic::parse(s, &dev()), Ok(DeviceTopic::Telemetry { .. })), "{s}");
        }
        assert!(DeviceTopic::parse("devices/dev1/modules/mod1/messages/events/", &m).is_ok());
    }

    #[test]
    fn telemetry_for_another_device_or_unknown_topic_is_refused() {
        assert!(matches!(
            DeviceTopic::parse("devices/dev2/messages/events/", &dev()),
            Err(TopicError::OtherIdentity { .. })
        ));
        assert!(matches!(DeviceTopic::parse("devices/dev1/messages/eventsX", &dev()), Err(TopicError::Unknown(_))));
        assert!(matches!(DeviceTopic::parse("hello/world", &dev()), Err(TopicError::Unknown(_))));
        assert!(matches!(DeviceTopic::parse("devices/dev1/messages/events/a#", &dev()), Err(TopicError::Wildcard(_))));
        assert!(matches!(
            DeviceTopic::parse("devices/dev1/messages/events/a=1:2", &dev()),
            Err(TopicError::PropertyBag(_))
        ));
    }

    #[test]
    fn twin_method_and_dps_topics() {
        let rid = RequestId("7".into());
        let cases = [
            (DeviceTopic::TwinGet { rid: rid.clone() }, "$iothub/twin/GET/?$rid=7"),
            (DeviceTopic::TwinPatchReported { rid: rid.clone() }, "$iothub/twin/PATCH/properties/reported/?$rid=7"),
            (DeviceTopic::MethodResponse { status: 200, rid: rid.clone() }, "$iothub/methods/res/200/?$rid=7"),
            (DeviceTopic::DpsRegister { rid: rid.clone() }, "$dps/registrations/PUT/iotdps-register/?$rid=7"),
            (
                DeviceTopic::DpsOperationStatus { rid: rid.clone(), operation_id: "4.d0a6".into() },
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7&operationId=4.d0a6",
            ),
        ];
        for (topic, s) in cases {
            assert_eq!(topic.to_string(), s);
            assert_eq!(DeviceTopic::parse(s, &dev()).unwrap(), topic);
        }
        assert!(matches!(DeviceTopic::parse("$iothub/twin/GET/", &dev()), Err(TopicError::MissingRequestId(_))));
        assert!(matches!(
            DeviceTopic::parse("$iothub/methods/res/ok/?$rid=1", &dev()),
            Err(TopicError::BadStatus { .. })
        ));
    }

    #[test]
    fn status_accepts_what_u16_from_str_accepts() {
        for s in
            ["200", "+200", "0", "00429", "65535", "65536", "70000", "99999999999999999999999", "", "+", "-1", " 1"]
        {
            assert_eq!(status_of("t", s).ok(), s.parse::<u16>().ok(), "{s:?}");
        }
    }

    #[test]
    fn hub_topics_round_trip_and_parse_real_shapes() {
        let cases = [
            (
                HubTopic::MethodRequest { name: "reboot".into(), rid: RequestId("1".into()) },
                "$iothub/methods/POST/reboot/?$rid=1",
            ),
            (
                HubTopic::TwinResponse { status: 204, rid: RequestId("1".into()), version: Some(6) },
                "$iothub/twin/res/204/?$rid=1&$version=6",
            ),
            (HubTopic::TwinDesired { version: Some(3) }, "$iothub/twin/PATCH/properties/desired/?$version=3"),
            (
                HubTopic::DpsResponse { status: 202, rid: RequestId("1".into()), retry_after: Some(3) },
                "$dps/registrations/res/202/?$rid=1&retry-after=3",
            ),
        ];
        for (topic, s) in cases {
            assert_eq!(topic.to_string(), s);
            assert_eq!(HubTopic::parse(s).unwrap(), topic);
        }
        match HubTopic::parse("$dps/registrations/res/202/?retry-after=120&$rid=1").unwrap() {
            HubTopic::DpsResponse { retry_after, .. } => assert_eq!(retry_after, Some(120)),
            other => panic!("{other:?}"),
        }
        match HubTopic::parse(
            "devices/pubsub/messages/devicebound/%24.mid=2c2d&%24.to=%2Fdevices%2Fpubsub%2Fmessages%2Fdevicebound&%24.ce=utf-8&iothub-ack=none",
        )
        .unwrap()
        {
            HubTopic::C2d { identity, properties } => {
                assert_eq!(identity, DeviceIdentity::device("pubsub"));
                assert_eq!(properties.system(&SystemProperty::ContentEncoding), Some("utf-8"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(HubTopic::parse("devices/d/messages/devicebound/"), Ok(HubTopic::C2d { .. })));
    }

    #[test]
    fn filters() {
        let d = dev();
        for (s, f) in [
            ("devices/dev1/messages/devicebound/#", TopicFilter::C2d),
            ("devices/+/messages/devicebound/#", TopicFilter::C2d),
            ("$iothub/methods/POST/#", TopicFilter::Methods),
            ("$iothub/twin/res/#", TopicFilter::TwinResponses),
            ("$iothub/twin/PATCH/properties/desired/#", TopicFilter::TwinDesired),
        ] {
            assert_eq!(TopicFilter::parse(s, &d).unwrap(), f, "{s}");
        }
        assert_eq!(TopicFilter::C2d.to_filter(&d), "devices/dev1/messages/devicebound/#");
        assert!(matches!(
            TopicFilter::parse("devices/dev2/messages/devicebound/#", &d),
            Err(TopicError::OtherIdentity { .. })
        ));
        for bad in ["#", "devices/dev1/#", "$iothub/#", "devices/dev1/messages/devicebound/+", "$iothub/methods/POST/+"]
        {
            assert!(TopicFilter::parse(bad, &d).is_err(), "{bad}");
        }
        let m = DeviceIdentity::module("dev1", "m1");
        assert_eq!(TopicFilter::parse("devices/dev1/modules/m1/inputs/#", &m).unwrap(), TopicFilter::ModuleInputs);
        // IoT Hub sends C2D messages to devices, not modules: a module's C2D filter names another identity.
        for c2d in ["devices/dev1/messages/devicebound/#", "devices/+/messages/devicebound/#"] {
            assert!(matches!(TopicFilter::parse(c2d, &m), Err(TopicError::OtherIdentity { .. })), "{c2d}");
        }
        assert!(
            TopicFilter::parse("devices/dev1/modules/m1/#", &d).is_err(),
            "a device subscribed to a module's inputs"
        );
    }

    proptest! {
        #[test]
        fn c2d_topic_round_trips(device in "[A-Za-z0-9\\-.:_=!*'()$@,%]{1,40}",
                                 props in proptest::collection::vec(("\\PC+".prop_filter("app", |n| crate::SystemProperty::from_wire_name(n).is_none()), any::<String>()), 0..5)) {
            let mut bag = PropertyBag::new();
            for (k, v) in props { bag.push(k, v); }
            let t = HubTopic::C2d { identity: DeviceIdentity::device(device), properties: bag };
            prop_assert_eq!(HubTopic::parse(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn request_ids_round_trip(rid in any::<String>(), status in 100u16..600) {
            let rid = RequestId(rid);
            let t = HubTopic::TwinResponse { status, rid: rid.clone(), version: None };
            prop_assert_eq!(HubTopic::parse(&t.to_string()).unwrap(), t);
            let d = DeviceTopic::MethodResponse { status, rid };
            prop_assert_eq!(DeviceTopic::parse(&d.to_string(), &dev()).unwrap(), d);
        }

        #[test]
        fn parsers_never_panic(s in any::<String>()) {
            let _ = HubTopic::parse(&s);
            let _ = DeviceTopic::parse(&s, &dev());
            let _ = TopicFilter::parse(&s, &dev());
        }
    }
}
