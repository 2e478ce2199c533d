//! The root component: the reducer state and the controller, handed to the panels, the page layout, and the
//! effects of the page: storage, emulator detection, the link banner's answers.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use crate::components::{
    activity_log::view_activity_log,
    charts::Charts,
    composer::view_composer,
    connect_panel::{use_connect_form, view_connect_panel},
    inbox::view_inbox,
    link_banner::view_link_banner,
    methods::{use_methods_form, view_methods},
    model_panel::{use_model_panel, view_model_panel},
    on_click,
    sas_tool::view_sas_tool,
    status_bar::StatusBar,
    templates::{use_saved_messages, view_saved_messages},
    twin::view_twin,
};
use crate::controller::{Controller, ControllerHandle};
use crate::form::Emulator;
use crate::settings;
use crate::state::{Action, AppContext, AppState};
use crate::util::{self, Same};

/// Asks the server that served the page whether it is the hubsim emulator, and if so returns the hub name it
/// answers to and its WebSocket endpoint on the same origin (no certificate warning on http://localhost).
async fn detect_emulator() -> Option<Emulator> {
    let window = web_sys::window()?;
    let resp = JsFuture::from(window.fetch_with_str("./hubsim-emulator.json")).await.ok()?;
    let resp: web_sys::Response = resp.dyn_into().ok()?;
    if !resp.ok() {
        return None;
    }
    let json = JsFuture::from(resp.json().ok()?).await.ok()?;
    let host_name = js_sys::Reflect::get(&json, &"hostName".into()).ok()?.as_string()?;
    settings::check_host(&host_name).ok()?;
    // Its local DPS: the ID scope is offered in the DPS form (checked like a typed one).
    let id_scope = js_sys::Reflect::get(&json, &"idScope".into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|s| settings::check_text(settings::Text::IdScope, s).is_ok())
        .unwrap_or_default();
    let loc = window.location();
    let scheme = if loc.protocol().ok()? == "https:" { "wss" } else { "ws" };
    let path = hubsim_proto::endpoint::WEBSOCKET_PATH;
    Some(Emulator { host_name, ws: format!("{scheme}://{}{path}", loc.host().ok()?), id_scope })
}

#[component]
pub fn App() -> Html {
    let state = use_reducer(|| AppState::new(settings::load_stored(), settings::link_offer(), &util::clock_time()));
    let controller = {
        let dispatch = state.dispatcher();
        use_memo((), move |_| ControllerHandle(Controller::new(dispatch)))
    };
    // The controller reads the settings and method answers in event handlers: it gets the state's own `Rc`s at
    // every render (two `Rc`s replaced, no effect of its own in the bundle).
    controller.0.sync(state.settings.clone(), state.answers.clone());
    // Stored only once no link is waiting for an answer, so a link never overwrites what is stored (one effect with
    // forgetting the link's query: each is its own code in the bundle).
    {
        let c = controller.clone();
        use_effect_with((Same(state.settings.clone()), state.link.is_none()), move |(s, answered)| {
            if *answered {
                c.0.store_settings(&s.0);
                // Once the link is answered, the query leaves the address bar so a reload does not offer it
                // again (nothing to do once it is gone).
                settings::forget_link();
            }
        });
    }
    // The connect form first: the other panels are mounted once that frame is painted, so the form is on screen
    // (and usable) before Yew builds, and the browser lays out, the rest of the page (issue #13, time to connected).
    // A page loaded in a background tab gets them when it is first shown (no animation frames before that).
    let rest = use_state(bool::default);
    // Once, at mount (one effect: each is its own code in the bundle): ask whether the emulator served the page,
    // show the rest after the first paint; at unmount, disconnect.
    {
        let (dispatch, rest, c) = (state.dispatcher(), rest.setter(), controller.clone());
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(e) = detect_emulator().await {
                    dispatch.dispatch(Action::Emulator(e));
                }
            });
            after_next_paint(move || rest.set(true));
            move || c.0.disconnect()
        });
    }
    let ctx = AppContext::new(state.clone());
    // The panels that are functions keep their state here.
    use_saved_messages(&ctx, *rest);
    let connect_form = use_connect_form(&ctx);
    let twin_patch = use_node_ref();
    let sas_token = (use_state(String::new), use_state(String::new));
    let methods_form = use_methods_form();
    let log_filter = (use_state(String::new), use_state(String::new));
    let model_refs = use_model_panel(&state.pnp, &controller);
    html! {
        <div class="app">
            <header class="top">
                <div class="title">
                    <h1>{"hubsim"}{ crate::components::tx("span", &[("class", Static("sub"))], " — IoT Hub device simulator") }</h1>
                    if let Some(e) = &state.emulator {
                        <span class="tag" title={e.ws.clone()}>{"served by the hubsim emulator"}</span>
                    }
                </div>
                <StatusBar app={ctx.clone()} />
            </header>
            <main>
                { crate::components::el("div", &[("class", Static("sr-only")), ("aria-live", Static("polite"))], Html::from(&state.announcement)) }
                if let Some(offer) = &state.link {
                    { view_link_banner(offer, on_click(&ctx, || Action::AcceptLink), on_click(&ctx, || Action::IgnoreLink)) }
                }
                <div class="columns">
                    <div class="col">
                        { view_connect_panel(&ctx, &controller, &connect_form) }
                        if *rest { { view_sas_tool(&ctx, &sas_token) } }
                    </div>
                    if *rest {
                        <div class="col">
                            { view_composer(&ctx, &controller) }
                            { view_saved_messages(&ctx, &controller) }
                        </div>
                        <div class="col">
                            { view_inbox(&ctx) }
                            { view_methods(&ctx, &methods_form) }
                            { view_twin(&ctx, &controller, &twin_patch) }
                        </div>
                    }
                </div>
                if *rest {
                    { view_model_panel(&ctx, &controller, &model_refs) }
                    <Charts ctl={(*controller).clone()} />
                    { view_activity_log(&ctx, &log_filter.0, &log_filter.1) }
                }
            </main>
            { crate::components::tx("footer", &[("class", Static("note"))], "Keys stay in this browser: the SAS token is computed here and nothing is sent anywhere but to the hub you connect to.") }
        </div>
    }
}

/// Runs `f` in the first task after the next animation frame, i.e. once what is in the DOM now has been painted
/// (`requestAnimationFrame` runs before the paint; a message posted from it is handled after).
fn after_next_paint(f: impl FnOnce() + 'static) {
    let f = std::rc::Rc::new(std::cell::Cell::new(Some(Box::new(f) as Box<dyn FnOnce()>)));
    let run = std::rc::Rc::clone(&f);
    let frame = wasm_bindgen::closure::Closure::once_into_js(move || {
        gloo::timers::callback::Timeout::new(0, move || run.take().into_iter().for_each(|f| f())).forget();
    });
    let scheduled = web_sys::window().is_some_and(|w| w.request_animation_frame(frame.unchecked_ref()).is_ok());
    if !scheduled {
        // No animation frames here: nothing to wait for.
        f.take().into_iter().for_each(|f| f());
    }
}

/// Mounts the app on `<body>`.
pub fn start() {
    yew::Renderer::<App>::new().render();
}
