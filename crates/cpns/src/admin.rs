//! `cpns init`, `cpns enroll` and `cpns inventory`: the server's data directory, device
//! enrollment (docs/design.md §4: EUKey per device, sealed at rest under the master key) and the PN
//! inventory read from a store.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use cpns_crypto::{EuKey, MasterKey, at_rest_eukey_aad, seal_at_rest};
use cpns_node::clock::unix_millis;
use cpns_node::{DeviceCredential, DeviceKind, pki};
use cpns_store::{DeviceStore, EntityKind, EntityRecord, ServerStore, SqliteStore};
use cpns_wire::{EntityId, UserId};

/// Files of a server data directory.
pub(crate) struct DataDir(pub PathBuf);

impl DataDir {
    pub(crate) fn db(&self) -> PathBuf {
        self.0.join("cpns.db")
    }
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub(crate) fn read(&self, name: &str) -> anyhow::Result<String> {
        let p = self.file(name);
        std::fs::read_to_string(&p)
            .with_context(|| format!("{} (run `cpns init` first?)", p.display()))
    }
    /// Makes the data directory and its keys their owner's only (0700, 0600), saying what it
    /// narrowed (docs/security.md §4.9.1); its store is made so when it is opened.
    pub(crate) fn make_private(&self) -> anyhow::Result<()> {
        cpns_store::private::private_dir(&self.0)?;
        for key in ["master.key", "ca.key", "server.key"] {
            cpns_store::private::private_file(&self.file(key))?;
        }
        Ok(())
    }
    pub(crate) fn master_key(&self) -> anyhow::Result<MasterKey> {
        let text = zeroize::Zeroizing::new(self.read("master.key")?);
        MasterKey::from_hex(text.trim()).map_err(|e| anyhow::anyhow!("master.key: {e}"))
    }
}

/// Writes a new file with mode 0600 (secrets) or 0644.
pub(crate) fn write_new(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, if secret { 0o600 } else { 0o644 });
    let mut f = opts
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Data directory to create.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    pub data_dir: PathBuf,
    /// Names in the server certificate (DNS names or IP addresses).
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub names: Vec<String>,
}

/// `cpns init`.
pub(crate) async fn init(a: InitArgs) -> anyhow::Result<()> {
    let dir = DataDir(a.data_dir);
    if dir.file("master.key").exists() {
        bail!("{} is already initialised", dir.0.display());
    }
    let mut mkdir = std::fs::DirBuilder::new();
    mkdir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut mkdir, cpns_store::private::DIR_MODE);
    mkdir
        .create(&dir.0)
        .with_context(|| format!("create {}", dir.0.display()))?;
    // A directory that was there already is narrowed, said in a warning.
    dir.make_private()?;
    let pki = pki::generate(&a.names)?;
    write_new(&dir.file("ca.pem"), &pki.ca_cert_pem, false)?;
    write_new(&dir.file("ca.key"), &pki.ca_key_pem, true)?;
    write_new(&dir.file("server.pem"), &pki.server_cert_pem, false)?;
    write_new(&dir.file("server.key"), &pki.server_key_pem, true)?;
    let master = MasterKey::generate()?;
    write_new(&dir.file("master.key"), &master.to_hex(), true)?;
    SqliteStore::open(&dir.db()).await?.close().await;
    println!("initialised {}", dir.0.display());
    Ok(())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Kind {
    /// A PNE.
    Pne,
    /// A PN GW.
    Gateway,
    /// A device that serves either role: a PNE, or a PN GW once elected (002 §B.1.1.1).
    Both,
}

#[derive(Args, Debug)]
pub(crate) struct EnrollArgs {
    /// The server's data directory.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    pub data_dir: PathBuf,
    /// The owning user.
    #[arg(long)]
    pub user: String,
    /// PNE or PN GW.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The device's entity id.
    #[arg(long)]
    pub id: String,
    /// Where to write the credential file (default: <id>.cred.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `cpns enroll`: one transaction in the store, then the credential file.
pub(crate) async fn enroll(a: EnrollArgs) -> anyhow::Result<()> {
    let dir = DataDir(a.data_dir.clone());
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.cred.json", a.id)));
    let cred = enroll_device(&dir, &a.user, a.kind, &a.id).await?;
    cred.write_new(&out)?;
    println!(
        "enrolled {} {} of user {}; credential in {}",
        kind_name(a.kind),
        a.id,
        a.user,
        out.display()
    );
    Ok(())
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Pne => "PNE",
        Kind::Gateway => "PN GW",
        Kind::Both => "PNE-or-PN GW",
    }
}

/// Enrolls a device in the server store and returns its credential.
pub(crate) async fn enroll_device(
    dir: &DataDir,
    user: &str,
    kind: Kind,
    id: &str,
) -> anyhow::Result<DeviceCredential> {
    let master = dir.master_key()?;
    let ca = dir.read("ca.pem")?;
    let user: UserId = user.parse().context("user id")?;
    let id: EntityId = id.parse().context("entity id")?;
    let eukey = EuKey::generate()?;
    let store = SqliteStore::open(&dir.db()).await?;
    store.ensure_user(&user).await?;
    let (kind, dkind) = match kind {
        Kind::Pne => (EntityKind::Pne, DeviceKind::Pne),
        Kind::Gateway => (EntityKind::Gateway, DeviceKind::Gateway),
        Kind::Both => (EntityKind::Both, DeviceKind::Both),
    };
    let record = EntityRecord {
        id: id.clone(),
        kind,
        owner: user.clone(),
        sealed_eukey: seal_at_rest(
            &master,
            &at_rest_eukey_aad(id.as_str()),
            eukey.expose_secret(),
        )?,
        capabilities: None,
        cpns_id: None,
        enrolled_at: unix_millis(),
    };
    store
        .insert_entity(&record)
        .await
        .with_context(|| format!("enroll {id}"))?;
    store.close().await;
    // The server certifies the device's signing key (docs/security.md §4.11).
    let ca_key = cpns_crypto::CertificationKey::from_master(&master);
    let member = cpns_crypto::MemberSigningKey::derive(&eukey, id.as_str());
    let cert = ca_key.certify(id.as_str(), user.as_str(), &member.public());
    Ok(DeviceCredential {
        entity_id: id,
        kind: dkind,
        owner: user,
        eukey,
        ca_cert_pem: ca,
        certified: Some(cpns_node::credentials::Certified {
            authority: ca_key.public(),
            signature: cert.signature,
        }),
    })
}

#[derive(Args, Debug)]
pub(crate) struct InventoryArgs {
    /// The server's data directory.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    pub data_dir: PathBuf,
    /// A device's local store instead (a PN GW's or PNE's).
    #[arg(long)]
    pub local: Option<PathBuf>,
}

/// `cpns inventory`.
pub(crate) async fn inventory(a: InventoryArgs) -> anyhow::Result<()> {
    let text = match &a.local {
        Some(path) => local_inventory_text(path).await?,
        None => server_inventory_text(&DataDir(a.data_dir).db()).await?,
    };
    print!("{text}");
    Ok(())
}

/// The server's PN inventory, as text.
pub(crate) async fn server_inventory_text(db: &Path) -> anyhow::Result<String> {
    if !db.exists() {
        bail!("{} does not exist (run `cpns init` first?)", db.display());
    }
    let store = SqliteStore::open(db).await?;
    let pns = store.all_pns().await?;
    let mut out = String::new();
    if pns.is_empty() {
        out.push_str("no PN registered\n");
    }
    for pn in &pns {
        out.push_str(&format!(
            "PN {}  gateway {}  owner {}  {}\n",
            pn.pn_id,
            pn.gateway,
            pn.owner,
            pn.state.as_str()
        ));
        for m in &pn.members {
            let entity = store.entity(&m.pne_id).await?;
            let cpns_id = entity
                .and_then(|e| e.cpns_id)
                .map_or_else(|| "-".to_string(), |c| c.to_string());
            let device = m
                .capabilities
                .as_ref()
                .map_or_else(|| "?".into(), |c| c.device_type.clone());
            out.push_str(&format!(
                "  PNE {:<12} {:<10} {}{}  cpns-id {}\n",
                m.pne_id.as_str(),
                device,
                if m.authenticated {
                    "authenticated"
                } else {
                    "not authenticated"
                },
                if m.initiator { ", initiator" } else { "" },
                cpns_id,
            ));
            out.push_str(&contents_line(&m.contents));
        }
    }
    store.close().await;
    Ok(out)
}

/// A device's local PN inventory, as text.
pub(crate) async fn local_inventory_text(path: &Path) -> anyhow::Result<String> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let store = SqliteStore::open(path).await?;
    let mut out = String::new();
    for pn in store.local_pns().await? {
        out.push_str(&format!("PN {}  gateway {}\n", pn.pn_id, pn.gateway));
        for m in &pn.members {
            let key = if m.sealed_local_key.is_some() {
                "LocalEUKey"
            } else {
                "-"
            };
            out.push_str(&format!("  PNE {:<12} {key}\n", m.pne_id.as_str()));
            out.push_str(&contents_line(&m.contents));
        }
    }
    store.close().await;
    Ok(out)
}

/// The contents a member announced (000 §6.6.1.1 step 1), as an indented line; empty if none.
fn contents_line(items: &[cpns_wire::ContentItem]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let list: Vec<String> = items
        .iter()
        .map(|c| format!("{} ({})", c.name, c.media_type))
        .collect();
    format!("      contents: {}\n", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::contents_line;

    #[test]
    fn contents_are_listed_under_their_member() {
        assert_eq!(contents_line(&[]), "");
        let items = vec![
            cpns_wire::ContentItem {
                name: "holiday.mp3".into(),
                media_type: "audio/mpeg".into(),
            },
            cpns_wire::ContentItem {
                name: "beach.jpg".into(),
                media_type: "image/jpeg".into(),
            },
        ];
        assert_eq!(
            contents_line(&items),
            "      contents: holiday.mp3 (audio/mpeg), beach.jpg (image/jpeg)\n"
        );
    }
}
