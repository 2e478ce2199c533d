//! One application property of the composer: name, value and a remove button. Reports edits up. A plain
//! function, not a component: it has no state of its own, and a component type costs some KB of the bundle.

use yew::prelude::*;

use super::field_value;

/// The row of property `i`; the callbacks get `(i, text)` or `i`.
pub fn view_property_row(
    i: usize,
    (name, value): (&str, &str),
    on_name: &Callback<(usize, String)>,
    on_value: &Callback<(usize, String)>,
    on_remove: &Callback<usize>,
) -> Html {
    let name_input = on_name.reform(move |e: InputEvent| (i, field_value(&e).unwrap_or_default()));
    let value_input = on_value.reform(move |e: InputEvent| (i, field_value(&e).unwrap_or_default()));
    let remove = on_remove.reform(move |_: MouseEvent| i);
    html! {
        <li class="prop-row" key={i}>
            <input aria-label="Property name" placeholder="name" value={name.to_owned()} oninput={name_input} />
            <input aria-label="Property value" placeholder="value" value={value.to_owned()} oninput={value_input} />
            { super::named_button("✕", format!("Remove property {}", i + 1), remove) }
        </li>
    }
}
