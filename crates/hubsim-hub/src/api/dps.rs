//! The local DPS's service API, modelled on the DPS service REST API: individual enrollments
//! (`/enrollments/{registrationId}`), enrollment groups (`/enrollmentGroups/{id}`) and registration states
//! (`/registrations/{registrationId}`, `POST /registrations/{groupId}/query`), with `PUT` (create or replace, `If-Match` honoured), `GET`, `DELETE`, the
//! `POST …/query` lists of the real API and plain `GET` lists. Behind the same gate as the rest of the API
//! (registry read/write permissions, [`super::required`]).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::{ApiResult, AppState};
use crate::hub::ServiceError;

/// The DPS routes, merged into the service API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/enrollments", get(list_enrollments))
        .route("/enrollments/query", post(list_enrollments))
        .route("/enrollments/{id}", get(get_enrollment).put(put_enrollment).delete(delete_enrollment))
        .route("/enrollmentGroups", get(list_groups))
        .route("/enrollmentGroups/query", post(list_groups))
        .route("/enrollmentGroups/{id}", get(get_group).put(put_group).delete(delete_group))
        .route("/registrations", get(list_registrations))
        .route("/registrations/{id}", get(get_registration).delete(delete_registration))
        .route("/registrations/{id}/query", post(group_registrations))
}

fn if_match(h: &HeaderMap) -> Option<String> {
    h.get(axum::http::header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The body as JSON, or DPS's 400 with the parser's reason.
fn body_json(body: &[u8]) -> Result<Value, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| ServiceError::new(400, 400004, format!("the body is not JSON: {e}")))
}

fn json<T: serde::Serialize>(v: &T) -> ApiResult {
    Ok(Json(serde_json::to_value(v).unwrap_or(Value::Null)).into_response())
}

/// An individual enrollment with its `registrationState`, as DPS shows it.
async fn enrollment_json(s: &AppState, e: &crate::hub::dps::IndividualEnrollment) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let (Value::Object(m), Ok(r)) = (&mut v, s.hub.registration(&e.registration_id).await) {
        if r.enrollment_group_id.is_none() {
            m.insert("registrationState".into(), serde_json::to_value(&r).unwrap_or(Value::Null));
        }
    }
    v
}

async fn list_enrollments(State(s): State<AppState>) -> ApiResult {
    let mut out = Vec::new();
    for e in s.hub.enrollments().await? {
        out.push(enrollment_json(&s, &e).await);
    }
    Ok(Json(out).into_response())
}

async fn get_enrollment(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let e = s.hub.get_enrollment(&id).await?;
    Ok(Json(enrollment_json(&s, &e).await).into_response())
}

async fn put_enrollment(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let e = s.hub.put_enrollment(&id, &body_json(&body)?, if_match(&headers)).await?;
    json(&e)
}

async fn delete_enrollment(State(s): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    s.hub.delete_enrollment(&id, if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_groups(State(s): State<AppState>) -> ApiResult {
    json(&s.hub.enrollment_groups().await?)
}

async fn get_group(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    json(&s.hub.get_enrollment_group(&id).await?)
}

async fn put_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    json(&s.hub.put_enrollment_group(&id, &body_json(&body)?, if_match(&headers)).await?)
}

async fn delete_group(State(s): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    s.hub.delete_enrollment_group(&id, if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_registrations(State(s): State<AppState>) -> ApiResult {
    json(&s.hub.registrations().await?)
}

/// `POST /registrations/{groupId}/query`: the registration states of an enrollment group (as in DPS).
async fn group_registrations(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    s.hub.get_enrollment_group(&id).await?;
    let list: Vec<_> =
        s.hub.registrations().await?.into_iter().filter(|r| r.enrollment_group_id.as_deref() == Some(&id)).collect();
    json(&list)
}

async fn get_registration(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    json(&s.hub.registration(&id).await?)
}

async fn delete_registration(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    s.hub.delete_registration(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
