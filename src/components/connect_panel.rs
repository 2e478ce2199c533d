//! The connect form: a pasted connection string or separate fields, or the Device Provisioning Service (ID scope,
//! registration ID, key, with the steps of the registration), advanced options, Connect/Disconnect, and the
//! confirmation before a token goes to a host other than its hub (or other than Azure's DPS).

use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::confirm_endpoint::view_confirm_endpoint;
use super::{on_number, on_text};
use crate::controller::{Controller, ControllerHandle};
use crate::dps::{dps_plan, StepKind};
use crate::form::{plan, FieldError};
use crate::settings::{Change, Flag, Number, Text};
use crate::state::{Action, AppContext, Confirm, ConnStatus};
use crate::util;

/// The connect form's own state, kept by the app: whether Connect was pressed with errors, the last shared link,
/// the confirmation's "Send the token" button.
pub struct ConnectForm {
    attempted: UseStateHandle<bool>,
    link: UseStateHandle<String>,
    primary: NodeRef,
}

/// The state of the connect form, and the effect that gives the confirmation the keyboard focus when it appears
/// or asks again (it is answered before anything else; compared by address, see [`crate::util::Same`]).
#[hook]
pub fn use_connect_form(app: &AppContext) -> ConnectForm {
    let primary = use_node_ref();
    {
        let primary = primary.clone();
        use_effect_with(app.confirm.clone().map(crate::util::Same), move |_| {
            if let Some(b) = primary.cast::<web_sys::HtmlElement>() {
                let _ = b.focus();
            }
        });
    }
    ConnectForm { attempted: use_state(bool::default), link: use_state(String::new), primary }
}

/// The connect form. A plain function called by the app, not a component (a component type costs some KB of the
/// bundle).
pub fn view_connect_panel(app: &AppContext, ctl: &ControllerHandle, form: &ConnectForm) -> Html {
    let ConnectForm { attempted, link, primary } = form;
    let s = &app.settings;
    let emulator = app.emulator.as_deref();
    // Inline validation: explained next to the field before any connection attempt.
    // In DPS mode without an assignment, Connect registers with DPS first.
    let provisioning = s.use_dps && s.assigned_hub.is_empty();
    let errors = if provisioning { dps_plan(s, emulator).err() } else { plan(s, emulator).err() }.unwrap_or_default();
    // What is wrong with a value is said as soon as it is there; that a value is missing only once Connect was
    // pressed (a remembered device ID without its key, or a link's host and device, is not an error yet).
    let shown = |field: &str| -> bool {
        **attempted
            || match field {
                "connection_string" => !s.connection_string.is_empty(),
                "host" => !s.host.is_empty(),
                "device_id" => !s.device_id.is_empty() || !s.module_id.is_empty(),
                "key" => !s.key.is_empty(),
                "id_scope" => !s.id_scope.is_empty(),
                "registration_id" => !s.registration_id.is_empty(),
                "dps_key" => !s.dps_key.is_empty(),
                "dps" => !s.id_scope.is_empty() || !s.registration_id.is_empty() || !s.assigned_hub.is_empty(),
                _ => true,
            }
    };
    let error_for = |field: &str| -> Html {
        match errors.iter().find(|e| e.field == field) {
            Some(e) if shown(field) => {
                html! { <p class="field-error" id={format!("err-{field}")} role="alert">{ &e.message }</p> }
            }
            _ => html! {},
        }
    };
    let active = !matches!(app.status, ConnStatus::Disconnected { .. });
    // The connection keeps what it announced at CONNECT: a form (or a loaded model) that names another hub,
    // device or model id since is said, since sends still go as the connected one.
    let stale = match (ctl.0.connected_as(), plan(s, emulator)) {
        (Some((hub, id, model)), Ok(p)) => {
            let form = (p.cs.host_name.clone(), p.cs.identity().to_string(), s.model_id.trim().to_owned());
            (form != (hub.clone(), id.clone(), model.clone())).then(|| {
                let model = if model.is_empty() { String::new() } else { [" with model ", &model].concat() };
                ["Connected as ", &id, " at ", &hub, &model, ": the form now says otherwise. Reconnect to use it."]
                    .concat()
            })
        }
        _ => None,
    };
    let connect = {
        let (ctl, app, attempted) = (ctl.clone(), app.clone(), attempted.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            // Refused here, nothing sent: the fields say why, and the reason of an earlier attempt goes from the
            // status bar (it would read as this attempt's).
            let refused = || {
                attempted.set(true);
                if matches!(app.status, ConnStatus::Disconnected { reason: Some(_), .. }) {
                    ctl.0.status(ConnStatus::Disconnected { reason: None, hint: None });
                }
            };
            if app.settings.use_dps && app.settings.assigned_hub.is_empty() {
                let Ok(p) = dps_plan(&app.settings, app.emulator.as_deref()) else {
                    refused();
                    return;
                };
                if p.needs_confirmation && app.confirmed_url.as_deref() != Some(p.url.as_str()) {
                    let hub = "the DPS registration ".to_owned() + &p.id_scope + "/registrations/" + &p.registration_id;
                    app.dispatch(Action::AskConfirm(Confirm { target: p.target, hub, url: p.url, dps: true }));
                    return;
                }
                return ctl.0.provision(p, app.emulator.clone());
            }
            let Ok(p) = plan(&app.settings, app.emulator.as_deref()) else {
                refused();
                return;
            };
            if p.needs_confirmation && app.confirmed_url.as_deref() != Some(p.url.as_str()) {
                let hub = p.cs.host_name.clone();
                app.dispatch(Action::AskConfirm(Confirm { target: p.target, hub, url: p.url, dps: false }));
                return;
            }
            ctl.0.connect(p);
        })
    };
    let confirmed = {
        let (ctl, app) = (ctl.clone(), app.clone());
        Callback::from(move |_| {
            if app.confirm.as_ref().is_some_and(|c| c.dps) {
                match dps_plan(&app.settings, app.emulator.as_deref()) {
                    Ok(p) if app.confirm.as_ref().is_some_and(|c| c.url == p.url) => {
                        app.dispatch(Action::Confirmed);
                        ctl.0.provision(p, app.emulator.clone());
                    }
                    _ => app.dispatch(Action::CancelConfirm),
                }
                return;
            }
            let Ok(p) = plan(&app.settings, app.emulator.as_deref()) else { return };
            // Connect only to what was shown: the settings may have changed under the dialog.
            if app.confirm.as_ref().is_some_and(|c| c.url == p.url) {
                app.dispatch(Action::Confirmed);
                ctl.0.connect(p);
            } else {
                app.dispatch(Action::CancelConfirm);
            }
        })
    };
    let cancel = super::on_click(app, || Action::CancelConfirm);
    let disconnect = super::on_click_ctl(ctl, Controller::disconnect);
    let share = {
        let (app, link) = (app.clone(), link.clone());
        Callback::from(move |_| {
            let url = app.settings.share_link();
            util::copy(&url);
            link.set(url);
        })
    };
    let invalid = |f: &str| errors.iter().any(|e| e.field == f) && shown(f);
    let endpoint_placeholder = match emulator {
        Some(e) => format!("derived: this emulator ({}) for HostName={}", e.ws, e.host_name),
        None => format!("derived: wss://{{GatewayHostName or HostName}}{}", hubsim_proto::endpoint::WEBSOCKET_PATH),
    };
    html! {
        <section class="panel connect" aria-labelledby="connect-h">
            { super::tx("h2", &[("id", Static("connect-h"))], "Device") }
            <form onsubmit={connect}>
                <fieldset class="mode">
                    { super::tx("legend", &[], "How the device connects") }
                    { super::radio("mode", !s.use_dps, "Directly to a hub", set_mode(app, false)) }
                    { super::radio("mode", s.use_dps, "Through the Device Provisioning Service (ID scope, registration ID, key)", set_mode(app, true)) }
                </fieldset>
                if s.use_dps {
                    { view_dps(app, &errors, &shown, &error_for) }
                } else {
                { super::tx("label", &[("for", Static("cs"))], "Connection string") }
                <textarea id="cs" rows="3" spellcheck="false" autocomplete="off"
                    placeholder="HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=…"
                    aria-invalid={invalid("connection_string").to_string()}
                    aria-describedby="err-connection_string"
                    value={s.connection_string.clone()}
                    oninput={on_text(app, Text::ConnectionString)} />
                { error_for("connection_string") }
                <details open={!s.host.is_empty() && s.connection_string.is_empty()}>
                    { super::tx("summary", &[], "…or enter the fields separately") }
                    <div class="grid2">
                        { super::text_field("Host name", &s.host, "myhub.azure-devices.net", None, false, on_text(app, Text::Host)) }
                        { super::text_field("Device ID", &s.device_id, "", None, false, on_text(app, Text::DeviceId)) }
                        { super::text_field("Module ID (optional)", &s.module_id, "", None, false, on_text(app, Text::ModuleId)) }
                        { super::text_field("Device key", &s.key, "", None, true, on_text(app, Text::Key)) }
                    </div>
                    { error_for("host") }{ error_for("device_id") }{ error_for("key") }
                </details>
                }
                <details open={emulator.is_some() || !s.endpoint.is_empty()}>
                    { super::tx("summary", &[], "Advanced") }
                    <div class="grid2">
                        <label>{"Endpoint (set by hand)"}
                            <input value={s.endpoint.clone()} placeholder={endpoint_placeholder}
                                aria-invalid={invalid("endpoint").to_string()} oninput={on_text(app, Text::Endpoint)} />
                        </label>
                        { super::num_field("Token lifetime (s)", s.token_ttl_secs, Number::TokenTtl.range(),
                            Some(("ttl-help", "10 s to 1 day (86400 s); renewed automatically at 80 %")), on_number(app, Number::TokenTtl)) }
                        { super::num_field("Keep-alive (s)", s.keep_alive_secs, Number::KeepAlive.range(), None, on_number(app, Number::KeepAlive)) }
                        { super::text_field("API version", &s.api_version, "", None, false, on_text(app, Text::ApiVersion)) }
                        { super::text_field("Model ID (IoT Plug and Play)", &s.model_id, "dtmi:com:example:Thermostat;1", None, false, on_text(app, Text::ModelId)) }
                    </div>
                    { error_for("endpoint") }{ error_for("ttl") }{ error_for("keep_alive") }{ error_for("api_version") }{ error_for("model_id") }
                    { super::check(app, Flag::CleanSession, s.clean_session, "CleanSession (off keeps subscriptions and queued C2D across connections, as the SDKs do)") }
                    { super::check(app, Flag::AutoReconnect, s.auto_reconnect, "Reconnect automatically") }
                    { super::check(app, Flag::RememberKey, s.remember_key, "Remember the key on this device") }
                </details>
                if let Some(c) = &app.confirm {
                    { view_confirm_endpoint(c, primary.clone(), confirmed, cancel) }
                }
                if let Some(t) = stale { { super::el("p", &[("class", Static("warn-text stale"))], Html::from(t)) } }
                <div class="buttons">
                    <button type="submit" class="primary">{ if provisioning { "Provision and connect" } else if active { "Reconnect" } else { "Connect" } }</button>
                    { super::button("Disconnect", disconnect, !active) }
                    <button type="button" onclick={share} title="Copies a link with the settings, never the key or the endpoint">{"Share link"}</button>
                </div>
                if !link.is_empty() {
                    <p class="note">{"Link copied (no key, token or endpoint in it): "}{ super::el("code", &[("class", Static("wrap"))], Html::from(&**link)) }</p>
                }
            </form>
        </section>
    }
}

/// A radio button of the connection mode.
fn set_mode(app: &AppContext, dps: bool) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |_| app.dispatch(Action::Edit(Change::Flag(Flag::UseDps, dps))))
}

/// The DPS fields, the remembered assignment and the steps of the last registration.
/// A field is marked invalid when its error is `shown` (as the other fields are).
fn view_dps(
    app: &AppContext,
    errors: &[FieldError],
    shown: &dyn Fn(&str) -> bool,
    error_for: &dyn Fn(&str) -> Html,
) -> Html {
    let s = &app.settings;
    let invalid = |f: &str| errors.iter().any(|e| e.field == f) && shown(f);
    let use_emulator = app.emulator.as_ref().filter(|e| !e.id_scope.is_empty()).map(|e| {
        let (app, host, scope) = (app.clone(), e.host_name.clone(), e.id_scope.clone());
        let onclick = Callback::from(move |_| {
            app.dispatch(Action::Edit(Change::Text(Text::DpsHost, host.clone())));
            app.dispatch(Action::Edit(Change::Text(Text::IdScope, scope.clone())));
        });
        html! { <button type="button" {onclick}>{"Use this emulator's DPS (host "}{ &e.host_name }{", ID scope "}{ &e.id_scope }{")"}</button> }
    });
    let forget = {
        let app = app.clone();
        Callback::from(move |_| {
            app.dispatch(Action::Edit(Change::Text(Text::AssignedHub, String::new())));
            app.dispatch(Action::Edit(Change::Text(Text::AssignedDevice, String::new())));
        })
    };
    html! {
        <fieldset class="dps">
            { super::tx("legend", &[], "Device Provisioning Service") }
            <div class="grid2">
                { super::text_field("ID scope", &s.id_scope, "0ne00ABCDEF", Some(invalid("id_scope")), false, on_text(app, Text::IdScope)) }
                { super::text_field("Registration ID", &s.registration_id, "", Some(invalid("registration_id")), false, on_text(app, Text::RegistrationId)) }
                { super::text_field(if s.group_key { "Enrollment group key" } else { "Enrollment key" }, &s.dps_key, "", Some(invalid("dps_key")), true, on_text(app, Text::DpsKey)) }
                { super::text_field("Provisioning host", &s.dps_host, hubsim_proto::provisioning::GLOBAL_ENDPOINT, Some(invalid("dps_host")), false, on_text(app, Text::DpsHost)) }
            </div>
            { error_for("id_scope") }{ error_for("registration_id") }{ error_for("dps_key") }{ error_for("dps_host") }
            { super::check(app, Flag::GroupKey, s.group_key, "The key is an enrollment group key: derive this device's key from it and the registration ID") }
            if s.group_key {
                <p class="warn-text">{"A group key unlocks every device of the group. It stays in this page (only tokens signed with the derived device key are sent, to DPS and then to the assigned hub) and is stored only if you tick \"Remember the key on this device\" under Advanced."}</p>
            }
            { for use_emulator }
            { super::tx("label", &[("for", Static("dps-payload"))], "Registration payload (JSON, optional)") }
            <textarea id="dps-payload" rows="2" spellcheck="false" placeholder="{\"site\": \"lab\"}" aria-invalid={invalid("dps_payload").to_string()}
                aria-describedby="dps-payload-help" value={s.dps_payload.clone()} oninput={on_text(app, Text::DpsPayload)} />
            { super::tx("span", &[("id", Static("dps-payload-help")), ("class", Static("help"))], "Custom allocation data sent with the registration; a model ID set under Advanced is added as modelId (IoT Plug and Play).") }
            { error_for("dps_payload") }{ error_for("dps") }
            if !s.assigned_hub.is_empty() {
                <p class="note">{"Assigned to "}{ super::el("b", &[], Html::from(&s.assigned_hub)) }{" as "}{ super::el("b", &[], Html::from(&s.assigned_device)) }{": Connect goes straight to this hub."}</p>
                { super::check(app, Flag::RememberAssignment, s.remember_assignment, "Remember the assignment on this device (hub and device ID, never the key)") }
                { super::button("Forget the assignment (provision again)", forget, false) }
            }
            if !app.dps_steps.is_empty() {
                <ol class="dps-steps" aria-label="Provisioning steps">
                    { for app.dps_steps.iter().map(|st| {
                        let class = match (st.kind, st.active) {
                            (_, true) => "active",
                            (StepKind::Failed, _) => "failed",
                            _ => "done",
                        };
                        super::el_dyn("li", &["class"], &[class], Html::from(&st.text))
                    }) }
                </ol>
            }
        </fieldset>
    }
}
