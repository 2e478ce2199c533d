//! One received C2D message: time, body and every property. A null application property (a name without `=`)
//! is shown as *null* in muted italics, an empty one as `""`, so the two are never confused.

use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::state::InboxItem;

/// Most application properties shown per message (a peer may send thousands; every one is in the exports).
pub const MAX_SHOWN_PROPERTIES: usize = 50;

/// The message `m`, rendered by [`super::log_line::EntryView`].
pub fn view_inbox_message(m: &InboxItem) -> Html {
    // JSON pretty-printed on screen (once: an entry is rendered once); the exports keep the body as received.
    let pretty = (m.body_kind == "json").then(|| crate::util::json_pretty(&m.body).ok()).flatten();
    let body = pretty.as_deref().unwrap_or(&m.body);
    let value = |v: &Option<String>| match v.as_deref() {
        None => {
            html! { <>{ super::tx("em", &[("class", Static("null"))], "null") }{ super::tx("span", &[("class", Static("sr-only"))], " (no value)") }</> }
        }
        Some("") => html! { <span class="empty">{"\"\""}</span> },
        Some(v) => html! { { v } },
    };
    html! {
        <li class="msg">
            <div class="meta">
                { super::time_el(&m.time) }
                { super::el("span", &[("class", Static("tag"))], Html::from(m.body_kind)) }
                if m.redelivered { { super::tx("span", &[("class", Static("tag warn"))], "redelivered") } }
            </div>
            { super::el("pre", &[("class", Static("body"))], Html::from(body)) }
            <ul class="kv">
                { for m.system.iter().map(|(k, v)| html! { <li class="sys">{ k }{": "}{ v }</li> }) }
                { for m.application.iter().take(MAX_SHOWN_PROPERTIES).map(|(k, v)| html! { <li>{ k }{": "}{ value(v) }</li> }) }
                if m.application.len() > MAX_SHOWN_PROPERTIES {
                    <li class="more">{"… and "}{ m.application.len() - MAX_SHOWN_PROPERTIES }{" more properties (Export messages has every one)"}</li>
                }
            </ul>
        </li>
    }
}
