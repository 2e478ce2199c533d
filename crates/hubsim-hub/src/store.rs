//! The embedded database (redb): registry, twins, stored sessions, C2D queues, feedback, events and the
//! connection log. The only module that touches the database.
//!
//! Writes go through one writer thread that commits in groups: every write waiting when a transaction starts is
//! applied in it, and each caller is answered only after the commit (fsync) returns. An acknowledged write
//! therefore survives `kill -9`, and a burst of telemetry costs one fsync per batch, not per message.

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::path::Path;
use std::sync::{mpsc, Arc};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::model::{C2dMessage, ConnectionRecord, Device, EventRecord, FeedbackRecord, Twin};

mod dps;

const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const TWINS: TableDefinition<&str, &[u8]> = TableDefinition::new("twins");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const C2D: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("c2d");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const CONNLOG: TableDefinition<u64, &[u8]> = TableDefinition::new("connlog");
const FEEDBACK: TableDefinition<u64, &[u8]> = TableDefinition::new("feedback");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A database failure (never a logical "not found", which is an `Option`).
#[derive(Debug, Clone, Error)]
#[error("database error: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

type Op = Box<dyn FnOnce(&WriteTransaction) -> Result<Box<dyn Any + Send>, StoreError> + Send>;
type Reply = oneshot::Sender<Result<Box<dyn Any + Send>, StoreError>>;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: mpsc::Sender<(Op, Reply)>,
}

/// A write transaction, for the closures passed to [`Store::write`].
pub struct Tx<'a>(&'a WriteTransaction);

fn to_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(err)
}
fn from_bytes<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(err)
}

impl Store {
    /// Opens (or creates) the database at `path` and starts the writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Arc::new(Database::create(path).map_err(err)?);
        {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(DEVICES).map_err(err)?;
            tx.open_table(TWINS).map_err(err)?;
            tx.open_table(SESSIONS).map_err(err)?;
            tx.open_table(C2D).map_err(err)?;
            tx.open_table(EVENTS).map_err(err)?;
            tx.open_table(CONNLOG).map_err(err)?;
            tx.open_table(FEEDBACK).map_err(err)?;
            tx.open_table(META).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        let (writer, rx) = mpsc::channel::<(Op, Reply)>();
        let wdb = db.clone();
        std::thread::Builder::new().name("hubsim-store".into()).spawn(move || writer_loop(&wdb, rx)).map_err(err)?;
        Ok(Store { db, writer })
    }

    /// Runs `f` in a write transaction, returning after the commit is durable.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |t| f(&mut Tx(t)).map(|r| Box::new(r) as Box<dyn Any + Send>));
        self.writer.send((op, tx)).map_err(|_| StoreError("the writer thread stopped".into()))?;
        let any = rx.await.map_err(|_| StoreError("the writer thread stopped".into()))??;
        any.downcast::<R>().map(|b| *b).map_err(|_| StoreError("internal: result type mismatch".into()))
    }

    // ---- reads (no writer round trip) -----------------------------------------------------------------------

    fn read_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(table).map_err(err)?;
        match t.get(key).map_err(err)? {
            Some(v) => Ok(Some(from_bytes(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.read_json(DEVICES, id)
    }

    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(DEVICES).map_err(err)?;
        t.iter().map_err(err)?.map(|e| e.map_err(err).and_then(|(_, v)| from_bytes(v.value()))).collect()
    }

    pub fn twin(&self, id: &str) -> Result<Twin, StoreError> {
        Ok(self.read_json(TWINS, id)?.unwrap_or_default())
    }

    pub fn session(&self, id: &str) -> Result<Option<Vec<(String, u8)>>, StoreError> {
        self.read_json(SESSIONS, id)
    }

    /// The device's C2D queue in order.
    pub fn c2d_queue(&self, device: &str) -> Result<Vec<C2dMessage>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(C2D).map_err(err)?;
        let range = t.range((device, 0u64)..=(device, u64::MAX)).map_err(err)?;
        range.map(|e| e.map_err(err).and_then(|(_, v)| from_bytes(v.value()))).collect()
    }

    fn page<T: DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        after: u64,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(table).map_err(err)?;
        let mut out = Vec::new();
        for e in t.range(after.saturating_add(1)..).map_err(err)? {
            let (_, v) = e.map_err(err)?;
            let rec: T = from_bytes(v.value())?;
            if keep(&rec) {
                out.push(rec);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn events(&self, after: u64, limit: usize, device: Option<&str>) -> Result<Vec<EventRecord>, StoreError> {
        self.page(EVENTS, after, limit, |e: &EventRecord| device.is_none_or(|d| e.device_id == d))
    }

    pub fn connections(
        &self,
        after: u64,
        limit: usize,
        device: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.page(CONNLOG, after, limit, |e: &ConnectionRecord| {
            device.is_none_or(|d| e.device_id.as_deref() == Some(d))
        })
    }

    pub fn feedback(&self, after: u64, limit: usize) -> Result<Vec<FeedbackRecord>, StoreError> {
        self.page(FEEDBACK, after, limit, |_: &FeedbackRecord| true)
    }

    pub fn event_count(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        r.open_table(EVENTS).map_err(err)?.len().map_err(err)
    }
}

impl Tx<'_> {
    fn put<T: Serialize>(&mut self, table: TableDefinition<&str, &[u8]>, key: &str, v: &T) -> Result<(), StoreError> {
        let b = to_bytes(v)?;
        self.0.open_table(table).map_err(err)?.insert(key, b.as_slice()).map_err(err)?;
        Ok(())
    }
    fn get<T: DeserializeOwned>(
        &mut self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let t = self.0.open_table(table).map_err(err)?;
        let v = t.get(key).map_err(err)?;
        v.map(|v| from_bytes(v.value())).transpose()
    }
    fn del(&mut self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), StoreError> {
        self.0.open_table(table).map_err(err)?.remove(key).map_err(err)?;
        Ok(())
    }

    /// Next value of a named sequence (starting at 1).
    pub fn next_seq(&mut self, name: &str) -> Result<u64, StoreError> {
        let mut t = self.0.open_table(META).map_err(err)?;
        let n = t.get(name).map_err(err)?.map(|v| v.value()).unwrap_or(0) + 1;
        t.insert(name, n).map_err(err)?;
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
        let seqs: Vec<u64> = self.c2d_queue(id)?.iter().map(|m| m.seq).collect();
        let mut t = self.0.open_table(C2D).map_err(err)?;
        for s in seqs {
            t.remove((id, s)).map_err(err)?;
        }
        Ok(existed)
    }
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
        let t = self.0.open_table(C2D).map_err(err)?;
        let range = t.range((device, 0u64)..=(device, u64::MAX)).map_err(err)?;
        range.map(|e| e.map_err(err).and_then(|(_, v)| from_bytes(v.value()))).collect()
    }
    pub fn all_c2d(&mut self) -> Result<Vec<C2dMessage>, StoreError> {
        let t = self.0.open_table(C2D).map_err(err)?;
        let it = t.iter().map_err(err)?;
        it.map(|e| e.map_err(err).and_then(|(_, v)| from_bytes(v.value()))).collect()
    }
    pub fn put_c2d(&mut self, m: &C2dMessage) -> Result<(), StoreError> {
        let b = to_bytes(m)?;
        self.0.open_table(C2D).map_err(err)?.insert((m.device_id.as_str(), m.seq), b.as_slice()).map_err(err)?;
        Ok(())
    }
    pub fn remove_c2d(&mut self, device: &str, seq: u64) -> Result<Option<C2dMessage>, StoreError> {
        let mut t = self.0.open_table(C2D).map_err(err)?;
        let v = t.remove((device, seq)).map_err(err)?;
        v.map(|v| from_bytes(v.value())).transpose()
    }
    pub fn get_c2d(&mut self, device: &str, seq: u64) -> Result<Option<C2dMessage>, StoreError> {
        let t = self.0.open_table(C2D).map_err(err)?;
        let v = t.get((device, seq)).map_err(err)?;
        v.map(|v| from_bytes(v.value())).transpose()
    }

    pub fn append_event(&mut self, e: &EventRecord) -> Result<(), StoreError> {
        let b = to_bytes(e)?;
        self.0.open_table(EVENTS).map_err(err)?.insert(e.seq, b.as_slice()).map_err(err)?;
        Ok(())
    }
    pub fn append_connection(&mut self, e: &ConnectionRecord) -> Result<(), StoreError> {
        let b = to_bytes(e)?;
        self.0.open_table(CONNLOG).map_err(err)?.insert(e.seq, b.as_slice()).map_err(err)?;
        Ok(())
    }
    pub fn append_feedback(&mut self, e: &FeedbackRecord) -> Result<(), StoreError> {
        let b = to_bytes(e)?;
        self.0.open_table(FEEDBACK).map_err(err)?.insert(e.seq, b.as_slice()).map_err(err)?;
        Ok(())
    }
}

fn writer_loop(db: &Database, rx: mpsc::Receiver<(Op, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let tx = match db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(err(&e)));
                }
                continue;
            }
        };
        let mut results = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (op, reply) in batch {
            match op(&tx) {
                Ok(v) => results.push((reply, Ok(v))),
                Err(e) => {
                    failed = Some(e.clone());
                    results.push((reply, Err(e)));
                }
            }
        }
        // A database error anywhere aborts the whole group, so nobody is told a write is durable when it is not.
        let outcome = match failed {
            Some(e) => {
                let _ = tx.abort();
                Err(e)
            }
            None => tx.commit().map_err(err),
        };
        for (reply, r) in results {
            let _ = reply.send(match &outcome {
                Ok(()) => r,
                Err(e) => Err(e.clone()),
            });
        }
    }
}
