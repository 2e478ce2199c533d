//! The Device Provisioning Service (DPS) over MQTT, both sides (reference §1, §3, §9).
//!
//! A device that has an ID scope, a registration id and a key (its own, or derived from an enrollment group key)
//! asks DPS which hub to use. [`ProvisioningSession`] is that device, [`DpsSession`] is the emulator's DPS for one
//! connection; both are sans-IO state machines in the style of [`DeviceSession`](crate::DeviceSession) and
//! [`HubSession`](crate::HubSession). This module also owns the DPS JSON bodies: [`RegisterRequest`] (what a device
//! sends), [`OperationResponse`] and [`ErrorBody`] (what DPS answers), read and written with the core's [`json`].
//!
//! The wire format is the one the official SDKs speak, checked against their code:
//! - CONNECT: ClientId `{registrationId}`, user name `{idScope}/registrations/{registrationId}/api-version=2019-03-31
//!   &ClientVersion={ua}` (no `?`), password a SAS token for `{idScope}/registrations/{id}` with `skn=registration`
//!   (Python sends no `skn`), CleanSession 1 (Node `provisioning/transport/mqtt/src/mqtt.ts`; Python
//!   `pipeline_stages_provisioning_mqtt.py`).
//! - SUBSCRIBE `$dps/registrations/res/#`; register `$dps/registrations/PUT/iotdps-register/?$rid={rid}` with
//!   `{"registrationId":…[,"payload":…]}`; poll `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}
//!   &operationId={id}` (body `" "`).
//! - Answers on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`, `$rid` first: the Python SDK
//!   splits the topic on `$` and would lose a `retry-after` written before it (`mqtt_topic_provisioning.py`).
//!   Every body is JSON, errors included: Node `JSON.parse`s every answer before looking at the status.
//! - 2xx bodies carry `operationId` and `status` (`assigning`, `assigned`, `failed`, `disabled`, `unassigned`); the
//!   Embedded C SDK treats a body without both as failed (`az_iot_provisioning_client.c`). Status 429 and 5xx are
//!   retried after `retry-after` (default 2 s, Python `provisioning/pipeline/constant.py`), other ≥ 300 are fatal.

pub mod device;
pub mod service;
#[cfg(test)]
mod tests;

// Each session has its own `State`, reached as `device::State` and `service::State`.
pub use device::{
    Assignment, Awaited, EnrollmentKey, Progress, ProvisioningConfig, ProvisioningError, ProvisioningEvent,
    ProvisioningSession, Registration, StartError,
};
pub use service::{
    is_dps_username, sniff_endpoint, DpsConfig, DpsConnectRequest, DpsEvent, DpsSession, Endpoint, RespondError,
};

use core::fmt;
use thiserror::Error;

use crate::json::{self, ObjectWriter, Value};

/// The DPS API version the SDKs put in the user name.
pub const DPS_API_VERSION: &str = "2019-03-31";

/// The global device endpoint of the public cloud.
pub const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";

/// The `skn` of every DPS SAS token.
pub const DPS_POLICY: &str = "registration";

/// Where a registration stands (DPS `RegistrationOperationStatus.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistrationStatus {
    Unassigned,
    Assigning,
    Assigned,
    Failed,
    Disabled,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationStatus::Unassigned => "unassigned",
            RegistrationStatus::Assigning => "assigning",
            RegistrationStatus::Assigned => "assigned",
            RegistrationStatus::Failed => "failed",
            RegistrationStatus::Disabled => "disabled",
        }
    }
    /// Parses a status case-insensitively, as the Node SDK does (`result.status.toLowerCase()`).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Unassigned, Self::Assigning, Self::Assigned, Self::Failed, Self::Disabled]
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for RegistrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a DPS body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("[DPS-MQTT] the body is not UTF-8")]
    NotUtf8,
    #[error("[DPS-MQTT] the body is not JSON: {0}")]
    Json(#[from] json::JsonError),
    #[error("[DPS-MQTT] the body is not a JSON object")]
    NotObject,
    #[error("[DPS-MQTT] the body has no '{0}' of the right type")]
    Field(&'static str),
    #[error("[DPS-MQTT] unknown registration status '{0}'")]
    UnknownStatus(String),
}

fn object(body: &[u8]) -> Result<Value, BodyError> {
    let text = core::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    let v = json::parse(text)?;
    if v.as_object().is_some() {
        Ok(v)
    } else {
        Err(BodyError::NotObject)
    }
}

/// An optional string member: absent and `null` are `None`, another type is an error.
fn opt_str(v: &Value, name: &'static str) -> Result<Option<String>, BodyError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_)) => Err(BodyError::Field(name)),
    }
}

fn req_str(v: &Value, name: &'static str) -> Result<String, BodyError> {
    opt_str(v, name)?.ok_or(BodyError::Field(name))
}

fn opt_u64(v: &Value, name: &'static str) -> Result<Option<u64>, BodyError> {
    match v.get(name) {
        None => Ok(None),
        Some(m) if m.is_null() => Ok(None),
        Some(m) => m.as_u64().map(Some).ok_or(BodyError::Field(name)),
    }
}

/// Custom JSON data, kept as (compact) text: absent and `null` are `None`.
fn opt_raw(v: &Value, name: &'static str) -> Option<String> {
    v.get(name).filter(|m| !m.is_null()).map(Value::to_string)
}

fn status(v: &Value) -> Result<RegistrationStatus, BodyError> {
    let s = req_str(v, "status")?;
    RegistrationStatus::parse(&s).ok_or(BodyError::UnknownStatus(s))
}

/// Checks that `payload` is one JSON value, so that it can be embedded verbatim in a body.
pub fn check_payload(payload: &str) -> Result<(), json::JsonError> {
    json::parse(payload).map(|_| ())
}

/// The body of a register request: `{"registrationId":"…"[,"payload":{…}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    pub registration_id: String,
    /// Custom allocation data as JSON text, e.g. `{"modelId":"dtmi:…"}` for IoT Plug and Play; compact when read
    /// from a body.
    pub payload: Option<String>,
}

impl RegisterRequest {
    /// The JSON body; `payload` must already be valid JSON ([`check_payload`]).
    pub fn to_json(&self) -> String {
        let mut w = ObjectWriter::new();
        w.string("registrationId", &self.registration_id);
        if let Some(p) = &self.payload {
            w.raw("payload", p.trim());
        }
        w.finish()
    }
    /// Reads a body; Python sends `"payload": null` when there is none.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let v = object(body)?;
        Ok(RegisterRequest { registration_id: req_str(&v, "registrationId")?, payload: opt_raw(&v, "payload") })
    }
}

/// The `registrationState` object of an operation response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationState {
    pub registration_id: String,
    pub status: RegistrationStatus,
    pub assigned_hub: Option<String>,
    pub device_id: Option<String>,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset`, `reprovisionedToInitialAssignment`.
    pub substatus: Option<String>,
    /// Set when `status` is `failed`, e.g. 400207.
    pub error_code: Option<u64>,
    pub error_message: Option<String>,
    /// ISO 8601 UTC times as DPS writes them; the core reads no clock, so the caller supplies them.
    pub created_utc: Option<String>,
    pub last_updated_utc: Option<String>,
    pub etag: Option<String>,
    /// Custom data returned to the device, as JSON text (compact when read from a body).
    pub payload: Option<String>,
}

impl RegistrationState {
    /// A state with only the registration id and status set.
    pub fn new(registration_id: impl Into<String>, status: RegistrationStatus) -> Self {
        RegistrationState {
            registration_id: registration_id.into(),
            status,
            assigned_hub: None,
            device_id: None,
            substatus: None,
            error_code: None,
            error_message: None,
            created_utc: None,
            last_updated_utc: None,
            etag: None,
            payload: None,
        }
    }

    /// The JSON object, members in the order the service writes them (Embedded C parser tests).
    pub fn to_json(&self) -> String {
        let mut w = ObjectWriter::new();
        w.string("registrationId", &self.registration_id)
            .opt_string("createdDateTimeUtc", self.created_utc.as_deref())
            .opt_string("assignedHub", self.assigned_hub.as_deref())
            .opt_string("deviceId", self.device_id.as_deref())
            .string("status", self.status.as_str())
            .opt_string("substatus", self.substatus.as_deref());
        if let Some(code) = self.error_code {
            w.number("errorCode", code);
        }
        w.opt_string("errorMessage", self.error_message.as_deref())
            .opt_string("lastUpdatedDateTimeUtc", self.last_updated_utc.as_deref())
            .opt_string("etag", self.etag.as_deref());
        if let Some(p) = &self.payload {
            w.raw("payload", p.trim());
        }
        w.finish()
    }

    fn from_value(v: &Value) -> Result<Self, BodyError> {
        if v.as_object().is_none() {
            return Err(BodyError::Field("registrationState"));
        }
        Ok(RegistrationState {
            registration_id: opt_str(v, "registrationId")?.unwrap_or_default(),
            status: status(v)?,
            assigned_hub: opt_str(v, "assignedHub")?,
            device_id: opt_str(v, "deviceId")?,
            substatus: opt_str(v, "substatus")?,
            error_code: opt_u64(v, "errorCode")?,
            error_message: opt_str(v, "errorMessage")?,
            created_utc: opt_str(v, "createdDateTimeUtc")?,
            last_updated_utc: opt_str(v, "lastUpdatedDateTimeUtc")?,
            etag: opt_str(v, "etag")?,
            payload: opt_raw(v, "payload"),
        })
    }
}

/// A 2xx answer: `{"operationId":"…","status":"…"[,"registrationState":{…}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationResponse {
    pub operation_id: String,
    pub status: RegistrationStatus,
    pub registration_state: Option<RegistrationState>,
}

impl OperationResponse {
    pub fn to_json(&self) -> String {
        let mut w = ObjectWriter::new();
        w.string("operationId", &self.operation_id).string("status", self.status.as_str());
        if let Some(state) = &self.registration_state {
            w.raw("registrationState", &state.to_json());
        }
        w.finish()
    }
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let v = object(body)?;
        let registration_state = match v.get("registrationState") {
            None => None,
            Some(s) if s.is_null() => None,
            Some(s) => Some(RegistrationState::from_value(s)?),
        };
        Ok(OperationResponse { operation_id: req_str(&v, "operationId")?, status: status(&v)?, registration_state })
    }
}

/// An error answer: `{"errorCode":401002,"trackingId":"…","message":"…","timestampUtc":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Six digits: the HTTP status followed by a detail, e.g. 401002 (unauthorized), 429001 (throttled).
    pub error_code: u64,
    pub message: String,
    pub tracking_id: Option<String>,
    pub timestamp_utc: Option<String>,
}

impl ErrorBody {
    pub fn new(error_code: u64, message: impl Into<String>) -> Self {
        ErrorBody { error_code, message: message.into(), tracking_id: None, timestamp_utc: None }
    }
    pub fn to_json(&self) -> String {
        ObjectWriter::new()
            .number("errorCode", self.error_code)
            .opt_string("trackingId", self.tracking_id.as_deref())
            .string("message", &self.message)
            .opt_string("timestampUtc", self.timestamp_utc.as_deref())
            .finish()
    }
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let v = object(body)?;
        Ok(ErrorBody {
            error_code: opt_u64(&v, "errorCode")?.ok_or(BodyError::Field("errorCode"))?,
            message: opt_str(&v, "message")?.unwrap_or_default(),
            tracking_id: opt_str(&v, "trackingId")?,
            timestamp_utc: opt_str(&v, "timestampUtc")?,
        })
    }
}
