//! The WAN's TLS 1.3 set-up (docs/design.md §4): a CA made by `cpns init`, a server certificate it
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

/// The one crypto provider of the process (docs/design.md §9: exactly one, chosen explicitly): ring,
/// with TLS13_AES_128_GCM_SHA256 preferred. Measured (docs/ARCHITECTURE.md decision 21): the
/// SHA-256 key schedule makes a full handshake 10-20 % cheaper than ring's default
/// TLS13_AES_256_GCM_SHA384, and aws-lc-rs was no faster than ring with the same suite.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// TLS 1.3 server configuration from PEM texts.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // The server's preference (the cheaper suite) wins over the client's order.
    cfg.ignore_client_order = true;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, ServerConnection};

    /// Runs one handshake in memory; the suite both ends agreed on.
    fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> rustls::CipherSuite {
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = ClientConnection::new(client, name).unwrap();
        let mut s = ServerConnection::new(server).unwrap();
        let mut wire = Vec::new();
        while c.is_handshaking() || s.is_handshaking() {
            wire.clear();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            let mut r = &wire[..];
            while !r.is_empty() {
                s.read_tls(&mut r).unwrap();
                s.process_new_packets().unwrap();
            }
            wire.clear();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            let mut r = &wire[..];
            while !r.is_empty() {
                c.read_tls(&mut r).unwrap();
                c.process_new_packets().unwrap();
            }
        }
        let suite = s.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(Some(suite), c.negotiated_cipher_suite().map(|s| s.suite()));
        assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        suite
    }

    #[test]
    fn the_server_picks_aes_128_gcm_sha256_whatever_the_client_prefers() {
        let pki = generate(&["localhost".into()]).unwrap();
        let server = server_config(&pki.server_cert_pem, &pki.server_key_pem).unwrap();
        let ours = client_config(&pki.ca_cert_pem).unwrap();
        assert_eq!(
            handshake(server.clone(), ours),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        // A client preferring AES-256 (ring's default order) gets the server's choice.
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let other =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        assert_eq!(
            other.crypto_provider().cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        assert_eq!(
            handshake(server, Arc::new(other)),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }
}
