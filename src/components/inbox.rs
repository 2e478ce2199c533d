//! The C2D inbox: every message with its time, body and every property, exportable as JSON (where a null
//! property is `null` and an empty one `""`).

use yew::prelude::*;

use super::inbox_message::InboxMessage;
use super::use_app;
use crate::state::Action;
use crate::util::{self, json_string};

#[component]
pub fn Inbox() -> Html {
    let app = use_app();
    let clear = {
        let app = app.clone();
        Callback::from(move |_| app.dispatch(Action::ClearInbox))
    };
    let read = {
        let app = app.clone();
        Callback::from(move |_: FocusEvent| app.dispatch(Action::MarkRead))
    };
    let read_click = {
        let app = app.clone();
        Callback::from(move |_: MouseEvent| app.dispatch(Action::MarkRead))
    };
    let export = {
        let app = app.clone();
        Callback::from(move |_| {
            let items: Vec<String> = app
                .inbox
                .iter()
                .rev()
                .map(|m| {
                    let pairs = |v: &mut dyn Iterator<Item = (&str, Option<&str>)>| {
                        v.map(|(k, v)| format!("{}:{}", json_string(k), v.map_or("null".into(), json_string)))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let system = pairs(&mut m.system.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))));
                    let application = pairs(&mut m.application.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
                    format!(
                        "{{\"time\":{},\"body\":{},\"systemProperties\":{{{system}}},\"applicationProperties\":{{{application}}}}}",
                        json_string(&m.time),
                        json_string(&m.body)
                    )
                })
                .collect();
            util::download("hubsim-c2d.json", "application/json", &format!("[\n{}\n]\n", items.join(",\n")));
        })
    };
    html! {
        <section class="panel inbox" role="region" aria-label="Cloud-to-device messages" onfocusin={read} onclick={read_click}>
            <h2>{"Cloud-to-device messages"}
                if app.unread > 0 { <span class="badge">{ app.unread }<span class="sr-only">{" new"}</span></span> }
            </h2>
            <div class="row">
                <button type="button" onclick={export} disabled={app.inbox.is_empty()}>{"Export messages"}</button>
                <button type="button" onclick={clear} disabled={app.inbox.is_empty()}>{"Clear messages"}</button>
            </div>
            if app.inbox.is_empty() {
                <p class="note">{"No messages yet. Messages sent to this device appear here with all their properties."}</p>
            }
            <ol class="messages">{ for app.inbox.iter().map(|m| html! { <InboxMessage key={m.seq} item={m.clone()} /> }) }</ol>
        </section>
    }
}
