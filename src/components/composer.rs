//! The telemetry composer: body, QoS, retain, system and application properties, the exact topic, and sending
//! once or repeatedly.

use web_sys::HtmlInputElement;
use yew::prelude::*;

use super::{on_check, on_input, on_text, use_app, use_controller};
use crate::controller::topic_preview;
use crate::state::Action;
use crate::util;

#[component]
pub fn Composer() -> Html {
    let app = use_app();
    let ctl = use_controller();
    let s = &app.settings;
    let json_state = if s.body.trim().is_empty() {
        html! {}
    } else if util::is_json(&s.body) {
        html! { <span class="ok-text">{"valid JSON"}</span> }
    } else {
        html! { <span class="warn-text">{"not JSON (sent as text)"}</span> }
    };
    let pretty = {
        let app = app.clone();
        Callback::from(move |_| {
            if let Ok(p) = util::json_pretty(&app.settings.body) {
                app.dispatch(Action::Settings(Box::new(move |s| s.body = p)));
            }
        })
    };
    let routing = {
        let app = app.clone();
        Callback::from(move |_| {
            app.dispatch(Action::Settings(Box::new(|s| {
                s.content_type = "application/json".into();
                s.content_encoding = "utf-8".into();
            })))
        })
    };
    let add = {
        let app = app.clone();
        Callback::from(move |_| {
            app.dispatch(Action::Settings(Box::new(|s| s.properties.push((String::new(), String::new())))))
        })
    };
    let rows = s.properties.iter().enumerate().map(|(i, (k, v))| {
        let (a1, a2, a3) = (app.clone(), app.clone(), app.clone());
        let name = Callback::from(move |e: InputEvent| {
            let v = e.target_unchecked_into::<HtmlInputElement>().value();
            a1.dispatch(Action::Settings(Box::new(move |s| {
                if let Some(p) = s.properties.get_mut(i) {
                    p.0 = v
                }
            })));
        });
        let value = Callback::from(move |e: InputEvent| {
            let v = e.target_unchecked_into::<HtmlInputElement>().value();
            a2.dispatch(Action::Settings(Box::new(move |s| {
                if let Some(p) = s.properties.get_mut(i) {
                    p.1 = v
                }
            })));
        });
        let remove = Callback::from(move |_| {
            a3.dispatch(Action::Settings(Box::new(move |s| {
                if i < s.properties.len() {
                    s.properties.remove(i);
                }
            })))
        });
        html! {
            <li class="prop-row" key={i}>
                <input aria-label="Property name" placeholder="name" value={k.clone()} oninput={name} />
                <input aria-label="Property value" placeholder="value" value={v.clone()} oninput={value} />
                <button type="button" aria-label={format!("Remove property {}", i + 1)} onclick={remove}>{"✕"}</button>
            </li>
        }
    });
    let send = {
        let (ctl, app) = (ctl.clone(), app.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            ctl.0.send(&app.settings);
        })
    };
    let repeat = {
        let (ctl, app) = (ctl.clone(), app.clone());
        Callback::from(move |_| ctl.0.start_repeat(&app.settings))
    };
    let stop = {
        let ctl = ctl.clone();
        Callback::from(move |_| ctl.0.stop_repeat())
    };
    let connected = app.is_connected();
    html! {
        <section class="panel composer" aria-labelledby="compose-h">
            <h2 id="compose-h">{"Send telemetry"}</h2>
            <form onsubmit={send}>
                <label for="payload">{"Payload"}</label>
                <textarea id="payload" rows="6" spellcheck="false" value={s.body.clone()} oninput={on_input(&app, |s, v| s.body = v)} />
                <div class="row">
                    { json_state }
                    <button type="button" onclick={pretty}>{"Pretty-print JSON"}</button>
                </div>
                <div class="row">
                    <label>{"QoS"}
                        <select onchange={on_text(&app, |s, v| s.qos = v.parse().unwrap_or(1))}>
                            <option value="0" selected={s.qos == 0}>{"0 — at most once"}</option>
                            <option value="1" selected={s.qos == 1}>{"1 — at least once"}</option>
                            <option value="2" selected={s.qos == 2}>{"2 — IoT Hub closes the connection"}</option>
                        </select>
                    </label>
                    <label class="check"><input type="checkbox" checked={s.retain} onchange={on_check(&app, |s, v| s.retain = v)} />{"Retain"}</label>
                </div>
                if s.qos == 2 {
                    <p class="warn-text" role="alert">{"IoT Hub does not support QoS 2: it will close the connection when this message is sent."}</p>
                }
                <fieldset>
                    <legend>{"System properties"}</legend>
                    <div class="grid2">
                        <label>{"Content type"}<input value={s.content_type.clone()} placeholder="application/json" oninput={on_input(&app, |s, v| s.content_type = v)} /></label>
                        <label>{"Content encoding"}<input value={s.content_encoding.clone()} placeholder="utf-8" oninput={on_input(&app, |s, v| s.content_encoding = v)} /></label>
                        <label>{"Message ID"}<input value={s.message_id.clone()} disabled={s.auto_message_id} placeholder={if s.auto_message_id { "generated for each message" } else { "" }} oninput={on_input(&app, |s, v| s.message_id = v)} /></label>
                        <label>{"Correlation ID"}<input value={s.correlation_id.clone()} oninput={on_input(&app, |s, v| s.correlation_id = v)} /></label>
                        <label>{"User ID"}<input value={s.user_id.clone()} oninput={on_input(&app, |s, v| s.user_id = v)} /></label>
                    </div>
                    <label class="check"><input type="checkbox" checked={s.auto_message_id} onchange={on_check(&app, |s, v| s.auto_message_id = v)} />{"Generate a message ID for each message"}</label>
                    <label class="check"><input type="checkbox" checked={s.creation_time} onchange={on_check(&app, |s, v| s.creation_time = v)} />{"Set creation time ($.ctime) to now"}</label>
                    <button type="button" onclick={routing}>{"JSON for routing"}</button>
                </fieldset>
                <fieldset>
                    <legend>{"Application properties"}</legend>
                    <ul class="props">{ for rows }</ul>
                    <button type="button" onclick={add}>{"Add property"}</button>
                </fieldset>
                <p class="topic"><span>{"Topic: "}</span><code class="wrap" aria-label="Topic preview">{ topic_preview(s) }</code></p>
                <div class="buttons">
                    <button type="submit" class="primary" disabled={!connected && s.qos == 0}>{"Send"}</button>
                </div>
                <fieldset class="repeat">
                    <legend>{"Send repeatedly"}</legend>
                    <label>{"Every (ms)"}<input type="number" min="10" value={s.repeat_interval_ms.to_string()} onchange={on_text(&app, |s, v| s.repeat_interval_ms = v.parse().unwrap_or(1000).max(10))} /></label>
                    <label>{"Times (0 = until stopped)"}<input type="number" min="0" value={s.repeat_count.to_string()} onchange={on_text(&app, |s, v| s.repeat_count = v.parse().unwrap_or(10))} /></label>
                    if let Some(r) = &app.repeat {
                        <button type="button" onclick={stop}>{"Stop"}</button>
                        if let Some(t) = r.total {
                            <progress aria-label="Repeat progress" max={t.to_string()} value={r.done.to_string()}></progress>
                            <span>{ format!("{}/{}", r.done, t) }</span>
                        } else {
                            <span>{ format!("{} sent", r.done) }</span>
                        }
                    } else {
                        <button type="button" onclick={repeat}>{"Start"}</button>
                    }
                </fieldset>
            </form>
        </section>
    }
}
