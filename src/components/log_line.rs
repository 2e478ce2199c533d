//! One line of the activity log.

use std::rc::Rc;
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::state::LogEntry;

#[derive(Properties)]
pub struct LogLineProps {
    pub entry: Rc<LogEntry>,
}

/// The same entry, not an equal one: entries never change once made, and comparing the pointer keeps a deep
/// comparison of every entry out of the bundle.
impl PartialEq for LogLineProps {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.entry, &other.entry)
    }
}

#[component]
pub fn LogLine(props: &LogLineProps) -> Html {
    let l = &props.entry;
    html! {
        <li class={l.kind.as_str()}>{ super::el("time", &[], Html::from(&l.time)) }{" "}{ super::el("span", &[("class", Static("tag"))], Html::from(l.kind.as_str())) }{" "}{ &l.text }</li>
    }
}
