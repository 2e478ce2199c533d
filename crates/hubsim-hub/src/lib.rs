//! # hubsim emulator
//!
//! A local Azure IoT Hub: MQTT over TLS (8883) and MQTT over WebSocket over TLS (443, `/$iothub/websocket`) for
//! devices, a JSON service API on HTTP (8080), and the web app. The protocol rules live in `hubsim-proto`'s
//! `HubSession`; this crate is the tokio layer around it: listeners ([`start`]), one task per connection
//! ([`conn`]), shared state ([`hub`]) and the embedded database ([`store`]).

pub mod api;
pub mod conn;
pub mod files;
mod host_name;
pub mod hub;
pub mod listener;
pub mod model;
pub mod pre_auth;
pub mod store;
pub mod timefmt;
pub mod tls;

use anyhow::{Context, Result};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
pub use crate::host_name::{check_host_name, HostNameError, MAX_HOST_NAME, MAX_LABEL};
use crate::hub::{Hub, Settings};

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// HostName of connection strings, SAS audiences and the generated certificate: a DNS name or an IP address
    /// ([`check_host_name`]).
    pub host_name: String,
    /// Address every listener binds to.
    pub bind: IpAddr,
    pub mqtt_port: u16,
    pub ws_port: u16,
    pub http_port: u16,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub web_dir: Option<PathBuf>,
    /// `mqtt-retain` (default) or `x-opt-retain`.
    pub retain_property: String,
    /// Protocol limits and timeouts (IoT Hub's by default; tests shorten them).
    pub protocol: hubsim_proto::HubConfig,
    /// How long a delivered C2D message stays locked waiting for PUBACK (IoT Hub: 60 s).
    pub c2d_lock: Duration,
    /// Extra host names and web origins the HTTP listeners accept (see [`api::Access`]).
    pub access: api::Access,
    /// Connection caps and HTTP deadlines of every listener.
    pub limits: listener::Limits,
    /// Longest time one write to a device may take (10 s); a device that stops reading is closed after it.
    pub write_timeout: Duration,
    /// Retention of the event log, connection log and feedback (default 1 day, 1 000 000 events, 100 000
    /// connection and feedback records; see [`store::Retention`]).
    pub retention: store::Retention,
}

impl Config {
    /// Defaults: data in `dir`, host `localhost`, loopback, ports 8883/443/8080.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: dir.into(),
            host_name: "localhost".into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mqtt_port: 8883,
            ws_port: 443,
            http_port: 8080,
            tls_cert: None,
            tls_key: None,
            web_dir: None,
            retain_property: "mqtt-retain".into(),
            protocol: hubsim_proto::HubConfig::default(),
            c2d_lock: Duration::from_secs(60),
            access: api::Access::default(),
            limits: listener::Limits::default(),
            write_timeout: Duration::from_secs(10),
            retention: store::Retention::default(),
        }
    }
}

/// How long shutdown waits for connection tasks to write their close records before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A started emulator.
pub struct Running {
    pub mqtt_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The generated CA certificate to trust, if the certificate was generated.
    pub ca_path: Option<PathBuf>,
    pub hub: Arc<Hub>,
    /// The accept loops (and the sweep of expired C2D messages).
    listeners: JoinSet<()>,
    stop: CancellationToken,
}

impl Running {
    /// Stops accepting, closes every connection (publishing their Wills) and waits until every connection task
    /// has written its close record (at most [`SHUTDOWN_GRACE`]).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.hub.close_all(hubsim_proto::hub::CloseReason::ServerShutdown);
        self.hub.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.hub.tasks.wait()).await.is_err() {
            tracing::warn!(
                left = self.hub.tasks.len(),
                "connection tasks did not finish within {} s; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
        // The plain HTTP server may still hold Server-Sent Event streams open; they end here.
        self.listeners.shutdown().await;
    }

    /// Serves until `signal` completes, then shuts down.
    pub async fn serve_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Binds every listener and starts serving. Port 0 picks a free port (see the addresses in [`Running`]).
/// Errors: a host name that is not a DNS name or IP address ([`HostNameError`], before anything is created), a
/// data folder another emulator uses ([`store::StoreError::InUse`]), a port in use, a certificate that does not
/// load. A start that fails leaves no data folder behind that it created itself (a new CA, keys and database
/// for a run that never served).
pub async fn start(config: Config) -> Result<Running> {
    check_host_name(&config.host_name)?;
    let dir = config.data_dir.clone();
    let fresh = !dir.exists();
    let started = start_in(config).await;
    if started.is_err() && fresh {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!("cannot remove {} after the failed start: {e}", dir.display());
        }
    }
    started
}

/// [`start`] once the host name is checked.
async fn start_in(config: Config) -> Result<Running> {
    // Private from creation: the folder 0700, the database and keys 0600 (see `files`).
    files::create_private_dir(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    // The database first: its lock tells a second emulator on this folder to stop before it changes anything
    // (it would otherwise regenerate the running one's certificate for its own host name).
    let (db_path, retention) = (config.data_dir.join("hubsim.redb"), config.retention.clone());
    let store = match tokio::task::spawn_blocking(move || store::Store::open(&db_path, retention)).await? {
        Ok(store) => store,
        // It names the folder and what to do.
        Err(e @ store::StoreError::InUse { .. }) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).context("opening the database")),
    };
    let tls = tls::load(&config.data_dir, &config.host_name, config.tls_cert.as_deref(), config.tls_key.as_deref())?;
    let mut settings = Settings::new(config.host_name.clone());
    settings.protocol = config.protocol.clone();
    settings.protocol.retain_property = config.retain_property.clone();
    settings.c2d_lock = config.c2d_lock;
    settings.protocol.c2d_lock = config.c2d_lock;
    settings.write_timeout = config.write_timeout;
    settings.unauthenticated = config.limits.unauthenticated;
    settings.evict_unauthenticated_after = config.limits.evict_unauthenticated_after;
    let policies = hub::policy::Policies::load_or_create(&config.data_dir)?;
    let hub = Arc::new(Hub::new(settings, store, policies));
    hub.startup().await?;
    hub.dps_startup().await.context("loading the DPS ID scope")?;

    let bind = |port| SocketAddr::new(config.bind, port);
    let mqtt = TcpListener::bind(bind(config.mqtt_port))
        .await
        .with_context(|| format!("binding MQTT port {}", config.mqtt_port))?;
    let wss = TcpListener::bind(bind(config.ws_port))
        .await
        .with_context(|| format!("binding WebSocket port {}", config.ws_port))?;
    let http = TcpListener::bind(bind(config.http_port))
        .await
        .with_context(|| format!("binding HTTP port {}", config.http_port))?;
    let (mqtt_addr, ws_addr, http_addr) = (mqtt.local_addr()?, wss.local_addr()?, http.local_addr()?);
    let plain_ws = config.bind.is_loopback();
    let info = serde_json::json!({
        "hostName": config.host_name,
        "mqttPort": mqtt_addr.port(),
        "wsPort": ws_addr.port(),
        "httpPort": http_addr.port(),
        "plainWebSocket": plain_ws,
        // The local DPS serves devices on the same ports, with the host name as provisioning host.
        "idScope": hub.id_scope(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let ca_pem = tls.ca_path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).map(Arc::new);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let stop = CancellationToken::new();
    let mut listeners = JoinSet::new();

    let total = listener::Total::new(listener::connection_budget());
    let gauge = |name| listener::Gauge::new(name, config.limits.clone(), total.clone());
    listeners.spawn(listener::accept_mqtt(mqtt, acceptor.clone(), hub.clone(), gauge("mqtt"), stop.clone()));
    let access = Arc::new(config.access.clone());
    let tls_router = api::router(
        AppState {
            hub: hub.clone(),
            websocket: true,
            transport: "wss",
            info: info.clone(),
            ca_pem: ca_pem.clone(),
            access: access.clone(),
            scheme: "https",
            port: ws_addr.port(),
        },
        config.web_dir.clone(),
    );
    listeners.spawn(listener::accept_https(wss, acceptor, tls_router, hub.clone(), gauge("wss"), stop.clone()));
    let http_router = api::router(
        AppState {
            hub: hub.clone(),
            websocket: plain_ws,
            transport: "ws",
            info,
            ca_pem,
            access,
            scheme: "http",
            port: http_addr.port(),
        },
        config.web_dir.clone(),
    );
    listeners.spawn(listener::serve_http(http, http_router, hub.clone(), gauge("http"), stop.clone()));
    // Expired C2D messages are dead-lettered when they expire, also in the queues of devices that stay offline.
    listeners.spawn(hub::c2d_sweeper(hub.clone(), hub::C2D_SWEEP_EVERY));
    Ok(Running { mqtt_addr, ws_addr, http_addr, ca_path: tls.ca_path, hub, listeners, stop })
}

/// Runs until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    start(config).await?.serve_until(shutdown).await;
    Ok(())
}

/// Caps glibc's malloc arenas at one per two threads' worth of cores (here: 2). By default glibc creates up to
/// 8 arenas per core; connection tasks allocate records on the async workers that the writer thread frees, and
/// every arena keeps its own high-water mark, so the emulator's peak memory at full load was some 15 MB higher
/// with no gain in speed (BENCHMARKS.md). Call before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called at start-up before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
