//! The local Device Provisioning Service (issue 11): one ID scope (generated at first start, stored), individual
//! enrollments and enrollment groups with symmetric keys, registration records, and allocation to this hub.
//!
//! Records have the JSON shapes of the DPS service REST API (`IndividualEnrollment`, `EnrollmentGroup`,
//! `DeviceRegistrationState`), so the same bodies work here and against a real DPS. The device side
//! ([`Hub::dps_authenticate`], [`Hub::dps_register`], [`Hub::dps_operation`]) is driven by the DPS connection task
//! (`conn/dps.rs`); the MQTT rules live in the core's `DpsSession`.
//!
//! Choices where DPS documents no behaviour for a single linked hub:
//! - Allocation happens when the register request arrives; the device is answered 202 `assigning` with
//!   `retry-after: 1` and learns the outcome from its first status poll, as from the real service.
//! - Re-provisioning an assigned registration keeps the device's twin (substatus
//!   `reprovisionedToInitialAssignment`), or, with `reprovisionPolicy.migrateDeviceData: false`, resets it to the
//!   enrollment's initial twin (`deviceDataReset`). The device's keys are set to the enrollment's (or derived) keys
//!   each time, so a re-keyed enrollment works after re-provisioning.
//! - An individual enrollment takes precedence over groups (DPS docs); for a group, the first group whose derived
//!   key (primary or secondary) verifies the token wins.
//! - No custom allocation: the registration state carries no returned `payload`; the device's request payload is
//!   kept as `requestPayload` (a hubsim extension) so it can be inspected, when it nests at most
//!   [`crate::model::MAX_STORED_JSON_DEPTH`] levels (a deeper one is refused with 400, so the record stays
//!   readable).
//!
//! Rules DPS documents, enforced here:
//! - Registration ids ([`is_valid_registration_id`]) are case-insensitive: enrollments and registrations are
//!   found and kept under the lowercase id ([`registration_key`]), and the device a registration creates is named
//!   by it (README "Choices" says why).
//! - At most [`MAX_ENROLLMENT_GROUPS`] enrollment groups (DPS's quota for symmetric-key groups).
//! - An enrollment's `initialTwin` obeys the twin rules of [`super::twin`] (names, strings, depth, sizes).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hubsim_proto::mqttbytes::v4::ConnectReturnCode;
use hubsim_proto::provisioning::{DpsConnectRequest, RegistrationState, RegistrationStatus};
use hubsim_proto::sas::{DeviceKey, ResourceUri};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::{random_id, ConnHandle, Hub, ServiceError};
use crate::model::{Authentication, Capabilities, Device, SymmetricKey, Twin};
use crate::store::StoreError;
use crate::timefmt::{iso8601, unix_ms};

/// The only attestation the local DPS supports (TPM is not possible over MQTT; X.509 is not emulated).
pub const SYMMETRIC_KEY: &str = "symmetricKey";

/// Seconds the device is told to wait before polling (`retry-after` of the 202 answer).
pub const RETRY_AFTER_S: u64 = 1;

/// `symmetricKey` attestation: the keys of an individual enrollment, or the group keys devices derive theirs from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    #[serde(rename = "type")]
    pub kind: String,
    pub symmetric_key: SymmetricKey,
}

/// What happens to the device's data when it is provisioned again (DPS `ReprovisionPolicy`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    #[serde(default = "yes")]
    pub update_hub_assignment: bool,
    #[serde(default = "yes")]
    pub migrate_device_data: bool,
}

fn yes() -> bool {
    true
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        ReprovisionPolicy { update_hub_assignment: true, migrate_device_data: true }
    }
}

/// What an individual enrollment and an enrollment group both hold (the fields DPS repeats in both shapes),
/// flattened into each, so the JSON is DPS's and records stored before this struct existed load unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    pub attestation: Attestation,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// `{"tags":{…},"properties":{"desired":{…}}}`, applied when the device is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<Value>,
    /// `enabled` or `disabled`.
    pub provisioning_status: String,
    #[serde(default)]
    pub reprovision_policy: ReprovisionPolicy,
    pub etag: String,
    pub created_date_time_utc: String,
    pub last_updated_date_time_utc: String,
}

impl Enrollment {
    /// What a PUT stores: `input`, with the keys of `old` unless it gives its own (generated when neither has
    /// them), `old`'s creation time, and a new etag.
    fn put(input: &EnrollmentInput, old: Option<&Enrollment>) -> Enrollment {
        let now = iso8601(unix_ms());
        Enrollment {
            attestation: Attestation {
                kind: SYMMETRIC_KEY.into(),
                symmetric_key: keys_for(input, old.map(|o| &o.attestation.symmetric_key)),
            },
            capabilities: input.capabilities.clone(),
            initial_twin: input.initial_twin.clone(),
            provisioning_status: input.provisioning_status.clone(),
            reprovision_policy: input.reprovision_policy.clone(),
            etag: random_id(),
            created_date_time_utc: old.map_or_else(|| now.clone(), |o| o.created_date_time_utc.clone()),
            last_updated_date_time_utc: now,
        }
    }

    fn is_enabled(&self) -> bool {
        self.provisioning_status == "enabled"
    }
}

/// A DPS individual enrollment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollment {
    pub registration_id: String,
    /// The device id to create; the registration id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(flatten)]
    pub enrollment: Enrollment,
}

/// A DPS enrollment group: devices derive their key from the group key and their registration id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    pub enrollment_group_id: String,
    #[serde(flatten)]
    pub enrollment: Enrollment,
}

/// A registration record: DPS's `DeviceRegistrationState`, plus what the emulator needs to answer polls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRecord {
    pub registration_id: String,
    pub created_date_time_utc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `assigned`, `failed` or `disabled`.
    pub status: String,
    /// `initialAssignment`, `deviceDataReset`, `reprovisionedToInitialAssignment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub last_updated_date_time_utc: String,
    pub etag: String,
    /// Data returned to the device (custom allocation only; never set by this emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// hubsim: the payload the device sent with its last register request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_payload: Option<Value>,
    /// hubsim: the enrollment group it registered through (absent for an individual enrollment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// The operation of the last register request, which status polls name.
    pub operation_id: String,
}

impl RegistrationRecord {
    /// The core's `registrationState` for the device's answer.
    pub fn state(&self) -> RegistrationState {
        let mut s = RegistrationState::new(
            self.registration_id.clone(),
            RegistrationStatus::parse(&self.status).unwrap_or(RegistrationStatus::Failed),
        );
        s.assigned_hub = self.assigned_hub.clone();
        s.device_id = self.device_id.clone();
        s.substatus = self.substatus.clone();
        s.error_code = self.error_code;
        s.error_message = self.error_message.clone();
        s.created_utc = Some(self.created_date_time_utc.clone());
        s.last_updated_utc = Some(self.last_updated_date_time_utc.clone());
        s.etag = Some(self.etag.clone());
        s.payload = self.payload.as_ref().map(Value::to_string);
        s
    }
}

/// Which enrollment a device's token matched at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// Individual enrollment, by registration id key.
    Individual(String),
    /// Enrollment group `group`; the device's key is the group key's derivation for `key_id`: the registration
    /// id as the device spelled it, or its lowercase form, whichever its token verified with.
    Group { group: String, key_id: String },
}

/// Live DPS state: the ID scope and the open DPS connections (closed at shutdown).
#[derive(Default)]
pub struct DpsState {
    id_scope: OnceLock<String>,
    conns: Mutex<HashMap<u64, ConnHandle>>,
    next: AtomicU64,
}

impl DpsState {
    pub(crate) fn close_all(&self, reason: hubsim_proto::hub::CloseReason) {
        let handles: Vec<_> = self.conns.lock().map(|c| c.values().cloned().collect()).unwrap_or_default();
        for h in handles {
            h.close(reason.clone());
        }
    }
}

/// A DPS-style key: 64 random bytes, base64 (what the real service generates).
fn random_dps_key() -> String {
    let mut k = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut k);
    STANDARD.encode(k)
}

/// `0ne` and 8 hexadecimal digits, the form of real ID scopes (`0ne00000A0A`).
fn random_id_scope() -> String {
    let mut b = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut b);
    format!("0ne{:08X}", u32::from_be_bytes(b))
}

fn operation_id() -> String {
    let mut b = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut b);
    format!("4.{:016x}.{}", u64::from_be_bytes(b), random_id())
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::new(400, 400004, message)
}

/// Most enrollment groups one DPS holds: Azure DPS's quota for symmetric-key enrollment groups, 100, not
/// adjustable ("Quotas and limits", MicrosoftDocs azure-docs `includes/iot-dps-limits.md`). A PUT of a new group
/// beyond it is refused with 409; every refused DPS CONNECT derives two keys per group, so the count bounds
/// that work too.
pub const MAX_ENROLLMENT_GROUPS: u64 = 100;

/// What [`is_valid_registration_id`] checks, in words, for error messages.
pub const REGISTRATION_ID_RULE: &str =
    "1–128 of a–z A–Z 0–9 - . _ :, starting and ending with a letter or digit; case-insensitive";

/// True for a valid DPS registration id: 1–128 ASCII letters, digits and `- . _ :`, the first and the last a
/// letter or digit. Sources: DPS REST API, Runtime Registration `DeviceRegistration.registrationId` ("a
/// case-insensitive string (up to 128 characters long) of alphanumeric characters plus certain special characters
/// : . _ -. No special characters allowed at start or end"); the concept pages ("Registration ID") allow `-` last,
/// which the REST reference does not: hubsim keeps the stricter rule (README "Choices").
pub fn is_valid_registration_id(id: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    has_dps_id_chars(id) && edge(id.chars().next()) && edge(id.chars().last())
}

/// 1–128 characters, each an ASCII letter or digit or one of `- . _ :`: the alphabet of DPS's registration ids
/// and of hubsim's enrollment group ids.
fn has_dps_id_chars(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
}

/// The key a registration id is found and kept under, and the device id it names by default: its lowercase form
/// (registration ids are case-insensitive, DPS "Registration ID"; README "Choices").
pub fn registration_key(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// True for a valid enrollment group id: 1–128 of `a-z A-Z 0-9 - . _ :`, ending alphanumeric or `-` (hubsim's
/// rule since enrollment groups came; group ids are case-sensitive).
pub fn is_valid_group_id(id: &str) -> bool {
    has_dps_id_chars(id) && id.chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// DPS's answer to a registration id that breaks [`is_valid_registration_id`]: 400 `400004`, with the service's
/// message "Invalid RegistrationId" (Azure/azure-iot-sdk-c#405 quotes it) followed by the id and the rule.
fn invalid_registration_id(id: &str) -> ServiceError {
    bad(format!("Invalid RegistrationId '{}': {REGISTRATION_ID_RULE}", super::truncate(id, 128)))
}

/// What a PUT body may set; everything else (allocation policies, linked hubs, webhooks) is accepted and ignored.
struct EnrollmentInput {
    device_id: Option<String>,
    keys: Option<(Option<String>, Option<String>)>,
    capabilities: Capabilities,
    initial_twin: Option<Value>,
    provisioning_status: String,
    reprovision_policy: ReprovisionPolicy,
}

fn parse_input(body: &Value) -> Result<EnrollmentInput, ServiceError> {
    let obj = body.as_object().ok_or_else(|| bad("the body must be a JSON object"))?;
    let str_field = |name: &str| -> Result<Option<String>, ServiceError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("'{name}' must be a string"))),
        }
    };
    let device_id = str_field("deviceId")?.filter(|d| !d.is_empty());
    if let Some(d) = &device_id {
        if !hubsim_proto::topic::is_valid_device_id(d) {
            return Err(bad(format!("deviceId '{}' is not a valid device id", super::truncate(d, 128))));
        }
    }
    let keys = match obj.get("attestation") {
        None | Some(Value::Null) => None,
        Some(a) => {
            let kind = a.get("type").and_then(Value::as_str).unwrap_or("");
            if !kind.eq_ignore_ascii_case(SYMMETRIC_KEY) {
                return Err(bad(format!(
                    "attestation type '{}' is not supported by hubsim's DPS: use \"symmetricKey\"",
                    super::truncate(kind, 64)
                )));
            }
            let key = |name: &str| -> Result<Option<String>, ServiceError> {
                match a.pointer(&format!("/symmetricKey/{name}")) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s.is_empty() => Ok(None),
                    Some(Value::String(s)) => {
                        DeviceKey::from_base64(s).map_err(|e| bad(format!("attestation.symmetricKey.{name}: {e}")))?;
                        Ok(Some(s.clone()))
                    }
                    Some(_) => Err(bad(format!("attestation.symmetricKey.{name} must be a base64 string"))),
                }
            };
            Some((key("primaryKey")?, key("secondaryKey")?))
        }
    };
    let capabilities = match obj.get("capabilities") {
        None | Some(Value::Null) => Capabilities::default(),
        Some(c) => match c.get("iotEdge") {
            None | Some(Value::Null) => Capabilities::default(),
            Some(Value::Bool(b)) => Capabilities { iot_edge: *b },
            Some(_) => return Err(bad("capabilities.iotEdge must be true or false")),
        },
    };
    let initial_twin = match obj.get("initialTwin") {
        None | Some(Value::Null) => None,
        Some(t) => Some(check_initial_twin(t)?),
    };
    let provisioning_status = match str_field("provisioningStatus")?.as_deref() {
        None => "enabled".to_owned(),
        Some(s) if s.eq_ignore_ascii_case("enabled") => "enabled".to_owned(),
        Some(s) if s.eq_ignore_ascii_case("disabled") => "disabled".to_owned(),
        Some(s) => {
            return Err(bad(format!(
                "provisioningStatus must be \"enabled\" or \"disabled\", not '{}'",
                super::truncate(s, 64)
            )))
        }
    };
    let reprovision_policy = match obj.get("reprovisionPolicy") {
        None | Some(Value::Null) => ReprovisionPolicy::default(),
        Some(p) => serde_json::from_value(p.clone()).map_err(|e| bad(format!("reprovisionPolicy: {e}")))?,
    };
    Ok(EnrollmentInput { device_id, keys, capabilities, initial_twin, provisioning_status, reprovision_policy })
}

/// An enrollment's `initialTwin` as it is stored: its `tags` and `properties.desired`, each checked by the twin
/// rules the twin API applies ([`super::twin`]: names, string and integer bounds, depth 10, 8 KB of tags and
/// 32 KB of desired properties), with the system properties a client echoes (`$metadata`, `$version`, …)
/// removed. Anything else in it is dropped: DPS's `InitialTwin` has only these two. A broken rule is DPS's 400
/// `400004`, naming the section and the rule.
fn check_initial_twin(t: &Value) -> Result<Value, ServiceError> {
    use super::twin::{check_size, strip_metadata, validate_patch, Section};
    let Value::Object(t) = t else { return Err(bad("initialTwin must be a JSON object")) };
    let section = |v: Option<&Value>, what: &str, rules: Section| -> Result<Option<Value>, ServiceError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => {
                let mut v = v.clone();
                strip_metadata(&mut v);
                validate_patch(&v, rules)
                    .and_then(|()| check_size(&v, rules))
                    .map_err(|e| bad(format!("{what}: {e}")))?;
                Ok(Some(v))
            }
            Some(_) => Err(bad(format!("{what} must be a JSON object"))),
        }
    };
    let mut out = Map::new();
    if let Some(tags) = section(t.get("tags"), "initialTwin.tags", Section::Tags)? {
        out.insert("tags".into(), tags);
    }
    let desired = match t.get("properties") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => section(p.get("desired"), "initialTwin.properties.desired", Section::Desired)?,
        Some(_) => return Err(bad("initialTwin.properties must be a JSON object")),
    };
    if let Some(desired) = desired {
        let mut p = Map::new();
        p.insert("desired".into(), desired);
        out.insert("properties".into(), Value::Object(p));
    }
    Ok(Value::Object(out))
}

/// A register request's `payload` (JSON text the core has already parsed) as it is stored: refused with 400
/// `400004` when it nests deeper than [`crate::model::MAX_STORED_JSON_DEPTH`], so the registration record
/// holding it can always be read back (DPS documents no depth limit; see [`crate::model`]).
fn check_payload(raw: &str) -> Result<Value, ServiceError> {
    use crate::model::{json_text_depth, MAX_STORED_JSON_DEPTH};
    let depth = json_text_depth(raw);
    if depth > MAX_STORED_JSON_DEPTH {
        return Err(bad(format!(
            "the registration payload nests {depth} levels deep; hubsim stores payloads of at most \
             {MAX_STORED_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_str(raw).map_err(|e| bad(format!("the registration payload is not JSON: {e}")))
}

/// The keys to store: given ones, else the existing ones, else generated.
fn keys_for(input: &EnrollmentInput, existing: Option<&SymmetricKey>) -> SymmetricKey {
    let (p, s) = input.keys.clone().unwrap_or((None, None));
    SymmetricKey {
        primary_key: p.or_else(|| existing.map(|k| k.primary_key.clone())).unwrap_or_else(random_dps_key),
        secondary_key: s.or_else(|| existing.map(|k| k.secondary_key.clone())).unwrap_or_else(random_dps_key),
    }
}

fn keys_of(k: &SymmetricKey) -> Vec<DeviceKey> {
    [&k.primary_key, &k.secondary_key].into_iter().filter_map(|k| DeviceKey::from_base64(k).ok()).collect()
}

/// The device's keys under an enrollment: its own, or derived from the group's for the registration id the
/// device's token was signed with ([`Enrolled::Group`]'s `key_id`).
fn device_keys(enrolled: &Enrolled, keys: &SymmetricKey) -> SymmetricKey {
    match enrolled {
        Enrolled::Individual(_) => keys.clone(),
        Enrolled::Group { key_id, .. } => {
            let derive = |k: &str| {
                DeviceKey::from_base64(k).map(|k| k.derive_for_registration(key_id).to_base64()).unwrap_or_default()
            };
            SymmetricKey { primary_key: derive(&keys.primary_key), secondary_key: derive(&keys.secondary_key) }
        }
    }
}

/// The twin an enrollment's `initialTwin` describes.
fn initial_twin(t: Option<&Value>) -> Twin {
    let mut twin = Twin::default();
    let obj = |v: Option<&Value>| match v {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => Value::Object(Map::new()),
    };
    if let Some(t) = t {
        twin.tags = obj(t.get("tags"));
        twin.desired = obj(t.pointer("/properties/desired"));
        if twin.desired.as_object().is_some_and(|d| !d.is_empty()) {
            // Set when the device is registered, as IoT Hub stamps them.
            let now = crate::timefmt::iso8601(crate::timefmt::unix_ms());
            crate::model::touch_metadata(&mut twin.desired_meta, &twin.desired, &now, Some(twin.desired_version));
            twin.desired_updated = Some(now);
        }
    }
    twin
}

/// A record that does not decode (stored by an older hubsim), as a clear 500 naming it and the way out.
fn unreadable(e: StoreError, what: &str, id: &str, delete: &str) -> ServiceError {
    match e {
        StoreError::Record(why) => ServiceError::new(
            500,
            500001,
            format!(
                "the stored {what} '{}' cannot be read ({why}); DELETE {delete} removes it",
                super::truncate(id, 128)
            ),
        ),
        other => other.into(),
    }
}

/// `r`, with a record that does not decode (stored by an older hubsim) taken as absent, with a warning: the
/// callers replace it. Other store errors stay errors.
fn or_replace<T>(r: Result<Option<T>, StoreError>, what: &str, id: &str) -> Result<Option<T>, StoreError> {
    match r {
        Err(StoreError::Record(why)) => {
            tracing::warn!("the stored {what} '{id}' cannot be read ({why}): it is replaced");
            Ok(None)
        }
        other => other,
    }
}

/// 412 unless `if_match` matches `current` (a record's etag; `None` for a record whose etag cannot be read).
fn check_etag(current: Option<&str>, if_match: Option<&str>, what: &str, id: &str) -> Result<(), ServiceError> {
    match if_match.map(|m| m.trim().trim_matches('"')) {
        None | Some("*") => Ok(()),
        Some(m) if current.is_some_and(|c| m == c.trim_matches('"')) => Ok(()),
        Some(_) => Err(ServiceError::new(
            412,
            412001,
            format!("the etag in If-Match is not the current etag of {what} '{}'", super::truncate(id, 128)),
        )),
    }
}

impl Hub {
    /// This DPS's ID scope (generated at first start).
    pub fn id_scope(&self) -> &str {
        self.dps.id_scope.get().map(String::as_str).unwrap_or("")
    }

    /// Loads the ID scope, generating and storing one at first start.
    pub async fn dps_startup(&self) -> Result<(), StoreError> {
        let scope = self
            .store
            .dps(|tx| match tx.dps_id_scope()? {
                Some(s) => Ok(s),
                None => {
                    let s = random_id_scope();
                    tx.put_dps_id_scope(&s)?;
                    Ok(s)
                }
            })
            .await?;
        let _ = self.dps.id_scope.set(scope);
        Ok(())
    }

    pub(crate) fn dps_register_conn(&self, handle: ConnHandle) -> u64 {
        let id = self.dps.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.dps.conns.lock() {
            c.insert(id, handle);
        }
        id
    }

    pub(crate) fn dps_unregister_conn(&self, id: u64) {
        if let Ok(mut c) = self.dps.conns.lock() {
            c.remove(&id);
        }
    }

    // ---- service API ----------------------------------------------------------------------------------------

    /// Creates or replaces an individual enrollment (keys generated unless given, kept on update unless given).
    /// The registration id is case-insensitive: the enrollment is kept, and answered, under its lowercase form.
    /// Errors: 400 `400004` for a registration id that breaks [`is_valid_registration_id`] or a body that breaks
    /// a rule (attestation, `initialTwin`'s twin rules, …); 412 for a stale `If-Match`.
    pub async fn put_enrollment(
        &self,
        registration_id: &str,
        body: &Value,
        if_match: Option<String>,
    ) -> Result<IndividualEnrollment, ServiceError> {
        if !is_valid_registration_id(registration_id) {
            return Err(invalid_registration_id(registration_id));
        }
        check_body_id(registration_id, body, "registrationId", true)?;
        let input = parse_input(body)?;
        let id = registration_key(registration_id);
        self.store
            .dps(move |tx| {
                let old = match tx.enrollment_head(&id)? {
                    None => None,
                    Some(head) => {
                        if let Err(e) = check_etag(head.etag.as_deref(), if_match.as_deref(), "enrollment", &id) {
                            return Ok(Err(e));
                        }
                        // An unreadable old record is replaced like a missing one (new keys unless given).
                        or_replace(tx.enrollment(&id), "enrollment", &id)?.map(|o| o.enrollment)
                    }
                };
                let e = IndividualEnrollment {
                    registration_id: id.clone(),
                    device_id: input.device_id.clone(),
                    enrollment: Enrollment::put(&input, old.as_ref()),
                };
                tx.put_enrollment(&e)?;
                Ok(Ok(e))
            })
            .await?
    }

    /// The individual enrollment of a registration id (any case). Errors: 404 `404201`; 500 for a stored record
    /// that cannot be read.
    pub async fn get_enrollment(&self, registration_id: &str) -> Result<IndividualEnrollment, ServiceError> {
        let id = registration_key(registration_id);
        self.store
            .dps_read(move |v| v.enrollment(&id))
            .await
            .map_err(|e| unreadable(e, "enrollment", registration_id, &format!("/enrollments/{registration_id}")))?
            .ok_or_else(|| enrollment_not_found(registration_id))
    }

    /// Every individual enrollment that can be read (an unreadable one is skipped with a logged warning).
    pub async fn enrollments(&self) -> Result<Vec<IndividualEnrollment>, ServiceError> {
        Ok(self.store.dps_read(|v| v.enrollments()).await?)
    }

    /// Deletes an individual enrollment and its registration record (as DPS does), even when either cannot be
    /// read. Errors: 404 `404201`; 412 for a stale `If-Match`.
    pub async fn delete_enrollment(&self, registration_id: &str, if_match: Option<String>) -> Result<(), ServiceError> {
        let id = registration_key(registration_id);
        self.store
            .dps(move |tx| {
                let Some(head) = tx.enrollment_head(&id)? else { return Ok(Err(enrollment_not_found(&id))) };
                if let Err(e) = check_etag(head.etag.as_deref(), if_match.as_deref(), "enrollment", &id) {
                    return Ok(Err(e));
                }
                tx.remove_enrollment(&id)?;
                if tx.registration_head(&id)?.is_some_and(|r| r.enrollment_group_id.is_none()) {
                    tx.remove_registration(&id)?;
                }
                Ok(Ok(()))
            })
            .await?
    }

    /// Creates or replaces an enrollment group. Errors: 400 `400004` for a bad id or body; 409 `409001` when
    /// creating one more than [`MAX_ENROLLMENT_GROUPS`]; 412 for a stale `If-Match`.
    pub async fn put_enrollment_group(
        &self,
        group_id: &str,
        body: &Value,
        if_match: Option<String>,
    ) -> Result<EnrollmentGroup, ServiceError> {
        if !is_valid_group_id(group_id) {
            return Err(bad(format!(
                "'{}' is not a valid enrollment group id (1–128 of a–z A–Z 0–9 - . _ :, ending alphanumeric or -)",
                super::truncate(group_id, 128)
            )));
        }
        check_body_id(group_id, body, "enrollmentGroupId", false)?;
        let input = parse_input(body)?;
        let id = group_id.to_owned();
        self.store
            .dps(move |tx| {
                let old = match tx.enrollment_group_head(&id)? {
                    None => {
                        let n = tx.enrollment_group_count()?;
                        if n >= MAX_ENROLLMENT_GROUPS {
                            return Ok(Err(ServiceError::new(
                                409,
                                409001,
                                format!(
                                    "this DPS already has {n} enrollment groups, DPS's limit for symmetric-key \
                                     enrollment groups ({MAX_ENROLLMENT_GROUPS}): delete one, or use individual \
                                     enrollments"
                                ),
                            )));
                        }
                        None
                    }
                    Some(head) => {
                        if let Err(e) = check_etag(head.etag.as_deref(), if_match.as_deref(), "enrollment group", &id) {
                            return Ok(Err(e));
                        }
                        or_replace(tx.enrollment_group(&id), "enrollment group", &id)?.map(|o| o.enrollment)
                    }
                };
                let g = EnrollmentGroup {
                    enrollment_group_id: id.clone(),
                    enrollment: Enrollment::put(&input, old.as_ref()),
                };
                tx.put_enrollment_group(&g)?;
                Ok(Ok(g))
            })
            .await?
    }

    /// An enrollment group. Errors: 404 `404202`; 500 for a stored record that cannot be read.
    pub async fn get_enrollment_group(&self, group_id: &str) -> Result<EnrollmentGroup, ServiceError> {
        let id = group_id.to_owned();
        self.store
            .dps_read(move |v| v.enrollment_group(&id))
            .await
            .map_err(|e| unreadable(e, "enrollment group", group_id, &format!("/enrollmentGroups/{group_id}")))?
            .ok_or_else(|| group_not_found(group_id))
    }

    /// Every enrollment group that can be read (an unreadable one is skipped with a logged warning).
    pub async fn enrollment_groups(&self) -> Result<Vec<EnrollmentGroup>, ServiceError> {
        Ok(self.store.dps_read(|v| v.enrollment_groups()).await?)
    }

    /// Deletes an enrollment group and the registration records made through it, readable or not. Errors: 404
    /// `404202`; 412 for a stale `If-Match`.
    pub async fn delete_enrollment_group(&self, group_id: &str, if_match: Option<String>) -> Result<(), ServiceError> {
        let id = group_id.to_owned();
        self.store
            .dps(move |tx| {
                let Some(head) = tx.enrollment_group_head(&id)? else { return Ok(Err(group_not_found(&id))) };
                if let Err(e) = check_etag(head.etag.as_deref(), if_match.as_deref(), "enrollment group", &id) {
                    return Ok(Err(e));
                }
                tx.remove_enrollment_group(&id)?;
                for (key, r) in tx.registration_heads()? {
                    if r.enrollment_group_id.as_deref() == Some(id.as_str()) {
                        tx.remove_registration(&key)?;
                    }
                }
                Ok(Ok(()))
            })
            .await?
    }

    /// The derived device key of `registration_id` in a group (primary), as `az iot dps enrollment-group
    /// compute-device-key` prints it.
    pub async fn group_device_key(&self, group_id: &str, registration_id: &str) -> Result<String, ServiceError> {
        let g = self.get_enrollment_group(group_id).await?;
        let k = DeviceKey::from_base64(&g.enrollment.attestation.symmetric_key.primary_key)
            .map_err(|e| ServiceError::new(500, 500001, format!("the stored group key: {e}")))?;
        Ok(k.derive_for_registration(registration_id).to_base64())
    }

    /// The registration record of a registration id (any case). Errors: 404 `404203`; 500 for a stored record
    /// that cannot be read (deleting it by id still works).
    pub async fn registration(&self, registration_id: &str) -> Result<RegistrationRecord, ServiceError> {
        let id = registration_key(registration_id);
        self.store
            .dps_read(move |v| v.registration(&id))
            .await
            .map_err(|e| unreadable(e, "registration", registration_id, &format!("/registrations/{registration_id}")))?
            .ok_or_else(|| registration_not_found(registration_id))
    }

    /// Every registration record that can be read (an unreadable one is skipped with a logged warning).
    pub async fn registrations(&self) -> Result<Vec<RegistrationRecord>, ServiceError> {
        Ok(self.store.dps_read(|v| v.registrations()).await?)
    }

    /// Deletes a registration record, read or not (the device identity stays, as with DPS); the next
    /// registration is an initial assignment again. Errors: 404 `404203`.
    pub async fn delete_registration(&self, registration_id: &str) -> Result<(), ServiceError> {
        let id = registration_key(registration_id);
        if !self.store.dps(move |tx| tx.remove_registration(&id)).await? {
            return Err(registration_not_found(registration_id));
        }
        Ok(())
    }

    // ---- the device side ------------------------------------------------------------------------------------

    /// Checks a DPS CONNECT: the ID scope, the registration id's form, then the token against the individual
    /// enrollment's keys, else against every group's keys derived for the registration id (as the device spelled
    /// it, and in lowercase). The enrollments are read on a read transaction, never on the single writer: the
    /// ID scope is public, so anyone can make the emulator do this. A refusal is CONNACK 0x05 (DPS's 401),
    /// 0x04 for an invalid registration id, or 0x03 when the store failed.
    pub async fn dps_authenticate(&self, req: &DpsConnectRequest) -> Result<Enrolled, (ConnectReturnCode, String)> {
        if !req.id_scope.eq_ignore_ascii_case(self.id_scope()) {
            return Err((
                ConnectReturnCode::NotAuthorized,
                format!(
                    "401: ID scope '{}' is not this DPS's ('{}')",
                    super::truncate(&req.id_scope, 64),
                    self.id_scope()
                ),
            ));
        }
        // The id becomes a hub device id: one DPS would refuse is refused here, before anything is registered.
        if !is_valid_registration_id(&req.registration_id) {
            return Err((
                ConnectReturnCode::BadUserNamePassword,
                format!(
                    "400: Invalid RegistrationId '{}': {REGISTRATION_ID_RULE}",
                    super::truncate(&req.registration_id, 64)
                ),
            ));
        }
        let key = registration_key(&req.registration_id);
        let k2 = key.clone();
        let (individual, groups) = self
            .store
            .dps_read(move |v| Ok((v.enrollment(&k2)?, v.enrollment_groups()?)))
            .await
            .map_err(|e| (ConnectReturnCode::ServiceUnavailable, e.to_string()))?;
        let resource = ResourceUri::Registration {
            id_scope: self.id_scope().to_owned(),
            registration_id: req.registration_id.clone(),
        };
        let now_s = unix_ms() / 1000;
        let rid = super::truncate(&req.registration_id, 128);
        if let Some(e) = individual {
            let keys = keys_of(&e.enrollment.attestation.symmetric_key);
            let refs: Vec<&DeviceKey> = keys.iter().collect();
            return match req.token.verify(&refs, &resource, now_s) {
                Ok(()) => Ok(Enrolled::Individual(e.registration_id)),
                Err(why) => Err((
                    ConnectReturnCode::NotAuthorized,
                    format!("401: the token does not verify against individual enrollment '{rid}': {why}"),
                )),
            };
        }
        // A device derives its key from its registration id as it spells it (the DPS docs' samples); some
        // clients derive it from the lowercase id DPS keeps. Either is the group key holder's.
        let mut key_ids = vec![req.registration_id.clone()];
        if key != req.registration_id {
            key_ids.push(key);
        }
        let mut last = None;
        for g in &groups {
            let group_keys = keys_of(&g.enrollment.attestation.symmetric_key);
            for key_id in &key_ids {
                let keys: Vec<DeviceKey> = group_keys.iter().map(|k| k.derive_for_registration(key_id)).collect();
                let refs: Vec<&DeviceKey> = keys.iter().collect();
                match req.token.verify(&refs, &resource, now_s) {
                    Ok(()) => {
                        return Ok(Enrolled::Group { group: g.enrollment_group_id.clone(), key_id: key_id.clone() })
                    }
                    Err(why) => last = Some(why),
                }
            }
        }
        Err((
            ConnectReturnCode::NotAuthorized,
            match last {
                None => format!("401: registration '{rid}' has no individual enrollment and there is no enrollment group"),
                Some(why) => format!(
                    "401: registration '{rid}' has no individual enrollment and the token verifies against no enrollment group's derived key ({why})"
                ),
            },
        ))
    }

    /// Handles a register request: allocates the device to this hub (creating or updating its identity) and
    /// stores the registration record, under the lowercase registration id, with a new operation id. A disabled
    /// enrollment gives status `disabled`. Errors: 400 `400004` for a payload nested deeper than
    /// [`crate::model::MAX_STORED_JSON_DEPTH`] or an enrollment whose stored `initialTwin` breaks the twin rules;
    /// 404 when the enrollment went away since CONNECT.
    pub async fn dps_register(
        &self,
        enrolled: &Enrolled,
        registration_id: &str,
        request_payload: Option<String>,
    ) -> Result<RegistrationRecord, ServiceError> {
        let enrolled = enrolled.clone();
        let rid = registration_key(registration_id);
        let hub_name = self.settings.host_name.clone();
        let payload = request_payload.as_deref().map(check_payload).transpose()?;
        let (record, disable_conn) = self
            .store
            .dps(move |tx| {
                let now = iso8601(unix_ms());
                // A record an older hubsim stored unreadable is replaced, as after a deletion.
                let prev = or_replace(tx.registration(&rid), "registration", &rid)?;
                let (device_id, group, enrollment) = match &enrolled {
                    Enrolled::Individual(id) => match tx.enrollment(id)? {
                        Some(e) => (e.device_id.unwrap_or_else(|| rid.clone()), None, e.enrollment),
                        None => return Ok(Err(enrollment_not_found(id))),
                    },
                    Enrolled::Group { group: gid, .. } => match tx.enrollment_group(gid)? {
                        Some(g) => (rid.clone(), Some(gid.clone()), g.enrollment),
                        None => return Ok(Err(group_not_found(gid))),
                    },
                };
                let mut record = RegistrationRecord {
                    registration_id: rid.clone(),
                    created_date_time_utc: prev
                        .as_ref()
                        .map(|p| p.created_date_time_utc.clone())
                        .unwrap_or(now.clone()),
                    assigned_hub: None,
                    device_id: None,
                    status: "disabled".into(),
                    substatus: None,
                    error_code: None,
                    error_message: None,
                    last_updated_date_time_utc: now.clone(),
                    etag: random_id(),
                    payload: None,
                    request_payload: payload,
                    enrollment_group_id: group,
                    operation_id: operation_id(),
                };
                if !enrollment.is_enabled() {
                    tx.put_registration(&record)?;
                    return Ok(Ok((record, None)));
                }
                let Enrollment { attestation, capabilities: caps, initial_twin: twin, reprovision_policy, .. } =
                    enrollment;
                // An initial twin stored by an older hubsim, before the twin rules applied to it, is checked
                // here: applied, it would make every later desired patch fail.
                if let Some(Err(e)) = twin.as_ref().map(check_initial_twin) {
                    return Ok(Err(bad(format!("the enrollment's {e}: PUT the enrollment again"))));
                }
                let keys = device_keys(&enrolled, &attestation.symmetric_key);
                let reprovision = prev.as_ref().is_some_and(|p| p.status == "assigned");
                let reset = reprovision && !reprovision_policy.migrate_device_data;
                let mut replaced = None;
                match tx.device(&device_id)? {
                    None => {
                        tx.put_device(&Device {
                            device_id: device_id.clone(),
                            generation_id: format!("{}", unix_ms()),
                            status: "enabled".into(),
                            authentication: Authentication { kind: "sas".into(), symmetric_key: keys },
                            created_time: now,
                            meta: crate::model::DeviceMeta {
                                version: 1,
                                iot_edge: caps.iot_edge,
                                ..Default::default()
                            },
                        })?;
                        tx.put_twin(&device_id, &initial_twin(twin.as_ref()))?;
                    }
                    Some(mut d) => {
                        if d.authentication.symmetric_key != keys {
                            replaced = Some(device_id.clone());
                        }
                        d.authentication = Authentication { kind: "sas".into(), symmetric_key: keys };
                        d.meta.iot_edge = caps.iot_edge;
                        d.meta.version += 1;
                        tx.put_device(&d)?;
                        if reset {
                            let mut t = initial_twin(twin.as_ref());
                            let old = tx.twin(&device_id)?;
                            // Versions only grow, so devices and services notice the reset.
                            t.desired_version = old.desired_version + 1;
                            t.reported_version = old.reported_version + 1;
                            tx.put_twin(&device_id, &t)?;
                        }
                    }
                }
                record.status = "assigned".into();
                record.assigned_hub = Some(hub_name);
                record.device_id = Some(device_id);
                record.substatus = Some(
                    match (reprovision, reset) {
                        (false, _) => "initialAssignment",
                        (true, false) => "reprovisionedToInitialAssignment",
                        (true, true) => "deviceDataReset",
                    }
                    .into(),
                );
                tx.put_registration(&record)?;
                Ok(Ok((record, replaced)))
            })
            .await??;
        // A connection made with keys that are no longer the device's is closed, as after a key change.
        if let Some(d) = disable_conn {
            self.close_connection(
                &d,
                hubsim_proto::hub::CloseReason::ClosedByService(
                    "the device was provisioned again with other keys".into(),
                ),
            );
        }
        Ok(record)
    }

    /// The record an operation id names, if it is the registration's current operation (read on a read
    /// transaction: a device may poll as often as it likes). `Err(StoreError::Record)` when the stored record
    /// cannot be read.
    pub async fn dps_operation(
        &self,
        registration_id: &str,
        operation_id: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        let id = registration_key(registration_id);
        let rec = self.store.dps_read(move |v| v.registration(&id)).await?;
        Ok(rec.filter(|r| r.operation_id == operation_id))
    }
}

fn enrollment_not_found(id: &str) -> ServiceError {
    ServiceError::new(404, 404201, format!("there is no individual enrollment '{}'", super::truncate(id, 128)))
}

fn group_not_found(id: &str) -> ServiceError {
    ServiceError::new(404, 404202, format!("there is no enrollment group '{}'", super::truncate(id, 128)))
}

fn registration_not_found(id: &str) -> ServiceError {
    ServiceError::new(404, 404203, format!("there is no registration '{}'", super::truncate(id, 128)))
}

/// A PUT body's `field`, when it has one, must name the id in the path (compared ignoring case when
/// `case_insensitive`, as registration ids are).
fn check_body_id(path_id: &str, body: &Value, field: &str, case_insensitive: bool) -> Result<(), ServiceError> {
    if let Some(id) = body.get(field).and_then(Value::as_str) {
        let same = if case_insensitive { id.eq_ignore_ascii_case(path_id) } else { id == path_id };
        if !same {
            return Err(bad(format!(
                "the body's {field} '{}' is not the one in the path '{}'",
                super::truncate(id, 128),
                super::truncate(path_id, 128)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_scopes_look_like_real_ones() {
        let s = random_id_scope();
        assert_eq!(s.len(), 11);
        assert!(s.starts_with("0ne"));
        assert!(s[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(hubsim_proto::provisioning::is_dps_username(&format!("{s}/registrations/r1/api-version=2019-03-31")));
    }

    #[test]
    fn registration_ids_follow_dps_rules() {
        assert!(is_valid_registration_id("sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"));
        assert!(is_valid_registration_id("a.b_c:d"));
        assert!(is_valid_registration_id("Sensor-A"));
        assert!(is_valid_registration_id("x"));
        assert!(is_valid_registration_id(&"a".repeat(128)));
        for bad in ["", "ends.", "has space", "-lead", ".lead", ":lead", "_lead", "trail-", "trail_", "é", "a/b"] {
            assert!(!is_valid_registration_id(bad), "{bad}");
        }
        assert!(!is_valid_registration_id(&"a".repeat(129)));
        assert_eq!(registration_key("Sensor-A"), "sensor-a");
        // Group ids keep their own rule (case-sensitive, may end with '-').
        assert!(is_valid_group_id("line-1") && is_valid_group_id("Line-") && !is_valid_group_id("a b"));
    }

    #[test]
    fn bodies_are_validated_with_reasons() {
        let err = |v: Value| match parse_input(&v) {
            Err(ServiceError::Api { status, message, .. }) => (status, message),
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert_eq!(err(json!([1])).0, 400);
        assert!(err(json!({"attestation": {"type": "x509"}})).1.contains("symmetricKey"));
        assert!(err(json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "!!"}}}))
            .1
            .contains("primaryKey"));
        assert!(err(json!({"provisioningStatus": "maybe"})).1.contains("provisioningStatus"));
        assert!(err(json!({"initialTwin": {"tags": 3}})).1.contains("tags"));
        assert!(err(json!({"initialTwin": {"properties": []}})).1.contains("initialTwin.properties"));
        assert!(err(json!({"initialTwin": {"tags": {"$weird": 1}}})).1.contains("initialTwin.tags"));
        assert!(err(json!({"capabilities": {"iotEdge": "yes"}})).1.contains("iotEdge"));
        let ok = parse_input(&json!({
            "attestation": {"type": "symmetricKey"},
            "capabilities": {"iotEdge": true},
            "provisioningStatus": "Disabled",
            "allocationPolicy": "hashed",
            "reprovisionPolicy": {"migrateDeviceData": false},
        }))
        .unwrap();
        assert!(ok.capabilities.iot_edge);
        assert_eq!(ok.provisioning_status, "disabled");
        assert!(!ok.reprovision_policy.migrate_device_data && ok.reprovision_policy.update_hub_assignment);
    }

    #[test]
    fn group_devices_get_the_derived_keys() {
        // The reference vector (iothub-mqtt.md §3).
        let group = SymmetricKey {
            primary_key: "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
                .into(),
            secondary_key: "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
                .into(),
        };
        let enrolled = Enrolled::Group { group: "g".into(), key_id: "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6".into() };
        let k = device_keys(&enrolled, &group);
        assert_eq!(k.primary_key, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
        assert_eq!(device_keys(&Enrolled::Individual("r".into()), &group), group);
    }

    /// Records as stored before the shared [`Enrollment`] part existed, byte for byte what the serializer wrote.
    const STORED_INDIVIDUAL: &str = r#"{"registrationId":"r1","deviceId":"d1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"cA==","secondaryKey":"cw=="}},"capabilities":{"iotEdge":true},"initialTwin":{"properties":{"desired":{"rate":5}},"tags":{"site":"A"}},"provisioningStatus":"enabled","reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":false},"etag":"e1","createdDateTimeUtc":"2026-01-02T03:04:05.006Z","lastUpdatedDateTimeUtc":"2026-01-02T03:04:06.007Z"}"#;
    const STORED_GROUP: &str = r#"{"enrollmentGroupId":"g1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"cA==","secondaryKey":"cw=="}},"capabilities":{"iotEdge":false},"provisioningStatus":"disabled","reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":true},"etag":"e2","createdDateTimeUtc":"2026-01-02T03:04:05.006Z","lastUpdatedDateTimeUtc":"2026-01-02T03:04:06.007Z"}"#;

    #[test]
    fn records_stored_in_the_old_shape_load_and_are_written_back_the_same() {
        let e: IndividualEnrollment = serde_json::from_str(STORED_INDIVIDUAL).unwrap();
        assert_eq!((e.registration_id.as_str(), e.device_id.as_deref()), ("r1", Some("d1")));
        let en = &e.enrollment;
        assert_eq!(en.attestation.symmetric_key.primary_key, "cA==");
        assert!(en.capabilities.iot_edge && en.is_enabled() && !en.reprovision_policy.migrate_device_data);
        assert_eq!(en.initial_twin, Some(json!({"tags": {"site": "A"}, "properties": {"desired": {"rate": 5}}})));
        assert_eq!((en.etag.as_str(), en.created_date_time_utc.as_str()), ("e1", "2026-01-02T03:04:05.006Z"));
        assert_eq!(serde_json::to_string(&e).unwrap(), STORED_INDIVIDUAL);
        let g: EnrollmentGroup = serde_json::from_str(STORED_GROUP).unwrap();
        assert_eq!(g.enrollment_group_id, "g1");
        assert!(!g.enrollment.is_enabled() && g.enrollment.initial_twin.is_none());
        assert_eq!(g.enrollment.last_updated_date_time_utc, "2026-01-02T03:04:06.007Z");
        assert_eq!(serde_json::to_string(&g).unwrap(), STORED_GROUP);
        // Fields added by DPS since, or written by older versions, are ignored as before.
        let mut v: Value = serde_json::from_str(STORED_GROUP).unwrap();
        v["allocationPolicy"] = json!("hashed");
        assert_eq!(serde_json::from_value::<EnrollmentGroup>(v).unwrap(), g);
    }

    #[test]
    fn etags_match_with_or_without_quotes_and_star() {
        let g: EnrollmentGroup = serde_json::from_str(STORED_GROUP).unwrap();
        let check = |m: Option<&str>| check_etag(Some(&g.enrollment.etag), m, "enrollment group", "g1");
        assert!(check(None).is_ok());
        assert!(check(Some("*")).is_ok());
        assert!(check(Some("\"e2\"")).is_ok());
        match check(Some("e3")) {
            Err(ServiceError::Api { status, message, .. }) => {
                assert_eq!(status, 412);
                assert!(message.contains("enrollment group 'g1'"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn initial_twin_sets_tags_and_desired() {
        let t = initial_twin(Some(&json!({"tags": {"site": "A"}, "properties": {"desired": {"rate": 5}}})));
        assert_eq!(t.tags, json!({"site": "A"}));
        assert_eq!(t.desired, json!({"rate": 5}));
        assert_eq!(initial_twin(None), Twin::default());
    }
}
