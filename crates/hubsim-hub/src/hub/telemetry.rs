//! Telemetry and the connection log: each record is stored durably (the caller acknowledges after this returns)
//! and then offered to the live streams, which are skipped when nobody listens.
//!
//! Connection records carry peer-chosen text (client ids, user names, reasons quoting them): every field is cut
//! to [`PEER_TEXT_MAX`](crate::model::PEER_TEXT_MAX) bytes before it is stored or logged. While the database is
//! unavailable (a full disk) failures are not logged per record: the store logs the state change once.

use hubsim_proto::hub::ReceivedTelemetry;
use hubsim_proto::property_bag::SystemProperty;
use serde_json::{Map, Value};

use super::Hub;
use crate::model::{ConnectionRecord, EventRecord};
use crate::store::StoreError;
use crate::timefmt::{iso8601, unix_ms};

impl Hub {
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
    pub async fn log_connection(&self, rec: ConnectionRecord) {
        let mut rec = rec.bounded();
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
            Err(e) if e.is_unavailable() => tracing::debug!("cannot write the connection log: {e}"),
            Err(e) => tracing::error!("cannot write the connection log: {e}"),
        }
    }

    /// Shows a record on the live connection-log stream without storing it (seq 0): for transports that never
    /// sent a valid CONNECT, so junk connections are visible while someone watches yet cannot grow the log.
    pub fn announce_connection(&self, rec: ConnectionRecord) {
        let mut rec = rec.bounded();
        rec.time = iso8601(unix_ms());
        rec.seq = 0;
        tracing::debug!(op = %rec.operation, code = rec.result_type, reason = %rec.reason, "{}", rec.description);
        if self.connlog.receiver_count() > 0 {
            let _ = self.connlog.send(rec);
        }
    }
}
