//! `hubsim dps …` (the emulator's Device Provisioning Service through its service API: enrollments, enrollment
//! groups, registration states, derived keys) and `hubsim provision` (a device registering with DPS, the
//! emulator's or the real one, printing each step and then the device connection string).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use hubsim_device::provision::{Endpoint, ProvisionError};
use hubsim_device::Via;
use hubsim_proto::provisioning::{
    EnrollmentKey, Progress, ProvisioningConfig, ProvisioningError, Registration, GLOBAL_ENDPOINT,
};
use hubsim_proto::sas::DeviceKey;
use serde_json::{json, Value};
use std::path::PathBuf;

use crate::client::{Log, ServiceClient};
use crate::print;

#[derive(Subcommand)]
pub enum DpsCmd {
    /// Individual enrollments: one device, its own symmetric key.
    #[command(subcommand)]
    Enrollment(EnrollmentCmd),
    /// Enrollment groups: devices derive their key from the group key and their registration id.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Registration states: where each registration was assigned.
    #[command(subcommand)]
    Registration(RegistrationCmd),
    /// The registration log: every DPS connection refused, registration (with its outcome) and disconnect, from
    /// the emulator's connection log (stored, with its retention).
    Log {
        /// Only this registration id.
        #[arg(long)]
        registration_id: Option<String>,
        /// Keep printing new records as they arrive.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// What an enrollment or a group is created with.
#[derive(Args)]
pub struct EnrollmentOptions {
    /// Primary key (base64; generated when absent).
    #[arg(long)]
    pub primary_key: Option<String>,
    /// Secondary key (base64; generated when absent).
    #[arg(long)]
    pub secondary_key: Option<String>,
    /// The devices are IoT Edge devices.
    #[arg(long)]
    pub edge: bool,
    /// Create the enrollment disabled (devices get status `disabled`).
    #[arg(long)]
    pub disabled: bool,
    /// Initial twin, JSON: `{"tags":{…},"properties":{"desired":{…}}}`.
    #[arg(long, value_name = "JSON")]
    pub initial_twin: Option<String>,
    /// Reset the twin to the initial twin when a device provisions again (DPS `migrateDeviceData: false`).
    #[arg(long)]
    pub reset_twin_on_reprovision: bool,
}

#[derive(Subcommand)]
pub enum EnrollmentCmd {
    /// Create (or replace) an individual enrollment; prints the ID scope and the key.
    Create {
        registration_id: String,
        /// Device id to create (default: the registration id).
        #[arg(long)]
        device_id: Option<String>,
        #[command(flatten)]
        options: EnrollmentOptions,
    },
    /// List individual enrollments.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an individual enrollment as JSON (keys and registration state included).
    Show { registration_id: String },
    /// Delete an individual enrollment (and its registration state; the device identity stays).
    Delete { registration_id: String },
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// Create (or replace) an enrollment group; prints the ID scope, the group key and, with --registration-id,
    /// the derived device key.
    Create {
        group_id: String,
        /// Also print the derived key of this registration id.
        #[arg(long)]
        registration_id: Option<String>,
        #[command(flatten)]
        options: EnrollmentOptions,
    },
    /// List enrollment groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an enrollment group as JSON.
    Show { group_id: String },
    /// Delete an enrollment group (and the registration states made through it).
    Delete { group_id: String },
    /// Print the device key derived from a group key for a registration id, like
    /// `az iot dps enrollment-group compute-device-key`: from --key (no emulator needed) or from GROUP_ID's key.
    ComputeDeviceKey {
        /// The group whose primary key to derive from (read from the emulator).
        #[arg(required_unless_present = "key")]
        group_id: Option<String>,
        #[arg(long)]
        registration_id: String,
        /// A group key (base64) to derive from instead.
        #[arg(long, conflicts_with = "group_id")]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RegistrationCmd {
    /// Show a registration state as JSON.
    Show { registration_id: String },
    /// List registration states.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a registration state (the next registration is an initial assignment again).
    Delete { registration_id: String },
}

#[derive(Args)]
pub struct ProvisionArgs {
    /// The DPS ID scope (`hubsim dps enrollment create` prints the emulator's).
    #[arg(long)]
    pub id_scope: String,
    #[arg(long)]
    pub registration_id: String,
    /// The individual enrollment's key, or with --group-key the enrollment group's key.
    #[arg(long)]
    pub key: String,
    /// --key is an enrollment group key: the device key is derived from it and the registration id.
    #[arg(long)]
    pub group_key: bool,
    /// DPS host (the emulator: its --host-name, e.g. localhost).
    #[arg(long, default_value = GLOBAL_ENDPOINT)]
    pub provisioning_host: String,
    /// Port (default 8883 for mqtt, 443 for ws).
    #[arg(long)]
    pub port: Option<u16>,
    /// CA certificate to trust (default: the public roots; for a loopback host, the emulator's /ca.pem via --hub).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Custom JSON payload sent with the registration, e.g. '{"modelId":"dtmi:com:example:Thermostat;1"}'.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    #[arg(long, value_parser = ["mqtt", "ws"], default_value = "mqtt")]
    pub transport: String,
    /// Provision N devices of the group (with --group-key): registration ids `{registration-id}-0 …
    /// {registration-id}-{N-1}`, 16 at a time; prints their connection strings one per line, in order, for
    /// `hubsim simulate --connection-strings FILE`.
    #[arg(long, requires = "group_key", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: Option<u32>,
}

pub fn run(cmd: DpsCmd, hub: &ServiceClient) -> Result<()> {
    match cmd {
        DpsCmd::Enrollment(c) => enrollment(c, hub),
        DpsCmd::Group(c) => group(c, hub),
        DpsCmd::Registration(c) => registration(c, hub),
        DpsCmd::Log { registration_id, follow, json } => log(hub, registration_id.as_deref(), follow, json),
    }
}

/// DPS records of the connection log (operations `dpsRegister`, `dpsConnectRefused`, `dpsDisconnect`).
fn is_dps_record(v: &Value) -> bool {
    v["operation"].as_str().is_some_and(|o| o.starts_with("dps"))
}

/// The reason of the newest refused DPS connection of `registration_id` in the emulator's connection log at or
/// after `since` (ISO 8601 UTC, as the log writes its times: this attempt's, not an earlier one's). Refusals are
/// stored at most 10 a second, so there may be none.
fn refusal_reason(hub: &ServiceClient, registration_id: &str, since: &str) -> Option<String> {
    let mut reason = None;
    hub.each_record(Log::Connections, Some(registration_id), |v| {
        if v["operation"] == "dpsConnectRefused" && v["time"].as_str().is_some_and(|t| t >= since) {
            reason = v["description"].as_str().map(str::to_owned);
        }
    })
    .ok()?;
    reason
}

/// `refused` (a refusal by the emulator's DPS of `registration_id`, in words) with the reason its log gives for
/// this attempt, or the command that shows it.
fn with_reason(hub: &ServiceClient, registration_id: &str, since: &str, refused: &str) -> String {
    match refusal_reason(hub, registration_id, since) {
        Some(why) => format!("{}; the emulator's DPS log says: {}", print::escape(refused), print::escape(&why)),
        None => format!(
            "{} (`hubsim dps log --registration-id {}` shows the emulator's reason)",
            print::escape(refused),
            print::escape(registration_id)
        ),
    }
}

fn log(hub: &ServiceClient, registration_id: Option<&str>, follow: bool, as_json: bool) -> Result<()> {
    let after = hub.each_record(Log::Connections, registration_id, |v| {
        if is_dps_record(v) {
            print::connection(v, as_json);
        }
    })?;
    if follow {
        hub.follow(Log::Connections, registration_id, |v| {
            if is_dps_record(&v) && v["seq"].as_u64().is_some_and(|s| s > after) {
                print::connection(&v, as_json);
            }
        })?;
    }
    Ok(())
}

fn body(o: &EnrollmentOptions) -> Result<Value> {
    let mut b = json!({
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": o.primary_key, "secondaryKey": o.secondary_key}},
        "capabilities": {"iotEdge": o.edge},
        "provisioningStatus": if o.disabled { "disabled" } else { "enabled" },
        "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": !o.reset_twin_on_reprovision},
    });
    if let Some(t) = &o.initial_twin {
        b["initialTwin"] = serde_json::from_str(t).context("--initial-twin must be JSON")?;
    }
    Ok(b)
}

fn text(v: &Value) -> String {
    print::escape(v.as_str().unwrap_or_default())
}

/// The ID scope and provisioning host of the emulator, for the printed instructions.
fn scope_and_host(hub: &ServiceClient) -> (String, String) {
    let info = hub.info().unwrap_or(Value::Null);
    (text(&info["idScope"]), info["hostName"].as_str().map(print::escape).unwrap_or_else(|| "localhost".into()))
}

fn enrollment(cmd: EnrollmentCmd, hub: &ServiceClient) -> Result<()> {
    match cmd {
        EnrollmentCmd::Create { registration_id, device_id, options } => {
            let mut b = body(&options)?;
            b["registrationId"] = json!(registration_id);
            if let Some(d) = device_id {
                b["deviceId"] = json!(d);
            }
            let e = hub.put_enrollment(&registration_id, b)?;
            let (scope, host) = scope_and_host(hub);
            let key = text(&e["attestation"]["symmetricKey"]["primaryKey"]);
            println!("ID scope:          {scope}");
            println!("registration id:   {}", text(&e["registrationId"]));
            println!("primary key:       {key}");
            println!("secondary key:     {}", text(&e["attestation"]["symmetricKey"]["secondaryKey"]));
            println!("status:            {}", text(&e["provisioningStatus"]));
            println!(
                "provision with:    hubsim provision{} --provisioning-host {host} --id-scope {scope} --registration-id {} --key {key}",
                hub.hub_arg(),
                text(&e["registrationId"])
            );
        }
        EnrollmentCmd::List { json: as_json } => {
            let list = hub.enrollments()?;
            if as_json {
                print::json(&list);
            } else {
                for e in list.as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<9} {}",
                        text(&e["registrationId"]),
                        text(&e["provisioningStatus"]),
                        e["registrationState"]["status"]
                            .as_str()
                            .map(print::escape)
                            .unwrap_or_else(|| "unregistered".into())
                    );
                }
            }
        }
        EnrollmentCmd::Show { registration_id } => print::json(&hub.enrollment(&registration_id)?),
        EnrollmentCmd::Delete { registration_id } => {
            hub.delete_enrollment(&registration_id)?;
            println!("enrollment '{}' deleted", print::escape(&registration_id));
        }
    }
    Ok(())
}

fn derive(group_key: &str, registration_id: &str) -> Result<String> {
    let k = DeviceKey::from_base64(group_key).map_err(|e| anyhow!("the group key: {e}"))?;
    Ok(k.derive_for_registration(registration_id).to_base64())
}

fn group(cmd: GroupCmd, hub: &ServiceClient) -> Result<()> {
    match cmd {
        GroupCmd::Create { group_id, registration_id, options } => {
            let mut b = body(&options)?;
            b["enrollmentGroupId"] = json!(group_id);
            let g = hub.put_enrollment_group(&group_id, b)?;
            let (scope, host) = scope_and_host(hub);
            let key = g["attestation"]["symmetricKey"]["primaryKey"].as_str().unwrap_or_default().to_owned();
            println!("ID scope:          {scope}");
            println!("enrollment group:  {}", text(&g["enrollmentGroupId"]));
            println!("group primary key: {}", print::escape(&key));
            println!("status:            {}", text(&g["provisioningStatus"]));
            println!("(the group key unlocks every device of the group; give devices their derived key)");
            match registration_id {
                Some(r) => {
                    let dk = derive(&key, &r)?;
                    println!("device key of '{}': {dk}", print::escape(&r));
                    println!(
                        "provision with:    hubsim provision{} --provisioning-host {host} --id-scope {scope} --registration-id {} --key {dk}",
                        hub.hub_arg(),
                        print::escape(&r)
                    );
                }
                None => println!(
                    "provision with:    hubsim provision{} --provisioning-host {host} --id-scope {scope} --registration-id <ID> --key <group key> --group-key",
                    hub.hub_arg()
                ),
            }
        }
        GroupCmd::List { json: as_json } => {
            let list = hub.enrollment_groups()?;
            if as_json {
                print::json(&list);
            } else {
                for g in list.as_array().into_iter().flatten() {
                    println!("{:<40} {}", text(&g["enrollmentGroupId"]), text(&g["provisioningStatus"]));
                }
            }
        }
        GroupCmd::Show { group_id } => print::json(&hub.enrollment_group(&group_id)?),
        GroupCmd::Delete { group_id } => {
            hub.delete_enrollment_group(&group_id)?;
            println!("enrollment group '{}' deleted", print::escape(&group_id));
        }
        GroupCmd::ComputeDeviceKey { group_id, registration_id, key } => {
            let key = match (key, group_id) {
                (Some(k), _) => k,
                (None, Some(g)) => hub.enrollment_group(&g)?["attestation"]["symmetricKey"]["primaryKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                (None, None) => bail!("give a group id or --key"),
            };
            println!("{}", derive(&key, &registration_id)?);
        }
    }
    Ok(())
}

fn registration(cmd: RegistrationCmd, hub: &ServiceClient) -> Result<()> {
    match cmd {
        RegistrationCmd::Show { registration_id } => print::json(&hub.registration(&registration_id)?),
        RegistrationCmd::List { json: as_json } => {
            let list = hub.registrations()?;
            if as_json {
                print::json(&list);
            } else {
                for r in list.as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<9} {:<34} {}",
                        text(&r["registrationId"]),
                        text(&r["status"]),
                        text(&r["substatus"]),
                        text(&r["deviceId"])
                    );
                }
            }
        }
        RegistrationCmd::Delete { registration_id } => {
            hub.delete_registration(&registration_id)?;
            println!("registration '{}' deleted", print::escape(&registration_id));
        }
    }
    Ok(())
}

pub(crate) fn is_loopback_name(host: &str) -> bool {
    matches!(host.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

/// `hubsim provision`: registers, printing each step on stderr, then the connection string on stdout.
pub fn provision(a: ProvisionArgs, hub: &ServiceClient) -> Result<()> {
    let via = if a.transport == "ws" { Via::Ws } else { Via::Mqtt };
    // The emulator publishes its ports: a local provisioning host on non-default ports needs no --port.
    let local_ports = is_loopback_name(&a.provisioning_host).then(|| hub.info().ok()).flatten();
    let published = |k: &str| local_ports.as_ref().and_then(|i| i[k].as_u64()).and_then(|p| u16::try_from(p).ok());
    let port = a.port.or(if via == Via::Ws { published("wsPort") } else { published("mqttPort") });
    let port = port.unwrap_or(if via == Via::Ws { 443 } else { 8883 });
    let key = DeviceKey::from_base64(&a.key).map_err(|e| anyhow!("--key: {e}"))?;
    let key = if a.group_key { EnrollmentKey::Group(key) } else { EnrollmentKey::Individual(key) };
    let ca =
        match &a.ca {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading --ca {}", p.display()))?),
            None if is_loopback_name(&a.provisioning_host) => Some(hub.ca_pem().context(
                "fetching the emulator's CA certificate (pass --ca, or --hub for the emulator's service API)",
            )?),
            None => None,
        };
    if let Some(n) = a.count {
        return provision_many(&a, n, ca.as_deref(), port, via, key, hub);
    }
    let tls = hubsim_device::tls_config(ca.as_deref())?;
    let mut config = ProvisioningConfig::new(&a.id_scope, &a.registration_id);
    config.client_version = Some(format!("hubsim/{}", env!("CARGO_PKG_VERSION")));
    config.payload = a.payload.clone();
    let endpoint = Endpoint { host: a.provisioning_host.clone(), port, via };
    eprintln!(
        "provisioning '{}' (ID scope {}) at {}:{port} over {}",
        print::escape(&a.registration_id),
        print::escape(&a.id_scope),
        print::escape(&a.provisioning_host),
        a.transport
    );
    let rt = tokio::runtime::Runtime::new()?;
    let since = hubsim_hub::timefmt::iso8601(hubsim_hub::timefmt::unix_ms());
    let result = rt.block_on(hubsim_device::provision::provision(tls, &endpoint, config, &key, |p| match p {
        Progress::Connecting => eprintln!("  connecting to DPS"),
        Progress::Registering { attempt } => eprintln!("  registering (attempt {attempt})"),
        Progress::Assigning { operation_id, retry_in } => eprintln!(
            "  assigning (operation {}); asking again in {} s",
            print::escape(operation_id),
            retry_in.as_secs_f32()
        ),
        Progress::Retrying { status, retry_in } => {
            eprintln!("  DPS answered {status}; trying again in {} s", retry_in.as_secs_f32())
        }
    }));
    let (registration, device_key) = match result {
        Ok(r) => r,
        Err(ProvisionError::Transport(e)) => bail!("{e}"),
        // The emulator's DPS knows why: its connection log names the reason (a wrong scope, no enrollment, a key
        // that verifies against nothing), which CONNACK's one code cannot say.
        Err(e @ ProvisionError::Dps(ProvisioningError::Refused(_))) if is_loopback_name(&a.provisioning_host) => {
            bail!("{}", with_reason(hub, &a.registration_id, &since, &e.to_string()))
        }
        Err(e) => bail!("{}", print::escape(&e.to_string())),
    };
    match registration {
        Registration::Assigned(asg) => {
            eprintln!(
                "  assigned to {} as device '{}'{}",
                print::escape(&asg.assigned_hub),
                print::escape(&asg.device_id),
                asg.substatus.as_deref().map(|s| format!(" ({})", print::escape(s))).unwrap_or_default()
            );
            if let Some(p) = &asg.payload {
                eprintln!("  returned payload: {}", print::escape(p));
            }
            println!("{}", asg.connection_string(&device_key));
            Ok(())
        }
        Registration::Disabled => bail!("DPS answered 'disabled': the enrollment (or this registration) is disabled"),
        Registration::Unassigned => bail!("DPS answered 'unassigned': no IoT hub was assigned"),
        Registration::Failed { error_code, message } => bail!(
            "DPS answered 'failed'{}: {}",
            error_code.map(|c| format!(" (error {c})")).unwrap_or_default(),
            print::escape(&message)
        ),
    }
}

/// Devices provisioned at once by `hubsim provision --count`.
const FLEET_CONCURRENCY: usize = 16;

/// One registration of `hubsim provision --count N`: its connection string, or (registration id, why, whether DPS
/// refused the connection).
type FleetLine = Result<String, (String, String, bool)>;

/// How many failed registrations of `hubsim provision --count N` get the emulator's reason looked up.
const MAX_REASONS_LOOKED_UP: u32 = 5;

/// `hubsim provision --count N`: N devices of a group, 16 registrations in flight; a line per device on stderr,
/// the connection strings on stdout in registration-id order. Fails (after the others finish) if any failed.
fn provision_many(
    a: &ProvisionArgs,
    n: u32,
    ca: Option<&[u8]>,
    port: u16,
    via: Via,
    key: EnrollmentKey,
    hub: &ServiceClient,
) -> Result<()> {
    let tls = hubsim_device::tls_config(ca)?;
    let endpoint = Endpoint { host: a.provisioning_host.clone(), port, via };
    eprintln!(
        "provisioning {n} devices '{}-0' … '{}-{}' (ID scope {}) at {}:{port} over {}",
        print::escape(&a.registration_id),
        print::escape(&a.registration_id),
        n - 1,
        print::escape(&a.id_scope),
        print::escape(&a.provisioning_host),
        a.transport
    );
    let rt = tokio::runtime::Runtime::new()?;
    let since = hubsim_hub::timefmt::iso8601(hubsim_hub::timefmt::unix_ms());
    // Refused by the emulator's DPS: its log says why (for the first few; the rest are likely the same).
    let local = is_loopback_name(&a.provisioning_host);
    let results: Vec<FleetLine> = rt.block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(FLEET_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let id = format!("{}-{i}", a.registration_id);
            let mut config = ProvisioningConfig::new(&a.id_scope, &id);
            config.client_version = Some(format!("hubsim/{}", env!("CARGO_PKG_VERSION")));
            config.payload = a.payload.clone();
            let (tls, endpoint, key, sem) = (tls.clone(), endpoint.clone(), key.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let r = hubsim_device::provision::provision(tls, &endpoint, config, &key, |_| {}).await;
                let line = match r {
                    Ok((Registration::Assigned(asg), dk)) => {
                        eprintln!(
                            "  {}: assigned to {} as '{}'",
                            print::escape(&id),
                            print::escape(&asg.assigned_hub),
                            print::escape(&asg.device_id)
                        );
                        Ok(asg.connection_string(&dk).to_string())
                    }
                    Ok((other, _)) => Err((id, format!("{other:?}"), false)),
                    Err(e) => {
                        let refused = matches!(e, ProvisionError::Dps(ProvisioningError::Refused(_)));
                        Err((id, e.to_string(), refused))
                    }
                };
                (i, line)
            });
        }
        let mut out: Vec<Option<FleetLine>> = (0..n).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, line)) = joined {
                out[i as usize] = Some(line);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| Err((format!("{}-{i}", a.registration_id), "the task failed".into(), false)))
            })
            .collect()
    });
    let mut failed = 0;
    for r in &results {
        match r {
            Ok(cs) => println!("{cs}"),
            Err((id, e, refused)) => {
                failed += 1;
                let text = if *refused && local && failed <= MAX_REASONS_LOOKED_UP {
                    with_reason(hub, id, &since, e)
                } else {
                    print::escape(e)
                };
                eprintln!("  failed: {}: {text}", print::escape(id));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {n} registrations failed");
    }
    Ok(())
}
