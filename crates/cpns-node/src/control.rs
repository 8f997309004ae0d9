//! The local control socket of a running entity (a PN GW, a PNE daemon, the server): the
//! typed control API of `cpns-control` (docs/control-api.md), served here, with one handler
//! per role ([`pne`], [`gateway`], [`server`]). On a PNE it is CPNS-5, the local API of the
//! applications on the device (004 §5.3.2.5).
//!
//! A Unix socket beside the entity's store, mode 0600, and more: every connection's peer
//! credentials (`SO_PEERCRED`) are checked, and a process of any other Unix user than the one
//! the entity runs as is refused (`forbidden`) and the connection closed, whatever the file's
//! mode or the directory's. So a request needs no credential of its own. The protocol is one
//! JSON object per line each way (`cpns_control::decode_request`, `encode_answer`): a request
//! names its version and `verb`, the answer has `"ok": true` and the verb's fields, or `"ok":
//! false` and an `error` with a typed `code` and a `reason`. A connection may send several
//! requests, one at a time; a streaming verb's answer is followed by event lines until either
//! side closes.
//!
//! The socket still faces whatever runs as that user, so it is bounded like every listener
//! (docs/design.md §3): a request line is at most [`MAX_REQUEST`] bytes (a longer one is answered with
//! an error and the connection closed), at most [`MAX_CONNECTIONS`] connections are served at
//! once (more wait in the socket's backlog until one ends), and a connection idle for [`IDLE`]
//! is closed. A malformed request is answered with an error and disturbs nothing else.

pub mod events;
pub mod gateway;
pub mod pne;
pub mod server;

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpns_control::{
    ApiError, Event, Line as ApiLine, Request, Response, decode_line, decode_request,
    encode_answer, encode_event, encode_request,
};
use cpns_wire::ErrorCode;
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
/// How long a refused stranger (another Unix user) may go on sending before it is closed.
const STRANGER_LINGER: Duration = Duration::from_secs(1);

/// A verb's answer: one line, or a first line and then one event line per event until either
/// side ends it (a subscription, an event stream).
#[derive(Debug)]
pub enum Answer {
    /// One answer line.
    One(Result<Response, ApiError>),
    /// A first line, then every event the receiver gives; the connection ends with it.
    Stream(Response, tokio::sync::mpsc::Receiver<Event>),
}

impl From<Result<Response, ApiError>> for Answer {
    fn from(r: Result<Response, ApiError>) -> Self {
        Answer::One(r)
    }
}

impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Self {
        Answer::One(Err(e))
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
    /// The entity's answer was not a line of this version of the API.
    #[error("control socket {path}: not an answer of this version of the control API: {why}")]
    BadAnswer {
        /// The socket's path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
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
    /// The Unix user this entity runs as: the only one served.
    owner: u32,
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
        // The socket file was made by this process: its owner is the user it runs as (the
        // effective uid), read without a system call of our own.
        let owner = std::fs::metadata(path).map_err(io_err)?.uid();
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
            owner,
        })
    }

    /// The Unix user (uid) served: the one this entity runs as.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Serves another user than the one this process runs as (the tests' way to be a
    /// stranger without a second account).
    #[cfg(test)]
    fn serving(mut self, owner: u32) -> Self {
        self.owner = owner;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until `stop` turns true or its sender is dropped: a peer of another
    /// Unix user is refused and closed; each request line of the owner's is decoded and given
    /// to `handle`, whose answer is written back as one line (and, for a stream, its events).
    /// Connections being served when it stops finish their current request on their own.
    pub async fn serve<H, F, A>(self, handle: H, mut stop: watch::Receiver<bool>)
    where
        H: Fn(Request) -> F + Clone + Send + 'static,
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
                    let owner = self.owner;
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, owner, handle).await {
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

/// Whom a connection comes from, if not the owner: why it is refused.
fn refusal(stream: &UnixStream, owner: u32) -> Option<ApiError> {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == owner => None,
        Ok(cred) => Some(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this socket serves only the Unix user its entity runs as (uid {owner}), \
                 not uid {}",
                cred.uid()
            ),
        )),
        Err(e) => Some(ApiError::new(
            ErrorCode::Forbidden,
            format!("the peer's credentials cannot be read ({e}): refused"),
        )),
    }
}

async fn serve_connection<H, F, A>(stream: UnixStream, owner: u32, handle: H) -> io::Result<()>
where
    H: Fn(Request) -> F,
    F: Future<Output = A>,
    A: Into<Answer>,
{
    if let Some(refused) = refusal(&stream, owner) {
        debug!(reason = %refused.reason, "control connection refused");
        let (read, mut write) = stream.into_split();
        write_line(&mut write, &encode_answer(&Err(refused))).await?;
        // Briefly: a stranger does not get to hold a connection slot.
        return close_after(read, write, STRANGER_LINGER).await;
    }
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(IDLE, read_line(&mut read, MAX_REQUEST)).await {
            Err(_) => return Ok(()), // silent for too long
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::End)) => return Ok(()),
            Ok(Ok(Line::TooLong)) => {
                let reason = format!("a request is at most {MAX_REQUEST} bytes");
                let refused = ApiError::bad_request(reason);
                write_line(&mut write, &encode_answer(&Err(refused))).await?;
                return close_after(read, write, IDLE).await;
            }
            Ok(Ok(Line::Whole(line))) => line,
        };
        let answer: Answer = match decode_request(&line) {
            Ok(request) => handle(request).await.into(),
            Err(e) => e.into(),
        };
        match answer {
            Answer::One(a) => write_line(&mut write, &encode_answer(&a)).await?,
            Answer::Stream(first, mut rx) => {
                write_line(&mut write, &encode_answer(&Ok(first))).await?;
                // Until the source ends or the peer goes: anything it sends, or its close,
                // ends the stream (a subscriber that wants out just hangs up).
                let mut probe = [0u8; 1];
                loop {
                    tokio::select! {
                        e = rx.recv() => match e {
                            Some(e) => write_line(&mut write, &encode_event(&e)).await?,
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

/// Ends our side after a last answer, then lets the peer finish sending (a bounded amount, for
/// at most `linger`) before closing: closing with bytes unread would reset the connection and
/// could lose the answer.
async fn close_after<R, W>(read: R, mut write: W, linger: Duration) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWriteExt + Unpin,
{
    write.shutdown().await?;
    let (mut rest, mut sink) = (read.take(DISCARD_LIMIT), tokio::io::sink());
    let _ = tokio::time::timeout(linger, tokio::io::copy(&mut rest, &mut sink)).await;
    Ok(())
}

async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, line: &str) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    w.write_all(&bytes).await
}

/// Sends `request` to the entity whose control socket is `path` and calls `each` with every
/// line it answers (its answer, then a stream's events), until the entity ends the stream or
/// `each` returns false.
pub async fn stream(
    path: &Path,
    request: &Request,
    mut each: impl FnMut(ApiLine) -> bool,
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
    write_line(&mut write, &encode_request(request))
        .await
        .map_err(io_err)?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await.map_err(io_err)? {
        let line = decode_line(line.as_bytes()).map_err(|why| ControlError::BadAnswer {
            path: path.to_owned(),
            why,
        })?;
        if !each(line) {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends `request` to the entity whose control socket is `path` and returns its answer: the
/// verb's response, or the entity's typed refusal.
pub async fn call(
    path: &Path,
    request: &Request,
) -> Result<Result<Response, ApiError>, ControlError> {
    let mut first = None;
    stream(path, request, |line| {
        first = Some(line);
        false
    })
    .await?;
    match first {
        Some(ApiLine::Answer(a)) => Ok(a),
        Some(ApiLine::Event(e)) => Err(ControlError::BadAnswer {
            path: path.to_owned(),
            why: format!("an event ({}) before the answer", e.name()),
        }),
        None => Err(ControlError::BadAnswer {
            path: path.to_owned(),
            why: "the entity closed without answering".into(),
        }),
    }
}

/// A [`crate::NodeError`] as the control API tells it: the code a refusal carries, `busy` for
/// an entity that stopped, `internal` for the rest.
pub fn api_error(e: crate::NodeError) -> ApiError {
    match e {
        crate::NodeError::Rejected(body) | crate::NodeError::Refused(body) => body.into(),
        crate::NodeError::Stopped(_) => ApiError::new(ErrorCode::Busy, e.to_string()),
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests;
