//! The stored form of a telemetry event: a compact binary record, the body once (the JSON record of hubsim before
//! 0.2 held the body twice, as text and as base64, and cost a JSON serialization per message on the writer
//! thread). Encoded on the connection's task, decoded only when someone reads the event log.
//!
//! Layout (all lengths little-endian `u32`): version byte [`VERSION`]; module id (flag byte + string); enqueued
//! time (string); system properties; application properties; the body (the rest). A property list is a `u32` count, then per entry a
//! name and a value. A value is a tag byte: 0 null, 1 a string, 2 other JSON (as text). The device id is a column
//! of the log table, not repeated here.
//!
//! **Chunks.** The event table (`events.v4`) holds consecutive events in chunks, one value per chunk keyed by its
//! first sequence number ([`ChunkBuilder`], [`chunk_events`]): a group commit of telemetry is one or a few B-tree
//! inserts instead of one per event (redb's inserts were the largest cost of the writer thread, BENCHMARKS.md §7),
//! and retention deletes a whole chunk at once. Layout: count `u32`, newest time `u64` (ms), then per event its
//! sequence number `u64`, time `u64`, device id (`u32` length + UTF-8) and record (`u32` length + bytes).

use serde_json::{Map, Value};

use super::StoreError;
use crate::model::EventRecord;

/// Version byte of the record layout.
pub const VERSION: u8 = 1;

/// Builds one record; `finish` returns the bytes.
pub struct Encoder {
    out: Vec<u8>,
    count_at: usize,
    count: u32,
}

impl Encoder {
    /// A record for `module_id` enqueued at `enqueued_time`, sized for a body of `body_len` bytes.
    pub fn new(module_id: Option<&str>, enqueued_time: &str, body_len: usize) -> Encoder {
        let mut out = Vec::with_capacity(body_len + 256);
        out.push(VERSION);
        match module_id {
            Some(m) => {
                out.push(1);
                put_str(&mut out, m);
            }
            None => out.push(0),
        }
        put_str(&mut out, enqueued_time);
        let count_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        Encoder { out, count_at, count: 0 }
    }

    /// Adds a property to the current list (system properties first, then [`Encoder::application`]).
    pub fn prop(&mut self, name: &str, value: Option<&str>) {
        put_str(&mut self.out, name);
        match value {
            Some(v) => {
                self.out.push(1);
                put_str(&mut self.out, v);
            }
            None => self.out.push(0),
        }
        self.count += 1;
    }

    /// Adds a property whose value is any JSON value.
    fn json_prop(&mut self, name: &str, value: &Value) {
        match value {
            Value::Null => self.prop(name, None),
            Value::String(s) => self.prop(name, Some(s)),
            other => {
                put_str(&mut self.out, name);
                self.out.push(2);
                put_str(&mut self.out, &other.to_string());
                self.count += 1;
            }
        }
    }

    fn close_list(&mut self) {
        self.out[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        self.count = 0;
    }

    /// Ends the system properties; the application properties follow.
    pub fn application(&mut self) {
        self.close_list();
        self.count_at = self.out.len();
        self.out.extend_from_slice(&0u32.to_le_bytes());
    }

    /// Ends the record with its body.
    pub fn finish(mut self, body: &[u8]) -> Vec<u8> {
        self.close_list();
        self.out.extend_from_slice(body);
        self.out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The record of an [`EventRecord`] (its `seq` and `device_id` are kept by the table).
pub fn encode(e: &EventRecord) -> Vec<u8> {
    let mut enc = Encoder::new(e.module_id.as_deref(), &e.enqueued_time, e.body_base64.len());
    for (k, v) in &e.system_properties {
        enc.json_prop(k, v);
    }
    enc.application();
    for (k, v) in &e.application_properties {
        enc.json_prop(k, v);
    }
    enc.finish(&e.body_base64)
}

/// Most events in one chunk.
pub const MAX_CHUNK_EVENTS: u32 = 256;
/// Most bytes of records in one chunk (a larger single record gets a chunk of its own).
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
const CHUNK_HEADER: usize = 12;

/// Builds one chunk of consecutive events.
pub struct ChunkBuilder {
    out: Vec<u8>,
    count: u32,
    newest: u64,
}

impl Default for ChunkBuilder {
    fn default() -> Self {
        ChunkBuilder { out: vec![0; CHUNK_HEADER], count: 0, newest: 0 }
    }
}

impl ChunkBuilder {
    /// Events in the chunk so far.
    pub fn len(&self) -> u32 {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Would a record of `record_len` bytes overflow this chunk ([`MAX_CHUNK_EVENTS`], [`MAX_CHUNK_BYTES`])?
    pub fn is_full_for(&self, record_len: usize) -> bool {
        self.count >= MAX_CHUNK_EVENTS || (self.count > 0 && self.out.len() + record_len > MAX_CHUNK_BYTES)
    }
    /// Adds an event; sequence numbers must increase.
    pub fn push(&mut self, seq: u64, time_ms: u64, device: &str, record: &[u8]) {
        self.out.extend_from_slice(&seq.to_le_bytes());
        self.out.extend_from_slice(&time_ms.to_le_bytes());
        put_str(&mut self.out, device);
        self.out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.out.extend_from_slice(record);
        self.count += 1;
        self.newest = self.newest.max(time_ms);
    }
    /// The chunk's bytes; the builder is empty again.
    pub fn take(&mut self) -> Vec<u8> {
        let mut out = std::mem::replace(&mut self.out, vec![0; CHUNK_HEADER]);
        out[..4].copy_from_slice(&self.count.to_le_bytes());
        out[4..CHUNK_HEADER].copy_from_slice(&self.newest.to_le_bytes());
        self.count = 0;
        self.newest = 0;
        out
    }
}

/// One event of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEvent<'a> {
    pub seq: u64,
    pub time_ms: u64,
    pub device: &'a str,
    pub record: &'a [u8],
}

/// A chunk's event count and the time of its newest event.
pub fn chunk_header(chunk: &[u8]) -> Result<(u32, u64), StoreError> {
    let mut r = Reader(chunk);
    Ok((r.u32()?, r.u64()?))
}

/// The events of a chunk, in order; a chunk cut short yields an error and ends.
pub fn chunk_events(chunk: &[u8]) -> ChunkEvents<'_> {
    let mut r = Reader(chunk);
    match r.u32().and_then(|n| r.u64().map(|_| n)) {
        Ok(left) => ChunkEvents { r, left },
        Err(_) => ChunkEvents { r: Reader(&[]), left: 1 },
    }
}

/// The iterator of [`chunk_events`].
pub struct ChunkEvents<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for ChunkEvents<'a> {
    type Item = Result<ChunkEvent<'a>, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = &mut self.r;
        let ev = (|| {
            let seq = r.u64()?;
            let time_ms = r.u64()?;
            let device = r.str()?;
            let n = r.u32()? as usize;
            Ok(ChunkEvent { seq, time_ms, device, record: r.take(n)? })
        })();
        if ev.is_err() {
            self.left = 0;
        }
        Some(ev)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Record("an event record is cut short".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<&'a str, StoreError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| StoreError::Record("an event record holds bad UTF-8".into()))
    }
    fn props(&mut self) -> Result<Map<String, Value>, StoreError> {
        let n = self.u32()?;
        let mut m = Map::new();
        for _ in 0..n {
            let k = self.str()?.to_owned();
            let v = match self.byte()? {
                0 => Value::Null,
                1 => Value::String(self.str()?.to_owned()),
                2 => serde_json::from_str(self.str()?).map_err(|e| StoreError::Record(e.to_string()))?,
                t => return Err(StoreError::Record(format!("an event record has an unknown value tag {t}"))),
            };
            m.insert(k, v);
        }
        Ok(m)
    }
}

/// The event of a stored record.
pub fn decode(seq: u64, device_id: &str, record: &[u8]) -> Result<EventRecord, StoreError> {
    let mut r = Reader(record);
    match r.byte()? {
        VERSION => {}
        v => return Err(StoreError::Record(format!("an event record of unknown version {v}"))),
    }
    let module_id = match r.byte()? {
        0 => None,
        _ => Some(r.str()?.to_owned()),
    };
    let enqueued_time = r.str()?.to_owned();
    let system_properties = r.props()?;
    let application_properties = r.props()?;
    let body = r.0.to_vec();
    Ok(EventRecord {
        seq,
        device_id: device_id.to_owned(),
        module_id,
        body: String::from_utf8(body.clone()).ok(),
        body_base64: body,
        system_properties,
        application_properties,
        enqueued_time,
    })
}
