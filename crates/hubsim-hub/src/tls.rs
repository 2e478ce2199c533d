//! TLS for the MQTT and WebSocket listeners: the user's certificate, or a local CA and a server certificate for
//! `localhost`, `127.0.0.1` and the configured host name, generated once into the data folder.

use anyhow::{anyhow, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The server's TLS settings and, when generated, the CA to trust.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// The generated CA certificate, `None` with a user-supplied certificate.
    pub ca_path: Option<PathBuf>,
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hubsim local CA");
    dn.push(DnType::OrganizationName, "hubsim");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

/// Loads `cert`/`key`, or the generated pair in `data_dir`, generating it when missing or when the host names
/// changed.
pub fn load(data_dir: &Path, host_name: &str, cert: Option<&Path>, key: Option<&Path>) -> Result<Tls> {
    let (cert_path, key_path, ca_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), None),
        (None, None) => {
            let ca = generate(data_dir, host_name)?;
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

fn generate(dir: &Path, host_name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_pem = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let names_path = dir.join("server.names");
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !names.contains(&host_name.to_owned()) {
        names.push(host_name.to_owned());
    }
    let names_line = names.join(",");
    let ca_key = if ca_key_path.exists() && ca_pem.exists() {
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)?
    } else {
        let k = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&k)?;
        write_private(&ca_key_path, &k.serialize_pem())?;
        std::fs::write(&ca_pem, cert.pem())?;
        let _ = std::fs::remove_file(&names_path);
        k
    };
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    if current.trim() != names_line || !dir.join("server.pem").exists() || !dir.join("server.key").exists() {
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut p = CertificateParams::new(names.clone())?;
        p.distinguished_name.push(DnType::CommonName, host_name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let k = KeyPair::generate()?;
        let cert = p.signed_by(&k, &issuer)?;
        let ca_text = std::fs::read_to_string(&ca_pem)?;
        write_private(&dir.join("server.key"), &k.serialize_pem())?;
        std::fs::write(dir.join("server.pem"), format!("{}{}", cert.pem(), ca_text))?;
        std::fs::write(&names_path, &names_line)?;
    }
    Ok(ca_pem)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
