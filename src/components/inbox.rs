//! The C2D inbox: every message with its time, body and every property, exportable as JSON (where a null
//! property is `null` and an empty one `""`) and as CSV, one column per property ([`crate::export`]).

use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::log_line::{entry_view, Entry};
use crate::state::{Action, AppContext};
use crate::{export, util};

/// The inbox panel. A plain function called by the app, not a component: it reads only the app state, which
/// changes (and re-renders it) exactly when the app re-renders, and a component type costs some KB of the bundle.
pub fn view_inbox(app: &AppContext) -> Html {
    let clear = super::on_click(app, || Action::ClearInbox);
    let read = {
        let app = app.clone();
        Callback::from(move |_: FocusEvent| app.dispatch(Action::MarkRead))
    };
    let read_click = super::on_click(app, || Action::MarkRead);
    let export = |csv: bool| {
        let app = app.clone();
        Callback::from(move |_| {
            let items = app.inbox.iter().rev().map(|m| &**m);
            match csv {
                true => util::download("hubsim-c2d.csv", "text/csv", &export::inbox_csv(items)),
                false => util::download("hubsim-c2d.json", "application/json", &export::inbox_json(items)),
            }
        })
    };
    html! {
        <section class="panel inbox" role="region" aria-label="Cloud-to-device messages" onfocusin={read} onclick={read_click}>
            <h2>{"Cloud-to-device messages"}
                if app.unread > 0 { <span class="badge">{ app.unread }{ super::tx("span", &[("class", Static("sr-only"))], " new") }</span> }
            </h2>
            <div class="row">
                { super::button("Export messages as JSON", export(false), app.inbox.is_empty()) }
                { super::button("Export messages as CSV", export(true), app.inbox.is_empty()) }
                { super::button("Clear messages", clear, app.inbox.is_empty()) }
            </div>
            if app.inbox.is_empty() {
                // IoT Hub sends C2D messages to devices only: a module is not subscribed to them.
                if crate::form::plan(&app.settings, None).is_ok_and(|p| p.cs.module_id.is_some()) {
                    { super::tx("p", &[("class", Static("note"))], "This is a module: IoT Hub sends cloud-to-device messages to devices only, so none arrive here.") }
                } else {
                    { super::tx("p", &[("class", Static("note"))], "No messages yet. Messages sent to this device appear here with all their properties.") }
                }
            }
            <ol class="messages">{ for app.inbox.iter().map(|m| entry_view(m.seq, Entry::Inbox(m.clone()))) }</ol>
        </section>
    }
}
