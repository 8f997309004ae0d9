//! The bench's households outside a run: `cpns-bench prepare` makes a server data directory with
//! PN GWs (and their PNEs) enrolled in bulk, and `cpns-bench load` runs establishments on some of
//! them against a running `cpns server` until stopped. Together they put a server under write
//! load for a profiler (BENCHMARKS.md) or a crash test (tests/crash.rs); the helper processes of
//! the benches take their households with the same arguments ([`HouseholdsArgs`]).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use cpns_crypto::MachineRng;
use tokio::task::JoinSet;

use crate::net;

/// The bench households a helper process drives (`cpns-bench hold`, `cpns-bench load`,
/// `cpns-bench subscribe`): households `from..to` of the bench's data directory, against the
/// server at `server`.
#[derive(Args, Debug)]
pub(crate) struct HouseholdsArgs {
    /// The bench's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The server's address.
    #[arg(long)]
    pub server: String,
    /// First household.
    #[arg(long)]
    pub from: usize,
    /// One past the last household.
    #[arg(long)]
    pub to: usize,
}

/// `cpns-bench prepare`: a bench data directory with households enrolled.
#[derive(Args, Debug)]
pub(crate) struct PrepareArgs {
    /// The data directory to make.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// PN GWs to enroll.
    #[arg(long)]
    pub gateways: usize,
    /// How many of them get two PNEs.
    #[arg(long)]
    pub with_pnes: usize,
}

/// `cpns-bench prepare`.
pub(crate) async fn prepare(a: PrepareArgs) -> anyhow::Result<()> {
    if a.with_pnes > a.gateways {
        bail!("--with-pnes must not exceed --gateways");
    }
    net::prepare(&a.data_dir, a.gateways, a.with_pnes, 1, &|_| {}).await?;
    println!(
        "prepared {}: {} PN GWs, {} with PNEs",
        a.data_dir.display(),
        a.gateways,
        a.with_pnes
    );
    Ok(())
}

/// `cpns-bench load`: establishments on the households, one after another on each, until
/// stopped; `established <PN id>` printed after each acknowledged one.
pub(crate) async fn load(a: HouseholdsArgs) -> anyhow::Result<()> {
    let (ca, households) = net::read_households(&a.data_dir, a.from..a.to)?;
    let tls = net::client_tls(&ca)?;
    let mut tasks = JoinSet::new();
    for (t, h) in households.into_iter().enumerate() {
        let (addr, tls) = (a.server.clone(), tls.clone());
        tasks.spawn(async move {
            let mut c = net::connect(&addr, &tls, h, MachineRng::from_seed_u64(t as u64)).await?;
            loop {
                let pn = c.establish().await?;
                println!("established {pn}");
            }
        });
    }
    // Runs until a session fails (the server went away) or the process is stopped.
    match tasks.join_next().await {
        Some(done) => done?,
        None => Ok(()),
    }
}
