//! IoT Hub's JSON presentation of the service API (data-plane REST reference, api-version 2021-04-12): device
//! and module identities, twins, ETags and `If-Match`, and the error body the official service SDKs parse.
//!
//! The SDKs read errors from `Message` as `ErrorCode:{Name};{text}` (Node `Http.parseErrorBody` splits on `;`
//! and `:`, so the text never contains `;`); hubsim's own `errorCode`/`message` fields stay beside them for the
//! CLI and the web app.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::hub::{random_id, ServiceError};
use crate::model::{Device, Twin};
use crate::timefmt::{iso8601, unix_ms};

/// IoT Hub's value for a time that never happened (`connectionStateUpdatedTime` of a device never connected).
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// The name IoT Hub gives a six-digit error code (the .NET service SDK's `ErrorCode` enum); the HTTP status
/// decides where no name is known.
pub fn error_name(code: u32, status: u16) -> &'static str {
    match code {
        400001 => "InvalidProtocolVersion",
        400003 => "InvalidOperation",
        400004 => "ArgumentInvalid",
        400005 => "ArgumentNull",
        400006 => "IotHubFormatError",
        400013 => "DeviceDefinedMultipleTimes",
        400015 => "BulkRegistryOperationFailure",
        401002 => "IotHubUnauthorizedAccess",
        403004 => "DeviceMaximumQueueDepthExceeded",
        404001 => "DeviceNotFound",
        404010 => "ModuleNotFound",
        404103 => "DeviceNotOnline",
        409001 => "DeviceAlreadyExists",
        409301 => "ModuleAlreadyExistsOnDevice",
        412001 => "PreconditionFailed",
        413001 => "MessageTooLarge",
        413002 => "TooManyDevices",
        503001 => "ServiceUnavailable",
        504101 => "GatewayTimeout",
        _ => match status {
            400 => "ArgumentInvalid",
            401 => "IotHubUnauthorizedAccess",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            405 => "MethodNotAllowed",
            412 => "PreconditionFailed",
            413 => "MessageTooLarge",
            415 => "UnsupportedMediaType",
            421 => "MisdirectedRequest",
            502 => "BadDeviceResponse",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            _ => "ServerError",
        },
    }
}

/// The error body: IoT Hub's `Message`/`ExceptionMessage` plus hubsim's `errorCode`/`message`/`timestampUtc`.
pub fn error_body(status: u16, code: u32, message: &str) -> Value {
    let now = iso8601(unix_ms());
    json!({
        "Message": format!("ErrorCode:{};{}", error_name(code, status), message.replace(';', ",")),
        "ExceptionMessage": format!("Tracking ID:{}-G:0-TimeStamp:{now}", random_id().replace('-', "")),
        "errorCode": code,
        "message": message,
        "timestampUtc": now,
    })
}

/// A device record's ETag: opaque, quoted-free base64 that changes with every write and with re-creation.
pub fn device_etag(d: &Device) -> String {
    STANDARD.encode(format!("{}:{}", d.generation_id, d.meta.version))
}

/// A twin's ETag (base64 of its version, as IoT Hub's `AAAAAAAAAAE=` look).
pub fn twin_etag(t: &Twin) -> String {
    STANDARD.encode(t.version().to_be_bytes())
}

/// An `If-Match` precondition: absent or `*` matches any existing record, anything else one ETag exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Etag(String),
}

impl IfMatch {
    /// Parses the header value (quotes and a weak `W/` prefix are ignored, as the SDKs quote ETags).
    pub fn parse(v: Option<&str>) -> IfMatch {
        let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else { return IfMatch::Any };
        let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
        if v == "*" || v.is_empty() {
            IfMatch::Any
        } else {
            IfMatch::Etag(v.to_owned())
        }
    }

    /// 412 `PreconditionFailed` unless `current` matches.
    pub fn check(&self, current: &str, what: &str) -> Result<(), ServiceError> {
        match self {
            IfMatch::Etag(e) if e != current => Err(ServiceError::new(
                412,
                412001,
                format!("the ETag '{}' does not match {what}'s current ETag '{current}'", crate::hub::truncate(e, 100)),
            )),
            _ => Ok(()),
        }
    }
}

/// Split `dev/mod` into the device and module ids.
fn ids(d: &Device) -> (String, Option<String>) {
    let id = hubsim_proto::DeviceIdentity::from_client_id(&d.device_id);
    (id.device_id, id.module_id)
}

/// What the service shows of a device's live state.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub connected: bool,
    pub c2d_count: usize,
    pub presence: crate::hub::Presence,
}

/// A device or module identity as IoT Hub's REST API shows it.
pub fn identity_json(d: &Device, live: Live) -> Value {
    let (device_id, module_id) = ids(d);
    let k = &d.authentication.symmetric_key;
    let mut v = json!({
        "deviceId": device_id,
        "generationId": d.generation_id,
        "etag": device_etag(d),
        "connectionState": if live.connected { "Connected" } else { "Disconnected" },
        "connectionStateUpdatedTime": live.presence.state_updated.as_deref().unwrap_or(NEVER),
        "lastActivityTime": live.presence.last_activity.as_deref().unwrap_or(NEVER),
        "cloudToDeviceMessageCount": live.c2d_count,
        "authentication": {
            "symmetricKey": { "primaryKey": k.primary_key, "secondaryKey": k.secondary_key },
            "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
            "type": d.authentication.kind,
        },
    });
    let m = v.as_object_mut().expect("an object literal");
    match module_id {
        Some(module) => {
            m.insert("moduleId".into(), module.into());
            m.insert("managedBy".into(), d.meta.managed_by.clone().into());
        }
        None => {
            m.insert("status".into(), d.status.clone().into());
            m.insert("statusReason".into(), d.meta.status_reason.clone().into());
            m.insert(
                "statusUpdatedTime".into(),
                d.meta.status_updated_time.clone().unwrap_or_else(|| NEVER.into()).into(),
            );
            m.insert("capabilities".into(), json!({ "iotEdge": d.meta.iot_edge }));
        }
    }
    v
}

/// `{…, "$metadata": {"$lastUpdated", "$lastUpdatedVersion"?, "{property}": {…}…}, "$version": n}` for one
/// twin section: the metadata of every property and object, from `meta` (see `model::touch_metadata`); a
/// property without a node (kept from before hubsim recorded them) takes its parent's.
fn section(props: &Value, version: u64, updated: Option<&str>, meta: &Value, with_version: bool) -> Value {
    let mut v = if props.is_object() { props.clone() } else { json!({}) };
    let mut root = serde_json::Map::new();
    root.insert("$lastUpdated".into(), updated.unwrap_or(NEVER).into());
    if with_version {
        root.insert("$lastUpdatedVersion".into(), version.into());
    }
    metadata_of(&v, meta, &mut root);
    if let Value::Object(m) = &mut v {
        m.insert("$metadata".into(), Value::Object(root));
        m.insert("$version".into(), version.into());
    }
    v
}

/// Fills `node` (which holds its own `$lastUpdated` and maybe `$lastUpdatedVersion`) with a node per property of
/// `props`, from the recorded `meta`.
fn metadata_of(props: &Value, meta: &Value, node: &mut serde_json::Map<String, Value>) {
    let Value::Object(p) = props else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        let recorded = meta.get(k).filter(|m| m.is_object());
        let mut child = serde_json::Map::new();
        for stamp in ["$lastUpdated", "$lastUpdatedVersion"] {
            if let Some(x) = recorded.and_then(|m| m.get(stamp)).or_else(|| node.get(stamp)) {
                child.insert(stamp.into(), x.clone());
            }
        }
        metadata_of(v, recorded.unwrap_or(&Value::Null), &mut child);
        node.insert(k.clone(), Value::Object(child));
    }
}

/// A device or module twin as IoT Hub's REST API (and its query results) show it.
pub fn twin_json(d: &Device, t: &Twin, live: Live) -> Value {
    let (device_id, module_id) = ids(d);
    let mut v = json!({
        "deviceId": device_id,
        "etag": twin_etag(t),
        "deviceEtag": device_etag(d),
        "status": d.status,
        "statusUpdateTime": d.meta.status_updated_time.clone().unwrap_or_else(|| NEVER.into()),
        "connectionState": if live.connected { "Connected" } else { "Disconnected" },
        "lastActivityTime": live.presence.last_activity.as_deref().unwrap_or(NEVER),
        "cloudToDeviceMessageCount": live.c2d_count,
        "authenticationType": "sas",
        "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
        "modelId": t.model_id.as_deref().unwrap_or(""),
        "version": t.version(),
        "tags": if t.tags.is_object() { t.tags.clone() } else { json!({}) },
        "properties": {
            "desired": section(&t.desired, t.desired_version, t.desired_updated.as_deref(), &t.desired_meta, true),
            "reported": section(&t.reported, t.reported_version, t.reported_updated.as_deref(), &t.reported_meta, false),
        },
    });
    let m = v.as_object_mut().expect("an object literal");
    match module_id {
        Some(module) => {
            m.insert("moduleId".into(), module.into());
        }
        None => {
            m.insert("statusReason".into(), d.meta.status_reason.clone().into());
            m.insert("capabilities".into(), json!({ "iotEdge": d.meta.iot_edge }));
        }
    }
    v
}

/// A request body as JSON; an empty body is `null`. A bad body is IoT Hub's 400 `ArgumentInvalid`.
pub fn parse_body(body: &[u8]) -> Result<Value, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| ServiceError::new(400, 400004, format!("the body is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_quoted_weak_and_star() {
        assert_eq!(IfMatch::parse(None), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("\"*\"")), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("*")), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("\"AAAA\"")), IfMatch::Etag("AAAA".into()));
        assert_eq!(IfMatch::parse(Some("W/\"AAAA\"")), IfMatch::Etag("AAAA".into()));
        assert!(IfMatch::parse(Some("\"x\"")).check("y", "the twin").is_err());
        assert!(IfMatch::parse(Some("\"y\"")).check("y", "the twin").is_ok());
    }

    #[test]
    fn the_error_body_is_what_the_sdks_parse() {
        let b = error_body(404, 404001, "device 'x' does not exist; really");
        let m = b["Message"].as_str().unwrap();
        // Node: Message.split(';') → [ "ErrorCode:DeviceNotFound", text ]; code = part0.split(':')[1].
        let parts: Vec<&str> = m.split(';').collect();
        assert_eq!(parts.len(), 2, "{m}");
        assert_eq!(parts[0].split(':').nth(1), Some("DeviceNotFound"));
        assert_eq!(b["errorCode"], 404001);
        assert_eq!(b["message"], "device 'x' does not exist; really");
        assert!(b["ExceptionMessage"].as_str().unwrap().starts_with("Tracking ID:"));
    }
}
