//! Entry points for `cargo xtask bench` (called from Playwright through `window.wasmBindings`): the app's own
//! driver and `DeviceSession`, measured in the page. They change nothing in the UI.

use hubsim_proto::conn_str::ConnectionString;
use hubsim_proto::device::{ConnectOptions, DeviceConfig, DeviceSession, Event, Telemetry};
use hubsim_proto::property_bag::SystemProperty;
use hubsim_proto::topic::DeviceIdentity;
use js_sys::{Array, Function, Promise};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

use crate::driver::{Driver, DriverEvent};
use crate::util;

fn performance_now() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or_default()
}

fn device(cs: &str, max_inflight: usize) -> Result<(ConnectionString, DeviceConfig, ConnectOptions), JsValue> {
    let cs = ConnectionString::parse(cs).map_err(|e| JsValue::from_str(&e.to_string()))?;
    let mut cfg = DeviceConfig::new(cs.host_name.clone(), DeviceIdentity::device(cs.device_id.clone()));
    cfg.max_inflight = max_inflight;
    let token = cs.password(util::unix_now() + 3600).map(|t| t.to_string());
    Ok((cs, cfg, ConnectOptions { password: token, will: None }))
}

/// The benchmark message: a `size`-byte JSON body with two properties (`$.ct` and `alert`).
fn message(size: usize) -> Telemetry {
    let mut body = String::from("{\"temperature\":21.5,\"pad\":\"");
    while body.len() + 2 < size {
        body.push('x');
    }
    body.push_str("\"}");
    let mut m = Telemetry::new(body.into_bytes());
    m.properties.set_system(SystemProperty::ContentType, "application/json");
    m.properties.push("alert", "false");
    m
}

struct Run {
    driver: Option<Driver>,
    n: u32,
    acked: u32,
    t0: f64,
    resolve: Option<Function>,
    reject: Option<Function>,
}

impl Run {
    /// Settles the promise once: `Ok(ms)` resolves, `Err(why)` rejects.
    fn settle(&mut self, result: Result<f64, String>) {
        let (resolve, reject) = (self.resolve.take(), self.reject.take());
        let _ = match result {
            Ok(ms) => resolve.map(|f| f.call1(&JsValue::NULL, &JsValue::from_f64(ms))),
            Err(why) => reject.map(|f| f.call1(&JsValue::NULL, &JsValue::from_str(&why))),
        };
    }
}

/// Connects, publishes `n` QoS 1 messages as fast as acknowledgements allow, and resolves with the milliseconds
/// from the first publish to the last PUBACK; rejects with the reason if the connection cannot open or is lost
/// before the last PUBACK (the hub closed it), instead of waiting forever.
#[wasm_bindgen]
pub fn bench_publish(url: String, connection_string: String, n: u32, size: u32) -> Promise {
    Promise::new(&mut |resolve, reject| {
        let (_, cfg, options) = match device(&connection_string, n as usize) {
            Ok(x) => x,
            Err(e) => return drop(reject.call1(&JsValue::NULL, &e)),
        };
        let run = Rc::new(RefCell::new(Run {
            driver: None,
            n,
            acked: 0,
            t0: 0.0,
            resolve: Some(resolve),
            reject: Some(reject.clone()),
        }));
        let r = run.clone();
        let driver = Driver::new(DeviceSession::new(cfg), move |ev| {
            let mut st = r.borrow_mut();
            match ev {
                DriverEvent::Session(Event::Connected { .. }) => {
                    st.t0 = performance_now();
                    if let Some(d) = st.driver.clone() {
                        let n = st.n;
                        drop(st);
                        // All publishes in one command: the session's transmit buffer coalesces them.
                        d.with_session(|s, now| {
                            for _ in 0..n {
                                let _ = s.send_telemetry(now, message(size as usize));
                            }
                        });
                    }
                }
                DriverEvent::Session(Event::TelemetryAcked { .. }) => {
                    st.acked += 1;
                    if st.acked == st.n {
                        let ms = performance_now() - st.t0;
                        st.settle(Ok(ms));
                        if let Some(d) = st.driver.take() {
                            drop(st);
                            d.disconnect();
                        }
                    }
                }
                DriverEvent::TransportFailed(why) => st.settle(Err(why)),
                DriverEvent::Session(Event::ConnectionLost { reason, .. }) => {
                    let acked = st.acked;
                    st.settle(Err(format!("after {acked} of {n} acknowledgements: {reason}")));
                    if let Some(d) = st.driver.take() {
                        drop(st);
                        d.disconnect();
                    }
                }
                _ => {}
            }
        });
        run.borrow_mut().driver = Some(driver.clone());
        if let Err(e) = driver.connect(&url, options) {
            let _ = reject.call1(&JsValue::NULL, &JsValue::from_str(&e));
        }
    })
}

thread_local! {
    static FLEET: RefCell<Vec<Driver>> = const { RefCell::new(Vec::new()) };
    static FLEET_STATS: RefCell<(u32, u32, f64)> = const { RefCell::new((0, 0, 0.0)) };
}

/// Opens one connection per connection string, each sending one message per second; resolves once every
/// connection has either connected or failed, with the number connected. `bench_fleet_acked()` reads the
/// acknowledgement count, `bench_fleet_stop()` closes them all.
#[wasm_bindgen]
pub fn bench_fleet(url: String, connection_strings: Array) -> Promise {
    Promise::new(&mut |resolve, _reject| {
        let total = connection_strings.length();
        let settled = Rc::new(RefCell::new((0u32, 0u32, Some(resolve))));
        let settle = {
            let settled = settled.clone();
            move |ok: bool| {
                let mut s = settled.borrow_mut();
                s.0 += 1;
                if ok {
                    s.1 += 1;
                }
                if s.0 == total {
                    if let Some(f) = s.2.take() {
                        let _ = f.call1(&JsValue::NULL, &JsValue::from_f64(s.1 as f64));
                    }
                }
            }
        };
        let settle = Rc::new(settle);
        for cs in connection_strings.iter() {
            let Some(cs) = cs.as_string() else { continue };
            let Ok((_, cfg, options)) = device(&cs, 64) else {
                settle(false);
                continue;
            };
            type Slot = (Option<Driver>, Option<gloo::timers::callback::Interval>);
            let me: Rc<RefCell<Slot>> = Rc::new(RefCell::new((None, None)));
            let (m2, st) = (me.clone(), settle.clone());
            let first = Rc::new(RefCell::new(true));
            let driver = Driver::new(DeviceSession::new(cfg), move |ev| match ev {
                DriverEvent::Session(Event::Connected { .. }) => {
                    if first.replace(false) {
                        st(true);
                    }
                    let d = m2.borrow().0.clone();
                    if let Some(d) = d {
                        let tick = gloo::timers::callback::Interval::new(1000, move || {
                            if d.with_session(|s, now| s.send_telemetry(now, message(256))).is_ok() {
                                FLEET_STATS.with(|f| f.borrow_mut().0 += 1);
                            }
                        });
                        m2.borrow_mut().1 = Some(tick);
                    }
                }
                DriverEvent::Session(Event::TelemetryAcked { .. }) => FLEET_STATS.with(|f| f.borrow_mut().1 += 1),
                DriverEvent::TransportFailed(_) | DriverEvent::Session(Event::ConnectionLost { .. })
                    if first.replace(false) =>
                {
                    st(false)
                }
                _ => {}
            });
            // Keep the driver reachable; the sending interval is added on CONNACK.
            me.borrow_mut().0 = Some(driver.clone());
            FLEET.with(|f| f.borrow_mut().push(driver.clone()));
            if driver.connect(&url, options).is_err() {
                settle(false);
            }
        }
        if total == 0 {
            if let Some(f) = settled.borrow_mut().2.take() {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_f64(0.0));
            }
        }
    })
}

/// `[sent, acknowledged]` by the fleet so far.
#[wasm_bindgen]
pub fn bench_fleet_counts() -> Array {
    FLEET_STATS.with(|f| {
        let f = f.borrow();
        Array::of2(&JsValue::from_f64(f.0 as f64), &JsValue::from_f64(f.1 as f64))
    })
}

/// Disconnects the whole fleet.
#[wasm_bindgen]
pub fn bench_fleet_stop() {
    let all: Vec<Driver> = FLEET.with(|f| f.borrow_mut().drain(..).collect());
    for d in all {
        d.disconnect();
    }
    FLEET_STATS.with(|f| *f.borrow_mut() = (0, 0, 0.0));
}
