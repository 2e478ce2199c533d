//! The banner a link gets instead of changing anything: what it would fill in, what it tried and may not do,
//! and [Use these settings] [Ignore]. Nothing is applied or stored until the user accepts.

use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::settings::{Change, Decoded};

/// The banner for the settings `o` a link offers. A plain function, not a component: it has no state of its own,
/// and a component type costs some KB of the bundle.
pub fn view_link_banner(o: &Decoded, on_accept: Callback<MouseEvent>, on_ignore: Callback<MouseEvent>) -> Html {
    let replaces_device = o.changes.iter().any(Change::sets_identity);
    html! {
        <section class="banner" aria-labelledby="link-h">
            { super::tx("h2", &[("id", Static("link-h"))], "This link pre-fills settings") }
            if o.changes.is_empty() {
                { super::tx("p", &[], "It has nothing this app can use.") }
            } else {
                <ul class="kv">
                    { for o.changes.iter().map(|c| { let (k, v) = c.describe(); html! { <li>{ k }{": "}{ super::el("b", &[], Html::from(v)) }</li> } }) }
                </ul>
            }
            if replaces_device {
                { super::tx("p", &[("class", Static("note"))], "Using them replaces the device in the form; a pasted connection string and key are removed from the form.") }
            }
            if !o.refused.is_empty() {
                { super::tx("p", &[("class", Static("warn-text"))], "Not taken from the link:") }
                <ul class="refused">{ for o.refused.iter().map(|r| html! { { super::el("li", &[], Html::from(r)) } }) }</ul>
            }
            <div class="buttons">
                if !o.changes.is_empty() {
                    <button type="button" class="primary" onclick={on_accept}>{"Use these settings"}</button>
                }
                { super::button("Ignore", on_ignore, false) }
            </div>
        </section>
    }
}
