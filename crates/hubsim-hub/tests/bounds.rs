//! Peer-chosen text is bounded where it is stored and logged: a flood of CONNECTs with 64 KB client ids and user
//! names (refused, or accepted with a 60 KB api-version) writes a bounded amount to the database and to the log. (Its own test binary: it installs the global
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
async fn connections_with_huge_peer_text_write_bounded_records_and_logs() {
    const N: usize = 300;
    let counter = Counter::default();
    let sink = counter.clone();
    // What `hubsim serve` logs by default (info).
    tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(move || sink.clone()).init();
    let emu = Emu::start().await;
    let key = emu.device("d1").await;
    let db = emu.dir.join("hubsim.redb");
    let size_before = std::fs::metadata(&db).unwrap().len();
    let logged_before = counter.0.load(Ordering::Relaxed);
    let mut live = emu.hub().connlog.subscribe();
    let huge = "x".repeat(64 * 1024 - 100);
    // Refused before authentication: a 64 KB client id and user name.
    let junk = {
        let mut c = Connect::new(huge.as_str());
        c.login = Some(Login::new(huge.as_str(), "SharedAccessSignature sr=x&sig=y&se=1"));
        wire(Packet::Connect(c))
    };
    assert!(junk.len() > 120 * 1024);
    // Accepted, with 60 KB of peer text in the user name (its api-version ends up in the connect record).
    let accepted = {
        let mut c = Connect::new("d1");
        let user = format!("localhost/d1/?api-version={}", "9".repeat(60 * 1024));
        c.login = Some(Login::new(user.as_str(), token(&key, "d1", 3600).as_str()));
        wire(Packet::Connect(c))
    };
    for i in 0..N {
        let mut t = open_raw(&emu, Via::Mqtt).await;
        if i % 2 == 0 {
            t.send_raw(&junk).await;
            let closed = tokio::time::timeout(WAIT, async { while t.recv_raw().await.is_some() {} }).await;
            assert!(closed.is_ok(), "the connection was not closed");
        } else {
            t.send_raw(&accepted).await;
            assert_eq!(t.recv_raw().await.unwrap(), vec![0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
            drop(t);
        }
    }
    // Every connection shows on the live log (refusals before a valid CONNECT only there), each record bounded.
    let expected = N / 2 + 2 * (N / 2);
    let mut seen = 0;
    while seen < expected {
        let r = tokio::time::timeout(WAIT, live.recv()).await.expect("a connection record").unwrap();
        let json = serde_json::to_vec(&r).unwrap();
        assert!(json.len() < 6 * PEER_TEXT_MAX, "a live record of {} bytes", json.len());
        seen += 1;
    }
    let stored = emu.hub().store.connections(0, 10_000, None).await.unwrap();
    assert!(stored.len() >= N, "{} stored records", stored.len());
    for r in &stored {
        let json = serde_json::to_vec(r).unwrap();
        assert!(json.len() < 6 * PEER_TEXT_MAX, "a stored record of {} bytes", json.len());
    }
    let grown = std::fs::metadata(&db).unwrap().len().saturating_sub(size_before);
    let logged = counter.0.load(Ordering::Relaxed) - logged_before;
    println!("{N} connections with 60-64 KB of peer text: database +{grown} bytes, log +{logged} bytes");
    // Unbounded, the same flood wrote tens of megabytes to each.
    assert!(grown < 4 * 1024 * 1024, "the database grew by {grown} bytes");
    assert!(logged < 2 * N * 2048, "the log grew by {logged} bytes");
}
