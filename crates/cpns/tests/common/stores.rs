//! The PN inventories of a [`World`](super::World), read from its SQLite files: the server's
//! state of record and every device's local store, and whether they agree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use cpns_store::{DeviceStore, LocalPn, PnRecord, ServerStore, SqliteStore};

/// PNs by id (hex), each with its members' ids: what a test expects of an inventory.
pub type Members = BTreeMap<String, BTreeSet<String>>;

/// `pns` as [`Members`]: `members(&[(pn, &["phone", "watch"])])`.
pub fn members<P: fmt::Display>(pns: &[(P, &[&str])]) -> Members {
    pns.iter()
        .map(|(pn, m)| (pn.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// Every PN inventory of a world at one moment.
pub struct Stores {
    /// The server's PNs, in creation order.
    pub server: Vec<PnRecord>,
    /// Each enrolled device's local PNs, by device id; a device that never ran holds none.
    pub local: BTreeMap<String, Vec<LocalPn>>,
}

/// A PN as both sides can hold it: its PN GW and its members in order.
type Held = BTreeMap<String, (String, Vec<String>)>;

impl Stores {
    /// Reads the server's store at `server_db` and the local store of each `(device, path)`;
    /// a device whose file does not exist holds no PN (the file is not created).
    pub async fn read(server_db: &Path, devices: &[(String, std::path::PathBuf)]) -> Self {
        let st = SqliteStore::open(server_db).await.unwrap();
        let server = st.all_pns().await.unwrap();
        st.close().await;
        let mut local = BTreeMap::new();
        for (id, path) in devices {
            let pns = if path.exists() {
                let st = SqliteStore::open(path).await.unwrap();
                let pns = st.local_pns().await.unwrap();
                st.close().await;
                pns
            } else {
                Vec::new()
            };
            local.insert(id.clone(), pns);
        }
        Self { server, local }
    }

    /// The members of each PN the server holds.
    pub fn at_server(&self) -> Members {
        self.server
            .iter()
            .map(|pn| {
                let m = pn.members.iter().map(|m| m.pne_id.to_string()).collect();
                (pn.pn_id.to_string(), m)
            })
            .collect()
    }

    /// The members of each PN `device` holds in its local store.
    pub fn at(&self, device: &str) -> Members {
        self.held(device)
            .into_iter()
            .map(|(pn, (_, m))| (pn, m.into_iter().collect()))
            .collect()
    }

    /// `device`'s local PNs as it holds them.
    fn held(&self, device: &str) -> Held {
        let pns = self
            .local
            .get(device)
            .unwrap_or_else(|| panic!("no device {device} in this world"));
        pns.iter()
            .map(|pn| {
                let m = pn.members.iter().map(|m| m.pne_id.to_string()).collect();
                (pn.pn_id.to_string(), (pn.gateway.to_string(), m))
            })
            .collect()
    }

    /// What `device` should hold, from the server's store: the PNs it serves as PN GW and the
    /// PNs it is a member of.
    fn due(&self, device: &str) -> Held {
        self.server
            .iter()
            .filter(|pn| {
                pn.gateway.as_str() == device
                    || pn.members.iter().any(|m| m.pne_id.as_str() == device)
            })
            .map(|pn| {
                let m = pn.members.iter().map(|m| m.pne_id.to_string()).collect();
                (pn.pn_id.to_string(), (pn.gateway.to_string(), m))
            })
            .collect()
    }

    /// The server's store and every device's agree, PN by PN: each PN GW holds exactly the PNs
    /// the server has it serve, each PNE exactly the PNs the server has it in, with the same
    /// PN GW and the same members in the same order.
    pub fn agree(&self) {
        for device in self.local.keys() {
            assert_eq!(
                self.held(device),
                self.due(device),
                "{device}'s local store and the server's differ: {self:?}"
            );
        }
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        for pn in &self.server {
            let m: Vec<&str> = pn.members.iter().map(|m| m.pne_id.as_str()).collect();
            let state = pn.state.as_str();
            writeln!(
                f,
                "  server: {} at {} ({state}): {m:?}",
                pn.pn_id, pn.gateway
            )?;
        }
        for device in self.local.keys() {
            for (pn, (gw, m)) in self.held(device) {
                writeln!(f, "  {device}: {pn} at {gw}: {m:?}")?;
            }
        }
        Ok(())
    }
}
