//! What the user chose, persisted in `localStorage` and shareable as a link.
//!
//! Keys and tokens are stored only when the user ticks "remember the key on this device"; a share link never
//! carries them. Both use the same `k=v&…` percent-encoded form (hubsim-proto's encoder), so no JSON library is
//! needed in the bundle.

use hubsim_proto::percent;

/// Form fields and options.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub connection_string: String,
    /// Separate fields, used when the connection string is empty.
    pub host: String,
    pub device_id: String,
    pub module_id: String,
    pub key: String,
    /// Explicit WebSocket URL; empty means derived from HostName/GatewayHostName.
    pub endpoint: String,
    pub clean_session: bool,
    pub keep_alive_secs: u32,
    pub qos: u8,
    pub api_version: String,
    pub model_id: String,
    pub token_ttl_secs: u32,
    pub remember_key: bool,
    pub auto_reconnect: bool,
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
            token_ttl_secs: 3600,
            remember_key: false,
            auto_reconnect: true,
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

const STORAGE_KEY: &str = "hubsim.settings";

fn b(v: bool) -> &'static str {
    if v {
        "1"
    } else {
        "0"
    }
}

impl Settings {
    /// Encodes the settings; secrets only when `with_secrets`.
    pub fn encode(&self, with_secrets: bool) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("host", self.host.clone()),
            ("device", self.device_id.clone()),
            ("module", self.module_id.clone()),
            ("endpoint", self.endpoint.clone()),
            ("clean", b(self.clean_session).into()),
            ("ka", self.keep_alive_secs.to_string()),
            ("qos", self.qos.to_string()),
            ("api", self.api_version.clone()),
            ("model", self.model_id.clone()),
            ("ttl", self.token_ttl_secs.to_string()),
            ("reconnect", b(self.auto_reconnect).into()),
            ("body", self.body.clone()),
            ("ct", self.content_type.clone()),
            ("ce", self.content_encoding.clone()),
            ("mid", self.message_id.clone()),
            ("automid", b(self.auto_message_id).into()),
            ("cid", self.correlation_id.clone()),
            ("uid", self.user_id.clone()),
            ("ctime", b(self.creation_time).into()),
            ("retain", b(self.retain).into()),
            ("every", self.repeat_interval_ms.to_string()),
            ("times", self.repeat_count.to_string()),
        ];
        for (k, v) in &self.properties {
            pairs.push(("p", format!("{}={}", percent::encode(k), percent::encode(v))));
        }
        // Without secrets the connection string is reduced to its non-secret parts.
        if with_secrets && self.remember_key {
            pairs.push(("cs", self.connection_string.clone()));
            pairs.push(("key", self.key.clone()));
            pairs.push(("remember", "1".into()));
        } else if let Ok(cs) = hubsim_proto::ConnectionString::parse(&self.connection_string) {
            pairs.push(("host", cs.host_name.clone()));
            pairs.push(("device", cs.device_id.clone()));
            if let Some(m) = &cs.module_id {
                pairs.push(("module", m.clone()));
            }
        }
        pairs.iter().map(|(k, v)| format!("{k}={}", percent::encode(v))).collect::<Vec<_>>().join("&")
    }

    /// Decodes what [`encode`](Self::encode) wrote, on top of the defaults; unknown or bad entries are skipped.
    pub fn decode(s: &str) -> Settings {
        let mut out = Settings::default();
        let mut props = Vec::new();
        for pair in s.trim_start_matches(['?', '#']).split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let Ok(v) = percent::decode(v) else { continue };
            let num = |d: u32| v.parse::<u32>().unwrap_or(d);
            match k {
                "cs" => out.connection_string = v,
                "host" => out.host = v,
                "device" => out.device_id = v,
                "module" => out.module_id = v,
                "key" => out.key = v,
                "endpoint" => out.endpoint = v,
                "clean" => out.clean_session = v == "1",
                "ka" => out.keep_alive_secs = num(60),
                "qos" => out.qos = num(1).min(2) as u8,
                "api" => out.api_version = v,
                "model" => out.model_id = v,
                "ttl" => out.token_ttl_secs = num(3600).max(10),
                "remember" => out.remember_key = v == "1",
                "reconnect" => out.auto_reconnect = v == "1",
                "body" => out.body = v,
                "ct" => out.content_type = v,
                "ce" => out.content_encoding = v,
                "mid" => out.message_id = v,
                "automid" => out.auto_message_id = v == "1",
                "cid" => out.correlation_id = v,
                "uid" => out.user_id = v,
                "ctime" => out.creation_time = v == "1",
                "retain" => out.retain = v == "1",
                "every" => out.repeat_interval_ms = num(1000).max(10),
                "times" => out.repeat_count = num(10),
                "p" => {
                    let (pk, pv) = v.split_once('=').unwrap_or((&v, ""));
                    if let (Ok(pk), Ok(pv)) = (percent::decode(pk), percent::decode(pv)) {
                        props.push((pk, pv));
                    }
                }
                _ => {}
            }
        }
        if s.contains("p=") {
            out.properties = props;
        }
        out
    }

    /// Loads from the page URL (a share link) or else from localStorage.
    pub fn load() -> Settings {
        let window = web_sys::window();
        let search = window.as_ref().and_then(|w| w.location().search().ok()).unwrap_or_default();
        if search.len() > 1 {
            return Settings::decode(&search);
        }
        window
            .and_then(|w| w.local_storage().ok().flatten())
            .and_then(|s| s.get_item(STORAGE_KEY).ok().flatten())
            .map(|s| Settings::decode(&s))
            .unwrap_or_default()
    }

    /// Saves to localStorage (secrets only if the user asked).
    pub fn save(&self) {
        if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
            let _ = s.set_item(STORAGE_KEY, &self.encode(true));
        }
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
