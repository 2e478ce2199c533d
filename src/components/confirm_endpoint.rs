//! Asks before a token is sent to a host other than the hub it is signed for (a gateway, a hand-set endpoint).

use std::rc::Rc;
use yew::prelude::*;

use crate::state::Confirm;

#[derive(Properties, PartialEq)]
pub struct ConfirmEndpointProps {
    pub confirm: Rc<Confirm>,
    pub on_confirm: Callback<()>,
    pub on_cancel: Callback<()>,
}

#[component]
pub fn ConfirmEndpoint(props: &ConfirmEndpointProps) -> Html {
    let c = &props.confirm;
    // The question takes the keyboard focus when it appears (it is answered before anything else).
    let primary = use_node_ref();
    {
        let primary = primary.clone();
        use_effect_with(c.url.clone(), move |_| {
            if let Some(b) = primary.cast::<web_sys::HtmlElement>() {
                let _ = b.focus();
            }
        });
    }
    html! {
        <div class="confirm" role="alertdialog" aria-labelledby="confirm-h" aria-describedby="confirm-d">
            <h3 id="confirm-h">{"Send the token to "}{ &c.target }{"?"}</h3>
            <p id="confirm-d">
                {"The SAS token for "}<b>{ &c.hub }</b>{" will be sent to "}<b>{ &c.target }</b>
                { if c.dps { ", which is not Azure's Device Provisioning Service." } else { ", which is not that hub." } }
                {" Whoever runs it can use the token until it expires. Connect only if you trust it"}
                { if c.dps { "." } else { " (e.g. your IoT Edge gateway)." } }
            </p>
            <div class="buttons">
                <button type="button" class="primary" ref={primary} onclick={props.on_confirm.reform(|_| ())}>{"Send the token to "}{ &c.target }</button>
                <button type="button" onclick={props.on_cancel.reform(|_| ())}>{"Cancel"}</button>
            </div>
        </div>
    }
}
