//! The service API's gate, applied to every request before a handler runs:
//!
//! 1. **Host** must be the hub's host name, a loopback name, or one the user allowed (`--allow-host`): a page
//!    that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) sends its own name and is refused (HTTP 421).
//! 2. **Origin**, when a browser sends one, must be this server's own origin or an allowed one
//!    (`--allow-origin`) for the WebSocket endpoint and every state-changing method: a page on another site can
//!    neither open MQTT connections here nor fire "simple" cross-site POSTs (HTTP 403).
//! 3. **Authorization**: every service-API route needs a shared access policy token with the permission the
//!    route needs ([`required`]), checked by [`Policies::authorize`] (HTTP 401, IoT Hub's `401002`); its
//!    audience is the hub's host name, or the host name with this listener's port.
//!
//! Every response also carries `X-Frame-Options: DENY` and `Content-Security-Policy: frame-ancestors 'none'`,
//! so no other site can frame the web app or the API.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

use crate::hub::policy::Permission;
use crate::hub::Hub;
use crate::timefmt::unix_ms;

/// Who may reach the API, beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Host names accepted in `Host` besides the hub's host name and loopback names (lower case, no port).
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, or `scheme://host:*` for any port) allowed besides the server's own.
    pub allowed_origins: Vec<String>,
}

/// What the gate needs.
#[derive(Clone)]
pub struct Gate {
    pub hub: Arc<Hub>,
    pub access: Arc<Access>,
    /// `https` on the TLS listener, `http` on the plain one (for the same-origin check).
    pub scheme: &'static str,
    /// The listener's port: a token for `{host name}:{port}` is accepted on it
    /// ([`crate::hub::policy::Policies::authorize`]).
    pub port: u16,
}

/// The permission a route needs; `None` for public routes (health, facts for the web app, the public CA
/// certificate, the MQTT WebSocket endpoint whose devices authenticate in CONNECT, and the web app's files).
///
/// Matched segment by segment, as the router matches, with the method: an identity may be named `close`,
/// `commands` or `query` (a path that merely ends so is not the route that needs less).
pub fn required(method: &Method, path: &str) -> Option<Permission> {
    use Permission::*;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let read = matches!(*method, Method::GET | Method::HEAD);
    let (post, delete) = (*method == Method::POST, *method == Method::DELETE);
    Some(match segments.as_slice() {
        ["devices-bulk", ..] => RegistryWrite,
        // C2D: send, list. Closing a device's connection and purging its C2D queue are ServiceConnect in IoT Hub.
        ["devices", _, "messages", "devicebound"] => ServiceConnect,
        ["devices", _, "close"] if post => ServiceConnect,
        ["devices", _, "commands"] if delete => ServiceConnect,
        // A query only reads.
        ["devices", "query"] if post => RegistryRead,
        ["devices", ..] if read => RegistryRead,
        ["devices", ..] => RegistryWrite,
        ["statistics", "service"] => ServiceConnect,
        ["statistics", ..] => RegistryRead,
        ["twins" | "events" | "connections" | "feedback", ..] => ServiceConnect,
        // The local DPS's enrollments and registration states (DPS's own service API has its own policies;
        // here the registry permissions guard them). `POST …/query` only reads.
        ["enrollments" | "enrollmentGroups" | "registrations", ..] if read => RegistryRead,
        ["enrollments" | "enrollmentGroups", "query"] if post => RegistryRead,
        ["registrations", _, "query"] if post => RegistryRead,
        ["enrollments" | "enrollmentGroups" | "registrations", ..] => RegistryWrite,
        _ => return None,
    })
}

fn refuse(status: StatusCode, code: u32, message: String) -> Response {
    tracing::info!(status = status.as_u16(), "service API refused a request: {message}");
    (status, Json(super::iothub::error_body(status.as_u16(), code, &message))).into_response()
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`), lower-cased.
fn host_only(v: &str) -> String {
    let v = v.trim();
    let h = if let Some(rest) = v.strip_prefix('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket (`[::1]evil.example` is not `[::1]`).
        match rest.split_once(']') {
            Some((h, "")) => format!("[{h}]"),
            Some((h, port)) if port.strip_prefix(':').is_some_and(|p| p.chars().all(|c| c.is_ascii_digit())) => {
                format!("[{h}]")
            }
            _ => v.to_owned(),
        }
    } else {
        v.rsplit_once(':').map_or(v, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { v }).to_owned()
    };
    h.to_ascii_lowercase()
}

impl Gate {
    fn host_allowed(&self, host: &str) -> bool {
        let h = host_only(host);
        matches!(h.as_str(), "localhost" | "127.0.0.1" | "[::1]")
            || h.eq_ignore_ascii_case(&self.hub.settings.host_name)
            || self.access.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(&h))
    }

    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        if origin == format!("{}://{}", self.scheme, host.trim().to_ascii_lowercase()) {
            return true;
        }
        self.access.allowed_origins.iter().any(|a| origin_matches(a, &origin))
    }
}

/// Whether `origin` matches an allow-list entry (`scheme://host[:port]`, or `scheme://host:*` for any port).
pub fn origin_matches(allowed: &str, origin: &str) -> bool {
    let a = allowed.trim().trim_end_matches('/').to_ascii_lowercase();
    let origin = origin.trim().to_ascii_lowercase();
    match a.strip_suffix(":*") {
        Some(prefix) => {
            origin == prefix
                || origin
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        }
        None => origin == a,
    }
}

/// The gate as an axum middleware; every answer, refusals included, carries the anti-framing headers.
pub async fn check(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let mut resp = gate(&g, req, next).await;
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

async fn gate(g: &Gate, req: Request, next: Next) -> Response {
    // One Host only (RFC 9112 §3.2: a request with more than one is answered 400), and a request in absolute
    // form (`GET http://name/…`) names its host in the URI too: every name given must be allowed, or the check
    // would depend on which one a proxy or the framework reads.
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return refuse(StatusCode::BAD_REQUEST, 400004, "the request has more than one Host header".into());
    }
    // Origin and If-Match decide what is allowed: one of each at most, in ASCII, or the check could be skipped
    // (a value the check cannot read was taken as absent) or depend on which one is read.
    for name in [header::ORIGIN, header::IF_MATCH] {
        let mut values = req.headers().get_all(&name).iter();
        let (first, second) = (values.next(), values.next());
        if second.is_some() {
            return refuse(StatusCode::BAD_REQUEST, 400004, format!("the request has more than one {name} header"));
        }
        if first.is_some_and(|v| v.to_str().is_err()) {
            return refuse(StatusCode::BAD_REQUEST, 400004, format!("the request's {name} header is not ASCII text"));
        }
    }
    if let Some(authority) = req.uri().authority() {
        if !g.host_allowed(authority.as_str()) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                403001,
                format!(
                    "the request's URI names host '{}', which is not a name of this emulator",
                    crate::hub::truncate(authority.as_str(), 100)
                ),
            );
        }
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return refuse(StatusCode::BAD_REQUEST, 400004, "the request has no Host".into());
    };
    if !g.host_allowed(&host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            403001,
            format!(
                "Host '{}' is not a name of this emulator (allowed: localhost, 127.0.0.1, [::1], {}{}); add it with --allow-host",
                crate::hub::truncate(&host, 100),
                g.hub.settings.host_name,
                g.access.allowed_hosts.iter().map(|h| format!(", {h}")).collect::<String>()
            ),
        );
    }
    let path = req.uri().path().to_owned();
    let websocket = hubsim_proto::endpoint::is_websocket_path(&path);
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if websocket || changes_state {
        if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            if !g.origin_allowed(origin, &host) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    403001,
                    format!(
                        "requests from the web origin '{}' are not allowed; start the emulator with --allow-origin to allow it",
                        crate::hub::truncate(origin, 100)
                    ),
                );
            }
        }
    }
    // A CORS preflight carries no credential by design (Fetch standard); CORS itself answers it.
    let preflight = req.method() == Method::OPTIONS;
    if let Some(needed) = required(req.method(), &path).filter(|_| !preflight) {
        let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let now = unix_ms() / 1000;
        if let Err(e) = g.hub.policies.authorize(&g.hub.settings.host_name, Some(g.port), auth, needed, now) {
            return refuse(StatusCode::UNAUTHORIZED, 401002, e.to_string());
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_needs_a_permission_and_public_ones_do_not() {
        use Permission::*;
        let cases = [
            (Method::GET, "/devices", Some(RegistryRead)),
            (Method::GET, "/devices/d1", Some(RegistryRead)),
            (Method::GET, "/devices/d1/modules/m", Some(RegistryRead)),
            (Method::GET, "/devices/d1/modules", Some(RegistryRead)),
            (Method::PUT, "/devices/d1/modules/m", Some(RegistryWrite)),
            (Method::DELETE, "/devices/d1/modules/m", Some(RegistryWrite)),
            (Method::POST, "/devices", Some(RegistryWrite)),
            (Method::POST, "/devices/query", Some(RegistryRead)),
            (Method::DELETE, "/devices/d1/commands", Some(ServiceConnect)),
            (Method::GET, "/statistics/devices", Some(RegistryRead)),
            (Method::GET, "/statistics/service", Some(ServiceConnect)),
            (Method::PUT, "/twins/d1", Some(ServiceConnect)),
            (Method::GET, "/twins/d1/modules/m", Some(ServiceConnect)),
            (Method::PATCH, "/twins/d1/modules/m", Some(ServiceConnect)),
            (Method::POST, "/twins/d1/modules/m/methods", Some(ServiceConnect)),
            (Method::PUT, "/devices/d1", Some(RegistryWrite)),
            (Method::DELETE, "/devices/d1", Some(RegistryWrite)),
            (Method::POST, "/devices/d1/disable", Some(RegistryWrite)),
            (Method::POST, "/devices-bulk", Some(RegistryWrite)),
            (Method::POST, "/devices/d1/messages/devicebound", Some(ServiceConnect)),
            (Method::GET, "/devices/d1/messages/devicebound", Some(ServiceConnect)),
            (Method::POST, "/devices/d1/close", Some(ServiceConnect)),
            (Method::GET, "/twins/d1", Some(ServiceConnect)),
            (Method::PATCH, "/twins/d1", Some(ServiceConnect)),
            (Method::POST, "/twins/d1/methods", Some(ServiceConnect)),
            (Method::GET, "/events", Some(ServiceConnect)),
            (Method::GET, "/events/stream", Some(ServiceConnect)),
            (Method::GET, "/connections/stream", Some(ServiceConnect)),
            (Method::GET, "/feedback", Some(ServiceConnect)),
            (Method::GET, "/enrollments", Some(RegistryRead)),
            (Method::POST, "/enrollments/query", Some(RegistryRead)),
            (Method::GET, "/enrollments/r1", Some(RegistryRead)),
            (Method::PUT, "/enrollments/r1", Some(RegistryWrite)),
            (Method::DELETE, "/enrollments/r1", Some(RegistryWrite)),
            (Method::GET, "/enrollmentGroups", Some(RegistryRead)),
            (Method::POST, "/enrollmentGroups/query", Some(RegistryRead)),
            (Method::GET, "/enrollmentGroups/g1", Some(RegistryRead)),
            (Method::PUT, "/enrollmentGroups/g1", Some(RegistryWrite)),
            (Method::DELETE, "/enrollmentGroups/g1", Some(RegistryWrite)),
            (Method::GET, "/registrations", Some(RegistryRead)),
            (Method::GET, "/registrations/r1", Some(RegistryRead)),
            (Method::DELETE, "/registrations/r1", Some(RegistryWrite)),
            (Method::POST, "/registrations/g1/query", Some(RegistryRead)),
            (Method::GET, "/health", None),
            (Method::GET, "/hubsim-emulator.json", None),
            (Method::GET, "/ca.pem", None),
            (Method::GET, "/$iothub/websocket", None),
            (Method::GET, "/", None),
            (Method::GET, "/index.html", None),
        ];
        for (m, p, want) in cases {
            assert_eq!(required(&m, p), want, "{m} {p}");
        }
        // Identities named like the routes that need less are still registry writes and reads.
        for (m, p, want) in [
            (Method::PUT, "/devices/close", RegistryWrite),
            (Method::GET, "/devices/close", RegistryRead),
            (Method::DELETE, "/devices/close", RegistryWrite),
            (Method::PUT, "/devices/commands", RegistryWrite),
            (Method::PUT, "/devices/demo/modules/close", RegistryWrite),
            (Method::DELETE, "/devices/demo/modules/commands", RegistryWrite),
            (Method::PUT, "/devices/query", RegistryWrite),
            (Method::DELETE, "/registrations/query", RegistryWrite),
            (Method::PUT, "/enrollments/query", RegistryWrite),
            (Method::POST, "/devices/x/close/close", RegistryWrite),
        ] {
            assert_eq!(required(&m, p), Some(want), "{m} {p}");
        }
    }

    #[test]
    fn origins_match_exactly_or_by_port_wildcard() {
        assert!(origin_matches("http://127.0.0.1:*", "http://127.0.0.1:4321"));
        assert!(origin_matches("http://127.0.0.1:*", "http://127.0.0.1"));
        assert!(!origin_matches("http://127.0.0.1:*", "http://127.0.0.1.evil.example:80"));
        assert!(!origin_matches("http://127.0.0.1:*", "https://127.0.0.1:1"));
        assert!(origin_matches("https://app.example/", "https://app.example"));
        assert!(!origin_matches("https://app.example", "https://app.example.evil"));
    }

    #[test]
    fn host_names_are_compared_without_port() {
        assert_eq!(host_only("LocalHost:8080"), "localhost");
        assert_eq!(host_only("[::1]:443"), "[::1]");
        assert_eq!(host_only("rebind.example"), "rebind.example");
        assert_eq!(host_only("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_only("[::1]"), "[::1]");
        // Nothing but a port may follow the bracket.
        assert_eq!(host_only("[::1]evil.example"), "[::1]evil.example");
        assert_eq!(host_only("[::1]:443x"), "[::1]:443x");
    }
}
