//! Device credential files written by `cpns enroll` (docs/design.md §4): the device's entity id, owner
//! and EUKey, plus the CA certificate a PN GW needs to trust the server. Written with mode 0600;
//! the EUKey never appears in `Debug` output.

use std::io::Write;
use std::path::Path;

use cpns_crypto::EuKey;
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
        })
    }
}
