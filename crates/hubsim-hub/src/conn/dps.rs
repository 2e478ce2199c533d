//! One DPS device connection: the core's [`DpsSession`] over the same byte transport as hub devices (the
//! connection task handed it over after sniffing a DPS CONNECT), plus the enrollment work its events ask for
//! ([`Hub::dps_authenticate`], [`Hub::dps_register`], [`Hub::dps_operation`]).
//!
//! Register requests are answered 202 `assigning` with `retry-after: 1`; the status poll gets the outcome (200).
//! The connection log records refusals (`dpsConnectRefused`), each registration with its outcome
//! (`dpsRegister`) and the end of an accepted connection (`dpsDisconnect`), under the registration id.

use hubsim_proto::hub::{CloseReason, Refusal};
use hubsim_proto::provisioning::{DpsConfig, DpsEvent, DpsSession, ErrorBody};
use hubsim_proto::topic::RequestId;
use hubsim_proto::Instant;
use std::sync::Arc;

use super::{sleep_until, Transport};
use crate::hub::dps::{Enrolled, RETRY_AFTER_S};
use crate::hub::{random_id, truncate, ConnHandle, Hub, Inbound, ServiceError};
use crate::model::ConnectionRecord;
use crate::store::StoreError;
use crate::timefmt::{iso8601, unix_ms};

struct DpsCtx {
    hub: Arc<Hub>,
    kind: &'static str,
    remote: String,
    registration_id: Option<String>,
    enrolled: Option<Enrolled>,
    /// The refusal of an authenticated-but-refused CONNECT is already in the log.
    refusal_logged: bool,
}

/// Serves a DPS connection whose first bytes (`first`, at least a whole CONNECT) were already read; `opened` is
/// when the transport opened, for the CONNECT deadline.
pub(super) async fn serve(
    hub: Arc<Hub>,
    mut transport: Transport,
    kind: &'static str,
    remote: String,
    first: Vec<u8>,
    opened: Instant,
) {
    let config = DpsConfig {
        connect_timeout: hub.settings.protocol.connect_timeout,
        max_keep_alive_timeout: hub.settings.protocol.max_keep_alive_timeout,
        ..DpsConfig::default()
    };
    let mut session = DpsSession::new(config, opened);
    // Commands are never sent to a DPS connection; the handle exists so shutdown can close it.
    let (handle, inbox) = ConnHandle::new();
    let conn_id = hub.dps_register_conn(handle);
    let mut ctx =
        DpsCtx { hub: hub.clone(), kind, remote, registration_id: None, enrolled: None, refusal_logged: false };
    session.handle_input(hub.now(), &first);
    let mut closed = None;
    loop {
        while let Some(ev) = session.poll_event() {
            match ev {
                DpsEvent::Closed { reason } => closed = Some(reason),
                DpsEvent::Authenticate(req) => {
                    ctx.registration_id = Some(truncate(&req.registration_id, 256));
                    match hub.dps_authenticate(&req).await {
                        Ok(enrolled) => {
                            ctx.enrolled = Some(enrolled);
                            session.accept(hub.now());
                        }
                        Err((code, why)) => {
                            // Stored before the device sees the refusal, so a script that saw it finds the record.
                            let reason = CloseReason::Refused(Refusal::ByHub { code: code as u8, why: why.clone() });
                            ctx.log("dpsConnectRefused", reason.code(), reason.kind(), reason.to_string()).await;
                            ctx.refusal_logged = true;
                            session.refuse(code, why);
                        }
                    }
                }
                DpsEvent::RegisterRequested { rid, registration_id, payload_raw } => {
                    ctx.register(&mut session, rid, &registration_id, payload_raw).await
                }
                DpsEvent::StatusRequested { rid, operation_id } => ctx.status(&mut session, rid, &operation_id).await,
            }
        }
        let mut write_failed = None;
        while let Some(bytes) = session.poll_transmit() {
            if let Err(e) = transport.send_within(bytes, hub.settings.write_timeout).await {
                write_failed = Some(e);
                break;
            }
        }
        if let Some(e) = write_failed {
            session.handle_transport_closed(format!("write failed: {e}"));
            continue;
        }
        if closed.is_some() {
            break;
        }
        let timer = session.poll_timeout().map(|t| hub.tokio_instant(t));
        tokio::select! {
            r = transport.recv() => match r {
                Ok(Some(b)) => session.handle_input(hub.now(), &b),
                Ok(None) => session.handle_transport_closed("the device closed the connection"),
                Err(e) => session.handle_transport_closed(e),
            },
            Inbound::Close(reason) = inbox.recv() => session.close(reason),
            _ = sleep_until(timer) => session.handle_timeout(hub.now()),
        }
    }
    let _ = tokio::time::timeout(hub.settings.write_timeout, transport.close()).await;
    hub.dps_unregister_conn(conn_id);
    if let Some(reason) = closed {
        ctx.finish(reason).await;
    }
}

/// An error answer with a tracking id and time, as the service writes them.
fn error_body(code: u64, message: &str) -> ErrorBody {
    ErrorBody {
        error_code: code,
        message: message.to_owned(),
        tracking_id: Some(random_id()),
        timestamp_utc: Some(iso8601(unix_ms())),
    }
}

impl DpsCtx {
    async fn register(
        &mut self,
        session: &mut DpsSession,
        rid: RequestId,
        registration_id: &str,
        payload: Option<String>,
    ) {
        let Some(enrolled) = self.enrolled.clone() else { return };
        let sent = match self.hub.dps_register(&enrolled, registration_id, payload).await {
            Ok(rec) => {
                let (code, reason, what) = match (rec.status.as_str(), &rec.device_id) {
                    ("assigned", Some(d)) => (
                        0,
                        "assigned",
                        format!(
                            "registration '{registration_id}' assigned to {} as device '{d}' ({}) through {}",
                            rec.assigned_hub.as_deref().unwrap_or(""),
                            rec.substatus.as_deref().unwrap_or(""),
                            via(&enrolled)
                        ),
                    ),
                    (status, _) => (
                        0,
                        "disabled",
                        format!("registration '{registration_id}' is {status}: the {} is disabled", via(&enrolled)),
                    ),
                };
                self.log("dpsRegister", code, reason, format!("{what} (over {})", self.kind)).await;
                session.respond_assigning(&rid, &rec.operation_id, RETRY_AFTER_S)
            }
            Err(ServiceError::Api { status, code, message }) => {
                self.log("dpsRegister", code, "failed", message.clone()).await;
                session.respond_error(&rid, status, &error_body(code as u64, &message), None)
            }
            // The store is unavailable: retryable, as a 5xx from the service is.
            Err(ServiceError::Store(e)) => {
                self.log("dpsRegister", 500001, "failed", e.to_string()).await;
                session.respond_error(&rid, 503, &error_body(503001, &e.to_string()), Some(2))
            }
        };
        if let Err(e) = sent {
            tracing::info!("DPS answer to '{registration_id}' not sent: {e}");
        }
    }

    async fn status(&mut self, session: &mut DpsSession, rid: RequestId, operation_id: &str) {
        let registration_id = self.registration_id.clone().unwrap_or_default();
        let sent = match self.hub.dps_operation(&registration_id, operation_id).await {
            Ok(Some(rec)) => session.respond_result(&rid, &rec.operation_id, &rec.state()),
            Ok(None) => session.respond_error(
                &rid,
                404,
                &error_body(
                    404204,
                    &format!(
                        "operation '{}' is not the current operation of registration '{registration_id}'",
                        truncate(operation_id, 128)
                    ),
                ),
                None,
            ),
            // A record an older hubsim stored unreadable: retrying cannot help, registering again replaces it.
            Err(StoreError::Record(why)) => session.respond_error(
                &rid,
                400,
                &error_body(
                    400004,
                    &format!("the registration record cannot be read ({why}): send a register request again"),
                ),
                None,
            ),
            Err(e) => session.respond_error(&rid, 503, &error_body(503001, &e.to_string()), Some(2)),
        };
        if let Err(e) = sent {
            tracing::info!("DPS status answer to '{registration_id}' not sent: {e}");
        }
    }

    async fn finish(&self, reason: CloseReason) {
        let (code, kind, text) = (reason.code(), reason.kind(), reason.to_string());
        match (&self.registration_id, &self.enrolled) {
            // No valid CONNECT: shown live only, like hub connections.
            (None, _) => self.hub.announce_connection(self.record("dpsConnectRefused", code, kind, text)),
            (Some(_), None) if self.refusal_logged => {}
            (Some(_), None) => self.log("dpsConnectRefused", code, kind, text).await,
            (Some(_), Some(_)) => self.log("dpsDisconnect", code, kind, text).await,
        }
    }

    fn record(&self, op: &str, code: u32, reason: &str, description: String) -> ConnectionRecord {
        ConnectionRecord::new(op, self.registration_id.clone(), self.kind, &self.remote, code, reason, description)
    }

    async fn log(&self, op: &str, code: u32, reason: &str, description: String) {
        self.hub.log_connection(self.record(op, code, reason, description)).await;
    }
}

fn via(e: &Enrolled) -> String {
    match e {
        Enrolled::Individual(_) => "individual enrollment".into(),
        Enrolled::Group { group, .. } => format!("enrollment group '{group}'"),
    }
}
