//! Device twins (reference §7): desired properties from the service (pushed to a connected device with their
//! `$version`) and reported properties from the device.

use bytes::Bytes;
use serde_json::Value;

use super::{ConnCmd, Hub, ServiceError};
use crate::model::{merge_patch, Twin};
use crate::store::StoreError;

impl Hub {
    pub async fn get_twin(&self, id: &str) -> Result<Twin, ServiceError> {
        self.get_device(id).await?;
        Ok(self.store.twin(id).await?)
    }

    /// Applies a desired-properties patch and pushes it to the device if connected.
    pub async fn patch_desired(&self, id: &str, patch: Value) -> Result<Twin, ServiceError> {
        self.get_device(id).await?;
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
