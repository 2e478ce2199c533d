//! Direct methods: the calls received and the configured answer per method name (default 200 and `{}`).

use web_sys::{HtmlInputElement, HtmlTextAreaElement};
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::state::{Action, AppContext, MethodAnswer};
use crate::util;

/// The answer form's fields and its error, kept by the app.
pub struct MethodsForm {
    name: NodeRef,
    status: NodeRef,
    payload: NodeRef,
    error: UseStateHandle<String>,
}

/// The state of the methods panel.
#[hook]
pub fn use_methods_form() -> MethodsForm {
    MethodsForm { name: use_node_ref(), status: use_node_ref(), payload: use_node_ref(), error: use_state(String::new) }
}

/// The direct methods panel. A plain function called by the app, not a component (a component type costs some KB
/// of the bundle).
pub fn view_methods(app: &AppContext, form: &MethodsForm) -> Html {
    let MethodsForm { name, status, payload, error } = form;
    let save = {
        let (app, name, status, payload, error) =
            (app.clone(), name.clone(), status.clone(), payload.clone(), error.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let n = name.cast::<HtmlInputElement>().map(|i| i.value()).unwrap_or_default();
            let st = status.cast::<HtmlInputElement>().map(|i| i.value()).unwrap_or_default();
            let p = payload.cast::<HtmlTextAreaElement>().map(|i| i.value()).unwrap_or_default();
            if n.trim().is_empty() {
                return error.set("name the method".into());
            }
            let st = if st.trim().is_empty() { "200" } else { st.trim() };
            let Ok(st) = st.parse::<u16>() else {
                return error.set("the status must be a whole number from 0 to 65535, e.g. 200".into());
            };
            if !p.trim().is_empty() && !util::is_json(&p) {
                return error.set("the response payload must be JSON (or empty)".into());
            }
            error.set(String::new());
            app.dispatch(Action::SetAnswer(MethodAnswer { name: n.trim().into(), status: st, payload: p }));
        })
    };
    let answers = app.answers.iter().map(|a| {
        let (app, n) = (app.clone(), a.name.clone());
        html! {
            <li key={a.name.clone()}>
                <code>{ format!("{} → {} {}", a.name, a.status, a.payload) }</code>
                { super::named_button("✕", format!("Remove answer for {}", a.name), Callback::from(move |_| app.dispatch(Action::RemoveAnswer(n.clone()))), false) }
            </li>
        }
    });
    let calls = app.methods.iter().map(|m| {
        html! { <li key={m.seq}>{ super::time_el(&m.time) }{" "}{ super::el("b", &[], Html::from(&m.name)) }{ format!("({}) → {} {}", m.payload, m.status, m.response) }</li> }
    });
    html! {
        <section class="panel" aria-labelledby="methods-h">
            { super::tx("h2", &[("id", Static("methods-h"))], "Direct methods") }
            <form class="row wrap" onsubmit={save}>
                <label>{"Method name"}<input ref={name} placeholder="reboot" /></label>
                // No `value`: Yew resets an input to its `value` at every render, which would undo what is typed
                // (the form is read from the DOM when saved). Empty status = 200.
                <label>{"Response status"}<input ref={status} placeholder="200" inputmode="numeric" /></label>
                <label class="grow">{"Response payload"}<textarea ref={payload} rows="1" defaultvalue="{}" /></label>
                { super::tx("button", &[("type", Static("submit"))], "Save answer") }
            </form>
            if !error.is_empty() { { super::error_p("methods-err", error) } }
            { super::el("ul", &[("class", Static("answers"))], Html::from_iter(answers)) }
            { super::tx("p", &[("class", Static("note"))], "Unlisted methods are answered 200 with {}.") }
            { super::el("ol", &[("class", Static("calls")), ("aria-label", Static("Method calls"))], Html::from_iter(calls)) }
        </section>
    }
}
