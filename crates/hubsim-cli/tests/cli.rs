//! The `hubsim` command as a user runs it: argument handling, the ready file, and human output that a device's
//! text cannot use to drive the terminal.

use hubsim_proto::device::{Event, Telemetry};
use hubsim_proto::sas::DeviceKey;
use hubsim_testkit::*;
use std::path::Path;
use std::process::Command;

fn hubsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hubsim"))
}

#[test]
fn hub_is_a_global_option() {
    // Before: `hubsim --hub URL device create x` was refused by the argument parser. Now it reaches the network
    // step (nothing listens on port 1) and says so.
    let out = hubsim().args(["--hub", "http://127.0.0.1:1", "device", "create", "x"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach the emulator at http://127.0.0.1:1"), "{err}");
    let out = hubsim().args(["device", "list", "--hub", "http://127.0.0.1:1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the emulator"));
}

#[test]
fn out_of_range_lifetimes_are_refused_by_name() {
    let cs = "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = hubsim().args(["sas", "--connection-string", cs, "--ttl", "18446744073709551"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = hubsim().args(["sas", "--connection-string", cs, "--ttl", "60"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("SharedAccessSignature sr=h.azure-devices.net%2Fdevices%2Fd")
    );
    let out = hubsim().args(["c2d", "send", "d", "--ttl", "18446744073709551"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));
}

#[test]
fn retention_flags_are_checked_by_name() {
    for (flag, bad) in [("--retention-hours", "0"), ("--retention-hours", "8761"), ("--max-events", "0")] {
        let out = hubsim().args(["serve", flag, bad]).output().unwrap();
        assert!(!out.status.success(), "{flag} {bad} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag), "{flag} {bad}");
    }
}

#[tokio::test]
async fn ready_file_is_private_and_complete_and_events_are_printed_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("ready.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(p.ready.http.starts_with("http://127.0.0.1:"));
    let d = p.api("PUT", "/devices/tty", None).await;
    let key = DeviceKey::from_base64(d["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let mut dev = TestDevice::new("tty", key, Via::Mqtt);
    dev.connect(&p).await;
    // A body and a property value that would retitle the terminal and clear the screen if printed raw.
    let mut m = Telemetry::new("\u{1b}]0;owned\u{7}\u{1b}[2J hi");
    m.properties.push("p", "\u{1b}[31mred");
    dev.send(m).await;
    dev.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    let (http, login) = (p.ready.http.clone(), p.ready.service.to_string());
    let out = tokio::task::spawn_blocking(move || {
        hubsim().args(["events", "--hub", &http, "--login", &login]).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(!text.contains('\u{1b}'), "no raw escape reaches the terminal: {text:?}");
    assert!(text.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2J hi"), "{text}");
    assert!(text.contains("p: \\u{1b}[31mred"), "{text}");
    // --json stays exact (JSON escapes control characters itself).
    let (http, login) = (p.ready.http.clone(), p.ready.service.to_string());
    let out = tokio::task::spawn_blocking(move || {
        hubsim().args(["events", "--json", "--hub", &http, "--login", &login]).output().unwrap()
    })
    .await
    .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["body"], "\u{1b}]0;owned\u{7}\u{1b}[2J hi");
}
