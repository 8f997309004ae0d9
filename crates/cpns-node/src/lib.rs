//! Tokio drivers of the CPNS protocol machines: the three runtimes (CPNS Server, PN GW, PNE) over
//! real TCP and TLS, the server's state of record in a [`cpns_store::ServerStore`] and each
//! device's own in a [`cpns_store::DeviceStore`] (docs/design.md §2).
//!
//! Each runtime is thin: it reads length-prefixed frames from sockets, feeds them with the time
//! to its `cpns-proto` machine, and carries out what the machine asks (send, load, persist,
//! sleep until the next deadline). No protocol decision is made here.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod backoff;
pub mod cli;
pub mod clock;
mod content_files;
pub mod control;
pub mod credentials;
pub mod error;
pub mod frames;
pub mod gateway;
mod pan_link;
pub mod pki;
pub mod pne;
pub mod server;
pub mod server_store;
pub mod status_hub;
pub mod trace;

pub use credentials::{DeviceCredential, DeviceKind};
pub use error::{NodeError, store_failure};
pub use trace::{TraceEvent, TraceSink};
