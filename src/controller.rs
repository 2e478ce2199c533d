//! The connection manager: turns settings into a connection, keeps it alive (token renewal, reconnect with
//! backoff), answers direct methods, and feeds everything that happens into the reducer.
//!
//! It owns the one [`Driver`] of the page. The driver's `DeviceSession` survives reconnects, so telemetry that
//! was not acknowledged is re-sent after a reconnect or a token renewal instead of being lost.

use gloo::timers::callback::{Interval, Timeout};
use hubsim_proto::conn_str::{ConnectionString, Credential};
use hubsim_proto::device::{ConnectOptions, DeviceConfig, Event, LostReason, RequestKind, Telemetry, TelemetryQos};
use hubsim_proto::property_bag::{PropertyBag, SystemProperty};
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::topic::{DeviceIdentity, DeviceTopic, TopicFilter};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;
use yew::prelude::*;

use crate::driver::{Driver, DriverEvent};
use crate::settings::Settings;
use crate::state::{Action, AppState, ConnStatus, InboxItem, MethodAnswer, MethodCall, Repeat};
use crate::util;

/// A field the user must fix, with the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// What to connect to, derived from valid settings.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cs: ConnectionString,
    pub url: String,
}

/// Checks the connect form; every problem is reported against its field before any connection attempt.
pub fn plan(s: &Settings) -> Result<Plan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let err = |field, message: String| FieldError { field, message };
    let cs = if !s.connection_string.trim().is_empty() {
        match ConnectionString::parse(&s.connection_string) {
            Ok(cs) => Some(cs),
            Err(e) => {
                errors.push(err("connection_string", e.to_string()));
                None
            }
        }
    } else {
        if s.host.trim().is_empty() {
            errors.push(err(
                "host",
                "the hub host name is required (e.g. myhub.azure-devices.net), or paste a connection string".into(),
            ));
        }
        if s.device_id.trim().is_empty() {
            errors.push(err("device_id", "the device id is required".into()));
        }
        let key = match DeviceKey::from_base64(&s.key) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push(err("key", format!("device key: {e}")));
                None
            }
        };
        match (errors.is_empty(), key) {
            (true, Some(k)) => Some(ConnectionString {
                host_name: s.host.trim().into(),
                device_id: s.device_id.trim().into(),
                module_id: Some(s.module_id.trim().to_owned()).filter(|m| !m.is_empty()),
                key_name: None,
                credential: Credential::Key(k),
                gateway_host_name: None,
            }),
            _ => None,
        }
    };
    if let Some(cs) = &cs {
        if cs.credential == Credential::X509 {
            errors.push(err(
                "connection_string",
                "X.509 certificates cannot be used from a browser; use a SAS key".into(),
            ));
        }
    }
    let endpoint = s.endpoint.trim();
    if !(endpoint.is_empty() || endpoint.starts_with("ws://") || endpoint.starts_with("wss://")) {
        errors.push(err("endpoint", "the endpoint must be a ws:// or wss:// URL".into()));
    }
    if s.token_ttl_secs < 10 {
        errors.push(err("ttl", "the token lifetime must be at least 10 seconds".into()));
    }
    match cs {
        Some(cs) if errors.is_empty() => {
            let url = if endpoint.is_empty() {
                format!("wss://{}/$iothub/websocket?iothub-no-client-cert=true", cs.connect_host())
            } else {
                endpoint.to_owned()
            };
            Ok(Plan { cs, url })
        }
        _ => Err(errors),
    }
}

/// The telemetry the composer describes.
pub fn telemetry(s: &Settings, message_id: Option<String>) -> Telemetry {
    let mut props = PropertyBag::new();
    let mut set = |p: SystemProperty, v: &str| {
        if !v.trim().is_empty() {
            props.set_system(p, v.trim().to_owned());
        }
    };
    set(SystemProperty::ContentType, &s.content_type);
    set(SystemProperty::ContentEncoding, &s.content_encoding);
    let mid = message_id.unwrap_or_else(|| s.message_id.clone());
    set(SystemProperty::MessageId, &mid);
    set(SystemProperty::CorrelationId, &s.correlation_id);
    set(SystemProperty::UserId, &s.user_id);
    if s.creation_time {
        props.set_system(SystemProperty::CreationTime, util::iso_now());
    }
    for (k, v) in &s.properties {
        if !k.trim().is_empty() {
            props.push(k.trim(), v.clone());
        }
    }
    let qos = match s.qos {
        0 => TelemetryQos::AtMostOnce,
        2 => TelemetryQos::ExactlyOnceHubWillClose,
        _ => TelemetryQos::AtLeastOnce,
    };
    Telemetry { properties: props, payload: s.body.clone().into_bytes().into(), qos, retain: s.retain }
}

/// The exact topic the composer would publish to (for the live preview).
pub fn topic_preview(s: &Settings) -> String {
    let identity = match plan(s) {
        Ok(p) => DeviceIdentity { device_id: p.cs.device_id, module_id: p.cs.module_id },
        Err(_) => DeviceIdentity::device(if s.device_id.is_empty() { "{deviceId}" } else { &s.device_id }),
    };
    let mid = if s.auto_message_id { Some("<generated>".to_owned()) } else { None };
    DeviceTopic::Telemetry { identity, properties: telemetry(s, mid).properties }.to_string()
}

/// A SAS token for the current form and lifetime.
pub fn sas_token(s: &Settings) -> Result<(String, u64), String> {
    let p = plan(s).map_err(|e| e.into_iter().map(|e| e.message).collect::<Vec<_>>().join("; "))?;
    let expiry = util::unix_now() + s.token_ttl_secs as u64;
    match p.cs.password(expiry) {
        Some(t) => Ok((t.to_string(), t.expiry())),
        None => Err("no token for X.509".into()),
    }
}

#[derive(Default)]
struct Inner {
    driver: Option<Driver>,
    /// Identity the driver was made for; a different device gets a fresh session.
    driver_key: String,
    plan: Option<Plan>,
    settings: Settings,
    answers: Vec<MethodAnswer>,
    user_disconnected: bool,
    renewing: bool,
    attempt: u32,
    reconnect: Option<Timeout>,
    renew: Option<Timeout>,
    repeat: Option<Interval>,
    repeat_left: Option<u32>,
}

/// Owned by the app root; components call it through [`ControllerHandle`].
pub struct Controller {
    dispatch: UseReducerDispatcher<AppState>,
    inner: RefCell<Inner>,
    me: RefCell<Weak<Controller>>,
}

/// A cheap, comparable handle for props and context.
#[derive(Clone)]
pub struct ControllerHandle(pub Rc<Controller>);

impl PartialEq for ControllerHandle {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Controller {
    pub fn new(dispatch: UseReducerDispatcher<AppState>) -> Rc<Controller> {
        let c = Rc::new(Controller { dispatch, inner: RefCell::new(Inner::default()), me: RefCell::new(Weak::new()) });
        *c.me.borrow_mut() = Rc::downgrade(&c);
        c
    }

    fn log(&self, kind: &'static str, text: impl Into<String>) {
        self.dispatch.dispatch(Action::Log(kind, text.into()));
    }

    fn status(&self, s: ConnStatus) {
        self.dispatch.dispatch(Action::Status(s));
    }

    /// Keeps the controller's copy of settings and method answers current (they are read in event handlers).
    pub fn sync(&self, state: &AppState) {
        let mut i = self.inner.borrow_mut();
        i.settings = state.settings.clone();
        i.answers = state.answers.clone();
    }

    fn driver(&self) -> Option<Driver> {
        self.inner.borrow().driver.clone()
    }

    /// Connects with the current settings.
    pub fn connect(&self, settings: &Settings) {
        let plan = match plan(settings) {
            Ok(p) => p,
            Err(errors) => {
                for e in errors {
                    self.log("error", e.message);
                }
                return;
            }
        };
        let key =
            format!("{}|{}|{:?}|{}", plan.cs.host_name, plan.cs.device_id, plan.cs.module_id, settings.clean_session);
        let needs_new = self.inner.borrow().driver_key != key;
        if needs_new {
            if let Some(old) = self.inner.borrow_mut().driver.take() {
                old.disconnect();
            }
            let mut cfg = DeviceConfig::new(
                plan.cs.host_name.clone(),
                DeviceIdentity { device_id: plan.cs.device_id.clone(), module_id: plan.cs.module_id.clone() },
            );
            cfg.client_type = Some(format!("hubsim-web/{}", env!("CARGO_PKG_VERSION")));
            let weak = self.me.borrow().clone();
            let driver = Driver::new(cfg, move |ev| {
                if let Some(c) = weak.upgrade() {
                    c.on_event(ev);
                }
            });
            let mut i = self.inner.borrow_mut();
            i.driver = Some(driver);
            i.driver_key = key;
        }
        {
            let mut i = self.inner.borrow_mut();
            i.plan = Some(plan);
            i.settings = settings.clone();
            i.user_disconnected = false;
            i.attempt = 0;
            i.reconnect = None;
        }
        // Connecting again while connected: close the old connection quietly first.
        if let Some(d) = self.driver() {
            if !d.peek(|s| s.is_disconnected()) {
                self.inner.borrow_mut().renewing = true;
                d.disconnect();
                self.inner.borrow_mut().renewing = false;
            }
        }
        self.open();
    }

    /// Opens the socket with a fresh token.
    fn open(&self) {
        let (driver, plan, s, attempt) = {
            let mut i = self.inner.borrow_mut();
            i.attempt += 1;
            (i.driver.clone(), i.plan.clone(), i.settings.clone(), i.attempt)
        };
        let (Some(driver), Some(plan)) = (driver, plan) else { return };
        driver.with_session(|sess, _| {
            let c = sess.config_mut();
            c.clean_session = s.clean_session;
            c.keep_alive = Duration::from_secs(s.keep_alive_secs as u64);
            c.api_version = if s.api_version.trim().is_empty() {
                hubsim_proto::API_VERSION.into()
            } else {
                s.api_version.trim().into()
            };
            c.model_id = Some(s.model_id.trim().to_owned()).filter(|m| !m.is_empty());
        });
        let expiry = util::unix_now() + s.token_ttl_secs as u64;
        let token = plan.cs.password(expiry);
        let token_expiry = token.as_ref().map(|t| t.expiry());
        self.dispatch.dispatch(Action::TokenExpiry(token_expiry));
        self.status(ConnStatus::Connecting { attempt });
        self.log("connection", format!("connecting to {}", plan.url));
        let options = ConnectOptions { password: token.map(|t| t.to_string()), will: None };
        if let Err(e) = driver.connect(&plan.url, options) {
            self.lost(format!("cannot open {}: {e}", plan.url), None, true);
        }
        // Renew at 80% of the lifetime, as the C SDK does; a given token cannot be renewed.
        let renewable = matches!(plan.cs.credential, Credential::Key(_));
        let mut i = self.inner.borrow_mut();
        i.renew = None;
        if renewable {
            let lifetime_ms = (s.token_ttl_secs as u64 * 1000 * 8 / 10).min(u32::MAX as u64) as u32;
            let weak = self.me.borrow().clone();
            i.renew = Some(Timeout::new(lifetime_ms, move || {
                if let Some(c) = weak.upgrade() {
                    c.renew();
                }
            }));
        }
    }

    fn renew(&self) {
        let Some(driver) = self.driver() else { return };
        if !driver.peek(|s| s.is_connected()) {
            return;
        }
        self.log("connection", "renewing the SAS token: reconnecting with a fresh token");
        self.inner.borrow_mut().renewing = true;
        driver.disconnect();
        self.inner.borrow_mut().renewing = false;
        self.inner.borrow_mut().attempt = 0;
        self.open();
    }

    /// Disconnects and stops reconnecting.
    pub fn disconnect(&self) {
        let driver = {
            let mut i = self.inner.borrow_mut();
            i.user_disconnected = true;
            i.reconnect = None;
            i.renew = None;
            i.repeat = None;
            i.driver.clone()
        };
        self.dispatch.dispatch(Action::Repeat(None));
        if let Some(d) = driver {
            d.disconnect();
        }
        self.dispatch.dispatch(Action::TokenExpiry(None));
        self.status(ConnStatus::Disconnected { reason: None, hint: None });
    }

    /// Sends one message from the composer.
    pub fn send(&self, s: &Settings) -> bool {
        let Some(driver) = self.driver() else {
            self.log("error", "not connected");
            return false;
        };
        let mid = s.auto_message_id.then(util::uuid);
        let msg = telemetry(s, mid);
        let size = msg.size();
        let topic_len = msg.properties.to_string().len();
        match driver.with_session(|sess, now| sess.send_telemetry(now, msg)) {
            Ok(_) => {
                self.dispatch.dispatch(Action::Sent(1));
                self.log("sent", format!("telemetry, {size} bytes, QoS {}, property bag {topic_len} bytes", s.qos));
                true
            }
            Err(e) => {
                self.log("error", format!("not sent: {e}"));
                false
            }
        }
    }

    /// Sends every `interval_ms`, `count` times (0 = until stopped).
    pub fn start_repeat(&self, s: &Settings) {
        let total = (s.repeat_count > 0).then_some(s.repeat_count);
        self.inner.borrow_mut().repeat_left = total;
        self.dispatch.dispatch(Action::Repeat(Some(Repeat { total, done: 0 })));
        let weak = self.me.borrow().clone();
        let tick = move || {
            let Some(c) = weak.upgrade() else { return };
            let s = c.inner.borrow().settings.clone();
            c.send(&s);
            c.dispatch.dispatch(Action::RepeatTick);
            let done = {
                let mut i = c.inner.borrow_mut();
                if let Some(n) = &mut i.repeat_left {
                    *n = n.saturating_sub(1);
                }
                i.repeat_left == Some(0)
            };
            if done {
                c.inner.borrow_mut().repeat = None;
            }
        };
        tick();
        if total != Some(1) {
            self.inner.borrow_mut().repeat = Some(Interval::new(s.repeat_interval_ms.max(10), tick));
        }
    }

    pub fn stop_repeat(&self) {
        self.inner.borrow_mut().repeat = None;
        self.dispatch.dispatch(Action::Repeat(None));
    }

    pub fn get_twin(&self) {
        if let Some(d) = self.driver() {
            if let Err(e) = d.with_session(|s, now| s.get_twin(now)) {
                self.log("error", format!("twin: {e}"));
            }
        }
    }

    pub fn patch_reported(&self, json: &str) {
        if !util::is_json(json) {
            return self.log("error", "the reported patch is not JSON");
        }
        if let Some(d) = self.driver() {
            match d.with_session(|s, now| s.patch_reported(now, json.to_owned().into_bytes())) {
                Ok(_) => self.log("sent", format!("reported properties {json}")),
                Err(e) => self.log("error", format!("twin: {e}")),
            }
        }
    }

    fn on_event(&self, ev: DriverEvent) {
        let ev = match ev {
            DriverEvent::TransportOpen => return self.log("connection", "WebSocket open, sending CONNECT"),
            DriverEvent::TransportFailed(why) => {
                let url = self.inner.borrow().plan.as_ref().map(|p| p.url.clone()).unwrap_or_default();
                return self.lost(format!("cannot open {url} ({why})"), None, true);
            }
            DriverEvent::Session(e) => e,
        };
        match ev {
            Event::Connected { session_present } => {
                self.inner.borrow_mut().attempt = 0;
                self.status(ConnStatus::Connected { since: util::clock_time(), session_present });
                if let Some(d) = self.driver() {
                    let filters =
                        [TopicFilter::C2d, TopicFilter::Methods, TopicFilter::TwinResponses, TopicFilter::TwinDesired];
                    if let Err(e) = d.with_session(|s, now| s.subscribe(now, &filters)) {
                        self.log("error", format!("subscribe: {e}"));
                    }
                }
            }
            Event::TelemetryAcked { .. } => self.dispatch.dispatch(Action::Acked),
            Event::C2d(m) => {
                let (body, kind) = util::describe_body(&m.payload);
                let system = m.properties.system_properties().map(|(k, v)| (k.wire_name(), v.to_owned())).collect();
                let application =
                    m.properties.application.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
                self.dispatch.dispatch(Action::C2d(InboxItem {
                    seq: 0,
                    time: util::clock_time(),
                    body,
                    body_kind: kind,
                    system,
                    application,
                    redelivered: m.redelivered,
                }));
            }
            Event::MethodRequest { name, rid, payload } => {
                let (status, response) = {
                    let i = self.inner.borrow();
                    i.answers
                        .iter()
                        .find(|a| a.name == name)
                        .map(|a| (a.status, a.payload.clone()))
                        .unwrap_or((200, "{}".into()))
                };
                let body = if response.trim().is_empty() { String::new() } else { response.clone() };
                if let Some(d) = self.driver() {
                    if let Err(e) = d.with_session(|s, now| s.respond_to_method(now, &rid, status, body.as_bytes())) {
                        self.log("error", format!("method response: {e}"));
                    }
                }
                let payload = String::from_utf8_lossy(&payload).into_owned();
                self.dispatch.dispatch(Action::Method(MethodCall {
                    seq: 0,
                    time: util::clock_time(),
                    name,
                    payload,
                    status,
                    response,
                }));
            }
            Event::TwinResponse { kind: RequestKind::TwinGet, status: 200, body, .. } => {
                let text = String::from_utf8_lossy(&body).into_owned();
                let part = |name: &str| -> String {
                    js_sys::JSON::parse(&text)
                        .ok()
                        .and_then(|v| js_sys::Reflect::get(&v, &name.into()).ok())
                        .and_then(|v| {
                            js_sys::JSON::stringify_with_replacer_and_space(&v, &wasm_bindgen::JsValue::NULL, &2.into())
                                .ok()
                        })
                        .map(String::from)
                        .unwrap_or_default()
                };
                self.dispatch.dispatch(Action::Twin {
                    desired: part("desired"),
                    reported: part("reported"),
                    version: String::new(),
                });
                self.log("received", "twin document");
            }
            Event::TwinResponse { kind: RequestKind::TwinPatchReported, status: 204, version, .. } => {
                let v = version.map(|v| v.to_string()).unwrap_or_default();
                self.log("received", format!("reported properties saved, version {v}"));
                self.dispatch.dispatch(Action::ReportedSaved(v));
            }
            Event::TwinResponse { status, body, .. } => self
                .log("error", format!("twin request failed with status {status}: {}", String::from_utf8_lossy(&body))),
            Event::DesiredPropertiesPatch { body, .. } => {
                self.dispatch.dispatch(Action::Desired(String::from_utf8_lossy(&body).into_owned()))
            }
            Event::RequestFailed { rid, kind, reason } => {
                self.log("error", format!("{kind:?} request {rid} failed: {reason:?}"))
            }
            Event::Subscribed { results } => {
                let text = results.iter().map(|(f, g)| format!("{f:?} → {g:?}")).collect::<Vec<_>>().join(", ");
                self.log("connection", format!("subscribed: {text}"));
            }
            Event::Unsubscribed { filters } => self.log("connection", format!("unsubscribed {filters:?}")),
            Event::UnknownPublish { topic, .. } => {
                self.log("received", format!("publish on an unexpected topic {topic}"))
            }
            Event::ConnectionLost { reason, likely_cause } => {
                let (user, renewing) = {
                    let i = self.inner.borrow();
                    (i.user_disconnected, i.renewing)
                };
                if user || renewing || reason == LostReason::Disconnected {
                    return;
                }
                let fatal = matches!(reason, LostReason::Refused(r) if r.0 == 5 || r.0 == 3 || r.0 == 1 || r.0 == 4);
                self.lost(reason.to_string(), likely_cause, !fatal);
            }
        }
    }

    /// Reports a loss and schedules a reconnect with exponential backoff and jitter when allowed.
    fn lost(&self, reason: String, hint: Option<String>, retry: bool) {
        let (auto, attempt) = {
            let i = self.inner.borrow();
            (i.settings.auto_reconnect, i.attempt)
        };
        let hint = hint.map(|h| format!("The hub closed the connection right after {h}: that is the likely cause."));
        if !(retry && auto) {
            self.inner.borrow_mut().renew = None;
            self.dispatch.dispatch(Action::TokenExpiry(None));
            return self.status(ConnStatus::Disconnected { reason: Some(reason), hint });
        }
        let base = 1000.0 * 2f64.powi(attempt.min(5) as i32);
        let delay = (base.min(30_000.0) * (0.8 + 0.4 * js_sys::Math::random())) as u32;
        let at_ms = js_sys::Date::now() + delay as f64;
        self.status(ConnStatus::Reconnecting { at_ms, attempt, reason, hint });
        let weak = self.me.borrow().clone();
        self.inner.borrow_mut().reconnect = Some(Timeout::new(delay, move || {
            if let Some(c) = weak.upgrade() {
                c.open();
            }
        }));
    }
}
