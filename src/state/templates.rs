//! The composer's template mode and the saved-message library, as pure state: the draft being edited, the
//! library, the schedules' progress and acknowledgement counts. The timers and the per-device template state
//! (counters, walks) live in [`crate::schedule`]; here only data changes, so it is tested natively.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::library::{self, Message};

/// Most schedules shown at once (running or finished); also the most that run at once.
pub const MAX_RUNS: usize = 8;
/// Most QoS 1 messages of schedules tracked until acknowledged (older ones are counted as pending forever).
pub const MAX_INFLIGHT: usize = 4096;

/// One schedule's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunView {
    pub id: u32,
    pub name: String,
    /// Messages to send, when the schedule has a count.
    pub total: Option<u32>,
    pub sent: u32,
    pub acked: u32,
    /// Renders or sends that failed (logged).
    pub failed: u32,
    pub running: bool,
}

impl RunView {
    /// QoS 1 messages sent and not yet acknowledged.
    pub fn pending(&self, inflight: &VecDeque<(u64, u32)>) -> usize {
        inflight.iter().filter(|(_, r)| *r == self.id).count()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TmplState {
    /// Template mode of the composer (else plain text).
    pub on: bool,
    pub draft: Rc<Message>,
    pub library: Rc<Vec<Message>>,
    /// Counts library changes, so the page stores the library only after one.
    pub library_rev: u64,
    pub runs: Rc<Vec<RunView>>,
    /// `(publish id, run id)` of QoS 1 messages waiting for their PUBACK.
    pub inflight: Rc<VecDeque<(u64, u32)>>,
    /// The last library operation's result: `(ok, text)`.
    pub notice: Option<Rc<(bool, String)>>,
    /// This browser's stored library and draft were read ([`TmplAction::Stored`]): the draft is stored from then
    /// on (not before, or the default draft would replace the stored one).
    pub stored_read: bool,
    /// A refused variable edit: `(variable index, why, the field refused or "")`.
    pub var_error: Option<Rc<(usize, String, String)>>,
}

impl Default for TmplState {
    fn default() -> Self {
        TmplState {
            on: false,
            draft: Rc::default(),
            library: Rc::new(library::examples()),
            library_rev: 0,
            stored_read: false,
            runs: Rc::default(),
            inflight: Rc::default(),
            notice: None,
            var_error: None,
        }
    }
}

/// An edit of the draft.
#[derive(Clone, Debug, PartialEq)]
pub enum DraftEdit {
    Name(String),
    Body(String),
    Header(String),
    /// A new variable of a generator kind ([`library::KINDS`] key).
    AddVar(String),
    RemoveVar(usize),
    /// Another generator kind for variable `i` (its name is kept).
    Kind(usize, String),
    /// `(variable, field, text)`: a field of the variable's form ([`library::fields`]), or `name`.
    Field(usize, String, String),
    Every(u32),
    Jitter(u32),
    Count(u32),
    Duration(u32),
}

/// Everything that changes the template state, as plain data.
#[derive(Clone, Debug, PartialEq)]
pub enum TmplAction {
    Mode(bool),
    Draft(DraftEdit),
    /// A saved message into the draft.
    Load(String),
    /// The draft into the library, with the composer's application properties and QoS, and in text mode the
    /// composer's body (`text`).
    Save {
        properties: Vec<(String, String)>,
        qos: u8,
        text: String,
    },
    Delete(String),
    /// The stored library text (at start).
    /// What this browser stored: the library, and the composer's template draft with its mode
    /// (`{"on": bool, "message": {…}}`, [`TmplState::draft_json`]).
    Stored {
        library: Option<String>,
        draft: Option<String>,
    },
    /// A file the user picked: hubsim's saved messages or an Iot-Telemetry-Simulator configuration.
    Import {
        text: String,
        file_name: String,
    },
    /// Export's and others' results shown to the user.
    Notice(bool, String),
    Started {
        id: u32,
        name: String,
        total: Option<u32>,
    },
    /// A message of run `id` went out; `publish` is its id when an acknowledgement is expected (QoS 1).
    Sent {
        id: u32,
        publish: Option<u64>,
    },
    Failed(u32),
    Acked(u64),
    Ended(u32),
    /// The ended schedules leave the list.
    ClearEnded,
}

fn clamp_ms(n: u32, lo: u32) -> u32 {
    n.clamp(lo, library::MAX_MS)
}

impl TmplState {
    fn notice(&mut self, ok: bool, text: String) {
        self.notice = Some(Rc::new((ok, text)));
    }

    /// The draft and the mode as this browser stores them: `{"on": bool, "message": {…}}`.
    pub fn draft_json(&self) -> String {
        use hubsim_proto::json::{Object, Value};
        let mut o = Object::new();
        o.insert("on".into(), Value::Bool(self.on));
        o.insert("message".into(), self.draft.to_json());
        Value::Object(o).to_string()
    }

    fn changed_library(&mut self, list: Vec<Message>) {
        self.library = Rc::new(list);
        self.library_rev += 1;
    }

    /// Applies one edit of the draft. A variable's refusal stays until that variable is edited again or removed
    /// (the rows below a removed one move up, and so does a refusal shown on one of them): an edit of anything
    /// else, or the Remove clicked right after a refused entry, must not make it vanish unread. A refused field
    /// stays refused through accepted edits of the variable's other fields (a `min` refused as above `max`, then
    /// `max` changed: the refused entry is still not in).
    fn edit(&mut self, e: DraftEdit) {
        let d = Rc::make_mut(&mut self.draft);
        let mut var_error = None;
        // (the variable this edit is about, whether it removes it, the field it edits)
        let mut about: Option<(usize, bool, &str)> = None;
        match e {
            DraftEdit::Name(n) => d.name = n.chars().take(library::MAX_NAME).collect(),
            DraftEdit::Body(b) => d.body = clip(b),
            DraftEdit::Header(h) => d.header = clip(h),
            DraftEdit::AddVar(kind) => {
                if d.variables.len() >= library::MAX_VARIABLES {
                    var_error = Some((d.variables.len(), "at most 32 variables".to_owned(), String::new()));
                } else {
                    // The first placeholder of the template that nothing declares yet (the one an "unknown
                    // variable" error names), else the first free name `VarN`.
                    let declared = |n: &str| {
                        d.variables.iter().any(|v| v.name == n)
                            || hubsim_template::Builtin::ALL.iter().any(|b| b.name() == n)
                    };
                    let name = hubsim_template::placeholder_names(&d.body)
                        .chain(hubsim_template::placeholder_names(&d.header))
                        .find(|n| !declared(n))
                        .map(str::to_owned)
                        .unwrap_or_else(|| {
                            (1..).map(|i| ["Var", &i.to_string()].concat()).find(|n| !declared(n)).unwrap_or_default()
                        });
                    match library::new_variable(&name, &kind) {
                        Ok(v) => d.variables.push(v),
                        Err(e) => var_error = Some((d.variables.len(), e, String::new())),
                    }
                }
            }
            DraftEdit::RemoveVar(i) => {
                about = Some((i, true, ""));
                if i < d.variables.len() {
                    d.variables.remove(i);
                }
            }
            DraftEdit::Kind(i, kind) => {
                about = Some((i, false, ""));
                if let Some(v) = d.variables.get_mut(i) {
                    match library::new_variable(&v.name, &kind) {
                        Ok(n) => *v = n,
                        Err(e) => var_error = Some((i, e, String::new())),
                    }
                }
            }
            DraftEdit::Field(i, ref field, ref text) => {
                about = Some((i, false, field));
                let taken = field == "name" && d.variables.iter().any(|v| v.name == text.trim());
                if let Some(v) = d.variables.get_mut(i) {
                    let refused = if taken && v.name != text.trim() {
                        Some(["another variable is named ", text.trim()].concat())
                    } else {
                        match library::set_field(v, field, text) {
                            Ok(n) => {
                                *v = n;
                                None
                            }
                            Err(e) => Some(e),
                        }
                    };
                    // The field shows the kept value again (it commits on change): say so, or the message would
                    // seem to be about what the field now shows.
                    var_error = refused.map(|e| {
                        let kept = library::field_text(v, field);
                        (
                            i,
                            [e.as_str(), "; kept ", if kept.is_empty() { "nothing" } else { &kept }].concat(),
                            field.clone(),
                        )
                    });
                }
            }
            DraftEdit::Every(n) => d.every_ms = clamp_ms(n, library::MIN_EVERY_MS),
            DraftEdit::Jitter(n) => d.jitter_ms = clamp_ms(n, 0),
            DraftEdit::Count(n) => d.count = n.min(library::MAX_COUNT),
            DraftEdit::Duration(n) => d.duration_ms = clamp_ms(n, 0),
        }
        self.var_error = match (var_error, self.var_error.take(), about) {
            (Some(e), ..) => Some(Rc::new(e)),
            (None, Some(old), Some((i, removed, field))) if old.0 >= i => match (old.0 == i, removed) {
                (true, false) if !old.2.is_empty() && !field.is_empty() && old.2 != field => Some(old),
                (true, _) => None,
                (false, true) => Some(Rc::new((old.0 - 1, old.1.clone(), old.2.clone()))),
                (false, false) => Some(old),
            },
            (None, old, _) => old,
        };
    }

    /// Applies one action. Pure.
    pub fn apply(&mut self, a: TmplAction) {
        match a {
            TmplAction::Mode(on) => self.on = on,
            TmplAction::Draft(e) => self.edit(e),
            TmplAction::Load(name) => {
                if let Some(m) = self.library.iter().find(|m| m.name == name) {
                    self.draft = Rc::new(m.clone());
                    self.on = m.template;
                    self.var_error = None;
                }
            }
            TmplAction::Save { properties, qos, text } => {
                let mut m = (*self.draft).clone();
                if !self.on {
                    m.body = clip(text);
                }
                m.properties = properties.into_iter().take(library::MAX_PROPERTIES).collect();
                m.qos = qos.min(1);
                m.template = self.on;
                let checked = library::check_name(&m.name).and_then(|name| {
                    m.name = name;
                    if m.template {
                        m.config()?;
                    }
                    let mut list = (*self.library).clone();
                    library::upsert(&mut list, m.clone())?;
                    Ok(list)
                });
                match checked {
                    Ok(list) => {
                        self.notice(true, ["saved \"", &m.name, "\""].concat());
                        self.changed_library(list);
                    }
                    Err(e) => self.notice(false, ["not saved: ", &e].concat()),
                }
            }
            TmplAction::Delete(name) => {
                let mut list = (*self.library).clone();
                list.retain(|m| m.name != name);
                self.notice(true, ["deleted \"", &name, "\""].concat());
                self.changed_library(list);
            }
            TmplAction::Stored { library: text, draft } => {
                let (list, refused) = library::load(text.as_deref());
                self.library = Rc::new(list);
                if let Some(r) = refused {
                    self.notice(false, r);
                }
                self.stored_read = true;
                // A stored draft that cannot be read (another version's, edited by hand) leaves the default one.
                let stored = draft.as_deref().and_then(|t| hubsim_proto::json::parse(t).ok());
                if let Some(o) = stored.as_ref().and_then(|v| v.as_object()) {
                    if let Some(m) = o.get("message").and_then(|m| Message::draft_from_json(m).ok()) {
                        self.draft = Rc::new(m);
                        self.on = o.get("on").and_then(|v| v.as_bool()).unwrap_or(false);
                    }
                }
            }
            TmplAction::Import { text, file_name } => {
                match library::read_file(&text, &file_name).and_then(|(new, what)| {
                    // The one imported message's name, to open it.
                    let one = match new.as_slice() {
                        [m] => Some(m.name.clone()),
                        _ => None,
                    };
                    library::merge(&self.library, new).map(|list| (list, what, one))
                }) {
                    Ok((list, what, one)) => {
                        self.notice(true, ["imported ", &what].concat());
                        self.changed_library(list);
                        if let Some(one) = one {
                            self.apply(TmplAction::Load(one));
                        }
                    }
                    Err(e) => self.notice(false, ["not imported (nothing changed): ", &e].concat()),
                }
            }
            TmplAction::Notice(ok, text) => self.notice(ok, text),
            TmplAction::Started { id, name, total } => {
                let runs = Rc::make_mut(&mut self.runs);
                if runs.len() >= MAX_RUNS {
                    // The oldest finished one, else the oldest (the scheduler runs at most MAX_RUNS).
                    runs.remove(runs.iter().position(|r| !r.running).unwrap_or(0));
                }
                runs.push(RunView { id, name, total, sent: 0, acked: 0, failed: 0, running: true });
            }
            TmplAction::Sent { id, publish } => {
                if let Some(r) = Rc::make_mut(&mut self.runs).iter_mut().find(|r| r.id == id) {
                    r.sent += 1;
                    if publish.is_none() {
                        r.acked += 1;
                    }
                }
                if let Some(p) = publish {
                    let q = Rc::make_mut(&mut self.inflight);
                    q.push_back((p, id));
                    if q.len() > MAX_INFLIGHT {
                        q.pop_front();
                    }
                }
            }
            TmplAction::Failed(id) => {
                if let Some(r) = Rc::make_mut(&mut self.runs).iter_mut().find(|r| r.id == id) {
                    r.failed += 1;
                }
            }
            TmplAction::Acked(p) => {
                if let Some(i) = self.inflight.iter().position(|(x, _)| *x == p) {
                    let q = Rc::make_mut(&mut self.inflight);
                    if let Some((_, id)) = q.remove(i) {
                        if let Some(r) = Rc::make_mut(&mut self.runs).iter_mut().find(|r| r.id == id) {
                            r.acked += 1;
                        }
                    }
                }
            }
            TmplAction::ClearEnded => Rc::make_mut(&mut self.runs).retain(|r| r.running),
            TmplAction::Ended(id) => {
                if let Some(r) = Rc::make_mut(&mut self.runs).iter_mut().find(|r| r.id == id) {
                    r.running = false;
                }
            }
        }
    }
}

fn clip(mut s: String) -> String {
    if s.len() > library::MAX_TEXT {
        let mut end = library::MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests;
