//! `hubsim simulate`: many devices from hubsim-proto's `DeviceSession` over TLS or WSS, against the emulator or a
//! real IoT Hub. Each device is one task around the one [`Driver`]: it sends telemetry at a rate, answers direct
//! methods, acknowledges C2D, reconnects after a loss (re-sending what was not acknowledged); the fleet prints a
//! live line and returns a JSON summary.
//!
//! What a device sends is a [`PayloadSource`]:
//! - [`PayloadSource::Padded`]: `{"seq":n,"temperature":21.5,"pad":"xx…"}` of `--size` bytes (a load generator).
//! - [`PayloadSource::Template`] (`--template FILE`, see [`crate::message`]): each device renders the template
//!   with its own state, `DeviceState::new(id, device_seed(seed, id))`, so `$.DeviceId` and the random values
//!   differ per device while the same `--seed` and the same times give the same messages. The header's entries
//!   become application properties; a body meant to be JSON is checked before sending, and a render that fails
//!   is counted as an error with its message in the summary's `failures`. Time comes from the system clock
//!   (`$.LocalTime` and `$.Ticks` use UTC: the fleet knows no time zone), `$.MachineName` from `HOSTNAME`.
//!   With [`SimConfig::pace_by_template`] the file's schedule paces each device (its intervals for that
//!   device, cycled, each wait ± its jitter, drawn from the device's seed) instead of `rate`.
//! - [`PayloadSource::Model`] (`--model FILE`, see [`crate::pnp`]): the device becomes the model: `model-id` in
//!   the CONNECT user name; per tick one message per interface with telemetry (`$.sub` on components'); on
//!   every connection it subscribes to desired patches, reports its read-only properties, reads the twin and
//!   acknowledges the desired values it has not acknowledged yet (writable properties with no value at all get
//!   the device's initial value, `ac` 203); then it acknowledges each desired update and answers commands.
//!
//! A run ends when every device has sent `count` ticks and had them acknowledged, when `duration` passes (no
//! tick is sent after it, and each device waits up to [`SimConfig::drain`] more for the acknowledgements of
//! what it sent), or when [`SimConfig::stop`] turns true. [`SimConfig::events`] reports what tests and tools wait for
//! ([`FleetEvent`]), so nobody has to sleep and poll.

use bytes::Bytes;
use hubsim_dtdl::pnp::parse_desired;
use hubsim_proto::conn_str::{ConnectionString, ConnectionStringError};
use hubsim_proto::device::{
    ConnectOptions, DeviceConfig, Event, LostReason, PublishId, RequestKind, Telemetry, TelemetryQos,
};
use hubsim_proto::json;
use hubsim_proto::property_bag::SystemProperty;
use hubsim_proto::topic::{RequestId, TopicFilter};
use hubsim_template::{device_seed, DeviceState, RenderContext};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::driver::Driver;
use crate::message::MessageTemplate;
use crate::pnp::{AckSent, ModelSpec, PnpDevice};
use crate::transport::{tls_config, Transport, TransportError, Via};

/// Failed connection attempts in a row after which a device gives up.
const MAX_ATTEMPTS: u32 = 20;
/// Lifetime of the tokens the fleet signs, seconds.
const TOKEN_LIFETIME_SECS: u64 = 3600;
/// Distinct failure messages kept for the summary.
const MAX_FAILURES: usize = 10;

/// Why a simulation, or one of its devices, failed.
#[derive(Debug, Error)]
pub enum FleetError {
    #[error("no devices to simulate")]
    NoDevices,
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("device {device} gave up after {MAX_ATTEMPTS} failed connection attempts: {source}")]
    GaveUp { device: String, source: TransportError },
    #[error("device {device}: the hub refused the connection: {reason}")]
    Refused { device: String, reason: String },
    #[error("device {device}: {message}")]
    Session { device: String, message: String },
    #[error("line {line}: {source}")]
    ConnectionString { line: usize, source: ConnectionStringError },
    #[error("the simulation was stopped")]
    Stopped,
}

/// What each device sends (see the module docs).
#[derive(Debug, Clone, Default)]
pub enum PayloadSource {
    #[default]
    Padded,
    Template(Arc<MessageTemplate>),
    Model(Arc<ModelSpec>),
}

/// What happened to a device, for callers that wait on it (tests, tools); sent on [`SimConfig::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum FleetEvent {
    /// Connected and subscribed; with a model, also the twin read and its unacknowledged values answered
    /// (those acknowledgements may still be on their way).
    Ready { device: String },
    /// The hub confirmed (204) a reported patch acknowledging this desired value.
    PropertyAcknowledged { device: String, component: Option<String>, property: String, code: u16, version: i64 },
    /// A direct method was answered with this status.
    CommandAnswered { device: String, method: String, status: u16 },
}

/// The default of [`SimConfig::drain`].
pub const DRAIN: Duration = Duration::from_secs(5);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub devices: Vec<ConnectionString>,
    /// Host and ports to connect to (default: the connection string's gateway or hub, 8883/443).
    pub host: Option<String>,
    pub mqtt_port: u16,
    pub ws_port: u16,
    pub ca_pem: Option<Vec<u8>>,
    pub via: Via,
    /// Ticks per second per device; 0 sends as fast as the in-flight window allows. A tick is one message,
    /// or with a model one message per interface with telemetry.
    pub rate: f64,
    /// With a template: pace each device by the template's schedule ([`crate::message::Schedule`]: its
    /// intervals, cycled, ± its jitter) instead of `rate`.
    pub pace_by_template: bool,
    /// Ticks per device; 0 means until the duration ends (or `stop`).
    pub count: u64,
    pub qos: u8,
    /// Size of the padded payload, bytes.
    pub size: usize,
    pub duration: Option<Duration>,
    /// After `duration`, how long a device waits for the acknowledgements of what it sent before it
    /// disconnects (default 5 s), so that the summary does not count in-flight messages as unacknowledged.
    pub drain: Duration,
    /// Print the live line on stderr.
    pub live: bool,
    pub payload: PayloadSource,
    /// The run seed: each device's state is seeded with `device_seed(seed, device id)`.
    pub seed: u64,
    /// Where to report [`FleetEvent`]s.
    pub events: Option<mpsc::UnboundedSender<FleetEvent>>,
    /// Ends the run (devices disconnect cleanly) when it turns true or its sender is dropped.
    pub stop: Option<watch::Receiver<bool>>,
}

impl SimConfig {
    /// These devices with the defaults of `hubsim simulate`: MQTT over TLS to the connection strings' hosts,
    /// one padded 256-byte message per second at QoS 1, until stopped.
    pub fn new(devices: Vec<ConnectionString>) -> SimConfig {
        SimConfig {
            devices,
            host: None,
            mqtt_port: hubsim_proto::endpoint::MQTT_TLS_PORT,
            ws_port: hubsim_proto::endpoint::WEBSOCKET_PORT,
            ca_pem: None,
            via: Via::Mqtt,
            rate: 1.0,
            pace_by_template: false,
            count: 0,
            qos: 1,
            size: 256,
            duration: None,
            drain: DRAIN,
            live: false,
            payload: PayloadSource::Padded,
            seed: 0,
            events: None,
            stop: None,
        }
    }

    fn emit(&self, e: FleetEvent) {
        if let Some(tx) = &self.events {
            // Nobody listening any more is fine.
            let _ = tx.send(e);
        }
    }
}

/// Counters shared by every device task.
#[derive(Default)]
pub struct Stats {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub c2d: AtomicU64,
    pub methods: AtomicU64,
    /// Desired values acknowledged (any `ac`), counted when the hub confirmed the reported patch.
    pub properties_acked: AtomicU64,
    /// Direct methods answered by a model (any status).
    pub commands: AtomicU64,
    latency: Latency,
    failures: Mutex<Vec<String>>,
}

impl Stats {
    fn latency(&self, us: u32) {
        self.latency.record(us);
    }

    /// (p50, p99, max) in milliseconds over all acknowledgements so far.
    pub fn percentiles(&self) -> (f64, f64, f64) {
        self.latency.percentiles()
    }

    /// Counts an error and keeps its message (the first few distinct ones) for the summary.
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() < MAX_FAILURES && !f.contains(&message) {
            f.push(message);
        }
    }
}

/// Acknowledgement latencies as a histogram with 1 % wide logarithmic buckets: recording is one atomic add, and
/// the live line reads percentiles without copying or sorting every sample of a long run.
struct Latency {
    counts: Vec<AtomicU64>,
    max_us: AtomicU64,
}

const GROWTH: f64 = 1.01;
const BUCKETS: usize = 2400; // 1.01^2400 µs is far beyond any timeout

impl Default for Latency {
    fn default() -> Self {
        Latency { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), max_us: AtomicU64::new(0) }
    }
}

impl Latency {
    fn record(&self, us: u32) {
        let i = ((us.max(1) as f64).ln() / GROWTH.ln()) as usize;
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us as u64, Ordering::Relaxed);
    }

    /// (p50, p99, max) in milliseconds; a percentile is its bucket's upper bound (within 1 %), never above max.
    fn percentiles(&self) -> (f64, f64, f64) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let max = self.max_us.load(Ordering::Relaxed) as f64;
        if total == 0 {
            return (0.0, 0.0, 0.0);
        }
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return GROWTH.powi(i as i32 + 1).min(max) / 1000.0;
                }
            }
            max / 1000.0
        };
        (at(0.5), at(0.99), max / 1000.0)
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The render context of this instant: UTC, the fleet's machine name.
fn render_ctx(machine: &str) -> RenderContext<'_> {
    RenderContext { now_unix_ms: unix_now_ms(), local_offset_min: 0, machine_name: machine }
}

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Resolves when `stop` turns true or its sender goes; never without one.
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

/// Runs the simulation and returns the summary.
pub async fn run(cfg: SimConfig) -> Result<serde_json::Value, FleetError> {
    if cfg.devices.is_empty() {
        return Err(FleetError::NoDevices);
    }
    let tls = tls_config(cfg.ca_pem.as_deref())?;
    let stats = Arc::new(Stats::default());
    let start = tokio::time::Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    // At most 64 TLS handshakes at once: thousands at the same instant would only time each other out.
    let connecting = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    let model = matches!(cfg.payload, PayloadSource::Model(_));
    let live = {
        let (stats, n, on) = (stats.clone(), cfg.devices.len(), cfg.live);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = (tokio::time::Instant::now(), 0u64);
            loop {
                tick.tick().await;
                let acked = stats.acked.load(Ordering::Relaxed);
                let now = tokio::time::Instant::now();
                let rate = (acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, acked);
                let (p50, p99, _) = stats.percentiles();
                let pnp = if model {
                    format!(
                        "  props acked {}  commands {}",
                        stats.properties_acked.load(Ordering::Relaxed),
                        stats.commands.load(Ordering::Relaxed)
                    )
                } else {
                    String::new()
                };
                if on {
                    eprintln!(
                        "connected {}/{n}  sent {}  acked {acked}  errors {}  {:.0} msg/s  ack p50 {p50:.1} ms p99 {p99:.1} ms{pnp}",
                        stats.connected.load(Ordering::Relaxed),
                        stats.sent.load(Ordering::Relaxed),
                        stats.errors.load(Ordering::Relaxed),
                        rate
                    );
                }
            }
        })
    };
    // One shared copy: cloning the config (with every device's connection string) per device is quadratic.
    let shared = Arc::new(cfg.clone());
    for cs in &cfg.devices {
        let (cfg, cs, tls, stats, connecting) =
            (shared.clone(), cs.clone(), tls.clone(), stats.clone(), connecting.clone());
        tasks.spawn(async move { device(cfg, cs, tls, stats, deadline, connecting).await });
    }
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(e.to_string()),
            Ok(Ok(())) => {}
        }
    }
    live.abort();
    let elapsed = start.elapsed().as_secs_f64();
    let (p50, p99, max) = stats.percentiles();
    let acked = stats.acked.load(Ordering::Relaxed);
    failures.sort();
    failures.dedup();
    failures.extend(stats.failures.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
    let (template, model_id, size) = match &cfg.payload {
        PayloadSource::Padded => (None, None, Some(cfg.size)),
        PayloadSource::Template(t) => (Some(t.name.clone()), None, None),
        PayloadSource::Model(m) => (None, Some(m.model.id().to_owned()), None),
    };
    let sent = stats.sent.load(Ordering::Relaxed);
    let pacing = match (&cfg.payload, cfg.pace_by_template) {
        (PayloadSource::Template(_), true) => "the template's schedule".to_owned(),
        _ if cfg.rate > 0.0 => format!("{} per second per device", cfg.rate),
        _ => "as fast as acknowledgements allow".to_owned(),
    };
    Ok(json!({
        "devices": cfg.devices.len(),
        "transport": if cfg.via == Via::Mqtt { "mqtt" } else { "ws" },
        "qos": cfg.qos,
        "sizeBytes": size,
        "pacing": pacing,
        "template": template,
        "modelId": model_id,
        "seed": cfg.seed,
        "sent": sent,
        "acknowledged": acked,
        "pending": sent.saturating_sub(acked),
        "errors": stats.errors.load(Ordering::Relaxed),
        "reconnects": stats.reconnects.load(Ordering::Relaxed),
        "c2dReceived": stats.c2d.load(Ordering::Relaxed),
        "methodsAnswered": stats.methods.load(Ordering::Relaxed),
        "propertiesAcknowledged": stats.properties_acked.load(Ordering::Relaxed),
        "commandsAnswered": stats.commands.load(Ordering::Relaxed),
        "durationSecs": elapsed,
        "msgsPerSec": if elapsed > 0.0 { acked as f64 / elapsed } else { 0.0 },
        "ackLatencyMs": { "p50": p50, "p99": p99, "max": max },
        "failures": failures.into_iter().take(MAX_FAILURES).collect::<Vec<_>>(),
    }))
}

fn payload(seq: u64, size: usize) -> Bytes {
    let mut s = format!("{{\"seq\":{seq},\"temperature\":21.5,\"pad\":\"");
    let close = "\"}";
    while s.len() + close.len() < size {
        s.push('x');
    }
    s.push_str(close);
    Bytes::from(s)
}

/// What one device sends per tick, with its state.
enum Producer {
    Padded,
    Template { t: Arc<MessageTemplate>, state: DeviceState },
    Model(PnpDevice),
}

impl Producer {
    fn new(source: &PayloadSource, device_id: &str, seed: u64) -> Producer {
        match source {
            PayloadSource::Padded => Producer::Padded,
            PayloadSource::Template(t) => {
                Producer::Template { t: t.clone(), state: DeviceState::new(device_id, device_seed(seed, device_id)) }
            }
            PayloadSource::Model(m) => Producer::Model(PnpDevice::new(m.clone(), device_id, seed)),
        }
    }

    /// The messages of tick `tick` (an error message when the template cannot make one).
    fn tick(&mut self, tick: u64, cfg: &SimConfig, ctx: &RenderContext) -> Result<Vec<Telemetry>, String> {
        match self {
            Producer::Padded => {
                let mut m = Telemetry::new(payload(tick, cfg.size));
                m.properties.set_system(SystemProperty::ContentType, "application/json");
                m.properties.set_system(SystemProperty::ContentEncoding, "utf-8");
                m.properties.push("sim-seq", tick.to_string());
                Ok(vec![m])
            }
            Producer::Template { t, state } => {
                let r = t.config.render(state, ctx).map_err(|e| format!("message {tick}: {e}"))?;
                let is_json = t.is_json(r.payload_index);
                if is_json {
                    r.check_json().map_err(|e| format!("message {tick}: the body is not JSON: {e}"))?;
                }
                let mut m = Telemetry::new(Bytes::from(r.body));
                if is_json {
                    m.properties.set_system(SystemProperty::ContentType, "application/json");
                    m.properties.set_system(SystemProperty::ContentEncoding, "utf-8");
                }
                for (k, v) in t.properties.iter().chain(r.properties.iter()) {
                    m.properties.push(k.clone(), v.clone());
                }
                Ok(vec![m])
            }
            Producer::Model(p) => Ok(p.telemetry(ctx)),
        }
    }

    fn model(&self) -> Option<&PnpDevice> {
        match self {
            Producer::Model(p) => Some(p),
            _ => None,
        }
    }

    fn model_mut(&mut self) -> Option<&mut PnpDevice> {
        match self {
            Producer::Model(p) => Some(p),
            _ => None,
        }
    }
}

/// One simulated device until its count is sent and acknowledged, the deadline passes or the run is stopped.
async fn device(
    cfg: Arc<SimConfig>,
    cs: ConnectionString,
    tls: Arc<rustls::ClientConfig>,
    stats: Arc<Stats>,
    deadline: Option<tokio::time::Instant>,
    connecting: Arc<tokio::sync::Semaphore>,
) -> Result<(), FleetError> {
    let id = cs.device_id.clone();
    let host = cfg.host.clone().unwrap_or_else(|| cs.connect_host().to_owned());
    let port = if cfg.via == Via::Mqtt { cfg.mqtt_port } else { cfg.ws_port };
    let mut producer = Producer::new(&cfg.payload, &id, cfg.seed);
    let qos = match &cfg.payload {
        PayloadSource::Template(t) => t.qos.unwrap_or(cfg.qos),
        _ => cfg.qos,
    };
    let machine = std::env::var("HOSTNAME").unwrap_or_else(|_| "hubsim".into());
    let mut dc = DeviceConfig::new(cs.host_name.clone(), cs.identity());
    dc.client_type = Some(format!("hubsim-simulate/{}", env!("CARGO_PKG_VERSION")));
    dc.keep_alive = Duration::from_secs(60);
    dc.model_id = producer.model().map(|p| p.model().id().to_owned());
    let mut d = Driver::new(dc);
    let mut stop = cfg.stop.clone();
    let session_err =
        |e: hubsim_proto::device::SendError| FleetError::Session { device: id.clone(), message: e.to_string() };
    let mut sent_at: HashMap<PublishId, std::time::Instant> = HashMap::new();
    // Reported patches carrying acknowledgements, until the hub confirms them.
    let mut ack_patches: HashMap<RequestId, Vec<AckSent>> = HashMap::new();
    let (mut ticks, mut queued, mut acked) = (0u64, 0u64, 0u64);
    let mut attempt = 0u32;
    let interval = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.rate));
    let schedule = match &cfg.payload {
        PayloadSource::Template(t) if cfg.pace_by_template => Some(t.schedule.clone()),
        _ => None,
    };
    let mut jitter = hubsim_template::Rng::new(device_seed(cfg.seed, &[&id, "/jitter"].concat()));
    // The wait after tick `tick` (counted from 1).
    let mut pause = |tick: u64| -> Option<Duration> {
        let Some(s) = &schedule else { return interval };
        let list = s.intervals.for_device(&id);
        let ms = i64::from(list[(tick.saturating_sub(1) % list.len() as u64) as usize]);
        let j = i64::from(s.jitter_ms);
        Some(Duration::from_millis((ms + jitter.range_i64(-j, j + 1)).max(0) as u64))
    };
    let mut next_send = tokio::time::Instant::now();
    let done = |ticks: u64, queued: u64, acked: u64| cfg.count > 0 && ticks >= cfg.count && acked >= queued;
    let past = |t: Option<tokio::time::Instant>| t.is_some_and(|t| tokio::time::Instant::now() >= t);
    let drained = deadline.map(|d| d + cfg.drain);
    // Nothing is sent after the deadline; the device stays until what it sent is acknowledged or the drain ends.
    let over = |stop: &Option<watch::Receiver<bool>>, queued: u64, acked: u64| {
        stop.as_ref().is_some_and(|s| *s.borrow() || s.has_changed().is_err())
            || (past(deadline) && (acked >= queued || past(drained)))
    };
    loop {
        // No reconnection after the deadline: what a lost connection had in flight stays unacknowledged.
        if over(&stop, queued, acked) || done(ticks, queued, acked) || past(deadline) {
            d.disconnect().await;
            return Ok(());
        }
        // (Re)connect.
        let permit = connecting.acquire().await.map_err(|_| FleetError::Stopped)?;
        let opened = Transport::open(tls.clone(), &host, port, cfg.via).await;
        drop(permit);
        let t = match opened {
            Ok(t) => t,
            Err(e) => {
                stats.error(format!("device {id}: {e}"));
                attempt += 1;
                if attempt > MAX_ATTEMPTS {
                    return Err(FleetError::GaveUp { device: id.clone(), source: e });
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt.min(6)))) => {}
                    _ = stopped(&mut stop) => {}
                }
                continue;
            }
        };
        let password = cs.password(unix_now() + TOKEN_LIFETIME_SECS).map(|t| t.to_string());
        d.connect(t, ConnectOptions { password, will: None }).await.map_err(session_err)?;
        let mut connected = false;
        'conn: loop {
            // Send when due and the window has room.
            let can_send = connected
                && !past(deadline)
                && (cfg.count == 0 || ticks < cfg.count)
                && d.session().unacked() < d.session().config().max_inflight;
            if can_send && tokio::time::Instant::now() >= next_send {
                let ctx = render_ctx(&machine);
                let messages = producer.tick(ticks, &cfg, &ctx);
                ticks += 1;
                match messages {
                    Ok(messages) => {
                        for (i, mut m) in messages.into_iter().enumerate() {
                            m.qos = if qos == 0 { TelemetryQos::AtMostOnce } else { TelemetryQos::AtLeastOnce };
                            let mid = if i == 0 { format!("{id}-{queued}") } else { format!("{id}-{queued}-{i}") };
                            m.properties.set_system(SystemProperty::MessageId, mid);
                            let now = d.now();
                            match d.session_mut().send_telemetry(now, m) {
                                Ok(pid) => {
                                    queued += 1;
                                    stats.sent.fetch_add(1, Ordering::Relaxed);
                                    if qos == 0 {
                                        acked += 1;
                                        stats.acked.fetch_add(1, Ordering::Relaxed);
                                    } else {
                                        sent_at.insert(pid, std::time::Instant::now());
                                    }
                                }
                                Err(e) => stats.error(format!("device {id}: {e}")),
                            }
                        }
                    }
                    Err(e) => stats.error(format!("device {id}: {e}")),
                }
                d.flush().await;
                next_send = match pause(ticks) {
                    Some(i) => next_send.max(tokio::time::Instant::now() - i) + i,
                    None => tokio::time::Instant::now(),
                };
                continue;
            }
            if over(&stop, queued, acked) || done(ticks, queued, acked) {
                if connected {
                    stats.connected.fetch_sub(1, Ordering::Relaxed);
                }
                d.disconnect().await;
                return Ok(());
            }
            let end = if past(deadline) { drained } else { deadline };
            let wake = [can_send.then_some(next_send), end].into_iter().flatten().min();
            // The stop signal interrupts only the wait, never a write: the DISCONNECT after it is whole.
            let Some(ev) = d.next_event_or(wake, stopped(&mut stop)).await else { continue };
            let now = d.now();
            match ev {
                Event::Connected { .. } => {
                    connected = true;
                    attempt = 0;
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                    let mut filters = vec![TopicFilter::C2d, TopicFilter::Methods];
                    if let Some(p) = producer.model_mut() {
                        // Subscribed before the twin GET: the hub handles them in order, so no desired update
                        // falls between the document read and the first patch received.
                        filters.extend([TopicFilter::TwinResponses, TopicFilter::TwinDesired]);
                        d.session_mut().subscribe(now, &filters).map_err(session_err)?;
                        if let Some(report) = p.initial_report(&render_ctx(&machine)) {
                            d.session_mut()
                                .patch_reported(now, Bytes::from(report.to_string()))
                                .map_err(session_err)?;
                        }
                        d.session_mut().get_twin(now).map_err(session_err)?;
                    } else {
                        d.session_mut().subscribe(now, &filters).map_err(session_err)?;
                        cfg.emit(FleetEvent::Ready { device: id.clone() });
                    }
                }
                Event::TelemetryAcked { id: pid, .. } => {
                    acked += 1;
                    stats.acked.fetch_add(1, Ordering::Relaxed);
                    if let Some(at) = sent_at.remove(&pid) {
                        stats.latency(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                }
                Event::C2d(_) => {
                    stats.c2d.fetch_add(1, Ordering::Relaxed);
                }
                Event::MethodRequest { name, rid, payload } => {
                    stats.methods.fetch_add(1, Ordering::Relaxed);
                    let (status, body) = match producer.model_mut() {
                        Some(p) => {
                            stats.commands.fetch_add(1, Ordering::Relaxed);
                            let (status, body) = p.answer_command(&name, &payload, &render_ctx(&machine));
                            (status, if body.is_null() { String::new() } else { body.to_string() })
                        }
                        None => (200, "{}".to_owned()),
                    };
                    // A failed answer means the connection just went; the loss event follows.
                    if d.session_mut().respond_to_method(now, &rid, status, body.as_bytes()).is_ok() {
                        cfg.emit(FleetEvent::CommandAnswered { device: id.clone(), method: name, status });
                    }
                }
                Event::TwinResponse { kind: RequestKind::TwinGet, status, body, .. } => {
                    let Some(p) = producer.model_mut() else { continue };
                    let twin = std::str::from_utf8(&body).ok().and_then(|t| json::parse(t).ok());
                    match twin {
                        Some(twin) if status == 200 => {
                            if let Some((patch, acks)) = p.answer_twin(&twin, &render_ctx(&machine)) {
                                let rid = d.session_mut().patch_reported(now, Bytes::from(patch.to_string()));
                                ack_patches.insert(rid.map_err(session_err)?, acks);
                            }
                            cfg.emit(FleetEvent::Ready { device: id.clone() });
                        }
                        _ => stats.error(format!("device {id}: twin GET answered {status}")),
                    }
                }
                Event::TwinResponse { rid, kind: RequestKind::TwinPatchReported, status, .. } => {
                    let acks = ack_patches.remove(&rid);
                    if !(200..300).contains(&status) {
                        stats.error(format!("device {id}: reported patch answered {status}"));
                        continue;
                    }
                    for a in acks.into_iter().flatten() {
                        stats.properties_acked.fetch_add(1, Ordering::Relaxed);
                        cfg.emit(FleetEvent::PropertyAcknowledged {
                            device: id.clone(),
                            component: a.component,
                            property: a.property,
                            code: a.ack.code,
                            version: a.ack.version,
                        });
                    }
                }
                Event::DesiredPropertiesPatch { body, .. } => {
                    let Some(p) = producer.model() else { continue };
                    let Some(patch) = std::str::from_utf8(&body).ok().and_then(|t| json::parse(t).ok()) else {
                        stats.error(format!("device {id}: a desired patch is not JSON"));
                        continue;
                    };
                    if let Some((patch, acks)) = p.answer_desired(&parse_desired(p.model(), &patch)) {
                        let rid = d.session_mut().patch_reported(now, Bytes::from(patch.to_string()));
                        ack_patches.insert(rid.map_err(session_err)?, acks);
                    }
                }
                Event::RequestFailed { rid, kind, reason } => {
                    ack_patches.remove(&rid);
                    stats.error(format!("device {id}: {kind:?} failed: {reason:?}"));
                }
                Event::ConnectionLost { reason, .. } => {
                    if connected {
                        stats.connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    // A refusal or a protocol violation would happen again (`LostReason::is_retryable`).
                    if let LostReason::Refused(r) = &reason {
                        return Err(FleetError::Refused { device: id.clone(), reason: r.to_string() });
                    }
                    if !reason.is_retryable() {
                        return Err(FleetError::Session { device: id.clone(), message: reason.to_string() });
                    }
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    break 'conn;
                }
                // SUBACKs, unsubscriptions and stray publishes need nothing from a simulated device.
                Event::Subscribed { .. } | Event::Unsubscribed { .. } | Event::UnknownPublish { .. } => {}
            }
        }
    }
}

/// Reads connection strings, one per line (blank lines and `#` comments skipped).
pub fn read_connection_strings(text: &str) -> Result<Vec<ConnectionString>, FleetError> {
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| ConnectionString::parse(l).map_err(|e| FleetError::ConnectionString { line: i + 1, source: e }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= b * rel
    }

    #[test]
    fn no_samples_no_latency() {
        assert_eq!(Latency::default().percentiles(), (0.0, 0.0, 0.0));
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_within_the_bucket_width() {
        let l = Latency::default();
        for us in 1..=1000u32 {
            l.record(us);
        }
        let (p50, p99, max) = l.percentiles();
        // 1 % buckets: the reported value is the bucket's upper bound, at most 1 % (plus one bucket) above.
        assert!(close(p50, 0.500, 0.021), "p50 {p50}");
        assert!(close(p99, 0.990, 0.021), "p99 {p99}");
        assert_eq!(max, 1.0);
        assert!(p50 <= p99 && p99 <= max);
    }

    #[test]
    fn a_percentile_never_exceeds_the_maximum_and_ranks_count() {
        let l = Latency::default();
        l.record(20_000);
        assert_eq!(l.percentiles(), (20.0, 20.0, 20.0));
        // 98 fast answers and 2 slow ones: p50 is fast, p99 is slow.
        let l = Latency::default();
        for _ in 0..98 {
            l.record(100);
        }
        l.record(50_000);
        l.record(60_000);
        let (p50, p99, max) = l.percentiles();
        assert!(close(p50, 0.1, 0.021), "p50 {p50}");
        assert!(close(p99, 50.0, 0.021), "p99 {p99}");
        assert_eq!(max, 60.0);
    }

    #[test]
    fn samples_beyond_the_last_bucket_are_counted_there() {
        let l = Latency::default();
        l.record(u32::MAX);
        let (p50, _, max) = l.percentiles();
        assert_eq!(max, u32::MAX as f64 / 1000.0);
        assert!(p50 <= max);
    }
}
