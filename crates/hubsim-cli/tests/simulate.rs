//! `hubsim simulate --template` and `--model` as a user runs them against a running emulator (`--hub`): the
//! files and flags are read, the devices created, and the summary counts what the devices did.

use hubsim_testkit::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

async fn simulate(p: &Proc, args: &[&str]) -> (bool, Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubsim"));
    cmd.args(["simulate", "--hub", &p.ready.http, "--login", &p.ready.service.to_string(), "--quiet"]).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), summary, stderr)
}

#[tokio::test]
async fn simulate_with_a_template_and_with_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let file = tmp.path().join("message.json");
    std::fs::write(
        &file,
        r#"{"name": "counter", "template": "{\"n\": $.N, \"d\": \"$.DeviceId\"}", "variables": [{"name": "N"}],
            "header": "{\"who\": \"$.DeviceId\"}"}"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (ok, s, err) = simulate(
        &p,
        &["--devices", "2", "--prefix", "t", "--count", "3", "--rate", "0", "--template", f, "--seed", "9"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("devices: t-0 … t-1"), "the ids are said: {err}");
    assert_eq!((s["acknowledged"].as_u64(), s["errors"].as_u64()), (Some(6), Some(0)), "{s}");
    assert_eq!((s["template"].as_str(), s["seed"].as_u64()), (Some("counter"), Some(9)), "{s}");
    // A prefix ending in a dash gets no second one.
    let (ok, _, err) = simulate(&p, &["--devices", "1", "--prefix", "th-", "--count", "1", "--rate", "0"]).await;
    assert!(ok && err.contains("devices: th-0"), "{err}");
    assert_eq!(p.api("GET", "/devices/th-0", None).await["deviceId"], "th-0");
    let evs = p.api("GET", "/events?device=t-1", None).await;
    let body = evs.to_string();
    assert!(body.contains(r#"{\"n\": 3, \"d\": \"t-1\"}"#), "{body}");

    // One message per interface with telemetry per tick: the controller's own and its two thermostats'.
    let (ok, s, err) = simulate(
        &p,
        &[
            "--devices",
            "1",
            "--prefix",
            "m",
            "--count",
            "2",
            "--rate",
            "0",
            "--model",
            "builtin:temperature-controller",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(s["acknowledged"], 6, "{s}");
    assert!(s["modelId"].as_str().unwrap().starts_with("dtmi:hubsim:"), "{s}");
    let evs = p.api("GET", "/events?device=m-0", None).await;
    let subjects: Vec<_> =
        evs.as_array().unwrap().iter().map(|e| e["systemProperties"]["dt-subject"].clone()).collect();
    assert_eq!(subjects.iter().filter(|s| **s == "thermostat2").count(), 2, "{evs}");
    assert!(evs.as_array().unwrap().iter().all(|e| e["systemProperties"]["dt-dataschema"] == s["modelId"]), "{evs}");
    // The read-only properties were reported on connect, components wrapped.
    let twin = p.api("GET", "/twins/m-0", None).await;
    assert_eq!(twin["properties"]["reported"]["thermostat1"]["__t"], "c", "{twin}");

    let (ok, _, err) = simulate(&p, &["--devices", "1", "--count", "1", "--model", "builtin:toaster"]).await;
    assert!(!ok);
    assert!(err.contains("no built-in model \"toaster\"; built-in: thermostat, temperature-controller"), "{err}");
    let (ok, _, err) = simulate(&p, &["--devices", "1", "--count", "1", "--reject", "x"]).await;
    assert!(!ok && err.contains("--model"), "{err}");
    // A property the model does not have (a typo) is refused, naming the writable ones.
    let args =
        ["--devices", "1", "--count", "1", "--model", "builtin:temperature-controller", "--reject", "targetTemp"];
    let (ok, _, err) = simulate(&p, &args).await;
    assert!(!ok, "{err}");
    assert!(err.contains("--reject targetTemp: the model has no writable property targetTemp; its writable properties: thermostat1.targetTemperature"), "{err}");
}

#[tokio::test]
async fn a_template_file_schedule_is_followed_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    // An Iot-Telemetry-Simulator configuration: MessageCount bounds the run without --count, and Intervals keyed
    // by a device of another run is pointed out.
    let file = tmp.path().join("its.json");
    std::fs::write(
        &file,
        "{Template: '{\"n\": $.N}', Variables: [{name: 'N'}], Intervals: {elsewhere: 50}, MessageCount: 2}",
    )
    .unwrap();
    let (ok, s, err) = simulate(&p, &["--devices", "2", "--prefix", "its", "--template", file.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert_eq!(
        (s["sent"].as_u64(), s["acknowledged"].as_u64(), s["pending"].as_u64()),
        (Some(4), Some(4), Some(0)),
        "{s}"
    );
    assert_eq!(s["pacing"], "the template's schedule", "{s}");
    assert_eq!(s["sizeBytes"], Value::Null, "{s}");
    assert!(err.contains("the file's Intervals name devices not simulated here: elsewhere"), "{err}");
}
