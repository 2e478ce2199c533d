//! One application property of the composer: name, value and a remove button, whose edits go to the settings. A
//! plain function, not a component: it has no state of its own, and a component type costs some KB of the bundle.

use yew::prelude::*;

use super::field_value;
use crate::settings::Change;
use crate::state::{Action, AppContext};

/// The row of property `i`.
pub fn view_property_row(app: &AppContext, i: usize, (name, value): (&str, &str)) -> Html {
    // One callback type for both fields (each closure type is its own code in the bundle).
    let edit = |name: bool| {
        let app = app.clone();
        Callback::from(move |e: InputEvent| {
            let v = field_value(&e).unwrap_or_default();
            app.dispatch(Action::Edit(if name { Change::PropertyName(i, v) } else { Change::PropertyValue(i, v) }));
        })
    };
    let remove = {
        let app = app.clone();
        Callback::from(move |_| app.dispatch(Action::Edit(Change::RemoveProperty(i))))
    };
    html! {
        <li class="prop-row" key={i}>
            <input aria-label="Property name" placeholder="name" value={name.to_owned()} oninput={edit(true)} />
            <input aria-label="Property value" placeholder="value" value={value.to_owned()} oninput={edit(false)} />
            { super::named_button("✕", format!("Remove property {}", i + 1), remove, false) }
        </li>
    }
}
