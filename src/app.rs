//! The root component: the reducer state and the controller, shared through context, and the page layout.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use yew::prelude::*;

use crate::components::{
    activity_log::ActivityLog, composer::Composer, connect_panel::ConnectPanel, inbox::Inbox, methods::Methods,
    sas_tool::SasTool, status_bar::StatusBar, twin::Twin,
};
use crate::controller::{Controller, ControllerHandle};
use crate::settings::Settings;
use crate::state::{Action, AppContext, AppState};

/// Asks the server that served the page whether it is the hubsim emulator, and if so returns the emulator's
/// WebSocket endpoint on the same origin (no certificate warning on http://localhost).
async fn detect_emulator() -> Option<String> {
    let window = web_sys::window()?;
    let resp = JsFuture::from(window.fetch_with_str("./hubsim-emulator.json")).await.ok()?;
    let resp: web_sys::Response = resp.dyn_into().ok()?;
    if !resp.ok() {
        return None;
    }
    let json = JsFuture::from(resp.json().ok()?).await.ok()?;
    js_sys::Reflect::get(&json, &"hostName".into()).ok()?.as_string()?;
    let loc = window.location();
    let scheme = if loc.protocol().ok()? == "https:" { "wss" } else { "ws" };
    Some(format!("{scheme}://{}/$iothub/websocket", loc.host().ok()?))
}

#[component]
pub fn App() -> Html {
    let state = use_reducer(|| AppState::new(Settings::load()));
    let controller = {
        let dispatch = state.dispatcher();
        use_memo((), move |_| ControllerHandle(Controller::new(dispatch)))
    };
    {
        let c = controller.clone();
        use_effect_with((*state).clone(), move |s| c.0.sync(s));
    }
    use_effect_with(state.settings.clone(), |s| s.save());
    {
        let dispatch = state.dispatcher();
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(ws) = detect_emulator().await {
                    dispatch.dispatch(Action::Emulator(ws));
                }
            });
        });
    }
    {
        let c = controller.clone();
        use_effect_with((), move |_| move || c.0.disconnect());
    }
    let ctx: AppContext = state.clone();
    html! {
        <ContextProvider<AppContext> context={ctx}>
            <ContextProvider<ControllerHandle> context={(*controller).clone()}>
                <div class="app">
                    <div class="top">
                        <h1>{"hubsim"}<span class="sub">{" — IoT Hub device simulator"}</span></h1>
                        if let Some(ws) = &state.emulator_ws {
                            <span class="tag" title={ws.clone()}>{"served by the hubsim emulator"}</span>
                        }
                    </div>
                    <StatusBar />
                    <div class="sr-only" aria-live="polite">{ &state.announcement }</div>
                    <main class="columns">
                        <div class="col">
                            <ConnectPanel />
                            <SasTool />
                        </div>
                        <div class="col">
                            <Composer />
                        </div>
                        <div class="col">
                            <Inbox />
                            <Methods />
                            <Twin />
                        </div>
                    </main>
                    <ActivityLog />
                    <footer class="note">{"Keys stay in this browser: the SAS token is computed here and nothing is sent anywhere but to the hub you connect to."}</footer>
                </div>
            </ContextProvider<ControllerHandle>>
        </ContextProvider<AppContext>>
    }
}

/// Mounts the app on `<body>`.
pub fn start() {
    yew::Renderer::<App>::new().render();
}
