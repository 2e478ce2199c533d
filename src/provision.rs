//! The controller's DPS flow: drives the core's `ProvisioningSession` over the WebSocket [`Driver`], reports each
//! step in words, and on an assignment connects to the assigned hub with the (derived) device key, exactly as a
//! connection-string device does (the hub plan is [`crate::form::plan`]'s, with its confirm-the-host rule).
//!
//! Every wait is bounded: the WebSocket must open within [`OPEN_TIMEOUT_MS`], and the session's own timers bound
//! CONNACK, SUBACK and each request (30 s, as the SDKs). A WebSocket that never opens or closes before CONNACK
//! ends with what happened and what to do (`hubsim provision …`, then paste the connection string), never a
//! spinner.

use gloo::timers::callback::Timeout;
use hubsim_proto::provisioning::{
    ProvisioningConfig, ProvisioningError, ProvisioningEvent, ProvisioningSession, Registration,
};
use std::rc::Rc;

use crate::controller::Controller;
use crate::dps::{self, DpsPlan};
use crate::driver::{Driver, DriverEvent};
use crate::state::{Action, Confirm, ConnStatus};
use crate::util;

/// How long the browser may take to open the WebSocket to DPS.
pub const OPEN_TIMEOUT_MS: u32 = 20_000;

/// One registration in progress.
pub struct Provisioning {
    driver: Driver<ProvisioningSession>,
    plan: DpsPlan,
    /// The hub plan needs the emulator serving the page (its hub is reached same-origin).
    emulator: Option<Rc<crate::form::Emulator>>,
    opened: bool,
    registered: bool,
    _open_timer: Option<Timeout>,
}

impl Controller {
    /// Asks DPS which hub to use, then connects there. The caller validated the plan and, for a host that is not
    /// Azure's DPS, asked the user.
    pub fn provision(&self, plan: DpsPlan, emulator: Option<Rc<crate::form::Emulator>>) {
        self.disconnect();
        let s = self.settings();
        let mut cfg = ProvisioningConfig::new(plan.id_scope.clone(), plan.registration_id.clone());
        cfg.client_version = Some(concat!("hubsim-web/", env!("CARGO_PKG_VERSION")).into());
        cfg.payload = plan.payload.clone();
        let session = ProvisioningSession::new(cfg, &plan.key);
        let weak = self.weak();
        let driver = Driver::new(session, move |ev| {
            if let Some(c) = weak.upgrade() {
                c.on_dps_event(ev);
            }
        });
        self.dispatch(Action::DpsStart);
        self.status(ConnStatus::Provisioning);
        let ttl = s.token_ttl_secs.clamp(crate::settings::MIN_TTL_SECS, crate::settings::MAX_TTL_SECS);
        let weak = self.weak();
        let timer = Timeout::new(OPEN_TIMEOUT_MS, move || {
            if let Some(c) = weak.upgrade() {
                c.dps_open_timed_out();
            }
        });
        let url = plan.url.clone();
        *self.dps_slot() = Some(Provisioning {
            driver: driver.clone(),
            plan,
            emulator,
            opened: false,
            registered: false,
            _open_timer: Some(timer),
        });
        if let Err(e) = driver.connect(&url, util::unix_now() + ttl as u64) {
            self.dps_ended(Err(ProvisioningError::TransportClosed(e)));
        }
    }

    /// Cancels a registration in progress (Disconnect, or a new connection).
    pub fn stop_provisioning(&self) {
        let p = self.dps_slot().take();
        if let Some(p) = p {
            p.driver.disconnect();
        }
    }

    fn dps_open_timed_out(&self) {
        match self.dps_slot().as_mut() {
            Some(p) if !p.opened => p._open_timer = None,
            _ => return,
        }
        let why = "no answer in ".to_owned() + &(OPEN_TIMEOUT_MS / 1000).to_string() + " s";
        self.dps_ended(Err(ProvisioningError::TransportClosed(why)));
    }

    fn on_dps_event(&self, ev: DriverEvent<ProvisioningEvent>) {
        match ev {
            DriverEvent::TransportOpen => {
                if let Some(p) = self.dps_slot().as_mut() {
                    p.opened = true;
                    p._open_timer = None;
                }
            }
            DriverEvent::TransportFailed(why) => self.dps_ended(Err(ProvisioningError::TransportClosed(why))),
            DriverEvent::Session(ProvisioningEvent::Progress(progress)) => {
                let target = match self.dps_slot().as_mut() {
                    Some(p) => {
                        p.registered |= !matches!(progress, hubsim_proto::provisioning::Progress::Connecting);
                        p.plan.target.clone()
                    }
                    None => return,
                };
                let (kind, text) = dps::step_text(&progress, &target);
                self.dispatch(Action::DpsStep { at: util::clock_time(), kind, text });
            }
            DriverEvent::Session(ProvisioningEvent::Finished(result)) => self.dps_ended(result),
        }
    }

    /// The registration ended: on an assignment, connect to the hub; otherwise say what happened and what to do.
    fn dps_ended(&self, result: Result<Registration, ProvisioningError>) {
        let Some(p) = self.dps_slot().take() else { return };
        let host = dps::dps_host(&self.settings());
        let command = dps::provision_command(&p.plan, &host);
        let at = util::clock_time();
        match dps::outcome_text(&result, p.opened, p.registered, &command) {
            Ok(text) => {
                self.dispatch(Action::DpsEnd { at, result: Ok(text) });
                let Ok(Registration::Assigned(a)) = result else { return };
                self.dispatch(Action::Assigned { hub: a.assigned_hub.clone(), device: a.device_id.clone() });
                // The settings with the assignment, as the reducer now holds them, decide the hub, the endpoint
                // and the device key (derived from the group key by the core, as the session did).
                let mut s = (*self.settings()).clone();
                s.assigned_hub = a.assigned_hub;
                s.assigned_device = a.device_id;
                match crate::form::plan(&s, p.emulator.as_deref()) {
                    Ok(plan) if plan.needs_confirmation => {
                        self.status(ConnStatus::Disconnected { reason: None, hint: None });
                        self.dispatch(Action::AskConfirm(Confirm {
                            target: plan.target,
                            hub: plan.cs.host_name,
                            url: plan.url,
                            dps: false,
                        }));
                    }
                    Ok(plan) => self.connect(plan),
                    Err(e) => {
                        let why = crate::form::joined("", "; ", e.iter().map(|e| e.message.as_str()));
                        self.status(ConnStatus::Disconnected { reason: Some(why), hint: None });
                    }
                }
            }
            Err((what, todo)) => {
                self.dispatch(Action::DpsEnd { at, result: Err(what.clone()) });
                self.status(ConnStatus::Disconnected { reason: Some(what), hint: Some(todo) });
            }
        }
        // Dropping `p` drops the driver once its socket is closed (the session ended, so flush closed it).
        p.driver.disconnect();
    }
}
