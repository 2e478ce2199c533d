//! What the user chose, and the ways settings enter the app: the form, `localStorage`, and a share link.
//!
//! Every field has a name, a wire key and a kind ([`Text`], [`Flag`], [`Number`]); a change to it is plain data
//! ([`Change`]), so the reducer applies form edits, stored settings and accepted links the same way.
//!
//! Values from outside the form are validated here before they reach the state ([`decode`]): numbers in range,
//! host names that are host names, ids in IoT Hub's alphabet, bounded lengths. A **link** can carry only settings
//! that cannot redirect a credential: never the endpoint, a key, a connection string or "remember the key"
//! ([`Text::in_link`]). A link is never applied on its own: the app offers it in a banner and applies it only when
//! the user accepts (issue 8: a crafted link must not send a token elsewhere or erase a remembered key).
//!
//! Keys are stored only when the user ticks "remember the key on this device" — a DPS key (possibly an enrollment
//! group key, which unlocks every device of the group) follows the same rule. A DPS assignment (hub and device id,
//! never a key) is stored only when the user asks to remember it; a link never sets it, the provisioning host, or
//! the DPS key. Storage and links use the same
//! `k=v&…` percent-encoded form (hubsim-proto's encoder), so no JSON library is needed in the bundle.

use hubsim_proto::percent;

/// The token lifetime used unless the user chooses another: one hour, as the Azure IoT SDKs do.
pub const DEFAULT_TTL_SECS: u32 = 3600;
/// The shortest token lifetime the form accepts.
pub const MIN_TTL_SECS: u32 = 10;
/// The longest token lifetime the app signs: one day. The app renews its token at 80 % of the lifetime, so a
/// longer token buys nothing but a longer window for a leaked token.
pub const MAX_TTL_SECS: u32 = 86_400;
/// IoT Hub's longest keep-alive (29.45 minutes).
pub const MAX_KEEP_ALIVE_SECS: u32 = 1177;

/// Form fields and options. Equal when every field is (compared through the field tables, see `PartialEq`).
#[derive(Clone, Debug, Eq)]
pub struct Settings {
    pub connection_string: String,
    /// Separate fields, used when the connection string is empty.
    pub host: String,
    pub device_id: String,
    pub module_id: String,
    pub key: String,
    /// Explicit WebSocket URL, set by hand; empty means derived from HostName/GatewayHostName.
    pub endpoint: String,
    pub clean_session: bool,
    pub keep_alive_secs: u32,
    pub qos: u32,
    pub api_version: String,
    pub model_id: String,
    pub token_ttl_secs: u32,
    pub remember_key: bool,
    pub auto_reconnect: bool,
    // Device Provisioning Service
    /// Connect through DPS (ID scope + registration id + key) instead of a connection string.
    pub use_dps: bool,
    pub id_scope: String,
    pub registration_id: String,
    /// The enrollment key: the device's own, or the group key when `group_key`.
    pub dps_key: String,
    pub group_key: bool,
    /// DPS device endpoint host (the global endpoint by default).
    pub dps_host: String,
    /// Custom registration payload (JSON), sent with the register request.
    pub dps_payload: String,
    /// Where DPS put the device; while set, Connect goes straight to this hub (as real devices do).
    pub assigned_hub: String,
    pub assigned_device: String,
    /// Store the assignment (never the key) in this browser.
    pub remember_assignment: bool,
    // message draft
    pub body: String,
    pub content_type: String,
    pub content_encoding: String,
    pub message_id: String,
    pub auto_message_id: bool,
    pub correlation_id: String,
    pub user_id: String,
    pub creation_time: bool,
    pub retain: bool,
    pub properties: Vec<(String, String)>,
    pub repeat_interval_ms: u32,
    pub repeat_count: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connection_string: String::new(),
            host: String::new(),
            device_id: String::new(),
            module_id: String::new(),
            key: String::new(),
            endpoint: String::new(),
            clean_session: false,
            keep_alive_secs: 60,
            qos: 1,
            api_version: hubsim_proto::API_VERSION.into(),
            model_id: String::new(),
            token_ttl_secs: DEFAULT_TTL_SECS,
            remember_key: false,
            auto_reconnect: true,
            use_dps: false,
            id_scope: String::new(),
            registration_id: String::new(),
            dps_key: String::new(),
            group_key: false,
            dps_host: hubsim_proto::provisioning::GLOBAL_ENDPOINT.into(),
            dps_payload: String::new(),
            assigned_hub: String::new(),
            assigned_device: String::new(),
            remember_assignment: false,
            body: "{\n  \"temperature\": 21.5,\n  \"humidity\": 60\n}".into(),
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            message_id: String::new(),
            auto_message_id: true,
            correlation_id: String::new(),
            user_id: String::new(),
            creation_time: false,
            retain: false,
            properties: vec![("alert".into(), "false".into())],
            repeat_interval_ms: 1000,
            repeat_count: 10,
        }
    }
}

/// Field by field, as a derived comparison would, but through the [`Text`], [`Flag`] and [`Number`] tables: one loop
/// per kind instead of code for each of the 36 fields.
impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        // Every field is one of the tables' or `properties`: a new field must be added here (this fails to compile).
        let Settings {
            connection_string: _,
            host: _,
            device_id: _,
            module_id: _,
            key: _,
            endpoint: _,
            clean_session: _,
            keep_alive_secs: _,
            qos: _,
            api_version: _,
            model_id: _,
            token_ttl_secs: _,
            remember_key: _,
            auto_reconnect: _,
            use_dps: _,
            id_scope: _,
            registration_id: _,
            dps_key: _,
            group_key: _,
            dps_host: _,
            dps_payload: _,
            assigned_hub: _,
            assigned_device: _,
            remember_assignment: _,
            body: _,
            content_type: _,
            content_encoding: _,
            message_id: _,
            auto_message_id: _,
            correlation_id: _,
            user_id: _,
            creation_time: _,
            retain: _,
            properties,
            repeat_interval_ms: _,
            repeat_count: _,
        } = self;
        TEXTS.into_iter().all(|f| self.text(f) == other.text(f))
            && FLAGS.into_iter().all(|f| self.flag(f) == other.flag(f))
            && NUMBERS.into_iter().all(|f| self.number(f) == other.number(f))
            && *properties == other.properties
    }
}

/// A text field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    ConnectionString,
    Host,
    DeviceId,
    ModuleId,
    Key,
    Endpoint,
    ApiVersion,
    ModelId,
    Body,
    ContentType,
    ContentEncoding,
    MessageId,
    CorrelationId,
    UserId,
    IdScope,
    RegistrationId,
    DpsKey,
    DpsHost,
    DpsPayload,
    AssignedHub,
    AssignedDevice,
}

/// A checkbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    CleanSession,
    AutoReconnect,
    RememberKey,
    AutoMessageId,
    CreationTime,
    Retain,
    UseDps,
    GroupKey,
    RememberAssignment,
}

/// A numeric field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Number {
    KeepAlive,
    Qos,
    TokenTtl,
    RepeatInterval,
    RepeatCount,
}

const TEXTS: [Text; 21] = [
    Text::ConnectionString,
    Text::Host,
    Text::DeviceId,
    Text::ModuleId,
    Text::Key,
    Text::Endpoint,
    Text::ApiVersion,
    Text::ModelId,
    Text::Body,
    Text::ContentType,
    Text::ContentEncoding,
    Text::MessageId,
    Text::CorrelationId,
    Text::UserId,
    Text::IdScope,
    Text::RegistrationId,
    Text::DpsKey,
    Text::DpsHost,
    Text::DpsPayload,
    Text::AssignedHub,
    Text::AssignedDevice,
];
const FLAGS: [Flag; 9] = [
    Flag::CleanSession,
    Flag::AutoReconnect,
    Flag::RememberKey,
    Flag::AutoMessageId,
    Flag::CreationTime,
    Flag::Retain,
    Flag::UseDps,
    Flag::GroupKey,
    Flag::RememberAssignment,
];
const NUMBERS: [Number; 5] =
    [Number::KeepAlive, Number::Qos, Number::TokenTtl, Number::RepeatInterval, Number::RepeatCount];

/// Most application properties taken from a link or storage.
const MAX_PROPERTIES: usize = 64;

impl Text {
    /// The key in links and storage.
    pub fn key(self) -> &'static str {
        match self {
            Text::ConnectionString => "cs",
            Text::Host => "host",
            Text::DeviceId => "device",
            Text::ModuleId => "module",
            Text::Key => "key",
            Text::Endpoint => "endpoint",
            Text::ApiVersion => "api",
            Text::ModelId => "model",
            Text::Body => "body",
            Text::ContentType => "ct",
            Text::ContentEncoding => "ce",
            Text::MessageId => "mid",
            Text::CorrelationId => "cid",
            Text::UserId => "uid",
            Text::IdScope => "scope",
            Text::RegistrationId => "reg",
            Text::DpsKey => "dpskey",
            Text::DpsHost => "dpshost",
            Text::DpsPayload => "dpspayload",
            Text::AssignedHub => "ahub",
            Text::AssignedDevice => "adev",
        }
    }

    /// The field's name as the form shows it.
    pub fn label(self) -> &'static str {
        match self {
            Text::ConnectionString => "connection string",
            Text::Host => "host name",
            Text::DeviceId => "device ID",
            Text::ModuleId => "module ID",
            Text::Key => "device key",
            Text::Endpoint => "endpoint",
            Text::ApiVersion => "API version",
            Text::ModelId => "model ID",
            Text::Body => "payload",
            Text::ContentType => "content type",
            Text::ContentEncoding => "content encoding",
            Text::MessageId => "message ID",
            Text::CorrelationId => "correlation ID",
            Text::UserId => "user ID",
            Text::IdScope => "ID scope",
            Text::RegistrationId => "registration ID",
            Text::DpsKey => "enrollment key",
            Text::DpsHost => "provisioning host",
            Text::DpsPayload => "registration payload",
            Text::AssignedHub => "assigned hub",
            Text::AssignedDevice => "assigned device ID",
        }
    }

    /// Whether a link may set it: not a secret, and nothing that decides where a token is sent.
    pub fn in_link(self) -> bool {
        !matches!(
            self,
            Text::ConnectionString
                | Text::Key
                | Text::Endpoint
                | Text::DpsKey
                | Text::DpsHost
                | Text::AssignedHub
                | Text::AssignedDevice
        )
    }

    /// A key: stored only when the user asked, never in a link.
    fn is_secret(self) -> bool {
        matches!(self, Text::ConnectionString | Text::Key | Text::DpsKey)
    }

    /// Longest accepted value, in bytes (IoT Hub's limits where it has one).
    fn max_len(self) -> usize {
        match self {
            Text::Body => 256 * 1024,
            Text::ConnectionString | Text::Endpoint | Text::DpsPayload => 4096,
            Text::Host | Text::DpsHost | Text::AssignedHub => 253,
            Text::DeviceId
            | Text::ModuleId
            | Text::MessageId
            | Text::CorrelationId
            | Text::UserId
            | Text::RegistrationId
            | Text::AssignedDevice => 128,
            Text::IdScope => 64,
            _ => 1024,
        }
    }
}

impl Flag {
    pub fn key(self) -> &'static str {
        match self {
            Flag::CleanSession => "clean",
            Flag::AutoReconnect => "reconnect",
            Flag::RememberKey => "remember",
            Flag::AutoMessageId => "automid",
            Flag::CreationTime => "ctime",
            Flag::Retain => "retain",
            Flag::UseDps => "dps",
            Flag::GroupKey => "group",
            Flag::RememberAssignment => "keepassign",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Flag::CleanSession => "CleanSession",
            Flag::AutoReconnect => "reconnect automatically",
            Flag::RememberKey => "remember the key",
            Flag::AutoMessageId => "generate message IDs",
            Flag::CreationTime => "set creation time",
            Flag::Retain => "retain",
            Flag::UseDps => "connect through DPS",
            Flag::GroupKey => "the key is an enrollment group key",
            Flag::RememberAssignment => "remember the assignment",
        }
    }

    /// "Remember the key" only matters together with a key, which a link never carries; an assignment is never
    /// taken from a link either.
    pub fn in_link(self) -> bool {
        !matches!(self, Flag::RememberKey | Flag::RememberAssignment)
    }
}

impl Number {
    pub fn key(self) -> &'static str {
        match self {
            Number::KeepAlive => "ka",
            Number::Qos => "qos",
            Number::TokenTtl => "ttl",
            Number::RepeatInterval => "every",
            Number::RepeatCount => "times",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Number::KeepAlive => "keep-alive (s)",
            Number::Qos => "QoS",
            Number::TokenTtl => "token lifetime (s)",
            Number::RepeatInterval => "send every (ms)",
            Number::RepeatCount => "times",
        }
    }

    /// The accepted range, inclusive.
    pub fn range(self) -> (u32, u32) {
        match self {
            Number::KeepAlive => (0, MAX_KEEP_ALIVE_SECS),
            Number::Qos => (0, 2),
            Number::TokenTtl => (MIN_TTL_SECS, MAX_TTL_SECS),
            Number::RepeatInterval => (10, 86_400_000),
            Number::RepeatCount => (0, 1_000_000),
        }
    }

    /// Parses and range-checks a value typed or read from a link or storage.
    pub fn parse(self, v: &str) -> Result<u32, String> {
        let (lo, hi) = self.range();
        match v.trim().parse::<u64>() {
            Ok(n) if n >= lo as u64 && n <= hi as u64 => Ok(n as u32),
            Ok(_) => Err(format!("{} must be from {lo} to {hi}, not {}", self.label(), clip(v))),
            Err(_) => Err(format!("{} must be a whole number, not \"{}\"", self.label(), clip(v))),
        }
    }
}

/// Why a number typed into a field of the inclusive range `min..=max` is refused (`None`: it is accepted), in the
/// words of [`Number::parse`]: "must be a whole number from 10 to 86400, not 5; kept 3600" (`kept`:
/// the value the field keeps instead). An empty field (or one the browser could not read as a number) is refused.
pub fn number_entry_error(text: &str, (min, max): (u32, u32), kept: &str) -> Option<String> {
    let text = text.trim();
    if text.parse::<u64>().is_ok_and(|n| (u64::from(min)..=u64::from(max)).contains(&n)) {
        return None;
    }
    let not =
        if text.is_empty() { String::new() } else { [", not ", &text.chars().take(24).collect::<String>()].concat() };
    Some(format!("must be a whole number from {min} to {max}{not}; kept {kept}"))
}

/// One edit of the settings, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Text(Text, String),
    Flag(Flag, bool),
    Number(Number, u32),
    AddProperty,
    PropertyName(usize, String),
    PropertyValue(usize, String),
    RemoveProperty(usize),
    /// The whole list of application properties (from a link or storage).
    Properties(Vec<(String, String)>),
}

impl Change {
    /// What the change sets, for the link banner: (field name, value as shown).
    pub fn describe(&self) -> (String, String) {
        match self {
            Change::Text(t, v) => (t.label().into(), clip(v)),
            Change::Flag(f, v) => (f.label().into(), if *v { "on" } else { "off" }.into()),
            Change::Number(n, v) => (n.label().into(), v.to_string()),
            Change::Properties(p) => ("application properties".into(), {
                let mut out = String::new();
                for (i, (k, v)) in p.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push('=');
                    out.push_str(v);
                }
                out
            }),
            Change::AddProperty | Change::PropertyName(..) | Change::PropertyValue(..) | Change::RemoveProperty(_) => {
                ("application properties".into(), String::new())
            }
        }
    }

    /// True if the change names another device or hub (or DPS registration).
    pub fn sets_identity(&self) -> bool {
        matches!(
            self,
            Change::Text(Text::Host | Text::DeviceId | Text::ModuleId | Text::IdScope | Text::RegistrationId, _)
        )
    }
}

/// At most 60 characters of a value, for messages.
fn clip(v: &str) -> String {
    let mut out: String = v.chars().take(60).collect();
    if out.len() < v.len() {
        out.push('…');
    }
    out
}

impl Settings {
    pub fn text(&self, f: Text) -> &str {
        match f {
            Text::ConnectionString => &self.connection_string,
            Text::Host => &self.host,
            Text::DeviceId => &self.device_id,
            Text::ModuleId => &self.module_id,
            Text::Key => &self.key,
            Text::Endpoint => &self.endpoint,
            Text::ApiVersion => &self.api_version,
            Text::ModelId => &self.model_id,
            Text::Body => &self.body,
            Text::ContentType => &self.content_type,
            Text::ContentEncoding => &self.content_encoding,
            Text::MessageId => &self.message_id,
            Text::CorrelationId => &self.correlation_id,
            Text::UserId => &self.user_id,
            Text::IdScope => &self.id_scope,
            Text::RegistrationId => &self.registration_id,
            Text::DpsKey => &self.dps_key,
            Text::DpsHost => &self.dps_host,
            Text::DpsPayload => &self.dps_payload,
            Text::AssignedHub => &self.assigned_hub,
            Text::AssignedDevice => &self.assigned_device,
        }
    }

    fn text_mut(&mut self, f: Text) -> &mut String {
        match f {
            Text::ConnectionString => &mut self.connection_string,
            Text::Host => &mut self.host,
            Text::DeviceId => &mut self.device_id,
            Text::ModuleId => &mut self.module_id,
            Text::Key => &mut self.key,
            Text::Endpoint => &mut self.endpoint,
            Text::ApiVersion => &mut self.api_version,
            Text::ModelId => &mut self.model_id,
            Text::Body => &mut self.body,
            Text::ContentType => &mut self.content_type,
            Text::ContentEncoding => &mut self.content_encoding,
            Text::MessageId => &mut self.message_id,
            Text::CorrelationId => &mut self.correlation_id,
            Text::UserId => &mut self.user_id,
            Text::IdScope => &mut self.id_scope,
            Text::RegistrationId => &mut self.registration_id,
            Text::DpsKey => &mut self.dps_key,
            Text::DpsHost => &mut self.dps_host,
            Text::DpsPayload => &mut self.dps_payload,
            Text::AssignedHub => &mut self.assigned_hub,
            Text::AssignedDevice => &mut self.assigned_device,
        }
    }

    pub fn flag(&self, f: Flag) -> bool {
        match f {
            Flag::CleanSession => self.clean_session,
            Flag::AutoReconnect => self.auto_reconnect,
            Flag::RememberKey => self.remember_key,
            Flag::AutoMessageId => self.auto_message_id,
            Flag::CreationTime => self.creation_time,
            Flag::Retain => self.retain,
            Flag::UseDps => self.use_dps,
            Flag::GroupKey => self.group_key,
            Flag::RememberAssignment => self.remember_assignment,
        }
    }

    fn flag_mut(&mut self, f: Flag) -> &mut bool {
        match f {
            Flag::CleanSession => &mut self.clean_session,
            Flag::AutoReconnect => &mut self.auto_reconnect,
            Flag::RememberKey => &mut self.remember_key,
            Flag::AutoMessageId => &mut self.auto_message_id,
            Flag::CreationTime => &mut self.creation_time,
            Flag::Retain => &mut self.retain,
            Flag::UseDps => &mut self.use_dps,
            Flag::GroupKey => &mut self.group_key,
            Flag::RememberAssignment => &mut self.remember_assignment,
        }
    }

    pub fn number(&self, f: Number) -> u32 {
        match f {
            Number::KeepAlive => self.keep_alive_secs,
            Number::Qos => self.qos,
            Number::TokenTtl => self.token_ttl_secs,
            Number::RepeatInterval => self.repeat_interval_ms,
            Number::RepeatCount => self.repeat_count,
        }
    }

    fn number_mut(&mut self, f: Number) -> &mut u32 {
        match f {
            Number::KeepAlive => &mut self.keep_alive_secs,
            Number::Qos => &mut self.qos,
            Number::TokenTtl => &mut self.token_ttl_secs,
            Number::RepeatInterval => &mut self.repeat_interval_ms,
            Number::RepeatCount => &mut self.repeat_count,
        }
    }

    /// Applies one edit. Out-of-range indexes are ignored (the row was removed meanwhile).
    pub fn apply(&mut self, c: Change) {
        match c {
            Change::Text(f, v) => *self.text_mut(f) = v,
            Change::Flag(f, v) => *self.flag_mut(f) = v,
            Change::Number(f, v) => *self.number_mut(f) = v,
            Change::AddProperty => self.properties.push((String::new(), String::new())),
            Change::PropertyName(i, v) => {
                if let Some(p) = self.properties.get_mut(i) {
                    p.0 = v;
                }
            }
            Change::PropertyValue(i, v) => {
                if let Some(p) = self.properties.get_mut(i) {
                    p.1 = v;
                }
            }
            Change::RemoveProperty(i) => {
                if i < self.properties.len() {
                    self.properties.remove(i);
                }
            }
            Change::Properties(p) => self.properties = p,
        }
    }

    /// Encodes the settings for storage (`with_secrets`, and then the key only if the user asked) or for a share
    /// link (never a key, a connection string or the endpoint).
    pub fn encode(&self, with_secrets: bool) -> String {
        let keep_key = with_secrets && self.remember_key;
        // Without the key the connection string is reduced to its non-secret parts, which then stand for the host,
        // device and module fields (written last).
        let cs = if keep_key { None } else { hubsim_proto::ConnectionString::parse(&self.connection_string).ok() };
        let mut out = String::new();
        let mut put = |k: &str, v: &str| percent::push_query_pair(&mut out, k, v);
        for f in TEXTS {
            let assignment = matches!(f, Text::AssignedHub | Text::AssignedDevice);
            let from_cs = cs.is_some() && matches!(f, Text::Host | Text::DeviceId | Text::ModuleId);
            if (f.is_secret() && !keep_key)
                || (assignment && !self.remember_assignment)
                || (!with_secrets && !f.in_link())
                || from_cs
            {
                continue;
            }
            put(f.key(), self.text(f));
        }
        for f in FLAGS {
            if with_secrets || f.in_link() {
                put(f.key(), if self.flag(f) { "1" } else { "0" });
            }
        }
        for f in NUMBERS {
            put(f.key(), &self.number(f).to_string());
        }
        for (k, v) in &self.properties {
            put("p", &[&*percent::encode(k), "=", &percent::encode(v)].concat());
        }
        if let Some(cs) = cs {
            put("host", &cs.host_name);
            put("device", &cs.device_id);
            put("module", cs.module_id.as_deref().unwrap_or_default());
        }
        if self.properties.is_empty() {
            // An explicit empty list, so that decoding does not bring the default property back.
            put("p", "");
        }
        out
    }
}

/// Where settings come from, which decides what they may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A URL: only non-secret settings that cannot redirect a credential.
    Link,
    /// This browser's `localStorage`, written by [`Settings::encode`].
    Storage,
}

/// Settings read from a link or from storage: the validated changes, and why anything else was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub changes: Vec<Change>,
    pub refused: Vec<String>,
}

impl Decoded {
    /// The defaults with the changes applied (what storage restores).
    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        for c in &self.changes {
            s.apply(c.clone());
        }
        s
    }
}

/// Reads `k=v&…` from a link or storage, validating every value; nothing invalid or not allowed for the source
/// gets through, and each refusal says why.
pub fn decode(s: &str, source: Source) -> Decoded {
    let mut out = Decoded::default();
    let mut props: Option<Vec<(String, String)>> = None;
    let from = match source {
        Source::Link => "the link",
        Source::Storage => "the stored settings",
    };
    for pair in s.trim_start_matches(['?', '#']).split('&').filter(|p| !p.is_empty()) {
        let (k, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(v) = percent::decode(raw) else {
            out.refused.push(format!("{}: the value is not percent-encoded correctly", clip(k)));
            continue;
        };
        if k == "p" {
            let list = props.get_or_insert_with(Vec::new);
            if v.is_empty() {
                continue;
            }
            let (pk, pv) = v.split_once('=').unwrap_or((&v, ""));
            match (percent::decode(pk), percent::decode(pv)) {
                (Ok(pk), Ok(pv)) if !pk.is_empty() && list.len() < MAX_PROPERTIES && pk.len() + pv.len() <= 4096 => {
                    list.push((pk, pv))
                }
                _ => out.refused.push(format!("application property \"{}\" is not valid", clip(&v))),
            }
            continue;
        }
        if let Some(f) = TEXTS.into_iter().find(|f| f.key() == k) {
            if source == Source::Link && !f.in_link() {
                out.refused.push(format!(
                    "{} is never taken from a link: {}",
                    f.label(),
                    if f.is_secret() {
                        "links carry no keys or connection strings"
                    } else {
                        "it decides where your token is sent (set it by hand)"
                    }
                ));
                continue;
            }
            match check_text(f, &v) {
                Ok(()) => out.changes.push(Change::Text(f, v)),
                Err(e) => out.refused.push(e),
            }
        } else if let Some(f) = FLAGS.into_iter().find(|f| f.key() == k) {
            if source == Source::Link && !f.in_link() {
                out.refused.push(format!("{} is never taken from a link", f.label()));
                continue;
            }
            match v.as_str() {
                "1" => out.changes.push(Change::Flag(f, true)),
                "0" => out.changes.push(Change::Flag(f, false)),
                _ => out.refused.push(format!("{} must be 0 or 1, not \"{}\"", f.label(), clip(&v))),
            }
        } else if let Some(f) = NUMBERS.into_iter().find(|f| f.key() == k) {
            match f.parse(&v) {
                Ok(n) => out.changes.push(Change::Number(f, n)),
                Err(e) => out.refused.push(e),
            }
        } else {
            out.refused.push(format!("unknown setting \"{}\" in {from} was ignored", clip(k)));
        }
    }
    if let Some(p) = props {
        out.changes.push(Change::Properties(p));
    }
    out
}

/// Validates a text value (from a link, storage, or the form for the fields that have a format).
pub fn check_text(f: Text, v: &str) -> Result<(), String> {
    if v.len() > f.max_len() {
        return Err(format!("{} is longer than {} bytes", f.label(), f.max_len()));
    }
    if v.is_empty() {
        return Ok(());
    }
    match f {
        Text::Host | Text::DpsHost | Text::AssignedHub => check_host(v).map_err(|e| format!("{}: {e}", f.label())),
        Text::DeviceId | Text::ModuleId | Text::AssignedDevice => {
            check_id(v).map_err(|e| format!("{}: {e}", f.label()))
        }
        Text::RegistrationId => check_registration_id(v),
        Text::IdScope if !v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Err(format!("ID scope \"{}\" is not an ID scope like 0ne00ABCDEF (letters and digits)", clip(v)))
        }
        Text::Endpoint => endpoint_authority(v).map(|_| ()).map_err(|e| format!("endpoint: {e}")),
        // Both go into the CONNECT user name: only the characters their formats use.
        Text::ApiVersion if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') => {
            Err(format!("API version \"{}\" is not a version like 2021-04-12", clip(v)))
        }
        Text::ModelId if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b":;_".contains(&b)) => {
            Err(format!("model ID \"{}\" is not a DTMI like dtmi:com:example:Thermostat;1", clip(v)))
        }
        _ if v.chars().any(|c| c.is_control() && !matches!(f, Text::Body | Text::DpsPayload)) => {
            Err(format!("{} contains control characters", f.label()))
        }
        _ => Ok(()),
    }
}

/// A DNS host name or IPv4 address: labels of letters, digits, `-` and `_`, separated by dots (no port, no user
/// info, nothing that could make a URL name another host).
pub fn check_host(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("\"{}\" is not a host name (expected e.g. myhub.azure-devices.net)", clip(h)))
    }
}

/// A DPS registration id: 1–128 of `a-z A-Z 0-9 - . _ :`, ending with a letter, a digit or `-` (DPS's rule).
pub fn check_registration_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        && id.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "registration ID \"{}\" is not valid (up to 128 letters, digits and - . _ :, ending with a letter, a digit or -)",
            clip(id)
        ))
    }
}

/// IoT Hub's device and module id alphabet ([`hubsim_proto::topic::ID_SPECIALS`]): up to 128 ASCII letters, digits and `-.%_*?!(),:=@$'`.
pub fn check_id(id: &str) -> Result<(), String> {
    // The registry's own rule (hubsim-proto), so the page refuses exactly what the hub would.
    if hubsim_proto::topic::is_valid_device_id(id) {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is not a valid id (up to 128 ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ ')",
            clip(id)
        ))
    }
}

/// The `host[:port]` of a `ws://` or `wss://` URL, refusing anything a browser would read differently (user
/// info, backslashes) and plain `ws://` to anything but this machine (the token would cross the network in clear).
pub fn endpoint_authority(url: &str) -> Result<(String, String), String> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err("must be a ws:// or wss:// URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains(['@', '\\'])
        || rest.contains('\\')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be a plain ws:// or wss:// URL (no user name, spaces or backslashes)".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("the port \"{}\" is not a number", clip(p)));
        }
    }
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    if !loopback {
        check_host(host)?;
    }
    if !secure && !loopback {
        return Err("ws:// sends the token unencrypted; use wss:// (ws:// is allowed only for localhost)".into());
    }
    Ok((host.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

/// The browser side: the page URL, `localStorage` and the clipboard link.
#[cfg(target_arch = "wasm32")]
mod browser {
    use super::*;

    const STORAGE_KEY: &str = "hubsim.settings";

    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok().flatten()
    }

    /// The settings stored in this browser (defaults when none), with what was refused.
    pub fn load_stored() -> Decoded {
        storage()
            .and_then(|s| s.get_item(STORAGE_KEY).ok().flatten())
            .map(|s| decode(&s, Source::Storage))
            .unwrap_or_default()
    }

    /// The settings a link in the page URL offers, if it has a query.
    pub fn link_offer() -> Option<Decoded> {
        let search = web_sys::window()?.location().search().ok()?;
        (search.len() > 1).then(|| decode(&search, Source::Link))
    }

    /// Removes the query from the address bar once the offer was answered, so a reload does not offer it again.
    pub fn forget_link() {
        let Some(w) = web_sys::window() else { return };
        if w.location().search().unwrap_or_default().is_empty() {
            return;
        }
        let path = w.location().pathname().unwrap_or_default();
        if let Ok(h) = w.history() {
            let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&path));
        }
    }

    impl Settings {
        /// Saves to localStorage (the key only if the user asked).
        /// Stores the settings in localStorage; `false` when the browser refused (storage full or disabled).
        pub fn save(&self) -> bool {
            storage().is_some_and(|s| s.set_item(STORAGE_KEY, &self.encode(true)).is_ok())
        }

        /// A link to this page with the non-secret settings.
        pub fn share_link(&self) -> String {
            let base = web_sys::window()
                .and_then(|w| w.location().href().ok())
                .map(|h| h.split(['?', '#']).next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            format!("{base}?{}", self.encode(false))
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use browser::{forget_link, link_offer, load_stored};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_typed_outside_its_field_range_is_refused_with_the_reason() {
        assert_eq!(number_entry_error(" 10 ", (10, 86_400), "3600"), None);
        assert_eq!(number_entry_error("86400", (10, 86_400), "3600"), None);
        assert_eq!(
            number_entry_error("5", (10, 86_400), "3600").as_deref(),
            Some("must be a whole number from 10 to 86400, not 5; kept 3600")
        );
        assert_eq!(
            number_entry_error("4294967296", (10, 86_400), "3600").as_deref(),
            Some("must be a whole number from 10 to 86400, not 4294967296; kept 3600")
        );
        assert_eq!(number_entry_error("", (0, 2), "1").as_deref(), Some("must be a whole number from 0 to 2; kept 1"));
        assert_eq!(
            number_entry_error("1.5", (0, 2), "1").as_deref(),
            Some("must be a whole number from 0 to 2, not 1.5; kept 1")
        );
        // What is quoted back is cut at 24 characters.
        let long = "9".repeat(40);
        assert!(number_entry_error(&long, (0, 2), "1").unwrap().contains(&format!("not {}; kept", "9".repeat(24))));
    }

    #[test]
    fn the_issue_8_link_cannot_set_the_endpoint_or_a_136_year_token() {
        let d = decode(
            "?host=myhub.azure-devices.net&device=plc&endpoint=wss://elsewhere.example/x&ttl=4294967295",
            Source::Link,
        );
        assert_eq!(
            d.changes,
            vec![
                Change::Text(Text::Host, "myhub.azure-devices.net".into()),
                Change::Text(Text::DeviceId, "plc".into())
            ]
        );
        assert_eq!(d.refused.len(), 2, "{:?}", d.refused);
        assert!(d.refused[0].starts_with("endpoint is never taken from a link"), "{}", d.refused[0]);
        assert_eq!(d.refused[1], "token lifetime (s) must be from 10 to 86400, not 4294967295");
        assert_eq!(d.settings().endpoint, "");
        assert_eq!(d.settings().token_ttl_secs, DEFAULT_TTL_SECS);
    }

    #[test]
    fn a_link_carries_no_secret_and_no_remember_flag() {
        let d = decode("cs=HostName%3Dh%3BDeviceId%3Dd%3BSharedAccessKey%3Da2V5&key=a2V5&remember=1", Source::Link);
        assert!(d.changes.is_empty(), "{:?}", d.changes);
        assert_eq!(d.refused.len(), 3);
    }

    #[test]
    fn link_values_are_validated() {
        let d = decode(
            "host=evil.example%40myhub.azure-devices.net&device=a%2Fb&qos=7&ka=abc&clean=yes&zzz=1&ttl=60\
             &api=2021-04-12%26x%3Dy&model=dtmi%3Aa%3B1%26b",
            Source::Link,
        );
        assert_eq!(d.changes, vec![Change::Number(Number::TokenTtl, 60)]);
        let r = d.refused.join("\n");
        for needle in [
            "host name: \"evil.example@myhub.azure-devices.net\" is not a host name",
            "device ID: \"a/b\" is not a valid id",
            "QoS must be from 0 to 2, not 7",
            "keep-alive (s) must be a whole number, not \"abc\"",
            "CleanSession must be 0 or 1, not \"yes\"",
            "unknown setting \"zzz\" in the link was ignored",
            "API version \"2021-04-12&x=y\" is not a version",
            "model ID \"dtmi:a;1&b\" is not a DTMI",
        ] {
            assert!(r.contains(needle), "{needle} not in {r}");
        }
    }

    #[test]
    fn settings_differ_when_any_field_does() {
        let d = Settings::default();
        assert_eq!(d, d.clone());
        let mut changes: Vec<Change> = TEXTS.into_iter().map(|f| Change::Text(f, "x\u{e9}".into())).collect();
        changes.extend(FLAGS.into_iter().map(|f| Change::Flag(f, !d.flag(f))));
        changes.extend(NUMBERS.into_iter().map(|f| Change::Number(f, d.number(f) + 1)));
        changes.extend([Change::AddProperty, Change::PropertyValue(0, "true".into()), Change::RemoveProperty(0)]);
        for c in changes {
            let mut s = d.clone();
            s.apply(c.clone());
            assert_ne!(s, d, "{c:?}");
        }
    }

    #[test]
    fn storage_round_trips_and_keeps_the_key_only_when_asked() {
        let mut s = Settings {
            connection_string: "HostName=h.net;DeviceId=dev-1;SharedAccessKey=c2VjcmV0".into(),
            endpoint: "wss://gw.example/$iothub/websocket".into(),
            properties: vec![("k&=".into(), "v%#".into())],
            token_ttl_secs: 600,
            ..Default::default()
        };
        let stored = decode(&s.encode(true), Source::Storage);
        assert!(stored.refused.is_empty(), "{:?}", stored.refused);
        let back = stored.settings();
        assert_eq!(back.connection_string, "", "no key without remember");
        assert_eq!((back.host.as_str(), back.device_id.as_str()), ("h.net", "dev-1"));
        assert_eq!(back.endpoint, s.endpoint);
        assert_eq!(back.properties, s.properties);
        assert_eq!(back.token_ttl_secs, 600);
        s.remember_key = true;
        assert_eq!(decode(&s.encode(true), Source::Storage).settings(), s);
        s.properties.clear();
        assert_eq!(decode(&s.encode(true), Source::Storage).settings().properties, vec![]);
    }

    #[test]
    fn share_links_never_carry_the_key_or_the_endpoint() {
        let s = Settings {
            connection_string: "HostName=h.net;DeviceId=dev-1;SharedAccessKey=c2VjcmV0".into(),
            key: "c2VjcmV0".into(),
            endpoint: "wss://gw.example/x".into(),
            remember_key: true,
            ..Default::default()
        };
        let link = s.encode(false);
        for bad in ["c2VjcmV0", "SharedAccessKey", "endpoint", "gw.example", "remember", "cs="] {
            assert!(!link.contains(bad), "{bad} in {link}");
        }
        let d = decode(&link, Source::Link);
        assert!(d.refused.is_empty(), "{:?}", d.refused);
        assert_eq!(d.settings().device_id, "dev-1");
    }

    #[test]
    fn stored_values_are_validated_too() {
        let d = decode("ttl=0&endpoint=http%3A%2F%2Fx&every=5", Source::Storage);
        assert!(d.changes.is_empty(), "{:?}", d.changes);
        assert_eq!(d.refused.len(), 3);
    }

    #[test]
    fn endpoints_name_their_host_and_refuse_tricks() {
        assert_eq!(
            endpoint_authority("wss://gw.local:8443/$iothub/websocket").unwrap(),
            ("gw.local".into(), "gw.local:8443".into())
        );
        assert_eq!(endpoint_authority("ws://127.0.0.1:8080/x").unwrap().0, "127.0.0.1");
        assert!(endpoint_authority("wss://myhub.azure-devices.net@evil.example/").is_err());
        assert!(endpoint_authority("ws://remote.example/").unwrap_err().contains("unencrypted"));
        assert!(endpoint_authority("https://x/").is_err());
        assert!(endpoint_authority("wss://a\\b/").is_err());
    }
}
