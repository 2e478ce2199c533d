//! `POST /devices/query`: one pass over the registry in id order ([`Store::scan_registry`]), each device judged
//! as it is read and dropped unless it belongs to the page being returned. A query's memory is one page (and one
//! twin being judged), whatever the size of the registry: `COUNT()` keeps a number, and a page keeps its twins
//! already serialized. The WHERE clause reads its values through [`twin_field`], so a device it rejects costs
//! its identity record (and its stored twin when the clause reads `tags` or `properties`), never the full twin
//! document with its `$metadata`, which was most of a query's time and memory.
//!
//! Paging as IoT Hub's: `x-ms-max-item-count` twins per page ([`QUERY_PAGE`] by default, at most
//! [`QUERY_PAGE_MAX`]), fewer when they pass [`QUERY_PAGE_BYTES`], and `x-ms-continuation` when more follow; the
//! token names the last device returned, so the next page starts after it without reading the ones before.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::iothub::{parse_body, twin_field, twin_json, Live, TwinParts};
use super::{ApiResult, AppState};
use crate::hub::query::{self, Document, Query, Select};
use crate::hub::{Hub, ServiceError};
use crate::model::{Device, Twin, TwinHead, TwinTree};
use crate::store::{RegistryEntry, StoreError};
use crate::timefmt::unix_ms;

/// Twins per page by default (IoT Hub: 100).
pub const QUERY_PAGE: usize = 100;
/// Most twins per page (`x-ms-max-item-count`), hubsim's bound.
pub const QUERY_PAGE_MAX: usize = 1000;
/// Bytes of twins in one page, at most (4 MiB; at least one twin is always returned): a twin with 32 KB of small
/// desired and reported properties is some 600 KB with its `$metadata`, so 1 000 of them would be a page of
/// 600 MB held in memory per request.
pub const QUERY_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Queries running at once, at most; another one is answered 429 `ThrottlingException` (IoT Hub's answer to a
/// client over its hub's query rate), which the service SDKs retry after a pause. Each query holds one thread of
/// the blocking pool while it reads the registry, so this bounds the CPU that registry scans take from devices.
pub const MAX_CONCURRENT_QUERIES: usize = 4;

/// What the query answers.
enum Answer {
    Count(String, u64),
    /// A JSON array of twins, serialized, and the continuation token when more follow.
    Twins(Vec<u8>, Option<String>),
}

/// The continuation token of a page that ended at `last`.
fn token(last: &str) -> String {
    STANDARD.encode(format!("after:{last}"))
}

/// The device id a continuation token names (400 for anything this hub did not give out).
fn after(token: &str) -> Result<String, ServiceError> {
    STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.strip_prefix("after:").map(str::to_owned))
        .filter(|id| hubsim_proto::topic::is_valid_device_id(id))
        .ok_or_else(|| ServiceError::new(400, 400004, "x-ms-continuation is not a token this hub gave out"))
}

/// `POST /devices/query` with `{"query": "SELECT …"}`: twins (or `[{alias: n}]` for `COUNT()`), paged by
/// `x-ms-max-item-count` and `x-ms-continuation`. Errors: 400 for a query outside the supported subset
/// ([`query::parse`]) or a token this hub did not give out; 429 when [`MAX_CONCURRENT_QUERIES`] are running.
pub async fn run_query(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let text = body
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| ServiceError::new(400, 400004, "expected {\"query\": \"SELECT * FROM devices WHERE …\"}"))?;
    let q = query::parse(text).map_err(|e| ServiceError::new(400, 400004, e.to_string()))?;
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let page = header("x-ms-max-item-count")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(QUERY_PAGE)
        .min(QUERY_PAGE_MAX);
    let start = header("x-ms-continuation").filter(|c| !c.is_empty()).map(after).transpose()?;
    let _place = s.hub.queries.clone().try_acquire_owned().map_err(|_| {
        ServiceError::new(
            429,
            429001,
            format!("{MAX_CONCURRENT_QUERIES} queries are running, the most the emulator runs at once; retry shortly"),
        )
    })?;
    // A caller that goes away stops the scan at the next device (the scan runs on the blocking pool).
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let (items, item_type, next) = match scan(s.hub.clone(), q, page, start, stop).await? {
        Answer::Count(alias, n) => {
            (serde_json::to_vec(&[serde_json::json!({ alias: n })]).unwrap_or_default(), "Raw", None)
        }
        Answer::Twins(body, next) => (body, "Twin", next),
    };
    let mut resp = ([(axum::http::header::CONTENT_TYPE, "application/json")], items).into_response();
    resp.headers_mut().insert("x-ms-item-type", HeaderValue::from_static(item_type));
    if let Some(next) = next {
        if let Ok(v) = HeaderValue::from_str(&next) {
            resp.headers_mut().insert("x-ms-continuation", v);
        }
    }
    Ok(resp)
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a scan keeps: the page so far (or the count), and where it ended.
struct Scan {
    hub: Arc<Hub>,
    query: Query,
    page: usize,
    now_ms: u64,
    stop: Arc<AtomicBool>,
    count: u64,
    body: Vec<u8>,
    items: usize,
    last: Option<String>,
    more: bool,
}

async fn scan(
    hub: Arc<Hub>,
    query: Query,
    page: usize,
    after: Option<String>,
    stop: Arc<AtomicBool>,
) -> Result<Answer, StoreError> {
    let count = matches!(query.select, Select::Count(_));
    let after = if count { None } else { after };
    let state = Scan {
        hub: hub.clone(),
        query,
        page,
        now_ms: unix_ms(),
        stop,
        count: 0,
        body: b"[".to_vec(),
        items: 0,
        last: None,
        more: false,
    };
    let mut s = hub.store.scan_registry(after, state, Scan::visit).await?;
    Ok(match s.query.select {
        Select::Count(alias) => Answer::Count(alias, s.count),
        Select::All => {
            s.body.push(b']');
            let next = if s.more { s.last.as_deref().map(token) } else { None };
            Answer::Twins(s.body, next)
        }
    })
}

impl Scan {
    fn visit(&mut self, entry: RegistryEntry<'_>) -> Result<ControlFlow<()>, StoreError> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(ControlFlow::Break(()));
        }
        // Module twins are `FROM devices.modules`, which is not supported.
        if entry.device.device_id.contains('/') {
            return Ok(ControlFlow::Continue(()));
        }
        let candidate = Candidate::new(&entry, &self.hub, self.now_ms);
        if !self.query.selects_in(&candidate)? {
            return Ok(ControlFlow::Continue(()));
        }
        if matches!(self.query.select, Select::Count(_)) {
            self.count += 1;
            return Ok(ControlFlow::Continue(()));
        }
        // A match past a full page: only tells that a continuation token is due.
        if self.items >= self.page || self.body.len() >= QUERY_PAGE_BYTES {
            self.more = true;
            return Ok(ControlFlow::Break(()));
        }
        let doc = twin_json(&entry.device, candidate.twin()?, candidate.live()?.clone());
        if self.items > 0 {
            self.body.push(b',');
        }
        serde_json::to_writer(&mut self.body, &doc).map_err(|e| StoreError::Record(e.to_string()))?;
        self.items += 1;
        self.last = Some(entry.device.device_id.clone());
        Ok(ControlFlow::Continue(()))
    }
}

/// A device being judged: each part of its twin, and its live state, is read on first use.
struct Candidate<'a> {
    entry: &'a RegistryEntry<'a>,
    hub: &'a Hub,
    now_ms: u64,
    live: OnceCell<Live>,
    head: OnceCell<TwinHead>,
    trees: [OnceCell<Value>; 3],
    twin: OnceCell<Twin>,
}

impl<'a> Candidate<'a> {
    fn new(entry: &'a RegistryEntry<'a>, hub: &'a Hub, now_ms: u64) -> Self {
        Candidate {
            entry,
            hub,
            now_ms,
            live: OnceCell::new(),
            head: OnceCell::new(),
            trees: Default::default(),
            twin: OnceCell::new(),
        }
    }
}

/// `cell`'s value, computed by `f` the first time (`OnceCell::get_or_try_init` is not stable).
fn cached<T>(cell: &OnceCell<T>, f: impl FnOnce() -> Result<T, StoreError>) -> Result<&T, StoreError> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = f()?;
    Ok(cell.get_or_init(|| v))
}

impl TwinParts for Candidate<'_> {
    fn device(&self) -> &Device {
        &self.entry.device
    }
    fn live(&self) -> Result<&Live, StoreError> {
        cached(&self.live, || {
            let id = &self.entry.device.device_id;
            Ok(Live {
                connected: self.hub.is_connected(id),
                c2d_count: self.entry.c2d_count(self.now_ms)?,
                presence: self.hub.presence(id),
            })
        })
    }
    fn head(&self) -> Result<&TwinHead, StoreError> {
        match self.twin.get() {
            Some(t) => cached(&self.head, || Ok(t.head())),
            None => cached(&self.head, || self.entry.twin_head()),
        }
    }
    fn tree(&self, which: TwinTree) -> Result<&Value, StoreError> {
        if let Some(t) = self.twin.get() {
            return Ok(t.tree(which));
        }
        cached(&self.trees[which as usize], || self.entry.twin_tree(which))
    }
    fn twin(&self) -> Result<&Twin, StoreError> {
        cached(&self.twin, || self.entry.twin())
    }
}

impl Document for Candidate<'_> {
    type Error = StoreError;
    fn value(&self, path: &[String]) -> Result<Option<Cow<'_, Value>>, StoreError> {
        twin_field(self, path)
    }
}
