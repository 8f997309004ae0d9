//! A world of `cpns` processes: a temporary directory with a server data directory
//! (`cpns init`), devices enrolled in it (`cpns enroll`), and the processes around it — the
//! server and the PN GW started together, PNEs and other PN GWs started by the test — each
//! `--json` on loopback with a SQLite store of its own (`<id>.db`).
//!
//! ```ignore
//! let mut w = World::builder().gateway("home-gw").pnes(&["phone", "watch"]).start();
//! let mut watch = w.pne("watch").await_invitation().no_ui().spawn();
//! let mut phone = w.pne("phone").setup("all").stay().spawn();
//! w.gw().expect_event("pn_established");
//! w.stores().await.agree();
//! ```

use std::path::PathBuf;

use super::proc::{Proc, cpns, log_level, s, text};
use super::stores::Stores;

/// The user of the devices enrolled before [`WorldBuilder::user`] names another.
pub const USER: &str = "alice";

/// One enrolled device.
struct Device {
    kind: &'static str,
    id: String,
}

/// What a [`World`] is made of.
pub struct WorldBuilder {
    user: String,
    enrolled: Vec<(String, &'static str, String)>,
    server_args: Vec<String>,
    gateway_args: Vec<String>,
    log: String,
}

impl WorldBuilder {
    /// The devices named after this are `user`'s.
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    /// Enrols a device of `kind` (`pne`, `gateway` or `both`).
    pub fn device(mut self, kind: &'static str, id: &str) -> Self {
        self.enrolled
            .push((self.user.clone(), kind, id.to_string()));
        self
    }

    /// Enrols a PN GW. The first one enrolled is the world's PN GW, which [`World::start`] runs.
    pub fn gateway(self, id: &str) -> Self {
        self.device("gateway", id)
    }

    /// Enrols a PNE.
    pub fn pne(self, id: &str) -> Self {
        self.device("pne", id)
    }

    /// Enrols PNEs.
    pub fn pnes(mut self, ids: &[&str]) -> Self {
        for id in ids {
            self = self.pne(id);
        }
        self
    }

    /// Flags of `cpns server` beyond the world's own.
    pub fn server_args(mut self, args: &[&str]) -> Self {
        self.server_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Flags of the world's `cpns gateway` beyond the world's own (kept when it restarts).
    pub fn gateway_args(mut self, args: &[&str]) -> Self {
        self.gateway_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// The processes log (stderr) at `level` (default `warn`; `CPNS_TEST_LOG` overrides it).
    pub fn log(mut self, level: &str) -> Self {
        self.log = level.to_string();
        self
    }

    /// `cpns init`, then `cpns enroll` for every device; nothing runs yet.
    pub fn enrolled(self) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = World {
            tmp,
            devices: Vec::new(),
            server_args: self.server_args,
            gateway_args: self.gateway_args,
            log: log_level(&self.log),
            server: None,
            gw: None,
        };
        cpns(&["init", "--data-dir", s(&w.data_dir())]);
        for (user, kind, id) in &self.enrolled {
            w.enroll(user, kind, id);
        }
        w
    }

    /// [`WorldBuilder::enrolled`], then [`World::start`].
    pub fn start(self) -> World {
        let mut w = self.enrolled();
        w.start();
        w
    }
}

/// A running PN GW: its process and PAN address.
struct Gateway {
    proc: Proc,
    pan: String,
}

/// A data directory, enrolled devices, and the server and PN GW once started.
pub struct World {
    tmp: tempfile::TempDir,
    devices: Vec<Device>,
    server_args: Vec<String>,
    gateway_args: Vec<String>,
    log: String,
    server: Option<(Proc, String)>,
    gw: Option<Gateway>,
}

impl World {
    /// A world of user [`USER`]'s devices, to be enrolled.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            user: USER.to_string(),
            enrolled: Vec::new(),
            server_args: Vec::new(),
            gateway_args: Vec::new(),
            log: "warn".to_string(),
        }
    }

    /// A path in the world's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.path("server")
    }

    /// The server's SQLite file.
    pub fn server_db(&self) -> PathBuf {
        self.data_dir().join("cpns.db")
    }

    /// The CA certificate the server's certificate chains to.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("ca.pem")).unwrap()
    }

    /// `id`'s credential file.
    pub fn cred(&self, id: &str) -> PathBuf {
        self.path(&format!("{id}.cred.json"))
    }

    /// `id`'s local SQLite store.
    pub fn store(&self, id: &str) -> PathBuf {
        self.path(&format!("{id}.db"))
    }

    /// `cpns enroll` of one more device, of `user`.
    pub fn enroll(&mut self, user: &str, kind: &'static str, id: &str) {
        cpns(&[
            "enroll",
            "--data-dir",
            s(&self.data_dir()),
            "--user",
            user,
            "--kind",
            kind,
            "--id",
            id,
            "--out",
            s(&self.cred(id)),
        ]);
        self.devices.push(Device {
            kind,
            id: id.to_string(),
        });
    }

    /// The world's PN GW: the first enrolled.
    fn home(&self) -> String {
        let d = self.devices.iter().find(|d| d.kind == "gateway");
        d.expect("a world with a PN GW").id.clone()
    }

    /// Starts the server and the world's PN GW, and waits until the PN GW has its WAN session.
    pub fn start(&mut self) {
        self.start_server("127.0.0.1:0");
        let home = self.home();
        let extra: Vec<&str> = self.gateway_args.iter().map(String::as_str).collect();
        let gw = self.start_gateway_at(&home, "127.0.0.1:0", &extra);
        self.gw = Some(gw);
    }

    /// Starts `cpns server --json` listening on `listen` (the address it had, to restart it),
    /// and waits until its listener and control socket are up.
    pub fn start_server(&mut self, listen: &str) {
        let mut args = vec![
            "server".to_string(),
            "--json".into(),
            "--data-dir".into(),
            s(&self.data_dir()).into(),
            "--listen".into(),
            listen.into(),
        ];
        args.extend(self.server_args.iter().cloned());
        let mut p = Proc::start("server", "server", &args, &self.log);
        let addr = p.listening();
        p.expect_event("control_listening");
        self.server = Some((p, addr));
    }

    /// The server.
    pub fn server(&mut self) -> &mut Proc {
        &mut self.server.as_mut().expect("a running server").0
    }

    /// The server's address.
    pub fn server_addr(&self) -> &str {
        &self.server.as_ref().expect("a server started").1
    }

    /// The world's PN GW.
    pub fn gw(&mut self) -> &mut Proc {
        &mut self.gw.as_mut().expect("a running PN GW").proc
    }

    /// The world's PN GW's PAN address.
    pub fn pan(&self) -> &str {
        &self.gw.as_ref().expect("a PN GW started").pan
    }

    /// Starts `cpns gateway --json` as `id` with `extra` flags, talking to the server, and
    /// waits for its PAN listener and its WAN session. Returns it and its PAN address.
    pub fn start_gateway(&self, id: &str, extra: &[&str]) -> (Proc, String) {
        let gw = self.start_gateway_at(id, "127.0.0.1:0", extra);
        (gw.proc, gw.pan)
    }

    fn start_gateway_at(&self, id: &str, pan: &str, extra: &[&str]) -> Gateway {
        let mut args: Vec<String> = [
            "gateway",
            "--json",
            "--credential",
            s(&self.cred(id)),
            "--server",
            self.server_addr(),
            "--pan-listen",
            pan,
            "--store",
            s(&self.store(id)),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut proc = Proc::start("gateway", id, &args, &self.log);
        let pan = text(&proc.expect_event("pan_listening")["addr"]);
        proc.expect_event("wan_ready");
        Gateway { proc, pan }
    }

    /// Kills (SIGKILL) `gw`, a PN GW [`World::start_gateway`] started as `id` on PAN address
    /// `pan`, and starts it again there on the same store; waits for its WAN session.
    pub fn restart_other_gateway(&self, gw: &mut Proc, id: &str, pan: &str) {
        gw.kill();
        *gw = self.start_gateway_at(id, pan, &[]).proc;
    }

    /// Stops the world's PN GW (SIGKILL).
    pub fn stop_gateway(&mut self) {
        if let Some(mut gw) = self.gw.take() {
            gw.proc.kill();
        }
    }

    /// Stops the world's PN GW (SIGKILL) and starts it again on the same PAN address and
    /// store, with its flags and `extra`.
    pub fn restart_gateway(&mut self, extra: &[&str]) {
        let pan = self.pan().to_string();
        self.stop_gateway();
        let home = self.home();
        let mut args: Vec<&str> = self.gateway_args.iter().map(String::as_str).collect();
        args.extend(extra);
        let gw = self.start_gateway_at(&home, &pan, &args);
        self.gw = Some(gw);
    }

    /// A PN of `initiator` with `members` at the world's PN GW, every PNE staying: each member
    /// waits to be invited (and is discovered), then the initiator asks for a PN with all;
    /// once every one joined: the initiator, the members in order, and the PN's id.
    pub fn pn_with(&mut self, initiator: &str, members: &[&str]) -> (Proc, Vec<Proc>, String) {
        let mut joined = Vec::new();
        for id in members {
            let p = self.pne(id).stay().await_invitation().spawn();
            self.gw()
                .expect_event_where("pne_discovered", |v| v["pne"] == *id);
            joined.push(p);
        }
        let mut first = self.pne(initiator).stay().setup("all").spawn();
        let pn = text(&self.gw().expect_event("pn_established")["pn_id"]);
        first.expect_event_where("pn_joined", |v| v["pn_id"] == pn.as_str());
        for p in &mut joined {
            p.expect_event_where("pn_joined", |v| v["pn_id"] == pn.as_str());
        }
        (first, joined, pn)
    }

    /// A PNE to start: `cpns pne --json` as `id`, reaching the world's PN GW.
    pub fn pne(&self, id: &str) -> PneRun<'_> {
        PneRun {
            world: self,
            id: id.to_string(),
            pan: None,
            json: true,
            stay: false,
            args: Vec::new(),
        }
    }

    /// Every PN inventory: the server's store and each enrolled device's local one.
    pub async fn stores(&self) -> Stores {
        let devices: Vec<(String, PathBuf)> = self
            .devices
            .iter()
            .map(|d| (d.id.clone(), self.store(&d.id)))
            .collect();
        Stores::read(&self.server_db(), &devices).await
    }
}

/// How a PNE is started ([`World::pne`]); [`PneRun::spawn`] starts it.
pub struct PneRun<'w> {
    world: &'w World,
    id: String,
    pan: Option<String>,
    json: bool,
    stay: bool,
    args: Vec<String>,
}

impl PneRun<'_> {
    fn flag(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `--setup WHAT`: asks for a PN (`1-1`, `all` or a comma list of PNEs to invite).
    pub fn setup(self, what: &str) -> Self {
        self.flag(&["--setup", what])
    }

    /// `--await-invitation`.
    pub fn await_invitation(self) -> Self {
        self.flag(&["--await-invitation"])
    }

    /// `--decline`: declines invitations.
    pub fn decline(self) -> Self {
        self.flag(&["--decline"])
    }

    /// `--no-ui`: a device without a UI (on an insecure PAN it holds a LocalEUKey all the same).
    pub fn no_ui(self) -> Self {
        self.flag(&["--no-ui"])
    }

    /// `--register`: registers with the server after the other steps.
    pub fn register(self) -> Self {
        self.flag(&["--register"])
    }

    /// `--home-gateway ID`: its own user's PN GW, for another user's PN.
    pub fn home_gateway(self, id: &str) -> Self {
        self.flag(&["--home-gateway", id])
    }

    /// `--stay`: keeps its link and serves its control socket; [`PneRun::spawn`] returns once
    /// the socket is up.
    pub fn stay(mut self) -> Self {
        self.stay = true;
        self
    }

    /// Reaches the PN GW at `pan` instead of the world's.
    pub fn at(mut self, pan: &str) -> Self {
        self.pan = Some(pan.to_string());
        self
    }

    /// Prints readable lines instead of JSON events (read them with [`Proc::expect_line`]).
    pub fn readable(mut self) -> Self {
        self.json = false;
        self
    }

    /// Any other flags.
    pub fn args(self, args: &[&str]) -> Self {
        self.flag(args)
    }

    /// Starts the PNE: `--device-type` its id, and without `--stay` giving up after 50 s (before
    /// a test's [`WAIT`](super::WAIT) does, so a stuck PNE says why).
    pub fn spawn(self) -> Proc {
        let w = self.world;
        let pan = self.pan.as_deref().unwrap_or_else(|| w.pan());
        let mut args: Vec<String> = [
            "pne",
            "--credential",
            s(&w.cred(&self.id)),
            "--store",
            s(&w.store(&self.id)),
            "--gateway",
            pan,
            "--device-type",
            &self.id,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if self.json {
            args.push("--json".into());
        }
        if self.stay {
            args.push("--stay".into());
        } else {
            args.extend(["--timeout-s".into(), "50".into()]);
        }
        args.extend(self.args);
        let mut p = Proc::start("pne", &self.id, &args, &w.log);
        if self.stay {
            p.expect_event("control_listening");
        }
        p
    }
}
