//! A full disk, for real: the emulator's data folder is a small tmpfs (`mount -t tmpfs -o size=…`, which needs
//! root or CAP_SYS_ADMIN; CI runs the tests as root in a container). The disk is filled, a device's telemetry
//! fails, new work is refused with a reason (CONNACK 0x03, IoT Hub's 503001 on the service side), and once space
//! is freed the emulator serves again without a restart.
//!
//! Without the right to mount, the test runs itself again inside a user and mount namespace
//! (`unshare --user --map-root-user --mount`, where an unprivileged user may mount a tmpfs). Only when neither is
//! possible does it say so and pass vacuously.

use hubsim_hub::hub::ServiceError;
use hubsim_proto::device::{Event, LostReason, Telemetry};
use hubsim_testkit::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Exit code of the re-run in a namespace that could not mount either.
const SKIP_CODE: i32 = 77;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut n = 0;
    while f.write_all(&chunk).is_ok() {
        n += chunk.len() as u64;
    }
    let _ = f.sync_all();
    n
}

#[tokio::test]
async fn a_full_disk_refuses_new_work_with_a_reason_and_recovers_when_space_returns() {
    const NAME: &str = "a_full_disk_refuses_new_work_with_a_reason_and_recovers_when_space_returns";
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("small-disk"), "24m") else {
        if std::env::var_os("HUBSIM_FULL_DISK_NS").is_none() {
            let exe = std::env::current_exe().unwrap();
            let status = Command::new("unshare")
                .args(["--user", "--map-root-user", "--mount"])
                .arg(exe)
                .args(["--exact", NAME, "--nocapture"])
                .env("HUBSIM_FULL_DISK_NS", "1")
                .status();
            if let Ok(status) = status {
                if status.code() != Some(SKIP_CODE) {
                    assert!(status.success(), "the full-disk test failed in its namespace");
                    return;
                }
            }
        } else {
            // Inside the namespace and still no mount: tell the parent to skip.
            eprintln!("cannot mount a tmpfs even in a user namespace");
            std::process::exit(SKIP_CODE);
        }
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root, no user namespaces); the full-disk test needs one");
        return;
    };
    let log = LogSink::default();
    let sink = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();
    let data = disk.0.join("data");
    let emu = Emu::start_with(|c| c.data_dir = data.clone()).await;
    let key = emu.device("d1").await;
    let mut d = TestDevice::new("d1", key.clone(), Via::Mqtt);
    d.connect(&emu).await;
    d.send(Telemetry::new("before")).await;
    d.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;

    let filler = disk.0.join("filler");
    fill(&filler);
    let mut availability = emu.hub().store.availability();

    // Telemetry that needs new pages fails: the device is not acknowledged and is disconnected.
    let body = vec![b'x'; 200 * 1024];
    let mut acked_while_full = 0;
    loop {
        d.send(Telemetry::new(body.clone())).await;
        match d.next_event().await.expect("an event") {
            Event::TelemetryAcked { .. } => acked_while_full += 1,
            Event::ConnectionLost { .. } => break,
            _ => {}
        }
        assert!(acked_while_full < 200, "telemetry kept being stored on a full disk");
    }
    let reason = emu.hub().store.unavailable().expect("the store knows it is unavailable");
    assert!(reason.contains("disk"), "{reason}");

    // New work is refused with a reason, not with a wedged database error.
    let mut d2 = TestDevice::new("d1", key.clone(), Via::Mqtt);
    match d2.connect_with(&emu, token(&key, "d1", 3600), None).await {
        Event::ConnectionLost { reason: LostReason::Refused(r), .. } => assert_eq!(r.0, 3, "server unavailable"),
        other => panic!("a CONNECT on a full disk: {other:?}"),
    }
    match emu.hub().create_device("d2", None, None, true).await {
        Err(ServiceError::Api { status: 503, code: 503001, message }) => assert!(message.contains("disk"), "{message}"),
        other => panic!("a registry write on a full disk: {other:?}"),
    }

    // Space returns: the store re-opens the database and serves again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), availability.wait_for(|s| s.is_none()))
        .await
        .expect("recovered within 30 s")
        .unwrap();
    // Logged once when it failed and once when it recovered, not once per refused request.
    assert_eq!(log.count("the database cannot be written"), 1);
    assert_eq!(log.count("the database is writable again"), 1);
    let mut d3 = TestDevice::new("d1", key, Via::Mqtt);
    d3.connect(&emu).await;
    d3.send(Telemetry::new("after")).await;
    d3.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    emu.hub().create_device("d2", None, None, true).await.expect("the registry is writable again");
    let bodies: Vec<String> =
        emu.hub().store.events(0, 1000, Some("d1")).await.unwrap().into_iter().filter_map(|e| e.body).collect();
    assert_eq!(bodies.first().map(String::as_str), Some("before"), "what was acknowledged before is still there");
    assert_eq!(bodies.last().map(String::as_str), Some("after"));
    drop(emu);
}
