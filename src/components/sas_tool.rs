//! The SAS token tool: a token for the current device and lifetime, to copy (Device Explorer's feature).

use yew::prelude::*;

use super::{on_text, use_app};
use crate::controller::sas_token;
use crate::util;

#[component]
pub fn SasTool() -> Html {
    let app = use_app();
    let token = use_state(|| None::<Result<(String, u64), String>>);
    let generate = {
        let (app, token) = (app.clone(), token.clone());
        Callback::from(move |_| token.set(Some(sas_token(&app.settings))))
    };
    html! {
        <section class="panel" aria-labelledby="sas-h">
            <h2 id="sas-h">{"SAS token"}</h2>
            <div class="row">
                <label>{"Lifetime (s)"}<input type="number" min="10" value={app.settings.token_ttl_secs.to_string()} onchange={on_text(&app, |s, v| s.token_ttl_secs = v.parse().unwrap_or(3600))} /></label>
                <button type="button" onclick={generate}>{"Generate SAS token"}</button>
            </div>
            { match &*token {
                Some(Ok((t, exp))) => {
                    let t2 = t.clone();
                    html! {
                        <div>
                            <label for="sas-out">{"Token"}</label>
                            <textarea id="sas-out" readonly=true rows="3" value={t.clone()} />
                            <p class="note">{ format!("expires at Unix time {exp}") }</p>
                            <button type="button" onclick={Callback::from(move |_| util::copy(&t2))}>{"Copy token"}</button>
                        </div>
                    }
                }
                Some(Err(e)) => html! { <p class="field-error" role="alert">{ e }</p> },
                None => html! {},
            } }
        </section>
    }
}
