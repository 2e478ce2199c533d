//! The activity log: every connection event, sent and received message in order, filterable, exportable as JSON
//! and CSV ([`crate::export`]).

use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::log_line::{entry_view, Entry};
use crate::state::{Action, AppContext, LogKind, MAX_LOG};
use crate::{export, util};

/// The activity panel, shown with the kind and the text its filters keep (the app keeps them). A plain function
/// called by the app, not a component (a component type costs some KB of the bundle).
pub fn view_activity_log(app: &AppContext, kind: &UseStateHandle<String>, text: &UseStateHandle<String>) -> Html {
    let on_kind = {
        let kind = kind.clone();
        Callback::from(move |e: Event| kind.set(e.target_unchecked_into::<HtmlSelectElement>().value()))
    };
    let on_text = {
        let text = text.clone();
        Callback::from(move |e: InputEvent| text.set(e.target_unchecked_into::<HtmlInputElement>().value()))
    };
    let export = |csv: bool| {
        let app = app.clone();
        Callback::from(move |_| {
            let log = app.log.iter().rev().map(|l| &**l);
            match csv {
                true => util::download("hubsim-activity.csv", "text/csv", &export::log_csv(log)),
                false => util::download("hubsim-activity.json", "application/json", &export::log_json(log)),
            }
        })
    };
    let clear = super::on_click(app, || Action::ClearLog);
    let needle = text.to_ascii_lowercase();
    let lines = app
        .log
        .iter()
        .filter(|l| kind.is_empty() || l.kind.as_str() == kind.as_str())
        .filter(|l| needle.is_empty() || l.text.to_ascii_lowercase().contains(&needle))
        .map(|l| entry_view(l.seq, Entry::Log(l.clone())));
    let mut options = vec![("", "everything")];
    for k in LogKind::ALL {
        options.push((k.as_str(), k.as_str()));
    }
    html! {
        <section class="panel log" aria-labelledby="log-h">
            { super::tx("h2", &[("id", Static("log-h"))], "Activity") }
            <div class="row">
                { super::select("Show", None, on_kind, &options, kind) }
                <label>{"Filter"}<input type="search" oninput={on_text} /></label>
                { super::button("Export log as JSON", export(false), false) }
                { super::button("Export log as CSV", export(true), false) }
                { super::button("Clear log", clear, false) }
            </div>
            { super::el("ol", &[("class", Static("lines")), ("aria-label", Static("Activity log")), ("tabindex", Static("0"))], Html::from_iter(lines)) }
            <p class="note">{ format!("The newest {MAX_LOG} entries are kept.") }</p>
        </section>
    }
}
