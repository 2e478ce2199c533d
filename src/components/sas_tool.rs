//! The SAS token tool: a token for the current device and lifetime, to copy (Device Explorer's feature).

use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::on_number;
use crate::settings::Number;
use crate::state::AppContext;
use crate::token::sas_token;
use crate::util;

/// The last generated token (empty before the first and after a refusal) and the line under it: when it expires,
/// or why there is none. The app keeps them (two text states: a state of another type is some code of its own).
pub type Token = (UseStateHandle<String>, UseStateHandle<String>);

/// The SAS token panel. A plain function called by the app, not a component (a component type costs some KB of
/// the bundle).
pub fn view_sas_tool(app: &AppContext, token: &Token) -> Html {
    let generate = {
        let (app, (token, note)) = (app.clone(), token.clone());
        Callback::from(move |_| match sas_token(&app.settings, util::unix_now()) {
            Ok((t, exp)) => {
                let at = String::from(js_sys::Date::new(&((exp as f64) * 1000.0).into()).to_iso_string());
                note.set(["expires at ", &at, " (Unix time ", &exp.to_string(), ")"].concat());
                token.set(t);
            }
            Err(e) => {
                note.set(e);
                token.set(String::new());
            }
        })
    };
    let (token, note) = token;
    html! {
        <section class="panel" aria-labelledby="sas-h">
            { super::tx("h2", &[("id", Static("sas-h"))], "SAS token") }
            <div class="row">
                { super::num_field("Token lifetime (s)", app.settings.token_ttl_secs, Number::TokenTtl.range(),
                    Some(("sas-ttl-help", "10 s to 1 day (86400 s)")), on_number(app, Number::TokenTtl)) }
                { super::button("Generate SAS token", generate, false) }
            </div>
            if !token.is_empty() {
                <div>
                    { super::tx("label", &[("for", Static("sas-out"))], "Token") }
                    <textarea id="sas-out" readonly=true rows="3" value={(**token).clone()} />
                    { super::el("p", &[("class", Static("note"))], Html::from(&**note)) }
                    { super::button("Copy token", { let t = token.clone(); Callback::from(move |_| util::copy(&t)) }, false) }
                </div>
            } else if !note.is_empty() {
                { super::error_p("sas-err", note) }
            }
        </section>
    }
}
