//! The SAS token tool: a token for the current device and lifetime, to copy (Device Explorer's feature).

use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::on_number;
use crate::settings::{Number, MAX_TTL_SECS, MIN_TTL_SECS};
use crate::state::AppContext;
use crate::token::sas_token;
use crate::util;

/// The last generated token and its expiry (Unix seconds), or why there is none; the app keeps it.
pub type Token = UseStateHandle<Option<Result<(String, u64), String>>>;

/// The SAS token panel. A plain function called by the app, not a component (a component type costs some KB of
/// the bundle).
pub fn view_sas_tool(app: &AppContext, token: &Token) -> Html {
    let generate = {
        let (app, token) = (app.clone(), token.clone());
        Callback::from(move |_| token.set(Some(sas_token(&app.settings, util::unix_now()))))
    };
    html! {
        <section class="panel" aria-labelledby="sas-h">
            { super::tx("h2", &[("id", Static("sas-h"))], "SAS token") }
            <div class="row">
                { super::num_field("Token lifetime (s)", app.settings.token_ttl_secs.into(), MIN_TTL_SECS.into(), Some(MAX_TTL_SECS.into()),
                    Some(("sas-ttl-help", "10 s to 1 day (86400 s)")), on_number(app, Number::TokenTtl)) }
                { super::button("Generate SAS token", generate, false) }
            </div>
            { match &**token {
                Some(Ok((t, exp))) => {
                    let t2 = t.clone();
                    let expires = String::from(js_sys::Date::new(&((*exp as f64) * 1000.0).into()).to_iso_string());
                    html! {
                        <div>
                            { super::tx("label", &[("for", Static("sas-out"))], "Token") }
                            <textarea id="sas-out" readonly=true rows="3" value={t.clone()} />
                            <p class="note">{"expires at "}{ expires }{" (Unix time "}{ exp }{")"}</p>
                            <button type="button" onclick={Callback::from(move |_| util::copy(&t2))}>{"Copy token"}</button>
                        </div>
                    }
                }
                Some(Err(e)) => super::error_p(e),
                None => html! {},
            } }
        </section>
    }
}
