//! In-memory tests of the three machines together: one CPNS Server session, one PN GW and a few
//! PNEs, driven by a shared harness with a fake clock and an in-memory test store (docs/design.md §10).
//!
//! - [`harness`]: the parties, the clock, the pump, frame interception; `store`: the test
//!   store; `queries`: what tests ask the harness.
//! - `connect`: PN GW connection set-up (002 §B.1.1.2) and entity discovery (000 §6.4).
//! - `establish`: PN establishment, PNE- and PN GW-initiated (000 §6.6.1), and restore.
//! - `register`: PNE registration, member and non-member cases (003 §1.4).
//! - `invitations`: invitations held for the PNE's application (policy `ask`), answered or
//!   declined at their deadline.
//! - `failures`: partial authentication, declines, tampered hash_server, timeouts, store faults.
//! - `load_failures`: a failed read (or a key that does not open) ends only the flow that
//!   asked; the session and concurrent flows go on.
//! - `secure`: the secure PNE<->server session after registration (003 §1.4.1 step 4).
//! - `server_input`: what the server checks in a connected PN GW's requests.
//! - `security`: negative tests of the WAN-side keys and hashes of docs/design.md §4.
//! - `pan_security`: negative tests of PAN authentication, sealed frames, the sealed grant.
//! - `identity`: claims, proofs and routes on the PAN; membership looked up, never downgraded.
//! - `sealed_members`: every member's link sealed, joiners too; nothing relayed in a PNE's
//!   name, or told to it, on a link that has not proved it.
//! - `limits`: one set-up per PNE, flows per link and per PN GW, `busy` beyond them.
//! - `relay`: the PN GW relay: deadlines, lost WAN, closed links, refusals, message ids.
//! - `pne_flows`: the PNE's own deadlines and refusals; a second PN on a sealed link.
//! - `membership_server`, `membership_flow`: leave and expulsion with group key epochs
//!   (000 §6.6.3), at the server, then end to end.
//! - `release`, `release_flow`: PN release at the server, then end to end (000 §6.6.5).
//! - `replay`: a whole run replays frame for frame from its seed.
//! - `bad_input`: garbage, truncated, unknown and misplaced messages at every machine.
//! - `vectors`: the link codec and the canonical PN inventory reproduce
//!   docs/security-vectors.json byte for byte.

#![allow(clippy::unwrap_used)]

mod authority;
mod bad_input;
mod capability;
mod commands;
mod connect;
mod connection_setup;
mod control;
mod delivery;
mod digest;
mod directory;
mod establish;
mod external;
mod failures;
mod forward;
mod gateway_commands;
mod group_content;
mod groups;
mod harness;
mod identity;
mod inventory;
mod invitations;
mod items;
mod limits;
mod load_failures;
mod membership_flow;
mod membership_server;
mod multi_user;
mod pan_security;
mod pn_limits;
mod pne_flows;
mod pull;
mod queries;
mod register;
mod rejoin;
mod relay;
mod release;
mod release_flow;
mod replay;
mod restart_delivery;
mod sealed_members;
mod secure;
mod security;
mod server_input;
mod status_gateway;
mod status_pne;
mod status_server;
mod store;
mod usage_pne;
mod vectors;
mod watches;
