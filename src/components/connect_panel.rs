//! The connect form: a pasted connection string or separate fields, advanced options, Connect/Disconnect.

use yew::prelude::*;

use super::{on_check, on_input, on_text, use_app, use_controller};
use crate::controller::plan;
use crate::state::ConnStatus;
use crate::util;

#[component]
pub fn ConnectPanel() -> Html {
    let app = use_app();
    let ctl = use_controller();
    let s = &app.settings;
    // Inline validation: explained next to the field before any connection attempt.
    let errors = plan(s).err().unwrap_or_default();
    let attempted = use_state(|| false);
    let touched = *attempted
        || !s.connection_string.is_empty()
        || !s.host.is_empty()
        || !s.device_id.is_empty()
        || !s.key.is_empty();
    let error_for = |field: &str| -> Html {
        match errors.iter().find(|e| e.field == field) {
            Some(e) if touched || field == "endpoint" => {
                html! { <p class="field-error" id={format!("err-{field}")} role="alert">{ &e.message }</p> }
            }
            _ => html! {},
        }
    };
    let active = !matches!(app.status, ConnStatus::Disconnected { .. });
    let connect = {
        let (ctl, app, attempted) = (ctl.clone(), app.clone(), attempted.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if plan(&app.settings).is_err() {
                attempted.set(true);
                return;
            }
            ctl.0.connect(&app.settings);
        })
    };
    let disconnect = {
        let ctl = ctl.clone();
        Callback::from(move |_| ctl.0.disconnect())
    };
    let share = {
        let app = app.clone();
        let link = use_state(String::new);
        let l2 = link.clone();
        (
            Callback::from(move |_| {
                let url = app.settings.share_link();
                util::copy(&url);
                l2.set(url);
            }),
            link,
        )
    };
    let invalid = |f: &str| errors.iter().any(|e| e.field == f) && touched;
    html! {
        <section class="panel connect" aria-labelledby="connect-h">
            <h2 id="connect-h">{"Device"}</h2>
            <form onsubmit={connect}>
                <label for="cs">{"Connection string"}</label>
                <textarea id="cs" rows="3" spellcheck="false" autocomplete="off"
                    placeholder="HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=…"
                    aria-invalid={invalid("connection_string").to_string()}
                    aria-describedby="err-connection_string"
                    value={s.connection_string.clone()}
                    oninput={on_input(&app, |s, v| s.connection_string = v)} />
                { error_for("connection_string") }
                <details>
                    <summary>{"…or enter the fields separately"}</summary>
                    <div class="grid2">
                        <label>{"Host name"}<input value={s.host.clone()} placeholder="myhub.azure-devices.net" oninput={on_input(&app, |s, v| s.host = v)} /></label>
                        <label>{"Device ID"}<input value={s.device_id.clone()} oninput={on_input(&app, |s, v| s.device_id = v)} /></label>
                        <label>{"Module ID (optional)"}<input value={s.module_id.clone()} oninput={on_input(&app, |s, v| s.module_id = v)} /></label>
                        <label>{"Device key"}<input type="password" autocomplete="off" value={s.key.clone()} oninput={on_input(&app, |s, v| s.key = v)} /></label>
                    </div>
                    { error_for("host") }{ error_for("device_id") }{ error_for("key") }
                </details>
                <details open={app.emulator_ws.is_some()}>
                    <summary>{"Advanced"}</summary>
                    <div class="grid2">
                        <label>{"Endpoint"}
                            <input value={s.endpoint.clone()} placeholder="wss://{HostName}/$iothub/websocket (default)"
                                aria-invalid={invalid("endpoint").to_string()} oninput={on_input(&app, |s, v| s.endpoint = v)} />
                        </label>
                        <label>{"Token lifetime (s)"}<input type="number" min="10" value={s.token_ttl_secs.to_string()} onchange={on_text(&app, |s, v| s.token_ttl_secs = v.parse().unwrap_or(3600))} /></label>
                        <label>{"Keep-alive (s)"}<input type="number" min="0" max="1177" value={s.keep_alive_secs.to_string()} onchange={on_text(&app, |s, v| s.keep_alive_secs = v.parse().unwrap_or(60))} /></label>
                        <label>{"API version"}<input value={s.api_version.clone()} onchange={on_text(&app, |s, v| s.api_version = v)} /></label>
                        <label>{"Model ID (IoT Plug and Play)"}<input value={s.model_id.clone()} placeholder="dtmi:com:example:Thermostat;1" onchange={on_text(&app, |s, v| s.model_id = v)} /></label>
                    </div>
                    { error_for("endpoint") }{ error_for("ttl") }
                    <label class="check"><input type="checkbox" checked={s.clean_session} onchange={on_check(&app, |s, v| s.clean_session = v)} />{"CleanSession (off keeps subscriptions and queued C2D across connections, as the SDKs do)"}</label>
                    <label class="check"><input type="checkbox" checked={s.auto_reconnect} onchange={on_check(&app, |s, v| s.auto_reconnect = v)} />{"Reconnect automatically"}</label>
                    <label class="check"><input type="checkbox" checked={s.remember_key} onchange={on_check(&app, |s, v| s.remember_key = v)} />{"Remember the key on this device"}</label>
                </details>
                <div class="buttons">
                    <button type="submit" class="primary">{"Connect"}</button>
                    <button type="button" onclick={disconnect} disabled={!active}>{"Disconnect"}</button>
                    <button type="button" onclick={share.0} title="Copies a link with the settings, never the key">{"Share link"}</button>
                </div>
                if !share.1.is_empty() {
                    <p class="note">{"Link copied (no key or token in it): "}<code class="wrap">{ (*share.1).clone() }</code></p>
                }
            </form>
        </section>
    }
}
