//! The store's own guarantees: isolation inside a group commit, indexed per-device reads, retention, file mode.

use super::*;
use crate::model::{Authentication, SymmetricKey};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

fn device(id: &str) -> Device {
    Device {
        device_id: id.into(),
        generation_id: "1".into(),
        status: "enabled".into(),
        authentication: Authentication {
            kind: "sas".into(),
            symmetric_key: SymmetricKey { primary_key: "a".into(), secondary_key: "b".into() },
        },
        created_time: String::new(),
        meta: Default::default(),
    }
}

fn event(device: &str) -> EventRecord {
    EventRecord {
        seq: 0,
        device_id: device.into(),
        module_id: None,
        body: Some("{}".into()),
        body_base64: b"{}".to_vec(),
        system_properties: Default::default(),
        application_properties: Default::default(),
        enqueued_time: String::new(),
    }
}

fn open(dir: &Path, retention: Retention) -> Store {
    Store::open(&dir.join("hubsim.redb"), retention).unwrap()
}

async fn add_event(s: &Store, dev: &str) -> u64 {
    let mut e = event(dev);
    s.write(move |tx| {
        e.seq = tx.next_seq("events")?;
        tx.append_event(&e)?;
        Ok(e.seq)
    })
    .await
    .unwrap()
}

type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Polls once so the write is queued (`Store::write` sends its operation on the first poll).
fn queue<T>(f: &mut Pending<'_, T>) {
    assert!(matches!(f.as_mut().poll(&mut Context::from_waker(Waker::noop())), Poll::Pending));
}

/// Holds the writer inside one operation, returned once the writer is in it: everything queued from then on
/// commits as one group after `release` is sent (and the blocker's future is awaited).
fn block_writer(s: &Store) -> (Pending<'_, ()>, std::sync::mpsc::Sender<()>) {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (entered, inside) = std::sync::mpsc::channel::<()>();
    let mut blocker: Pending<'_, ()> = Box::pin(s.write(move |_| {
        let _ = entered.send(());
        let _ = wait.recv();
        Ok(())
    }));
    queue(&mut blocker);
    inside.recv().unwrap();
    (blocker, release)
}

#[tokio::test]
async fn a_failing_write_in_a_group_is_only_its_callers_error() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    // Hold the writer inside one operation so the next ones queue up and commit as one group.
    let (blocker, release) = block_writer(&s);
    let mut good: Vec<Pending<'_, u64>> = Vec::new();
    let mut bad: Vec<Pending<'_, u64>> = Vec::new();
    for i in 0..6 {
        let id = format!("good-{i}");
        let mut f: Pending<'_, u64> = Box::pin(s.write(move |tx| {
            tx.put_device(&device(&id))?;
            let mut e = event(&id);
            e.seq = tx.next_seq("events")?;
            tx.append_event(&e)?;
            Ok(e.seq)
        }));
        queue(&mut f);
        good.push(f);
        if i % 2 == 0 {
            // A caller whose write fails half-way (e.g. a twin that cannot be read back): it wrote a device, a
            // sequence number, an event, a C2D message and deleted a good device before failing.
            let victim = format!("good-{i}");
            let mut f: Pending<'_, u64> = Box::pin(s.write(move |tx| {
                tx.put_device(&device("bad"))?;
                let mut e = event("bad");
                e.seq = tx.next_seq("events")?;
                tx.append_event(&e)?;
                tx.delete_device(&victim)?;
                Err(StoreError::Record("this twin cannot be read".into()))
            }));
            queue(&mut f);
            bad.push(f);
        }
    }
    release.send(()).unwrap();
    blocker.await.unwrap();
    let mut seqs = Vec::new();
    for f in good {
        seqs.push(f.await.expect("a good write in the same group is answered Ok"));
    }
    for f in bad {
        assert!(matches!(f.await, Err(StoreError::Record(_))));
    }
    // The failing writes left nothing behind: sequences have no gaps, their event and device are gone, the
    // devices they deleted are back.
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    drop(s);
    let s = open(tmp.path(), Retention::default());
    assert!(s.device("bad").await.unwrap().is_none());
    for i in 0..6 {
        assert!(s.device(&format!("good-{i}")).await.unwrap().is_some(), "good-{i} is durable");
    }
    let evs = s.events(0, 100, None).await.unwrap();
    assert_eq!(evs.len(), 6);
    assert!(evs.iter().all(|e| e.device_id.starts_with("good-")));
    assert!(s.events(0, 100, Some("bad")).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_per_device_query_reads_only_that_devices_records() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    for i in 0..300 {
        add_event(&s, if i % 100 == 7 { "rare" } else { "busy" }).await;
    }
    let rare = s.events(0, 100, Some("rare")).await.unwrap();
    assert_eq!(rare.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8, 108, 208]);
    assert_eq!(s.events(8, 1, Some("rare")).await.unwrap()[0].seq, 108);
    assert!(s.events(0, 100, Some("nobody")).await.unwrap().is_empty());
    // The index is what answers: a record whose JSON is unreadable is not parsed by another device's query.
    {
        let d = s.shared.db().unwrap();
        let tx = d.begin_write().unwrap();
        let mut chunk = event::ChunkBuilder::default();
        chunk.push(1, unix_ms(), "busy", b"not json");
        tx.open_table(EVENTS).unwrap().insert(1, chunk.take().as_slice()).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(s.events(0, 100, Some("rare")).await.unwrap().len(), 3);
    assert!(s.events(0, 100, Some("nobody")).await.unwrap().is_empty());
}

#[tokio::test]
async fn retention_bounds_the_logs_by_count_and_age() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Retention { max_events: 50, ..Retention::default() };
    let s = open(tmp.path(), limits);
    for _ in 0..200 {
        add_event(&s, "d").await;
    }
    assert_eq!(s.event_count().await.unwrap(), 50);
    let evs = s.events(0, 1000, Some("d")).await.unwrap();
    assert_eq!(evs.first().unwrap().seq, 151, "the oldest go first, the index with them");
    drop(s);
    // Reopened with a retention of zero, everything already stored is past it: the next commit deletes it
    // (a bounded step per commit).
    let s = open(tmp.path(), Retention { max_age: Duration::ZERO, ..Retention::default() });
    add_event(&s, "d").await;
    assert!(s.event_count().await.unwrap() <= 1);
    assert!(s.events(0, 1000, Some("d")).await.unwrap().len() <= 1);
}

#[tokio::test]
async fn retention_bounds_the_events_in_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let one = event::encode(&event("d")).len() as u64;
    // Room for about ten records.
    let s = open(tmp.path(), Retention { max_event_bytes: 10 * one + one / 2, ..Retention::default() });
    for _ in 0..40 {
        add_event(&s, "d").await;
    }
    let n = s.event_count().await.unwrap();
    assert!((10..=11).contains(&n), "{n} events kept");
    let evs = s.events(0, 1000, Some("d")).await.unwrap();
    assert_eq!(evs.last().unwrap().seq, 40, "the newest stay");
}

#[tokio::test]
async fn retention_deletes_a_bounded_amount_per_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    let n = 3 * RETENTION_STEP;
    let mut recs: Vec<EventRecord> = (0..n).map(|_| event("d")).collect();
    s.write(move |tx| {
        for e in &mut recs {
            e.seq = tx.next_seq("events")?;
            tx.append_event(e)?;
        }
        Ok(())
    })
    .await
    .unwrap();
    drop(s);
    let s = open(tmp.path(), Retention { max_events: 0, ..Retention::default() });
    add_event(&s, "d").await;
    // One commit may delete RETENTION_STEP + 2 × what it appended, not the whole backlog at once.
    assert_eq!(s.event_count().await.unwrap(), n + 1 - (RETENTION_STEP + 2));
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("hubsim.redb");
    let s = open(tmp.path(), Retention::default());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    drop(s);
    // A database left world-readable by an older version is narrowed at open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _s = open(tmp.path(), Retention::default());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn logs_of_an_older_version_are_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("hubsim.redb");
    {
        let d = Database::create(&path).unwrap();
        let tx = d.begin_write().unwrap();
        {
            let mut t = tx.open_table(TableDefinition::<u64, &[u8]>::new("events")).unwrap();
            let mut e = event("old");
            e.seq = 4;
            t.insert(4, serde_json::to_vec(&e).unwrap().as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let s = open(tmp.path(), Retention::default());
    let evs = s.events(0, 10, Some("old")).await.unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].seq, 4);
}

#[tokio::test]
async fn the_connection_log_is_capped_with_its_index() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention { max_connections: 5, ..Retention::default() });
    for i in 0..20u64 {
        let dev = if i % 2 == 0 { Some("even".to_owned()) } else { None };
        s.write(move |tx| {
            let rec = ConnectionRecord {
                seq: tx.next_seq("connlog")?,
                time: String::new(),
                operation: "connectRefused".into(),
                device_id: dev,
                module_id: None,
                transport: "mqtt".into(),
                remote: String::new(),
                result_type: 5,
                reason: String::new(),
                description: i.to_string(),
            };
            tx.append_connection(&rec)
        })
        .await
        .unwrap();
    }
    assert_eq!(s.connection_count().await.unwrap(), 5);
    let all: Vec<u64> = s.connections(0, 100, None).await.unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(all, vec![16, 17, 18, 19, 20]);
    let even: Vec<u64> = s.connections(0, 100, Some("even")).await.unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(even, vec![17, 19], "index entries of deleted records are gone with them");
    let d = s.shared.db().unwrap();
    let r = d.begin_read().unwrap();
    assert_eq!(r.open_table(CONNLOG_BY_DEVICE).unwrap().len().unwrap(), 2);
}

#[tokio::test]
async fn writers_wait_when_the_queue_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open_with_queue(&tmp.path().join("hubsim.redb"), Retention::default(), 4).unwrap();
    let (blocker, release) = block_writer(&s);
    let mut writes: Vec<Pending<'_, u64>> = (0..10)
        .map(|_| -> Pending<'_, u64> {
            let e = event("d");
            Box::pin(s.write(move |tx| {
                let mut e = e;
                e.seq = tx.next_seq("events")?;
                tx.append_event(&e)?;
                Ok(e.seq)
            }))
        })
        .collect();
    for w in &mut writes {
        queue(w);
    }
    // Four places: the blocker and three writes; the other seven wait without queueing anything.
    assert_eq!(s.writer.permits.available_permits(), 0);
    release.send(()).unwrap();
    blocker.await.unwrap();
    let mut seqs = Vec::new();
    for w in writes {
        seqs.push(w.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "everyone gets through, in turn");
}

fn full_event(device: &str, i: u64) -> EventRecord {
    let mut e = event(device);
    e.module_id = i.is_multiple_of(2).then(|| "m".to_owned());
    e.body = None;
    e.body_base64 = vec![0xff, i as u8, 0];
    e.system_properties.insert("message-id".into(), format!("id-{i}").into());
    e.system_properties.insert("iothub-connection-device-id".into(), device.into());
    e.application_properties.insert("a".into(), "b".into());
    e.application_properties.insert("flag".into(), serde_json::Value::Null);
    e.application_properties.insert("n".into(), serde_json::json!(3));
    e.enqueued_time = crate::timefmt::iso8601(1_600_000_000_000 + i);
    e
}

#[tokio::test]
async fn events_appended_in_a_group_keep_their_order_among_other_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    let (blocker, release) = block_writer(&s);
    // Events through the telemetry path, with closure writes that also take event numbers between them.
    let mut fast: Vec<Pending<'_, u64>> = Vec::new();
    let mut slow: Vec<Pending<'_, u64>> = Vec::new();
    for i in 0..6u64 {
        let e = full_event("fast", i);
        let mut f: Pending<'_, u64> =
            Box::pin(s.append_event(NewEvent { device: "fast".into(), time_ms: unix_ms(), record: event::encode(&e) }));
        queue(&mut f);
        fast.push(f);
        if i % 3 == 2 {
            let mut f: Pending<'_, u64> = Box::pin(s.write(move |tx| {
                let mut e = full_event("slow", i);
                e.seq = tx.next_seq("events")?;
                tx.append_event(&e)?;
                Ok(e.seq)
            }));
            queue(&mut f);
            slow.push(f);
        }
    }
    release.send(()).unwrap();
    blocker.await.unwrap();
    let mut fast_seqs = Vec::new();
    for f in fast {
        fast_seqs.push(f.await.unwrap());
    }
    let mut slow_seqs = Vec::new();
    for f in slow {
        slow_seqs.push(f.await.unwrap());
    }
    assert_eq!(fast_seqs, vec![1, 2, 3, 5, 6, 7]);
    assert_eq!(slow_seqs, vec![4, 8]);
    drop(s);
    let s = open(tmp.path(), Retention::default());
    let evs = s.events(0, 100, Some("fast")).await.unwrap();
    assert_eq!(evs.len(), 6);
    for (i, e) in evs.iter().enumerate() {
        let mut want = full_event("fast", i as u64);
        want.seq = fast_seqs[i];
        assert_eq!(*e, want, "an event reads back as it was stored");
    }
    assert_eq!(s.events(0, 100, Some("slow")).await.unwrap().len(), 2);
    let counted = s.shared.db().unwrap().begin_read().unwrap().open_table(META).unwrap().get(EVENT_BYTES).unwrap();
    let sum: u64 = (0..6).map(|i| event::encode(&full_event("fast", i)).len() as u64).sum::<u64>()
        + [2u64, 5].iter().map(|i| event::encode(&full_event("slow", *i)).len() as u64).sum::<u64>();
    assert_eq!(counted.unwrap().value(), sum, "the byte count covers both paths");
}

#[tokio::test]
async fn events_stored_as_json_by_an_older_hubsim_are_converted_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("hubsim.redb");
    // A data folder as hubsim 0.1 left it: `events.v2` holds JSON records, one of them unreadable.
    let mut json_bytes = 0;
    {
        let d = Database::create(&path).unwrap();
        let tx = d.begin_write().unwrap();
        {
            let mut t = tx.open_table(EVENTS_V2).unwrap();
            let mut i = tx.open_table(EVENTS_BY_DEVICE_V3).unwrap();
            for seq in 1..=5u64 {
                let mut e = full_event("old", seq);
                e.seq = seq;
                let json = serde_json::to_vec(&e).unwrap();
                json_bytes += json.len() as u64;
                t.insert(seq, (1000 + seq, "old", json.as_slice())).unwrap();
                i.insert(("old", seq), ()).unwrap();
            }
            t.insert(6, (1006, "old", &b"not json"[..])).unwrap();
            i.insert(("old", 6), ()).unwrap();
            json_bytes += 8;
            let mut m = tx.open_table(META).unwrap();
            m.insert("events", 6).unwrap();
            m.insert(EVENT_BYTES, json_bytes).unwrap();
        }
        tx.commit().unwrap();
    }
    let s = open(tmp.path(), Retention::default());
    let evs = s.events(0, 100, None).await.unwrap();
    assert_eq!(evs.len(), 5, "the unreadable record is dropped");
    for e in &evs {
        let mut want = full_event("old", e.seq);
        want.seq = e.seq;
        assert_eq!(*e, want);
    }
    assert_eq!(s.events(0, 100, Some("old")).await.unwrap().len(), 5, "its index entry went with it");
    {
        let d = s.shared.db().unwrap();
        let r = d.begin_read().unwrap();
        assert!(r.list_tables().unwrap().all(|t| t.name() != "events.v2"), "the old table is gone");
        let counted = r.open_table(META).unwrap().get(EVENT_BYTES).unwrap().unwrap().value();
        let sum: u64 = (1..=5).map(|i| event::encode(&full_event("old", i)).len() as u64).sum();
        assert_eq!(counted, sum, "the byte count is that of the converted records");
    }
    // New events continue the old numbering.
    let seq =
        s.append_event(NewEvent { device: "old".into(), time_ms: unix_ms(), record: event::encode(&event("old")) });
    assert_eq!(seq.await.unwrap(), 7);
}

#[tokio::test]
async fn events_not_yet_indexed_are_found_per_device_and_indexed_soon_after() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    let add = |s: &Store, dev: &str, i: u64| {
        let rec = event::encode(&full_event(dev, i));
        let s = s.clone();
        let dev = dev.to_owned();
        async move { s.append_event(NewEvent { device: dev, time_ms: unix_ms(), record: rec }).await.unwrap() }
    };
    for i in 0..10 {
        add(&s, if i % 3 == 0 { "a" } else { "b" }, i).await;
    }
    // Found at once, whether or not the index has caught up, each once and in order.
    let a: Vec<u64> = s.events(0, 100, Some("a")).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(a, vec![1, 4, 7, 10]);
    assert_eq!(s.events(4, 2, Some("a")).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7, 10]);
    // A store closed before its writer indexed them (as after a crash) finds them too, then indexes them.
    drop(s);
    let s = open(tmp.path(), Retention::default());
    assert_eq!(s.events(0, 100, Some("b")).await.unwrap().len(), 6);
    let index_len = || {
        let d = s.shared.db().unwrap();
        let r = d.begin_read().unwrap();
        let mark = r.open_table(META).unwrap().get(EVENTS_INDEXED).unwrap().map_or(0, |v| v.value());
        (mark, r.open_table(EVENTS_BY_DEVICE).unwrap().len().unwrap())
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        // The idle writer indexes within INDEX_EVERY; wake on a short timer to look (no other signal exists).
        while index_len() != (10, 10) {
            tokio::time::sleep(INDEX_EVERY / 5).await;
        }
    })
    .await
    .expect("the idle writer indexes what waits");
    add(&s, "a", 10).await;
    let a: Vec<u64> = s.events(0, 100, Some("a")).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(a, vec![1, 4, 7, 10, 11], "indexed and not yet indexed events together");
}

/// Queues `n` telemetry events behind a blocked write, so that they are appended in one group commit; returns
/// their sequence numbers. Device `x` sends every third, `y` the others.
async fn one_group_of_events(s: &Store, n: u64) -> Vec<u64> {
    let devs: Vec<String> = (0..n).map(|i| if i % 3 == 0 { "x" } else { "y" }.to_owned()).collect();
    group_of(s, &devs).await
}

fn seqs(evs: &[EventRecord]) -> Vec<u64> {
    evs.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn a_group_of_events_is_stored_in_chunks_and_read_across_their_boundaries() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    let n = 600;
    assert_eq!(one_group_of_events(&s, n).await, (1..=n).collect::<Vec<_>>());
    let chunks = || {
        let d = s.shared.db().unwrap();
        let r = d.begin_read().unwrap();
        let t = r.open_table(EVENTS).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().0.value()).collect::<Vec<u64>>()
    };
    assert_eq!(chunks(), vec![1, 257, 513], "256 events per chunk");
    assert_eq!(s.event_count().await.unwrap(), n);
    let all = s.events(0, 1000, None).await.unwrap();
    assert_eq!(seqs(&all), (1..=n).collect::<Vec<_>>());
    for e in &all {
        let i = e.seq - 1;
        assert_eq!(*e, EventRecord { seq: e.seq, ..full_event(if i % 3 == 0 { "x" } else { "y" }, i) });
    }
    assert_eq!(seqs(&s.events(255, 3, None).await.unwrap()), vec![256, 257, 258], "a page across two chunks");
    assert_eq!(seqs(&s.events(600, 10, None).await.unwrap()), Vec::<u64>::new());
    let x_after = |after: u64| (after + 1..=n).filter(|q| (q - 1) % 3 == 0).collect::<Vec<u64>>();
    assert_eq!(seqs(&s.events(300, 1000, Some("x")).await.unwrap()), x_after(300));
    assert_eq!(seqs(&s.events(256, 2, Some("x")).await.unwrap()), vec![259, 262]);
    // Indexed: one entry per device and chunk; the same answers through the index.
    {
        let d = s.shared.db().unwrap();
        let tx = d.begin_write().unwrap();
        assert_eq!(index_events(&tx).unwrap(), 0);
        tx.commit().unwrap();
        let r = d.begin_read().unwrap();
        let i = r.open_table(EVENTS_BY_DEVICE).unwrap();
        let entries: Vec<(String, u64)> =
            i.iter().unwrap().map(|e| e.unwrap().0).map(|k| (k.value().0.to_owned(), k.value().1)).collect();
        let want: Vec<(String, u64)> =
            ["x", "y"].iter().flat_map(|d| [1, 257, 513].map(|k| (d.to_string(), k))).collect();
        assert_eq!(entries, want);
    }
    assert_eq!(seqs(&s.events(300, 1000, Some("x")).await.unwrap()), x_after(300));
    assert_eq!(seqs(&s.events(0, 1000, Some("y")).await.unwrap()).len(), 400);
}

#[tokio::test]
async fn retention_deletes_whole_chunks_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention { max_events: 300, ..Retention::default() });
    one_group_of_events(&s, 600).await;
    // 600 > 300: the first chunk (256) goes, 344 > 300: the second too; 88 are left.
    assert_eq!(s.event_count().await.unwrap(), 88);
    assert_eq!(s.events(0, 1000, None).await.unwrap().first().map(|e| e.seq), Some(513));
    assert_eq!(s.events(0, 1000, Some("x")).await.unwrap().first().map(|e| e.seq), Some(514));
    let d = s.shared.db().unwrap();
    let r = d.begin_read().unwrap();
    let bytes = r.open_table(META).unwrap().get(EVENT_BYTES).unwrap().unwrap().value();
    let want: u64 =
        (512..600).map(|i| event::encode(&full_event(if i % 3 == 0 { "x" } else { "y" }, i)).len() as u64).sum();
    assert_eq!(bytes, want, "the byte count follows the deleted chunks");
}

#[tokio::test]
async fn events_stored_one_per_row_are_chunked_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("hubsim.redb");
    // A data folder as hubsim before chunks left it: `events.v3` rows, the per-event index, and a gap (6 deleted).
    let seqs_stored = [1u64, 2, 3, 4, 5, 7];
    let mut bytes = 0;
    {
        let d = Database::create(&path).unwrap();
        let tx = d.begin_write().unwrap();
        {
            let mut t = tx.open_table(EVENTS_V3).unwrap();
            let mut i = tx.open_table(EVENTS_BY_DEVICE_V3).unwrap();
            for seq in seqs_stored {
                let dev = if seq % 2 == 0 { "even" } else { "odd" };
                let rec = event::encode(&full_event(dev, seq));
                bytes += rec.len() as u64;
                t.insert(seq, (unix_ms(), dev, rec.as_slice())).unwrap();
                i.insert((dev, seq), ()).unwrap();
            }
            let mut m = tx.open_table(META).unwrap();
            m.insert("events", 7).unwrap();
            m.insert(EVENT_BYTES, bytes).unwrap();
            m.insert(EVENTS_INDEXED, 5).unwrap();
        }
        tx.commit().unwrap();
    }
    let s = open(tmp.path(), Retention::default());
    let all = s.events(0, 100, None).await.unwrap();
    assert_eq!(seqs(&all), seqs_stored.to_vec());
    for e in &all {
        let dev = if e.seq % 2 == 0 { "even" } else { "odd" };
        assert_eq!(*e, EventRecord { seq: e.seq, ..full_event(dev, e.seq) });
    }
    assert_eq!(seqs(&s.events(0, 100, Some("odd")).await.unwrap()), vec![1, 3, 5, 7]);
    assert_eq!(seqs(&s.events(3, 100, Some("even")).await.unwrap()), vec![4]);
    assert_eq!(s.event_count().await.unwrap(), 6);
    {
        let d = s.shared.db().unwrap();
        let r = d.begin_read().unwrap();
        let names: Vec<String> = r.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
        assert!(!names.iter().any(|n| n == "events.v3" || n == "events.by-device"), "{names:?}");
        let m = r.open_table(META).unwrap();
        assert_eq!(m.get(EVENT_BYTES).unwrap().unwrap().value(), bytes);
        assert_eq!(m.get(EVENTS_INDEXED).unwrap().unwrap().value(), 7, "the index was built in full");
    }
    let seq =
        s.append_event(NewEvent { device: "odd".into(), time_ms: unix_ms(), record: event::encode(&event("odd")) });
    assert_eq!(seq.await.unwrap(), 8, "new events continue the old numbering");
    assert_eq!(seqs(&s.events(5, 100, Some("odd")).await.unwrap()), vec![7, 8]);
}

/// Queues one telemetry event per entry of `devs` behind a blocked write, so that they are appended in one group
/// commit; returns their sequence numbers.
async fn group_of(s: &Store, devs: &[String]) -> Vec<u64> {
    let (blocker, release) = block_writer(s);
    // Unconstrained: tokio's cooperative budget would make the semaphore answer "not yet" after ~128 polls in
    // one go, and the rest would only be queued one by one when awaited.
    let events = tokio::task::unconstrained(async {
        let mut events: Vec<Pending<'_, u64>> = Vec::new();
        for (i, dev) in devs.iter().enumerate() {
            let record = event::encode(&full_event(dev, i as u64));
            let mut f: Pending<'_, u64> =
                Box::pin(s.append_event(NewEvent { device: dev.clone(), time_ms: unix_ms(), record }));
            queue(&mut f);
            events.push(f);
        }
        events
    })
    .await;
    release.send(()).unwrap();
    blocker.await.unwrap();
    let mut seqs = Vec::new();
    for f in events {
        seqs.push(f.await.unwrap());
    }
    seqs
}

/// Paging through `Store::events` answers as a plain list of `(seq, device)` does, whatever the groups, the index's
/// progress, retention of whole chunks and reopening did.
#[tokio::test]
async fn event_pages_agree_with_a_simple_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), Retention::default());
    let mut model: Vec<(u64, String)> = Vec::new();
    // xorshift: deterministic, so a failure names its step.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    };
    let names = ["a", "b", "c"];
    for step in 0..120 {
        match rand(10) {
            0..=3 => {
                let n = [1, 2, 5, 255, 256, 257, 300][rand(7) as usize];
                let devs: Vec<String> = (0..n).map(|_| names[rand(3) as usize].to_owned()).collect();
                let got = group_of(&s, &devs).await;
                model.extend(got.into_iter().zip(devs));
            }
            4 => {
                let dev = names[rand(3) as usize];
                let seq = add_event(&s, dev).await;
                model.push((seq, dev.to_owned()));
            }
            5 => {
                let d = s.shared.db().unwrap();
                let tx = d.begin_write().unwrap();
                index_events(&tx).unwrap();
                tx.commit().unwrap();
            }
            6 => {
                let keep = rand(model.len() as u64 + 1);
                let d = s.shared.db().unwrap();
                let tx = d.begin_write().unwrap();
                enforce_event_retention(&tx, rand(600) + 1, &Retention { max_events: keep, ..Retention::default() })
                    .unwrap();
                let first = tx.open_table(EVENTS).unwrap().first().unwrap().map(|(k, _)| k.value());
                tx.commit().unwrap();
                model.retain(|(q, _)| first.is_some_and(|f| *q >= f));
            }
            7 => {
                drop(s);
                s = open(tmp.path(), Retention::default());
            }
            _ => {}
        }
        assert_eq!(s.event_count().await.unwrap(), model.len() as u64, "step {step}: count");
        for _ in 0..6 {
            let last = model.last().map_or(0, |e| e.0);
            let after = rand(last + 3);
            let limit = [0, 1, 3, 100, 257, 2000][rand(6) as usize];
            let device = [None, Some("a"), Some("b"), Some("c"), Some("zz"), Some("")][rand(6) as usize];
            let want: Vec<u64> = model
                .iter()
                .filter(|(q, d)| *q > after && device.is_none_or(|x| x == d))
                .map(|e| e.0)
                .take(limit)
                .collect();
            let got = seqs(&s.events(after, limit, device).await.unwrap());
            assert_eq!(got, want, "step {step}: after {after} limit {limit} device {device:?}");
        }
    }
}

/// A chunk cut short or with bad bytes anywhere reads as an error (or as fewer events), never a panic.
#[tokio::test]
async fn damaged_chunks_read_as_errors() {
    let mut b = event::ChunkBuilder::default();
    for i in 0..3 {
        b.push(10 + i, 5, "dev", &event::encode(&full_event("dev", i)));
    }
    let chunk = b.take();
    for n in 0..chunk.len() {
        let cut = &chunk[..n];
        let read: Result<Vec<_>, _> = event::chunk_events(cut).collect();
        let decoded =
            read.and_then(|evs| evs.iter().try_for_each(|e| event::decode(e.seq, e.device, e.record).map(drop)));
        // Every record's length is in the chunk, so any prefix misses part of one.
        assert!(decoded.is_err(), "a chunk of {n} bytes of {} read as whole", chunk.len());
        let _ = event::chunk_header(cut);
    }
    for (i, byte) in [0u8, 0x7f, 0xff].iter().enumerate() {
        for at in 0..chunk.len() {
            let mut bad = chunk.clone();
            bad[at] = byte.wrapping_add(bad[at]).wrapping_add(i as u8 + 1);
            for e in event::chunk_events(&bad).flatten() {
                let _ = event::decode(e.seq, e.device, e.record);
            }
        }
    }
    // Through the store: a damaged chunk is the reader's error.
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    group_of(&s, &["a".to_owned(), "b".to_owned()]).await;
    {
        let d = s.shared.db().unwrap();
        let tx = d.begin_write().unwrap();
        tx.open_table(EVENTS).unwrap().insert(1, &chunk[..chunk.len() / 2]).unwrap();
        tx.commit().unwrap();
    }
    assert!(matches!(s.events(0, 10, None).await, Err(StoreError::Record(_))));
    assert!(matches!(s.events(0, 10, Some("a")).await, Err(StoreError::Record(_))));
}

/// A damaged chunk is the error of those who read it, not of every later write: the index steps over it, and
/// retention deletes one whose header (its age) cannot be read.
#[tokio::test]
async fn a_damaged_chunk_does_not_stop_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Retention::default());
    group_of(&s, &["a".to_owned()]).await;
    let damage = |chunk: Vec<u8>| {
        let d = s.shared.db().unwrap();
        let tx = d.begin_write().unwrap();
        tx.open_table(EVENTS).unwrap().insert(1, chunk.as_slice()).unwrap();
        tx.commit().unwrap();
    };
    // A sound header (two events, new), then events cut short.
    damage([2u32.to_le_bytes().as_slice(), &unix_ms().to_le_bytes(), &[7, 7, 7]].concat());
    // Enough events that group commits index them.
    for _ in 0..(2 * INDEX_LAG as usize).div_ceil(300) {
        group_of(&s, &vec!["b".to_owned(); 300]).await;
    }
    assert!(matches!(s.events(0, 10, None).await, Err(StoreError::Record(_))), "its readers' error");
    let marks = || {
        let d = s.shared.db().unwrap();
        let r = d.begin_read().unwrap();
        let mark = r.open_table(META).unwrap().get(EVENTS_INDEXED).unwrap().map_or(0, |v| v.value());
        (mark, r.open_table(EVENTS).unwrap().first().unwrap().map(|(k, _)| k.value()))
    };
    assert!(marks().0 > 1, "the index went past it");
    assert_eq!(seqs(&s.events(0, 2, Some("b")).await.unwrap()), vec![2, 3]);
    // A header cut short: its age is unknown, so retention deletes it with the next commit.
    damage(vec![1, 0, 0]);
    add_event(&s, "c").await;
    assert_eq!(marks().1, Some(2), "deleted");
    assert_eq!(seqs(&s.events(0, 2, None).await.unwrap()), vec![2, 3]);
}

#[tokio::test]
async fn a_registry_scan_reads_a_twin_only_when_asked_and_starts_after_a_given_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Retention::default());
    s.write(|tx| {
        for id in ["a", "b", "c"] {
            tx.put_device(&device(id))?;
        }
        let twin = Twin { tags: serde_json::json!({"x": 1}), ..Twin::default() };
        tx.put_twin("a", &twin)?;
        // b's stored twin does not decode: only a read of it fails.
        tx.tx.open_table(TWINS).map_err(db)?.insert("b", b"{not json".as_slice()).map_err(db)?;
        Ok(())
    })
    .await
    .unwrap();
    let ids = s
        .scan_registry(None, Vec::new(), |seen, e| {
            seen.push(e.device.device_id.clone());
            Ok(ControlFlow::Continue(()))
        })
        .await
        .unwrap();
    assert_eq!(ids, ["a", "b", "c"], "the records alone: b's twin is never decoded");
    let tags = s
        .scan_registry(Some("a".into()), Vec::new(), |seen, e| {
            seen.push((e.device.device_id.clone(), e.twin_tree(TwinTree::Tags).is_ok()));
            Ok(ControlFlow::Continue(()))
        })
        .await
        .unwrap();
    assert_eq!(tags, [("b".to_owned(), false), ("c".to_owned(), true)], "after 'a'; b's twin is an error when read");
    let first = s
        .scan_registry(None, None, |first, e| {
            *first = Some((e.twin_tree(TwinTree::Tags)?, e.twin_head()?.version(), e.twin()?.tags));
            Ok(ControlFlow::Break(()))
        })
        .await
        .unwrap();
    assert_eq!(first, Some((serde_json::json!({"x": 1}), 2, serde_json::json!({"x": 1}))));
}

/// A registration record as an older hubsim stored it, under `id` as the device spelled it.
fn legacy_registration(id: &str, updated: &str, payload: serde_json::Value) -> Vec<u8> {
    let r = crate::hub::dps::RegistrationRecord {
        registration_id: id.into(),
        created_date_time_utc: "2026-11-01T00:00:00.000Z".into(),
        assigned_hub: Some("localhost".into()),
        device_id: Some(id.into()),
        status: "assigned".into(),
        substatus: Some("initialAssignment".into()),
        error_code: None,
        error_message: None,
        last_updated_date_time_utc: updated.into(),
        etag: "e".into(),
        payload: None,
        request_payload: Some(payload),
        enrollment_group_id: Some("g".into()),
        operation_id: "4.x".into(),
    };
    serde_json::to_vec(&r).unwrap()
}

#[tokio::test]
async fn dps_records_under_capitalised_registration_ids_move_to_the_lowercase_id_once() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("hubsim.redb");
    let deep = (0..127).fold(serde_json::json!(1), |v, _| serde_json::json!([v]));
    {
        // A database as an older hubsim left it: ids as the devices spelled them, duplicates by case, and a
        // record too deep to read back.
        let database = Database::create(&path).unwrap();
        let tx = database.begin_write().unwrap();
        {
            let mut t = tx.open_table(TableDefinition::<&str, &[u8]>::new("dps.registrations")).unwrap();
            let rows = [
                ("Sensor-A", legacy_registration("Sensor-A", "2026-11-02T00:00:00.000Z", serde_json::json!(1))),
                ("SENSOR-A", legacy_registration("SENSOR-A", "2026-11-03T00:00:00.000Z", serde_json::json!(2))),
                ("sensor-a", legacy_registration("sensor-a", "2026-11-01T00:00:00.000Z", serde_json::json!(3))),
                ("Deep-B", legacy_registration("Deep-B", "2026-11-01T00:00:00.000Z", deep)),
                ("plain", legacy_registration("plain", "2026-11-01T00:00:00.000Z", serde_json::json!(4))),
            ];
            for (k, v) in &rows {
                t.insert(*k, v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let s = open(tmp.path(), Retention::default());
    let (a, all, deep_b) = s
        .dps_read(|v| {
            let deep_b = v.registration("deep-b").map(|_| ()).map_err(|e| e.to_string());
            Ok((v.registration("sensor-a")?, v.registrations()?, deep_b))
        })
        .await
        .unwrap();
    // The spelling updated last wins, under the lowercase id; the others are gone.
    let a = a.unwrap();
    assert_eq!((a.registration_id.as_str(), a.request_payload), ("sensor-a", Some(serde_json::json!(2))));
    let mut ids: Vec<_> = all.iter().map(|r| r.registration_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["plain", "sensor-a"]);
    // The unreadable record moved as it was: still unreadable, skipped by the list, there to delete by id.
    assert!(deep_b.is_err_and(|e| e.contains("recursion limit")));
    assert!(s.write(|tx| tx.remove_registration("deep-b")).await.unwrap());
    // Once: a record stored under a capital afterwards (no current code does) is left where it is.
    let later = legacy_registration("Later-C", "2026-11-04T00:00:00.000Z", serde_json::json!(5));
    let r: crate::hub::dps::RegistrationRecord = serde_json::from_slice(&later).unwrap();
    s.write(move |tx| tx.put_registration(&r)).await.unwrap();
    drop(s);
    let s = open(tmp.path(), Retention::default());
    let later = s.dps_read(|v| Ok((v.registration("Later-C")?, v.registration("later-c")?))).await.unwrap();
    assert!(later.0.is_some() && later.1.is_none());
}
