//! `cpns`: the command line of the CPNS reference implementation: make a server's data
//! directory, enroll devices, run a CPNS Server, a PN GW or a PNE, show the PN inventory, and run
//! the whole system on loopback (`cpns demo`).

mod admin;
mod capabilities;
mod caps_cmd;
mod content;
mod demo;
mod elect;
mod events;
mod group;
mod pn;
mod run;
mod service;
mod status;
mod usage;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Converged Personal Network Service.
#[derive(Parser, Debug)]
#[command(name = "cpns", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a server data directory: CA, server certificate, master key, SQLite database.
    Init(admin::InitArgs),
    /// Enroll a user's PNE or PN GW: make its EUKey and write its credential file (mode 0600).
    Enroll(admin::EnrollArgs),
    /// Run the CPNS Server (TLS listener for PN GWs).
    Server(run::ServerArgs),
    /// Run a PN GW: connect to the server, serve PNEs on the PAN listener.
    Gateway(run::GatewayArgs),
    /// Run a PNE: connect to the PN GW, then set up a PN, await an invitation or register.
    Pne(run::PneArgs),
    /// Elect a PN GW with another device (002 §B.1.1.1), then run as the PN GW or as its PNE.
    Elect(elect::ElectArgs),
    /// Print the PN inventory: the server's (from its data directory) or a device's local one.
    Inventory(admin::InventoryArgs),
    /// Act on a running PN GW or PNE through its control socket: its PNs and members, set-up,
    /// registration, invitations, joins, leaves, expulsions, releases, establishment, events
    Pn(pn::PnArgs),
    /// Device capabilities (004 §5.5.1): show an entity's, live or as recorded; set a running
    /// PNE's or PN GW's own
    Caps(caps_cmd::CapsArgs),
    /// Status (004 §5.5.3): show, set a PNE's own, subscribe, or watch a user's devices live.
    Status(status::StatusArgs),
    /// Usage statistics (004 §5.5.4): reporting preferences, reports, summaries.
    Usage(usage::UsageArgs),
    /// Charging records (CPNS-4) of a user.
    Charging(usage::ChargingArgs),
    /// Service descriptions (docs/services.md): check a description file.
    Service(service::ServiceArgs),
    /// Service groups (004 §5.5.9) on a running PNE: make, invite, answer, join, leave, expel,
    /// delete, pull the key, list members, send content sealed under the group's key
    Group(group::GroupArgs),
    /// Content delivery (004 §5.5.8) on a running PNE: push a file to PNEs of its PN, sealed
    /// end to end through its PN GW
    Content(content::ContentArgs),
    /// Run a CPNS Server, a PN GW and four PNEs on loopback: establishments, registration, an
    /// election and a PN's lifecycle; print the flows and the inventory
    Demo(demo::DemoArgs),
}

/// The default data directory of the server.
pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("cpns-data")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Commands that print for a person keep the log to warnings; daemons say what they do.
    let default_log = if matches!(
        cli.command,
        Command::Demo(_)
            | Command::Inventory(_)
            | Command::Pn(_)
            | Command::Caps(_)
            | Command::Status(_)
            | Command::Usage(_)
            | Command::Charging(_)
            | Command::Service(_)
            | Command::Group(_)
            | Command::Content(_)
    ) {
        "warn"
    } else {
        "info"
    };
    cpns_node::cli::run(default_log, async {
        match cli.command {
            Command::Init(a) => admin::init(a).await,
            Command::Enroll(a) => admin::enroll(a).await,
            Command::Server(a) => run::server(a).await,
            Command::Gateway(a) => run::gateway(a).await,
            Command::Pne(a) => run::pne(a).await,
            Command::Elect(a) => elect::elect(a).await,
            Command::Inventory(a) => admin::inventory(a).await,
            Command::Demo(a) => demo::demo(a).await,
            Command::Pn(a) => pn::pn(a).await,
            Command::Caps(a) => caps_cmd::caps(a).await,
            Command::Status(a) => status::status(a).await,
            Command::Usage(a) => usage::usage(a).await,
            Command::Charging(a) => usage::charging(a).await,
            Command::Service(a) => service::service(a).await,
            Command::Group(a) => group::group(a).await,
            Command::Content(a) => content::content(a).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's arguments are declared consistently (clap checks them only when a
    /// subcommand is used, so this checks them all).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
