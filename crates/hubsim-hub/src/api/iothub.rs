//! IoT Hub's JSON presentation of the service API (data-plane REST reference, api-version 2021-04-12): device
//! and module identities, twins, ETags and `If-Match`, and the error body the official service SDKs parse.
//!
//! The SDKs read errors from `Message` as `ErrorCode:{Name};{text}` (Node `Http.parseErrorBody` splits on `;`
//! and `:`, so the text never contains `;`); hubsim's own `errorCode`/`message` fields stay beside them for the
//! CLI and the web app.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use std::borrow::Cow;

use crate::hub::{random_id, ServiceError};
use crate::model::{Device, Twin, TwinHead, TwinTree};
use crate::store::StoreError;
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
        429001 => "ThrottlingException",
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
            429 => "ThrottlingException",
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
    etag_of_version(t.version())
}

fn etag_of_version(version: u64) -> String {
    STANDARD.encode(version.to_be_bytes())
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

/// A twin section (`desired` or `reported`) as [`twin_json`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Desired,
    Reported,
}

impl Section {
    fn parse(name: &str) -> Option<Section> {
        match name {
            "desired" => Some(Section::Desired),
            "reported" => Some(Section::Reported),
            _ => None,
        }
    }
    fn tree(self) -> TwinTree {
        match self {
            Section::Desired => TwinTree::Desired,
            Section::Reported => TwinTree::Reported,
        }
    }
    fn version(self, h: &TwinHead) -> u64 {
        match self {
            Section::Desired => h.desired_version,
            Section::Reported => h.reported_version,
        }
    }
    /// The section with `$metadata` and `$version`.
    fn json(self, t: &Twin) -> Value {
        match self {
            Section::Desired => {
                section(&t.desired, t.desired_version, t.desired_updated.as_deref(), &t.desired_meta, true)
            }
            Section::Reported => {
                section(&t.reported, t.reported_version, t.reported_updated.as_deref(), &t.reported_meta, false)
            }
        }
    }
}

/// The names at the top of a twin document ([`twin_json`]); `moduleId` only in a module's, `statusReason` and
/// `capabilities` only in a device's.
const TWIN_FIELDS: [&str; 17] = [
    "deviceId",
    "etag",
    "deviceEtag",
    "status",
    "statusUpdateTime",
    "connectionState",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "modelId",
    "version",
    "tags",
    "properties",
    "moduleId",
    "statusReason",
    "capabilities",
];

/// The value of the top-level field `name` (one of [`TWIN_FIELDS`]) of the twin document, for everything but
/// `tags` and `properties` (which [`twin_field`] reads in place); `None` when the identity's document has no such
/// field (`moduleId` of a device, `statusReason` of a module).
fn twin_top<P: TwinParts + ?Sized>(p: &P, name: &str) -> Result<Option<Value>, StoreError> {
    let d = p.device();
    let (device_id, module_id) = ids(d);
    Ok(Some(match name {
        "deviceId" => device_id.into(),
        "moduleId" => return Ok(module_id.map(Value::from)),
        "etag" => etag_of_version(p.head()?.version()).into(),
        "deviceEtag" => device_etag(d).into(),
        "status" => d.status.clone().into(),
        "statusUpdateTime" => d.meta.status_updated_time.clone().unwrap_or_else(|| NEVER.into()).into(),
        "connectionState" => if p.live()?.connected { "Connected" } else { "Disconnected" }.into(),
        "lastActivityTime" => p.live()?.presence.last_activity.as_deref().unwrap_or(NEVER).into(),
        "cloudToDeviceMessageCount" => p.live()?.c2d_count.into(),
        "authenticationType" => "sas".into(),
        "x509Thumbprint" => json!({ "primaryThumbprint": null, "secondaryThumbprint": null }),
        "modelId" => p.head()?.model_id.as_deref().unwrap_or("").into(),
        "version" => p.head()?.version().into(),
        "statusReason" if module_id.is_none() => d.meta.status_reason.clone().into(),
        "capabilities" if module_id.is_none() => json!({ "iotEdge": d.meta.iot_edge }),
        _ => return Ok(None),
    }))
}

/// A device or module twin as IoT Hub's REST API (and its query results) show it.
pub fn twin_json(d: &Device, t: &Twin, live: Live) -> Value {
    let parts = Parts { device: d, twin: t, head: t.head(), live: &live };
    let mut m = serde_json::Map::new();
    for name in TWIN_FIELDS {
        let value = match name {
            "tags" => Some(if t.tags.is_object() { t.tags.clone() } else { json!({}) }),
            "properties" => Some(properties_json(t)),
            _ => twin_top(&parts, name).unwrap_or(None),
        };
        if let Some(v) = value {
            m.insert(name.into(), v);
        }
    }
    Value::Object(m)
}

fn properties_json(t: &Twin) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("desired".into(), Section::Desired.json(t));
    m.insert("reported".into(), Section::Reported.json(t));
    Value::Object(m)
}

/// What a twin document is made of, each part obtained when first asked for: a query's WHERE clause reads a few
/// values of every twin, most often from the identity record alone or one property tree.
pub trait TwinParts {
    fn device(&self) -> &Device;
    /// The live state the document shows (connection, last activity, queued C2D messages).
    fn live(&self) -> Result<&Live, StoreError>;
    /// The twin's versions and model id.
    fn head(&self) -> Result<&TwinHead, StoreError>;
    /// One property tree as stored (tags, desired or reported properties, without metadata).
    fn tree(&self, which: TwinTree) -> Result<&Value, StoreError>;
    /// The whole stored twin, with its metadata trees.
    fn twin(&self) -> Result<&Twin, StoreError>;
}

/// Parts already at hand.
struct Parts<'a> {
    device: &'a Device,
    twin: &'a Twin,
    head: TwinHead,
    live: &'a Live,
}

impl TwinParts for Parts<'_> {
    fn device(&self) -> &Device {
        self.device
    }
    fn live(&self) -> Result<&Live, StoreError> {
        Ok(self.live)
    }
    fn head(&self) -> Result<&TwinHead, StoreError> {
        Ok(&self.head)
    }
    fn tree(&self, which: TwinTree) -> Result<&Value, StoreError> {
        Ok(self.twin.tree(which))
    }
    fn twin(&self) -> Result<&Twin, StoreError> {
        Ok(self.twin)
    }
}

/// The value at `path` in the document [`twin_json`] builds, its first name matched without case (as IoT Hub's
/// query language matches `deviceid` or `ConnectionState`), `None` when there is none; found without building
/// the document. Building every twin with its `$metadata` was most of a query's time and memory (a twin of 40 KB
/// of small properties is some 3 MB of `Value`s), so a WHERE clause reads its values here: the identity record
/// alone answers `deviceId`, `status` and the like, the stored twin `tags.…` and `properties.….…` in place, and
/// only a path into `$metadata` builds that section.
pub fn twin_field<'a, P: TwinParts + ?Sized>(p: &'a P, path: &[String]) -> Result<Option<Cow<'a, Value>>, StoreError> {
    let Some((first, rest)) = path.split_first() else { return Ok(None) };
    let Some(name) = TWIN_FIELDS.iter().find(|n| n.eq_ignore_ascii_case(first)) else { return Ok(None) };
    let owned = |v: Value| walk(&v, rest).cloned().map(Cow::Owned);
    Ok(match *name {
        "tags" => {
            let tags = p.tree(TwinTree::Tags)?;
            if tags.is_object() {
                walk(tags, rest).map(Cow::Borrowed)
            } else {
                owned(json!({}))
            }
        }
        "properties" => match rest.split_first() {
            None => Some(Cow::Owned(properties_json(p.twin()?))),
            Some((which, rest)) => match Section::parse(which) {
                None => None,
                Some(section) => match rest.first().map(String::as_str) {
                    // The section itself, or a path into what twin_json adds: built from the whole twin.
                    None | Some("$metadata") => walk(&section.json(p.twin()?), rest).cloned().map(Cow::Owned),
                    Some("$version") if rest.len() == 1 => Some(Cow::Owned(section.version(p.head()?).into())),
                    Some("$version") => None,
                    // A property: read in place (stored properties never hold `$` names).
                    Some(_) => match p.tree(section.tree())? {
                        props @ Value::Object(_) => walk(props, rest).map(Cow::Borrowed),
                        _ => None,
                    },
                },
            },
        },
        other => twin_top(p, other)?.and_then(owned),
    })
}

/// The value at `path` under `v` (names matched exactly).
fn walk<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
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

    /// Every path of the document `twin_json` builds (and paths beside them that are not in it) finds the same
    /// value through `twin_field`, for a device and a module: a query reads the one as it would read the other.
    #[test]
    fn twin_field_finds_what_twin_json_shows() {
        use crate::hub::query::Document;
        use crate::model::{touch_metadata, Authentication, DeviceMeta, SymmetricKey};
        fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(at.clone());
            let mut missing = at.clone();
            missing.push("missing".into());
            out.push(missing);
            if let Value::Object(m) = v {
                for (k, child) in m {
                    at.push(k.clone());
                    paths(child, at, out);
                    at.pop();
                }
            }
        }
        let mut twin = Twin {
            tags: json!({"site": {"floor": 3, "name": "oslo"}, "list": [1, 2]}),
            desired: json!({"a": {"b": 1, "c": "x"}, "flag": true, "none": null}),
            reported: json!({"fw": "1.2", "deep": {"x": {"y": 2.5}}}),
            desired_version: 4,
            reported_version: 7,
            tags_version: 2,
            desired_updated: Some("2026-01-02T03:04:05Z".into()),
            model_id: Some("dtmi:com:example:Thermostat;1".into()),
            ..Twin::default()
        };
        touch_metadata(&mut twin.desired_meta, &json!({"a": {"b": 1}}), "2026-01-02T03:04:05Z", Some(4));
        touch_metadata(&mut twin.reported_meta, &json!({"deep": {"x": {"y": 2.5}}}), "2026-01-03T00:00:00Z", None);
        let live = Live {
            connected: true,
            c2d_count: 3,
            presence: crate::hub::Presence { state_updated: None, last_activity: Some("2026-01-04T00:00:00Z".into()) },
        };
        for id in ["d1", "d1/m1"] {
            let device = Device {
                device_id: id.into(),
                generation_id: "g".into(),
                status: "enabled".into(),
                authentication: Authentication {
                    kind: "sas".into(),
                    symmetric_key: SymmetricKey { primary_key: "k1".into(), secondary_key: "k2".into() },
                },
                created_time: NEVER.into(),
                meta: DeviceMeta { version: 2, status_reason: Some("why".into()), ..Default::default() },
            };
            let doc = twin_json(&device, &twin, live.clone());
            let parts = Parts { device: &device, twin: &twin, head: twin.head(), live: &live };
            let mut all = Vec::new();
            paths(&doc, &mut Vec::new(), &mut all);
            // Top-level names are matched without case; the others exactly.
            all.push(vec!["DEVICEID".into()]);
            all.push(vec!["connectionstate".into()]);
            all.push(vec!["Tags".into(), "site".into(), "floor".into()]);
            all.push(vec!["tags".into(), "Site".into()]);
            all.push(vec!["properties".into(), "Desired".into()]);
            all.push(vec!["properties".into(), "desired".into(), "$version".into(), "x".into()]);
            for path in all.into_iter().filter(|p| !p.is_empty()) {
                let want = doc.value(&path).unwrap().map(Cow::into_owned);
                let got = twin_field(&parts, &path).unwrap().map(Cow::into_owned);
                assert_eq!(got, want, "{id}: {path:?}");
            }
        }
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
