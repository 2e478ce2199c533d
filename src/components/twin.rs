//! The device twin: get it, show desired and reported, send a reported patch, watch desired updates.

use web_sys::HtmlTextAreaElement;
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::controller::ControllerHandle;
use crate::state::AppContext;

/// The twin panel. A plain function called by the app, not a component (a component type costs some KB of the
/// bundle): it reads only the app state and the controller, and `patch` is the app's ref of the patch textarea.
pub fn view_twin(app: &AppContext, ctl: &ControllerHandle, patch: &NodeRef) -> Html {
    let get = {
        let ctl = ctl.clone();
        Callback::from(move |_| ctl.0.get_twin())
    };
    let send = {
        let (ctl, patch) = (ctl.clone(), patch.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if let Some(t) = patch.cast::<HtmlTextAreaElement>() {
                ctl.0.patch_reported(&t.value());
            }
        })
    };
    let connected = app.is_connected();
    let twin = &app.twin;
    html! {
        <section class="panel" aria-labelledby="twin-h">
            { super::tx("h2", &[("id", Static("twin-h"))], "Device twin") }
            { super::button("Get twin", get, !connected) }
            <div class="twin-docs">
                <div role="group" aria-labelledby="twin-desired-h">{ super::tx("h3", &[("id", Static("twin-desired-h"))], "Desired properties") }{ super::el("pre", &[("tabindex", Static("0"))], Html::from(&twin.desired)) }</div>
                <div role="group" aria-labelledby="twin-reported-h">{ super::tx("h3", &[("id", Static("twin-reported-h"))], "Reported properties") }{ super::el("pre", &[("tabindex", Static("0"))], Html::from(&twin.reported)) }</div>
            </div>
            <form onsubmit={send}>
                { super::tx("label", &[("for", Static("reported"))], "Reported patch") }
                <textarea id="reported" ref={patch.clone()} rows="3" defaultvalue="{\"firmwareVersion\": \"1.0.0\"}"
                    aria-describedby="reported-err" aria-invalid={twin.patched.is_err().to_string()} />
                <button type="submit" disabled={!connected}>{"Send reported patch"}</button>
                if let Ok(v) = &twin.patched { if !v.is_empty() { <span class="ok-text">{" saved as version "}{ v }</span> } }
            </form>
            if let Err(e) = &twin.patched { { super::error_p("reported-err", e) } }
            { super::tx("h3", &[], "Desired property updates") }
            <ol class="calls" aria-label="Desired property updates">
                { for app.desired_updates.iter().map(|u| html! { <li>{ super::time_el(&u.0) }{" "}{ super::el("code", &[], Html::from(&u.1)) }</li> }) }
            </ol>
        </section>
    }
}
