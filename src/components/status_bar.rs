//! The always-visible connection status (role `status`), the token countdown and the traffic counters.

use gloo::timers::callback::Interval;
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::state::{AppContext, ConnStatus};
use crate::util;

fn mmss(secs: i64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// The app state.
#[derive(Properties, PartialEq)]
pub struct StatusBarProps {
    pub app: AppContext,
}

/// A component of its own: it renders again every second for the countdowns, not the whole app.
#[component]
pub fn StatusBar(props: &StatusBarProps) -> Html {
    let app = &props.app;
    // Re-render every second for the countdowns.
    let update = use_force_update();
    use_effect_with((), move |_| {
        let i = Interval::new(1000, move || update.force_update());
        move || drop(i)
    });
    let (class, text, hint) = match &app.status {
        ConnStatus::Connected { since, session_present } => (
            "status ok",
            format!(
                "Connected since {}{}",
                crate::util::time_of_day(since),
                if *session_present { " (session resumed)" } else { "" }
            ),
            None,
        ),
        ConnStatus::Connecting { attempt } => ("status busy", format!("Connecting… (attempt {attempt})"), None),
        ConnStatus::Provisioning => ("status busy", "Provisioning through DPS…".to_owned(), None),
        ConnStatus::Reconnecting { at_ms, reason, hint, .. } => {
            let secs = ((at_ms - js_sys::Date::now()) / 1000.0).ceil().max(0.0) as u32;
            ("status warn", format!("Reconnecting in {secs} s — {reason}"), hint.clone())
        }
        ConnStatus::Disconnected { reason: Some(r), hint } => {
            ("status err", format!("Disconnected — {r}"), hint.clone())
        }
        ConnStatus::Disconnected { reason: None, .. } => ("status idle", "Disconnected".to_owned(), None),
    };
    let connected = matches!(app.status, ConnStatus::Connected { .. });
    let token = app.token_expiry.map(|t| t as i64 - util::unix_now() as i64);
    html! {
        <div class="statusbar">
            { super::el_dyn("div", &["class", "role", "aria-live"], &[class, "status", "polite"], html! {
                <><span class="dot" aria-hidden="true"></span>{ text }</>
            }) }
            if let Some(h) = hint { { super::el("div", &[("class", Static("hint")), ("role", Static("alert"))], Html::from(h)) } }
            <div class="counters">
                if let Some(secs) = token {
                    if secs < 0 { <span>{"token "}{ super::el("b", &[], Html::from("expired")) }</span> }
                    else { <span title="A token signed from the key is renewed automatically before it expires">{"token expires in "}{ super::el("b", &[], Html::from(mmss(secs))) }</span> }
                }
                <span title="Telemetry handed to the device; while it is not connected, QoS 1 messages wait in its queue">{"sent "}{ super::el("b", &[], Html::from(app.sent)) }</span>
                <span>{"acknowledged "}{ super::el("b", &[], Html::from(app.acked)) }</span>
                // Not acknowledged yet: in flight while connected, queued for the next connection while not.
                <span>{ if connected { "pending " } else { "queued " } }{ super::el("b", &[], Html::from(app.pending())) }</span>
            </div>
        </div>
    }
}
