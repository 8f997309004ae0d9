//! Device credential files written by `cpns enroll` (docs/design.md §4): the device's entity id, owner
//! and EUKey, plus the CA certificate a PN GW needs to trust the server. Written with mode 0600;
//! the EUKey never appears in `Debug` output.

use std::io::Write;
use std::path::Path;

use cpns_crypto::{AuthorityKey, EuKey, SIGNATURE_LEN};
use cpns_wire::{EntityId, UserId};
use serde::{Deserialize, Serialize};

/// What kind of device a credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A PNE.
    Pne,
    /// A PN GW.
    Gateway,
    /// Either role (002 §B.1.1.1): the credential serves `cpns pne` and `cpns gateway`.
    Both,
}

/// Errors reading or writing a credential file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not a credential file.
    #[error("{path}: not a CPNS credential file: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct File {
    entity_id: String,
    kind: DeviceKind,
    owner: String,
    eukey: String,
    ca_cert_pem: String,
    /// The server's certification key (docs/security.md §4.11), hex; absent in a credential
    /// written before group content was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authority_key: Option<String>,
    /// The server's signature certifying the device's signing key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member_certificate: Option<String>,
}

/// A device's credential.
#[derive(Clone)]
pub struct DeviceCredential {
    /// The entity id.
    pub entity_id: EntityId,
    /// PNE or PN GW.
    pub kind: DeviceKind,
    /// The owning user.
    pub owner: UserId,
    /// The EUKey.
    pub eukey: EuKey,
    /// The CA certificate (PEM) that signs the server's certificate.
    pub ca_cert_pem: String,
    /// The server's certification key and its signature of this device's signing key
    /// (docs/security.md §4.11): what a PNE signs group content and checks other members' with.
    /// `None` in a credential written before group content was signed: enroll the device again.
    pub certified: Option<Certified>,
}

/// The server's certificate of a device's signing key, as its credential holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certified {
    /// The server's certification key.
    pub authority: AuthorityKey,
    /// Its signature of the device's signing key.
    pub signature: [u8; SIGNATURE_LEN],
}

impl DeviceCredential {
    /// What a PNE with this credential signs and checks group content with.
    pub fn signing(&self) -> Option<cpns_proto::pne::Signing> {
        let c = self.certified.as_ref()?;
        Some(cpns_proto::pne::Signing::new(
            self.entity_id.clone(),
            self.owner.clone(),
            &self.eukey,
            c.signature,
            c.authority,
        ))
    }
}

impl core::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceCredential")
            .field("entity_id", &self.entity_id)
            .field("kind", &self.kind)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl DeviceCredential {
    /// Writes the credential to a new file with mode 0600; an existing file is not overwritten.
    pub fn write_new(&self, path: &Path) -> Result<(), CredentialError> {
        let io = |source| CredentialError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File {
            entity_id: self.entity_id.to_string(),
            kind: self.kind,
            owner: self.owner.to_string(),
            eukey: self.eukey.to_hex().to_string(),
            ca_cert_pem: self.ca_cert_pem.clone(),
            authority_key: self.certified.as_ref().map(|c| c.authority.to_hex()),
            member_certificate: self.certified.as_ref().map(|c| hex::encode(c.signature)),
        };
        let text = zeroize::Zeroizing::new(serde_json::to_string_pretty(&file).unwrap_or_default());
        drop(zeroize::Zeroizing::new(file.eukey));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a credential file.
    pub fn read(path: &Path) -> Result<Self, CredentialError> {
        let p = path.display().to_string();
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            CredentialError::Io {
                path: p.clone(),
                source,
            }
        })?);
        let invalid = |reason: String| CredentialError::Invalid {
            path: p.clone(),
            reason,
        };
        let file: File = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let certified = match (&file.authority_key, &file.member_certificate) {
            (Some(key), Some(sig)) => Some(Certified {
                authority: AuthorityKey::from_hex(key)
                    .map_err(|e| invalid(format!("authority_key: {e}")))?,
                signature: hex::decode(sig)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| invalid("member_certificate: not 64 bytes of hex".into()))?,
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "authority_key and member_certificate go together".into(),
                ));
            }
        };
        let eukey = EuKey::from_hex(&file.eukey).map_err(|e| invalid(format!("eukey: {e}")));
        drop(zeroize::Zeroizing::new(file.eukey));
        Ok(Self {
            entity_id: file
                .entity_id
                .parse()
                .map_err(|e| invalid(format!("entity_id: {e}")))?,
            kind: file.kind,
            owner: file
                .owner
                .parse()
                .map_err(|e| invalid(format!("owner: {e}")))?,
            eukey: eukey?,
            ca_cert_pem: file.ca_cert_pem,
            certified,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn credential(certified: Option<Certified>) -> DeviceCredential {
        DeviceCredential {
            entity_id: "phone".parse().unwrap(),
            kind: DeviceKind::Pne,
            owner: "alice".parse().unwrap(),
            eukey: EuKey::from_bytes([3; 32]),
            ca_cert_pem: "pem".into(),
            certified,
        }
    }

    fn certified() -> Certified {
        let ca = cpns_crypto::CertificationKey::from_master(&cpns_crypto::MasterKey::from_bytes(
            [9; 32],
        ));
        let key = cpns_crypto::MemberSigningKey::derive(&EuKey::from_bytes([3; 32]), "phone");
        Certified {
            authority: ca.public(),
            signature: ca.certify("phone", "alice", &key.public()).signature,
        }
    }

    #[test]
    fn a_certificate_is_written_and_read_back_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.cred.json");
        credential(Some(certified())).write_new(&path).unwrap();
        let back = DeviceCredential::read(&path).unwrap();
        assert_eq!(back.certified, Some(certified()));
        let signing = back.signing().unwrap();
        assert_eq!(signing.certificate.pne_id.as_str(), "phone");
        let crypto = cpns_crypto::MemberCertificate {
            pne_id: "phone".into(),
            owner: "alice".into(),
            key: cpns_crypto::MemberKey(signing.certificate.key.0),
            signature: signing.certificate.signature.0,
        };
        assert!(crypto.verify(&signing.authority).is_ok());
    }

    /// A credential from before signed group content reads, without a certificate; one with
    /// half of it, or a bad one, is refused with the field named.
    #[test]
    fn an_older_credential_reads_and_a_broken_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.cred.json");
        credential(None).write_new(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("authority_key"), "{text}");
        let old = DeviceCredential::read(&path).unwrap();
        assert!(old.certified.is_none() && old.signing().is_none());
        let good = credential(Some(certified()));
        let full = dir.path().join("full.cred.json");
        good.write_new(&full).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap();
        let cases = [
            ("member_certificate", serde_json::Value::Null, "go together"),
            ("member_certificate", "abcd".into(), "member_certificate"),
            ("authority_key", "zz".into(), "authority_key"),
        ];
        for (n, (field, value, says)) in cases.into_iter().enumerate() {
            let mut j = json.clone();
            match value {
                serde_json::Value::Null => {
                    j.as_object_mut().unwrap().remove(field);
                }
                v => j[field] = v,
            }
            let p = dir.path().join(format!("bad{n}.cred.json"));
            std::fs::write(&p, j.to_string()).unwrap();
            let e = DeviceCredential::read(&p).unwrap_err().to_string();
            assert!(e.contains(says), "{field}: {e}");
        }
    }
}
