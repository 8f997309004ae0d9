//! One framed connection (docs/design.md §3): length-prefixed frames read in place, and whole frames
//! written through a bounded output buffer, all in the connection's own task.
//!
//! Every listener faces an attacker, so each connection is bounded on both sides:
//! - **in**: a frame's length is checked against the connection's current limit before a byte
//!   of it is buffered; the limit starts small ([`PRE_AUTH_MAX_FRAME`]) and is raised with
//!   [`FramedConn::set_max_frame`] once the peer authenticated. Nothing is reserved for a frame
//!   before its bytes arrive beyond what one read needs.
//! - **out**: frames the machine produced wait in one buffer of at most `max_queued` bytes (or
//!   one frame, when a single frame is larger and nothing else waits: a frame the limits allow
//!   can always be sent); a peer that sends requests but does not read the answers fills it,
//!   and [`FramedConn::queue`] then fails with [`FrameError::QueueFull`], on which the
//!   connection is cut off. Its memory cannot grow beyond the bound.
//!
//! An idle connection costs little (issue "sessions that cost less than Mosquitto's"): the
//! stream is not split (no shared lock between a read half and a write half), and both buffers
//! are sized to what is in hand — a read reserves [`READ_CHUNK`] or the rest of the frame being
//! read, whichever is larger — and are released as soon as they are empty, so a connection
//! between messages holds no buffer at all.
//!
//! [`FramedConn::next_frame`] reads the next frame while writing queued bytes out; it is
//! cancel-safe (every byte read or not yet written stays in the connection), so it sits in a
//! `select!` beside timers and commands in the connection's own task.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use cpns_wire::WireError;
use cpns_wire::codec::{LEN_PREFIX, frame_len};
use tokio::io::{AsyncRead, AsyncWrite};

/// The frame limit of a connection whose peer has not authenticated yet: enough for every
/// message before authentication (discovery, PN GW authentication, a PN Setup Request with
/// its join information, connection set-up), far below the full limit.
pub const PRE_AUTH_MAX_FRAME: u32 = 8 * 1024;

/// The default bound of a connection's output buffer.
pub const DEFAULT_MAX_QUEUED: usize = 256 * 1024;

/// The bound of a PAN link's output buffer at the PN GW once its PNE is proven: a delivery's
/// window of chunks in their frames within half of it, so that a target link carrying one is
/// never taken for a peer that does not read (ARCHITECTURE decision 46), with room for what
/// else the link carries. Before the proof a link has [`DEFAULT_MAX_QUEUED`].
pub const PAN_MAX_QUEUED: usize = 1024 * 1024;

/// How long a connection that is closing may take to write out what is queued.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The least one read asks the stream for: most messages fit, and a frame's prefix always does.
pub const READ_CHUNK: usize = 1024;

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

impl FrameDecoder {
    /// A decoder of frames of at most `max` bytes.
    pub fn new(max: u32) -> Self {
        Self { max }
    }

    /// Bytes still missing before the frame at the start of `src` is whole (0 if it is, or if
    /// its prefix is incomplete or bad: the next decode says which).
    fn missing(&self, src: &[u8]) -> usize {
        let Some(prefix) = src.get(..LEN_PREFIX) else {
            return 0;
        };
        let mut bytes = [0u8; LEN_PREFIX];
        bytes.copy_from_slice(prefix);
        frame_len(bytes, self.max).map_or(0, |len| (LEN_PREFIX + len).saturating_sub(src.len()))
    }
}

impl FrameDecoder {
    /// The next whole frame's body at the start of `src`, taken out of it; `None` while the
    /// frame is incomplete; an error for a bad length prefix (before its body is buffered).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
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
}

/// What connections carried, in frames and bytes (length prefixes included), each way: kept
/// across connections by whoever shares it (a PN GW's WAN sessions), read at any time.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Frames received.
    pub frames_in: std::sync::atomic::AtomicU64,
    /// Bytes received.
    pub bytes_in: std::sync::atomic::AtomicU64,
    /// Frames queued to send.
    pub frames_out: std::sync::atomic::AtomicU64,
    /// Bytes queued to send.
    pub bytes_out: std::sync::atomic::AtomicU64,
}

impl Traffic {
    fn add(n: &std::sync::atomic::AtomicU64, by: usize) {
        n.fetch_add(by as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The four counts now: frames and bytes in, frames and bytes out.
    pub fn read(&self) -> [u64; 4] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            self.frames_in.load(Relaxed),
            self.bytes_in.load(Relaxed),
            self.frames_out.load(Relaxed),
            self.bytes_out.load(Relaxed),
        ]
    }
}

/// A framed connection with a bounded output buffer.
pub struct FramedConn<S> {
    stream: S,
    decoder: FrameDecoder,
    read: BytesMut,
    write: BytesMut,
    max_queued: usize,
    /// Where what it carries is counted, if anywhere.
    traffic: Option<std::sync::Arc<Traffic>>,
}

impl<S> core::fmt::Debug for FramedConn<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FramedConn")
            .field("max_frame", &self.decoder.max)
            .field("queued", &self.write.len())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedConn<S> {
    /// A connection accepting frames of at most `max_frame` bytes and queueing at most
    /// `max_queued` bytes for the peer. Nothing is allocated until bytes move.
    pub fn new(stream: S, max_frame: u32, max_queued: usize) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(max_frame),
            read: BytesMut::new(),
            write: BytesMut::new(),
            max_queued,
            traffic: None,
        }
    }

    /// Counts what the connection carries into `traffic` from now on.
    #[must_use]
    pub fn counting(mut self, traffic: std::sync::Arc<Traffic>) -> Self {
        self.traffic = Some(traffic);
        self
    }

    /// The largest frame accepted now.
    pub fn max_frame(&self) -> u32 {
        self.decoder.max
    }

    /// Changes the largest frame accepted (raised once the peer authenticated).
    pub fn set_max_frame(&mut self, max: u32) {
        self.decoder.max = max;
    }

    /// Changes the bound of what may wait for the peer (raised once the peer is proven).
    pub fn set_max_queued(&mut self, max: usize) {
        self.max_queued = max;
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.write.len()
    }

    /// Bytes of memory the connection's own buffers hold now (not the stream's).
    pub fn buffered_capacity(&self) -> usize {
        self.read.capacity() + self.write.capacity()
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
        self.write.extend_from_slice(frame);
        if let Some(t) = &self.traffic {
            Traffic::add(&t.frames_out, 1);
            Traffic::add(&t.bytes_out, frame.len());
        }
        Ok(())
    }

    /// The next frame's body, writing queued bytes out meanwhile. Cancel-safe: a frame half
    /// read stays in the buffer, and so do bytes not yet written.
    pub async fn next_frame(&mut self) -> Result<BytesMut, FrameError> {
        poll_fn(|cx| self.poll_next_frame(cx)).await
    }

    /// The next frame, as [`FramedConn::next_frame`]; or, with `drain_to`, nothing once what is
    /// queued for the peer went down to that many bytes. A driver that stops taking the work
    /// that writes to this peer while too much waits for it (backpressure, not a cut-off)
    /// learns here when to take it again; what is queued goes out meanwhile.
    pub async fn next_frame_or_drained(
        &mut self,
        drain_to: Option<usize>,
    ) -> Option<Result<BytesMut, FrameError>> {
        poll_fn(|cx| {
            if let Poll::Ready(frame) = self.poll_next_frame(cx) {
                return Poll::Ready(Some(frame));
            }
            match drain_to {
                Some(bound) if self.queued() <= bound => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await
    }

    /// Writes out as much of what is queued as the stream takes now, without waiting for it to
    /// take more; the rest goes out as [`FramedConn::next_frame`] or [`FramedConn::flush`] runs.
    /// A driver calls this before it awaits its store, so that an answer already made is not
    /// held back by the work that follows it (`cpns-bench establish`: the answer to a PN
    /// registration waited for the commit of its kept copy).
    pub fn write_now(&mut self) -> Result<(), FrameError> {
        if self.write.is_empty() {
            return Ok(());
        }
        // Polled once; a stream that cannot take everything keeps the rest queued, and the
        // next poll with a real waker registers interest again.
        match self.poll_write_out(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    /// Writes everything queued out.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        poll_fn(|cx| self.poll_write_out(cx)).await
    }

    /// Writes out what is queued (for at most [`CLOSE_GRACE`]: a peer that does not read is not
    /// waited for) and closes the stream. Takes the connection by reference, so that closing
    /// does not copy it into another future.
    pub async fn close(&mut self) {
        self.close_within(CLOSE_GRACE).await;
    }

    /// [`FramedConn::close`] with another grace period.
    pub async fn close_within(&mut self, grace: Duration) {
        let _ = tokio::time::timeout(grace, async {
            self.flush().await?;
            poll_fn(|cx| Pin::new(&mut self.stream).poll_shutdown(cx)).await?;
            Ok::<_, FrameError>(())
        })
        .await;
    }

    fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<BytesMut, FrameError>> {
        // Queued bytes go out as the stream takes them; reading does not wait on the peer
        // taking them.
        if !self.write.is_empty()
            && let Poll::Ready(Err(e)) = self.poll_write_out(cx)
        {
            return Poll::Ready(Err(e));
        }
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read)? {
                if let Some(t) = &self.traffic {
                    Traffic::add(&t.frames_in, 1);
                    Traffic::add(&t.bytes_in, LEN_PREFIX + frame.len());
                }
                if self.read.is_empty() {
                    // The frame keeps what it uses; nothing else is held between messages.
                    self.read = BytesMut::new();
                }
                return Poll::Ready(Ok(frame));
            }
            if self.read.is_empty() {
                // Between frames nothing is reserved while the peer is silent: the read lands
                // on the stack and only what arrived is kept.
                let mut chunk = [0u8; READ_CHUNK];
                let mut buf = tokio::io::ReadBuf::new(&mut chunk);
                match ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf)) {
                    Ok(()) if buf.filled().is_empty() => {
                        return Poll::Ready(Err(FrameError::Closed));
                    }
                    Ok(()) => self.read.extend_from_slice(buf.filled()),
                    // A TLS peer that went away without close_notify, between frames: it closed.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Poll::Ready(Err(FrameError::Closed));
                    }
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
                continue;
            }
            let want = self.decoder.missing(&self.read).max(READ_CHUNK);
            self.read.reserve(want);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.stream),
                cx,
                &mut self.read
            ));
            match read {
                Ok(0) => return Poll::Ready(Err(FrameError::Truncated)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FrameError>> {
        while !self.write.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.write))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.write.advance(n);
        }
        self.write = BytesMut::new();
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        Poll::Ready(Ok(()))
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

    /// `write_now` hands queued frames to the stream at once, without `next_frame` or `flush`
    /// being awaited; what the stream cannot take stays queued and goes out later, in order.
    #[tokio::test]
    async fn write_now_sends_what_the_stream_takes_and_keeps_the_rest() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, 1000);
        conn.write_now().unwrap(); // nothing queued: nothing to do
        conn.queue(&frame(b"answer")).unwrap();
        conn.write_now().unwrap();
        assert_eq!(conn.queued(), 0);
        let mut got = [0u8; 10];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..], &frame(b"answer")[..]);

        // A stream that takes 8 bytes: the rest waits, and a flush later delivers all of it.
        let (a, mut b) = tokio::io::duplex(8);
        let mut conn = FramedConn::new(a, 100, 1000);
        let body = [7u8; 40];
        conn.queue(&frame(&body)).unwrap();
        conn.write_now().unwrap();
        assert_eq!(conn.queued(), 44 - 8);
        let reader = tokio::spawn(async move {
            let mut all = vec![0u8; 44];
            b.read_exact(&mut all).await.unwrap();
            all
        });
        conn.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), frame(&body));
    }

    /// A stream that fails while `write_now` writes reports its error.
    #[tokio::test]
    async fn write_now_reports_a_broken_stream() {
        let (a, b) = tokio::io::duplex(64);
        drop(b);
        let mut conn = FramedConn::new(a, 100, 1000);
        conn.queue(&frame(b"lost")).unwrap();
        assert!(matches!(conn.write_now(), Err(FrameError::Io(_))));
    }

    #[tokio::test]
    async fn what_a_connection_carries_is_counted_both_ways_across_connections() {
        let traffic = std::sync::Arc::new(Traffic::default());
        for _ in 0..2 {
            let (a, mut b) = tokio::io::duplex(256);
            let mut conn = FramedConn::new(a, 100, 1000).counting(traffic.clone());
            conn.queue(&frame(b"hello")).unwrap();
            conn.flush().await.unwrap();
            b.write_all(&frame(b"answer!")).await.unwrap();
            assert_eq!(&conn.next_frame().await.unwrap()[..], b"answer!");
        }
        // Two connections: each a frame of 4 + 5 bytes out and of 4 + 7 bytes in.
        assert_eq!(traffic.read(), [2, 22, 2, 18]);
        // A connection not counting leaves it as it was.
        let (a, _b) = tokio::io::duplex(256);
        let mut quiet = FramedConn::new(a, 100, 1000);
        quiet.queue(&frame(b"x")).unwrap();
        assert_eq!(traffic.read(), [2, 22, 2, 18]);
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

    /// Backpressure: with a bound to drain to, the call ends (with nothing) once the peer read
    /// enough of what was queued, and not before; a frame that comes first is given.
    #[tokio::test]
    async fn a_driver_learns_when_what_it_queued_drained() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, 1000);
        conn.queue(&[7; 300]).unwrap();
        // The peer reads nothing yet: 300 bytes wait, more than 100.
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            conn.next_frame_or_drained(Some(100)),
        )
        .await;
        assert!(waited.is_err(), "ended before the peer read anything");
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 300];
            b.read_exact(&mut got).await.unwrap();
            b
        });
        assert!(conn.next_frame_or_drained(Some(100)).await.is_none());
        assert!(conn.queued() <= 100);
        conn.flush().await.unwrap();
        let mut b = reader.await.unwrap();
        // A frame from the peer comes first, with or without a bound.
        use tokio::io::AsyncWriteExt;
        b.write_all(&frame(b"hi")).await.unwrap();
        let got = conn.next_frame_or_drained(Some(1000)).await;
        assert!(
            matches!(got, Some(Ok(ref f)) if f[..] == b"hi"[..]),
            "{got:?}"
        );
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

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut conn = FramedConn::new(a, 3000, 10_000);
        assert_eq!(conn.buffered_capacity(), 0, "nothing before bytes move");
        b.write_all(&frame(&[5; 2500])).await.unwrap();
        let got = conn.next_frame().await.unwrap();
        assert_eq!(got.len(), 2500);
        assert_eq!(
            conn.buffered_capacity(),
            0,
            "read buffer released with the frame"
        );
        conn.queue(&frame(b"answer")).unwrap();
        assert!(conn.buffered_capacity() > 0);
        conn.flush().await.unwrap();
        assert_eq!(
            conn.buffered_capacity(),
            0,
            "write buffer released once written"
        );
        let mut echoed = [0u8; 10];
        b.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed[4..], b"answer");
    }

    #[tokio::test]
    async fn a_read_asks_for_the_rest_of_the_frame_not_more() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut conn = FramedConn::new(a, 40_000, 1000);
        let big = frame(&[1; 30_000]);
        b.write_all(&big[..100]).await.unwrap();
        // Only the first bytes arrived: the buffer is sized to the frame they announce.
        // One poll reads what is there and finds the frame incomplete.
        let pending = futures_util::FutureExt::now_or_never(conn.next_frame());
        assert!(pending.is_none(), "the frame is not whole yet");
        let cap = conn.buffered_capacity();
        assert!(
            (30_004..30_004 + 2 * READ_CHUNK).contains(&cap),
            "capacity {cap}"
        );
        b.write_all(&big[100..]).await.unwrap();
        assert_eq!(conn.next_frame().await.unwrap().len(), 30_000);
    }

    /// A stream that yields `bytes`, then fails with `end` (as a TLS peer gone without
    /// close_notify does with `UnexpectedEof`).
    struct AbruptEnd {
        bytes: Vec<u8>,
        end: io::ErrorKind,
    }

    impl AsyncRead for AbruptEnd {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.bytes.is_empty() {
                return Poll::Ready(Err(self.end.into()));
            }
            let n = self.bytes.len().min(buf.remaining());
            buf.put_slice(&self.bytes[..n]);
            self.bytes.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for AbruptEnd {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_peer_gone_without_close_notify_between_frames_closed_inside_one_failed() {
        let mut conn = FramedConn::new(
            AbruptEnd {
                bytes: frame(b"last"),
                end: io::ErrorKind::UnexpectedEof,
            },
            100,
            1000,
        );
        assert_eq!(&conn.next_frame().await.unwrap()[..], b"last");
        assert!(matches!(conn.next_frame().await, Err(FrameError::Closed)));
        let mut conn = FramedConn::new(
            AbruptEnd {
                bytes: frame(b"cut")[..5].to_vec(),
                end: io::ErrorKind::UnexpectedEof,
            },
            100,
            1000,
        );
        assert!(
            matches!(conn.next_frame().await, Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
    }

    #[tokio::test]
    async fn the_default_bound_holds_a_burst_of_full_frames_and_no_more() {
        // A peer that has not read yet: 256 KiB of answers wait for it, the next frame beyond
        // is refused.
        let (a, _b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 100, DEFAULT_MAX_QUEUED);
        let frame = vec![7u8; 16 * 1024];
        for _ in 0..16 {
            conn.queue(&frame).unwrap();
        }
        assert_eq!(conn.queued(), 256 * 1024);
        assert!(matches!(
            conn.queue(&[1]),
            Err(FrameError::QueueFull(DEFAULT_MAX_QUEUED))
        ));
    }

    /// A delivery's window of sealed chunks, each in its frame, fits in half a proven PAN
    /// link's bound: a link carrying one at once is not taken for a peer that does not read
    /// (ARCHITECTURE decision 46), and what else it carries has the other half.
    #[test]
    fn the_bound_holds_a_delivery_window_in_frames() {
        let window = cpns_proto::server::delivery::WINDOW as usize;
        let chunks = window.div_ceil(cpns_proto::server::delivery::CHUNK as usize);
        // Per chunk: the seal, the envelope around it, the frame's prefix and seal.
        let framed = window + chunks * (cpns_crypto::CHUNK_OVERHEAD + 256);
        assert!(framed <= PAN_MAX_QUEUED / 2, "{framed} bytes");
    }

    /// A raised bound takes what the old one refused, and a lowered one refuses it again.
    #[tokio::test]
    async fn the_bound_can_be_raised_once_the_peer_is_proven() {
        let (a, _b) = tokio::io::duplex(16);
        let mut conn = FramedConn::new(a, 100, 10);
        conn.queue(&frame(b"0123456")).unwrap();
        assert!(matches!(
            conn.queue(&frame(b"0123456")),
            Err(FrameError::QueueFull(10))
        ));
        conn.set_max_queued(30);
        conn.queue(&frame(b"0123456")).unwrap();
        assert_eq!(conn.queued(), 22);
        conn.set_max_queued(25);
        assert!(matches!(
            conn.queue(&frame(b"0123456")),
            Err(FrameError::QueueFull(25))
        ));
    }

    #[tokio::test]
    async fn before_authentication_8_kib_frames_pass_and_no_larger() {
        let (a, mut b) = tokio::io::duplex(32 * 1024);
        let mut conn = FramedConn::new(a, PRE_AUTH_MAX_FRAME, 1000);
        b.write_all(&frame(&vec![3; 8 * 1024])).await.unwrap();
        assert_eq!(conn.next_frame().await.unwrap().len(), 8 * 1024);
        b.write_all(&(8 * 1024 + 1_u32).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            conn.next_frame().await,
            Err(FrameError::BadLength(WireError::FrameTooLarge { .. }))
        ));
    }

    #[test]
    fn debug_shows_the_limit_and_what_is_queued_only() {
        let (a, _b) = tokio::io::duplex(64);
        let mut conn = FramedConn::new(a, 77, 1000);
        conn.queue(b"12345").unwrap();
        let text = format!("{conn:?}");
        assert!(
            text.contains("max_frame: 77") && text.contains("queued: 5"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn any_other_error_between_frames_is_an_error_not_a_close() {
        let reset = io::ErrorKind::ConnectionReset;
        let mut conn = FramedConn::new(
            AbruptEnd {
                bytes: frame(b"x"),
                end: reset,
            },
            100,
            1000,
        );
        assert_eq!(&conn.next_frame().await.unwrap()[..], b"x");
        assert!(matches!(
            conn.next_frame().await,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset
        ));
    }
}
