//! The Plug and Play device's effects, through the controller's one driver: telemetry on a schedule, the
//! read-only properties reported on connect, desired values acknowledged (on a patch, and after reading the twin on
//! connect), and commands answered from the model. The decisions are in [`crate::pnp`].

use gloo::timers::callback::Interval;
use hubsim_dtdl::pnp as conv;
use hubsim_proto::json::{self, Value};
use hubsim_template::{DeviceState, RenderContext};
use std::rc::Rc;

use super::Controller;

/// How long after a connection is accepted the twin of a device without a model is read (ms): after the frame
/// that shows "Connected".
const TWIN_READ_DELAY_MS: u32 = 50;
use crate::pnp::{self, AckSent, CallRecord, Choice, PnpAction, PnpState};
use crate::state::{Action, LogKind};
use crate::util;

/// What the controller keeps for the Plug and Play device.
#[derive(Default)]
pub(super) struct Runtime {
    /// The app state's own (no copy), read in event handlers.
    state: Rc<PnpState>,
    timer: Option<Interval>,
    /// Generator states for the plans of model `generation`.
    generators: Vec<DeviceState>,
    generation: u64,
    /// The model the running schedule was started for (`generation` follows the first tick, which waits for a
    /// connection: a schedule started while disconnected must not look like the old model's).
    started_for: u64,
}

impl Runtime {
    /// Stops the telemetry schedule (the user disconnected).
    pub(super) fn stop(&mut self) {
        self.timer = None;
    }
}

impl Controller {
    fn pnp(&self) -> Rc<PnpState> {
        self.inner.borrow().pnp.state.clone()
    }

    fn pnp_dispatch(&self, a: PnpAction) {
        self.dispatch.dispatch(Action::Pnp(a));
    }

    /// Points the controller at the app state's Plug and Play state; a new model stops the old one's telemetry.
    pub fn sync_pnp(&self, state: Rc<PnpState>) {
        let stop = {
            let mut i = self.inner.borrow_mut();
            let stop = i.pnp.started_for != state.generation && i.pnp.timer.is_some();
            i.pnp.state = state;
            stop
        };
        if stop {
            self.pnp_stop();
        }
    }

    /// Sends a round of telemetry every `interval_ms` of the state, first one now.
    pub fn pnp_start(&self) {
        let s = self.pnp();
        if s.model.is_none() {
            return;
        }
        let weak = self.me.borrow().clone();
        let tick = move || {
            if let Some(c) = weak.upgrade() {
                c.pnp_tick();
            }
        };
        tick();
        let mut i = self.inner.borrow_mut();
        i.pnp.started_for = s.generation;
        i.pnp.timer = Some(Interval::new(s.interval_ms, tick));
        drop(i);
        self.pnp_dispatch(PnpAction::Running(true));
    }

    pub fn pnp_stop(&self) {
        self.inner.borrow_mut().pnp.timer = None;
        self.pnp_dispatch(PnpAction::Running(false));
    }

    /// One message per interface with telemetry; skipped while not connected.
    fn pnp_tick(&self) {
        let Some(driver) = self.driver() else { return };
        if !driver.peek(|s| s.is_connected()) {
            return;
        }
        let s = self.pnp();
        let round = {
            let mut i = self.inner.borrow_mut();
            let rt = &mut i.pnp;
            if rt.generation != s.generation || rt.generators.len() != s.plans.len() {
                let seed = (js_sys::Math::random() * 4_294_967_296.0) as u64;
                rt.generators = pnp::generator_states(&s.plans, seed);
                rt.generation = s.generation;
            }
            let now = js_sys::Date::new_0();
            let ctx = RenderContext {
                now_unix_ms: now.get_time() as i64,
                local_offset_min: -(now.get_timezone_offset() as i32),
                machine_name: "hubsim-web",
            };
            pnp::telemetry_round(&s.plans, &mut rt.generators, &ctx)
        };
        for (component, body, msg) in round {
            match driver.with_session(|sess, now| sess.send_telemetry(now, msg)) {
                Ok(_) => {
                    self.dispatch.dispatch(Action::Sent(1));
                    let what = component.as_deref().map_or(String::new(), |c| [" of ", c].concat());
                    self.log_sent(&driver, ["Plug and Play telemetry", &what, ": ", &body].concat());
                    // Charted as `{component}.{field}` (component names are DTDL identifiers: no JSON escaping).
                    let charted = match component.as_deref() {
                        Some(c) => ["{\"", c, "\":", &body, "}"].concat(),
                        None => body.clone(),
                    };
                    self.charts().record(crate::series::Source::Telemetry, js_sys::Date::now(), charted.as_bytes());
                    self.pnp_dispatch(PnpAction::Sent { component, body });
                }
                Err(e) => self.log(LogKind::Error, ["Plug and Play telemetry not sent: ", &e.to_string()].concat()),
            }
        }
    }

    /// Sends a reported patch (JSON value).
    fn pnp_report(&self, patch: &Value, what: &str) -> bool {
        let Some(d) = self.driver() else { return false };
        let text = patch.to_string();
        match d.with_session(|s, now| s.patch_reported(now, text.clone().into_bytes())) {
            Ok(rid) => {
                self.sent_reported(rid, &text, false);
                self.log_sent(&d, [what, ": ", &text].concat());
                true
            }
            Err(e) => {
                self.log(LogKind::Error, ["cannot report ", what, ": ", &e.to_string()].concat());
                false
            }
        }
    }

    fn pnp_send_acks(&self, answer: Option<(Value, Vec<AckSent>)>) {
        if let Some((doc, acks)) = answer {
            if self.pnp_report(&doc, "Plug and Play acknowledgements") {
                self.pnp_dispatch(PnpAction::Acked(acks));
            }
        }
    }

    /// After CONNACK and the subscriptions: the read-only properties, then the twin, whose unacknowledged desired
    /// values are answered when it arrives ([`Controller::pnp_on_twin`]); the twin alone without a model.
    pub(super) fn pnp_on_connected(&self) {
        let s = self.pnp();
        if s.model.is_none() {
            // Without a model too: the twin panel shows this device's twin from the start — read once
            // "Connected" is on screen (its answer and render would otherwise come before that frame).
            let me = self.me.borrow().clone();
            gloo::timers::callback::Timeout::new(TWIN_READ_DELAY_MS, move || {
                if let Some(c) = me.upgrade().filter(|c| c.connected_as().is_some()) {
                    c.get_twin();
                }
            })
            .forget();
            return;
        }
        let (patch, bad) = pnp::initial_report(&s);
        for e in bad {
            self.log(LogKind::Error, ["not reported, the value does not fit the schema: ", &e].concat());
        }
        if let Some(p) = patch {
            self.pnp_report(&p, "Plug and Play read-only properties");
        }
        self.get_twin();
    }

    /// The twin document: shown per property, and what it has not acknowledged yet is answered.
    pub(super) fn pnp_on_twin(&self, body: &[u8]) {
        let s = self.pnp();
        let Some(model) = s.model.as_deref() else { return };
        let Ok(twin) = std::str::from_utf8(body).map_err(|_| ()).and_then(|t| json::parse(t).map_err(|_| ())) else {
            return;
        };
        let todo = conv::unacknowledged(model, &twin);
        self.pnp_dispatch(PnpAction::Twin(twin));
        if !todo.updates.is_empty() {
            self.log(LogKind::Received, "desired values not acknowledged yet: answering them");
        }
        self.pnp_send_acks(pnp::answer_desired(&s, &todo));
    }

    /// A desired patch: recorded per property and answered as each property's choice says.
    pub(super) fn pnp_on_desired(&self, body: &[u8]) {
        let s = self.pnp();
        let Some(model) = s.model.as_deref() else { return };
        let Ok(v) = std::str::from_utf8(body).map_err(|_| ()).and_then(|t| json::parse(t).map_err(|_| ())) else {
            return;
        };
        let patch = conv::parse_desired(model, &v);
        self.pnp_dispatch(PnpAction::Desired(patch.clone()));
        self.pnp_send_acks(pnp::answer_desired(&s, &patch));
    }

    /// Answers a pending desired value now.
    pub fn pnp_resolve(&self, iface: usize, prop: usize, choice: Choice) {
        let s = self.pnp();
        self.pnp_send_acks(pnp::resolve(&s, iface, prop, choice));
    }

    /// Reports one read-only property from its form.
    pub fn pnp_report_property(&self, iface: usize, prop: usize) {
        match pnp::report_property(&self.pnp(), iface, prop) {
            Ok(patch) => {
                self.pnp_report(&patch, "Plug and Play property");
            }
            Err(e) => self.log(LogKind::Error, ["not reported: ", &e].concat()),
        }
    }

    /// The answer to a method the model has (status, JSON body), recorded for the panel; `None` otherwise.
    pub(super) fn pnp_on_method(&self, name: &str, payload: &[u8]) -> Option<(u16, String)> {
        let a = pnp::answer_command(&self.pnp(), name, payload)?;
        let record =
            CallRecord { time: util::clock_time(), request: a.request, status: a.status, response: a.body.clone() };
        self.pnp_dispatch(PnpAction::Called { iface: a.iface, cmd: a.cmd, record });
        Some((a.status, a.body))
    }
}
