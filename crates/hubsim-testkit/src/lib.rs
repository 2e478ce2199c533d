//! Test harness shared by hubsim's integration tests: a real emulator on 127.0.0.1 (ports picked by the OS), in
//! process ([`Emu`]) or as the `hubsim` binary ([`Proc`], for `kill -9`), and devices driven by
//! hubsim-device's [`Driver`] over real TLS and WebSocket-over-TLS sockets ([`TestDevice`]). Helpers panic on
//! failure: they are for tests only.

use bytes::Bytes;
use hubsim_device::{Driver, Transport};
use hubsim_hub::{Config, Running};
use hubsim_proto::device::{ConnectOptions, DeviceConfig, Event, LostReason, Telemetry};
use hubsim_proto::sas::{DeviceKey, ResourceUri, SasToken};
use hubsim_proto::topic::DeviceIdentity;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use hubsim_device::Via;

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// An emulator in this process, with its data in a temporary folder.
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

    /// Starts the emulator on this folder (after a shutdown, or a first time).
    pub async fn restart_with(&mut self, f: impl FnOnce(&mut Config)) {
        let mut c = Config::new(&self.dir);
        c.mqtt_port = 0;
        c.ws_port = 0;
        c.http_port = 0;
        f(&mut c);
        self.running = Some(hubsim_hub::start(c).await.unwrap());
    }

    pub fn r(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn hub(&self) -> &hubsim_hub::hub::Hub {
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
        pred: impl Fn(&hubsim_hub::model::ConnectionRecord) -> bool,
    ) -> hubsim_hub::model::ConnectionRecord {
        let mut rx = self.hub().connlog.subscribe();
        if let Some(r) = self.hub().store.connections(0, 10_000, None).await.unwrap().into_iter().find(|r| pred(r)) {
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

    /// Waits until `n` events are stored for `device` (woken by the event stream, not by polling).
    pub async fn wait_events(&self, device: &str, n: usize) -> Vec<hubsim_hub::model::EventRecord> {
        let mut rx = self.hub().events.subscribe();
        tokio::time::timeout(WAIT, async {
            loop {
                let evs = self.hub().store.events(0, 100_000, Some(device)).await.unwrap();
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

/// A device token for hub `localhost`, valid for `ttl` seconds from now (negative: already expired).
pub fn token(key: &DeviceKey, device: &str, ttl: i64) -> String {
    let r = ResourceUri::Device { host: "localhost".into(), device_id: device.into() };
    SasToken::sign(key, &r, (now_unix() as i64 + ttl) as u64, None).to_string()
}

fn client_tls(ca: &Path) -> Arc<rustls::ClientConfig> {
    hubsim_device::tls_config(Some(&std::fs::read(ca).unwrap())).unwrap()
}

/// A bare TLS stream to `addr` (server name `localhost`), for tests below the WebSocket layer.
pub async fn tls_stream(emu: &impl Endpoint, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(client_tls(&emu.ca_path())).connect(name, tcp).await.unwrap()
}

/// A TLS stream whose socket has a tiny receive window (4 KB), for tests of a device that stops reading: the
/// hub's writes block as soon as the kernel's buffers are full, instead of after megabytes.
pub async fn tls_stream_small_window(emu: &impl Endpoint, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(client_tls(&emu.ca_path())).connect(name, tcp).await.unwrap()
}

/// Opens the device transport `via` to the emulator.
pub async fn open_raw(emu: &impl Endpoint, via: Via) -> Transport {
    let port = match via {
        Via::Mqtt => emu.mqtt_addr().port(),
        Via::Ws => emu.ws_addr().port(),
    };
    Transport::open(client_tls(&emu.ca_path()), "localhost", port, via).await.unwrap()
}

/// Byte-level access to a transport, for sending what a `DeviceSession` never would.
#[allow(async_fn_in_trait)]
pub trait RawIo {
    /// Writes `b`; false when the transport is closed.
    async fn send_raw(&mut self, b: &[u8]) -> bool;
    /// The next bytes, or `None` when closed.
    async fn recv_raw(&mut self) -> Option<Vec<u8>>;
}

impl RawIo for Transport {
    async fn send_raw(&mut self, b: &[u8]) -> bool {
        self.send(Bytes::copy_from_slice(b)).await.is_ok()
    }
    async fn recv_raw(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        self.recv(&mut buf).await.map(|b| b.to_vec())
    }
}

/// A device driven by hubsim-device's [`Driver`] over a real socket; derefs to the driver.
pub struct TestDevice {
    pub driver: Driver,
    pub id: String,
    pub key: DeviceKey,
    pub via: Via,
}

impl Deref for TestDevice {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.driver
    }
}

impl DerefMut for TestDevice {
    fn deref_mut(&mut self) -> &mut Driver {
        &mut self.driver
    }
}

impl TestDevice {
    /// A device of hub `localhost`.
    pub fn new(id: &str, key: DeviceKey, via: Via) -> TestDevice {
        Self::with_config(DeviceConfig::new("localhost", DeviceIdentity::device(id)), key, via)
    }

    pub fn with_config(cfg: DeviceConfig, key: DeviceKey, via: Via) -> TestDevice {
        let id = cfg.identity.device_id.clone();
        TestDevice { driver: Driver::new(cfg), id, key, via }
    }

    /// Opens a transport, sends CONNECT with `password`, and returns the first event (CONNACK or loss).
    pub async fn connect_with(
        &mut self,
        emu: &impl Endpoint,
        password: String,
        will: Option<hubsim_proto::device::Will>,
    ) -> Event {
        let t = open_raw(emu, self.via).await;
        self.driver.connect(t, ConnectOptions { password: Some(password), will }).await.unwrap();
        self.next_event().await.expect("CONNACK or loss")
    }

    /// Connects with a fresh one-hour token; panics unless accepted. Returns SessionPresent.
    pub async fn connect(&mut self, emu: &impl Endpoint) -> bool {
        let t = token(&self.key, &self.id, 3600);
        match self.connect_with(emu, t, None).await {
            Event::Connected { session_present } => session_present,
            other => panic!("not connected: {other:?}"),
        }
    }

    /// The next session event, driving I/O and timers; `None` after [`WAIT`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.next_event_within(WAIT).await
    }

    pub async fn next_event_within(&mut self, limit: Duration) -> Option<Event> {
        self.driver.next_event(Some(tokio::time::Instant::now() + limit)).await
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
        let id = self.driver.session_mut().send_telemetry(now, msg).unwrap();
        self.driver.flush().await;
        id
    }

    /// Waits until the hub closes the connection; returns the loss reason.
    pub async fn expect_closed(&mut self) -> LostReason {
        match self.expect("connection loss", |e| matches!(e, Event::ConnectionLost { .. })).await {
            Event::ConnectionLost { reason, .. } => reason,
            _ => unreachable!(),
        }
    }

    pub async fn subscribe(&mut self, filters: &[hubsim_proto::topic::TopicFilter]) -> Event {
        let now = self.now();
        self.driver.session_mut().subscribe(now, filters).unwrap();
        self.driver.flush().await;
        self.expect("SUBACK", |e| matches!(e, Event::Subscribed { .. })).await
    }
}

/// What `hubsim serve --ready-file` writes once every listener is bound.
#[derive(Debug, Clone)]
pub struct Ready {
    pub mqtt_addr: std::net::SocketAddr,
    pub ws_addr: std::net::SocketAddr,
    pub http: String,
    pub ca: PathBuf,
    /// The iothubowner policy's connection string.
    pub service: hubsim_proto::ServiceConnectionString,
}

impl Ready {
    /// An `Authorization` value for the service API, valid for an hour.
    pub fn token(&self) -> String {
        self.service.token(now_unix() + 3600).to_string()
    }

    /// Parses the ready file's JSON.
    pub fn parse(text: &str) -> Ready {
        let v: serde_json::Value = serde_json::from_str(text).expect("ready file JSON");
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("ready file: {k}")).to_owned();
        Ready {
            mqtt_addr: s("mqttAddress").parse().unwrap(),
            ws_addr: s("webSocketAddress").parse().unwrap(),
            http: s("serviceApi"),
            ca: PathBuf::from(s("caPath")),
            service: hubsim_proto::ServiceConnectionString::parse(&s("serviceConnectionString")).unwrap(),
        }
    }
}

/// The `hubsim serve` binary as a child process (for kill -9 tests), found through its ready file.
pub struct Proc {
    pub child: std::process::Child,
    pub ready: Ready,
}

impl Proc {
    /// Starts `bin serve` on `dir` with OS-picked ports. The ready file is written before anything is printed,
    /// so the first line on stdout means the file is complete: no polling.
    pub fn spawn(bin: &Path, dir: &Path) -> Proc {
        Self::spawn_with(bin, dir, &[])
    }

    /// [`spawn`](Self::spawn) with more `serve` arguments.
    pub fn spawn_with(bin: &Path, dir: &Path, extra: &[&str]) -> Proc {
        use std::io::BufRead;
        let ready_path = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready_path);
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--mqtt-port", "0", "--ws-port", "0", "--http-port", "0", "--data"])
            .arg(dir)
            .arg("--ready-file")
            .arg(&ready_path)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        lines.next().expect("the emulator exited before it was ready").unwrap();
        let ready = Ready::parse(&std::fs::read_to_string(&ready_path).unwrap());
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proc { child, ready }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A blocking JSON call to the service API, run off the async runtime.
    pub async fn api(&self, method: &'static str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = format!("{}{}", self.ready.http, path);
        let auth = self.ready.token();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut r = match (method, body) {
                ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
                ("PUT", b) => {
                    agent.put(&url).header("authorization", &auth).send_json(b.unwrap_or(serde_json::json!({})))
                }
                ("POST", b) => {
                    agent.post(&url).header("authorization", &auth).send_json(b.unwrap_or(serde_json::json!({})))
                }
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
        self.ready.mqtt_addr
    }
    fn ws_addr(&self) -> std::net::SocketAddr {
        self.ready.ws_addr
    }
    fn ca_path(&self) -> PathBuf {
        self.ready.ca.clone()
    }
}

async fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(WAIT, s.read(buf)).await.expect("HTTP answer").unwrap()
}

/// An HTTP answer: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A raw HTTP/1.1 request to `addr` with exactly the given headers (Host included), off the async runtime: for
/// tests that send what a normal client would not (a foreign Host, an Origin, no credential).
pub async fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    use tokio::io::AsyncWriteExt;
    let mut req = format!("{method} {path} HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        req.push_str("connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    // Read the head, then the body by content-length (an upgrade answer has none and keeps the socket open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = read_some(&mut s, &mut buf).await;
        assert!(n > 0 || !raw.is_empty(), "connection closed without an answer");
        if n == 0 {
            break raw.len();
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = raw.get(head_end + 4..).unwrap_or_default().to_vec();
    if status != 101 {
        match length {
            Some(len) => {
                while body.len() < len {
                    let n = read_some(&mut s, &mut buf).await;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                }
            }
            None => loop {
                let n = read_some(&mut s, &mut buf).await;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            },
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    // Chunked bodies are not decoded; the API answers JSON with a content-length.
    HttpAnswer { status, headers, body }
}

impl Emu {
    /// The iothubowner policy's connection string.
    pub fn owner(&self) -> hubsim_proto::ServiceConnectionString {
        self.hub().policies.connection_string("localhost", "iothubowner").unwrap()
    }

    /// A service token of `policy`, valid for an hour.
    pub fn token(&self, policy: &str) -> String {
        self.hub().policies.connection_string("localhost", policy).unwrap().token(now_unix() + 3600).to_string()
    }
}

/// Waits for a record matching `pred` on a live connection-log subscription (taken before the action, so
/// nothing is missed): for records that are shown live but not stored.
pub async fn wait_live(
    rx: &mut tokio::sync::broadcast::Receiver<hubsim_hub::model::ConnectionRecord>,
    pred: impl Fn(&hubsim_hub::model::ConnectionRecord) -> bool,
) -> hubsim_hub::model::ConnectionRecord {
    tokio::time::timeout(WAIT, async {
        loop {
            let r = rx.recv().await.expect("the live connection log");
            if pred(&r) {
                return r;
            }
        }
    })
    .await
    .expect("a live connection-log record")
}

/// A `tracing` writer that keeps what is logged, for tests that read the emulator's log lines
/// (`.with_writer(move || sink.clone())`).
#[derive(Clone, Default)]
pub struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogSink {
    /// Everything logged so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// How many times `needle` was logged.
    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}
