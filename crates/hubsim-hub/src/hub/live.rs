//! The live streams' fan-out: one ring of recent records shared by every listener, bounded in records and in
//! bytes. A record is dropped once every listener has read it, or, when a listener is slow, once it is the oldest
//! and the ring is over one of its bounds: that listener is then told how many it missed ([`Recv::Lagged`]), as
//! with a `tokio::sync::broadcast` channel, which bounds records but not their size.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// What a listener receives.
#[derive(Debug)]
pub enum Recv<T> {
    Record(Arc<T>),
    /// This many records were dropped before the listener read them.
    Lagged(u64),
}

struct Slot<T> {
    /// `None` once every listener that was there when it was sent has read it.
    value: Option<Arc<T>>,
    bytes: usize,
    /// Listeners still to read it.
    unread: usize,
}

struct Ring<T> {
    slots: VecDeque<Slot<T>>,
    /// Sequence number of `slots[0]`.
    first: u64,
    /// Bytes of the records still held.
    bytes: usize,
    listeners: usize,
    closed: bool,
}

struct Shared<T> {
    ring: Mutex<Ring<T>>,
    notify: Notify,
    max_records: usize,
    max_bytes: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Ring<T>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Ring<T> {
    fn end(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    /// Drops read records from the front.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| s.value.is_none()) {
            self.slots.pop_front();
            self.first += 1;
        }
    }

    /// One listener no longer needs the record at `seq`.
    fn release(&mut self, seq: u64) {
        let Some(slot) = seq.checked_sub(self.first).and_then(|i| self.slots.get_mut(i as usize)) else { return };
        slot.unread = slot.unread.saturating_sub(1);
        if slot.unread == 0 && slot.value.take().is_some() {
            self.bytes -= slot.bytes;
        }
    }
}

/// The sending side (one per stream, owned by the hub).
pub struct Feed<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Feed<T> {
    /// A feed holding at most `max_records` records and `max_bytes` bytes of them (plus the newest record, which
    /// is always kept, whatever its size).
    pub fn new(max_records: usize, max_bytes: usize) -> Feed<T> {
        let ring = Ring { slots: VecDeque::new(), first: 0, bytes: 0, listeners: 0, closed: false };
        Feed {
            shared: Arc::new(Shared {
                ring: Mutex::new(ring),
                notify: Notify::new(),
                max_records: max_records.max(1),
                max_bytes,
            }),
        }
    }

    /// Listeners now.
    pub fn receiver_count(&self) -> usize {
        self.shared.lock().listeners
    }

    /// (records, bytes) held now.
    pub fn held(&self) -> (usize, usize) {
        let r = self.shared.lock();
        (r.slots.iter().filter(|s| s.value.is_some()).count(), r.bytes)
    }

    /// Sends `value`, which holds about `bytes` bytes, to every listener; dropped at once without listeners.
    /// Returns the number of listeners it went to.
    pub fn send(&self, value: T, bytes: usize) -> usize {
        let mut r = self.shared.lock();
        if r.listeners == 0 {
            return 0;
        }
        let unread = r.listeners;
        r.slots.push_back(Slot { value: Some(Arc::new(value)), bytes, unread });
        r.bytes += bytes;
        // Over a bound: the oldest records go, read or not (a listener that had not read one learns it lagged).
        while r.slots.len() > 1 && (r.slots.len() > self.shared.max_records || r.bytes > self.shared.max_bytes) {
            if let Some(old) = r.slots.pop_front() {
                r.first += 1;
                if old.value.is_some() {
                    r.bytes -= old.bytes;
                }
            }
        }
        r.trim();
        drop(r);
        self.shared.notify.notify_waiters();
        unread
    }

    /// A listener of the records sent from now on.
    pub fn subscribe(&self) -> Listener<T> {
        let mut r = self.shared.lock();
        r.listeners += 1;
        let next = r.end();
        Listener { shared: self.shared.clone(), next }
    }
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_waiters();
    }
}

/// The receiving side of one listener.
pub struct Listener<T> {
    shared: Arc<Shared<T>>,
    /// Sequence number of the next record to read.
    next: u64,
}

impl<T> Listener<T> {
    /// The next record, or how many were missed; `None` once nothing more can come (the feed is gone).
    fn try_recv(&mut self) -> Option<Option<Recv<T>>> {
        let mut r = self.shared.lock();
        if self.next < r.first {
            let missed = r.first - self.next;
            self.next = r.first;
            return Some(Some(Recv::Lagged(missed)));
        }
        if self.next < r.end() {
            let seq = self.next;
            self.next += 1;
            let value = r.slots[(seq - r.first) as usize].value.clone();
            r.release(seq);
            r.trim();
            // Always `Some`: a record is only emptied once this listener, too, has read it.
            return Some(value.map(Recv::Record));
        }
        if r.closed {
            return Some(None);
        }
        None
    }

    /// Waits for the next record, or the number missed; `None` once the feed is gone.
    pub async fn recv(&mut self) -> Option<Recv<T>> {
        let shared = self.shared.clone();
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(got) = self.try_recv() {
                return got;
            }
            notified.await;
        }
    }
}

impl<T> Drop for Listener<T> {
    fn drop(&mut self) {
        let mut r = self.shared.lock();
        r.listeners -= 1;
        for seq in self.next.max(r.first)..r.end() {
            r.release(seq);
        }
        r.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(r: Option<Recv<Vec<u8>>>) -> Vec<u8> {
        match r {
            Some(Recv::Record(v)) => v.to_vec(),
            _ => panic!("not a record"),
        }
    }

    #[tokio::test]
    async fn a_slow_listener_holds_at_most_the_byte_bound_and_is_told_what_it_missed() {
        let feed = Feed::new(4096, 10_000);
        let mut slow = feed.subscribe();
        let mut fast = feed.subscribe();
        for i in 0..100u8 {
            assert_eq!(feed.send(vec![i; 1000], 1000), 2);
            assert_eq!(record(fast.recv().await), vec![i; 1000], "the reading listener gets every record");
            let (records, bytes) = feed.held();
            assert!(bytes <= 10_000 && records <= 10, "{records} records of {bytes} bytes held");
        }
        // The slow one missed all but the last ten, is told so, then reads those.
        assert!(matches!(slow.recv().await, Some(Recv::Lagged(90))));
        for i in 90..100u8 {
            assert_eq!(record(slow.recv().await), vec![i; 1000]);
        }
        assert_eq!(feed.held(), (0, 0), "what every listener has read is let go");
    }

    #[tokio::test]
    async fn records_are_bounded_in_number_too_and_let_go_without_listeners() {
        let feed = Feed::new(3, usize::MAX);
        let mut l = feed.subscribe();
        for i in 0..5u8 {
            feed.send(vec![i], 1);
        }
        assert_eq!(feed.held(), (3, 3));
        assert!(matches!(l.recv().await, Some(Recv::Lagged(2))));
        assert_eq!(record(l.recv().await), vec![2]);
        drop(l);
        assert_eq!(feed.held(), (0, 0), "the last listener's unread records are dropped with it");
        assert_eq!(feed.send(vec![9], 1), 0, "nobody listens: nothing is kept");
        assert_eq!(feed.held(), (0, 0));
    }

    #[tokio::test]
    async fn a_waiting_listener_wakes_for_a_record_and_ends_with_the_feed() {
        let feed = Feed::new(16, 1 << 20);
        let mut l = feed.subscribe();
        let waiter = tokio::spawn(async move {
            let first = record(l.recv().await);
            (first, l.recv().await.is_none())
        });
        // Sent once the listener waits (or before: either way it is received once).
        tokio::task::yield_now().await;
        feed.send(vec![7], 1);
        drop(feed);
        assert_eq!(waiter.await.unwrap(), (vec![7], true));
    }

    #[test]
    fn the_newest_record_is_kept_even_over_the_byte_bound() {
        let feed = Feed::new(16, 100);
        let _l = feed.subscribe();
        feed.send(vec![0u8; 10], 10);
        feed.send(vec![1u8; 500], 500);
        assert_eq!(feed.held(), (1, 500));
    }
    /// Listeners that come, read at random paces and go, against a model: each one gets, in order, every record
    /// sent while it listened, except those it is told it missed; what is held stays within the bounds, and what
    /// every listener has read is let go.
    #[test]
    fn listeners_at_random_paces_agree_with_a_model() {
        let (max_records, max_bytes) = (8, 60);
        let feed = Feed::new(max_records, max_bytes);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        // Per listener: the listener, the next value it expects (values are sent as 0, 1, 2, ...).
        let mut listeners: Vec<(Listener<u64>, u64)> = Vec::new();
        let mut sent = 0u64;
        let poll = |l: &mut Listener<u64>| l.try_recv();
        for step in 0..20_000 {
            match rand(10) {
                0 if listeners.len() < 5 => listeners.push((feed.subscribe(), sent)),
                1 if !listeners.is_empty() => drop(listeners.swap_remove(rand(listeners.len() as u64) as usize)),
                2..=5 => {
                    let bytes = rand(30) as usize;
                    assert_eq!(feed.send(sent, bytes), listeners.len(), "step {step}");
                    sent += 1;
                }
                _ if !listeners.is_empty() => {
                    let i = rand(listeners.len() as u64) as usize;
                    let (l, next) = &mut listeners[i];
                    for _ in 0..rand(4) {
                        match poll(l) {
                            Some(Some(Recv::Record(v))) => {
                                assert_eq!(*v, *next, "step {step}: records in order, none skipped silently");
                                *next += 1;
                            }
                            Some(Some(Recv::Lagged(n))) => {
                                assert!(n > 0, "step {step}");
                                *next += n;
                            }
                            Some(None) => panic!("step {step}: the feed is still there"),
                            None => {
                                assert_eq!(*next, sent, "step {step}: nothing to read only once all are read");
                                break;
                            }
                        }
                    }
                }
                _ => {}
            }
            let (records, bytes) = feed.held();
            assert!(records <= max_records, "step {step}: {records} records held");
            assert!(bytes <= max_bytes.max(30), "step {step}: {bytes} bytes held");
            let unread = listeners.iter().map(|(_, next)| sent - next).max().unwrap_or(0);
            if unread == 0 {
                assert_eq!(feed.held(), (0, 0), "step {step}: everything read is let go");
            }
            let r = feed.shared.lock();
            assert!(r.slots.len() <= max_records, "step {step}: {} slots", r.slots.len());
        }
    }
}
