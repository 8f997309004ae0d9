//! What the process-level tests share: [`proc`] runs one `cpns` process and waits on its lines
//! and `--json` events, [`world`] sets up a data directory with enrolled devices and runs the
//! server, PN GWs and PNEs around it, [`stores`] reads every PN inventory of a world and checks
//! that they agree.

#![allow(dead_code, unused_imports)] // each test binary uses its own part of it

pub mod proc;
pub mod stores;
#[cfg(unix)]
pub mod unix_user;
pub mod world;

pub use proc::{BIN, Proc, WAIT, cpns, json_lines, names, run, s, text};
pub use stores::{Members, Stores, members};
pub use world::{USER, World, WorldBuilder};
