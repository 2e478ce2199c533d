//! `hubsim serve`: runs the emulator in the foreground until Ctrl+C or SIGTERM, prints where it listens, and
//! writes the machine-readable ready file.

use anyhow::{anyhow, Context, Result};
use hubsim_hub::store::Retention;
use hubsim_hub::{Config, Running};
use hubsim_proto::endpoint::WEBSOCKET_PATH;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::args::ServeArgs;

pub fn run(a: ServeArgs, data: &Path) -> Result<()> {
    // Logs go to stderr: stdout carries the banner, whose first line tells scripts the ready file is complete
    // (start-up logs, e.g. a renewed certificate, would otherwise come first).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let web_dir = a.web_dir.clone().or_else(|| Some(PathBuf::from("dist")).filter(|d| d.join("index.html").exists()));
    let config = Config {
        data_dir: data.to_path_buf(),
        host_name: a.host_name.clone(),
        bind: a.bind,
        mqtt_port: a.mqtt_port,
        ws_port: a.ws_port,
        http_port: a.http_port,
        tls_cert: a.tls_cert.clone(),
        tls_key: a.tls_key.clone(),
        web_dir: web_dir.clone(),
        retain_property: a.retain_property.clone(),
        access: hubsim_hub::api::Access {
            allowed_hosts: a.allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            allowed_origins: a.allow_origins.clone(),
        },
        limits: hubsim_hub::listener::Limits {
            per_listener: a.max_connections,
            per_address: a.max_connections_per_address,
            unauthenticated: a.max_unauthenticated,
            ..Default::default()
        },
        retention: Retention {
            max_age: Duration::from_secs(a.retention_hours * 3600),
            max_events: a.max_events,
            max_connections: a.max_connection_records,
            max_feedback: a.max_feedback_records,
            max_event_bytes: a.max_event_megabytes * 1024 * 1024,
        },
        ..Config::new(data)
    };
    if !a.bind.is_loopback() {
        eprintln!(
            "warning: --bind {} makes the emulator reachable from other machines: its MQTT ports (devices with valid \
             keys), the service API (anyone holding a policy key: every device key, C2D, methods, twins) and the web \
             app. Keep the policy keys in {} secret and see SECURITY.md.",
            a.bind,
            data.join("policies.json").display()
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let running = hubsim_hub::start(config).await?;
        let demo = match &a.demo_device {
            Some(id) => {
                let d = match running.hub.store.device(id).await? {
                    Some(d) => d,
                    None => running.hub.create_device(id, None, None, true).await.map_err(|e| anyhow!("{e}"))?,
                };
                Some((id.clone(), running.hub.connection_string_with_gateway(&d, Some(&a.host_name))))
            }
            None => None,
        };
        if let Some(path) = &a.ready_file {
            let mut info = ready_json(&running, &a, demo.as_ref());
            info["serviceConnectionString"] =
                json!(running.hub.policies.connection_string(&a.host_name, "iothubowner").map(|cs| cs.to_string()));
            hubsim_hub::files::write_private(path, &serde_json::to_vec_pretty(&info)?)
                .with_context(|| format!("writing the ready file {}", path.display()))?;
        }
        let owner = running
            .hub
            .policies
            .connection_string(&a.host_name, "iothubowner")
            .map(|cs| cs.to_string())
            .unwrap_or_default();
        banner(&running, &a, web_dir.as_ref());
        println!("  service connection string (iothubowner; for --login and the service SDKs):\n    {owner}");
        // Python's azure-iot-hub dials https://{HostName}: with a WebSocket/HTTPS port other than 443 it needs the
        // port in HostName (the emulator accepts a token for host:port on that port).
        let ws_port = running.ws_addr.port();
        if ws_port != 443 {
            let with_port = owner.replacen(
                &format!("HostName={};", a.host_name),
                &format!("HostName={}:{ws_port};", a.host_name),
                1,
            );
            println!("  the same for Python's azure-iot-hub on port {ws_port}:\n    {with_port}");
        }
        if let Some((id, cs)) = &demo {
            println!("demo device:    {id}");
            println!("connection string:\n  {cs}");
        }
        let _ = std::io::stdout().flush();
        running.serve_until(shutdown_signal()).await;
        eprintln!("stopped");
        Ok(())
    })
}

/// The ready file: everything a script needs to use this emulator.
fn ready_json(r: &Running, a: &ServeArgs, demo: Option<&(String, String)>) -> Value {
    json!({
        "hostName": a.host_name,
        "mqttAddress": r.mqtt_addr.to_string(),
        "webSocketAddress": r.ws_addr.to_string(),
        "httpAddress": r.http_addr.to_string(),
        "serviceApi": format!("http://{}", r.http_addr),
        "plainWebSocket": a.bind.is_loopback().then(|| format!("ws://{}{WEBSOCKET_PATH}", r.http_addr)),
        "caPath": r.ca_path.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        "idScope": r.hub.id_scope(),
        "provisioningHost": a.host_name,
        "demoDeviceId": demo.map(|d| &d.0),
        "demoConnectionString": demo.map(|d| &d.1),
        "pid": std::process::id(),
    })
}

fn banner(r: &Running, a: &ServeArgs, web_dir: Option<&PathBuf>) {
    println!("hubsim emulator — HostName {}", a.host_name);
    println!("  MQTT over TLS:        mqtts://{}", r.mqtt_addr);
    println!("  MQTT over WebSocket:  wss://{}{WEBSOCKET_PATH}", r.ws_addr);
    if a.bind.is_loopback() {
        println!("  (loopback only)       ws://{}{WEBSOCKET_PATH}", r.http_addr);
    }
    println!("  service API:          http://{}", r.http_addr);
    println!("  DPS (same ports):     ID scope {}, provisioning host {}", r.hub.id_scope(), a.host_name);
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
