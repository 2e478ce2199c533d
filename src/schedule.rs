//! Template sends and schedules in the browser: gloo timers, the browser clock read here and passed into the
//! sans-IO template engine, and each device's template state (counters, walks) kept across sends.
//!
//! A schedule sends a message every `every_ms` ± `jitter_ms` (a chain of timeouts, so each wait is drawn
//! anew) until its count or duration is reached or it is stopped; several run at once, at most
//! [`MAX_RUNS`]. All stop when the connection ends ([`Scheduler::stop_all`], called by the controller).
//! Template state is kept per device and message name ([`MAX_STATES`] of them, the oldest dropped), so the
//! composer's "Send one" and a schedule of the same message continue one counter.

use gloo::timers::callback::Timeout;
use hubsim_template::{Config, DeviceState, RenderContext, Rendered};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::controller::Controller;
use crate::library::Message;
use crate::settings::Settings;
use crate::state::templates::{TmplAction, MAX_RUNS};
use crate::state::{Action, LogKind};

/// Most per-device template states kept.
pub const MAX_STATES: usize = 64;

struct Run {
    id: u32,
    msg: Rc<Message>,
    from_composer: bool,
    started_ms: f64,
    sent: u32,
    _timer: Option<Timeout>,
}

/// Owned by the [`Controller`].
#[derive(Default)]
pub struct Scheduler {
    runs: RefCell<Vec<Run>>,
    states: RefCell<Vec<(String, DeviceState)>>,
    next_id: Cell<u32>,
}

/// The device the settings name (the state's key and `$.DeviceId`).
pub fn device_id(s: &Settings) -> String {
    crate::form::plan(s, None).map(|p| p.cs.device_id).unwrap_or_else(|_| s.device_id.clone())
}

fn state_key(device: &str, msg: &Message) -> String {
    [device, "\n", &msg.name].concat()
}

/// Renders with the browser's clock and time zone.
fn render(config: &Config, st: &mut DeviceState) -> Result<Rendered, String> {
    let now = js_sys::Date::now();
    let offset = -(js_sys::Date::new_0().get_timezone_offset() as i32);
    let ctx = RenderContext { now_unix_ms: now as i64, local_offset_min: offset, machine_name: "hubsim-web" };
    config.render(st, &ctx).map_err(|e| e.to_string())
}

impl Scheduler {
    fn fresh_state(device: &str) -> DeviceState {
        DeviceState::new(device, (js_sys::Math::random() * 9.007_199_254_740_992e15) as u64)
    }

    /// The index of the state of `msg` for `device`, made (with a fresh seed) when there is none.
    fn state_index(states: &mut Vec<(String, DeviceState)>, device: &str, msg: &Message) -> usize {
        let key = state_key(device, msg);
        match states.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                if states.len() >= MAX_STATES {
                    states.remove(0);
                }
                states.push((key, Self::fresh_state(device)));
                states.len() - 1
            }
        }
    }

    /// The next message of `msg` for `device` without advancing anything (the live preview): rendered from a
    /// copy of the state the next send renders from, so the values drawn are the ones that will be sent (the
    /// clock's may have moved on).
    pub fn preview(&self, msg: &Message, device: &str) -> Result<Rendered, String> {
        let config = msg.config()?;
        let mut states = self.states.borrow_mut();
        let i = Self::state_index(&mut states, device, msg);
        let mut st = states[i].1.clone();
        drop(states);
        render(&config, &mut st)
    }

    /// Renders the next message of `msg`, advancing its state. A body meant as JSON is checked here.
    fn next(&self, msg: &Message, device: &str) -> Result<Rendered, String> {
        let config = msg.config()?;
        let mut states = self.states.borrow_mut();
        let i = Self::state_index(&mut states, device, msg);
        let r = render(&config, &mut states[i].1)?;
        if msg.is_json() {
            r.check_json().map_err(|e| ["the rendered body is not JSON: ", &e.to_string()].concat())?;
        }
        Ok(r)
    }

    /// Forgets the template state of every device (counters start again).
    pub fn reset(&self) {
        self.states.borrow_mut().clear();
    }

    /// Sends one message of `msg` (rendered when it is a template); `None` when it was not sent (logged), else
    /// `Some(Some(publish id))` when a PUBACK is awaited.
    ///
    /// The composer's draft (`from_composer`) is sent with every system property the composer sets. A saved
    /// message describes its body, header, properties and QoS; from the composer it takes only what describes the
    /// device's telemetry as a whole: content type and encoding (which IoT Hub's routing reads) and whether each
    /// message gets a generated message ID, not the composer's message ID, correlation ID, user ID, creation time
    /// or retain flag, which belong to the message being composed.
    pub fn send_one(&self, ctl: &Controller, msg: &Message, from_composer: bool) -> Option<Option<u64>> {
        let settings = ctl.settings();
        let device = device_id(&settings);
        let (body, header) = if msg.template {
            match self.next(msg, &device) {
                Ok(r) => (String::from_utf8_lossy(&r.body).into_owned(), r.properties),
                Err(e) => {
                    ctl.dispatch(Action::Log {
                        at: crate::util::clock_time(),
                        kind: LogKind::Error,
                        text: ["not sent (", &msg.name, "): ", &e].concat(),
                    });
                    return None;
                }
            }
        } else {
            (msg.body.clone(), Vec::new())
        };
        let mut s = (*settings).clone();
        if !from_composer {
            for f in [&mut s.message_id, &mut s.correlation_id, &mut s.user_id] {
                f.clear();
            }
            s.creation_time = false;
            s.retain = false;
        }
        s.body = body;
        s.properties = msg.properties.iter().cloned().chain(header).collect();
        s.qos = u32::from(msg.qos);
        ctl.publish(&s)
    }

    /// Starts a schedule of `msg` (the composer's draft when `from_composer`: see [`Scheduler::send_one`]);
    /// refused when [`MAX_RUNS`] are running or the template does not load.
    pub fn start(&self, ctl: &Controller, msg: Message, from_composer: bool) {
        let err = |t: String| ctl.dispatch(Action::Tmpl(TmplAction::Notice(false, t)));
        if self.runs.borrow().len() >= MAX_RUNS {
            return err(["at most ", &MAX_RUNS.to_string(), " schedules run at once"].concat());
        }
        if msg.template {
            if let Err(e) = msg.config() {
                return err(["not started: ", &e].concat());
            }
        }
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let total = (msg.count > 0).then_some(msg.count);
        ctl.dispatch(Action::Tmpl(TmplAction::Started { id, name: msg.name.clone(), total }));
        let run = Run { id, msg: Rc::new(msg), from_composer, started_ms: js_sys::Date::now(), sent: 0, _timer: None };
        self.runs.borrow_mut().push(run);
        self.tick(ctl, id);
    }

    /// One send of run `id`, then the next timer or the end. A duration ends at its time: the last wait is
    /// shortened to it, and a tick at or after it sends nothing.
    fn tick(&self, ctl: &Controller, id: u32) {
        let Some((msg, started, from_composer)) =
            self.runs.borrow().iter().find(|r| r.id == id).map(|r| (r.msg.clone(), r.started_ms, r.from_composer))
        else {
            return;
        };
        let elapsed = || js_sys::Date::now() - started;
        if msg.duration_ms > 0 && elapsed() >= f64::from(msg.duration_ms) {
            return self.stop(ctl, id);
        }
        let a = match self.send_one(ctl, &msg, from_composer) {
            Some(publish) => TmplAction::Sent { id, publish },
            None => TmplAction::Failed(id),
        };
        ctl.dispatch(Action::Tmpl(a));
        let sent = {
            let mut runs = self.runs.borrow_mut();
            let Some(r) = runs.iter_mut().find(|r| r.id == id) else { return };
            r.sent += 1;
            r.sent
        };
        if msg.schedule_done(sent, elapsed()) {
            return self.stop(ctl, id);
        }
        let mut delay = msg.next_delay(js_sys::Math::random());
        if msg.duration_ms > 0 {
            delay = delay.min((f64::from(msg.duration_ms) - elapsed()).max(0.0).ceil() as u32);
        }
        let weak = ctl.weak();
        let timer = Timeout::new(delay, move || {
            if let Some(c) = weak.upgrade() {
                c.sched.tick(&c, id);
            }
        });
        if let Some(r) = self.runs.borrow_mut().iter_mut().find(|r| r.id == id) {
            r._timer = Some(timer);
        }
    }

    /// Stops run `id`.
    pub fn stop(&self, ctl: &Controller, id: u32) {
        self.runs.borrow_mut().retain(|r| r.id != id);
        ctl.dispatch(Action::Tmpl(TmplAction::Ended(id)));
    }

    /// Stops the runs of the message named `name` (it was deleted).
    pub fn stop_named(&self, ctl: &Controller, name: &str) {
        self.stop_where(ctl, |r| r.msg.name == name);
    }

    /// Stops every run (the connection ended).
    pub fn stop_all(&self, ctl: &Controller) {
        self.stop_where(ctl, |_| true);
    }

    fn stop_where(&self, ctl: &Controller, f: impl Fn(&Run) -> bool) {
        let ids: Vec<u32> = self.runs.borrow().iter().filter(|r| f(r)).map(|r| r.id).collect();
        for id in ids {
            self.stop(ctl, id);
        }
    }
}
