//! Peer-chosen text is bounded where it is stored and logged: a flood of CONNECTs with 64 KB client ids and user
//! names writes a bounded amount to the database and to the log. (Its own test binary: it installs the global
//! `tracing` subscriber that counts log bytes.)

use hubsim_hub::model::PEER_TEXT_MAX;
use hubsim_proto::mqttbytes::v4::{Connect, Login, Packet};
use hubsim_testkit::*;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A log sink that only counts bytes.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(b.len(), Ordering::Relaxed);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn refused_connections_with_huge_ids_write_bounded_records_and_logs() {
    const N: usize = 300;
    let counter = Counter::default();
    let sink = counter.clone();
    // What `hubsim serve` logs by default (info).
    tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(move || sink.clone()).init();
    let emu = Emu::start().await;
    let db = emu.dir.join("hubsim.redb");
    let size_before = std::fs::metadata(&db).unwrap().len();
    let logged_before = counter.0.load(Ordering::Relaxed);
    let huge = "x".repeat(64 * 1024 - 100);
    let wire_connect = {
        let mut c = Connect::new(huge.as_str());
        c.login = Some(Login::new(huge.as_str(), "SharedAccessSignature sr=x&sig=y&se=1"));
        wire(Packet::Connect(c))
    };
    assert!(wire_connect.len() > 120 * 1024);
    for _ in 0..N {
        let mut t = open_raw(&emu, Via::Mqtt).await;
        t.send_raw(&wire_connect).await;
        let closed = tokio::time::timeout(WAIT, async { while t.recv_raw().await.is_some() {} }).await;
        assert!(closed.is_ok(), "the connection was not closed");
    }
    // Every refusal is recorded, each record bounded.
    let recs = loop {
        let recs = emu.hub().store.connections(0, 10_000, None).await.unwrap();
        if recs.len() >= N {
            break recs;
        }
        emu.wait_log(|r| r.seq as usize >= N).await;
    };
    for r in &recs {
        let json = serde_json::to_vec(r).unwrap();
        assert!(json.len() < 6 * PEER_TEXT_MAX, "a record of {} bytes", json.len());
    }
    let grown = std::fs::metadata(&db).unwrap().len().saturating_sub(size_before);
    let logged = counter.0.load(Ordering::Relaxed) - logged_before;
    println!("{N} refused CONNECTs of {} bytes: database +{grown} bytes, log +{logged} bytes", wire_connect.len());
    // Before the bounds: +67 MB of database and +39 MB of log for the same flood.
    assert!(grown < 4 * 1024 * 1024, "the database grew by {grown} bytes");
    assert!(logged < N * 2048, "the log grew by {logged} bytes");
}
