//! Collects a streamed body into one contiguous buffer, never past a limit.
//!
//! A frame that would cross the limit is not buffered. The body is then read on and thrown
//! away, up to one more limit's worth, before the 413 is answered: a client that sends its
//! whole body before it reads the answer (Python's `http.client`, Node's `http`, many SDKs)
//! would otherwise find its connection reset, the server having closed it with bytes unread,
//! and never see the 413. Past that budget the connection is closed as before.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
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
                if let Some(left) = &mut buffer.discarding {
                    // Over the limit: thrown away (never copied), within the budget.
                    match left.checked_sub(len) {
                        Some(still) => *left = still,
                        None => return Poll::Ready(Err(too_large(buffer.limit))),
                    }
                } else if buffer.len.saturating_add(len) > buffer.limit {
                    // One more limit's worth, this chunk included.
                    buffer.discard_the_rest(buffer.limit.saturating_sub(len));
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
    /// Over the limit: how many more bytes may be read and thrown away.
    discarding: Option<usize>,
}

impl Buffer {
    /// A buffer for a body that announces `expected` bytes (0 if unknown), to hold at most
    /// `limit`. A body that announces more than the limit is read only to be thrown away, and
    /// answered 413.
    pub(super) fn new(expected: usize, limit: usize) -> Self {
        let mut buffer = Self {
            expected: expected.min(limit),
            limit,
            ..Self::default()
        };
        if expected > limit {
            buffer.discard_the_rest(expected);
        }
        buffer
    }

    /// Whether a body that announces `declared` bytes is worth reading to answer 413 cleanly:
    /// within the limit and the budget for what is thrown away after it.
    pub(super) fn drains(declared: u64, limit: usize) -> bool {
        declared <= (limit as u64).saturating_mul(2)
    }

    /// Drops what was kept, and throws away up to `budget` more bytes.
    fn discard_the_rest(&mut self, budget: usize) {
        *self = Self {
            limit: self.limit,
            discarding: Some(budget),
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

    #[test]
    fn single_chunk_is_kept_without_copy() {
        let chunk = Bytes::from_static(b"hello");
        let mut buffer = Buffer::new(5, 5);
        buffer.push(chunk.clone());
        let body = buffer.finish();
        assert_eq!(body.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let mut buffer = Buffer::new(0, 5);
        for part in ["ab", "", "cd", "e"] {
            buffer.push(Bytes::from(part));
        }
        assert_eq!(buffer.finish(), "abcde");
    }

    #[test]
    fn capacity_never_exceeds_the_limit() {
        let limit = 1000;
        let mut buffer = Buffer::new(0, limit);
        for _ in 0..100 {
            buffer.push(Bytes::from_static(b"0123456789"));
            assert!(buffer.rest.capacity() <= limit);
        }
        assert_eq!(buffer.finish().len(), limit);
    }

    #[test]
    fn a_small_announced_length_sizes_the_buffer_once() {
        let mut buffer = Buffer::new(300, 1000);
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
        let mut buffer = Buffer::new(mib, mib);
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

    /// Collects `chunks` as the layer does.
    fn collect(chunks: &[&'static [u8]], limit: usize) -> Result<Bytes, RejectionKind> {
        let frames = chunks
            .iter()
            .map(|chunk| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(chunk))));
        let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
        let mut body = std::pin::pin!(body);
        let mut buffer = Buffer::new(0, limit);
        let waker = std::task::Waker::noop();
        match poll_collect(body.as_mut(), &mut buffer, &mut Context::from_waker(waker)) {
            Poll::Ready(result) => result.map_err(|rejection| rejection.kind()),
            Poll::Pending => panic!("an in-memory body is never pending"),
        }
    }

    #[test]
    fn past_the_limit_the_rest_is_read_and_thrown_away_within_a_budget() {
        // 4 over a limit of 5: refused, all of it read (the client sees the 413).
        assert_eq!(
            collect(&[b"1234", b"56", b"789"], 5),
            Err(RejectionKind::PayloadTooLarge)
        );
        let mut buffer = Buffer::new(0, 5);
        buffer.discard_the_rest(3);
        assert_eq!((buffer.len, buffer.rest.capacity()), (0, 0), "nothing kept");
        // A body that announces more than the limit is read to be thrown away, if within twice
        // the limit; beyond that, it is refused unread.
        assert!(Buffer::drains(10, 5) && !Buffer::drains(11, 5));
        assert_eq!(Buffer::new(8, 5).discarding, Some(8));
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
