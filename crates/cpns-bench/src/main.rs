//! `cpns-bench`: the benchmarks of the CPNS reference implementation, kept out of the product's
//! `cpns` binary. It measures a `cpns server` from outside, as a process of its own on loopback
//! (docs/ARCHITECTURE.md decision 23): `establish` for session set-ups, PN establishments and
//! memory per idle session beside Mosquitto and in-memory ceilings, `fanout` for one status
//! change delivered to many subscribers; `prepare` and `load` put a server under write load for
//! a profiler or a crash test. The server it runs is the `cpns` binary next to this one, or the
//! one `--cpns-bin` names; the helper processes it starts are this binary again (hidden
//! subcommands). Figures, the machine and the commands: BENCHMARKS.md.

mod aead;
mod baseline;
mod content;
mod delivery;
mod directory;
mod establish;
mod fanout;
mod households;
mod memory;
mod mqtt;
mod net;
mod sim;
mod stats;

use clap::{Parser, Subcommand};

/// Benchmarks of the CPNS Server, measured from outside (BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "cpns-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the server from outside (session set-ups, PN establishments, memory per idle
    /// session) beside Mosquitto and in-memory ceilings, and print the figures with their ratios.
    Establish(establish::EstablishArgs),
    /// Measure group content through the machines beside the crypto alone and the box alone
    /// (in memory, one thread).
    Content(content::ContentArgs),
    /// Measure content delivery through a PN GW (separate processes) beside plain TLS on
    /// loopback, and the PN GW's and target's peak memory.
    Delivery(delivery::DeliveryArgs),
    /// Measure the bulk suites sealing and opening 64 KiB records (one thread, in memory)
    /// beside AWS-LC sealing the same.
    Aead(aead::AeadArgs),
    /// Measure discovery at the server over a large directory (p50/p99 per discovery).
    Directory(directory::DirectoryArgs),
    /// Measure one status change fanned out to many subscribers (p50/p99 delivery latency).
    Fanout(fanout::FanoutArgs),
    /// Make a server data directory with bench households (a PN GW, maybe two PNEs) enrolled.
    Prepare(households::PrepareArgs),
    /// Run establishments on prepared households against a running server until stopped,
    /// printing `established <PN id>` for each one acknowledged.
    Load(households::HouseholdsArgs),
    /// Hold idle PN GW sessions for `cpns-bench establish` (started by it).
    #[command(hide = true)]
    Hold(households::HouseholdsArgs),
    /// Hold subscribed PN GW sessions for `cpns-bench fanout` (started by it).
    #[command(hide = true)]
    Subscribe(fanout::SubscribeArgs),
    /// Hold plain TCP connections for `cpns-bench fanout --floor` (started by it).
    #[command(hide = true)]
    SubscribeRaw(fanout::RawSubscribeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cpns_node::cli::run("warn", async {
        match cli.command {
            Command::Establish(a) => establish::establish(a).await,
            Command::Fanout(a) => fanout::fanout(a).await,
            Command::Content(a) => content::content(a).await,
            Command::Delivery(a) => delivery::delivery(a).await,
            Command::Directory(a) => directory::directory(a).await,
            Command::Aead(a) => aead::aead(a).await,
            Command::Prepare(a) => households::prepare(a).await,
            Command::Load(a) => households::load(a).await,
            Command::Hold(a) => establish::hold(a).await,
            Command::Subscribe(a) => fanout::subscribe(a).await,
            Command::SubscribeRaw(a) => fanout::subscribe_raw(a).await,
        }
    })
}
