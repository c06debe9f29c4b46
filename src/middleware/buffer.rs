//! Collects a streamed body into one contiguous buffer, never past a limit.
//!
//! A frame that would cross the limit is not buffered. The body is then read on and thrown
//! away, never copied, until it ends or for at most the discard time (5 s by default), and only
//! then is the 413 answered. A client that sends its whole body before it reads the answer
//! (Python's `http.client`, Node's `http`, many SDKs) would otherwise find its connection reset
//! and never see the 413: a server that closes a socket with bytes unread makes the kernel send
//! a reset, which destroys the answer still in flight or unread at the client (RFC 9112 section
//! 9.6 asks servers to close in stages for that reason). A budget in bytes (one more limit's
//! worth, as before) still reset every client that sent 4 or 16 MiB against the 1 MiB default;
//! time is what bounds the cost, as nginx's `lingering_time` bounds its lingering close.
//!
//! The time is checked as each frame arrives, so a client that keeps sending gets its 413 once
//! the time is up, and hyper then closes the connection with the rest unread. A client that
//! stops sending altogether holds the request as a stalled body under the limit does: that is
//! the server's time-out to end (see the crate's README), not the layer's, which owns no timer.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use http_body::Body;

use crate::rejection::{Rejection, RejectionKind};

/// The error type of the bodies the layer accepts, as http-body-util's adapters need it.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads `body` into `buffer` until it ends, or answers why it cannot.
pub(super) fn poll_collect<B>(
    mut body: Pin<&mut B>,
    buffer: &mut Buffer,
    cx: &mut Context<'_>,
) -> Poll<Result<Bytes, Rejection>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    loop {
        match ready!(body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                // Trailers carry nothing that is signed.
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                let len = data.remaining();
                if let Some(until) = buffer.discarding {
                    // Over the limit: thrown away (never copied), until the time is up.
                    if Instant::now() >= until {
                        return Poll::Ready(Err(too_large(buffer.limit)));
                    }
                } else if buffer.len.saturating_add(len) > buffer.limit {
                    buffer.discard_the_rest();
                } else {
                    buffer.push(data.copy_to_bytes(len));
                }
            }
            Some(Err(_)) if buffer.discarding.is_some() => {
                return Poll::Ready(Err(too_large(buffer.limit)));
            }
            Some(Err(err)) => {
                let err: BoxError = err.into();
                tracing::debug!(error = %err, "the request body failed mid-read");
                return Poll::Ready(Err(Rejection::new(RejectionKind::BodyReadFailed)));
            }
            None if buffer.discarding.is_some() => {
                return Poll::Ready(Err(too_large(buffer.limit)));
            }
            None => return Poll::Ready(Ok(std::mem::take(buffer).finish())),
        }
    }
}

/// The 413 for a body over `limit` bytes.
pub(super) fn too_large(limit: usize) -> Rejection {
    Rejection::new(RejectionKind::PayloadTooLarge)
        .with_detail(format!("at most {limit} bytes are accepted"))
}

/// How far past the bytes received the buffer may reserve. A peer that announces a large body
/// and sends little gets little: memory follows the bytes that arrived, not the bytes
/// announced (500 connections announcing 1 MiB and sending a few bytes each would otherwise
/// hold 500 MiB).
const RESERVE_AHEAD: usize = 64 * 1024;

/// A body being collected.
///
/// A body that arrives in one chunk (the common case) is kept as that chunk, with no copy. A
/// body in several chunks is copied into a buffer that grows geometrically with the bytes
/// received, at most [`RESERVE_AHEAD`] past them at first, never past the `Content-Length`
/// when known, nor past the limit.
#[derive(Debug, Default)]
pub(super) struct Buffer {
    first: Option<Bytes>,
    rest: Vec<u8>,
    len: usize,
    expected: usize,
    limit: usize,
    /// How long the rest of a body over the limit is read and thrown away.
    discard_time: Duration,
    /// Over the limit: until when the rest is read and thrown away.
    discarding: Option<Instant>,
}

impl Buffer {
    /// A buffer for a body that announces `expected` bytes (0 if unknown), to hold at most
    /// `limit`, and to throw away for `discard_time` the rest of a body over it. A body that
    /// announces more than the limit is read only to be thrown away, and answered 413.
    pub(super) fn new(expected: usize, limit: usize, discard_time: Duration) -> Self {
        let mut buffer = Self {
            expected: expected.min(limit),
            limit,
            discard_time,
            ..Self::default()
        };
        if expected > limit {
            buffer.discard_the_rest();
        }
        buffer
    }

    /// Drops what was kept, and throws away what comes for the discard time from now.
    fn discard_the_rest(&mut self) {
        // A time too long to add to the clock (`Duration::MAX`) is read as a century.
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
        let now = Instant::now();
        let until = now.checked_add(self.discard_time.min(CENTURY));
        *self = Self {
            limit: self.limit,
            discarding: Some(until.unwrap_or(now)),
            ..Self::default()
        };
    }

    /// Appends a chunk.
    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        // `poll_collect` has checked the sum against the limit; saturate rather than trust it.
        let len = self.len.saturating_add(chunk.len());
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
        } else {
            if self.rest.capacity() < len {
                let ceiling = if self.expected > 0 {
                    self.expected
                } else {
                    self.limit
                };
                let ahead = self
                    .rest
                    .capacity()
                    .saturating_mul(2)
                    .max(len.saturating_add(RESERVE_AHEAD));
                let target = len.max(ahead.min(ceiling));
                self.rest.reserve_exact(target - self.rest.len());
            }
            if let Some(first) = self.first.take() {
                self.rest.extend_from_slice(&first);
            }
            self.rest.extend_from_slice(&chunk);
        }
        self.len = len;
    }

    /// The whole body.
    fn finish(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => Bytes::from(self.rest),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::StreamBody;

    use super::*;

    /// The default discard time: no test here comes near it.
    const DISCARD: Duration = Duration::from_secs(5);

    #[test]
    fn single_chunk_is_kept_without_copy() {
        let chunk = Bytes::from_static(b"hello");
        let mut buffer = Buffer::new(5, 5, DISCARD);
        buffer.push(chunk.clone());
        let body = buffer.finish();
        assert_eq!(body.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let mut buffer = Buffer::new(0, 5, DISCARD);
        for part in ["ab", "", "cd", "e"] {
            buffer.push(Bytes::from(part));
        }
        assert_eq!(buffer.finish(), "abcde");
    }

    #[test]
    fn capacity_never_exceeds_the_limit() {
        let limit = 1000;
        let mut buffer = Buffer::new(0, limit, DISCARD);
        for _ in 0..100 {
            buffer.push(Bytes::from_static(b"0123456789"));
            assert!(buffer.rest.capacity() <= limit);
        }
        assert_eq!(buffer.finish().len(), limit);
    }

    #[test]
    fn a_small_announced_length_sizes_the_buffer_once() {
        let mut buffer = Buffer::new(300, 1000, DISCARD);
        buffer.push(Bytes::from(vec![1; 100]));
        buffer.push(Bytes::from(vec![2; 100]));
        let capacity = buffer.rest.capacity();
        buffer.push(Bytes::from(vec![3; 100]));
        assert_eq!(buffer.rest.capacity(), capacity);
        assert_eq!(capacity, 300);
    }

    #[test]
    fn memory_follows_the_bytes_received_not_the_bytes_announced() {
        let mib = 1024 * 1024;
        let mut buffer = Buffer::new(mib, mib, DISCARD);
        buffer.push(Bytes::from_static(b"{\"event\":"));
        buffer.push(Bytes::from_static(b"\"call."));
        assert!(
            buffer.rest.capacity() <= RESERVE_AHEAD + 64,
            "{}",
            buffer.rest.capacity()
        );
        // As bytes arrive it grows, at most twice what arrived (or the first step), up to the
        // announced length.
        let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
        while buffer.len + chunk.len() <= mib {
            buffer.push(chunk.clone());
            let bound = (2 * buffer.len).max(buffer.len + RESERVE_AHEAD).min(mib);
            assert!(
                buffer.rest.capacity() <= bound,
                "{} for {}",
                buffer.rest.capacity(),
                buffer.len
            );
        }
        assert!(buffer.rest.capacity() <= mib);
    }

    /// Collects `chunks` as the layer does, and says how many of them it read.
    fn collect_within(
        chunks: &[&'static [u8]],
        limit: usize,
        discard_time: Duration,
    ) -> (Result<Bytes, RejectionKind>, usize) {
        let read = std::cell::Cell::new(0);
        let frames = chunks.iter().map(|chunk| {
            read.set(read.get() + 1);
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(chunk)))
        });
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let mut body = std::pin::pin!(body);
        let mut buffer = Buffer::new(0, limit, discard_time);
        let waker = std::task::Waker::noop();
        let result = match poll_collect(body.as_mut(), &mut buffer, &mut Context::from_waker(waker))
        {
            Poll::Ready(result) => result.map_err(|rejection| rejection.kind()),
            Poll::Pending => panic!("an in-memory body is never pending"),
        };
        (result, read.get())
    }

    fn collect(chunks: &[&'static [u8]], limit: usize) -> Result<Bytes, RejectionKind> {
        collect_within(chunks, limit, DISCARD).0
    }

    #[test]
    fn past_the_limit_the_rest_is_thrown_away_until_it_ends_or_the_time_is_up() {
        // Far over a limit of 5: refused, and all of it read first, so a client that sends
        // everything before reading sees the 413.
        let body: &[&'static [u8]] = &[b"0123456789".as_slice(); 1000];
        assert_eq!(
            collect_within(body, 5, DISCARD),
            (Err(RejectionKind::PayloadTooLarge), 1000)
        );
        // With no time to throw bytes away, the first frame past the crossing one answers.
        assert_eq!(
            collect_within(body, 5, Duration::ZERO),
            (Err(RejectionKind::PayloadTooLarge), 2)
        );
        let mut buffer = Buffer::new(0, 5, DISCARD);
        buffer.push(Bytes::from_static(b"12"));
        buffer.push(Bytes::from_static(b"34"));
        buffer.discard_the_rest();
        assert_eq!((buffer.len, buffer.rest.capacity()), (0, 0), "nothing kept");
        // A body that announces more than the limit is read only to be thrown away.
        assert!(Buffer::new(8, 5, DISCARD).discarding.is_some());
        assert!(Buffer::new(5, 5, DISCARD).discarding.is_none());
        // A time too long to add to the clock still makes a deadline.
        assert!(Buffer::new(8, 5, Duration::MAX).discarding.is_some());
    }

    #[test]
    fn limit_is_enforced_before_buffering_past_it() {
        assert_eq!(collect(&[b"1234", b"5"], 5).unwrap(), "12345");
        assert_eq!(
            collect(&[b"1234", b"56"], 5),
            Err(RejectionKind::PayloadTooLarge)
        );
        assert_eq!(
            collect(&[b"123456"], 5),
            Err(RejectionKind::PayloadTooLarge)
        );
        assert_eq!(collect(&[], 5).unwrap(), "");
    }
}
