//! The DPS way to connect, as data: validation of the ID scope, registration id, key, provisioning host and
//! registration payload; where the DPS WebSocket goes (and whether the user must confirm that); the hub
//! connection string of an assignment; and the words the app shows for each step and outcome. Pure functions of
//! the settings, unit-tested natively. The protocol (CONNECT, tokens, register, polling, the group-key derivation)
//! is `hubsim-proto`'s `ProvisioningSession`; the wasm side that drives it is [`crate::provision`].

use core::time::Duration;
use hubsim_proto::conn_str::{ConnectionString, Credential};
use hubsim_proto::endpoint::websocket_url;
use hubsim_proto::json::{self, Value};
use hubsim_proto::provisioning::{EnrollmentKey, Progress, ProvisioningError, Registration, GLOBAL_ENDPOINT};
use hubsim_proto::sas::DeviceKey;

use crate::form::{Emulator, FieldError};
use crate::settings::{check_host, check_registration_id, check_text, Settings, Text};

/// A validated registration, ready for the provisioning driver.
#[derive(Clone, Debug, PartialEq)]
pub struct DpsPlan {
    pub id_scope: String,
    pub registration_id: String,
    pub key: EnrollmentKey,
    /// The register request's payload (with `modelId` when a model id is set).
    pub payload: Option<String>,
    pub url: String,
    /// `host[:port]` the DPS token goes to.
    pub target: String,
    /// True when the token would go to a host that is neither Azure's DPS nor the emulator serving this page.
    pub needs_confirmation: bool,
}

fn err(field: &'static str, message: String) -> FieldError {
    FieldError { field, message }
}

/// The provisioning host as typed, or the global endpoint when the field is empty.
pub fn dps_host(s: &Settings) -> String {
    match s.dps_host.trim() {
        "" => GLOBAL_ENDPOINT.to_owned(),
        h => h.to_ascii_lowercase(),
    }
}

/// The enrollment key: the device's own, or an enrollment group key (the device key is derived from it and the
/// registration id by the core, in this page).
fn enrollment_key(s: &Settings) -> Result<EnrollmentKey, String> {
    let key = DeviceKey::from_base64(s.dps_key.trim()).map_err(|e| {
        let which = if s.group_key { "group key: " } else { "enrollment key: " };
        which.to_owned() + &e.to_string()
    })?;
    Ok(if s.group_key { EnrollmentKey::Group(key) } else { EnrollmentKey::Individual(key) })
}

/// The register request's payload: the editor's JSON (checked), with `"modelId"` added when a model id is set
/// under Advanced, as the IoT Plug and Play convention asks (`{"modelId":"dtmi:…"}`). `None` when both are empty.
pub fn registration_payload(payload: &str, model_id: &str) -> Result<Option<String>, String> {
    let (payload, model_id) = (payload.trim(), model_id.trim());
    if payload.is_empty() {
        if model_id.is_empty() {
            return Ok(None);
        }
        let mut out = String::from("{\"modelId\":");
        push_json_string(&mut out, model_id);
        out.push('}');
        return Ok(Some(out));
    }
    let value =
        json::parse(payload).map_err(|e| "the registration payload is not JSON: ".to_owned() + &e.to_string())?;
    if model_id.is_empty() {
        return Ok(Some(payload.to_owned()));
    }
    let Some(obj) = value.as_object() else {
        return Err("the registration payload must be a JSON object to carry the model ID (modelId)".into());
    };
    match obj.get("modelId") {
        Some(Value::String(m)) if m == model_id => Ok(Some(payload.to_owned())),
        Some(_) => Err("the payload's modelId is not the model ID set under Advanced; remove one of them".into()),
        None => {
            // Spliced as text, so the user's JSON is sent as written (no re-serialisation of its numbers).
            let mut out = String::from("{\"modelId\":");
            push_json_string(&mut out, model_id);
            let rest = payload[1..].trim_start();
            if !rest.starts_with('}') {
                out.push(',');
            }
            out.push_str(rest);
            Ok(Some(out))
        }
    }
}

/// Appends `s` as a JSON string (quotes included).
fn push_json_string(out: &mut String, s: &str) {
    let _ = json::write_escaped(out, s);
}

/// Validates the DPS fields; every problem is reported against its field before any connection attempt.
pub fn dps_plan(s: &Settings, emulator: Option<&Emulator>) -> Result<DpsPlan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let scope = s.id_scope.trim();
    if scope.is_empty() {
        errors.push(err("id_scope", "the ID scope is required (e.g. 0ne00ABCDEF, on the DPS overview page)".into()));
    } else if let Err(e) = check_text(Text::IdScope, scope) {
        errors.push(err("id_scope", e));
    }
    let reg = s.registration_id.trim();
    if reg.is_empty() {
        errors.push(err("registration_id", "the registration ID is required".into()));
    } else if let Err(e) = check_registration_id(reg) {
        errors.push(err("registration_id", e));
    }
    let key = enrollment_key(s).map_err(|e| errors.push(err("dps_key", e))).ok();
    let host = dps_host(s);
    if let Err(e) = check_host(&host) {
        errors.push(err("dps_host", "provisioning host: ".to_owned() + &e));
    }
    let payload =
        registration_payload(&s.dps_payload, &s.model_id).map_err(|e| errors.push(err("dps_payload", e))).ok();
    if let Err(e) = check_text(Text::ModelId, s.model_id.trim()) {
        errors.push(err("model_id", e));
    }
    let (Some(key), Some(payload), true) = (key, payload, errors.is_empty()) else {
        return Err(errors);
    };
    let (url, target, needs_confirmation) = match emulator {
        // The emulator that served this page is this DPS: its own WebSocket, same origin (the demo works offline).
        Some(emu) if emu.host_name.eq_ignore_ascii_case(&host) => {
            let target = crate::settings::endpoint_authority(&emu.ws).map(|a| a.1).unwrap_or_else(|_| emu.ws.clone());
            (emu.ws.clone(), target, false)
        }
        _ => {
            let azure = host == GLOBAL_ENDPOINT || host.ends_with(".azure-devices-provisioning.net");
            (websocket_url(&host, None), host, !azure)
        }
    };
    Ok(DpsPlan {
        id_scope: scope.to_owned(),
        registration_id: reg.to_owned(),
        key,
        payload,
        url,
        target,
        needs_confirmation,
    })
}

/// The connection string of a remembered or fresh assignment: the assigned hub and device with the device key
/// (derived from the group key by the core). `Err` names what is missing.
pub fn assigned_connection_string(s: &Settings) -> Result<ConnectionString, Vec<FieldError>> {
    let mut errors = Vec::new();
    let (hub, device) = (s.assigned_hub.trim(), s.assigned_device.trim());
    if hub.is_empty() || device.is_empty() {
        errors.push(err("dps", "not provisioned yet: Provision and connect asks DPS which hub to use".into()));
    } else {
        if let Err(e) = check_host(hub) {
            errors.push(err("dps", "assigned hub: ".to_owned() + &e));
        }
        if let Err(e) = check_text(Text::AssignedDevice, device) {
            errors.push(err("dps", e));
        }
    }
    let reg = s.registration_id.trim();
    if let Err(e) = check_registration_id(reg) {
        errors.push(err("registration_id", e));
    }
    let key = enrollment_key(s).map_err(|e| errors.push(err("dps_key", e))).ok();
    match key {
        Some(key) if errors.is_empty() => Ok(hub_connection_string(hub, device, key.device_key(reg))),
        _ => Err(errors),
    }
}

/// Whether the hub DPS assigned is one the user already chose: the provisioning host itself (a local or remote
/// emulator that is both), or an Azure IoT Hub when the DPS is Azure's. Any other hub gets the derived key's
/// token only after the dialog names it (DPS chooses the hub, not the user; a hostile or misconfigured DPS could
/// name any host).
pub fn assigned_hub_expected(s: &Settings, hub: &str) -> bool {
    let (dps, hub) = (dps_host(s), hub.trim().to_ascii_lowercase());
    let azure_dps = dps == GLOBAL_ENDPOINT || dps.ends_with(".azure-devices-provisioning.net");
    hub == dps || (azure_dps && hub.ends_with(".azure-devices.net") && hub.len() > ".azure-devices.net".len())
}

/// A device connection string for `hub` and `device` with `key`.
pub fn hub_connection_string(hub: &str, device: &str, key: DeviceKey) -> ConnectionString {
    ConnectionString {
        host_name: hub.to_owned(),
        device_id: device.to_owned(),
        module_id: None,
        key_name: None,
        credential: Credential::Key(key),
        gateway_host_name: None,
    }
}

/// Whole seconds, rounded up (a retry in 1.5 s is shown as 2 s).
fn secs(d: Duration) -> String {
    // u64 arithmetic: `as_millis` is a u128, whose division pulls a helper into the bundle.
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).to_string()
}

/// What kind of step a text is, so that a repeated poll replaces its line instead of adding one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    Connecting,
    Registering,
    Assigning,
    Retrying,
    Assigned,
    Failed,
}

/// The words for a step of a registration in progress.
pub fn step_text(p: &Progress, target: &str) -> (StepKind, String) {
    match p {
        Progress::Connecting => (StepKind::Connecting, "connecting to DPS (".to_owned() + target + ")"),
        Progress::Registering { attempt: 1 } => (StepKind::Registering, "registering".into()),
        Progress::Registering { attempt } => {
            (StepKind::Registering, "registering (attempt ".to_owned() + &attempt.to_string() + ")")
        }
        Progress::Assigning { retry_in, .. } => {
            (StepKind::Assigning, "assigning (asking again in ".to_owned() + &secs(*retry_in) + " s)")
        }
        Progress::Retrying { status, retry_in } => (
            StepKind::Retrying,
            "DPS is busy (status ".to_owned() + &status.to_string() + "), retrying in " + &secs(*retry_in) + " s",
        ),
    }
}

/// The words for how a registration ended: `Ok` with the assignment line, or `Err` with what happened and what
/// to do. `opened` tells whether the WebSocket ever opened; `command` is the `hubsim provision …` line to offer.
pub fn outcome_text(
    r: &Result<Registration, ProvisioningError>,
    opened: bool,
    registered: bool,
    command: &str,
) -> Result<String, (String, String)> {
    let fallback = "Provision outside the browser instead: ".to_owned()
        + command
        + " prints a device connection string; paste it under Connection string.";
    match r {
        Ok(Registration::Assigned(a)) => Ok("assigned to ".to_owned() + &a.assigned_hub + " as " + &a.device_id),
        Ok(Registration::Failed { error_code, message }) => Err((
            "DPS could not assign the device: ".to_owned()
                + message
                + &error_code.map(|c| " (error ".to_owned() + &c.to_string() + ")").unwrap_or_default(),
            "Check the enrollment's allocation policy and linked hubs.".into(),
        )),
        Ok(Registration::Disabled) => Err((
            "DPS says the enrollment or this registration is disabled".into(),
            "Enable it in the DPS enrollment (or the group) and provision again.".into(),
        )),
        Ok(Registration::Unassigned) => {
            Err(("DPS left the device unassigned".into(), "Link a hub to the enrollment and try again.".into()))
        }
        Err(ProvisioningError::TransportClosed(why)) if !opened => Err((
            "the browser could not open a WebSocket to DPS (".to_owned() + why + ")",
            "A browser does not say why (the host cannot be reached, a firewall, a TLS problem such as a \
             client-certificate request, or the service refusing a browser's handshake all look alike). "
                .to_owned()
                + &fallback,
        )),
        Err(ProvisioningError::TransportClosed(why)) if !registered => Err((
            "DPS closed the WebSocket before answering CONNECT (".to_owned() + why + ")",
            "The service accepted the WebSocket but not the MQTT session from this browser. ".to_owned() + &fallback,
        )),
        Err(ProvisioningError::Timeout(a)) => Err((
            "no ".to_owned() + &a.to_string() + " from DPS in time",
            "DPS did not answer. ".to_owned() + &fallback,
        )),
        Err(e @ (ProvisioningError::Service { status: 401, .. } | ProvisioningError::Refused(_))) => Err((
            e.to_string(),
            "Check the ID scope, the registration ID and the key (and whether it is a group key).".into(),
        )),
        Err(e) => Err(("provisioning failed: ".to_owned() + &e.to_string(), fallback)),
    }
}

/// The `hubsim provision` line that does the same registration outside the browser (never with the key).
pub fn provision_command(plan: &DpsPlan, host: &str) -> String {
    let mut c = "hubsim provision".to_owned();
    if host != GLOBAL_ENDPOINT {
        c += " --provisioning-host ";
        c += host;
    }
    c += " --id-scope ";
    c += &plan.id_scope;
    c += " --registration-id ";
    c += &plan.registration_id;
    c += " --key <key>";
    if matches!(plan.key, EnrollmentKey::Group(_)) {
        c += " --group-key";
    }
    c
}

#[cfg(test)]
mod tests;
