//! Direct methods (reference §6): a request is handed to the device's connection task and the answer (or the
//! timeout, 5–300 s) goes back to the service caller. A caller may wait up to `connectTimeoutInSeconds` for the
//! device to come online; the wait is woken by the connection and its subscription, never by polling.

use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

use super::{ConnCmd, ConnHandle, Hub, MethodCall, MethodReply, ServiceError};

/// Largest direct-method payload, request or response, bytes: IoT Hub's 128 KB (reference §6, [DOC-DM]).
pub const MAX_METHOD_PAYLOAD: usize = 128 * 1024;

/// Longest `connectTimeoutInSeconds` of a direct-method call: IoT Hub's 300 s (default 0: the device must be
/// online already).
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Most direct-method callers waiting for their device to come online at once (hub-wide). Each holds its
/// payload (up to 128 KB) for up to [`MAX_CONNECT_TIMEOUT`]; a caller beyond them is answered 429
/// `ThrottlingException` at once.
pub const MAX_ONLINE_WAITERS: usize = 1000;

/// The callers waiting for one device ([`Hub::came_online`] wakes them).
pub(crate) struct Waiting {
    notify: Arc<Notify>,
    callers: usize,
}

/// One caller's wait for a device: its place among [`MAX_ONLINE_WAITERS`] and its device's entry in the hub's
/// table, which goes with its last waiter.
struct OnlineWait<'a> {
    hub: &'a Hub,
    device: String,
    notify: Arc<Notify>,
}

impl Drop for OnlineWait<'_> {
    fn drop(&mut self) {
        let mut table = self.hub.online.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = table.get_mut(&self.device) {
            w.callers -= 1;
            if w.callers == 0 {
                table.remove(&self.device);
            }
        }
        self.hub.online_callers.send_modify(|n| *n -= 1);
    }
}

/// How one attempt to hand a call to the device's connection ended.
enum Attempt {
    Done(Result<(u16, Value), ServiceError>),
    /// The call never reached the device (no connection, its task ended before taking it, or no subscription to
    /// methods yet): it may be tried again once the device comes online.
    NotOnline,
}

impl Hub {
    /// Invokes a direct method on a device that is online now (`connectTimeoutInSeconds` 0) and waits up to
    /// `timeout` for its answer; see [`Hub::invoke_method_waiting`].
    pub async fn invoke_method(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<(u16, Value), ServiceError> {
        self.invoke_method_waiting(id, name, payload, timeout, Duration::ZERO).await
    }

    /// Invokes a direct method and waits for the device's answer (IoT Hub's "Invoke a direct method"): the device
    /// is given up to `connect_timeout` (`connectTimeoutInSeconds`, 0 to [`MAX_CONNECT_TIMEOUT`]) to connect and
    /// subscribe to `$iothub/methods/POST/#`, then `timeout` (`responseTimeoutInSeconds`, 5 to 300 s) to answer.
    /// The wait is woken by the device's connection or subscription (no polling). Errors: 400 for a bad
    /// timeout, name or payload; 404 `DeviceNotFound`; 404 `DeviceNotOnline` when the device is not online for
    /// methods by the connect deadline (or disconnects before answering); 429 `ThrottlingException` when
    /// [`MAX_ONLINE_WAITERS`] callers already wait for devices to connect; 504 `GatewayTimeout` without an
    /// answer in time; 502 for an answer that is not JSON or over [`MAX_METHOD_PAYLOAD`].
    pub async fn invoke_method_waiting(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<(u16, Value), ServiceError> {
        if !(5..=300).contains(&timeout.as_secs()) {
            return Err(ServiceError::new(400, 400004, "responseTimeoutInSeconds must be between 5 and 300"));
        }
        if connect_timeout > MAX_CONNECT_TIMEOUT {
            return Err(ServiceError::new(400, 400004, "connectTimeoutInSeconds must be between 0 and 300"));
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
        let body = if payload.is_null() { Bytes::new() } else { Bytes::from(payload.to_string()) };
        if body.len() > MAX_METHOD_PAYLOAD {
            return Err(ServiceError::new(
                400,
                400004,
                format!("the method payload is {} bytes; IoT Hub accepts at most {MAX_METHOD_PAYLOAD}", body.len()),
            ));
        }
        let not_online = || {
            let who = match id.split_once('/') {
                Some((d, m)) => format!("module '{m}' of device '{d}'"),
                None => format!("device '{id}'"),
            };
            ServiceError::new(
                404,
                404103,
                format!(
                    "{who} is not online for methods: it is not connected or not subscribed to $iothub/methods/POST/#"
                ),
            )
        };
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let wait = if connect_timeout.is_zero() { None } else { Some(self.wait_online(id)?) };
        loop {
            // Armed before looking, so a connection or subscription that comes after the look still wakes it.
            let mut woken = wait.as_ref().map(|w| Box::pin(w.notify.clone().notified_owned()));
            if let Some(w) = woken.as_mut() {
                w.as_mut().enable();
            }
            if let Some(conn) = self.conn(id) {
                match self.attempt(&conn, id, name, body.clone(), timeout).await {
                    Attempt::Done(r) => return r,
                    Attempt::NotOnline => {}
                }
            }
            let Some(w) = woken else { return Err(not_online()) };
            if tokio::time::timeout_at(deadline, w).await.is_err() {
                return Err(not_online());
            }
        }
    }

    /// Hands the call to the connection and waits up to `timeout` for the answer.
    async fn attempt(&self, conn: &ConnHandle, id: &str, name: &str, payload: Bytes, timeout: Duration) -> Attempt {
        let (reply, rx) = oneshot::channel();
        let call = async {
            // Waits for room in the connection's queue within the same deadline as the answer.
            if conn.send(ConnCmd::Method(Box::new(MethodCall { name: name.to_owned(), payload, reply }))).await.is_err()
            {
                return None;
            }
            Some(rx.await)
        };
        Attempt::Done(match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                Err(ServiceError::new(504, 504101, format!("the device did not answer within {} s", timeout.as_secs())))
            }
            // The connection ended before it took the call: the device never saw it.
            Ok(None) => return Attempt::NotOnline,
            Ok(Some(Err(_))) => {
                Err(ServiceError::new(404, 404103, format!("device '{id}' disconnected before answering")))
            }
            Ok(Some(Ok(MethodReply::NotSubscribed))) => return Attempt::NotOnline,
            Ok(Some(Ok(MethodReply::Response { payload, .. }))) if payload.len() > MAX_METHOD_PAYLOAD => {
                Err(ServiceError::new(
                    502,
                    502001,
                    format!(
                        "the device answered with a payload of {} bytes; IoT Hub accepts at most {MAX_METHOD_PAYLOAD}",
                        payload.len()
                    ),
                ))
            }
            Ok(Some(Ok(MethodReply::Response { status, payload }))) => {
                if payload.is_empty() {
                    Ok((status, Value::Null))
                } else {
                    serde_json::from_slice(&payload)
                        .map(|v| (status, v))
                        .map_err(|_| ServiceError::new(502, 502001, "the device answered with a body that is not JSON"))
                }
            }
        })
    }

    /// A place among the callers waiting for a device to come online (at most [`MAX_ONLINE_WAITERS`]), in the
    /// device's entry of the table.
    fn wait_online(&self, device: &str) -> Result<OnlineWait<'_>, ServiceError> {
        let mut table = self.online.lock().unwrap_or_else(|e| e.into_inner());
        if *self.online_callers.borrow() >= MAX_ONLINE_WAITERS {
            return Err(ServiceError::new(
                429,
                429001,
                format!("{MAX_ONLINE_WAITERS} method calls already wait for their devices to connect; retry shortly"),
            ));
        }
        let w = table.entry(device.to_owned()).or_insert_with(|| Waiting { notify: Arc::default(), callers: 0 });
        w.callers += 1;
        self.online_callers.send_modify(|n| *n += 1);
        Ok(OnlineWait { hub: self, device: device.to_owned(), notify: w.notify.clone() })
    }

    /// Follows how many direct-method callers wait for their device to come online (`connectTimeoutInSeconds`).
    pub fn method_callers_waiting_online(&self) -> tokio::sync::watch::Receiver<usize> {
        self.online_callers.subscribe()
    }

    /// The device connected, or subscribed to methods: the callers waiting for it look again.
    pub(crate) fn came_online(&self, device: &str) {
        let notify = self.online.lock().ok().and_then(|t| t.get(device).map(|w| w.notify.clone()));
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// A fresh `$rid` for a method request.
    pub fn next_rid(&self) -> String {
        format!("{:x}", self.next_rid.fetch_add(1, Ordering::Relaxed))
    }
}
