//! The telemetry composer: body, QoS, retain, system and application properties, the exact topic, and sending
//! once or repeatedly.

use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::property_row::view_property_row;
use super::{on_number, on_text};
use crate::controller::{Controller, ControllerHandle};
use crate::form::topic_preview;
use crate::settings::{Change, Flag, Number, Text};
use crate::state::{Action, AppContext};
use crate::util;

/// The QoS choices.
const QOS: &[(&str, &str)] =
    &[("0", "0 — at most once"), ("1", "1 — at least once"), ("2", "2 — IoT Hub closes the connection")];

/// The composer panel. A plain function called by the app, not a component: it reads only the app state and the
/// controller, which change (and re-render it) exactly when the app re-renders, and a component type costs some KB
/// of the bundle.
pub fn view_composer(app: &AppContext, ctl: &ControllerHandle) -> Html {
    let s = &app.settings;
    let json_state = if s.body.trim().is_empty() {
        html! {}
    } else if util::is_json(&s.body) {
        super::tx("span", &[("class", Static("ok-text"))], "valid JSON")
    } else if s.content_type.trim().to_ascii_lowercase().starts_with("application/json") {
        // IoT Hub routes on the body only when it is the JSON the content type says (otherwise routing queries on
        // the body fail and storage gets base64).
        super::tx("span", &[("class", Static("warn-text"))], "not JSON, but the content type says application/json")
    } else {
        super::tx("span", &[("class", Static("warn-text"))], "not JSON (sent as text)")
    };
    let edit = {
        let app = app.clone();
        move |c: Change| app.dispatch(Action::Edit(c))
    };
    // A payload over IoT Hub's limit is refused when it is sent; said here as it is typed, and not pretty-printed
    // (a textarea of megabytes of indented lines takes the browser seconds to lay out).
    let too_large = s.body.len() > hubsim_proto::MAX_TELEMETRY_SIZE;
    let pretty = {
        let (app, edit) = (app.clone(), edit.clone());
        Callback::from(move |_| {
            if let Ok(p) = util::json_pretty(&app.settings.body) {
                edit(Change::Text(Text::Body, p));
            }
        })
    };
    let routing = {
        let edit = edit.clone();
        Callback::from(move |_| {
            edit(Change::Text(Text::ContentType, "application/json".into()));
            edit(Change::Text(Text::ContentEncoding, "utf-8".into()));
        })
    };
    let add = Callback::from(move |_| edit(Change::AddProperty));
    let rows = s.properties.iter().enumerate().map(|(i, (k, v))| view_property_row(app, i, (k, v)));
    let templ = app.templates.on;
    let send = {
        let ctl = ctl.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if !templ {
                ctl.0.send();
            }
        })
    };
    let mode = |on: bool| {
        let app = app.clone();
        Callback::from(move |_| app.dispatch(Action::Tmpl(crate::state::templates::TmplAction::Mode(on))))
    };
    let repeat = super::on_click_ctl(ctl, Controller::start_repeat);
    let stop = super::on_click_ctl(ctl, Controller::stop_repeat);
    let connected = app.is_connected();
    html! {
        <section class="panel composer" aria-labelledby="compose-h">
            { super::tx("h2", &[("id", Static("compose-h"))], "Send telemetry") }
            <form onsubmit={send}>
                <div class="row" role="radiogroup" aria-label="Body">
                    { super::radio("body-mode", !templ, "Text", mode(false)) }
                    { super::radio("body-mode", templ, "Template", mode(true)) }
                </div>
                if templ {
                    { super::templates::view_editor(app, ctl) }
                } else {
                { super::tx("label", &[("for", Static("payload"))], "Payload") }
                <textarea id="payload" rows="6" spellcheck="false" value={s.body.clone()} oninput={on_text(app, Text::Body)}
                    aria-describedby="payload-err" aria-invalid={too_large.to_string()} />
                <div class="row">
                    { json_state }
                    { super::button("Pretty-print JSON", pretty, too_large) }
                </div>
                if too_large {
                    { super::error_p("payload-err", &["Payload: ", &s.body.len().to_string(), " bytes; IoT Hub accepts at most ", &hubsim_proto::MAX_TELEMETRY_SIZE.to_string(), " (body and properties), so it will not be sent"].concat()) }
                }
                }
                <div class="row">
                    { super::select("QoS", None, on_number(app, Number::Qos), QOS, &s.qos.to_string()) }
                    { super::check(app, Flag::Retain, s.retain, "Retain") }
                </div>
                if s.qos == 2 {
                    { super::tx("p", &[("class", Static("warn-text")), ("role", Static("alert"))], "IoT Hub does not support QoS 2: it will close the connection when this message is sent.") }
                }
                <fieldset>
                    { super::tx("legend", &[], "System properties") }
                    <div class="grid2">
                        { super::text_field("Content type", &s.content_type, "application/json", None, false, on_text(app, Text::ContentType)) }
                        { super::text_field("Content encoding", &s.content_encoding, "utf-8", None, false, on_text(app, Text::ContentEncoding)) }
                        <label>{"Message ID"}<input value={s.message_id.clone()} disabled={s.auto_message_id} placeholder={if s.auto_message_id { "generated for each message" } else { "" }} oninput={on_text(app, Text::MessageId)} /></label>
                        { super::text_field("Correlation ID", &s.correlation_id, "", None, false, on_text(app, Text::CorrelationId)) }
                        { super::text_field("User ID", &s.user_id, "", None, false, on_text(app, Text::UserId)) }
                    </div>
                    { super::check(app, Flag::AutoMessageId, s.auto_message_id, "Generate a message ID for each message") }
                    { super::check(app, Flag::CreationTime, s.creation_time, "Set creation time ($.ctime) to now") }
                    { super::button("JSON for routing", routing, false) }
                </fieldset>
                <fieldset>
                    { super::tx("legend", &[], "Application properties") }
                    { super::el("ul", &[("class", Static("props"))], Html::from_iter(rows)) }
                    { super::button("Add property", add, false) }
                </fieldset>
                if !templ {
                { super::topic("Topic preview", topic_preview(s)) }
                <div class="buttons">
                    <button type="submit" class="primary" disabled={!connected && s.qos == 0}>{"Send"}</button>
                </div>
                }
                // A repeat started in text mode keeps running in template mode: its progress and Stop stay here.
                if !templ || app.repeat.is_some() {
                <fieldset class="repeat">
                    { super::tx("legend", &[], if templ { "Sending the text payload repeatedly" } else { "Send repeatedly" }) }
                    if !templ {
                    { super::num_field("Every (ms)", s.repeat_interval_ms, Number::RepeatInterval.range(), None, on_number(app, Number::RepeatInterval)) }
                    { super::num_field("Times (0 = until stopped)", s.repeat_count, Number::RepeatCount.range(), None, on_number(app, Number::RepeatCount)) }
                    }
                    if let Some(r) = &app.repeat {
                        { super::button("Stop", stop, false) }
                        if let Some(t) = r.total {
                            <progress aria-label="Repeat progress" max={t.to_string()} value={r.done.to_string()}></progress>
                            <span>{ r.done }{"/"}{ t }</span>
                        } else {
                            <span>{ r.done }{" sent"}</span>
                        }
                    } else {
                        { super::button("Start", repeat, false) }
                    }
                </fieldset>
                }
            </form>
        </section>
    }
}
