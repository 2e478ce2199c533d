//! Template mode of the composer ([`view_editor`]: the template, header template, a form per variable, the
//! engine's errors with their position, a live preview of the next body, properties and topic, "Send one" and a
//! schedule) and the saved-messages panel ([`SavedMessages`]: the library in `localStorage`, export and import
//! of a JSON file, schedules running at once with their counts).

use wasm_bindgen::JsCast;
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::field_value;
use crate::controller::ControllerHandle;
use crate::library::{self, Message};
use crate::settings::{Change, Number, Text};
use crate::state::templates::{DraftEdit, TmplAction};
use crate::state::{Action, AppContext};
use crate::util::Same;

const STORAGE_KEY: &str = "hubsim.messages";
/// The composer's template draft and mode (`TmplState::draft_json`).
const DRAFT_KEY: &str = "hubsim.draft";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn tmpl(app: &AppContext, a: TmplAction) {
    app.dispatch(Action::Tmpl(a));
}

/// The draft as it is sent: the composer's application properties and QoS.
fn draft_message(app: &AppContext) -> Message {
    let mut m = (*app.templates.draft).clone();
    m.template = true;
    m.properties = app.settings.properties.iter().filter(|(k, _)| !k.trim().is_empty()).cloned().collect();
    m.qos = app.settings.qos.min(1) as u8;
    m
}

/// Which draft field an input edits: data, so that every input shares two callback types (each distinct
/// closure type would be its own code in the bundle).
#[derive(Clone, Copy)]
enum Target {
    Body,
    Header,
    Name,
    Field(usize, &'static str),
    Kind(usize),
    Number(fn(u32) -> DraftEdit),
}

fn edit_of(t: Target, v: String) -> Option<DraftEdit> {
    Some(match t {
        Target::Body => DraftEdit::Body(v),
        Target::Header => DraftEdit::Header(v),
        Target::Name => DraftEdit::Name(v),
        Target::Field(i, key) => DraftEdit::Field(i, key.into(), v),
        Target::Kind(i) => DraftEdit::Kind(i, v),
        Target::Number(make) => make(v.trim().parse().ok()?),
    })
}

fn on_change(app: &AppContext, t: Target) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |e: Event| {
        if let Some(edit) = field_value(&e).and_then(|v| edit_of(t, v)) {
            tmpl(&app, TmplAction::Draft(edit));
        }
    })
}

fn on_input(app: &AppContext, t: Target) -> Callback<InputEvent> {
    let app = app.clone();
    Callback::from(move |e: InputEvent| {
        if let Some(edit) = field_value(&e).and_then(|v| edit_of(t, v)) {
            tmpl(&app, TmplAction::Draft(edit));
        }
    })
}

fn num_field(app: &AppContext, label: &'static str, value: u32, range: (u32, u32), make: fn(u32) -> DraftEdit) -> Html {
    let cb = on_change(app, Target::Number(make));
    super::num_field(label, value, range, None, cb)
}

fn view_variable(app: &AppContext, i: usize, v: &hubsim_template::Variable) -> Html {
    let kind = library::kind_key(v);
    let label = |l: &str| [v.name.as_str(), ": ", l].concat();
    let fields = library::fields(v).iter().map(|(key, l)| {
        let cb = on_change(app, Target::Field(i, key));
        super::named_field(l, label(l), library::field_text(v, key), Some(cb), None)
    });
    let remove = {
        let app = app.clone();
        Callback::from(move |_| tmpl(&app, TmplAction::Draft(DraftEdit::RemoveVar(i))))
    };
    let error = app.templates.var_error.as_ref().filter(|e| e.0 == i).map(|e| e.1.clone());
    html! {
        // Keyed by place: a removed variable's row goes and the rows below move up, so the focused Remove button
        // stays on the row that takes its place (unkeyed, Yew removes the first row and shifts the others down).
        <fieldset class="var" key={i}>
            <legend><code>{"$."}{&v.name}</code></legend>
            <div class="grid2">
                { super::named_field("Name", label("Name"), v.name.clone(), Some(on_change(app, Target::Field(i, "name"))), None) }
                { super::select("Generator", Some(label("Generator")), on_change(app, Target::Kind(i)), &library::KINDS, kind) }
                { for fields }
            </div>
            if let Some(e) = error {
                <p class="warn-text" role="alert">{e}</p>
            }
            <button type="button" onclick={remove}>{"Remove "}{&v.name}</button>
        </fieldset>
    }
}

/// The composer's template mode.
pub fn view_editor(app: &AppContext, ctl: &ControllerHandle) -> Html {
    let d = &app.templates.draft;
    let running = app.templates.runs.iter().filter(|r| r.running).count();
    let msg = draft_message(app);
    let device = crate::schedule::device_id(&app.settings);
    let preview = match ctl.0.sched.preview(&msg, &device) {
        Ok(r) => {
            let body = String::from_utf8_lossy(&r.body).into_owned();
            let json = if !msg.is_json() {
                html! {}
            } else if let Err(e) = r.check_json() {
                html! { <p class="warn-text" role="alert">{"The rendered body is not JSON, so it will not be sent: "}{e.to_string()}</p> }
            } else {
                super::tx("span", &[("class", Static("ok-text"))], "valid JSON")
            };
            let mut s = (*app.settings).clone();
            s.properties = msg.properties.iter().cloned().chain(r.properties).collect();
            html! {
                <>
                    // A <pre> cannot carry aria-label (axe: aria-prohibited-attr): a named group holds it.
                    <div role="group" aria-label="Next body"><pre class="preview wrap">{body}</pre></div>
                    {json}
                    { super::topic("Template topic preview", crate::form::topic_preview(&s)) }
                </>
            }
        }
        Err(e) => html! { <p class="warn-text" role="alert">{e}</p> },
    };
    let add = {
        let app = app.clone();
        Callback::from(move |e: Event| {
            if let Some(k) = field_value(&e).filter(|k| !k.is_empty()) {
                tmpl(&app, TmplAction::Draft(DraftEdit::AddVar(k)));
            }
            if let Some(s) = e.target().and_then(|t| t.dyn_into::<web_sys::HtmlSelectElement>().ok()) {
                s.set_value("");
            }
        })
    };
    let mut kinds = vec![("", "choose a generator…")];
    kinds.extend(library::KINDS);
    let send_one = {
        let (ctl, m) = (ctl.clone(), msg.clone());
        Callback::from(move |_| {
            let _ = ctl.0.sched.send_one(&ctl.0, &m, true);
        })
    };
    let run = {
        let (ctl, m) = (ctl.clone(), msg);
        Callback::from(move |_| ctl.0.sched.start(&ctl.0, m.clone(), true))
    };
    let reset = {
        let ctl = ctl.clone();
        let app = app.clone();
        Callback::from(move |_| {
            ctl.0.sched.reset();
            tmpl(&app, TmplAction::Notice(true, "template state reset: counters and walks start again".into()));
        })
    };
    html! {
        <div class="template-mode">
            { super::tx("label", &[("for", Static("template"))], "Template") }
            <textarea id="template" rows="5" spellcheck="false" value={d.body.clone()}
                oninput={on_input(app, Target::Body)} />
            { super::tx("label", &[("for", Static("header-template"))], "Header template (application properties)") }
            <textarea id="header-template" rows="2" spellcheck="false" placeholder={"{\"unit\": \"C\", \"seq\": \"$.Counter\"}"} value={d.header.clone()}
                oninput={on_input(app, Target::Header)} />
            { super::tx("p", &[("class", Static("muted"))], "Placeholders: $.Name of a variable, or $.DeviceId, $.Guid, $.Time, $.LocalTime, $.Ticks, $.Epoch, $.MachineName, $.IterationNumber.") }
            { super::tx("h3", &[], "Variables") }
            { for d.variables.iter().enumerate().map(|(i, v)| view_variable(app, i, v)) }
            { super::select("Add a variable", None, add, &kinds, "") }
            { super::tx("h3", &[], "Preview of the next message") }
            { preview }
            <div class="buttons">
                <button type="button" class="primary" onclick={send_one}>{"Send one"}</button>
                { super::button("Reset counters", reset, false) }
            </div>
            <fieldset class="repeat">
                { super::tx("legend", &[], "Schedule") }
                { num_field(app, "Every (ms)", d.every_ms, (library::MIN_EVERY_MS, library::MAX_MS), DraftEdit::Every) }
                { num_field(app, "Jitter ± (ms)", d.jitter_ms, (0, library::MAX_MS), DraftEdit::Jitter) }
                { num_field(app, "Times (0 = no limit)", d.count, (0, library::MAX_COUNT), DraftEdit::Count) }
                { num_field(app, "For (ms, 0 = until stopped)", d.duration_ms, (0, library::MAX_MS), DraftEdit::Duration) }
                { super::button("Run on a schedule", run, is_running(app, &d.name)) }
                if running > 0 {
                    <p class="muted" aria-live="polite">
                        { running.to_string() }{ if running == 1 { " schedule running" } else { " schedules running" } }
                        {": progress and Stop under "}{ super::tx("a", &[("href", Static("#schedules-h"))], "Saved messages → Schedules") }
                    </p>
                }
            </fieldset>
        </div>
    }
}

/// Whether a schedule of the message named `name` is running (its Run buttons are disabled: one schedule per
/// message; Stop it first).
fn is_running(app: &AppContext, name: &str) -> bool {
    app.templates.runs.iter().any(|r| r.running && r.name == name)
}

fn view_run(ctl: &ControllerHandle, r: &crate::state::templates::RunView, pending: usize) -> Html {
    let stop = {
        let (ctl, id) = (ctl.clone(), r.id);
        Callback::from(move |_| ctl.0.sched.stop(&ctl.0, id))
    };
    let counts = [
        "sent ",
        &r.sent.to_string(),
        ", acknowledged ",
        &r.acked.to_string(),
        ", pending ",
        &pending.to_string(),
        if r.failed > 0 { ", failed " } else { "" },
        &if r.failed > 0 { r.failed.to_string() } else { String::new() },
    ]
    .concat();
    html! {
        <li class="run">
            <strong>{&r.name}</strong>
            if let Some(t) = r.total {
                <progress aria-label={["Progress of ", &r.name].concat()} max={t.to_string()} value={r.sent.to_string()}></progress>
            }
            <span class="counts">{counts}</span>
            if r.running {
                <button type="button" onclick={stop}>{"Stop "}{&r.name}</button>
            } else {
                { super::tx("span", &[], " (ended)") }
            }
        </li>
    }
}

/// The storage of the saved messages and of the composer's template draft: read once the panel is `shown` (the
/// page's other panels come after the connect form's first paint), the library written after each change of it
/// (it changes only through the panel, so it is unchanged, revision 0, until the panel was shown and the stored
/// library read), the draft and mode after each change once the stored ones were read (as the text payload is
/// kept with the settings; a full storage is said by the library's and the settings' notices).
#[hook]
pub fn use_saved_messages(app: &AppContext, shown: bool) {
    let t = &app.templates;
    let draft = app.clone();
    use_effect_with((Same(t.draft.clone()), t.on, t.stored_read), move |(_, _, read)| {
        if let (true, Some(s)) = (*read, storage()) {
            let _ = s.set_item(DRAFT_KEY, &draft.templates.draft_json());
        }
    });
    let app = app.clone();
    use_effect_with((shown, app.templates.library_rev), move |&(shown, rev)| {
        if rev == 0 {
            if shown {
                let read = |key| storage().and_then(|s| s.get_item(key).ok().flatten());
                tmpl(&app, TmplAction::Stored { library: read(STORAGE_KEY), draft: read(DRAFT_KEY) });
            }
            return;
        }
        let list = &app.templates.library;
        if storage().is_none_or(|s| s.set_item(STORAGE_KEY, &library::export(list)).is_err()) {
            let text = "the saved messages could not be stored: this browser's storage is full or disabled";
            tmpl(&app, TmplAction::Notice(false, text.into()));
        }
    });
}

/// The saved messages and the schedules. A plain function called by the app, not a component (a component type
/// costs some KB of the bundle); [`use_saved_messages`] keeps their storage.
pub fn view_saved_messages(app: &AppContext, ctl: &ControllerHandle) -> Html {
    let t = &app.templates;
    let save = {
        let app = app.clone();
        Callback::from(move |_| {
            let s = &app.settings;
            let properties = s.properties.iter().filter(|(k, _)| !k.trim().is_empty()).cloned().collect();
            tmpl(&app, TmplAction::Save { properties, qos: s.qos.min(1) as u8, text: s.body.clone() });
        })
    };
    let export = {
        let app = app.clone();
        Callback::from(move |_| {
            crate::util::download("hubsim-messages.json", "application/json", &library::export(&app.templates.library));
        })
    };
    let import = {
        let app = app.clone();
        Callback::from(move |e: Event| {
            let Some(input) = e.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) else { return };
            let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
            input.set_value("");
            let name = file.name();
            if file.size() > library::MAX_FILE as f64 {
                let text = ["not imported (nothing changed): ", &name, " is larger than 1024 KB"].concat();
                return tmpl(&app, TmplAction::Notice(false, text));
            }
            let app = app.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let text = wasm_bindgen_futures::JsFuture::from(file.text()).await.ok().and_then(|v| v.as_string());
                match text {
                    Some(text) => tmpl(&app, TmplAction::Import { text, file_name: name }),
                    None => tmpl(&app, TmplAction::Notice(false, ["cannot read ", &name].concat())),
                }
            });
        })
    };
    let rows = t.library.iter().map(|m| {
        let load = {
            let (app, m) = (app.clone(), m.clone());
            Callback::from(move |_| {
                tmpl(&app, TmplAction::Load(m.name.clone()));
                app.dispatch(Action::Edit(Change::Properties(m.properties.clone())));
                app.dispatch(Action::Edit(Change::Number(Number::Qos, u32::from(m.qos))));
                if !m.template {
                    app.dispatch(Action::Edit(Change::Text(Text::Body, m.body.clone())));
                }
            })
        };
        let run = {
            let (ctl, m) = (ctl.clone(), m.clone());
            Callback::from(move |_| ctl.0.sched.start(&ctl.0, m.clone(), false))
        };
        // A deleted message's schedules stop with it.
        let delete = {
            let (app, ctl, name) = (app.clone(), ctl.clone(), m.name.clone());
            Callback::from(move |_| {
                ctl.0.sched.stop_named(&ctl.0, &name);
                tmpl(&app, TmplAction::Delete(name.clone()))
            })
        };
        // One message alone is the file `hubsim simulate --template` reads.
        let download = {
            let m = m.clone();
            Callback::from(move |_| {
                let file = [m.name.as_str(), ".json"].concat();
                crate::util::download(&file, "application/json", &m.to_json().to_string());
            })
        };
        // The schedule as Run will follow it: every N ms (± jitter), M times, for a duration, or until stopped.
        let mut every = ["every ", &m.every_ms.to_string(), " ms"].concat();
        if m.jitter_ms > 0 {
            every += &[" ± ", &m.jitter_ms.to_string(), " ms"].concat();
        }
        if m.count > 0 {
            every += &[", ", &m.count.to_string(), " times"].concat();
        }
        if m.duration_ms > 0 {
            every += &[", for ", &m.duration_ms.to_string(), " ms"].concat();
        }
        if m.count == 0 && m.duration_ms == 0 {
            every += ", until stopped";
        }
        html! {
            <li key={m.name.clone()}>
                <span class="name">{&m.name}</span>
                <span class="muted">{if m.template { " template, " } else { " text, " }}{every}</span>
                { super::named_button("Edit", ["Edit ", &m.name].concat(), load, false) }
                { super::named_button("Run", ["Run ", &m.name].concat(), run, is_running(app, &m.name)) }
                { super::named_button("Download", ["Download ", &m.name].concat(), download, false) }
                { super::named_button("Delete", ["Delete ", &m.name].concat(), delete, false) }
            </li>
        }
    });
    let runs = t.runs.iter().map(|r| view_run(ctl, r, r.pending(&t.inflight)));
    html! {
        <section class="panel saved" aria-labelledby="saved-h">
            { super::tx("h2", &[("id", Static("saved-h"))], "Saved messages") }
            <div class="row">
                <label>{"Name"}<input value={t.draft.name.clone()}
                    oninput={on_input(app, Target::Name)} /></label>
                { super::button("Save current message", save, false) }
            </div>
            { super::el("ul", &[("class", Static("library")), ("aria-label", Static("Saved messages"))], Html::from_iter(rows)) }
            <div class="row">
                { super::button("Export saved messages", export, false) }
                <label class="file">{"Import (saved messages or an Iot-Telemetry-Simulator configuration)"}
                    <input type="file" accept=".json,application/json" onchange={import} /></label>
            </div>
            <p class="muted">{"At most "}{library::MAX_SAVED}{" messages, kept in this browser."}</p>
            if let Some(n) = &t.notice {
                { super::el_dyn("p", &["class", "aria-live"], &[if n.0 { "ok-text" } else { "warn-text" }, "polite"], Html::from(&n.1)) }
            }
            if !t.runs.is_empty() {
                { super::tx("h3", &[("id", Static("schedules-h"))], "Schedules") }
                { super::el("ul", &[("class", Static("runs")), ("aria-label", Static("Schedules"))], Html::from_iter(runs)) }
                if t.runs.iter().any(|r| !r.running) {
                    { super::button("Clear ended schedules", super::on_click(app, || Action::Tmpl(TmplAction::ClearEnded)), false) }
                }
            }
        </section>
    }
}
