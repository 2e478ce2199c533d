//! The only owner of the browser's `WebSocket`: it drives a sans-IO session over it — the hub's
//! [`DeviceSession`], or DPS's [`ProvisioningSession`] (both through the small [`Session`] trait).
//!
//! After every input (socket open, bytes, close, timer) and every command it flushes what the session wants to
//! transmit, re-arms the single timer from `poll_timeout`, and hands the session's events to the app — the quinn
//! `ConnectionDriver` pattern in miniature. Events are collected while the session is borrowed and delivered
//! after the borrow ends, so an event handler may call straight back into the driver.

use bytes::Bytes;
use gloo::timers::callback::Timeout;
use hubsim_proto::device::{ConnectOptions, DeviceSession, Event};
use hubsim_proto::packet;
use hubsim_proto::provisioning::{ProvisioningEvent, ProvisioningSession};
use hubsim_proto::time::Instant;
use js_sys::{ArrayBuffer, Uint8Array};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// A sans-IO session the driver can pump: the same inputs and outputs for the hub and for DPS.
pub trait Session: 'static {
    type Event;
    /// What starting needs once the socket is open (CONNECT options, a token expiry).
    type Start;
    /// Queues CONNECT on the freshly opened socket.
    fn start(&mut self, now: Instant, start: Self::Start) -> Result<(), String>;
    /// Bytes from the socket; a violation is reported as an event and ends the session.
    fn input(&mut self, now: Instant, data: &[u8]);
    fn closed(&mut self, now: Instant, why: String);
    fn timeout(&mut self, now: Instant);
    /// Says goodbye (DISCONNECT) if connected and ends the session.
    fn stop(&mut self, now: Instant);
    fn transmit(&mut self) -> Option<Bytes>;
    fn next_timeout(&self) -> Option<Instant>;
    fn event(&mut self) -> Option<Self::Event>;
    /// True when no connection is up or being made: the socket can go.
    fn is_down(&self) -> bool;
}

impl Session for DeviceSession {
    type Event = Event;
    type Start = ConnectOptions;
    fn start(&mut self, now: Instant, start: ConnectOptions) -> Result<(), String> {
        self.connect(now, start).map_err(|e| e.to_string())
    }
    fn input(&mut self, now: Instant, data: &[u8]) {
        let _ = self.handle_input(now, data);
    }
    fn closed(&mut self, now: Instant, why: String) {
        self.handle_transport_closed(now, why);
    }
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn stop(&mut self, now: Instant) {
        self.disconnect(now);
    }
    fn transmit(&mut self) -> Option<Bytes> {
        self.poll_transmit()
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn event(&mut self) -> Option<Event> {
        self.poll_event()
    }
    fn is_down(&self) -> bool {
        self.is_disconnected()
    }
}

impl Session for ProvisioningSession {
    type Event = ProvisioningEvent;
    /// Unix seconds when the DPS token expires.
    type Start = u64;
    fn start(&mut self, now: Instant, expiry: u64) -> Result<(), String> {
        ProvisioningSession::start(self, now, expiry).map_err(|e| e.to_string())
    }
    fn input(&mut self, now: Instant, data: &[u8]) {
        let _ = self.handle_input(now, data);
    }
    fn closed(&mut self, now: Instant, why: String) {
        self.handle_transport_closed(now, why);
    }
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn stop(&mut self, now: Instant) {
        self.cancel(now);
    }
    fn transmit(&mut self) -> Option<Bytes> {
        self.poll_transmit()
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn event(&mut self) -> Option<ProvisioningEvent> {
        self.poll_event()
    }
    fn is_down(&self) -> bool {
        matches!(
            self.state(),
            hubsim_proto::provisioning::device::State::Idle | hubsim_proto::provisioning::device::State::Done
        )
    }
}

/// What the driver reports to the app.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverEvent<E = Event> {
    /// The WebSocket opened and CONNECT was sent.
    TransportOpen,
    /// The WebSocket closed before it opened (host unreachable, handshake refused); the session never started.
    TransportFailed(String),
    /// Something the session reported.
    Session(E),
}

/// Milliseconds on the page's monotonic clock.
pub fn now() -> Instant {
    let ms = web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or_default();
    Instant::from_millis(ms as u64)
}

type Handler<E> = Rc<dyn Fn(DriverEvent<E>)>;

struct Inner<S: Session> {
    session: S,
    ws: Option<WebSocket>,
    timer: Option<Timeout>,
    /// When `timer` fires; re-arming is skipped while the deadline is unchanged (most inputs do not move it).
    timer_at: Option<Instant>,
    pending_connect: Option<S::Start>,
    handler: Handler<S::Event>,
    // The JS callbacks must live as long as the socket.
    _callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
}

/// A device connection in the browser. Cheap to clone; all clones drive the same session.
pub struct Driver<S: Session = DeviceSession> {
    inner: Rc<RefCell<Inner<S>>>,
}

impl<S: Session> Clone for Driver<S> {
    fn clone(&self) -> Self {
        Driver { inner: self.inner.clone() }
    }
}

impl<S: Session> PartialEq for Driver<S> {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<S: Session> Driver<S> {
    /// A disconnected driver for `session`, reporting to `handler`.
    pub fn new(session: S, handler: impl Fn(DriverEvent<S::Event>) + 'static) -> Driver<S> {
        Driver {
            inner: Rc::new(RefCell::new(Inner {
                session,
                ws: None,
                timer: None,
                timer_at: None,
                pending_connect: None,
                handler: Rc::new(handler),
                _callbacks: Vec::new(),
            })),
        }
    }

    /// Opens `url` with subprotocol `mqtt` and starts the session with `options` once the socket is open.
    pub fn connect(&self, url: &str, options: S::Start) -> Result<(), String> {
        self.close_socket();
        let ws = WebSocket::new_with_str(url, "mqtt").map_err(|e| describe_js(&e))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let weak = Rc::downgrade(&self.inner);
        let on_open = callback(&weak, |d, _| d.on_open());
        let on_message = callback(&weak, |d, ev| {
            if let Some(buf) = ev.dyn_ref::<MessageEvent>().and_then(|m| m.data().dyn_into::<ArrayBuffer>().ok()) {
                d.on_bytes(&Uint8Array::new(&buf).to_vec());
            }
        });
        let on_close = callback(&weak, |d, ev| {
            let why = match ev.dyn_ref::<CloseEvent>() {
                Some(c) if !c.reason().is_empty() => format!("WebSocket closed, code {}: {}", c.code(), c.reason()),
                Some(c) => format!("WebSocket closed, code {}", c.code()),
                None => "WebSocket closed".into(),
            };
            d.on_closed(why);
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let mut inner = self.inner.borrow_mut();
        inner.ws = Some(ws);
        inner.pending_connect = Some(options);
        inner._callbacks = vec![on_open, on_message, on_close];
        Ok(())
    }

    /// Runs a command on the session, then flushes.
    pub fn with_session<R>(&self, f: impl FnOnce(&mut S, Instant) -> R) -> R {
        let r = {
            let mut inner = self.inner.borrow_mut();
            f(&mut inner.session, now())
        };
        self.flush();
        r
    }

    /// Reads session state without flushing.
    pub fn peek<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.inner.borrow().session)
    }

    /// Sends DISCONNECT and closes the socket.
    pub fn disconnect(&self) {
        self.with_session(|s, now| s.stop(now));
        self.close_socket();
    }

    fn close_socket(&self) {
        let ws = {
            let mut inner = self.inner.borrow_mut();
            inner.timer = None;
            inner.pending_connect = None;
            inner.ws.take()
        };
        if let Some(ws) = ws {
            ws.set_onopen(None);
            ws.set_onmessage(None);
            ws.set_onclose(None);
            let _ = ws.close();
        }
        // A socket closed by us is a loss the session must know about too.
        self.with_session(|s, now| s.closed(now, "closed by the app".into()));
    }

    fn on_open(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(options) = inner.pending_connect.take() {
                if let Err(e) = inner.session.start(now(), options) {
                    web_sys::console::error_1(&format!("cannot encode CONNECT: {e}").into());
                }
            }
        }
        self.emit(vec![DriverEvent::TransportOpen]);
        self.flush();
    }

    fn on_bytes(&self, data: &[u8]) {
        {
            let mut inner = self.inner.borrow_mut();
            // A violation is reported as an event; the flush below closes the socket.
            inner.session.input(now(), data);
        }
        self.flush();
    }

    fn on_closed(&self, why: String) {
        let never_opened = {
            let mut inner = self.inner.borrow_mut();
            inner.ws = None;
            inner.timer = None;
            inner._callbacks.clear();
            let never_opened = inner.pending_connect.take().is_some();
            inner.session.closed(now(), why.clone());
            never_opened
        };
        if never_opened {
            self.emit(vec![DriverEvent::TransportFailed(why)]);
        }
        self.flush();
    }

    fn on_timer(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.timer = None;
            inner.timer_at = None;
            inner.session.timeout(now());
        }
        self.flush();
    }

    /// Writes pending bytes, closes the socket if the session gave up, re-arms the timer, delivers events.
    fn flush(&self) {
        let mut events = Vec::new();
        let mut dead_socket = None;
        {
            let mut inner = self.inner.borrow_mut();
            while let Some(bytes) = inner.session.transmit() {
                if let Some(ws) = &inner.ws {
                    if ws.ready_state() == WebSocket::OPEN {
                        // Whole packets, at most 64 KiB per message unless one packet is larger (a reconnect's
                        // queued publishes in one message were refused by the server, again at every reconnect).
                        for message in packet::ws_messages(bytes, packet::WS_MESSAGE_TARGET) {
                            let _ = ws.send_with_u8_array(&message);
                        }
                    }
                }
            }
            if inner.session.is_down() && inner.pending_connect.is_none() {
                dead_socket = inner.ws.take();
            }
            let next = inner.session.next_timeout();
            if next != inner.timer_at || (next.is_some() && inner.timer.is_none()) {
                inner.timer_at = next;
                inner.timer = next.map(|at| {
                    let delay = at.as_millis().saturating_sub(now().as_millis()).min(i32::MAX as u64) as u32;
                    let weak = Rc::downgrade(&self.inner);
                    Timeout::new(delay, move || {
                        if let Some(inner) = weak.upgrade() {
                            Driver { inner }.on_timer();
                        }
                    })
                });
            }
            while let Some(e) = inner.session.event() {
                events.push(DriverEvent::Session(e));
            }
        }
        if let Some(ws) = dead_socket {
            ws.set_onclose(None);
            ws.set_onmessage(None);
            let _ = ws.close();
        }
        self.emit(events);
    }

    fn emit(&self, events: Vec<DriverEvent<S::Event>>) {
        if events.is_empty() {
            return;
        }
        let handler = self.inner.borrow().handler.clone();
        for e in events {
            handler(e);
        }
    }
}

/// A socket handler that runs `f` on the driver while it exists. `f` is a function pointer, so the three handlers
/// share one closure type per session (each closure type is its own code in the bundle, with the driver's flush
/// inlined into it).
fn callback<S: Session>(weak: &Weak<RefCell<Inner<S>>>, f: fn(&Driver<S>, JsValue)) -> Closure<dyn FnMut(JsValue)> {
    let weak = weak.clone();
    Closure::new(move |ev: JsValue| {
        if let Some(inner) = weak.upgrade() {
            f(&Driver { inner }, ev);
        }
    })
}

/// A JS exception as text.
pub fn describe_js(v: &JsValue) -> String {
    v.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| "the browser refused without a reason".into())
}
