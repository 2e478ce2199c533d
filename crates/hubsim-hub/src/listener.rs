//! The accept loops: MQTT over TLS, HTTPS (the TLS WebSocket endpoint and the service API) and plain HTTP.
//! Each TLS handshake runs in its own task, bounded in time; every connection task is tracked by the hub so
//! shutdown can wait for it. A failed accept or handshake is logged and the loop goes on.
//!
//! Bounds (defaults in [`Limits`]): connections per listener and per remote address, and of all listeners
//! together within the process's open-file limit ([`connection_budget`]); a connection over a cap is closed at
//! once. Connections that have not authenticated yet (MQTT before its CONNECT is accepted, over TLS or
//! WebSocket) are at most [`Limits::unauthenticated`] at a time, each holding one of the hub's places
//! ([`crate::pre_auth`]: what they may buffer is bounded by that number, and the longest-held place goes to a
//! newcomer once every one is taken). Then the TLS handshake time, and on HTTP the time to send
//! a request's headers — which also bounds how long an idle keep-alive connection is kept. An upgraded WebSocket
//! is then governed by MQTT's own deadlines (CONNECT within 30 s, keep-alive).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::conn;
use crate::hub::Hub;
use crate::pre_auth::Place;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open files kept for everything but connections: the store, certificates, the web folder's files.
const RESERVED_FILES: u64 = 256;

/// How many connections all listeners together may hold: the process's limit on open files, less
/// [`RESERVED_FILES`]. The soft limit is first raised to the hard one (as Go's runtime does at start), so a
/// machine's usual 1 024 does not cap a load test; beyond it every accept would fail with "too many open files"
/// and no device, however well-behaved, could connect. Unbounded (`usize::MAX`) where there is no such limit.
pub fn connection_budget() -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let lim = getrlimit(Resource::Nofile);
        if let (Some(soft), Some(hard)) = (lim.current, lim.maximum) {
            if soft < hard {
                // Refused only where the hard limit is above the kernel's own: then the soft one stays.
                let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) });
            }
        }
        if let Some(n) = getrlimit(Resource::Nofile).current {
            return usize::try_from(n.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX);
        }
    }
    usize::MAX
}

/// Connection bounds of the listeners.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections per listener (default 20 000).
    pub per_listener: usize,
    /// Open connections per remote address that is not a loopback address (default 1 000). Loopback clients —
    /// the browser, the CLI, load generators on this machine — share one address and are bounded by
    /// `per_listener` alone.
    pub per_address: usize,
    /// Time for an HTTP client to send a request's headers once it has started one (default 10 s).
    pub http_header_timeout: Duration,
    /// Longest time an HTTP connection may pass with no request being handled and no byte moving either way
    /// (default 20 s; Server-Sent Event streams send a comment every 10 s, so they stay open).
    pub http_idle_timeout: Duration,
    /// MQTT connections (TLS or WebSocket, hub or DPS) that have not authenticated yet, at a time (default 256):
    /// what they buffer before their CONNECT is accepted is at most this many CONNECT packets (each up to IoT
    /// Hub's 256 KB plus headers) or WebSocket frames (1 MiB); more wait for a place (see [`crate::pre_auth`]).
    pub unauthenticated: usize,
    /// How long a connection may hold its place without authenticating before a newcomer may take it, when
    /// every place is taken (default 2 s; the connection is then closed).
    pub evict_unauthenticated_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_listener: 20_000,
            per_address: 1_000,
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(20),
            unauthenticated: 256,
            evict_unauthenticated_after: Duration::from_secs(2),
        }
    }
}

/// The connections of all listeners together, against [`connection_budget`].
pub(crate) struct Total {
    open: std::sync::atomic::AtomicUsize,
    cap: usize,
}

impl Total {
    pub(crate) fn new(cap: usize) -> Arc<Total> {
        Arc::new(Total { open: std::sync::atomic::AtomicUsize::new(0), cap })
    }
}

/// Counts a listener's open connections, in total and per remote address.
pub(crate) struct Gauge {
    name: &'static str,
    limits: Limits,
    total: Arc<Total>,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: AtomicU64,
    last_report: AtomicU64,
}

/// One admitted connection; dropping it frees its place.
pub(crate) struct Admission {
    gauge: Arc<Gauge>,
    ip: IpAddr,
}

impl Gauge {
    pub(crate) fn new(name: &'static str, limits: Limits, total: Arc<Total>) -> Arc<Gauge> {
        Arc::new(Gauge {
            name,
            limits,
            total,
            open: Mutex::new((0, HashMap::new())),
            refused: AtomicU64::new(0),
            last_report: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `ip`, or `None` (and a log line at most every 10 s) when a cap is reached.
    pub(crate) fn admit(self: &Arc<Gauge>, ip: IpAddr) -> Option<Admission> {
        let admitted = {
            let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let per_ip = g.1.get(&ip).copied().unwrap_or(0);
            let all = &self.total.open;
            if g.0 >= self.limits.per_listener
                || (!ip.is_loopback() && per_ip >= self.limits.per_address)
                || all
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.total.cap).then_some(n + 1))
                    .is_err()
            {
                false
            } else {
                g.0 += 1;
                *g.1.entry(ip).or_insert(0) += 1;
                true
            }
        };
        if admitted {
            return Some(Admission { gauge: self.clone(), ip });
        }
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::timefmt::unix_ms() / 1000;
        let last = self.last_report.load(Ordering::Relaxed);
        if now >= last + 10
            && self.last_report.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                listener = self.name,
                refused_total = n,
                "connection refused: the limit of {} per listener / {} per address / {} in all (open files) is reached",
                self.limits.per_listener,
                self.limits.per_address,
                self.total.cap
            );
        }
        None
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gauge.total.open.fetch_sub(1, Ordering::AcqRel);
        let mut g = self.gauge.open.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.ip);
            }
        }
    }
}

/// Accepts the next connection within the caps; `None` when stopping.
async fn accept(
    listener: &TcpListener,
    gauge: &Arc<Gauge>,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr, Admission)> {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return None,
        };
        match accepted {
            Ok((tcp, remote)) => match gauge.admit(remote.ip()) {
                Some(a) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, remote, a));
                }
                None => drop(tcp),
            },
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The HTTP connection builder: header deadline (which also ends idle keep-alive connections) and upgrades.
fn http_builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.http_header_timeout)
        .max_buf_size(64 * 1024);
    b.http2().timer(hyper_util::rt::TokioTimer::new()).max_concurrent_streams(64);
    b
}

/// What a connection's idle watchdog looks at: the last time a byte moved, and how many requests are being
/// handled (a direct-method call may wait minutes for its device without a byte moving).
#[derive(Default)]
pub(crate) struct Activity {
    last_ms: AtomicU64,
    in_flight: AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
    }
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    /// Marks a request as being handled until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RequestGuard(self.clone())
    }
}

pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's bytes, noting every read and write in its [`Activity`].
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one HTTP connection until it ends, idles past the limit, or shutdown. An upgrade (the MQTT
/// WebSocket) ends this future: the upgraded stream lives on in its own task under MQTT's deadlines.
async fn serve_http_conn<I>(io: I, router: axum::Router, remote: SocketAddr, limits: Limits, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;
    let activity = Arc::new(Activity::default());
    activity.touch();
    // Each request gets the remote address and counts as in flight for the idle watchdog until its response is
    // ready. A thin wrapper around the shared router: layering the router itself for each connection rebuilt every
    // route's service stack, about 100 KB per connection before its first byte.
    let service = {
        let activity = activity.clone();
        tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let (router, busy) = (router.clone(), activity.begin());
            req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            async move {
                let resp = router.oneshot(req.map(axum::body::Body::new)).await;
                drop(busy);
                resp
            }
        })
    };
    let service = TowerToHyperService::new(service);
    let builder = http_builder(&limits);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(Watched { inner: io, activity: activity.clone() }), service);
    tokio::pin!(conn);
    let idle = limits.http_idle_timeout.as_millis() as u64;
    loop {
        let quiet_since = activity.last_ms.load(Ordering::Relaxed);
        let wake =
            tokio::time::Instant::now() + Duration::from_millis((quiet_since + idle).saturating_sub(activity.now_ms()));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%remote, "HTTP connection ended: {e}");
                }
                return;
            }
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                return;
            }
            _ = tokio::time::sleep_until(wake) => {
                let quiet = activity.now_ms().saturating_sub(activity.last_ms.load(Ordering::Relaxed));
                if activity.in_flight.load(Ordering::Relaxed) == 0 && quiet >= idle {
                    tracing::debug!(%remote, "HTTP connection closed after {} s without a request", idle / 1000);
                    return;
                }
            }
        }
    }
}

/// A TLS connection after its handshake, boxed (see [`accept_tls`]).
type TlsStream = Box<tokio_rustls::server::TlsStream<TcpStream>>;

/// A place among the unauthenticated connections (see [`crate::pre_auth`]); `None` (logged) when none could
/// be had in time.
pub(crate) async fn pre_auth_place(hub: &Hub, remote: &SocketAddr) -> Option<Place> {
    static BUDGET: LogBudget = LogBudget::new(HANDSHAKE_LOGS_PER_SECOND);
    let place = hub.pre_auth.take().await;
    if place.is_none() {
        let why = "closed: no place among the connections waiting to authenticate freed within 10 s (too many \
                   connections that do not authenticate: see --max-unauthenticated)";
        BUDGET.info(remote, why);
    }
    place
}

/// Logs that `remote` lost its place to a newcomer before authenticating: at most
/// [`HANDSHAKE_LOGS_PER_SECOND`] lines a second, like failed handshakes (a slowloris peer causes one per connection).
pub(crate) fn evicted(remote: &dyn std::fmt::Display) {
    static BUDGET: LogBudget = LogBudget::new(HANDSHAKE_LOGS_PER_SECOND);
    let why =
        "closed: it held a place among the connections waiting to authenticate past its time and a newcomer took it";
    BUDGET.info(remote, why);
}

/// Failed TLS handshakes logged per second at most (one line each); the others of that second are counted in
/// the next line, so a flood of handshakes cannot grow the log without bound.
const HANDSHAKE_LOGS_PER_SECOND: u64 = 5;

/// At most `per_second` log lines (or records) a second; what was left out is counted for the next one.
pub(crate) struct LogBudget {
    second: AtomicU64,
    in_second: AtomicU64,
    unlogged: AtomicU64,
    per_second: u64,
}

impl LogBudget {
    pub(crate) const fn new(per_second: u64) -> Self {
        LogBudget { second: AtomicU64::new(0), in_second: AtomicU64::new(0), unlogged: AtomicU64::new(0), per_second }
    }

    /// Logs `why` about `remote` at info level if this second's budget admits it, with the count of the lines
    /// left out before it.
    pub(crate) fn info(&self, remote: &dyn std::fmt::Display, why: &str) {
        match self.admit(crate::timefmt::unix_ms() / 1000) {
            Some(0) => tracing::info!(%remote, "{why}"),
            Some(n) => tracing::info!(%remote, "{why} ({n} more before this one not logged)"),
            None => {}
        }
    }

    /// `Some(lines left out before this one)` when a line may be logged at `now_s`, else `None` (counted).
    pub(crate) fn admit(&self, now_s: u64) -> Option<u64> {
        if self.second.swap(now_s, Ordering::Relaxed) != now_s {
            self.in_second.store(0, Ordering::Relaxed);
        }
        if self.in_second.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.unlogged.swap(0, Ordering::Relaxed))
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn handshake_failed(remote: &SocketAddr, why: &str) {
    static BUDGET: LogBudget = LogBudget::new(HANDSHAKE_LOGS_PER_SECOND);
    BUDGET.info(remote, &["TLS handshake failed: ", why].concat());
}

/// Accepts TLS connections; with `pre_auth`, each first waits for a place among the unauthenticated ones (MQTT),
/// which it hands to `serve`.
async fn accept_tls<F, Fut>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    hub: Arc<Hub>,
    gauge: Arc<Gauge>,
    stop: CancellationToken,
    pre_auth: bool,
    serve: F,
) where
    F: Fn(TlsStream, SocketAddr, Option<Place>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some((tcp, remote, admission)) = accept(&listener, &gauge, &stop).await {
        let (acceptor, serve, h) = (acceptor.clone(), serve.clone(), hub.clone());
        hub.tasks.spawn(async move {
            let _admission = admission;
            let place = match pre_auth {
                // A place is taken once the client has sent something (its ClientHello): a socket opened and left
                // silent holds no place, only itself, until the handshake deadline.
                true => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut [0u8; 1])).await {
                    Ok(Ok(0)) => return,
                    Ok(Ok(_)) => match pre_auth_place(&h, &remote).await {
                        Some(p) => Some(p),
                        None => return,
                    },
                    Ok(Err(e)) => return handshake_failed(&remote, &e.to_string()),
                    Err(_) => return handshake_failed(&remote, "nothing received before the handshake deadline"),
                },
                false => None,
            };
            // A task's future is allocated with the task and kept for its life, as large as its largest state.
            // The handshake's future holds the whole TLS state inline, so it is boxed (freed once done), and the
            // stream is boxed before it reaches `serve`: an idle connection's task holds its serving future only.
            let handshake = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)));
            let handshake = async {
                tokio::select! {
                    r = handshake => Some(r),
                    _ = crate::pre_auth::evicted(&place) => None,
                }
            };
            let tls = match handshake.await {
                None => return evicted(&remote),
                Some(Ok(Ok(tls))) => Box::new(tls),
                Some(Ok(Err(e))) => return handshake_failed(&remote, &conn::plain_reason(&e)),
                Some(Err(_)) => return handshake_failed(&remote, "timed out"),
            };
            serve(tls, remote, place).await
        });
    }
}

pub(crate) async fn accept_mqtt(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    hub: Arc<Hub>,
    gauge: Arc<Gauge>,
    stop: CancellationToken,
) {
    let h = hub.clone();
    // Device tokens for `{host name}:{this port}` are accepted here (`Hub::authenticate`).
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    accept_tls(listener, acceptor, hub, gauge, stop, true, move |tls, remote, place| {
        let hub = h.clone();
        async move { conn::serve(hub, conn::Transport::Stream(tls), "mqtt", port, remote.to_string(), place).await }
    })
    .await
}

pub(crate) async fn accept_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    hub: Arc<Hub>,
    gauge: Arc<Gauge>,
    stop: CancellationToken,
) {
    let (conn_stop, limits) = (stop.clone(), gauge.limits.clone());
    accept_tls(listener, acceptor, hub, gauge, stop, false, move |tls, remote, _| {
        serve_http_conn(tls, router.clone(), remote, limits.clone(), conn_stop.clone())
    })
    .await
}

pub(crate) async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    hub: Arc<Hub>,
    gauge: Arc<Gauge>,
    stop: CancellationToken,
) {
    while let Some((tcp, remote, admission)) = accept(&listener, &gauge, &stop).await {
        let (router, limits, stop) = (router.clone(), gauge.limits.clone(), stop.clone());
        hub.tasks.spawn(async move {
            let _admission = admission;
            serve_http_conn(tcp, router, remote, limits, stop).await
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_listener_and_per_remote_address() {
        let g = Gauge::new("t", Limits { per_listener: 4, per_address: 2, ..Limits::default() }, Total::new(100));
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let a = g.admit(lan).unwrap();
        let _b = g.admit(lan).unwrap();
        assert!(g.admit(lan).is_none(), "third from one address");
        let _c = g.admit(other).unwrap();
        // Loopback clients are bounded by the listener cap only.
        let _d = g.admit(IpAddr::from([127, 0, 0, 1])).unwrap();
        assert!(g.admit(IpAddr::from([127, 0, 0, 1])).is_none(), "listener full");
        drop(a);
        assert!(g.admit(lan).is_some(), "a freed place is reused");
    }

    #[test]
    fn a_flood_of_failed_handshakes_logs_a_few_lines_a_second_and_counts_the_rest() {
        let b = LogBudget::new(2);
        assert_eq!((b.admit(10), b.admit(10)), (Some(0), Some(0)));
        for _ in 0..1000 {
            assert_eq!(b.admit(10), None);
        }
        // The next second's first line says how many were left out.
        assert_eq!((b.admit(11), b.admit(11), b.admit(11)), (Some(1000), Some(0), None));
    }

    #[test]
    fn listeners_share_one_cap_within_the_open_file_limit() {
        let total = Total::new(3);
        let (a, b) = (Gauge::new("a", Limits::default(), total.clone()), Gauge::new("b", Limits::default(), total));
        let lo = IpAddr::from([127, 0, 0, 1]);
        let first = a.admit(lo).unwrap();
        let _second = b.admit(lo).unwrap();
        let _third = a.admit(lo).unwrap();
        assert!(b.admit(lo).is_none() && a.admit(lo).is_none(), "all listeners together are at the cap");
        drop(first);
        assert!(b.admit(lo).is_some(), "a place freed on one listener serves another");
    }

    #[test]
    fn the_open_file_budget_leaves_room_for_the_store() {
        let budget = connection_budget();
        assert!(budget >= 1);
        #[cfg(unix)]
        {
            let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            // The soft limit was raised to the hard one (where the hard one is finite), and the budget keeps
            // RESERVED_FILES below it.
            if lim.maximum.is_some() {
                assert_eq!(lim.current, lim.maximum);
            }
            if let Some(n) = lim.current {
                assert_eq!(budget as u64, n.saturating_sub(RESERVED_FILES).max(1));
            }
        }
    }
}
