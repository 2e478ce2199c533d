//! Telemetry and the connection log: each record is stored durably (the caller acknowledges after this returns)
//! and then offered to the live streams, which are skipped when nobody listens.
//!
//! Connection records carry peer-chosen text (client ids, user names, reasons quoting them): every field is cut
//! to [`PEER_TEXT_MAX`](crate::model::PEER_TEXT_MAX) bytes before it is stored or logged. While the database is
//! unavailable (a full disk) failures are not logged per record: the store logs the state change once.

use super::Hub;
use crate::model::ConnectionRecord;
use crate::store::event::Encoder;
use crate::store::{NewEvent, StoreError};
use crate::timefmt::{iso8601, unix_ms};
use hubsim_proto::hub::ReceivedTelemetry;
use hubsim_proto::property_bag::SystemProperty;

/// `iothub-connection-auth-method` of a device's message (a symmetric-key SAS token), as IoT Hub writes it.
const AUTH_METHOD_DEVICE: &str = r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#;
/// `iothub-connection-auth-method` of a module identity's message.
const AUTH_METHOD_MODULE: &str = r#"{"scope":"module","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#;

/// The stored record of a telemetry message ([`crate::store::event`]): the system properties IoT Hub adds, the
/// message's own, its application properties and the body, written straight into the record's bytes.
fn event_record(m: &ReceivedTelemetry, generation_id: &str, model_id: Option<&str>, enqueued: &str) -> Vec<u8> {
    let mut enc = Encoder::new(m.identity.module_id.as_deref(), enqueued, m.payload.len());
    let mut creation_time = None;
    for (k, v) in m.properties.system_properties() {
        let wire;
        let name = match k {
            SystemProperty::MessageId => "message-id",
            SystemProperty::CorrelationId => "correlation-id",
            SystemProperty::UserId => "user-id",
            SystemProperty::ContentType => "content-type",
            SystemProperty::ContentEncoding => "content-encoding",
            SystemProperty::ExpiryTime => "absolute-expiry-time",
            // The hub turns $.ctime into an application property (MicrosoftDocs/azure-docs #114510).
            SystemProperty::CreationTime => {
                creation_time = Some(v);
                continue;
            }
            SystemProperty::InterfaceId => "iothub-interface-id",
            SystemProperty::ComponentName => "dt-subject",
            // Hub-stamped (reference: "Device may set? no"): the connection's own identity is written below; a
            // device's `$.cdid`/`$.cmid` would let it claim another's ([DOC-MSG] anti-spoofing).
            SystemProperty::Other(name) if name.eq_ignore_ascii_case("cdid") || name.eq_ignore_ascii_case("cmid") => {
                continue
            }
            other => {
                wire = other.wire_name();
                wire.as_str()
            }
        };
        enc.prop(name, Some(v));
    }
    enc.prop("iothub-connection-device-id", Some(&m.identity.device_id));
    if let Some(mid) = &m.identity.module_id {
        enc.prop("iothub-connection-module-id", Some(mid));
    }
    // As IoT Hub writes it ([DOC-MSG]): the scope is the identity that authenticated, a module's own.
    let auth_method = match m.identity.module_id {
        Some(_) => AUTH_METHOD_MODULE,
        None => AUTH_METHOD_DEVICE,
    };
    enc.prop("iothub-connection-auth-method", Some(auth_method));
    enc.prop("iothub-connection-auth-generation-id", Some(generation_id));
    enc.prop("iothub-enqueuedtime", Some(enqueued));
    enc.prop("iothub-message-source", Some("Telemetry"));
    if let Some(model) = model_id {
        enc.prop("dt-dataschema", Some(model));
    }
    enc.application();
    if let Some(v) = creation_time {
        enc.prop("iothub-creation-time-utc", Some(v));
    }
    for (k, v) in &m.properties.application {
        enc.prop(k, v.as_deref());
    }
    enc.finish(&m.payload)
}

/// Refused CONNECTs stored in the connection log per second, at most (see [`Hub::log_connection`]).
pub const STORED_REFUSALS_PER_SECOND: u64 = 10;

impl Hub {
    /// Stores a telemetry message durably and publishes it on the event stream (the record for the stream is
    /// only built while somebody listens). Returns the event's sequence number.
    pub async fn store_telemetry(
        &self,
        m: ReceivedTelemetry,
        generation_id: &str,
        model_id: Option<String>,
    ) -> Result<u64, StoreError> {
        let now = unix_ms();
        let enqueued = iso8601(now);
        let record = event_record(&m, generation_id, model_id.as_deref(), &enqueued);
        let device = m.identity.device_id;
        let listening = self.events.receiver_count() > 0;
        let kept = listening.then(|| record.clone());
        let seq = self.store.append_event(NewEvent { device: device.clone(), time_ms: now, record }).await?;
        if let Some(record) = kept {
            match crate::store::event::decode(seq, &device, &record) {
                Ok(rec) => {
                    let bytes = rec.held_bytes();
                    self.events.send(rec, bytes);
                }
                Err(e) => tracing::error!("internal: an event record does not decode: {e}"),
            }
        }
        Ok(seq)
    }

    /// Appends to the connection log and its stream. Refused CONNECTs (a wrong key, an unknown device, a DPS
    /// signature that does not verify) need no credential, so at most [`STORED_REFUSALS_PER_SECOND`] a second
    /// are stored; the others are shown live only, and the next stored one counts them. Without this, anyone
    /// could flush the whole connection log (100 000 records) in minutes.
    pub async fn log_connection(&self, rec: ConnectionRecord) {
        let mut rec = rec.bounded();
        if matches!(rec.operation.as_str(), "connectRefused" | "dpsConnectRefused") {
            match self.stored_refusals.admit(unix_ms() / 1000) {
                None => return self.announce_connection(rec),
                Some(0) => {}
                Some(n) => {
                    rec.description += &format!(
                        " ({n} refused connections before this one were shown live but not stored: more than \
                         {STORED_REFUSALS_PER_SECOND} a second)"
                    )
                }
            }
        }
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
                tracing::info!(device = %rec.identity(), op = %rec.operation, code = rec.result_type, reason = %rec.reason, "{}", rec.description);
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
        tracing::debug!(device = %rec.identity(), op = %rec.operation, code = rec.result_type, reason = %rec.reason, "{}", rec.description);
        if self.connlog.receiver_count() > 0 {
            let _ = self.connlog.send(rec);
        }
    }
}
