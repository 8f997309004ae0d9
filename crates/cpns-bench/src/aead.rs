//! `cpns-bench aead`: the bulk suites' sealing and opening of 64 KiB PAN records, as the crate
//! does it (docs/security.md §4.13), beside AWS-LC's AES-256-GCM and ChaCha20-Poly1305 sealing
//! the same records in the same run (the implementation the suites ran on before: ARCHITECTURE
//! decision 52).
//!
//! One thread, in memory: what each byte of a delivery costs per seal or open, the share of a
//! hop that is the AEAD's. Both sides copy each record's content into it before sealing it in
//! place, as a PAN link's sealer does.

use std::time::Instant;

use anyhow::ensure;
use aws_lc_rs::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use clap::Args;
use cpns_crypto::{FrameOpener, FrameSealer, Suite};
use serde::Serialize;

/// A record's content: a delivery chunk's size.
const RECORD: usize = 64 * 1024;

/// `cpns-bench aead`.
#[derive(Args, Debug)]
pub struct AeadArgs {
    /// MiB sealed (and opened) per suite and implementation.
    #[arg(long, default_value_t = 1024)]
    pub mib: usize,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One suite's figures, MB/s (10^6 bytes a second).
#[derive(Serialize)]
struct Figures {
    suite: &'static str,
    /// The crate's sealer: each record's content copied in, sealed in place.
    seal_mb_s: f64,
    /// The crate's opener, opening each record where it lies (`open_in_place`), as a link does.
    open_mb_s: f64,
    /// AWS-LC sealing the same way (content copied in, sealed in place).
    aws_lc_seal_mb_s: f64,
    /// The AEAD alone, sealing a buffer in place: ring (what the crate runs on).
    ring_in_place_mb_s: f64,
    /// The same on AWS-LC.
    aws_lc_in_place_mb_s: f64,
}

pub async fn aead(args: AeadArgs) -> anyhow::Result<()> {
    ensure!(args.mib > 0, "--mib must be at least 1");
    let records = (args.mib << 20) / RECORD;
    let mut out = Vec::new();
    for suite in Suite::ALL {
        let (seal, open) = crate_rates(suite, records)?;
        let theirs = aws_lc_rate(suite, records)?;
        let (ring_alone, aws_lc_alone) = in_place_rates(suite, records)?;
        out.push(Figures {
            suite: suite.name(),
            seal_mb_s: seal,
            open_mb_s: open,
            aws_lc_seal_mb_s: theirs,
            ring_in_place_mb_s: ring_alone,
            aws_lc_in_place_mb_s: aws_lc_alone,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for f in &out {
            println!(
                "{}: seal {:.0} MB/s, open {:.0} MB/s; AWS-LC seals {:.0} MB/s ({:.2} of this); \
                 in place, the AEAD alone: ring {:.0}, AWS-LC {:.0} MB/s ({:.2})",
                f.suite,
                f.seal_mb_s,
                f.open_mb_s,
                f.aws_lc_seal_mb_s,
                f.aws_lc_seal_mb_s / f.seal_mb_s,
                f.ring_in_place_mb_s,
                f.aws_lc_in_place_mb_s,
                f.aws_lc_in_place_mb_s / f.ring_in_place_mb_s
            );
        }
    }
    Ok(())
}

fn mb_s(records: usize, started: Instant) -> f64 {
    (records * RECORD) as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// The crate's sealer and opener of one direction, record after record.
fn crate_rates(suite: Suite, records: usize) -> anyhow::Result<(f64, f64)> {
    let aad = b"cpns-bench aead".to_vec();
    let mut sealer = FrameSealer::new(suite, [7; 32], aad.clone());
    let mut opener = FrameOpener::new(suite, [7; 32], aad);
    let content = vec![0x5a; RECORD];
    let mut sealed = Vec::with_capacity(records.min(64));
    let mut out = Vec::with_capacity(RECORD + 64);
    let started = Instant::now();
    for i in 0..records {
        out.clear();
        sealer.seal_into(&content, &mut out)?;
        if i < 64 {
            sealed.push(out.clone());
        }
    }
    let seal = mb_s(records, started);
    // Opening needs the records in order; the first 64 are opened again and again by fresh
    // openers (each record's work is the same). As a link opens a record: where it lies, in
    // the buffer a socket read filled (here, a copy of the sealed record into one buffer).
    let started = Instant::now();
    let mut opened = 0;
    let mut buf = Vec::with_capacity(RECORD + 64);
    while opened < records {
        let mut o = FrameOpener::new(suite, [7; 32], opener.aad().to_vec());
        for r in sealed.iter().take(records - opened) {
            buf.clear();
            buf.extend_from_slice(r);
            let plain = o.open_in_place(&mut buf)?;
            ensure!(plain.len() == RECORD, "a record opened to another length");
            opened += 1;
        }
    }
    let open = mb_s(records, started);
    ensure!(
        opener.open(&sealed[0])?.len() == RECORD,
        "the first record opens"
    );
    Ok((seal, open))
}

/// AWS-LC sealing the same records as the crate's sealer does: the sequence number and the
/// content copied into the record, sealed there under a counter nonce, the tag appended.
fn aws_lc_rate(suite: Suite, records: usize) -> anyhow::Result<f64> {
    let alg = match suite {
        Suite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        Suite::Aes256Gcm => &AES_256_GCM,
    };
    let key = LessSafeKey::new(
        UnboundKey::new(alg, &[7; 32]).map_err(|_| anyhow::anyhow!("AWS-LC refused the key"))?,
    );
    let content = vec![0x5a; RECORD];
    let mut out = Vec::with_capacity(RECORD + 64);
    let started = Instant::now();
    for i in 0..records {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        out.clear();
        out.extend_from_slice(&n[4..]);
        out.extend_from_slice(&content);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(b"cpns-bench aead"),
                &mut out[8..],
            )
            .map_err(|_| anyhow::anyhow!("AWS-LC could not seal"))?;
        out.extend_from_slice(tag.as_ref());
    }
    std::hint::black_box(&out);
    Ok(mb_s(records, started))
}

/// The AEAD alone: one buffer sealed in place again and again under counter nonces, on ring
/// and on AWS-LC, alternated in halves so neither has the machine's quieter moment alone.
fn in_place_rates(suite: Suite, records: usize) -> anyhow::Result<(f64, f64)> {
    let ring_key = {
        use ring::aead::{AES_256_GCM, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
        let alg = match suite {
            Suite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Suite::Aes256Gcm => &AES_256_GCM,
        };
        LessSafeKey::new(
            UnboundKey::new(alg, &[7; 32]).map_err(|_| anyhow::anyhow!("ring refused the key"))?,
        )
    };
    let lc_key = {
        let alg = match suite {
            Suite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Suite::Aes256Gcm => &AES_256_GCM,
        };
        LessSafeKey::new(
            UnboundKey::new(alg, &[7; 32])
                .map_err(|_| anyhow::anyhow!("AWS-LC refused the key"))?,
        )
    };
    let mut buf = vec![0x5a; RECORD];
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        n
    };
    let (mut ring_secs, mut lc_secs) = (0.0, 0.0);
    let half = records / 2;
    for _ in 0..2 {
        let started = Instant::now();
        for i in 0..half {
            let tag = ring_key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce(i)),
                    ring::aead::Aad::from(b"cpns-bench aead"),
                    &mut buf,
                )
                .map_err(|_| anyhow::anyhow!("ring could not seal"))?;
            let _ = std::hint::black_box(tag);
        }
        ring_secs += started.elapsed().as_secs_f64();
        let started = Instant::now();
        for i in 0..half {
            let tag = lc_key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce(i)),
                    Aad::from(b"cpns-bench aead"),
                    &mut buf,
                )
                .map_err(|_| anyhow::anyhow!("AWS-LC could not seal"))?;
            let _ = std::hint::black_box(tag);
        }
        lc_secs += started.elapsed().as_secs_f64();
    }
    let bytes = (2 * half * RECORD) as f64;
    Ok((bytes / ring_secs / 1e6, bytes / lc_secs / 1e6))
}
