//! The app's panels and pieces, one per file. Most panels are plain functions the app calls with the state, the
//! controller and the state it keeps for them (a component type costs some KB of the bundle); the status bar and
//! the charts, which render on their own clock, and the entries of the inbox and the log, which are rendered only
//! once ([`log_line::EntryView`]), are components that take props. They talk up through the controller, reducer
//! actions or callbacks. The small helpers below build the elements the panels repeat (each element `html!`
//! builds is its own code in the bundle).

pub mod activity_log;
pub mod charts;
pub mod composer;
pub mod confirm_endpoint;
pub mod connect_panel;
pub mod inbox;
pub mod inbox_message;
pub mod link_banner;
pub mod log_line;
pub mod methods;
pub mod model_panel;
pub mod property_row;
pub mod sas_tool;
pub mod status_bar;
pub mod templates;
pub mod twin;

use crate::controller::{Controller, ControllerHandle};
use crate::settings::{Change, Flag, Number, Text};
use crate::state::{Action, AppContext};
use wasm_bindgen::JsCast;
use web_sys::{HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;
use yew::virtual_dom::{AttributeOrProperty, Attributes, Listeners, VTag};

/// The value of the input, textarea or select an event came from.
pub fn field_value(e: &Event) -> Option<String> {
    let t = e.target()?;
    if let Some(i) = t.dyn_ref::<HtmlInputElement>() {
        Some(i.value())
    } else if let Some(a) = t.dyn_ref::<HtmlTextAreaElement>() {
        Some(a.value())
    } else {
        t.dyn_ref::<HtmlSelectElement>().map(HtmlSelectElement::value)
    }
}

/// A callback that writes a text field on every keystroke.
pub fn on_text(app: &AppContext, f: Text) -> Callback<InputEvent> {
    let app = app.clone();
    Callback::from(move |e: InputEvent| {
        if let Some(v) = field_value(&e) {
            app.dispatch(Action::Edit(Change::Text(f, v)));
        }
    })
}

/// A callback for a number field or a select of numbers; the range is checked by the form's validation, which
/// explains it next to the field.
pub fn on_number(app: &AppContext, f: Number) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |e: Event| {
        if let Some(n) = field_value(&e).and_then(|v| v.trim().parse::<u32>().ok()) {
            app.dispatch(Action::Edit(Change::Number(f, n)));
        }
    })
}

/// A click that dispatches the action `action` makes: one closure type for the plain action buttons of every
/// panel (each closure is its own code in the bundle).
#[inline(never)]
pub fn on_click(app: &AppContext, action: fn() -> Action) -> Callback<MouseEvent> {
    let app = app.clone();
    Callback::from(move |_| app.dispatch(action()))
}

/// A click that runs the controller's `run` (start, stop, disconnect): one closure type for those buttons.
#[inline(never)]
pub fn on_click_ctl(ctl: &ControllerHandle, run: fn(&Controller)) -> Callback<MouseEvent> {
    let ctl = ctl.clone();
    Callback::from(move |_| run(&ctl.0))
}

/// A callback for a checkbox.
pub fn on_flag(app: &AppContext, f: Flag) -> Callback<Event> {
    let app = app.clone();
    Callback::from(move |e: Event| {
        if let Some(i) = e.target_dyn_into::<HtmlInputElement>() {
            app.dispatch(Action::Edit(Change::Flag(f, i.checked())));
        }
    })
}

/// `<button type="button" onclick>{text}</button>`, disabled when `off` (else without the attribute). One
/// function for the panels' many plain buttons: each element an `html!` builds is its own code in the bundle.
#[inline(never)]
pub fn button(text: &'static str, onclick: Callback<MouseEvent>, off: bool) -> Html {
    html! { <button type="button" {onclick} disabled={off}>{ lit(text) }</button> }
}

/// A text node of a literal (`{ text }` of a `&str` would copy it).
fn lit(text: &'static str) -> Html {
    Html::from(yew::virtual_dom::VText::new(AttrValue::Static(text)))
}

/// A checkbox of a settings flag: `<label class="check"><input type="checkbox" checked onchange />{text}</label>`.
#[inline(never)]
pub fn check(app: &AppContext, f: Flag, on: bool, text: &'static str) -> Html {
    html! { <label class="check"><input type="checkbox" checked={on} onchange={on_flag(app, f)} />{ lit(text) }</label> }
}

/// A labelled one-line text field: `<label>{label}<input value placeholder aria-invalid oninput /></label>`, a
/// password field when `secret` (autocomplete off). An empty placeholder and a `None` validity leave their
/// attribute out.
#[inline(never)]
pub fn text_field(
    label: &'static str,
    value: &str,
    placeholder: &'static str,
    invalid: Option<bool>,
    secret: bool,
    oninput: Callback<InputEvent>,
) -> Html {
    html! {
        <label>{ lit(label) }<input type={secret.then_some("password")} autocomplete={secret.then_some("off")}
            value={value.to_owned()} placeholder={(!placeholder.is_empty()).then_some(placeholder)}
            aria-invalid={invalid.map(|i| if i { "true" } else { "false" })} {oninput} /></label>
    }
}

/// `<p class="field-error" role="alert" id={id}>{text}</p>`.
#[inline(never)]
pub fn error_p(id: &'static str, text: &str) -> Html {
    // `id` names the alert for its field's `aria-describedby`; "" for none (an alert in a list).
    let id = (!id.is_empty()).then_some(id);
    html! { <p class="field-error" role="alert" {id}>{ text }</p> }
}

/// `<option value selected>{label}</option>`.
#[inline(never)]
pub fn option(value: &'static str, label: &'static str, selected: bool) -> Html {
    html! { <option value={value} {selected}>{ lit(label) }</option> }
}

/// A labelled number field: `<label>{label}<input type="number" min max onchange />{help}</label>` showing `value`
/// ([`EditField`]: what is typed survives the app's renders until it is committed, and an entry outside
/// `min..=max` or not a whole number is refused with a message beside the field), the help (`(id, text)`) a span
/// that describes the field. The field is named by `label` alone (`aria-label`): the help and a refusal inside the
/// `<label>` are not part of its name.
#[inline(never)]
pub fn num_field(
    label: &'static str,
    value: u32,
    (min, max): (u32, u32),
    help: Option<(&'static str, &'static str)>,
    onchange: Callback<Event>,
) -> Html {
    html! {
        <label>{ lit(label) }
            <EditField number={Some((min, max))} aria={AttrValue::Static(label)} describedby={help.map(|h| AttrValue::Static(h.0))}
                value={AttrValue::from(value.to_string())} {onchange} />
            if let Some((id, text)) = help { <span {id} class="help">{ lit(text) }</span> }
        </label>
    }
}

/// The props of [`EditField`].
#[derive(Properties, PartialEq)]
pub struct EditFieldProps {
    /// The stored value, shown when the field is mounted and whenever it changes.
    pub value: AttrValue,
    pub onchange: Callback<Event>,
    /// A number field of this inclusive range: an entry outside it (or not a whole number, or empty) is not
    /// passed on; the field shows why and keeps the stored value.
    #[prop_or_default]
    pub number: Option<(u32, u32)>,
    #[prop_or_default]
    pub aria: Option<AttrValue>,
    #[prop_or_default]
    pub describedby: Option<AttrValue>,
    #[prop_or_default]
    pub disabled: bool,
}

/// An input that commits on `change` (leaving the field, Enter): `<input type min max aria-label
/// aria-describedby disabled onchange />`. Yew (0.23) sets an input's DOM value back to its `value` at every
/// render when the two differ, so a field whose state changes only on `change` would lose what is being typed
/// whenever anything else re-renders the page (an acknowledgement, a log line, a C2D message). This one has no
/// `value` of its own: the stored value is written into the DOM when the field is mounted, when that value changes
/// and after each commit (so a refused entry gives way to the stored value, as the error beside it says, and an
/// out-of-range number cannot block its form's submission), never while typing. Enter commits without submitting
/// the form around it. A number field's refusal, `<span role="alert">{label}: must be…</span>`, is linked to the
/// input (`aria-describedby`), goes with the next keystroke, commit or change of the stored value, and appears or
/// goes only once a pointer press under way has ended ([`press`]).
#[component]
pub fn EditField(p: &EditFieldProps) -> Html {
    let node = use_node_ref();
    let commits = use_mut_ref(|| 0u32);
    // (the refusal shown, the stored value it was about) and this field's id for the refusal's element.
    let refused = use_mut_ref(|| None::<(String, AttrValue)>);
    let id = use_mut_ref(next_id);
    let redraw = use_force_update();
    {
        let node = node.clone();
        use_effect_with((p.value.clone(), *commits.borrow()), move |(v, _)| {
            if let Some(i) = node.cast::<HtmlInputElement>() {
                if i.value() != v.as_str() {
                    i.set_value(v);
                }
            }
        });
    }
    // A refusal is about the entry it refused: it goes when the stored value changes (elsewhere, by a link).
    if refused.borrow().as_ref().is_some_and(|r| r.1 != p.value) {
        *refused.borrow_mut() = None;
    }
    let commit = {
        let (on, range, value, refused, label) =
            (p.onchange.clone(), p.number, p.value.clone(), refused.clone(), p.aria.clone());
        let redraw = redraw.clone();
        move |e: Event| {
            let error = range
                .and_then(|r| crate::settings::number_entry_error(&field_value(&e).unwrap_or_default(), r, &value));
            let shown = refused.borrow().is_some() || error.is_some();
            match &error {
                None => on.emit(e),
                // The stored value goes back at once, before the form this press may submit checks its fields
                // (an out-of-range number would block the submission); the message may wait (below).
                Some(_) => {
                    if let Some(i) = e.target_dyn_into::<HtmlInputElement>() {
                        i.set_value(&value);
                    }
                }
            }
            let label = label.as_deref().map_or(String::new(), |l| [l, ": "].concat());
            let now = error.map(|t| ([&label, t.as_str()].concat(), value.clone()));
            *commits.borrow_mut() += 1;
            let (refused, redraw) = (refused.clone(), redraw.clone());
            let show = move || {
                *refused.borrow_mut() = now;
                redraw.force_update();
            };
            // A refusal that appears or goes moves what is below it: not while the click that left the field is
            // still under way (it would land beside its button and be lost), even if something else renders.
            if shown {
                press::after(show);
            } else {
                show();
            }
        }
    };
    let onchange = Callback::from(commit.clone());
    // A new entry: the refusal of the last one goes (typing the kept value again makes no `change` to clear it).
    let oninput = {
        let refused = refused.clone();
        Callback::from(move |_: InputEvent| {
            if refused.borrow_mut().take().is_some() {
                redraw.force_update();
            }
        })
    };
    // Enter commits the field without submitting its form (the composer would send a message).
    let onkeydown = Callback::from(move |e: KeyboardEvent| {
        if e.key() == "Enter" {
            e.prevent_default();
            commit(e.into());
        }
    });
    let (min, max) = match p.number {
        Some((lo, hi)) => (Some(lo.to_string()), Some(hi.to_string())),
        None => (None, None),
    };
    let error = refused.borrow().as_ref().map(|r| r.0.clone());
    let err_id = ["field-error-", &id.borrow().to_string()].concat();
    let describedby = match (&p.describedby, &error) {
        (Some(help), Some(_)) => Some(AttrValue::from([help.as_str(), " ", &err_id].concat())),
        (None, Some(_)) => Some(AttrValue::from(err_id.clone())),
        (help, None) => help.clone(),
    };
    html! {
        <>
            <input ref={node} type={p.number.map(|_| "number")} {min} {max} aria-label={p.aria.clone()}
                aria-describedby={describedby} aria-invalid={error.as_ref().map(|_| "true")} disabled={p.disabled} {onchange} {onkeydown} {oninput} />
            if let Some(text) = error {
                <span id={err_id} class="field-error" role="alert">{ text }</span>
            }
        </>
    }
}

/// What a field's refusal waits for: the pointer press under way to end. A refusal is shown when its field loses
/// the focus, which a press on a button does before the button is clicked; shown (or taken away) at once, it would
/// move the button from under the pointer and the click would be lost. `static/ui.js` follows the presses (for
/// every alert of the page): it marks one under way on `<html>` (`data-pressing`) and says when it has ended, after
/// its click or otherwise, with a `hubsim-press-end` event. Without that script nothing waits.
mod press {
    use std::cell::RefCell;
    use wasm_bindgen::prelude::*;

    thread_local! {
        /// What waits for the end of the press under way (listening from the first wait on).
        static AFTER: RefCell<Vec<Box<dyn FnOnce()>>> = {
            if let Some(w) = web_sys::window() {
                let end = Closure::<dyn Fn()>::new(|| {
                    for f in AFTER.with(RefCell::take) {
                        f();
                    }
                });
                let _ = w.add_event_listener_with_callback("hubsim-press-end", end.as_ref().unchecked_ref());
                end.forget();
            }
            RefCell::default()
        };
    }

    fn pressing() -> bool {
        let root = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element());
        root.is_some_and(|e| e.has_attribute("data-pressing"))
    }

    /// Runs `f` now, or once the pointer press under way has ended and made its click.
    pub fn after(f: impl FnOnce() + 'static) {
        if pressing() {
            AFTER.with(|a| a.borrow_mut().push(Box::new(f)));
        } else {
            f();
        }
    }
}

/// A number unique in this page, for element ids.
fn next_id() -> u32 {
    thread_local! { static LAST: std::cell::Cell<u32> = const { std::cell::Cell::new(0) }; }
    LAST.with(|l| {
        l.set(l.get() + 1);
        l.get()
    })
}

/// The static attributes of a [`tx`] element, as `html!` writes them.
pub type Attrs = &'static [(&'static str, AttributeOrProperty)];

/// An element of static attributes around one literal text, `<tag attrs>{text}</tag>`: the panels' many
/// headings, legends, notes and labels share this one function (each element `html!` builds is its own code in
/// the bundle).
#[inline(never)]
pub fn tx(tag: &'static str, attrs: Attrs, text: &'static str) -> Html {
    el(tag, attrs, lit(text))
}

/// An element of static attributes around `children`, `<tag attrs>{children}</tag>`, for the many small
/// containers of one text or one list (the same saving as [`tx`]).
#[inline(never)]
pub fn el(tag: &'static str, attrs: Attrs, children: Html) -> Html {
    VTag::__new_other(
        AttrValue::Static(tag),
        NodeRef::default(),
        None,
        Attributes::Static(attrs),
        Listeners::None,
        children,
    )
    .into()
}

/// A plain button named for the item it acts on: `<button type="button" aria-label onclick>{text}</button>`,
/// disabled when `off`.
#[inline(never)]
pub fn named_button(text: &'static str, label: String, onclick: Callback<MouseEvent>, off: bool) -> Html {
    html! { <button type="button" aria-label={label} {onclick} disabled={off}>{ lit(text) }</button> }
}

/// A radio button: `<label class="check"><input type="radio" name checked onchange />{text}</label>`.
#[inline(never)]
pub fn radio(name: &'static str, checked: bool, text: &'static str, onchange: Callback<Event>) -> Html {
    html! { <label class="check"><input type="radio" {name} {checked} {onchange} />{ lit(text) }</label> }
}

/// A field named for its item: `<label>{label}<input aria-label value onchange oninput /></label>` (one of the
/// two callbacks given; with `onchange`, an [`EditField`]).
#[inline(never)]
pub fn named_field(
    label: &str,
    aria: String,
    value: String,
    onchange: Option<Callback<Event>>,
    oninput: Option<Callback<InputEvent>>,
) -> Html {
    match onchange {
        // Committed on `change`: what is typed must survive the renders in between (see [`EditField`]).
        Some(onchange) => {
            html! { <label>{ label }<EditField aria={AttrValue::from(aria)} value={AttrValue::from(value)} {onchange} /></label> }
        }
        // Stored at every keystroke: the state is what is typed.
        None => html! { <label>{ label }<input aria-label={aria} {value} {oninput} /></label> },
    }
}

/// A labelled select of `options` (value, text), the one of value `selected` selected:
/// `<label>{label}<select aria-label onchange>{options}</select></label>`.
#[inline(never)]
pub fn select(
    label: &'static str,
    aria: Option<String>,
    onchange: Callback<Event>,
    options: &[(&'static str, &'static str)],
    selected: &str,
) -> Html {
    let mut list = Vec::with_capacity(options.len());
    for (value, text) in options {
        list.push(option(value, text, *value == selected));
    }
    html! { <label>{ lit(label) }<select aria-label={aria} {onchange}>{ list }</select></label> }
}

/// The exact topic a message goes to: `<div class="topic" role="group" aria-label><span>{"Topic: "}</span><code
/// class="wrap">{topic}</code></div>`.
#[inline(never)]
pub fn topic(label: &'static str, topic: String) -> Html {
    html! {
        <div class="topic" role="group" aria-label={label}>
            { tx("span", &[], "Topic: ") }{ el("code", &[("class", AttributeOrProperty::Static("wrap"))], Html::from(topic)) }
        </div>
    }
}

/// An element whose attributes `keys` take the `values` chosen at run time (an empty value leaves its attribute
/// out), around `children`: a class chosen at run time without `html!`'s `class={..}`, whose `Classes` code is
/// some KB of the bundle.
#[inline(never)]
pub fn el_dyn(tag: &'static str, keys: &'static [&'static str], values: &[&'static str], children: Html) -> Html {
    let values = values.iter().map(|v| (!v.is_empty()).then_some(AttributeOrProperty::Attribute(AttrValue::Static(v))));
    let attrs = Attributes::Dynamic { keys, values: values.collect() };
    VTag::__new_other(AttrValue::Static(tag), NodeRef::default(), None, attrs, Listeners::None, children).into()
}

/// `<time datetime={stamp}>{HH:MM:SS}</time>` of a [`crate::util::clock_time`] stamp: the time of day on screen,
/// the whole stamp (date and offset) in the element.
#[inline(never)]
pub fn time_el(stamp: &str) -> Html {
    let value = AttributeOrProperty::Attribute(AttrValue::from(stamp.to_owned()));
    let attrs = Attributes::Dynamic { keys: &["datetime"], values: Box::new([Some(value)]) };
    let text = Html::from(crate::util::time_of_day(stamp));
    VTag::__new_other(AttrValue::Static("time"), NodeRef::default(), None, attrs, Listeners::None, text).into()
}
