//! The identity registry: devices and module identities (a module is stored as `{device}/{module}`, the ClientId
//! form of its identity), their keys and status, and their connection strings (formatted by the core).

use hubsim_proto::hub::CloseReason;
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::is_valid_device_id;

use super::{random_key, Hub, ServiceError};
use crate::api::iothub::{device_etag, IfMatch};
use crate::model::{Authentication, Device, DeviceMeta, SymmetricKey};
use crate::timefmt::{iso8601, unix_ms};

impl Hub {
    /// Creates a device (keys generated unless given), or fails if it exists.
    pub async fn create_device(
        &self,
        id: &str,
        primary: Option<String>,
        secondary: Option<String>,
        enabled: bool,
    ) -> Result<Device, ServiceError> {
        if !is_valid_device_id(id) {
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
        let device = new_record(id, primary, secondary, enabled);
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
        self.get_device(device).await?;
        if !is_valid_device_id(module) {
            return Err(ServiceError::new(400, 400006, format!("'{module}' is not a valid module id")));
        }
        self.create_record(&hubsim_proto::DeviceIdentity::module(device, module).client_id(), None, None, true).await
    }

    /// Creates an identity with IoT Hub's full set of registry fields (`PUT /devices/{id}` without `If-Match`,
    /// `PUT /devices/{id}/modules/{m}`, bulk `create`): 409 if it exists, 404 for a module of a missing device.
    pub async fn create_identity(&self, id: &str, spec: IdentitySpec) -> Result<Device, ServiceError> {
        let ident = hubsim_proto::DeviceIdentity::from_client_id(id);
        if !is_valid_device_id(&ident.device_id) || ident.module_id.as_deref().is_some_and(|m| !is_valid_device_id(m)) {
            return Err(ServiceError::new(
                400,
                400006,
                format!("'{id}' is not a valid id (1–128 of A–Z a–z 0–9 -.%_*?!(),:=@$')"),
            ));
        }
        spec.check_keys()?;
        let mut d = new_record(id, spec.primary.clone(), spec.secondary.clone(), spec.enabled);
        spec.apply_meta(&mut d);
        let rec = d.clone();
        let parent = ident.module_id.is_some().then(|| ident.device_id.clone());
        let outcome = self
            .store
            .write(move |tx| {
                if let Some(p) = &parent {
                    if tx.device(p)?.is_none() {
                        return Ok(Err(ServiceError::device_not_found(p)));
                    }
                }
                if tx.device(&rec.device_id)?.is_some() {
                    return Ok(Err(already_exists(&rec.device_id)));
                }
                tx.put_device(&rec)?;
                Ok(Ok(()))
            })
            .await?;
        outcome.map(|()| d)
    }

    /// `PUT` with `If-Match`: replaces the identity's status, status reason, capabilities and keys (keys not
    /// given are kept); 404 if missing, 412 on a stale ETag. Disabling closes the identity's connection (a
    /// device's: its modules' too).
    pub async fn replace_identity(
        &self,
        id: &str,
        if_match: IfMatch,
        spec: IdentitySpec,
    ) -> Result<Device, ServiceError> {
        spec.check_keys()?;
        let key = id.to_owned();
        let d = self
            .store
            .write(move |tx| {
                let Some(mut d) = tx.device(&key)? else { return Ok(Err(not_found(tx, &key)?)) };
                if let Err(e) = if_match.check(&device_etag(&d), "the identity") {
                    return Ok(Err(e));
                }
                let status = if spec.enabled { "enabled" } else { "disabled" };
                if d.status != status {
                    d.status = status.into();
                    d.meta.status_updated_time = Some(iso8601(unix_ms()));
                }
                if let Some(k) = spec.primary.clone() {
                    d.authentication.symmetric_key.primary_key = k;
                }
                if let Some(k) = spec.secondary.clone() {
                    d.authentication.symmetric_key.secondary_key = k;
                }
                spec.apply_meta(&mut d);
                d.meta.version += 1;
                tx.put_device(&d)?;
                Ok(Ok(d))
            })
            .await??;
        if !d.enabled() {
            // A module's key names only itself; a device's closes its modules too.
            self.close_device_and_modules(id, CloseReason::DeviceDisabled);
        }
        Ok(d)
    }

    /// `DELETE` with `If-Match`: removes the identity (a device with its modules), 404 if missing, 412 on a
    /// stale ETag.
    pub async fn delete_identity(&self, id: &str, if_match: IfMatch) -> Result<(), ServiceError> {
        let key = id.to_owned();
        let modules: Vec<String> = if id.contains('/') {
            Vec::new()
        } else {
            self.store.devices().await?.into_iter().map(|d| d.device_id).filter(|m| is_module_of(m, id)).collect()
        };
        let removed = modules.clone();
        self.store
            .write(move |tx| {
                let Some(d) = tx.device(&key)? else { return Ok(Err(not_found(tx, &key)?)) };
                if let Err(e) = if_match.check(&device_etag(&d), "the identity") {
                    return Ok(Err(e));
                }
                tx.delete_device(&key)?;
                for m in &modules {
                    tx.delete_device(m)?;
                }
                Ok(Ok(()))
            })
            .await??;
        for m in removed.iter().map(String::as_str).chain([id]) {
            self.close_connection(m, CloseReason::DeviceDisabled);
            if let Ok(mut p) = self.presence.lock() {
                p.remove(m);
            }
        }
        Ok(())
    }

    /// The module identities of a device, in id order (404 if the device is missing).
    pub async fn modules(&self, device: &str) -> Result<Vec<Device>, ServiceError> {
        self.get_device(device).await?;
        Ok(self.store.devices().await?.into_iter().filter(|d| is_module_of(&d.device_id, device)).collect())
    }

    /// IoT Hub's bulk registry operation (`POST /devices`, at most 100 entries, each id once): every entry is
    /// validated first, then all are applied in one transaction; the answer lists the entries that failed.
    pub async fn bulk_registry(&self, ops: Vec<BulkOp>) -> Result<Vec<BulkError>, ServiceError> {
        if ops.is_empty() || ops.len() > 100 {
            return Err(ServiceError::new(
                400,
                400004,
                format!("a bulk registry operation takes 1 to 100 devices, not {}", ops.len()),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for op in &ops {
            if !seen.insert(op.id.clone()) {
                return Err(ServiceError::new(
                    400,
                    400013,
                    format!("device '{}' is defined more than once in the request", super::truncate(&op.id, 128)),
                ));
            }
            if !is_valid_device_id(&op.id) {
                return Err(ServiceError::new(
                    400,
                    400006,
                    format!("'{}' is not a valid device id", super::truncate(&op.id, 128)),
                ));
            }
            op.spec.check_keys()?;
        }
        let now = iso8601(unix_ms());
        let module_ids: Vec<String> = if ops.iter().any(|o| o.mode.deletes()) {
            self.store.devices().await?.into_iter().map(|d| d.device_id).filter(|m| m.contains('/')).collect()
        } else {
            Vec::new()
        };
        let (errors, closed) = self
            .store
            .write(move |tx| {
                let mut errors = Vec::new();
                let mut closed = Vec::new();
                for op in ops {
                    let existing = tx.device(&op.id)?;
                    let fail = |code: &str, status: String| BulkError {
                        device_id: op.id.clone(),
                        error_code: code.into(),
                        error_status: status,
                        operation: op.mode.name().into(),
                    };
                    let etag_ok = |d: &Device| {
                        op.etag.as_deref().is_none_or(|e| IfMatch::parse(Some(e)).check(&device_etag(d), "").is_ok())
                    };
                    match (op.mode, existing) {
                        (BulkMode::Create, Some(_)) => {
                            errors.push(fail("DeviceAlreadyExists", format!("device '{}' already exists", op.id)))
                        }
                        (BulkMode::Create | BulkMode::CreateOrUpdate, None) => {
                            let mut d =
                                new_record(&op.id, op.spec.primary.clone(), op.spec.secondary.clone(), op.spec.enabled);
                            op.spec.apply_meta(&mut d);
                            tx.put_device(&d)?;
                        }
                        (
                            BulkMode::Update
                            | BulkMode::UpdateIfMatchETag
                            | BulkMode::Delete
                            | BulkMode::DeleteIfMatchETag,
                            None,
                        ) => errors.push(fail("DeviceNotFound", format!("device '{}' does not exist", op.id))),
                        (BulkMode::UpdateIfMatchETag | BulkMode::DeleteIfMatchETag, Some(d)) if !etag_ok(&d) => errors
                            .push(fail("PreconditionFailed", format!("the ETag of device '{}' does not match", op.id))),
                        (BulkMode::Update | BulkMode::UpdateIfMatchETag | BulkMode::CreateOrUpdate, Some(mut d)) => {
                            let status = if op.spec.enabled { "enabled" } else { "disabled" };
                            if d.status != status {
                                d.status = status.into();
                                d.meta.status_updated_time = Some(now.clone());
                                if !op.spec.enabled {
                                    closed.push(op.id.clone());
                                }
                            }
                            if let Some(k) = op.spec.primary.clone() {
                                d.authentication.symmetric_key.primary_key = k;
                            }
                            if let Some(k) = op.spec.secondary.clone() {
                                d.authentication.symmetric_key.secondary_key = k;
                            }
                            op.spec.apply_meta(&mut d);
                            d.meta.version += 1;
                            tx.put_device(&d)?;
                        }
                        (BulkMode::Delete | BulkMode::DeleteIfMatchETag, Some(_)) => {
                            tx.delete_device(&op.id)?;
                            for m in module_ids.iter().filter(|m| is_module_of(m, &op.id)) {
                                tx.delete_device(m)?;
                                closed.push(m.clone());
                            }
                            closed.push(op.id.clone());
                        }
                    }
                }
                Ok((errors, closed))
            })
            .await?;
        for id in closed {
            self.close_device_and_modules(&id, CloseReason::DeviceDisabled);
        }
        Ok(errors)
    }

    /// Creates `{prefix}-{n}` for every `n` in `range` where missing, in one transaction; returns them in order.
    /// Records are built inside the transaction, one at a time, so nothing is allocated before it runs.
    pub async fn ensure_devices(
        &self,
        prefix: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<Device>, ServiceError> {
        let prefix = prefix.to_owned();
        Ok(self
            .store
            .write(move |tx| {
                let mut out = Vec::new();
                for n in range {
                    let id = format!("{prefix}-{n}");
                    match tx.device(&id)? {
                        Some(existing) => out.push(existing),
                        None => {
                            let d = new_record(&id, None, None, true);
                            tx.put_device(&d)?;
                            out.push(d);
                        }
                    }
                }
                Ok(out)
            })
            .await?)
    }

    /// A device or module identity (`dev/mod`). Errors: IoT Hub's 404 `DeviceNotFound` (404001) for a missing
    /// device, also when a module's device is missing, and `ModuleNotFound` (404010) for a missing module of an
    /// existing device; 500/503 from the store.
    pub async fn get_identity(&self, id: &str) -> Result<Device, ServiceError> {
        if let Some(d) = self.store.device(id).await? {
            return Ok(d);
        }
        match id.split_once('/') {
            Some((device, _)) if self.store.device(device).await?.is_none() => {
                Err(ServiceError::device_not_found(device))
            }
            _ => Err(missing(id)),
        }
    }

    pub async fn get_device(&self, id: &str) -> Result<Device, ServiceError> {
        self.store.device(id).await?.ok_or_else(|| ServiceError::device_not_found(id))
    }

    /// The device's connection string (for the hub's HostName), formatted by the core.
    pub fn connection_string(&self, d: &Device) -> String {
        self.connection_string_with_gateway(d, None)
    }

    /// Like [`connection_string`](Self::connection_string), with a `GatewayHostName` to connect to.
    pub fn connection_string_with_gateway(&self, d: &Device, gateway: Option<&str>) -> String {
        let key = DeviceKey::from_base64(&d.authentication.symmetric_key.primary_key)
            .unwrap_or_else(|_| DeviceKey::from_bytes(d.authentication.symmetric_key.primary_key.as_bytes().to_vec()));
        let hubsim_proto::DeviceIdentity { device_id, module_id } =
            hubsim_proto::DeviceIdentity::from_client_id(&d.device_id);
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

    /// Enables or disables a device; disabling closes its connection and its modules' (which cannot connect
    /// while it is disabled, [`Hub::authenticate`]).
    pub async fn set_status(&self, id: &str, enabled: bool) -> Result<Device, ServiceError> {
        let key = id.to_owned();
        let d = self
            .store
            .write(move |tx| {
                let Some(mut d) = tx.device(&key)? else { return Ok(None) };
                let status = if enabled { "enabled" } else { "disabled" };
                if d.status != status {
                    d.status = status.into();
                    d.meta.status_updated_time = Some(iso8601(unix_ms()));
                }
                d.meta.version += 1;
                tx.put_device(&d)?;
                Ok(Some(d))
            })
            .await?
            .ok_or_else(|| ServiceError::device_not_found(id))?;
        if !enabled {
            self.close_device_and_modules(id, CloseReason::DeviceDisabled);
        }
        Ok(d)
    }
}

/// A new SAS-authenticated identity record; keys are generated where not given.
fn new_record(id: &str, primary: Option<String>, secondary: Option<String>, enabled: bool) -> Device {
    Device {
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
        meta: DeviceMeta { version: 1, ..Default::default() },
    }
}

/// Is `id` a module identity (`{device}/{module}`) of `device`?
pub(super) fn is_module_of(id: &str, device: &str) -> bool {
    id.strip_prefix(device).is_some_and(|rest| rest.starts_with('/'))
}

/// Why identity `id` is not in the registry, read in the transaction: its device is missing (`DeviceNotFound`,
/// for a module too, as IoT Hub answers) or the module is (`ModuleNotFound`).
fn not_found(tx: &mut crate::store::Tx<'_>, id: &str) -> Result<ServiceError, crate::store::StoreError> {
    Ok(match id.split_once('/') {
        Some((device, _)) if tx.device(device)?.is_none() => ServiceError::device_not_found(device),
        _ => missing(id),
    })
}

/// `DeviceNotFound` or, for `{device}/{module}`, `ModuleNotFound`.
fn missing(id: &str) -> ServiceError {
    match id.split_once('/') {
        Some((d, m)) => ServiceError::new(404, 404010, format!("module '{m}' of device '{d}' does not exist")),
        None => ServiceError::device_not_found(id),
    }
}

fn already_exists(id: &str) -> ServiceError {
    match id.split_once('/') {
        Some((d, m)) => ServiceError::new(409, 409301, format!("module '{m}' already exists on device '{d}'")),
        None => ServiceError::new(409, 409001, format!("device '{id}' already exists")),
    }
}

/// What a create or replace sets (IoT Hub's device body): keys (`None` or empty: generated on create, kept on
/// replace), status, status reason, capabilities and a module's `managedBy`.
#[derive(Debug, Clone, Default)]
pub struct IdentitySpec {
    pub primary: Option<String>,
    pub secondary: Option<String>,
    pub enabled: bool,
    pub status_reason: Option<String>,
    pub iot_edge: bool,
    pub managed_by: Option<String>,
}

impl IdentitySpec {
    /// Given keys are base64 of 16 to 64 bytes, as IoT Hub's symmetric keys are (create, replace and bulk).
    fn check_keys(&self) -> Result<(), ServiceError> {
        let bad = |m: String| ServiceError::new(400, 400004, m);
        for (name, k) in [("primaryKey", &self.primary), ("secondaryKey", &self.secondary)] {
            let Some(k) = k else { continue };
            let n = DeviceKey::from_base64(k).map_err(|e| bad(format!("{name}: {e}")))?.as_bytes().len();
            if !(16..=64).contains(&n) {
                return Err(bad(format!("{name} is {n} bytes; IoT Hub's symmetric keys are 16 to 64 bytes")));
            }
        }
        Ok(())
    }

    fn apply_meta(&self, d: &mut Device) {
        d.meta.status_reason = self.status_reason.clone();
        d.meta.iot_edge = self.iot_edge;
        d.meta.managed_by = self.managed_by.clone();
    }
}

/// An entry's `importMode` (IoT Hub's `ImportMode`, compared without case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMode {
    Create,
    CreateOrUpdate,
    Update,
    UpdateIfMatchETag,
    Delete,
    DeleteIfMatchETag,
}

impl BulkMode {
    pub fn parse(s: &str) -> Option<BulkMode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "create" => BulkMode::Create,
            "createorupdate" => BulkMode::CreateOrUpdate,
            "update" => BulkMode::Update,
            "updateifmatchetag" => BulkMode::UpdateIfMatchETag,
            "delete" => BulkMode::Delete,
            "deleteifmatchetag" => BulkMode::DeleteIfMatchETag,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            BulkMode::Create => "create",
            BulkMode::CreateOrUpdate => "createOrUpdate",
            BulkMode::Update => "update",
            BulkMode::UpdateIfMatchETag => "updateIfMatchETag",
            BulkMode::Delete => "delete",
            BulkMode::DeleteIfMatchETag => "deleteIfMatchETag",
        }
    }
    fn deletes(self) -> bool {
        matches!(self, BulkMode::Delete | BulkMode::DeleteIfMatchETag)
    }
}

/// One entry of a bulk registry operation.
#[derive(Debug, Clone)]
pub struct BulkOp {
    pub id: String,
    pub mode: BulkMode,
    pub etag: Option<String>,
    pub spec: IdentitySpec,
}

/// A failed entry (IoT Hub's `DeviceRegistryOperationError`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkError {
    pub device_id: String,
    pub error_code: String,
    pub error_status: String,
    pub operation: String,
}
