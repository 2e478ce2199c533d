//! One application property of the composer: name, value and a remove button. Reports edits up.

use yew::prelude::*;

use super::field_value;

#[derive(Properties, PartialEq)]
pub struct PropertyRowProps {
    pub index: usize,
    pub name: AttrValue,
    pub value: AttrValue,
    pub on_name: Callback<(usize, String)>,
    pub on_value: Callback<(usize, String)>,
    pub on_remove: Callback<usize>,
}

#[component]
pub fn PropertyRow(props: &PropertyRowProps) -> Html {
    let i = props.index;
    let name = props.on_name.reform(move |e: InputEvent| (i, field_value(&e).unwrap_or_default()));
    let value = props.on_value.reform(move |e: InputEvent| (i, field_value(&e).unwrap_or_default()));
    let remove = props.on_remove.reform(move |_: MouseEvent| i);
    html! {
        <li class="prop-row">
            <input aria-label="Property name" placeholder="name" value={props.name.clone()} oninput={name} />
            <input aria-label="Property value" placeholder="value" value={props.value.clone()} oninput={value} />
            <button type="button" aria-label={format!("Remove property {}", i + 1)} onclick={remove}>{"✕"}</button>
        </li>
    }
}
