//! Asks before a token is sent to a host other than the hub it is signed for (a gateway, a hand-set endpoint).

use yew::prelude::*;

use crate::state::Confirm;

/// The question for `c`. A plain function called by the connect form, not a component (a component type costs
/// some KB of the bundle): the form gives the ref of the "Send the token" button, which it focuses when the
/// question appears or changes (the question is answered before anything else).
pub fn view_confirm_endpoint(
    c: &Confirm,
    primary: NodeRef,
    on_confirm: Callback<MouseEvent>,
    on_cancel: Callback<MouseEvent>,
) -> Html {
    html! {
        <div class="confirm" role="alertdialog" aria-labelledby="confirm-h" aria-describedby="confirm-d">
            <h3 id="confirm-h">{"Send the token to "}{ &c.target }{"?"}</h3>
            <p id="confirm-d">
                {"The SAS token for "}{ super::el("b", &[], Html::from(&c.hub)) }{" will be sent to "}{ super::el("b", &[], Html::from(&c.target)) }
                { if c.dps { ", which is not Azure's Device Provisioning Service." } else { ", which is not that hub." } }
                {" Whoever runs it can use the token until it expires. Connect only if you trust it"}
                { if c.dps { "." } else { " (e.g. your IoT Edge gateway)." } }
            </p>
            <div class="buttons">
                <button type="button" class="primary" ref={primary} onclick={on_confirm}>{"Send the token to "}{ &c.target }</button>
                <button type="button" onclick={on_cancel}>{"Cancel"}</button>
            </div>
        </div>
    }
}
