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

/// Runs `hubsim ARGS --hub … --login …` against `p`: (success, stdout, stderr).
async fn run(p: &Proc, args: &[&str]) -> (bool, String, String) {
    let (http, login) = (p.ready.http.clone(), p.ready.service.to_string());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = hubsim().args(&args).args(["--hub", &http, "--login", &login]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
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
    let policy = "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = hubsim().args(["sas", "--connection-string", policy, "--ttl", "60"]).output().unwrap();
    let token = String::from_utf8_lossy(&out.stdout);
    assert!(token.starts_with("SharedAccessSignature sr=localhost&sig="), "{token}");
    assert!(token.trim_end().ends_with("&skn=iothubowner"), "{token}");
    let out = hubsim().args(["c2d", "send", "d", "--ttl", "18446744073709551"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));
}

#[test]
fn retention_flags_are_checked_by_name() {
    for (flag, bad) in
        [("--retention-hours", "0"), ("--retention-hours", "8761"), ("--max-events", "0"), ("--host-name", "bad host")]
    {
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

#[tokio::test]
async fn registry_twin_tags_query_and_purge_through_the_iot_hub_api() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    for id in ["t1", "t2"] {
        let (ok, out, err) = run(&p, &["device", "create", id]).await;
        assert!(ok && out.contains(&format!("DeviceId={id};")), "{out} {err}");
    }
    // A second create reports IoT Hub's error.
    let (ok, _, err) = run(&p, &["device", "create", "t1"]).await;
    assert!(!ok && err.contains("already exists") && err.contains("409"), "{err}");
    let (ok, out, err) = run(&p, &["twin", "set-tags", "t1", r#"{"site":"oslo"}"#]).await;
    assert!(ok && out.contains("oslo"), "{out} {err}");
    let (ok, out, err) = run(&p, &["query", "SELECT * FROM devices WHERE tags.site = 'oslo'"]).await;
    assert!(ok, "{err}");
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["deviceId"], "t1");
    let (ok, _, err) = run(&p, &["query", "SELECT * FROM devices ORDER BY deviceId"]).await;
    assert!(!ok && err.contains("ORDER"), "{err}");
    // Disable goes through the device's ETag; the twin and the registry agree.
    let (ok, _, err) = run(&p, &["device", "disable", "t2"]).await;
    assert!(ok, "{err}");
    assert_eq!(p.api("GET", "/devices/t2", None).await["status"], "disabled");
    let (ok, _, err) = run(&p, &["c2d", "send", "t1", "--body", "x"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(&p, &["c2d", "purge", "t1"]).await;
    assert!(ok && out.starts_with("1 message(s) purged"), "{out} {err}");
    let (ok, _, err) = run(&p, &["device", "delete", "t2"]).await;
    assert!(ok, "{err}");
    let (ok, out, _) = run(&p, &["device", "list", "--json"]).await;
    assert!(ok && out.contains("\"t1\"") && !out.contains("\"t2\""), "{out}");
}

#[tokio::test]
async fn serve_keeps_at_most_max_events() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn_with(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path(), &["--max-events", "3"]);
    let d = p.api("PUT", "/devices/few", None).await;
    let key = DeviceKey::from_base64(d["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let mut dev = TestDevice::new("few", key, Via::Mqtt);
    dev.connect(&p).await;
    for i in 0..10 {
        dev.send(Telemetry::new(format!("m{i}"))).await;
        dev.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    }
    let evs = p.api("GET", "/events?device=few&limit=100", None).await;
    let bodies: Vec<&str> = evs.as_array().unwrap().iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies, ["m7", "m8", "m9"], "the oldest went first");
}

#[tokio::test]
async fn simulate_a_local_connection_string_finds_ports_and_ca_and_fails_loudly_when_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let d = p.api("PUT", "/devices/sim-cs", None).await;
    let cs = d["connectionString"].as_str().unwrap().to_owned();
    let (http, login) = (p.ready.http.clone(), p.ready.service.to_string());
    let run = move |cs: String| {
        hubsim()
            .args(["simulate", "--hub", &http, "--login", &login, "--connection-string", &cs])
            .args(["--count", "2", "--rate", "0", "--quiet", "--duration", "20"])
            .output()
            .unwrap()
    };
    // Non-default ports and the generated CA come from the emulator's service API: no --mqtt-port, no --ca.
    let ok = tokio::task::spawn_blocking({
        let run = run.clone();
        let cs = cs.clone();
        move || run(cs)
    })
    .await
    .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(summary["acknowledged"], 2, "{summary}");
    // A refused device (wrong key) is a failure the exit code shows, with the reason.
    let wrong =
        cs.replace(cs.split("SharedAccessKey=").nth(1).unwrap(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let bad = tokio::task::spawn_blocking(move || run(wrong)).await.unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no message was acknowledged") && err.contains("refused"), "{err}");
}

#[tokio::test]
async fn modules_are_managed_with_their_own_keys_twins_and_log_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let (ok, _, err) = run(&p, &["device", "create", "edge"]).await;
    assert!(ok, "{err}");
    // The keys given are the module's keys (they used to be dropped for generated ones).
    let key = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    let (ok, out, err) = run(&p, &["device", "create", "edge", "--module", "filter", "--primary-key", key]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("HostName=localhost;DeviceId=edge;ModuleId=filter;SharedAccessKey={key}"));
    let (ok, _, err) = run(&p, &["device", "create", "edge", "--module", "m2", "--primary-key", "bad"]).await;
    assert!(!ok && err.contains("base64") && err.contains("incomplete"), "{err}");
    // Ids: an empty module, a '/' in a device id and a long module id are each said for what they are.
    let (ok, _, err) = run(&p, &["device", "create", "edge", "--module", ""]).await;
    assert!(!ok && err.contains("--module is empty"), "{err}");
    let (ok, _, err) = run(&p, &["twin", "show", "edge/filter"]).await;
    assert!(!ok && err.contains("`edge --module filter`"), "{err}");
    let long = "m".repeat(129);
    let (ok, _, err) = run(&p, &["device", "show", "edge", "--module", &long]).await;
    assert!(!ok && err.contains("is not a valid module id") && !err.contains("edge/"), "{err}");
    // The module's own twin, desired patch, identity, listing and a log filtered to it.
    let (ok, out, err) = run(&p, &["twin", "set-desired", "edge", "--module", "filter", r#"{"threshold": 7}"#]).await;
    assert!(ok && out.contains("\"threshold\": 7"), "{out} {err}");
    let module_twin = p.api("GET", "/twins/edge/modules/filter", None).await;
    assert_eq!(module_twin["properties"]["desired"]["threshold"], 7);
    assert!(p.api("GET", "/twins/edge", None).await["properties"]["desired"].get("threshold").is_none());
    let (ok, out, _) = run(&p, &["twin", "show", "edge", "--module", "filter"]).await;
    assert!(ok && out.contains("\"moduleId\": \"filter\""), "{out}");
    let (ok, out, _) = run(&p, &["device", "show", "edge", "--module", "filter"]).await;
    assert!(ok && out.contains("\"moduleId\": \"filter\""), "{out}");
    let (ok, out, _) = run(&p, &["device", "modules", "edge"]).await;
    assert!(ok && out.contains("\"filter\""), "{out}");
    let cs = hubsim_proto::ConnectionString::parse(&format!(
        "HostName=localhost;DeviceId=edge;ModuleId=filter;SharedAccessKey={key}"
    ))
    .unwrap();
    let mut dev = TestDevice::with_config(
        hubsim_proto::DeviceConfig::new("localhost", hubsim_proto::DeviceIdentity::module("edge", "filter")),
        DeviceKey::from_base64(key).unwrap(),
        Via::Mqtt,
    );
    let token = cs.password(now_unix() + 600).unwrap().to_string();
    assert!(matches!(dev.connect_with(&p, token, None).await, Event::Connected { .. }));
    dev.send(Telemetry::new("from-module")).await;
    dev.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
    let (ok, out, _) = run(&p, &["events", "--device", "edge/filter"]).await;
    assert!(ok && out.contains(" edge/filter from-module"), "{out}");
    let (ok, out, _) = run(&p, &["events", "--device", "edge/other"]).await;
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, _) = run(&p, &["connections", "--device", "edge/filter"]).await;
    assert!(ok && out.contains("edge/filter"), "{out}");
    let (ok, _, err) = run(&p, &["events", "--device", "edge/"]).await;
    assert!(!ok && err.contains("the module id after '/' is empty"), "{err}");
    // Not subscribed to methods: the module is named as a module.
    let (ok, _, err) = run(&p, &["method", "invoke", "edge", "--module", "filter", "reboot", "--timeout", "5"]).await;
    assert!(!ok && err.contains("module 'filter' of device 'edge' is not online for methods"), "{err}");
    // Deleting the device says its modules went with it.
    let (ok, out, err) = run(&p, &["device", "delete", "edge"]).await;
    assert!(ok && out.trim() == "device 'edge' deleted, with its 1 module(s)", "{out} {err}");
}

#[test]
fn a_hub_url_without_http_and_a_closed_pipe_are_said_or_quiet() {
    for hub in ["127.0.0.1:8080", "https://127.0.0.1:8443"] {
        let out = hubsim().args(["--hub", hub, "--login", "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "device", "list"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("give the emulator's service API as an http:// URL"), "{hub}: {err}");
    }
    // `hubsim sas … | head -c 1`-style: the reader goes before the writer is done. With SIGPIPE ignored, as
    // Rust starts programs, println! panicked ("failed printing to stdout"); now the command ends quietly.
    #[cfg(unix)]
    {
        use std::process::Stdio;
        let cs = "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let mut child = hubsim()
            .args(["sas", "--connection-string", cs])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[tokio::test]
async fn the_data_folder_of_another_emulator_is_named_as_the_likely_cause_of_a_401() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let other = tempfile::tempdir().unwrap();
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    std::fs::write(
        other.path().join("policies.json"),
        format!(r#"[{{"keyName":"iothubowner","primaryKey":"{key}"}}]"#),
    )
    .unwrap();
    let (http, data) = (p.ready.http.clone(), other.path().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        hubsim().args(["device", "list", "--hub", &http]).arg("--data").arg(&data).output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not this emulator's: is --data the data folder of the emulator at"), "{err}");
}

/// `events --follow` whose emulator stops says the stream ended and why, rather than a transport error.
#[tokio::test]
async fn a_follow_whose_emulator_stops_says_the_stream_ended() {
    use std::io::BufRead;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let d = p.api("PUT", "/devices/f1", None).await;
    let key = DeviceKey::from_base64(d["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap()).unwrap();
    let mut dev = TestDevice::new("f1", key, Via::Mqtt);
    dev.connect(&p).await;
    let mut child = hubsim()
        .args(["events", "--follow", "--hub", &p.ready.http, "--login", &p.ready.service.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Markers until one arrives after the follow's stream is open (the first ones may come from the initial read).
    let mut following = false;
    for i in 0..20 {
        dev.send(Telemetry::new(format!("marker-{i}"))).await;
        dev.expect("PUBACK", |e| matches!(e, Event::TelemetryAcked { .. })).await;
        // Earlier lines are skipped; a marker lost between the initial read and the stream's start is not waited
        // for past 2 s.
        let marker = format!("marker-{i}");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(line) = rx.recv().await {
                if line.contains(&marker) {
                    return true;
                }
            }
            false
        })
        .await;
        if seen == Ok(true) && i > 0 {
            following = true;
            break;
        }
    }
    assert!(following, "the follow never printed a marker");
    p.kill9();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("ended the stream: it stopped or restarted"), "{err}");
}
