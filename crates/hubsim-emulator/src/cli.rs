//! The `hubsim` command line (clap). Errors are one clear line and a non-zero exit.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hubsim_emulator::{Config, Running};
use hubsim_proto::conn_str::ConnectionString;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(name = "hubsim", version, about = "hubsim: a local Azure IoT Hub (emulator) and its command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct HubArg {
    /// The running emulator's HTTP service API.
    #[arg(long, env = "HUBSIM_HUB", default_value = "http://127.0.0.1:8080", global = true)]
    hub: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulator.
    Serve(ServeArgs),
    /// Manage devices in the registry.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Cloud-to-device messages.
    #[command(subcommand)]
    C2d(C2dCmd),
    /// Show device-to-cloud events.
    Events(StreamArgs),
    /// Show the connection log: every connect, refusal and disconnect with its reason.
    Connections(StreamArgs),
    /// Direct methods.
    #[command(subcommand)]
    Method(MethodCmd),
    /// Device twins.
    #[command(subcommand)]
    Twin(TwinCmd),
    /// Print a SAS token for a device connection string (works without an emulator).
    Sas(SasArgs),
    /// Simulate devices: telemetry at a rate, method answers, C2D; live line and a JSON summary.
    Simulate(SimArgs),
}

#[derive(Args)]
struct SimArgs {
    /// One device connection string (works against the real IoT Hub too).
    #[arg(long, conflicts_with_all = ["connection_strings", "devices"])]
    connection_string: Option<String>,
    /// A file of device connection strings, one per line.
    #[arg(long, conflicts_with = "devices")]
    connection_strings: Option<PathBuf>,
    /// Number of devices to create on the emulator given by --hub.
    #[arg(long)]
    devices: Option<usize>,
    /// Device id prefix for --devices.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Messages per second per device (0 = as fast as acknowledgements allow).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Messages per device (0 = until --duration ends).
    #[arg(long, default_value_t = 0)]
    count: u64,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, value_parser = ["mqtt", "ws"], default_value = "mqtt")]
    transport: String,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Host to connect to (default: from the emulator, or the connection string's gateway or hub).
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    mqtt_port: Option<u16>,
    #[arg(long)]
    ws_port: Option<u16>,
    /// CA certificate to trust (default: the emulator's /ca.pem with --hub, the public roots otherwise).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// No live line on stderr.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    hub: HubArg,
}

#[derive(Args)]
struct ServeArgs {
    /// Folder for the database and the generated certificates.
    #[arg(long, default_value = ".hubsim")]
    data: PathBuf,
    /// HostName used in connection strings and SAS audiences.
    #[arg(long, default_value = "localhost")]
    host_name: String,
    /// Address to bind every listener to. MQTT over plain WebSocket is only offered on a loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    #[arg(long, default_value_t = 8883)]
    mqtt_port: u16,
    #[arg(long, default_value_t = 443)]
    ws_port: u16,
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// PEM certificate chain (default: a generated local CA and server certificate).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Folder of the built web app to serve (default: ./dist when it exists).
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// Property added to telemetry sent with RETAIN=1: mqtt-retain (current docs) or x-opt-retain (2016 docs).
    #[arg(long, default_value = "mqtt-retain")]
    retain_property: String,
    /// Create this device at start (if missing) and print its connection string.
    #[arg(long)]
    demo_device: Option<String>,
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Create a device (or, with --module, a module of an existing device) and print its connection string.
    Create {
        id: String,
        /// Create a module identity of device ID instead.
        #[arg(long)]
        module: Option<String>,
        #[arg(long)]
        primary_key: Option<String>,
        #[arg(long)]
        secondary_key: Option<String>,
        #[command(flatten)]
        hub: HubArg,
    },
    /// List devices.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubArg,
    },
    /// Show one device as JSON.
    Show {
        id: String,
        #[command(flatten)]
        hub: HubArg,
    },
    /// Disable a device (closes its connection; new ones are refused with CONNACK 0x03).
    Disable {
        id: String,
        #[command(flatten)]
        hub: HubArg,
    },
    /// Enable a disabled device.
    Enable {
        id: String,
        #[command(flatten)]
        hub: HubArg,
    },
    /// Delete a device.
    Delete {
        id: String,
        #[command(flatten)]
        hub: HubArg,
    },
}

#[derive(Subcommand)]
enum C2dCmd {
    /// Queue a message for a device.
    Send(C2dSend),
}

#[derive(Args)]
struct C2dSend {
    id: String,
    #[arg(long, default_value = "")]
    body: String,
    /// Application property name=value (repeatable).
    #[arg(long = "prop", value_name = "NAME=VALUE")]
    props: Vec<String>,
    #[arg(long)]
    message_id: Option<String>,
    #[arg(long)]
    correlation_id: Option<String>,
    #[arg(long)]
    content_type: Option<String>,
    #[arg(long)]
    content_encoding: Option<String>,
    #[arg(long, value_parser = ["none", "positive", "negative", "full"])]
    ack: Option<String>,
    /// Time to live in seconds (default 3600).
    #[arg(long)]
    ttl: Option<u64>,
    #[command(flatten)]
    hub: HubArg,
}

#[derive(Args)]
struct StreamArgs {
    #[arg(long)]
    device: Option<String>,
    /// Keep printing new records as they arrive.
    #[arg(long)]
    follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hub: HubArg,
}

#[derive(Subcommand)]
enum MethodCmd {
    /// Invoke a direct method and print the device's status and payload.
    Invoke {
        id: String,
        name: String,
        #[arg(long, default_value = "null")]
        payload: String,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        #[command(flatten)]
        hub: HubArg,
    },
}

#[derive(Subcommand)]
enum TwinCmd {
    /// Print the twin.
    Show {
        id: String,
        #[command(flatten)]
        hub: HubArg,
    },
    /// Patch desired properties with a JSON object.
    SetDesired {
        id: String,
        json: String,
        #[command(flatten)]
        hub: HubArg,
    },
}

#[derive(Args)]
struct SasArgs {
    #[arg(long)]
    connection_string: String,
    /// Lifetime in seconds (default 3600).
    #[arg(long, conflicts_with = "expiry")]
    ttl: Option<u64>,
    /// Absolute expiry, Unix seconds.
    #[arg(long)]
    expiry: Option<u64>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubsim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Serve(a) => serve(a),
        Command::Device(d) => device(d),
        Command::C2d(C2dCmd::Send(s)) => c2d_send(s),
        Command::Events(a) => stream(a, "events", print_event),
        Command::Connections(a) => stream(a, "connections", print_connection),
        Command::Method(MethodCmd::Invoke { id, name, payload, timeout, hub }) => {
            let payload: Value = serde_json::from_str(&payload).context("--payload must be JSON")?;
            let r = call(
                &hub,
                "POST",
                &format!("/twins/{}/methods", seg(&id)),
                Some(json!({"methodName": name, "payload": payload, "responseTimeoutInSeconds": timeout})),
            )?;
            println!("status: {}", r["status"]);
            println!("payload: {}", r["payload"]);
            Ok(())
        }
        Command::Twin(TwinCmd::Show { id, hub }) => {
            print_json(&call(&hub, "GET", &format!("/twins/{}", seg(&id)), None)?)
        }
        Command::Twin(TwinCmd::SetDesired { id, json: j, hub }) => {
            let desired: Value = serde_json::from_str(&j).context("the desired patch must be JSON")?;
            print_json(&call(
                &hub,
                "PATCH",
                &format!("/twins/{}", seg(&id)),
                Some(json!({"properties": {"desired": desired}})),
            )?)
        }
        Command::Simulate(a) => simulate(a),
        Command::Sas(a) => {
            let cs = ConnectionString::parse(&a.connection_string).map_err(|e| anyhow!("connection string: {e}"))?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let expiry = a.expiry.unwrap_or(now + a.ttl.unwrap_or(3600));
            let token = cs
                .password(expiry)
                .ok_or_else(|| anyhow!("this connection string uses X.509; there is no SAS token to make"))?;
            println!("{token}");
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let web_dir = a.web_dir.clone().or_else(|| Some(PathBuf::from("dist")).filter(|d| d.join("index.html").exists()));
    let config = Config {
        data_dir: a.data.clone(),
        host_name: a.host_name.clone(),
        bind: a.bind,
        mqtt_port: a.mqtt_port,
        ws_port: a.ws_port,
        http_port: a.http_port,
        tls_cert: a.tls_cert.clone(),
        tls_key: a.tls_key.clone(),
        web_dir: web_dir.clone(),
        retain_property: a.retain_property.clone(),
        ..Config::new(&a.data)
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let running = hubsim_emulator::start(config).await?;
        banner(&running, &a, web_dir.as_ref());
        if let Some(id) = &a.demo_device {
            let d = match running.hub.store.device(id)? {
                Some(d) => d,
                None => running.hub.create_device(id, None, None, true).await.map_err(|e| anyhow!("{e}"))?,
            };
            println!("demo device:    {id}");
            println!("connection string:\n  {}", running.hub.connection_string_with_gateway(&d, Some(&a.host_name)));
        }
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        eprintln!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

fn banner(r: &Running, a: &ServeArgs, web_dir: Option<&PathBuf>) {
    println!("hubsim emulator — HostName {}", a.host_name);
    println!("  MQTT over TLS:        mqtts://{}", r.mqtt_addr);
    println!("  MQTT over WebSocket:  wss://{}/$iothub/websocket", r.ws_addr);
    if a.bind.is_loopback() {
        println!("  (loopback only)       ws://{}/$iothub/websocket", r.http_addr);
    }
    println!("  service API:          http://{}", r.http_addr);
    if let Some(ca) = &r.ca_path {
        println!("  trust this CA:        {}", ca.display());
    }
    if let Some(w) = web_dir {
        println!("  web app:              http://{}/  (from {})", r.http_addr, w.display());
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return std::mem::drop(ctrl_c.await),
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn call(hub: &HubArg, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let url = format!("{}{}", hub.hub.trim_end_matches('/'), path);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => agent.delete(&url).call(),
        ("POST", Some(b)) => agent.post(&url).send_json(b),
        ("POST", None) => agent.post(&url).send_empty(),
        ("PUT", Some(b)) => agent.put(&url).send_json(b),
        ("PUT", None) => agent.put(&url).send_empty(),
        ("PATCH", b) => agent.patch(&url).send_json(b.unwrap_or(Value::Null)),
        _ => bail!("internal: unsupported method {method}"),
    };
    let mut resp = resp
        .map_err(|e| anyhow!("cannot reach the emulator at {}: {e} (is `hubsim serve` running? see --hub)", hub.hub))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let value: Value =
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    if status >= 400 {
        let msg = value.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
        bail!("{msg} (HTTP {status})");
    }
    Ok(value)
}

/// A device id as a URL path segment.
fn seg(id: &str) -> String {
    hubsim_proto::percent::encode(id)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn device(cmd: DeviceCmd) -> Result<()> {
    match cmd {
        DeviceCmd::Create { id, module: Some(m), hub, .. } => {
            let d = call(&hub, "PUT", &format!("/devices/{}/modules/{}", seg(&id), seg(&m)), None)?;
            println!("{}", d["connectionString"].as_str().unwrap_or_default());
            Ok(())
        }
        DeviceCmd::Create { id, module: None, primary_key, secondary_key, hub } => {
            if !hubsim_emulator::hub::valid_device_id(&id) {
                bail!("'{id}' is not a valid device id: use 1–128 of A–Z a–z 0–9 and -.%_*?!(),:=@$'");
            }
            let mut auth = json!({});
            if primary_key.is_some() || secondary_key.is_some() {
                auth = json!({"symmetricKey": {"primaryKey": primary_key, "secondaryKey": secondary_key}});
            }
            if call(&hub, "GET", &format!("/devices/{}", seg(&id)), None).is_ok() {
                bail!("device '{id}' already exists");
            }
            let d = call(&hub, "PUT", &format!("/devices/{}", seg(&id)), Some(json!({"authentication": auth})))?;
            println!("{}", d["connectionString"].as_str().unwrap_or_default());
            Ok(())
        }
        DeviceCmd::List { json: as_json, hub } => {
            let list = call(&hub, "GET", "/devices", None)?;
            if as_json {
                return print_json(&list);
            }
            for d in list.as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<9} {:<12} {} queued",
                    d["deviceId"].as_str().unwrap_or(""),
                    d["status"].as_str().unwrap_or(""),
                    d["connectionState"].as_str().unwrap_or(""),
                    d["cloudToDeviceMessageCount"]
                );
            }
            Ok(())
        }
        DeviceCmd::Show { id, hub } => print_json(&call(&hub, "GET", &format!("/devices/{}", seg(&id)), None)?),
        DeviceCmd::Disable { id, hub } => {
            call(&hub, "POST", &format!("/devices/{}/disable", seg(&id)), None)?;
            println!("device '{id}' disabled");
            Ok(())
        }
        DeviceCmd::Enable { id, hub } => {
            call(&hub, "POST", &format!("/devices/{}/enable", seg(&id)), None)?;
            println!("device '{id}' enabled");
            Ok(())
        }
        DeviceCmd::Delete { id, hub } => {
            call(&hub, "DELETE", &format!("/devices/{}", seg(&id)), None)?;
            println!("device '{id}' deleted");
            Ok(())
        }
    }
}

fn c2d_send(s: C2dSend) -> Result<()> {
    let mut props = serde_json::Map::new();
    for p in &s.props {
        let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("--prop '{p}' is not NAME=VALUE"))?;
        props.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let body = json!({
        "body": s.body, "messageId": s.message_id, "correlationId": s.correlation_id,
        "contentType": s.content_type, "contentEncoding": s.content_encoding, "ack": s.ack,
        "ttlSeconds": s.ttl, "properties": props,
    });
    let r = call(&s.hub, "POST", &format!("/devices/{}/messages/devicebound", seg(&s.id)), Some(body))?;
    println!("queued message {}", r["messageId"].as_str().unwrap_or(""));
    Ok(())
}

fn stream(a: StreamArgs, what: &str, print: fn(&Value, bool)) -> Result<()> {
    let q = a.device.as_ref().map(|d| format!("&device={d}")).unwrap_or_default();
    let mut after = 0u64;
    loop {
        let page = call(&a.hub, "GET", &format!("/{what}?after={after}&limit=1000{q}"), None)?;
        let items = page.as_array().cloned().unwrap_or_default();
        for v in &items {
            print(v, a.json);
            after = v["seq"].as_u64().unwrap_or(after);
        }
        if items.len() < 1000 {
            break;
        }
    }
    if !a.follow {
        return Ok(());
    }
    let url = format!(
        "{}/{what}/stream?{}",
        a.hub.hub.trim_end_matches('/'),
        a.device.map(|d| format!("device={d}")).unwrap_or_default()
    );
    let mut resp = ureq::get(&url).call().map_err(|e| anyhow!("cannot follow {url}: {e}"))?;
    let reader = BufReader::new(resp.body_mut().as_reader());
    for line in reader.lines() {
        let line = line?;
        if let Some(data) = line.strip_prefix("data:") {
            if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                if v["seq"].as_u64().is_some_and(|s| s > after) {
                    print(&v, a.json);
                }
            }
        }
    }
    Ok(())
}

fn print_event(v: &Value, as_json: bool) {
    if as_json {
        let out = json!({
            "deviceId": v["deviceId"], "moduleId": v["moduleId"], "body": v["body"], "bodyBase64": v["bodyBase64"],
            "systemProperties": v["systemProperties"], "applicationProperties": v["applicationProperties"],
            "enqueuedTime": v["enqueuedTime"], "seq": v["seq"],
        });
        println!("{out}");
    } else {
        println!(
            "{} {} {}",
            v["enqueuedTime"].as_str().unwrap_or(""),
            v["deviceId"].as_str().unwrap_or(""),
            v["body"].as_str().unwrap_or("<binary>")
        );
        for (k, val) in v["applicationProperties"].as_object().into_iter().flatten() {
            println!("    {k}: {}", val.as_str().map(str::to_owned).unwrap_or_else(|| val.to_string()));
        }
    }
    let _ = std::io::stdout().flush();
}

fn print_connection(v: &Value, as_json: bool) {
    if as_json {
        println!("{v}");
    } else {
        println!(
            "{} {:<16} {:<14} {:<5} {:>6} {}: {}",
            v["time"].as_str().unwrap_or(""),
            v["operation"].as_str().unwrap_or(""),
            v["deviceId"].as_str().unwrap_or("-"),
            v["transport"].as_str().unwrap_or(""),
            v["resultType"],
            v["reason"].as_str().unwrap_or(""),
            v["description"].as_str().unwrap_or("")
        );
    }
    let _ = std::io::stdout().flush();
}

fn simulate(a: SimArgs) -> Result<()> {
    use hubsim_emulator::client::Via;
    use hubsim_emulator::simulate::{read_connection_strings, run, SimConfig};
    let from_hub = a.connection_string.is_none() && a.connection_strings.is_none();
    let devices = if let Some(cs) = &a.connection_string {
        vec![ConnectionString::parse(cs).map_err(|e| anyhow!("--connection-string: {e}"))?]
    } else if let Some(f) = &a.connection_strings {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        read_connection_strings(&text)?
    } else {
        let n = a
            .devices
            .ok_or_else(|| anyhow!("give --connection-string, --connection-strings FILE, or --devices N with --hub"))?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("{}-{i}", a.prefix);
            let d = match call(&a.hub, "GET", &format!("/devices/{}", seg(&id)), None) {
                Ok(d) => d,
                Err(_) => call(&a.hub, "PUT", &format!("/devices/{}", seg(&id)), Some(json!({})))?,
            };
            let cs =
                d["connectionString"].as_str().ok_or_else(|| anyhow!("the emulator returned no connection string"))?;
            out.push(ConnectionString::parse(cs).map_err(|e| anyhow!("{e}"))?);
        }
        out
    };
    let (mut host, mut mqtt_port, mut ws_port, mut ca_pem) = (a.host.clone(), 8883, 443, None);
    if from_hub {
        let info = call(&a.hub, "GET", "/hubsim-emulator.json", None)?;
        mqtt_port = info["mqttPort"].as_u64().unwrap_or(8883) as u16;
        ws_port = info["wsPort"].as_u64().unwrap_or(443) as u16;
        if host.is_none() {
            host = Some("localhost".into());
        }
        if a.ca.is_none() {
            let url = format!("{}/ca.pem", a.hub.hub.trim_end_matches('/'));
            let mut r = ureq::get(&url).call().map_err(|e| anyhow!("fetching {url}: {e}"))?;
            ca_pem = Some(r.body_mut().read_to_vec()?);
        }
    }
    if let Some(ca) = &a.ca {
        ca_pem = Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    let cfg = SimConfig {
        devices,
        host,
        mqtt_port: a.mqtt_port.unwrap_or(mqtt_port),
        ws_port: a.ws_port.unwrap_or(ws_port),
        ca_pem,
        via: if a.transport == "ws" { Via::Ws } else { Via::Mqtt },
        rate: a.rate,
        count: a.count,
        qos: a.qos,
        size: a.size,
        duration: a.duration.map(std::time::Duration::from_secs),
        live: !a.quiet,
    };
    if cfg.count == 0 && cfg.duration.is_none() {
        eprintln!("(no --count or --duration: running until Ctrl+C)");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let summary = rt.block_on(async move {
        tokio::select! {
            r = run(cfg) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if summary["errors"].as_u64().unwrap_or(0) > 0 && summary["acknowledged"].as_u64().unwrap_or(0) == 0 {
        bail!("no message was acknowledged");
    }
    Ok(())
}
