//! The records the emulator keeps, as they are stored and as the service API shows them (JSON).
//!
//! Text a peer chose (client ids, user names, reasons quoting them) is stored and logged at most
//! [`PEER_TEXT_MAX`] bytes long ([`bounded`]), so a hostile CONNECT cannot fill the disk or the terminal.
//!
//! JSON a peer chose is stored inside a record only when it nests at most a bounded depth, so every stored record
//! can be read back: serde_json refuses to read more than 127 levels, and a record adds its own levels around
//! what it holds (a 127-level twin patch, and later a 127-level DPS payload, once made their records unreadable).
//! Twins keep IoT Hub's rule ([`crate::hub::twin::MAX_DEPTH`], 10, applied to enrollments' `initialTwin` too);
//! JSON for which neither IoT Hub nor DPS documents a bound (a DPS registration `payload`) is held to
//! [`MAX_STORED_JSON_DEPTH`] ([`json_text_depth`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most bytes of peer-supplied text kept in a record or a log line; the rest is replaced by `…(N bytes)`.
pub const PEER_TEXT_MAX: usize = 256;

/// Deepest nesting (arrays and objects, levels) of peer-supplied JSON hubsim stores inside a record where Azure
/// documents no bound of its own: hubsim's choice, far below serde_json's 127-level reading limit, so the
/// record's own levels and the API answers that embed the record (at most 3 more) always read back.
pub const MAX_STORED_JSON_DEPTH: usize = 32;

/// How deeply the JSON text `s` nests arrays and objects (levels; 0 for a scalar, 1 for `{}` or `[1]`), counted
/// on the text without building it, so any input is measured in one pass with no recursion. Brackets inside
/// strings do not count; `s` need not be valid JSON (what it is not is for the parser to say).
pub fn json_text_depth(s: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in s.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `s` cut to at most [`PEER_TEXT_MAX`] bytes (at a character boundary), followed by `…(N bytes)` giving the
/// original length when it was cut.
pub fn bounded(s: &str) -> String {
    crate::hub::truncate(s, PEER_TEXT_MAX)
}

impl ConnectionRecord {
    /// A record of one connection's event, not yet numbered or timed (the store sets `seq`, the log `time`).
    pub fn new(
        operation: &str,
        device_id: Option<String>,
        transport: &str,
        remote: &str,
        result_type: u32,
        reason: &str,
        description: String,
    ) -> Self {
        // A module's connection names `{device}/{module}`: the record says both apart, as IoT Hub's logs do, so
        // asking for a device's records shows its modules' too.
        let (device_id, module_id) = match device_id.as_deref().and_then(|d| d.split_once('/')) {
            Some((d, m)) => (Some(d.to_owned()), Some(m.to_owned())),
            None => (device_id, None),
        };
        ConnectionRecord {
            seq: 0,
            time: String::new(),
            operation: operation.into(),
            device_id,
            module_id,
            transport: transport.into(),
            remote: remote.into(),
            result_type,
            reason: reason.into(),
            description,
        }
    }

    /// The identity as the logs print it: `device`, `device/module`, or `-` when no valid CONNECT named one.
    pub fn identity(&self) -> impl std::fmt::Display + '_ {
        struct Identity<'a>(&'a ConnectionRecord);
        impl std::fmt::Display for Identity<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match (&self.0.device_id, &self.0.module_id) {
                    (Some(d), Some(m)) => write!(f, "{d}/{m}"),
                    (Some(d), None) => f.write_str(d),
                    (None, _) => f.write_str("-"),
                }
            }
        }
        Identity(self)
    }

    /// The record with every peer-supplied field cut to [`PEER_TEXT_MAX`] bytes.
    pub fn bounded(mut self) -> Self {
        for s in [&mut self.operation, &mut self.transport, &mut self.remote, &mut self.reason, &mut self.description] {
            if s.len() > PEER_TEXT_MAX || s.chars().any(crate::hub::is_unsafe_char) {
                *s = bounded(s);
            }
        }
        for s in [&mut self.device_id, &mut self.module_id].into_iter().flatten() {
            if s.len() > PEER_TEXT_MAX || s.chars().any(crate::hub::is_unsafe_char) {
                *s = bounded(s);
            }
        }
        self
    }
}

/// A device identity in the registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    pub generation_id: String,
    /// `enabled` or `disabled`.
    pub status: String,
    pub authentication: Authentication,
    pub created_time: String,
    /// IoT Hub's registry fields beyond the above (absent in records written before they existed).
    #[serde(default)]
    pub meta: DeviceMeta,
}

/// A device's registry fields that IoT Hub's REST API shows and `PUT` replaces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceMeta {
    /// Bumped by every change of the record; the device's ETag is made from it and the generation id.
    pub version: u64,
    pub status_reason: Option<String>,
    pub status_updated_time: Option<String>,
    /// `capabilities.iotEdge`.
    pub iot_edge: bool,
    /// `managedBy` of a module identity.
    pub managed_by: Option<String>,
}

/// IoT Hub `DeviceCapabilities`, as a DPS enrollment sets them (`{"iotEdge": true}`); on a device they are kept in
/// [`DeviceMeta::iot_edge`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub iot_edge: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    #[serde(rename = "type")]
    pub kind: String,
    pub symmetric_key: SymmetricKey,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    pub primary_key: String,
    pub secondary_key: String,
}

impl Device {
    pub fn enabled(&self) -> bool {
        self.status == "enabled"
    }
}

/// Desired and reported properties with their versions, and the service-only tags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Twin {
    /// Tags (service-only; set from a DPS enrollment's initial twin).
    #[serde(default = "empty_object")]
    pub tags: Value,
    pub desired: Value,
    pub reported: Value,
    pub desired_version: u64,
    pub reported_version: u64,
    /// Bumped by every tag change, so the twin's ETag and version move with tags too.
    #[serde(default)]
    pub tags_version: u64,
    /// When desired / reported properties last changed (ISO 8601), for `$metadata.$lastUpdated`.
    #[serde(default)]
    pub desired_updated: Option<String>,
    #[serde(default)]
    pub reported_updated: Option<String>,
    /// When each property and object last changed: trees mirroring `desired` and `reported` whose nodes hold
    /// `$lastUpdated` (and, for desired, `$lastUpdatedVersion`), IoT Hub's per-property `$metadata` ("IoT Hub
    /// maintains the timestamp of the last update for each JSON object"; see [`touch_metadata`]).
    #[serde(default = "empty_object")]
    pub desired_meta: Value,
    #[serde(default = "empty_object")]
    pub reported_meta: Value,
    /// The IoT Plug and Play model id the device last announced in CONNECT (the twin's `modelId`).
    #[serde(default)]
    pub model_id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Default for Twin {
    fn default() -> Self {
        Twin {
            tags: empty_object(),
            desired: Value::Object(Default::default()),
            reported: Value::Object(Default::default()),
            desired_version: 1,
            reported_version: 1,
            tags_version: 0,
            desired_updated: None,
            reported_updated: None,
            desired_meta: empty_object(),
            reported_meta: empty_object(),
            model_id: None,
        }
    }
}

impl Twin {
    /// `{"desired":{…,"$version":n},"reported":{…,"$version":m}}`, the body of a twin GET over MQTT.
    pub fn mqtt_document(&self) -> Value {
        let mut d = self.desired.clone();
        let mut r = self.reported.clone();
        if let Value::Object(m) = &mut d {
            m.insert("$version".into(), self.desired_version.into());
        }
        if let Value::Object(m) = &mut r {
            m.insert("$version".into(), self.reported_version.into());
        }
        serde_json::json!({ "desired": d, "reported": r })
    }

    /// The twin's version as the service shows it: it moves with every desired, reported or tag change.
    pub fn version(&self) -> u64 {
        self.desired_version + self.reported_version + self.tags_version
    }
}

/// A twin's versions and model id: what its ETag, `version` and `modelId` are made of ([`Twin::head`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TwinHead {
    pub desired_version: u64,
    pub reported_version: u64,
    #[serde(default)]
    pub tags_version: u64,
    #[serde(default)]
    pub model_id: Option<String>,
}

impl TwinHead {
    /// The twin's version as the service shows it ([`Twin::version`]).
    pub fn version(&self) -> u64 {
        self.desired_version + self.reported_version + self.tags_version
    }
}

/// One of a twin's property trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwinTree {
    Tags,
    Desired,
    Reported,
}

impl Twin {
    pub fn head(&self) -> TwinHead {
        TwinHead {
            desired_version: self.desired_version,
            reported_version: self.reported_version,
            tags_version: self.tags_version,
            model_id: self.model_id.clone(),
        }
    }

    pub fn tree(&self, which: TwinTree) -> &Value {
        match which {
            TwinTree::Tags => &self.tags,
            TwinTree::Desired => &self.desired,
            TwinTree::Reported => &self.reported,
        }
    }
}

/// Records in `meta` (a tree of [`Twin::desired_meta`]'s shape) that each property `patch` sets or deletes
/// changed `now` (ISO 8601), at `version` for desired properties (`None` for reported ones, which IoT Hub does
/// not version per property). An object's node is stamped along with the children the patch changes; a deleted
/// property's node goes; a value that replaces an object drops that object's children.
pub fn touch_metadata(meta: &mut Value, patch: &Value, now: &str, version: Option<u64>) {
    let Value::Object(p) = patch else { return };
    if !meta.is_object() {
        *meta = empty_object();
    }
    let Value::Object(m) = meta else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            m.remove(k);
            continue;
        }
        let node = m.entry(k.clone()).or_insert_with(empty_object);
        if !v.is_object() || !node.is_object() {
            *node = empty_object();
        }
        if let Value::Object(n) = node {
            n.insert("$lastUpdated".into(), now.into());
            if let Some(version) = version {
                n.insert("$lastUpdatedVersion".into(), version.into());
            }
        }
        if v.is_object() {
            touch_metadata(node, v, now, version);
        }
    }
}

/// Applies a JSON merge patch (RFC 7386: `null` deletes) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if k.starts_with('$') {
                        continue;
                    }
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A queued cloud-to-device message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct C2dMessage {
    pub seq: u64,
    pub device_id: String,
    pub message_id: String,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// `none`, `positive`, `negative` or `full`.
    pub ack: String,
    pub properties: Vec<(String, Option<String>)>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    pub enqueued_ms: u64,
    pub expiry_ms: u64,
    pub delivery_count: u32,
    pub lock_until_ms: Option<u64>,
}

/// A device-to-cloud event as stored and streamed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub seq: u64,
    pub device_id: String,
    pub module_id: Option<String>,
    /// The body as text when it is UTF-8.
    pub body: Option<String>,
    #[serde(with = "b64")]
    pub body_base64: Vec<u8>,
    pub system_properties: serde_json::Map<String, Value>,
    pub application_properties: serde_json::Map<String, Value>,
    pub enqueued_time: String,
}

impl EventRecord {
    /// About how many bytes the record holds in memory: its text and bytes, with a fixed allowance per property
    /// (map node, string headers) and for the record itself. What the live stream's byte bound counts.
    pub fn held_bytes(&self) -> usize {
        fn props(m: &serde_json::Map<String, Value>) -> usize {
            m.iter().map(|(k, v)| k.len() + v.as_str().map_or(16, str::len) + 96).sum()
        }
        std::mem::size_of::<EventRecord>()
            + self.device_id.len()
            + self.module_id.as_ref().map_or(0, String::len)
            + self.body.as_ref().map_or(0, String::len)
            + self.body_base64.len()
            + props(&self.system_properties)
            + props(&self.application_properties)
            + self.enqueued_time.len()
    }
}

/// One entry of the connection log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRecord {
    pub seq: u64,
    pub time: String,
    /// `deviceConnect`, `deviceDisconnect` or `connectRefused`.
    pub operation: String,
    pub device_id: Option<String>,
    pub module_id: Option<String>,
    /// `mqtt` (TLS) or `ws` (WebSocket).
    pub transport: String,
    pub remote: String,
    /// IoT Hub result code (0 for success and clean disconnects).
    pub result_type: u32,
    /// Machine-friendly reason, e.g. `qos2-publish`.
    pub reason: String,
    pub description: String,
}

/// A delivery feedback record (`iothub-ack`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    pub seq: u64,
    pub original_message_id: String,
    pub device_id: String,
    /// `Success`, `Expired`, `DeliveryCountExceeded`, `Rejected` or `Purged`.
    pub status_code: String,
    pub description: String,
    pub enqueued_time_utc: String,
}

/// Serde helper: bytes as standard base64 strings.
pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null_and_ignores_metadata() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1], "$version": 9}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn json_text_depth_counts_levels_outside_strings() {
        assert_eq!(json_text_depth("1"), 0);
        assert_eq!(json_text_depth("\"[[{\""), 0);
        assert_eq!(json_text_depth("{}"), 1);
        assert_eq!(json_text_depth(r#"{"a":[1,{"b":"]]\"[["}],"c":{}}"#), 3);
        assert_eq!(json_text_depth(&format!("{}{}", "[".repeat(127), "]".repeat(127))), 127);
        // Unbalanced text is measured all the same (the parser refuses it).
        assert_eq!(json_text_depth("]]]{"), 1);
        // What the limit lets through reads back inside a record, with the levels the API answers add.
        let inner = "[".repeat(MAX_STORED_JSON_DEPTH) + &"]".repeat(MAX_STORED_JSON_DEPTH);
        let wrapped = format!(r#"{{"a":{{"b":{{"c":{{"d":{inner}}}}}}}}}"#);
        assert!(serde_json::from_str::<Value>(&wrapped).is_ok());
    }

    #[test]
    fn peer_text_is_bounded_at_a_char_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(40_000);
        let b = bounded(&long);
        assert!(b.len() <= PEER_TEXT_MAX + 32, "{}", b.len());
        assert!(b.ends_with("…(80000 bytes)"), "{b}");
        let rec = ConnectionRecord {
            seq: 1,
            time: String::new(),
            operation: "connectRefused".into(),
            device_id: Some("x".repeat(65_000)),
            module_id: None,
            transport: "mqtt".into(),
            remote: "127.0.0.1:1".into(),
            result_type: 2,
            reason: "r".into(),
            description: format!("device '{}' is not registered", "x".repeat(65_000)),
        }
        .bounded();
        assert!(serde_json::to_vec(&rec).unwrap().len() < 1024);
    }

    #[test]
    fn mqtt_document_is_unwrapped_with_versions() {
        let tw = Twin {
            desired: json!({"x": 1}),
            reported: json!({}),
            desired_version: 3,
            reported_version: 7,
            ..Twin::default()
        };
        assert_eq!(tw.mqtt_document(), json!({"desired": {"x": 1, "$version": 3}, "reported": {"$version": 7}}));
    }

    #[test]
    fn peer_text_is_bounded_and_cannot_forge_a_log_line_or_drive_a_terminal() {
        assert_eq!(bounded("plain"), "plain");
        assert_eq!(bounded("a\r\n2026-01-01 INFO forged"), "a\\r\\n2026-01-01 INFO forged");
        assert_eq!(bounded("\u{1b}]0;title\u{7}\u{0}"), "\\u{1b}]0;title\\u{7}\\u{0}");
        assert_eq!(bounded("a\u{202e}b\u{2028}c"), "a\\u{202e}b\\u{2028}c");
        let long = "é".repeat(200);
        let cut = bounded(&long);
        assert!(cut.starts_with(&"é".repeat(128)) && cut.ends_with("…(400 bytes)"), "{cut}");
        let rec =
            ConnectionRecord::new("dpsConnectRefused", Some("x\ny".into()), "mqtt", "r", 1, "k", "id 'a\rb'".into())
                .bounded();
        assert_eq!((rec.device_id.as_deref(), rec.description.as_str()), (Some("x\\ny"), "id 'a\\rb'"));
        // A module's record names its device and module apart.
        let rec = ConnectionRecord::new("deviceConnect", Some("d1/m1".into()), "mqtt", "r", 0, "connected", "".into());
        assert_eq!((rec.device_id.as_deref(), rec.module_id.as_deref()), (Some("d1"), Some("m1")));
    }
}
