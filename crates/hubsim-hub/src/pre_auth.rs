//! Places for the MQTT connections (TLS or WebSocket, hub or DPS) that have not authenticated yet.
//!
//! At most [`crate::listener::Limits::unauthenticated`] such connections are served at a time: what they may
//! buffer before their CONNECT is accepted (a CONNECT, a WebSocket frame) is bounded by that number times the
//! largest packet or frame, whatever their count. A place is taken once a connection has sent its first byte
//! (before the TLS handshake; a WebSocket's at its upgrade) and given back when the CONNECT is accepted (a DPS
//! device's: once its CONNECT is read) or the connection ends.
//!
//! Places cannot be hoarded: when every one is taken, a newcomer takes the place of the connection that has
//! held one longest, provided it has held it at least [`crate::listener::Limits::evict_unauthenticated_after`]
//! (default 2 s) without authenticating; that connection is closed. A device on loopback authenticates within
//! milliseconds of taking its place, so it is never the oldest; a peer that opens connections and sends nothing
//! (slowloris) must now open more than `unauthenticated / evict_after` a second (128 by default) to keep newcomers
//! out, instead of 256 every 30 s. When every place is younger than that, the newcomer waits for one, at most
//! [`WAIT`], holding nothing but its socket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a new connection may wait for a place before it is closed (the WebSocket handshake is answered 503).
pub const WAIT: Duration = Duration::from_secs(10);

/// The hub's places (one per hub).
pub struct Places {
    free: Arc<Semaphore>,
    /// The places held, oldest first: (place number, taken at, the holder's close signal).
    held: Mutex<VecDeque<(u64, Instant, CancellationToken)>>,
    next: AtomicU64,
    evict_after: Duration,
}

/// One place, held by a connection until it authenticates or ends (dropped). [`Place::evicted`] resolves when a
/// newcomer has taken it: the holder must then close its connection.
pub struct Place {
    _permit: OwnedSemaphorePermit,
    number: u64,
    evicted: CancellationToken,
    places: Arc<Places>,
}

impl Places {
    /// `count` places (at least one); a holder may be evicted once it has held its place `evict_after`.
    pub fn new(count: usize, evict_after: Duration) -> Arc<Places> {
        Arc::new(Places {
            free: Arc::new(Semaphore::new(count.max(1))),
            held: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            evict_after,
        })
    }

    /// A place, waited for at most [`WAIT`]; `None` when none could be had in that time. While every place is
    /// taken, the longest-held one past its `evict_after` is taken from its holder (one per waiter at a time).
    pub async fn take(self: &Arc<Self>) -> Option<Place> {
        let deadline = Instant::now() + WAIT;
        let acquire = self.free.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            let now = Instant::now();
            // Free places go first (the semaphore's queue is fair); only a full house evicts.
            let wake = match self.free.available_permits() {
                0 => self.evict_oldest(now).unwrap_or(deadline).min(deadline),
                _ => deadline,
            };
            tokio::select! {
                permit = &mut acquire => return permit.ok().map(|p| self.hold(p)),
                _ = tokio::time::sleep_until(wake) => if wake >= deadline { return None },
            }
        }
    }

    /// Evicts the longest-held place if it has been held `evict_after`; else the instant it will have been
    /// (`None` after an eviction, or when nothing is held).
    fn evict_oldest(&self, now: Instant) -> Option<Instant> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (_, since, _) = held.front()?;
        let ripe = *since + self.evict_after;
        if ripe > now {
            return Some(ripe);
        }
        if let Some((_, _, evicted)) = held.pop_front() {
            evicted.cancel();
        }
        None
    }

    fn hold(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Place {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.push_back((number, Instant::now(), evicted.clone()));
        Place { _permit: permit, number, evicted, places: self.clone() }
    }
}

impl Place {
    /// Resolves once a newcomer has taken this place; pending forever otherwise.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }
}

/// Resolves when `place` (if any) is evicted; never when there is none.
pub async fn evicted(place: &Option<Place>) {
    match place {
        Some(p) => p.evicted().await,
        None => std::future::pending().await,
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.places.held.lock().unwrap_or_else(|p| p.into_inner());
        // Evicted places were already removed; the others are found among at most `count` entries.
        if let Some(i) = held.iter().position(|(n, _, _)| *n == self.number) {
            held.remove(i);
        }
    }
}
