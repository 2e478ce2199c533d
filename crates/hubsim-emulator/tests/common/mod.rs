//! Test harness: a real emulator on 127.0.0.1 (ports picked by the OS) and devices driven by hubsim-proto's
//! `DeviceSession` over real TLS and WebSocket-over-TLS sockets.
#![allow(dead_code)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hubsim_emulator::{Config, Running};
use hubsim_proto::device::{ConnectOptions, DeviceConfig, DeviceSession, Event, LostReason, Telemetry};
use hubsim_proto::sas::{DeviceKey, ResourceUri, SasToken};
use hubsim_proto::topic::DeviceIdentity;
use hubsim_proto::Instant;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Emu {
    pub running: Option<Running>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Emu {
    pub async fn start() -> Emu {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Emu {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut e = Emu { running: None, dir, _tmp: Some(tmp) };
        e.restart_with(f).await;
        e
    }

    pub async fn restart_with(&mut self, f: impl FnOnce(&mut Config)) {
        let mut c = Config::new(&self.dir);
        c.mqtt_port = 0;
        c.ws_port = 0;
        c.http_port = 0;
        f(&mut c);
        self.running = Some(hubsim_emulator::start(c).await.unwrap());
    }

    pub fn r(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn hub(&self) -> &hubsim_emulator::hub::Hub {
        &self.r().hub
    }

    pub fn ca(&self) -> PathBuf {
        self.r().ca_path.clone().unwrap()
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.r().http_addr)
    }

    /// Creates a device and returns its primary key.
    pub async fn device(&self, id: &str) -> DeviceKey {
        let d = self.hub().create_device(id, None, None, true).await.unwrap();
        DeviceKey::from_base64(&d.authentication.symmetric_key.primary_key).unwrap()
    }

    /// Waits until the connection log has a record matching `pred`.
    pub async fn wait_log(
        &self,
        pred: impl Fn(&hubsim_emulator::model::ConnectionRecord) -> bool,
    ) -> hubsim_emulator::model::ConnectionRecord {
        let mut rx = self.hub().connlog.subscribe();
        if let Some(r) = self.hub().store.connections(0, 10_000, None).unwrap().into_iter().find(|r| pred(r)) {
            return r;
        }
        tokio::time::timeout(WAIT, async {
            loop {
                let r = rx.recv().await.unwrap();
                if pred(&r) {
                    return r;
                }
            }
        })
        .await
        .expect("connection log record")
    }

    /// Waits until `n` events are stored for `device`.
    pub async fn wait_events(&self, device: &str, n: usize) -> Vec<hubsim_emulator::model::EventRecord> {
        let mut rx = self.hub().events.subscribe();
        tokio::time::timeout(WAIT, async {
            loop {
                let evs = self.hub().store.events(0, 100_000, Some(device)).unwrap();
                if evs.len() >= n {
                    return evs;
                }
                let _ = rx.recv().await;
            }
        })
        .await
        .expect("events")
    }
}

/// The wire bytes of a packet (for sending what DeviceSession would refuse to).
pub fn wire(p: hubsim_proto::mqttbytes::v4::Packet) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    hubsim_proto::packet::encode(&p, &mut b).unwrap();
    b.to_vec()
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn token(key: &DeviceKey, device: &str, ttl: i64) -> String {
    let r = ResourceUri::Device { host: "localhost".into(), device_id: device.into() };
    SasToken::sign(key, &r, (now_unix() as i64 + ttl) as u64, None).to_string()
}

pub fn client_tls(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

pub async fn tls_stream(emu: &impl Endpoint, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    client_tls(&emu.ca_path()).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Via {
    Mqtt,
    Wss,
}

pub enum ClientTransport {
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<TlsStream<TcpStream>>>),
}

impl ClientTransport {
    pub async fn open(emu: &impl Endpoint, via: Via) -> ClientTransport {
        match via {
            Via::Mqtt => ClientTransport::Tls(Box::new(tls_stream(emu, emu.mqtt_addr()).await)),
            Via::Wss => {
                let tls = tls_stream(emu, emu.ws_addr()).await;
                let mut req =
                    format!("wss://localhost:{}/$iothub/websocket?iothub-no-client-cert=true", emu.ws_addr().port())
                        .into_client_request()
                        .unwrap();
                req.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
                let (ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
                assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "mqtt");
                ClientTransport::Ws(Box::new(ws))
            }
        }
    }

    pub async fn send(&mut self, b: &[u8]) -> bool {
        match self {
            ClientTransport::Tls(s) => s.write_all(b).await.is_ok(),
            ClientTransport::Ws(ws) => ws.send(Message::Binary(Bytes::copy_from_slice(b))).await.is_ok(),
        }
    }

    /// Next bytes, or None when closed.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            ClientTransport::Tls(s) => {
                let mut buf = vec![0u8; 65536];
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(buf[..n].to_vec()),
                }
            }
            ClientTransport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    _ => return None,
                }
            },
        }
    }

    /// Drops the transport abruptly (no DISCONNECT, no close handshake).
    pub fn kill(self) {}
}

/// A device driven by `DeviceSession` over a real socket.
pub struct TestDevice {
    pub session: DeviceSession,
    pub transport: Option<ClientTransport>,
    pub start: std::time::Instant,
    pub id: String,
    pub key: DeviceKey,
    pub via: Via,
}

impl TestDevice {
    pub fn new(id: &str, key: DeviceKey, via: Via) -> TestDevice {
        let cfg = DeviceConfig::new("localhost", DeviceIdentity::device(id));
        TestDevice {
            session: DeviceSession::new(cfg),
            transport: None,
            start: std::time::Instant::now(),
            id: id.into(),
            key,
            via,
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    pub async fn connect_with(
        &mut self,
        emu: &impl Endpoint,
        password: String,
        will: Option<hubsim_proto::device::Will>,
    ) -> Event {
        self.transport = Some(ClientTransport::open(emu, self.via).await);
        let now = self.now();
        self.session.connect(now, ConnectOptions { password: Some(password), will }).unwrap();
        self.flush().await;
        self.next_event().await.expect("CONNACK or loss")
    }

    /// Connects with a fresh one-hour token; panics unless accepted.
    pub async fn connect(&mut self, emu: &impl Endpoint) -> bool {
        let t = token(&self.key, &self.id, 3600);
        match self.connect_with(emu, t, None).await {
            Event::Connected { session_present } => session_present,
            other => panic!("not connected: {other:?}"),
        }
    }

    pub async fn flush(&mut self) {
        while let Some(b) = self.session.poll_transmit() {
            if let Some(t) = &mut self.transport {
                if !t.send(&b).await {
                    let now = self.now();
                    self.session.handle_transport_closed(now, "write failed");
                }
            }
        }
    }

    /// The next session event, driving I/O and timers; None after WAIT.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.next_event_within(WAIT).await
    }

    pub async fn next_event_within(&mut self, limit: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(e) = self.session.poll_event() {
                if matches!(e, Event::ConnectionLost { .. }) {
                    self.transport = None;
                }
                return Some(e);
            }
            self.flush().await;
            let timer = self.session.poll_timeout().map(|t| {
                let ms = t.as_millis().saturating_sub(self.now().as_millis());
                tokio::time::Instant::now() + Duration::from_millis(ms)
            });
            let wake = timer.map_or(deadline, |t| t.min(deadline));
            let Some(t) = self.transport.as_mut() else {
                // No transport: only timers can produce events.
                tokio::time::sleep_until(wake).await;
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                let now = self.now();
                self.session.handle_timeout(now);
                continue;
            };
            tokio::select! {
                r = t.recv() => {
                    let now = self.now();
                    match r {
                        Some(b) => { let _ = self.session.handle_input(now, &b); }
                        None => self.session.handle_transport_closed(now, "closed by the hub"),
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    let now = self.now();
                    self.session.handle_timeout(now);
                }
            }
        }
    }

    /// Waits for an event matching `pred`, skipping others.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        loop {
            match self.next_event().await {
                Some(e) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("timed out waiting for {what}"),
            }
        }
    }

    pub async fn send(&mut self, msg: Telemetry) -> hubsim_proto::device::PublishId {
        let now = self.now();
        let id = self.session.send_telemetry(now, msg).unwrap();
        self.flush().await;
        id
    }

    /// Waits until the hub closes the connection; returns the loss reason.
    pub async fn expect_closed(&mut self) -> LostReason {
        match self.expect("connection loss", |e| matches!(e, Event::ConnectionLost { .. })).await {
            Event::ConnectionLost { reason, .. } => reason,
            _ => unreachable!(),
        }
    }

    /// Sends DISCONNECT (a clean close: no Will, the stored session stays).
    pub async fn disconnect(&mut self) {
        let now = self.now();
        self.session.disconnect(now);
        self.flush().await;
    }

    pub async fn subscribe(&mut self, filters: &[hubsim_proto::topic::TopicFilter]) -> Event {
        let now = self.now();
        self.session.subscribe(now, filters).unwrap();
        self.flush().await;
        self.expect("SUBACK", |e| matches!(e, Event::Subscribed { .. })).await
    }
}

/// The `hubsim serve` binary as a child process (for kill -9 tests), with its addresses read from its banner.
pub struct Proc {
    pub child: std::process::Child,
    pub mqtt_addr: std::net::SocketAddr,
    pub ws_addr: std::net::SocketAddr,
    pub http: String,
    pub ca: PathBuf,
}

impl Proc {
    pub fn spawn(dir: &Path) -> Proc {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hubsim"))
            .args(["serve", "--mqtt-port", "0", "--ws-port", "0", "--http-port", "0", "--data"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let (mut mqtt, mut ws, mut http, mut ca) = (None, None, None, None);
        while mqtt.is_none() || ws.is_none() || http.is_none() || ca.is_none() {
            let line = lines.next().expect("banner").unwrap();
            let after = |p: &str| line.split(p).nth(1).map(|s| s.split('/').next().unwrap_or("").trim().to_owned());
            if line.contains("MQTT over TLS") {
                mqtt = after("mqtts://").map(|s| s.parse().unwrap());
            } else if line.contains("MQTT over WebSocket") {
                ws = after("wss://").map(|s| s.parse().unwrap());
            } else if line.contains("service API") {
                http = after("http://").map(|s| format!("http://{s}"));
            } else if line.contains("trust this CA") {
                ca = line.split(':').nth(1).map(|s| PathBuf::from(s.trim()));
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proc { child, mqtt_addr: mqtt.unwrap(), ws_addr: ws.unwrap(), http: http.unwrap(), ca: ca.unwrap() }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A blocking JSON call to the service API, run off the async runtime.
    pub async fn api(&self, method: &'static str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = format!("{}{}", self.http, path);
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut r = match (method, body) {
                ("GET", _) => agent.get(&url).call(),
                ("PUT", b) => agent.put(&url).send_json(b.unwrap_or(serde_json::json!({}))),
                ("POST", b) => agent.post(&url).send_json(b.unwrap_or(serde_json::json!({}))),
                _ => panic!("method"),
            }
            .unwrap();
            let text = r.body_mut().read_to_string().unwrap();
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        })
        .await
        .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Devices can connect either to an in-process emulator or to a child process.
pub trait Endpoint {
    fn mqtt_addr(&self) -> std::net::SocketAddr;
    fn ws_addr(&self) -> std::net::SocketAddr;
    fn ca_path(&self) -> PathBuf;
}

impl Endpoint for Emu {
    fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.r().mqtt_addr
    }
    fn ws_addr(&self) -> std::net::SocketAddr {
        self.r().ws_addr
    }
    fn ca_path(&self) -> PathBuf {
        self.ca()
    }
}

impl Endpoint for Proc {
    fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.mqtt_addr
    }
    fn ws_addr(&self) -> std::net::SocketAddr {
        self.ws_addr
    }
    fn ca_path(&self) -> PathBuf {
        self.ca.clone()
    }
}
