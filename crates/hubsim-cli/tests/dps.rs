//! `hubsim dps …` and `hubsim provision` as a user runs them against `hubsim serve`: create enrollments, provision
//! over TLS and WebSocket, get a connection string that connects to the hub.

use hubsim_proto::conn_str::{ConnectionString, Credential};
use hubsim_proto::sas::DeviceKey;
use hubsim_testkit::*;
use std::path::Path;
use std::process::{Command, Output};

fn hubsim(p: &Proc, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hubsim"));
    c.arg("--hub").arg(&p.ready.http).arg("--data").arg(dir);
    c
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `label` on its line of the printed summary.
fn field(text: &str, label: &str) -> String {
    let line = text.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no '{label}' in {text}"));
    line[label.len()..].trim().to_owned()
}

#[tokio::test]
async fn enrollments_from_the_cli_provision_over_tls_and_websocket() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_hubsim")), tmp.path());
    let dir = tmp.path().to_path_buf();
    let mqtt_port = p.ready.mqtt_addr.port().to_string();
    let ws_port = p.ready.ws_addr.port().to_string();
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("ready.json")).unwrap()).unwrap();
    let scope_ready = ready["idScope"].as_str().unwrap().to_owned();

    // An individual enrollment, provisioned over MQTT/TLS.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["dps", "enrollment", "create", "cli-dev", "--edge"]);
    let out = ok(tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap());
    let scope = field(&out, "ID scope:");
    assert_eq!(scope, scope_ready);
    let key = field(&out, "primary key:");
    // The line to paste names this emulator (not on the default port here), which gives `provision` its ports.
    let http = p.ready.http.trim_end_matches('/');
    assert!(out.contains(&format!("hubsim provision --hub {http} --provisioning-host localhost")), "{out}");
    let args = ["provision", "--provisioning-host", "localhost", "--port", &mqtt_port, "--id-scope", &scope];
    let mut cmd = hubsim(&p, &dir);
    cmd.args(args).args(["--registration-id", "cli-dev", "--key", &key, "--payload", r#"{"modelId":"dtmi:x;1"}"#]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let cs = ok(out);
    assert!(err.contains("registering (attempt 1)") && err.contains("asking again in 1 s"), "{err}");
    assert!(err.contains("assigned to localhost as device 'cli-dev' (initialAssignment)"), "{err}");
    let cs = ConnectionString::parse(cs.trim()).unwrap();
    assert_eq!((cs.host_name.as_str(), cs.device_id.as_str()), ("localhost", "cli-dev"));
    let Credential::Key(device_key) = cs.credential else { panic!("no key") };
    let mut d = TestDevice::new("cli-dev", device_key, Via::Mqtt);
    d.connect(&p).await;

    // A group: the derived key printed by create and by compute-device-key, provisioned over WebSocket with
    // the group key.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["dps", "group", "create", "cli-group", "--registration-id", "cli-member"]);
    let out = ok(tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap());
    let group_key = field(&out, "group primary key:");
    let derived = field(&out, "device key of 'cli-member':");
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["dps", "group", "compute-device-key", "--key", &group_key, "--registration-id", "cli-member"]);
    assert_eq!(ok(tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()).trim(), derived);
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["provision", "--provisioning-host", "localhost", "--transport", "ws", "--port", &ws_port]);
    cmd.args(["--id-scope", &scope, "--registration-id", "cli-member", "--key", &group_key, "--group-key"]);
    let cs = ok(tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap());
    assert!(cs.contains(&format!("SharedAccessKey={derived}")), "{cs}");

    // A fleet of the group: connection strings in order, one per line, each with its derived key.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["provision", "--provisioning-host", "localhost", "--port", &mqtt_port, "--id-scope", &scope]);
    cmd.args(["--registration-id", "fleet", "--key", &group_key, "--group-key", "--count", "20"]);
    let out = ok(tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20, "{out}");
    let group = DeviceKey::from_base64(&group_key).unwrap();
    for (i, line) in lines.iter().enumerate() {
        let cs = ConnectionString::parse(line).unwrap();
        assert_eq!(cs.device_id, format!("fleet-{i}"));
        assert_eq!(cs.credential, Credential::Key(group.derive_for_registration(&format!("fleet-{i}"))));
    }

    // A wrong ID scope first: the emulator's reason says so.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["provision", "--provisioning-host", "localhost", "--port", &mqtt_port, "--id-scope", "0ne00000000"]);
    cmd.args(["--registration-id", "cli-dev", "--key", &key]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the emulator's DPS log says: ") && err.contains("is not this DPS's"), "{err}");

    // A wrong key: a clear refusal and a failing exit.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(args).args(["--registration-id", "cli-dev", "--key", &derived]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DPS refused the connection (CONNACK 0x05)"), "{err}");
    // The emulator's own reason, which CONNACK's code cannot carry, is fetched from its log.
    assert!(err.contains("the emulator's DPS log says: "), "{err}");
    assert!(err.contains("individual enrollment"), "{err}");
    // This attempt's reason, not the earlier one's.
    assert!(!err.contains("is not this DPS's"), "{err}");
    // A fleet's refusals say the emulator's reason too, on each device's line.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(args).args(["--registration-id", "badfleet", "--key", &derived, "--group-key", "--count", "2"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for id in ["badfleet-0", "badfleet-1"] {
        let line = err.lines().find(|l| l.contains(&format!("failed: {id}:"))).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains("the emulator's DPS log says: "), "{line}");
    }

    // Registrations are listed.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["dps", "registration", "list"]);
    let out = ok(tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap());
    assert!(out.contains("cli-dev") && out.contains("cli-member") && out.contains("assigned"), "{out}");

    // The registration log: the assignment and the refusal of cli-dev, and nothing of the hub connection.
    let mut cmd = hubsim(&p, &dir);
    cmd.args(["dps", "log", "--registration-id", "cli-dev"]);
    let out = ok(tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap());
    assert!(out.contains("dpsRegister") && out.contains("dpsConnectRefused"), "{out}");
    assert!(!out.contains("deviceConnect"), "{out}");
}
