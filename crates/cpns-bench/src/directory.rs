//! `cpns-bench directory`: discovery at the server over a directory of `--services`
//! descriptions (004 §5.5.5; docs/services.md). A SQLite server store is filled through the
//! store's own API: `--users` users of `--devices` devices each, each user's devices members of
//! one PN of theirs, each device offering services (half of them for its user, three in ten
//! for its PN, one in five public) with three keywords drawn from a vocabulary of `--words`
//! by a Zipf law (a few words are in many descriptions, most in few). Then, on one thread,
//! discoveries as the server makes them for a device picked at random: the asker's view of the
//! directory in one snapshot (`ServerStore::directory_view`: its user, its PNs, the matching
//! entries it may see, a page of 51) and each entry summarised as the answer lists it
//! (`server::directory::summary`, which reads the kept description). Keywords are drawn by the
//! same law, so popular words are asked often, as people would. Printed: p50 and p99 per
//! discovery, for one keyword and for two (all), with the entries a page held on average.
//!
//! The store is a file of `--db` (made once, kept for the next run), else of a temporary
//! directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use cpns_crypto::MachineRng;
use cpns_proto::server::directory;
use cpns_store::{
    DirectoryAsk, EntityKind, EntityRecord, PnMember, PnRecord, PnState, ServerStore, ServiceEntry,
    ServiceScope, ServiceSearch, SqliteStore,
};
use cpns_wire::{EntityId, PnId, UserId};
use serde::Serialize;

use crate::stats::Latencies;

/// `cpns-bench directory`.
#[derive(Args, Debug)]
pub struct DirectoryArgs {
    /// Descriptions in the directory.
    #[arg(long, default_value_t = 1_000_000)]
    pub services: u64,
    /// Users.
    #[arg(long, default_value_t = 20_000)]
    pub users: u64,
    /// Devices per user.
    #[arg(long, default_value_t = 5)]
    pub devices: u64,
    /// Distinct keywords.
    #[arg(long, default_value_t = 5_000)]
    pub words: usize,
    /// Discoveries measured, of each kind.
    #[arg(long, default_value_t = 20_000)]
    pub queries: usize,
    /// The store file: made if absent, reused if it holds the same directory.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One kind of discovery's figures.
#[derive(Debug, Serialize)]
pub struct Discoveries {
    /// Discoveries made.
    pub queries: usize,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// Largest, microseconds.
    pub max_us: u64,
    /// The store's part alone (the view in one snapshot): median, microseconds.
    pub store_p50_us: u64,
    /// The store's part alone: 99th percentile, microseconds.
    pub store_p99_us: u64,
    /// Entries a page held, on average.
    pub entries_per_page: f64,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct DirectoryFigures {
    /// Descriptions in the directory.
    pub services: u64,
    /// Users and devices.
    pub users: u64,
    /// Devices in all.
    pub devices: u64,
    /// Seconds the directory took to fill (none: reused).
    pub fill_secs: Option<f64>,
    /// One keyword.
    pub one_keyword: Discoveries,
    /// Two keywords, both.
    pub two_keywords: Discoveries,
}

/// Draws ranks 0.. by a Zipf law of exponent 1.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                total += 1.0 / r as f64;
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Self { cumulative }
    }

    fn draw(&self, rng: &mut MachineRng) -> usize {
        let u = (rng.u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative
            .partition_point(|c| *c < u)
            .min(self.cumulative.len() - 1)
    }
}

fn word(n: usize) -> String {
    format!("w{n}")
}

fn device(user: u64, d: u64) -> EntityId {
    EntityId::new(format!("d{user}-{d}")).expect("a valid id")
}

fn pn_of(user: u64) -> PnId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&user.to_be_bytes());
    b[8] = 0xd1;
    PnId::from_bytes(b)
}

const NOW: i64 = 1_800_000_000_000;

/// Fills the directory through the store's API, many writes in flight (the writer commits
/// them in groups).
async fn fill(store: &SqliteStore, a: &DirectoryArgs) -> anyhow::Result<()> {
    let store = Arc::new(store.clone());
    let zipf = Arc::new(Zipf::new(a.words));
    let mut tasks = tokio::task::JoinSet::new();
    let users = a.users;
    let devices = a.devices;
    for user in 0..users {
        let store = store.clone();
        tasks.spawn(async move {
            let owner = UserId::new(format!("u{user}"))?;
            store.ensure_user(&owner).await?;
            let mut members = Vec::new();
            for d in 0..devices {
                let id = device(user, d);
                store
                    .insert_entity(&EntityRecord {
                        id: id.clone(),
                        kind: EntityKind::Pne,
                        owner: owner.clone(),
                        sealed_eukey: vec![0; 60],
                        capabilities: None,
                        cpns_id: None,
                        enrolled_at: NOW,
                    })
                    .await?;
                members.push(PnMember {
                    pne_id: id,
                    initiator: d == 0,
                    authenticated: true,
                    capabilities: None,
                    sealed_session_key: Some(vec![0; 60]),
                    joined_at: NOW,
                    owner: None,
                    contents: Vec::new(),
                });
            }
            store
                .register_pn(&PnRecord {
                    pn_id: pn_of(user),
                    gateway: EntityId::new(format!("gw{user}"))?,
                    owner,
                    state: PnState::Active,
                    created_at: NOW,
                    members,
                    group: None,
                    expires_at: None,
                    max_members: None,
                })
                .await?;
            anyhow::Ok(())
        });
        if tasks.len() >= 512 {
            tasks.join_next().await.expect("a task")??;
        }
    }
    while let Some(t) = tasks.join_next().await {
        t??;
    }
    let per_device = a.services / (users * devices).max(1);
    let bar = indicatif::ProgressBar::new(a.services);
    let mut rng = MachineRng::from_seed_u64(7);
    let mut n = 0u64;
    'all: for round in 0..per_device.max(1) {
        for user in 0..users {
            for d in 0..devices {
                if n >= a.services {
                    break 'all;
                }
                let pick = rng.u64() % 10;
                let scope = match pick {
                    0..5 => ServiceScope::User,
                    5..8 => ServiceScope::Pn(pn_of(user)),
                    _ => ServiceScope::Public,
                };
                let mut keywords: Vec<String> = Vec::new();
                while keywords.len() < 3 {
                    let w = word(zipf.draw(&mut rng));
                    if !keywords.contains(&w) {
                        keywords.push(w);
                    }
                }
                let service_id = format!("s{round}");
                let description = format!(
                    r#"{{"delivery":["pull"],"keywords":{},"lease_s":86400,"name":"service {round} of d{user}-{d}","requires":{{}},"scope":{{"kind":"public"}},"service_id":"{service_id}","type":"media.renderer","version":"1"}}"#,
                    serde_json::to_string(&keywords)?
                );
                let entry = ServiceEntry {
                    dir_id: 0,
                    offerer: device(user, d),
                    owner: UserId::new(format!("u{user}"))?,
                    service_id,
                    service_type: "media.renderer".into(),
                    keywords,
                    scope,
                    description: description.into_bytes(),
                    updated_at: NOW,
                    expires_at: NOW + 86_400_000,
                };
                let store = store.clone();
                tasks.spawn(async move {
                    store.publish_service(&entry).await?;
                    anyhow::Ok(())
                });
                n += 1;
                if tasks.len() >= 1024 {
                    tasks.join_next().await.expect("a task")??;
                    bar.inc(1);
                }
            }
        }
    }
    while let Some(t) = tasks.join_next().await {
        t??;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// `queries` discoveries of `words` keywords each, as random devices.
async fn measure(
    store: &SqliteStore,
    a: &DirectoryArgs,
    words: usize,
    seed: u64,
) -> anyhow::Result<Discoveries> {
    let zipf = Zipf::new(a.words);
    let mut rng = MachineRng::from_seed_u64(seed);
    let mut lat = Latencies::default();
    let mut store_lat = Latencies::default();
    let mut entries = 0usize;
    let mut max = Duration::ZERO;
    for _ in 0..a.queries {
        let asker = device(rng.u64() % a.users, rng.u64() % a.devices);
        let mut keywords = Vec::new();
        while keywords.len() < words {
            let w = word(zipf.draw(&mut rng));
            if !keywords.contains(&w) {
                keywords.push(w);
            }
        }
        let ask = DirectoryAsk::Discover(ServiceSearch {
            keywords,
            all: true,
            service_type: None,
            now: NOW,
            limit: directory::PAGE + 1,
            after: 0,
        });
        let started = Instant::now();
        let view = store.directory_view(&asker, &ask).await?;
        store_lat.record(started.elapsed());
        let listed = view
            .entries
            .iter()
            .take(directory::PAGE as usize)
            .filter_map(|e| directory::summary(e.dir_id, &e.offerer, &e.owner, &e.description))
            .count();
        let took = started.elapsed();
        entries += listed;
        max = max.max(took);
        lat.record(took);
    }
    Ok(Discoveries {
        queries: a.queries,
        p50_us: lat.quantile(0.5).as_micros() as u64,
        p99_us: lat.quantile(0.99).as_micros() as u64,
        max_us: max.as_micros() as u64,
        store_p50_us: store_lat.quantile(0.5).as_micros() as u64,
        store_p99_us: store_lat.quantile(0.99).as_micros() as u64,
        entries_per_page: entries as f64 / a.queries.max(1) as f64,
    })
}

/// `cpns-bench directory`.
pub async fn directory(a: DirectoryArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = a.db.clone().unwrap_or_else(|| tmp.path().join("server.db"));
    let reuse = path.exists();
    let store = SqliteStore::open(&path).await?;
    let fill_secs = if reuse {
        eprintln!("reusing {}", path.display());
        None
    } else {
        eprintln!(
            "filling {} with {} descriptions of {} devices…",
            path.display(),
            a.services,
            a.users * a.devices
        );
        let started = Instant::now();
        fill(&store, &a).await?;
        Some(started.elapsed().as_secs_f64())
    };
    // Warm the caches as a running server's would be.
    let warm = DirectoryArgs {
        queries: 2_000,
        db: None,
        ..a
    };
    measure(&store, &warm, 1, 99).await?;
    let a = DirectoryArgs {
        queries: a.queries,
        ..warm
    };
    let figures = DirectoryFigures {
        services: a.services,
        users: a.users,
        devices: a.users * a.devices,
        fill_secs,
        one_keyword: measure(&store, &a, 1, 1).await?,
        two_keywords: measure(&store, &a, 2, 2).await?,
    };
    store.close().await;
    if a.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        for (what, d) in [
            ("one keyword", &figures.one_keyword),
            ("two keywords", &figures.two_keywords),
        ] {
            println!(
                "discovery, {what}, over {} descriptions: p50 {} µs, p99 {} µs, max {} µs \
                 (the store's view alone: p50 {} µs, p99 {} µs); {:.1} entries a page",
                figures.services,
                d.p50_us,
                d.p99_us,
                d.max_us,
                d.store_p50_us,
                d.store_p99_us,
                d.entries_per_page
            );
        }
    }
    Ok(())
}
