//! `hubsim`: run the local IoT Hub (`serve`), talk to a running one through its service API (registry, C2D,
//! methods, twins, events, connection log), make SAS tokens, and simulate device fleets. Errors are one clear
//! line and a non-zero exit.

mod args;
mod client;
mod dps;
mod print;
mod serve;
mod simulate;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use hubsim_proto::conn_str::ConnectionString;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use args::{C2dCmd, C2dSend, Cli, Command, DeviceCmd, MethodCmd, SasArgs, StreamArgs, Target, TwinCmd};
use client::{Log, Login, ServiceClient};
use hubsim_proto::ServiceConnectionString;

fn main() -> ExitCode {
    hubsim_hub::limit_malloc_arenas();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_broken_pipe();
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubsim: {}", print::escape(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// A command whose output goes to a pipe that closes (`hubsim query … | head -1`) ends quietly, as other
/// command-line tools do, instead of panicking in `println!`: SIGPIPE gets its default action back (Rust
/// ignores it at start). Not for `serve`, whose log may go to a pipe and which must not die with it; sockets
/// are written with `MSG_NOSIGNAL` and never raise it.
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restores a signal's default disposition at start-up, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let login = match &cli.login {
        Some(cs) => Login::ConnectionString(ServiceConnectionString::parse(cs).map_err(|e| anyhow!("--login: {e}"))?),
        None => Login::DataFolder(cli.data.clone()),
    };
    let hub = ServiceClient::new(&cli.hub, login);
    match cli.command {
        Command::Serve(a) => serve::run(a, &cli.data),
        Command::Device(d) => device(d, &hub),
        Command::C2d(C2dCmd::Send(s)) => c2d_send(s, &hub),
        Command::C2d(C2dCmd::Purge { id }) => {
            check_device_id(&id)?;
            let r = hub.purge_c2d(&id)?;
            println!("{} message(s) purged from '{}'", r["totalMessagesPurged"], print::escape(&id));
            Ok(())
        }
        Command::Query { sql } => {
            print::json(&Value::Array(hub.query(&sql)?));
            Ok(())
        }
        Command::Events(a) => stream(a, &hub, Log::Events, print::event),
        Command::Connections(a) => stream(a, &hub, Log::Connections, print::connection),
        Command::Method(MethodCmd::Invoke { target, name, payload, timeout }) => {
            let module = check_target(&target)?;
            let payload: Value = serde_json::from_str(&payload).context("--payload must be JSON")?;
            let r = hub.invoke_method(&target.id, module, &name, payload, timeout)?;
            println!("status: {}", r["status"]);
            println!("payload: {}", r["payload"]);
            Ok(())
        }
        Command::Twin(TwinCmd::Show { target }) => {
            let module = check_target(&target)?;
            print::json(&hub.twin(&target.id, module)?);
            Ok(())
        }
        Command::Twin(TwinCmd::SetDesired { target, json: j }) => {
            let module = check_target(&target)?;
            let desired: Value = serde_json::from_str(&j).context("the desired patch must be JSON")?;
            print::json(&hub.patch_desired(&target.id, module, desired)?);
            Ok(())
        }
        Command::Twin(TwinCmd::SetTags { target, json: j }) => {
            let module = check_target(&target)?;
            let tags: Value = serde_json::from_str(&j).context("the tags must be JSON")?;
            print::json(&hub.patch_tags(&target.id, module, tags)?);
            Ok(())
        }
        Command::Simulate(a) => simulate::run_cli(a, &hub),
        Command::Sas(a) => sas(a),
        Command::Dps(c) => dps::run(c, &hub),
        Command::Provision(a) => dps::provision(a, &hub),
    }
}

fn sas(a: SasArgs) -> Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let expiry = match a.expiry {
        Some(e) => e,
        // The range of --ttl is checked by clap (at most ten years), so this cannot overflow.
        None => now + a.ttl.unwrap_or(3600),
    };
    // A policy's connection string (no DeviceId) gives a service token; a device's, a device token.
    if let Ok(service) = ServiceConnectionString::parse(&a.connection_string) {
        println!("{}", service.token(expiry));
        return Ok(());
    }
    let cs = ConnectionString::parse(&a.connection_string).map_err(|e| anyhow!("connection string: {e}"))?;
    let token = cs
        .password(expiry)
        .ok_or_else(|| anyhow!("this connection string uses X.509; there is no SAS token to make"))?;
    println!("{token}");
    Ok(())
}

/// Checks a device id given on the command line, and says how to name a module instead of a `/` in it.
fn check_device_id(id: &str) -> Result<()> {
    if let Some((d, m)) = id.split_once('/') {
        bail!(
            "'{}' is not a device id: for module '{}' of device '{}' write `{} --module {}`",
            print::escape(id),
            print::escape(m),
            print::escape(d),
            print::escape(d),
            print::escape(m)
        );
    }
    check_id("device", id)
}

/// IoT Hub's rule for a device or module id (`kind`), said with the characters it takes.
fn check_id(kind: &str, id: &str) -> Result<()> {
    if !hubsim_proto::topic::is_valid_device_id(id) {
        bail!(
            "'{}' is not a valid {kind} id: use 1–128 of A–Z a–z 0–9 and {}",
            print::escape(id),
            hubsim_proto::topic::ID_SPECIALS
        );
    }
    Ok(())
}

/// Checks a `Target`'s ids (IoT Hub's rule for device and module ids alike) and returns its module.
fn check_target(t: &Target) -> Result<Option<&str>> {
    check_device_id(&t.id)?;
    match t.module.as_deref() {
        Some("") => bail!("--module is empty: give the module's id"),
        Some(m) => check_id("module", m).map(|()| Some(m)),
        None => Ok(None),
    }
}

/// `device 'd'` or `module 'm' of device 'd'`, for messages.
fn target_text(id: &str, module: Option<&str>) -> String {
    match module {
        Some(m) => format!("module '{}' of device '{}'", print::escape(m), print::escape(id)),
        None => format!("device '{}'", print::escape(id)),
    }
}

fn device(cmd: DeviceCmd, hub: &ServiceClient) -> Result<()> {
    match cmd {
        DeviceCmd::Create { target, primary_key, secondary_key } => {
            let module = check_target(&target)?;
            let d = hub.create_identity(&target.id, module, primary_key.as_deref(), secondary_key.as_deref())?;
            println!("{}", d["connectionString"].as_str().unwrap_or_default());
        }
        DeviceCmd::Modules { id } => {
            check_device_id(&id)?;
            print::json(&hub.modules(&id)?);
        }
        DeviceCmd::List { json: as_json } => {
            let list = hub.devices()?;
            if as_json {
                print::json(&list);
            } else {
                print::device_table(&list);
            }
        }
        DeviceCmd::Show { target } => {
            let module = check_target(&target)?;
            print::json(&hub.device(&target.id, module)?);
        }
        DeviceCmd::Disable { id } => {
            check_device_id(&id)?;
            hub.set_enabled(&id, false)?;
            println!("device '{}' disabled", print::escape(&id));
        }
        DeviceCmd::Enable { id } => {
            check_device_id(&id)?;
            hub.set_enabled(&id, true)?;
            println!("device '{}' enabled", print::escape(&id));
        }
        DeviceCmd::Delete { target } => {
            let module = check_target(&target)?;
            // Said, because IoT Hub deletes a device's modules with it.
            let modules = match module {
                None => hub.modules(&target.id).ok().and_then(|l| l.as_array().map(Vec::len)).unwrap_or(0),
                Some(_) => 0,
            };
            hub.delete_device(&target.id, module)?;
            match modules {
                0 => println!("{} deleted", target_text(&target.id, module)),
                n => println!("{} deleted, with its {n} module(s)", target_text(&target.id, module)),
            }
        }
    }
    Ok(())
}

fn c2d_send(s: C2dSend, hub: &ServiceClient) -> Result<()> {
    check_device_id(&s.id)?;
    let mut props = serde_json::Map::new();
    for p in &s.props {
        // `NAME=VALUE` gives a value (possibly empty); a bare `NAME` gives a property with no value (null),
        // which IoT Hub sends as `NAME` without `=` (reference §5).
        match p.split_once('=') {
            Some((k, v)) => props.insert(k.to_owned(), Value::String(v.to_owned())),
            None => props.insert(p.clone(), Value::Null),
        };
    }
    let body = json!({
        "body": s.body, "messageId": s.message_id, "correlationId": s.correlation_id,
        "contentType": s.content_type, "contentEncoding": s.content_encoding, "ack": s.ack,
        "ttlSeconds": s.ttl, "properties": props,
    });
    let r = hub.send_c2d(&s.id, body)?;
    println!("queued message {}", print::escape(r["messageId"].as_str().unwrap_or("")));
    Ok(())
}

/// Prints a log from the start, then (with `--follow`) what arrives after; `--device DEVICE/MODULE` keeps one
/// module's records (the service filters by device, the module is picked here).
fn stream(a: StreamArgs, hub: &ServiceClient, log: Log, print: fn(&Value, bool)) -> Result<()> {
    let (device, module) = match a.device.as_deref().map(|d| d.split_once('/').map_or((d, None), |(d, m)| (d, Some(m))))
    {
        Some((d, m)) => {
            if m == Some("") {
                bail!(
                    "--device {}: the module id after '/' is empty",
                    print::escape(a.device.as_deref().unwrap_or(""))
                );
            }
            check_target(&Target { id: d.to_owned(), module: m.map(str::to_owned) })?;
            (Some(d), m)
        }
        None => (None, None),
    };
    let wanted = |v: &Value| module.is_none_or(|m| v["moduleId"].as_str() == Some(m));
    let after = hub.each_record(log, device, |v| {
        if wanted(v) {
            print(v, a.json)
        }
    })?;
    if a.follow {
        hub.follow(log, device, |v| {
            if v["seq"].as_u64().is_some_and(|s| s > after) && wanted(&v) {
                print(&v, a.json);
            }
        })?;
    }
    Ok(())
}
