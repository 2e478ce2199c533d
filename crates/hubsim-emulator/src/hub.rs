//! The hub's shared state: the store, the live connections, the event and connection-log streams, and the
//! operations both sides use — service calls (registry, C2D, methods, twins) and connection-side steps
//! (authenticate, store telemetry, take and complete C2D messages).
//!
//! The connection map is a std `Mutex` never held across an `.await` (mini-redis `db.rs`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hubsim_proto::hub::{CloseReason, ConnectRequest, HubConfig, ReceivedTelemetry};
use hubsim_proto::mqttbytes::v4::ConnectReturnCode;
use hubsim_proto::mqttbytes::QoS;
use hubsim_proto::property_bag::SystemProperty;
use hubsim_proto::sas::{DeviceKey, ResourceUri};
use hubsim_proto::topic::TopicFilter;
use hubsim_proto::Instant;
use rand::RngCore;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::model::{
    merge_patch, Authentication, C2dMessage, ConnectionRecord, Device, EventRecord, FeedbackRecord, SymmetricKey, Twin,
};
use crate::store::{Store, StoreError, Tx};
use crate::timefmt::{iso8601, unix_ms};

/// Hub-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HostName in connection strings and SAS audiences.
    pub host_name: String,
    /// Most C2D messages queued per device (IoT Hub: 50).
    pub c2d_max_queue: usize,
    pub c2d_default_ttl: Duration,
    pub c2d_max_delivery_count: u32,
    pub c2d_lock: Duration,
    pub protocol: HubConfig,
}

impl Settings {
    pub fn new(host_name: impl Into<String>) -> Self {
        Settings {
            host_name: host_name.into(),
            c2d_max_queue: 50,
            c2d_default_ttl: Duration::from_secs(3600),
            c2d_max_delivery_count: 10,
            c2d_lock: Duration::from_secs(60),
            protocol: HubConfig::default(),
        }
    }
}

/// A service-side error, shaped like IoT Hub's REST errors.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("{message}")]
    Api { status: u16, code: u32, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        ServiceError::Api { status, code, message: message.into() }
    }
    fn device_not_found(id: &str) -> Self {
        Self::new(404, 404001, format!("device '{id}' does not exist"))
    }
}

/// Commands the hub sends to a connection task.
#[derive(Debug)]
pub enum ConnCmd {
    Close(CloseReason),
    /// New C2D messages may be deliverable.
    C2dAvailable,
    Method {
        name: String,
        payload: Bytes,
        reply: oneshot::Sender<MethodReply>,
    },
    Desired {
        version: u64,
        body: Bytes,
    },
}

/// A device's answer to a method call.
#[derive(Debug)]
pub enum MethodReply {
    Response { status: u16, payload: Bytes },
    NotSubscribed,
}

struct ConnEntry {
    id: u64,
    tx: mpsc::UnboundedSender<ConnCmd>,
}

/// What authentication grants.
pub struct Admitted {
    pub session_present: bool,
    pub restored: Vec<(TopicFilter, QoS)>,
    pub token_expiry: Option<Instant>,
    pub generation_id: String,
}

/// Parameters of a C2D send.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendC2d {
    /// Body as text.
    pub body: Option<String>,
    /// Body as base64 (wins over `body`).
    pub body_base64: Option<String>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// `none` (default), `positive`, `negative`, `full`.
    pub ack: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub properties: Map<String, Value>,
}

/// The hub.
pub struct Hub {
    pub settings: Settings,
    pub store: Store,
    conns: Mutex<HashMap<String, ConnEntry>>,
    next_conn: AtomicU64,
    next_rid: AtomicU64,
    pub events: broadcast::Sender<EventRecord>,
    pub connlog: broadcast::Sender<ConnectionRecord>,
    epoch: tokio::time::Instant,
}

fn random_key() -> String {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    STANDARD.encode(k)
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Device ids: up to 128 ASCII letters, digits and `-.%_*?!(),:=@$'` (IoT Hub's registry rule).
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-.%_*?!(),:=@$'".contains(c))
}

impl Hub {
    pub fn new(settings: Settings, store: Store) -> Hub {
        Hub {
            settings,
            store,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            next_rid: AtomicU64::new(1),
            events: broadcast::channel(4096).0,
            connlog: broadcast::channel(1024).0,
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Work at start: nobody is connected, so no C2D message can be locked (a previous run may have been killed
    /// with deliveries in flight).
    pub async fn startup(&self) -> Result<(), StoreError> {
        self.store
            .write(|tx| {
                for mut m in tx.all_c2d()? {
                    if m.lock_until_ms.is_some() {
                        m.lock_until_ms = None;
                        tx.put_c2d(&m)?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// The protocol core's clock: milliseconds since the hub started.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// The tokio instant for a core instant.
    pub fn tokio_instant(&self, at: Instant) -> tokio::time::Instant {
        self.epoch + Duration::from_millis(at.as_millis())
    }

    fn conn_tx(&self, device: &str) -> Option<mpsc::UnboundedSender<ConnCmd>> {
        self.conns.lock().ok()?.get(device).map(|e| e.tx.clone())
    }

    /// Is a device connected?
    pub fn is_connected(&self, device: &str) -> bool {
        self.conns.lock().map(|c| c.contains_key(device)).unwrap_or(false)
    }

    // ---- connection side ------------------------------------------------------------------------------------

    /// Checks a CONNECT against the registry and sets up the stored session.
    pub async fn authenticate(&self, req: &ConnectRequest) -> Result<Admitted, (ConnectReturnCode, String)> {
        let internal = |e: StoreError| (ConnectReturnCode::ServiceUnavailable, e.to_string());
        // Modules are registry records named `{device}/{module}` (a name no device id can have).
        let id = req.identity.to_string();
        let device = self
            .store
            .device(&id)
            .map_err(internal)?
            .ok_or((ConnectReturnCode::NotAuthorized, format!("device '{id}' is not registered")))?;
        if !device.enabled() {
            return Err((ConnectReturnCode::ServiceUnavailable, format!("device '{id}' is disabled")));
        }
        if req.token.policy().is_some() {
            return Err((
                ConnectReturnCode::NotAuthorized,
                "tokens signed with a shared access policy (skn) are not supported; use the device key".into(),
            ));
        }
        let keys =
            [&device.authentication.symmetric_key.primary_key, &device.authentication.symmetric_key.secondary_key];
        let keys: Vec<DeviceKey> = keys.iter().filter_map(|k| DeviceKey::from_base64(k).ok()).collect();
        let refs: Vec<&DeviceKey> = keys.iter().collect();
        let resource = ResourceUri::for_identity(
            &self.settings.host_name,
            &req.identity.device_id,
            req.identity.module_id.as_deref(),
        );
        let now_s = unix_ms() / 1000;
        req.token.verify(&refs, &resource, now_s).map_err(|e| (ConnectReturnCode::NotAuthorized, e.to_string()))?;
        let expiry = req.token.expiry();
        // Accepted within the clock skew: close when the skew runs out instead.
        let close_at = if expiry > now_s { expiry } else { expiry + hubsim_proto::sas::MAX_CLOCK_SKEW_SECS };
        let token_expiry = Some(self.now() + Duration::from_secs(close_at.saturating_sub(now_s)));
        let clean = req.clean_session;
        let stored = self
            .store
            .write(move |tx| {
                if clean {
                    tx.delete_session(&id)?;
                    Ok(None)
                } else {
                    let s = tx.session(&id)?;
                    if s.is_none() {
                        tx.put_session(&id, &[])?;
                    }
                    Ok(s)
                }
            })
            .await
            .map_err(internal)?;
        let restored = stored
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(f, q)| {
                filter_from_name(&f).map(|f| (f, if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }))
            })
            .collect();
        Ok(Admitted { session_present: stored.is_some(), restored, token_expiry, generation_id: device.generation_id })
    }

    /// Registers a live connection, closing any earlier one for the same device. Returns its id.
    pub fn register(&self, device: &str, tx: mpsc::UnboundedSender<ConnCmd>) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let old = self.conns.lock().ok().and_then(|mut c| c.insert(device.to_owned(), ConnEntry { id, tx }));
        if let Some(old) = old {
            let _ = old.tx.send(ConnCmd::Close(CloseReason::ReplacedByNewConnection));
        }
        id
    }

    /// Removes a connection if it is still the registered one.
    pub fn unregister(&self, device: &str, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            if c.get(device).is_some_and(|e| e.id == id) {
                c.remove(device);
            }
        }
    }

    /// Persists a CleanSession 0 device's subscriptions.
    pub async fn save_subscriptions(&self, device: &str, subs: Vec<(TopicFilter, QoS)>) -> Result<(), StoreError> {
        let id = device.to_owned();
        let names: Vec<(String, u8)> = subs.into_iter().map(|(f, q)| (filter_name(&f).to_owned(), q as u8)).collect();
        self.store.write(move |tx| tx.put_session(&id, &names)).await
    }

    /// Stores a telemetry message durably and publishes it on the event stream.
    pub async fn store_telemetry(
        &self,
        m: ReceivedTelemetry,
        generation_id: &str,
        model_id: Option<String>,
    ) -> Result<EventRecord, StoreError> {
        let now = unix_ms();
        let mut sys = Map::new();
        let mut app = Map::new();
        for (k, v) in m.properties.system_properties() {
            let name = match k {
                SystemProperty::MessageId => "message-id".to_owned(),
                SystemProperty::CorrelationId => "correlation-id".to_owned(),
                SystemProperty::UserId => "user-id".to_owned(),
                SystemProperty::ContentType => "content-type".to_owned(),
                SystemProperty::ContentEncoding => "content-encoding".to_owned(),
                SystemProperty::ExpiryTime => "absolute-expiry-time".to_owned(),
                // The hub turns $.ctime into an application property (MicrosoftDocs/azure-docs #114510).
                SystemProperty::CreationTime => {
                    app.insert("iothub-creation-time-utc".into(), v.into());
                    continue;
                }
                SystemProperty::InterfaceId => "iothub-interface-id".to_owned(),
                SystemProperty::ComponentName => "dt-subject".to_owned(),
                other => other.wire_name(),
            };
            sys.insert(name, v.into());
        }
        for (k, v) in &m.properties.application {
            app.insert(k.clone(), v.clone().map(Value::String).unwrap_or(Value::Null));
        }
        sys.insert("iothub-connection-device-id".into(), m.identity.device_id.clone().into());
        if let Some(mid) = &m.identity.module_id {
            sys.insert("iothub-connection-module-id".into(), mid.clone().into());
        }
        sys.insert(
            "iothub-connection-auth-method".into(),
            r#"{"scope":"device","type":"sas","issuer":"iothub"}"#.into(),
        );
        sys.insert("iothub-connection-auth-generation-id".into(), generation_id.into());
        sys.insert("iothub-enqueuedtime".into(), iso8601(now).into());
        sys.insert("iothub-message-source".into(), "Telemetry".into());
        if let Some(model) = model_id {
            sys.insert("dt-dataschema".into(), model.into());
        }
        let mut rec = EventRecord {
            seq: 0,
            device_id: m.identity.device_id,
            module_id: m.identity.module_id,
            body: std::str::from_utf8(&m.payload).ok().map(str::to_owned),
            body_base64: m.payload.to_vec(),
            system_properties: sys,
            application_properties: app,
            enqueued_time: iso8601(now),
        };
        let rec = self
            .store
            .write(move |tx| {
                rec.seq = tx.next_seq("events")?;
                tx.append_event(&rec)?;
                Ok(rec)
            })
            .await?;
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(rec.clone());
        }
        Ok(rec)
    }

    /// Appends to the connection log and its stream.
    pub async fn log_connection(&self, mut rec: ConnectionRecord) {
        rec.time = iso8601(unix_ms());
        let stored = self
            .store
            .write(move |tx| {
                rec.seq = tx.next_seq("connlog")?;
                tx.append_connection(&rec)?;
                Ok(rec)
            })
            .await;
        match stored {
            Ok(rec) => {
                tracing::info!(device = ?rec.device_id, op = %rec.operation, code = rec.result_type, reason = %rec.reason, "{}", rec.description);
                let _ = self.connlog.send(rec);
            }
            Err(e) => tracing::error!("cannot write the connection log: {e}"),
        }
    }

    /// Takes the C2D messages deliverable now (not locked, not in `exclude`), locking each and counting the
    /// delivery. Expired messages and those over the delivery limit are dead-lettered on the way.
    pub async fn c2d_take(&self, device: &str, exclude: Vec<u64>) -> Result<Vec<C2dMessage>, StoreError> {
        let id = device.to_owned();
        let lock = self.settings.c2d_lock.as_millis() as u64;
        let max = self.settings.c2d_max_delivery_count;
        self.store
            .write(move |tx| {
                let now = unix_ms();
                let mut out = Vec::new();
                for m in tx.c2d_queue(&id)? {
                    if exclude.contains(&m.seq) || m.lock_until_ms.is_some_and(|l| l > now) {
                        continue;
                    }
                    out.extend(lock_for_delivery(tx, m, now, lock, max)?);
                }
                Ok(out)
            })
            .await
    }

    /// Re-locks an in-flight message for redelivery on the same connection; `None` if it is gone or used up.
    pub async fn c2d_relock(&self, device: &str, seq: u64) -> Result<Option<C2dMessage>, StoreError> {
        let id = device.to_owned();
        let lock = self.settings.c2d_lock.as_millis() as u64;
        let max = self.settings.c2d_max_delivery_count;
        self.store
            .write(move |tx| match tx.get_c2d(&id, seq)? {
                Some(m) => lock_for_delivery(tx, m, unix_ms(), lock, max),
                None => Ok(None),
            })
            .await
    }

    /// The device acknowledged a message: it is completed (removed), with positive feedback if requested.
    pub async fn c2d_complete(&self, device: &str, seq: u64) -> Result<(), StoreError> {
        let id = device.to_owned();
        self.store
            .write(move |tx| {
                if let Some(m) = tx.remove_c2d(&id, seq)? {
                    if m.ack == "positive" || m.ack == "full" {
                        feedback(tx, &m, "Success", "Success")?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Unlocks messages that were in flight on a closed connection so the next one gets them at once.
    pub async fn c2d_release(&self, device: &str, seqs: Vec<u64>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let id = device.to_owned();
        self.store
            .write(move |tx| {
                for s in seqs {
                    if let Some(mut m) = tx.get_c2d(&id, s)? {
                        m.lock_until_ms = None;
                        tx.put_c2d(&m)?;
                    }
                }
                Ok(())
            })
            .await
    }

    // ---- service side ---------------------------------------------------------------------------------------

    /// Creates a device (keys generated unless given), or fails if it exists.
    pub async fn create_device(
        &self,
        id: &str,
        primary: Option<String>,
        secondary: Option<String>,
        enabled: bool,
    ) -> Result<Device, ServiceError> {
        if !valid_device_id(id) {
            return Err(ServiceError::new(
                400,
                400006,
                format!("'{id}' is not a valid device id (1–128 of A–Z a–z 0–9 -.%_*?!(),:=@$')"),
            ));
        }
        self.create_record(id, primary, secondary, enabled).await
    }

    async fn create_record(
        &self,
        id: &str,
        primary: Option<String>,
        secondary: Option<String>,
        enabled: bool,
    ) -> Result<Device, ServiceError> {
        for k in [&primary, &secondary].into_iter().flatten() {
            DeviceKey::from_base64(k).map_err(|e| ServiceError::new(400, 400004, format!("key: {e}")))?;
        }
        let device = Device {
            device_id: id.to_owned(),
            generation_id: format!("{}", unix_ms()),
            status: if enabled { "enabled" } else { "disabled" }.into(),
            authentication: Authentication {
                kind: "sas".into(),
                symmetric_key: SymmetricKey {
                    primary_key: primary.unwrap_or_else(random_key),
                    secondary_key: secondary.unwrap_or_else(random_key),
                },
            },
            created_time: iso8601(unix_ms()),
        };
        let d = device.clone();
        let created = self
            .store
            .write(move |tx| {
                if tx.device(&d.device_id)?.is_some() {
                    return Ok(false);
                }
                tx.put_device(&d)?;
                Ok(true)
            })
            .await?;
        if !created {
            return Err(ServiceError::new(409, 409001, format!("device '{id}' already exists")));
        }
        Ok(device)
    }

    /// Creates a module identity of an existing device (its own keys, its own twin, telemetry on the module topic).
    pub async fn create_module(&self, device: &str, module: &str) -> Result<Device, ServiceError> {
        self.get_device(device)?;
        if !valid_device_id(module) {
            return Err(ServiceError::new(400, 400006, format!("'{module}' is not a valid module id")));
        }
        self.create_record(&format!("{device}/{module}"), None, None, true).await
    }

    /// Creates `{prefix}-0 … {prefix}-{count-1}` where missing, in one transaction; returns them in order.
    pub async fn ensure_devices(&self, prefix: &str, count: usize) -> Result<Vec<Device>, ServiceError> {
        let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        if let Some(bad) = ids.iter().find(|id| !valid_device_id(id)) {
            return Err(ServiceError::new(400, 400006, format!("'{bad}' is not a valid device id")));
        }
        let fresh: Vec<Device> = ids
            .iter()
            .map(|id| Device {
                device_id: id.clone(),
                generation_id: format!("{}", unix_ms()),
                status: "enabled".into(),
                authentication: Authentication {
                    kind: "sas".into(),
                    symmetric_key: SymmetricKey { primary_key: random_key(), secondary_key: random_key() },
                },
                created_time: iso8601(unix_ms()),
            })
            .collect();
        Ok(self
            .store
            .write(move |tx| {
                let mut out = Vec::with_capacity(fresh.len());
                for d in fresh {
                    match tx.device(&d.device_id)? {
                        Some(existing) => out.push(existing),
                        None => {
                            tx.put_device(&d)?;
                            out.push(d);
                        }
                    }
                }
                Ok(out)
            })
            .await?)
    }

    pub fn get_device(&self, id: &str) -> Result<Device, ServiceError> {
        self.store.device(id)?.ok_or_else(|| ServiceError::device_not_found(id))
    }

    /// The device's connection string (for the hub's HostName), formatted by the core.
    pub fn connection_string(&self, d: &Device) -> String {
        self.connection_string_with_gateway(d, None)
    }

    /// Like [`connection_string`](Self::connection_string), with a `GatewayHostName` to connect to.
    pub fn connection_string_with_gateway(&self, d: &Device, gateway: Option<&str>) -> String {
        let key = DeviceKey::from_base64(&d.authentication.symmetric_key.primary_key)
            .unwrap_or_else(|_| DeviceKey::from_bytes(d.authentication.symmetric_key.primary_key.as_bytes().to_vec()));
        let (device_id, module_id) = match d.device_id.split_once('/') {
            Some((dev, m)) => (dev.to_owned(), Some(m.to_owned())),
            None => (d.device_id.clone(), None),
        };
        hubsim_proto::ConnectionString {
            host_name: self.settings.host_name.clone(),
            device_id,
            module_id,
            key_name: None,
            credential: hubsim_proto::conn_str::Credential::Key(key),
            gateway_host_name: gateway.map(str::to_owned),
        }
        .to_string()
    }

    /// Enables or disables a device; disabling closes its connection.
    pub async fn set_status(&self, id: &str, enabled: bool) -> Result<Device, ServiceError> {
        let key = id.to_owned();
        let d = self
            .store
            .write(move |tx| {
                let Some(mut d) = tx.device(&key)? else { return Ok(None) };
                d.status = if enabled { "enabled" } else { "disabled" }.into();
                tx.put_device(&d)?;
                Ok(Some(d))
            })
            .await?
            .ok_or_else(|| ServiceError::device_not_found(id))?;
        if !enabled {
            self.close_connection(id, CloseReason::DeviceDisabled);
        }
        Ok(d)
    }

    pub async fn delete_device(&self, id: &str) -> Result<(), ServiceError> {
        let key = id.to_owned();
        if !self.store.write(move |tx| tx.delete_device(&key)).await? {
            return Err(ServiceError::device_not_found(id));
        }
        self.close_connection(id, CloseReason::DeviceDisabled);
        Ok(())
    }

    /// Closes a device's connection; false if it has none.
    pub fn close_connection(&self, id: &str, reason: CloseReason) -> bool {
        self.conn_tx(id).is_some_and(|tx| tx.send(ConnCmd::Close(reason)).is_ok())
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let txs: Vec<_> = self.conns.lock().map(|c| c.values().map(|e| e.tx.clone()).collect()).unwrap_or_default();
        for tx in txs {
            let _ = tx.send(ConnCmd::Close(reason.clone()));
        }
    }

    /// Queues a C2D message (at most `c2d_max_queue` per device).
    pub async fn send_c2d(&self, id: &str, req: SendC2d) -> Result<C2dMessage, ServiceError> {
        self.get_device(id)?;
        let body = match (&req.body_base64, &req.body) {
            (Some(b), _) => {
                STANDARD.decode(b).map_err(|e| ServiceError::new(400, 400004, format!("bodyBase64: {e}")))?
            }
            (None, Some(t)) => t.clone().into_bytes(),
            (None, None) => Vec::new(),
        };
        if body.len() > 64 * 1024 {
            return Err(ServiceError::new(
                400,
                400005,
                format!("the message is {} bytes; C2D messages are at most 64 KB", body.len()),
            ));
        }
        let ack = req.ack.clone().unwrap_or_else(|| "none".into()).to_ascii_lowercase();
        if !["none", "positive", "negative", "full"].contains(&ack.as_str()) {
            return Err(ServiceError::new(
                400,
                400004,
                format!("ack must be none, positive, negative or full, not '{ack}'"),
            ));
        }
        let mut properties = Vec::new();
        for (k, v) in &req.properties {
            let v = match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            properties.push((k.clone(), v));
        }
        let now = unix_ms();
        let ttl = req.ttl_seconds.map(Duration::from_secs).unwrap_or(self.settings.c2d_default_ttl);
        let mut msg = C2dMessage {
            seq: 0,
            device_id: id.to_owned(),
            message_id: req.message_id.clone().unwrap_or_else(random_id),
            correlation_id: req.correlation_id.clone(),
            user_id: req.user_id.clone(),
            content_type: req.content_type.clone(),
            content_encoding: req.content_encoding.clone(),
            ack,
            properties,
            body,
            enqueued_ms: now,
            expiry_ms: now + ttl.as_millis() as u64,
            delivery_count: 0,
            lock_until_ms: None,
        };
        let max = self.settings.c2d_max_queue;
        let key = id.to_owned();
        let stored = self
            .store
            .write(move |tx| {
                let n = tx.c2d_queue(&key)?.len();
                if n >= max {
                    return Ok(Err(n));
                }
                msg.seq = tx.next_seq("c2d")?;
                tx.put_c2d(&msg)?;
                Ok(Ok(msg))
            })
            .await?;
        let msg = stored.map_err(|n| {
            ServiceError::new(
                403,
                403004,
                format!(
                    "the queue of device '{id}' is full ({n} messages, the limit is {max}); it must receive some first"
                ),
            )
        })?;
        if let Some(tx) = self.conn_tx(id) {
            let _ = tx.send(ConnCmd::C2dAvailable);
        }
        Ok(msg)
    }

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
        self.get_device(id)?;
        let not_online = || {
            ServiceError::new(404, 404103, format!("device '{id}' is not online for methods: it is not connected or not subscribed to $iothub/methods/POST/#"))
        };
        let tx = self.conn_tx(id).ok_or_else(not_online)?;
        let (reply, rx) = oneshot::channel();
        let body = if payload.is_null() { Bytes::new() } else { Bytes::from(payload.to_string()) };
        tx.send(ConnCmd::Method { name: name.to_owned(), payload: body, reply }).map_err(|_| not_online())?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                Err(ServiceError::new(504, 504101, format!("the device did not answer within {} s", timeout.as_secs())))
            }
            Ok(Err(_)) => Err(ServiceError::new(404, 404103, format!("device '{id}' disconnected before answering"))),
            Ok(Ok(MethodReply::NotSubscribed)) => Err(not_online()),
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

    pub fn get_twin(&self, id: &str) -> Result<Twin, ServiceError> {
        self.get_device(id)?;
        Ok(self.store.twin(id)?)
    }

    /// Applies a desired-properties patch and pushes it to the device if connected.
    pub async fn patch_desired(&self, id: &str, patch: Value) -> Result<Twin, ServiceError> {
        self.get_device(id)?;
        if !patch.is_object() {
            return Err(ServiceError::new(400, 400004, "desired properties must be a JSON object"));
        }
        let key = id.to_owned();
        let p = patch.clone();
        let twin = self
            .store
            .write(move |tx| {
                let mut t = tx.twin(&key)?;
                merge_patch(&mut t.desired, &p);
                t.desired_version += 1;
                tx.put_twin(&key, &t)?;
                Ok(t)
            })
            .await?;
        if let Some(tx) = self.conn_tx(id) {
            let mut body = patch;
            if let Value::Object(m) = &mut body {
                m.insert("$version".into(), twin.desired_version.into());
            }
            let _ = tx.send(ConnCmd::Desired { version: twin.desired_version, body: Bytes::from(body.to_string()) });
        }
        Ok(twin)
    }

    /// Applies a reported-properties patch from the device; returns the new reported version.
    pub async fn patch_reported(&self, id: &str, patch: Value) -> Result<u64, StoreError> {
        let key = id.to_owned();
        self.store
            .write(move |tx| {
                let mut t = tx.twin(&key)?;
                merge_patch(&mut t.reported, &patch);
                t.reported_version += 1;
                tx.put_twin(&key, &t)?;
                Ok(t.reported_version)
            })
            .await
    }
}

/// Counts a delivery and locks the message for `lock` ms; an expired message, or one that reached the maximum
/// delivery count, is dead-lettered instead (`None`).
fn lock_for_delivery(
    tx: &mut Tx<'_>,
    mut m: C2dMessage,
    now: u64,
    lock: u64,
    max: u32,
) -> Result<Option<C2dMessage>, StoreError> {
    if m.expiry_ms <= now {
        dead_letter(tx, &m, "Expired", "the message expired before it was completed")?;
        return Ok(None);
    }
    if m.delivery_count >= max {
        dead_letter(tx, &m, "DeliveryCountExceeded", "the maximum delivery count was reached")?;
        return Ok(None);
    }
    m.delivery_count += 1;
    m.lock_until_ms = Some(now + lock);
    tx.put_c2d(&m)?;
    Ok(Some(m))
}

fn dead_letter(tx: &mut Tx<'_>, m: &C2dMessage, status: &str, why: &str) -> Result<(), StoreError> {
    tx.remove_c2d(&m.device_id, m.seq)?;
    if m.ack == "negative" || m.ack == "full" {
        feedback(tx, m, status, why)?;
    }
    Ok(())
}

fn feedback(tx: &mut Tx<'_>, m: &C2dMessage, status: &str, why: &str) -> Result<(), StoreError> {
    let rec = FeedbackRecord {
        seq: tx.next_seq("feedback")?,
        original_message_id: m.message_id.clone(),
        device_id: m.device_id.clone(),
        status_code: status.into(),
        description: why.into(),
        enqueued_time_utc: iso8601(unix_ms()),
    };
    tx.append_feedback(&rec)
}

/// Stored name of a subscription.
pub fn filter_name(f: &TopicFilter) -> &'static str {
    match f {
        TopicFilter::C2d => "c2d",
        TopicFilter::Methods => "methods",
        TopicFilter::TwinResponses => "twin-responses",
        TopicFilter::TwinDesired => "twin-desired",
        TopicFilter::ModuleInputs => "module-inputs",
        TopicFilter::DpsResponses => "dps",
    }
}

fn filter_from_name(s: &str) -> Option<TopicFilter> {
    Some(match s {
        "c2d" => TopicFilter::C2d,
        "methods" => TopicFilter::Methods,
        "twin-responses" => TopicFilter::TwinResponses,
        "twin-desired" => TopicFilter::TwinDesired,
        "module-inputs" => TopicFilter::ModuleInputs,
        "dps" => TopicFilter::DpsResponses,
        _ => return None,
    })
}

/// Builds the property bag of a C2D delivery (reference §5).
pub fn c2d_properties(m: &C2dMessage) -> hubsim_proto::PropertyBag {
    let mut bag = hubsim_proto::PropertyBag::new();
    bag.set_system(SystemProperty::MessageId, m.message_id.clone());
    bag.set_system(SystemProperty::To, format!("/devices/{}/messages/devicebound", m.device_id));
    if let Some(v) = &m.correlation_id {
        bag.set_system(SystemProperty::CorrelationId, v.clone());
    }
    if let Some(v) = &m.user_id {
        bag.set_system(SystemProperty::UserId, v.clone());
    }
    if let Some(v) = &m.content_type {
        bag.set_system(SystemProperty::ContentType, v.clone());
    }
    if let Some(v) = &m.content_encoding {
        bag.set_system(SystemProperty::ContentEncoding, v.clone());
    }
    bag.set_system(SystemProperty::ExpiryTime, iso8601(m.expiry_ms));
    bag.set_system(SystemProperty::Ack, m.ack.clone());
    bag.application = m.properties.clone();
    bag
}

/// JSON of a device for the API, with its connection string and state.
pub fn device_json(hub: &Hub, d: &Device) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "connectionState".into(),
            if hub.is_connected(&d.device_id) { "Connected" } else { "Disconnected" }.into(),
        );
        m.insert("connectionString".into(), hub.connection_string(d).into());
        m.insert(
            "cloudToDeviceMessageCount".into(),
            hub.store.c2d_queue(&d.device_id).map(|q| q.len()).unwrap_or(0).into(),
        );
    }
    v
}

/// JSON error body, IoT Hub style.
pub fn error_json(code: u32, message: &str) -> Value {
    json!({ "errorCode": code, "message": message, "timestampUtc": iso8601(unix_ms()) })
}
