//! A typed client of the emulator's service API: one method per call, so no command builds a path or a body by
//! hand. Blocking (ureq): the CLI makes one call at a time.

use hubsim_proto::ServiceConnectionString;
use serde_json::{json, Value};
use std::cell::OnceCell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a service-API call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the emulator at {base}: {message} (is `hubsim serve` running? see --hub)")]
    Unreachable { base: String, message: String },
    /// The service answered with an error status; `message` is its IoT Hub-style error text.
    #[error("{message} (HTTP {status})")]
    Service { status: u16, message: String },
    /// `--hub` is not an `http://` URL (this client speaks plain HTTP to the emulator's service port).
    #[error(
        "--hub (or HUBSIM_HUB) {0}: give the emulator's service API as an http:// URL, e.g. http://127.0.0.1:8080 (its --http-port)"
    )]
    BadBase(String),
    #[error("reading the answer: {0}")]
    Read(String),
    #[error("the emulator at {0} ended the stream: it stopped or restarted (run the command again)")]
    StreamEnded(String),
    #[error("no service credential ({0}); pass --login 'HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…' (printed by `hubsim serve`), or --data with the emulator's data folder")]
    NoLogin(String),
}

impl ClientError {
    /// The HTTP status of a service error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How the client proves it may call the service API.
pub enum Login {
    /// A policy connection string given by the user.
    ConnectionString(ServiceConnectionString),
    /// The iothubowner policy in an emulator's data folder; the host name is asked from the emulator.
    DataFolder(PathBuf),
}

/// The emulator's service API at `base` (`http://127.0.0.1:8080`).
pub struct ServiceClient {
    base: String,
    agent: ureq::Agent,
    login: Login,
    token: OnceCell<String>,
}

/// The IoT Hub REST API version the client names (the service SDKs' current one).
const API_VERSION: &str = "2021-04-12";

impl ServiceClient {
    /// ` --hub URL` when the client talks to another emulator than the default one, for command lines printed
    /// for the user to paste (empty otherwise).
    pub fn hub_arg(&self) -> String {
        match self.base.trim_end_matches('/') {
            "http://127.0.0.1:8080" => String::new(),
            other => format!(" --hub {other}"),
        }
    }
}

/// The text of an error answer: hubsim's `message`, else IoT Hub's `Message` (`ErrorCode:Name;text`).
fn error_message(v: &Value) -> String {
    if let Some(m) = v.get("message").and_then(Value::as_str) {
        return m.to_owned();
    }
    match v.get("Message").and_then(Value::as_str) {
        Some(m) => match m.split_once(';') {
            Some((code, text)) => format!("{text} ({})", code.trim_start_matches("ErrorCode:")),
            None => m.to_owned(),
        },
        None => v.to_string(),
    }
}

/// Lifetime of the service tokens the CLI signs, seconds.
const TOKEN_LIFETIME_SECS: u64 = 3600;

/// A path segment: ids are percent-encoded by the core's encoder (device ids may hold `%`, `?`, `$`, …).
fn seg(id: &str) -> String {
    hubsim_proto::percent::encode(id)
}

/// A device's path segment, or a module's (`{device}/modules/{module}`), as IoT Hub's routes name them.
fn identity(device: &str, module: Option<&str>) -> String {
    match module {
        Some(m) => [seg(device), "/modules/".into(), seg(m)].concat(),
        None => seg(device),
    }
}

impl ServiceClient {
    pub fn new(base: &str, login: Login) -> ServiceClient {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        ServiceClient { base: base.trim_end_matches('/').to_owned(), agent, login, token: OnceCell::new() }
    }

    /// The `Authorization` value: a service token signed once per run.
    fn token(&self) -> Result<&str, ClientError> {
        if let Some(t) = self.token.get() {
            return Ok(t);
        }
        let cs = match &self.login {
            Login::ConnectionString(cs) => cs.clone(),
            Login::DataFolder(dir) => {
                let host = self.info()?["hostName"].as_str().unwrap_or("localhost").to_owned();
                let path = dir.join("policies.json");
                let text =
                    std::fs::read(&path).map_err(|e| ClientError::NoLogin(format!("{}: {e}", path.display())))?;
                let list: Vec<serde_json::Value> = serde_json::from_slice(&text)
                    .map_err(|e| ClientError::NoLogin(format!("{}: {e}", path.display())))?;
                let owner = list
                    .iter()
                    .find(|p| p["keyName"] == "iothubowner")
                    .and_then(|p| p["primaryKey"].as_str())
                    .ok_or_else(|| ClientError::NoLogin(format!("{} has no iothubowner policy", path.display())))?;
                let text = format!("HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={owner}");
                ServiceConnectionString::parse(&text).map_err(|e| ClientError::NoLogin(e.to_string()))?
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(self.token.get_or_init(|| cs.token(now + TOKEN_LIFETIME_SECS).to_string()))
    }

    /// Why a request got no answer: a `--hub` that is not `http://…`, or no emulator there.
    fn unreachable(&self, e: &ureq::Error) -> ClientError {
        if !self.base.starts_with("http://") {
            return ClientError::BadBase(self.base.clone());
        }
        ClientError::Unreachable { base: self.base.clone(), message: e.to_string() }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        self.call_with(method, path, &[], body).map(|(v, _)| v)
    }

    /// One call with extra headers; returns the JSON answer and the `x-ms-continuation` header (query paging).
    fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(Value, Option<String>), ClientError> {
        // IoT Hub's routes take an api-version (any value on the emulator); hubsim's own routes ignore it.
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}api-version={API_VERSION}", self.base);
        let a = &self.agent;
        let auth = self.token()?;
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut r = $req.header("authorization", auth);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r
            }};
        }
        let resp = match (method, body) {
            ("GET", _) => with_headers!(a.get(&url)).call(),
            ("DELETE", _) => with_headers!(a.delete(&url)).call(),
            ("POST", Some(b)) => with_headers!(a.post(&url)).send_json(b),
            ("POST", None) => with_headers!(a.post(&url)).send_empty(),
            ("PUT", Some(b)) => with_headers!(a.put(&url)).send_json(b),
            ("PUT", None) => with_headers!(a.put(&url)).send_empty(),
            (_, b) => with_headers!(a.patch(&url)).send_json(b.unwrap_or(Value::Null)),
        };
        let mut resp = resp.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let continuation = resp.headers().get("x-ms-continuation").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.body_mut().read_to_string().map_err(|e| ClientError::Read(e.to_string()))?;
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status >= 400 {
            let mut message = error_message(&value);
            if let (401, Login::DataFolder(dir)) = (status, &self.login) {
                message.push_str(&format!(
                    "; the iothubowner key in {} is not this emulator's: is --data the data folder of the emulator at {}? (or pass --login)",
                    dir.join("policies.json").display(),
                    self.base
                ));
            }
            return Err(ClientError::Service { status, message });
        }
        Ok((value, continuation))
    }

    /// `GET /hubsim-emulator.json` (public): host name and ports.
    pub fn info(&self) -> Result<Value, ClientError> {
        let url = format!("{}/hubsim-emulator.json", self.base);
        let mut r = self.agent.get(&url).call().map_err(|e| self.unreachable(&e))?;
        let text = r.body_mut().read_to_string().map_err(|e| ClientError::Read(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Read(format!("{url}: {e}")))
    }

    /// `GET /ca.pem`: the generated CA certificate (PEM bytes).
    pub fn ca_pem(&self) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/ca.pem", self.base);
        let mut r = self.agent.get(&url).call().map_err(|e| self.unreachable(&e))?;
        if r.status().as_u16() >= 400 {
            return Err(ClientError::Service {
                status: r.status().as_u16(),
                message: "the emulator serves no generated CA (it uses --tls-cert); pass --ca".into(),
            });
        }
        r.body_mut().read_to_vec().map_err(|e| ClientError::Read(e.to_string()))
    }

    /// A device's (or with `module`, a module's) identity.
    pub fn device(&self, id: &str, module: Option<&str>) -> Result<Value, ClientError> {
        self.call("GET", &format!("/devices/{}", identity(id, module)), None)
    }

    /// A device's module identities.
    pub fn modules(&self, id: &str) -> Result<Value, ClientError> {
        self.call("GET", &format!("/devices/{}/modules", seg(id)), None)
    }

    pub fn devices(&self) -> Result<Value, ClientError> {
        self.call("GET", "/devices", None)
    }

    /// Creates a device, or with `module` a module of device `id`; keys are generated unless given.
    pub fn create_identity(
        &self,
        id: &str,
        module: Option<&str>,
        primary: Option<&str>,
        secondary: Option<&str>,
    ) -> Result<Value, ClientError> {
        let auth = if primary.is_some() || secondary.is_some() {
            json!({"symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}})
        } else {
            json!({})
        };
        self.call("PUT", &format!("/devices/{}", identity(id, module)), Some(json!({ "authentication": auth })))
    }

    /// Enables or disables a device the IoT Hub way: read it, then replace it under its ETag (`If-Match`), so a
    /// concurrent change is refused (412) rather than overwritten.
    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<Value, ClientError> {
        let mut d = self.device(id, None)?;
        let etag = format!("\"{}\"", d["etag"].as_str().unwrap_or("*"));
        d["status"] = if enabled { "enabled" } else { "disabled" }.into();
        self.call_with("PUT", &format!("/devices/{}", seg(id)), &[("if-match", &etag)], Some(d)).map(|(v, _)| v)
    }

    /// Deletes a device (with its modules), or a module, whatever its ETag (`If-Match: *`, as the SDKs do).
    pub fn delete_device(&self, id: &str, module: Option<&str>) -> Result<Value, ClientError> {
        let path = format!("/devices/{}", identity(id, module));
        self.call_with("DELETE", &path, &[("if-match", "*")], None).map(|(v, _)| v)
    }

    /// Empties a device's C2D queue; the answer has `totalMessagesPurged`.
    pub fn purge_c2d(&self, id: &str) -> Result<Value, ClientError> {
        self.call("DELETE", &format!("/devices/{}/commands", seg(id)), None)
    }

    /// Runs an IoT Hub query (`SELECT * FROM devices WHERE …`), following `x-ms-continuation` to the end.
    pub fn query(&self, sql: &str) -> Result<Vec<Value>, ClientError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut headers = vec![("x-ms-max-item-count", "1000")];
            if let Some(c) = &next {
                headers.push(("x-ms-continuation", c.as_str()));
            }
            let (page, cont) = self.call_with("POST", "/devices/query", &headers, Some(json!({ "query": sql })))?;
            out.extend(page.as_array().cloned().unwrap_or_default());
            match cont {
                Some(c) if !c.is_empty() => next = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// Queues a C2D message; `message` is the `SendC2d` JSON body.
    pub fn send_c2d(&self, id: &str, message: Value) -> Result<Value, ClientError> {
        self.call("POST", &format!("/devices/{}/messages/devicebound", seg(id)), Some(message))
    }

    /// Invokes a direct method on a device, or on one of its modules.
    pub fn invoke_method(
        &self,
        id: &str,
        module: Option<&str>,
        name: &str,
        payload: Value,
        timeout_s: u64,
    ) -> Result<Value, ClientError> {
        let body = json!({"methodName": name, "payload": payload, "responseTimeoutInSeconds": timeout_s});
        self.call("POST", &format!("/twins/{}/methods", identity(id, module)), Some(body))
    }

    /// A device's twin, or a module's.
    pub fn twin(&self, id: &str, module: Option<&str>) -> Result<Value, ClientError> {
        self.call("GET", &format!("/twins/{}", identity(id, module)), None)
    }

    pub fn patch_desired(&self, id: &str, module: Option<&str>, desired: Value) -> Result<Value, ClientError> {
        let body = json!({"properties": {"desired": desired}});
        self.call("PATCH", &format!("/twins/{}", identity(id, module)), Some(body))
    }

    /// `PUT /enrollments/{id}`: creates or replaces an individual enrollment (DPS `IndividualEnrollment` JSON).
    pub fn put_enrollment(&self, registration_id: &str, body: Value) -> Result<Value, ClientError> {
        self.call("PUT", &format!("/enrollments/{}", seg(registration_id)), Some(body))
    }

    pub fn enrollment(&self, registration_id: &str) -> Result<Value, ClientError> {
        self.call("GET", &format!("/enrollments/{}", seg(registration_id)), None)
    }

    pub fn enrollments(&self) -> Result<Value, ClientError> {
        self.call("GET", "/enrollments", None)
    }

    pub fn delete_enrollment(&self, registration_id: &str) -> Result<Value, ClientError> {
        self.call("DELETE", &format!("/enrollments/{}", seg(registration_id)), None)
    }

    /// `PUT /enrollmentGroups/{id}`: creates or replaces an enrollment group (DPS `EnrollmentGroup` JSON).
    pub fn put_enrollment_group(&self, group_id: &str, body: Value) -> Result<Value, ClientError> {
        self.call("PUT", &format!("/enrollmentGroups/{}", seg(group_id)), Some(body))
    }

    pub fn enrollment_group(&self, group_id: &str) -> Result<Value, ClientError> {
        self.call("GET", &format!("/enrollmentGroups/{}", seg(group_id)), None)
    }

    pub fn enrollment_groups(&self) -> Result<Value, ClientError> {
        self.call("GET", "/enrollmentGroups", None)
    }

    pub fn delete_enrollment_group(&self, group_id: &str) -> Result<Value, ClientError> {
        self.call("DELETE", &format!("/enrollmentGroups/{}", seg(group_id)), None)
    }

    /// `GET /registrations/{id}`: the DPS registration state.
    pub fn registration(&self, registration_id: &str) -> Result<Value, ClientError> {
        self.call("GET", &format!("/registrations/{}", seg(registration_id)), None)
    }

    pub fn registrations(&self) -> Result<Value, ClientError> {
        self.call("GET", "/registrations", None)
    }

    pub fn delete_registration(&self, registration_id: &str) -> Result<Value, ClientError> {
        self.call("DELETE", &format!("/registrations/{}", seg(registration_id)), None)
    }

    /// Merges tags into the twin (IoT Hub's `PATCH /twins/{id}` with `tags`).
    pub fn patch_tags(&self, id: &str, module: Option<&str>, tags: Value) -> Result<Value, ClientError> {
        self.call("PATCH", &format!("/twins/{}", identity(id, module)), Some(json!({ "tags": tags })))
    }

    /// One page of a log (`events` or `connections`) after sequence number `after`.
    pub fn log_page(
        &self,
        log: Log,
        after: u64,
        limit: usize,
        device: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let q = device.map(|d| format!("&device={}", seg(d))).unwrap_or_default();
        let page = self.call("GET", &format!("/{}?after={after}&limit={limit}{q}", log.path()), None)?;
        Ok(page.as_array().cloned().unwrap_or_default())
    }

    /// Reads a log from its start, page by page (1 000 records a page), calling `each` for every record of
    /// `device` (all devices with `None`); returns the last record's `seq` (0 for none), where following it
    /// goes on from.
    pub fn each_record(
        &self,
        log: Log,
        device: Option<&str>,
        mut each: impl FnMut(&Value),
    ) -> Result<u64, ClientError> {
        const PAGE: usize = 1000;
        let mut after = 0u64;
        loop {
            let items = self.log_page(log, after, PAGE, device)?;
            for v in &items {
                each(v);
                after = v["seq"].as_u64().unwrap_or(after);
            }
            if items.len() < PAGE {
                return Ok(after);
            }
        }
    }

    /// Follows a log's Server-Sent Events stream, calling `each` for every record (until the stream ends).
    pub fn follow(&self, log: Log, device: Option<&str>, mut each: impl FnMut(Value)) -> Result<(), ClientError> {
        let q = device.map(|d| format!("device={}", seg(d))).unwrap_or_default();
        let url = format!("{}/{}/stream?{q}", self.base, log.path());
        let mut resp =
            self.agent.get(&url).header("authorization", self.token()?).call().map_err(|e| self.unreachable(&e))?;
        if resp.status().as_u16() >= 400 {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(ClientError::Service { status, message });
        }
        for line in BufReader::new(resp.body_mut().as_reader()).lines() {
            let line = line.map_err(|_| ClientError::StreamEnded(self.base.clone()))?;
            if let Some(data) = line.strip_prefix("data:") {
                if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                    each(v);
                }
            }
        }
        Ok(())
    }
}

/// The emulator's two logs.
#[derive(Debug, Clone, Copy)]
pub enum Log {
    Events,
    Connections,
}

impl Log {
    fn path(self) -> &'static str {
        match self {
            Log::Events => "events",
            Log::Connections => "connections",
        }
    }
}
