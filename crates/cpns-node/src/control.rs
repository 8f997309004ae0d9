//! The local control socket of a running entity (a PN GW or a PNE daemon): the way `cpns pn ...`
//! acts on it (issue "A PN that lives", "Long-running entities").
//!
//! A Unix socket beside the entity's store, mode 0600: only the user the entity runs as may
//! connect, so a request needs no credential of its own. The protocol is one JSON object per
//! line each way: a request names its `verb`; the answer has `"ok": true` and the verb's
//! fields, or `"ok": false` and an `error` in words. A connection may send several requests,
//! one at a time.
//!
//! The socket still faces whatever runs as that user, so it is bounded like every listener
//! (docs/design.md §3): a request line is at most [`MAX_REQUEST`] bytes (a longer one is answered with
//! an error and the connection closed), at most [`MAX_CONNECTIONS`] connections are served at
//! once (more wait in the socket's backlog until one ends), and a connection idle for [`IDLE`]
//! is closed.
//! A malformed request is answered with an error and disturbs nothing else.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tracing::debug;

/// Longest request line, in bytes (without its newline).
pub const MAX_REQUEST: usize = 16 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// How long a connection may stay silent before it is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// Most bytes of an oversized request read and thrown away after refusing it.
const DISCARD_LIMIT: u64 = 1 << 20;

/// A verb's answer: one line, or a first line and then one line per event until either side
/// ends it (a subscription, docs/device-status.md).
#[derive(Debug)]
pub enum Answer {
    /// One answer line.
    One(Value),
    /// A first line, then every value the receiver gives; the connection ends with it.
    Stream(Value, tokio::sync::mpsc::Receiver<Value>),
}

impl From<Value> for Answer {
    fn from(v: Value) -> Self {
        Answer::One(v)
    }
}

/// Why the control socket could not be set up or asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another running process answers on this path.
    #[error(
        "{0} is the control socket of a running entity: stop it first, or give this one another store"
    )]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket: move it away")]
    NotASocket(PathBuf),
    /// No entity answers on this path.
    #[error(
        "no running entity answers on {path} ({source}): start it first (`cpns gateway` or `cpns pne`)"
    )]
    NotRunning {
        /// The socket's path.
        path: PathBuf,
        /// Why connecting failed.
        source: io::Error,
    },
    /// The socket failed while in use.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The entity's answer was not a JSON object on one line.
    #[error("control socket {0}: the answer is not a JSON object")]
    BadAnswer(PathBuf),
}

/// The control socket's path for an entity whose store is `store`: the same path with `.sock`
/// added (`home-gw.db` → `home-gw.db.sock`).
pub fn socket_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

/// A bound control socket; the socket file is removed when it is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the socket at `path` with mode 0600. A socket file left by an entity that is gone
    /// (nothing answers on it) is replaced; one a running entity answers on is refused, and so
    /// is anything at `path` that is not a socket.
    pub async fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let io_err = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        // Nothing there is the usual case; anything else that keeps us from looking, bind
        // reports below.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket(path.to_owned()));
            }
            match UnixStream::connect(path).await {
                Ok(_) => return Err(ControlError::InUse(path.to_owned())),
                // Refused: nothing listens, the entity that made it is gone. Any other error
                // (a full backlog says "try again") leaves it alone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(io_err)?;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        // Before the first accept: a peer connecting in between would still have to get past
        // the data directory's own permissions.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until `stop` turns true or its sender is dropped: each request line
    /// is parsed and given to `handle`, whose answer is written back as one line. Connections
    /// being served when it stops finish their current request on their own.
    pub async fn serve<H, F, A>(self, handle: H, mut stop: watch::Receiver<bool>)
    where
        H: Fn(Value) -> F + Clone + Send + 'static,
        F: Future<Output = A> + Send,
        A: Into<Answer>,
    {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // A slot first, then a connection: beyond the bound, connections wait in the
            // socket's backlog (the kernel's, bounded) until a served one ends.
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                changed = stop.changed() => {
                    // Stopped, or the sender gone (nobody can stop it any more: stop now).
                    if changed.is_err() || *stop.borrow() { return; }
                    continue;
                }
            };
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, handle).await {
                            debug!(error = %e, "control connection ended");
                        }
                        drop(slot);
                    });
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() { return; }
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An error answer.
pub fn error(reason: impl std::fmt::Display) -> Value {
    json!({ "ok": false, "error": reason.to_string() })
}

async fn serve_connection<H, F, A>(stream: UnixStream, handle: H) -> io::Result<()>
where
    H: Fn(Value) -> F,
    F: Future<Output = A>,
    A: Into<Answer>,
{
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(IDLE, read_line(&mut read, MAX_REQUEST)).await {
            Err(_) => return Ok(()), // silent for too long
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::End)) => return Ok(()),
            Ok(Ok(Line::TooLong)) => {
                let reason = format!("a request is at most {MAX_REQUEST} bytes");
                write_answer(&mut write, &error(reason)).await?;
                // Closing with the rest of the line unread would reset the connection and
                // could lose the answer: end our side, then let the peer finish sending (a
                // bounded amount, for a bounded time) before closing.
                write.shutdown().await?;
                let (mut rest, mut sink) = (read.take(DISCARD_LIMIT), tokio::io::sink());
                let _ = tokio::time::timeout(IDLE, tokio::io::copy(&mut rest, &mut sink)).await;
                return Ok(());
            }
            Ok(Ok(Line::Whole(line))) => line,
        };
        let answer: Answer = match serde_json::from_slice::<Value>(&line) {
            Ok(request) if request.is_object() => handle(request).await.into(),
            Ok(_) => error("a request is a JSON object with a \"verb\"").into(),
            Err(e) => error(format!("not a JSON request: {e}")).into(),
        };
        match answer {
            Answer::One(v) => write_answer(&mut write, &v).await?,
            Answer::Stream(first, mut rx) => {
                write_answer(&mut write, &first).await?;
                // Until the source ends or the peer goes: anything it sends, or its close,
                // ends the stream (a subscriber that wants out just hangs up).
                let mut probe = [0u8; 1];
                loop {
                    tokio::select! {
                        v = rx.recv() => match v {
                            Some(v) => write_answer(&mut write, &v).await?,
                            None => return Ok(()),
                        },
                        _ = read.read(&mut probe) => return Ok(()),
                    }
                }
            }
        }
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line, without its newline.
    Whole(Vec<u8>),
    /// More than the bound before a newline; nothing beyond the bound was kept.
    TooLong,
    /// The peer closed (a line it left unfinished is dropped).
    End,
}

/// Reads one line of at most `max` bytes, keeping no more than that in memory.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::End);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (at, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Line::Whole(line));
        }
    }
}

async fn write_answer<W: AsyncWriteExt + Unpin>(w: &mut W, answer: &Value) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(answer).map_err(io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes).await
}

/// Sends `request` to the entity whose control socket is `path` and calls `each` with every
/// line it answers, until the entity ends the stream or `each` returns false.
pub async fn stream(
    path: &Path,
    request: &Value,
    mut each: impl FnMut(Value) -> bool,
) -> Result<(), ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::NotRunning {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    write_answer(&mut write, request).await.map_err(io_err)?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await.map_err(io_err)? {
        match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.is_object() => {
                if !each(v) {
                    return Ok(());
                }
            }
            _ => return Err(ControlError::BadAnswer(path.to_owned())),
        }
    }
    Ok(())
}

/// Sends `request` to the entity whose control socket is `path` and returns its answer.
pub async fn request(path: &Path, request: &Value) -> Result<Value, ControlError> {
    let mut first = None;
    stream(path, request, |v| {
        first = Some(v);
        false
    })
    .await?;
    first.ok_or_else(|| ControlError::BadAnswer(path.to_owned()))
}

#[cfg(test)]
mod tests;
