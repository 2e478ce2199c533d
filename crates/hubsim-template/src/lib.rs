//! Payload templates for simulated IoT devices: no I/O, no clock, builds for `wasm32-unknown-unknown`.
//!
//! The format is that of Azure-Samples/Iot-Telemetry-Simulator ("ITS", read at commit `ac51004`:
//! `README.md`, `src/IotTelemetrySimulator/{TelemetryValues,TelemetryVariable,TelemetryTemplate,
//! PayloadGenerator,RunnerConfiguration,SenderBase}.cs` and its tests), so existing configurations load
//! unchanged, extended with the generators a simulated sensor needs. In our own words, ITS works like this:
//!
//! * A template is text (usually JSON) in which `$.Name` is replaced by a value at each message.
//!   Built-ins ([`Builtin`]): `DeviceId`, `Guid`, `Time` (UTC, .NET `"o"` format with seven fractional
//!   digits), `LocalTime`, `Ticks` (.NET ticks of local time), `Epoch` (Unix seconds), `MachineName`, and the
//!   undocumented `IterationNumber` (messages rendered so far, from 0). ITS has no built-in counter: its
//!   `Counter` is the variable it declares when none are given.
//! * Variables are declared as `{name, ...}` objects; the keys select the kind ([`variable`] has the table):
//!   a counter from `min` (default 1) by `step` (default 1) that restarts at `min` after `max`
//!   (inclusive); `random` integers in `[min, max)` (the upper bound is *exclusive*: ITS uses .NET's
//!   `Random.Next(min, max)`, so the README's 23..25 gives 23 and 24); `randomDouble` in `[min, max)`;
//!   `values` picked *at random* (not cycled); `sequence: true` cycling through `values`, where a value
//!   `"$.Other"` takes another variable's value and such a variable advances only when a sequence uses it;
//!   `customLengthString: n` random alphanumerics.
//! * The `Header` template renders to a JSON object whose entries become message (application) properties.
//! * Several payloads can share the messages by percentage (`PayloadDistribution` or `Payloads`), and a
//!   payload can belong to one device; a `fix` payload sends fixed bytes.
//! * Configuration files are read with .NET configuration (comments and trailing commas allowed, keys
//!   case-insensitive, a byte order mark at the start), and setting strings such as `Variables` with
//!   Newtonsoft.Json, which also takes unquoted keys and single quotes: `[{name: "Temp", random: true}]`.
//!
//! Where hubsim differs on purpose (each documented at its rule): an unknown placeholder is an error with
//! a suggestion instead of text left in the message; `$.X` in `values` is resolved for picks as it is for
//! sequences (so `values: ["$.DeviceId"]` works); booleans print `true`/`false` (.NET prints `True`);
//! doubles print in Rust's shortest form, which never uses an exponent where .NET writes `1E-05`; distribution
//! mistakes that ITS logs and skips are load errors; a `Template` or `Header` written as a JSON object is
//! used as its JSON text (ITS ignores them); random values come from a seeded xoshiro256** rather than
//! .NET's `Random`, so runs are reproducible but never repeat ITS's numbers. Not supported: `PartitionKey` (Event Hubs only);
//! the runner's settings (`DuplicateEveryNEvents`, `DeviceCount`/`DeviceList`/`DevicePrefix`: scheduling belongs
//! to the app and `hubsim simulate`, though [`Intervals`] and `MessageCount` ([`config::message_count`]) are
//! read); the README's
//! `FixPayload`/`FixPayloadSize` settings, which ITS's loader never reads (use `PayloadDistribution`'s
//! `fix`/`fixSize`); Newtonsoft's relaxed-JSON oddities (hex numbers, `NaN`, `new Date()`).
//!
//! hubsim additions: bounded random walk, sine, weighted pick, boolean with probability, increasing
//! timestamp with jitter, `decimals`, per-device seeds ([`device_seed`]).
//!
//! ```
//! use hubsim_template::{Config, DeviceState, RenderContext, Variable};
//! let vars = Variable::parse_list("[{name: 'Counter', min: 1}, {name: 'Temp', walk: true, min: 15, max: 30, step: 0.5, start: 21}]").unwrap();
//! let config = Config::new(r#"{"n": $.Counter, "t": $.Temp, "at": "$.Time"}"#, vars, None).unwrap();
//! let mut device = DeviceState::new("sim000001", 7);
//! let ctx = RenderContext { now_unix_ms: 1_574_158_211_509, local_offset_min: 0, machine_name: "pc" };
//! let msg = config.render(&mut device, &ctx).unwrap();
//! assert_eq!(msg.text().unwrap(), r#"{"n": 1, "t": 21, "at": "2019-11-19T10:10:11.5090000Z"}"#);
//! assert!(msg.check_json().is_ok());
//! ```

pub mod config;
mod render;
mod rng;
pub mod template;
mod time;
pub mod variable;

pub use config::{
    check_keys, Config, ConfigError, Intervals, Payload, PayloadKind, ITS_DEFAULT_TEMPLATE, MAX_COUNT, MAX_MS,
    MIN_EVERY_MS, SAVED_MESSAGE_KEYS,
};
pub use render::{check_json, guid, DeviceState, RenderContext, RenderError, Rendered, MAX_RENDERED};
pub use rng::{device_seed, Rng};
pub use template::{placeholder_names, Builtin, Template, TemplateError, TemplateErrorKind};
pub use time::iso_utc_ms;
pub use variable::{Kind, TimeFormat, Variable};

/// Stable insertion sort. Our lists are a handful of items, and each `slice::sort_by` instantiation
/// (driftsort) costs about 3 KB of wasm; this costs a few hundred bytes.
pub(crate) fn insertion_sort_by<T>(v: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && less(&v[j], &v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}
