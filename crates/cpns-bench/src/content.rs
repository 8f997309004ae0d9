//! `cpns-bench content`: what group content costs (docs/security.md §4.11), in memory on one
//! thread. A PN of two PNEs is established through the machines (a PN GW, a CPNS Server
//! session, the PNEs on a sealed `cpns` PAN); then one PNE sends content of `--bytes` to the PN
//! again and again: signed and sealed, sent on its sealed link, relayed by the PN GW machine,
//! checked by the other PNE (certificate, membership, epoch, box, signature, replay). Beside it,
//! in the same run, on the same thread:
//! - the crypto alone: sign and seal, then open and verify, with the same keys and size (the
//!   most the machines could do; a member checks a sender's certificate once and keeps it);
//! - the box alone, without the signature and certificate: one AEAD seal and open under an
//!   HKDF-derived key of the same size (what content cost before it was signed).
//!
//! The ratios say what the machines add to the crypto and what the signature adds to the box.

use std::time::{Duration, Instant};

use clap::Args;
use cpns_crypto::{
    CertificationKey, ContentBinding, EuKey, MachineRng, MasterKey, MemberSigningKey,
    open_group_content, seal_group_content,
};
use cpns_proto::server::{ServerConfig, ServerSession};
use cpns_wire::{EntityId, UserId};
use serde::Serialize;

use crate::memory::{MemoryStore, Pair};
use crate::sim::{Device, Household, Outcome, SimGateway};
use crate::stats::{Latencies, Rate};

/// `cpns-bench content`.
#[derive(Args, Debug)]
pub struct ContentArgs {
    /// Bytes of content per message.
    #[arg(long, default_value_t = 1024)]
    pub bytes: usize,
    /// Seconds each of the three measurements runs.
    #[arg(long, default_value_t = 3)]
    pub secs: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct ContentFigures {
    /// Bytes per message.
    pub bytes: usize,
    /// Through the machines: sent, relayed, checked and taken.
    pub machines: Rate,
    /// The crypto alone: sign and seal, open and verify.
    pub crypto: Rate,
    /// The box alone: seal and open, no signature.
    pub aead: Rate,
    /// machines ÷ crypto, in messages per second.
    pub machines_of_crypto: f64,
    /// crypto ÷ aead: what share of the box-only rate remains with signatures.
    pub signed_of_aead: f64,
}

fn device(id: &str, rng: &mut MachineRng) -> anyhow::Result<Device> {
    Ok(Device {
        id: EntityId::new(id)?,
        eukey: EuKey::random(rng.get()),
    })
}

/// Runs `f` until `secs` pass, one latency per call.
fn for_a_while(secs: Duration, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Rate> {
    let mut lat = Latencies::default();
    let start = Instant::now();
    while start.elapsed() < secs {
        let t0 = Instant::now();
        f()?;
        lat.record(t0.elapsed());
    }
    Ok(Rate::new(lat, start.elapsed(), None))
}

/// Measures the three figures.
pub fn measure(bytes: usize, secs: Duration, seed: u64) -> anyhow::Result<ContentFigures> {
    let mut rng = MachineRng::from_seed_u64(seed);
    let owner = UserId::new("bench")?;
    let household = Household {
        gateway: device("bench-gw", &mut rng)?,
        pnes: [
            device("bench-pne-a", &mut rng)?,
            device("bench-pne-b", &mut rng)?,
        ],
    };
    let ca = CertificationKey::from_master(&MasterKey::random(rng.get()));
    let mut store = MemoryStore::enrolled(&owner, std::slice::from_ref(&household));
    let now = Instant::now();
    let exporter: [u8; 32] = rng.array();
    let mut pair = Pair {
        // The PN GW's per-link rate of content is lifted: the bench measures what a message
        // costs, not the rate a PN GW allows a device.
        sim: SimGateway::with_limits(
            household.clone(),
            rng.fork(),
            cpns_proto::gateway::GatewayLimits {
                content_burst: u32::MAX,
                content_every: Duration::from_nanos(1),
                ..Default::default()
            },
        )
        .with_signing(&ca, &owner),
        server: ServerSession::new(ServerConfig::default(), exporter, now, rng.fork()),
    };
    pair.sim.wan_connected(now, exporter)?;
    pair.pump(now, &mut store);
    anyhow::ensure!(pair.sim.ready(), "the PN GW did not connect in memory");
    pair.sim.start_establishment(now)?;
    pair.pump(now, &mut store);
    let pn = match pair.sim.outcome() {
        Some(Outcome::Established(pn)) => *pn,
        other => anyhow::bail!("no PN to send to: {other:?}"),
    };
    let payload = vec![0x5a; bytes];

    // Through the machines.
    let mut sent = 0u64;
    let machines = for_a_while(secs, || {
        let (taken, refused) = pair.sim.send_content(Instant::now(), pn, payload.clone())?;
        sent += 1;
        anyhow::ensure!(
            taken == sent && refused == 0,
            "content {sent} was not taken ({taken} taken, {refused} refused)"
        );
        Ok(())
    })?;

    // The crypto alone, with the same keys.
    let [a, _] = &household.pnes;
    let signer = MemberSigningKey::derive(&a.eukey, a.id.as_str());
    let sender = ca
        .certify(a.id.as_str(), owner.as_str(), &signer.public())
        .verify(&ca.public())?;
    let gk = cpns_crypto::GroupKey::random(rng.get());
    let mut id = 0u64;
    let crypto = for_a_while(secs, || {
        id += 1;
        let b = ContentBinding {
            pn_id: pn.as_bytes(),
            epoch: 1,
            sender: a.id.as_str(),
            content_id: id,
        };
        let sealed = seal_group_content(rng.get(), &gk, &signer, &b, &payload)?;
        let opened = open_group_content(&gk, &sender, &b, &sealed)?;
        anyhow::ensure!(opened.len() == bytes, "opened another size");
        Ok(())
    })?;

    // The box alone: an AEAD under an HKDF-derived key, the same size, no signature.
    let master = MasterKey::random(rng.get());
    let aad = cpns_crypto::at_rest_eukey_aad("bench-pne-a");
    let aead = for_a_while(secs, || {
        let sealed = cpns_crypto::seal_at_rest(&master, &aad, &payload)?;
        let opened = cpns_crypto::open_at_rest(&master, &aad, &sealed)?;
        anyhow::ensure!(opened.len() == bytes, "opened another size");
        Ok(())
    })?;
    Ok(ContentFigures {
        bytes,
        machines_of_crypto: ratio(machines.per_sec, crypto.per_sec),
        signed_of_aead: ratio(crypto.per_sec, aead.per_sec),
        machines,
        crypto,
        aead,
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// `cpns-bench content`.
pub async fn content(a: ContentArgs) -> anyhow::Result<()> {
    let secs = Duration::from_secs(a.secs.max(1));
    let bytes = a.bytes;
    let f = tokio::task::spawn_blocking(move || measure(bytes, secs, 1)).await??;
    if a.json {
        println!("{}", serde_json::to_string(&f)?);
        return Ok(());
    }
    let line = |what: &str, r: &Rate| {
        println!(
            "{what:<44} {:>9.0}/s  p50 {:>5} µs  p99 {:>5} µs",
            r.per_sec, r.p50_us, r.p99_us
        );
    };
    println!("group content of {bytes} bytes, one thread, in memory:");
    line("through the machines (send, relay, check)", &f.machines);
    line("the crypto alone (sign+seal, open+verify)", &f.crypto);
    line("the box alone (AEAD, no signature)", &f.aead);
    println!(
        "machines ÷ crypto {:.2}; signed ÷ box alone {:.2}",
        f.machines_of_crypto, f.signed_of_aead
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every message sent through the machines is taken by the other PNE (else `measure`
    /// fails), and each figure counts what ran.
    #[test]
    fn content_goes_through_the_machines_and_every_figure_counts() {
        let f = measure(64, Duration::from_millis(50), 3).unwrap();
        assert!(
            f.machines.ops > 0 && f.crypto.ops > 0 && f.aead.ops > 0,
            "{f:?}"
        );
        assert!(f.machines_of_crypto > 0.0 && f.signed_of_aead > 0.0);
        assert_eq!(f.bytes, 64);
    }
}
