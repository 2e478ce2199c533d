//! The app state and its pure reducer. Effects (sockets, timers, storage, the clock) live in
//! [`crate::controller`] and the components' `use_effect_with`; here only data changes.
//!
//! Actions are plain data (`Clone + Debug + PartialEq`): anything that needs a time carries it (`at`), so the
//! reducer never reads a clock and runs, and is tested, natively.
//!
//! A C2D flood must not make every action copy the whole history: the lists are `Rc`-shared and bounded, so
//! cloning the state copies pointers, and a new message costs one allocation plus at most [`MAX_LOG`] pointer
//! copies. Defaults: [`MAX_INBOX`] messages, [`MAX_METHODS`] method calls, [`MAX_LOG`] log lines,
//! [`MAX_DESIRED`] desired-property updates; older entries are dropped.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::dps::StepKind;
use crate::form::Emulator;
use crate::pnp::{PnpAction, PnpState};
use crate::settings::{Change, Decoded, Settings, Text};

pub mod templates;

/// Most inbox entries kept (the newest first).
pub const MAX_INBOX: usize = 200;
/// Most application properties of a C2D message written into its log line (the inbox and its exports keep all).
pub const MAX_LOGGED_PROPERTIES: usize = 20;
/// Most direct method calls kept.
pub const MAX_METHODS: usize = 100;
/// Most activity log lines kept.
pub const MAX_LOG: usize = 500;
/// Most bytes of one log entry's text; the rest is cut, and the entry says how long it was.
pub const MAX_LOG_TEXT: usize = 2000;
/// Most desired-property updates kept.
pub const MAX_DESIRED: usize = 50;
/// Most provisioning steps shown (a repeated poll replaces its line, so a registration needs about five).
pub const MAX_DPS_STEPS: usize = 12;

/// The connection as the user sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnStatus {
    Disconnected {
        reason: Option<String>,
        hint: Option<String>,
    },
    /// Asking DPS which hub to use.
    Provisioning,
    Connecting {
        attempt: u32,
    },
    Connected {
        since: String,
        session_present: bool,
    },
    Reconnecting {
        at_ms: f64,
        attempt: u32,
        reason: String,
        hint: Option<String>,
    },
}

/// A received C2D message, decoded for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxItem {
    pub seq: u64,
    pub time: String,
    pub body: String,
    /// `text`, `json` or `hex`.
    pub body_kind: &'static str,
    pub system: Vec<(String, String)>,
    /// Application properties in order; `None` is a null value (a name without `=` on the wire), which is not
    /// the same as an empty value (`name=`).
    pub application: Vec<(String, Option<String>)>,
    pub redelivered: bool,
}

/// A direct method call and what was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodCall {
    pub seq: u64,
    pub time: String,
    pub name: String,
    pub payload: String,
    pub status: u16,
    pub response: String,
}

/// Configured answer for a method name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodAnswer {
    pub name: String,
    pub status: u16,
    pub payload: String,
}

/// What a log line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    Connection,
    Sent,
    Received,
    Error,
}

impl LogKind {
    pub const ALL: [LogKind; 4] = [LogKind::Connection, LogKind::Sent, LogKind::Received, LogKind::Error];

    /// The tag shown and exported (`connection`, `sent`, `received`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Connection => "connection",
            LogKind::Sent => "sent",
            LogKind::Received => "received",
            LogKind::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub time: String,
    pub kind: LogKind,
    pub text: String,
}

/// Repeated sending in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repeat {
    pub total: Option<u32>,
    pub done: u32,
}

/// A connection that would send the token to a host other than the hub it is signed for, waiting for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// `host[:port]` the token would be sent to.
    pub target: String,
    /// The hub the token is for (HostName).
    pub hub: String,
    pub url: String,
    /// The token is a DPS registration token (`hub` names the registration), not a hub token.
    pub dps: bool,
}

/// One step of a registration with DPS, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpsStep {
    pub kind: StepKind,
    pub text: String,
    /// The step in progress (the last one, until the registration ends).
    pub active: bool,
}

/// The device twin as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwinView {
    pub desired: String,
    pub reported: String,
    /// The last reported patch: `Ok(version)` once saved, `Err(why)` when refused (by the app or the hub);
    /// `Ok("")` before any.
    pub patched: Result<String, String>,
}

impl Default for TwinView {
    fn default() -> Self {
        TwinView { desired: String::new(), reported: String::new(), patched: Ok(String::new()) }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppState {
    pub settings: Rc<Settings>,
    pub answers: Rc<Vec<MethodAnswer>>,
    pub status: ConnStatus,
    /// Unix seconds when the current token expires.
    pub token_expiry: Option<u64>,
    pub sent: u64,
    pub acked: u64,
    /// QoS 1 messages that waited in a session the app replaced (another device or CleanSession): no longer
    /// pending.
    pub dropped: u64,
    pub inbox: Rc<VecDeque<Rc<InboxItem>>>,
    pub unread: u32,
    pub methods: Rc<VecDeque<Rc<MethodCall>>>,
    pub twin: Rc<TwinView>,
    /// `(time, patch)`, newest first.
    pub desired_updates: Rc<VecDeque<Rc<(String, String)>>>,
    pub log: Rc<VecDeque<Rc<LogEntry>>>,
    pub repeat: Option<Repeat>,
    /// The emulator serving this page, if any.
    pub emulator: Option<Rc<Emulator>>,
    /// Settings a link offers, shown in a banner until the user accepts or ignores them.
    pub link: Option<Rc<Decoded>>,
    /// A connection waiting for the user to confirm where the token goes.
    pub confirm: Option<Rc<Confirm>>,
    /// The endpoint URL the user confirmed on this page (not asked again on reconnects and renewals).
    pub confirmed_url: Option<String>,
    /// Text for the screen-reader live region.
    pub announcement: String,
    /// The steps of the last registration with DPS.
    pub dps_steps: Rc<Vec<DpsStep>>,
    /// The composer's template mode, saved messages and schedules.
    pub templates: Rc<templates::TmplState>,
    /// The device a DTDL model describes (the Model panel).
    pub pnp: Rc<PnpState>,
    next_seq: u64,
}

/// Everything that changes the state, as plain data.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Edit(Change),
    AcceptLink,
    IgnoreLink,
    AskConfirm(Confirm),
    Confirmed,
    CancelConfirm,
    Status {
        status: ConnStatus,
        at: String,
    },
    TokenExpiry(Option<u64>),
    Sent(u64),
    Acked,
    /// `n` unacknowledged messages went with a replaced session.
    Dropped(u64),
    /// The page connects as another device or module: what was shown of the previous one's twin (and its
    /// desired updates) goes, and the traffic counters start again. The inbox and the log stay (they name
    /// their device in `$.to` and in the log's lines).
    NewIdentity,
    C2d(InboxItem),
    ClearInbox,
    MarkRead,
    Method(MethodCall),
    SetAnswer(MethodAnswer),
    RemoveAnswer(String),
    Twin {
        desired: String,
        reported: String,
    },
    /// A reported patch was saved (`Ok(version)`) or refused (`Err(why)`, by the app or the hub).
    Reported(Result<String, String>),
    /// The hub saved this reported patch (the user's or Plug and Play's) as `version`: the twin shown takes it.
    ReportedSaved {
        patch: String,
        version: u64,
    },
    Desired {
        at: String,
        patch: String,
    },
    Log {
        at: String,
        kind: LogKind,
        text: String,
    },
    ClearLog,
    Repeat(Option<Repeat>),
    RepeatTick,
    Emulator(Emulator),
    /// A registration with DPS starts: the steps are cleared.
    DpsStart,
    /// A step of the registration (a repeated kind replaces its line).
    DpsStep {
        at: String,
        kind: StepKind,
        text: String,
    },
    /// The registration ended: the assignment line, or what failed.
    DpsEnd {
        at: String,
        result: Result<String, String>,
    },
    /// DPS assigned the device: the hub and device id go into the settings (stored only if asked).
    Assigned {
        hub: String,
        device: String,
    },
    Tmpl(templates::TmplAction),
    Pnp(PnpAction),
}

impl AppState {
    /// The state at start: the stored settings, a link's offer (not applied), and a log line for each stored
    /// value that was refused.
    pub fn new(stored: Decoded, link: Option<Decoded>, at: &str) -> Self {
        let mut s = AppState {
            settings: Rc::new(stored.settings()),
            answers: Rc::default(),
            status: ConnStatus::Disconnected { reason: None, hint: None },
            token_expiry: None,
            sent: 0,
            acked: 0,
            dropped: 0,
            inbox: Rc::default(),
            unread: 0,
            methods: Rc::default(),
            twin: Rc::default(),
            desired_updates: Rc::default(),
            log: Rc::default(),
            repeat: None,
            emulator: None,
            link: link.filter(|l| !l.changes.is_empty() || !l.refused.is_empty()).map(Rc::new),
            confirm: None,
            confirmed_url: None,
            announcement: String::new(),
            dps_steps: Rc::default(),
            templates: Rc::default(),
            pnp: Rc::default(),
            next_seq: 1,
        };
        for r in stored.refused {
            s.log(at.to_owned(), LogKind::Error, format!("a stored setting was not used: {r}"));
        }
        s
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.status, ConnStatus::Connected { .. })
    }

    pub fn pending(&self) -> u64 {
        self.sent.saturating_sub(self.acked + self.dropped)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn log(&mut self, time: String, kind: LogKind, mut text: String) {
        // A line, not a document: a 256 KB payload or patch quoted whole made one entry of the page that size.
        if text.len() > MAX_LOG_TEXT {
            // Room for the note after the cut, so the entry stays within the bound.
            let mut end = MAX_LOG_TEXT - 40;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let total = text.chars().count();
            text.truncate(end);
            text += &["… (", &total.to_string(), " characters in all)"].concat();
        }
        let seq = self.seq();
        push_bounded(&mut self.log, Rc::new(LogEntry { seq, time, kind, text }), MAX_LOG);
    }

    /// A registration step said: announced, and logged as `DPS: {text}`.
    fn dps_said(&mut self, at: String, kind: LogKind, text: String) {
        self.log(at, kind, "DPS: ".to_owned() + &text);
        self.announcement = text;
    }

    /// Applies one action. Pure: the result depends only on the state and the action.
    pub fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        // A shallow copy: the lists are shared until one of them changes.
        let mut s = Rc::unwrap_or_clone(self);
        match action {
            Action::Edit(c) => {
                let settings = Rc::make_mut(&mut s.settings);
                // An assignment belongs to one registration: another ID scope or registration id forgets it.
                if let Change::Text(f @ (Text::IdScope | Text::RegistrationId), v) = &c {
                    if settings.text(*f) != v {
                        settings.assigned_hub.clear();
                        settings.assigned_device.clear();
                    }
                }
                settings.apply(c)
            }
            Action::AcceptLink => {
                if let Some(link) = s.link.take() {
                    let settings = Rc::make_mut(&mut s.settings);
                    // The link names a device: the pasted connection string (which would win over the separate
                    // fields) and its key belong to another device and leave the form.
                    if link.changes.iter().any(Change::sets_identity) {
                        settings.connection_string.clear();
                        settings.key.clear();
                        settings.dps_key.clear();
                        settings.assigned_hub.clear();
                        settings.assigned_device.clear();
                    }
                    for c in link.changes.iter().cloned() {
                        settings.apply(c);
                    }
                }
            }
            Action::IgnoreLink => s.link = None,
            Action::AskConfirm(c) => s.confirm = Some(Rc::new(c)),
            Action::Confirmed => s.confirmed_url = s.confirm.take().map(|c| c.url.clone()),
            Action::CancelConfirm => s.confirm = None,
            // A plain "disconnected" while disconnected (Disconnect pressed again, or a DPS registration starting
            // from a disconnected device) changes nothing and is not logged.
            Action::Status { status: ConnStatus::Disconnected { reason: None, hint: None }, .. }
                if matches!(s.status, ConnStatus::Disconnected { .. }) =>
            {
                s.status = ConnStatus::Disconnected { reason: None, hint: None };
            }
            Action::Status { status, at } => {
                let text = match &status {
                    ConnStatus::Connected { .. } => "connected".to_owned(),
                    ConnStatus::Connecting { attempt } => format!("connecting (attempt {attempt})"),
                    ConnStatus::Provisioning => "provisioning through DPS".to_owned(),
                    ConnStatus::Disconnected { reason: Some(r), .. } => format!("disconnected: {r}"),
                    ConnStatus::Disconnected { reason: None, .. } => "disconnected".to_owned(),
                    ConnStatus::Reconnecting { reason, .. } => format!("connection lost: {reason}"),
                };
                s.log(at, LogKind::Connection, text.clone());
                s.announcement = text;
                s.status = status;
            }
            Action::TokenExpiry(t) => s.token_expiry = t,
            Action::Sent(n) => s.sent += n,
            Action::Acked => s.acked += 1,
            Action::Dropped(n) => s.dropped += n,
            Action::NewIdentity => {
                s.twin = Rc::default();
                s.desired_updates = Rc::default();
                (s.sent, s.acked, s.dropped) = (0, 0, 0);
            }
            Action::C2d(mut item) => {
                item.seq = s.seq();
                let mut announcement = String::from("new cloud-to-device message: ");
                announcement.extend(item.body.chars().take(60));
                s.announcement = announcement;
                let mut text = String::from("cloud-to-device message: ");
                text.extend(item.body.chars().take(200));
                if item.body.chars().nth(200).is_some() {
                    text.push('…');
                }
                if !item.application.is_empty() {
                    // Quoted values, and `null` unquoted: an exported log keeps a null apart from "".
                    text.push_str(" (properties: ");
                    for (i, (k, v)) in item.application.iter().take(MAX_LOGGED_PROPERTIES).enumerate() {
                        if i > 0 {
                            text.push_str(", ");
                        }
                        text.push_str(k);
                        match v {
                            Some(v) => {
                                text.push_str("=\"");
                                text.push_str(v);
                                text.push('"');
                            }
                            None => text.push_str("=null"),
                        }
                    }
                    if item.application.len() > MAX_LOGGED_PROPERTIES {
                        text.push_str(", … and ");
                        text.push_str(&(item.application.len() - MAX_LOGGED_PROPERTIES).to_string());
                        text.push_str(" more");
                    }
                    text.push(')');
                }
                s.log(item.time.clone(), LogKind::Received, text);
                push_bounded(&mut s.inbox, Rc::new(item), MAX_INBOX);
                s.unread = s.unread.saturating_add(1);
            }
            Action::ClearInbox => {
                s.inbox = Rc::default();
                s.unread = 0;
            }
            Action::MarkRead => s.unread = 0,
            Action::Method(mut m) => {
                m.seq = s.seq();
                let text = format!(
                    "direct method {} called with {}, answered {} {}",
                    m.name,
                    if m.payload.is_empty() { "no payload" } else { &m.payload },
                    m.status,
                    m.response
                );
                s.log(m.time.clone(), LogKind::Received, text);
                push_bounded(&mut s.methods, Rc::new(m), MAX_METHODS);
            }
            Action::SetAnswer(a) => {
                let answers = Rc::make_mut(&mut s.answers);
                answers.retain(|x| x.name != a.name);
                answers.push(a);
            }
            Action::RemoveAnswer(name) => Rc::make_mut(&mut s.answers).retain(|x| x.name != name),
            // The last patch's result stays.
            Action::Twin { desired, reported } => {
                s.twin = Rc::new(TwinView { desired, reported, patched: s.twin.patched.clone() })
            }
            Action::Reported(r) => Rc::make_mut(&mut s.twin).patched = r,
            Action::ReportedSaved { patch, version } => {
                if let Some(t) = patched_section(&s.twin.reported, &patch, Some(version)) {
                    Rc::make_mut(&mut s.twin).reported = t;
                }
            }
            Action::Desired { at, patch } => {
                // The patch carries its `$version`.
                if let Some(t) = patched_section(&s.twin.desired, &patch, None) {
                    Rc::make_mut(&mut s.twin).desired = t;
                }
                s.log(at.clone(), LogKind::Received, format!("desired properties changed: {patch}"));
                push_bounded(&mut s.desired_updates, Rc::new((at, patch)), MAX_DESIRED);
            }
            Action::Log { at, kind, text } => s.log(at, kind, text),
            Action::ClearLog => s.log = Rc::default(),
            Action::Repeat(r) => s.repeat = r,
            Action::RepeatTick => {
                if let Some(r) = &mut s.repeat {
                    r.done += 1;
                    if r.total.is_some_and(|t| r.done >= t) {
                        s.repeat = None;
                    }
                }
            }
            Action::Emulator(e) => s.emulator = Some(Rc::new(e)),
            Action::DpsStart => s.dps_steps = Rc::default(),
            Action::DpsStep { at, kind, text } => {
                let steps = Rc::make_mut(&mut s.dps_steps);
                match steps.last_mut() {
                    Some(last) if last.kind == kind => last.text.clone_from(&text),
                    _ => push_step(steps, DpsStep { kind, text: text.clone(), active: true }),
                }
                s.dps_said(at, LogKind::Connection, text);
            }
            Action::DpsEnd { at, result } => {
                let (kind, text, log) = match result {
                    Ok(t) => (StepKind::Assigned, t, LogKind::Connection),
                    Err(t) => (StepKind::Failed, t, LogKind::Error),
                };
                push_step(Rc::make_mut(&mut s.dps_steps), DpsStep { kind, text: text.clone(), active: false });
                s.dps_said(at, log, text);
            }
            Action::Assigned { hub, device } => {
                let settings = Rc::make_mut(&mut s.settings);
                settings.assigned_hub = hub;
                settings.assigned_device = device;
            }
            Action::Tmpl(a) => Rc::make_mut(&mut s.templates).apply(a),
            Action::Pnp(a) => {
                let generation = s.pnp.generation;
                s.pnp = Rc::new(Rc::unwrap_or_clone(s.pnp).reduce(a));
                // A loaded model's id goes into the CONNECT user name, as the Advanced field's does.
                if s.pnp.generation != generation {
                    let id = s.pnp.model_id().unwrap_or_default().to_owned();
                    Rc::make_mut(&mut s.settings).apply(Change::Text(Text::ModelId, id));
                }
            }
        }
        Rc::new(s)
    }
}

/// Adds a registration step's line after the others, which are no longer active; beyond [`MAX_DPS_STEPS`] the
/// second line goes (the first, where the registration started, stays).
fn push_step(steps: &mut Vec<DpsStep>, step: DpsStep) {
    for st in steps.iter_mut() {
        st.active = false;
    }
    if steps.len() >= MAX_DPS_STEPS {
        steps.remove(1.min(steps.len() - 1));
    }
    steps.push(step);
}

/// Adds `v` at the front and drops the oldest beyond `max`. Copies only pointers when the list is shared.
fn push_bounded<T>(q: &mut Rc<VecDeque<Rc<T>>>, v: Rc<T>, max: usize) {
    let q = Rc::make_mut(q);
    q.push_front(v);
    q.truncate(max);
}

#[cfg(target_arch = "wasm32")]
mod yew_glue {
    use super::*;

    impl yew::Reducible for AppState {
        type Action = Action;
        fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
            AppState::reduce(self, action)
        }
    }

    /// Passed by the app to its panels (as an argument, or a prop of the status bar and the charts): the reducer's
    /// handle and the state it was made with, compared by identity.
    ///
    /// Every action makes a new state, so the state a component saw is the current one exactly when it is the
    /// same allocation. Comparing the two states' addresses instead of their fields (the handle's own
    /// `PartialEq`) gives the same renders but for an action that changes nothing, and keeps the deep comparison of
    /// the whole state out of the bundle. The address is never dereferenced; the handle keeps the state it was made
    /// with alive, so two contexts being compared cannot share an address unless they share the state. (Not
    /// `&*handle` at comparison time: the handle reads the reducer's latest state, the same for old and new.)
    #[derive(Clone)]
    pub struct AppContext {
        handle: yew::UseReducerHandle<AppState>,
        state: *const AppState,
    }

    impl AppContext {
        /// The context for the state `handle` holds now (call it in the render that made the handle).
        pub fn new(handle: yew::UseReducerHandle<AppState>) -> Self {
            let state: *const AppState = &*handle;
            AppContext { handle, state }
        }
    }

    impl PartialEq for AppContext {
        fn eq(&self, other: &Self) -> bool {
            std::ptr::eq(self.state, other.state)
        }
    }

    impl std::ops::Deref for AppContext {
        type Target = yew::UseReducerHandle<AppState>;
        fn deref(&self) -> &Self::Target {
            &self.handle
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use yew_glue::AppContext;

/// A twin section as the twin panel shows it (pretty JSON, as last read) with a patch applied as the hub applies
/// it (JSON merge patch: `null` removes) and `$version` set when given: `None` before the twin was read, when
/// either is not a JSON object, or for a desired patch whose `$version` is not newer than the document's.
fn patched_section(doc: &str, patch: &str, version: Option<u64>) -> Option<String> {
    use hubsim_proto::json::{self, Value};
    let (Ok(mut d @ Value::Object(_)), Ok(p @ Value::Object(_))) = (json::parse(doc), json::parse(patch)) else {
        return None;
    };
    // A patch older than the document shown changes nothing (as IoT Hub's twin docs tell devices to do).
    let v = |x: &Value| x.get("$version").and_then(Value::as_i64);
    if version.is_none() && v(&p).is_some_and(|pv| v(&d).is_some_and(|dv| pv <= dv)) {
        return None;
    }
    json::merge_patch(&mut d, &p);
    if let (Some(v), Value::Object(o)) = (version, &mut d) {
        o.insert("$version".into(), Value::Number(json::Number::Int(v as i64)));
    }
    Some(json::to_string_pretty(&d))
}

#[cfg(test)]
mod tests;
