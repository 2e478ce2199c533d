//! TLS for the MQTT and WebSocket listeners: the user's certificate, or a local CA and a server certificate
//! generated into the data folder.
//!
//! The README asks users to trust the generated CA in their OS, so the CA is made as harmless as a trusted root
//! can be:
//! - **name constraints** (critical): it can only vouch for the names this emulator serves — DNS `localhost`
//!   (and its subdomains), the configured host name, IP 127.0.0.1/32 and ::1/128 — so a stolen `ca.key` cannot
//!   impersonate any other site;
//! - **path length 0**: it signs server certificates only, never another CA;
//! - valid [`CA_DAYS`] (10 years at most), the server certificate [`LEAF_DAYS`] (within browsers' 398-day limit);
//! - both are regenerated at start when expired or within [`RENEW_DAYS`] of expiry, and a CA from an older hubsim
//!   (no constraints, valid until 4096) or one whose constraints do not cover the host name is replaced, with a
//!   warning that it must be trusted again;
//! - `ca.key` and `server.key` are created 0600 (see [`crate::files`]); wider modes left by older versions are
//!   narrowed at start.

use anyhow::{anyhow, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration as Span, OffsetDateTime};

use crate::files;

/// Validity of the generated CA (10 years minus the leap days).
pub const CA_DAYS: i64 = 3650;
/// Validity of the generated server certificate (browsers accept at most 398 days).
pub const LEAF_DAYS: i64 = 365;
/// A certificate this close to expiry is regenerated at start.
pub const RENEW_DAYS: i64 = 30;
/// Backdating of `notBefore`, for clocks slightly behind.
const BACKDATE: Span = Span::hours(1);

/// The server's TLS settings and, when generated, the CA to trust.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// The generated CA certificate, `None` with a user-supplied certificate.
    pub ca_path: Option<PathBuf>,
}

/// Loads `cert`/`key`, or the generated pair in `data_dir`, generating or renewing it as needed.
pub fn load(data_dir: &Path, host_name: &str, cert: Option<&Path>, key: Option<&Path>) -> Result<Tls> {
    let (cert_path, key_path, ca_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), None),
        (None, None) => {
            let ca = generate(data_dir, host_name, OffsetDateTime::now_utc())?;
            (data_dir.join("server.pem"), data_dir.join("server.key"), Some(ca))
        }
        _ => return Err(anyhow!("--tls-cert and --tls-key go together")),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("{} holds no certificate", cert_path.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&key_path).with_context(|| format!("reading the key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not match")?;
    Ok(Tls { config: Arc::new(config), ca_path })
}

/// The names the server certificate carries and the CA may vouch for.
fn served_names(host_name: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !names.iter().any(|n| n.eq_ignore_ascii_case(host_name)) {
        names.push(host_name.to_owned());
    }
    names
}

/// The CA's permitted subtrees for `names`: DNS names as such, IP addresses as single-host ranges.
fn permitted(names: &[String]) -> Vec<GeneralSubtree> {
    names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, if ip.is_ipv4() { 32 } else { 128 })),
            Err(_) => GeneralSubtree::DnsName(n.clone()),
        })
        .collect()
}

/// The CA's parameters. The issuer of the server certificate is rebuilt from them (same name, key identifier
/// from the key), so they must not change between the CA and its leaves except in validity.
fn ca_params(names: &[String], now: OffsetDateTime) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hubsim local CA");
    dn.push(DnType::OrganizationName, "hubsim");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.name_constraints = Some(NameConstraints { permitted_subtrees: permitted(names), excluded_subtrees: vec![] });
    p.not_before = now - BACKDATE;
    p.not_after = p.not_before + Span::days(CA_DAYS);
    Ok(p)
}

/// What an existing certificate file says about itself.
struct Parsed {
    not_after: i64,
    /// The CA's permitted DNS names and IP ranges (`dns:x`, `ip:bytes`), sorted; `None` without constraints.
    constraints: Option<Vec<String>>,
    path_len_zero: bool,
    /// DNS names and IP addresses of the subject alternative names, sorted.
    sans: Vec<String>,
    der: Vec<u8>,
}

fn parse_first(pem_path: &Path) -> Option<Parsed> {
    use x509_parser::extensions::GeneralName;
    let der = CertificateDer::pem_file_iter(pem_path).ok()?.next()?.ok()?;
    let (_, x) = x509_parser::parse_x509_certificate(&der).ok()?;
    let name = |g: &GeneralName| match g {
        GeneralName::DNSName(d) => Some(format!("dns:{}", d.to_ascii_lowercase())),
        GeneralName::IPAddress(b) => Some(format!("ip:{b:?}")),
        _ => None,
    };
    let constraints = x.name_constraints().ok().flatten().map(|c| {
        let mut v: Vec<String> = c.value.permitted_subtrees.iter().flatten().filter_map(|s| name(&s.base)).collect();
        v.sort();
        v
    });
    let path_len_zero =
        x.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca && b.value.path_len_constraint == Some(0));
    let mut sans: Vec<String> = x
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| s.value.general_names.iter().filter_map(name).collect())
        .unwrap_or_default();
    sans.sort();
    Some(Parsed { not_after: x.validity().not_after.timestamp(), constraints, path_len_zero, sans, der: der.to_vec() })
}

/// What `names` should look like in a parsed certificate: as constraints (IP with mask) or as SANs.
fn expected(names: &[String], as_constraints: bool) -> Vec<String> {
    let mut v: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if as_constraints => format!("ip:{:?}", [a.octets().to_vec(), vec![255; 4]].concat()),
            Ok(IpAddr::V6(a)) if as_constraints => format!("ip:{:?}", [a.octets().to_vec(), vec![255; 16]].concat()),
            Ok(IpAddr::V4(a)) => format!("ip:{:?}", a.octets().to_vec()),
            Ok(IpAddr::V6(a)) => format!("ip:{:?}", a.octets().to_vec()),
            Err(_) => format!("dns:{}", n.to_ascii_lowercase()),
        })
        .collect();
    v.sort();
    v
}

/// Why an existing CA must be replaced, if it must.
fn ca_problem(ca: Option<&Parsed>, key_ok: bool, names: &[String], now: i64) -> Option<String> {
    let Some(ca) = ca else { return Some("there is none yet".into()) };
    if !key_ok {
        return Some("its key is missing or unreadable".into());
    }
    match &ca.constraints {
        None => return Some("it has no name constraints (made by an older hubsim)".into()),
        Some(c) if *c != expected(names, true) => {
            return Some("its name constraints do not match the names served (the host name changed)".into())
        }
        _ => {}
    }
    if !ca.path_len_zero {
        return Some("it is not limited to path length 0".into());
    }
    if ca.not_after - now > (CA_DAYS + 1) * 86_400 {
        return Some("it is valid for more than 10 years".into());
    }
    if ca.not_after - now < RENEW_DAYS * 86_400 {
        return Some(format!("it expires within {RENEW_DAYS} days"));
    }
    None
}

/// Makes sure a valid CA and server certificate exist in `dir` for `host_name` at `now`; returns the CA's path.
fn generate(dir: &Path, host_name: &str, now: OffsetDateTime) -> Result<PathBuf> {
    files::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_pem = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let leaf_pem = dir.join("server.pem");
    let leaf_key_path = dir.join("server.key");
    for k in [&ca_key_path, &leaf_key_path] {
        if k.exists() {
            files::narrow(k, files::FILE_MODE).with_context(|| format!("narrowing {}", k.display()))?;
        }
    }
    let names = served_names(host_name);
    let unix = now.unix_timestamp();

    let existing_key = std::fs::read_to_string(&ca_key_path).ok().and_then(|t| KeyPair::from_pem(&t).ok());
    let ca = parse_first(&ca_pem);
    let (ca_key, ca_parsed, ca_new) = match ca_problem(ca.as_ref(), existing_key.is_some(), &names, unix) {
        None => (existing_key.expect("checked"), ca.expect("checked"), false),
        Some(why) => {
            let k = KeyPair::generate()?;
            let cert = ca_params(&names, now)?.self_signed(&k)?;
            files::write_private(&ca_key_path, k.serialize_pem().as_bytes())
                .with_context(|| format!("writing {}", ca_key_path.display()))?;
            std::fs::write(&ca_pem, cert.pem()).with_context(|| format!("writing {}", ca_pem.display()))?;
            if ca.is_some() {
                tracing::warn!(
                    "replaced the local CA because {why}; trust the new {} again (valid {CA_DAYS} days, only for {})",
                    ca_pem.display(),
                    names.join(", ")
                );
            } else {
                tracing::info!(
                    "generated a local CA {} (valid {CA_DAYS} days, only for {})",
                    ca_pem.display(),
                    names.join(", ")
                );
            }
            let parsed = parse_first(&ca_pem).ok_or_else(|| anyhow!("cannot read back {}", ca_pem.display()))?;
            (k, parsed, true)
        }
    };

    let leaf = parse_first(&leaf_pem);
    let issued_by_ca = std::fs::read_to_string(&leaf_pem)
        .ok()
        .and_then(|t| CertificateDer::pem_slice_iter(t.as_bytes()).nth(1).and_then(|c| c.ok()))
        .is_some_and(|c| c.as_ref() == ca_parsed.der.as_slice());
    let leaf_problem = match &leaf {
        _ if ca_new => Some("the CA is new"),
        None => Some("there is none yet"),
        _ if !leaf_key_path.exists() => Some("its key is missing"),
        Some(l) if l.sans != expected(&names, false) => Some("the host name changed"),
        Some(l) if l.not_after - unix < RENEW_DAYS * 86_400 => Some("it expires soon"),
        _ if !issued_by_ca => Some("it was not issued by the current CA"),
        _ => None,
    };
    if let Some(why) = leaf_problem {
        let issuer = Issuer::new(ca_params(&names, now)?, ca_key);
        let mut p = CertificateParams::new(names.clone())?;
        p.distinguished_name.push(DnType::CommonName, host_name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = now - BACKDATE;
        // Never beyond the CA.
        let ca_end = OffsetDateTime::from_unix_timestamp(ca_parsed.not_after)?;
        p.not_after = (p.not_before + Span::days(LEAF_DAYS)).min(ca_end);
        let k = KeyPair::generate()?;
        let cert = p.signed_by(&k, &issuer)?;
        let ca_text = std::fs::read_to_string(&ca_pem)?;
        files::write_private(&leaf_key_path, k.serialize_pem().as_bytes())
            .with_context(|| format!("writing {}", leaf_key_path.display()))?;
        std::fs::write(&leaf_pem, format!("{}{}", cert.pem(), ca_text))
            .with_context(|| format!("writing {}", leaf_pem.display()))?;
        tracing::info!(
            "generated the server certificate {} because {why} (valid {LEAF_DAYS} days)",
            leaf_pem.display()
        );
    }
    // The names file of older versions is no longer used: the certificate itself says which names it carries.
    let _ = std::fs::remove_file(dir.join("server.names"));
    Ok(ca_pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use x509_parser::extensions::GeneralName;

    fn der(path: &Path, n: usize) -> Vec<u8> {
        CertificateDer::pem_file_iter(path).unwrap().nth(n).unwrap().unwrap().to_vec()
    }

    #[test]
    fn the_ca_is_constrained_and_both_are_short_lived() {
        let tmp = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        generate(tmp.path(), "myhub.example", now).unwrap();
        let ca_der = der(&tmp.path().join("ca.pem"), 0);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let bc = ca.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let nc = ca.name_constraints().unwrap().expect("name constraints");
        assert!(nc.critical);
        let permitted: Vec<String> = nc
            .value
            .permitted_subtrees
            .iter()
            .flatten()
            .map(|s| match &s.base {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) => format!("{b:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert!(permitted.contains(&"localhost".into()));
        assert!(permitted.contains(&"myhub.example".into()));
        assert!(permitted.contains(&format!("{:?}", [127u8, 0, 0, 1, 255, 255, 255, 255])));
        let mut v6 = [0u8; 32];
        v6[15] = 1;
        v6[16..].fill(255);
        assert!(permitted.contains(&format!("{:?}", v6)));
        assert_eq!(permitted.len(), 4, "{permitted:?}");
        assert!(nc.value.excluded_subtrees.is_none());
        let life = |c: &x509_parser::certificate::X509Certificate| {
            c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
        };
        assert!(life(&ca) <= 3653 * 86_400, "CA ≤ 10 years");
        assert!(ca.validity().not_before.timestamp() <= now.unix_timestamp());
        let leaf_der = der(&tmp.path().join("server.pem"), 0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert!(life(&leaf) <= 398 * 86_400, "leaf within browsers' 398 days");
        assert!(leaf.validity().not_after.timestamp() <= ca.validity().not_after.timestamp());
        assert!(!leaf.basic_constraints().unwrap().is_some_and(|b| b.value.ca));
        // The chain in server.pem ends with the CA.
        assert_eq!(der(&tmp.path().join("server.pem"), 1), ca_der);
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        generate(&dir, "localhost", OffsetDateTime::now_utc()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("server.key")), 0o600);
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        generate(&dir, "localhost", OffsetDateTime::now_utc()).unwrap();
        assert_eq!(mode(&dir.join("server.key")), 0o600, "narrowed at start");
    }

    #[test]
    fn renewed_near_expiry_kept_otherwise_and_old_cas_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let t0 = OffsetDateTime::now_utc();
        generate(d, "localhost", t0).unwrap();
        let (ca0, leaf0) = (der(&d.join("ca.pem"), 0), der(&d.join("server.pem"), 0));
        // A restart a month later changes nothing.
        generate(d, "localhost", t0 + Span::days(30)).unwrap();
        assert_eq!(der(&d.join("ca.pem"), 0), ca0);
        assert_eq!(der(&d.join("server.pem"), 0), leaf0);
        // Within 30 days of the leaf's expiry: a new leaf from the same CA.
        generate(d, "localhost", t0 + Span::days(LEAF_DAYS - 20)).unwrap();
        assert_eq!(der(&d.join("ca.pem"), 0), ca0);
        let leaf1 = der(&d.join("server.pem"), 0);
        assert_ne!(leaf1, leaf0);
        // Near the CA's expiry: a new CA and a new leaf.
        generate(d, "localhost", t0 + Span::days(CA_DAYS - 10)).unwrap();
        assert_ne!(der(&d.join("ca.pem"), 0), ca0);
        assert_ne!(der(&d.join("server.pem"), 0), leaf1);
        // A CA of an older hubsim (unconstrained, valid until 4096) is replaced.
        let k = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_after = rcgen::date_time_ymd(4096, 1, 1);
        std::fs::write(d.join("ca.pem"), p.self_signed(&k).unwrap().pem()).unwrap();
        std::fs::write(d.join("ca.key"), k.serialize_pem()).unwrap();
        let old = der(&d.join("ca.pem"), 0);
        generate(d, "localhost", OffsetDateTime::now_utc()).unwrap();
        let new = der(&d.join("ca.pem"), 0);
        assert_ne!(new, old);
        let (_, c) = x509_parser::parse_x509_certificate(&new).unwrap();
        assert!(c.name_constraints().unwrap().is_some());
        // A new host name needs a CA allowed to vouch for it.
        generate(d, "other.example", OffsetDateTime::now_utc()).unwrap();
        assert_ne!(der(&d.join("ca.pem"), 0), new);
    }

    #[test]
    fn rustls_accepts_the_leaf_for_localhost_and_refuses_other_names() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), "localhost", OffsetDateTime::now_utc()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der(&tmp.path().join("ca.pem"), 0))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let leaf = CertificateDer::from(der(&tmp.path().join("server.pem"), 0));
        let now = rustls::pki_types::UnixTime::now();
        for name in ["localhost", "127.0.0.1", "::1"] {
            let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&leaf, &[], &sn, &[], now).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let sn = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(verifier.verify_server_cert(&leaf, &[], &sn, &[], now).is_err());
    }

    #[test]
    fn a_stolen_ca_key_cannot_vouch_for_other_sites() {
        let tmp = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        generate(tmp.path(), "localhost", now).unwrap();
        // Whoever reads ca.key signs a certificate for a site of their choice...
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(tmp.path().join("ca.key")).unwrap()).unwrap();
        let issuer = Issuer::new(ca_params(&served_names("localhost"), now).unwrap(), ca_key);
        let k = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["bank.example".to_owned()]).unwrap();
        p.not_before = now - BACKDATE;
        p.not_after = now + Span::days(30);
        let evil = p.signed_by(&k, &issuer).unwrap();
        // ...which a client trusting the hubsim CA still refuses: the name is outside the CA's constraints.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der(&tmp.path().join("ca.pem"), 0))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let sn = rustls::pki_types::ServerName::try_from("bank.example").unwrap();
        let err = verifier
            .verify_server_cert(evil.der(), &[], &sn, &[], rustls::pki_types::UnixTime::now())
            .expect_err("a certificate outside the name constraints");
        assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
    }
}
