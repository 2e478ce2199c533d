//! `hubsim simulate`: many devices from hubsim-proto's `DeviceSession` over TLS or WSS, against the emulator or a
//! real IoT Hub. It sends telemetry with properties at a rate, answers direct methods, acknowledges C2D, reconnects
//! after a loss (re-sending what was not acknowledged), prints a live line and a final JSON summary.

use bytes::Bytes;
use hubsim_proto::conn_str::{ConnectionString, ConnectionStringError};
use hubsim_proto::device::{ConnectOptions, DeviceConfig, Event, LostReason, PublishId, Telemetry, TelemetryQos};
use hubsim_proto::property_bag::SystemProperty;
use hubsim_proto::topic::TopicFilter;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

use crate::driver::Driver;
use crate::transport::{tls_config, Transport, TransportError, Via};

/// Failed connection attempts in a row after which a device gives up.
const MAX_ATTEMPTS: u32 = 20;
/// Lifetime of the tokens the fleet signs, seconds.
const TOKEN_LIFETIME_SECS: u64 = 3600;

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
    /// Messages per second per device; 0 sends as fast as the in-flight window allows.
    pub rate: f64,
    /// Messages per device; 0 means until the duration ends.
    pub count: u64,
    pub qos: u8,
    pub size: usize,
    pub duration: Option<Duration>,
    /// Print the live line on stderr.
    pub live: bool,
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
    latency: Latency,
}

impl Stats {
    fn latency(&self, us: u32) {
        self.latency.record(us);
    }

    /// (p50, p99, max) in milliseconds over all acknowledgements so far.
    pub fn percentiles(&self) -> (f64, f64, f64) {
        self.latency.percentiles()
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
                if on {
                    eprintln!(
                        "connected {}/{n}  sent {}  acked {acked}  errors {}  {:.0} msg/s  ack p50 {p50:.1} ms p99 {p99:.1} ms",
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
    Ok(json!({
        "devices": cfg.devices.len(),
        "transport": if cfg.via == Via::Mqtt { "mqtt" } else { "ws" },
        "qos": cfg.qos,
        "sizeBytes": cfg.size,
        "sent": stats.sent.load(Ordering::Relaxed),
        "acknowledged": acked,
        "errors": stats.errors.load(Ordering::Relaxed),
        "reconnects": stats.reconnects.load(Ordering::Relaxed),
        "c2dReceived": stats.c2d.load(Ordering::Relaxed),
        "methodsAnswered": stats.methods.load(Ordering::Relaxed),
        "durationSecs": elapsed,
        "msgsPerSec": if elapsed > 0.0 { acked as f64 / elapsed } else { 0.0 },
        "ackLatencyMs": { "p50": p50, "p99": p99, "max": max },
        "failures": failures.into_iter().take(10).collect::<Vec<_>>(),
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

/// One simulated device until its count is sent and acknowledged or the deadline passes.
async fn device(
    cfg: Arc<SimConfig>,
    cs: ConnectionString,
    tls: Arc<rustls::ClientConfig>,
    stats: Arc<Stats>,
    deadline: Option<tokio::time::Instant>,
    connecting: Arc<tokio::sync::Semaphore>,
) -> Result<(), FleetError> {
    let host = cfg.host.clone().unwrap_or_else(|| cs.connect_host().to_owned());
    let port = if cfg.via == Via::Mqtt { cfg.mqtt_port } else { cfg.ws_port };
    let mut dc = DeviceConfig::new(cs.host_name.clone(), cs.identity());
    dc.client_type = Some(format!("hubsim-simulate/{}", env!("CARGO_PKG_VERSION")));
    dc.keep_alive = Duration::from_secs(60);
    let mut d = Driver::new(dc);
    let mut sent_at: HashMap<PublishId, std::time::Instant> = HashMap::new();
    let (mut queued, mut acked) = (0u64, 0u64);
    let mut attempt = 0u32;
    let interval = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.rate));
    let mut next_send = tokio::time::Instant::now();
    let done = |queued: u64, acked: u64| cfg.count > 0 && queued >= cfg.count && acked >= queued;
    let over = || deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
    loop {
        if over() || done(queued, acked) {
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
                stats.errors.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                if attempt > MAX_ATTEMPTS {
                    return Err(FleetError::GaveUp { device: cs.device_id.clone(), source: e });
                }
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt.min(6)))).await;
                continue;
            }
        };
        let password = cs.password(unix_now() + TOKEN_LIFETIME_SECS).map(|t| t.to_string());
        d.connect(t, ConnectOptions { password, will: None })
            .await
            .map_err(|e| FleetError::Session { device: cs.device_id.clone(), message: e.to_string() })?;
        let mut connected = false;
        'conn: loop {
            // Send when due and the window has room.
            let can_send = connected
                && (cfg.count == 0 || queued < cfg.count)
                && d.session().unacked() < d.session().config().max_inflight;
            if can_send && tokio::time::Instant::now() >= next_send {
                let mut m = Telemetry::new(payload(queued, cfg.size));
                m.qos = if cfg.qos == 0 { TelemetryQos::AtMostOnce } else { TelemetryQos::AtLeastOnce };
                m.properties.set_system(SystemProperty::ContentType, "application/json");
                m.properties.set_system(SystemProperty::ContentEncoding, "utf-8");
                m.properties.set_system(SystemProperty::MessageId, format!("{}-{queued}", cs.device_id));
                m.properties.push("sim-seq", queued.to_string());
                let now = d.now();
                match d.session_mut().send_telemetry(now, m) {
                    Ok(id) => {
                        queued += 1;
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                        if cfg.qos == 0 {
                            acked += 1;
                            stats.acked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            sent_at.insert(id, std::time::Instant::now());
                        }
                    }
                    Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                d.flush().await;
                next_send = match interval {
                    Some(i) => next_send.max(tokio::time::Instant::now() - i) + i,
                    None => tokio::time::Instant::now(),
                };
                continue;
            }
            if over() || done(queued, acked) {
                if connected {
                    stats.connected.fetch_sub(1, Ordering::Relaxed);
                }
                d.disconnect().await;
                return Ok(());
            }
            let wake = [can_send.then_some(next_send), deadline].into_iter().flatten().min();
            let Some(ev) = d.next_event(wake).await else { continue };
            let now = d.now();
            match ev {
                Event::Connected { .. } => {
                    connected = true;
                    attempt = 0;
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                    d.session_mut()
                        .subscribe(now, &[TopicFilter::C2d, TopicFilter::Methods])
                        .map_err(|e| FleetError::Session { device: cs.device_id.clone(), message: e.to_string() })?;
                }
                Event::TelemetryAcked { id, .. } => {
                    acked += 1;
                    stats.acked.fetch_add(1, Ordering::Relaxed);
                    if let Some(at) = sent_at.remove(&id) {
                        stats.latency(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                }
                Event::C2d(_) => {
                    stats.c2d.fetch_add(1, Ordering::Relaxed);
                }
                Event::MethodRequest { rid, .. } => {
                    stats.methods.fetch_add(1, Ordering::Relaxed);
                    // A failed answer means the connection just went; the loss event follows.
                    let _ = d.session_mut().respond_to_method(now, &rid, 200, b"{}");
                }
                Event::ConnectionLost { reason, .. } => {
                    if connected {
                        stats.connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    if let LostReason::Refused(r) = &reason {
                        return Err(FleetError::Refused { device: cs.device_id.clone(), reason: r.to_string() });
                    }
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    break 'conn;
                }
                // Twin responses, SUBACKs and the like need nothing from a load generator.
                _ => {}
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
