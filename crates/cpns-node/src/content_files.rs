//! Where a PNE's deliveries live on disk (004 §5.5.8; docs/services.md, "Delivery"): what it
//! sends is read from the file its application named, a chunk at a time; what it receives is
//! written to `<inbox>/<session>.part`, hashed as it is written (what a resumed session held
//! already is read back once, a block at a time, never held whole), checked against the SHA-256
//! offered once every byte is there, and then kept under its name (made safe as a file name) or
//! discarded. The inbox is its user's only (mode 0700).
//!
//! A chunk is read or written where it lands in its file (`pread`/`pwrite`), in the link's
//! task: a chunk's worth of the page cache costs less than the hand-over to tokio's blocking
//! pool and back, which was one wake-up each way per chunk (BENCHMARKS.md, "Delivery through a
//! PN GW"). Opening, syncing and hashing a whole file go to the blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cpns_wire::DeliveryId;
use sha2::Digest;
use std::os::unix::fs::FileExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Block size of a hash check's reads.
const HASH_BLOCK: usize = 256 * 1024;

/// The files of a PNE's deliveries.
#[derive(Debug, Default)]
pub(crate) struct ContentFiles {
    /// Where received content goes; none: this PNE takes no delivery.
    inbox: Option<PathBuf>,
    /// The file each session this PNE sends reads from, opened at its first read and kept open.
    sending: BTreeMap<DeliveryId, (PathBuf, Option<std::fs::File>)>,
    /// Each session received.
    receiving: BTreeMap<DeliveryId, Part>,
}

/// A session being received: its name, its open partial file, and the hash of what it holds.
#[derive(Debug)]
struct Part {
    name: String,
    file: Option<std::fs::File>,
    hash: sha2::Sha256,
    /// The bytes from the start that `hash` covers.
    hashed: u64,
    /// Whether every byte written so far came in order after the last, so `hash` is of the
    /// file; if not, the file is read back at the end.
    in_order: bool,
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

/// The size and SHA-256 of the file at `path`, read a block at a time (an offered file).
/// A file larger than a delivery takes is refused before it is read.
pub(crate) async fn digest(path: &Path) -> Result<(u64, [u8; 32]), String> {
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
    let (hash, size) = hash_file(path, u64::MAX).await?;
    Ok((size, hash.finalize().into()))
}

/// The hash of the first `len` bytes of `path` (all of it if shorter), read a block at a time,
/// and how many bytes it covers.
async fn hash_file(path: &Path, len: u64) -> Result<(sha2::Sha256, u64), String> {
    let mut hash = sha2::Sha256::new();
    if len == 0 {
        return Ok((hash, 0));
    }
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| io("open", path, &e))?;
    let mut f = f.take(len);
    let mut block = vec![0; HASH_BLOCK];
    let mut hashed = 0;
    loop {
        let n = f.read(&mut block).await.map_err(|e| io("read", path, &e))?;
        if n == 0 {
            break;
        }
        hash.update(&block[..n]);
        hashed += n as u64;
    }
    Ok((hash, hashed))
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

    /// Session `session` sends the content of `path`.
    pub(crate) fn send_from(&mut self, session: DeliveryId, path: PathBuf) {
        self.sending.insert(session, (path, None));
    }

    /// Session `session` sends no more: its file is closed.
    pub(crate) fn forget(&mut self, session: DeliveryId) {
        self.sending.remove(&session);
    }

    /// `len` bytes at `offset` of what `session` sends.
    pub(crate) async fn read(
        &mut self,
        session: DeliveryId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, String> {
        let Some((path, open)) = self.sending.get_mut(&session) else {
            return Err("this PNE holds no file for the session".into());
        };
        if open.is_none() {
            let f = tokio::fs::File::open(&*path)
                .await
                .map_err(|e| io("open", path, &e))?;
            *open = Some(f.into_std().await);
        }
        let Some(f) = open.as_ref() else {
            return Err("the session's file is not open".into());
        };
        // Room for the nonce and tag the chunk is sealed with in this buffer.
        let len = usize::try_from(len).map_err(|_| "a chunk too large")?;
        let mut buf = Vec::with_capacity(len + cpns_crypto::CHUNK_OVERHEAD);
        buf.resize(len, 0);
        f.read_exact_at(&mut buf, offset)
            .map_err(|e| io("read", path, &e))?;
        Ok(buf)
    }

    fn part(&self, session: DeliveryId) -> Result<PathBuf, String> {
        let inbox = self
            .inbox
            .as_ref()
            .ok_or("this PNE keeps no deliveries (it runs without --stay)")?;
        Ok(inbox.join(format!("{session}.part")))
    }

    /// Opens (or goes on with) `session`'s partial file: the bytes it holds.
    pub(crate) async fn open_receive(
        &mut self,
        session: DeliveryId,
        name: String,
    ) -> Result<u64, String> {
        let part = self.part(session)?;
        // Opened again (its link dropped): the old handle wrote through already.
        self.receiving.remove(&session);
        if let Some(dir) = part.parent() {
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
        let f = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .await
            .map_err(|e| io("open", &part, &e))?;
        let have = f.metadata().await.map_err(|e| io("read", &part, &e))?.len();
        let f = f.into_std().await;
        // What it holds already (a resumed session) is hashed once, now.
        let (hash, hashed) = hash_file(&part, have).await?;
        let held = Part {
            name,
            file: Some(f),
            hash,
            hashed,
            in_order: true,
        };
        self.receiving.insert(session, held);
        Ok(have)
    }

    /// Writes a chunk of `session` at `offset`.
    pub(crate) async fn write(
        &mut self,
        session: DeliveryId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), String> {
        let part = self.part(session)?;
        let Some(Part {
            file: Some(f),
            hash,
            hashed,
            in_order,
            ..
        }) = self.receiving.get_mut(&session)
        else {
            return Err("the session's file is not open".into());
        };
        if offset != *hashed {
            *in_order = false;
        }
        f.write_all_at(bytes, offset)
            .map_err(|e| io("write", &part, &e))?;
        if *in_order {
            hash.update(bytes);
            *hashed += bytes.len() as u64;
        }
        Ok(())
    }

    /// Every byte of `session` is written: whether its SHA-256 is `sha256`; kept under its
    /// name if so (the path), with the part for this PNE only (`specific`, if any) beside it
    /// as `<name>.specific`; discarded if not.
    pub(crate) async fn finish(
        &mut self,
        session: DeliveryId,
        sha256: [u8; 32],
        specific: &[u8],
    ) -> Result<Option<PathBuf>, String> {
        let part = self.part(session)?;
        let Some(held) = self.receiving.remove(&session) else {
            return Err("the session's file is not open".into());
        };
        let Part {
            name,
            file,
            hash,
            hashed,
            in_order,
        } = held;
        let len = match file {
            Some(f) => {
                let f = tokio::fs::File::from_std(f);
                f.sync_all().await.map_err(|e| io("sync", &part, &e))?;
                f.metadata().await.map_err(|e| io("read", &part, &e))?.len()
            }
            None => u64::MAX,
        };
        let digest = if in_order && hashed == len {
            hash.finalize()
        } else {
            hash_file(&part, u64::MAX).await?.0.finalize()
        };
        if digest.as_slice() != sha256.as_slice() {
            let _ = tokio::fs::remove_file(&part).await;
            return Ok(None);
        }
        let dir = part.parent().unwrap_or(Path::new("."));
        let name = safe_name(&name);
        // Kept under its name, or its session's beside it: never over a file already there (a
        // link fails where the name is taken, where a rename would replace it).
        let mut kept = dir.join(&name);
        if tokio::fs::hard_link(&part, &kept).await.is_err() {
            kept = dir.join(format!("{}-{name}", &session.to_string()[..8]));
            tokio::fs::hard_link(&part, &kept)
                .await
                .map_err(|e| io("keep", &kept, &e))?;
        }
        let _ = tokio::fs::remove_file(&part).await;
        if !specific.is_empty() {
            let mut beside = kept.clone().into_os_string();
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
        Ok(Some(kept))
    }

    /// Discards what was kept of `session`.
    pub(crate) async fn discard(&mut self, session: DeliveryId) {
        self.receiving.remove(&session);
        if let Ok(part) = self.part(session) {
            let _ = tokio::fs::remove_file(part).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
        files.send_from(s, path.clone());
        assert_eq!(files.read(s, 6, 4).await.unwrap(), b"6789");
        // Kept open: the file's name may go, its content is still read.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(files.read(s, 0, 3).await.unwrap(), b"012");
        assert!(files.read(s, 8, 4).await.is_err(), "past the end");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn content_is_kept_only_with_the_hash_offered_and_resumes_from_what_is_written() {
        let dir = std::env::temp_dir().join(format!("cpns-files-{}", std::process::id()));
        let mut files = ContentFiles::new(Some(dir.join("inbox")));
        let s = DeliveryId::from_bytes([1; 16]);
        assert_eq!(files.open_receive(s, "a.bin".into()).await.unwrap(), 0);
        files.write(s, 0, b"hello ").await.unwrap();
        // Opened again (a link that dropped): it holds what was written.
        assert_eq!(files.open_receive(s, "a.bin".into()).await.unwrap(), 6);
        files.write(s, 6, b"world").await.unwrap();
        let good: [u8; 32] = sha2::Sha256::digest(b"hello world").into();
        let kept = files.finish(s, good, &[]).await.unwrap().unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello world");
        assert_eq!(kept.file_name().unwrap(), "a.bin");
        // Written out of order (a chunk written again over itself): the hash is of the file,
        // read back.
        let u = DeliveryId::from_bytes([4; 16]);
        files.open_receive(u, "b.bin".into()).await.unwrap();
        files.write(u, 0, b"hello there").await.unwrap();
        files.write(u, 6, b"world").await.unwrap();
        let kept = files.finish(u, good, b"mine").await.unwrap().unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello world");
        assert_eq!(kept.file_name().unwrap(), "b.bin");
        assert_eq!(
            std::fs::read(dir.join("inbox/b.bin.specific")).unwrap(),
            b"mine"
        );
        // Another with a wrong hash is not kept, and its partial file is gone.

        let t = DeliveryId::from_bytes([2; 16]);
        files.open_receive(t, "a.bin".into()).await.unwrap();
        files.write(t, 0, b"tampered").await.unwrap();
        assert_eq!(files.finish(t, good, &[]).await.unwrap(), None);
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
        files.open_receive(v, "c.bin".into()).await.unwrap();
        files.write(v, 0, b"hello world").await.unwrap();
        let kept = files.finish(v, good, b"own").await.unwrap().unwrap();
        assert_ne!(kept, dir.join("inbox/c.bin"));
        assert_eq!(std::fs::read(dir.join("inbox/c.bin")).unwrap(), b"mine");
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello world");
        assert!(!dir.join("inbox").join(format!("{v}.part")).exists());
        // A PNE without an inbox takes none.

        let mut none = ContentFiles::new(None);
        assert!(none.open_receive(s, "x".into()).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
