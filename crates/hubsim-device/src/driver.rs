//! The one tokio driver of a [`DeviceSession`] (quinn's `ConnectionDriver` in miniature, the native twin of the
//! web app's `driver.rs`): it owns the session, the transport and the clock origin; after every input it flushes
//! what the session wants to send, re-arms the one timer from `poll_timeout`, and hands events to the caller.
//! The fleet (`hubsim simulate`) and every integration test drive devices through it, so there is one pump loop.

use crate::transport::{Transport, TransportError};
use hubsim_proto::device::{ConnectOptions, DeviceConfig, DeviceSession, Event, SendError};
use hubsim_proto::Instant;
use std::time::Duration;

/// Size of the read buffer per device, bytes (a TLS record is at most 16 KB).
pub const READ_BUFFER: usize = 16 * 1024;

/// A device session with its transport and clock.
pub struct Driver {
    session: DeviceSession,
    transport: Option<Transport>,
    start: std::time::Instant,
    buf: Vec<u8>,
}

impl Driver {
    /// A disconnected device; its clock starts now.
    pub fn new(config: DeviceConfig) -> Driver {
        Driver {
            session: DeviceSession::new(config),
            transport: None,
            start: std::time::Instant::now(),
            buf: vec![0u8; READ_BUFFER],
        }
    }

    /// The session's clock: milliseconds since this driver was created.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    /// The tokio instant of a session instant.
    pub fn tokio_instant(&self, at: Instant) -> tokio::time::Instant {
        let ms = at.as_millis().saturating_sub(self.now().as_millis());
        tokio::time::Instant::now() + Duration::from_millis(ms)
    }

    pub fn session(&self) -> &DeviceSession {
        &self.session
    }

    /// The session, for calls that take the current time (`driver.now()`); call [`flush`](Self::flush) after.
    pub fn session_mut(&mut self) -> &mut DeviceSession {
        &mut self.session
    }

    /// Whether a transport is attached (it is dropped when the connection is lost).
    pub fn has_transport(&self) -> bool {
        self.transport.is_some()
    }

    /// Attaches a freshly opened transport and sends CONNECT.
    pub async fn connect(&mut self, transport: Transport, options: ConnectOptions) -> Result<(), SendError> {
        self.transport = Some(transport);
        let now = self.now();
        self.session.connect(now, options)?;
        self.flush().await;
        Ok(())
    }

    /// Drops the transport abruptly: no DISCONNECT, no close handshake (a cut cable). The session is not told;
    /// call `handle_transport_closed` to let it notice at once, or let keep-alive find out.
    pub fn cut(&mut self) {
        self.transport = None;
    }

    /// The attached transport, for writing bytes the session would refuse to (tests of the hub's rules).
    pub fn transport_mut(&mut self) -> Option<&mut Transport> {
        self.transport.as_mut()
    }

    /// Detaches the transport without telling the session.
    pub fn take_transport(&mut self) -> Option<Transport> {
        self.transport.take()
    }

    /// Writes everything the session wants to send; a failed write tells the session the transport is gone.
    pub async fn flush(&mut self) {
        while let Some(b) = self.session.poll_transmit() {
            let Some(t) = &mut self.transport else { continue };
            if let Err(e) = t.send(b).await {
                let now = self.now();
                self.session.handle_transport_closed(now, failed_write(&e));
                self.transport = None;
            }
        }
    }

    /// Drives I/O and timers until the session has an event (returned) or `until` passes (`None`). With no
    /// transport only timers can produce events. Cancel-safe between events.
    pub async fn next_event(&mut self, until: Option<tokio::time::Instant>) -> Option<Event> {
        self.next_event_or(until, std::future::pending()).await
    }

    /// [`next_event`](Self::next_event) that also returns `None` when `interrupt` completes (a stop signal).
    /// The interrupt is only watched while waiting for input or a timer, never during a write, so a frame is
    /// never cut in half and a clean DISCONNECT can follow.
    pub async fn next_event_or(
        &mut self,
        until: Option<tokio::time::Instant>,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> Option<Event> {
        tokio::pin!(interrupt);
        loop {
            self.flush().await;
            if let Some(e) = self.session.poll_event() {
                if matches!(e, Event::ConnectionLost { .. }) {
                    self.transport = None;
                }
                return Some(e);
            }
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                return None;
            }
            let timer = self.session.poll_timeout().map(|t| self.tokio_instant(t));
            let wake = [timer, until].into_iter().flatten().min();
            let Some(t) = self.transport.as_mut() else {
                tokio::select! {
                    _ = sleep_until(wake) => {}
                    _ = &mut interrupt => return None,
                }
                let now = self.now();
                self.session.handle_timeout(now);
                continue;
            };
            tokio::select! {
                r = t.recv(&mut self.buf) => {
                    let now = self.now();
                    match r {
                        // A protocol error from the peer ends the connection inside the session; it shows up
                        // as a ConnectionLost event on the next turn.
                        Some(b) => { let _ = self.session.handle_input(now, &b); }
                        None => self.session.handle_transport_closed(now, "closed by the hub"),
                    }
                }
                _ = sleep_until(wake) => {
                    let now = self.now();
                    self.session.handle_timeout(now);
                }
                _ = &mut interrupt => return None,
            }
        }
    }

    /// Sends DISCONNECT (a clean close: no Will, the stored session stays) and flushes it.
    pub async fn disconnect(&mut self) {
        let now = self.now();
        self.session.disconnect(now);
        self.flush().await;
    }
}

fn failed_write(e: &TransportError) -> String {
    format!("write failed: {e}")
}

/// Sleeps until `t`, or forever when `None`.
pub async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
