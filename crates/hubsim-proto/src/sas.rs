//! Shared access signature (SAS) tokens: building the resource URI, signing, parsing and verifying.
//!
//! A token is `SharedAccessSignature sr={encoded uri}&sig={encoded base64 HMAC}&se={expiry}[&skn={policy}]`
//! (reference §3). The string to sign is `sr` exactly as it appears in the token, a newline, and `se`; the HMAC key
//! is the base64-decoded device (or policy, or DPS) key.
//!
//! ## Keys and non-canonical base64
//! IoT Hub always issues keys as canonical, padded base64, so [`DeviceKey::from_base64`] is strict: a key with a
//! typo, missing padding or stray bits is refused with an error rather than silently producing a signature the hub
//! will reject. [`DeviceKey::from_base64_lenient`] decodes the way Node's `Buffer.from(k, 'base64')` and the
//! browser's `atob` do (padding optional, trailing bits ignored): it exists so that tokens from lenient tools can be
//! reproduced, e.g. the Node SDK's test vector whose key is the three characters `key`.
//!
//! ## Verification
//! [`SasToken::verify`] follows the Edge hub's implementation of IoT Hub's rules: the audience is URL-decoded and
//! compared case-insensitively with the expected resource; the signature is recomputed over the raw `sr` (escape
//! case preserved) and compared in constant time against the primary and then the secondary key; a token whose
//! `se` is more than five minutes in the past is expired.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use core::fmt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::percent;

type HmacSha256 = Hmac<Sha256>;

/// The clock skew IoT Hub tolerates on `se` (reference §3: "MaxClockSkew = 5 min").
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A symmetric key (device, module, shared access policy or DPS enrollment key).
///
/// Its `Debug` output never shows the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey(Vec<u8>);

/// Why a key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is not valid base64 (IoT Hub keys are padded, standard-alphabet base64): {0}")]
    NotBase64(Base64Error),
}

/// Where and why text is not canonical padded base64; positions count from 1 (keys are ASCII). The cases of the
/// base64 crate's `DecodeError`, said for a person who pasted a key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Base64Error {
    #[error("{}", invalid_byte_text(*.0, *.1))]
    InvalidByte(usize, u8),
    #[error(
        "{0} characters cannot be base64: it comes in groups of 4 (the last padded with =); part of the key is missing"
    )]
    InvalidLength(usize),
    #[error("it ends with bits left over at character {} ({}): the end of the key was cut or changed", .0 + 1, describe_byte(*.1))]
    InvalidLastSymbol(usize, u8),
    /// The last group is short of 4 characters with its `=` padding: `YQ=` (one `=` missing) or `bad` (none).
    #[error("the last group of 4 characters is incomplete (base64 pads it with =): part of the key is missing")]
    InvalidPadding,
}

fn invalid_byte_text(at: usize, b: u8) -> String {
    let n = (at + 1).to_string();
    if b == b'=' {
        // Padding where the text does not end a group of 4: characters are missing (or extra) before it.
        return [
            "character ",
            &n,
            " is '=', which only pads the last group of 4 characters: part of the key is missing or extra",
        ]
        .concat();
    }
    ["character ", &n, " is ", &describe_byte(b), ", which base64 does not use (A-Z a-z 0-9 + / and = at the end)"]
        .concat()
}

fn describe_byte(b: u8) -> String {
    match b {
        b' ' => "a space".into(),
        b if b.is_ascii_graphic() => crate::quote::quote_char(char::from(b)),
        b => {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
            ["byte 0x", core::str::from_utf8(&hex).unwrap_or("??")].concat()
        }
    }
}

impl From<base64::DecodeError> for Base64Error {
    fn from(e: base64::DecodeError) -> Self {
        match e {
            base64::DecodeError::InvalidByte(i, b) => Base64Error::InvalidByte(i, b),
            base64::DecodeError::InvalidLength(n) => Base64Error::InvalidLength(n),
            base64::DecodeError::InvalidLastSymbol(i, b) => Base64Error::InvalidLastSymbol(i, b),
            base64::DecodeError::InvalidPadding => Base64Error::InvalidPadding,
        }
    }
}

impl DeviceKey {
    /// Decodes a canonical, padded, standard-alphabet base64 key, as IoT Hub issues them.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        decode_standard(s.as_bytes()).map(DeviceKey).map_err(KeyError::NotBase64)
    }

    /// Decodes base64 the way Node's `Buffer` and the browser's `atob` do: padding optional, trailing bits ignored.
    pub fn from_base64_lenient(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        LENIENT.decode(s).map(DeviceKey).map_err(|e| KeyError::NotBase64(e.into()))
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        DeviceKey(bytes.into())
    }

    /// The canonical base64 form.
    pub fn to_base64(&self) -> String {
        encode_standard(&self.0)
    }

    /// Raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    /// base64(HMAC-SHA256(key, message)).
    pub fn sign(&self, message: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(message);
        encode_standard(&mac.finalize().into_bytes())
    }

    /// Constant-time check that `signature` (raw HMAC bytes) is the HMAC of `message` under this key.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(message);
        mac.verify_slice(signature).is_ok()
    }

    /// The DPS group-enrollment derived device key: `HMAC-SHA256(group key, registration id)`.
    pub fn derive_for_registration(&self, registration_id: &str) -> DeviceKey {
        let mut mac = self.mac();
        mac.update(registration_id.as_bytes());
        DeviceKey(mac.finalize().into_bytes().to_vec())
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({} bytes, redacted)", self.0.len())
    }
}

/// What a token grants access to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceUri {
    /// `{host}/devices/{device}`
    Device { host: String, device_id: String },
    /// `{host}/devices/{device}/modules/{module}`
    Module { host: String, device_id: String, module_id: String },
    /// `{id_scope}/registrations/{registration_id}` (DPS)
    Registration { id_scope: String, registration_id: String },
    /// `{host}` (a hub-level policy token)
    Hub { host: String },
    /// Any other URI, used verbatim.
    Raw(String),
}

impl ResourceUri {
    /// The device or module resource for an identity.
    pub fn for_identity(host: &str, device_id: &str, module_id: Option<&str>) -> Self {
        match module_id {
            Some(m) => ResourceUri::Module { host: host.into(), device_id: device_id.into(), module_id: m.into() },
            None => ResourceUri::Device { host: host.into(), device_id: device_id.into() },
        }
    }
}

impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceUri::Device { host, device_id } => write!(f, "{host}/devices/{device_id}"),
            ResourceUri::Module { host, device_id, module_id } => {
                write!(f, "{host}/devices/{device_id}/modules/{module_id}")
            }
            ResourceUri::Registration { id_scope, registration_id } => {
                write!(f, "{id_scope}/registrations/{registration_id}")
            }
            ResourceUri::Hub { host } => f.write_str(host),
            ResourceUri::Raw(s) => f.write_str(s),
        }
    }
}

/// A parsed or freshly signed SAS token.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The `sr` field exactly as it appears in the token (still URL-encoded).
    sr: String,
    /// The signature, base64 (URL-decoded).
    sig: String,
    /// Expiry, Unix seconds.
    se: u64,
    /// Policy name, if signed with a policy key.
    skn: Option<String>,
}

/// Why a token string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SasParseError {
    #[error("a SAS token starts with \"SharedAccessSignature \"")]
    MissingPrefix,
    #[error("the SAS token has no '{0}' field")]
    MissingField(&'static str),
    #[error("the SAS token has the field '{0}' twice")]
    DuplicateField(String),
    #[error("the SAS token has an unknown field '{0}'")]
    UnknownField(String),
    #[error("the SAS token field '{0}' has no value (expected {0}=…)")]
    EmptyField(String),
    #[error("the SAS token expiry se='{0}' is not a whole number of seconds since 1970")]
    BadExpiry(String),
    #[error("the SAS token field '{field}' is badly URL-encoded: {error}")]
    BadEncoding { field: &'static str, error: percent::DecodeError },
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SasVerifyError {
    #[error("the token is for '{actual}', not for '{expected}'")]
    WrongAudience { expected: String, actual: String },
    #[error("the token expired at {expiry} (now {now}, {MAX_CLOCK_SKEW_SECS} s clock skew allowed)")]
    Expired { expiry: u64, now: u64 },
    #[error("the token's signature does not match the primary or secondary key")]
    BadSignature,
    #[error("the token's signature is not base64")]
    SignatureNotBase64,
}

impl SasToken {
    /// Signs a token for `resource`, valid until `expiry` (Unix seconds), optionally naming a policy (`skn`).
    pub fn sign(key: &DeviceKey, resource: &ResourceUri, expiry: u64, policy: Option<&str>) -> SasToken {
        let sr = percent::encode(&resource.to_string());
        Self::sign_raw(key, sr, expiry, policy)
    }

    /// Signs with an `sr` taken verbatim (already encoded).
    pub fn sign_raw(key: &DeviceKey, sr: String, expiry: u64, policy: Option<&str>) -> SasToken {
        let sig = key.sign(string_to_sign(&sr, expiry).as_bytes());
        SasToken { sr, sig, se: expiry, skn: policy.map(str::to_owned) }
    }

    /// Parses `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`, fields in any order.
    pub fn parse(s: &str) -> Result<SasToken, SasParseError> {
        let rest = s.trim().strip_prefix("SharedAccessSignature ").ok_or(SasParseError::MissingPrefix)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for part in rest.trim().split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let slot = match k {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                other => return Err(SasParseError::UnknownField(other.to_owned())),
            };
            if v.is_empty() {
                return Err(SasParseError::EmptyField(k.to_owned()));
            }
            if slot.replace(v).is_some() {
                return Err(SasParseError::DuplicateField(k.to_owned()));
            }
        }
        let sr = sr.ok_or(SasParseError::MissingField("sr"))?;
        percent::decode(sr).map_err(|error| SasParseError::BadEncoding { field: "sr", error })?;
        let sig = sig.ok_or(SasParseError::MissingField("sig"))?;
        let sig = percent::decode(sig).map_err(|error| SasParseError::BadEncoding { field: "sig", error })?;
        let se_s = se.ok_or(SasParseError::MissingField("se"))?;
        let se = se_s.parse::<u64>().map_err(|_| SasParseError::BadExpiry(se_s.to_owned()))?;
        let skn = skn
            .map(|v| percent::decode(v).map_err(|error| SasParseError::BadEncoding { field: "skn", error }))
            .transpose()?;
        Ok(SasToken { sr: sr.to_owned(), sig, se, skn })
    }

    /// Expiry, Unix seconds.
    pub fn expiry(&self) -> u64 {
        self.se
    }
    /// The `sr` field as it appears in the token (URL-encoded).
    pub fn raw_resource(&self) -> &str {
        &self.sr
    }
    /// The URL-decoded audience.
    pub fn audience(&self) -> String {
        percent::decode(&self.sr).unwrap_or_else(|_| self.sr.clone())
    }
    /// The policy name, if any.
    pub fn policy(&self) -> Option<&str> {
        self.skn.as_deref()
    }
    /// The base64 signature.
    pub fn signature(&self) -> &str {
        &self.sig
    }

    /// True if the token is expired at `now_unix` allowing the hub's clock skew.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.se.saturating_add(MAX_CLOCK_SKEW_SECS) < now_unix
    }

    /// Verifies audience, expiry and signature against any of `keys` (primary first).
    pub fn verify(&self, keys: &[&DeviceKey], expected: &ResourceUri, now_unix: u64) -> Result<(), SasVerifyError> {
        let audience = self.audience();
        let expected_s = expected.to_string();
        // The hub compares host and ids case-insensitively (Edge hub DeviceScopeTokenAuthenticator).
        if !audience.trim_end_matches('/').eq_ignore_ascii_case(&expected_s) {
            return Err(SasVerifyError::WrongAudience { expected: expected_s, actual: audience });
        }
        if self.is_expired(now_unix) {
            return Err(SasVerifyError::Expired { expiry: self.se, now: now_unix });
        }
        let sig = decode_standard(self.sig.as_bytes()).map_err(|_| SasVerifyError::SignatureNotBase64)?;
        let message = string_to_sign(&self.sr, self.se);
        // Check every key so the time taken does not reveal which one matched.
        let mut ok = false;
        for key in keys {
            ok |= key.verify(message.as_bytes(), &sig);
        }
        if ok {
            Ok(())
        } else {
            Err(SasVerifyError::BadSignature)
        }
    }
}

fn string_to_sign(sr: &str, se: u64) -> String {
    format!("{sr}\n{se}")
}

impl fmt::Display for SasToken {
    /// `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]` (the Python SDK's field order).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Built in one buffer: the encoded parts go straight in, no `String` each.
        let mut t = String::from("SharedAccessSignature sr=");
        t.push_str(&self.sr);
        t.push_str("&sig=");
        percent::encode_into(&self.sig, &mut t);
        t.push_str("&se=");
        t.push_str(&self.se.to_string());
        if let Some(skn) = &self.skn {
            t.push_str("&skn=");
            percent::encode_into(skn, &mut t);
        }
        f.write_str(&t)
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken").field("sr", &self.sr).field("se", &self.se).field("skn", &self.skn).finish()
    }
}

/// The standard base64 alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn sextet(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Padded standard base64, as the base64 crate's `STANDARD` engine writes it. Written here (as is
/// [`decode_standard`]) because the crate's generic engine is several KB of the browser app.
fn encode_standard(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = c.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() { char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]) } else { '=' });
        }
    }
    out
}

/// Canonical padded standard base64 (no bits after the last byte), decoded and refused exactly as the base64
/// crate's `STANDARD` engine does (the same error at the same place).
fn decode_standard(s: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let invalid = Base64Error::InvalidByte;
    let rem = s.len() % 4;
    if rem == 1 && s[s.len() - 1] != b'=' && sextet(s[s.len() - 1]).is_none() {
        return Err(invalid(s.len() - 1, s[s.len() - 1]));
    }
    // Whole quads before the last one (or before the leftover bytes).
    let body = s.len().saturating_sub(rem).saturating_sub(if rem == 0 { 4 } else { 0 });
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (q, quad) in s[..body].chunks(4).enumerate() {
        let mut n = 0u32;
        for (j, &b) in quad.iter().enumerate() {
            n = n << 6 | u32::from(sextet(b).ok_or_else(|| invalid(q * 4 + j, b))?);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..]);
    }
    let (mut sextets, mut count, mut pads, mut first_pad, mut last) = ([0u8; 4], 0, 0, 0, 0);
    for (k, &b) in s[body..].iter().enumerate() {
        if b == b'=' {
            if k < 2 {
                return Err(invalid(body + k, b));
            }
            if pads == 0 {
                first_pad = k;
            }
            pads += 1;
            continue;
        }
        if pads > 0 {
            return Err(invalid(body + first_pad, b'='));
        }
        last = b;
        sextets[count] = sextet(b).ok_or_else(|| invalid(body + k, b))?;
        count += 1;
    }
    if !s.is_empty() && count < 2 {
        return Err(Base64Error::InvalidLength(body + count));
    }
    if (pads + count) % 4 != 0 {
        return Err(Base64Error::InvalidPadding);
    }
    let bytes = count * 6 / 8;
    let mut n = sextets.iter().enumerate().fold(0u32, |n, (i, &x)| n | u32::from(x) << (26 - 6 * i));
    if n & (!0u32 >> (bytes * 8)) != 0 {
        return Err(Base64Error::InvalidLastSymbol(body + count - 1, last));
    }
    for _ in 0..bytes {
        out.push((n >> 24) as u8);
        n <<= 8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn base64_as_the_crate_does(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let e = encode_standard(&bytes);
            prop_assert_eq!(&e, &STANDARD.encode(&bytes));
            prop_assert_eq!(decode_standard(e.as_bytes()), Ok(bytes));
        }

        #[test]
        fn base64_refused_as_the_crate_does(s in "[A-Za-z0-9+/=.\\- ]{0,14}") {
            let ours = decode_standard(s.as_bytes());
            let theirs = STANDARD.decode(&s).map_err(Base64Error::from);
            prop_assert_eq!(ours, theirs, "{:?}", s);
        }

        #[test]
        fn base64_last_symbols_as_the_crate_does(s in "([A-Za-z0-9+/]{4}){0,2}[A-Za-z0-9+/]{1,4}={0,3}") {
            prop_assert_eq!(decode_standard(s.as_bytes()), STANDARD.decode(&s).map_err(Base64Error::from), "{:?}", s);
        }
    }
    use super::*;

    const CLI_KEY: &str = "+XLy+MVZ+aTeOnVzN2kLeB16O+kSxmz6g3rS6fAf6rw=";

    fn sig_of(token: &SasToken) -> String {
        percent::encode(token.signature())
    }

    #[test]
    fn node_common_vector_with_and_without_skn() {
        let key = DeviceKey::from_base64("cGFzc3dvcmQ=").unwrap();
        let t = SasToken::sign_raw(&key, "uri".into(), 12345, Some("encode('Me')"));
        assert_eq!(sig_of(&t), "kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D");
        let t = SasToken::sign_raw(&key, "uri".into(), 12345, None);
        assert_eq!(
            t.to_string(),
            "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"
        );
    }

    #[test]
    fn a_bad_key_is_explained_where_it_goes_wrong() {
        let why = |k: &str| DeviceKey::from_base64(k).unwrap_err().to_string();
        let prefix = "the key is not valid base64 (IoT Hub keys are padded, standard-alphabet base64): ";
        assert_eq!(
            why("not base64!"),
            [prefix, "character 4 is a space, which base64 does not use (A-Z a-z 0-9 + / and = at the end)"].concat()
        );
        assert!(why("abc\u{e9}defg").contains("character 4 is byte 0xC3,"), "{}", why("abc\u{e9}defg"));
        assert!(why("ab-d").contains("character 3 is '-',"));
        assert!(why("abcde").ends_with("5 characters cannot be base64: it comes in groups of 4 (the last padded with =); part of the key is missing"));
        assert!(why("YR==")
            .ends_with("it ends with bits left over at character 2 ('R'): the end of the key was cut or changed"));
        let incomplete =
            "the last group of 4 characters is incomplete (base64 pads it with =): part of the key is missing";
        assert!(why("YQ=").ends_with(incomplete));
        // Without any '=' too: the text stops inside a group.
        assert!(why("bad").ends_with(incomplete), "{}", why("bad"));
        // A key two characters short, still ending in '=': the padding is where a group does not end.
        let short = &"+XLy+MVZ+aTeOnVzN2kLeB16O+kSxmz6g3rS6fAf6rw="[2..];
        let said = why(short);
        assert!(said.ends_with("character 42 is '=', which only pads the last group of 4 characters: part of the key is missing or extra"), "{said}");
    }

    #[test]
    fn node_device_vector_needs_the_lenient_decoder() {
        assert!(matches!(DeviceKey::from_base64("key"), Err(KeyError::NotBase64(_))));
        let key = DeviceKey::from_base64_lenient("key").unwrap();
        assert_eq!(key.as_bytes(), &[0x91, 0xEC]);
        let t =
            SasToken::sign(&key, &ResourceUri::Device { host: "host".into(), device_id: "device".into() }, 12345, None);
        assert_eq!(
            t.to_string(),
            "SharedAccessSignature sr=host%2Fdevices%2Fdevice&sig=wM3XiP6gD960IxP7J5WHqnxQHEcWC6YaQCtoMT%2BkKHc%3D&se=12345"
        );
    }

    #[test]
    fn cli_extension_vectors() {
        let key = DeviceKey::from_base64(CLI_KEY).unwrap();
        let host = "iot-hub-for-test.azure-devices.net";
        let dev = ResourceUri::Device { host: host.into(), device_id: "iot-device-for-test".into() };
        let t = SasToken::sign(&key, &dev, 1471940363, None);
        assert_eq!(t.raw_resource(), "iot-hub-for-test.azure-devices.net%2Fdevices%2Fiot-device-for-test");
        assert_eq!(sig_of(&t), "SIumZ1ACqqPJZ2okHDlW9MSYKykEpqsQY3z6FMOICd4%3D");
        let hub = SasToken::sign(&key, &ResourceUri::Hub { host: host.into() }, 1471940363, Some("iothubowner"));
        assert_eq!(sig_of(&hub), "770sPjjYxRYpNz8%2FhEN7XR5XU5KDGYGTinSP8YyeTXw%3D");
        assert!(hub.to_string().ends_with("&skn=iothubowner"));
        let module = ResourceUri::Module {
            host: host.into(),
            device_id: "iot-device-for-test".into(),
            module_id: "module-for-test".into(),
        };
        let m = SasToken::sign(&key, &module, 1471940363, Some("iothubowner"));
        assert_eq!(
            m.raw_resource(),
            "iot-hub-for-test.azure-devices.net%2Fdevices%2Fiot-device-for-test%2Fmodules%2Fmodule-for-test"
        );
        assert_eq!(sig_of(&m), "JwAxBBBPYA0E%2FTHdnrXzUfBfuZ7deH6pppCniJ23Uu0%3D");
        // The signature covers sr as written: lower-case escapes sign differently.
        let lower = SasToken::sign_raw(
            &key,
            "iot-hub-for-test.azure-devices.net%2fdevices%2fiot-device-for-test".into(),
            1471940363,
            None,
        );
        assert_eq!(sig_of(&lower), "kpPd03nBPQvmGX6lLUYgpB%2BVZN9uuoqsIw%2B8g4CkkAY%3D");
    }

    #[test]
    fn python_hmac_primitive() {
        let key = DeviceKey::from_base64("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=").unwrap();
        assert_eq!(key.sign(b"sign this message"), "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M=");
    }

    #[test]
    fn string_to_sign_shape_from_embedded_c() {
        let r = ResourceUri::Device { host: "myiothub.azure-devices.net".into(), device_id: "my_device".into() };
        assert_eq!(
            string_to_sign(&percent::encode(&r.to_string()), 1578941692),
            "myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692"
        );
    }

    #[test]
    fn dps_group_key_derivation_and_token() {
        let group = DeviceKey::from_base64(
            "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
        )
        .unwrap();
        let derived = group.derive_for_registration("sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6");
        assert_eq!(derived.to_base64(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
        let r = ResourceUri::Registration {
            id_scope: "0ne00000A0A".into(),
            registration_id: "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6".into(),
        };
        let t = SasToken::sign(&derived, &r, 1700000000, Some("registration"));
        assert_eq!(
            t.to_string(),
            "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=t6%2F8JHWQuQgM9mXdYf%2FuIqa3dKECOEk9Rr4WrFV19q0%3D&se=1700000000&skn=registration"
        );
    }

    #[test]
    fn parse_round_trips_and_accepts_any_field_order() {
        let s = "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&skn=encode%28%27Me%27%29&se=12345";
        let t = SasToken::parse(s).unwrap();
        assert_eq!(t.policy(), Some("encode('Me')"));
        assert_eq!(t.expiry(), 12345);
        assert_eq!(SasToken::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(SasToken::parse("sr=a&sig=b&se=1"), Err(SasParseError::MissingPrefix));
        assert_eq!(SasToken::parse("SharedAccessSignature sr=a&se=1"), Err(SasParseError::MissingField("sig")));
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sig=b&se=soon"),
            Err(SasParseError::BadExpiry("soon".into()))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sr=b&sig=b&se=1"),
            Err(SasParseError::DuplicateField("sr".into()))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sig=b&se=1&x=2"),
            Err(SasParseError::UnknownField("x".into()))
        );
    }

    #[test]
    fn verify_accepts_primary_or_secondary_with_case_insensitive_audience() {
        let primary = DeviceKey::from_base64(CLI_KEY).unwrap();
        let secondary = DeviceKey::from_base64("cGFzc3dvcmQ=").unwrap();
        let r = ResourceUri::Device { host: "Hub.local".into(), device_id: "Dev1".into() };
        let lower = ResourceUri::Device { host: "hub.local".into(), device_id: "dev1".into() };
        let t = SasToken::sign(&secondary, &r, 1000, None);
        assert_eq!(t.verify(&[&primary, &secondary], &lower, 1000), Ok(()));
        // lower-case escapes in sr are fine as long as the signature covers them
        let t2 = SasToken::sign_raw(&primary, "hub.local%2fdevices%2fdev1".into(), 1000, None);
        assert_eq!(t2.verify(&[&primary], &lower, 900), Ok(()));
    }

    #[test]
    fn verify_rejects_wrong_key_audience_and_expiry_with_skew() {
        let key = DeviceKey::from_base64(CLI_KEY).unwrap();
        let other = DeviceKey::from_base64("cGFzc3dvcmQ=").unwrap();
        let r = ResourceUri::Device { host: "h".into(), device_id: "d".into() };
        let t = SasToken::sign(&key, &r, 1000, None);
        assert_eq!(t.verify(&[&other], &r, 1000), Err(SasVerifyError::BadSignature));
        let r2 = ResourceUri::Device { host: "h".into(), device_id: "e".into() };
        assert!(matches!(t.verify(&[&key], &r2, 1000), Err(SasVerifyError::WrongAudience { .. })));
        assert_eq!(t.verify(&[&key], &r, 1300), Ok(()), "inside the 5-minute skew");
        assert_eq!(t.verify(&[&key], &r, 1301), Err(SasVerifyError::Expired { expiry: 1000, now: 1301 }));
        let mut forged = t.clone();
        forged.se = 999_999;
        assert_eq!(forged.verify(&[&key], &r, 1000), Err(SasVerifyError::BadSignature));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = DeviceKey::from_base64(CLI_KEY).unwrap();
        assert!(!format!("{key:?}").contains("XLy"));
    }
}
