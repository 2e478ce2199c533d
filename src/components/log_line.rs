//! One line of the activity log.

use std::rc::Rc;
use yew::prelude::*;

use crate::state::LogEntry;

#[derive(Properties, PartialEq)]
pub struct LogLineProps {
    pub entry: Rc<LogEntry>,
}

#[component]
pub fn LogLine(props: &LogLineProps) -> Html {
    let l = &props.entry;
    html! {
        <li class={l.kind.as_str()}><time>{ &l.time }</time>{" "}<span class="tag">{ l.kind.as_str() }</span>{" "}{ &l.text }</li>
    }
}
