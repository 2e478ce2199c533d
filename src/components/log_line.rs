//! One line of the activity log, and the component that renders each entry of the two long lists (log lines and
//! inbox messages) once.

use std::rc::Rc;
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::state::{InboxItem, LogEntry};

/// An entry of a long list: a log line or a received message.
pub enum Entry {
    Log(Rc<LogEntry>),
    Inbox(Rc<InboxItem>),
}

#[derive(Properties)]
pub struct EntryProps {
    pub entry: Entry,
}

/// The same entry, not an equal one: entries never change once made, and comparing the pointer keeps a deep
/// comparison of every entry out of the bundle.
impl PartialEq for EntryProps {
    fn eq(&self, other: &Self) -> bool {
        match (&self.entry, &other.entry) {
            (Entry::Log(a), Entry::Log(b)) => Rc::ptr_eq(a, b),
            (Entry::Inbox(a), Entry::Inbox(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// An entry, rendered again only when it is another entry (a list of hundreds is not rendered again with every
/// change of the app). One component type for both lists: a component type costs some KB of the bundle.
#[component]
pub fn EntryView(props: &EntryProps) -> Html {
    match &props.entry {
        Entry::Log(l) => view_log_line(l),
        Entry::Inbox(m) => super::inbox_message::view_inbox_message(m),
    }
}

/// `<EntryView key={seq} entry />`: the element of both lists, built in one place.
#[inline(never)]
pub fn entry_view(seq: u64, entry: Entry) -> Html {
    html! { <EntryView key={seq} {entry} /> }
}

/// One line of the activity log.
fn view_log_line(l: &LogEntry) -> Html {
    html! {
        { super::el_dyn("li", &["class"], &[l.kind.as_str()], html! {
            <>{ super::time_el(&l.time) }{" "}{ super::el("span", &[("class", Static("tag"))], Html::from(l.kind.as_str())) }{" "}{ &l.text }</>
        }) }
    }
}
