//! The hub's shared state and the live-connection map; each concern has its own module: [`auth`] (CONNECT),
//! [`registry`] (identities), [`telemetry`] (events and the connection log), [`c2d`], [`twin`], [`methods`].
//! HTTP presentation lives in `api.rs`.
//!
//! The connection map is a std `Mutex` never held across an `.await` (mini-redis `db.rs`).

mod auth;
mod c2d;
pub mod dps;
mod error;
pub mod live;
mod methods;
pub mod policy;
pub mod query;
mod registry;
mod telemetry;
pub mod twin;

pub use auth::{filter_name, Admitted};
pub use c2d::{c2d_properties, c2d_sweeper, SendC2d, C2D_SWEEP_EVERY, C2D_SWEEP_STEP};
pub use error::{error_json, ServiceError};
pub use methods::{MAX_CONNECT_TIMEOUT, MAX_ONLINE_WAITERS};
pub use registry::{BulkError, BulkMode, BulkOp, IdentitySpec};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hubsim_proto::hub::{CloseReason, HubConfig};
use hubsim_proto::Instant;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

use crate::model::{ConnectionRecord, EventRecord};
use crate::store::{Store, StoreError};

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
    /// Longest time one write to a device may take before the connection is closed as not reading (10 s).
    pub write_timeout: Duration,
    /// Places of the connections that have not authenticated yet ([`crate::listener::Limits::unauthenticated`]).
    pub unauthenticated: usize,
    /// See [`crate::listener::Limits::evict_unauthenticated_after`].
    pub evict_unauthenticated_after: Duration,
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
            write_timeout: Duration::from_secs(10),
            unauthenticated: crate::listener::Limits::default().unauthenticated,
            evict_unauthenticated_after: crate::listener::Limits::default().evict_unauthenticated_after,
        }
    }
}

/// Commands waiting per connection, at most (a full queue means the connection task is stuck).
pub const CONN_QUEUE: usize = 64;

/// Commands the hub sends to a connection task through its bounded queue. Closing goes apart, through
/// [`ConnHandle::close`], so a full queue can never keep a connection open.
#[derive(Debug)]
pub enum ConnCmd {
    /// New C2D messages may be deliverable.
    C2dAvailable,
    /// A direct-method call (boxed, like `Desired`: the command queue's slots are allocated with the connection,
    /// so a small command keeps an idle connection small).
    Method(Box<MethodCall>),
    Desired(Box<(u64, Bytes)>),
}

/// A direct-method call for a connection.
#[derive(Debug)]
pub struct MethodCall {
    pub name: String,
    pub payload: Bytes,
    pub reply: oneshot::Sender<MethodReply>,
}

/// A device's answer to a method call.
#[derive(Debug)]
pub enum MethodReply {
    Response { status: u16, payload: Bytes },
    NotSubscribed,
}

/// How the hub reaches a connection task: a small mailbox of commands, bounded by [`CONN_QUEUE`], and a close
/// request beside them (so a full queue can never keep a connection open). One allocation of about 200 bytes per
/// connection (a channel and a watch were some 1.4 KB, kept by every idle connection); the queue's memory is
/// allocated only while commands wait.
#[derive(Clone)]
pub struct ConnHandle(Arc<Mailbox>);

/// The connection task's side of its [`ConnHandle`]s; dropping it (the task ended) fails later sends and drops
/// the commands still queued (a waiting method call learns the device is gone).
pub struct ConnInbox(Arc<Mailbox>);

struct Mailbox {
    state: Mutex<MailState>,
    /// Wakes the connection task (one waiter).
    wake: tokio::sync::Notify,
    /// Wakes senders waiting for room.
    room: tokio::sync::Notify,
}

#[derive(Default)]
struct MailState {
    cmds: std::collections::VecDeque<ConnCmd>,
    close: Close,
    /// The task is gone.
    gone: bool,
}

#[derive(Default)]
enum Close {
    #[default]
    No,
    Asked(CloseReason),
    /// The task took the reason: later ones are ignored (the first reason wins).
    Taken,
}

/// What the connection task receives.
pub enum Inbound {
    Cmd(ConnCmd),
    Close(CloseReason),
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, MailState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConnHandle {
    /// A handle and the receiving end for the connection task.
    pub fn new() -> (ConnHandle, ConnInbox) {
        let mailbox = Arc::new(Mailbox {
            state: Mutex::new(MailState::default()),
            wake: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
        });
        (ConnHandle(mailbox.clone()), ConnInbox(mailbox))
    }

    /// Queues `cmd`, or gives it back when the queue is full or the task is gone.
    pub fn try_send(&self, cmd: ConnCmd) -> Result<(), ConnCmd> {
        let mut s = self.0.lock();
        if s.gone || s.cmds.len() >= CONN_QUEUE {
            return Err(cmd);
        }
        s.cmds.push_back(cmd);
        drop(s);
        self.0.wake.notify_one();
        Ok(())
    }

    /// Queues `cmd`, waiting for room; gives it back once the task is gone.
    pub async fn send(&self, mut cmd: ConnCmd) -> Result<(), ConnCmd> {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(c) if self.0.lock().gone => return Err(c),
                Err(c) => cmd = c,
            }
            room.await;
        }
    }

    /// Asks the task to close (the first reason wins).
    pub fn close(&self, reason: CloseReason) {
        let mut s = self.0.lock();
        if matches!(s.close, Close::No) {
            s.close = Close::Asked(reason);
            drop(s);
            self.0.wake.notify_one();
        }
    }
}

impl ConnInbox {
    /// The next command or close request (a close first). Cancel-safe: nothing is taken until it is returned.
    pub async fn recv(&self) -> Inbound {
        loop {
            if let Some(got) = self.try_recv() {
                return got;
            }
            // A wake-up sent since the check above is kept for this single waiter (Notify's permit).
            self.0.wake.notified().await;
        }
    }

    fn try_recv(&self) -> Option<Inbound> {
        let mut s = self.0.lock();
        if matches!(s.close, Close::Asked(_)) {
            if let Close::Asked(reason) = std::mem::replace(&mut s.close, Close::Taken) {
                return Some(Inbound::Close(reason));
            }
        }
        let cmd = s.cmds.pop_front()?;
        if s.cmds.is_empty() {
            // Drained: an idle connection holds no queue memory.
            s.cmds = Default::default();
        }
        drop(s);
        self.0.room.notify_waiters();
        Some(Inbound::Cmd(cmd))
    }
}

impl Drop for ConnInbox {
    fn drop(&mut self) {
        let dropped = {
            let mut s = self.0.lock();
            s.gone = true;
            std::mem::take(&mut s.cmds)
        };
        drop(dropped);
        self.0.room.notify_waiters();
    }
}

/// What the registry shows of a device's connections (IoT Hub's `connectionStateUpdatedTime` and
/// `lastActivityTime`), kept in memory: a restart forgets it until the device reconnects.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    pub state_updated: Option<String>,
    pub last_activity: Option<String>,
}

struct ConnEntry {
    id: u64,
    handle: ConnHandle,
}

/// The hub.
pub struct Hub {
    pub settings: Settings,
    pub store: Store,
    /// The shared access policies that authorize service calls (and device tokens with `skn`).
    pub policies: policy::Policies,
    conns: Mutex<HashMap<String, ConnEntry>>,
    presence: Mutex<HashMap<String, Presence>>,
    next_conn: AtomicU64,
    pub(crate) next_rid: AtomicU64,
    /// The live event stream (`GET /events/stream`), bounded by [`LIVE_EVENTS_MAX_RECORDS`] and
    /// [`LIVE_EVENTS_MAX_BYTES`].
    pub events: live::Feed<EventRecord>,
    pub connlog: broadcast::Sender<ConnectionRecord>,
    epoch: tokio::time::Instant,
    /// Every connection task, so shutdown can wait for their close records and Wills.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// The local DPS's ID scope and open DPS connections.
    pub dps: dps::DpsState,
    /// Bytes of telemetry read from devices and not yet stored, over all connections
    /// ([`TELEMETRY_IN_FLIGHT_BYTES`]): a connection that cannot take its share stops reading until it can.
    pub telemetry_budget: Arc<tokio::sync::Semaphore>,
    /// Places of the connections that have not authenticated yet ([`crate::listener::Limits::unauthenticated`]).
    pub pre_auth: Arc<crate::pre_auth::Places>,
    /// Refused CONNECTs stored this second ([`Hub::log_connection`]).
    pub(crate) stored_refusals: crate::listener::LogBudget,
    /// Places of the live streams ([`crate::api::MAX_LIVE_STREAMS`]).
    pub live_streams: Arc<tokio::sync::Semaphore>,
    /// Places of the queries running ([`crate::api::query::MAX_CONCURRENT_QUERIES`]).
    pub queries: Arc<tokio::sync::Semaphore>,
    /// Direct-method callers waiting for their device to come online (`connectTimeoutInSeconds`), by device:
    /// one entry per device waited for, removed with its last waiter; at most [`methods::MAX_ONLINE_WAITERS`]
    /// callers wait at once.
    online: Mutex<HashMap<String, methods::Waiting>>,
    /// How many callers wait in `online` (changed under its lock).
    online_callers: tokio::sync::watch::Sender<usize>,
    /// Held by a desired-properties write from before it is stored until its notification is queued, so that
    /// notifications leave in `$version` order however many service calls write at once (a device applies them
    /// in the order they arrive). One lock for the hub: desired writes are service calls, which IoT Hub throttles
    /// far below what one lock passes.
    pub(crate) desired_order: tokio::sync::Mutex<()>,
}

/// Most bytes of telemetry in flight (read, not yet durable) over all connections (16 MiB), counted as the
/// payload plus [`TELEMETRY_OVERHEAD`] per message. With the per-connection bounds of [`crate::conn`] this keeps
/// the emulator's memory bounded whatever the load and the number of busy devices.
pub const TELEMETRY_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;
/// Records the live event stream holds for its slowest listener, at most: older ones are dropped and that
/// listener is told how many it missed (a `lagged` event on `GET /events/stream`).
pub const LIVE_EVENTS_MAX_RECORDS: usize = 4096;
/// Bytes of records the live event stream holds, at most (8 MiB, as [`EventRecord::held_bytes`] counts them;
/// plus the newest record whatever its size): 4 096 records of up to the message-size limit would otherwise be
/// a gigabyte. A listener slower than that is told it lagged, as with the record bound.
pub const LIVE_EVENTS_MAX_BYTES: usize = 8 * 1024 * 1024;
/// What a message in flight costs beyond its payload (properties, topic, record, futures), for the budget.
pub const TELEMETRY_OVERHEAD: usize = 512;

pub(crate) fn random_key() -> String {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    STANDARD.encode(k)
}

pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Hub {
    pub fn new(settings: Settings, store: Store, policies: policy::Policies) -> Hub {
        let pre_auth = crate::pre_auth::Places::new(settings.unauthenticated, settings.evict_unauthenticated_after);
        Hub {
            settings,
            store,
            policies,
            conns: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            next_rid: AtomicU64::new(1),
            events: live::Feed::new(LIVE_EVENTS_MAX_RECORDS, LIVE_EVENTS_MAX_BYTES),
            connlog: broadcast::channel(1024).0,
            epoch: tokio::time::Instant::now(),
            tasks: tokio_util::task::TaskTracker::new(),
            dps: Default::default(),
            telemetry_budget: Arc::new(tokio::sync::Semaphore::new(TELEMETRY_IN_FLIGHT_BYTES)),
            pre_auth,
            stored_refusals: crate::listener::LogBudget::new(telemetry::STORED_REFUSALS_PER_SECOND),
            live_streams: Arc::new(tokio::sync::Semaphore::new(crate::api::MAX_LIVE_STREAMS)),
            queries: Arc::new(tokio::sync::Semaphore::new(crate::api::query::MAX_CONCURRENT_QUERIES)),
            online: Mutex::new(HashMap::new()),
            online_callers: tokio::sync::watch::Sender::new(0),
            desired_order: tokio::sync::Mutex::new(()),
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

    pub(crate) fn conn(&self, device: &str) -> Option<ConnHandle> {
        self.conns.lock().ok()?.get(device).map(|e| e.handle.clone())
    }

    /// Is a device connected?
    pub fn is_connected(&self, device: &str) -> bool {
        self.conns.lock().map(|c| c.contains_key(device)).unwrap_or(false)
    }

    /// Registers a live connection, closing any earlier one for the same device. Returns its id.
    pub fn register(&self, device: &str, handle: ConnHandle) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let old = self.conns.lock().ok().and_then(|mut c| c.insert(device.to_owned(), ConnEntry { id, handle }));
        if let Some(old) = old {
            old.handle.close(CloseReason::ReplacedByNewConnection);
        }
        let now = crate::timefmt::iso8601(crate::timefmt::unix_ms());
        self.update_presence(device, |p| {
            p.state_updated = Some(now.clone());
            p.last_activity = Some(now);
        });
        self.came_online(device);
        id
    }

    /// Records the model id a device announced in CONNECT (IoT Plug and Play) in its twin (`modelId`), as IoT
    /// Hub keeps it; written only when it changed, so a reconnect costs no write.
    pub async fn set_model_id(&self, device: &str, model: Option<String>) {
        let Some(model) = model else { return };
        if self.store.twin(device).await.is_ok_and(|t| t.model_id.as_deref() == Some(model.as_str())) {
            return;
        }
        let key = device.to_owned();
        let r = self
            .store
            .write(move |tx| {
                let mut t = tx.twin(&key)?;
                t.model_id = Some(model);
                tx.put_twin(&key, &t)
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(device = %device, "cannot record the model id: {e}");
        }
    }

    /// The device's connection facts for the registry and twin views.
    pub fn presence(&self, device: &str) -> Presence {
        self.presence.lock().ok().and_then(|p| p.get(device).cloned()).unwrap_or_default()
    }

    fn update_presence(&self, device: &str, f: impl FnOnce(&mut Presence)) {
        if let Ok(mut p) = self.presence.lock() {
            f(p.entry(device.to_owned()).or_default());
        }
    }

    /// Removes a connection if it is still the registered one.
    pub fn unregister(&self, device: &str, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            if c.get(device).is_some_and(|e| e.id == id) {
                c.remove(device);
                drop(c);
                let now = crate::timefmt::iso8601(crate::timefmt::unix_ms());
                self.update_presence(device, |p| {
                    p.state_updated = Some(now.clone());
                    p.last_activity = Some(now);
                });
            }
        }
    }

    /// Closes a device's connection; false if it has none.
    pub fn close_connection(&self, id: &str, reason: CloseReason) -> bool {
        self.conn(id).map(|h| h.close(reason)).is_some()
    }

    /// Closes the connection of device `device` and those of its modules (`{device}/{module}`), as disabling or
    /// deleting a device does: a module cannot stay connected without its device (IoT Hub:
    /// azure-iot-sdk-csharp#1541).
    pub fn close_device_and_modules(&self, device: &str, reason: CloseReason) {
        let handles: Vec<_> = self
            .conns
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(id, _)| id.as_str() == device || registry::is_module_of(id, device))
                    .map(|(_, e)| e.handle.clone())
                    .collect()
            })
            .unwrap_or_default();
        for h in handles {
            h.close(reason.clone());
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let handles: Vec<_> =
            self.conns.lock().map(|c| c.values().map(|e| e.handle.clone()).collect()).unwrap_or_default();
        for h in handles {
            h.close(reason.clone());
        }
        self.dps.close_all(reason);
    }
}

/// Characters peer text may not carry raw into a log or a terminal: controls (CR, LF, ESC…), and Unicode's line
/// and paragraph separators and bidirectional controls (which reorder or break what a reader sees).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` cut to at most `max` bytes (on a character boundary) with the original length noted, and its control
/// characters escaped (`\r`, `\n`, `\u{1b}`), for text a peer chose that goes into records, logs, terminals and
/// error messages: a CR or LF in it could otherwise forge a line of the log, an escape sequence drive a terminal.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 16);
    for c in s[..end].chars() {
        if is_unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < s.len() {
        out += &format!("…({} bytes)", s.len());
    }
    out
}

#[cfg(test)]
mod mailbox_tests {
    use super::*;

    fn cmd(got: Inbound) -> ConnCmd {
        match got {
            Inbound::Cmd(c) => c,
            Inbound::Close(r) => panic!("a close: {r}"),
        }
    }

    #[test]
    fn the_mailbox_is_small() {
        // Every idle connection holds one (BENCHMARKS.md §6).
        assert!(std::mem::size_of::<Mailbox>() <= 256, "{} bytes", std::mem::size_of::<Mailbox>());
    }

    #[tokio::test]
    async fn commands_are_bounded_and_the_first_close_wins_ahead_of_them() {
        let (h, inbox) = ConnHandle::new();
        for _ in 0..CONN_QUEUE {
            assert!(h.try_send(ConnCmd::C2dAvailable).is_ok());
        }
        assert!(h.try_send(ConnCmd::C2dAvailable).is_err(), "a full queue refuses");
        h.close(CloseReason::DeviceDisabled);
        h.close(CloseReason::ServerShutdown);
        assert!(matches!(inbox.recv().await, Inbound::Close(CloseReason::DeviceDisabled)));
        h.close(CloseReason::ServerShutdown);
        for _ in 0..CONN_QUEUE {
            assert!(matches!(cmd(inbox.recv().await), ConnCmd::C2dAvailable));
        }
        assert!(inbox.try_recv().is_none(), "later close requests are ignored");
        assert_eq!(inbox.0.lock().cmds.capacity(), 0, "a drained queue holds no memory");
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_and_learns_when_the_task_is_gone() {
        let (h, inbox) = ConnHandle::new();
        for _ in 0..CONN_QUEUE {
            h.try_send(ConnCmd::C2dAvailable).unwrap_or_else(|_| panic!("room"));
        }
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.send(ConnCmd::Desired(Box::new((7, Bytes::new())))).await.is_ok() }
        });
        assert!(matches!(cmd(inbox.recv().await), ConnCmd::C2dAvailable));
        assert!(waiting.await.unwrap(), "queued once there was room");
        for _ in 1..CONN_QUEUE {
            cmd(inbox.recv().await);
        }
        assert!(matches!(cmd(inbox.recv().await), ConnCmd::Desired(d) if d.0 == 7));
        // A method call queued when the task ends is dropped with it: its caller hears so.
        let (reply, answer) = oneshot::channel();
        let call = MethodCall { name: "m".into(), payload: Bytes::new(), reply };
        h.try_send(ConnCmd::Method(Box::new(call))).unwrap_or_else(|_| panic!("room"));
        drop(inbox);
        assert!(answer.await.is_err());
        assert!(h.send(ConnCmd::C2dAvailable).await.is_err());
        assert!(h.try_send(ConnCmd::C2dAvailable).is_err());
    }
}
