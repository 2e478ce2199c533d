//! The app's components, one per file. Panels read the shared state from context and talk up through the
//! controller or reducer actions; reused pieces (a property row, an inbox message, a log line, the link banner,
//! the endpoint confirmation) take props and report through callbacks.

pub mod activity_log;
pub mod charts;
pub mod composer;
pub mod confirm_endpoint;
pub mod connect_panel;
pub mod inbox;
pub mod inbox_message;
pub mod link_banner;
pub mod log_line;
pub mod methods;
pub mod model_panel;
pub mod property_row;
pub mod sas_tool;
pub mod status_bar;
pub mod templates;
pub mod twin;

use crate::controller::ControllerHandle;
use crate::settings::{Change, Flag, Number, Text};
use crate::state::{Action, AppContext};
use wasm_bindgen::JsCast;
use web_sys::{HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;

/// The app state from context.
#[hook]
pub fn use_app() -> AppContext {
    use_context::<AppContext>().expect("AppContext is provided by App")
}

/// The controller from context.
#[hook]
pub fn use_controller() -> ControllerHandle {
    use_context::<ControllerHandle>().expect("ControllerHandle is provided by App")
}

/// The value of the input, textarea or select an event came from.
pub fn field_value(e: &Event) -> Option<String> {
    let t = e.target()?;
    if let Some(i) = t.dyn_ref::<HtmlInputElement>() {
        Some(i.value())
    } else if let Some(a) = t.dyn_ref::<HtmlTextAreaElement>() {
        Some(a.value())
    } else {
        t.dyn_ref::<HtmlSelectElement>().map(HtmlSelectElement::value)
    }
}

/// A callback that writes a text field on every keystroke.
pub fn on_text(app: &AppContext, f: Text) -> Callback<InputEvent> {
    let app = app.clone();
    Callback::from(move |e: InputEvent| {
        if let Some(v) = field_value(&e) {
            app.dispatch(Action::Edit(Change::Text(f, v)));
        }
    })
}

/// A callback for a number field or a select of numbers; the range is checked by the form's validation, which
/// explains it next to the field.
pub fn on_number(app: &AppContext, f: Number) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |e: Event| {
        if let Some(n) = field_value(&e).and_then(|v| v.trim().parse::<u32>().ok()) {
            app.dispatch(Action::Edit(Change::Number(f, n)));
        }
    })
}

/// A callback for a checkbox.
pub fn on_flag(app: &AppContext, f: Flag) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |e: Event| {
        if let Some(i) = e.target_dyn_into::<HtmlInputElement>() {
            app.dispatch(Action::Edit(Change::Flag(f, i.checked())));
        }
    })
}

/// `<button type="button" onclick>{text}</button>`, disabled when `off` (else without the attribute). One
/// function for the panels' many plain buttons: each element an `html!` builds is its own code in the bundle.
#[inline(never)]
pub fn button(text: &'static str, onclick: Callback<MouseEvent>, off: bool) -> Html {
    html! { <button type="button" {onclick} disabled={off}>{ yew::virtual_dom::VText::new(text) }</button> }
}
