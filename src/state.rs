//! The app state and its pure reducer. Effects (sockets, timers, storage) live in [`crate::controller`] and the
//! components' `use_effect_with`; here only data changes.

use std::collections::VecDeque;
use std::rc::Rc;
use yew::prelude::*;

use crate::settings::Settings;

/// Most inbox entries, method calls and log lines kept, so a long session does not grow without limit.
pub const MAX_INBOX: usize = 200;
pub const MAX_METHODS: usize = 100;
pub const MAX_LOG: usize = 1000;

/// The connection as the user sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnStatus {
    Disconnected { reason: Option<String>, hint: Option<String> },
    Connecting { attempt: u32 },
    Connected { since: String, session_present: bool },
    Reconnecting { at_ms: f64, attempt: u32, reason: String, hint: Option<String> },
}

/// A received C2D message, decoded for display.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxItem {
    pub seq: u64,
    pub time: String,
    pub body: String,
    /// `text`, `json` or `hex`.
    pub body_kind: &'static str,
    pub system: Vec<(String, String)>,
    pub application: Vec<(String, String)>,
    pub redelivered: bool,
}

/// A direct method call and what was answered.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCall {
    pub seq: u64,
    pub time: String,
    pub name: String,
    pub payload: String,
    pub status: u16,
    pub response: String,
}

/// Configured answer for a method name.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodAnswer {
    pub name: String,
    pub status: u16,
    pub payload: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    pub time: String,
    /// `connection`, `sent`, `received`, `error`.
    pub kind: &'static str,
    pub text: String,
}

/// Repeated sending in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Repeat {
    pub total: Option<u32>,
    pub done: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppState {
    pub settings: Settings,
    pub status: ConnStatus,
    /// Unix seconds when the current token expires.
    pub token_expiry: Option<u64>,
    pub sent: u64,
    pub acked: u64,
    pub inbox: VecDeque<InboxItem>,
    pub unread: u32,
    pub methods: VecDeque<MethodCall>,
    pub answers: Vec<MethodAnswer>,
    pub twin_desired: String,
    pub twin_reported: String,
    pub twin_version: String,
    pub desired_updates: VecDeque<String>,
    pub log: VecDeque<LogEntry>,
    pub repeat: Option<Repeat>,
    /// The emulator serving this page, if any (its plain WebSocket URL).
    pub emulator_ws: Option<String>,
    /// Text for the screen-reader live region.
    pub announcement: String,
    next_seq: u64,
}

impl AppState {
    pub fn new(settings: Settings) -> Self {
        AppState {
            settings,
            status: ConnStatus::Disconnected { reason: None, hint: None },
            token_expiry: None,
            sent: 0,
            acked: 0,
            inbox: VecDeque::new(),
            unread: 0,
            methods: VecDeque::new(),
            answers: Vec::new(),
            twin_desired: String::new(),
            twin_reported: String::new(),
            twin_version: String::new(),
            desired_updates: VecDeque::new(),
            log: VecDeque::new(),
            repeat: None,
            emulator_ws: None,
            announcement: String::new(),
            next_seq: 1,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.status, ConnStatus::Connected { .. })
    }

    pub fn pending(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }

    /// The configured answer for a method name (default 200 and `{}`).
    pub fn answer_for(&self, name: &str) -> (u16, String) {
        self.answers
            .iter()
            .find(|a| a.name == name)
            .map(|a| (a.status, a.payload.clone()))
            .unwrap_or((200, "{}".into()))
    }
}

pub enum Action {
    Settings(Box<dyn FnOnce(&mut Settings)>),
    Status(ConnStatus),
    TokenExpiry(Option<u64>),
    Sent(u64),
    Acked,
    C2d(InboxItem),
    ClearInbox,
    MarkRead,
    Method(MethodCall),
    SetAnswer(MethodAnswer),
    RemoveAnswer(String),
    Twin { desired: String, reported: String, version: String },
    ReportedSaved(String),
    Desired(String),
    Log(&'static str, String),
    ClearLog,
    Repeat(Option<Repeat>),
    RepeatTick,
    Emulator(String),
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    q.push_front(v);
    q.truncate(max);
}

impl Reducible for AppState {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        let mut s = (*self).clone();
        let now = crate::util::clock_time();
        match action {
            Action::Settings(f) => f(&mut s.settings),
            Action::Status(st) => {
                let text = match &st {
                    ConnStatus::Connected { .. } => "connected".to_owned(),
                    ConnStatus::Connecting { attempt } => format!("connecting (attempt {attempt})"),
                    ConnStatus::Disconnected { reason, .. } => {
                        format!("disconnected{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())
                    }
                    ConnStatus::Reconnecting { reason, .. } => format!("connection lost: {reason}"),
                };
                s.next_seq += 1;
                push_bounded(
                    &mut s.log,
                    LogEntry { seq: s.next_seq, time: now, kind: "connection", text: text.clone() },
                    MAX_LOG,
                );
                s.announcement = text;
                s.status = st;
            }
            Action::TokenExpiry(t) => s.token_expiry = t,
            Action::Sent(n) => s.sent += n,
            Action::Acked => s.acked += 1,
            Action::C2d(mut item) => {
                s.next_seq += 1;
                item.seq = s.next_seq;
                s.announcement =
                    format!("new cloud-to-device message: {}", item.body.chars().take(60).collect::<String>());
                s.next_seq += 1;
                push_bounded(
                    &mut s.log,
                    LogEntry { seq: s.next_seq, time: now, kind: "received", text: format!("C2D {}", item.body) },
                    MAX_LOG,
                );
                push_bounded(&mut s.inbox, item, MAX_INBOX);
                s.unread += 1;
            }
            Action::ClearInbox => {
                s.inbox.clear();
                s.unread = 0;
            }
            Action::MarkRead => s.unread = 0,
            Action::Method(mut m) => {
                s.next_seq += 1;
                m.seq = s.next_seq;
                s.next_seq += 1;
                let text = format!("method {}({}) answered {} {}", m.name, m.payload, m.status, m.response);
                push_bounded(&mut s.log, LogEntry { seq: s.next_seq, time: now, kind: "received", text }, MAX_LOG);
                push_bounded(&mut s.methods, m, MAX_METHODS);
            }
            Action::SetAnswer(a) => {
                s.answers.retain(|x| x.name != a.name);
                s.answers.push(a);
            }
            Action::RemoveAnswer(name) => s.answers.retain(|x| x.name != name),
            Action::Twin { desired, reported, version } => {
                s.twin_desired = desired;
                s.twin_reported = reported;
                s.twin_version = version;
            }
            Action::ReportedSaved(v) => s.twin_version = v,
            Action::Desired(patch) => {
                s.next_seq += 1;
                push_bounded(
                    &mut s.log,
                    LogEntry {
                        seq: s.next_seq,
                        time: now.clone(),
                        kind: "received",
                        text: format!("desired properties {patch}"),
                    },
                    MAX_LOG,
                );
                push_bounded(&mut s.desired_updates, format!("{now} {patch}"), 50);
            }
            Action::Log(kind, text) => {
                s.next_seq += 1;
                push_bounded(&mut s.log, LogEntry { seq: s.next_seq, time: now, kind, text }, MAX_LOG);
            }
            Action::ClearLog => s.log.clear(),
            Action::Repeat(r) => s.repeat = r,
            Action::RepeatTick => {
                if let Some(r) = &mut s.repeat {
                    r.done += 1;
                    if r.total.is_some_and(|t| r.done >= t) {
                        s.repeat = None;
                    }
                }
            }
            Action::Emulator(ws) => {
                if s.settings.endpoint.is_empty() {
                    s.settings.endpoint = ws.clone();
                }
                s.emulator_ws = Some(ws);
            }
        }
        Rc::new(s)
    }
}

/// Shared with every component through a `ContextProvider`.
pub type AppContext = UseReducerHandle<AppState>;
