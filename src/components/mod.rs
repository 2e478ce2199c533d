//! The app's components, one per file. Each reads the shared state from context and talks up through the
//! controller or reducer actions.

pub mod activity_log;
pub mod composer;
pub mod connect_panel;
pub mod inbox;
pub mod methods;
pub mod sas_tool;
pub mod status_bar;
pub mod twin;

use crate::controller::ControllerHandle;
use crate::settings::Settings;
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
fn field_value(e: &Event) -> Option<String> {
    let t = e.target()?;
    if let Some(i) = t.dyn_ref::<HtmlInputElement>() {
        Some(i.value())
    } else if let Some(a) = t.dyn_ref::<HtmlTextAreaElement>() {
        Some(a.value())
    } else {
        t.dyn_ref::<HtmlSelectElement>().map(HtmlSelectElement::value)
    }
}

/// A callback that writes the text of an input, textarea or select into the settings.
pub fn on_text(app: &AppContext, set: fn(&mut Settings, String)) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |e: Event| {
        if let Some(v) = field_value(&e) {
            app.dispatch(Action::Settings(Box::new(move |s| set(s, v))));
        }
    })
}

/// Like [`on_text`] but on every keystroke.
pub fn on_input(app: &AppContext, set: fn(&mut Settings, String)) -> Callback<InputEvent> {
    let app = app.clone();
    Callback::from(move |e: InputEvent| {
        if let Some(v) = field_value(&e) {
            app.dispatch(Action::Settings(Box::new(move |s| set(s, v))));
        }
    })
}

/// A callback for a checkbox.
pub fn on_check(app: &AppContext, set: fn(&mut Settings, bool)) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |e: Event| {
        if let Some(i) = e.target_dyn_into::<HtmlInputElement>() {
            let v = i.checked();
            app.dispatch(Action::Settings(Box::new(move |s| set(s, v))));
        }
    })
}
