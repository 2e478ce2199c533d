//! Service-side errors, shaped like IoT Hub's REST errors: an HTTP status and a six-digit IoT Hub error code
//! (`404001 DeviceNotFound`, …; troubleshoot-error-codes doc). The API layer turns them into JSON.

use serde_json::{json, Value};
use thiserror::Error;

use crate::store::StoreError;
use crate::timefmt::{iso8601, unix_ms};

/// A service-side error, shaped like IoT Hub's REST errors.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("{message}")]
    Api { status: u16, code: u32, message: String },
    #[error(transparent)]
    Store(StoreError),
}

/// A database that cannot be written (a full disk) is IoT Hub's 503 `ServiceUnavailable` (503001), so clients
/// retry; any other store failure stays an internal error (500001).
impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ServiceError::new(503, 503001, e.to_string()),
            other => ServiceError::Store(other),
        }
    }
}

impl ServiceError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        ServiceError::Api { status, code, message: message.into() }
    }
    pub(crate) fn device_not_found(id: &str) -> Self {
        Self::new(404, 404001, format!("device '{id}' does not exist"))
    }
}

/// IoT Hub's JSON error body (`{"errorCode": 404001, "message": …, "timestampUtc": …}`), for HTTP answers and
/// for twin error responses over MQTT alike.
pub fn error_json(code: u32, message: &str) -> Value {
    json!({ "errorCode": code, "message": message, "timestampUtc": iso8601(unix_ms()) })
}
