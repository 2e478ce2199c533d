//! The Model panel: load a DTDL model (built in, pasted or from a file) and see the device it becomes, one
//! section per component: telemetry with live values and generators, properties (reported, desired, ack state
//! and the answer to give), commands (response form, status, last call). The state is [`crate::pnp`]; the
//! effects go through the controller. Small pieces are plain functions, not components (bundle size).

use std::rc::Rc;

use hubsim_dtdl::{builtin, Interface, Model};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Element, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;

use super::{field_value, use_app, use_controller};
use crate::pnp::{self, control_key as key, Choice, IfaceState, PnpAction, PnpState};
use crate::state::{Action, AppContext};

fn send(app: &AppContext, a: PnpAction) {
    app.dispatch(Action::Pnp(a));
}

/// The `data-a` key and the value of the control an event came from.
fn keyed(e: &Event) -> Option<(String, String)> {
    let key = e.target_dyn_into::<Element>()?.get_attribute("data-a")?;
    Some((key, field_value(e)?))
}

#[component]
pub fn ModelPanel() -> Html {
    let app = use_app();
    let ctl = use_controller();
    {
        let ctl = ctl.clone();
        use_effect_with(app.pnp.clone(), move |p| ctl.0.sync_pnp(p.clone()));
    }
    let chosen = use_node_ref();
    let pasted = use_node_ref();
    // One handler per event type for every control of the panel, which names its action in `data-a`.
    let onclick = {
        let (app, chosen, pasted) = (app.clone(), chosen.clone(), pasted.clone());
        Callback::from(move |e: MouseEvent| {
            let Some(b) = e.target_dyn_into::<Element>().and_then(|t| t.closest("button[data-a]").ok().flatten())
            else {
                return;
            };
            let k = b.get_attribute("data-a").unwrap_or_default();
            let mut t = k.split(' ');
            let cmd = t.next().unwrap_or_default();
            let n: Vec<usize> = t.filter_map(|x| x.parse().ok()).collect();
            let c = &ctl.0;
            match (cmd, n.as_slice()) {
                ("start", _) => c.pnp_start(),
                ("stop", _) => c.pnp_stop(),
                ("unload", _) => send(&app, PnpAction::Unload),
                ("builtin", _) => {
                    let key = chosen.cast::<HtmlSelectElement>().map(|s| s.value()).unwrap_or_default();
                    if let Some(m) = builtin::find(&key) {
                        send(&app, PnpAction::Load(m.json.into()));
                    }
                }
                ("paste", _) => {
                    if let Some(t) = pasted.cast::<HtmlTextAreaElement>() {
                        send(&app, PnpAction::Load(t.value()));
                    }
                }
                ("rep", [i, p]) => c.pnp_report_property(*i, *p),
                ("acc", [i, p]) => c.pnp_resolve(*i, *p, Choice::Accept),
                ("rej", [i, p]) => c.pnp_resolve(*i, *p, Choice::Reject),
                _ => {}
            }
        })
    };
    // Form fields and reasons follow every keystroke (their errors show at once); the rest on change.
    let live = |k: &str| k.starts_with("fp ") || k.starts_with("fc ") || k.starts_with("rs ");
    let oninput = {
        let app = app.clone();
        Callback::from(move |e: InputEvent| match keyed(&e) {
            Some((k, v)) if live(&k) => pnp::control_action(&k, v).into_iter().for_each(|a| send(&app, a)),
            _ => {}
        })
    };
    let onchange = {
        let app = app.clone();
        Callback::from(move |e: Event| match keyed(&e) {
            Some((k, v)) if !live(&k) => pnp::control_action(&k, v).into_iter().for_each(|a| send(&app, a)),
            _ => {}
        })
    };
    let load_file = {
        let app = app.clone();
        Callback::from(move |e: Event| {
            let Some(file) = e.target_dyn_into::<HtmlInputElement>().and_then(|i| i.files()).and_then(|f| f.get(0))
            else {
                return;
            };
            if let Some(why) = pnp::file_too_large(file.size()) {
                return send(&app, PnpAction::LoadFailed(why));
            }
            let app = app.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let a = match JsFuture::from(file.text()).await.map(|v| v.as_string()) {
                    Ok(Some(text)) => PnpAction::Load(text),
                    _ => PnpAction::LoadFailed("the file could not be read as text".into()),
                };
                send(&app, a);
            });
        })
    };
    let s = &app.pnp;
    html! {
        <section class="panel pnp" aria-labelledby="pnp-h" {onclick} {oninput} {onchange}>
            <h2 id="pnp-h">{"Plug and Play model"}</h2>
            <div class="row wrap">
                <label>{"Built-in model"}
                    <select ref={chosen}>
                        { for builtin::ALL.iter().map(|m| html! { <option value={m.key}>{ m.title }</option> }) }
                    </select>
                </label>
                <button type="button" data-a="builtin">{"Load built-in model"}</button>
                <label>{"Model file"}<input type="file" accept=".json,application/json" onchange={load_file} /></label>
            </div>
            <details>
                <summary>{"…or paste a DTDL interface"}</summary>
                <label for="pnp-json">{"Model JSON"}</label>
                <textarea id="pnp-json" ref={pasted} rows="6" spellcheck="false" placeholder="{\"@context\": \"dtmi:dtdl:context;3\", \"@type\": \"Interface\", …}" />
                <button type="button" data-a="paste">{"Load pasted model"}</button>
            </details>
            if let Some(e) = &s.error {
                <p class="field-error" role="alert">{"The model was not loaded: "}{ e }</p>
            }
            if let Some(m) = &s.model {
                { view_device(s, m) }
            }
        </section>
    }
}

fn view_device(s: &PnpState, m: &Rc<Model>) -> Html {
    let title = m.root.display_name.clone().unwrap_or_else(|| m.id().to_owned());
    let components = m
        .interfaces()
        .zip(s.interfaces.iter())
        .enumerate()
        .map(|(i, ((component, iface), st))| view_interface(s, m, i, component, iface, st));
    html! {
        <>
            <p class="pnp-model"><b>{ title }</b>{" "}<code>{ m.id() }</code>{" "}
                <button type="button" data-a="unload">{"Unload model"}</button></p>
            <p class="note">{"The model id is announced in the CONNECT user name (model-id=) on the next connection."}</p>
            <fieldset class="repeat">
                <legend>{"Model telemetry"}</legend>
                <label>{"Telemetry every (ms)"}<input type="number" min="100" data-a="iv" value={s.interval_ms.to_string()} disabled={s.running} /></label>
                if s.running {
                    <button type="button" data-a="stop">{"Stop telemetry"}</button>
                } else {
                    <button type="button" data-a="start">{"Start telemetry"}</button>
                }
                <span>{ s.sent }{" messages sent"}</span>
            </fieldset>
            if let Some(e) = &s.generator_error {
                <p class="field-error" role="alert">{ e }</p>
            }
            <div class="pnp-comps">{ for components }</div>
        </>
    }
}

fn view_interface(
    s: &PnpState,
    m: &Model,
    i: usize,
    component: Option<&str>,
    iface: &Interface,
    st: &IfaceState,
) -> Html {
    let id = ["pnp-c", &i.to_string()].concat();
    let title = match component {
        None => "Default component".to_owned(),
        Some(c) => {
            let shown = m.root.component(c).and_then(|x| x.display_name.as_deref());
            [c, shown.map_or("", |_| " — "), shown.unwrap_or("")].concat()
        }
    };
    let prefix = component.map_or(String::new(), |c| [c, " "].concat());
    let plan = s.plans.iter().position(|p| p.component.as_deref() == component);
    html! {
        <section class="pnp-comp" aria-labelledby={id.clone()}>
            <h3 {id}>{ title }</h3>
            if !iface.telemetry.is_empty() {
                <h4>{"Telemetry"}</h4>
                <ul class="pnp-list">
                    { for iface.telemetry.iter().zip(&st.telemetry).map(|(t, live)| {
                        let unit = t.semantics.unit_symbol().map_or(String::new(), |u| [" ", u].concat());
                        html! {
                            <li>
                                <b>{ &t.name }</b>{" "}<span class="help">{ pnp::describe(&t.schema) }</span>
                                <span class="pnp-live" role="group" aria-label={[&prefix, &t.name, " live value"].concat()}>
                                    { if live.last.is_empty() { "—".to_owned() } else { [&live.last, unit.as_str()].concat() } }
                                </span>
                                { view_chart(&live.history) }
                                { plan.map(|p| view_generators(s, p, &t.name, &prefix)).unwrap_or_default() }
                            </li>
                        }
                    }) }
                </ul>
            }
            if !iface.properties.is_empty() {
                <h4>{"Properties"}</h4>
                <ul class="pnp-list">
                    { for iface.properties.iter().enumerate().map(|(p, prop)| view_property(st, i, p, prop, &prefix)) }
                </ul>
            }
            if !iface.commands.is_empty() {
                <h4>{"Commands"}</h4>
                <ul class="pnp-list">
                    { for iface.commands.iter().enumerate().map(|(c, cmd)| view_command(st, i, c, cmd, component)) }
                </ul>
            }
        </section>
    }
}

/// Where a chart of the telemetry's recent values goes (the charts work plugs in here); the values are in
/// `history`, newest last, at most [`pnp::MAX_HISTORY`].
fn view_chart(_history: &std::collections::VecDeque<f64>) -> Html {
    html! {}
}

/// The generators of one telemetry (its variable and, for Objects, Maps and Arrays, its parts' variables).
fn view_generators(s: &PnpState, plan: usize, name: &str, prefix: &str) -> Html {
    let Some(p) = s.plans.get(plan) else { return html! {} };
    let under = [name, "_"].concat();
    let vars = p.config.variables().iter().enumerate().filter(|(_, v)| v.name == name || v.name.starts_with(&under));
    html! {
        <details class="pnp-gen">
            <summary>{"Generator"}</summary>
            { for vars.map(|(var, v)| html! {
                <div class="row wrap">
                    <span>{ &v.name }{": "}{ pnp::kind_label(&v.kind) }</span>
                    { for pnp::kind_params(&v.kind).into_iter().map(|(param, text)| {
                        let label = [pnp::param_label(param), " of ", prefix, &v.name].concat();
                        html! { <label>{ pnp::param_label(param) }<input aria-label={label} data-a={key("g", &[plan, var, param as usize])} value={text} /></label> }
                    }) }
                </div>
            }) }
        </details>
    }
}

/// The inputs of a form (one per Object field, else one), keyed `{kind} {iface} {index} {field}`.
fn view_form(fields: &[String], labels: Vec<&str>, what: &str, kind: &str, i: usize, index: usize) -> Html {
    html! {
        { for labels.into_iter().zip(fields).enumerate().map(|(n, (label, text))| html! {
            <label>{ label }<input aria-label={[label, " of ", what].concat()} data-a={key(kind, &[i, index, n])} value={text.clone()} /></label>
        }) }
    }
}

fn view_property(st: &IfaceState, i: usize, p: usize, prop: &hubsim_dtdl::Property, prefix: &str) -> Html {
    let Some(ps) = st.properties.get(p) else { return html! {} };
    let what = [prefix, &prop.name].concat();
    let unit = prop.semantics.unit_symbol().map_or(String::new(), |u| [" (", u, ")"].concat());
    let head =
        html! { <><b>{ &prop.name }</b>{" "}<span class="help">{ pnp::describe(&prop.schema) }{ unit }</span></> };
    let error = ps.error.as_ref().map(|e| html! { <p class="field-error" role="alert">{ e }</p> }).unwrap_or_default();
    if !prop.writable {
        return html! {
            <li class="pnp-prop">
                { head }{" read-only "}
                { view_form(&ps.fields, pnp::form_labels(&prop.schema, "value"), &what, "fp", i, p) }
                <button type="button" data-a={key("rep", &[i, p])} aria-label={["Report ", &what].concat()}>{"Report"}</button>
                { error }
            </li>
        };
    }
    let pending = ps.ack.as_ref().is_some_and(|a| a.code == 202) && ps.desired.is_some();
    html! {
        <li class="pnp-prop">
            { head }{" writable"}
            <div class="pnp-twin" role="group" aria-label={["Twin state of ", &what].concat()}>
                <span>{"desired: "}
                    { match &ps.desired {
                        Some((v, version)) => html! { <><code>{ v.to_string() }</code>{" (version "}{ version }{")"}</> },
                        None => html! { {"none"} },
                    } }
                </span>
                <span>{" · ack: "}{ ps.ack.as_ref().map_or("none".to_owned(), pnp::describe_ack) }</span>
            </div>
            <label>{"Answer"}
                <select aria-label={["Answer to ", &what].concat()} data-a={key("ch", &[i, p])}>
                    { for Choice::ALL.iter().map(|c| html! { <option value={c.label()} selected={*c == ps.choice}>{ c.label() }</option> }) }
                </select>
            </label>
            if ps.choice == Choice::Reject {
                <label>{"Reason"}<input aria-label={["Reason to reject ", &what].concat()} data-a={key("rs", &[i, p])} value={ps.reason.clone()} /></label>
            }
            if pending {
                <button type="button" data-a={key("acc", &[i, p])}>{"Accept now"}</button>
                <button type="button" data-a={key("rej", &[i, p])}>{"Reject now"}</button>
            }
        </li>
    }
}

fn view_command(st: &IfaceState, i: usize, c: usize, cmd: &hubsim_dtdl::Command, component: Option<&str>) -> Html {
    let Some(cs) = st.commands.get(c) else { return html! {} };
    let method = pnp::method_name(component, &cmd.name);
    let request = cmd
        .request
        .as_ref()
        .map_or("no request".to_owned(), |r| ["request ", &r.name, ": ", &pnp::describe(&r.schema)].concat());
    html! {
        <li class="pnp-cmd">
            <code>{ &method }</code>{" "}<span class="help">{ request }</span>
            <div class="row wrap" role="group" aria-label={["Response of ", &method].concat()}>
                if let Some(r) = &cmd.response {
                    { view_form(&cs.fields, pnp::form_labels(&r.schema, &r.name), &method, "fc", i, c) }
                }
                <label>{"Status"}<input type="number" min="100" max="599" aria-label={["Status of ", &method].concat()} data-a={key("st", &[i, c])} value={cs.status.to_string()} /></label>
            </div>
            if let Some(e) = &cs.error { <p class="field-error" role="alert">{ e }</p> }
            if let Some(l) = &cs.last {
                <p class="pnp-call" aria-label={["Last call of ", &method].concat()}>
                    <time>{ &l.time }</time>{" request "}<code>{ if l.request.is_empty() { "(none)" } else { &l.request } }</code>
                    {" → "}{ l.status }{" "}<code>{ &l.response }</code>
                </p>
            }
        </li>
    }
}
