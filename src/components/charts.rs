//! The charts panel: numeric fields of the telemetry sent, the C2D bodies and the desired properties received,
//! as live line charts in plain SVG (no chart library: the bundle budget). The user picks fields by JSON path
//! (the paths seen so far are offered), the number of points shown, and can pause; hovering a point, or focusing
//! a chart and moving with the arrow keys, shows its value and time.
//!
//! The series live in the controller's [`crate::series::Charts`]; this panel listens to it and renders again
//! after new numbers. Pausing keeps a copy of the store, so the charts stand still while recording goes on.

use std::rc::Rc;
use wasm_bindgen::JsValue;
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew::virtual_dom::AttributeOrProperty::Static;

use super::field_value;
use crate::controller::ControllerHandle;
use crate::series::{Point, Series, SeriesStore, Source, MAX_POINTS};

/// Most charts shown at once.
const MAX_CHARTS: usize = 8;
/// Points shown by default.
const DEFAULT_POINTS: usize = 60;
/// The SVG's coordinate system: width, height, left margin (value labels) and padding.
const W: i32 = 600;
const H: i32 = 160;
const LEFT: i32 = 64;
const PAD: i32 = 10;

#[derive(Clone, PartialEq)]
struct View {
    charts: Vec<(Source, String)>,
    points: usize,
    /// The store as it was when paused.
    frozen: Option<Rc<SeriesStore>>,
    /// The chart and the point (index among those shown) in the readout.
    hover: Option<(usize, usize)>,
    source: Source,
    error: Option<&'static str>,
}

enum Act {
    Source(Source),
    Add(String),
    Remove(usize),
    Points(Option<usize>),
    Pause(Option<Rc<SeriesStore>>),
    Hover(usize, usize),
    /// Arrow keys on chart `.0` showing `.2` points: move by `.1`.
    Step(usize, isize, usize),
}

impl Reducible for View {
    type Action = Act;
    fn reduce(self: Rc<Self>, act: Act) -> Rc<Self> {
        let mut v = Rc::unwrap_or_clone(self);
        v.error = None;
        match act {
            Act::Source(s) => v.source = s,
            Act::Add(path) => {
                // JSONPath's root (`$.temperature`, as Iot-Telemetry-Simulator users write) names the same field.
                let path = path.trim();
                let path = path.strip_prefix("$.").unwrap_or(path);
                let key = (v.source, path.to_owned());
                // Paths are written as the chips offer them (`position.lat`, `values[0]`, `["a.b"]` for a name with
                // a dot): no JSONPath beyond the root, whose other forms (`$..x`, `x['y']`) would name nothing and
                // chart nothing for ever.
                let p = &key.1;
                let jsonpath = p.starts_with(['$', '.'])
                    || p.contains("..")
                    || p.contains('\'')
                    || (p.contains('"') && !p.contains("[\""));
                if key.1.is_empty() || jsonpath {
                    v.error = Some("Enter the JSON path of a number as the buttons show it, for example temperature, position.lat or values[0].");
                } else if v.charts.contains(&key) {
                    v.error = Some("That path is charted already.");
                } else if v.charts.len() >= MAX_CHARTS {
                    v.error = Some("At most 8 charts are shown: remove one first.");
                } else {
                    v.charts.push(key);
                }
            }
            Act::Remove(i) => {
                if i < v.charts.len() {
                    v.charts.remove(i);
                }
                v.hover = None;
            }
            Act::Points(Some(n)) if (2..=MAX_POINTS).contains(&n) => v.points = n,
            Act::Points(_) => v.error = Some("Points shown: a whole number from 2 to 300."),
            Act::Pause(f) => v.frozen = f,
            Act::Hover(c, i) => v.hover = Some((c, i)),
            Act::Step(c, by, len) => {
                let last = len.saturating_sub(1);
                let i = match v.hover {
                    Some((hc, i)) if hc == c => i.saturating_add_signed(by).min(last),
                    _ => last,
                };
                v.hover = Some((c, i));
            }
        }
        Rc::new(v)
    }
}

/// A number as JavaScript writes it (`21.5`, `-3`, `1e+21`), without Rust's float formatting in the bundle.
fn num(v: f64) -> String {
    js_sys::Number::from(v).to_string_with_radix(10).map(String::from).unwrap_or_default()
}

/// Local time `HH:MM:SS.mmm` of Unix milliseconds.
fn time(ms: f64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ms));
    let two = |n: u32| if n < 10 { "0".to_owned() + &n.to_string() } else { n.to_string() };
    let ms = d.get_milliseconds();
    let ms = if ms < 10 {
        "00"
    } else if ms < 100 {
        "0"
    } else {
        ""
    }
    .to_owned()
        + &ms.to_string();
    two(d.get_hours()) + ":" + &two(d.get_minutes()) + ":" + &two(d.get_seconds()) + "." + &ms
}

/// One chart: a polyline through the newest `n` points of `series` and a point mark for each (carrying its
/// value and time as `data-v` and `data-t`), min and max labels, and a readout of the hovered point.
fn view_chart(c: usize, series: &Series, n: usize, hover: Option<usize>, view: &UseReducerHandle<View>) -> Html {
    let pts: Vec<Point> = series.last(n).copied().collect();
    let Some((first, last)) = pts.first().zip(pts.last()) else {
        return super::tx("p", &[("class", Static("note"))], "No numbers at this path yet.");
    };
    let (t0, t1) = (first.at_ms, last.at_ms);
    let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.value), hi.max(p.value)));
    let (base, span) = if hi > lo { (lo, hi - lo) } else { (lo - 1.0, 2.0) };
    let len = pts.len();
    let x = |i: usize, p: &Point| -> i32 {
        let w = (W - LEFT - PAD) as f64;
        let f = if t1 > t0 {
            (p.at_ms - t0) / (t1 - t0)
        } else if len > 1 {
            i as f64 / (len - 1) as f64
        } else {
            0.5
        };
        LEFT + (f * w) as i32
    };
    let y = |v: f64| H - PAD - ((v - base) / span * (H - 2 * PAD) as f64) as i32;
    let mut line = String::new();
    for (i, p) in pts.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&x(i, p).to_string());
        line.push(',');
        line.push_str(&y(p.value).to_string());
    }
    let marks = pts.iter().enumerate().map(|(i, p)| {
        let on = view.dispatcher();
        let (cx, cy, v, t) = (x(i, p).to_string(), y(p.value).to_string(), num(p.value), time(p.at_ms));
        let onmouseenter = Callback::from(move |_| on.dispatch(Act::Hover(c, i)));
        // Two literal classes, not `class={..}` (its `Classes` code is some KB of the bundle).
        if hover == Some(i) {
            html! { <circle {cx} {cy} r="5" class="on" data-v={v} data-t={t} {onmouseenter} /> }
        } else {
            html! { <circle {cx} {cy} r="3" data-v={v} data-t={t} {onmouseenter} /> }
        }
    });
    let keys = {
        let on = view.dispatcher();
        Callback::from(move |e: KeyboardEvent| {
            let by = match e.key().as_str() {
                "ArrowLeft" => -1,
                "ArrowRight" => 1,
                "Home" => isize::MIN / 2,
                "End" => isize::MAX / 2,
                _ => return,
            };
            e.prevent_default();
            on.dispatch(Act::Step(c, by, len));
        })
    };
    let focus = {
        let on = view.dispatcher();
        Callback::from(move |_| on.dispatch(Act::Step(c, 0, len)))
    };
    let label = series.path.clone() + ": " + &len.to_string() + " points from " + &num(lo) + " to " + &num(hi);
    let readout = match hover.and_then(|i| pts.get(i)) {
        Some(p) => html! { <>{ super::el("strong", &[], Html::from(num(p.value))) }{" at "}{ time(p.at_ms) }</> },
        None => html! { {"Hover a point, or focus the chart and use the arrow keys, to read it."} },
    };
    html! {
        <>
            <svg viewBox={"0 0 ".to_owned() + &W.to_string() + " " + &H.to_string()} role="img" aria-label={label}
                tabindex="0" onkeydown={keys} onfocusin={focus}>
                <line class="axis" x1={LEFT.to_string()} y1={PAD.to_string()} x2={LEFT.to_string()} y2={(H - PAD).to_string()} />
                <text x="4" y={(PAD + 4).to_string()}>{ num(hi) }</text>
                <text x="4" y={(H - PAD).to_string()}>{ num(lo) }</text>
                <polyline points={line} />
                { for marks }
            </svg>
            { super::el("p", &[("class", Static("readout")), ("aria-live", Static("polite"))], Html::from(readout)) }
        </>
    }
}

/// The controller, whose series the charts show.
#[derive(Properties, PartialEq)]
pub struct ChartsProps {
    pub ctl: ControllerHandle,
}

/// A component of its own: it renders again after new numbers, not with the app.
#[component]
pub fn Charts(props: &ChartsProps) -> Html {
    let ctl = &props.ctl;
    let view = use_reducer(|| View {
        charts: Vec::new(),
        points: DEFAULT_POINTS,
        frozen: None,
        hover: None,
        source: Source::Telemetry,
        error: None,
    });
    let update = use_force_update();
    {
        let ctl = ctl.clone();
        use_effect_with((), move |_| {
            ctl.0.charts().listen(Some(Callback::from(move |_| update.force_update())));
            move || ctl.0.charts().listen(None)
        });
    }
    let path = use_node_ref();
    let add = {
        let (view, path) = (view.clone(), path.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if let Some(input) = path.cast::<HtmlInputElement>() {
                view.dispatch(Act::Add(input.value()));
                if view.charts.len() < MAX_CHARTS {
                    input.set_value("");
                }
            }
        })
    };
    let on_source = {
        let view = view.clone();
        Callback::from(move |e: Event| {
            if let Some(s) = field_value(&e).as_deref().and_then(Source::parse) {
                view.dispatch(Act::Source(s));
            }
        })
    };
    let on_points = {
        let view = view.clone();
        Callback::from(move |e: Event| view.dispatch(Act::Points(field_value(&e).and_then(|v| v.trim().parse().ok()))))
    };
    let pause = {
        let (view, ctl) = (view.clone(), ctl.clone());
        Callback::from(move |_| {
            let frozen = view.frozen.is_none().then(|| Rc::new(ctl.0.charts().snapshot()));
            view.dispatch(Act::Pause(frozen));
        })
    };
    let render = |store: &SeriesStore| {
        let seen: Vec<String> =
            store.series().iter().filter(|s| s.source == view.source).map(|s| s.path.clone()).collect();
        let charts = view.charts.iter().enumerate().map(|(c, (source, p))| {
            let remove = {
                let on = view.dispatcher();
                Callback::from(move |_| on.dispatch(Act::Remove(c)))
            };
            let hover = view.hover.filter(|h| h.0 == c).map(|h| h.1);
            let name = if p.is_empty() { "(the whole body)" } else { p.as_str() };
            html! {
                <figure class="chart" key={source.as_str().to_owned() + ":" + p}>
                    <figcaption>
                        { super::el("span", &[("class", Static("path"))], Html::from(name)) }
                        { super::el("span", &[("class", Static("tag"))], Html::from(source.label())) }
                        { super::named_button("Remove", "Remove the chart of ".to_owned() + name, remove, false) }
                    </figcaption>
                    { match store.get(*source, p) {
                        Some(s) => view_chart(c, s, view.points, hover, &view),
                        None => super::tx("p", &[("class", Static("note"))], "No numbers at this path yet."),
                    } }
                </figure>
            }
        });
        let offer = seen.iter().filter(|p| !view.charts.contains(&(view.source, (*p).clone()))).map(|p| {
            let on = view.dispatcher();
            let q = p.clone();
            let name = if p.is_empty() { "(the whole body)" } else { p.as_str() };
            html! {
                <button type="button" class="chip" aria-label={"Chart ".to_owned() + name} onclick={Callback::from(move |_| on.dispatch(Act::Add(q.clone())))}>{"+ "}{ name }</button>
            }
        });
        html! {
            <>
                if !seen.is_empty() {
                    { super::el("div", &[("class", Static("row chips")), ("role", Static("group")), ("aria-label", Static("Numeric paths seen"))], Html::from_iter(offer)) }
                }
                { for charts }
            </>
        }
    };
    let body = match &view.frozen {
        Some(f) => render(f),
        None => ctl.0.charts().with(render),
    };
    let paused = view.frozen.is_some();
    html! {
        <section class="panel charts" aria-labelledby="charts-h">
            { super::tx("h2", &[("id", Static("charts-h"))], "Charts") }
            <form class="row" onsubmit={add}>
                { super::select("Source", None, on_source, &Source::ALL.map(|s| (s.as_str(), s.label())), view.source.as_str()) }
                <label class="grow">{"JSON path"}<input ref={path} placeholder="temperature or position.lat" /></label>
                { super::tx("button", &[("type", Static("submit"))], "Add chart") }
                { super::num_field("Points shown", view.points as u32, (2, MAX_POINTS as u32), None, on_points) }
                <button type="button" onclick={pause}>{ if paused { "Resume" } else { "Pause" } }</button>
            </form>
            if let Some(e) = view.error { { super::error_p("chart-err", e) } }
            if paused { { super::tx("p", &[("class", Static("note"))], "Paused: new numbers are still recorded and appear when you resume.") } }
            { body }
        </section>
    }
}
