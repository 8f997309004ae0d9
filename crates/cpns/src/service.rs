//! `cpns service …`: service descriptions (docs/services.md). `check` reads a description file
//! as the directory will (`cpns_service::parse`) and says what it holds, or what to fix, so a
//! description can be written and checked before any device publishes it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use cpns_service::{Delivery, Scope};

#[derive(Args, Debug)]
pub(crate) struct ServiceArgs {
    #[command(subcommand)]
    pub verb: ServiceVerb,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ServiceVerb {
    /// Check a service description file (application/vnd.cpns.service+json,
    /// docs/service.schema.json): print what it holds, or what to fix.
    Check {
        /// The description file.
        file: PathBuf,
        /// Print the description as the directory keeps it (keywords normalised), as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `cpns service`.
pub(crate) async fn service(a: ServiceArgs) -> anyhow::Result<()> {
    match a.verb {
        ServiceVerb::Check { file, json } => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let d = cpns_service::parse(&bytes)
                .with_context(|| format!("{} is not a service description", file.display()))?;
            if json {
                println!("{}", String::from_utf8_lossy(&d.to_json()));
                return Ok(());
            }
            let scope = match &d.scope {
                Scope::Pn { pn_id } => format!("the members of PN {pn_id}"),
                Scope::User => "every device of its user".into(),
                Scope::Group { group_id } => format!("the members of service group {group_id}"),
                Scope::Public => "every device".into(),
            };
            let delivery: Vec<&str> = d
                .delivery
                .iter()
                .map(|m| match m {
                    Delivery::Push => "push",
                    Delivery::Pull => "pull",
                })
                .collect();
            println!(
                "ok: service {} ({}, version {}): \"{}\"; keywords {}; seen by {scope}; delivery {}; lease {} s",
                d.service_id,
                d.service_type,
                d.version,
                d.name.escape_debug(),
                d.keywords.join(", "),
                delivery.join(" and "),
                d.lease_s
            );
            Ok(())
        }
    }
}
