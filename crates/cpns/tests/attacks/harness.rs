//! The harness of the attack tests, beside the process world they share with the other process
//! tests ([`crate::common`]): processes' memory read from `/proc/<pid>/status`, SQLite files
//! dumped cell by cell, and raw PAN links speaking plain CBOR frames by hand.
//!
//! Nothing here sleeps to synchronise: every wait is on a process's event line, a socket read or
//! a task, under [`WAIT`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::str::FromStr;

use cpns_wire::codec::{FrameKind, LEN_PREFIX, split_frame};
use cpns_wire::{
    Address, Body, DEFAULT_MAX_FRAME, DeviceCapabilities, EntityDiscoveryRequest, EntityId,
    Envelope, ErrorCode, JoinInfo, Mode, PnSetupRequest, RandBytes, RequestId, SetupType,
    decode_envelope, encode_plain_frame,
};
use rusqlite::{Connection, OpenFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub use crate::common::WAIT;
use crate::common::WorldBuilder;

/// The world of an attack: the PN GW `home-gw` and `pnes`, of alice, the processes logging
/// (stderr) at error level only to keep floods quiet (`CPNS_TEST_LOG=debug` to see why a link
/// was cut off).
pub fn world(pnes: &[&str]) -> WorldBuilder {
    crate::common::World::builder()
        .gateway("home-gw")
        .pnes(pnes)
        .log("error")
}

/// Runs `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A parsed id.
pub fn id(s: &str) -> EntityId {
    EntityId::from_str(s).unwrap()
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// VmRSS: resident now, in KiB.
    pub rss_kib: u64,
    /// VmHWM: the most it was ever resident, in KiB.
    pub peak_kib: u64,
}

impl Memory {
    /// Reads the memory of process `pid`.
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |key: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
            line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap()
        };
        Self {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }
}

/// The most an attack may add to a process's resident memory (docs/ARCHITECTURE.md, "Resource
/// bounds (measured)").
pub const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// Checks that `who`'s peak resident memory since `before` grew by less than
/// [`MAX_GROWTH_KIB`], and reports the figures.
pub fn assert_bounded(who: &str, before: Memory, after: Memory) {
    let growth = after.peak_kib.saturating_sub(before.rss_kib);
    println!(
        "{who}: VmRSS before {} KiB, VmHWM after {} KiB (growth {growth} KiB), VmRSS after {} KiB",
        before.rss_kib, after.peak_kib, after.rss_kib
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "{who}: resident memory grew by {growth} KiB under attack (bound {MAX_GROWTH_KIB} KiB)"
    );
}

// ---- SQLite files, cell by cell ----

/// Every row of every table of a SQLite file, each cell as SQLite's `quote()` writes it (a BLOB
/// as `X'..'`, text quoted, integers as digits): the stored bytes, comparable as strings.
pub type Tables = BTreeMap<String, Vec<String>>;

/// Dumps every table of the SQLite file at `db`. The file may be in use by a running process
/// (WAL): this reads a consistent snapshot and writes nothing.
pub async fn dump(db: &Path) -> Tables {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let strings = |sql: &str, params: &[&str]| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(0));
        rows.unwrap().collect::<rusqlite::Result<_>>().unwrap()
    };
    // One read transaction, so every table comes from the same snapshot.
    conn.execute_batch("BEGIN").unwrap();
    let mut tables = Tables::new();
    let names = strings(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
        &[],
    );
    for table in names {
        let cols = strings(
            "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
            &[&table],
        );
        let row = cols
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let order = cols
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        // Table and column names come from the file's own schema, not from a peer.
        let sql = format!("SELECT {row} FROM \"{table}\" ORDER BY {order}");
        tables.insert(table, strings(&sql, &[]));
    }
    conn.execute_batch("COMMIT").unwrap();
    tables
}

/// A PN id as `quote()` writes the BLOB: `X'…'`, upper-case hex.
pub fn quoted_pn(pn_hex: &str) -> String {
    format!("X'{}'", pn_hex.to_uppercase())
}

// ---- raw PAN links ----

/// What came in on a raw link.
#[derive(Debug)]
pub enum Frame {
    /// A plain envelope.
    Plain(Box<Envelope>),
    /// A sealed frame (unreadable without the link's keys).
    Sealed,
}

/// A raw TCP link to a PN GW's PAN listener, speaking plain CBOR frames by hand as entity `me`.
pub struct RawLink {
    /// Reading side.
    pub rd: OwnedReadHalf,
    /// Writing side.
    pub wr: OwnedWriteHalf,
    /// The entity id written in `from`.
    pub me: EntityId,
    /// The PN GW addressed.
    pub gw: EntityId,
    next: u64,
}

impl RawLink {
    /// Connects to the PAN listener at `pan`.
    pub async fn connect(pan: &str, me: &str, gw: &str) -> Self {
        let stream = TcpStream::connect(pan).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self::over(stream, me, gw)
    }

    /// A raw link over an open stream.
    pub fn over(stream: TcpStream, me: &str, gw: &str) -> Self {
        let (rd, wr) = stream.into_split();
        Self {
            rd,
            wr,
            me: id(me),
            gw: id(gw),
            next: 0,
        }
    }

    /// A whole plain frame carrying a request from `me` to the PN GW, and its message id.
    pub fn request(&mut self, body: impl Into<Body>) -> (u64, Vec<u8>) {
        self.next += 1;
        let env = Envelope::request(
            self.next,
            Address::Entity(self.me.clone()),
            Address::Entity(self.gw.clone()),
            body,
        );
        let mut out = Vec::new();
        encode_plain_frame(&env, &mut out);
        (self.next, out)
    }

    /// Sends a request; returns its message id.
    pub async fn send(&mut self, body: impl Into<Body>) -> u64 {
        let (msg, frame) = self.request(body);
        self.wr.write_all(&frame).await.unwrap();
        msg
    }

    /// The next frame; `None` once the PN GW closed the link.
    pub async fn recv(&mut self) -> Option<Frame> {
        read_frame(&mut self.rd).await
    }

    /// The answer to request `msg`: its error code (`None` for a non-error answer), or
    /// `Err(())` if the link was closed first. Requests the PN GW sends are skipped.
    pub async fn answer(&mut self, msg: u64) -> Result<Option<ErrorCode>, ()> {
        within("an answer on a raw link", async {
            loop {
                match self.recv().await {
                    None => return Err(()),
                    Some(Frame::Plain(env)) if env.in_reply_to == Some(msg) => {
                        return Ok(env.error().map(|e| e.code));
                    }
                    Some(_) => {}
                }
            }
        })
        .await
    }
}

/// Reads one whole frame, its length prefix included; `None` if the stream ends or fails first.
pub async fn read_whole<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut len = [0u8; LEN_PREFIX];
    r.read_exact(&mut len).await.ok()?;
    let mut frame = len.to_vec();
    frame.resize(LEN_PREFIX + u32::from_be_bytes(len) as usize, 0);
    r.read_exact(&mut frame[LEN_PREFIX..]).await.ok()?;
    Some(frame)
}

/// Reads one frame; `None` if the stream ends or fails first.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<Frame> {
    let mut prefix = [0u8; LEN_PREFIX];
    r.read_exact(&mut prefix).await.ok()?;
    let len = u32::from_be_bytes(prefix);
    assert!(
        len <= DEFAULT_MAX_FRAME,
        "the PN GW sent a {len}-byte frame"
    );
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await.ok()?;
    let (kind, payload) = split_frame(&body).unwrap();
    Some(match kind {
        FrameKind::Plain => Frame::Plain(Box::new(decode_envelope(payload).unwrap())),
        FrameKind::Sealed => Frame::Sealed,
    })
}

/// Waits until the peer closes the stream (EOF or an error such as a reset).
pub async fn closed<R: AsyncRead + Unpin>(r: &mut R) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Device capabilities whose software list carries `pad` bytes of filler.
pub fn capabilities(device_type: &str, pad: usize) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device_type.into(),
        has_ui: false,
        networks: vec!["wlan".into()],
        software: vec!["x".repeat(pad)],
        battery_pct: None,
        gateway_capable: false,
        cpu_class: None,
        memory_class: None,
        ..DeviceCapabilities::default()
    }
}

/// 000 §6.4: "I am `me`, a PNE".
pub fn discovery(me: &EntityId) -> EntityDiscoveryRequest {
    EntityDiscoveryRequest {
        entity_id: me.clone(),
        mode: Mode::Pne,
    }
}

/// 000 §6.6.1.1 step 1: `pne` asks for a PN of `setup`, its join information padded by `pad`.
pub fn setup_request(pne: &EntityId, request: u64, setup: SetupType, pad: usize) -> PnSetupRequest {
    PnSetupRequest {
        request_id: RequestId(request),
        setup: Some(setup),
        join: Some(JoinInfo {
            pne_id: pne.clone(),
            capabilities: capabilities("attacker", pad),
            contents: Vec::new(),
            rand_pne: RandBytes([7; 16]),
            local_key: false,
            home_gateway: None,
        }),
        pn_id: None,
        initiator: None,
    }
}

/// A PN Setup Request whose whole frame body is exactly `frame_len` bytes (the largest a limit
/// of `frame_len` lets through).
pub fn setup_request_of_size(link: &mut RawLink, frame_len: usize) -> (u64, Vec<u8>) {
    let me = link.me.clone();
    let mut pad = frame_len.saturating_sub(512);
    for _ in 0..8 {
        let saved = link.next;
        let (msg, frame) = link.request(setup_request(&me, 99, SetupType::OneToOne, pad));
        let len = frame.len() - LEN_PREFIX;
        if len == frame_len {
            return (msg, frame);
        }
        link.next = saved;
        // The CBOR header of the filler string grows at 256 and 65 536 bytes: converge.
        pad = if len < frame_len {
            pad + (frame_len - len)
        } else {
            pad - (len - frame_len).min(pad)
        };
    }
    panic!("no PN Setup Request of exactly {frame_len} bytes");
}

/// A WAN barrier: a raw link naming an id nobody enrolled asks the PN GW at `pan` for a PN, and
/// the server refuses it. A server session handles its PN GW's frames in order and persists each
/// effect before reading the next frame, so once the refusal is back, everything the PN GW sent
/// the server before (its status report confirming a PN, say) is durable. Changes no inventory.
pub async fn wan_barrier(pan: &str, gw: &str, n: u32) {
    let mut probe = RawLink::connect(pan, &format!("probe-{n}"), gw).await;
    let me = probe.me.clone();
    let msg = probe
        .send(setup_request(&me, 1, SetupType::OneToOne, 0))
        .await;
    let answer = probe.answer(msg).await;
    assert!(
        matches!(answer, Ok(Some(_))),
        "the probe's PN Setup Request was not refused: {answer:?}"
    );
}
