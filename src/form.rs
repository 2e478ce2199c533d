//! The connect form and the composer as data: validation field by field, where the connection goes (and whether
//! the user must confirm that), the telemetry the composer describes and its exact topic. Pure functions of the
//! settings (time comes in as an argument), so they are unit-tested natively.

use hubsim_proto::conn_str::{ConnectionString, Credential};
use hubsim_proto::device::{Telemetry, TelemetryQos};
use hubsim_proto::endpoint::websocket_url;
use hubsim_proto::property_bag::{PropertyBag, SystemProperty};
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::{DeviceIdentity, DeviceTopic};

use crate::settings::{check_host, check_id, check_text, endpoint_authority, Number, Settings, Text};

/// A field the user must fix, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// The hubsim emulator that served this page: the hub name it answers to and its same-origin WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emulator {
    pub host_name: String,
    pub ws: String,
    /// The ID scope of its local DPS (served on the same WebSocket, with `host_name` as provisioning host).
    pub id_scope: String,
}

/// What to connect to, derived from valid settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub cs: ConnectionString,
    pub url: String,
    /// `host[:port]` the WebSocket (and so the token) goes to.
    pub target: String,
    /// True when the token would go to a host other than the hub it is signed for (a gateway or a hand-set
    /// endpoint): the UI names the host and asks before connecting.
    pub needs_confirmation: bool,
}

/// Checks the connect form; every problem is reported against its field before any connection attempt.
///
/// The endpoint is derived from GatewayHostName or HostName unless the user set one by hand. When the emulator
/// serving this page answers to the connection string's HostName, its same-origin WebSocket is used. In DPS mode
/// the hub is the assignment DPS gave (see [`crate::dps`]), with the device key derived from the DPS fields.
pub fn plan(s: &Settings, emulator: Option<&Emulator>) -> Result<Plan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let err = |field, message: String| FieldError { field, message };
    let cs = if s.use_dps {
        crate::dps::assigned_connection_string(s).map_err(|e| errors.extend(e)).ok()
    } else if !s.connection_string.trim().is_empty() {
        match ConnectionString::parse(&s.connection_string) {
            Ok(cs) => {
                for (what, h) in [("HostName", Some(&cs.host_name)), ("GatewayHostName", cs.gateway_host_name.as_ref())]
                {
                    if let Some(Err(e)) = h.map(|h| check_host(h)) {
                        errors.push(err("connection_string", format!("{what}: {e}")));
                    }
                }
                Some(cs)
            }
            Err(e) => {
                errors.push(err("connection_string", e.to_string()));
                None
            }
        }
    } else {
        let host = s.host.trim();
        if host.is_empty() {
            errors.push(err(
                "host",
                "the hub host name is required (e.g. myhub.azure-devices.net), or paste a connection string".into(),
            ));
        } else if let Err(e) = check_host(host) {
            errors.push(err("host", e));
        }
        let device = s.device_id.trim();
        if device.is_empty() {
            errors.push(err("device_id", "the device id is required".into()));
        } else if let Err(e) = check_id(device) {
            errors.push(err("device_id", e));
        }
        if let Err(e) = Some(s.module_id.trim()).filter(|m| !m.is_empty()).map_or(Ok(()), check_id) {
            errors.push(err("device_id", format!("module: {e}")));
        }
        let key = match DeviceKey::from_base64(&s.key) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push(err("key", format!("device key: {e}")));
                None
            }
        };
        match (errors.is_empty(), key) {
            (true, Some(k)) => Some(ConnectionString {
                host_name: host.into(),
                device_id: device.into(),
                module_id: Some(s.module_id.trim().to_owned()).filter(|m| !m.is_empty()),
                key_name: None,
                credential: Credential::Key(k),
                gateway_host_name: None,
            }),
            _ => None,
        }
    };
    if let Some(cs) = &cs {
        if cs.credential == Credential::X509 {
            errors.push(err(
                "connection_string",
                "X.509 certificates cannot be used from a browser; use a SAS key".into(),
            ));
        }
    }
    let endpoint = s.endpoint.trim();
    let by_hand = match endpoint {
        "" => None,
        e => match endpoint_authority(e) {
            Ok(a) => Some(a),
            Err(m) => {
                errors.push(err("endpoint", format!("the endpoint {m}")));
                None
            }
        },
    };
    if let Err(e) = Number::TokenTtl.parse(&s.token_ttl_secs.to_string()) {
        errors.push(err("ttl", e));
    }
    if let Err(e) = Number::KeepAlive.parse(&s.keep_alive_secs.to_string()) {
        errors.push(err("keep_alive", e));
    }
    for (field, f) in [("api_version", Text::ApiVersion), ("model_id", Text::ModelId)] {
        if let Err(e) = check_text(f, s.text(f).trim()) {
            errors.push(err(field, e));
        }
    }
    let cs = match cs {
        Some(cs) if errors.is_empty() => cs,
        _ => return Err(errors),
    };
    let hub = cs.host_name.to_ascii_lowercase();
    let (url, host, target) = match (by_hand, emulator) {
        (Some((host, target)), _) => (endpoint.to_owned(), host, target),
        (None, Some(emu))
            if emu.host_name.eq_ignore_ascii_case(&hub) && cs.connect_host().eq_ignore_ascii_case(&hub) =>
        {
            // The emulator that served this page is this hub: its own WebSocket, same origin.
            return Ok(Plan {
                target: endpoint_authority(&emu.ws).map(|a| a.1).unwrap_or_else(|_| emu.ws.clone()),
                url: emu.ws.clone(),
                cs,
                needs_confirmation: false,
            });
        }
        (None, _) => {
            let host = cs.connect_host().to_ascii_lowercase();
            (websocket_url(&host, None), host.clone(), host)
        }
    };
    // In DPS mode the hub is DPS's choice: one the user did not name is confirmed too.
    let needs_confirmation = host != hub || (s.use_dps && !crate::dps::assigned_hub_expected(s, &hub));
    Ok(Plan { cs, url, target, needs_confirmation })
}

/// The telemetry the composer describes; `creation_time` is the ISO 8601 time to stamp when that is asked for.
pub fn telemetry(s: &Settings, message_id: Option<String>, creation_time: &str) -> Telemetry {
    let mut props = PropertyBag::new();
    let mut set = |p: SystemProperty, v: &str| {
        if !v.trim().is_empty() {
            props.set_system(p, v.trim().to_owned());
        }
    };
    set(SystemProperty::ContentType, &s.content_type);
    set(SystemProperty::ContentEncoding, &s.content_encoding);
    let mid = message_id.unwrap_or_else(|| s.message_id.clone());
    set(SystemProperty::MessageId, &mid);
    set(SystemProperty::CorrelationId, &s.correlation_id);
    set(SystemProperty::UserId, &s.user_id);
    if s.creation_time {
        set(SystemProperty::CreationTime, creation_time);
    }
    for (k, v) in &s.properties {
        if !k.trim().is_empty() {
            props.push(k.trim(), v.clone());
        }
    }
    let qos = match s.qos {
        0 => TelemetryQos::AtMostOnce,
        2 => TelemetryQos::ExactlyOnceHubWillClose,
        _ => TelemetryQos::AtLeastOnce,
    };
    Telemetry { properties: props, payload: s.body.clone().into_bytes().into(), qos, retain: s.retain }
}

/// The exact topic the composer would publish to (for the live preview).
pub fn topic_preview(s: &Settings) -> String {
    let identity = match plan(s, None) {
        Ok(p) => DeviceIdentity { device_id: p.cs.device_id, module_id: p.cs.module_id },
        Err(_) => {
            // Before DPS assigned a device, its id is usually the registration id.
            let id = if s.use_dps { &s.registration_id } else { &s.device_id };
            DeviceIdentity::device(if id.is_empty() { "{deviceId}" } else { id })
        }
    };
    let mid = if s.auto_message_id { Some("<generated>".to_owned()) } else { None };
    DeviceTopic::Telemetry { identity, properties: telemetry(s, mid, "<now>").properties }.to_string()
}

/// `prefix`, then `items` separated by `sep`.
pub fn joined<'a>(prefix: &str, sep: &str, items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from(prefix);
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MAX_TTL_SECS;

    const CS: &str = "HostName=myhub.azure-devices.net;DeviceId=plc;SharedAccessKey=a2V5IGZvciB0ZXN0cw==";

    fn with(cs: &str) -> Settings {
        Settings { connection_string: cs.into(), ..Default::default() }
    }

    #[test]
    fn the_form_is_validated_field_by_field_before_connecting() {
        let mut s = Settings::default();
        let fields: Vec<&str> = plan(&s, None).unwrap_err().iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["host", "device_id", "key"]);
        s.host = "myhub.azure-devices.net/x".into();
        s.device_id = "a b".into();
        let errors = plan(&s, None).unwrap_err();
        assert!(errors[0].message.contains("is not a host name"), "{errors:?}");
        assert!(errors[1].message.contains("is not a valid id"), "{errors:?}");
    }

    #[test]
    fn the_endpoint_is_derived_from_the_hub_and_needs_no_confirmation() {
        let p = plan(&with(CS), None).unwrap();
        assert_eq!(p.url, "wss://myhub.azure-devices.net/$iothub/websocket?iothub-no-client-cert=true");
        assert!(!p.needs_confirmation);
    }

    #[test]
    fn a_gateway_or_a_hand_set_endpoint_is_confirmed_first() {
        let p = plan(&with(&format!("{CS};GatewayHostName=gw.local")), None).unwrap();
        assert_eq!(p.url, "wss://gw.local/$iothub/websocket?iothub-no-client-cert=true");
        assert!(p.needs_confirmation);
        assert_eq!(p.target, "gw.local");
        let mut s = with(CS);
        s.endpoint = "wss://elsewhere.example/x".into();
        let p = plan(&s, None).unwrap();
        assert!(p.needs_confirmation);
        assert_eq!(p.target, "elsewhere.example");
        s.endpoint = "wss://MyHub.azure-devices.net:443/$iothub/websocket".into();
        assert!(!plan(&s, None).unwrap().needs_confirmation);
        s.endpoint = String::new();
        s.model_id = "dtmi:x;1&y".into();
        assert_eq!(plan(&s, None).unwrap_err()[0].field, "model_id");
        s.model_id = String::new();
        s.endpoint = "ws://elsewhere.example/x".into();
        assert_eq!(plan(&s, None).unwrap_err()[0].field, "endpoint");
    }

    #[test]
    fn the_emulator_serving_the_page_is_used_only_for_its_own_hub_name() {
        let emu = Emulator {
            host_name: "localhost".into(),
            ws: "ws://127.0.0.1:8080/$iothub/websocket".into(),
            id_scope: "0ne0000A1B2".into(),
        };
        let local = plan(&with("HostName=localhost;DeviceId=d;SharedAccessKey=a2V5"), Some(&emu)).unwrap();
        assert_eq!(local.url, emu.ws);
        assert!(!local.needs_confirmation);
        // The emulator's demo string names itself as the gateway too.
        let demo = "HostName=localhost;DeviceId=d;SharedAccessKey=a2V5;GatewayHostName=localhost";
        assert_eq!(plan(&with(demo), Some(&emu)).unwrap().url, emu.ws);
        let gw = plan(&with("HostName=localhost;DeviceId=d;SharedAccessKey=a2V5;GatewayHostName=gw"), Some(&emu));
        assert!(gw.unwrap().needs_confirmation);
        let real = plan(&with(CS), Some(&emu)).unwrap();
        assert!(real.url.starts_with("wss://myhub.azure-devices.net/"));
    }

    #[test]
    fn the_token_lifetime_is_capped() {
        let mut s = with(CS);
        s.token_ttl_secs = MAX_TTL_SECS + 1;
        let e = plan(&s, None).unwrap_err();
        assert_eq!(e[0].field, "ttl");
        assert_eq!(e[0].message, "token lifetime (s) must be from 10 to 86400, not 86401");
        s.token_ttl_secs = MAX_TTL_SECS;
        assert!(plan(&s, None).is_ok());
    }

    #[test]
    fn the_topic_preview_is_the_core_topic() {
        let mut s = with("HostName=h;DeviceId=d;SharedAccessKey=a2V5IGZvciB0ZXN0cw==");
        s.properties = vec![("a b".into(), "x/y".into())];
        s.auto_message_id = false;
        assert_eq!(topic_preview(&s), "devices/d/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&a%20b=x%2Fy");
    }
}
