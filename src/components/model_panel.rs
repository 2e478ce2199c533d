//! The Model panel: load a DTDL model (built in, pasted or from a file) and see the device it becomes, one
//! section per component: telemetry with live values and generators, properties (reported, desired, ack state
//! and the answer to give), commands (response form, status, last call). The state is [`crate::pnp`]; the
//! effects go through the controller. Small pieces are plain functions, not components (bundle size).

use std::rc::Rc;

use hubsim_dtdl::{builtin, Interface, Model};
use wasm_bindgen_futures::JsFuture;
use web_sys::{HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::field_value;
use crate::controller::{Controller, ControllerHandle};
use crate::pnp::{self, Choice, IfaceState, Item, PnpAction, PnpState};
use crate::state::{Action, AppContext};

fn send(app: &AppContext, a: PnpAction) {
    app.dispatch(Action::Pnp(a));
}

/// Which model field an input edits: data, so that every input shares one callback type per event type (each
/// distinct closure type would be its own code in the bundle).
#[derive(Clone, Copy)]
enum Field {
    Interval,
    Generator { plan: usize, var: usize, param: pnp::Param },
    Form { iface: usize, item: Item, field: usize },
    Choice { iface: usize, prop: usize },
    Reason { iface: usize, prop: usize },
    Status { iface: usize, cmd: usize },
}

impl Field {
    /// The action of the field's new text.
    fn action(self, text: String) -> PnpAction {
        match self {
            Field::Interval => PnpAction::Interval(text.trim().parse().unwrap_or(pnp::DEFAULT_INTERVAL_MS)),
            Field::Generator { plan, var, param } => PnpAction::Generator { plan, var, param, text },
            Field::Form { iface, item, field } => PnpAction::Field { iface, item, field, text },
            Field::Choice { iface, prop } => {
                let choice = Choice::ALL.into_iter().find(|c| c.label() == text).unwrap_or(Choice::Accept);
                PnpAction::Choice { iface, prop, choice }
            }
            Field::Reason { iface, prop } => PnpAction::Reason { iface, prop, text },
            Field::Status { iface, cmd } => {
                PnpAction::Status { iface, cmd, status: text.trim().parse().unwrap_or(200) }
            }
        }
    }
}

/// A callback that dispatches the action of field `f` with the input's text.
fn on_field<E: AsRef<Event> + 'static>(app: &AppContext, f: Field) -> Callback<E> {
    let app = app.clone();
    Callback::from(move |e: E| {
        if let Some(v) = field_value(e.as_ref()) {
            send(&app, f.action(v));
        }
    })
}

/// The refs of the model panel's built-in choice and pasted JSON, kept by the app.
pub struct ModelRefs {
    chosen: NodeRef,
    pasted: NodeRef,
}

/// The state of the model panel, and the effect that hands every new model state to the controller.
#[hook]
pub fn use_model_panel(pnp: &Rc<PnpState>, ctl: &ControllerHandle) -> ModelRefs {
    {
        let ctl = ctl.clone();
        use_effect_with(crate::util::Same(pnp.clone()), move |p| ctl.0.sync_pnp(p.0.clone()));
    }
    ModelRefs { chosen: use_node_ref(), pasted: use_node_ref() }
}

/// The model panel. A plain function called by the app, not a component (a component type costs some KB of the
/// bundle).
pub fn view_model_panel(app: &AppContext, ctl: &ControllerHandle, refs: &ModelRefs) -> Html {
    let ModelRefs { chosen, pasted } = refs;
    let load_builtin = {
        let (app, chosen) = (app.clone(), chosen.clone());
        Callback::from(move |_| {
            let key = chosen.cast::<HtmlSelectElement>().map(|s| s.value()).unwrap_or_default();
            if let Some(m) = builtin::find(&key) {
                send(&app, PnpAction::Load(m.json.into()));
            }
        })
    };
    let load_pasted = {
        let (app, pasted) = (app.clone(), pasted.clone());
        Callback::from(move |_| {
            if let Some(t) = pasted.cast::<HtmlTextAreaElement>() {
                send(&app, PnpAction::Load(t.value()));
            }
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
        <section class="panel pnp" aria-labelledby="pnp-h">
            { super::tx("h2", &[("id", Static("pnp-h"))], "Plug and Play model") }
            <div class="row wrap">
                <label>{"Built-in model"}
                    <select ref={chosen.clone()}>
                        // Yew inserts the options last first, so without `selected` the browser would keep the last one.
                        { for builtin::ALL.iter().enumerate().map(|(i, m)| super::option(m.key, m.title, i == 0)) }
                    </select>
                </label>
                { super::button("Load built-in model", load_builtin, false) }
                <label>{"Model file"}<input type="file" accept=".json,application/json" onchange={load_file} /></label>
            </div>
            <details>
                { super::tx("summary", &[], "…or paste a DTDL interface") }
                { super::tx("label", &[("for", Static("pnp-json"))], "Model JSON") }
                <textarea id="pnp-json" ref={pasted.clone()} rows="6" spellcheck="false" placeholder="{\"@context\": \"dtmi:dtdl:context;3\", \"@type\": \"Interface\", …}" />
                { super::button("Load pasted model", load_pasted, false) }
            </details>
            if let Some(e) = &s.error {
                <p class="field-error" role="alert">{"The model was not loaded: "}{ e }</p>
            }
            if let Some(m) = &s.model {
                { view_device(app, ctl, s, m) }
            }
        </section>
    }
}

fn view_device(app: &AppContext, ctl: &ControllerHandle, s: &PnpState, m: &Rc<Model>) -> Html {
    let unload = super::on_click(app, || Action::Pnp(PnpAction::Unload));
    let start = super::on_click_ctl(ctl, Controller::pnp_start);
    let stop = super::on_click_ctl(ctl, Controller::pnp_stop);
    let interval = on_field::<Event>(app, Field::Interval);
    let title = m.root.display_name.clone().unwrap_or_else(|| m.id().to_owned());
    let components = m
        .interfaces()
        .zip(s.interfaces.iter())
        .enumerate()
        .map(|(i, ((component, iface), st))| view_interface(app, ctl, s, m, i, component, iface, st));
    html! {
        <>
            <p class="pnp-model">{ super::el("b", &[], Html::from(title)) }{" "}{ super::el("code", &[], Html::from(m.id())) }{" "}
                { super::button("Unload model", unload, false) }</p>
            { super::tx("p", &[("class", Static("note"))], "The model id is announced in the CONNECT user name (model-id=) on the next connection.") }
            <fieldset class="repeat">
                { super::tx("legend", &[], "Model telemetry") }
                <label>{"Telemetry every (ms)"}<super::EditField number={Some(pnp::INTERVAL_RANGE_MS)} aria={AttrValue::Static("Telemetry every (ms)")} value={AttrValue::from(s.interval_ms.to_string())} disabled={s.running} onchange={interval} /></label>
                if s.running {
                    { super::button("Stop telemetry", stop, false) }
                } else {
                    { super::button("Start telemetry", start, false) }
                }
                <span>{ s.sent }{" messages sent"}</span>
            </fieldset>
            if let Some(e) = &s.generator_error {
                { super::error_p("pnp-err", e) }
            }
            { super::el("div", &[("class", Static("pnp-comps"))], Html::from_iter(components)) }
        </>
    }
}

#[allow(clippy::too_many_arguments)]
fn view_interface(
    app: &AppContext,
    ctl: &ControllerHandle,
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
                { super::tx("h4", &[], "Telemetry") }
                <ul class="pnp-list">
                    { for iface.telemetry.iter().zip(&st.telemetry).map(|(t, live)| {
                        let unit = t.semantics.unit_symbol().map_or(String::new(), |u| [" ", u].concat());
                        html! {
                            <li>
                                { super::el("b", &[], Html::from(&t.name)) }{" "}{ super::el("span", &[("class", Static("help"))], Html::from(pnp::describe(&t.schema))) }
                                <span class="pnp-live" role="group" aria-label={[&prefix, &t.name, " live value"].concat()}>
                                    { if live.last.is_empty() { "—".to_owned() } else { [&live.last, unit.as_str()].concat() } }
                                </span>
                                { plan.map(|p| view_generators(app, s, p, &t.name, &prefix)).unwrap_or_default() }
                            </li>
                        }
                    }) }
                </ul>
            }
            if !iface.properties.is_empty() {
                { super::tx("h4", &[], "Properties") }
                <ul class="pnp-list">
                    { for iface.properties.iter().enumerate().map(|(p, prop)| view_property(app, ctl, st, i, p, prop, &prefix)) }
                </ul>
            }
            if !iface.commands.is_empty() {
                { super::tx("h4", &[], "Commands") }
                <ul class="pnp-list">
                    { for iface.commands.iter().enumerate().map(|(c, cmd)| view_command(app, st, i, c, cmd, component)) }
                </ul>
            }
        </section>
    }
}

/// The generators of one telemetry (its variable and, for Objects, Maps and Arrays, its parts' variables).
fn view_generators(app: &AppContext, s: &PnpState, plan: usize, name: &str, prefix: &str) -> Html {
    let Some(p) = s.plans.get(plan) else { return html! {} };
    let under = [name, "_"].concat();
    let vars = p.config.variables().iter().enumerate().filter(|(_, v)| v.name == name || v.name.starts_with(&under));
    html! {
        <details class="pnp-gen">
            { super::tx("summary", &[], "Generator") }
            { for vars.map(|(var, v)| html! {
                <div class="row wrap">
                    <span>{ &v.name }{": "}{ pnp::kind_label(&v.kind) }</span>
                    { for pnp::kind_params(&v.kind).into_iter().map(|(param, text)| {
                        let label = [pnp::param_label(param), " of ", prefix, &v.name].concat();
                        let onchange = on_field::<Event>(app, Field::Generator { plan, var, param });
                        super::named_field(pnp::param_label(param), label, text, Some(onchange), None)
                    }) }
                </div>
            }) }
        </details>
    }
}

/// The inputs of a form: one per Object field, else one.
fn view_form(app: &AppContext, fields: &[String], labels: Vec<&str>, what: &str, iface: usize, item: Item) -> Html {
    html! {
        { for labels.into_iter().zip(fields).enumerate().map(|(field, (label, text))| {
            let oninput = on_field::<InputEvent>(app, Field::Form { iface, item, field });
            super::named_field(label, [label, " of ", what].concat(), text.clone(), None, Some(oninput))
        }) }
    }
}

fn view_property(
    app: &AppContext,
    ctl: &ControllerHandle,
    st: &IfaceState,
    i: usize,
    p: usize,
    prop: &hubsim_dtdl::Property,
    prefix: &str,
) -> Html {
    let Some(ps) = st.properties.get(p) else { return html! {} };
    let what = [prefix, &prop.name].concat();
    let unit = prop.semantics.unit_symbol().map_or(String::new(), |u| [" (", u, ")"].concat());
    let head = html! { <>{ super::el("b", &[], Html::from(&prop.name)) }{" "}<span class="help">{ pnp::describe(&prop.schema) }{ unit }</span></> };
    let error = ps.error.as_deref().map(|e| super::error_p("", e)).unwrap_or_default();
    if !prop.writable {
        let report = {
            let ctl = ctl.clone();
            Callback::from(move |_| ctl.0.pnp_report_property(i, p))
        };
        let labels = pnp::form_labels(&prop.schema, "value");
        return html! {
            <li class="pnp-prop">
                { head }{" read-only "}
                { view_form(app, &ps.fields, labels, &what, i, Item::Property(p)) }
                { super::named_button("Report", ["Report ", &what].concat(), report, false) }
                { error }
            </li>
        };
    }
    let choice = on_field::<Event>(app, Field::Choice { iface: i, prop: p });
    let reason = on_field::<InputEvent>(app, Field::Reason { iface: i, prop: p });
    let resolve = |c: Choice| {
        let ctl = ctl.clone();
        Callback::from(move |_| ctl.0.pnp_resolve(i, p, c))
    };
    let pending = ps.ack.as_ref().is_some_and(|a| a.code == 202) && ps.desired.is_some();
    html! {
        <li class="pnp-prop">
            { head }{" writable"}
            <div class="pnp-twin" role="group" aria-label={["Twin state of ", &what].concat()}>
                <span>{"desired: "}
                    { match &ps.desired {
                        Some((v, version)) => html! { <>{ super::el("code", &[], Html::from(v.to_string())) }{" (version "}{ version }{")"}</> },
                        None => html! { {"none"} },
                    } }
                </span>
                <span>{" · ack: "}{ ps.ack.as_ref().map_or("none".to_owned(), pnp::describe_ack) }</span>
            </div>
            { super::select("Answer", Some(["Answer to ", &what].concat()), choice, &Choice::ALL.map(|c| (c.label(), c.label())), ps.choice.label()) }
            if ps.choice == Choice::Reject {
                { super::named_field("Reason", ["Reason to reject ", &what].concat(), ps.reason.clone(), None, Some(reason)) }
            }
            if pending {
                { super::button("Accept now", resolve(Choice::Accept), false) }
                { super::button("Reject now", resolve(Choice::Reject), false) }
            }
        </li>
    }
}

fn view_command(
    app: &AppContext,
    st: &IfaceState,
    i: usize,
    c: usize,
    cmd: &hubsim_dtdl::Command,
    component: Option<&str>,
) -> Html {
    let Some(cs) = st.commands.get(c) else { return html! {} };
    let method = pnp::method_name(component, &cmd.name);
    let status = on_field::<Event>(app, Field::Status { iface: i, cmd: c });
    let request = cmd
        .request
        .as_ref()
        .map_or("no request".to_owned(), |r| ["request ", &r.name, ": ", &pnp::describe(&r.schema)].concat());
    html! {
        <li class="pnp-cmd">
            { super::el("code", &[], Html::from(&method)) }{" "}{ super::el("span", &[("class", Static("help"))], Html::from(request)) }
            <div class="row wrap" role="group" aria-label={["Response of ", &method].concat()}>
                if let Some(r) = &cmd.response {
                    { view_form(app, &cs.fields, pnp::form_labels(&r.schema, &r.name), &method, i, Item::Command(c)) }
                }
                <label>{"Status"}<super::EditField number={Some((100, 599))} aria={AttrValue::from(["Status of ", &method].concat())} value={AttrValue::from(cs.status.to_string())} onchange={status} /></label>
            </div>
            if let Some(e) = &cs.error { { super::error_p("", e) } }
            if let Some(l) = &cs.last {
                <p class="pnp-call" aria-label={["Last call of ", &method].concat()}>
                    { super::time_el(&l.time) }{" request "}<code>{ if l.request.is_empty() { "(none)" } else { &l.request } }</code>
                    {" → "}{ l.status }{" "}{ super::el("code", &[], Html::from(&l.response)) }
                </p>
            }
        </li>
    }
}
