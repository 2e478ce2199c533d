//! Shared access policies, as IoT Hub has them ("Control access to IoT Hub using shared access signatures"):
//! `iothubowner` (every permission), `service` (ServiceConnect), `device` (DeviceConnect), `registryRead`
//! (RegistryRead) and `registryReadWrite` (RegistryRead, RegistryWrite), each with two generated keys.
//!
//! They are created at first start in `policies.json` in the data folder (created 0600: it holds keys) and
//! loaded afterwards. Every service-API call carries `Authorization: SharedAccessSignature
//! sr={host}&sig=…&se=…&skn={policy}`; the token is checked by the core (audience, expiry with IoT Hub's 5-minute
//! skew, signature against both keys in constant time) and the policy must grant the call's permission.

use hubsim_proto::sas::{DeviceKey, ResourceUri, SasToken};
use hubsim_proto::ServiceConnectionString;
use serde::{Deserialize, Serialize};
use std::path::Path;
use thiserror::Error;

use super::random_key;

/// What a policy may do (IoT Hub's permission names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    /// Read the identity registry (devices, modules, their keys).
    RegistryRead,
    /// Create, update and delete identities.
    RegistryWrite,
    /// Service-facing endpoints: C2D, methods, twins, telemetry and logs.
    ServiceConnect,
    /// Device-facing endpoints: a token signed with this policy's key may connect any device.
    DeviceConnect,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::RegistryRead => "RegistryRead",
            Permission::RegistryWrite => "RegistryWrite",
            Permission::ServiceConnect => "ServiceConnect",
            Permission::DeviceConnect => "DeviceConnect",
        })
    }
}

/// One shared access policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub key_name: String,
    pub primary_key: String,
    pub secondary_key: String,
    pub rights: Vec<Permission>,
}

impl Policy {
    fn keys(&self) -> Vec<DeviceKey> {
        [&self.primary_key, &self.secondary_key].iter().filter_map(|k| DeviceKey::from_base64(k).ok()).collect()
    }

    pub fn grants(&self, p: Permission) -> bool {
        // RegistryWrite includes RegistryRead in IoT Hub (registryReadWrite lists both; so do we).
        self.rights.contains(&p)
    }
}

/// The hub's policies.
#[derive(Debug, Clone)]
pub struct Policies {
    list: Vec<Policy>,
}

/// Why a policy file could not be loaded or written.
#[derive(Debug, Error)]
pub enum PolicyFileError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a valid policy file: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// Why a service-API call was refused (HTTP 401, IoT Hub's `401002 IoTHubUnauthorizedAccess`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("no Authorization header; send 'SharedAccessSignature sr={{host}}&sig=…&se=…&skn={{policy}}' (hubsim prints the iothubowner connection string at start)")]
    Missing,
    #[error("the Authorization header is not a shared access signature: {0}")]
    Malformed(String),
    #[error("the token names no policy (skn); service calls need a shared access policy's token")]
    NoPolicy,
    #[error("there is no shared access policy named '{0}'")]
    UnknownPolicy(String),
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("policy '{policy}' does not grant {needed}")]
    Forbidden { policy: String, needed: Permission },
}

const FILE: &str = "policies.json";

impl Policies {
    /// IoT Hub's five default policies with fresh keys.
    pub fn generate() -> Policies {
        use Permission::*;
        let p = |name: &str, rights: Vec<Permission>| Policy {
            key_name: name.into(),
            primary_key: random_key(),
            secondary_key: random_key(),
            rights,
        };
        Policies {
            list: vec![
                p("iothubowner", vec![RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect]),
                p("service", vec![ServiceConnect]),
                p("device", vec![DeviceConnect]),
                p("registryRead", vec![RegistryRead]),
                p("registryReadWrite", vec![RegistryRead, RegistryWrite]),
            ],
        }
    }

    /// Loads `policies.json` from `dir`, creating it (0600) with generated keys when missing.
    pub fn load_or_create(dir: &Path) -> Result<Policies, PolicyFileError> {
        let path = dir.join(FILE);
        let io = |source| PolicyFileError::Io { path: path.display().to_string(), source };
        match std::fs::read(&path) {
            Ok(bytes) => {
                crate::files::narrow(&path, 0o600).map_err(io)?;
                let list: Vec<Policy> = serde_json::from_slice(&bytes)
                    .map_err(|source| PolicyFileError::Parse { path: path.display().to_string(), source })?;
                Ok(Policies { list })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let p = Policies::generate();
                let text = serde_json::to_vec_pretty(&p.list).unwrap_or_default();
                crate::files::write_private(&path, &text).map_err(io)?;
                Ok(p)
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.list.iter().find(|p| p.key_name == name)
    }

    /// The policy's connection string for hub `host`.
    pub fn connection_string(&self, host: &str, name: &str) -> Option<ServiceConnectionString> {
        let p = self.get(name)?;
        Some(ServiceConnectionString {
            host_name: host.to_owned(),
            key_name: p.key_name.clone(),
            key: DeviceKey::from_base64(&p.primary_key).ok()?,
        })
    }

    /// Checks an `Authorization` header value for a call needing `needed` on hub `host`, arrived on listener port
    /// `port` (a token for `host:{port}` is accepted too, see [`super::auth::verify_token`]); returns the policy
    /// name.
    pub fn authorize(
        &self,
        host: &str,
        port: Option<u16>,
        header: Option<&str>,
        needed: Permission,
        now_unix: u64,
    ) -> Result<String, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = SasToken::parse(header.trim()).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let name = token.policy().ok_or(AuthError::NoPolicy)?;
        let policy = self.get(name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
        let keys = policy.keys();
        let refs: Vec<&DeviceKey> = keys.iter().collect();
        let hub = |host: &str| ResourceUri::Hub { host: host.to_owned() };
        super::auth::verify_token(&token, &refs, host, port, hub, now_unix).map_err(AuthError::Invalid)?;
        if !policy.grants(needed) {
            return Err(AuthError::Forbidden { policy: policy.key_name.clone(), needed });
        }
        Ok(policy.key_name.clone())
    }

    /// Keys of the policies granting DeviceConnect, for device tokens signed with a policy (`skn=device`).
    pub fn device_connect_keys(&self, name: &str) -> Option<Vec<DeviceKey>> {
        let p = self.get(name)?;
        p.grants(Permission::DeviceConnect).then(|| p.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        1_800_000_000
    }

    #[test]
    fn every_call_needs_a_valid_token_with_the_permission() {
        let ps = Policies::generate();
        let owner = ps.connection_string("localhost", "iothubowner").unwrap();
        let token = owner.token(now() + 60).to_string();
        assert_eq!(
            ps.authorize("localhost", None, Some(&token), Permission::RegistryWrite, now()).unwrap(),
            "iothubowner"
        );
        assert_eq!(ps.authorize("localhost", None, None, Permission::RegistryRead, now()), Err(AuthError::Missing));
        assert!(matches!(
            ps.authorize("other", None, Some(&token), Permission::RegistryRead, now()),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            ps.authorize("localhost", None, Some(&token), Permission::RegistryRead, now() + 3600),
            Err(AuthError::Invalid(_))
        ));
        let read = ps.connection_string("localhost", "registryRead").unwrap().token(now() + 60).to_string();
        assert!(ps.authorize("localhost", None, Some(&read), Permission::RegistryRead, now()).is_ok());
        assert_eq!(
            ps.authorize("localhost", None, Some(&read), Permission::RegistryWrite, now()),
            Err(AuthError::Forbidden { policy: "registryRead".into(), needed: Permission::RegistryWrite })
        );
        // A token signed with another policy's key under this name fails the signature.
        let mut forged = ps.connection_string("localhost", "service").unwrap();
        forged.key_name = "iothubowner".into();
        let forged = forged.token(now() + 60).to_string();
        assert!(matches!(
            ps.authorize("localhost", None, Some(&forged), Permission::RegistryRead, now()),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            ps.authorize("localhost", None, Some("Bearer x"), Permission::RegistryRead, now()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn a_token_for_the_host_with_the_listeners_port_is_accepted_on_that_port_only() {
        let ps = Policies::generate();
        let token = |host: &str| ps.connection_string(host, "iothubowner").unwrap().token(now() + 60).to_string();
        let with_port = token("LOCALHOST:28443");
        let ok = |host, port, t: &str| ps.authorize(host, port, Some(t), Permission::RegistryRead, now()).is_ok();
        assert!(ok("localhost", Some(28443), &with_port));
        assert!(!ok("localhost", Some(28444), &with_port));
        assert!(!ok("localhost", None, &with_port));
        assert!(!ok("other", Some(28443), &with_port));
        // The plain host name stays accepted on every port; another name with the port is not.
        assert!(ok("localhost", Some(28443), &token("localhost")));
        assert!(!ok("localhost", Some(28443), &token("localhost.evil:28443")));
        assert!(!ok("localhost", Some(28443), &token("localhost:28443/devices")));
        assert_eq!(
            ps.authorize("localhost", Some(8080), Some(&with_port), Permission::RegistryRead, now()),
            Err(AuthError::Invalid(
                "the token is for 'LOCALHOST:28443', not for 'localhost' or 'localhost:8080' (the port of this listener)"
                    .into()
            ))
        );
    }

    #[test]
    fn the_policy_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = Policies::load_or_create(dir.path()).unwrap();
        let b = Policies::load_or_create(dir.path()).unwrap();
        assert_eq!(a.get("iothubowner").unwrap().primary_key, b.get("iothubowner").unwrap().primary_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
