//! Device connection strings: `HostName=…;DeviceId=…;SharedAccessKey=…` and their variants (reference §3).
//!
//! Parsing splits on `;`, then each pair on its first `=` (keys and signatures contain `=`), trims spaces and
//! tolerates empty segments such as a trailing `;`. Every error names the field and what is wrong with it.

use core::fmt;
use thiserror::Error;

use crate::sas::{DeviceKey, KeyError, ResourceUri, SasParseError, SasToken};
use crate::topic::DeviceIdentity;

/// How the device proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A symmetric key; tokens are computed from it.
    Key(DeviceKey),
    /// A ready-made token (`SharedAccessSignature=SharedAccessSignature sr=…`).
    Token(SasToken),
    /// X.509 client certificate (`x509=true`); no password is sent.
    X509,
}

/// A parsed device (or module) connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub host_name: String,
    pub device_id: String,
    pub module_id: Option<String>,
    /// Policy name, when the key is a shared access policy key (tokens then carry `skn`).
    pub key_name: Option<String>,
    pub credential: Credential,
    /// Host to connect to instead of `host_name` (an Edge gateway or the local emulator); the user name and the
    /// SAS audience still use `host_name`.
    pub gateway_host_name: Option<String>,
}

/// Why a connection string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionStringError {
    #[error("the connection string is empty")]
    Empty,
    #[error("'{0}' is not a Key=Value pair")]
    NotAPair(String),
    #[error("HostName is missing (expected HostName=<hub>.azure-devices.net)")]
    MissingHostName,
    #[error("DeviceId is missing (this is a device connection string, expected DeviceId=<id>)")]
    MissingDeviceId,
    #[error("this is a shared access policy's connection string (SharedAccessKeyName, for the service side); a device needs its own: HostName=…;DeviceId=…;SharedAccessKey=…")]
    PolicyString,
    #[error(
        "{field}: '{value}' contains '{ch}'; IoT Hub ids are ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '"
    )]
    BadIdCharacter { field: &'static str, value: String, ch: char },
    #[error("{0} is given twice")]
    Duplicate(String),
    #[error("unknown key '{0}' (known: HostName, DeviceId, ModuleId, SharedAccessKey, SharedAccessKeyName, SharedAccessSignature, GatewayHostName, x509)")]
    UnknownKey(String),
    #[error("{0} is empty")]
    EmptyValue(String),
    #[error("both SharedAccessKey and SharedAccessSignature are given; use one")]
    KeyAndSignature,
    #[error("no credential: give SharedAccessKey, SharedAccessSignature or x509=true")]
    MissingCredential,
    #[error("SharedAccessKey: {0}")]
    BadKey(KeyError),
    #[error("SharedAccessSignature: {0}")]
    BadSignature(SasParseError),
    #[error("{field}: '{value}' contains '{ch}', which is not allowed")]
    BadCharacter { field: &'static str, value: String, ch: char },
    /// IoT Hub's identities are at most 128 characters ("Understand the identity registry").
    #[error("{field} is {len} characters long; IoT Hub allows at most 128")]
    TooLong { field: &'static str, len: usize },
    #[error("x509: expected 'true', got '{0}'")]
    BadX509(String),
    #[error("SharedAccessKeyName is missing (a service connection string names its policy, e.g. iothubowner)")]
    MissingKeyName,
    #[error("this is a device connection string (it has DeviceId); the service API needs a policy's connection string (SharedAccessKeyName=iothubowner;…)")]
    DeviceString,
}

const KEYS: [&str; 8] = [
    "HostName",
    "DeviceId",
    "ModuleId",
    "SharedAccessKey",
    "SharedAccessKeyName",
    "SharedAccessSignature",
    "GatewayHostName",
    "x509",
];

/// Splits `Key=Value;…` into the values of `keys` (matched case-insensitively), refusing unknown, empty and
/// repeated keys.
fn pairs<const N: usize>(s: &str, keys: &[&str; N]) -> Result<[Option<String>; N], ConnectionStringError> {
    use ConnectionStringError as E;
    let mut values: [Option<String>; N] = core::array::from_fn(|_| None);
    for part in s.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or_else(|| E::NotAPair(part.to_owned()))?;
        let (k, v) = (k.trim(), v.trim());
        let i =
            keys.iter().position(|known| known.eq_ignore_ascii_case(k)).ok_or_else(|| E::UnknownKey(k.to_owned()))?;
        if v.is_empty() {
            return Err(E::EmptyValue(keys[i].to_owned()));
        }
        if values[i].replace(v.to_owned()).is_some() {
            return Err(E::Duplicate(keys[i].to_owned()));
        }
    }
    Ok(values)
}

/// A service (shared access policy) connection string, as the portal's "Shared access policies" page and
/// `az iot hub connection-string show` give it: `HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…`
/// (reference §3; IoT Hub's "Control access to IoT Hub using SAS" doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConnectionString {
    pub host_name: String,
    /// The policy name, sent as `skn`.
    pub key_name: String,
    pub key: DeviceKey,
}

impl ServiceConnectionString {
    /// Parses a service connection string; a device connection string (with DeviceId) is refused by name.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        use ConnectionStringError as E;
        if s.trim().is_empty() {
            return Err(E::Empty);
        }
        const SERVICE_KEYS: [&str; 4] = ["HostName", "SharedAccessKeyName", "SharedAccessKey", "DeviceId"];
        let [host, name, key, device] = pairs(s, &SERVICE_KEYS)?;
        if device.is_some() {
            return Err(E::DeviceString);
        }
        let host_name = host.ok_or(E::MissingHostName)?;
        check_chars("HostName", &host_name, "/ ?#")?;
        let key_name = name.ok_or(E::MissingKeyName)?;
        let key = DeviceKey::from_base64(&key.ok_or(E::MissingCredential)?).map_err(E::BadKey)?;
        Ok(ServiceConnectionString { host_name, key_name, key })
    }

    /// A service token `SharedAccessSignature sr={host}&sig=…&se={expiry}&skn={policy}` valid until `expiry`
    /// (Unix seconds).
    pub fn token(&self, expiry: u64) -> SasToken {
        SasToken::sign(&self.key, &ResourceUri::Hub { host: self.host_name.clone() }, expiry, Some(&self.key_name))
    }
}

impl fmt::Display for ServiceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.host_name,
            self.key_name,
            self.key.to_base64()
        )
    }
}

impl ConnectionString {
    /// Parses a device or module connection string.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        use ConnectionStringError as E;
        if s.trim().is_empty() {
            return Err(E::Empty);
        }
        let values: [Option<String>; 8] = pairs(unquote(s), &KEYS)?;
        let [host, device, module, key, key_name, sig, gateway, x509] = values;
        let Some(host_name) = host else { return Err(E::MissingHostName) };
        check_chars("HostName", &host_name, "/ ?#")?;
        let Some(device_id) = device else {
            return Err(if key_name.is_some() { E::PolicyString } else { E::MissingDeviceId });
        };
        check_id("DeviceId", &device_id)?;
        if let Some(m) = &module {
            check_id("ModuleId", m)?;
        }
        // A key wrapped over lines when copied (the next line maybe indented): base64 has no line breaks, so
        // they are dropped with the blanks around them, not refused.
        let key = key.map(|k| if k.contains('\n') { k.lines().map(str::trim).collect::<String>() } else { k });
        if let Some(g) = &gateway {
            check_chars("GatewayHostName", g, "/ ?#")?;
        }
        let credential = match (key, sig, x509) {
            (Some(_), Some(_), _) => return Err(E::KeyAndSignature),
            (Some(k), None, _) => Credential::Key(DeviceKey::from_base64(&k).map_err(E::BadKey)?),
            (None, Some(t), _) => Credential::Token(SasToken::parse(&t).map_err(E::BadSignature)?),
            (None, None, Some(x)) if x.eq_ignore_ascii_case("true") => Credential::X509,
            (None, None, Some(x)) => return Err(E::BadX509(x)),
            (None, None, None) => return Err(E::MissingCredential),
        };
        Ok(ConnectionString {
            host_name,
            device_id,
            module_id: module,
            key_name,
            credential,
            gateway_host_name: gateway,
        })
    }

    /// The host to open the transport to: the gateway when one is given, else the hub.
    pub fn connect_host(&self) -> &str {
        self.gateway_host_name.as_deref().unwrap_or(&self.host_name)
    }

    /// The device or module identity the string names.
    pub fn identity(&self) -> DeviceIdentity {
        DeviceIdentity { device_id: self.device_id.clone(), module_id: self.module_id.clone() }
    }

    /// The resource a token for this identity must name.
    pub fn resource_uri(&self) -> ResourceUri {
        ResourceUri::for_identity(&self.host_name, &self.device_id, self.module_id.as_deref())
    }

    /// The MQTT password: a fresh token valid until `expiry` (Unix seconds) when the string has a key, the given
    /// token when it has one, `None` for X.509.
    pub fn password(&self, expiry: u64) -> Option<SasToken> {
        match &self.credential {
            Credential::Key(k) => Some(SasToken::sign(k, &self.resource_uri(), expiry, self.key_name.as_deref())),
            Credential::Token(t) => Some(t.clone()),
            Credential::X509 => None,
        }
    }

    /// The string with the key or token replaced by `***`, safe to log or show.
    pub fn redacted(&self) -> String {
        let mut c = self.clone();
        c.credential = Credential::X509;
        let mut s = c.to_string();
        s = s.replace(";x509=true", "");
        match &self.credential {
            Credential::Key(_) => s + ";SharedAccessKey=***",
            Credential::Token(_) => s + ";SharedAccessSignature=***",
            Credential::X509 => s + ";x509=true",
        }
    }
}

/// A device or module id: at most 128 characters (IoT Hub's limit) of those [`crate::topic::is_id_char`] allows.
fn check_id(field: &'static str, value: &str) -> Result<(), ConnectionStringError> {
    match value.chars().count() {
        len if len > 128 => return Err(ConnectionStringError::TooLong { field, len }),
        _ => {}
    }
    match value.chars().find(|c| !crate::topic::is_id_char(*c)) {
        Some(ch) => Err(ConnectionStringError::BadIdCharacter { field, value: value.to_owned(), ch }),
        None => Ok(()),
    }
}

/// The string without one pair of quotes around it, as a connection string copied out of JSON (`az … show`) or a
/// shell line comes.
fn unquote(s: &str) -> &str {
    let t = s.trim();
    // Straight quotes, and the curly ones a word processor or a mail client puts around a pasted string.
    for (open, close) in [('"', '"'), ('\'', '\''), ('\u{201c}', '\u{201d}'), ('\u{2018}', '\u{2019}')] {
        if let Some(inner) = t.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
            return inner;
        }
    }
    s
}

fn check_chars(field: &'static str, value: &str, forbidden: &str) -> Result<(), ConnectionStringError> {
    match value.chars().find(|c| forbidden.contains(*c) || c.is_control()) {
        Some(ch) => Err(ConnectionStringError::BadCharacter { field, value: value.to_owned(), ch }),
        None => Ok(()),
    }
}

impl core::str::FromStr for ConnectionString {
    type Err = ConnectionStringError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ConnectionString {
    /// The canonical form, in the order the Azure portal shows: HostName, DeviceId, ModuleId, key or token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={};DeviceId={}", self.host_name, self.device_id)?;
        if let Some(m) = &self.module_id {
            write!(f, ";ModuleId={m}")?;
        }
        if let Some(n) = &self.key_name {
            write!(f, ";SharedAccessKeyName={n}")?;
        }
        match &self.credential {
            Credential::Key(k) => write!(f, ";SharedAccessKey={}", k.to_base64())?,
            Credential::Token(t) => write!(f, ";SharedAccessSignature={t}")?,
            Credential::X509 => f.write_str(";x509=true")?,
        }
        if let Some(g) = &self.gateway_host_name {
            write!(f, ";GatewayHostName={g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ConnectionStringError as E;

    const KEY: &str = "+XLy+MVZ+aTeOnVzN2kLeB16O+kSxmz6g3rS6fAf6rw=";

    #[test]
    fn parses_device_string_with_spaces_and_trailing_semicolon() {
        let c = ConnectionString::parse(&format!(
            " HostName = h.azure-devices.net ; DeviceId=dev1;SharedAccessKey={KEY}; "
        ))
        .unwrap();
        assert_eq!(c.host_name, "h.azure-devices.net");
        assert_eq!(c.device_id, "dev1");
        assert_eq!(c.credential, Credential::Key(DeviceKey::from_base64(KEY).unwrap()));
        assert_eq!(c.connect_host(), "h.azure-devices.net");
        assert_eq!(c.to_string(), format!("HostName=h.azure-devices.net;DeviceId=dev1;SharedAccessKey={KEY}"));
    }

    #[test]
    fn parses_module_gateway_and_token_strings() {
        let c = ConnectionString::parse(&format!(
            "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey={KEY};GatewayHostName=localhost"
        ))
        .unwrap();
        assert_eq!(c.module_id.as_deref(), Some("m"));
        assert_eq!(c.connect_host(), "localhost");
        assert_eq!(c.resource_uri().to_string(), "h/devices/d/modules/m");
        let t = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc%3D&se=99";
        let c = ConnectionString::parse(&format!("HostName=h;DeviceId=d;SharedAccessSignature={t}")).unwrap();
        assert_eq!(c.password(0).unwrap().to_string(), t);
        let c = ConnectionString::parse("HostName=h;DeviceId=d;x509=true").unwrap();
        assert_eq!(c.password(0), None);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", E::Empty),
            ("DeviceId=d;SharedAccessKey=a2V5", E::MissingHostName),
            ("HostName=h;SharedAccessKey=a2V5", E::MissingDeviceId),
            ("HostName=h;HostName=g;DeviceId=d", E::Duplicate("HostName".into())),
            ("HostName=h;DeviceId=d;Foo=1", E::UnknownKey("Foo".into())),
            ("HostName=h;DeviceId=d;SharedAccessKey=a2V5;SharedAccessSignature=x", E::KeyAndSignature),
            ("HostName=h;DeviceId=d", E::MissingCredential),
            ("HostName=h;DeviceId=;SharedAccessKey=a2V5", E::EmptyValue("DeviceId".into())),
            ("HostName=h;DeviceId", E::NotAPair("DeviceId".into())),
        ];
        for (input, want) in cases {
            assert_eq!(ConnectionString::parse(input), Err(want), "{input}");
        }
        let e = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=not base64!").unwrap_err();
        assert!(matches!(e, E::BadKey(KeyError::NotBase64(_))));
        assert!(e.to_string().starts_with("SharedAccessKey: the key is not valid base64"), "{e}");
        let e = ConnectionString::parse("HostName=h;DeviceId=a/b;SharedAccessKey=a2V5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "DeviceId: 'a/b' contains '/'; IoT Hub ids are ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '"
        );
        // The same rule as the registry's, for every character it refuses.
        for id in ["dév", "a+b", "a#b", "a b", "a\u{7}b", "a\"b"] {
            let e = ConnectionString::parse(&format!("HostName=h;DeviceId=d;ModuleId={id};SharedAccessKey=a2V5"));
            assert!(matches!(e, Err(E::BadIdCharacter { field: "ModuleId", .. })), "{id}: {e:?}");
            assert!(!crate::topic::is_valid_device_id(id), "{id}");
        }
        assert!(ConnectionString::parse("HostName=h;DeviceId=-.%_*?!(),:=@$';SharedAccessKey=a2V5").is_ok());
        // A policy's string is named as such.
        let e = ConnectionString::parse("HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5").unwrap_err();
        assert_eq!(e, E::PolicyString);
        // Copy artifacts: quotes around the string (JSON, a shell line) and a key wrapped over lines.
        for pasted in [
            "\"HostName=h;DeviceId=d;SharedAccessKey=a2V5\"",
            " 'HostName=h;DeviceId=d;SharedAccessKey=a2V5'\n",
            "\u{201c}HostName=h;DeviceId=d;SharedAccessKey=a2V5\u{201d}",
            "HostName=h;DeviceId=d;SharedAccessKey=a2\r\nV5",
            "HostName=h;DeviceId=d;SharedAccessKey=a2\n\t  V5",
        ] {
            let cs = ConnectionString::parse(pasted).unwrap_or_else(|e| panic!("{pasted}: {e}"));
            assert_eq!((cs.host_name.as_str(), cs.device_id.as_str()), ("h", "d"));
            assert_eq!(cs.credential, Credential::Key(DeviceKey::from_base64("a2V5").unwrap()));
        }
        // IoT Hub's 128 characters, for devices and modules.
        let id = "d".repeat(128);
        assert!(
            ConnectionString::parse(&format!("HostName=h;DeviceId={id};ModuleId={id};SharedAccessKey=a2V5")).is_ok()
        );
        let e = ConnectionString::parse(&format!("HostName=h;DeviceId={id}x;SharedAccessKey=a2V5")).unwrap_err();
        assert_eq!(e.to_string(), "DeviceId is 129 characters long; IoT Hub allows at most 128");
        let e = ConnectionString::parse(&format!("HostName=h;DeviceId=d;ModuleId={id}xx;SharedAccessKey=a2V5"))
            .unwrap_err();
        assert_eq!(e, E::TooLong { field: "ModuleId", len: 130 });
        let e = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessSignature=sr=1").unwrap_err();
        assert!(matches!(e, E::BadSignature(SasParseError::MissingPrefix)));
    }

    #[test]
    fn password_signs_for_the_identity() {
        let c = ConnectionString::parse(&format!(
            "HostName=iot-hub-for-test.azure-devices.net;DeviceId=iot-device-for-test;SharedAccessKey={KEY}"
        ))
        .unwrap();
        let t = c.password(1471940363).unwrap();
        assert_eq!(t.signature(), "SIumZ1ACqqPJZ2okHDlW9MSYKykEpqsQY3z6FMOICd4=");
    }

    #[test]
    fn redacted_hides_the_key() {
        let c = ConnectionString::parse(&format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}")).unwrap();
        assert_eq!(c.redacted(), "HostName=h;DeviceId=d;SharedAccessKey=***");
    }

    /// Arbitrary Unicode ids, minus what the format cannot carry (`;`, surrounding spaces) and the characters
    /// the parser refuses on purpose (`/ ?#+`, whitespace, control characters).
    fn id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9\\-.%_*?!(),:=@$']{1,40}"
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            host in "[a-z0-9][a-z0-9.-]{0,30}",
            device in id(),
            module in proptest::option::of(id()),
            key in proptest::collection::vec(any::<u8>(), 1..64),
            gateway in proptest::option::of("[a-z0-9][a-z0-9.-]{0,20}"),
        ) {
            let c = ConnectionString {
                host_name: host, device_id: device, module_id: module, key_name: None,
                credential: Credential::Key(DeviceKey::from_bytes(key)), gateway_host_name: gateway,
            };
            prop_assert_eq!(ConnectionString::parse(&c.to_string()).unwrap(), c);
        }
    }

    #[test]
    fn service_connection_strings_round_trip_and_sign_hub_tokens() {
        let text = "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let cs = ServiceConnectionString::parse(text).unwrap();
        assert_eq!(cs.to_string(), text);
        let t = cs.token(1_700_000_000).to_string();
        assert!(t.starts_with("SharedAccessSignature sr=localhost&sig="), "{t}");
        assert!(t.ends_with("&se=1700000000&skn=iothubowner"), "{t}");
        assert_eq!(
            ServiceConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=AAAA"),
            Err(ConnectionStringError::DeviceString)
        );
        assert_eq!(
            ServiceConnectionString::parse("HostName=h;SharedAccessKey=AAAA"),
            Err(ConnectionStringError::MissingKeyName)
        );
    }
}
