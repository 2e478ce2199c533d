//! The C2D inbox: every message with its time, body and every property as `name: value`.

use yew::prelude::*;

use super::use_app;
use crate::state::Action;

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
    let items = app.inbox.iter().map(|m| {
        html! {
            <li class="msg" key={m.seq}>
                <div class="meta">
                    <time>{ &m.time }</time>
                    <span class="tag">{ m.body_kind }</span>
                    if m.redelivered { <span class="tag warn">{"redelivered"}</span> }
                </div>
                <pre class="body">{ &m.body }</pre>
                <ul class="kv">
                    { for m.system.iter().map(|(k, v)| html! { <li class="sys">{ format!("{k}: {v}") }</li> }) }
                    { for m.application.iter().map(|(k, v)| html! { <li>{ format!("{k}: {v}") }</li> }) }
                </ul>
            </li>
        }
    });
    html! {
        <section class="panel inbox" role="region" aria-label="Cloud-to-device messages" onfocusin={read} onclick={read_click}>
            <h2>{"Cloud-to-device messages"}
                if app.unread > 0 { <span class="badge" aria-label={format!("{} new", app.unread)}>{ app.unread }</span> }
            </h2>
            <div class="row"><button type="button" onclick={clear} disabled={app.inbox.is_empty()}>{"Clear messages"}</button></div>
            if app.inbox.is_empty() {
                <p class="note">{"No messages yet. Messages sent to this device appear here with all their properties."}</p>
            }
            <ol class="messages">{ for items }</ol>
        </section>
    }
}
