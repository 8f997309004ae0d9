//! One framed connection (DESIGN §3): length-prefixed frames read in place by a cancel-safe
//! decoder, and whole frames written through a bounded output buffer.
//!
//! Every listener faces an attacker, so each connection is bounded on both sides:
//! - **in**: a frame's length is checked against the connection's current limit before a byte
//!   of it is buffered; the limit starts small ([`PRE_AUTH_MAX_FRAME`]) and is raised with
//!   [`FramedConn::set_max_frame`] once the peer authenticated. Nothing is reserved for a frame
//!   up front: the read buffer grows only with bytes that actually arrived.
//! - **out**: frames the machine produced wait in one buffer of at most `max_queued` bytes (or
//!   one frame, when a single frame is larger and nothing else waits: a frame the limits allow
//!   can always be sent); a peer that sends requests but does not read the answers fills it,
//!   and [`FramedConn::queue`] then fails with [`FrameError::QueueFull`], on which the
//!   connection is cut off. Its memory cannot grow beyond the bound.
//!
//! [`FramedConn::next_frame`] reads the next frame while writing queued bytes out; it is
//! cancel-safe, so it sits in a `select!` beside timers and commands in the connection's own
//! task (no reader task and channel per connection).

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use cpns_wire::WireError;
use cpns_wire::codec::{LEN_PREFIX, frame_len};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// The frame limit of a connection whose peer has not authenticated yet: enough for every
/// message before authentication (discovery, PN GW authentication, a PN Setup Request with
/// its join information, connection set-up), far below the full limit.
pub const PRE_AUTH_MAX_FRAME: u32 = 8 * 1024;

/// The default bound of a connection's output buffer.
pub const DEFAULT_MAX_QUEUED: usize = 256 * 1024;

/// How long a connection that is closing may take to write out what is queued.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Read buffer capacity at first; it grows with what arrives.
const INITIAL_READ: usize = 512;

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the stream between frames.
    #[error("closed")]
    Closed,
    /// The stream ended inside a frame.
    #[error("truncated frame")]
    Truncated,
    /// The length prefix is over the connection's limit, or zero.
    #[error("bad frame length: {0}")]
    BadLength(WireError),
    /// The peer does not read what is sent to it: its output buffer is full.
    #[error("the peer does not read its answers (output buffer of {0} bytes full)")]
    QueueFull(usize),
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Splits a byte stream into frames: a u32 big-endian length (checked against `max`), then the
/// frame body.
#[derive(Debug)]
pub struct FrameDecoder {
    max: u32,
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(prefix) = src.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let mut bytes = [0u8; LEN_PREFIX];
        bytes.copy_from_slice(prefix);
        let len = frame_len(bytes, self.max).map_err(FrameError::BadLength)?;
        if src.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

/// Writes whole frames (length prefix included, as the machines make them) as they are.
#[derive(Debug)]
struct WholeFrames;

impl Encoder<&[u8]> for WholeFrames {
    type Error = FrameError;

    fn encode(&mut self, frame: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(frame);
        Ok(())
    }
}

/// A framed connection with a bounded output buffer.
pub struct FramedConn<S> {
    reader: FramedRead<ReadHalf<S>, FrameDecoder>,
    writer: FramedWrite<WriteHalf<S>, WholeFrames>,
    max_queued: usize,
}

impl<S> core::fmt::Debug for FramedConn<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FramedConn")
            .field("max_frame", &self.reader.decoder().max)
            .field("queued", &self.writer.write_buffer().len())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite> FramedConn<S> {
    /// A connection accepting frames of at most `max_frame` bytes and queueing at most
    /// `max_queued` bytes for the peer.
    pub fn new(stream: S, max_frame: u32, max_queued: usize) -> Self {
        let (rd, wr) = tokio::io::split(stream);
        Self {
            reader: FramedRead::with_capacity(rd, FrameDecoder { max: max_frame }, INITIAL_READ),
            writer: FramedWrite::new(wr, WholeFrames),
            max_queued,
        }
    }

    /// The largest frame accepted now.
    pub fn max_frame(&self) -> u32 {
        self.reader.decoder().max
    }

    /// Changes the largest frame accepted (raised once the peer authenticated).
    pub fn set_max_frame(&mut self, max: u32) {
        self.reader.decoder_mut().max = max;
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.writer.write_buffer().len()
    }

    /// Queues a whole frame for the peer. [`FrameError::QueueFull`] when the peer has left more
    /// than the bound unread: the caller cuts the connection off. A frame larger than the bound
    /// is taken when nothing else waits (its size is bounded by the frame limits, and refusing
    /// it would cut off a peer that reads everything).
    pub fn queue(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        let queued = self.queued();
        if queued > 0 && queued + frame.len() > self.max_queued {
            return Err(FrameError::QueueFull(self.max_queued));
        }
        self.writer.write_buffer_mut().extend_from_slice(frame);
        Ok(())
    }

    /// The next frame's body, writing queued bytes out meanwhile. Cancel-safe: a frame half
    /// read stays in the buffer, and so do bytes not yet written.
    pub async fn next_frame(&mut self) -> Result<BytesMut, FrameError> {
        loop {
            let writing = !self.writer.write_buffer().is_empty();
            tokio::select! {
                read = self.reader.next() => return match read {
                    Some(r) => r,
                    None => Err(FrameError::Closed),
                },
                flushed = self.writer.flush(), if writing => flushed?,
            }
        }
    }

    /// Writes everything queued out.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.writer.flush().await
    }

    /// Writes out what is queued (for at most [`CLOSE_GRACE`]: a peer that does not read is not
    /// waited for) and closes the stream.
    pub async fn close(self) {
        self.close_within(CLOSE_GRACE).await;
    }

    /// [`FramedConn::close`] with another grace period.
    pub async fn close_within(mut self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.writer.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[tokio::test]
    async fn frames_in_pieces_and_back_to_back() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, 1000);
        let mut bytes = frame(b"hello");
        bytes.extend(frame(b"world!"));
        for chunk in bytes.chunks(3) {
            b.write_all(chunk).await.unwrap();
        }
        assert_eq!(&conn.next_frame().await.unwrap()[..], b"hello");
        assert_eq!(&conn.next_frame().await.unwrap()[..], b"world!");
        drop(b);
        assert!(matches!(conn.next_frame().await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn over_the_limit_or_empty_is_refused_before_the_body() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 16, 1000);
        // Only the prefix is sent: the refusal does not wait for (or buffer) the body.
        b.write_all(&17u32.to_be_bytes()).await.unwrap();
        let err = conn.next_frame().await.unwrap_err();
        assert!(matches!(
            err,
            FrameError::BadLength(WireError::FrameTooLarge { len: 17, max: 16 })
        ));
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 16, 1000);
        b.write_all(&0u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            conn.next_frame().await,
            Err(FrameError::BadLength(WireError::EmptyFrame))
        ));
    }

    #[tokio::test]
    async fn the_limit_can_be_raised() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut conn = FramedConn::new(a, 16, 1000);
        assert_eq!(conn.max_frame(), 16);
        conn.set_max_frame(2000);
        b.write_all(&frame(&[7; 1500])).await.unwrap();
        assert_eq!(conn.next_frame().await.unwrap().len(), 1500);
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_truncated() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, 1000);
        b.write_all(&frame(b"abcdef")[..7]).await.unwrap();
        drop(b);
        assert!(matches!(
            conn.next_frame().await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test]
    async fn queued_frames_go_out_while_reading() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, 1000);
        conn.queue(&frame(b"ping")).unwrap();
        assert_eq!(conn.queued(), 8);
        let peer = tokio::spawn(async move {
            let mut got = [0u8; 8];
            b.read_exact(&mut got).await.unwrap();
            b.write_all(&frame(b"pong")).await.unwrap();
            got
        });
        assert_eq!(&conn.next_frame().await.unwrap()[..], b"pong");
        assert_eq!(peer.await.unwrap(), frame(b"ping")[..]);
        assert_eq!(conn.queued(), 0);
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_fills_the_bound() {
        // The peer's pipe holds 64 bytes and it never reads.
        let (a, _b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, 100);
        conn.queue(&[1; 60]).unwrap();
        conn.queue(&[2; 40]).unwrap();
        let err = conn.queue(&[3; 1]).unwrap_err();
        assert!(matches!(err, FrameError::QueueFull(100)));
        assert_eq!(conn.queued(), 100, "a refused frame is not queued");
        // Closing gives up on a peer that does not read instead of hanging.
        conn.close_within(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn one_frame_larger_than_the_bound_goes_out_when_nothing_waits() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, 100);
        let big = frame(&[9; 300]);
        conn.queue(&big).unwrap();
        assert!(matches!(
            conn.queue(&[1; 1]),
            Err(FrameError::QueueFull(100))
        ));
        let peer = tokio::spawn(async move {
            let mut got = vec![0u8; 304];
            b.read_exact(&mut got).await.unwrap();
            got
        });
        conn.flush().await.unwrap();
        assert_eq!(peer.await.unwrap(), big);
        assert_eq!(conn.queued(), 0);
        conn.queue(&big).unwrap();
    }
}
