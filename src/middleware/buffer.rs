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

/// A body being collected.
///
/// A body that arrives in one chunk (the common case) is kept as that chunk, with no copy. A
/// body in several chunks is copied once into a buffer sized from the `Content-Length` when
/// known, and grown geometrically but never beyond the limit otherwise.
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
                let grown = self.rest.capacity().saturating_mul(2);
                let target = len.max(self.expected).max(grown).min(self.limit.max(len));
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
    fn announced_length_sizes_the_buffer_once() {
        let mut buffer = Buffer::new(300, 1000);
        buffer.push(Bytes::from(vec![1; 100]));
        buffer.push(Bytes::from(vec![2; 100]));
        let capacity = buffer.rest.capacity();
        buffer.push(Bytes::from(vec![3; 100]));
        assert_eq!(buffer.rest.capacity(), capacity);
        assert_eq!(capacity, 300);
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
