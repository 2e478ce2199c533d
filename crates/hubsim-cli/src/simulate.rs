//! `hubsim simulate`: builds a fleet configuration from the arguments (connection strings, or devices created
//! on the emulator given by `--hub`; what to send: the padded payload, `--template FILE` or `--model
//! FILE|builtin:NAME` with `--reject PROP`; `--seed N`) and runs hubsim-device's fleet, whose module docs say
//! what each device does.

use anyhow::{anyhow, bail, Context, Result};
use hubsim_device::fleet::{read_connection_strings, run, PayloadSource, SimConfig};
use hubsim_device::message::{MessageTemplate, Schedule};
use hubsim_device::pnp::ModelSpec;
use hubsim_device::Via;
use hubsim_proto::conn_str::ConnectionString;
use hubsim_proto::endpoint::{MQTT_TLS_PORT, WEBSOCKET_PORT};
use std::sync::Arc;

use crate::args::SimArgs;
use crate::client::ServiceClient;

/// How long the devices have to disconnect after Ctrl+C before the command gives up on the summary.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads `--template` or `--model` (before any device is created, so a bad file costs nothing).
fn payload_source(a: &SimArgs) -> Result<PayloadSource> {
    if let Some(f) = &a.template {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let t = MessageTemplate::parse(&text).with_context(|| format!("in {}", f.display()))?;
        return Ok(PayloadSource::Template(Arc::new(t)));
    }
    if let Some(m) = &a.model {
        let model = if let Some(key) = m.strip_prefix("builtin:") {
            let known = hubsim_dtdl::builtin::ALL.map(|b| b.key).join(", ");
            let b = hubsim_dtdl::builtin::find(key)
                .ok_or_else(|| anyhow!("--model: no built-in model {key:?}; built-in: {known}"))?;
            b.load().map_err(|e| anyhow!("built-in model {key}: {e}"))?
        } else {
            let text = std::fs::read_to_string(m).with_context(|| format!("reading {m}"))?;
            hubsim_dtdl::Model::parse(&text).map_err(|e| anyhow!("{m}: {e}"))?
        };
        let spec = ModelSpec::new(model, a.reject.clone()).map_err(|e| anyhow!("--model {m}: telemetry: {e}"))?;
        spec.check_rejects().map_err(|e| anyhow!("{e}"))?;
        return Ok(PayloadSource::Model(Arc::new(spec)));
    }
    Ok(PayloadSource::Padded)
}

/// The schedule a run follows, in words: `every 500 ms ± 50 ms, 4 messages per device, for 9 s`.
fn describe(s: &Schedule, by_template: bool, count: u64, duration: Option<std::time::Duration>) -> String {
    let mut out = if by_template {
        let list = |l: &[u32]| l.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let mut t = format!("every {} ms", list(&s.intervals.default_ms));
        if s.jitter_ms > 0 {
            t += &format!(" ± {} ms", s.jitter_ms);
        }
        for (device, l) in &s.intervals.per_device {
            t += &format!(" ({device}: {} ms)", list(l));
        }
        t
    } else {
        "--rate".to_owned()
    };
    out += &match count {
        0 => ", no message limit".to_owned(),
        n => format!(", {n} messages per device"),
    };
    if let Some(d) = duration {
        out += &format!(", for {} s", d.as_secs_f64());
    }
    out
}

pub fn run_cli(a: SimArgs, hub: &ServiceClient) -> Result<()> {
    let payload = payload_source(&a)?;
    let seed = a.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let from_hub = a.connection_string.is_none() && a.connection_strings.is_none();
    let devices = if let Some(cs) = &a.connection_string {
        vec![ConnectionString::parse(cs).map_err(|e| anyhow!("--connection-string: {e}"))?]
    } else if let Some(f) = &a.connection_strings {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        read_connection_strings(&text).with_context(|| format!("in {}", f.display()))?
    } else {
        let n = a
            .devices
            .ok_or_else(|| anyhow!("give --connection-string, --connection-strings FILE, or --devices N with --hub"))?;
        let mut out = Vec::with_capacity(n);
        // `sim` gives sim-0, sim-1…; a prefix that ends in a separator already (`th-`, `th_`) gets no other.
        let sep = if a.prefix.ends_with(['-', '_', '.', ':']) { "" } else { "-" };
        if n > 0 {
            let last = if n > 1 { format!(" … {}{sep}{}", a.prefix, n - 1) } else { String::new() };
            eprintln!("devices: {}{sep}0{last}", a.prefix);
        }
        for i in 0..n {
            let id = format!("{}{sep}{i}", a.prefix);
            let d = match hub.device(&id, None) {
                Ok(d) => d,
                Err(e) if e.status() == Some(404) => hub.create_identity(&id, None, None, None)?,
                Err(e) => return Err(e.into()),
            };
            let cs =
                d["connectionString"].as_str().ok_or_else(|| anyhow!("the emulator returned no connection string"))?;
            out.push(ConnectionString::parse(cs).map_err(|e| anyhow!("{e}"))?);
        }
        out
    };
    let (mut host, mut mqtt_port, mut ws_port, mut ca_pem) = (a.host.clone(), MQTT_TLS_PORT, WEBSOCKET_PORT, None);
    // Devices of the emulator (created here, or connection strings naming localhost): its ports and CA come from
    // its service API (--hub), so a non-default port or the generated CA need no extra flags.
    let local = devices.iter().all(|d| crate::dps::is_loopback_name(d.connect_host()));
    if from_hub || local {
        match hub.info() {
            Ok(info) => {
                let port = |k: &str, d| info[k].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(d);
                mqtt_port = port("mqttPort", MQTT_TLS_PORT);
                ws_port = port("wsPort", WEBSOCKET_PORT);
                if host.is_none() {
                    host = Some("localhost".into());
                }
                if a.ca.is_none() {
                    ca_pem = Some(hub.ca_pem()?);
                }
            }
            Err(e) if from_hub => return Err(e.into()),
            // A local server that is not the emulator: the defaults and --ca apply.
            Err(_) => {}
        }
    }
    if let Some(ca) = &a.ca {
        ca_pem = Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    // A template file's schedule applies where the command line says nothing.
    let schedule = match &payload {
        PayloadSource::Template(t) => Some(t.schedule.clone()),
        _ => None,
    };
    let pace_by_template = schedule.is_some() && a.rate.is_none();
    let count = a.count.or(schedule.as_ref().map(|s| u64::from(s.count))).unwrap_or(0);
    let duration = match (a.duration, &schedule) {
        (Some(secs), _) => Some(std::time::Duration::from_secs(secs)),
        (None, Some(s)) if s.duration_ms > 0 => Some(std::time::Duration::from_millis(u64::from(s.duration_ms))),
        _ => None,
    };
    if let Some(s) = schedule.as_ref().filter(|_| pace_by_template) {
        // An Intervals map keyed by devices of another run: say so rather than pace by the default unnoticed.
        let unknown: Vec<&str> = s
            .intervals
            .per_device
            .iter()
            .map(|(d, _)| d.as_str())
            .filter(|d| !devices.iter().any(|c| c.device_id == *d))
            .collect();
        if !unknown.is_empty() {
            eprintln!(
                "(the file's Intervals name devices not simulated here: {}; devices without their own intervals use {} ms)",
                crate::print::escape(&unknown.join(", ")),
                s.intervals.default_ms.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if let Some(s) = schedule.as_ref().filter(|_| !a.quiet) {
        eprintln!(
            "(schedule: {}; --rate, --count and --duration override the file)",
            describe(s, pace_by_template, count, duration)
        );
    }
    // Ctrl+C stops the devices cleanly (DISCONNECT) and still prints the summary.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = SimConfig {
        devices,
        host,
        mqtt_port: a.mqtt_port.unwrap_or(mqtt_port),
        ws_port: a.ws_port.unwrap_or(ws_port),
        ca_pem,
        via: if a.transport == "ws" { Via::Ws } else { Via::Mqtt },
        rate: a.rate.unwrap_or(1.0),
        pace_by_template,
        count,
        qos: a.qos,
        size: a.size,
        duration,
        drain: hubsim_device::fleet::DRAIN,
        live: !a.quiet,
        payload,
        seed,
        events: None,
        stop: Some(stop_rx),
    };
    if cfg.count == 0 && cfg.duration.is_none() && !a.quiet {
        eprintln!("(no --count or --duration: running until Ctrl+C)");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let summary = rt.block_on(async move {
        let run = run(cfg);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => return r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
        // Stopping interrupts every wait, so devices leave at once; a connection attempt may take a moment.
        match tokio::time::timeout(STOP_GRACE, &mut run).await {
            Ok(r) => r.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow!("interrupted (the devices did not stop within {} s)", STOP_GRACE.as_secs())),
        }
    })?;
    crate::print::json(&summary);
    let failed =
        summary["errors"].as_u64().unwrap_or(0) > 0 || summary["failures"].as_array().is_some_and(|f| !f.is_empty());
    if failed && summary["acknowledged"].as_u64().unwrap_or(0) == 0 {
        let first = summary["failures"][0].as_str().unwrap_or("see the summary above");
        bail!("no message was acknowledged: {}", crate::print::escape(first));
    }
    Ok(())
}
