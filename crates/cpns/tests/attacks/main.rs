//! Every listener faces an attacker: acceptance tests run against the built `cpns` binary, with
//! the CPNS Server, the PN GWs and the PNEs as separate processes over loopback TCP and TLS, and
//! the attacker as raw sockets in this test process speaking plain CBOR frames on an insecure
//! (`cpns`) PAN, or trickling bytes into the server's TLS listener.
//!
//! - [`identity`]: a raw link claims a connected member's id, registers and floods PN Setup
//!   Requests without authenticating: refused, both SQLite inventories unchanged cell for cell,
//!   while real PNEs establish PNs beside it.
//! - [`floods`]: hundreds of connections announcing huge frames or trickling a byte a second
//!   into each listener, more idle links than the PAN allows, a link that floods requests and
//!   never reads: memory stays bounded (VmHWM from `/proc`) and legitimate peers are served.
//! - [`oversize`]: PN Setup Requests as large as a link may send: the PN GW keeps its WAN
//!   session.
//! - [`control`]: the PN GW's control socket (mode 0600) serves `cpns pn show`; garbage, an
//!   oversized line and a second PN GW on the same store change nothing.
//! - [`release`]: raw links naming a member, a non-member and another user's PNE ask to
//!   release a PN or take a member out of it: `forbidden`, both SQLite inventories unchanged
//!   cell for cell; the owner's release then works.
//! - [`at_rest`]: another Unix user of the machine reads no store and cannot list the server's
//!   data directory (modes 0600 and 0700 whatever the umask).
//! - [`squatter`]: a raw link takes an away member's id; the member comes back, proves itself
//!   and takes the id; the squatter's link is closed.
//! - [`unproven`]: a raw link naming a PNE that is not linked is told no PN id at discovery,
//!   and asks for the user's statuses, subscribes, pulls the PN's key and makes a secure call:
//!   refused, the server's store unchanged.
//! - [`injected`]: a man in the middle on the PAN appends plain frames in the name of a member
//!   without a UI that joined by registering: its link is sealed, the PN GW refuses them at
//!   the frame, and nothing reaches the server.
//! - [`content`]: on a trusted PAN, a man in the middle colluding with a member forges group
//!   content in another member's name, replays, reattributes and alters it: the member it is
//!   relayed to refuses each with its reason and tells only the genuine content.
//! - [`relayed`]: on a trusted PAN, a man in the middle replays a Secure Request after the
//!   server restarted (refused `conflict`, the replay window unchanged) and answers a PNE's key
//!   pull with an older recorded answer while hiding the newer epoch (the PNE takes nothing
//!   and says it may be kept behind).
//! - [`reconnect`]: the server killed (SIGKILL) and restarted: the PN GW reconnects by itself and
//!   the two inventories agree.
//!
//! Each scenario is one `#[test]` with its own data directory and ports; nothing sleeps to
//! synchronise (waits are on event lines, socket reads and tasks, under [`common::WAIT`]).

#![allow(clippy::unwrap_used)]

#[cfg(unix)]
mod at_rest;
#[path = "../common/mod.rs"]
mod common;
mod content;
mod control;
mod floods;
mod harness;
mod identity;
mod injected;
mod oversize;
mod reconnect;
mod relayed;
mod release;
mod squatter;
mod unproven;
