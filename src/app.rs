//! Placeholder root component; replaced by the full UI.
use yew::prelude::*;

#[component]
pub fn App() -> Html {
    html! { <main><h1>{"hubsim"}</h1></main> }
}

/// Mounts the app on `<body>`.
pub fn start() {
    yew::Renderer::<App>::new().render();
}
