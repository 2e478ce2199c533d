//! The MQTT CONNECT user name (reference §2, §9).
//!
//! hubsim writes `{host}/{device}[/{module}]/?api-version=2021-04-12[&DeviceClientType=…][&model-id=…]` with the
//! query values percent-encoded. The parser also accepts what older SDKs and docs send, as the Edge hub's
//! `MqttUsernameParser` does: no query at all (`{host}/{device}`), the query without `?`
//! (`{host}/{device}/api-version=2016-11-14`), and unknown query keys (ignored). DPS user names
//! (`{scope}/registrations/{id}/api-version=2019-03-31&ClientVersion=…`) are parsed too.

use core::fmt;
use thiserror::Error;

use crate::percent;
use crate::topic::DeviceIdentity;

/// A parsed or to-be-sent user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// Hub host name, or the DPS id scope.
    pub host: String,
    pub identity: DeviceIdentity,
    /// True for a DPS registration user name.
    pub dps: bool,
    pub api_version: Option<String>,
    /// IoT Plug and Play model id (`model-id`).
    pub model_id: Option<String>,
    /// SDK/product string (`DeviceClientType`, or DPS `ClientVersion`).
    pub client_type: Option<String>,
    /// Other query parameters, decoded, in order.
    pub other: Vec<(String, String)>,
}

/// Why a user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsernameError {
    #[error("user name '{0}' is not {{host}}/{{deviceId}}/?api-version=…")]
    Malformed(String),
    #[error("user name '{0}' has an empty host or device id")]
    Empty(String),
    #[error("user name query value for '{key}' is badly encoded: {error}")]
    BadEncoding { key: String, error: percent::DecodeError },
}

impl Username {
    /// A device user name with hubsim's API version.
    pub fn new(host: impl Into<String>, identity: DeviceIdentity) -> Self {
        Username {
            host: host.into(),
            identity,
            dps: false,
            api_version: Some(crate::API_VERSION.into()),
            model_id: None,
            client_type: None,
            other: Vec::new(),
        }
    }

    /// Parses any accepted form.
    pub fn parse(s: &str) -> Result<Username, UsernameError> {
        let malformed = || UsernameError::Malformed(s.to_owned());
        let (host, rest) = s.split_once('/').ok_or_else(malformed)?;
        // Split the path from the query: `/?q`, or a legacy segment that starts with `api-version=`.
        let (path, query) = if let Some((p, q)) = rest.split_once("/?") {
            (p, q)
        } else if let Some(i) = rest.find("api-version=") {
            if i > 0 && rest.as_bytes()[i - 1] != b'/' {
                return Err(malformed());
            }
            (rest[..i].trim_end_matches('/'), &rest[i..])
        } else {
            (rest.trim_end_matches('/'), "")
        };
        let segments: Vec<&str> = path.split('/').collect();
        let (identity, dps) = match segments.as_slice() {
            [d] => (DeviceIdentity::device(*d), false),
            ["registrations", r] => (DeviceIdentity::device(*r), true),
            [d, m] => (DeviceIdentity::module(*d, *m), false),
            _ => return Err(malformed()),
        };
        if host.is_empty() || identity.device_id.is_empty() || identity.module_id.as_deref() == Some("") {
            return Err(UsernameError::Empty(s.to_owned()));
        }
        let mut u = Username {
            host: host.to_owned(),
            identity,
            dps,
            api_version: None,
            model_id: None,
            client_type: None,
            other: Vec::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent::decode(v).map_err(|error| UsernameError::BadEncoding { key: k.to_owned(), error })?;
            match k {
                "api-version" => u.api_version = Some(v),
                "model-id" => u.model_id = Some(v),
                "DeviceClientType" | "ClientVersion" => u.client_type = Some(v),
                _ => u.other.push((k.to_owned(), v)),
            }
        }
        Ok(u)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if self.dps {
            f.write_str("/registrations/")?;
            f.write_str(&self.identity.device_id)?;
            f.write_str("/")?;
        } else {
            f.write_str("/")?;
            fmt::Display::fmt(&self.identity, f)?;
            f.write_str("/?")?;
        }
        // The query, built in one buffer (every pair adds at least its `=`, so an empty buffer means "first").
        let mut q = String::new();
        let mut put = |k: &str, v: &str| percent::push_query_pair(&mut q, k, v);
        if let Some(v) = &self.api_version {
            put("api-version", v);
        }
        if let Some(v) = &self.client_type {
            put(if self.dps { "ClientVersion" } else { "DeviceClientType" }, v);
        }
        if let Some(v) = &self.model_id {
            put("model-id", v);
        }
        for (k, v) in &self.other {
            put(k, v);
        }
        f.write_str(&q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builds_the_current_form() {
        let mut u = Username::new("hub.azure-devices.net", DeviceIdentity::device("dev1"));
        assert_eq!(u.to_string(), "hub.azure-devices.net/dev1/?api-version=2021-04-12");
        u.model_id = Some("dtmi:com:example:Thermostat;1".into());
        u.client_type = Some("hubsim/0.1 (wasm)".into());
        assert_eq!(
            u.to_string(),
            "hub.azure-devices.net/dev1/?api-version=2021-04-12&DeviceClientType=hubsim%2F0.1%20%28wasm%29&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"
        );
        assert_eq!(Username::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn parses_sdk_and_legacy_forms() {
        let py =
            Username::parse("h.net/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device%2F2.12.0").unwrap();
        assert_eq!(py.api_version.as_deref(), Some("2019-10-01"));
        assert_eq!(py.client_type.as_deref(), Some("azure-iot-device/2.12.0"));
        let legacy = Username::parse("h.net/dev1").unwrap();
        assert_eq!((legacy.identity.device_id.as_str(), legacy.api_version), ("dev1", None));
        let legacy = Username::parse("h.net/dev1/api-version=2016-11-14").unwrap();
        assert_eq!(legacy.api_version.as_deref(), Some("2016-11-14"));
        let module = Username::parse("h.net/dev1/mod1/?api-version=2021-04-12&foo=bar").unwrap();
        assert_eq!(module.identity, DeviceIdentity::module("dev1", "mod1"));
        assert_eq!(module.other, vec![("foo".to_owned(), "bar".to_owned())]);
        let module = Username::parse("h.net/dev1/mod1/api-version=2018-06-30").unwrap();
        assert_eq!(module.identity.module_id.as_deref(), Some("mod1"));
        let node = Username::parse("h/d/?api-version=2021-04-12&model-id=dtmi:x;1&DeviceClientType=a").unwrap();
        assert_eq!(node.model_id.as_deref(), Some("dtmi:x;1"));
        let dps = Username::parse("0ne00000A0A/registrations/reg1/api-version=2019-03-31&ClientVersion=x%2F1").unwrap();
        assert!(dps.dps);
        assert_eq!(dps.identity.device_id, "reg1");
        assert_eq!(dps.client_type.as_deref(), Some("x/1"));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "hub", "/dev", "h//?api-version=1", "h/a/b/c/d/?x=1", "h/d/xapi-version=1"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(host in "[a-z0-9.-]{1,30}", device in "[A-Za-z0-9\\-.:_=!*'()$@,%]{1,30}",
                       module in proptest::option::of("[A-Za-z0-9\\-._]{1,20}"),
                       model in proptest::option::of(any::<String>()), client in proptest::option::of(any::<String>())) {
            let identity = DeviceIdentity { device_id: device, module_id: module };
            let mut u = Username::new(host, identity);
            u.model_id = model;
            u.client_type = client;
            prop_assert_eq!(Username::parse(&u.to_string()).unwrap(), u);
        }
    }
}
