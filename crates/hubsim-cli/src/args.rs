//! The `hubsim` command line's arguments (clap): one enum per command group. `--hub` is global, so it may stand
//! anywhere on the line (`hubsim --hub URL device create x`).

use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "hubsim", version, about = "hubsim: a local Azure IoT Hub (emulator) and its command line")]
pub struct Cli {
    /// The running emulator's HTTP service API (every command that talks to a running emulator uses it).
    #[arg(long, env = "HUBSIM_HUB", default_value = "http://127.0.0.1:8080", global = true)]
    pub hub: String,
    /// A shared access policy's connection string for the service API
    /// (`HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…`, printed by `hubsim serve`), like
    /// `az iot … --login`. Default: the iothubowner policy from the data folder (--data).
    #[arg(long, env = "HUBSIM_LOGIN", global = true, hide_env_values = true)]
    pub login: Option<String>,
    /// The emulator's data folder (database, certificates, policies.json).
    #[arg(long, default_value = ".hubsim", global = true)]
    pub data: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Query device twins with IoT Hub's query language, e.g.
    /// "SELECT * FROM devices WHERE tags.site = 'oslo' AND connectionState = 'Connected'".
    Query {
        /// The query, e.g. "SELECT * FROM devices WHERE properties.reported.fw = '1.2'".
        sql: String,
    },
    /// Print a SAS token for a device connection string (works without an emulator).
    Sas(SasArgs),
    /// Simulate devices: telemetry at a rate (padded, from a --template, or a DTDL --model's), method answers,
    /// C2D; live line and a JSON summary.
    Simulate(SimArgs),
    /// The emulator's Device Provisioning Service: enrollments, enrollment groups, registrations.
    #[command(subcommand)]
    Dps(crate::dps::DpsCmd),
    /// Register a device with DPS (the emulator's or the real one) and print its connection string.
    Provision(crate::dps::ProvisionArgs),
}

/// `hubsim simulate`. What each device sends: the padded payload of `--size` by default; `--template FILE` (a
/// saved message or an Iot-Telemetry-Simulator configuration, rendered with per-device state seeded by `--seed`);
/// or `--model FILE|builtin:NAME`, which makes each device the IoT Plug and Play device the model describes
/// (`--reject PROP` answers that writable property with 400). `--count` and `--duration` bound the run.
#[derive(Args)]
pub struct SimArgs {
    /// One device connection string (works against the real IoT Hub too).
    #[arg(long, conflicts_with_all = ["connection_strings", "devices"])]
    pub connection_string: Option<String>,
    /// A file of device connection strings, one per line.
    #[arg(long, conflicts_with = "devices")]
    pub connection_strings: Option<PathBuf>,
    /// Number of devices to create on the emulator given by --hub.
    #[arg(long)]
    pub devices: Option<usize>,
    /// Device id prefix for --devices: `sim` gives sim-0, sim-1…; `th-` gives th-0 (no second dash).
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Ticks per second per device (0 = as fast as acknowledgements allow). A tick is one message, or with
    /// --model one message per component with telemetry. Default: 1, or with --template the file's schedule
    /// (a saved message's `every` ± `jitter`, an Iot-Telemetry-Simulator configuration's `Intervals`).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Ticks per device (0 = until --duration ends). Default: 0, or with --template the file's `count` or
    /// `MessageCount`.
    #[arg(long)]
    pub count: Option<u64>,
    /// MQTT QoS of telemetry (a saved message's `qos` takes precedence).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Size of the padded payload in bytes (without --template or --model).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    #[arg(long, value_parser = ["mqtt", "ws"], default_value = "mqtt")]
    pub transport: String,
    /// Stop sending after this many seconds (then wait up to 5 s for the acknowledgements of what was sent).
    /// Default: until --count, Ctrl+C, or with --template the saved message's `duration`.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Host to connect to (default: from the emulator, or the connection string's gateway or hub).
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub mqtt_port: Option<u16>,
    #[arg(long)]
    pub ws_port: Option<u16>,
    /// CA certificate to trust (default: the emulator's /ca.pem with --hub, the public roots otherwise).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// No live line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Render each message from a template: a hubsim saved message (`{"name", "template", "variables",
    /// "header"?, "qos"?, "properties"?}`) or an Iot-Telemetry-Simulator configuration (relaxed JSON). Each
    /// device keeps its own state (counters, walks), seeded from --seed and its id; the header's entries become
    /// application properties; a JSON body is checked before sending. Without it the padded payload of --size
    /// is sent.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub template: Option<PathBuf>,
    /// Become the device a DTDL model describes (IoT Plug and Play): a model file, or `builtin:thermostat`,
    /// `builtin:temperature-controller`, `builtin:every-schema`. Each device announces the model id, sends one
    /// message per component per tick, reports read-only properties, acknowledges desired properties (also
    /// those set while it was offline) and answers the model's commands, with values generated per schema as
    /// its telemetry is.
    #[arg(long, value_name = "FILE|builtin:NAME")]
    pub model: Option<String>,
    /// With --model: acknowledge this writable property with 400 instead of 200; `prop` (any component) or
    /// `component.prop`. Repeatable.
    #[arg(long, value_name = "PROP", requires = "model")]
    pub reject: Vec<String>,
    /// Seed of the run: the same seed (and the same times) gives the same messages. Default: random, printed
    /// in the summary.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// HostName used in connection strings and SAS audiences: a DNS name or an IP address.
    #[arg(long, default_value = "localhost", value_parser = host_name)]
    pub host_name: String,
    /// Address to bind every listener to. MQTT over plain WebSocket is only offered on a loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Another host name clients may use in `Host` (repeatable), e.g. this machine's LAN name with --bind;
    /// localhost, 127.0.0.1, [::1] and --host-name are always allowed.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// A web origin allowed to open MQTT WebSockets and call the service API from a browser (repeatable):
    /// `https://app.example` or `http://127.0.0.1:*` (any port). The server's own origin is always allowed.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Open connections per listener (MQTT, WebSocket, HTTP each); all listeners together stay within the
    /// process's open-file limit (raised to its hard limit at start), less 256 kept for files.
    #[arg(long, default_value_t = 20_000)]
    pub max_connections: usize,
    /// Open connections per remote address that is not loopback.
    #[arg(long, default_value_t = 1_000)]
    pub max_connections_per_address: usize,
    /// MQTT connections (TLS or WebSocket) that have not authenticated yet, at a time: what they can buffer
    /// before their CONNECT is accepted is bounded by this many packets or WebSocket frames. When all are taken, a
    /// newcomer takes the place held longest without authenticating past 2 s (that connection is closed);
    /// otherwise it waits (10 s).
    #[arg(long, default_value_t = 256)]
    pub max_unauthenticated: usize,
    #[arg(long, default_value_t = 8883)]
    pub mqtt_port: u16,
    #[arg(long, default_value_t = 443)]
    pub ws_port: u16,
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// PEM certificate chain (default: a generated local CA and server certificate).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Folder of the built web app to serve (default: ./dist when it exists).
    #[arg(long)]
    pub web_dir: Option<PathBuf>,
    /// Property added to telemetry sent with RETAIN=1: mqtt-retain (current docs) or x-opt-retain (2016 docs).
    #[arg(long, default_value = "mqtt-retain")]
    pub retain_property: String,
    /// Create this device at start (if missing) and print its connection string.
    #[arg(long)]
    pub demo_device: Option<String>,
    /// Once every listener is bound, write the addresses, the service API URL, the CA path (and the demo
    /// device's connection string) as JSON to this file — created 0600, replaced atomically — before anything
    /// is printed: scripts and tests wait for the first line on stdout, then read it.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Hours events, connection-log and feedback records are kept, like IoT Hub's built-in endpoint (1 day by
    /// default; IoT Hub allows 1 to 7 days, hubsim up to a year).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub retention_hours: u64,
    /// Most events kept; the oldest are deleted first.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events: u64,
    /// Most connection-log records kept; the oldest are deleted first.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connection_records: u64,
    /// Most C2D feedback records kept; the oldest are deleted first.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_feedback_records: u64,
    /// Most megabytes of stored events; the oldest are deleted first.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub max_event_megabytes: u64,
}

/// A device, or with `--module` one of its modules (IoT Hub's module identities, as IoT Edge uses them).
#[derive(Args)]
pub struct Target {
    /// The device id (1–128 of A–Z a–z 0–9 and -.%_*?!(),:=@$').
    pub id: String,
    /// A module of the device instead of the device itself.
    #[arg(long)]
    pub module: Option<String>,
}

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// Create a device (or, with --module, a module of an existing device) and print its connection string.
    Create {
        #[command(flatten)]
        target: Target,
        /// The primary key, base64 of 16 to 64 bytes (default: generated).
        #[arg(long)]
        primary_key: Option<String>,
        /// The secondary key, base64 of 16 to 64 bytes (default: generated).
        #[arg(long)]
        secondary_key: Option<String>,
    },
    /// List devices.
    List {
        /// The registry's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a device's modules with their connection state, as JSON.
    Modules {
        /// The device id.
        id: String,
    },
    /// Show one device (or module) as JSON.
    Show {
        #[command(flatten)]
        target: Target,
    },
    /// Disable a device (closes its connection and its modules'; new ones are refused with CONNACK 0x03).
    Disable {
        /// The device id.
        id: String,
    },
    /// Enable a disabled device.
    Enable {
        /// The device id.
        id: String,
    },
    /// Delete a device with its modules (or, with --module, one module).
    Delete {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum C2dCmd {
    /// Queue a message for a device.
    Send(C2dSend),
    /// Delete every message queued for a device.
    Purge {
        /// The device id.
        id: String,
    },
}

#[derive(Args)]
pub struct C2dSend {
    /// The device id (IoT Hub sends cloud-to-device messages to devices, not to modules).
    pub id: String,
    /// The message body, as text.
    #[arg(long, default_value = "")]
    pub body: String,
    /// Application property `NAME=VALUE` (repeatable); a bare `NAME` sends the property with no value.
    #[arg(long = "prop", value_name = "NAME=VALUE")]
    pub props: Vec<String>,
    /// `$.mid` (default: a new GUID).
    #[arg(long)]
    pub message_id: Option<String>,
    /// `$.cid`.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// `$.ct`, e.g. application/json.
    #[arg(long)]
    pub content_type: Option<String>,
    /// `$.ce`, e.g. utf-8.
    #[arg(long)]
    pub content_encoding: Option<String>,
    #[arg(long, value_parser = ["none", "positive", "negative", "full"])]
    pub ack: Option<String>,
    /// Time to live in seconds, 1 to 172 800 (IoT Hub's two days; default 3600).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=172_800))]
    pub ttl: Option<u64>,
}

#[derive(Args)]
pub struct StreamArgs {
    /// Only this device's records (with its modules'); `DEVICE/MODULE` for one module's.
    #[arg(long)]
    pub device: Option<String>,
    /// Keep printing new records as they arrive.
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum MethodCmd {
    /// Invoke a direct method and print the device's (or module's) status and payload.
    Invoke {
        #[command(flatten)]
        target: Target,
        /// The method name (Plug and Play: `component*command`).
        name: String,
        /// The request payload, JSON.
        #[arg(long, default_value = "null")]
        payload: String,
        /// Seconds to wait for the device's answer, 5 to 300 (IoT Hub's range).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=300))]
        timeout: u64,
    },
}

#[derive(Subcommand)]
pub enum TwinCmd {
    /// Print the twin (a device's, or with --module a module's).
    Show {
        #[command(flatten)]
        target: Target,
    },
    /// Patch desired properties with a JSON object (`null` removes a property).
    SetDesired {
        #[command(flatten)]
        target: Target,
        /// The patch, a JSON object.
        json: String,
    },
    /// Merge tags (service-only twin data, usable in queries) from a JSON object.
    SetTags {
        #[command(flatten)]
        target: Target,
        /// The tags, a JSON object.
        json: String,
    },
}

#[derive(Args)]
pub struct SasArgs {
    /// A device or module connection string (device token), or a policy's (service token).
    #[arg(long)]
    pub connection_string: String,
    /// Lifetime in seconds, 1 to 315 360 000 (ten years; default 3600).
    #[arg(long, conflicts_with = "expiry", value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub ttl: Option<u64>,
    /// Absolute expiry, Unix seconds.
    #[arg(long)]
    pub expiry: Option<u64>,
}

/// `--host-name`: refused by clap, naming the flag, unless a DNS name or an IP address (`check_host_name`).
fn host_name(s: &str) -> Result<String, hubsim_hub::HostNameError> {
    hubsim_hub::check_host_name(s).map(|()| s.to_owned())
}
