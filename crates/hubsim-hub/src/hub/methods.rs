//! Direct methods (reference §6): a request is handed to the device's connection task and the answer (or the
//! timeout, 5–300 s) goes back to the service caller.

use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

use super::{ConnCmd, Hub, MethodCall, MethodReply, ServiceError};

/// Largest direct-method payload, request or response, bytes: IoT Hub's 128 KB (reference §6, [DOC-DM]).
pub const MAX_METHOD_PAYLOAD: usize = 128 * 1024;

impl Hub {
    /// Invokes a direct method and waits for the device's answer.
    pub async fn invoke_method(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<(u16, Value), ServiceError> {
        if !(5..=300).contains(&timeout.as_secs()) {
            return Err(ServiceError::new(400, 400004, "responseTimeoutInSeconds must be between 5 and 300"));
        }
        if name.is_empty() || name.chars().any(|c| !c.is_ascii_graphic() || "$()<>@,;:\\\"/[]?={}".contains(c)) {
            return Err(ServiceError::new(400, 400004, format!("'{name}' is not a valid method name")));
        }
        // The name goes into the device's topic `$iothub/methods/POST/{name}/…`, which may not hold MQTT's
        // wildcards (MQTT-3.3.2-2): a device could not receive it.
        if let Some(c) = name.chars().find(|c| matches!(c, '+' | '#')) {
            return Err(ServiceError::new(
                400,
                400004,
                format!("'{name}' cannot be a method name for an MQTT device: '{c}' is an MQTT wildcard, which a topic name may not hold"),
            ));
        }
        self.get_device(id).await?;
        let not_online = || {
            ServiceError::new(404, 404103, format!("device '{id}' is not online for methods: it is not connected or not subscribed to $iothub/methods/POST/#"))
        };
        let conn = self.conn(id).ok_or_else(not_online)?;
        let (reply, rx) = oneshot::channel();
        let body = if payload.is_null() { Bytes::new() } else { Bytes::from(payload.to_string()) };
        if body.len() > MAX_METHOD_PAYLOAD {
            return Err(ServiceError::new(
                400,
                400004,
                format!("the method payload is {} bytes; IoT Hub accepts at most {MAX_METHOD_PAYLOAD}", body.len()),
            ));
        }
        let call = async {
            // Waits for room in the connection's queue within the same deadline as the answer.
            conn.send(ConnCmd::Method(Box::new(MethodCall { name: name.to_owned(), payload: body, reply })))
                .await
                .map_err(|_| ())?;
            rx.await.map_err(|_| ())
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                Err(ServiceError::new(504, 504101, format!("the device did not answer within {} s", timeout.as_secs())))
            }
            Ok(Err(_)) => Err(ServiceError::new(404, 404103, format!("device '{id}' disconnected before answering"))),
            Ok(Ok(MethodReply::NotSubscribed)) => Err(not_online()),
            Ok(Ok(MethodReply::Response { payload, .. })) if payload.len() > MAX_METHOD_PAYLOAD => {
                Err(ServiceError::new(
                    502,
                    502001,
                    format!(
                        "the device answered with a payload of {} bytes; IoT Hub accepts at most {MAX_METHOD_PAYLOAD}",
                        payload.len()
                    ),
                ))
            }
            Ok(Ok(MethodReply::Response { status, payload })) => {
                let value = if payload.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&payload).map_err(|_| {
                        ServiceError::new(502, 502001, "the device answered with a body that is not JSON")
                    })?
                };
                Ok((status, value))
            }
        }
    }

    /// A fresh `$rid` for a method request.
    pub fn next_rid(&self) -> String {
        format!("{:x}", self.next_rid.fetch_add(1, Ordering::Relaxed))
    }
}
