//! Virtual time. The core never reads a clock: callers pass an [`Instant`], milliseconds on any monotonic
//! clock they like (`performance.now()` in the browser, `tokio::time::Instant` in the emulator, a counter in tests).

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time, in milliseconds since an arbitrary origin chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    /// The instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }
    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.as_millis().min(u64::MAX as u128) as u64))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}
