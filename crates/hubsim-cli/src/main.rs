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

use args::{C2dCmd, C2dSend, Cli, Command, DeviceCmd, MethodCmd, SasArgs, StreamArgs, TwinCmd};
use client::{Log, Login, ServiceClient};
use hubsim_proto::ServiceConnectionString;

fn main() -> ExitCode {
    hubsim_hub::limit_malloc_arenas();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubsim: {}", print::escape(&format!("{e:#}")));
            ExitCode::FAILURE
        }
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
        Command::Method(MethodCmd::Invoke { id, name, payload, timeout }) => {
            let payload: Value = serde_json::from_str(&payload).context("--payload must be JSON")?;
            let r = hub.invoke_method(&id, &name, payload, timeout)?;
            println!("status: {}", r["status"]);
            println!("payload: {}", r["payload"]);
            Ok(())
        }
        Command::Twin(TwinCmd::Show { id }) => {
            print::json(&hub.twin(&id)?);
            Ok(())
        }
        Command::Twin(TwinCmd::SetDesired { id, json: j }) => {
            let desired: Value = serde_json::from_str(&j).context("the desired patch must be JSON")?;
            print::json(&hub.patch_desired(&id, desired)?);
            Ok(())
        }
        Command::Twin(TwinCmd::SetTags { id, json: j }) => {
            let tags: Value = serde_json::from_str(&j).context("the tags must be JSON")?;
            print::json(&hub.patch_tags(&id, tags)?);
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

fn device(cmd: DeviceCmd, hub: &ServiceClient) -> Result<()> {
    match cmd {
        DeviceCmd::Create { id, module: Some(m), .. } => {
            let d = hub.create_module(&id, &m)?;
            println!("{}", d["connectionString"].as_str().unwrap_or_default());
        }
        DeviceCmd::Create { id, module: None, primary_key, secondary_key } => {
            if !hubsim_proto::topic::is_valid_device_id(&id) {
                bail!(
                    "'{}' is not a valid device id: use 1–128 of A–Z a–z 0–9 and -.%_*?!(),:=@$'",
                    print::escape(&id)
                );
            }
            let d = hub.create_device(&id, primary_key.as_deref(), secondary_key.as_deref())?;
            println!("{}", d["connectionString"].as_str().unwrap_or_default());
        }
        DeviceCmd::List { json: as_json } => {
            let list = hub.devices()?;
            if as_json {
                print::json(&list);
            } else {
                print::device_table(&list);
            }
        }
        DeviceCmd::Show { id } => print::json(&hub.device(&id)?),
        DeviceCmd::Disable { id } => {
            hub.set_enabled(&id, false)?;
            println!("device '{}' disabled", print::escape(&id));
        }
        DeviceCmd::Enable { id } => {
            hub.set_enabled(&id, true)?;
            println!("device '{}' enabled", print::escape(&id));
        }
        DeviceCmd::Delete { id } => {
            hub.delete_device(&id)?;
            println!("device '{}' deleted", print::escape(&id));
        }
    }
    Ok(())
}

fn c2d_send(s: C2dSend, hub: &ServiceClient) -> Result<()> {
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

/// Prints a log from the start, then (with `--follow`) what arrives after.
fn stream(a: StreamArgs, hub: &ServiceClient, log: Log, print: fn(&Value, bool)) -> Result<()> {
    let after = hub.each_record(log, a.device.as_deref(), |v| print(v, a.json))?;
    if a.follow {
        hub.follow(log, a.device.as_deref(), |v| {
            if v["seq"].as_u64().is_some_and(|s| s > after) {
                print(&v, a.json);
            }
        })?;
    }
    Ok(())
}
