//! The HTTP side: the JSON service API (modelled on IoT Hub's REST API where one exists), the event and
//! connection-log streams (Server-Sent Events), MQTT over WebSocket at `/$iothub/websocket`, and the web app.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt as _;

mod dps;
mod guard;
pub mod iothub;
pub mod query;
mod rest;

pub use guard::{required, Access};

use crate::conn::{self, Transport};
use crate::hub::live::Recv;
use crate::hub::{error_json, Hub, SendC2d, ServiceError};
use crate::model::Device;

/// What the router needs.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    /// Accept MQTT over WebSocket here (TLS listener, or the HTTP listener bound to loopback).
    pub websocket: bool,
    /// Kind recorded in the connection log.
    pub transport: &'static str,
    /// Public facts for the web app (`/hubsim-emulator.json`).
    pub info: Value,
    /// The generated CA certificate (public), served at `/ca.pem` so clients can trust the emulator.
    pub ca_pem: Option<Arc<String>>,
    /// Extra hosts and origins allowed.
    pub access: Arc<Access>,
    /// `https` or `http`, for the same-origin check.
    pub scheme: &'static str,
    /// The port of the listener this router serves: tokens for `{host name}:{port}` are accepted on it, from
    /// service calls and WebSocket devices alike.
    pub port: u16,
}

/// Builds the router; `web_dir` is served for everything else.
pub fn router(state: AppState, web_dir: Option<PathBuf>) -> Router {
    let r = Router::new()
        .route(hubsim_proto::endpoint::WEBSOCKET_PATH, get(websocket))
        .route("/health", get(|| async { "ok" }))
        .route("/hubsim-emulator.json", get(info))
        .route("/ca.pem", get(ca_pem))
        .route("/devices", get(rest::list_devices).post(rest::bulk_registry))
        // The Node SDK's `Registry.list` asks for `/devices/` (its `devicePath('')`).
        .route("/devices/", get(rest::list_devices))
        .route("/devices-bulk", post(bulk_devices))
        .route(
            "/devices/{id}",
            get(get_device).put(rest::put_device).delete(rest::delete_device).post(rest::post_device),
        )
        .route("/devices/{id}/modules", get(rest::list_modules))
        .route(
            "/devices/{id}/modules/{module}",
            get(rest::get_module).put(rest::put_module).delete(rest::delete_module),
        )
        .route("/devices/{id}/commands", delete(rest::purge_commands))
        .route("/devices/{id}/disable", post(disable_device))
        .route("/devices/{id}/enable", post(enable_device))
        .route("/devices/{id}/close", post(close_device))
        .route("/devices/{id}/messages/devicebound", post(send_c2d).get(list_c2d))
        .route("/twins/{id}", get(rest::get_twin).patch(rest::patch_twin).put(rest::put_twin))
        .route("/twins/{id}/methods", post(rest::invoke_method))
        .route(
            "/twins/{id}/modules/{module}",
            get(rest::get_module_twin).patch(rest::patch_module_twin).put(rest::put_module_twin),
        )
        .route("/twins/{id}/modules/{module}/methods", post(rest::invoke_module_method))
        .route("/statistics/devices", get(rest::device_statistics))
        .route("/statistics/service", get(rest::service_statistics))
        .route("/events", get(events))
        .route("/events/stream", get(events_stream))
        .route("/connections", get(connections))
        .route("/connections/stream", get(connections_stream))
        .route("/feedback", get(feedback))
        .merge(dps::routes())
        .route_layer(axum::middleware::map_response(json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(state.clone());
    let r = match web_dir {
        Some(dir) if dir.is_dir() => {
            // The web app's files, except under the service API's prefixes: an unknown API path gets IoT Hub's
            // JSON 404 there, not the file server's empty answer; so does an API call for a file that is not there.
            let files = tower_http::services::ServeDir::new(dir);
            r.fallback(move |req: axum::extract::Request| {
                let files = files.clone();
                async move {
                    if is_api_path(req.method(), req.uri().path()) {
                        return no_such_endpoint(req.method(), req.uri().path());
                    }
                    let api_call =
                        looks_like_api_call(&req).then(|| (req.method().clone(), req.uri().path().to_owned()));
                    let res = match tower::ServiceExt::oneshot(files, req).await {
                        Ok(res) => res.into_response(),
                        Err(never) => match never {},
                    };
                    // The file server answers a method other than GET and HEAD 405, and a name longer than the
                    // file system takes (a segment over 255 bytes) 500: for an API call, neither is about a file.
                    let status = res.status();
                    let not_a_file = matches!(
                        status,
                        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::INTERNAL_SERVER_ERROR
                    );
                    match api_call {
                        Some((method, path)) if not_a_file => no_such_endpoint(&method, &path),
                        // A page: no file can have such a name, so it is not there.
                        None if status == StatusCode::INTERNAL_SERVER_ERROR => StatusCode::NOT_FOUND.into_response(),
                        _ => res,
                    }
                }
            })
        }
        _ => r.fallback(|req: axum::extract::Request| async move {
            if looks_like_api_call(&req) {
                return no_such_endpoint(req.method(), req.uri().path());
            }
            // A page a browser asked for.
            (StatusCode::NOT_FOUND, Json(error_json(404000, "no such endpoint (and no web app folder is served)")))
                .into_response()
        }),
    };
    let gate =
        guard::Gate { hub: state.hub.clone(), access: state.access.clone(), scheme: state.scheme, port: state.port };
    // Layers run outside-in: the gate checks Host (preflights too) and adds the anti-framing headers to every
    // answer, CORS answers preflights, and the gate's Origin and Authorization checks apply to the rest.
    r.layer(cors(&state.access)).layer(axum::middleware::from_fn_with_state(gate, guard::check))
}

/// An error answer the framework wrote as plain text or without a body (a body over the size limit, a body that
/// is not JSON or lacks its content type, a path parameter that does not parse, a method the route does not
/// have) gets IoT Hub's JSON error body like every other error of the API, keeping its status and headers
/// (`Allow`): the service SDKs and the CLI read the reason from `Message`.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    // Plain text, or nothing at all (a 405 has an empty body and no content type).
    let plain = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|c| c.starts_with("text/plain"));
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // The framework's texts are one line; anything longer is cut, not buffered whole.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is over {} bytes", MAX_REQUEST_BODY),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
        _ => text,
    };
    // IoT Hub answers a body it cannot read 400 ArgumentInvalid, never 422.
    let (status, code) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (status, 413001),
        StatusCode::UNPROCESSABLE_ENTITY => (StatusCode::BAD_REQUEST, 400004),
        _ => (status, u32::from(status.as_u16()) * 1000),
    };
    parts.status = status;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let json = Json(iothub::error_body(status.as_u16(), code, &message)).into_response();
    let (json_parts, json_body) = json.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

/// Largest request body the service API buffers, bytes (axum's default limit, 2 MiB: a bulk registry request
/// of 100 identities or a 128 KB method payload fits many times over).
pub const MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// Whether `path` is under one of the service API's prefixes: a path the gate asks a permission for (its one list
/// of them, [`guard::required`]), or the MQTT WebSocket's.
fn is_api_path(method: &axum::http::Method, path: &str) -> bool {
    guard::required(method, path).is_some() || path.trim_start_matches('/').split('/').next() == Some("$iothub")
}

/// Whether a request no route took is an API call rather than a page a browser asked for: a path under the
/// service API's prefixes ([`is_api_path`]), an `api-version` in the query (the official SDKs send it with every
/// call) or an `Authorization` header.
fn looks_like_api_call(req: &axum::extract::Request) -> bool {
    is_api_path(req.method(), req.uri().path())
        || req.headers().contains_key(axum::http::header::AUTHORIZATION)
        || req.uri().query().is_some_and(|q| {
            q.split('&').any(|p| p.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("api-version")))
        })
}

/// IoT Hub's 404 (`404000`, in the error body the rest of the API uses) for an API call to a route that does not
/// exist, naming its method and path; a C2D send to a module is told that IoT Hub sends C2D to devices only.
fn no_such_endpoint(method: &axum::http::Method, path: &str) -> Response {
    let shown = crate::hub::truncate(path, 256);
    let method = crate::hub::truncate(method.as_str(), 32);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let message = match segments.as_slice() {
        ["devices", device, "modules", _, "messages", c2d, ..] if c2d.eq_ignore_ascii_case("devicebound") => format!(
            "no such endpoint: {method} {shown} is not a route of the service API — IoT Hub does not send \
             cloud-to-device messages to modules, only to devices (POST /devices/{}/messages/devicebound)",
            crate::hub::truncate(device, 128)
        ),
        _ => format!("no such endpoint: {method} {shown} is not a route of the service API"),
    };
    (StatusCode::NOT_FOUND, Json(iothub::error_body(404, 404000, &message))).into_response()
}

/// Cross-origin reads are allowed only for the origins the user listed (`--allow-origin`); the server's own
/// origin needs no CORS. Browsers then refuse every other page's cross-origin calls before they are sent.
fn cors(access: &Access) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed = access.allowed_origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            let o = origin.to_str().unwrap_or("");
            allowed.iter().any(|a| guard::origin_matches(a, o))
        }))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::PATCH,
            axum::http::Method::DELETE,
        ])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            axum::http::header::IF_MATCH,
            axum::http::HeaderName::from_static("x-ms-continuation"),
            axum::http::HeaderName::from_static("x-ms-max-item-count"),
        ])
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        match self {
            ServiceError::Api { status, code, message } => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                Json(iothub::error_body(status, code, &message)),
            )
                .into_response(),
            ServiceError::Store(e) => {
                (StatusCode::INTERNAL_SERVER_ERROR, Json(iothub::error_body(500, 500001, &e.to_string())))
                    .into_response()
            }
        }
    }
}

type ApiResult = Result<Response, ServiceError>;

/// Largest WebSocket message and frame, bytes: an MQTT packet is at most IoT Hub's 256 KB plus headers.
pub const MAX_WS_MESSAGE: usize = 1024 * 1024;

/// A WebSocket's read buffer, bytes: tungstenite allocates it whole for every connection (128 KiB by default,
/// which made an idle WebSocket cost about 150 KB); a larger frame still arrives, in more reads.
pub const WS_READ_BUFFER: usize = 8 * 1024;

async fn websocket(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if !s.websocket {
        return (
            StatusCode::FORBIDDEN,
            "MQTT over plain WebSocket is only served on a loopback address; use the TLS WebSocket port",
        )
            .into_response();
    }
    // IoT Hub answers HTTP 400 to a handshake without the `mqtt` subprotocol (reference §1).
    let has_mqtt = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(hubsim_proto::endpoint::offers_mqtt_subprotocol);
    if !has_mqtt {
        return (StatusCode::BAD_REQUEST, "the WebSocket subprotocol 'mqtt' is required").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // A place among the connections that have not authenticated yet, before anything is buffered for it.
    let Some(place) = crate::listener::pre_auth_place(&s.hub, &remote).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections are waiting to authenticate; try again")
            .into_response();
    };
    let hub = s.hub.clone();
    let (kind, port) = (s.transport, s.port);
    ws.protocols([hubsim_proto::endpoint::WEBSOCKET_SUBPROTOCOL])
        // A frame is checked against the limit before it is buffered (tungstenite), not only the message.
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            let tracked = hub.tasks.clone();
            let transport = Transport::WebSocket(Box::new(socket));
            tracked.track_future(conn::serve(hub, transport, kind, port, remote.to_string(), Some(place)))
        })
}

async fn ca_pem(State(s): State<AppState>) -> Response {
    match &s.ca_pem {
        Some(pem) => {
            ([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], pem.as_str().to_owned()).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(error_json(404000, "the emulator uses a certificate you supplied; no CA is served")),
        )
            .into_response(),
    }
}

async fn info(State(s): State<AppState>) -> Json<Value> {
    Json(s.info.clone())
}

#[derive(Deserialize)]
struct Bulk {
    prefix: String,
    #[serde(default)]
    start: u64,
    count: u64,
}

/// Devices per bulk call: IoT Hub's bulk registry operations take at most 100 devices per call.
pub const MAX_BULK: u64 = 100;

/// hubsim extension for load tests: makes sure `{prefix}-{start} … {prefix}-{start+count-1}` exist (one
/// transaction, at most [`MAX_BULK`]) and returns their connection strings in order. Everything is validated
/// before a single id is built.
async fn bulk_devices(State(s): State<AppState>, Json(b): Json<Bulk>) -> ApiResult {
    if b.count == 0 || b.count > MAX_BULK {
        return Err(ServiceError::new(400, 400004, format!("count must be 1 to {MAX_BULK} (IoT Hub's bulk limit)")));
    }
    let last = b.start.checked_add(b.count - 1).ok_or_else(|| ServiceError::new(400, 400004, "start is too large"))?;
    // The longest id decides: the prefix plus '-' plus the largest index must be a valid device id.
    let longest = format!("{}-{last}", b.prefix);
    if !hubsim_proto::topic::is_valid_device_id(&longest) {
        return Err(ServiceError::new(
            400,
            400006,
            "prefix: the ids '{prefix}-{n}' must be valid device ids (1–128 of A–Z a–z 0–9 -.%_*?!(),:=@$')",
        ));
    }
    let devices = s.hub.ensure_devices(&b.prefix, b.start..=last).await?;
    let list: Vec<String> = devices.iter().map(|d| s.hub.connection_string(d)).collect();
    Ok(Json(list).into_response())
}

/// A route under `/devices/{id}` names a device: a module's registry key (`dev/mod`, sent as `dev%2Fmod`) is
/// not one (a module has its own routes, and no C2D queue: IoT Hub sends C2D messages to devices only).
pub(crate) fn device_only(id: &str) -> Result<(), ServiceError> {
    match id.contains('/') {
        true => Err(ServiceError::device_not_found(id)),
        false => Ok(()),
    }
}

async fn get_device(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    device_only(&id)?;
    let d = s.hub.get_device(&id).await?;
    Ok(Json(device_json(&s.hub, &d).await).into_response())
}

async fn disable_device(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    device_only(&id)?;
    let d = s.hub.set_status(&id, false).await?;
    Ok(Json(device_json(&s.hub, &d).await).into_response())
}

async fn enable_device(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    device_only(&id)?;
    let d = s.hub.set_status(&id, true).await?;
    Ok(Json(device_json(&s.hub, &d).await).into_response())
}

async fn close_device(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    device_only(&id)?;
    s.hub.get_device(&id).await?;
    let closed = s.hub.close_connection(
        &id,
        hubsim_proto::hub::CloseReason::ClosedByService("closed through the service API".into()),
    );
    Ok(Json(json!({ "closed": closed })).into_response())
}

async fn send_c2d(State(s): State<AppState>, Path(id): Path<String>, Json(req): Json<SendC2d>) -> ApiResult {
    device_only(&id)?;
    let m = s.hub.send_c2d(&id, req).await?;
    Ok((StatusCode::CREATED, Json(json!({ "messageId": m.message_id, "sequence": m.seq }))).into_response())
}

async fn list_c2d(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    device_only(&id)?;
    s.hub.get_device(&id).await?;
    Ok(Json(s.hub.store.c2d_queue(&id).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PageQuery {
    after: u64,
    limit: Option<usize>,
    device: Option<String>,
}

/// Bytes of event bodies in one page of `GET /events`, at most (4 MiB; at least one event is always returned).
/// Bodies of up to 256 KB each are sent twice (text and base64), so 100 of them would otherwise build a page of
/// some 60 MB in memory per request.
pub const MAX_EVENT_PAGE_BYTES: usize = 4 * 1024 * 1024;

async fn events(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult {
    let mut page = s.hub.store.events(q.after, q.limit.unwrap_or(100).min(1000), q.device.as_deref()).await?;
    let mut bytes = 0usize;
    let keep = page
        .iter()
        .take_while(|e| {
            bytes += e.body_base64.len() * 2;
            bytes <= MAX_EVENT_PAGE_BYTES
        })
        .count()
        .max(1);
    page.truncate(keep);
    Ok(Json(page).into_response())
}

async fn connections(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult {
    Ok(Json(s.hub.store.connections(q.after, q.limit.unwrap_or(100).min(1000), q.device.as_deref()).await?)
        .into_response())
}

async fn feedback(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult {
    Ok(Json(s.hub.store.feedback(q.after, q.limit.unwrap_or(100).min(1000)).await?).into_response())
}

fn sse_record<T: serde::Serialize>(rec: &T) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().json_data(rec).unwrap_or_else(|_| SseEvent::default()))
}

/// A slow reader skipped records; say so rather than silently losing them.
fn sse_lagged(n: u64) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event("lagged").data(n.to_string()))
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> impl IntoResponse {
    // A comment every 10 s keeps an idle stream inside the listener's idle deadline (20 s).
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// Live streams (`/events/stream`, `/connections/stream`) open at a time, at most: each one that stops reading
/// holds one serialized record (an event of up to 256 KB is about 600 KB as JSON), and each costs the
/// serialization of every record.
pub const MAX_LIVE_STREAMS: usize = 64;

/// A place among the live streams, or IoT Hub's 503 when all are taken.
fn live_stream_place(s: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ServiceError> {
    s.hub.live_streams.clone().try_acquire_owned().map_err(|_| {
        ServiceError::new(
            503,
            503001,
            format!("{MAX_LIVE_STREAMS} live streams are open, the most the emulator serves at once; close one"),
        )
    })
}

async fn events_stream(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult {
    let device = q.device;
    let place = live_stream_place(&s)?;
    // The hub's live feed is bounded in records and bytes (crate::hub::LIVE_EVENTS_MAX_BYTES).
    let records =
        futures_util::stream::unfold(s.hub.events.subscribe(), |mut l| async move { l.recv().await.map(|r| (r, l)) });
    Ok(sse(records.filter_map(move |r| {
        let _place = &place;
        match r {
            Recv::Record(e) if device.as_ref().is_none_or(|d| *d == e.device_id) => Some(sse_record(&*e)),
            Recv::Record(_) => None,
            Recv::Lagged(n) => Some(sse_lagged(n)),
        }
    }))
    .into_response())
}

async fn connections_stream(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult {
    let device = q.device;
    let place = live_stream_place(&s)?;
    Ok(sse(BroadcastStream::new(s.hub.connlog.subscribe()).filter_map(move |r| {
        let _place = &place;
        match r {
            Ok(e) if device.as_ref().is_none_or(|d| e.device_id.as_deref() == Some(d.as_str())) => Some(sse_record(&e)),
            Ok(_) => None,
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => Some(sse_lagged(n)),
        }
    }))
    .into_response())
}

/// JSON of a device for the API: IoT Hub's identity with hubsim's `connectionString`.
pub async fn device_json(hub: &Hub, d: &Device) -> Value {
    rest::identity(hub, d).await
}
