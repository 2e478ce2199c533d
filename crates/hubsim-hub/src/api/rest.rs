//! IoT Hub's data-plane REST routes (Devices, Modules, Twin, Service and Statistics groups of the REST reference)
//! as the official service SDKs call them: `?api-version=` is accepted with any value, bodies and answers have
//! IoT Hub's shapes ([`super::iothub`]), writes honour `If-Match`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

use super::iothub::{identity_json, parse_body, twin_json, IfMatch, Live};
use super::{ApiResult, AppState};
use crate::hub::{BulkMode, BulkOp, Hub, IdentitySpec, ServiceError};
use crate::model::Device;

fn if_match(h: &HeaderMap) -> IfMatch {
    IfMatch::parse(h.get(axum::http::header::IF_MATCH).and_then(|v| v.to_str().ok()))
}

/// The registry key of a module; both ids must be valid ids (no `/`), so a percent-encoded `/` in a path
/// cannot reach another identity.
fn module_key(id: &str, module: &str) -> Result<String, ServiceError> {
    plain_id(id)?;
    plain_id(module)?;
    Ok(hubsim_proto::DeviceIdentity::module(id, module).client_id())
}

/// A device id from a path: a module's registry key (`dev/mod`) is not a device id.
fn plain_id(id: &str) -> Result<&str, ServiceError> {
    if id.contains('/') {
        return Err(ServiceError::new(
            400,
            400006,
            format!("'{}' is not a valid id ('/' is not allowed)", crate::hub::truncate(id, 128)),
        ));
    }
    Ok(id)
}

async fn live(hub: &Hub, d: &Device) -> Live {
    let c2d_count = hub.store.c2d_queue(&d.device_id).await.map(|q| q.len()).unwrap_or(0);
    Live { connected: hub.is_connected(&d.device_id), c2d_count, presence: hub.presence(&d.device_id) }
}

/// The identity as IoT Hub shows it, plus hubsim's `connectionString` (the CLI and the web app print it) and
/// `modelId` (the Plug and Play model the device last announced; IoT Hub shows it on the twin).
pub async fn identity(hub: &Hub, d: &Device) -> Value {
    let mut v = identity_json(d, live(hub, d).await);
    v["connectionString"] = hub.connection_string(d).into();
    add_model_id(hub, &d.device_id, &mut v).await;
    v
}

async fn add_model_id(hub: &Hub, id: &str, v: &mut Value) {
    if let Ok(Some(model)) = hub.store.twin(id).await.map(|t| t.model_id) {
        v["modelId"] = model.into();
    }
}

/// The fields of a device or module body that a create or replace uses, for the identity `key` (`device` or
/// `device/module`). As IoT Hub, the body's `deviceId` (and `moduleId`) must name the identity of the URL and the
/// fields have their types (the keys' contents are the registry's check, `IdentitySpec::check_keys`).
fn spec(body: &Value, key: &str) -> Result<IdentitySpec, ServiceError> {
    let bad = |m: String| ServiceError::new(400, 400004, m);
    if !(body.is_object() || body.is_null()) {
        return Err(bad("the body must be a JSON object (a device or module identity)".into()));
    }
    let (device, module) = key.split_once('/').map_or((key, None), |(d, m)| (d, Some(m)));
    for (field, want) in [("deviceId", Some(device)), ("moduleId", module)] {
        match (body.get(field), want) {
            (None | Some(Value::Null), _) => {}
            (Some(Value::String(v)), Some(w)) if v == w => {}
            (Some(v), Some(w)) => {
                let v = v.as_str().map_or_else(|| v.to_string(), |s| crate::hub::truncate(s, 128));
                return Err(bad(format!("the body's {field} '{v}' does not match the identity of the URL, '{w}'")));
            }
            (Some(_), None) => return Err(bad(format!("a device's body has no {field}"))),
        }
    }
    let types = [
        ("/status", "a string"),
        ("/statusReason", "a string"),
        ("/etag", "a string"),
        ("/authentication", "an object"),
        ("/capabilities", "an object"),
        ("/capabilities/iotEdge", "true or false"),
    ];
    for (pointer, kind) in types {
        let ok = match body.pointer(pointer) {
            None | Some(Value::Null) => true,
            Some(v) => match kind {
                "a string" => v.is_string(),
                "an object" => v.is_object(),
                _ => v.is_boolean(),
            },
        };
        if !ok {
            return Err(bad(format!("{} must be {kind}", &pointer[1..])));
        }
    }
    let mut keys = [None, None];
    for (slot, name) in keys.iter_mut().zip(["primaryKey", "secondaryKey"]) {
        let k = match body.pointer(&format!("/authentication/symmetricKey/{name}")) {
            None | Some(Value::Null) => continue,
            Some(Value::String(k)) if k.is_empty() => continue,
            Some(Value::String(k)) => k,
            Some(_) => return Err(bad(format!("{name} must be a string"))),
        };
        *slot = Some(k.clone());
    }
    let [primary, secondary] = keys;
    let kind = body.pointer("/authentication/type").and_then(Value::as_str).unwrap_or("sas");
    if !kind.eq_ignore_ascii_case("sas") {
        return Err(ServiceError::new(
            400,
            400004,
            format!("authentication type '{kind}' is not supported by hubsim (only 'sas', symmetric keys)"),
        ));
    }
    let status = body.get("status").and_then(Value::as_str).unwrap_or("enabled");
    let enabled = match status.to_ascii_lowercase().as_str() {
        "enabled" => true,
        "disabled" => false,
        _ => {
            return Err(ServiceError::new(
                400,
                400004,
                format!("status must be 'enabled' or 'disabled', not '{status}'"),
            ))
        }
    };
    Ok(IdentitySpec {
        primary,
        secondary,
        enabled,
        status_reason: body.get("statusReason").and_then(Value::as_str).map(str::to_owned),
        iot_edge: body.pointer("/capabilities/iotEdge").and_then(Value::as_bool).unwrap_or(false),
        managed_by: body.get("managedBy").and_then(Value::as_str).map(str::to_owned),
    })
}

/// `PUT /devices/{id}`: without `If-Match` a create (409 if it exists), with one a replace.
pub async fn put_device(State(s): State<AppState>, Path(id): Path<String>, h: HeaderMap, body: Bytes) -> ApiResult {
    plain_id(&id)?;
    put_identity(&s, id, h, body).await
}

/// `PUT /devices/{id}/modules/{m}`: likewise for a module identity.
pub async fn put_module(
    State(s): State<AppState>,
    Path((id, module)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult {
    put_identity(&s, module_key(&id, &module)?, h, body).await
}

async fn put_identity(s: &AppState, key: String, h: HeaderMap, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let spec = spec(&body, &key)?;
    let d = if h.contains_key(axum::http::header::IF_MATCH) {
        s.hub.replace_identity(&key, if_match(&h), spec).await?
    } else {
        s.hub.create_identity(&key, spec).await?
    };
    Ok(Json(identity(&s.hub, &d).await).into_response())
}

/// `DELETE /devices/{id}` (with its modules) and `DELETE /devices/{id}/modules/{m}`, under `If-Match`.
pub async fn delete_device(State(s): State<AppState>, Path(id): Path<String>, h: HeaderMap) -> ApiResult {
    s.hub.delete_identity(plain_id(&id)?, if_match(&h)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_module(
    State(s): State<AppState>,
    Path((id, module)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult {
    s.hub.delete_identity(&module_key(&id, &module)?, if_match(&h)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn get_module(State(s): State<AppState>, Path((id, module)): Path<(String, String)>) -> ApiResult {
    let d = s.hub.get_identity(&module_key(&id, &module)?).await?;
    Ok(Json(identity(&s.hub, &d).await).into_response())
}

/// `GET /devices/{id}/modules`.
pub async fn list_modules(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    super::device_only(&id)?;
    let mut out = Vec::new();
    for d in s.hub.modules(&id).await? {
        out.push(identity(&s.hub, &d).await);
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    top: Option<usize>,
}

/// `GET /devices?top=n`: device identities (not modules), at most `top` (1–1000; anything else is 1000).
pub async fn list_devices(State(s): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult {
    let top = q.top.filter(|t| (1..=1000).contains(t)).unwrap_or(1000);
    let list: Vec<Value> = s
        .hub
        .store
        .devices_with_queues()
        .await?
        .iter()
        .filter(|(d, _)| !d.device_id.contains('/'))
        .take(top)
        .map(|(d, n)| {
            let live = Live {
                connected: s.hub.is_connected(&d.device_id),
                c2d_count: *n,
                presence: s.hub.presence(&d.device_id),
            };
            let mut v = identity_json(d, live);
            v["connectionString"] = s.hub.connection_string(d).into();
            v
        })
        .collect();
    let mut list = list;
    for v in &mut list {
        let id = v["deviceId"].as_str().unwrap_or("").to_owned();
        add_model_id(&s.hub, &id, v).await;
    }
    Ok(Json(list).into_response())
}

/// `POST /devices`: IoT Hub's bulk registry operation (`[{id, importMode, …}]`, as the SDKs' `addDevices`,
/// `updateDevices`, `removeDevices` and `bulk_create_or_update_devices` send). 200 when every entry succeeded,
/// else 400 with the failed entries, both as `{isSuccessful, errors, warnings}`.
pub async fn bulk_registry(State(s): State<AppState>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let Value::Array(items) = body else {
        return Err(ServiceError::new(400, 400004, "expected a JSON array of devices with id and importMode"));
    };
    if items.is_empty() || items.len() > 100 {
        return Err(ServiceError::new(
            400,
            400004,
            format!("a bulk registry operation takes 1 to 100 devices, not {}", items.len()),
        ));
    }
    let mut ops = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item
            .get("id")
            .or_else(|| item.get("deviceId"))
            .and_then(Value::as_str)
            .ok_or_else(|| ServiceError::new(400, 400004, format!("entry {i} has no id")))?;
        if item.get("moduleId").is_some_and(|m| !m.is_null()) {
            return Err(ServiceError::new(
                400,
                400004,
                "bulk operations on module identities are not supported by hubsim",
            ));
        }
        let mode_text = item.get("importMode").and_then(Value::as_str).unwrap_or("createOrUpdate");
        let mode = BulkMode::parse(mode_text).ok_or_else(|| {
            ServiceError::new(400, 400004, format!("entry {i}: importMode '{}' is not one of create, createOrUpdate, update, updateIfMatchETag, delete, deleteIfMatchETag", crate::hub::truncate(mode_text, 64)))
        })?;
        ops.push(BulkOp {
            id: id.to_owned(),
            mode,
            etag: item.get("eTag").or_else(|| item.get("etag")).and_then(Value::as_str).map(str::to_owned),
            spec: spec(item, id)?,
        });
    }
    let errors = s.hub.bulk_registry(ops).await?;
    let ok = errors.is_empty();
    let body = json!({ "isSuccessful": ok, "errors": errors, "warnings": [] });
    Ok((if ok { StatusCode::OK } else { StatusCode::BAD_REQUEST }, Json(body)).into_response())
}

/// `DELETE /devices/{id}/commands`: purges the C2D queue.
pub async fn purge_commands(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    super::device_only(&id)?;
    let n = s.hub.purge_c2d(&id).await?;
    Ok(Json(json!({ "totalMessagesPurged": n, "deviceId": id, "moduleId": null })).into_response())
}

async fn twin_of(hub: &Hub, d: &Device, t: &crate::model::Twin) -> Value {
    twin_json(d, t, live(hub, d).await)
}

/// `GET /twins/{id}` and `GET /twins/{id}/modules/{m}`.
pub async fn get_twin(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    twin_answer(&s, plain_id(&id)?).await
}

pub async fn get_module_twin(State(s): State<AppState>, Path((id, module)): Path<(String, String)>) -> ApiResult {
    twin_answer(&s, &module_key(&id, &module)?).await
}

async fn twin_answer(s: &AppState, key: &str) -> ApiResult {
    let d = s.hub.get_identity(key).await?;
    let t = s.hub.store.twin(key).await?;
    Ok(Json(twin_of(&s.hub, &d, &t).await).into_response())
}

/// `PATCH /twins/{id}` (merge) and `PUT /twins/{id}` (replace) of tags and desired properties.
pub async fn patch_twin(State(s): State<AppState>, Path(id): Path<String>, h: HeaderMap, body: Bytes) -> ApiResult {
    write_twin(&s, plain_id(&id)?, &h, &body, false).await
}

pub async fn put_twin(State(s): State<AppState>, Path(id): Path<String>, h: HeaderMap, body: Bytes) -> ApiResult {
    write_twin(&s, plain_id(&id)?, &h, &body, true).await
}

pub async fn patch_module_twin(
    State(s): State<AppState>,
    Path((id, module)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult {
    write_twin(&s, &module_key(&id, &module)?, &h, &body, false).await
}

pub async fn put_module_twin(
    State(s): State<AppState>,
    Path((id, module)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult {
    write_twin(&s, &module_key(&id, &module)?, &h, &body, true).await
}

async fn write_twin(s: &AppState, key: &str, h: &HeaderMap, body: &[u8], replace: bool) -> ApiResult {
    let body = parse_body(body)?;
    if !body.is_object() {
        return Err(ServiceError::new(
            400,
            400004,
            "expected a twin: {\"tags\": {…}, \"properties\": {\"desired\": {…}}}",
        ));
    }
    let (d, t) = s.hub.write_twin(key, if_match(h), &body, replace).await?;
    Ok(Json(twin_of(&s.hub, &d, &t).await).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvokeMethod {
    method_name: String,
    #[serde(default)]
    payload: Value,
    response_timeout_in_seconds: Option<u64>,
    /// How long the device may take to come online (IoT Hub: default 0, at most 300).
    connect_timeout_in_seconds: Option<u64>,
}

/// `POST /twins/{id}/methods` and `POST /twins/{id}/modules/{m}/methods`: `{status, payload}`.
pub async fn invoke_method(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    invoke(&s, plain_id(&id)?, &body).await
}

pub async fn invoke_module_method(
    State(s): State<AppState>,
    Path((id, module)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let key = module_key(&id, &module)?;
    s.hub.get_identity(&key).await?;
    invoke(&s, &key, &body).await
}

async fn invoke(s: &AppState, key: &str, body: &[u8]) -> ApiResult {
    let req: InvokeMethod = serde_json::from_value(parse_body(body)?).map_err(|e| {
        ServiceError::new(
            400,
            400004,
            format!("expected {{\"methodName\", \"payload\", \"responseTimeoutInSeconds\", \"connectTimeoutInSeconds\"}}: {e}"),
        )
    })?;
    let timeout = Duration::from_secs(req.response_timeout_in_seconds.unwrap_or(30));
    let connect = Duration::from_secs(req.connect_timeout_in_seconds.unwrap_or(0));
    let (status, payload) = s.hub.invoke_method_waiting(key, &req.method_name, req.payload, timeout, connect).await?;
    Ok(Json(json!({ "status": status, "payload": payload })).into_response())
}

/// `GET /statistics/devices`.
pub async fn device_statistics(State(s): State<AppState>) -> ApiResult {
    let devices = s.hub.store.devices().await?;
    let devices: Vec<&Device> = devices.iter().filter(|d| !d.device_id.contains('/')).collect();
    let enabled = devices.iter().filter(|d| d.enabled()).count();
    Ok(Json(json!({
        "totalDeviceCount": devices.len(),
        "enabledDeviceCount": enabled,
        "disabledDeviceCount": devices.len() - enabled,
    }))
    .into_response())
}

/// `GET /statistics/service`.
pub async fn service_statistics(State(s): State<AppState>) -> ApiResult {
    let devices = s.hub.store.devices().await?;
    let connected = devices.iter().filter(|d| !d.device_id.contains('/') && s.hub.is_connected(&d.device_id)).count();
    Ok(Json(json!({ "connectedDeviceCount": connected })).into_response())
}

/// `POST /devices/{id}` is only `POST /devices/query`; a device called `query` keeps GET, PUT and DELETE.
pub async fn post_device(s: State<AppState>, Path(id): Path<String>, h: HeaderMap, body: Bytes) -> ApiResult {
    if id != "query" {
        return Err(ServiceError::new(405, 405000, format!("POST is not defined on /devices/{id}")));
    }
    super::query::run_query(s, h, body).await
}
