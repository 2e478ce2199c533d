//! The embedded database (redb): registry, twins, stored sessions, C2D queues, feedback, events and the
//! connection log. The only module that touches the database.
//!
//! **Group commit.** Writes go through one writer thread that commits in groups: every write waiting when a
//! transaction starts is applied in it, and each caller is answered only after the commit (fsync) returns. An
//! acknowledged write therefore survives `kill -9`, and a burst of telemetry costs one fsync per batch, not per
//! message.
//!
//! **Isolation inside a group.** redb has no nested transactions (a savepoint can only be taken before anything is
//! written), so [`Tx`] keeps an undo log: every insert and remove records the value it replaced. When a caller's
//! closure returns an error (or panics), its own changes are undone in reverse order inside the shared transaction
//! and only that caller gets the error; everybody else's writes commit. Only a failure of the database itself (the
//! undo or the commit failing) fails the whole group, so nobody is told a write is durable when it is not.
//!
//! **A full disk.** When redb reports an I/O error (typically `ENOSPC`) it refuses every later write with
//! `PreviousIo` until the database is opened again. The writer then marks the store unavailable (logged once),
//! answers every write at once with [`StoreError::Unavailable`] (CONNACK 0x03, HTTP 503 upstream), and retries with
//! backoff ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]): when at least [`RECOVERY_FREE_BYTES`] are free on the
//! file system it closes the database (after in-flight reads finish), opens it again (redb repairs it) and commits a
//! probe; then it logs the recovery and serves again. `tests/full_disk.rs` fills a real, small tmpfs to check this
//! (in a user namespace when the tests do not run as root).
//!
//! **Back-pressure.** At most [`MAX_QUEUED`] writes wait for the writer (16 384); further callers wait
//! asynchronously for a place, so a burst cannot grow the queue without bound.
//!
//! **Reads** run on tokio's blocking pool ([`tokio::task::spawn_blocking`]), never on the async workers. The logs
//! have per-device indexes, so a per-device query does not scan the log: the connection log's is `(device, seq)`;
//! events are stored in chunks of up to 256 consecutive events ([`event::ChunkBuilder`]), and their index is
//! `(device, chunk)`, one entry per device and chunk, so a query reads the chunks that hold the device's events.
//! The event index is written a little after the events ([`index_events`]: in a group commit once [`INDEX_LAG`]
//! events wait, or after [`INDEX_EVERY`]), so a query also reads the events after the index's mark, at most about
//! [`INDEX_LAG`] plus one group of them.
//!
//! **Retention** ([`Retention`]): like IoT Hub's built-in endpoint, events, connection records and feedback records
//! older than the retention time (default 1 day) are deleted, and each log is also capped in records (defaults
//! 1 000 000 events, 100 000 connection records, 100 000 feedback records). It is enforced incrementally: each
//! commit deletes at most [`RETENTION_STEP`] + 2 × (records it appended) records per log, oldest first, and an idle
//! store runs one such step every [`HOUSEKEEPING`]; there is never a stop-the-world scan. Events go a whole chunk
//! at a time ([`enforce_event_retention`]).
//!
//! Logs written by hubsim versions before retention (`events`, `connlog`, `feedback`: `seq → JSON`) are moved into
//! the current tables once, at open, timed "now"; events stored as JSON (`events.v2`) are converted to the binary
//! record of [`event`] once, at open, and events stored one per row (`events.v3`) into chunks, once, at open.
//!
//! **Telemetry** has its own path ([`Store::append_event`]): the record is encoded by the caller, and the writer
//! appends every event of a group as one or a few chunks, with one update of the sequence, count and byte counters
//! (an append cannot fail on its own, so it needs no undo log). A chunk is one B-tree insert where a row per event
//! was one each: the inserts were the largest cost of the writer thread (BENCHMARKS.md §7).

use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use crate::model::{C2dMessage, ConnectionRecord, Device, EventRecord, FeedbackRecord, Twin, TwinHead, TwinTree};
use crate::timefmt::unix_ms;

mod dps;
pub mod event;

pub use dps::{DpsView, RecordHead};

const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const TWINS: TableDefinition<&str, &[u8]> = TableDefinition::new("twins");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const C2D: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("c2d");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// A log record: `seq → (time in Unix ms, device or "", JSON)`. The time drives retention without parsing JSON;
/// the device lets retention remove the index entry.
type LogTable = TableDefinition<'static, u64, (u64, &'static str, &'static [u8])>;
type IndexTable = TableDefinition<'static, (&'static str, u64), ()>;
/// Events, in chunks of consecutive events: `first seq → chunk` ([`event::ChunkBuilder`]).
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events.v4");
/// `(device, first seq of a chunk holding events of that device)`.
const EVENTS_BY_DEVICE: IndexTable = TableDefinition::new("events.by-device.v4");
/// Events one per row (binary records), as hubsim stored them before chunks; converted at open
/// ([`migrate_events_v3`]), with their per-event index.
const EVENTS_V3: LogTable = TableDefinition::new("events.v3");
const EVENTS_BY_DEVICE_V3: IndexTable = TableDefinition::new("events.by-device");
/// Events as hubsim 0.1 stored them (JSON records), converted at open ([`migrate_events_v2`]).
const EVENTS_V2: LogTable = TableDefinition::new("events.v2");
const CONNLOG: LogTable = TableDefinition::new("connlog.v2");
const CONNLOG_BY_DEVICE: IndexTable = TableDefinition::new("connlog.by-device");
const FEEDBACK: LogTable = TableDefinition::new("feedback.v2");
/// Log tables of hubsim versions before retention (`seq → JSON`), migrated at open.
const OLD_LOGS: [(&str, Log); 3] =
    [("events", Log::Events), ("connlog", Log::Connections), ("feedback", Log::Feedback)];

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 4096;
/// Most writes queued or being committed; further callers wait for a place (back-pressure, bounded memory).
pub const MAX_QUEUED: usize = 4 * MAX_BATCH;
/// Records each commit may delete per log beyond twice what it appended.
pub const RETENTION_STEP: u64 = 512;
/// How often an idle store applies retention.
pub const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// First delay before re-opening the database after an I/O failure; doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(200);
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Free space the file system must have again before the store tries to recover from an I/O failure.
pub const RECOVERY_FREE_BYTES: u64 = 4 * 1024 * 1024;

/// Retention of the logs (IoT Hub's built-in endpoint keeps events 1 day by default, at most 7).
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Events, connection records and feedback older than this are deleted (default 24 h).
    pub max_age: Duration,
    /// Most events kept (default 1 000 000).
    pub max_events: u64,
    /// Most connection-log records kept (default 100 000).
    pub max_connections: u64,
    /// Most feedback records kept (default 100 000).
    pub max_feedback: u64,
    /// Most bytes of stored events (their records; default 1 GiB): a device sending 256 KB messages would
    /// otherwise reach the event cap only after 256 GB.
    pub max_event_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(24 * 3600),
            max_events: 1_000_000,
            max_connections: 100_000,
            max_feedback: 100_000,
            max_event_bytes: 1 << 30,
        }
    }
}

/// The three append-only logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Log {
    Events,
    Connections,
    Feedback,
}

impl Log {
    const ALL: [Log; 3] = [Log::Events, Log::Connections, Log::Feedback];
    /// The log's table of one record per row. Events are stored in chunks ([`EVENTS`]): theirs is the row table
    /// of the versions before chunks, which only the migrations at open write into.
    fn table(self) -> LogTable {
        match self {
            Log::Events => EVENTS_V3,
            Log::Connections => CONNLOG,
            Log::Feedback => FEEDBACK,
        }
    }
    /// The per-device index of [`Log::table`].
    fn index(self) -> Option<IndexTable> {
        match self {
            Log::Events => Some(EVENTS_BY_DEVICE_V3),
            Log::Connections => Some(CONNLOG_BY_DEVICE),
            Log::Feedback => None,
        }
    }
    fn max(self, l: &Retention) -> u64 {
        match self {
            Log::Events => l.max_events,
            Log::Connections => l.max_connections,
            Log::Feedback => l.max_feedback,
        }
    }
}

/// A database failure (never a logical "not found", which is an `Option`).
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The database cannot be written (an I/O error, typically a full disk) or is being re-opened; new work is
    /// refused until a write succeeds again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Db(String),
    /// A stored record that does not decode, or a value that does not encode.
    #[error("a stored record is not valid: {0}")]
    Record(String),
    /// The database is open in another process: redb locks the file (`DatabaseError::DatabaseAlreadyOpen`), so a
    /// second `hubsim serve` on the same data folder cannot start.
    #[error(
        "another hubsim serve is already using the data folder {folder} (its database is locked): stop that one, \
         or give this one another folder with --data"
    )]
    InUse { folder: String },
}

impl StoreError {
    /// Is this the "disk full / database unavailable" state (answered 503 / CONNACK 0x03)?
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Maps a redb error, telling I/O failures (after which redb needs re-opening) from the rest.
fn db(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::Io(_) | redb::Error::PreviousIo => StoreError::Unavailable(e.to_string()),
        other => StoreError::Db(other.to_string()),
    }
}

fn to_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Record(e.to_string()))
}
fn from_bytes<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Record(e.to_string()))
}

type Op = Box<dyn FnOnce(&mut Tx<'_>) -> Result<Box<dyn Any + Send>, StoreError> + Send>;
type Reply = oneshot::Sender<Result<Box<dyn Any + Send>, StoreError>>;

/// A telemetry event ready to append: its device, its time (Unix ms) and its record ([`event`]).
pub struct NewEvent {
    pub device: String,
    pub time_ms: u64,
    pub record: Vec<u8>,
}

/// Work for the writer thread.
enum Job {
    /// A closure run in the group's transaction (undone alone if it fails).
    Op(Op, Reply),
    /// A telemetry event, appended with the other events of the group; answered with its sequence number.
    Event(NewEvent, oneshot::Sender<Result<u64, StoreError>>),
}

impl Job {
    fn fail(self, e: &StoreError) {
        match self {
            Job::Op(_, reply) => drop(reply.send(Err(e.clone()))),
            Job::Event(_, reply) => drop(reply.send(Err(e.clone()))),
        }
    }
}

/// A job's answer, sent after the commit.
enum Answer {
    Op(Reply, Result<Box<dyn Any + Send>, StoreError>),
    Event(oneshot::Sender<Result<u64, StoreError>>, u64),
}

/// State shared by the handles and the writer thread.
struct Shared {
    path: PathBuf,
    /// The open database; `None` while the writer re-opens it.
    db: RwLock<Option<Arc<Database>>>,
    /// Why the store is unavailable, when it is; watchers learn about every change of state.
    unavailable: watch::Sender<Option<String>>,
}

impl Shared {
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self.db.read().map_err(|_| StoreError::Db("lock poisoned".into()))?;
        slot.clone().ok_or_else(|| StoreError::Unavailable(self.reason()))
    }
    fn reason(&self) -> String {
        self.unavailable.borrow().clone().unwrap_or_else(|| "the database is being re-opened".into())
    }
}

/// Handle to the database; cheap to clone. When the last handle is dropped the writer thread finishes its queue
/// and the database is closed before the drop returns (so the same process can open it again at once).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
}

struct WriterHandle {
    tx: Option<mpsc::Sender<Job>>,
    /// One permit per write queued or in the group being committed: callers wait (asynchronously) beyond
    /// [`MAX_QUEUED`], so the queue, and the memory it holds, stays bounded.
    permits: Arc<tokio::sync::Semaphore>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            // (Never join from the writer thread itself, should an operation have owned the last handle.)
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// A write transaction, for the closures passed to [`Store::write`]. Every change is recorded so a failing
/// closure's changes can be undone without aborting the others in the same group commit.
pub struct Tx<'a> {
    tx: &'a WriteTransaction,
    undo: Vec<Undo>,
    /// Records appended per log (indexed like [`Log::ALL`]), to size the retention step.
    appended: [u64; 3],
}

/// How to undo one change.
enum Undo {
    Str(TableDefinition<'static, &'static str, &'static [u8]>, String, Option<Vec<u8>>),
    C2d(String, u64, Option<Vec<u8>>),
    Meta(String, Option<u64>),
    Appended(Log, u64, String),
    /// A chunk of one event appended by [`Tx::append_event`] (not yet in the index: [`index_events`] adds it).
    EventChunk(u64),
}

/// redb's page cache, bytes (8 MiB). redb's default is 1 GiB, which a busy event log fills: the emulator's
/// memory then grew past 600 MB in the 100-device benchmark. Writes are appends and reads are recent pages, so a
/// small cache costs little (BENCHMARKS.md).
pub const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Creates the file 0600 before redb opens it (redb initialises an empty file), so device keys are never
/// readable by others, not even for a moment.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    crate::files::ensure_private_file(path).map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    let database = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            StoreError::InUse { folder: path.parent().unwrap_or(path).display().to_string() }
        }
        other => db(other),
    })?;
    let tx = database.begin_write().map_err(db)?;
    {
        tx.open_table(DEVICES).map_err(db)?;
        tx.open_table(TWINS).map_err(db)?;
        tx.open_table(SESSIONS).map_err(db)?;
        tx.open_table(C2D).map_err(db)?;
        tx.open_table(META).map_err(db)?;
        tx.open_table(EVENTS).map_err(db)?;
        tx.open_table(EVENTS_BY_DEVICE).map_err(db)?;
        for log in [Log::Connections, Log::Feedback] {
            tx.open_table(log.table()).map_err(db)?;
            if let Some(i) = log.index() {
                tx.open_table(i).map_err(db)?;
            }
        }
        migrate_old_logs(&tx)?;
        migrate_events_v2(&tx)?;
        migrate_events_v3(&tx)?;
        dps::open(&tx)?;
        // A database of a version that indexed every event as it was appended: all of them are indexed.
        let mut meta = tx.open_table(META).map_err(db)?;
        if meta.get(EVENTS_INDEXED).map_err(db)?.is_none() {
            let last = meta.get("events").map_err(db)?.map(|v| v.value()).unwrap_or(0);
            meta.insert(EVENTS_INDEXED, last).map_err(db)?;
        }
    }
    tx.commit().map_err(db)?;
    Ok(database)
}

/// Moves the logs of an older hubsim (`seq → JSON`, no times) into the current tables, timed "now" so retention
/// keeps them one more retention period.
fn migrate_old_logs(tx: &WriteTransaction) -> Result<(), StoreError> {
    let names: Vec<String> = tx.list_tables().map_err(db)?.map(|t| t.name().to_owned()).collect();
    let now = unix_ms();
    for (name, log) in OLD_LOGS {
        if !names.iter().any(|n| n == name) {
            continue;
        }
        let old: TableDefinition<u64, &[u8]> = TableDefinition::new(name);
        let mut moved = 0u64;
        {
            let t = tx.open_table(old).map_err(db)?;
            let mut new = tx.open_table(log.table()).map_err(db)?;
            for e in t.iter().map_err(db)? {
                let (k, v) = e.map_err(db)?;
                let device = old_device(log, v.value());
                let value = match log {
                    Log::Events => match from_bytes::<EventRecord>(v.value()) {
                        Ok(e) => event::encode(&e),
                        Err(_) => continue,
                    },
                    Log::Connections | Log::Feedback => v.value().to_vec(),
                };
                new.insert(k.value(), (now, device.as_str(), value.as_slice())).map_err(db)?;
                if let (Some(i), false) = (log.index(), device.is_empty()) {
                    tx.open_table(i).map_err(db)?.insert((device.as_str(), k.value()), ()).map_err(db)?;
                }
                moved += 1;
            }
        }
        tx.delete_table(old).map_err(db)?;
        tracing::info!("moved {moved} records of the old '{name}' log into the current format");
    }
    Ok(())
}

/// Converts the events of hubsim 0.1 (`events.v2`: JSON records) to binary records, keeping their sequence
/// numbers, times and index entries; the byte count of the event log is corrected by the difference. A record
/// that is not valid JSON is dropped with its index entry (it could never be read) and counted in the log line.
fn migrate_events_v2(tx: &WriteTransaction) -> Result<(), StoreError> {
    if !tx.list_tables().map_err(db)?.any(|t| t.name() == EVENTS_V2.name()) {
        return Ok(());
    }
    let (mut moved, mut dropped, mut old_bytes, mut new_bytes) = (0u64, 0u64, 0u64, 0u64);
    {
        let old = tx.open_table(EVENTS_V2).map_err(db)?;
        let mut new = tx.open_table(EVENTS_V3).map_err(db)?;
        let mut index = tx.open_table(EVENTS_BY_DEVICE_V3).map_err(db)?;
        for e in old.iter().map_err(db)? {
            let (k, v) = e.map_err(db)?;
            let (time, device, json) = v.value();
            old_bytes += json.len() as u64;
            match from_bytes::<EventRecord>(json) {
                Ok(rec) => {
                    let record = event::encode(&rec);
                    new_bytes += record.len() as u64;
                    new.insert(k.value(), (time, device, record.as_slice())).map_err(db)?;
                    moved += 1;
                }
                Err(_) => {
                    if !device.is_empty() {
                        index.remove((device, k.value())).map_err(db)?;
                    }
                    dropped += 1;
                }
            }
        }
    }
    tx.delete_table(EVENTS_V2).map_err(db)?;
    let mut meta = tx.open_table(META).map_err(db)?;
    let counted = meta.get(EVENT_BYTES).map_err(db)?.map(|v| v.value()).unwrap_or(0);
    meta.insert(EVENT_BYTES, counted.saturating_sub(old_bytes) + new_bytes).map_err(db)?;
    tracing::info!(
        "converted {moved} stored events to the binary record format ({} KB instead of {} KB){}",
        new_bytes / 1024,
        old_bytes / 1024,
        if dropped > 0 { format!("; dropped {dropped} records that were not valid JSON") } else { String::new() }
    );
    Ok(())
}

/// Converts events stored one per row (`events.v3`, and what the older migrations above left there) into chunks of
/// consecutive events, and builds the per-chunk index in full (the mark then covers every converted event). The
/// event count is set from the rows; the byte count is unchanged (the records are the same bytes).
fn migrate_events_v3(tx: &WriteTransaction) -> Result<(), StoreError> {
    if !tx.list_tables().map_err(db)?.any(|t| t.name() == EVENTS_V3.name()) {
        return Ok(());
    }
    let mut moved = 0u64;
    let mut last = 0u64;
    let mut entries: Vec<(String, u64)> = Vec::new();
    {
        let old = tx.open_table(EVENTS_V3).map_err(db)?;
        let mut new = tx.open_table(EVENTS).map_err(db)?;
        let mut chunk = event::ChunkBuilder::default();
        let mut key = 0u64;
        let mut devices: Vec<String> = Vec::new();
        let mut put = |chunk: &mut event::ChunkBuilder,
                       key: u64,
                       devices: &mut Vec<String>,
                       entries: &mut Vec<(String, u64)>|
         -> Result<(), StoreError> {
            if chunk.is_empty() {
                return Ok(());
            }
            new.insert(key, chunk.take().as_slice()).map_err(db)?;
            devices.sort_unstable();
            devices.dedup();
            entries.extend(devices.drain(..).filter(|d| !d.is_empty()).map(|d| (d, key)));
            Ok(())
        };
        for e in old.iter().map_err(db)? {
            let (k, v) = e.map_err(db)?;
            let (time, device, record) = v.value();
            if chunk.is_full_for(record.len()) {
                put(&mut chunk, key, &mut devices, &mut entries)?;
            }
            if chunk.is_empty() {
                key = k.value();
            }
            chunk.push(k.value(), time, device, record);
            devices.push(device.to_owned());
            moved += 1;
            last = k.value();
        }
        put(&mut chunk, key, &mut devices, &mut entries)?;
    }
    entries.sort_unstable();
    {
        let mut index = tx.open_table(EVENTS_BY_DEVICE).map_err(db)?;
        for (device, key) in &entries {
            index.insert((device.as_str(), *key), ()).map_err(db)?;
        }
    }
    tx.delete_table(EVENTS_V3).map_err(db)?;
    tx.delete_table(EVENTS_BY_DEVICE_V3).map_err(db)?;
    let mut meta = tx.open_table(META).map_err(db)?;
    let count = meta.get(EVENT_COUNT).map_err(db)?.map_or(0, |v| v.value());
    meta.insert(EVENT_COUNT, count + moved).map_err(db)?;
    let indexed = meta.get(EVENTS_INDEXED).map_err(db)?.map_or(0, |v| v.value());
    meta.insert(EVENTS_INDEXED, indexed.max(last)).map_err(db)?;
    tracing::info!("stored {moved} events in chunks of up to {} (one row per event before)", event::MAX_CHUNK_EVENTS);
    Ok(())
}

fn old_device(log: Log, json: &[u8]) -> String {
    match log {
        Log::Events => from_bytes::<EventRecord>(json).map(|e| e.device_id).unwrap_or_default(),
        Log::Connections => from_bytes::<ConnectionRecord>(json).ok().and_then(|e| e.device_id).unwrap_or_default(),
        Log::Feedback => String::new(),
    }
}

impl Store {
    /// Opens (or creates) the database at `path` (the file 0600) and starts the writer thread. Errors:
    /// [`StoreError::InUse`] when another process has it open, [`StoreError::Unavailable`] for I/O failures, and
    /// [`StoreError::Db`] for the rest (a damaged file redb cannot repair).
    pub fn open(path: &Path, retention: Retention) -> Result<Store, StoreError> {
        Self::open_with_queue(path, retention, MAX_QUEUED)
    }

    fn open_with_queue(path: &Path, retention: Retention, max_queued: usize) -> Result<Store, StoreError> {
        let database = open_db(path)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(database))),
            unavailable: watch::Sender::new(None),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let w = Writer {
            shared: shared.clone(),
            retention,
            unindexed: 1,
            last_index: Instant::now(),
            retry_at: None,
            retry_delay: RETRY_FIRST,
        };
        let thread = std::thread::Builder::new()
            .name("hubsim-store".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Db(e.to_string()))?;
        let permits = Arc::new(tokio::sync::Semaphore::new(max_queued));
        Ok(Store { shared, writer: Arc::new(WriterHandle { tx: Some(tx), permits, thread: Some(thread) }) })
    }

    /// Why new work is refused, while the database cannot be written.
    pub fn unavailable(&self) -> Option<String> {
        self.shared.unavailable.borrow().clone()
    }

    /// Follows the availability state (`Some(reason)` while new work is refused).
    pub fn availability(&self) -> watch::Receiver<Option<String>> {
        self.shared.unavailable.subscribe()
    }

    /// Runs `f` in a write transaction, returning after the commit is durable. An error from `f` undoes `f`'s
    /// changes and is returned to this caller only.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let stopped = || StoreError::Unavailable("the writer thread stopped".into());
        let _permit = self.writer.permits.acquire().await.map_err(|_| stopped())?;
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |t| f(t).map(|r| Box::new(r) as Box<dyn Any + Send>));
        let sender = self.writer.tx.as_ref().ok_or_else(stopped)?;
        sender.send(Job::Op(op, tx)).map_err(|_| stopped())?;
        let any = rx.await.map_err(|_| stopped())??;
        any.downcast::<R>().map(|b| *b).map_err(|_| StoreError::Db("internal: result type mismatch".into()))
    }

    /// Appends a telemetry event and returns its sequence number once the commit is durable.
    pub async fn append_event(&self, e: NewEvent) -> Result<u64, StoreError> {
        let stopped = || StoreError::Unavailable("the writer thread stopped".into());
        let _permit = self.writer.permits.acquire().await.map_err(|_| stopped())?;
        let (tx, rx) = oneshot::channel();
        let sender = self.writer.tx.as_ref().ok_or_else(stopped)?;
        sender.send(Job::Event(e, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    // ---- reads: on the blocking pool, never on an async worker -----------------------------------------------

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let database = self.shared.db()?;
        tokio::task::spawn_blocking(move || {
            let r = database.begin_read().map_err(db)?;
            f(&r)
        })
        .await
        .map_err(|e| StoreError::Db(format!("a read task failed: {e}")))?
    }

    async fn read_json<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = key.to_owned();
        self.read(move |r| {
            let t = r.open_table(table).map_err(db)?;
            let v = t.get(key.as_str()).map_err(db)?;
            v.map(|v| from_bytes(v.value())).transpose()
        })
        .await
    }

    pub async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.read_json(DEVICES, id).await
    }

    pub async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.read(|r| {
            let t = r.open_table(DEVICES).map_err(db)?;
            t.iter().map_err(db)?.map(|e| e.map_err(db).and_then(|(_, v)| from_bytes(v.value()))).collect()
        })
        .await
    }

    /// Every device with the length of its C2D queue, the messages whose expiry passed left out (one read
    /// transaction).
    pub async fn devices_with_queues(&self) -> Result<Vec<(Device, usize)>, StoreError> {
        self.read(|r| {
            let t = r.open_table(DEVICES).map_err(db)?;
            let q = r.open_table(C2D).map_err(db)?;
            let now = unix_ms();
            let mut out = Vec::new();
            for e in t.iter().map_err(db)? {
                let (_, v) = e.map_err(db)?;
                let d: Device = from_bytes(v.value())?;
                let n = live_c2d_count(&q, &d.device_id, now)?;
                out.push((d, n));
            }
            Ok(out)
        })
        .await
    }

    /// Reads the identities (devices and modules) after the id `after` (all of them with `None`), in id order,
    /// in one read transaction on the blocking pool, handing each to `visit` until it answers
    /// [`ControlFlow::Break`] or an error (which ends the scan and is returned). One identity at a time is held,
    /// its twin and queue length read only if `visit` asks ([`RegistryEntry`]), so a scan's memory does not grow
    /// with the registry. `visit` keeps what it needs in `state`, which is returned.
    pub async fn scan_registry<S, F>(&self, after: Option<String>, mut state: S, mut visit: F) -> Result<S, StoreError>
    where
        S: Send + 'static,
        F: FnMut(&mut S, RegistryEntry<'_>) -> Result<ControlFlow<()>, StoreError> + Send + 'static,
    {
        self.read(move |r| {
            let devices = r.open_table(DEVICES).map_err(db)?;
            let twins = r.open_table(TWINS).map_err(db)?;
            let c2d = r.open_table(C2D).map_err(db)?;
            let range = match after.as_deref() {
                Some(a) => devices.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                None => devices.range::<&str>(..),
            };
            for e in range.map_err(db)? {
                let (_, v) = e.map_err(db)?;
                let entry = RegistryEntry { device: from_bytes(v.value())?, twins: &twins, c2d: &c2d };
                if visit(&mut state, entry)?.is_break() {
                    break;
                }
            }
            Ok(state)
        })
        .await
    }

    pub async fn twin(&self, id: &str) -> Result<Twin, StoreError> {
        Ok(self.read_json(TWINS, id).await?.unwrap_or_default())
    }

    pub async fn session(&self, id: &str) -> Result<Option<Vec<(String, u8)>>, StoreError> {
        self.read_json(SESSIONS, id).await
    }

    /// The device's C2D queue in order, without the messages whose expiry passed: IoT Hub dead-letters a message
    /// when it expires (C2D doc, "Message expiration"), and the next write that looks at the queue, or the hub's
    /// sweep, removes them with their feedback.
    pub async fn c2d_queue(&self, device: &str) -> Result<Vec<C2dMessage>, StoreError> {
        let device = device.to_owned();
        self.read(move |r| {
            let t = r.open_table(C2D).map_err(db)?;
            let range = t.range((device.as_str(), 0u64)..=(device.as_str(), u64::MAX)).map_err(db)?;
            let now = unix_ms();
            let mut out = Vec::new();
            for e in range {
                let m: C2dMessage = from_bytes(e.map_err(db)?.1.value())?;
                if m.expiry_ms > now {
                    out.push(m);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Records of a row log (connections, feedback) after `after`, at most `limit`; with `device`, through the index
    /// (O(results)). Events are stored in chunks and read by [`Store::events`].
    async fn page<T: Send + 'static>(
        &self,
        log: Log,
        after: u64,
        limit: usize,
        device: Option<&str>,
        decode: fn(u64, &str, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let device = device.map(str::to_owned);
        self.read(move |r| {
            let t = r.open_table(log.table()).map_err(db)?;
            let mut out = Vec::new();
            let from = after.saturating_add(1);
            match (device, log.index()) {
                // These logs are indexed as they are written.
                (Some(d), Some(index)) => {
                    let i = r.open_table(index).map_err(db)?;
                    for e in i.range((d.as_str(), from)..=(d.as_str(), u64::MAX)).map_err(db)?.take(limit) {
                        let (k, _) = e.map_err(db)?;
                        let seq = k.value().1;
                        if let Some(v) = t.get(seq).map_err(db)? {
                            let (_, device, record) = v.value();
                            out.push(decode(seq, device, record)?);
                        }
                    }
                }
                _ => {
                    for e in t.range(from..).map_err(db)?.take(limit) {
                        let (k, v) = e.map_err(db)?;
                        let (_, device, record) = v.value();
                        out.push(decode(k.value(), device, record)?);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Events after `after`, at most `limit`; with `device`, through the per-chunk index (the chunks holding that
    /// device's events, then the not yet indexed chunks after the index's mark).
    pub async fn events(&self, after: u64, limit: usize, device: Option<&str>) -> Result<Vec<EventRecord>, StoreError> {
        let device = device.map(str::to_owned);
        self.read(move |r| {
            let t = r.open_table(EVENTS).map_err(db)?;
            let from = after.saturating_add(1);
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            // Adds the chunk's events from `from` on (of `device`); true once `limit` are in.
            let take = |chunk: &[u8], out: &mut Vec<EventRecord>| -> Result<bool, StoreError> {
                for e in event::chunk_events(chunk) {
                    let e = e?;
                    if e.seq < from || device.as_deref().is_some_and(|d| d != e.device) {
                        continue;
                    }
                    out.push(event::decode(e.seq, e.device, e.record)?);
                    if out.len() >= limit {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            // The chunk holding `from` starts at or before it.
            let start = match t.range(..=from).map_err(db)?.next_back() {
                Some(e) => e.map_err(db)?.0.value(),
                None => from,
            };
            let mut scan_from = start;
            if let Some(d) = device.as_deref() {
                let indexed = r.open_table(META).map_err(db)?.get(EVENTS_INDEXED).map_err(db)?.map_or(0, |v| v.value());
                if start <= indexed {
                    let i = r.open_table(EVENTS_BY_DEVICE).map_err(db)?;
                    for e in i.range((d, start)..=(d, indexed)).map_err(db)? {
                        let key = e.map_err(db)?.0.value().1;
                        if let Some(v) = t.get(key).map_err(db)? {
                            if take(v.value(), &mut out)? {
                                return Ok(out);
                            }
                        }
                    }
                    scan_from = indexed + 1;
                }
            }
            for e in t.range(scan_from..).map_err(db)? {
                let (_, v) = e.map_err(db)?;
                if take(v.value(), &mut out)? {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn connections(
        &self,
        after: u64,
        limit: usize,
        device: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.page(Log::Connections, after, limit, device, |_, _, b| from_bytes(b)).await
    }

    pub async fn feedback(&self, after: u64, limit: usize) -> Result<Vec<FeedbackRecord>, StoreError> {
        self.page(Log::Feedback, after, limit, None, |_, _, b| from_bytes(b)).await
    }

    pub async fn event_count(&self) -> Result<u64, StoreError> {
        self.read(|r| Ok(r.open_table(META).map_err(db)?.get(EVENT_COUNT).map_err(db)?.map_or(0, |v| v.value()))).await
    }

    /// Records in the connection log (for tests and statistics).
    pub async fn connection_count(&self) -> Result<u64, StoreError> {
        self.read(|r| r.open_table(CONNLOG).map_err(db)?.len().map_err(db)).await
    }
}

/// One identity as [`Store::scan_registry`] reads it: the record, with its twin and C2D queue read only when
/// asked (a scan that decides on the record alone never decodes a twin).
pub struct RegistryEntry<'a> {
    pub device: Device,
    twins: &'a redb::ReadOnlyTable<&'static str, &'static [u8]>,
    c2d: &'a redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
}

impl RegistryEntry<'_> {
    /// The identity's twin (the default twin when none is stored).
    pub fn twin(&self) -> Result<Twin, StoreError> {
        let v = self.twins.get(self.device.device_id.as_str()).map_err(db)?;
        Ok(v.map(|v| from_bytes(v.value())).transpose()?.unwrap_or_default())
    }

    /// The twin's versions and model id, the rest of the stored twin skipped (not built).
    pub fn twin_head(&self) -> Result<TwinHead, StoreError> {
        let v = self.twins.get(self.device.device_id.as_str()).map_err(db)?;
        Ok(match v {
            Some(v) => from_bytes(v.value())?,
            None => Twin::default().head(),
        })
    }

    /// One property tree of the twin as stored, the others and the metadata trees skipped (not built): a twin of
    /// 32 KB of small desired properties holds some 300 KB of metadata, which a query's WHERE clause never reads.
    pub fn twin_tree(&self, which: TwinTree) -> Result<serde_json::Value, StoreError> {
        use serde_json::value::RawValue;
        #[derive(serde::Deserialize)]
        struct Trees<'a> {
            #[serde(borrow)]
            tags: Option<&'a RawValue>,
            #[serde(borrow)]
            desired: Option<&'a RawValue>,
            #[serde(borrow)]
            reported: Option<&'a RawValue>,
        }
        let Some(v) = self.twins.get(self.device.device_id.as_str()).map_err(db)? else {
            return Ok(Twin::default().tree(which).clone());
        };
        let trees: Trees<'_> = serde_json::from_slice(v.value()).map_err(|e| StoreError::Record(e.to_string()))?;
        let raw = match which {
            TwinTree::Tags => trees.tags,
            TwinTree::Desired => trees.desired,
            TwinTree::Reported => trees.reported,
        };
        match raw {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| StoreError::Record(e.to_string())),
            // Only tags may be missing (a twin stored before them): the whole decode fails as it would.
            None if which == TwinTree::Tags => Ok(Twin::default().tags),
            None => self.twin().map(|t| t.tree(which).clone()),
        }
    }

    /// The identity's C2D messages whose expiry has not passed at `now_ms` (Unix ms).
    pub fn c2d_count(&self, now_ms: u64) -> Result<usize, StoreError> {
        live_c2d_count(self.c2d, &self.device.device_id, now_ms)
    }
}

/// The C2D messages of `device` whose expiry is after `now_ms`; only each message's expiry is decoded.
fn live_c2d_count(
    t: &redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    device: &str,
    now_ms: u64,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for e in t.range((device, 0u64)..=(device, u64::MAX)).map_err(db)? {
        if expiry_of(e.map_err(db)?.1.value())? > now_ms {
            n += 1;
        }
    }
    Ok(n)
}

/// A stored C2D message's expiry (Unix ms), without decoding its body and properties.
fn expiry_of(record: &[u8]) -> Result<u64, StoreError> {
    #[derive(serde::Deserialize)]
    struct Expiry {
        #[serde(rename = "expiryMs")]
        expiry_ms: u64,
    }
    from_bytes::<Expiry>(record).map(|e| e.expiry_ms)
}

impl Tx<'_> {
    fn put<T: Serialize>(
        &mut self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        let b = to_bytes(v)?;
        let mut t = self.tx.open_table(table).map_err(db)?;
        let old = t.insert(key, b.as_slice()).map_err(db)?.map(|g| g.value().to_vec());
        self.undo.push(Undo::Str(table, key.to_owned(), old));
        Ok(())
    }
    fn get<T: DeserializeOwned>(
        &mut self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let t = self.tx.open_table(table).map_err(db)?;
        let v = t.get(key).map_err(db)?;
        v.map(|v| from_bytes(v.value())).transpose()
    }
    fn del(
        &mut self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(table).map_err(db)?;
        let old = t.remove(key).map_err(db)?.map(|g| g.value().to_vec());
        if old.is_some() {
            self.undo.push(Undo::Str(table, key.to_owned(), old));
        }
        Ok(())
    }

    /// Next value of a named sequence (starting at 1).
    pub fn next_seq(&mut self, name: &str) -> Result<u64, StoreError> {
        let mut t = self.tx.open_table(META).map_err(db)?;
        let old = t.get(name).map_err(db)?.map(|v| v.value());
        let n = old.unwrap_or(0) + 1;
        t.insert(name, n).map_err(db)?;
        self.undo.push(Undo::Meta(name.to_owned(), old));
        Ok(n)
    }

    pub fn device(&mut self, id: &str) -> Result<Option<Device>, StoreError> {
        self.get(DEVICES, id)
    }
    pub fn put_device(&mut self, d: &Device) -> Result<(), StoreError> {
        self.put(DEVICES, &d.device_id, d)
    }
    /// Removes a device with its twin, session and queue.
    pub fn delete_device(&mut self, id: &str) -> Result<bool, StoreError> {
        let existed = self.device(id)?.is_some();
        self.del(DEVICES, id)?;
        self.del(TWINS, id)?;
        self.del(SESSIONS, id)?;
        let seqs: Vec<u64> = {
            let t = self.tx.open_table(C2D).map_err(db)?;
            let range = t.range((id, 0u64)..=(id, u64::MAX)).map_err(db)?;
            range.map(|e| e.map(|(k, _)| k.value().1)).collect::<Result<_, _>>().map_err(db)?
        };
        for s in seqs {
            self.remove_c2d_raw(id, s)?;
        }
        Ok(existed)
    }
    /// The twin; a stored twin that does not decode is an error of this caller only.
    pub fn twin(&mut self, id: &str) -> Result<Twin, StoreError> {
        Ok(self.get(TWINS, id)?.unwrap_or_default())
    }
    pub fn put_twin(&mut self, id: &str, t: &Twin) -> Result<(), StoreError> {
        self.put(TWINS, id, t)
    }
    pub fn put_session(&mut self, id: &str, subs: &[(String, u8)]) -> Result<(), StoreError> {
        self.put(SESSIONS, id, &subs)
    }
    pub fn delete_session(&mut self, id: &str) -> Result<(), StoreError> {
        self.del(SESSIONS, id)
    }
    pub fn session(&mut self, id: &str) -> Result<Option<Vec<(String, u8)>>, StoreError> {
        self.get(SESSIONS, id)
    }

    pub fn c2d_queue(&mut self, device: &str) -> Result<Vec<C2dMessage>, StoreError> {
        let t = self.tx.open_table(C2D).map_err(db)?;
        let range = t.range((device, 0u64)..=(device, u64::MAX)).map_err(db)?;
        range.map(|e| e.map_err(db).and_then(|(_, v)| from_bytes(v.value()))).collect()
    }
    pub fn all_c2d(&mut self) -> Result<Vec<C2dMessage>, StoreError> {
        let t = self.tx.open_table(C2D).map_err(db)?;
        let it = t.iter().map_err(db)?;
        it.map(|e| e.map_err(db).and_then(|(_, v)| from_bytes(v.value()))).collect()
    }
    /// The key and expiry (Unix ms) of at most `limit` C2D messages after the key `after` (from the first with
    /// `None`), in key order, for the hub's sweep of expired messages; only the expiry of each is decoded.
    pub fn c2d_expiries(
        &mut self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let t = self.tx.open_table(C2D).map_err(db)?;
        let range = match after {
            Some(a) => t.range::<(&str, u64)>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => t.range::<(&str, u64)>(..),
        };
        let mut out = Vec::new();
        for e in range.map_err(db)?.take(limit) {
            let (k, v) = e.map_err(db)?;
            let (device, seq) = k.value();
            out.push((device.to_owned(), seq, expiry_of(v.value())?));
        }
        Ok(out)
    }
    pub fn put_c2d(&mut self, m: &C2dMessage) -> Result<(), StoreError> {
        let b = to_bytes(m)?;
        let mut t = self.tx.open_table(C2D).map_err(db)?;
        let old = t.insert((m.device_id.as_str(), m.seq), b.as_slice()).map_err(db)?.map(|g| g.value().to_vec());
        self.undo.push(Undo::C2d(m.device_id.clone(), m.seq, old));
        Ok(())
    }
    fn remove_c2d_raw(&mut self, device: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut t = self.tx.open_table(C2D).map_err(db)?;
        let old = t.remove((device, seq)).map_err(db)?.map(|g| g.value().to_vec());
        if old.is_some() {
            self.undo.push(Undo::C2d(device.to_owned(), seq, old.clone()));
        }
        Ok(old)
    }
    pub fn remove_c2d(&mut self, device: &str, seq: u64) -> Result<Option<C2dMessage>, StoreError> {
        self.remove_c2d_raw(device, seq)?.map(|v| from_bytes(&v)).transpose()
    }
    pub fn get_c2d(&mut self, device: &str, seq: u64) -> Result<Option<C2dMessage>, StoreError> {
        let t = self.tx.open_table(C2D).map_err(db)?;
        let v = t.get((device, seq)).map_err(db)?;
        v.map(|v| from_bytes(v.value())).transpose()
    }

    /// Adds `by` to a META counter, recording the old value for the undo log.
    fn count(&mut self, name: &str, by: u64) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(META).map_err(db)?;
        let old = t.get(name).map_err(db)?.map(|v| v.value());
        t.insert(name, old.unwrap_or(0) + by).map_err(db)?;
        self.undo.push(Undo::Meta(name.to_owned(), old));
        Ok(())
    }

    fn append(&mut self, log: Log, seq: u64, device: &str, json: &[u8]) -> Result<(), StoreError> {
        let now = unix_ms();
        self.tx.open_table(log.table()).map_err(db)?.insert(seq, (now, device, json)).map_err(db)?;
        if let (Some(i), false) = (log.index(), device.is_empty()) {
            self.tx.open_table(i).map_err(db)?.insert((device, seq), ()).map_err(db)?;
        }
        self.undo.push(Undo::Appended(log, seq, device.to_owned()));
        self.appended[log as usize] += 1;
        Ok(())
    }
    /// Appends an event as a chunk of its own (telemetry takes [`Store::append_event`], which chunks a group).
    pub fn append_event(&mut self, e: &EventRecord) -> Result<(), StoreError> {
        let record = event::encode(e);
        self.count(EVENT_BYTES, record.len() as u64)?;
        self.count(EVENT_COUNT, 1)?;
        let mut chunk = event::ChunkBuilder::default();
        chunk.push(e.seq, unix_ms(), &e.device_id, &record);
        self.tx.open_table(EVENTS).map_err(db)?.insert(e.seq, chunk.take().as_slice()).map_err(db)?;
        self.undo.push(Undo::EventChunk(e.seq));
        self.appended[Log::Events as usize] += 1;
        Ok(())
    }
    pub fn append_connection(&mut self, e: &ConnectionRecord) -> Result<(), StoreError> {
        let b = to_bytes(e)?;
        self.append(Log::Connections, e.seq, e.device_id.as_deref().unwrap_or(""), &b)
    }
    pub fn append_feedback(&mut self, e: &FeedbackRecord) -> Result<(), StoreError> {
        let b = to_bytes(e)?;
        self.append(Log::Feedback, e.seq, "", &b)
    }

    /// Undoes this transaction's recorded changes, newest first.
    fn rollback(&mut self) -> Result<(), StoreError> {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Str(table, key, old) => {
                    let mut t = self.tx.open_table(table).map_err(db)?;
                    match old {
                        Some(v) => t.insert(key.as_str(), v.as_slice()).map(drop),
                        None => t.remove(key.as_str()).map(drop),
                    }
                    .map_err(db)?;
                }
                Undo::C2d(device, seq, old) => {
                    let mut t = self.tx.open_table(C2D).map_err(db)?;
                    match old {
                        Some(v) => t.insert((device.as_str(), seq), v.as_slice()).map(drop),
                        None => t.remove((device.as_str(), seq)).map(drop),
                    }
                    .map_err(db)?;
                }
                Undo::Meta(name, old) => {
                    let mut t = self.tx.open_table(META).map_err(db)?;
                    match old {
                        Some(v) => t.insert(name.as_str(), v).map(drop),
                        None => t.remove(name.as_str()).map(drop),
                    }
                    .map_err(db)?;
                }
                Undo::EventChunk(seq) => {
                    self.tx.open_table(EVENTS).map_err(db)?.remove(seq).map_err(db)?;
                }
                Undo::Appended(log, seq, device) => {
                    self.tx.open_table(log.table()).map_err(db)?.remove(seq).map_err(db)?;
                    if let (Some(i), false) = (log.index(), device.is_empty()) {
                        self.tx.open_table(i).map_err(db)?.remove((device.as_str(), seq)).map_err(db)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// META key: the bytes of the stored event records (for [`Retention::max_event_bytes`]; a database written before
/// it existed counts from zero, so it only undercounts).
const EVENT_BYTES: &str = "events.bytes";
/// META key: the number of stored events (a chunk holds several, so the table's length is not it).
const EVENT_COUNT: &str = "events.count";

/// Appends `events` in order (one opening of each table, one update of the counters); returns the first one's
/// sequence number. An error is the database's, and fails the group. The per-device index follows in
/// [`index_events`].
fn append_events(
    tx: &WriteTransaction,
    events: &[(NewEvent, oneshot::Sender<Result<u64, StoreError>>)],
) -> Result<u64, StoreError> {
    let mut meta = tx.open_table(META).map_err(db)?;
    let first = meta.get("events").map_err(db)?.map(|v| v.value()).unwrap_or(0) + 1;
    let mut bytes = meta.get(EVENT_BYTES).map_err(db)?.map(|v| v.value()).unwrap_or(0);
    let count = meta.get(EVENT_COUNT).map_err(db)?.map_or(0, |v| v.value());
    let mut table = tx.open_table(EVENTS).map_err(db)?;
    let mut chunk = event::ChunkBuilder::default();
    let mut key = first;
    for (i, (e, _)) in events.iter().enumerate() {
        let seq = first + i as u64;
        if chunk.is_full_for(e.record.len()) {
            table.insert(key, chunk.take().as_slice()).map_err(db)?;
        }
        if chunk.is_empty() {
            key = seq;
        }
        chunk.push(seq, e.time_ms, &e.device, &e.record);
        bytes += e.record.len() as u64;
    }
    if !chunk.is_empty() {
        table.insert(key, chunk.take().as_slice()).map_err(db)?;
    }
    meta.insert("events", first + events.len() as u64 - 1).map_err(db)?;
    meta.insert(EVENT_BYTES, bytes).map_err(db)?;
    meta.insert(EVENT_COUNT, count + events.len() as u64).map_err(db)?;
    Ok(first)
}

/// Adds the events after the indexed mark (at most [`INDEX_STEP`] of them) to the per-device index; returns how
/// many events are still not indexed. Run inside a group commit once [`INDEX_LAG`] events wait, and by the idle
/// writer after [`INDEX_EVERY`]: each leaf of the index is then written once per step, not once per group commit
/// (with 1 000 devices a commit touched up to 1 000 leaves), and a step is small enough not to hold up the
/// commit it rides in. Nothing is lost in a crash: the mark is committed with the entries, and reads look at the
/// events after the mark themselves.
fn index_events(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = tx.open_table(META).map_err(db)?;
    let indexed = meta.get(EVENTS_INDEXED).map_err(db)?.map(|v| v.value()).unwrap_or(0);
    let last = meta.get("events").map_err(db)?.map(|v| v.value()).unwrap_or(0);
    if last <= indexed {
        return Ok(0);
    }
    // Whole chunks, about INDEX_STEP events: one entry per device and chunk.
    let table = tx.open_table(EVENTS).map_err(db)?;
    let mut entries = Vec::new();
    let (mut upto, mut n) = (indexed, 0u64);
    for e in table.range(indexed + 1..).map_err(db)? {
        let (k, v) = e.map_err(db)?;
        let chunk = v.value();
        let mut devices: Vec<&str> = Vec::new();
        upto = upto.max(k.value());
        for ev in event::chunk_events(chunk) {
            // A damaged chunk is its readers' error, not every commit's: what can be read of it is indexed.
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(chunk = k.value(), "the per-device index skips a damaged chunk of events: {e}");
                    break;
                }
            };
            upto = upto.max(ev.seq);
            n += 1;
            if !ev.device.is_empty() {
                devices.push(ev.device);
            }
        }
        devices.sort_unstable();
        devices.dedup();
        entries.extend(devices.drain(..).map(|d| (d.to_owned(), k.value())));
        if n >= INDEX_STEP {
            break;
        }
    }
    // Every chunk after the mark was read: the mark moves to the last sequence number handed out.
    let upto = if n < INDEX_STEP { last.max(upto) } else { upto };
    // In key order, so consecutive inserts land in the same leaf.
    entries.sort_unstable();
    let mut index = tx.open_table(EVENTS_BY_DEVICE).map_err(db)?;
    for (device, seq) in &entries {
        index.insert((device.as_str(), *seq), ()).map_err(db)?;
    }
    meta.insert(EVENTS_INDEXED, upto).map_err(db)?;
    Ok(last.saturating_sub(upto))
}

/// META key: the highest event sequence number whose per-device index entry is written.
const EVENTS_INDEXED: &str = "events.indexed";
/// Events waiting for the per-device index before a group commit indexes them.
pub const INDEX_LAG: u64 = 2048;
/// Longest wait before events are indexed.
pub const INDEX_EVERY: Duration = Duration::from_millis(500);
/// Most events indexed in one transaction (a backlog, e.g. after a crash, is indexed in steps).
const INDEX_STEP: u64 = 2 * INDEX_LAG;

/// Deletes the oldest chunks of events while the events are over their cap in count or bytes, or a chunk's newest
/// event is past retention, until about `budget` events are deleted. A chunk goes whole: the count may end up to
/// one chunk under the cap, and an event past retention may stay until its chunk's newest one is.
fn enforce_event_retention(tx: &WriteTransaction, budget: u64, retention: &Retention) -> Result<u64, StoreError> {
    let cutoff = unix_ms().saturating_sub(retention.max_age.as_millis() as u64);
    let mut meta = tx.open_table(META).map_err(db)?;
    let mut count = meta.get(EVENT_COUNT).map_err(db)?.map_or(0, |v| v.value());
    let mut bytes = meta.get(EVENT_BYTES).map_err(db)?.map_or(0, |v| v.value());
    let mut t = tx.open_table(EVENTS).map_err(db)?;
    let mut index = tx.open_table(EVENTS_BY_DEVICE).map_err(db)?;
    let mut deleted = 0;
    while deleted < budget {
        let (key, n, size, devices) = match t.first().map_err(db)? {
            Some((k, v)) => {
                // A chunk whose header is damaged (its age unknown) goes at once: kept, it would stop retention, and
                // every commit with it. Events cut short are not counted off (the counters may then overcount).
                let header = event::chunk_header(v.value());
                let damaged = header.is_err();
                let (n, newest) = header.unwrap_or((0, 0));
                if damaged {
                    tracing::warn!(chunk = k.value(), "retention deletes a damaged chunk of events");
                } else if count <= retention.max_events && bytes <= retention.max_event_bytes && newest >= cutoff {
                    break;
                }
                let (mut size, mut devices) = (0u64, Vec::new());
                for e in event::chunk_events(v.value()).map_while(Result::ok) {
                    size += e.record.len() as u64;
                    if !e.device.is_empty() {
                        devices.push(e.device.to_owned());
                    }
                }
                devices.sort_unstable();
                devices.dedup();
                (k.value(), u64::from(n), size, devices)
            }
            None => break,
        };
        t.remove(key).map_err(db)?;
        for d in &devices {
            index.remove((d.as_str(), key)).map_err(db)?;
        }
        count = count.saturating_sub(n);
        bytes = bytes.saturating_sub(size);
        deleted += n;
    }
    if deleted > 0 {
        meta.insert(EVENT_COUNT, count).map_err(db)?;
        meta.insert(EVENT_BYTES, bytes).map_err(db)?;
    }
    Ok(deleted)
}

/// Deletes at most `budget` of the oldest records of `log` that are past retention or over the caps.
fn enforce_retention(tx: &WriteTransaction, log: Log, budget: u64, retention: &Retention) -> Result<u64, StoreError> {
    if log == Log::Events {
        return enforce_event_retention(tx, budget, retention);
    }
    let cutoff = unix_ms().saturating_sub(retention.max_age.as_millis() as u64);
    let max = log.max(retention);
    let mut t = tx.open_table(log.table()).map_err(db)?;
    let len = t.len().map_err(db)?;
    let mut deleted = 0;
    while deleted < budget {
        let (seq, time, device) = match t.first().map_err(db)? {
            Some((k, v)) => {
                let (time, device, _) = v.value();
                (k.value(), time, device.to_owned())
            }
            None => break,
        };
        if len - deleted <= max && time >= cutoff {
            break;
        }
        t.remove(seq).map_err(db)?;
        if let (Some(i), false) = (log.index(), device.is_empty()) {
            tx.open_table(i).map_err(db)?.remove((device.as_str(), seq)).map_err(db)?;
        }
        deleted += 1;
    }
    Ok(deleted)
}

/// Free bytes on the file system holding `path` (`None` when unknown).
fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let s = rustix::fs::statvfs(dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The writer thread.
struct Writer {
    shared: Arc<Shared>,
    retention: Retention,
    /// Events stored and not yet in the per-device index (a hint; the mark in META is the truth).
    unindexed: u64,
    last_index: Instant,
    /// When unavailable: when to try to recover next.
    retry_at: Option<Instant>,
    retry_delay: Duration,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let wait = match self.retry_at {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None if self.unindexed > 0 => INDEX_EVERY.saturating_sub(self.last_index.elapsed()),
                None => HOUSEKEEPING,
            };
            let first = match rx.recv_timeout(wait) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if self.retry_at.is_some_and(|at| at <= Instant::now()) {
                self.try_recover();
            }
            let Some(first) = first else {
                if self.retry_at.is_none() {
                    if self.unindexed > 0 {
                        self.index();
                    } else {
                        self.housekeeping();
                    }
                }
                continue;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if self.retry_at.is_some() {
                let e = StoreError::Unavailable(self.shared.reason());
                for job in batch {
                    job.fail(&e);
                }
                continue;
            }
            self.commit(batch);
        }
    }

    /// One step of the per-device index ([`index_events`]).
    fn index(&mut self) {
        self.last_index = Instant::now();
        let Ok(database) = self.shared.db() else { return };
        let r = database.begin_write().map_err(db).and_then(|tx| match index_events(&tx) {
            Ok(left) => tx.commit().map_err(db).map(|()| left),
            Err(e) => {
                let _ = tx.abort();
                Err(e)
            }
        });
        match r {
            Ok(left) => self.unindexed = left,
            Err(e) => self.failed(&e),
        }
    }

    /// Applies a batch in one transaction and answers every caller after the commit.
    fn commit(&mut self, batch: Vec<Job>) {
        let fail_all = |batch: Vec<Job>, e: &StoreError| {
            for job in batch {
                job.fail(e);
            }
        };
        let database = match self.shared.db() {
            Ok(d) => d,
            Err(e) => return fail_all(batch, &e),
        };
        let tx = match database.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                let e = db(e);
                self.failed(&e);
                return fail_all(batch, &e);
            }
        };
        let mut results: Vec<Answer> = Vec::with_capacity(batch.len());
        let mut appended = [0u64; 3];
        let mut fatal = None;
        // Consecutive events are appended together, in order with the operations around them.
        let mut events: Vec<(NewEvent, oneshot::Sender<Result<u64, StoreError>>)> = Vec::new();
        let flush = |events: &mut Vec<(NewEvent, oneshot::Sender<Result<u64, StoreError>>)>,
                     results: &mut Vec<Answer>,
                     fatal: &mut Option<StoreError>,
                     appended: &mut [u64; 3]| {
            if events.is_empty() {
                return;
            }
            if fatal.is_none() {
                match append_events(&tx, events) {
                    Ok(first) => {
                        appended[Log::Events as usize] += events.len() as u64;
                        for (i, (_, reply)) in events.drain(..).enumerate() {
                            results.push(Answer::Event(reply, first + i as u64));
                        }
                        return;
                    }
                    Err(e) => *fatal = Some(e),
                }
            }
            for (_, reply) in events.drain(..) {
                let _ = reply.send(Err(StoreError::Db("aborted with its group".into())));
            }
        };
        for job in batch {
            let (op, reply) = match job {
                Job::Event(e, reply) => {
                    events.push((e, reply));
                    continue;
                }
                Job::Op(op, reply) => (op, reply),
            };
            flush(&mut events, &mut results, &mut fatal, &mut appended);
            if fatal.is_some() {
                results.push(Answer::Op(reply, Err(StoreError::Db("aborted with its group".into()))));
                continue;
            }
            let mut t = Tx { tx: &tx, undo: Vec::new(), appended: [0; 3] };
            let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&mut t))) {
                Ok(r) => r,
                Err(_) => Err(StoreError::Db("internal: a store operation panicked".into())),
            };
            match r {
                Ok(v) => {
                    for (a, n) in appended.iter_mut().zip(t.appended) {
                        *a += n;
                    }
                    results.push(Answer::Op(reply, Ok(v)));
                }
                // This caller's error: undo its changes; the others go on.
                Err(e) => {
                    if let Err(undo) = t.rollback() {
                        fatal = Some(undo);
                    }
                    results.push(Answer::Op(reply, Err(e)));
                }
            }
        }
        flush(&mut events, &mut results, &mut fatal, &mut appended);
        // The per-device index, in a bounded step inside this commit once enough events wait for it.
        let mut left = None;
        if fatal.is_none() && self.unindexed + appended[Log::Events as usize] >= INDEX_LAG {
            match index_events(&tx) {
                Ok(n) => left = Some(n),
                Err(e) => fatal = Some(e),
            }
        }
        if fatal.is_none() {
            for log in Log::ALL {
                let budget = RETENTION_STEP + 2 * appended[log as usize];
                if let Err(e) = enforce_retention(&tx, log, budget, &self.retention) {
                    fatal = Some(e);
                    break;
                }
            }
        }
        // A database failure fails the whole group, so nobody is told a write is durable when it is not.
        let outcome = match fatal {
            Some(e) => {
                let _ = tx.abort();
                Err(e)
            }
            None => tx.commit().map_err(db),
        };
        match (&outcome, left) {
            (Ok(()), Some(left)) => {
                self.unindexed = left;
                self.last_index = Instant::now();
            }
            (Ok(()), None) => self.unindexed += appended[Log::Events as usize],
            (Err(e), _) => self.failed(e),
        }
        for answer in results {
            match (answer, &outcome) {
                (Answer::Op(reply, r), Ok(())) => drop(reply.send(r)),
                (Answer::Event(reply, seq), Ok(())) => drop(reply.send(Ok(seq))),
                (Answer::Op(reply, _), Err(e)) => drop(reply.send(Err(e.clone()))),
                (Answer::Event(reply, _), Err(e)) => drop(reply.send(Err(e.clone()))),
            }
        }
    }

    /// Retention while idle: one bounded step, committed only when it deleted something.
    fn housekeeping(&mut self) {
        let Ok(database) = self.shared.db() else { return };
        let Ok(tx) = database.begin_write() else { return };
        let mut deleted = 0;
        for log in Log::ALL {
            match enforce_retention(&tx, log, RETENTION_STEP, &self.retention) {
                Ok(n) => deleted += n,
                Err(e) => {
                    let _ = tx.abort();
                    return self.failed(&e);
                }
            }
        }
        let r = if deleted == 0 { tx.abort().map_err(db) } else { tx.commit().map_err(db) };
        if let Err(e) = r {
            self.failed(&e);
        }
    }

    /// After a failure: an I/O failure makes the store unavailable (logged once) until recovery.
    fn failed(&mut self, e: &StoreError) {
        let StoreError::Unavailable(why) = e else { return };
        if self.retry_at.is_some() {
            return;
        }
        let reason = format!("the database cannot be written ({why}); is the disk full? New work is refused until a write succeeds again");
        tracing::error!(path = %self.shared.path.display(), "{reason}");
        self.shared.unavailable.send_replace(Some(reason));
        self.retry_delay = RETRY_FIRST;
        self.retry_at = Some(Instant::now() + RETRY_FIRST);
    }

    /// Re-opens the database (redb repairs it) and commits a probe; on success the store serves again.
    fn try_recover(&mut self) {
        match self.reopen() {
            Ok(()) => {
                self.retry_at = None;
                self.retry_delay = RETRY_FIRST;
                self.unindexed = 1;
                tracing::info!(path = %self.shared.path.display(), "the database is writable again; serving");
                self.shared.unavailable.send_replace(None);
            }
            Err(e) => {
                tracing::debug!("the database is still unavailable: {e}");
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
                self.retry_at = Some(Instant::now() + self.retry_delay);
            }
        }
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        if free_bytes(&self.shared.path).is_some_and(|f| f < RECOVERY_FREE_BYTES) {
            return Err(StoreError::Unavailable("too little free space".into()));
        }
        let old = self.shared.db.write().map_err(|_| StoreError::Db("lock poisoned".into()))?.take();
        if let Some(mut old) = old {
            // redb holds a file lock: every in-flight read must let go of the old handle first.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(d) => {
                        drop(d);
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still) => {
                        if let Ok(mut slot) = self.shared.db.write() {
                            *slot = Some(still);
                        }
                        return Err(StoreError::Unavailable("reads still hold the database".into()));
                    }
                }
            }
        }
        let database = open_db(&self.shared.path)?;
        let tx = database.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(META).map_err(db)?;
            let n = t.get("probe").map_err(db)?.map(|v| v.value()).unwrap_or(0);
            t.insert("probe", n + 1).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        *self.shared.db.write().map_err(|_| StoreError::Db("lock poisoned".into()))? = Some(Arc::new(database));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
