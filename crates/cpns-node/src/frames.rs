//! Reading and writing length-prefixed frames on a byte stream (DESIGN §3): a u32 big-endian
//! length, then that many bytes. A length over the limit is refused before anything is read
//! or allocated for it.

use std::io;

use cpns_wire::codec::{LEN_PREFIX, frame_len};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the stream between frames.
    #[error("closed")]
    Closed,
    /// The stream ended inside a frame.
    #[error("truncated frame")]
    Truncated,
    /// The length prefix is over the limit or zero.
    #[error("bad frame length: {0}")]
    BadLength(cpns_wire::WireError),
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Reads frames from one stream, reusing one buffer.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max: u32,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames of at most `max` bytes from `inner`.
    pub fn new(inner: R, max: u32) -> Self {
        Self {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// The next frame's body (without its length prefix). Not cancel-safe: the runtimes read
    /// each stream in a task of its own.
    pub async fn next(&mut self) -> Result<&[u8], FrameError> {
        let mut prefix = [0u8; LEN_PREFIX];
        let mut got = 0;
        while got < LEN_PREFIX {
            match self.inner.read(&mut prefix[got..]).await? {
                0 if got == 0 => return Err(FrameError::Closed),
                0 => return Err(FrameError::Truncated),
                n => got += n,
            }
        }
        let len = frame_len(prefix, self.max).map_err(FrameError::BadLength)?;
        self.buf.clear();
        self.buf.resize(len, 0);
        match self.inner.read_exact(&mut self.buf).await {
            Ok(_) => Ok(&self.buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes one whole frame (length prefix included, as the machines produce them).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}
