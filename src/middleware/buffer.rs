//! Collects a streamed body into one contiguous buffer, never past a limit.
//!
//! The limit is http-body-util's [`Limited`], which refuses a frame that would cross it before
//! the frame is buffered; [`Buffer`] only joins what it lets through, without a copy when the
//! body comes in one chunk.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::{LengthLimitError, Limited};

use crate::rejection::{Rejection, RejectionKind};

/// The error type of the bodies the layer accepts, as http-body-util's adapters need it.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads `body` into `buffer` until it ends, or answers why it cannot.
pub(super) fn poll_collect<B>(
    mut body: Pin<&mut Limited<B>>,
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
                if let Ok(mut data) = frame.into_data() {
                    buffer.push(data.copy_to_bytes(data.remaining()));
                }
            }
            Some(Err(err)) if err.is::<LengthLimitError>() => {
                return Poll::Ready(Err(too_large(buffer.limit)));
            }
            Some(Err(err)) => {
                tracing::debug!(error = %err, "the request body failed mid-read");
                return Poll::Ready(Err(Rejection::new(RejectionKind::BodyReadFailed)));
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
}

impl Buffer {
    /// A buffer for a body that announces `expected` bytes (0 if unknown), which [`Limited`]
    /// keeps to at most `limit`.
    pub(super) fn new(expected: usize, limit: usize) -> Self {
        Self {
            expected: expected.min(limit),
            limit,
            ..Self::default()
        }
    }

    /// Appends a chunk.
    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        // `Limited` has checked the sum against the limit; saturate rather than trust it.
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

    use http_body_util::{BodyExt, StreamBody};

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

    /// Collects `chunks` through `Limited`, as the layer does.
    fn collect(chunks: &[&'static [u8]], limit: usize) -> Result<Bytes, RejectionKind> {
        let frames = chunks
            .iter()
            .map(|chunk| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(chunk))));
        let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
        let mut limited = std::pin::pin!(Limited::new(body.boxed(), limit));
        let mut buffer = Buffer::new(0, limit);
        let waker = std::task::Waker::noop();
        match poll_collect(
            limited.as_mut(),
            &mut buffer,
            &mut Context::from_waker(waker),
        ) {
            Poll::Ready(result) => result.map_err(|rejection| rejection.kind()),
            Poll::Pending => panic!("an in-memory body is never pending"),
        }
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
