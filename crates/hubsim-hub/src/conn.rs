//! One task per device connection: a [`HubSession`] driven over a byte transport (MQTT over TLS, or MQTT over
//! WebSocket — both adapted to [`Transport`] before the MQTT layer), plus the store work the session asks for.
//!
//! Whatever a device sends, the worst outcome is that this task logs a reason and ends; it never panics and
//! never holds a lock across an `.await`, so other connections are not disturbed.

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hubsim_proto::hub::{C2dDelivery, CloseReason, HubEvent, HubSession};
use hubsim_proto::topic::{RequestId, TopicFilter};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant as TokioInstant;

use crate::hub::{
    c2d_properties, ConnCmd, ConnHandle, Hub, Inbound, MethodReply, TELEMETRY_IN_FLIGHT_BYTES, TELEMETRY_OVERHEAD,
};
use crate::model::ConnectionRecord;
use hubsim_proto::provisioning::Endpoint;

mod dps;

/// A byte transport under MQTT.
pub enum Transport {
    Stream(Box<dyn Stream>),
    WebSocket(Box<WebSocket>),
}

/// An async byte stream that buffers what it reads (TLS over TCP in practice).
pub trait Stream: AsyncBufRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncBufRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Transport {
    /// The next chunk of bytes; `Ok(None)` when the peer closed. A stream is read through its own buffer
    /// (rustls's received plaintext, one TLS record per chunk): the connection keeps no read buffer of its own, so
    /// an idle one holds none. What is already there is taken too, up to [`READ_GATHER_MAX`] bytes, so a busy
    /// connection hands the session many packets at once.
    async fn recv(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Transport::Stream(s) => {
                let mut out = match s.fill_buf().await {
                    Ok([]) => return Ok(None),
                    Ok(data) => bytes::BytesMut::from(data),
                    Err(e) => return Err(plain_reason(&e)),
                };
                s.consume(out.len());
                while out.len() < READ_GATHER_MAX {
                    // Only what needs no waiting. An error or the end is left to the next call, which reads
                    // again (a socket error may then read as the end).
                    match s.fill_buf().now_or_never() {
                        Some(Ok(data)) if !data.is_empty() => {
                            let n = data.len();
                            out.extend_from_slice(data);
                            s.consume(n);
                        }
                        _ => break,
                    }
                }
                Ok(Some(out.freeze()))
            }
            Transport::WebSocket(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
                    // [MQTT-6.0.0-1] MQTT control packets must be sent in binary data frames.
                    Some(Ok(Message::Text(_))) => {
                        return Err("[MQTT-6.0.0-1] a text WebSocket frame; MQTT needs binary frames".into())
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(e)) => return Err(plain_reason(&e)),
                }
            },
        }
    }

    /// Sends `data` within `deadline`: a device that stops reading must not hold its task, or keep-alive,
    /// expiry, disable and replacement could no longer close it.
    pub(crate) async fn send_within(&mut self, data: Bytes, deadline: std::time::Duration) -> Result<(), String> {
        match tokio::time::timeout(deadline, self.send(data)).await {
            Ok(r) => r,
            Err(_) => Err(format!("a write took longer than {} s: the device is not reading", deadline.as_secs_f32())),
        }
    }

    async fn send(&mut self, data: Bytes) -> Result<(), String> {
        match self {
            Transport::Stream(s) => s.write_all(&data).await.map_err(|e| e.to_string()),
            Transport::WebSocket(ws) => ws.send(Message::Binary(data)).await.map_err(|e| e.to_string()),
        }
    }

    async fn close(self) {
        match self {
            Transport::Stream(mut s) => {
                let _ = s.shutdown().await;
            }
            Transport::WebSocket(mut ws) => {
                let _ = ws.send(Message::Close(None)).await;
            }
        }
    }
}

/// A transport's error in words for the connection log: rustls's "peer closed connection without sending TLS
/// close_notify: https://docs.rs/rustls/…" (the device dropped its TCP connection without closing TLS) is said
/// plainly, and a documentation URL that ends any other error's text is dropped.
pub(crate) fn plain_reason(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("closed connection without sending TLS close_notify") {
        return "the peer closed the TLS connection without close_notify".into();
    }
    match text.rfind(": http") {
        Some(i) if !text[i + 2..].contains(char::is_whitespace) => text[..i].to_owned(),
        _ => text,
    }
}

/// Most bytes one read of a stream gathers from what has already arrived (see [`Transport::recv`]).
pub const READ_GATHER_MAX: usize = 16 * 1024;

/// A telemetry write in progress: the packet id to PUBACK once the write is durable, and the bytes it holds.
type PendingAck = std::pin::Pin<Box<dyn std::future::Future<Output = (Option<u16>, usize, Result<(), String>)> + Send>>;

/// Telemetry writes in flight per connection before the task stops reading from the device (back-pressure:
/// the device's TCP window fills and it waits, as with a slow hub). IoT Hub SDKs keep far fewer in flight.
pub const MAX_PENDING_WRITES: usize = 128;
/// Bytes of telemetry in flight per connection before the task stops reading (1 MiB).
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;

/// A connection's telemetry writes in flight and its share of the hub-wide budget
/// ([`crate::hub::TELEMETRY_IN_FLIGHT_BYTES`]).
struct InFlight {
    acks: FuturesOrdered<PendingAck>,
    /// Payload bytes of `acks`.
    bytes: usize,
    /// Budget bytes this connection holds.
    held: usize,
    /// Budget bytes it must take before it reads again.
    owed: usize,
}

impl InFlight {
    /// A message of `size` payload bytes was read: take its share of the budget, or owe it.
    fn add(&mut self, hub: &Hub, size: usize) {
        self.bytes += size;
        let cost = size + TELEMETRY_OVERHEAD;
        match hub.telemetry_budget.try_acquire_many(cost.min(TELEMETRY_IN_FLIGHT_BYTES) as u32) {
            Ok(p) if self.owed == 0 => {
                p.forget();
                self.held += cost;
            }
            _ => self.owed += cost,
        }
    }

    /// A message of `size` payload bytes is stored: give its share back.
    fn done(&mut self, hub: &Hub, size: usize) {
        self.bytes -= size;
        let cost = size + TELEMETRY_OVERHEAD;
        let back = cost.min(self.held);
        self.held -= back;
        self.owed = self.owed.saturating_sub(cost - back);
        hub.telemetry_budget.add_permits(back);
    }
}

struct Ctx {
    hub: Arc<Hub>,
    kind: &'static str,
    /// The listener's port (a device token for `{host name}:{port}` is accepted, [`Hub::authenticate`]).
    port: u16,
    remote: String,
    device: Option<String>,
    conn_id: u64,
    generation_id: String,
    model_id: Option<String>,
    clean_session: bool,
    handle: ConnHandle,
    /// C2D packet id → queue sequence (the lock deadline is the session's).
    c2d: HashMap<u16, u64>,
    methods: HashMap<String, oneshot::Sender<MethodReply>>,
    connected: bool,
    /// Set when a CONNECT was accepted: the connection-log description, written once the CONNACK is out.
    after_connack: Option<String>,
}

/// What the first bytes of a connection said.
enum Sniffed {
    /// A DPS CONNECT: the connection is served by the local DPS ([`dps`]).
    Dps(Vec<u8>),
    /// Anything else, with the bytes read so far and, if the transport ended, why.
    Hub(Vec<u8>, Option<String>),
}

/// Reads until the first packet tells a DPS device from a hub device (the SDKs dial the same ports for both).
/// A transport that sends nothing within the CONNECT deadline goes to the hub session, whose timer closes it.
async fn sniff(hub: &Hub, transport: &mut Transport) -> Sniffed {
    let deadline = TokioInstant::now() + hub.settings.protocol.connect_timeout;
    let max = hub.settings.protocol.max_message_size + 64 * 1024;
    let mut got = Vec::new();
    loop {
        match hubsim_proto::provisioning::sniff_endpoint(&got, max) {
            Endpoint::Dps => return Sniffed::Dps(got),
            Endpoint::Hub => return Sniffed::Hub(got, None),
            Endpoint::NeedMore => {}
        }
        match tokio::time::timeout_at(deadline, transport.recv()).await {
            Ok(Ok(Some(b))) => got.extend_from_slice(&b),
            Ok(Ok(None)) => return Sniffed::Hub(got, Some("the device closed the connection".into())),
            Ok(Err(e)) => return Sniffed::Hub(got, Some(e)),
            Err(_) => return Sniffed::Hub(got, None),
        }
    }
}

/// Serves one connection, arrived on listener port `port`, until it closes: a DPS device ([`dps`]) or a hub
/// device. `place` is its place among the connections that have not authenticated yet
/// (`listener::Limits::unauthenticated`), given back once its CONNECT is accepted (a DPS device's: once its whole
/// CONNECT is read).
pub async fn serve(
    hub: Arc<Hub>,
    mut transport: Transport,
    kind: &'static str,
    port: u16,
    remote: String,
    mut place: Option<crate::pre_auth::Place>,
) {
    let opened = hub.now();
    let mut session = HubSession::new(hub.settings.protocol.clone(), opened);
    // The rarely taken paths are boxed (here and below), so the task of an idle connection stays small: an async
    // function's future is as large as its largest state, nested calls included.
    // A connection whose place a newcomer took (see `pre_auth`) is closed.
    let sniffed = tokio::select! {
        s = Box::pin(sniff(&hub, &mut transport)) => s,
        _ = crate::pre_auth::evicted(&place) => return crate::listener::evicted(&remote),
    };
    let (first, ended) = match sniffed {
        Sniffed::Dps(first) => {
            drop(place);
            return Box::pin(dps::serve(hub, transport, kind, remote, first, opened)).await;
        }
        Sniffed::Hub(first, ended) => (first, ended),
    };
    if !first.is_empty() {
        session.handle_input(hub.now(), &first);
    }
    if let Some(why) = ended {
        session.handle_transport_closed(why);
    }
    let (handle, inbox) = ConnHandle::new();
    let mut ctx = Ctx {
        hub: hub.clone(),
        kind,
        port,
        remote,
        device: None,
        conn_id: 0,
        generation_id: String::new(),
        model_id: None,
        clean_session: true,
        handle,
        c2d: HashMap::new(),
        methods: HashMap::new(),
        connected: false,
        after_connack: None,
    };
    // Telemetry writes in flight, in arrival order: the store commits them in groups and PUBACKs leave in order,
    // each only after its write is durable. One connection can have many writes in one commit.
    let mut fl = InFlight { acks: FuturesOrdered::new(), bytes: 0, held: 0, owed: 0 };
    let mut closed = None;
    loop {
        while let Some(ev) = session.poll_event() {
            if let HubEvent::Closed { reason, will } = ev {
                closed = Some((reason, will));
            } else {
                match ev {
                    HubEvent::Telemetry { message, ack } => ctx.telemetry(message, ack, &mut fl),
                    ev => Box::pin(ctx.handle(&mut session, ev)).await,
                }
            }
        }
        if ctx.connected {
            drop(place.take());
        }
        // Everything the session has to send goes out in one write (one TLS record, one system call): after a
        // group commit that is many PUBACKs at once.
        let mut write_failed = None;
        while let Some(out) = gather_transmits(&mut session) {
            if let Err(e) = transport.send_within(out, hub.settings.write_timeout).await {
                write_failed = Some(e);
                break;
            }
        }
        if let Some(e) = write_failed {
            session.handle_transport_closed(format!("write failed: {e}"));
            continue;
        }
        // The CONNACK has just been written: now the connection log, then queued C2D messages.
        if let Some(description) = ctx.after_connack.take() {
            Box::pin(ctx.after_connack(&mut session, description)).await;
            continue;
        }
        if closed.is_some() {
            break;
        }
        let timer = ctx.next_deadline(&session);
        let room = fl.acks.len() < MAX_PENDING_WRITES && fl.bytes < MAX_PENDING_BYTES && fl.owed == 0;
        // Packets already received (one WebSocket message can hold thousands) are read a turn's worth at a time,
        // under the same back-pressure as reads, before the transport is read again.
        if room && session.wants_input() && session.input_pending() {
            session.resume(hub.now());
            continue;
        }
        tokio::select! {
            // Back-pressure: not while too many writes are pending (the session's held PUBACKs, and the bytes of
            // all writes including QoS 0), nor while this connection owes the hub-wide budget: the device waits
            // in TCP's window.
            r = transport.recv(), if room && session.wants_input() && !session.input_pending() => match r {
                Ok(Some(b)) => session.handle_input(hub.now(), &b),
                Ok(None) => session.handle_transport_closed("the device closed the connection"),
                Err(e) => session.handle_transport_closed(e),
            },
            got = inbox.recv() => match got {
                Inbound::Cmd(cmd) => Box::pin(ctx.command(&mut session, cmd)).await,
                Inbound::Close(reason) => session.close(reason),
            },
            r = hub.telemetry_budget.acquire_many(fl.owed.min(TELEMETRY_IN_FLIGHT_BYTES) as u32), if fl.owed > 0 => {
                if let Ok(p) = r {
                    p.forget();
                    fl.held += fl.owed;
                    fl.owed = 0;
                }
            }
            Some(first) = fl.acks.next(), if !fl.acks.is_empty() => {
                // One group commit makes many of this connection's writes durable at once: take every one that is
                // ready, so their PUBACKs leave together.
                let mut done = Some(first);
                while let Some((ack, size, stored)) = done.take() {
                    match stored {
                        Ok(()) => {
                            fl.done(&hub, size);
                            if let Some(pkid) = ack {
                                ack_publish(&mut session, pkid);
                            }
                        }
                        Err(e) => {
                            session.close(CloseReason::ClosedByService(format!("the event could not be stored: {e}")));
                            break;
                        }
                    }
                    done = fl.acks.next().now_or_never().flatten();
                }
            }
            _ = sleep_until(timer) => session.handle_timeout(hub.now()),
            _ = crate::pre_auth::evicted(&place) => {
                crate::listener::evicted(&ctx.remote);
                session.handle_transport_closed("a newcomer took its place among the connections waiting to authenticate");
            }
        }
    }
    // The close handshake is a write too: a device that stopped reading must not hold the task here either.
    let _ = tokio::time::timeout(hub.settings.write_timeout, Box::pin(transport.close())).await;
    // Store what was received before the close (it was never acknowledged, so the device may send it again).
    while fl.acks.next().await.is_some() {}
    hub.telemetry_budget.add_permits(fl.held);
    if let Some((reason, will)) = closed {
        Box::pin(ctx.finish(reason, will)).await;
    }
}

async fn sleep_until(t: Option<TokioInstant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Ctx {
    fn next_deadline(&self, session: &HubSession) -> Option<TokioInstant> {
        session.poll_timeout().map(|t| self.hub.tokio_instant(t))
    }

    fn device(&self) -> &str {
        self.device.as_deref().unwrap_or("")
    }

    /// A telemetry message: its write joins the connection's writes in flight (PUBACK once it is durable).
    fn telemetry(&mut self, message: hubsim_proto::hub::ReceivedTelemetry, ack: Option<u16>, fl: &mut InFlight) {
        let (hub, generation, model) = (self.hub.clone(), self.generation_id.clone(), self.model_id.clone());
        let size = message.payload.len();
        fl.add(&self.hub, size);
        fl.acks.push_back(Box::pin(async move {
            let r = hub.store_telemetry(message, &generation, model).await.map(|_| ()).map_err(|e| e.to_string());
            (ack, size, r)
        }));
    }

    /// Every other event of the session (telemetry goes to [`Ctx::telemetry`]).
    async fn handle(&mut self, session: &mut HubSession, ev: HubEvent) {
        match ev {
            HubEvent::Authenticate(req) => {
                // The registry name: `{device}` or `{device}/{module}`.
                let id = req.identity.to_string();
                self.device = Some(id.clone());
                self.model_id = req.username.model_id.clone();
                self.clean_session = req.clean_session;
                match self.hub.authenticate(&req, self.port).await {
                    Ok(adm) => {
                        self.generation_id = adm.generation_id;
                        self.conn_id = self.hub.register(&id, self.handle.clone());
                        // A disable that landed after the check above and swept before the registration.
                        if !self.hub.still_admitted(&id).await {
                            self.handle.close(CloseReason::DeviceDisabled);
                        }
                        self.hub.set_model_id(&id, self.model_id.clone()).await;
                        self.connected = true;
                        if let Err(e) =
                            session.accept(self.hub.now(), adm.session_present, adm.restored, adm.token_expiry)
                        {
                            tracing::error!("{e}");
                        }
                        // Logged and C2D delivered once the CONNACK is out ([`Ctx::after_connack`]): the device
                        // does not wait for the connection log's durable write.
                        self.after_connack = Some(format!(
                            "connected over {} (CleanSession {}, keep-alive {} s, session present {}, api-version {})",
                            self.kind,
                            req.clean_session as u8,
                            req.keep_alive.as_secs(),
                            adm.session_present,
                            shown_api_version(req.username.api_version.as_deref())
                        ));
                    }
                    Err((code, why)) => {
                        if let Err(e) = session.refuse(code, why) {
                            tracing::error!("{e}");
                        }
                    }
                }
            }
            HubEvent::Telemetry { .. } => {}
            HubEvent::Subscribed(filters) => {
                self.persist_subscriptions(session).await;
                if filters.iter().any(|(f, _)| *f == TopicFilter::Methods) {
                    // Method callers waiting for this device (`connectTimeoutInSeconds`) can hand it their call.
                    self.hub.came_online(self.device());
                }
                if filters.iter().any(|(f, _)| *f == TopicFilter::C2d) {
                    self.deliver_c2d(session).await;
                }
            }
            HubEvent::Unsubscribed(_) => self.persist_subscriptions(session).await,
            HubEvent::C2dLockExpired(pkid) => self.lock_expired(session, pkid).await,
            HubEvent::C2dCompleted(pkid) => {
                if let Some(seq) = self.c2d.remove(&pkid) {
                    if let Err(e) = self.hub.c2d_complete(self.device(), seq).await {
                        tracing::error!("cannot complete C2D message {seq}: {e}");
                    }
                }
            }
            HubEvent::MethodResponse { rid, status, payload, ack } => {
                // Handed to the waiting service call (or dropped, if it gave up): then the PUBACK.
                if let Some(w) = self.methods.remove(&rid.0) {
                    let _ = w.send(MethodReply::Response { status, payload });
                }
                if let Some(pkid) = ack {
                    ack_publish(session, pkid);
                }
            }
            HubEvent::TwinGet { rid } => {
                let _ = match self.hub.store.twin(self.device()).await {
                    Ok(t) => session.twin_response(&rid, 200, None, Bytes::from(t.mqtt_document().to_string())),
                    Err(e) => session.twin_response(&rid, 500, None, error_body(500001, &e.to_string())),
                };
            }
            HubEvent::TwinPatchReported { rid, patch, ack } => {
                // PUBACK once the store write finished (the response tells the device how it went).
                self.patch_reported(session, rid, patch).await;
                if let Some(pkid) = ack {
                    ack_publish(session, pkid);
                }
            }
            HubEvent::Closed { .. } => {}
        }
    }

    /// After the CONNACK of an accepted CONNECT: the connection log's record, then the C2D messages waiting.
    async fn after_connack(&mut self, session: &mut HubSession, description: String) {
        self.log("deviceConnect", 0, "connected", description).await;
        self.deliver_c2d(session).await;
    }

    async fn patch_reported(&mut self, session: &mut HubSession, rid: RequestId, patch: Bytes) {
        let value: serde_json::Value = match serde_json::from_slice(&patch) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                let body = error_body(400004, "the reported patch must be a JSON object");
                let _ = session.twin_response(&rid, 400, None, body);
                return;
            }
        };
        // Its size is judged after the merge, as IoT Hub counts it (not by its text, whose escapes vary by client).
        let _ = match self.hub.patch_reported(self.device(), value).await {
            Ok(v) => session.twin_response(&rid, 204, Some(v), Bytes::new()),
            Err(crate::hub::twin::ReportedError::Invalid(e)) => {
                session.twin_response(&rid, 400, None, error_body(400004, &e.to_string()))
            }
            Err(e) => session.twin_response(&rid, 500, None, error_body(500001, &e.to_string())),
        };
    }

    async fn persist_subscriptions(&self, session: &HubSession) {
        if self.clean_session {
            return;
        }
        if let Err(e) = self.hub.save_subscriptions(self.device(), session.subscriptions()).await {
            tracing::error!("cannot store the subscriptions of {}: {e}", self.device());
        }
    }

    async fn command(&mut self, session: &mut HubSession, cmd: ConnCmd) {
        match cmd {
            ConnCmd::C2dAvailable => self.deliver_c2d(session).await,
            ConnCmd::Method(call) => {
                let crate::hub::MethodCall { name, payload, reply } = *call;
                let rid = self.hub.next_rid();
                if session.send_method_request(&name, &RequestId(rid.clone()), payload) == Ok(true) {
                    // Calls whose caller stopped waiting (timed out) are forgotten: a device that never answers
                    // cannot grow the table with every invocation.
                    self.methods.retain(|_, waiting| !waiting.is_closed());
                    self.methods.insert(rid, reply);
                } else {
                    let _ = reply.send(MethodReply::NotSubscribed);
                }
            }
            ConnCmd::Desired(push) => {
                let (version, body) = *push;
                let _ = session.push_desired(version, body);
            }
        }
    }

    /// Sends every deliverable queued message if the device is subscribed to C2D.
    async fn deliver_c2d(&mut self, session: &mut HubSession) {
        if session.subscription(&TopicFilter::C2d).is_none() || session.is_closed() {
            return;
        }
        let exclude = self.c2d.values().copied().collect();
        let msgs = match self.hub.c2d_take(self.device(), exclude).await {
            Ok(m) => m,
            Err(e) => return tracing::error!("cannot read the C2D queue of {}: {e}", self.device()),
        };
        let mut unsent = Vec::new();
        for m in msgs {
            let delivery = session.deliver_c2d(
                self.hub.now(),
                c2d_properties(&m),
                Bytes::from(m.body.clone()),
                m.delivery_count > 1,
            );
            match delivery {
                Ok(C2dDelivery::AwaitingAck(pkid)) => {
                    self.c2d.insert(pkid, m.seq);
                }
                // QoS 0: completed on send.
                Ok(C2dDelivery::Completed) => {
                    let _ = self.hub.c2d_complete(self.device(), m.seq).await;
                }
                Ok(C2dDelivery::NotSubscribed) | Err(_) => unsent.push(m.seq),
            }
        }
        let _ = self.hub.c2d_release(self.device(), unsent).await;
    }

    /// The session's lock on a delivery ran out without a PUBACK: relock it in the store and redeliver it with DUP,
    /// or, when it expired or reached the delivery limit (dead-lettered by the store), abandon it.
    async fn lock_expired(&mut self, session: &mut HubSession, pkid: u16) {
        let Some(&seq) = self.c2d.get(&pkid) else { return };
        match self.hub.c2d_relock(self.device(), seq).await {
            Ok(Some(m)) => {
                if let Err(e) = session.redeliver_c2d(self.hub.now(), pkid, c2d_properties(&m), Bytes::from(m.body)) {
                    tracing::error!("{e}");
                }
            }
            Ok(None) => {
                let _ = session.abandon_c2d(pkid);
                self.c2d.remove(&pkid);
            }
            Err(e) => tracing::error!("cannot relock C2D message {seq}: {e}"),
        }
    }

    async fn finish(&mut self, reason: CloseReason, will: Option<hubsim_proto::hub::ReceivedTelemetry>) {
        if let Some(id) = self.device.clone() {
            if self.connected {
                self.hub.unregister(&id, self.conn_id);
                let seqs = self.c2d.values().copied().collect();
                let _ = self.hub.c2d_release(&id, seqs).await;
            }
        }
        if let Some(will) = will {
            if let Err(e) = self.hub.store_telemetry(will, &self.generation_id, self.model_id.clone()).await {
                tracing::error!("cannot store the Will of {}: {e}", self.device());
            }
        }
        let op = if self.connected { "deviceDisconnect" } else { "connectRefused" };
        if self.device.is_none() {
            // No valid CONNECT arrived (a bad CONNECT, junk, a port scan, a closed socket): shown live, never
            // stored, so a stream of junk connections cannot grow the connection log.
            self.hub.announce_connection(self.record(op, reason.code(), reason.kind(), reason.to_string()));
            return;
        }
        self.log(op, reason.code(), reason.kind(), reason.to_string()).await;
    }

    fn record(&self, op: &str, code: u32, reason: &str, description: String) -> ConnectionRecord {
        ConnectionRecord::new(op, self.device.clone(), self.kind, &self.remote, code, reason, description)
    }

    async fn log(&self, op: &str, code: u32, reason: &str, description: String) {
        self.hub.log_connection(self.record(op, code, reason, description)).await;
    }
}

/// The user name's `api-version` as the connection log shows it: as sent when it looks like one (`2021-04-12`,
/// `2020-09-30-preview`: letters, digits, `-` and `.`, at most 32), else quoted and cut, so that text a device
/// chose (`2021-04-12 device=victim op=…`) cannot pose as the log line's own fields.
fn shown_api_version(v: Option<&str>) -> String {
    match v {
        None => "none".into(),
        Some(v) if v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') => v.into(),
        Some(v) => hubsim_proto::quote::quote(&crate::hub::truncate(v, 64)),
    }
}

/// Most bytes gathered into one write (the rest waits for the next turn of the loop).
const MAX_GATHER: usize = 64 * 1024;

/// What the session has to send, as one buffer (`None` when nothing).
fn gather_transmits(session: &mut HubSession) -> Option<Bytes> {
    let first = session.poll_transmit()?;
    if first.len() >= MAX_GATHER {
        return Some(first);
    }
    let Some(second) = session.poll_transmit() else { return Some(first) };
    let mut out = bytes::BytesMut::with_capacity(first.len() + second.len() + 256);
    out.extend_from_slice(&first);
    out.extend_from_slice(&second);
    while out.len() < MAX_GATHER {
        match session.poll_transmit() {
            Some(b) => out.extend_from_slice(&b),
            None => break,
        }
    }
    Some(out.freeze())
}

/// Releases a PUBACK held for a write that is now done; a refusal is a bug in this task, logged.
fn ack_publish(session: &mut HubSession, pkid: u16) {
    if let Err(e) = session.ack_publish(pkid) {
        tracing::error!("{e}");
    }
}

fn error_body(code: u32, message: &str) -> Bytes {
    Bytes::from(crate::hub::error_json(code, message).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn transport_errors_are_said_without_documentation_urls() {
        let eof = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: \
             https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
        );
        assert_eq!(super::plain_reason(&eof), "the peer closed the TLS connection without close_notify");
        let other = std::io::Error::other("something failed: https://example.com/why");
        assert_eq!(super::plain_reason(&other), "something failed");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(super::plain_reason(&reset), reset.to_string());
        let words = "read failed: http is not spoken here";
        assert_eq!(super::plain_reason(&words), words, "only a URL at the end is dropped");
    }

    #[test]
    fn an_api_version_is_shown_as_sent_only_when_it_looks_like_one() {
        assert_eq!(super::shown_api_version(Some("2021-04-12")), "2021-04-12");
        assert_eq!(super::shown_api_version(Some("2020-09-30-preview")), "2020-09-30-preview");
        assert_eq!(super::shown_api_version(None), "none");
        let forged = "2021-04-12 device=victim op=deviceConnect code=0";
        assert_eq!(super::shown_api_version(Some(forged)), format!("\"{forged}\""));
        assert!(super::shown_api_version(Some(&"9".repeat(5000))).len() < 100);
    }

    /// What every connection holds for its whole life: the task's future (rare paths are boxed) and a slot per
    /// queued command. A regression here multiplies by the number of idle connections (BENCHMARKS.md §6).
    #[test]
    fn an_idle_connection_task_stays_small() {
        fn future_size<A, B, C, D, E, G, F: std::future::Future>(_: fn(A, B, C, D, E, G) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let serve = future_size(super::serve);
        assert!(serve <= 2560, "the connection task's future is {serve} bytes (it was 4352 before boxing)");
        assert!(std::mem::size_of::<crate::hub::ConnCmd>() <= 16, "a queued command is kept small");
    }
}
