//! Device authentication at CONNECT: the registry record, SAS verification against both keys (constant time, in
//! the core), token expiry with IoT Hub's 5-minute clock skew, and the stored session of a CleanSession 0 device
//! (its subscriptions, by name).

use hubsim_proto::hub::ConnectRequest;
use hubsim_proto::mqttbytes::v4::ConnectReturnCode;
use hubsim_proto::mqttbytes::QoS;
use hubsim_proto::sas::{DeviceKey, ResourceUri, SasToken, SasVerifyError};
use hubsim_proto::topic::TopicFilter;
use hubsim_proto::Instant;
use std::time::Duration;

use super::Hub;
use crate::store::StoreError;
use crate::timefmt::unix_ms;

/// What authentication grants.
pub struct Admitted {
    pub session_present: bool,
    pub restored: Vec<(TopicFilter, QoS)>,
    pub token_expiry: Option<Instant>,
    pub generation_id: String,
}

/// Why an identity may not be connected: the store could not say, or the registry refuses it (with the CONNACK
/// code and the reason logged).
enum Inadmissible {
    Store(StoreError),
    Refused(ConnectReturnCode, String),
}

impl Hub {
    /// Checks a CONNECT that arrived on listener port `port` against the registry and sets up the stored session.
    /// Refusals: CONNACK 0x05 (unknown identity, token not valid, see [`verify_token`] for its audience), 0x03
    /// (the identity or a module's device disabled, the store unavailable).
    pub async fn authenticate(&self, req: &ConnectRequest, port: u16) -> Result<Admitted, (ConnectReturnCode, String)> {
        let internal = |e: StoreError| (ConnectReturnCode::ServiceUnavailable, e.to_string());
        // Modules are registry records named `{device}/{module}` (a name no device id can have).
        let id = req.identity.to_string();
        let device = match self.admission(&id).await {
            Ok(device) => device,
            Err(Inadmissible::Store(e)) => return Err(internal(e)),
            Err(Inadmissible::Refused(code, why)) => return Err((code, why)),
        };
        // A token signed with a policy key (`skn=device`) is accepted when the policy grants DeviceConnect, as IoT
        // Hub does ("Control access to IoT Hub using SAS": a device-scoped token from a policy).
        let keys: Vec<DeviceKey> = match req.token.policy() {
            Some(name) => self.policies.device_connect_keys(name).ok_or_else(|| {
                (
                    ConnectReturnCode::NotAuthorized,
                    format!(
                        "the token is signed with policy '{}', which does not exist or lacks DeviceConnect",
                        super::truncate(name, 64)
                    ),
                )
            })?,
            None => {
                [&device.authentication.symmetric_key.primary_key, &device.authentication.symmetric_key.secondary_key]
                    .iter()
                    .filter_map(|k| DeviceKey::from_base64(k).ok())
                    .collect()
            }
        };
        let refs: Vec<&DeviceKey> = keys.iter().collect();
        let resource =
            |host: &str| ResourceUri::for_identity(host, &req.identity.device_id, req.identity.module_id.as_deref());
        let now_s = unix_ms() / 1000;
        verify_token(&req.token, &refs, &self.settings.host_name, Some(port), resource, now_s)
            .map_err(|e| (ConnectReturnCode::NotAuthorized, e))?;
        let expiry = req.token.expiry();
        // Accepted within the clock skew: close when the skew runs out instead.
        let close_at = if expiry > now_s { expiry } else { expiry + hubsim_proto::sas::MAX_CLOCK_SKEW_SECS };
        let token_expiry = Some(self.now() + Duration::from_secs(close_at.saturating_sub(now_s)));
        // A store that cannot write (a full disk) takes no new device: nothing it sends could be kept.
        if let Some(why) = self.store.unavailable() {
            return Err((ConnectReturnCode::ServiceUnavailable, why));
        }
        let clean = req.clean_session;
        // Most connections change nothing here (CleanSession 1 with no stored session, or a session resumed):
        // a read answers them without a durable write before the CONNACK. The write re-checks in its transaction.
        let stored = match (clean, self.store.session(&id).await.map_err(internal)?) {
            (true, None) => None,
            (false, Some(s)) => Some(s),
            _ => self.store_session_change(id, clean).await.map_err(internal)?,
        };
        let restored = stored
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(f, q)| {
                filter_from_name(&f).map(|f| (f, if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }))
            })
            .collect();
        Ok(Admitted { session_present: stored.is_some(), restored, token_expiry, generation_id: device.generation_id })
    }

    /// Discards (CleanSession 1) or creates (CleanSession 0) the stored session of `id`, durably; returns the
    /// session that was stored for CleanSession 0.
    async fn store_session_change(&self, id: String, clean: bool) -> Result<Option<Vec<(String, u8)>>, StoreError> {
        self.store
            .write(move |tx| {
                if clean {
                    tx.delete_session(&id)?;
                    Ok(None)
                } else {
                    let s = tx.session(&id)?;
                    if s.is_none() {
                        tx.put_session(&id, &[])?;
                    }
                    Ok(s)
                }
            })
            .await
    }

    /// Persists a CleanSession 0 device's subscriptions.
    pub async fn save_subscriptions(&self, device: &str, subs: Vec<(TopicFilter, QoS)>) -> Result<(), StoreError> {
        let id = device.to_owned();
        let names: Vec<(String, u8)> = subs.into_iter().map(|(f, q)| (filter_name(&f).to_owned(), q as u8)).collect();
        self.store.write(move |tx| tx.put_session(&id, &names)).await
    }

    /// The registry record of identity `id` (`device` or `device/module`) if it may be connected: it and, for a
    /// module, its device exist and are enabled. A module is refused as its device would be (IoT Hub:
    /// azure-iot-sdk-csharp#1541, Azure/iotedge#2334).
    async fn admission(&self, id: &str) -> Result<crate::model::Device, Inadmissible> {
        let refused = |code, why: String| Err(Inadmissible::Refused(code, why));
        let Some(device) = self.store.device(id).await.map_err(Inadmissible::Store)? else {
            return refused(ConnectReturnCode::NotAuthorized, format!("device '{id}' is not registered"));
        };
        if !device.enabled() {
            return refused(ConnectReturnCode::ServiceUnavailable, format!("device '{id}' is disabled"));
        }
        if let Some((parent, _)) = id.split_once('/') {
            match self.store.device(parent).await.map_err(Inadmissible::Store)? {
                Some(p) if p.enabled() => {}
                Some(_) => {
                    return refused(
                        ConnectReturnCode::ServiceUnavailable,
                        format!("module '{id}' cannot connect: its parent device '{parent}' is disabled"),
                    )
                }
                None => {
                    return refused(
                        ConnectReturnCode::NotAuthorized,
                        format!("module '{id}' cannot connect: its parent device '{parent}' is not registered"),
                    )
                }
            }
        }
        Ok(device)
    }

    /// Whether identity `id` may still be connected ([`Hub::admission`]'s rule). Asked once more after a
    /// connection is registered, so that a disable (or a delete) that lands between [`Hub::authenticate`]'s read
    /// and the registration, and whose close sweep missed the connection, still ends it: the disable writes, then
    /// closes what is registered; the connection registers, then reads. A store error answers true (the
    /// connection stays, as it would have).
    pub async fn still_admitted(&self, id: &str) -> bool {
        !matches!(self.admission(id).await, Err(Inadmissible::Refused(..)))
    }
}

/// Verifies `token` (audience, expiry, signature against `keys`) for the resource `resource(host)` of hub `host`.
/// The audience's host may also be `host:{port}` for `port`, the listener the connection or request arrived on
/// (and only that one): the official service SDKs (Python `azure-iot-hub`) sign for the connection string's
/// `HostName` and connect to it, so `HostName=localhost:28443` reaches an emulator whose WebSocket/HTTPS port is
/// 28443 with tokens for `localhost:28443`. The host is compared without case, as IoT Hub does. The error is the
/// core's reason ([`SasVerifyError`]) as text, naming the port that would have been accepted.
pub(crate) fn verify_token(
    token: &SasToken,
    keys: &[&DeviceKey],
    host: &str,
    port: Option<u16>,
    resource: impl Fn(&str) -> ResourceUri,
    now_unix: u64,
) -> Result<(), String> {
    // The audience is the caller's text: cut, so an error answer stays small whatever it sent.
    let said = |e: String| super::truncate(&e, 512);
    match (token.verify(keys, &resource(host), now_unix), port) {
        (Err(SasVerifyError::WrongAudience { .. }), Some(port)) => {
            let with_port = format!("{host}:{port}");
            token.verify(keys, &resource(&with_port), now_unix).map_err(|e| match e {
                SasVerifyError::WrongAudience { expected, actual } => said(format!(
                    "the token is for '{actual}', not for '{}' or '{expected}' (the port of this listener)",
                    resource(host)
                )),
                other => said(other.to_string()),
            })
        }
        (r, _) => r.map_err(|e| said(e.to_string())),
    }
}

/// Stored name of a subscription.
pub fn filter_name(f: &TopicFilter) -> &'static str {
    match f {
        TopicFilter::C2d => "c2d",
        TopicFilter::Methods => "methods",
        TopicFilter::TwinResponses => "twin-responses",
        TopicFilter::TwinDesired => "twin-desired",
        TopicFilter::ModuleInputs => "module-inputs",
        TopicFilter::DpsResponses => "dps",
    }
}

fn filter_from_name(s: &str) -> Option<TopicFilter> {
    Some(match s {
        "c2d" => TopicFilter::C2d,
        "methods" => TopicFilter::Methods,
        "twin-responses" => TopicFilter::TwinResponses,
        "twin-desired" => TopicFilter::TwinDesired,
        "module-inputs" => TopicFilter::ModuleInputs,
        "dps" => TopicFilter::DpsResponses,
        _ => return None,
    })
}
