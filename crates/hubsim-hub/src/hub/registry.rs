//! The identity registry: devices and module identities (a module is stored as `{device}/{module}`, the ClientId
//! form of its identity), their keys and status, and their connection strings (formatted by the core).

use hubsim_proto::hub::CloseReason;
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::is_valid_device_id;

use super::{random_key, Hub, ServiceError};
use crate::model::{Authentication, Device, SymmetricKey};
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
    }
}
