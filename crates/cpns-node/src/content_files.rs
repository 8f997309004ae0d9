//! Where a PNE's deliveries live on disk (004 §5.5.8; docs/services.md, "Delivery"): what it
//! sends is read from the files its application named (one per item of the session, one after
//! another), a chunk at a time; each item it receives is written to a partial file of its own
//! in the inbox (`<session>.part` for the first, `<session>.<i>.part` for item `i`), written and
//! hashed on a thread of the session's own ([`Writer`]; what a resumed session held already is
//! read back once, a block at a time, never held whole), checked against the SHA-256 offered
//! once every byte of the session is there, and then kept under its name (made safe as a file
//! name) or discarded, each item on its own. The inbox is its user's only (mode 0700).
//!
//! A chunk sent is read where it lies in its file (`pread`), in the link's task: a chunk's
//! worth of the page cache costs less than the hand-over to tokio's blocking pool and back,
//! which was one wake-up each way per chunk (BENCHMARKS.md, "Delivery through a PN GW"); for
//! a session offered without hashes it is hashed there too ([`ContentFiles::hashed_as_read`]),
//! so the digest its source signs costs no second read of its files. A
//! chunk received that comes in order is moved to the session's thread, which writes it where
//! it lands (`pwrite`) and hashes it, while the link's task opens the next: a write into new
//! pages of the page cache costs the target as much as opening the chunk, and one thread that
//! stays awake for the session costs no wake-up per chunk while it has work (BENCHMARKS.md, "A
//! target's writes on a thread of their own"). A chunk that comes out of order (none does from
//! a machine that takes chunks only where it expects them) waits for the thread and is written
//! in the link's task. Opening, syncing and hashing a whole file go to the blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cpns_proto::pne::ReceiveItem;
use cpns_wire::DeliveryId;
use sha2::Digest;
use std::os::unix::fs::FileExt;
use tokio::io::AsyncWriteExt;

/// Block size of a hash check's reads.
const HASH_BLOCK: usize = 256 * 1024;

/// The files of a PNE's deliveries.
#[derive(Debug, Default)]
pub(crate) struct ContentFiles {
    /// Where received content goes; none: this PNE takes no delivery.
    inbox: Option<PathBuf>,
    /// The files each session this PNE sends reads from, in order, each opened at its first
    /// read and kept open.
    sending: BTreeMap<DeliveryId, Sent>,
    /// Each session received.
    receiving: BTreeMap<DeliveryId, Vec<Part>>,
    /// Each received session's writing and hashing, on a thread of its own.
    writers: BTreeMap<DeliveryId, Writer>,
}

/// A session sent from here: its files, and its hash of them as they are read, if it makes
/// one.
#[derive(Debug)]
struct Sent {
    files: Vec<SentFile>,
    hash: Option<SentHash>,
}

/// A sent session's hash of its content, for the digest its source signs, made from the chunks
/// read to send, in order (no second read of the files): each item's hash, and how far into
/// the content it reached.
#[derive(Debug)]
struct SentHash {
    hashes: Vec<sha2::Sha256>,
    at: u64,
}

/// Where a sent session's hash stands after a read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AsSent {
    /// It goes on with the next chunk read.
    Going,
    /// Every item's SHA-256: the rest (the last chunk, which waits for the digest) was read and
    /// hashed here.
    Done(Vec<[u8; 32]>),
    /// A read skipped what it had not hashed (a session that goes on from what its targets
    /// had): the files are to be hashed whole instead ([`hash_items`]).
    Lost,
    /// The rest could not be read: why.
    Failed(String),
}

/// Chunks a session's writing thread may have waiting; past them a write waits for it.
const WRITE_QUEUE: usize = 4;

/// What a writing thread is handed: a chunk, and the ranges of it to write into which item at
/// which offset and to hash into that item (those that come in order after what that item
/// held).
type ToWrite = (Vec<u8>, Vec<(usize, u64, std::ops::Range<usize>)>);

/// A received session's writing and hashing, on a thread of its own: each chunk that comes in
/// order is handed over (moved, not copied), written where it lands and hashed there, off the
/// link's task, which goes on to open the next one (a delivery's target is the busiest of its
/// three processes, and a write into the page cache costs it as much as the chunk's opening:
/// BENCHMARKS.md, "A target's writes on a thread of their own").
/// What was handed over is written in order; [`Writer::finish`] waits for the last write.
#[derive(Debug)]
struct Writer {
    chunks: tokio::sync::mpsc::Sender<ToWrite>,
    done: tokio::sync::oneshot::Receiver<Result<Vec<sha2::Sha256>, String>>,
}

impl Writer {
    /// A thread that writes into `files` (one per item, with its path for errors) and goes on
    /// from `hashes`, one per item.
    fn start(
        files: Vec<(std::fs::File, PathBuf)>,
        mut hashes: Vec<sha2::Sha256>,
    ) -> Result<Self, String> {
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<ToWrite>(WRITE_QUEUE);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("cpns-write".into())
            .spawn(move || {
                let mut result = Ok(());
                while let Some((bytes, ranges)) = rx.blocking_recv() {
                    for (item, within, range) in ranges {
                        let (Some(h), Some(b), Some((f, path))) =
                            (hashes.get_mut(item), bytes.get(range), files.get(item))
                        else {
                            continue;
                        };
                        if let Err(e) = f.write_all_at(b, within) {
                            result = Err(io("write", path, &e));
                            break;
                        }
                        h.update(b);
                    }
                    if result.is_err() {
                        // The link's next hand-over fails, and it asks why.
                        rx.close();
                        break;
                    }
                }
                // Nobody waits when the session was discarded.
                let _ = done_tx.send(result.map(|()| hashes));
            })
            .map_err(|e| format!("no thread to write with: {e}"))?;
        Ok(Self { chunks, done })
    }

    /// Writes and hashes `ranges` of `bytes` after what came before; `false` if the thread is
    /// gone (a write failed: [`Writer::finish`] says why).
    async fn hand(
        &self,
        bytes: Vec<u8>,
        ranges: Vec<(usize, u64, std::ops::Range<usize>)>,
    ) -> bool {
        self.chunks.send((bytes, ranges)).await.is_ok()
    }

    /// Each item's hash of what was handed over, once the thread wrote and hashed it all; why
    /// not if a write failed or the thread is gone.
    async fn finish(self) -> Result<Vec<sha2::Sha256>, String> {
        drop(self.chunks);
        self.done
            .await
            .unwrap_or_else(|_| Err("the writing thread stopped".into()))
    }
}

/// A file a session sends: its path, its size (as offered), its handle once opened.
#[derive(Debug)]
struct SentFile {
    path: PathBuf,
    size: u64,
    file: Option<std::fs::File>,
}

/// An item of a session being received: its name and size, its open partial file, and how
/// much of it its session's [`Writer`] hashed.
#[derive(Debug)]
struct Part {
    name: String,
    size: u64,
    path: PathBuf,
    file: Option<std::fs::File>,
    /// The bytes from the start handed to the hasher.
    hashed: u64,
    /// Whether every byte written so far came in order after the last, so the hasher's hash is
    /// of the file; if not, the file is read back at the end.
    in_order: bool,
}

/// Where `len` bytes at `offset` of a content made of items of `sizes` bytes, one after
/// another, fall: for each item they touch, its place, the offset within it, and the range of
/// the `len` bytes that lands there; `None` if they reach past the content's end.
fn spans(
    sizes: impl IntoIterator<Item = u64>,
    offset: u64,
    len: usize,
) -> Option<Vec<(usize, u64, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let (mut at, mut done, mut start) = (offset, 0usize, 0u64);
    for (item, size) in sizes.into_iter().enumerate() {
        let end = start.saturating_add(size);
        if done < len && at < end {
            let here = usize::try_from((end - at).min((len - done) as u64)).ok()?;
            out.push((item, at - start, done..done + here));
            done += here;
            at += here as u64;
        }
        start = end;
    }
    (done == len).then_some(out)
}

/// Hashes `bytes`, at `offset` of a content made of `files` one after another, into each
/// file's hash of `hashes`.
fn hash_spans(hashes: &mut [sha2::Sha256], files: &[SentFile], offset: u64, bytes: &[u8]) {
    let sizes = files.iter().map(|f| f.size);
    for (item, _, range) in spans(sizes, offset, bytes.len()).unwrap_or_default() {
        if let (Some(h), Some(b)) = (hashes.get_mut(item), bytes.get(range)) {
            h.update(b);
        }
    }
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// The name a file is offered under when none is given: its file name (`content` if it has
/// none).
pub(crate) fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "content".into(), |n| n.to_string_lossy().into_owned())
}

/// The items after the first of a delivery offered from files (several services in one
/// session, docs/services.md): each file (an absolute path) measured, and `hashed` (as the
/// first item is: before the offer, or by a source that signs its digest, while it sends), and
/// offered under its service (default `content`), name (default: the file's) and media type
/// (default `application/octet-stream`); with each path and size, for sending. Why not, if a
/// file cannot be read.
pub(crate) async fn offered_items(
    more: Vec<cpns_control::DeliverItem>,
    hashed: bool,
) -> Result<(Vec<cpns_wire::DeliveryItem>, Vec<(PathBuf, u64)>), String> {
    let mut items = Vec::with_capacity(more.len());
    let mut files = Vec::with_capacity(more.len());
    for m in more {
        let path = PathBuf::from(&m.file);
        if !path.is_absolute() {
            return Err(format!("{}: each file is an absolute path", m.file));
        }
        let (size, sha256) = if hashed {
            digest(&path)
                .await
                .map(|(s, h)| (s, Some(cpns_wire::HashBytes(h))))?
        } else {
            (measure(&path).await?, None)
        };
        items.push(cpns_wire::DeliveryItem {
            service_id: m.service_id.unwrap_or_else(|| "content".into()),
            name: m.name.unwrap_or_else(|| name_of(&path)),
            media_type: m
                .media_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            size,
            sha256,
        });
        files.push((path, size));
    }
    Ok((items, files))
}

/// The size of the file at `path` (an offered file); a file larger than a delivery takes is
/// refused.
pub(crate) async fn measure(path: &Path) -> Result<u64, String> {
    let max = cpns_proto::server::delivery::MAX_SIZE;
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| io("read", path, &e))?
        .len();
    if len > max {
        return Err(format!(
            "{}: {len} bytes, more than a delivery takes ({} GiB)",
            path.display(),
            max >> 30
        ));
    }
    Ok(len)
}

/// The size and SHA-256 of the file at `path`, read a block at a time (an offered file).
/// A file larger than a delivery takes is refused before it is read.
pub(crate) async fn digest(path: &Path) -> Result<(u64, [u8; 32]), String> {
    measure(path).await?;
    let (hash, size) = hash_file(path, u64::MAX).await?;
    Ok((size, hash.finalize().into()))
}

/// The SHA-256 of each of `files` (each path with its size as offered), for the digest a source
/// signs for its last chunk. A file that is no longer as long as offered is refused: its
/// content is not what the targets are taking.
pub(crate) async fn hash_items(files: Vec<(PathBuf, u64)>) -> Result<Vec<[u8; 32]>, String> {
    let mut hashes = Vec::with_capacity(files.len());
    for (path, size) in files {
        let (hash, hashed) = hash_file(&path, size.saturating_add(1)).await?;
        if hashed != size {
            return Err(format!(
                "{}: {hashed} bytes where {size} were offered (the file changed?)",
                path.display()
            ));
        }
        hashes.push(hash.finalize().into());
    }
    Ok(hashes)
}

/// The hash of the first `len` bytes of `path` (all of it if shorter), read a block at a time,
/// and how many bytes it covers.
///
/// On the blocking pool, as two threads: one reads the next block while the other hashes the
/// one before, so a hash takes about as long as the slower of the two rather than both (a
/// push hashes its whole file before it offers it). [`HASH_BLOCKS`] blocks go round between
/// them; nothing more is held.
async fn hash_file(path: &Path, len: u64) -> Result<(sha2::Sha256, u64), String> {
    if len == 0 {
        return Ok((sha2::Sha256::new(), 0));
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_file_blocking(&path, len))
        .await
        .map_err(|e| format!("hashing stopped: {e}"))?
}

/// Blocks going round between a hash's reader and its hasher.
const HASH_BLOCKS: usize = 3;

fn hash_file_blocking(path: &Path, len: u64) -> Result<(sha2::Sha256, u64), String> {
    use std::io::Read;
    use std::sync::mpsc::sync_channel;

    let f = std::fs::File::open(path).map_err(|e| io("open", path, &e))?;
    // Filled blocks to the hasher (an empty one: the end), emptied ones back to the reader.
    let (full_tx, full_rx) = sync_channel::<std::io::Result<Vec<u8>>>(HASH_BLOCKS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(HASH_BLOCKS);
    for _ in 0..HASH_BLOCKS {
        let _ = empty_tx.send(vec![0; HASH_BLOCK]);
    }
    std::thread::scope(|scope| {
        // The hasher's ends of both channels, dropped as soon as it returns (not when the
        // scope ends), so a reader still waiting on them stops.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        scope.spawn(move || {
            let mut f = f.take(len);
            // Ends when the hasher is gone (it stopped) or once the end or an error is sent.
            while let Ok(mut block) = empty_rx.recv() {
                block.resize(HASH_BLOCK, 0);
                let read = read_full(&mut f, &mut block).map(|n| {
                    block.truncate(n);
                    block
                });
                let last = !matches!(&read, Ok(b) if !b.is_empty());
                if full_tx.send(read).is_err() || last {
                    return;
                }
            }
        });
        let mut hash = sha2::Sha256::new();
        let mut hashed = 0u64;
        loop {
            let block = match full_rx.recv() {
                Ok(Ok(block)) if block.is_empty() => return Ok((hash, hashed)),
                Ok(Ok(block)) => block,
                Ok(Err(e)) => return Err(io("read", path, &e)),
                Err(_) => return Err(format!("{}: the reader stopped", path.display())),
            };
            hash.update(&block);
            hashed += block.len() as u64;
            // The reader may be done (it sent the end); a block it no longer takes is dropped.
            let _ = empty_tx.send(block);
        }
    })
}

/// Reads into `block` until it is full or the end; how much it holds.
fn read_full(f: &mut impl std::io::Read, block: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < block.len() {
        match f.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A name made safe as a file name in the inbox: no separator, no leading dot, no control
/// character, at most 100 characters; `content` if nothing is left.
pub(crate) fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '\0') {
                '_'
            } else {
                c
            }
        })
        .take(100)
        .collect();
    let cleaned = cleaned.trim_start_matches('.').trim().to_string();
    if cleaned.is_empty() {
        "content".into()
    } else {
        cleaned
    }
}

impl ContentFiles {
    /// The files of a PNE keeping received content in `inbox`.
    pub(crate) fn new(inbox: Option<PathBuf>) -> Self {
        Self {
            inbox,
            ..Self::default()
        }
    }

    /// Session `session` sends the content of `files` (each path with its size as offered),
    /// one after another.
    pub(crate) fn send_from(&mut self, session: DeliveryId, files: Vec<(PathBuf, u64)>) {
        let files = files
            .into_iter()
            .map(|(path, size)| SentFile {
                path,
                size,
                file: None,
            })
            .collect();
        self.sending.insert(session, Sent { files, hash: None });
    }

    /// The files session `session` sends, each with its size as offered, if it is sent from
    /// here.
    pub(crate) fn sent_files(&self, session: DeliveryId) -> Option<Vec<(PathBuf, u64)>> {
        let files = &self.sending.get(&session)?.files;
        Some(files.iter().map(|f| (f.path.clone(), f.size)).collect())
    }

    /// The sessions sent from here, taken out (to go on elsewhere).
    pub(crate) fn take_sending(&mut self) -> ContentFiles {
        ContentFiles {
            inbox: None,
            sending: std::mem::take(&mut self.sending),
            receiving: BTreeMap::new(),
            writers: BTreeMap::new(),
        }
    }

    /// Sends what `other` sends too.
    pub(crate) fn absorb_sending(&mut self, mut other: ContentFiles) {
        self.sending.append(&mut other.sending);
    }

    /// Session `session` sends no more: its files are closed.
    pub(crate) fn forget(&mut self, session: DeliveryId) {
        self.sending.remove(&session);
    }

    /// Starts hashing what `session` sends from its chunks as they are read
    /// ([`Self::hashed_as_read`]): `Some(true)`. `Some(false)` for content no larger than a
    /// chunk (the machine reads none of it before the digest: its files are hashed whole),
    /// `None` if its files are not known here yet.
    pub(crate) fn hash_as_sent(&mut self, session: DeliveryId) -> Option<bool> {
        let sent = self.sending.get_mut(&session)?;
        let size: u64 = sent.files.iter().map(|f| f.size).sum();
        if size <= u64::from(cpns_proto::server::delivery::CHUNK) {
            return Some(false);
        }
        let hashes = sent.files.iter().map(|_| sha2::Sha256::new()).collect();
        sent.hash = Some(SentHash { hashes, at: 0 });
        Some(true)
    }

    /// After `bytes` were read at `offset` to send in `session`: hashed if they come next,
    /// and once no more than a chunk (`bytes`' length) is left, which the machine reads only
    /// with the digest, that rest is read and hashed here. `None` if the session's content is
    /// not hashed as it is read.
    pub(crate) async fn hashed_as_read(
        &mut self,
        session: DeliveryId,
        offset: u64,
        bytes: &[u8],
    ) -> Option<AsSent> {
        let sent = self.sending.get_mut(&session)?;
        let h = sent.hash.as_mut()?;
        if offset > h.at {
            sent.hash = None;
            return Some(AsSent::Lost);
        }
        let size: u64 = sent.files.iter().map(|f| f.size).sum();
        if offset == h.at {
            hash_spans(&mut h.hashes, &sent.files, offset, bytes);
            h.at += bytes.len() as u64;
        }
        // Read again (a resumption from less than was hashed): hashed already.
        let at = h.at;
        if size.saturating_sub(at) > bytes.len() as u64 {
            return Some(AsSent::Going);
        }
        let rest = self.read(session, at, size - at).await;
        let sent = self.sending.get_mut(&session)?;
        let mut hashes = sent.hash.take()?.hashes;
        match rest {
            Ok(rest) => {
                hash_spans(&mut hashes, &sent.files, at, rest.content());
                Some(AsSent::Done(
                    hashes.into_iter().map(|h| h.finalize().into()).collect(),
                ))
            }
            Err(why) => Some(AsSent::Failed(why)),
        }
    }

    /// `len` bytes at `offset` of what `session` sends: of one file, or across the end of one
    /// and the start of the next.
    pub(crate) async fn read(
        &mut self,
        session: DeliveryId,
        offset: u64,
        len: u64,
    ) -> Result<cpns_crypto::ChunkPlain, String> {
        let Some(Sent { files, .. }) = self.sending.get_mut(&session) else {
            return Err("this PNE holds no file for the session".into());
        };
        // With room for the nonce and tag the chunk is sealed with in this buffer.
        let n = usize::try_from(len).map_err(|_| "a chunk too large")?;
        let mut plain = cpns_crypto::ChunkPlain::zeroed(n);
        let buf = plain.content_mut();
        let sizes = files.iter().map(|f| f.size);
        let Some(spans) = spans(sizes, offset, n) else {
            return Err(format!(
                "bytes {offset} to {} are past the end of what the session sends",
                offset.saturating_add(len)
            ));
        };
        for (item, within, range) in spans {
            let f = &mut files[item];
            if f.file.is_none() {
                let opened = tokio::fs::File::open(&f.path)
                    .await
                    .map_err(|e| io("open", &f.path, &e))?;
                f.file = Some(opened.into_std().await);
            }
            let Some(file) = f.file.as_ref() else {
                return Err("the session's file is not open".into());
            };
            file.read_exact_at(&mut buf[range], within)
                .map_err(|e| io("read", &f.path, &e))?;
        }
        Ok(plain)
    }

    fn part(&self, session: DeliveryId, item: usize) -> Result<PathBuf, String> {
        let inbox = self
            .inbox
            .as_ref()
            .ok_or("this PNE keeps no deliveries (it runs without --stay)")?;
        Ok(if item == 0 {
            inbox.join(format!("{session}.part"))
        } else {
            inbox.join(format!("{session}.{item}.part"))
        })
    }

    /// Opens (or goes on with) `session`'s partial files, one per item: the bytes they hold
    /// from the session's start (an item's, once every item before it is whole).
    pub(crate) async fn open_receive(
        &mut self,
        session: DeliveryId,
        items: Vec<ReceiveItem>,
    ) -> Result<u64, String> {
        let first = self.part(session, 0)?;
        // Opened again (its link dropped): what the old thread was handed is written first,
        // so what the files hold is measured after it.
        self.receiving.remove(&session);
        if let Some(old) = self.writers.remove(&session) {
            let _ = old.finish().await;
        }
        if let Some(dir) = first.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io("make", dir, &e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::Permissions::from_mode(0o700);
                tokio::fs::set_permissions(dir, mode)
                    .await
                    .map_err(|e| io("restrict", dir, &e))?;
            }
        }
        let mut parts = Vec::with_capacity(items.len());
        let mut hashes = Vec::with_capacity(items.len());
        let mut files = Vec::with_capacity(items.len());
        let mut have = 0u64;
        // Whether every item before this one is whole: what a later one holds counts only then
        // (it cannot hold anything otherwise; if it does, it is emptied).
        let mut whole = true;
        for (i, item) in items.into_iter().enumerate() {
            let path = self.part(session, i)?;
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(!whole)
                .open(&path)
                .await
                .map_err(|e| io("open", &path, &e))?;
            let held = f.metadata().await.map_err(|e| io("read", &path, &e))?.len();
            if held > item.size {
                return Err(format!(
                    "{} holds more than its item's {} bytes",
                    path.display(),
                    item.size
                ));
            }
            let f = f.into_std().await;
            let for_thread = f.try_clone().map_err(|e| io("open", &path, &e))?;
            // What it holds already (a resumed session) is hashed once, now.
            let (hash, hashed) = hash_file(&path, held).await?;
            have = have.saturating_add(held);
            whole = whole && held == item.size;
            hashes.push(hash);
            files.push((for_thread, path.clone()));
            parts.push(Part {
                name: item.name,
                size: item.size,
                path,
                file: Some(f),
                hashed,
                in_order: true,
            });
        }
        self.writers.insert(session, Writer::start(files, hashes)?);
        self.receiving.insert(session, parts);
        Ok(have)
    }

    /// Writes a chunk of `session` at `offset` of its content: into the item it falls in, or
    /// across the end of one and the start of the next.
    #[cfg(test)]
    pub(crate) async fn write(
        &mut self,
        session: DeliveryId,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<(), String> {
        let all = 0..bytes.len();
        self.write_in(session, offset, bytes, all).await
    }

    /// [`Self::write`] of the chunk that lies in `at` of `buf` (a chunk opened where it
    /// came, behind its nonce): the buffer goes on to the session's writing thread as it is.
    pub(crate) async fn write_in(
        &mut self,
        session: DeliveryId,
        offset: u64,
        buf: Vec<u8>,
        at: std::ops::Range<usize>,
    ) -> Result<(), String> {
        let Some(bytes) = buf.get(at.clone()) else {
            return Err("a chunk outside its buffer".into());
        };
        let Some(parts) = self.receiving.get_mut(&session) else {
            return Err("the session's file is not open".into());
        };
        let sizes = parts.iter().map(|p| p.size);
        let Some(spans) = spans(sizes, offset, bytes.len()) else {
            return Err(format!(
                "a chunk at {offset} reaches past the session's end"
            ));
        };
        if spans
            .iter()
            .any(|(item, within, _)| *within != parts[*item].hashed)
        {
            // Written here, over what the thread may still have to write: it writes that
            // first.
            self.settle(session).await?;
        }
        let Some(parts) = self.receiving.get_mut(&session) else {
            return Err("the session's file is not open".into());
        };
        let mut to_hash = Vec::with_capacity(spans.len());
        for (item, within, range) in spans {
            let p = &mut parts[item];
            let Some(f) = p.file.as_ref() else {
                return Err("the session's file is not open".into());
            };
            let slice = &bytes[range.clone()];
            if within != p.hashed {
                p.in_order = false;
            }
            if p.in_order {
                // Written by the session's thread, in order after what it was handed.
                p.hashed += slice.len() as u64;
                to_hash.push((item, within, at.start + range.start..at.start + range.end));
            } else {
                f.write_all_at(slice, within)
                    .map_err(|e| io("write", &p.path, &e))?;
            }
        }
        if to_hash.is_empty() {
            return Ok(());
        }
        let Some(h) = self.writers.get(&session) else {
            return Err("the session's file is not open".into());
        };
        if !h.hand(buf, to_hash).await {
            // A write failed on the thread: the session cannot go on.
            let why = match self.writers.remove(&session) {
                Some(h) => h.finish().await.err(),
                None => None,
            };
            return Err(why.unwrap_or_else(|| "the writing thread stopped".into()));
        }
        Ok(())
    }

    /// Waits until `session`'s thread wrote what it was handed, and goes on with a new one
    /// from the hashes it made. Why not if a write failed.
    async fn settle(&mut self, session: DeliveryId) -> Result<(), String> {
        let (Some(h), Some(parts)) = (self.writers.remove(&session), self.receiving.get(&session))
        else {
            return Ok(());
        };
        let hashes = h.finish().await?;
        let mut files = Vec::with_capacity(parts.len());
        for p in parts {
            let Some(f) = p.file.as_ref() else {
                return Err("the session's file is not open".into());
            };
            files.push((
                f.try_clone().map_err(|e| io("open", &p.path, &e))?,
                p.path.clone(),
            ));
        }
        self.writers.insert(session, Writer::start(files, hashes)?);
        Ok(())
    }

    /// Every byte of `session` is written: for each item, whether its SHA-256 is the one in
    /// `sha256` (in order); each that matches is kept under its name (its path), each that
    /// does not is discarded (`None`). The part for this PNE only (`specific`, if any) is kept
    /// beside the first item kept, as `<name>.specific`.
    pub(crate) async fn finish(
        &mut self,
        session: DeliveryId,
        sha256: &[[u8; 32]],
        specific: &[u8],
    ) -> Result<Vec<Option<PathBuf>>, String> {
        let Some(parts) = self.receiving.remove(&session) else {
            return Err("the session's file is not open".into());
        };
        let hashes = match self.writers.remove(&session) {
            Some(h) => match h.finish().await {
                Ok(hashes) => Some(hashes),
                Err(why) => {
                    self.remove_parts(session, parts.len()).await;
                    return Err(why);
                }
            },
            None => None,
        };
        if parts.len() != sha256.len() {
            self.remove_parts(session, parts.len()).await;
            return Err(format!(
                "{} hashes offered for {} items",
                sha256.len(),
                parts.len()
            ));
        }
        let mut kept = Vec::with_capacity(parts.len());
        let mut hashes = hashes.map(Vec::into_iter);
        for (i, (p, want)) in parts.into_iter().zip(sha256).enumerate() {
            let hash = hashes.as_mut().and_then(Iterator::next);
            kept.push(keep(session, i, p, hash, want).await?);
        }
        if !specific.is_empty()
            && let Some(first) = kept.iter().flatten().next()
        {
            let mut beside = first.clone().into_os_string();
            beside.push(".specific");
            let beside = PathBuf::from(beside);
            // The content is kept whatever happens here: a part of its own that cannot be
            // written (or whose name is taken) is said, not a failed delivery.
            let written = async {
                let mut f = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&beside)
                    .await?;
                f.write_all(specific).await?;
                f.flush().await
            };
            if let Err(e) = written.await {
                tracing::warn!(path = %beside.display(), error = %e, "a delivery's own part was not kept");
            }
        }
        Ok(kept)
    }

    /// Discards what was kept of `session`.
    pub(crate) async fn discard(&mut self, session: DeliveryId) {
        self.writers.remove(&session);
        let items = self.receiving.remove(&session).map_or(1, |p| p.len());
        self.remove_parts(session, items).await;
    }

    /// Removes the partial files of `session`'s first `items` items (and any later one's).
    async fn remove_parts(&self, session: DeliveryId, items: usize) {
        let most = items.max(cpns_proto::server::delivery::MAX_ITEMS);
        for i in 0..most {
            if let Ok(part) = self.part(session, i) {
                let _ = tokio::fs::remove_file(part).await;
            }
        }
    }
}

/// Item `item` of `session`, every byte written: kept under its name (its path) if its
/// SHA-256 is `want`, its partial file removed either way. `hash` is its hasher's, if there is
/// one.
async fn keep(
    session: DeliveryId,
    item: usize,
    p: Part,
    hash: Option<sha2::Sha256>,
    want: &[u8; 32],
) -> Result<Option<PathBuf>, String> {
    let Part {
        name,
        path,
        file,
        hashed,
        in_order,
        ..
    } = p;
    let len = match file {
        Some(f) => {
            let f = tokio::fs::File::from_std(f);
            f.sync_all().await.map_err(|e| io("sync", &path, &e))?;
            f.metadata().await.map_err(|e| io("read", &path, &e))?.len()
        }
        None => u64::MAX,
    };
    let digest = match hash {
        Some(hash) if in_order && hashed == len => hash.finalize(),
        _ => hash_file(&path, u64::MAX).await?.0.finalize(),
    };
    if digest.as_slice() != want.as_slice() {
        let _ = tokio::fs::remove_file(&path).await;
        return Ok(None);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = safe_name(&name);
    // Kept under its name, or its session's beside it, or (two items of a session whose
    // names are one file name) its session's and place's: never over a file already there (a
    // link fails where the name is taken, where a rename would replace it).
    let short = &session.to_string()[..8];
    let names = [
        name.clone(),
        format!("{short}-{name}"),
        format!("{short}-{item}-{name}"),
    ];
    let mut kept = None;
    let mut last = None;
    for n in names {
        let at = dir.join(n);
        match tokio::fs::hard_link(&path, &at).await {
            Ok(()) => {
                kept = Some(at);
                break;
            }
            Err(e) => last = Some((at, e)),
        }
    }
    let Some(kept) = kept else {
        let (at, e) = last.unwrap_or_else(|| (dir.to_path_buf(), std::io::ErrorKind::Other.into()));
        return Err(io("keep", &at, &e));
    };
    let _ = tokio::fs::remove_file(&path).await;
    Ok(Some(kept))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// One item of `size` bytes named `name`.
    fn one(name: &str, size: u64) -> Vec<ReceiveItem> {
        vec![ReceiveItem {
            name: name.into(),
            size,
        }]
    }

    /// The one item of `session` finished against `sha256`: where it is kept, if it is.
    async fn finish_one(
        files: &mut ContentFiles,
        session: DeliveryId,
        sha256: [u8; 32],
        specific: &[u8],
    ) -> Option<PathBuf> {
        let mut kept = files.finish(session, &[sha256], specific).await.unwrap();
        assert_eq!(kept.len(), 1);
        kept.pop().unwrap()
    }

    #[test]
    fn bytes_of_several_items_fall_where_each_item_lies() {
        // Items of 4, 2 and 4 bytes.
        let at = |offset, len| spans([4, 2, 4], offset, len);
        assert_eq!(at(1, 2), Some(vec![(0, 1, 0..2)]));
        assert_eq!(at(3, 2), Some(vec![(0, 3, 0..1), (1, 0, 1..2)]));
        assert_eq!(
            at(2, 6),
            Some(vec![(0, 2, 0..2), (1, 0, 2..4), (2, 0, 4..6)])
        );
        assert_eq!(at(6, 4), Some(vec![(2, 0, 0..4)]));
        assert_eq!(at(0, 0), Some(vec![]));
        // Past the end, or starting past it.
        assert_eq!(at(8, 4), None);
        assert_eq!(at(10, 1), None);
        assert_eq!(spans([u64::MAX, 5], u64::MAX - 1, 3), None);
    }

    #[test]
    fn a_name_from_a_source_stays_a_file_name_in_the_inbox() {
        assert_eq!(safe_name("holiday.mp4"), "holiday.mp4");
        assert_eq!(safe_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_name(".hidden"), "hidden");
        assert_eq!(safe_name("a\\b:c\nd"), "a_b_c_d");
        assert_eq!(safe_name("..."), "content");
        assert_eq!(safe_name(""), "content");
        assert_eq!(safe_name(&"x".repeat(300)).len(), 100);
    }

    #[tokio::test]
    async fn an_offered_file_is_measured_and_hashed_and_one_too_large_is_refused_unread() {
        let dir = std::env::temp_dir().join(format!("cpns-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("small.bin");
        std::fs::write(&path, b"hello").unwrap();
        let (size, sha) = digest(&path).await.unwrap();
        assert_eq!(size, 5);
        assert_eq!(sha, <[u8; 32]>::from(sha2::Sha256::digest(b"hello")));
        // Sparse: its length is past the bound without a byte written.
        let big = dir.join("big.bin");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(cpns_proto::server::delivery::MAX_SIZE + 1)
            .unwrap();
        let why = digest(&big).await.unwrap_err();
        assert!(why.contains("more than a delivery takes"), "{why}");
        assert!(digest(&dir.join("none")).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Hashing reads on one thread and hashes on another, block by block: whatever the
    /// length asked, the hash is of exactly that prefix, across block boundaries and at them.
    #[tokio::test]
    async fn a_hash_covers_exactly_the_prefix_asked_across_blocks() {
        let dir = std::env::temp_dir().join(format!("cpns-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("blocks.bin");
        let content: Vec<u8> = (0..HASH_BLOCK * 3 + 1234)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        for len in [
            1,
            HASH_BLOCK - 1,
            HASH_BLOCK,
            HASH_BLOCK + 1,
            HASH_BLOCK * HASH_BLOCKS + 7,
            content.len(),
        ] {
            let (hash, hashed) = hash_file(&path, len as u64).await.unwrap();
            assert_eq!(hashed, len as u64);
            assert_eq!(
                hash.finalize()[..],
                sha2::Sha256::digest(&content[..len])[..],
                "{len}"
            );
        }
        // Longer than the file: all of it.
        let (hash, hashed) = hash_file(&path, u64::MAX).await.unwrap();
        assert_eq!(hashed, content.len() as u64);
        assert_eq!(hash.finalize()[..], sha2::Sha256::digest(&content)[..]);
        let (_, none) = hash_file(&path, 0).await.unwrap();
        assert_eq!(none, 0);
        let why = hash_file(&dir.join("gone"), 10).await.unwrap_err();
        assert!(why.contains("gone"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A block is read whole across short reads, and a read interrupted by a signal is tried
    /// again; any other error is the block's, not retried; the end gives what is there.
    #[test]
    fn a_block_is_read_whole_through_short_and_interrupted_reads() {
        struct Reader {
            steps: Vec<std::io::Result<Vec<u8>>>,
        }
        impl std::io::Read for Reader {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.steps.is_empty() {
                    return Ok(0);
                }
                let mut bytes = self.steps.remove(0)?;
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.steps.insert(0, Ok(bytes.split_off(n)));
                }
                Ok(n)
            }
        }
        let interrupted = || std::io::Error::from(std::io::ErrorKind::Interrupted);
        let mut r = Reader {
            steps: vec![
                Ok(b"ab".to_vec()),
                Err(interrupted()),
                Ok(b"cde".to_vec()),
                Ok(b"fgh".to_vec()),
            ],
        };
        let mut block = [0u8; 6];
        assert_eq!(read_full(&mut r, &mut block).unwrap(), 6);
        assert_eq!(&block, b"abcdef");
        // The rest, then the end.
        let mut block = [0u8; 6];
        assert_eq!(read_full(&mut r, &mut block).unwrap(), 2);
        assert_eq!(&block[..2], b"gh");
        assert_eq!(read_full(&mut r, &mut block).unwrap(), 0);
        let mut failing = Reader {
            steps: vec![Ok(b"a".to_vec()), Err(std::io::Error::other("disk gone"))],
        };
        let why = read_full(&mut failing, &mut block).unwrap_err();
        assert_eq!(why.to_string(), "disk gone");
    }

    /// A session's writing thread writes each range it is handed where it lands in its item's
    /// file, goes on from each item's hash of what it held, hashes the ranges into their
    /// items in order, and gives each item's hash once the last is written.
    #[tokio::test]
    async fn a_writing_thread_writes_and_hashes_each_range_into_its_item_in_order() {
        let dir = std::env::temp_dir().join(format!("cpns-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.part"), dir.join("b.part"));
        std::fs::write(&a, b"held ").unwrap();
        let open = |p: &Path| {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(p)
                .unwrap();
            (f, p.to_path_buf())
        };
        let mut held = sha2::Sha256::new();
        held.update(b"held ");
        let h = Writer::start(vec![open(&a), open(&b)], vec![held, sha2::Sha256::new()]).unwrap();
        assert!(
            h.hand(b"abcdef".to_vec(), vec![(0, 5, 0..4), (1, 0, 4..6)])
                .await
        );
        assert!(h.hand(b"ghi".to_vec(), vec![(1, 2, 0..3)]).await);
        // A range past the chunk, or an item there is not, writes and hashes nothing.
        assert!(
            h.hand(b"x".to_vec(), vec![(1, 0, 0..9), (7, 0, 0..1)])
                .await
        );
        let hashes = h.finish().await.unwrap();
        assert_eq!(hashes.len(), 2);
        assert_eq!(
            hashes[0].clone().finalize()[..],
            sha2::Sha256::digest(b"held abcd")[..]
        );
        assert_eq!(
            hashes[1].clone().finalize()[..],
            sha2::Sha256::digest(b"efghi")[..]
        );
        assert_eq!(std::fs::read(&a).unwrap(), b"held abcd");
        assert_eq!(std::fs::read(&b).unwrap(), b"efghi");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A write the session's thread cannot make stops the session: the link's next hand-over,
    /// or its end, says which file and why, and the partial files go.
    #[tokio::test]
    async fn a_write_that_fails_on_the_thread_ends_the_session_saying_why() {
        let dir = std::env::temp_dir().join(format!("cpns-write-fails-{}", std::process::id()));
        let mut files = ContentFiles::new(Some(dir.join("inbox")));
        let s = DeliveryId::from_bytes([8; 16]);
        files.open_receive(s, one("w.bin", 12)).await.unwrap();
        // The thread's handle swapped for one that cannot write.
        let part = files.part(s, 0).unwrap();
        let read_only = std::fs::File::open(&part).unwrap();
        let hashes = vec![sha2::Sha256::new()];
        files.writers.insert(
            s,
            Writer::start(vec![(read_only, part.clone())], hashes).unwrap(),
        );
        let mut why = None;
        for i in 0..(WRITE_QUEUE as u64 + 2) {
            if let Err(e) = files.write(s, i * 2, b"ab".to_vec()).await {
                why = Some(e);
                break;
            }
        }
        let why = match why {
            Some(why) => why,
            None => files.finish(s, &[[0; 32]], &[]).await.unwrap_err(),
        };
        assert!(
            why.starts_with(&format!("write {}: ", part.display())),
            "{why}"
        );
        files.discard(s).await;
        assert!(!part.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What arrives in order is checked as it was written, by the session's writing thread,
    /// not read back from the partial file: a file changed behind the PNE's back after its
    /// bytes were written is kept as written (what the source sent), and one whose bytes
    /// came out of order is read back.
    #[tokio::test]
    async fn an_item_written_in_order_is_checked_as_written_not_read_back() {
        let dir = std::env::temp_dir().join(format!("cpns-as-written-{}", std::process::id()));
        let mut files = ContentFiles::new(Some(dir.join("inbox")));
        let s = DeliveryId::from_bytes([6; 16]);
        files.open_receive(s, one("w.bin", 5)).await.unwrap();
        files.write(s, 0, b"abcde".to_vec()).await.unwrap();
        files.settle(s).await.unwrap();
        std::fs::write(files.part(s, 0).unwrap(), b"ABCDE").unwrap();
        let sent: [u8; 32] = sha2::Sha256::digest(b"abcde").into();
        assert!(finish_one(&mut files, s, sent, &[]).await.is_some());

        let t = DeliveryId::from_bytes([7; 16]);
        files.open_receive(t, one("r.bin", 5)).await.unwrap();
        files.write(t, 2, b"cde".to_vec()).await.unwrap();
        files.write(t, 0, b"ab".to_vec()).await.unwrap();
        std::fs::write(files.part(t, 0).unwrap(), b"ABCDE").unwrap();
        assert!(
            finish_one(&mut files, t, sent, &[]).await.is_none(),
            "read back, the file is not what was sent"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A source's digest hashes each file whole, and refuses one no longer as long as offered
    /// (shorter or longer: it changed since the offer).
    #[tokio::test]
    async fn each_item_is_hashed_whole_and_a_changed_length_is_refused() {
        let dir = std::env::temp_dir().join(format!("cpns-items-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.bin"), dir.join("b.bin"));
        std::fs::write(&a, vec![7u8; 300_000]).unwrap();
        std::fs::write(&b, b"notes").unwrap();
        let hashes = hash_items(vec![(a.clone(), 300_000), (b.clone(), 5)])
            .await
            .unwrap();
        let want: [[u8; 32]; 2] = [
            sha2::Sha256::digest(vec![7u8; 300_000]).into(),
            sha2::Sha256::digest(b"notes").into(),
        ];
        assert_eq!(hashes, want);
        for offered in [4, 6] {
            let why = hash_items(vec![(b.clone(), offered)]).await.unwrap_err();
            assert!(why.contains("were offered (the file changed?)"), "{why}");
        }
        assert!(hash_items(vec![(dir.join("gone"), 1)]).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A chunk opened behind its nonce is written and hashed from where it lies in its buffer:
    /// the file holds the content only, and the writing thread hashed that (the file is
    /// changed after the writes, so a hash read back would not match).
    #[tokio::test]
    async fn a_chunk_lying_behind_its_nonce_is_written_and_hashed_from_there() {
        let dir = std::env::temp_dir().join(format!("cpns-behind-{}", std::process::id()));
        let mut files = ContentFiles::new(Some(dir.join("inbox")));
        let s = DeliveryId::from_bytes([8; 16]);
        files.open_receive(s, one("n.bin", 7)).await.unwrap();
        let first = [b"NONCE-bytes!".as_slice(), b"abcd", b"TAG"].concat();
        files.write_in(s, 0, first, 12..16).await.unwrap();
        let second = [b"NONCE-bytes!".as_slice(), b"efg"].concat();
        files.write_in(s, 4, second, 12..15).await.unwrap();
        files.settle(s).await.unwrap();
        let part = files.part(s, 0).unwrap();
        assert_eq!(std::fs::read(&part).unwrap(), b"abcdefg");
        std::fs::write(&part, b"ABCDEFG").unwrap();
        let sent: [u8; 32] = sha2::Sha256::digest(b"abcdefg").into();
        assert!(finish_one(&mut files, s, sent, &[]).await.is_some());
        // A range outside its buffer is refused, nothing written.
        let t = DeliveryId::from_bytes([9; 16]);
        files.open_receive(t, one("o.bin", 4)).await.unwrap();
        assert!(files.write_in(t, 0, vec![1; 8], 6..10).await.is_err());
        assert_eq!(std::fs::read(files.part(t, 0).unwrap()).unwrap(), b"");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sent session's content is hashed from the chunks read to send it, in order: a chunk
    /// read again is not hashed twice, the rest past the last whole chunk is read and hashed
    /// at once (the machine reads it only with the digest), and each item's hash is its
    /// file's. A read that skips ahead gives the files to be hashed whole; content no larger
    /// than a chunk is hashed whole from the start; a rest that cannot be read says why.
    #[tokio::test]
    async fn what_a_session_sends_is_hashed_as_it_is_read() {
        let dir = std::env::temp_dir().join(format!("cpns-as-sent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let bytes = |n: usize, k: u8| (0..n).map(|i| (i % 251) as u8 ^ k).collect::<Vec<u8>>();
        std::fs::write(&a, bytes(100_000, 1)).unwrap();
        std::fs::write(&b, bytes(50_000, 2)).unwrap();
        let want: Vec<[u8; 32]> = vec![
            sha2::Sha256::digest(bytes(100_000, 1)).into(),
            sha2::Sha256::digest(bytes(50_000, 2)).into(),
        ];
        let mut files = ContentFiles::new(None);
        let s = DeliveryId::from_bytes([1; 16]);
        assert_eq!(files.hash_as_sent(s), None, "no files known yet");
        files.send_from(s, vec![(a.clone(), 100_000), (b.clone(), 50_000)]);
        assert_eq!(files.hash_as_sent(s), Some(true));
        let read = async |files: &mut ContentFiles, at: u64| {
            let c = files.read(s, at, 65_536).await.unwrap();
            files.hashed_as_read(s, at, c.content()).await
        };
        assert_eq!(read(&mut files, 0).await, Some(AsSent::Going));
        assert_eq!(read(&mut files, 0).await, Some(AsSent::Going), "read again");
        assert_eq!(
            read(&mut files, 65_536).await,
            Some(AsSent::Done(want.clone()))
        );
        assert_eq!(
            read(&mut files, 65_536).await,
            None,
            "done: nothing more to hash"
        );

        // Exactly one whole chunk left (the last, which waits for the digest): hashed at once.
        let w = DeliveryId::from_bytes([5; 16]);
        let whole = dir.join("whole");
        std::fs::write(&whole, bytes(196_608, 4)).unwrap();
        files.send_from(w, vec![(whole.clone(), 196_608)]);
        assert_eq!(files.hash_as_sent(w), Some(true));
        let c = files.read(w, 0, 65_536).await.unwrap();
        assert_eq!(
            files.hashed_as_read(w, 0, c.content()).await,
            Some(AsSent::Going)
        );
        let c = files.read(w, 65_536, 65_536).await.unwrap();
        assert_eq!(
            files.hashed_as_read(w, 65_536, c.content()).await,
            Some(AsSent::Done(vec![
                sha2::Sha256::digest(bytes(196_608, 4)).into()
            ]))
        );

        // Skipping ahead: the files are to be hashed whole.
        let t = DeliveryId::from_bytes([2; 16]);
        files.send_from(t, vec![(a.clone(), 100_000), (b.clone(), 50_000)]);
        assert_eq!(files.hash_as_sent(t), Some(true));
        let c = files.read(t, 65_536, 65_536).await.unwrap();
        assert_eq!(
            files.hashed_as_read(t, 65_536, c.content()).await,
            Some(AsSent::Lost)
        );

        // No larger than a chunk: hashed whole from the start.
        let u = DeliveryId::from_bytes([3; 16]);
        files.send_from(u, vec![(b.clone(), 50_000)]);
        assert_eq!(files.hash_as_sent(u), Some(false));

        // The rest cannot be read: the file was cut short after its chunks were read.
        let v = DeliveryId::from_bytes([4; 16]);
        let cut = dir.join("cut");
        std::fs::write(&cut, bytes(140_000, 3)).unwrap();
        files.send_from(v, vec![(cut.clone(), 140_000)]);
        assert_eq!(files.hash_as_sent(v), Some(true));
        let c = files.read(v, 0, 65_536).await.unwrap();
        assert_eq!(
            files.hashed_as_read(v, 0, c.content()).await,
            Some(AsSent::Going)
        );
        let c = files.read(v, 65_536, 65_536).await.unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(131_072)
            .unwrap();
        let failed = files.hashed_as_read(v, 65_536, c.content()).await;
        assert!(
            matches!(&failed, Some(AsSent::Failed(why)) if why.contains("cut")),
            "{failed:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_sent_file_is_read_where_asked_from_one_open_handle() {
        let dir = std::env::temp_dir().join(format!("cpns-send-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("film.bin");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut files = ContentFiles::new(None);
        let s = DeliveryId::from_bytes([3; 16]);
        assert!(
            files.read(s, 0, 4).await.is_err(),
            "no file for the session"
        );
        files.send_from(s, vec![(path.clone(), 10)]);
        assert_eq!(files.read(s, 6, 4).await.unwrap().content(), b"6789");
        // Kept open: the file's name may go, its content is still read.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(files.read(s, 0, 3).await.unwrap().content(), b"012");
        assert!(files.read(s, 8, 4).await.is_err(), "past the end");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn content_is_kept_only_with_the_hash_offered_and_resumes_from_what_is_written() {
        let dir = std::env::temp_dir().join(format!("cpns-files-{}", std::process::id()));
        let mut files = ContentFiles::new(Some(dir.join("inbox")));
        let s = DeliveryId::from_bytes([1; 16]);
        assert_eq!(files.open_receive(s, one("a.bin", 11)).await.unwrap(), 0);
        files.write(s, 0, b"hello ".to_vec()).await.unwrap();
        // Opened again (a link that dropped): it holds what was written.
        assert_eq!(files.open_receive(s, one("a.bin", 11)).await.unwrap(), 6);
        files.write(s, 6, b"world".to_vec()).await.unwrap();
        let good: [u8; 32] = sha2::Sha256::digest(b"hello world").into();
        let kept = finish_one(&mut files, s, good, &[]).await.unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello world");
        assert_eq!(kept.file_name().unwrap(), "a.bin");
        // Written out of order (a chunk written again over itself): the hash is of the file,
        // read back.
        let u = DeliveryId::from_bytes([4; 16]);
        files.open_receive(u, one("b.bin", 11)).await.unwrap();
        files.write(u, 0, b"hello there".to_vec()).await.unwrap();
        files.write(u, 6, b"world".to_vec()).await.unwrap();
        let kept = finish_one(&mut files, u, good, b"mine").await.unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello world");
        assert_eq!(kept.file_name().unwrap(), "b.bin");
        assert_eq!(
            std::fs::read(dir.join("inbox/b.bin.specific")).unwrap(),
            b"mine"
        );
        // Another with a wrong hash is not kept, and its partial file is gone.

        let t = DeliveryId::from_bytes([2; 16]);
        files.open_receive(t, one("a.bin", 11)).await.unwrap();
        files.write(t, 0, b"tampered!!!".to_vec()).await.unwrap();
        assert_eq!(finish_one(&mut files, t, good, &[]).await, None);
        assert!(!dir.join("inbox").join(format!("{t}.part")).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("inbox"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // A name already taken in the inbox is not written over: it is kept beside, under its
        // session's name.
        std::fs::write(dir.join("inbox/c.bin"), b"mine").unwrap();
        let v = DeliveryId::from_bytes([5; 16]);
        files.open_receive(v, one("c.bin", 11)).await.unwrap();
        files.write(v, 0, b"hello world".to_vec()).await.unwrap();
        let kept = finish_one(&mut files, v, good, b"own").await.unwrap();
        assert_ne!(kept, dir.join("inbox/c.bin"));
        assert_eq!(std::fs::read(dir.join("inbox/c.bin")).unwrap(), b"mine");
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello world");
        assert!(!dir.join("inbox").join(format!("{v}.part")).exists());
        // A PNE without an inbox takes none.

        let mut none = ContentFiles::new(None);
        assert!(none.open_receive(s, one("x", 1)).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_session_of_several_items_reads_across_its_files_in_order() {
        let dir = std::env::temp_dir().join(format!("cpns-send-items-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        std::fs::write(&a, b"0123").unwrap();
        std::fs::write(&b, b"45").unwrap();
        std::fs::write(&c, b"6789").unwrap();
        let mut files = ContentFiles::new(None);
        let s = DeliveryId::from_bytes([6; 16]);
        files.send_from(s, vec![(a, 4), (b, 2), (c, 4)]);
        // Within one file, across one boundary, across two.
        assert_eq!(files.read(s, 1, 2).await.unwrap().content(), b"12");
        assert_eq!(files.read(s, 3, 2).await.unwrap().content(), b"34");
        assert_eq!(files.read(s, 2, 6).await.unwrap().content(), b"234567");
        assert_eq!(files.read(s, 0, 10).await.unwrap().content(), b"0123456789");
        let why = files.read(s, 8, 4).await.unwrap_err();
        assert!(why.contains("past the end"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn each_item_of_a_session_is_kept_or_discarded_on_its_own_and_resumes_where_whole() {
        let dir = std::env::temp_dir().join(format!("cpns-recv-items-{}", std::process::id()));
        let inbox = dir.join("inbox");
        let mut files = ContentFiles::new(Some(inbox.clone()));
        let s = DeliveryId::from_bytes([8; 16]);
        let items = || {
            vec![
                ReceiveItem {
                    name: "film.mp4".into(),
                    size: 6,
                },
                ReceiveItem {
                    name: "film.srt".into(),
                    size: 5,
                },
                ReceiveItem {
                    name: "film.jpg".into(),
                    size: 3,
                },
            ]
        };
        assert_eq!(files.open_receive(s, items()).await.unwrap(), 0);
        // A chunk across the first item's end and into the second.
        files.write(s, 0, b"moviessu".to_vec()).await.unwrap();
        // Opened again (a dropped link): the first is whole, the second holds two bytes.
        assert_eq!(files.open_receive(s, items()).await.unwrap(), 8);
        files.write(s, 8, b"btijpg".to_vec()).await.unwrap();
        let why = files.write(s, 14, b"x".to_vec()).await.unwrap_err();
        assert!(why.contains("past the session's end"), "{why}");
        let sha = |b: &[u8]| -> [u8; 32] { sha2::Sha256::digest(b).into() };
        // The poster's hash offered is another: it alone is not kept.
        let kept = files
            .finish(s, &[sha(b"movies"), sha(b"subti"), sha(b"other")], b"own")
            .await
            .unwrap();
        assert_eq!(
            kept,
            [
                Some(inbox.join("film.mp4")),
                Some(inbox.join("film.srt")),
                None
            ]
        );
        assert_eq!(std::fs::read(inbox.join("film.mp4")).unwrap(), b"movies");
        assert_eq!(std::fs::read(inbox.join("film.srt")).unwrap(), b"subti");
        assert_eq!(
            std::fs::read(inbox.join("film.mp4.specific")).unwrap(),
            b"own"
        );
        assert!(!inbox.join("film.jpg").exists());
        let left: Vec<_> = std::fs::read_dir(&inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A later item holding bytes while an earlier one is not whole is emptied: only what
        // follows on from the start counts.
        let t = DeliveryId::from_bytes([9; 16]);
        std::fs::write(inbox.join(format!("{t}.1.part")), b"stale").unwrap();
        assert_eq!(files.open_receive(t, items()).await.unwrap(), 0);
        assert_eq!(
            std::fs::metadata(inbox.join(format!("{t}.1.part")))
                .unwrap()
                .len(),
            0
        );
        // Hashes for another number of items: refused, and its partial files gone.
        let why = files.finish(t, &[sha(b"x")], &[]).await.unwrap_err();
        assert!(why.contains("1 hashes offered for 3 items"), "{why}");
        assert!(!inbox.join(format!("{t}.part")).exists());
        assert!(!inbox.join(format!("{t}.1.part")).exists());
        // Two items whose names make one file name, the name taken already: each kept, beside
        // it, under a name of its own.
        let v = DeliveryId::from_bytes([11; 16]);
        std::fs::write(inbox.join("a_b"), b"mine").unwrap();
        let clash = vec![
            ReceiveItem {
                name: "a/b".into(),
                size: 2,
            },
            ReceiveItem {
                name: "a:b".into(),
                size: 2,
            },
        ];
        files.open_receive(v, clash).await.unwrap();
        files.write(v, 0, b"xxyy".to_vec()).await.unwrap();
        let kept = files
            .finish(v, &[sha(b"xx"), sha(b"yy")], &[])
            .await
            .unwrap();
        let kept: Vec<PathBuf> = kept.into_iter().map(Option::unwrap).collect();
        assert_eq!(kept.len(), 2);
        assert_ne!(kept[0], kept[1]);
        assert_eq!(std::fs::read(&kept[0]).unwrap(), b"xx");
        assert_eq!(std::fs::read(&kept[1]).unwrap(), b"yy");
        assert_eq!(std::fs::read(inbox.join("a_b")).unwrap(), b"mine");
        // An item's partial file longer than the item: refused.
        let u = DeliveryId::from_bytes([10; 16]);
        std::fs::write(inbox.join(format!("{u}.part")), b"too long!").unwrap();
        let why = files.open_receive(u, items()).await.unwrap_err();
        assert!(why.contains("holds more than"), "{why}");
        files.discard(u).await;
        assert!(!inbox.join(format!("{u}.part")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
