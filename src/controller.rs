//! The connection lifecycle: opens a validated [`Plan`], keeps the connection alive (token renewal at 80 % of the
//! lifetime, reconnect with exponential backoff and jitter), answers direct methods, and turns everything that
//! happens into reducer actions with human texts (never Rust `Debug` output).
//!
//! It owns the one [`Driver`] of the page. The driver's `DeviceSession` survives reconnects, so telemetry that
//! was not acknowledged is re-sent after a reconnect or a token renewal instead of being lost. Validation and the
//! decision where to connect are in [`crate::form`]; the controller only acts on a plan the user confirmed.

use gloo::timers::callback::{Interval, Timeout};
use hubsim_proto::conn_str::Credential;
use hubsim_proto::device::{
    ConnectOptions, DeviceConfig, DeviceSession, Event, Granted, LostReason, RequestFailure, RequestKind, TelemetryQos,
};
use hubsim_proto::topic::{DeviceIdentity, RequestId, TopicFilter};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;
use yew::prelude::*;

use crate::driver::{Driver, DriverEvent};
use crate::form::{telemetry, Plan};
use crate::provision::Provisioning;
use crate::series::{Charts, Source};
use crate::settings::Settings;
use crate::state::{Action, AppState, ConnStatus, InboxItem, LogKind, MethodAnswer, MethodCall, Repeat};
use crate::util;

mod pnp;

/// A connection the hub closes sooner than this after accepting it (ms) counts as a flap.
const FLAP_MS: f64 = 10_000.0;
/// Flaps in a row after which the page stops reconnecting and says why (two clients as one device take turns
/// closing each other's connection for ever otherwise).
const MAX_FLAPS: u32 = 3;
/// Most reported patches remembered until answered (see `Inner::reported`).
const MAX_REPORTED: usize = 32;

#[derive(Default)]
struct Inner {
    driver: Option<Driver>,
    /// Identity the driver was made for; a different device gets a fresh session.
    driver_key: String,
    plan: Option<Plan>,
    /// The app state's own settings and answers (shared pointers, not copies), read in event handlers.
    settings: Rc<Settings>,
    answers: Rc<Vec<MethodAnswer>>,
    user_disconnected: bool,
    renewing: bool,
    /// The browser refused to store the settings the last time they were stored.
    storage_refused: bool,
    /// Reported patches sent and not answered yet, at most [`MAX_REPORTED`] (the oldest goes): `(request, patch,
    /// from the twin panel)`. Once saved, the twin shown takes the patch and its version (the hub answers a patch
    /// with its version only); the answer to one no longer here reads the twin again instead.
    reported: Vec<(RequestId, String, bool)>,
    attempt: u32,
    /// When the current connection was accepted (`Date.now()` ms), and how many connections in a row the hub
    /// closed within [`FLAP_MS`] of accepting them (see [`Controller::lost`]).
    connected_at: Option<f64>,
    flaps: u32,
    reconnect: Option<Timeout>,
    renew: Option<Timeout>,
    repeat: Option<Interval>,
    repeat_left: Option<u32>,
    /// The Plug and Play device (telemetry schedule and generators).
    pnp: pnp::Runtime,
}

/// Owned by the app root; components call it through [`ControllerHandle`].
pub struct Controller {
    dispatch: UseReducerDispatcher<AppState>,
    inner: RefCell<Inner>,
    /// A registration with DPS in progress ([`crate::provision`]).
    dps: RefCell<Option<Provisioning>>,
    me: RefCell<Weak<Controller>>,
    /// Template sends and schedules (`crate::schedule`).
    pub sched: crate::schedule::Scheduler,
    /// The numbers of every body sent and received, for the charts.
    charts: Charts,
}

/// A cheap, comparable handle for props and context.
#[derive(Clone)]
pub struct ControllerHandle(pub Rc<Controller>);

impl PartialEq for ControllerHandle {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// A filter's name for people.
fn filter_name(f: &TopicFilter) -> &'static str {
    match f {
        TopicFilter::C2d => "cloud-to-device messages",
        TopicFilter::Methods => "direct methods",
        TopicFilter::TwinResponses => "twin responses",
        TopicFilter::TwinDesired => "desired property updates",
        TopicFilter::ModuleInputs => "module inputs",
        TopicFilter::DpsResponses => "provisioning responses",
    }
}

fn request_name(k: RequestKind) -> &'static str {
    match k {
        RequestKind::TwinGet => "reading the twin",
        RequestKind::TwinPatchReported => "updating reported properties",
    }
}

impl Controller {
    pub fn new(dispatch: UseReducerDispatcher<AppState>) -> Rc<Controller> {
        let c = Rc::new(Controller {
            dispatch,
            inner: RefCell::new(Inner::default()),
            dps: RefCell::new(None),
            me: RefCell::new(Weak::new()),
            sched: Default::default(),
            charts: Charts::default(),
        });
        *c.me.borrow_mut() = Rc::downgrade(&c);
        c
    }

    /// The series store of the page: the charts read it, and a panel that sends by another way records there.
    pub fn charts(&self) -> &Charts {
        &self.charts
    }

    fn log(&self, kind: LogKind, text: impl Into<String>) {
        self.dispatch.dispatch(Action::Log { at: util::clock_time(), kind, text: text.into() });
    }

    /// Logs what the device just handed to its session, marked "queued until connected" while it is not (QoS 1
    /// telemetry waits in the session for the next connection of the same device): nothing left the browser yet.
    pub(crate) fn log_sent(&self, driver: &Driver, text: String) {
        let text =
            if driver.peek(|s| s.is_connected()) { text } else { [&text, " — queued until connected"].concat() };
        self.log(LogKind::Sent, text);
    }

    pub(crate) fn status(&self, status: ConnStatus) {
        self.dispatch.dispatch(Action::Status { status, at: util::clock_time() });
    }

    pub(crate) fn dps_slot(&self) -> std::cell::RefMut<'_, Option<Provisioning>> {
        self.dps.borrow_mut()
    }

    /// Points the controller at the app state's current settings and method answers (no copy: both are `Rc`s).
    pub fn sync(&self, settings: Rc<Settings>, answers: Rc<Vec<MethodAnswer>>) {
        let mut i = self.inner.borrow_mut();
        i.settings = settings;
        i.answers = answers;
    }

    /// Stores the settings in the browser; a refusal (storage full or disabled) is said once, not at every
    /// keystroke, and again after a success.
    pub fn store_settings(&self, s: &Settings) {
        let refused = !s.save();
        let said = std::mem::replace(&mut self.inner.borrow_mut().storage_refused, refused);
        if refused && !said {
            self.log(
                LogKind::Error,
                "the browser refused to store the settings (its storage is full or disabled): they will not be \
                 remembered after this page is closed",
            );
        }
    }

    /// The settings the controller works with (the app state's own `Rc`).
    pub fn settings(&self) -> Rc<Settings> {
        self.inner.borrow().settings.clone()
    }

    pub fn dispatch(&self, a: Action) {
        self.dispatch.dispatch(a);
    }

    pub fn weak(&self) -> Weak<Controller> {
        self.me.borrow().clone()
    }

    fn driver(&self) -> Option<Driver> {
        self.inner.borrow().driver.clone()
    }

    /// What the current connection announced, `(hub, device[/module], model id)`, while one is up: the form may
    /// have changed since (see the connect panel).
    pub fn connected_as(&self) -> Option<(String, String, String)> {
        let d = self.driver()?;
        d.peek(|s| {
            let c = s.config();
            s.is_connected()
                .then(|| (c.host_name.clone(), c.identity.to_string(), c.model_id.clone().unwrap_or_default()))
        })
    }

    /// Connects as `plan` says. The caller validated the form and, for a host other than the hub, asked the user.
    pub fn connect(&self, plan: Plan) {
        self.stop_provisioning();
        let clean = self.inner.borrow().settings.clean_session;
        let key = format!(
            "{}|{}|{}|{clean}",
            plan.cs.host_name,
            plan.cs.device_id,
            plan.cs.module_id.as_deref().unwrap_or_default()
        );
        if self.inner.borrow().driver_key != key {
            // Another identity (not only another CleanSession choice): the previous one's twin is not this one's.
            let identity = |k: &str| k.rsplit_once('|').map(|(i, _)| i.to_owned());
            if identity(&self.inner.borrow().driver_key) != identity(&key) {
                self.dispatch.dispatch(Action::NewIdentity);
            }
            let old = self.inner.borrow_mut().driver.take();
            if let Some(old) = old {
                old.disconnect();
                // A session belongs to one device and one CleanSession choice: what waited in the old one goes.
                let dropped = old.peek(|s| s.unacked()) as u64;
                if dropped > 0 {
                    self.dispatch.dispatch(Action::Dropped(dropped));
                    self.log(
                        LogKind::Error,
                        format!("{dropped} QoS 1 message(s) waiting for the previous device or session were dropped: the device or CleanSession changed"),
                    );
                }
            }
            let mut cfg = DeviceConfig::new(
                plan.cs.host_name.clone(),
                DeviceIdentity { device_id: plan.cs.device_id.clone(), module_id: plan.cs.module_id.clone() },
            );
            cfg.client_type = Some(concat!("hubsim-web/", env!("CARGO_PKG_VERSION")).into());
            let weak = self.me.borrow().clone();
            let driver = Driver::new(DeviceSession::new(cfg), move |ev| {
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
            i.user_disconnected = false;
            (i.attempt, i.flaps) = (0, 0);
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
        if self.given_token_expired() {
            return;
        }
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
        // The lifetime was range-checked by the form (at most a day); clamp again so nothing else can stretch it.
        let ttl = s.token_ttl_secs.clamp(crate::settings::MIN_TTL_SECS, crate::settings::MAX_TTL_SECS);
        let token = plan.cs.password(util::unix_now() + ttl as u64);
        self.dispatch.dispatch(Action::TokenExpiry(token.as_ref().map(|t| t.expiry())));
        self.status(ConnStatus::Connecting { attempt });
        self.log(LogKind::Connection, format!("connecting to {}", plan.url));
        let options = ConnectOptions { password: token.map(|t| t.to_string()), will: None };
        if let Err(e) = driver.connect(&plan.url, options) {
            self.lost(format!("cannot open {}: {e}", plan.url), None, true);
        }
        // Renew at 80% of the lifetime, as the C SDK does; a given token cannot be renewed.
        let renewable = matches!(plan.cs.credential, Credential::Key(_));
        let mut i = self.inner.borrow_mut();
        i.renew = None;
        if renewable {
            let weak = self.me.borrow().clone();
            i.renew = Some(Timeout::new(ttl * 800, move || {
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
        self.log(LogKind::Connection, "renewing the SAS token: reconnecting with a fresh token");
        self.inner.borrow_mut().renewing = true;
        driver.disconnect();
        self.inner.borrow_mut().renewing = false;
        self.inner.borrow_mut().attempt = 0;
        self.open();
    }

    /// Disconnects and stops reconnecting (and any registration with DPS).
    pub fn disconnect(&self) {
        self.stop_provisioning();
        let driver = {
            let mut i = self.inner.borrow_mut();
            i.user_disconnected = true;
            i.reconnect = None;
            i.driver.clone()
        };
        self.stop_clocks();
        if let Some(d) = driver {
            d.disconnect();
        }
        self.status(ConnStatus::Disconnected { reason: None, hint: None });
    }

    /// The connection has ended for good (Disconnect, or a refusal that ends reconnecting): what runs on a clock
    /// stops — token renewal, the composer's repeat, the Plug and Play telemetry, the saved-message schedules.
    fn stop_clocks(&self) {
        {
            let mut i = self.inner.borrow_mut();
            i.renew = None;
            i.repeat = None;
            i.pnp.stop();
        }
        self.dispatch.dispatch(Action::Pnp(crate::pnp::PnpAction::Running(false)));
        self.dispatch.dispatch(Action::Repeat(None));
        self.sched.stop_all(self);
        self.dispatch.dispatch(Action::TokenExpiry(None));
    }

    /// Sends one message as the composer describes it.
    pub fn send(&self) -> bool {
        let s = self.inner.borrow().settings.clone();
        self.publish(&s).is_some()
    }

    /// Sends one message as `s` describes it; `Some(Some(publish id))` when a PUBACK is awaited (QoS 1).
    pub fn publish(&self, s: &Settings) -> Option<Option<u64>> {
        let Some(driver) = self.driver() else {
            self.log(LogKind::Error, "not sent: not connected");
            return None;
        };
        let msg = telemetry(s, s.auto_message_id.then(util::uuid), &util::iso_now());
        let acked = msg.qos != TelemetryQos::AtMostOnce;
        let size = msg.size();
        let body = msg.payload.clone();
        let qos = match msg.qos {
            TelemetryQos::AtMostOnce => "QoS 0",
            TelemetryQos::AtLeastOnce => "QoS 1",
            TelemetryQos::ExactlyOnceHubWillClose => "QoS 2",
        };
        match driver.with_session(|sess, now| sess.send_telemetry(now, msg)) {
            Ok(id) => {
                self.dispatch.dispatch(Action::Sent(1));
                self.charts.record(Source::Telemetry, js_sys::Date::now(), &body);
                self.log_sent(&driver, format!("telemetry, {size} bytes with properties, {qos}"));
                Some(acked.then_some(id.0))
            }
            Err(e) => {
                self.log(LogKind::Error, format!("not sent: {e}"));
                None
            }
        }
    }

    /// Sends every `repeat_interval_ms`, `repeat_count` times (0 = until stopped), with the settings current at
    /// each tick.
    pub fn start_repeat(&self) {
        let s = self.inner.borrow().settings.clone();
        let total = (s.repeat_count > 0).then_some(s.repeat_count);
        self.inner.borrow_mut().repeat_left = total;
        self.dispatch.dispatch(Action::Repeat(Some(Repeat { total, done: 0 })));
        let weak = self.me.borrow().clone();
        let tick = move || {
            let Some(c) = weak.upgrade() else { return };
            c.send();
            c.dispatch.dispatch(Action::RepeatTick);
            let mut i = c.inner.borrow_mut();
            if let Some(n) = &mut i.repeat_left {
                *n = n.saturating_sub(1);
            }
            if i.repeat_left == Some(0) {
                i.repeat = None;
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
                self.log(LogKind::Error, format!("cannot read the twin: {e}"));
            }
        }
    }

    /// Sends a reported patch: a JSON object (IoT Hub answers 400 to anything else); what is refused is said
    /// beside the patch (and in the log).
    pub fn patch_reported(&self, json: &str) {
        let refused = match hubsim_proto::json::parse(json) {
            Ok(hubsim_proto::json::Value::Object(_)) => None,
            Ok(_) => Some("the reported patch must be a JSON object, like {\"fw\": \"1.0\"}".to_owned()),
            Err(e) => Some(format!("the reported patch is not JSON: {e}")),
        };
        let result = match (refused, self.driver()) {
            (Some(why), _) => Err(why),
            (None, None) => Err("not sent: not connected".to_owned()),
            (None, Some(d)) => match d.with_session(|s, now| s.patch_reported(now, json.to_owned().into_bytes())) {
                Ok(rid) => {
                    self.sent_reported(rid, json, true);
                    self.log_sent(&d, format!("reported properties {json}"));
                    Ok(String::new())
                }
                Err(e) => Err(format!("cannot update reported properties: {e}")),
            },
        };
        if let Err(e) = &result {
            self.log(LogKind::Error, e.clone());
        }
        self.dispatch.dispatch(Action::Reported(result));
    }

    /// Remembers a reported patch until it is answered.
    pub(crate) fn sent_reported(&self, rid: RequestId, patch: &str, user: bool) {
        let mut i = self.inner.borrow_mut();
        if i.reported.len() >= MAX_REPORTED {
            i.reported.remove(0);
        }
        i.reported.push((rid, patch.to_owned(), user));
    }

    /// The reported patch `rid` answered or failed: `(patch, from the twin panel)` if it was remembered.
    fn answered_reported(&self, rid: &RequestId) -> Option<(String, bool)> {
        let mut i = self.inner.borrow_mut();
        let at = i.reported.iter().position(|r| r.0 == *rid)?;
        let (_, patch, user) = i.reported.remove(at);
        Some((patch, user))
    }

    fn on_event(&self, ev: DriverEvent) {
        let ev = match ev {
            DriverEvent::TransportOpen => return self.log(LogKind::Connection, "WebSocket open, sending CONNECT"),
            DriverEvent::TransportFailed(why) => {
                let url = self.inner.borrow().plan.as_ref().map(|p| p.url.clone()).unwrap_or_default();
                return self.lost(format!("cannot open {url} ({why})"), None, true);
            }
            DriverEvent::Session(e) => e,
        };
        match ev {
            Event::Connected { session_present } => {
                // The backoff is reset once the connection has lasted (see `lost`), not here: a hub that closes
                // every connection right after accepting it must not be retried every second.
                self.inner.borrow_mut().connected_at = Some(js_sys::Date::now());
                self.status(ConnStatus::Connected { since: util::clock_time(), session_present });
                if let Some(d) = self.driver() {
                    let filters =
                        [TopicFilter::C2d, TopicFilter::Methods, TopicFilter::TwinResponses, TopicFilter::TwinDesired];
                    if let Err(e) = d.with_session(|s, now| s.subscribe(now, &filters)) {
                        self.log(LogKind::Error, format!("cannot subscribe: {e}"));
                    }
                }
                self.pnp_on_connected();
            }
            Event::TelemetryAcked { id, .. } => {
                self.dispatch.dispatch(Action::Acked);
                self.dispatch.dispatch(Action::Tmpl(crate::state::templates::TmplAction::Acked(id.0)));
            }
            Event::C2d(m) => self.on_c2d(m),
            Event::MethodRequest { name, rid, payload } => {
                let (status, response) = self.pnp_on_method(&name, &payload).unwrap_or_else(|| {
                    let i = self.inner.borrow();
                    i.answers
                        .iter()
                        .find(|a| a.name == name)
                        .map(|a| (a.status, a.payload.clone()))
                        .unwrap_or((200, "{}".into()))
                });
                if let Some(d) = self.driver() {
                    let body = response.trim();
                    if let Err(e) = d.with_session(|s, now| s.respond_to_method(now, &rid, status, body.as_bytes())) {
                        self.log(LogKind::Error, format!("cannot answer method {name}: {e}"));
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
                self.pnp_on_twin(&body);
                let text = String::from_utf8_lossy(&body).into_owned();
                self.dispatch.dispatch(Action::Twin {
                    desired: util::json_member(&text, "desired"),
                    reported: util::json_member(&text, "reported"),
                });
                self.log(LogKind::Received, "twin document");
            }
            Event::TwinResponse { rid, kind: RequestKind::TwinPatchReported, status: 204, version, .. } => {
                let v = version.map(|v| v.to_string()).unwrap_or_default();
                self.log(LogKind::Received, format!("reported properties saved, version {v}"));
                let sent = self.answered_reported(&rid);
                if sent.as_ref().is_some_and(|s| s.1) {
                    self.dispatch.dispatch(Action::Reported(Ok(v)));
                }
                match (sent, version) {
                    (Some((patch, _)), Some(version)) => {
                        self.dispatch.dispatch(Action::ReportedSaved { patch, version })
                    }
                    _ => self.get_twin(),
                }
            }
            Event::TwinResponse { rid, kind, status, body, .. } => {
                let why =
                    format!("{} failed with status {status}: {}", request_name(kind), String::from_utf8_lossy(&body));
                if kind == RequestKind::TwinPatchReported && self.answered_reported(&rid).is_some_and(|s| s.1) {
                    self.dispatch.dispatch(Action::Reported(Err(why.clone())));
                }
                self.log(LogKind::Error, why)
            }
            Event::DesiredPropertiesPatch { body, .. } => {
                self.charts.record(Source::Desired, js_sys::Date::now(), &body);
                self.pnp_on_desired(&body);
                self.dispatch.dispatch(Action::Desired {
                    at: util::clock_time(),
                    patch: String::from_utf8_lossy(&body).into_owned(),
                })
            }
            Event::RequestFailed { rid, kind, reason } => {
                self.answered_reported(&rid);
                let why = match reason {
                    RequestFailure::TimedOut => "the hub did not answer in time",
                    RequestFailure::ConnectionLost => "the connection was lost before the answer",
                };
                self.log(LogKind::Error, format!("{} failed: {why}", request_name(kind)))
            }
            Event::Subscribed { results } => {
                let (mut ok, mut refused) = (Vec::new(), Vec::new());
                for r in &results {
                    if r.1 == Granted::Refused {
                        refused.push(r);
                    } else {
                        ok.push(r);
                    }
                }
                let names = |prefix: &str, v: &[&(TopicFilter, Granted)]| {
                    crate::form::joined(prefix, ", ", v.iter().map(|(f, _)| filter_name(f)))
                };
                self.log(LogKind::Connection, names("subscribed to ", &ok));
                if !refused.is_empty() {
                    self.log(LogKind::Error, names("the hub refused the subscription to ", &refused));
                }
            }
            Event::Unsubscribed { filters } => self.log(
                LogKind::Connection,
                crate::form::joined("unsubscribed from ", ", ", filters.iter().map(filter_name)),
            ),
            Event::UnknownPublish { topic, .. } => {
                self.log(LogKind::Received, format!("a message on an unexpected topic: {topic}"))
            }
            Event::ConnectionLost { reason, likely_cause } => {
                let (user, renewing) = {
                    let i = self.inner.borrow();
                    (i.user_disconnected, i.renewing)
                };
                if user || renewing || reason == LostReason::Disconnected || self.given_token_expired() {
                    return;
                }
                // A connection the hub closed soon after accepting it is a flap; one that lasted starts afresh.
                let flaps = {
                    let mut i = self.inner.borrow_mut();
                    match i.connected_at.take() {
                        Some(at) if js_sys::Date::now() - at < FLAP_MS => i.flaps += 1,
                        Some(_) => (i.flaps, i.attempt) = (0, 0),
                        None => {}
                    }
                    i.flaps
                };
                if flaps >= MAX_FLAPS && likely_cause.is_none() {
                    let reason = [
                        &reason.to_string(),
                        " — the hub accepted the connection and closed it within seconds, ",
                        &MAX_FLAPS.to_string(),
                        " times in a row; not reconnecting",
                    ]
                    .concat();
                    let hint = "IoT Hub allows one connection per device and closes the older one when another client connects as the same device: is this device connected somewhere else (another tab, an SDK, hubsim simulate)? Connect again once it is not.";
                    return self.give_up(reason, Some(hint.into()));
                }
                self.lost(reason.to_string(), likely_cause, reason.is_retryable());
            }
        }
    }

    /// A C2D message for the inbox: every property kept, a null application value apart from an empty one.
    fn on_c2d(&self, m: hubsim_proto::device::C2dMessage) {
        self.charts.record(Source::C2d, js_sys::Date::now(), &m.payload);
        let (body, body_kind) = util::describe_body(&m.payload);
        let mut system = Vec::new();
        for (k, v) in m.properties.system_properties() {
            system.push((k.wire_name(), v.to_owned()));
        }
        self.dispatch.dispatch(Action::C2d(InboxItem {
            seq: 0,
            time: util::clock_time(),
            body,
            body_kind,
            system,
            application: m.properties.application,
            redelivered: m.redelivered,
        }));
    }

    /// Whether the connection string gives a SAS token (not a key) that has expired: then nothing is retried and
    /// the status says why (a given token cannot be renewed; IoT Hub closes the connection when it expires).
    fn given_token_expired(&self) -> bool {
        let expiry = match self.inner.borrow().plan.as_ref().map(|p| &p.cs.credential) {
            Some(Credential::Token(t)) => t.expiry(),
            _ => return false,
        };
        if expiry > util::unix_now() {
            return false;
        }
        let at = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(expiry as f64 * 1000.0)).to_iso_string();
        let reason = ["the SAS token of the connection string expired at ", &String::from(at)].concat();
        let hint = "A token given in the connection string (SharedAccessSignature) cannot be renewed: paste a new one, or a connection string with the device's key (SharedAccessKey), from which the page signs and renews its own tokens.";
        self.inner.borrow_mut().reconnect = None;
        self.give_up(reason, Some(hint.into()));
        true
    }

    /// Ends the connection attempts with `reason` (and what to do, `hint`) on the status: as for Disconnect, the
    /// repeat and the Plug and Play telemetry stop (they would otherwise keep queueing into a session nobody will
    /// reconnect).
    fn give_up(&self, reason: String, hint: Option<String>) {
        self.stop_clocks();
        self.status(ConnStatus::Disconnected { reason: Some(reason), hint });
    }

    /// Reports a loss and schedules a reconnect with exponential backoff and jitter when allowed.
    fn lost(&self, reason: String, hint: Option<String>, retry: bool) {
        let (auto, attempt) = {
            let i = self.inner.borrow();
            (i.settings.auto_reconnect, i.attempt)
        };
        let hint = hint.map(|h| format!("The hub closed the connection right after {h}: that is the likely cause."));
        if !(retry && auto) {
            return self.give_up(reason, hint);
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
