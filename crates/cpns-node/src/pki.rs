//! The WAN's TLS 1.3 set-up (DESIGN §4): a CA made by `cpns init`, a server certificate it
//! signs, rustls configurations for both ends, and the RFC 5705 exporter that binds the PN GW's
//! EUKey challenge-response to the TLS session (002 §B.1.1.2 steps 9-10).

use std::sync::Arc;

use cpns_crypto::{TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors of the TLS set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// PEM texts made by [`generate`]. The keys are secrets: write them with mode 0600.
#[derive(Clone)]
pub struct Pki {
    /// The CA certificate, which devices trust.
    pub ca_cert_pem: String,
    /// The CA's private key.
    pub ca_key_pem: String,
    /// The server certificate.
    pub server_cert_pem: String,
    /// The server's private key.
    pub server_key_pem: String,
}

impl core::fmt::Debug for Pki {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Pki(<redacted>)")
    }
}

/// Makes a CA and a server certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String]) -> Result<Pki, PkiError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "CPNS CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, "CPNS Server");
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok(Pki {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}

/// The one crypto provider of the process (DESIGN §9: exactly one, chosen explicitly).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 server configuration from PEM texts.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// TLS 1.3 client configuration trusting the CA in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| PkiError::Pem(e.to_string()))?)?;
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The exporter value of a TLS session (RFC 5705, label [`TLS_EXPORTER_LABEL`]).
pub fn exporter<C>(conn: &rustls::ConnectionCommon<C>) -> Result<[u8; TLS_EXPORTER_LEN], PkiError> {
    let mut out = [0u8; TLS_EXPORTER_LEN];
    conn.export_keying_material(&mut out, TLS_EXPORTER_LABEL, None)?;
    Ok(out)
}
